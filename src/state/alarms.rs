//! The fail-safe flag's rows in the state store (`sync_alarm`): raised and cleared by the
//! watchdog (`crate::alarm`), acknowledged by an operator (`portico status ack`), read by
//! `/metrics`, `portico status` and the watchdog's alert sender. Every replica's watchdog may
//! raise or clear: each change is one conditional statement, so two replicas agree.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{StateError, StateStore};

/// One cause of the flag, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alarm {
    pub cause: String,
    pub detail: String,
    pub raised_ms: i64,
    pub notified_ms: Option<i64>,
    pub acknowledged_ms: Option<i64>,
    pub acknowledged_by: Option<String>,
    pub cleared_ms: Option<i64>,
}

impl Alarm {
    /// Raised and not cleared.
    pub fn open(&self) -> bool {
        self.cleared_ms.is_none()
    }

    /// Open and not acknowledged: the flag is up for it.
    pub fn flagged(&self) -> bool {
        self.open() && self.acknowledged_ms.is_none()
    }
}

/// A mapping whose change detection fails (`change_cursor.failing_since_ms` set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectionFailure {
    pub mapping: String,
    /// The first failure since the latest success.
    pub failing_since_ms: i64,
    pub last_error: Option<String>,
}

fn alarm_from_row(row: &AnyRow) -> Result<Alarm, StateError> {
    Ok(Alarm {
        cause: row.try_get("cause")?,
        detail: row.try_get("detail")?,
        raised_ms: row.try_get("raised_ms")?,
        notified_ms: row.try_get("notified_ms")?,
        acknowledged_ms: row.try_get("acknowledged_ms")?,
        acknowledged_by: row.try_get("acknowledged_by")?,
        cleared_ms: row.try_get("cleared_ms")?,
    })
}

impl StateStore {
    /// Records a failed detection pass of `mapping` by `owner`, if it holds the mapping's lease:
    /// the failure's start is kept from the first failure on.
    pub async fn record_detection_failure(
        &self,
        mapping: &str,
        owner: &str,
        now_ms: i64,
        error: &str,
    ) -> Result<(), StateError> {
        sqlx::query(
            "UPDATE change_cursor SET failing_since_ms = COALESCE(failing_since_ms, $3), \
             last_error = $4 WHERE mapping = $1 AND lease_owner = $2",
        )
        .bind(mapping)
        .bind(owner)
        .bind(now_ms)
        .bind(error)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Ends `mapping`'s failure after a pass under `owner`'s lease succeeded.
    pub async fn clear_detection_failure(
        &self,
        mapping: &str,
        owner: &str,
    ) -> Result<(), StateError> {
        sqlx::query(
            "UPDATE change_cursor SET failing_since_ms = NULL, last_error = NULL \
             WHERE mapping = $1 AND lease_owner = $2 AND failing_since_ms IS NOT NULL",
        )
        .bind(mapping)
        .bind(owner)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The mappings whose detection fails now.
    pub async fn detection_failures(&self) -> Result<Vec<DetectionFailure>, StateError> {
        let rows = sqlx::query(
            "SELECT mapping, failing_since_ms, last_error FROM change_cursor \
             WHERE failing_since_ms IS NOT NULL ORDER BY mapping",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DetectionFailure {
                    mapping: row.try_get("mapping")?,
                    failing_since_ms: row.try_get("failing_since_ms")?,
                    last_error: row.try_get("last_error")?,
                })
            })
            .collect()
    }

    /// Every cause ever raised, open or cleared, by cause.
    pub async fn alarms(&self) -> Result<Vec<Alarm>, StateError> {
        let rows = sqlx::query(
            "SELECT cause, detail, raised_ms, notified_ms, acknowledged_ms, acknowledged_by, \
             cleared_ms FROM sync_alarm ORDER BY cause",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(alarm_from_row).collect()
    }

    /// Raises `cause` at `now_ms` unless it is open already (then only its detail is brought up
    /// to date). `true` when this call raised it.
    pub async fn raise_alarm(
        &self,
        cause: &str,
        detail: &str,
        now_ms: i64,
    ) -> Result<bool, StateError> {
        let updated = sqlx::query(
            "UPDATE sync_alarm SET detail = $2 WHERE cause = $1 AND cleared_ms IS NULL",
        )
        .bind(cause)
        .bind(detail)
        .execute(self.pool())
        .await?;
        if updated.rows_affected() > 0 {
            return Ok(false);
        }
        // Absent or cleared: (re)raise it, as new. Another replica may do the same at once; the
        // conflict clause then leaves one row, raised once.
        let raised = sqlx::query(
            "INSERT INTO sync_alarm (cause, detail, raised_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (cause) DO UPDATE SET detail = excluded.detail, \
             raised_ms = excluded.raised_ms, notified_ms = NULL, acknowledged_ms = NULL, \
             acknowledged_by = NULL, cleared_ms = NULL WHERE sync_alarm.cleared_ms IS NOT NULL",
        )
        .bind(cause)
        .bind(detail)
        .bind(now_ms)
        .execute(self.pool())
        .await?;
        Ok(raised.rows_affected() > 0)
    }

    /// Clears `cause` if it is open. `true` when this call cleared it.
    pub async fn clear_alarm(&self, cause: &str, now_ms: i64) -> Result<bool, StateError> {
        let cleared = sqlx::query(
            "UPDATE sync_alarm SET cleared_ms = $2 WHERE cause = $1 AND cleared_ms IS NULL",
        )
        .bind(cause)
        .bind(now_ms)
        .execute(self.pool())
        .await?;
        Ok(cleared.rows_affected() > 0)
    }

    /// Records that the operator endpoints accepted the alert of `cause` raised at `raised_ms`.
    pub async fn mark_alarm_notified(
        &self,
        cause: &str,
        raised_ms: i64,
        now_ms: i64,
    ) -> Result<(), StateError> {
        sqlx::query(
            "UPDATE sync_alarm SET notified_ms = $3 \
             WHERE cause = $1 AND raised_ms = $2 AND notified_ms IS NULL",
        )
        .bind(cause)
        .bind(raised_ms)
        .bind(now_ms)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Acknowledges every flagged cause in the name of `by`; returns the causes acknowledged.
    pub async fn acknowledge_alarms(
        &self,
        by: &str,
        now_ms: i64,
    ) -> Result<Vec<String>, StateError> {
        let flagged: Vec<String> = self
            .alarms()
            .await?
            .into_iter()
            .filter(Alarm::flagged)
            .map(|alarm| alarm.cause)
            .collect();
        let mut acknowledged = Vec::new();
        for cause in flagged {
            let done = sqlx::query(
                "UPDATE sync_alarm SET acknowledged_ms = $2, acknowledged_by = $3 \
                 WHERE cause = $1 AND cleared_ms IS NULL AND acknowledged_ms IS NULL",
            )
            .bind(&cause)
            .bind(now_ms)
            .bind(by)
            .execute(self.pool())
            .await?;
            if done.rows_affected() > 0 {
                acknowledged.push(cause);
            }
        }
        Ok(acknowledged)
    }
}
