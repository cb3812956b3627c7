//! The audit trail in the state store: AuditEvents appended in batches under a hash chain
//! (`append_audit_events`), read by id, searched by time, patient, agent and outcome, and checked
//! end to end (`verify_audit_chain`). `AuditWriterTask` is the one task that appends, whatever is
//! pending in one transaction (group commit). Requests hand it their event through `AuditWriter`:
//! over PostgreSQL they wait for the commit (durable on its server); over SQLite they write the
//! event to the journal (`state::journal`) and go on, and the task commits behind them, retrying
//! while the store refuses. `flush` waits for the task to catch up.
//!
//! The chain: each row stores `hash = SHA-256(prev_hash, seq, every column, its patients)` and
//! the previous row's hash; `audit_chain_head` holds the last `seq` and hash. Changing a byte of
//! a row, removing one, reordering them or cutting the tail breaks it, and `verify_audit_chain`
//! says where.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::any::AnyRow;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::journal::{AuditJournal, JournalPosition};
use super::{Bind, StateError, StateStore, bind_all, placeholders, value_rows};

/// The resource type of the audit trail (served from this store, never from the PMS).
pub const AUDIT_EVENT: &str = "AuditEvent";

/// One AuditEvent to append, with the fields search needs beside its JSON. As JSON it is a line
/// of the journal: `Serialize` writes every field but the resource, which `journal` appends as
/// the JSON it already is (escaping it into a string cost a pass over every byte).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditRecord {
    pub id: String,
    /// Milliseconds since the Unix epoch (`AuditEvent.recorded`).
    pub recorded_ms: i64,
    /// The FHIR restful interaction (`read`, `vread`, `search-type`, ...), when there is one.
    pub subtype: Option<String>,
    /// `AuditEvent.outcome`: `0`, `4`, `8` or `12`.
    pub outcome: String,
    pub client_id: Option<String>,
    /// The token's `sub`.
    pub subject: Option<String>,
    pub fhir_user: Option<String>,
    pub request_id: String,
    /// The Patient ids the answer touched, sorted and without repeats.
    pub patients: Vec<String>,
    /// The AuditEvent as FHIR JSON.
    #[serde(skip_serializing, deserialize_with = "super::journal::embedded_json")]
    pub resource: String,
}

/// A condition on `recorded` (milliseconds), from a `date` search value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordedBound {
    AtOrAfter(i64),
    Before(i64),
    /// Outside `[start, end)`.
    Outside(i64, i64),
}

/// What an AuditEvent search asks for: every list is ANDed; the values inside one inner list
/// (one search parameter's comma-separated values) are ORed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub recorded: Vec<RecordedBound>,
    pub patients: Vec<Vec<String>>,
    /// Client ids, token subjects or fhirUser references.
    pub agents: Vec<Vec<String>>,
    pub outcomes: Vec<Vec<String>>,
}

/// An event as stored: its place in the chain and its JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAuditEvent {
    pub seq: i64,
    pub resource: String,
}

/// Where the chain is broken, as `verify_audit_chain` found it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at seq {seq}: {reason}")]
pub struct ChainBreak {
    pub seq: i64,
    pub reason: String,
}

const GENESIS: &str = "genesis";

/// The hash of one row, chained to `prev_hash`. Fields are length-prefixed and absent values
/// tagged, so no two different rows hash the same bytes.
fn chain_hash(prev_hash: &str, seq: i64, record: &AuditRecord) -> String {
    let mut hasher = Sha256::new();
    let mut field = |value: Option<&str>| match value {
        None => hasher.update([0u8]),
        Some(text) => {
            hasher.update([1u8]);
            hasher.update((text.len() as u64).to_be_bytes());
            hasher.update(text.as_bytes());
        }
    };
    field(Some(prev_hash));
    field(Some(&seq.to_string()));
    field(Some(&record.id));
    field(Some(&record.recorded_ms.to_string()));
    field(record.subtype.as_deref());
    field(Some(&record.outcome));
    field(record.client_id.as_deref());
    field(record.subject.as_deref());
    field(record.fhir_user.as_deref());
    field(Some(&record.request_id));
    field(Some(&record.resource));
    field(Some(&record.patients.len().to_string()));
    for patient in &record.patients {
        field(Some(patient));
    }
    URL_SAFE_NO_PAD.encode(hasher.finalize())
}

