//! Bulk Data export jobs as stored (`export_job`, `export_part`, `export_file`): created at
//! kick-off, claimed under a lease by a worker, advanced one committed page at a time (the files'
//! committed lengths with the next cursor, so a restart resumes exactly), finished, cancelled and
//! swept when they expire. What a job exports and how is `crate::export`'s.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{StateError, StateStore};

/// A job's status as the manifest and the status endpoint report it.
pub const ACCEPTED: &str = "accepted";
pub const IN_PROGRESS: &str = "in-progress";
pub const COMPLETE: &str = "complete";
pub const FAILED: &str = "error";
pub const CANCELLED: &str = "cancelled";

/// One stored job.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportJob {
    pub id: String,
    pub client_id: String,
    /// Who may see it: `export::requester` of the kick-off's token.
    pub requester: String,
    pub request: String,
    /// `crate::export::ExportSpec` as JSON.
    pub spec: String,
    pub status: String,
    pub transaction_ms: i64,
    pub created_ms: i64,
    pub finished_ms: Option<i64>,
    pub expires_ms: Option<i64>,
    pub error: Option<String>,
    pub polled_ms: i64,
}

/// One pass of a job: a type, or a type under one of its `_typeFilter` queries.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportPart {
    pub position: i64,
    pub resource_type: String,
    pub filter: Option<String>,
    /// Where the next page starts (a sealed cursor); `None` at the beginning.
    pub cursor: Option<String>,
    pub done: bool,
    pub written: i64,
    pub left_out: i64,
    pub estimate: Option<i64>,
}

/// What a job's parts add up to: resources written, the estimate, rows left out.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExportTotals {
    pub written: i64,
    pub estimate: i64,
    pub left_out: i64,
}

impl ExportTotals {
    pub fn of(parts: &[ExportPart]) -> ExportTotals {
        ExportTotals {
            written: parts.iter().map(|p| p.written).sum(),
            estimate: parts.iter().filter_map(|p| p.estimate).sum(),
            left_out: parts.iter().map(|p| p.left_out).sum(),
        }
    }
}

/// One NDJSON file of a job, as far as it is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportFile {
    pub name: String,
    pub resource_type: String,
    pub position: i64,
    pub lines: i64,
    pub bytes: i64,
}

/// What one page added: the part's next cursor and counts, and each file it wrote to, with the
/// file's committed length after it.
#[derive(Debug, Clone, Default)]
pub struct PageCommit {
    pub position: i64,
    pub cursor: Option<String>,
    pub done: bool,
    pub written: i64,
    pub left_out: i64,
    pub files: Vec<ExportFile>,
}

const JOB_COLUMNS: &str = "id, client_id, requester, request, spec, status, transaction_ms, created_ms, \
    finished_ms, expires_ms, error, polled_ms";

fn job(row: &AnyRow) -> Result<ExportJob, StateError> {
    Ok(ExportJob {
        id: row.try_get("id")?,
        client_id: row.try_get("client_id")?,
        requester: row.try_get("requester")?,
        request: row.try_get("request")?,
        spec: row.try_get("spec")?,
        status: row.try_get("status")?,
        transaction_ms: row.try_get("transaction_ms")?,
        created_ms: row.try_get("created_ms")?,
        finished_ms: row.try_get("finished_ms")?,
        expires_ms: row.try_get("expires_ms")?,
        error: row.try_get("error")?,
        polled_ms: row.try_get("polled_ms")?,
    })
}

