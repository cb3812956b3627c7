//! Change detection over PMS tables Portico does not own: per mapping, the strategy its adapter
//! declares (timestamp watermark, rowversion, keyset scan), a comparison of each served resource
//! with what was remembered of it (content hash), the topics the change fires, the subscriptions
//! it matches (their filters compiled by the search compiler, under their owner's access), and
//! one state-store transaction that writes what is remembered, the numbered events and the new
//! cursor. Read-only on the PMS; one detector per mapping across replicas (a lease).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{NaiveDate, NaiveDateTime};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::owner::owner_access;
use super::resource::{Criteria, SubscriptionSpec};
use super::trigger::{compared_elements, compared_values, fired_topics};
use crate::access::{Access, PatientLimit};
use crate::adapter::model::{ChangeKind, ChangeStrategy, Mapping};
use crate::api::audit::PatientsTouched;
use crate::db::DbError;
use crate::dialect::ast::{CmpOp, Cond, Expr, Value};
use crate::repository::Repository;
use crate::search::compile::{own_page_key, plan};
use crate::search::parse::parse;
use crate::state::subscriptions::{
    LeaseLost, NewEvent, PassCommit, Remembered, StoredSubscription, now_ms,
};
use crate::state::{StateError, StateStore};

/// How detection runs (`[subscriptions]` settings).
#[derive(Debug, Clone)]
pub struct DetectionSettings {
    /// Time between passes over each mapping.
    pub poll_interval: Duration,
    /// How long a detector holds a mapping without renewing; a replica that dies hands its
    /// mappings over after this.
    pub lease: Duration,
}

impl Default for DetectionSettings {
    fn default() -> DetectionSettings {
        DetectionSettings {
            poll_interval: Duration::from_secs(5),
            lease: Duration::from_secs(30),
        }
    }
}

/// Timestamps later than this past the present are not trusted as a watermark (a clock ahead,
/// a typo in a date): the watermark stops at now plus this, so such rows are re-read each pass
/// rather than hiding the edits that follow them.
const FUTURE_TOLERANCE: chrono::Duration = chrono::Duration::minutes(5);

/// Subscriptions matched by one query: the owner (as stored) and the filters other than `_id`.
type MatchGroup = (String, Vec<(String, String)>);

/// Ids compiled into one subscription-matching search.
const MATCH_BATCH: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("legacy database: {0}")]
    Legacy(#[from] DbError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// Where a pass's time went (the debug log's `detection pass` line).
#[derive(Default)]
struct PassTimings {
    read: Duration,
    compare: Duration,
    matching: Duration,
    commit: Duration,
}

/// What one pass found, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    /// Another replica holds the mapping: nothing was read.
    pub skipped: bool,
    pub rows_read: usize,
    pub changes: usize,
    pub events: usize,
    /// The first full scan is still running (no events until it ends).
    pub baselining: bool,
}

/// One served resource's change, before it is matched to subscriptions.
struct Change {
    kind: ChangeKind,
    resource_id: String,
    previous: Option<Remembered>,
    current: Option<Json>,
}

/// Detects changes for every mapping that declares `[changes]`.
#[derive(Clone)]
pub struct Detector {
    pub repository: Repository,
    pub store: StateStore,
    pub settings: DetectionSettings,
    /// This replica's name in leases.
    pub replica: String,
    /// Woken after a pass numbered events, so delivery starts at once.
    pub delivery: Arc<Notify>,
    /// Woken with it: the websockets bound to subscriptions.
    pub sockets: super::websocket::EventSignal,
}

impl Detector {
    /// Passes over every mapping each poll interval until `shutdown`; leases are given back then.
    ///
    /// Two loops: one for the mappings with a change column (timestamp, rowversion), whose pass
    /// reads only what moved, and one for the scan-strategy mappings, each of whose passes reads
    /// and hashes `scan_rows` rows. On one loop a tick lasted the sum of every scan step (1.7 s
    /// on the calendar bench, BENCHMARKS.md), which delayed every other mapping's notifications by
    /// as much; a task per mapping measured worse still on 2 cores (the scans then competed with
    /// each other and with delivery for the CPU).
    pub async fn run(self, shutdown: CancellationToken) {
        let (scans, moved): (Vec<_>, Vec<_>) =
            self.detected_mappings()
                .into_iter()
                .partition(|(_, mapping)| {
                    matches!(
                        mapping.changes.as_ref().map(|c| &c.strategy),
                        Some(ChangeStrategy::Scan)
                    )
                });
        tokio::join!(
            self.run_loop(moved, &shutdown),
            self.run_loop(scans, &shutdown)
        );
        for (_, mapping) in self.detected_mappings() {
            if let Err(error) = self
                .store
                .release_change_cursor(&mapping.name, &self.replica)
                .await
            {
                tracing::debug!(mapping = %mapping.name, error = %error, "lease not released");
            }
        }
    }

