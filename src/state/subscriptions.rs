//! What subscriptions keep in the state store: the Subscription resources with their delivery
//! state, the numbered events of each, and change detection's progress and memory per mapping.
//! The detector's pass and the delivery worker's outcomes each commit in one transaction, under
//! a lease checked inside it, so a crash or a replica that lost its lease changes nothing.

use std::collections::HashMap;

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{Backend, StateError, StateStore, placeholders, value_rows};

/// Milliseconds since the Unix epoch: the unit of subscription times.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A Subscription as stored: the validated request and owner (JSON, typed by the subscriptions
/// module) and its delivery state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredSubscription {
    pub id: String,
    pub client_id: String,
    pub owner: String,
    pub spec: String,
    pub topic: Option<String>,
    pub resource_type: String,
    pub channel: String,
    pub base_url: String,
    pub status: String,
    pub error: Option<String>,
    pub version: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub end_ms: Option<i64>,
    pub events_since_start: i64,
    pub delivered_through: i64,
    pub handshake_pending: bool,
    pub failed_attempts: i64,
    pub failing_since_ms: Option<i64>,
    pub next_attempt_ms: i64,
    pub retries_stopped: bool,
    pub last_sent_ms: Option<i64>,
    pub last_delivered_ms: Option<i64>,
    pub last_failure: Option<String>,
}

/// What a create or an update writes.
#[derive(Clone, Debug)]
pub struct SubscriptionWrite {
    pub id: String,
    pub client_id: String,
    pub owner: String,
    pub spec: String,
    pub topic: Option<String>,
    pub resource_type: String,
    /// `rest-hook`, `websocket`, `hl7v2-mllp`: which sender the worker uses.
    pub channel: String,
    pub base_url: String,
    /// `requested` (a handshake follows) or `off`.
    pub status: String,
    pub end_ms: Option<i64>,
    /// The heartbeat period (SB-27), if the subscriber asked for heartbeats.
    pub heartbeat_ms: Option<i64>,
}

/// One event of a subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    pub number: i64,
    pub topic: Option<String>,
    pub resource_type: String,
    pub resource_id: String,
    pub change_kind: String,
    pub occurred_ms: i64,
}

/// An event to number and append to a subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    pub subscription_id: String,
    pub topic: Option<String>,
    pub resource_type: String,
    pub resource_id: String,
    pub change_kind: String,
    pub occurred_ms: i64,
}

/// What a delivery attempt came to, as the worker records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliveryRecord {
    /// A notification was accepted: events through `through` are delivered; a handshake
    /// activates the subscription.
    Delivered { through: i64, handshake: bool },
    /// It failed: try again at `next_attempt_ms`, or stop retrying (`stop`); the status becomes
    /// `status` (`error`, or `off` for a receiver that answered 410) with `error` as the reason.
    Failed {
        reason: String,
        next_attempt_ms: i64,
        stop: bool,
        status: String,
    },
    /// A heartbeat was sent (or failed: `failure`); nothing else changes.
    Heartbeat { failure: Option<String> },
}

/// Change detection's progress for one mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeCursor {
    pub mapping: String,
    pub watermark: Option<String>,
    pub scan_after: Option<String>,
    pub cycle: i64,
    pub baselined: bool,
    pub last_reconcile_ms: i64,
}

/// Who holds a mapping's detection lease, and until when (milliseconds since the epoch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeLease {
    pub mapping: String,
    pub owner: Option<String>,
    pub until_ms: i64,
}

/// What detection remembers of one served resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remembered {
    pub hash: String,
    pub compared: String,
    pub patients: String,
    pub seen_cycle: i64,
}

/// Everything one detection pass writes, committed at once.
#[derive(Clone, Debug, Default)]
pub struct PassCommit {
    pub mapping: String,
    pub lease_owner: String,
    pub watermark: Option<String>,
    pub scan_after: Option<String>,
    pub cycle: i64,
    pub baselined: bool,
    pub last_reconcile_ms: i64,
    /// `(resource id, remembered)` to insert or replace.
    pub remember: Vec<(String, Remembered)>,
    /// Ids seen unchanged, in cycle `seen_cycle` (the cycle the pass began in, which may have
    /// ended during it).
    pub seen: Vec<String>,
    pub seen_cycle: i64,
    /// Ids that are gone.
    pub forget: Vec<String>,
    pub events: Vec<NewEvent>,
}