/// `$first, $first+1, ...` for `count` values.
/// A WHERE clause for `filter` and the values to bind, in order, after `already_bound` others.
fn where_clause(filter: &AuditFilter, already_bound: usize) -> (String, Vec<Bind>) {
    let mut conds: Vec<String> = Vec::new();
    let mut binds: Vec<Bind> = Vec::new();
    let next = |binds: &Vec<Bind>| already_bound + binds.len() + 1;
    for bound in &filter.recorded {
        match *bound {
            RecordedBound::AtOrAfter(ms) => {
                conds.push(format!("recorded_ms >= ${}", next(&binds)));
                binds.push(Bind::Int(ms));
            }
            RecordedBound::Before(ms) => {
                conds.push(format!("recorded_ms < ${}", next(&binds)));
                binds.push(Bind::Int(ms));
            }
            RecordedBound::Outside(start, end) => {
                let first = next(&binds);
                conds.push(format!(
                    "(recorded_ms < ${first} OR recorded_ms >= ${})",
                    first + 1
                ));
                binds.push(Bind::Int(start));
                binds.push(Bind::Int(end));
            }
        }
    }
    for patients in &filter.patients {
        conds.push(format!(
            "seq IN (SELECT event_seq FROM audit_event_patient WHERE patient IN ({}))",
            placeholders(next(&binds), patients.len())
        ));
        binds.extend(patients.iter().cloned().map(Bind::Text));
    }
    for agents in &filter.agents {
        let alternatives: Vec<String> = ["client_id", "subject", "fhir_user"]
            .iter()
            .map(|column| {
                let list = placeholders(next(&binds), agents.len());
                binds.extend(agents.iter().cloned().map(Bind::Text));
                format!("{column} IN ({list})")
            })
            .collect();
        conds.push(format!("({})", alternatives.join(" OR ")));
    }
    for outcomes in &filter.outcomes {
        conds.push(format!(
            "outcome IN ({})",
            placeholders(next(&binds), outcomes.len())
        ));
        binds.extend(outcomes.iter().cloned().map(Bind::Text));
    }
    let clause = if conds.is_empty() {
        "1 = 1".to_owned()
    } else {
        conds.join(" AND ")
    };
    (clause, binds)
}