    /// One pass over each of `mappings` in turn, each poll interval (or right after the previous
    /// round when that took longer), until `shutdown`.
    async fn run_loop(&self, mappings: Vec<(usize, Arc<Mapping>)>, shutdown: &CancellationToken) {
        if mappings.is_empty() {
            return;
        }
        let mut ticker = tokio::time::interval(self.settings.poll_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Mappings whose failure may be on record: every one at first (a failure recorded before
        // a restart ends with the first success under this replica's lease), then those that
        // failed here. A success clears the record only for them, so a healthy pass writes
        // nothing.
        let mut maybe_failing: std::collections::HashSet<String> =
            mappings.iter().map(|(_, m)| m.name.clone()).collect();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
            }
            for (branch_index, mapping) in &mappings {
                if shutdown.is_cancelled() {
                    break;
                }
                let started = Instant::now();
                let outcome = self.pass(*branch_index, mapping).await;
                crate::metrics::metrics()
                    .detection_pass_duration
                    .observe(&[&mapping.name], started.elapsed());
                self.record_health(&mapping.name, &outcome, &mut maybe_failing)
                    .await;
                match outcome {
                    Ok(report) if report.events > 0 || report.changes > 0 => tracing::info!(
                        mapping = %mapping.name,
                        changes = report.changes,
                        events = report.events,
                        "changes detected"
                    ),
                    Ok(_) => {}
                    Err(error) => tracing::warn!(
                        mapping = %mapping.name,
                        error = %error,
                        "change detection pass failed; the next pass retries"
                    ),
                }
            }
        }
    }

    /// Counts the pass in the metrics, and keeps the mapping's failure on record in the state
    /// store (for the fail-safe flag, `crate::alarm`) while it fails under this replica's lease.
    async fn record_health(
        &self,
        mapping: &str,
        outcome: &Result<PassReport, DetectError>,
        maybe_failing: &mut std::collections::HashSet<String>,
    ) {
        let metrics = crate::metrics::metrics();
        let now = now_ms();
        let recorded = match outcome {
            Ok(report) => {
                metrics.detection_passes.inc(&[mapping, "ok"]);
                metrics
                    .detection_last_pass
                    .set(&[mapping], now as f64 / 1000.0);
                if report.skipped || !maybe_failing.remove(mapping) {
                    return;
                }
                self.store
                    .clear_detection_failure(mapping, &self.replica)
                    .await
            }
            Err(error) => {
                metrics.detection_passes.inc(&[mapping, "error"]);
                maybe_failing.insert(mapping.to_owned());
                self.store
                    .record_detection_failure(mapping, &self.replica, now, &error.to_string())
                    .await
            }
        };
        if let Err(error) = recorded {
            // Kept for the next pass to try again.
            maybe_failing.insert(mapping.to_owned());
            tracing::warn!(mapping, %error, "the detection failure could not be recorded");
        }
    }

    /// The mappings that declare a strategy, with their index among their type's mappings.
    pub fn detected_mappings(&self) -> Vec<(usize, Arc<Mapping>)> {
        self.repository
            .adapter
            .resources
            .values()
            .flat_map(|def| def.mappings.iter().enumerate())
            .filter(|(_, m)| m.changes.is_some())
            .map(|(index, m)| (index, m.clone()))
            .collect()
    }