/// The pass could not commit because another detector holds the mapping now.
#[derive(Debug, PartialEq, Eq)]
pub struct LeaseLost;

const SUBSCRIPTION_COLUMNS: &str = "id, client_id, owner, spec, topic, resource_type, channel, \
     base_url, status, \
     error, version, created_ms, updated_ms, end_ms, events_since_start, delivered_through, \
     handshake_pending, failed_attempts, failing_since_ms, next_attempt_ms, retries_stopped, \
     last_sent_ms, last_delivered_ms, last_failure";

fn subscription_from_row(row: &AnyRow) -> Result<StoredSubscription, sqlx::Error> {
    Ok(StoredSubscription {
        id: row.try_get("id")?,
        client_id: row.try_get("client_id")?,
        owner: row.try_get("owner")?,
        spec: row.try_get("spec")?,
        topic: row.try_get("topic")?,
        resource_type: row.try_get("resource_type")?,
        channel: row.try_get("channel")?,
        base_url: row.try_get("base_url")?,
        status: row.try_get("status")?,
        error: row.try_get("error")?,
        version: row.try_get("version")?,
        created_ms: row.try_get("created_ms")?,
        updated_ms: row.try_get("updated_ms")?,
        end_ms: row.try_get("end_ms")?,
        events_since_start: row.try_get("events_since_start")?,
        delivered_through: row.try_get("delivered_through")?,
        handshake_pending: row.try_get::<i32, _>("handshake_pending")? != 0,
        failed_attempts: i64::from(row.try_get::<i32, _>("failed_attempts")?),
        failing_since_ms: row.try_get("failing_since_ms")?,
        next_attempt_ms: row.try_get("next_attempt_ms")?,
        retries_stopped: row.try_get::<i32, _>("retries_stopped")? != 0,
        last_sent_ms: row.try_get("last_sent_ms")?,
        last_delivered_ms: row.try_get("last_delivered_ms")?,
        last_failure: row.try_get("last_failure")?,
    })
}

fn event_from_row(row: &AnyRow) -> Result<StoredEvent, sqlx::Error> {
    Ok(StoredEvent {
        number: row.try_get("event_number")?,
        topic: row.try_get("topic")?,
        resource_type: row.try_get("resource_type")?,
        resource_id: row.try_get("resource_id")?,
        change_kind: row.try_get("change_kind")?,
        occurred_ms: row.try_get("occurred_ms")?,
    })
}

/// Statuses whose subscriptions still collect events (SB-29: an `error` subscription keeps
/// counting).
pub const LIVE_STATUSES: [&str; 3] = ["requested", "active", "error"];

