//! The operator's checks of the data, as stored (`check_run`): each data-quality audit and each
//! reconciliation against the EHR, the latest `KEPT_RUNS` of each kind. Written by the command or
//! the schedule that ran it; read by the status page, `/metrics` and `portico status`.

use sqlx::Row;

use super::{StateError, StateStore};

/// Runs kept per kind: enough for a week of nightly runs and a few on demand.
const KEPT_RUNS: i64 = 30;

/// One stored run.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRun {
    /// `quality` or `reconcile`.
    pub kind: String,
    pub started_ms: i64,
    pub finished_ms: i64,
    pub fails: bool,
    pub findings: i64,
    /// The run's report as JSON.
    pub summary: String,
    /// Why the run could not finish; `None` when it finished and its findings count.
    pub error: Option<String>,
}

impl StateStore {
    /// Records a run and forgets the oldest beyond `KEPT_RUNS` of its kind.
    pub async fn record_check_run(&self, run: &CheckRun) -> Result<(), StateError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO check_run (kind, started_ms, finished_ms, fails, findings, summary, \
             error) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&run.kind)
        .bind(run.started_ms)
        .bind(run.finished_ms)
        .bind(i64::from(run.fails))
        .bind(run.findings)
        .bind(&run.summary)
        .bind(&run.error)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM check_run WHERE kind = $1 AND started_ms NOT IN \
             (SELECT started_ms FROM check_run WHERE kind = $1 ORDER BY started_ms DESC LIMIT $2)",
        )
        .bind(&run.kind)
        .bind(KEPT_RUNS)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The latest run of `kind`, if any ran, finished or not.
    pub async fn latest_check_run(&self, kind: &str) -> Result<Option<CheckRun>, StateError> {
        self.latest_run(kind, false).await
    }

    /// The latest run of `kind` that finished: what its findings say still holds when a later
    /// run could not finish.
    pub async fn latest_finished_check_run(
        &self,
        kind: &str,
    ) -> Result<Option<CheckRun>, StateError> {
        self.latest_run(kind, true).await
    }

    async fn latest_run(&self, kind: &str, finished: bool) -> Result<Option<CheckRun>, StateError> {
        let sql = if finished {
            "SELECT kind, started_ms, finished_ms, fails, findings, summary, error FROM check_run \
             WHERE kind = $1 AND error IS NULL ORDER BY started_ms DESC LIMIT 1"
        } else {
            "SELECT kind, started_ms, finished_ms, fails, findings, summary, error FROM check_run \
             WHERE kind = $1 ORDER BY started_ms DESC LIMIT 1"
        };
        let row = sqlx::query(sql)
            .bind(kind)
            .fetch_optional(self.pool())
            .await?;
        row.map(|row| {
            Ok(CheckRun {
                kind: row.try_get("kind")?,
                started_ms: row.try_get("started_ms")?,
                finished_ms: row.try_get("finished_ms")?,
                fails: row.try_get::<i64, _>("fails")? != 0,
                findings: row.try_get("findings")?,
                summary: row.try_get("summary")?,
                error: row.try_get("error")?,
            })
        })
        .transpose()
    }
}