    /// One pass over one mapping. A first pass starts the baseline: a full scan that remembers
    /// every served resource and notifies nobody.
    pub async fn pass(
        &self,
        branch_index: usize,
        mapping: &Arc<Mapping>,
    ) -> Result<PassReport, DetectError> {
        let Some(detection) = mapping.changes.as_ref() else {
            return Ok(PassReport::default());
        };
        let lease_until = now_ms() + self.settings.lease.as_millis() as i64;
        let Some(cursor) = self
            .store
            .claim_change_cursor(&mapping.name, &self.replica, lease_until)
            .await?
        else {
            return Ok(PassReport {
                skipped: true,
                ..PassReport::default()
            });
        };
        let topics = &self.repository.adapter.topics;
        let compared = compared_elements(topics, &mapping.name);
        let mut report = PassReport::default();
        let mut commit = PassCommit {
            mapping: mapping.name.clone(),
            lease_owner: self.replica.clone(),
            watermark: cursor.watermark.clone(),
            scan_after: cursor.scan_after.clone(),
            cycle: cursor.cycle,
            baselined: cursor.baselined,
            last_reconcile_ms: cursor.last_reconcile_ms,
            seen_cycle: cursor.cycle,
            ..PassCommit::default()
        };
        let mut changes: Vec<Change> = Vec::new();
        let mut observed: HashSet<String> = HashSet::new();
        let scan_rows = detection.scan_rows as u64;

        if !cursor.baselined {
            report.baselining = true;
            // The baseline runs step after step in this pass: the sooner it ends, the sooner
            // notifications start, and the less can change under it.
            if commit.scan_after.is_none() {
                commit.last_reconcile_ms = now_ms();
            }
            loop {
                let after = decode_key(mapping, commit.scan_after.as_deref());
                let scanned = self
                    .repository
                    .scan(branch_index, mapping, Cond::True, after, scan_rows)
                    .await?;
                report.rows_read += scanned.rows;
                let highest =
                    advanced_watermark(mapping, commit.watermark.take(), &scanned.outcomes);
                let ended = (scanned.rows as u64) < scan_rows;
                commit.remember = scanned
                    .outcomes
                    .iter()
                    .filter_map(|(outcome, _)| outcome.as_ref().ok())
                    .map(|found| {
                        (
                            found.id.clone(),
                            remembered(&found.resource.to_json(), &compared, commit.cycle),
                        )
                    })
                    .collect();
                if ended {
                    // Edits made while the baseline ran carry times at or after its start; the
                    // highest time seen minus the baseline's duration is at or before all of them.
                    // (Rowversions need no such margin: MIN_ACTIVE_ROWVERSION bounds every read.)
                    let took = chrono::Duration::milliseconds(now_ms() - commit.last_reconcile_ms);
                    commit.watermark = match parse_watermark(highest.as_deref()) {
                        Some(time) => {
                            Some(self.capped_watermark(mapping, format_watermark(time - took)))
                        }
                        None => highest,
                    };
                    commit.scan_after = None;
                    commit.baselined = true;
                    commit.cycle += 1;
                    commit.last_reconcile_ms = now_ms();
                } else {
                    commit.watermark = highest;
                    commit.scan_after = scanned
                        .last_key
                        .as_deref()
                        .map(|key| encode_key(mapping, key));
                }
                if !self.keep_lease(mapping).await?
                    || self.store.commit_detection_pass(&commit).await?.is_err()
                {
                    report.skipped = true;
                    return Ok(report);
                }
                if ended {
                    return Ok(report);
                }
            }
        }

        // Phase timings for the debug log: reading (and mapping), comparing with what is
        // remembered, matching subscriptions, committing.
        let mut timings = PassTimings::default();
        // Rows whose change columns moved.
        if let Some(moved) = moved_since(mapping, commit.watermark.as_deref()) {
            let mut highest = commit.watermark.clone();
            let mut after = None;
            loop {
                let started = Instant::now();
                let scanned = self
                    .repository
                    .scan(branch_index, mapping, moved.clone(), after, scan_rows)
                    .await?;
                timings.read += started.elapsed();
                report.rows_read += scanned.rows;
                highest = advanced_watermark(mapping, highest, &scanned.outcomes);
                let started = Instant::now();
                self.compare(
                    mapping,
                    &scanned.outcomes,
                    &compared,
                    &mut commit,
                    &mut changes,
                    &mut observed,
                )
                .await?;
                timings.compare += started.elapsed();
                if !self.keep_lease(mapping).await? {
                    report.skipped = true;
                    return Ok(report);
                }
                if (scanned.rows as u64) < scan_rows {
                    break;
                }
                after = scanned.last_key;
            }
            commit.watermark = highest.map(|w| self.capped_watermark(mapping, w));
        }

        // A keyset scan step: the whole strategy for `scan`, a reconcile for the others.
        let reconcile_due = match (&detection.strategy, detection.reconcile) {
            (ChangeStrategy::Scan, _) => true,
            (_, Some(every)) => {
                commit.scan_after.is_some()
                    || now_ms() - commit.last_reconcile_ms >= every.as_millis() as i64
            }
            (_, None) => false,
        };
        if reconcile_due {
            let after = decode_key(mapping, commit.scan_after.as_deref());
            let started = Instant::now();
            let scanned = self
                .repository
                .scan(branch_index, mapping, Cond::True, after, scan_rows)
                .await?;
            timings.read += started.elapsed();
            report.rows_read += scanned.rows;
            let started = Instant::now();
            self.compare(
                mapping,
                &scanned.outcomes,
                &compared,
                &mut commit,
                &mut changes,
                &mut observed,
            )
            .await?;
            timings.compare += started.elapsed();
            if (scanned.rows as u64) < scan_rows {
                // The cycle is complete: what it did not see is gone.
                for (id, previous) in self
                    .store
                    .unseen_in_cycle(&mapping.name, commit.cycle)
                    .await?
                {
                    if observed.contains(&id) {
                        continue;
                    }
                    commit.forget.push(id.clone());
                    changes.push(Change {
                        kind: ChangeKind::Delete,
                        resource_id: id,
                        previous: Some(previous),
                        current: None,
                    });
                }
                commit.cycle += 1;
                commit.scan_after = None;
                commit.last_reconcile_ms = now_ms();
            } else {
                commit.scan_after = scanned
                    .last_key
                    .as_deref()
                    .map(|key| encode_key(mapping, key));
            }
        }

        report.changes = changes.len();
        if !changes.is_empty() {
            let started = Instant::now();
            commit.events = self.match_subscriptions(mapping, &changes).await?;
            timings.matching = started.elapsed();
        }
        if !self.keep_lease(mapping).await? {
            report.skipped = true;
            return Ok(report);
        }
        report.events = commit.events.len();
        let started = Instant::now();
        let committed = self.store.commit_detection_pass(&commit).await?;
        timings.commit = started.elapsed();
        tracing::debug!(
            mapping = %mapping.name,
            rows = report.rows_read,
            changes = report.changes,
            events = report.events,
            read_ms = timings.read.as_millis() as u64,
            compare_ms = timings.compare.as_millis() as u64,
            match_ms = timings.matching.as_millis() as u64,
            commit_ms = timings.commit.as_millis() as u64,
            "detection pass"
        );
        match committed {
            Ok(numbered) => {
                if !numbered.is_empty() {
                    self.delivery.notify_one();
                    self.sockets.notify();
                }
            }
            Err(LeaseLost) => {
                report.skipped = true;
                report.events = 0;
            }
        }
        Ok(report)
    }