impl StateStore {
    pub async fn insert_subscription(
        &self,
        write: &SubscriptionWrite,
    ) -> Result<StoredSubscription, StateError> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO subscription (id, client_id, owner, spec, topic, resource_type, status, \
             version, created_ms, updated_ms, end_ms, handshake_pending, heartbeat_ms, channel, \
             base_url) VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $8, $9, $10, $11, $12, $13)",
        )
        .bind(&write.id)
        .bind(&write.client_id)
        .bind(&write.owner)
        .bind(&write.spec)
        .bind(&write.topic)
        .bind(&write.resource_type)
        .bind(&write.status)
        .bind(now)
        .bind(write.end_ms)
        .bind(i32::from(write.status == "requested"))
        .bind(write.heartbeat_ms)
        .bind(&write.channel)
        .bind(&write.base_url)
        .execute(self.pool())
        .await?;
        self.subscription(&write.id)
            .await?
            .ok_or_else(|| StateError::Invalid("subscription vanished after insert".into()))
    }

    /// Replaces a subscription's request (an update). Asking for `requested` (reactivation)
    /// clears its failures and schedules a handshake; events keep their numbers (SB-29). A
    /// reactivation also takes back a delivery lease: a send already under way (to what may be
    /// the old endpoint) then records nothing, so it cannot clear the new handshake.
    pub async fn replace_subscription(
        &self,
        write: &SubscriptionWrite,
    ) -> Result<Option<StoredSubscription>, StateError> {
        let reactivate = write.status == "requested";
        let updated = sqlx::query(
            "UPDATE subscription SET owner = $2, spec = $3, topic = $4, resource_type = $5, \
             status = $6, end_ms = $7, heartbeat_ms = $11, channel = $12, base_url = $13, \
             version = version + 1, \
             updated_ms = $8, \
             error = CASE WHEN $9 = 1 THEN NULL ELSE error END, \
             handshake_pending = $9, \
             failed_attempts = CASE WHEN $9 = 1 THEN 0 ELSE failed_attempts END, \
             failing_since_ms = CASE WHEN $9 = 1 THEN NULL ELSE failing_since_ms END, \
             retries_stopped = CASE WHEN $9 = 1 THEN 0 ELSE retries_stopped END, \
             next_attempt_ms = CASE WHEN $9 = 1 THEN 0 ELSE next_attempt_ms END, \
             lease_owner = CASE WHEN $9 = 1 THEN NULL ELSE lease_owner END, \
             lease_until_ms = CASE WHEN $9 = 1 THEN 0 ELSE lease_until_ms END \
             WHERE id = $1 AND client_id = $10",
        )
        .bind(&write.id)
        .bind(&write.owner)
        .bind(&write.spec)
        .bind(&write.topic)
        .bind(&write.resource_type)
        .bind(&write.status)
        .bind(write.end_ms)
        .bind(now_ms())
        .bind(i32::from(reactivate))
        .bind(&write.client_id)
        .bind(write.heartbeat_ms)
        .bind(&write.channel)
        .bind(&write.base_url)
        .execute(self.pool())
        .await?
        .rows_affected();
        if updated == 0 {
            return Ok(None);
        }
        self.subscription(&write.id).await
    }

    pub async fn subscription(&self, id: &str) -> Result<Option<StoredSubscription>, StateError> {
        let row = sqlx::query(&format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscription WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(subscription_from_row).transpose()?)
    }

    /// Every subscription, or those of one client, oldest first.
    pub async fn subscriptions(
        &self,
        client_id: Option<&str>,
    ) -> Result<Vec<StoredSubscription>, StateError> {
        let rows = match client_id {
            Some(client) => {
                sqlx::query(&format!(
                    "SELECT {SUBSCRIPTION_COLUMNS} FROM subscription WHERE client_id = $1 \
                     ORDER BY created_ms, id"
                ))
                .bind(client)
                .fetch_all(self.pool())
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {SUBSCRIPTION_COLUMNS} FROM subscription ORDER BY created_ms, id"
                ))
                .fetch_all(self.pool())
                .await?
            }
        };
        Ok(rows
            .iter()
            .map(subscription_from_row)
            .collect::<Result<_, _>>()?)
    }

    /// Subscriptions that collect events now: live status, not past their `end`.
    pub async fn live_subscriptions(&self) -> Result<Vec<StoredSubscription>, StateError> {
        let rows = sqlx::query(&format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscription \
             WHERE status IN ($1, $2, $3) AND (end_ms IS NULL OR end_ms > $4) ORDER BY id"
        ))
        .bind(LIVE_STATUSES[0])
        .bind(LIVE_STATUSES[1])
        .bind(LIVE_STATUSES[2])
        .bind(now_ms())
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(subscription_from_row)
            .collect::<Result<_, _>>()?)
    }

    /// Deletes a subscription of `client_id` (any client's when `None`) and its events.
    pub async fn delete_subscription(
        &self,
        id: &str,
        client_id: Option<&str>,
    ) -> Result<bool, StateError> {
        let mut tx = self.pool().begin().await?;
        let deleted = match client_id {
            Some(client) => {
                sqlx::query("DELETE FROM subscription WHERE id = $1 AND client_id = $2")
                    .bind(id)
                    .bind(client)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
            }
            None => sqlx::query("DELETE FROM subscription WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected(),
        };
        if deleted > 0 {
            sqlx::query("DELETE FROM subscription_event WHERE subscription_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(deleted > 0)
    }

    /// Sets a subscription's status and error text (end reached, owner gone, operator action).
    pub async fn set_subscription_status(
        &self,
        id: &str,
        status: &str,
        error: Option<&str>,
    ) -> Result<bool, StateError> {
        let updated = sqlx::query(
            "UPDATE subscription SET status = $2, error = $3, version = version + 1, \
             updated_ms = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(status)
        .bind(error)
        .bind(now_ms())
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(updated > 0)
    }

    /// Makes a subscription due now (an operator's retry): clears the wait and resumes retries.
    pub async fn retry_subscription_now(&self, id: &str) -> Result<bool, StateError> {
        let updated = sqlx::query(
            "UPDATE subscription SET next_attempt_ms = 0, retries_stopped = 0 WHERE id = $1",
        )
        .bind(id)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(updated > 0)
    }

    /// Leases up to `limit` subscriptions with something to send at `now` (a handshake,
    /// undelivered events, or a heartbeat due) to `owner` until `until_ms`. The time is the
    /// delivery worker's, so due dates, leases and records share one clock. Leases `owner` still
    /// holds are taken again: its previous round has ended, or it was a process that died under
    /// the same replica name. On PostgreSQL the candidates are locked with SKIP LOCKED, so
    /// replicas claiming at once take different rows.
    pub async fn claim_due_subscriptions(
        &self,
        channel: &str,
        owner: &str,
        now: i64,
        until_ms: i64,
        limit: i64,
    ) -> Result<Vec<StoredSubscription>, StateError> {
        let skip_locked = match self.backend() {
            super::Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            super::Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE subscription SET lease_owner = $1, lease_until_ms = $2 WHERE id IN (\
             SELECT id FROM subscription WHERE channel = $8 AND status IN ($3, $4, $5) \
             AND (end_ms IS NULL OR end_ms > $6) AND (lease_until_ms < $6 OR lease_owner = $1) \
             AND retries_stopped = 0 AND next_attempt_ms <= $6 \
             AND (handshake_pending = 1 OR delivered_through < events_since_start \
                  OR (heartbeat_ms IS NOT NULL AND COALESCE(last_sent_ms, 0) + heartbeat_ms <= $6)) \
             ORDER BY next_attempt_ms, id LIMIT $7{skip_locked}) \
             RETURNING {SUBSCRIPTION_COLUMNS}"
        );
        let rows = sqlx::query(&sql)
            .bind(owner)
            .bind(until_ms)
            .bind(LIVE_STATUSES[0])
            .bind(LIVE_STATUSES[1])
            .bind(LIVE_STATUSES[2])
            .bind(now)
            .bind(limit)
            .bind(channel)
            .fetch_all(self.pool())
            .await?;
        Ok(rows
            .iter()
            .map(subscription_from_row)
            .collect::<Result<_, _>>()?)
    }

    /// Records what a delivery at `now` came to and gives the lease back; `false` when `owner` no
    /// longer held it (nothing is written then).
    pub async fn record_delivery(
        &self,
        id: &str,
        owner: &str,
        record: &DeliveryRecord,
        now: i64,
    ) -> Result<bool, StateError> {
        let query = match record {
            DeliveryRecord::Delivered { through, handshake } => sqlx::query(
                "UPDATE subscription SET delivered_through = CASE WHEN $3 > delivered_through \
                 THEN $3 ELSE delivered_through END, \
                 status = CASE WHEN status IN ('requested', 'error') THEN 'active' ELSE status END, \
                 error = NULL, handshake_pending = CASE WHEN $4 = 1 THEN 0 ELSE handshake_pending END, \
                 failed_attempts = 0, failing_since_ms = NULL, next_attempt_ms = 0, \
                 last_sent_ms = $5, last_delivered_ms = $5, last_failure = NULL, \
                 lease_owner = NULL, lease_until_ms = 0 \
                 WHERE id = $1 AND lease_owner = $2",
            )
            .bind(id)
            .bind(owner)
            .bind(*through)
            .bind(i32::from(*handshake))
            .bind(now),
            DeliveryRecord::Failed {
                reason,
                next_attempt_ms,
                stop,
                status,
            } => sqlx::query(
                "UPDATE subscription SET status = $3, error = $4, last_failure = $4, \
                 failed_attempts = failed_attempts + 1, \
                 failing_since_ms = COALESCE(failing_since_ms, $5), next_attempt_ms = $6, \
                 retries_stopped = $7, last_sent_ms = $5, \
                 version = CASE WHEN status = $3 THEN version ELSE version + 1 END, \
                 lease_owner = NULL, lease_until_ms = 0 \
                 WHERE id = $1 AND lease_owner = $2",
            )
            .bind(id)
            .bind(owner)
            .bind(status)
            .bind(reason)
            .bind(now)
            .bind(*next_attempt_ms)
            .bind(i32::from(*stop)),
            DeliveryRecord::Heartbeat { failure } => sqlx::query(
                "UPDATE subscription SET last_sent_ms = $3, \
                 last_failure = COALESCE($4, last_failure), \
                 lease_owner = NULL, lease_until_ms = 0 WHERE id = $1 AND lease_owner = $2",
            )
            .bind(id)
            .bind(owner)
            .bind(now)
            .bind(failure),
        };
        Ok(query.execute(self.pool()).await?.rows_affected() > 0)
    }

    /// Moves `delivered_through` forward while `owner` holds the lease (an MLLP run that stopped
    /// after some messages were acknowledged).
    pub async fn advance_delivered(
        &self,
        id: &str,
        owner: &str,
        through: i64,
    ) -> Result<(), StateError> {
        sqlx::query(
            "UPDATE subscription SET delivered_through = $3, last_delivered_ms = $4 \
             WHERE id = $1 AND lease_owner = $2 AND delivered_through < $3",
        )
        .bind(id)
        .bind(owner)
        .bind(through)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Gives a lease back without recording anything (nothing was due after all).
    pub async fn release_subscription(&self, id: &str, owner: &str) -> Result<(), StateError> {
        sqlx::query(
            "UPDATE subscription SET lease_owner = NULL, lease_until_ms = 0 \
             WHERE id = $1 AND lease_owner = $2",
        )
        .bind(id)
        .bind(owner)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Events `first..=last` of a subscription, in order, at most `limit`.
    pub async fn subscription_events(
        &self,
        id: &str,
        first: i64,
        last: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StateError> {
        let rows = sqlx::query(
            "SELECT event_number, topic, resource_type, resource_id, change_kind, occurred_ms \
             FROM subscription_event WHERE subscription_id = $1 AND event_number >= $2 \
             AND event_number <= $3 ORDER BY event_number LIMIT $4",
        )
        .bind(id)
        .bind(first)
        .bind(last)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(event_from_row).collect::<Result<_, _>>()?)
    }

    /// Forgets events older than `before_ms` that were delivered (undelivered ones stay).
    pub async fn purge_subscription_events(&self, before_ms: i64) -> Result<u64, StateError> {
        let purged = sqlx::query(
            "DELETE FROM subscription_event WHERE occurred_ms < $1 AND event_number <= \
             (SELECT delivered_through FROM subscription s WHERE s.id = subscription_id)",
        )
        .bind(before_ms)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(purged)
    }

    /// Takes (or extends) the detection lease of `mapping` for `owner` until `until_ms` and
    /// returns its cursor; `None` when another owner holds an unexpired lease.
    pub async fn claim_change_cursor(
        &self,
        mapping: &str,
        owner: &str,
        until_ms: i64,
    ) -> Result<Option<ChangeCursor>, StateError> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO change_cursor (mapping, updated_ms) VALUES ($1, $2) \
             ON CONFLICT (mapping) DO NOTHING",
        )
        .bind(mapping)
        .bind(now)
        .execute(self.pool())
        .await?;
        let row = sqlx::query(
            "UPDATE change_cursor SET lease_owner = $2, lease_until_ms = $3 \
             WHERE mapping = $1 AND (lease_owner = $2 OR lease_owner IS NULL \
             OR lease_until_ms < $4) \
             RETURNING mapping, watermark, scan_after, cycle, baselined, last_reconcile_ms",
        )
        .bind(mapping)
        .bind(owner)
        .bind(until_ms)
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(cursor_from_row).transpose()
    }

    /// Every mapping's detection progress (for operators and tests).
    pub async fn change_cursors(&self) -> Result<Vec<ChangeCursor>, StateError> {
        let rows = sqlx::query(
            "SELECT mapping, watermark, scan_after, cycle, baselined, last_reconcile_ms \
             FROM change_cursor ORDER BY mapping",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(cursor_from_row).collect()
    }

    /// Extends the detection lease of `mapping` to `until_ms` if `owner` still holds it, even
    /// past its end: no other replica has claimed the mapping since, so the pass under way may
    /// go on and commit. `false` when another replica took it over (or it was released): that
    /// pass must stop.
    pub async fn renew_change_cursor(
        &self,
        mapping: &str,
        owner: &str,
        until_ms: i64,
    ) -> Result<bool, StateError> {
        let renewed = sqlx::query(
            "UPDATE change_cursor SET lease_until_ms = $3 WHERE mapping = $1 AND lease_owner = $2",
        )
        .bind(mapping)
        .bind(owner)
        .bind(until_ms)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(renewed > 0)
    }

    /// Every mapping's detection lease (for operators and tests).
    pub async fn change_leases(&self) -> Result<Vec<ChangeLease>, StateError> {
        let rows = sqlx::query(
            "SELECT mapping, lease_owner, lease_until_ms FROM change_cursor ORDER BY mapping",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ChangeLease {
                    mapping: row.try_get("mapping")?,
                    owner: row.try_get("lease_owner")?,
                    until_ms: row.try_get("lease_until_ms")?,
                })
            })
            .collect()
    }

    /// Gives a detection lease back (at shutdown), so another replica takes over at once.
    pub async fn release_change_cursor(
        &self,
        mapping: &str,
        owner: &str,
    ) -> Result<(), StateError> {
        sqlx::query(
            "UPDATE change_cursor SET lease_owner = NULL, lease_until_ms = 0 \
             WHERE mapping = $1 AND lease_owner = $2",
        )
        .bind(mapping)
        .bind(owner)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// What detection remembers of these resources of `mapping`.
    pub async fn remembered(
        &self,
        mapping: &str,
        ids: &[String],
    ) -> Result<HashMap<String, Remembered>, StateError> {
        let mut found = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let sql = format!(
                "SELECT resource_id, hash, compared, patients, seen_cycle FROM change_resource \
                 WHERE mapping = $1 AND resource_id IN ({})",
                placeholders(2, chunk.len())
            );
            let mut query = sqlx::query(&sql).bind(mapping);
            for id in chunk {
                query = query.bind(id);
            }
            for row in query.fetch_all(self.pool()).await? {
                found.insert(row.try_get("resource_id")?, remembered_from_row(&row)?);
            }
        }
        Ok(found)
    }

    /// Resources of `mapping` no pass of `cycle` has seen: at the end of a full scan, the
    /// deleted ones.
    pub async fn unseen_in_cycle(
        &self,
        mapping: &str,
        cycle: i64,
    ) -> Result<Vec<(String, Remembered)>, StateError> {
        let rows = sqlx::query(
            "SELECT resource_id, hash, compared, patients, seen_cycle FROM change_resource \
             WHERE mapping = $1 AND seen_cycle < $2",
        )
        .bind(mapping)
        .bind(cycle)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("resource_id")?, remembered_from_row(row)?)))
            .collect()
    }

    /// Commits a detection pass: what it remembers, the events it numbered and its new cursor,
    /// all or nothing, and only while `commit.lease_owner` still holds the mapping. Returns the
    /// numbered events per subscription (`(id, first, last)`).
    pub async fn commit_detection_pass(
        &self,
        commit: &PassCommit,
    ) -> Result<Result<Vec<(String, i64, i64)>, LeaseLost>, StateError> {
        let mut tx = self.pool().begin().await?;
        // The cursor first: the lease check, and the row lock that orders this commit after a
        // rival's on PostgreSQL.
        let held = sqlx::query(
            "UPDATE change_cursor SET watermark = $3, scan_after = $4, cycle = $5, \
             baselined = $6, last_reconcile_ms = $7, updated_ms = $8 \
             WHERE mapping = $1 AND lease_owner = $2 AND lease_until_ms >= $8",
        )
        .bind(&commit.mapping)
        .bind(&commit.lease_owner)
        .bind(&commit.watermark)
        .bind(&commit.scan_after)
        .bind(commit.cycle)
        .bind(i32::from(commit.baselined))
        .bind(commit.last_reconcile_ms)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if held == 0 {
            tx.rollback().await?;
            return Ok(Err(LeaseLost));
        }
        remember(self.backend(), &mut tx, &commit.mapping, &commit.remember).await?;
        for chunk in commit.seen.chunks(500) {
            let sql = format!(
                "UPDATE change_resource SET seen_cycle = $1 WHERE mapping = $2 \
                 AND resource_id IN ({})",
                placeholders(3, chunk.len())
            );
            let mut query = sqlx::query(&sql)
                .bind(commit.seen_cycle)
                .bind(&commit.mapping);
            for id in chunk {
                query = query.bind(id);
            }
            query.execute(&mut *tx).await?;
        }
        for chunk in commit.forget.chunks(500) {
            let sql = format!(
                "DELETE FROM change_resource WHERE mapping = $1 AND resource_id IN ({})",
                placeholders(2, chunk.len())
            );
            let mut query = sqlx::query(&sql).bind(&commit.mapping);
            for id in chunk {
                query = query.bind(id);
            }
            query.execute(&mut *tx).await?;
        }
        let numbered = append_events(self.backend(), &mut tx, &commit.events).await?;
        tx.commit().await?;
        Ok(Ok(numbered))
    }
}