impl StateStore {
    /// Stores a new job (status `accepted`) and its passes, in order.
    pub async fn create_export(
        &self,
        job: &ExportJob,
        parts: &[(String, Option<String>)],
    ) -> Result<(), StateError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO export_job (id, client_id, requester, request, spec, status, \
             transaction_ms, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&job.id)
        .bind(&job.client_id)
        .bind(&job.requester)
        .bind(&job.request)
        .bind(&job.spec)
        .bind(ACCEPTED)
        .bind(job.transaction_ms)
        .bind(job.created_ms)
        .execute(&mut *tx)
        .await?;
        for (position, (resource_type, filter)) in parts.iter().enumerate() {
            sqlx::query(
                "INSERT INTO export_part (job_id, position, resource_type, filter) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(&job.id)
            .bind(position as i64)
            .bind(resource_type)
            .bind(filter)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn export_job(&self, id: &str) -> Result<Option<ExportJob>, StateError> {
        let row = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM export_job WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(job).transpose()
    }

    /// The `limit` newest jobs, newest first (the status page's Bulk export section).
    pub async fn recent_exports(&self, limit: i64) -> Result<Vec<ExportJob>, StateError> {
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM export_job ORDER BY created_ms DESC LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(job).collect()
    }

    /// Jobs of `client_id` not yet finished (accepted or in progress).
    pub async fn unfinished_exports(&self, client_id: Option<&str>) -> Result<i64, StateError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM export_job WHERE status IN ($1, $2) \
             AND ($3 IS NULL OR client_id = $3)",
        )
        .bind(ACCEPTED)
        .bind(IN_PROGRESS)
        .bind(client_id)
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get("n")?)
    }

    /// Takes the oldest unfinished job no live worker holds, for `owner` until `lease_until_ms`,
    /// unless `max_running` jobs are already held; `None` when there is nothing to take.
    pub async fn claim_export(
        &self,
        owner: &str,
        now_ms: i64,
        lease_until_ms: i64,
        max_running: i64,
    ) -> Result<Option<ExportJob>, StateError> {
        let running: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM export_job WHERE status = $1 AND lease_until_ms >= $2 \
             AND lease_owner <> $3",
        )
        .bind(IN_PROGRESS)
        .bind(now_ms)
        .bind(owner)
        .fetch_one(self.pool())
        .await?
        .try_get("n")?;
        if running >= max_running {
            return Ok(None);
        }
        let candidate = sqlx::query(
            "SELECT id FROM export_job WHERE status IN ($1, $2) \
             AND (lease_until_ms < $3 OR lease_owner IS NULL) ORDER BY created_ms LIMIT 1",
        )
        .bind(ACCEPTED)
        .bind(IN_PROGRESS)
        .bind(now_ms)
        .fetch_optional(self.pool())
        .await?;
        let Some(candidate) = candidate else {
            return Ok(None);
        };
        let id: String = candidate.try_get("id")?;
        // The lease is taken by a conditional update, so two replicas never both take a job.
        let taken = sqlx::query(
            "UPDATE export_job SET status = $1, lease_owner = $2, lease_until_ms = $3 \
             WHERE id = $4 AND status IN ($5, $1) AND (lease_until_ms < $6 OR lease_owner IS NULL)",
        )
        .bind(IN_PROGRESS)
        .bind(owner)
        .bind(lease_until_ms)
        .bind(&id)
        .bind(ACCEPTED)
        .bind(now_ms)
        .execute(self.pool())
        .await?
        .rows_affected();
        if taken == 0 {
            return Ok(None);
        }
        self.export_job(&id).await
    }

    /// Gives up `owner`'s leases, on job `id` or (None) on every job, so that the next claim takes
    /// them at once instead of after the lease runs out: a worker pausing for shutdown releases
    /// its job, and a process starting under a replica name releases what a killed predecessor
    /// of that name held (a name is never shared by two running replicas).
    pub async fn release_exports(&self, owner: &str, id: Option<&str>) -> Result<u64, StateError> {
        let released = sqlx::query(
            "UPDATE export_job SET lease_owner = NULL WHERE lease_owner = $1 AND status = $2 \
             AND ($3 IS NULL OR id = $3)",
        )
        .bind(owner)
        .bind(IN_PROGRESS)
        .bind(id)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(released)
    }

    pub async fn export_parts(&self, id: &str) -> Result<Vec<ExportPart>, StateError> {
        let rows = sqlx::query(
            "SELECT position, resource_type, filter, cursor, done, written, left_out, estimate \
             FROM export_part WHERE job_id = $1 ORDER BY position",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ExportPart {
                    position: row.try_get("position")?,
                    resource_type: row.try_get("resource_type")?,
                    filter: row.try_get("filter")?,
                    cursor: row.try_get("cursor")?,
                    done: row.try_get::<i64, _>("done")? != 0,
                    written: row.try_get("written")?,
                    left_out: row.try_get("left_out")?,
                    estimate: row.try_get("estimate")?,
                })
            })
            .collect()
    }

    pub async fn export_files(&self, id: &str) -> Result<Vec<ExportFile>, StateError> {
        let rows = sqlx::query(
            "SELECT name, resource_type, position, lines, bytes FROM export_file \
             WHERE job_id = $1 ORDER BY position",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ExportFile {
                    name: row.try_get("name")?,
                    resource_type: row.try_get("resource_type")?,
                    position: row.try_get("position")?,
                    lines: row.try_get("lines")?,
                    bytes: row.try_get("bytes")?,
                })
            })
            .collect()
    }

    /// Replaces a job's spec (a group's members, resolved when the job first runs, are kept so a
    /// resumed job exports the same patients).
    pub async fn set_export_spec(&self, id: &str, spec: &str) -> Result<(), StateError> {
        sqlx::query("UPDATE export_job SET spec = $1 WHERE id = $2")
            .bind(spec)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Records a pass's estimate (matches counted when it starts).
    pub async fn set_export_estimate(
        &self,
        id: &str,
        position: i64,
        estimate: i64,
    ) -> Result<(), StateError> {
        sqlx::query("UPDATE export_part SET estimate = $1 WHERE job_id = $2 AND position = $3")
            .bind(estimate)
            .bind(id)
            .bind(position)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Commits one written page under `owner`'s lease, extending it to `lease_until_ms`: the
    /// pass's cursor and counts, and its files' committed lengths. `false` (nothing changed) when
    /// the job is no longer this worker's: cancelled, or its lease taken over.
    pub async fn commit_export_page(
        &self,
        id: &str,
        owner: &str,
        lease_until_ms: i64,
        page: &PageCommit,
    ) -> Result<bool, StateError> {
        let mut tx = self.pool().begin().await?;
        let held = sqlx::query(
            "UPDATE export_job SET lease_until_ms = $1 WHERE id = $2 AND lease_owner = $3 \
             AND status = $4",
        )
        .bind(lease_until_ms)
        .bind(id)
        .bind(owner)
        .bind(IN_PROGRESS)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if held == 0 {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE export_part SET cursor = $1, done = $2, written = written + $3, \
             left_out = left_out + $4 WHERE job_id = $5 AND position = $6",
        )
        .bind(&page.cursor)
        .bind(i64::from(page.done))
        .bind(page.written)
        .bind(page.left_out)
        .bind(id)
        .bind(page.position)
        .execute(&mut *tx)
        .await?;
        for file in &page.files {
            sqlx::query(
                "INSERT INTO export_file (job_id, name, resource_type, position, lines, bytes) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (job_id, name) \
                 DO UPDATE SET lines = $5, bytes = $6",
            )
            .bind(id)
            .bind(&file.name)
            .bind(&file.resource_type)
            .bind(file.position)
            .bind(file.lines)
            .bind(file.bytes)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Ends a job this worker holds: `complete` or `error` (with why), its files kept until
    /// `expires_ms`. `false` when it was no longer this worker's.
    pub async fn finish_export(
        &self,
        id: &str,
        owner: &str,
        status: &str,
        error: Option<&str>,
        finished_ms: i64,
        expires_ms: i64,
    ) -> Result<bool, StateError> {
        let finished = sqlx::query(
            "UPDATE export_job SET status = $1, error = $2, finished_ms = $3, expires_ms = $4, \
             lease_owner = NULL, lease_until_ms = 0 WHERE id = $5 AND lease_owner = $6 \
             AND status = $7",
        )
        .bind(status)
        .bind(error)
        .bind(finished_ms)
        .bind(expires_ms)
        .bind(id)
        .bind(owner)
        .bind(IN_PROGRESS)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(finished == 1)
    }

    /// Cancels a job (DELETE on its status URL): a worker running it stops at its next commit.
    /// `false` when there is no such job still visible.
    pub async fn cancel_export(&self, id: &str, now_ms: i64) -> Result<bool, StateError> {
        let cancelled = sqlx::query(
            "UPDATE export_job SET status = $1, finished_ms = $2, expires_ms = $2 \
             WHERE id = $3 AND status <> $1",
        )
        .bind(CANCELLED)
        .bind(now_ms)
        .bind(id)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(cancelled == 1)
    }

    /// Notes a status request at `now_ms` and returns the previous one's time.
    pub async fn note_export_poll(&self, id: &str, now_ms: i64) -> Result<i64, StateError> {
        let mut tx = self.pool().begin().await?;
        // Write first: a SQLite transaction that reads and then writes fails at once (busy
        // snapshot, no waiting) when another connection wrote in between, as the worker does
        // while a client polls. Starting with the write makes it wait for its turn instead.
        sqlx::query("UPDATE export_job SET polled_ms = polled_ms WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let previous: i64 = sqlx::query("SELECT polled_ms FROM export_job WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .map(|row| row.try_get("polled_ms"))
            .transpose()?
            .unwrap_or(0);
        sqlx::query("UPDATE export_job SET polled_ms = $1 WHERE id = $2")
            .bind(now_ms)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(previous)
    }

    /// Jobs whose files are due for deletion at `now_ms` (expired, cancelled).
    pub async fn expired_exports(&self, now_ms: i64) -> Result<Vec<String>, StateError> {
        let rows = sqlx::query(
            "SELECT id FROM export_job WHERE expires_ms IS NOT NULL AND expires_ms <= $1",
        )
        .bind(now_ms)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|row| Ok(row.try_get("id")?)).collect()
    }

    /// Forgets a job, its passes and its files' records (its files are removed first).
    pub async fn delete_export(&self, id: &str) -> Result<(), StateError> {
        let mut tx = self.pool().begin().await?;
        for table in ["export_file", "export_part"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE job_id = $1"))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM export_job WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