    /// Compares scanned resources with what is remembered of them: new ones are creates,
    /// different ones updates; all are marked seen in this cycle.
    async fn compare(
        &self,
        mapping: &Mapping,
        outcomes: &[(crate::adapter::map::MapOutcome, Arc<Vec<Value>>)],
        compared: &[String],
        commit: &mut PassCommit,
        changes: &mut Vec<Change>,
        observed: &mut HashSet<String>,
    ) -> Result<(), DetectError> {
        let ids = served_ids(outcomes);
        let fresh: Vec<String> = ids
            .into_iter()
            .filter(|id| !observed.contains(id))
            .collect();
        let known = self.store.remembered(&mapping.name, &fresh).await?;
        for (outcome, _) in outcomes {
            match outcome {
                Ok(found) => {
                    if !observed.insert(found.id.clone()) {
                        continue;
                    }
                    let resource = found.resource.to_json();
                    let now = remembered(&resource, compared, commit.seen_cycle);
                    match known.get(&found.id) {
                        Some(previous) if previous.hash == now.hash => {
                            if previous.seen_cycle != commit.seen_cycle {
                                commit.seen.push(found.id.clone());
                            }
                        }
                        previous => {
                            changes.push(Change {
                                kind: if previous.is_some() {
                                    ChangeKind::Update
                                } else {
                                    ChangeKind::Create
                                },
                                resource_id: found.id.clone(),
                                previous: previous.cloned(),
                                current: Some(resource),
                            });
                            commit.remember.push((found.id.clone(), now));
                        }
                    }
                }
                // A row that cannot be served now is neither changed nor gone: it keeps what was
                // remembered of it until it can be served again.
                Err(left_out) => {
                    if let Some(id) = &left_out.id
                        && observed.insert(id.clone())
                        && known.contains_key(id)
                    {
                        commit.seen.push(id.clone());
                    }
                }
            }
        }
        Ok(())
    }

    /// The events `changes` make: for each live subscription, the changes that fire its topic
    /// (or, for a classic subscription, creates and updates of its type) and pass its filters
    /// under its owner's access.
    async fn match_subscriptions(
        &self,
        mapping: &Mapping,
        changes: &[Change],
    ) -> Result<Vec<NewEvent>, DetectError> {
        let topics = &self.repository.adapter.topics;
        let occurred_ms = now_ms();
        // Which topics each change fires.
        let fired: Vec<Vec<String>> = changes
            .iter()
            .map(|change| {
                let previous = change.previous.as_ref().and_then(|p| {
                    serde_json::from_str::<serde_json::Map<String, Json>>(&p.compared).ok()
                });
                fired_topics(
                    topics,
                    &mapping.name,
                    change.kind,
                    previous.as_ref(),
                    change.current.as_ref(),
                )
                .into_iter()
                .map(|t| t.url.clone())
                .collect()
            })
            .collect();
        // Subscriptions whose filters differ only in `_id` (the same owner, the same other
        // filters) are matched by one query: `_id` is exact id equality, so it is applied here,
        // and the query asks the PMS only about the candidates some member still wants. With a
        // subscription per patient under one EHR client, this is one query per pass, not one per
        // subscription (BENCHMARKS.md, subscriptions).
        let mut groups: BTreeMap<MatchGroup, Vec<(StoredSubscription, Access, Vec<usize>)>> =
            BTreeMap::new();
        for subscription in self.store.live_subscriptions().await? {
            if subscription.resource_type != mapping.resource_type {
                continue;
            }
            let Ok(spec) = serde_json::from_str::<SubscriptionSpec>(&subscription.spec) else {
                tracing::warn!(subscription = %subscription.id, "stored subscription unreadable; skipped");
                continue;
            };
            let Some(access) = owner_access(&subscription.owner) else {
                continue;
            };
            let (ids, mut others): (Vec<_>, Vec<_>) = spec
                .criteria
                .query_pairs()
                .into_iter()
                .partition(|(name, _)| name == "_id");
            let candidates: Vec<usize> = (0..changes.len())
                .filter(|&i| match &spec.criteria {
                    Criteria::Topic { url, .. } => fired[i].iter().any(|t| t == url),
                    Criteria::Search { .. } => changes[i].kind != ChangeKind::Delete,
                })
                .filter(|&i| {
                    ids.iter()
                        .all(|(_, list)| list.split(',').any(|id| id == changes[i].resource_id))
                })
                .collect();
            if candidates.is_empty() {
                continue;
            }
            others.sort();
            groups
                .entry((subscription.owner.clone(), others))
                .or_default()
                .push((subscription, access, candidates));
        }
        let mut events = Vec::new();
        for ((_, filters), members) in groups {
            let wanted: BTreeSet<usize> = members
                .iter()
                .flat_map(|(_, _, candidates)| candidates.iter().copied())
                .collect();
            let wanted: Vec<usize> = wanted.into_iter().collect();
            let (first, access, _) = &members[0];
            let matched = self
                .matching(mapping, &first.id, access, &filters, changes, &wanted)
                .await?;
            for (subscription, _, candidates) in members {
                for index in candidates.into_iter().filter(|i| matched.contains(i)) {
                    let change = &changes[index];
                    events.push(NewEvent {
                        subscription_id: subscription.id.clone(),
                        topic: subscription.topic.clone(),
                        resource_type: mapping.resource_type.clone(),
                        resource_id: change.resource_id.clone(),
                        change_kind: change_kind_code(change.kind).to_owned(),
                        occurred_ms,
                    });
                }
            }
        }
        Ok(events)
    }