/// A websocket binding token's grant for one subscription, as stored (the token itself never is).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebsocketBinding {
    pub subscription_id: String,
    pub client_id: String,
    pub subject: String,
    /// The `jti` of the access token the binding token was asked for with.
    pub access_jti: String,
    pub expires_ms: i64,
}

impl StateStore {
    /// Records a binding token (by its hash) for each of `bindings`, and forgets the tokens
    /// that expired before `now`.
    pub async fn insert_websocket_bindings(
        &self,
        token_hash: &str,
        bindings: &[WebsocketBinding],
        now: i64,
    ) -> Result<(), StateError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM websocket_binding WHERE expires_ms < $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        for binding in bindings {
            sqlx::query(
                "INSERT INTO websocket_binding (token_hash, subscription_id, client_id, subject, \
                 access_jti, expires_ms) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (token_hash, subscription_id) DO NOTHING",
            )
            .bind(token_hash)
            .bind(&binding.subscription_id)
            .bind(&binding.client_id)
            .bind(&binding.subject)
            .bind(&binding.access_jti)
            .bind(binding.expires_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// What the binding token whose hash is `token_hash` binds (expired rows included: the
    /// caller tells an expired token from an unknown one).
    pub async fn websocket_bindings(
        &self,
        token_hash: &str,
    ) -> Result<Vec<WebsocketBinding>, StateError> {
        let rows = sqlx::query(
            "SELECT subscription_id, client_id, subject, access_jti, expires_ms \
             FROM websocket_binding WHERE token_hash = $1 ORDER BY subscription_id",
        )
        .bind(token_hash)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(WebsocketBinding {
                    subscription_id: row.try_get("subscription_id")?,
                    client_id: row.try_get("client_id")?,
                    subject: row.try_get("subject")?,
                    access_jti: row.try_get("access_jti")?,
                    expires_ms: row.try_get("expires_ms")?,
                })
            })
            .collect()
    }