impl StateStore {
    /// Appends `records` in one transaction, extending the hash chain. All or none are stored.
    pub async fn append_audit_events(&self, records: &[AuditRecord]) -> Result<(), StateError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool().begin().await?;
        // Taking the head's lock first serializes appenders on every backend; the same statement
        // reads the head (each statement is a round trip to the store's connection).
        let head =
            sqlx::query("UPDATE audit_chain_head SET seq = seq WHERE id = 1 RETURNING seq, hash")
                .fetch_one(&mut *tx)
                .await?;
        let mut seq: i64 = head.try_get("seq")?;
        let mut hash: String = head.try_get("hash")?;
        // One multi-row INSERT per table for the whole batch: a statement costs far more than a
        // row here, and the batch is what every waiting request's answer waits for.
        let mut events = Vec::with_capacity(records.len());
        for record in records {
            seq += 1;
            let prev_hash = std::mem::take(&mut hash);
            hash = chain_hash(&prev_hash, seq, record);
            events.push((seq, record, prev_hash, hash.clone()));
        }
        let insert_events = format!(
            "INSERT INTO audit_event (seq, id, recorded_ms, subtype, outcome, client_id, subject, \
             fhir_user, request_id, resource, prev_hash, hash) VALUES {}",
            value_rows(self.backend(), events.len(), 12)
        );
        let mut query = sqlx::query(&insert_events);
        for (seq, record, prev_hash, hash) in &events {
            query = query
                .bind(*seq)
                .bind(&record.id)
                .bind(record.recorded_ms)
                .bind(&record.subtype)
                .bind(&record.outcome)
                .bind(&record.client_id)
                .bind(&record.subject)
                .bind(&record.fhir_user)
                .bind(&record.request_id)
                .bind(&record.resource)
                .bind(prev_hash)
                .bind(hash);
        }
        query.execute(&mut *tx).await?;
        let patients: Vec<(i64, &String)> = events
            .iter()
            .flat_map(|(seq, record, _, _)| record.patients.iter().map(move |p| (*seq, p)))
            .collect();
        // At most 1,000 rows (2,000 parameters) per statement, within every backend's limit.
        for chunk in patients.chunks(1000) {
            let sql = format!(
                "INSERT INTO audit_event_patient (event_seq, patient) VALUES {}",
                value_rows(self.backend(), chunk.len(), 2)
            );
            let mut query = sqlx::query(&sql);
            for (seq, patient) in chunk {
                query = query.bind(*seq).bind(*patient);
            }
            query.execute(&mut *tx).await?;
        }
        sqlx::query("UPDATE audit_chain_head SET seq = $1, hash = $2 WHERE id = 1")
            .bind(seq)
            .bind(&hash)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Appends, in order, the `records` whose ids the store does not hold yet (a journal an
    /// earlier process left may end with events it had already committed); how many.
    pub async fn append_missing_audit_events(
        &self,
        records: &[AuditRecord],
    ) -> Result<usize, StateError> {
        let mut appended = 0;
        for chunk in records.chunks(MAX_BATCH) {
            let sql = format!(
                "SELECT id FROM audit_event WHERE id IN ({})",
                placeholders(1, chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for record in chunk {
                query = query.bind(&record.id);
            }
            let stored = query
                .fetch_all(self.pool())
                .await?
                .iter()
                .map(|row| row.try_get::<String, _>("id"))
                .collect::<Result<HashSet<String>, _>>()?;
            let missing: Vec<AuditRecord> = chunk
                .iter()
                .filter(|record| !stored.contains(&record.id))
                .cloned()
                .collect();
            self.append_audit_events(&missing).await?;
            appended += missing.len();
        }
        Ok(appended)
    }

    /// The AuditEvent JSON with this id.
    pub async fn audit_event(&self, id: &str) -> Result<Option<String>, StateError> {
        let row = sqlx::query("SELECT resource FROM audit_event WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|row| row.try_get("resource")).transpose()?)
    }

    /// Up to `count` events matching `filter`, newest first, after (older than) `before_seq`.
    pub async fn search_audit_events(
        &self,
        filter: &AuditFilter,
        count: usize,
        before_seq: Option<i64>,
    ) -> Result<Vec<StoredAuditEvent>, StateError> {
        let (cursor, cursor_binds) = match before_seq {
            Some(_) => ("seq < $1 AND ", 1),
            None => ("", 0),
        };
        let (clause, binds) = where_clause(filter, cursor_binds);
        let sql = format!(
            "SELECT seq, resource FROM audit_event WHERE {cursor}{clause} ORDER BY seq DESC LIMIT {}",
            count.max(1)
        );
        let mut query = sqlx::query(&sql);
        if let Some(before) = before_seq {
            query = query.bind(before);
        }
        let rows = bind_all(query, &binds).fetch_all(self.pool()).await?;
        stored_events(rows)
    }

    /// How many events match `filter`.
    pub async fn count_audit_events(&self, filter: &AuditFilter) -> Result<u64, StateError> {
        let (clause, binds) = where_clause(filter, 0);
        let sql = format!("SELECT COUNT(*) AS n FROM audit_event WHERE {clause}");
        let row = bind_all(sqlx::query(&sql), &binds)
            .fetch_one(self.pool())
            .await?;
        let n: i64 = row.try_get("n")?;
        Ok(n.max(0) as u64)
    }

    /// Walks the whole chain from its start: every `seq` present in order, every `prev_hash` the
    /// previous row's hash, every hash recomputed from the row and its patients, and the head at
    /// the last row. `Ok(Ok(n))`: `n` events, intact.
    pub async fn verify_audit_chain(&self) -> Result<Result<u64, ChainBreak>, StateError> {
        const BATCH: i64 = 1000;
        let mut expected_seq: i64 = 0;
        let mut previous = GENESIS.to_owned();
        loop {
            let rows = sqlx::query(
                "SELECT seq, id, recorded_ms, subtype, outcome, client_id, subject, fhir_user, \
                 request_id, resource, prev_hash, hash FROM audit_event \
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .bind(expected_seq)
            .bind(BATCH)
            .fetch_all(self.pool())
            .await?;
            let Some(last) = rows.last() else { break };
            let last_seq: i64 = last.try_get("seq")?;
            let mut patients: std::collections::HashMap<i64, Vec<String>> = Default::default();
            for row in sqlx::query(
                "SELECT event_seq, patient FROM audit_event_patient \
                 WHERE event_seq > $1 AND event_seq <= $2",
            )
            .bind(expected_seq)
            .bind(last_seq)
            .fetch_all(self.pool())
            .await?
            {
                patients
                    .entry(row.try_get("event_seq")?)
                    .or_default()
                    .push(row.try_get("patient")?);
            }
            for row in &rows {
                let seq: i64 = row.try_get("seq")?;
                expected_seq += 1;
                let broken = |reason: &str| {
                    Ok(Err(ChainBreak {
                        seq,
                        reason: reason.to_owned(),
                    }))
                };
                if seq != expected_seq {
                    return broken(&format!("event {expected_seq} is missing"));
                }
                let mut record = record_from_row(row)?;
                record.patients = patients.remove(&seq).unwrap_or_default();
                record.patients.sort();
                let prev_hash: String = row.try_get("prev_hash")?;
                let hash: String = row.try_get("hash")?;
                if prev_hash != previous {
                    return broken("its prev_hash is not the previous event's hash");
                }
                if chain_hash(&prev_hash, seq, &record) != hash {
                    return broken("its content does not match its hash");
                }
                previous = hash;
            }
        }
        let head = sqlx::query("SELECT seq, hash FROM audit_chain_head WHERE id = 1")
            .fetch_one(self.pool())
            .await?;
        let head_seq: i64 = head.try_get("seq")?;
        let head_hash: String = head.try_get("hash")?;
        if head_seq != expected_seq || head_hash != previous {
            return Ok(Err(ChainBreak {
                seq: head_seq,
                reason: format!(
                    "the chain head names event {head_seq}, the chain ends at {expected_seq}"
                ),
            }));
        }
        Ok(Ok(expected_seq as u64))
    }
}

fn stored_events(rows: Vec<AnyRow>) -> Result<Vec<StoredAuditEvent>, StateError> {
    rows.iter()
        .map(|row| {
            Ok(StoredAuditEvent {
                seq: row.try_get("seq")?,
                resource: row.try_get("resource")?,
            })
        })
        .collect()
}

fn record_from_row(row: &AnyRow) -> Result<AuditRecord, StateError> {
    Ok(AuditRecord {
        id: row.try_get("id")?,
        recorded_ms: row.try_get("recorded_ms")?,
        subtype: row.try_get("subtype")?,
        outcome: row.try_get("outcome")?,
        client_id: row.try_get("client_id")?,
        subject: row.try_get("subject")?,
        fhir_user: row.try_get("fhir_user")?,
        request_id: row.try_get("request_id")?,
        patients: Vec::new(),
        resource: row.try_get("resource")?,
    })
}

/// Requests waiting for their commit at most (no journal); more wait to be queued (within
/// `ACK_TIMEOUT`).
const QUEUE: usize = 1024;
/// The journal's directory in `server.state_dir` (`state::journal`).
pub const AUDIT_JOURNAL_DIR: &str = "audit-journal";
/// Journaled events waiting for the store at most (besides the batch being committed), by
/// default: beyond, requests are refused (503) until the store takes the backlog. Memory, not
/// the journal, is what bounds it (a few KiB an event).
pub const JOURNAL_BACKLOG: usize = 16_384;
/// Events committed in one transaction at most.
const MAX_BATCH: usize = 512;
/// How long a request waits for its event to be queued and committed before it gives up (and
/// answers 503).
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long journaled events gather before a commit takes them. Nobody waits for them, and a
/// transaction costs the store's thread far more than a row: committing each event as it came
/// took a third of a core at a few thousand requests a second.
const JOURNAL_LINGER: Duration = Duration::from_millis(20);
/// The first and the longest wait before journaled events are offered to the store again.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MOST: Duration = Duration::from_secs(5);

/// Why an event could not be made durable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditUnavailable {
    #[error("the audit store did not commit the event: {0}")]
    Failed(String),
    #[error("the audit store did not answer in time")]
    TimedOut,
    #[error("the audit writer has stopped")]
    Stopped,
    #[error("the audit journal holds {0} events the store has not taken yet")]
    Backlogged(usize),
}

/// What the writer's queue carries.
enum Entry {
    /// An event whose request waits for its commit (no journal).
    Waiting {
        record: AuditRecord,
        done: oneshot::Sender<Result<(), AuditUnavailable>>,
    },
    /// An event already durable in the journal, at `position`.
    Journaled {
        record: AuditRecord,
        position: JournalPosition,
    },
    /// Answered once everything queued before it is committed.
    Flush(oneshot::Sender<Result<(), AuditUnavailable>>),
}

/// The handle requests use to append an event; cheap to clone.
#[derive(Clone, Debug)]
pub struct AuditWriter {
    sender: mpsc::Sender<Entry>,
    journal: Option<Arc<AuditJournal>>,
}

/// The writer's side, to be run as a background worker (`AuditWriterTask::run`).
pub struct AuditWriterTask {
    store: StateStore,
    receiver: mpsc::Receiver<Entry>,
    journal: Option<Arc<AuditJournal>>,
}

/// A writer whose requests wait for their event's commit, and the task that serves it.
pub fn audit_writer(store: StateStore) -> (AuditWriter, AuditWriterTask) {
    writer_over(store, QUEUE, None)
}

/// A writer that puts each event in the journal in `dir` and answers at once, and the task that
/// commits the journaled events, `backlog` of them waiting at most. What an earlier process left
/// in the journal is appended first (the events the store does not have yet, by id).
pub async fn journaled_audit_writer(
    store: StateStore,
    dir: &Path,
    backlog: usize,
) -> Result<(AuditWriter, AuditWriterTask), StateError> {
    let (journal, recovered) = AuditJournal::open(dir)?;
    let appended = store.append_missing_audit_events(&recovered).await?;
    if !recovered.is_empty() {
        tracing::info!(
            journaled = recovered.len(),
            appended,
            "audit journal: the events an earlier process left are in the store"
        );
    }
    journal.forget_recovered()?;
    Ok(writer_over(store, backlog, Some(Arc::new(journal))))
}

fn writer_over(
    store: StateStore,
    queue: usize,
    journal: Option<Arc<AuditJournal>>,
) -> (AuditWriter, AuditWriterTask) {
    let (sender, receiver) = mpsc::channel(queue);
    (
        AuditWriter {
            sender,
            journal: journal.clone(),
        },
        AuditWriterTask {
            store,
            receiver,
            journal,
        },
    )
}

impl AuditWriter {
    /// Makes `record` durable: with a journal, once its line is written; without, once it is
    /// committed to the store. Or says why it is not.
    pub async fn append(&self, record: AuditRecord) -> Result<(), AuditUnavailable> {
        if let Some(journal) = &self.journal {
            return self.append_to_journal(journal, record);
        }
        let (done, ack) = oneshot::channel();
        self.queue(Entry::Waiting { record, done }, ack).await
    }

    /// Returns once every event appended before the call is in the store (what a reader of the
    /// audit trail waits for), or why it is not. Without a journal an append returns only after
    /// its commit, so there is nothing to wait for.
    pub async fn flush(&self) -> Result<(), AuditUnavailable> {
        if self.journal.is_none() {
            return Ok(());
        }
        let (done, ack) = oneshot::channel();
        self.queue(Entry::Flush(done), ack).await
    }

    /// Journaled events the store has not taken yet (0 without a journal).
    pub fn backlog(&self) -> usize {
        match self.journal {
            Some(_) => self.sender.max_capacity() - self.sender.capacity(),
            None => 0,
        }
    }

    fn append_to_journal(
        &self,
        journal: &AuditJournal,
        record: AuditRecord,
    ) -> Result<(), AuditUnavailable> {
        // The queue's slot is taken first: a full backlog refuses the request before its line
        // is written. The line and the slot are then filled under the journal's lock, so the
        // chain takes the events in the journal's order.
        let slot = self.sender.try_reserve().map_err(|error| match error {
            mpsc::error::TrySendError::Full(()) => {
                AuditUnavailable::Backlogged(self.sender.max_capacity())
            }
            mpsc::error::TrySendError::Closed(()) => AuditUnavailable::Stopped,
        })?;
        journal
            .append(record, |record, position| {
                slot.send(Entry::Journaled { record, position })
            })
            .map_err(|error| {
                tracing::error!(%error, "audit journal not written");
                AuditUnavailable::Failed(error.to_string())
            })
    }

    async fn queue(
        &self,
        entry: Entry,
        ack: oneshot::Receiver<Result<(), AuditUnavailable>>,
    ) -> Result<(), AuditUnavailable> {
        let answered = async {
            self.sender
                .send(entry)
                .await
                .map_err(|_| AuditUnavailable::Stopped)?;
            ack.await.map_err(|_| AuditUnavailable::Stopped)?
        };
        tokio::time::timeout(ACK_TIMEOUT, answered)
            .await
            .map_err(|_| AuditUnavailable::TimedOut)?
    }
}

impl AuditWriterTask {
    /// Commits what is queued, batch after batch, until every `AuditWriter` is gone: the
    /// server drops its handles once it has answered its last request, so the requests a
    /// graceful shutdown still finishes are audited, and then the task returns by itself.
    /// Journaled events the store refuses are offered again, with a growing wait, until they
    /// are taken or `shutdown` is cancelled (they then stay in the journal for the next start).
    pub async fn run(mut self, shutdown: CancellationToken) {
        while let Some(first) = self.receiver.recv().await {
            if matches!(first, Entry::Journaled { .. }) {
                tokio::time::sleep(JOURNAL_LINGER).await;
            }
            let batch = self.take_batch(first);
            if !self.commit(batch, &shutdown).await {
                return;
            }
        }
    }

    fn take_batch(&mut self, first: Entry) -> Vec<Entry> {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match self.receiver.try_recv() {
                Ok(entry) => batch.push(entry),
                Err(_) => break,
            }
        }
        batch
    }

    /// Commits `batch`'s events and answers whoever waits; false when shutdown came while
    /// journaled events were still refused.
    async fn commit(&self, batch: Vec<Entry>, shutdown: &CancellationToken) -> bool {
        let mut records = Vec::with_capacity(batch.len());
        let mut waiting = Vec::new();
        let mut flushes = Vec::new();
        let mut journaled_through = None;
        for entry in batch {
            match entry {
                Entry::Waiting { record, done } => {
                    records.push(record);
                    waiting.push(done);
                }
                Entry::Journaled { record, position } => {
                    records.push(record);
                    journaled_through = Some(position);
                }
                Entry::Flush(done) => flushes.push(done),
            }
        }
        let mut retry_in = RETRY_FIRST;
        loop {
            let outcome = self
                .store
                .append_audit_events(&records)
                .await
                .map_err(|error| {
                    tracing::error!(%error, events = records.len(), "audit events not stored");
                    AuditUnavailable::Failed(error.to_string())
                });
            let word = if outcome.is_ok() {
                "committed"
            } else {
                "failed"
            };
            crate::metrics::metrics()
                .audit_events
                .add(&[word], records.len() as u64);
            // A request that gave up waiting no longer listens.
            for done in flushes.drain(..) {
                let _ = done.send(outcome.clone());
            }
            if outcome.is_ok() || self.journal.is_none() {
                for done in waiting {
                    let _ = done.send(outcome.clone());
                }
                if let (Some(journal), Some(position)) = (&self.journal, journaled_through)
                    && let Err(error) = journal.committed(position)
                {
                    tracing::warn!(%error, "audit journal: committed lines not removed");
                }
                return true;
            }
            // The events are safe in the journal; the store is offered them again.
            tokio::select! {
                () = tokio::time::sleep(retry_in) => {}
                () = shutdown.cancelled() => {
                    tracing::warn!(
                        events = records.len(),
                        "audit journal: events not yet stored stay in the journal for the next start"
                    );
                    return false;
                }
            }
            retry_in = (retry_in * 2).min(RETRY_MOST);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An event `id` naming patients 1 and 2 (the journal's tests use it too).
    pub(crate) fn record(id: &str) -> AuditRecord {
        AuditRecord {
            id: id.into(),
            recorded_ms: 1_700_000_000_000,
            subtype: Some("read".into()),
            outcome: "0".into(),
            client_id: Some("app".into()),
            subject: Some("app".into()),
            fhir_user: None,
            request_id: "r1".into(),
            patients: vec!["1".into(), "2".into()],
            resource: "{}".into(),
        }
    }

    #[test]
    fn the_hash_covers_every_field_and_the_chain() {
        let base = record("a");
        let hash = chain_hash(GENESIS, 1, &base);
        assert_eq!(hash, chain_hash(GENESIS, 1, &base.clone()));
        let changed_by = |change: fn(&mut AuditRecord)| {
            let mut other = base.clone();
            change(&mut other);
            chain_hash(GENESIS, 1, &other)
        };
        let changed = [
            chain_hash("other", 1, &base),
            chain_hash(GENESIS, 2, &base),
            changed_by(|r| r.id.push('x')),
            changed_by(|r| r.recorded_ms += 1),
            changed_by(|r| r.subtype = None),
            changed_by(|r| r.outcome = "4".into()),
            changed_by(|r| r.client_id = None),
            changed_by(|r| r.subject = Some(String::new())),
            changed_by(|r| r.fhir_user = Some("Practitioner/1".into())),
            changed_by(|r| r.request_id.push('x')),
            changed_by(|r| {
                r.patients.pop();
            }),
            changed_by(|r| r.patients = vec!["12".into()]),
            changed_by(|r| r.resource.push(' ')),
        ];
        for other in changed {
            assert_ne!(other, hash);
        }
    }

    #[test]
    fn filters_bind_every_value_in_placeholder_order() {
        let filter = AuditFilter {
            recorded: vec![RecordedBound::AtOrAfter(5), RecordedBound::Outside(1, 2)],
            patients: vec![vec!["1".into(), "2".into()]],
            agents: vec![vec!["app".into()]],
            outcomes: vec![vec!["0".into()]],
        };
        let (clause, binds) = where_clause(&filter, 1);
        assert_eq!(
            clause,
            "recorded_ms >= $2 AND (recorded_ms < $3 OR recorded_ms >= $4) AND \
             seq IN (SELECT event_seq FROM audit_event_patient WHERE patient IN ($5, $6)) AND \
             (client_id IN ($7) OR subject IN ($8) OR fhir_user IN ($9)) AND outcome IN ($10)"
        );
        assert_eq!(binds.len(), 9);
        assert_eq!(where_clause(&AuditFilter::default(), 0).0, "1 = 1");
    }
}