    /// Which of `candidates` pass `filters` (a subscription's, less `_id`) under its owner's
    /// access. Present resources are asked of the PMS (`_id` plus the filters, compiled by the
    /// search compiler with the owner's compartment); a deleted one is judged on the patients
    /// remembered of it, and only when every filter names a patient. `subscription` names the
    /// filters' subscription (or one of those sharing them) in logs.
    async fn matching(
        &self,
        mapping: &Mapping,
        subscription: &str,
        access: &Access,
        filters: &[(String, String)],
        changes: &[Change],
        candidates: &[usize],
    ) -> Result<HashSet<usize>, DetectError> {
        let mut matched = HashSet::new();
        let (deleted, present): (Vec<usize>, Vec<usize>) = candidates
            .iter()
            .partition(|&&i| changes[i].kind == ChangeKind::Delete);
        for index in deleted {
            let patients: BTreeSet<String> = changes[index]
                .previous
                .as_ref()
                .and_then(|p| serde_json::from_str(&p.patients).ok())
                .unwrap_or_default();
            if deleted_matches(access, filters, &patients) {
                matched.insert(index);
            }
        }
        let Some(def) = self
            .repository
            .adapter
            .resources
            .get(&mapping.resource_type)
        else {
            return Ok(matched);
        };
        let timezone = self.repository.adapter.timezone;
        for batch in present.chunks(MATCH_BATCH) {
            let ids: Vec<&str> = batch
                .iter()
                .map(|&i| changes[i].resource_id.as_str())
                .collect();
            let mut pairs = vec![
                ("_id".to_owned(), ids.join(",")),
                ("_count".to_owned(), MATCH_BATCH.to_string()),
            ];
            pairs.extend(filters.iter().cloned());
            let request = match parse(&pairs) {
                Ok(request) => request,
                Err(errors) => {
                    tracing::warn!(
                        subscription,
                        errors = errors.len(),
                        "filters no longer parse; nothing matched"
                    );
                    continue;
                }
            };
            let now = chrono::Utc::now().with_timezone(&timezone).naive_local();
            let Ok(plan) = plan(
                def,
                &self.repository.adapter.resources,
                request,
                true,
                timezone,
                now,
            ) else {
                tracing::warn!(subscription, "filters no longer compile; nothing matched");
                continue;
            };
            let page = self.repository.search(&plan, None, access, false).await?;
            let found: HashSet<&str> = page
                .matches
                .iter()
                .map(|m| m.resource.id.as_str())
                .collect();
            matched.extend(
                batch
                    .iter()
                    .copied()
                    .filter(|&i| found.contains(changes[i].resource_id.as_str())),
            );
        }
        Ok(matched)
    }
}

impl Detector {
    /// Extends this pass's lease as it goes: a pass longer than the lease (a bulk edit to read
    /// and match, a slow PMS) could otherwise never commit, and would be redone from the same
    /// cursor every poll. `false` when another replica has taken the mapping: stop.
    async fn keep_lease(&self, mapping: &Mapping) -> Result<bool, DetectError> {
        let until = now_ms() + self.settings.lease.as_millis() as i64;
        Ok(self
            .store
            .renew_change_cursor(&mapping.name, &self.replica, until)
            .await?)
    }

    /// A timestamp watermark never runs ahead of the present (plus `FUTURE_TOLERANCE`): a clock
    /// ahead or a mistyped year would otherwise hide the edits that follow.
    fn capped_watermark(&self, mapping: &Mapping, watermark: String) -> String {
        let Some(ChangeStrategy::Timestamp { .. }) = mapping.changes.as_ref().map(|c| &c.strategy)
        else {
            return watermark;
        };
        let ceiling = chrono::Utc::now()
            .with_timezone(&self.repository.adapter.timezone)
            .naive_local()
            + FUTURE_TOLERANCE;
        match parse_watermark(Some(&watermark)) {
            Some(time) if time > ceiling => {
                warn_ahead_once(mapping, time - ceiling + FUTURE_TOLERANCE);
                format_watermark(ceiling)
            }
            _ => watermark,
        }
    }
}

/// Says once per mapping (per process) that its change timestamps run ahead of the clock: each
/// pass then re-reads every such row. Hours ahead is the mark of `legacy.timezone` (or the
/// adapter's zone) not being the zone the PMS's database stamps its times in.
fn warn_ahead_once(mapping: &Mapping, ahead: chrono::Duration) {
    static WARNED: std::sync::Mutex<BTreeSet<String>> = std::sync::Mutex::new(BTreeSet::new());
    if WARNED
        .lock()
        .map(|mut warned| warned.insert(mapping.name.clone()))
        .unwrap_or(false)
    {
        tracing::warn!(
            mapping = %mapping.name,
            ahead_minutes = ahead.num_minutes(),
            "change timestamps run ahead of the clock, so each detection pass re-reads those rows; \
             if they are hours ahead, set legacy.timezone to the time zone the PMS database \
             stamps its times in"
        );
    }
}