    /// A websocket sent a handshake or events through `through` at `now`: the subscription is
    /// active and `delivered_through` moves forward, never back. No lease: the delivery worker
    /// never claims websocket subscriptions, and two sockets bound to one subscription may both
    /// advance it.
    pub async fn record_websocket_delivery(
        &self,
        id: &str,
        through: i64,
        handshake: bool,
        now: i64,
    ) -> Result<bool, StateError> {
        let updated = sqlx::query(
            "UPDATE subscription SET delivered_through = CASE WHEN $2 > delivered_through \
             THEN $2 ELSE delivered_through END, \
             status = CASE WHEN status IN ('requested', 'error') THEN 'active' ELSE status END, \
             error = CASE WHEN status IN ('requested', 'error') THEN NULL ELSE error END, \
             handshake_pending = CASE WHEN $3 = 1 THEN 0 ELSE handshake_pending END, \
             last_sent_ms = $4, \
             last_delivered_ms = CASE WHEN $2 > delivered_through THEN $4 \
             ELSE last_delivered_ms END \
             WHERE id = $1",
        )
        .bind(id)
        .bind(through)
        .bind(i32::from(handshake))
        .bind(now)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(updated > 0)
    }
}

fn cursor_from_row(row: &AnyRow) -> Result<ChangeCursor, StateError> {
    Ok(ChangeCursor {
        mapping: row.try_get("mapping")?,
        watermark: row.try_get("watermark")?,
        scan_after: row.try_get("scan_after")?,
        cycle: row.try_get("cycle")?,
        baselined: row.try_get::<i32, _>("baselined")? != 0,
        last_reconcile_ms: row.try_get("last_reconcile_ms")?,
    })
}