/// The rows a timestamp or rowversion pass re-reads: change columns at or after the watermark
/// minus the overlap (timestamps have 1-second resolution and commit late), or rowversions above
/// the watermark and below `MIN_ACTIVE_ROWVERSION()`. `None` for scan-only mappings.
fn moved_since(mapping: &Mapping, watermark: Option<&str>) -> Option<Cond> {
    let column = |i: usize| Expr::column(&mapping.columns[i].alias, &mapping.columns[i].column);
    match &mapping.changes.as_ref()?.strategy {
        ChangeStrategy::Timestamp { columns, overlap } => {
            let Some(since) = parse_watermark(watermark) else {
                return Some(Cond::True);
            };
            let since = since - chrono::Duration::from_std(*overlap).unwrap_or_default();
            Some(Cond::or(
                columns
                    .iter()
                    .map(|&i| Cond::Compare {
                        left: column(i),
                        op: CmpOp::Ge,
                        right: Expr::Value(Value::DateTime(since)),
                    })
                    .collect(),
            ))
        }
        ChangeStrategy::RowVersion { column: index } => {
            let below_open = Cond::Compare {
                left: column(*index),
                op: CmpOp::Lt,
                right: Expr::MinActiveRowVersion,
            };
            let above = watermark
                .and_then(|w| URL_SAFE_NO_PAD.decode(w).ok())
                .map(|bytes| Cond::Compare {
                    left: column(*index),
                    op: CmpOp::Gt,
                    right: Expr::Value(Value::Bytes(bytes)),
                });
            Some(Cond::and(above.into_iter().chain([below_open]).collect()))
        }
        ChangeStrategy::Scan => None,
    }
}

/// The watermark after these rows: the highest change-column value seen (a local time for
/// timestamps, base64url for rowversions).
fn advanced_watermark(
    mapping: &Mapping,
    current: Option<String>,
    outcomes: &[(crate::adapter::map::MapOutcome, Arc<Vec<Value>>)],
) -> Option<String> {
    match mapping.changes.as_ref().map(|c| &c.strategy) {
        Some(ChangeStrategy::RowVersion { column }) => {
            let seen = outcomes
                .iter()
                .filter_map(|(_, row)| match &row[*column] {
                    Value::Bytes(bytes) => Some(bytes.clone()),
                    _ => None,
                })
                .max();
            let current = current.and_then(|w| URL_SAFE_NO_PAD.decode(w).ok());
            // Rowversions are 8 big-endian bytes: byte order is numeric order.
            current
                .into_iter()
                .chain(seen)
                .max()
                .map(|w| URL_SAFE_NO_PAD.encode(w))
        }
        _ => max_watermark(
            parse_watermark(current.as_deref()),
            watermark_of(mapping, outcomes),
        )
        .map(format_watermark),
    }
}

/// Whether a deleted resource, known by the patients it concerned, passes filters under
/// `access`: the owner must see those patients, and every filter must be a patient filter one of
/// them satisfies (no other filter can be judged without the row).
fn deleted_matches(
    access: &Access,
    filters: &[(String, String)],
    patients: &BTreeSet<String>,
) -> bool {
    let visible = match access.patients() {
        PatientLimit::Everyone => true,
        PatientLimit::Only(ids) => patients.iter().any(|p| ids.contains(p)),
    };
    visible
        && filters.iter().all(|(name, value)| {
            (name == "patient" || name == "subject")
                && value.split(',').any(|v| {
                    let id = v.rsplit('/').next().unwrap_or(v);
                    patients.contains(id)
                })
        })
}

pub fn change_kind_code(kind: ChangeKind) -> &'static str {
    match kind {
        ChangeKind::Create => "create",
        ChangeKind::Update => "update",
        ChangeKind::Delete => "delete",
    }
}

/// What is remembered of a served resource: the hash of its content (without `meta`, which
/// changes with a save that changed nothing served), the values topics compare, its patients.
fn remembered(resource: &Json, compared: &[String], cycle: i64) -> Remembered {
    let mut content = resource.clone();
    if let Some(object) = content.as_object_mut() {
        object.remove("meta");
    }
    let bytes = serde_json::to_vec(&content).expect("JSON serializes");
    let mut patients = PatientsTouched::default();
    patients.add(resource);
    Remembered {
        hash: URL_SAFE_NO_PAD.encode(Sha256::digest(&bytes)),
        compared: Json::Object(compared_values(compared, resource)).to_string(),
        patients: serde_json::to_string(&patients.0).expect("ids serialize"),
        seen_cycle: cycle,
    }
}

fn served_ids(outcomes: &[(crate::adapter::map::MapOutcome, Arc<Vec<Value>>)]) -> Vec<String> {
    outcomes
        .iter()
        .filter_map(|(outcome, _)| match outcome {
            Ok(found) => Some(found.id.clone()),
            Err(left_out) => left_out.id.clone(),
        })
        .collect()
}