fn remembered_from_row(row: &AnyRow) -> Result<Remembered, sqlx::Error> {
    Ok(Remembered {
        hash: row.try_get("hash")?,
        compared: row.try_get("compared")?,
        patients: row.try_get("patients")?,
        seen_cycle: row.try_get("seen_cycle")?,
    })
}

async fn remember(
    backend: Backend,
    tx: &mut Transaction<'static, Any>,
    mapping: &str,
    rows: &[(String, Remembered)],
) -> Result<(), StateError> {
    // 6 parameters a row: 200 rows stay far inside every backend's parameter limit.
    for chunk in rows.chunks(200) {
        let sql = format!(
            "INSERT INTO change_resource (mapping, resource_id, hash, compared, patients, \
             seen_cycle) VALUES {} ON CONFLICT (mapping, resource_id) DO UPDATE SET \
             hash = excluded.hash, compared = excluded.compared, patients = excluded.patients, \
             seen_cycle = excluded.seen_cycle",
            value_rows(backend, chunk.len(), 6)
        );
        let mut query = sqlx::query(&sql);
        for (id, remembered) in chunk {
            query = query
                .bind(mapping)
                .bind(id)
                .bind(&remembered.hash)
                .bind(&remembered.compared)
                .bind(&remembered.patients)
                .bind(remembered.seen_cycle);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Numbers `events` per subscription, contiguously after each one's counter, and appends them.
/// Events of a subscription deleted meanwhile are dropped.
async fn append_events(
    backend: Backend,
    tx: &mut Transaction<'static, Any>,
    events: &[NewEvent],
) -> Result<Vec<(String, i64, i64)>, StateError> {
    let mut per_subscription: Vec<(&str, Vec<&NewEvent>)> = Vec::new();
    for event in events {
        match per_subscription
            .iter_mut()
            .find(|(id, _)| *id == event.subscription_id)
        {
            Some((_, list)) => list.push(event),
            None => per_subscription.push((&event.subscription_id, vec![event])),
        }
    }
    let mut numbered = Vec::new();
    let mut rows: Vec<(i64, &NewEvent)> = Vec::new();
    for (id, list) in per_subscription {
        let count = list.len() as i64;
        let last: Option<i64> = sqlx::query_scalar(
            "UPDATE subscription SET events_since_start = events_since_start + $2 \
             WHERE id = $1 RETURNING events_since_start",
        )
        .bind(id)
        .bind(count)
        .fetch_optional(&mut **tx)
        .await?;
        let Some(last) = last else { continue };
        let first = last - count + 1;
        numbered.push((id.to_owned(), first, last));
        rows.extend(
            list.into_iter()
                .enumerate()
                .map(|(at, e)| (first + at as i64, e)),
        );
    }
    for chunk in rows.chunks(100) {
        let sql = format!(
            "INSERT INTO subscription_event (subscription_id, event_number, topic, \
             resource_type, resource_id, change_kind, occurred_ms) VALUES {}",
            value_rows(backend, chunk.len(), 7)
        );
        let mut query = sqlx::query(&sql);
        for (number, event) in chunk {
            query = query
                .bind(&event.subscription_id)
                .bind(*number)
                .bind(&event.topic)
                .bind(&event.resource_type)
                .bind(&event.resource_id)
                .bind(&event.change_kind)
                .bind(event.occurred_ms);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(numbered)
}