/// The highest change-column time among the rows read.
fn watermark_of(
    mapping: &Mapping,
    outcomes: &[(crate::adapter::map::MapOutcome, Arc<Vec<Value>>)],
) -> Option<NaiveDateTime> {
    let Some(ChangeStrategy::Timestamp { columns, .. }) =
        mapping.changes.as_ref().map(|c| &c.strategy)
    else {
        return None;
    };
    outcomes
        .iter()
        .flat_map(|(_, row)| columns.iter().filter_map(|&i| cell_time(&row[i])))
        .max()
}

fn max_watermark(a: Option<NaiveDateTime>, b: Option<NaiveDateTime>) -> Option<NaiveDateTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// A change column's cell as a local date-time (text as MySQL and SQLite write it); partial and
/// zero dates are no time.
fn cell_time(value: &Value) -> Option<NaiveDateTime> {
    match value {
        Value::DateTime(dt) => Some(*dt),
        Value::Date(date) => date.and_hms_opt(0, 0, 0),
        Value::Text(text) => {
            let text = text.trim();
            [
                "%Y-%m-%d %H:%M:%S%.f",
                "%Y-%m-%dT%H:%M:%S%.f",
                "%Y-%m-%d %H:%M",
            ]
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
            .or_else(|| {
                NaiveDate::parse_from_str(text, "%Y-%m-%d")
                    .ok()
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
            })
        }
        _ => None,
    }
}

const WATERMARK_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.f";

fn format_watermark(time: NaiveDateTime) -> String {
    time.format(WATERMARK_FORMAT).to_string()
}

fn parse_watermark(text: Option<&str>) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(text?, WATERMARK_FORMAT).ok()
}

/// A scan position (the last row's key) as stored: JSON of typed cells, after the page key's
/// label when the mapping has its own (`own_page_key`).
fn encode_key(mapping: &Mapping, key: &[Value]) -> String {
    let label = own_page_key(mapping).map(|label| serde_json::json!({ "key": label }));
    let cells: Vec<Json> = label
        .into_iter()
        .chain(key.iter().map(|value| match value {
            Value::Int(i) => serde_json::json!({ "i": i }),
            Value::Text(t) => serde_json::json!({ "t": t }),
            Value::Bytes(b) => serde_json::json!({ "b": URL_SAFE_NO_PAD.encode(b) }),
            Value::Uuid(u) => serde_json::json!({ "u": URL_SAFE_NO_PAD.encode(u) }),
            Value::Decimal(d) => serde_json::json!({ "d": d.to_string() }),
            Value::Date(d) => serde_json::json!({ "date": d.to_string() }),
            Value::DateTime(d) => serde_json::json!({ "dt": format_watermark(*d) }),
            other => serde_json::json!({ "t": crate::adapter::map::cell_text(other).unwrap_or_default() }),
        }))
        .collect();
    Json::Array(cells).to_string()
}

/// The stored scan position back as cells; an unreadable one, or one stored under another page
/// key (`own_page_key`, its first cell), restarts the cycle.
fn decode_key(mapping: &Mapping, text: Option<&str>) -> Option<Vec<Value>> {
    let cells: Vec<Json> = serde_json::from_str(text?).ok()?;
    let stored_label = cells.first().and_then(|cell| cell.get("key"));
    if stored_label.and_then(Json::as_str) != own_page_key(mapping).as_deref() {
        return None;
    }
    cells[usize::from(stored_label.is_some())..]
        .iter()
        .map(|cell| {
            let object = cell.as_object()?;
            let (tag, value) = object.iter().next()?;
            Some(match tag.as_str() {
                "i" => Value::Int(value.as_i64()?),
                "t" => Value::Text(value.as_str()?.to_owned()),
                "b" => Value::Bytes(URL_SAFE_NO_PAD.decode(value.as_str()?).ok()?),
                "u" => Value::Uuid(
                    URL_SAFE_NO_PAD
                        .decode(value.as_str()?)
                        .ok()?
                        .try_into()
                        .ok()?,
                ),
                "d" => Value::Decimal(value.as_str()?.parse().ok()?),
                "date" => Value::Date(value.as_str()?.parse().ok()?),
                "dt" => Value::DateTime(parse_watermark(value.as_str())?),
                _ => return None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact T-SQL a rowversion pass sends. Neither SQL Server PMS here has a rowversion
    /// column, so the Cerebello adapter is copied as a site that added one (`RowVer`) to its
    /// Patient and Appointment tables would declare it; there is no SQL Server here either, so the
    /// statement text is what is checked.
    #[test]
    fn rowversion_passes_render_the_expected_tsql() {
        use crate::dialect::{DialectKind, render};
        use crate::search::compile::{BranchPlan, RowAccess, page_select};
        let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("adapters/cerebello");
        let dir = std::env::temp_dir().join(format!("portico-rowversion-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(&shipped).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let mut text = std::fs::read_to_string(&path).unwrap();
                let name = path.file_name().unwrap().to_owned();
                if name == "Patient.toml" || name == "Appointment.toml" {
                    text = text.replace(
                        "[changes]\nstrategy = \"scan\"\n",
                        "[changes]\nstrategy = \"rowversion\"\ncolumn = \"RowVer\"\n",
                    );
                }
                std::fs::write(dir.join(name), text).unwrap();
            }
        }
        let adapter = crate::adapter::load(&dir).expect("the adapter loads");
        std::fs::remove_dir_all(&dir).ok();
        let mut rendered = String::new();
        for def in adapter.resources.values() {
            for (index, mapping) in def.mappings.iter().enumerate() {
                let Some(changes) = &mapping.changes else {
                    continue;
                };
                if !matches!(changes.strategy, ChangeStrategy::RowVersion { .. }) {
                    continue;
                }
                // A watermark as a pass stores it: the last rowversion seen, base64url.
                let watermark = URL_SAFE_NO_PAD.encode([0, 0, 0, 0, 0, 0, 0x12, 0x34]);
                let branch = BranchPlan {
                    index,
                    mapping: mapping.clone(),
                    cond: moved_since(mapping, Some(&watermark)).expect("a rowversion cond"),
                    variants: None,
                    sort: Vec::new(),
                    whole_pass: false,
                };
                let everything = RowAccess {
                    cond: Cond::True,
                    variants: None,
                };
                let query = render(
                    DialectKind::Mssql,
                    &page_select(&branch, &everything, None, 500),
                );
                rendered.push_str(&format!(
                    "-- {} mapping {index}\n{}\n-- binds: {:?}\n\n",
                    def.resource_type, query.sql, query.params
                ));
            }
        }
        assert_eq!(
            rendered.matches("MIN_ACTIVE_ROWVERSION()").count(),
            2,
            "Patient and Appointment pass on their rowversion:\n{rendered}"
        );
        crate::search::compile::tests::check_snapshot_in(
            "src/subscriptions/snapshots",
            "rowversion.tsql.txt",
            &rendered,
        );
    }

    #[test]
    fn scan_positions_survive_the_store() {
        let key = vec![
            Value::Int(42),
            Value::Text("a'b".into()),
            Value::Bytes(vec![0, 1, 255]),
            Value::DateTime(
                NaiveDate::from_ymd_opt(2026, 1, 2)
                    .unwrap()
                    .and_hms_milli_opt(3, 4, 5, 600)
                    .unwrap(),
            ),
        ];
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("adapters/openemr");
        let adapter = crate::adapter::load(&dir).expect("the adapter loads");
        let mapping = |name: &str| {
            adapter
                .resources
                .values()
                .flat_map(|def| &def.mappings)
                .find(|m| m.name == name)
                .expect("the mapping")
                .clone()
        };
        let (patient, claim) = (mapping("Patient"), mapping("Claim"));
        for mapping in [&patient, &claim] {
            let stored = encode_key(mapping, &key);
            assert_eq!(decode_key(mapping, Some(&stored)), Some(key.clone()));
        }
        assert_eq!(decode_key(&patient, Some("not json")), None);
        // Claims page by their table's key, not their id: a position stored under the other
        // order restarts the cycle rather than resume at the wrong row.
        assert!(own_page_key(&claim).is_some() && own_page_key(&patient).is_none());
        let by_id = encode_key(&patient, &key);
        assert_eq!(decode_key(&claim, Some(&by_id)), None);
        assert_eq!(decode_key(&patient, Some(&encode_key(&claim, &key))), None);
    }

    #[test]
    fn change_column_cells_read_as_times() {
        let noon = NaiveDate::from_ymd_opt(2026, 3, 4)
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap();
        assert_eq!(
            cell_time(&Value::Text("2026-03-04 12:00:00".into())),
            Some(noon)
        );
        assert_eq!(cell_time(&Value::DateTime(noon)), Some(noon));
        assert_eq!(cell_time(&Value::Text("1958-00-00".into())), None);
        assert_eq!(cell_time(&Value::Null), None);
    }

    #[test]
    fn deleted_resources_match_only_patient_filters_the_owner_may_see() {
        let patients: BTreeSet<String> = ["7".to_owned()].into();
        let everyone = Access::everything();
        assert!(deleted_matches(&everyone, &[], &patients));
        assert!(deleted_matches(
            &everyone,
            &[("patient".into(), "Patient/7".into())],
            &patients
        ));
        assert!(!deleted_matches(
            &everyone,
            &[("patient".into(), "Patient/8".into())],
            &patients
        ));
        assert!(!deleted_matches(
            &everyone,
            &[("status".into(), "cancelled".into())],
            &patients
        ));
        let other = Access::new(PatientLimit::Only(vec!["8".into()]), Vec::new());
        assert!(!deleted_matches(&other, &[], &patients));
    }

    #[test]
    fn meta_does_not_count_as_a_change() {
        let a = serde_json::json!({"resourceType": "Patient", "id": "1", "meta": {"lastUpdated": "2026-01-01T00:00:00Z"}, "active": true});
        let b = serde_json::json!({"resourceType": "Patient", "id": "1", "meta": {"lastUpdated": "2026-02-01T00:00:00Z"}, "active": true});
        let c = serde_json::json!({"resourceType": "Patient", "id": "1", "active": false});
        assert_eq!(remembered(&a, &[], 1).hash, remembered(&b, &[], 1).hash);
        assert_ne!(remembered(&a, &[], 1).hash, remembered(&c, &[], 1).hash);
    }
}
