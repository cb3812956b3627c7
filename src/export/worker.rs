//! The export worker: takes a stored job under a lease, reads each pass page by page through the
//! search path under the job's access, appends the resources to NDJSON files (left-out rows as
//! OperationOutcome lines in the error files) and commits each page's cursor with the files'
//! lengths, so a job resumes after a crash or a restart where it stopped. It also deletes the
//! files of expired and cancelled jobs.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::files::NdjsonFiles;
use super::{ExportSpec, Level, part_plan};
use crate::adapter::tree::Tree;
use crate::api::audit::PatientsTouched;
use crate::config::ExportSettings;
use crate::db::DbErrorKind;
use crate::repository::{LeftOutRow, Repository};
use crate::search::cursor::CursorSigner;
use crate::state::StateStore;
use crate::state::exports::{self, ExportJob, ExportPart, PageCommit};
use crate::state::subscriptions::now_ms;

/// Idle workers look for jobs this often (a kick-off wakes one at once).
const IDLE: Duration = Duration::from_secs(5);
/// Expired files are looked for this often.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// A page the PMS could not answer (unreachable, too slow) is tried again this many times, after
/// 2, 4, 8, ... seconds, before the job fails.
const PAGE_ATTEMPTS: u32 = 6;

/// What the export workers share.
pub struct ExportRuntime {
    pub repository: Repository,
    pub store: StateStore,
    pub settings: ExportSettings,
    /// Where each job's directory is made.
    pub dir: PathBuf,
    /// Seals the stored cursors (as a search's next link is sealed).
    pub signer: CursorSigner,
    /// This process's name in the jobs' leases.
    pub owner: String,
    /// Notified at each kick-off.
    pub wake: Arc<Notify>,
}

/// How a job's run ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    Complete,
    /// Cancelled, or its lease taken over: nothing more to do here.
    NotOurs,
    /// The process is shutting down; the job resumes from its last commit.
    Stopped,
}

impl ExportRuntime {
    /// One worker loop: runs jobs as they come, until `shutdown`. `sweeps` makes this loop the one
    /// that deletes expired files.
    pub async fn run(self: Arc<Self>, sweeps: bool, shutdown: CancellationToken) {
        let mut last_sweep = tokio::time::Instant::now() - SWEEP_EVERY;
        loop {
            if sweeps && last_sweep.elapsed() >= SWEEP_EVERY {
                self.sweep().await;
                last_sweep = tokio::time::Instant::now();
            }
            let now = now_ms();
            let claimed = self
                .store
                .claim_export(
                    &self.owner,
                    now,
                    now.saturating_add(self.settings.lease_ms()),
                    self.settings.max_running as i64,
                )
                .await;
            match claimed {
                Ok(Some(job)) => {
                    let id = job.id.clone();
                    // Boxed: a job's future (search, mapping, files) is too large for a
                    // thread's stack when it is polled inline.
                    match Box::pin(self.run_job(job, &shutdown)).await {
                        Ok(Ended::Complete) => tracing::info!(export = %id, "export complete"),
                        Ok(Ended::NotOurs) => {
                            tracing::info!(export = %id, "export cancelled or taken over")
                        }
                        Ok(Ended::Stopped) => {
                            tracing::info!(export = %id, "export paused for shutdown");
                            if let Err(error) =
                                self.store.release_exports(&self.owner, Some(&id)).await
                            {
                                tracing::warn!(export = %id, %error, "cannot release the export");
                            }
                            return;
                        }
                        Err(why) => {
                            tracing::warn!(export = %id, error = %why, "export failed");
                            self.fail(&id, &why).await;
                        }
                    }
                    continue;
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "cannot look for export jobs"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(IDLE) => {}
            }
        }
    }

    async fn fail(&self, id: &str, why: &str) {
        let now = now_ms();
        let expires = now + self.expire_ms();
        if let Err(error) = self
            .store
            .finish_export(id, &self.owner, exports::FAILED, Some(why), now, expires)
            .await
        {
            tracing::warn!(export = %id, %error, "cannot record the export's failure");
        }
    }

    fn expire_ms(&self) -> i64 {
        (self.settings.expire_hours as i64) * 3_600_000
    }

    /// Where a job's files live.
    pub fn job_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Deletes the files and records of jobs past their expiry (cancelled ones at once).
    pub async fn sweep(&self) {
        let expired = match self.store.expired_exports(now_ms()).await {
            Ok(expired) => expired,
            Err(error) => {
                tracing::warn!(%error, "cannot list expired exports");
                return;
            }
        };
        for id in expired {
            let dir = self.job_dir(&id);
            if let Err(error) = tokio::fs::remove_dir_all(&dir).await
                && error.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(export = %id, %error, "cannot delete an expired export's files");
                continue;
            }
            if let Err(error) = self.store.delete_export(&id).await {
                tracing::warn!(export = %id, %error, "cannot forget an expired export");
            }
        }
    }

    async fn run_job(
        self: &Arc<Self>,
        job: ExportJob,
        shutdown: &CancellationToken,
    ) -> Result<Ended, String> {
        let mut spec: ExportSpec = serde_json::from_str(&job.spec)
            .map_err(|e| format!("the stored export cannot be read: {e}"))?;
        if spec.level == Level::Group && spec.members.is_none() {
            let members = self.group_members(&spec).await?;
            spec.members = Some(members);
            let stored = serde_json::to_string(&spec).expect("the spec serializes");
            self.store
                .set_export_spec(&job.id, &stored)
                .await
                .map_err(state)?;
        }
        let access = spec.reading_access();
        let fingerprint = access.fingerprint();
        let mut parts = self.store.export_parts(&job.id).await.map_err(state)?;
        self.estimate(&job, &spec, &access, &mut parts).await?;
        let committed = self.store.export_files(&job.id).await.map_err(state)?;
        let first_page = committed.is_empty() && parts.iter().all(|p| p.cursor.is_none());
        let files = NdjsonFiles::resume(
            &self.job_dir(&job.id),
            (self.settings.file_megabytes as i64).saturating_mul(1 << 20),
            committed,
        )
        .await
        .map_err(|e| format!("the export's files: {e}"))?;
        let output = tokio::sync::Mutex::new(JobOutput {
            files,
            // Parameters ignored under lenient handling go into the error files, once, with the
            // first page committed.
            pending_notes: if first_page {
                std::mem::take(&mut spec.ignored)
            } else {
                Vec::new()
            },
        });
        // The parts of one type run in order (under ORed _typeFilter queries a later one skips
        // what an earlier one wrote); `export.parallel_types` types run at once (`run_types`).
        // The first part to end early (failed, cancelled, shutting down) stops the others at
        // their next page.
        let mut types: Vec<(Vec<ExportPart>, bool)> = Vec::new();
        for part in parts.iter().filter(|p| !p.done) {
            match types
                .iter_mut()
                .find(|(same_type, _)| same_type[0].resource_type == part.resource_type)
            {
                Some((same_type, _)) => same_type.push(part.clone()),
                None => {
                    // Counting the parts already done: a resumed later part skips what they
                    // wrote.
                    let several = parts
                        .iter()
                        .filter(|p| p.resource_type == part.resource_type)
                        .count()
                        > 1;
                    types.push((vec![part.clone()], several));
                }
            }
        }
        // The largest types first: the job lasts at least as long as its largest type, which
        // should not start when the others are done and then run alone on one thread.
        types.sort_by_key(|(type_parts, _)| {
            std::cmp::Reverse(type_parts.iter().filter_map(|p| p.estimate).sum::<i64>())
        });
        let run = Arc::new(JobRun {
            job,
            spec,
            access,
            fingerprint,
            output,
            stop: shutdown.child_token(),
        });
        let ends = self.run_types(&run, types).await;
        let mut ended = Ended::Complete;
        for end in ends {
            match end? {
                Ended::NotOurs => ended = Ended::NotOurs,
                Ended::Stopped if ended == Ended::Complete => ended = Ended::Stopped,
                _ => {}
            }
        }
        if ended != Ended::Complete {
            return Ok(ended);
        }
        let now = now_ms();
        let finished = self
            .store
            .finish_export(
                &run.job.id,
                &self.owner,
                exports::COMPLETE,
                None,
                now,
                now + self.expire_ms(),
            )
            .await
            .map_err(state)?;
        Ok(if finished {
            Ended::Complete
        } else {
            Ended::NotOurs
        })
    }

    /// The group's members now (its criteria resolved through the PMS).
    async fn group_members(&self, spec: &ExportSpec) -> Result<Vec<String>, String> {
        let id = spec.group.as_deref().unwrap_or_default();
        let group = self
            .store
            .group(id)
            .await
            .map_err(state)?
            .ok_or_else(|| format!("Group/{id} no longer exists"))?;
        crate::groups::members(&self.repository, &group)
            .await
            .map_err(|e| format!("the members of Group/{id}: {e}"))
    }

    /// Runs each type's parts as a task of its own, `export.parallel_types` at once. A part's
    /// task decodes and maps its pages on its own thread: when the types ran as futures of the
    /// job's one task, that one thread decoded and mapped for all of them while a core idled.
    async fn run_types(
        self: &Arc<Self>,
        run: &Arc<JobRun>,
        types: Vec<(Vec<ExportPart>, bool)>,
    ) -> Vec<Result<Ended, String>> {
        let limit = self.settings.parallel_types.max(1) as usize;
        let mut waiting = types.into_iter();
        // Dropped with the job's future, the set aborts the tasks still running.
        let mut running = tokio::task::JoinSet::new();
        let mut ends = Vec::new();
        loop {
            while running.len() < limit
                && let Some((type_parts, several)) = waiting.next()
            {
                let worker = Arc::clone(self);
                let run = Arc::clone(run);
                running.spawn(
                    async move { Box::pin(worker.run_type(&run, &type_parts, several)).await }
                        .instrument(tracing::Span::current()),
                );
            }
            let Some(joined) = running.join_next().await else {
                return ends;
            };
            ends.push(joined.unwrap_or_else(|error| {
                // A panic in a part (never expected) fails the job instead of the worker.
                run.stop.cancel();
                Err(format!("an export task ended abnormally: {error}"))
            }));
        }
    }

    /// The search plan of `part`, paged at `export.page_size`.
    fn plan(
        &self,
        job: &ExportJob,
        spec: &ExportSpec,
        part: &ExportPart,
    ) -> Result<crate::search::compile::Plan, String> {
        part_plan(
            &self.repository.adapter,
            spec,
            &part.resource_type,
            part.filter.as_deref(),
            job.transaction_ms,
            self.settings.page_size.clamp(1, 10_000) as usize,
        )
    }

    /// Counts, once per job, the resources of each part not yet estimated, and stores the
    /// count: the status's X-Progress reports the whole job's estimate from its first poll,
    /// and `run_types` starts the largest types first. The counts run `export.parallel_types`
    /// at once, as many queries as the job's pages later keep the PMS busy with.
    async fn estimate(
        &self,
        job: &ExportJob,
        spec: &ExportSpec,
        access: &crate::access::Access,
        parts: &mut [ExportPart],
    ) -> Result<(), String> {
        let uncounted: Vec<&mut ExportPart> = parts
            .iter_mut()
            .filter(|part| part.estimate.is_none() && !part.done)
            .collect();
        let counts: Vec<_> = uncounted
            .iter()
            .map(|part| Box::pin(self.count(job, spec, access, part)))
            .collect();
        // In the parts' order (`buffered`), to be given back to the same parts.
        let estimates: Vec<i64> = futures_util::stream::iter(counts)
            .buffered(self.settings.parallel_types.max(1) as usize)
            .try_collect()
            .await?;
        for (part, estimate) in uncounted.into_iter().zip(estimates) {
            part.estimate = Some(estimate);
        }
        Ok(())
    }

    /// The resources `part` will export, stored as its estimate.
    async fn count(
        &self,
        job: &ExportJob,
        spec: &ExportSpec,
        access: &crate::access::Access,
        part: &ExportPart,
    ) -> Result<i64, String> {
        let plan = self.plan(job, spec, part)?;
        let estimate = Box::pin(self.repository.count(&plan, access))
            .await
            .map_err(|e| format!("{}: {}", part.resource_type, e.message))?
            as i64;
        self.store
            .set_export_estimate(&job.id, part.position, estimate)
            .await
            .map_err(state)?;
        Ok(estimate)
    }

    /// The parts of one resource type, in order; the first that does not complete cancels `stop`.
    async fn run_type(
        &self,
        run: &JobRun,
        type_parts: &[ExportPart],
        several: bool,
    ) -> Result<Ended, String> {
        for part in type_parts {
            let ended = Box::pin(self.run_part(run, part, several)).await;
            if !matches!(ended, Ok(Ended::Complete)) {
                run.stop.cancel();
                return ended;
            }
        }
        Ok(Ended::Complete)
    }

    async fn run_part(
        &self,
        run: &JobRun,
        part: &ExportPart,
        several: bool,
    ) -> Result<Ended, String> {
        let JobRun {
            job,
            spec,
            access,
            fingerprint,
            output,
            stop,
        } = run;
        let plan = self.plan(job, spec, part)?;
        let identity = plan.cursor_identity(&format!("{}/{}", job.id, part.position));
        let after = match &part.cursor {
            Some(sealed) => Some(
                self.signer
                    .open(&identity, fingerprint, sealed)
                    .map_err(|e| format!("the stored export position cannot be read: {e}"))?,
            ),
            None => None,
        };
        // Under several ORed _typeFilter queries, what an earlier one matched is not written
        // again: the ids written so far, read back from the files (so a resume knows them too).
        let mut seen: Option<HashSet<String>> = if several {
            let lines = output
                .lock()
                .await
                .files
                .written_lines(&part.resource_type)
                .await
                .map_err(|e| format!("the export's files: {e}"))?;
            Some(
                lines
                    .iter()
                    .filter_map(|line| {
                        serde_json::from_str::<serde_json::Value>(line)
                            .ok()
                            .and_then(|r| r["id"].as_str().map(str::to_owned))
                    })
                    .collect(),
            )
        } else {
            None
        };
        let elements = spec.elements_of(&part.resource_type);
        if stop.is_cancelled() {
            return Ok(Ended::Stopped);
        }
        let mut page = Box::pin(self.page(&plan, after.as_ref(), access, stop)).await?;
        loop {
            let Some(current) = page else {
                return Ok(Ended::Stopped);
            };
            let next = current.next.clone();
            // The PMS reads the next page while this one is written and committed: a page's
            // time was its read, then its mapping and writing, one after the other. A page read
            // ahead is only kept once this one is committed; a stop or a failure drops it, and a
            // resume starts from the last commit.
            let read_ahead = async {
                match &next {
                    Some(key) if !stop.is_cancelled() => {
                        Some(Box::pin(self.page(&plan, Some(key), access, stop)).await)
                    }
                    _ => None,
                }
            };
            let write = self.write_page(run, part, &identity, current, seen.as_mut(), &elements);
            let (ahead, written) = tokio::join!(read_ahead, Box::pin(write));
            if let Some(ended) = written? {
                return Ok(ended);
            }
            page = match ahead {
                Some(ahead) => ahead?,
                None if next.is_none() => return Ok(Ended::Complete),
                // Not read ahead because a stop was asked for: the loop ends as stopped.
                None => None,
            };
        }
    }

    /// Writes one page's resources, and its left-out rows as error lines, then commits the page's
    /// cursor with the files' lengths. `Some` when the job is no longer this worker's.
    async fn write_page(
        &self,
        run: &JobRun,
        part: &ExportPart,
        identity: &str,
        page: crate::repository::Page,
        mut seen: Option<&mut HashSet<String>>,
        elements: &Option<Vec<String>>,
    ) -> Result<Option<Ended>, String> {
        let JobRun {
            job,
            fingerprint,
            output,
            ..
        } = run;
        let resources: Vec<Tree> = page
            .matches
            .into_iter()
            .filter(|loaded| match seen.as_mut() {
                Some(seen) => seen.insert(loaded.resource.id.clone()),
                None => true,
            })
            .map(|loaded| loaded.resource.resource)
            .collect();
        let NdjsonPage {
            lines,
            written,
            patients,
        } = NdjsonPage::write(resources, elements.clone()).await?;
        let mut commit = PageCommit {
            position: part.position,
            cursor: page
                .next
                .as_ref()
                .map(|key| self.signer.seal(identity, fingerprint, key)),
            done: page.next.is_none(),
            written,
            left_out: page.left_out.len() as i64,
            files: Vec::new(),
        };
        let io = |e: std::io::Error| format!("the export's files: {e}");
        // Held from the first write to the commit: the parts share the error files, and each
        // commit records their lengths, which must take in every line written before it.
        let mut output = output.lock().await;
        let JobOutput {
            files,
            pending_notes,
        } = &mut *output;
        if written > 0 {
            let file = files
                .append(&part.resource_type, lines, written)
                .await
                .map_err(io)?;
            files
                .note_patients(&file.name, &patients.0)
                .await
                .map_err(io)?;
            commit.files.push(file);
        }
        // An ignored parameter did not stop the export: a warning. A row left out is data the
        // client will not get: an error, though the export goes on without it.
        let mut problems: Vec<(&str, &str, String)> = std::mem::take(pending_notes)
            .into_iter()
            .map(|note| ("warning", "not-supported", note))
            .collect();
        problems.extend(
            page.left_out
                .iter()
                .map(|row| ("error", "processing", left_out_note(row))),
        );
        if !problems.is_empty() {
            let mut outcomes = Vec::new();
            for (severity, code, problem) in &problems {
                let outcome = json!({
                    "resourceType": "OperationOutcome",
                    "issue": [{"severity": severity, "code": code, "diagnostics": problem}],
                });
                serde_json::to_writer(&mut outcomes, &outcome)
                    .map_err(|e| format!("cannot write an OperationOutcome: {e}"))?;
                outcomes.push(b'\n');
            }
            commit.files.push(
                files
                    .append("OperationOutcome", vec![outcomes], problems.len() as i64)
                    .await
                    .map_err(io)?,
            );
        }
        // How long a worker holds the job without committing a page: export.lease_seconds.
        let lease_until = now_ms().saturating_add(self.settings.lease_ms());
        let committed =
            Box::pin(
                self.store
                    .commit_export_page(&job.id, &self.owner, lease_until, &commit),
            )
            .await
            .map_err(state)?;
        Ok((!committed).then_some(Ended::NotOurs))
    }

    /// One page, tried again while the PMS is unreachable or slow; `None` when shutting down.
    async fn page(
        &self,
        plan: &crate::search::compile::Plan,
        after: Option<&crate::search::cursor::CursorKey>,
        access: &crate::access::Access,
        shutdown: &CancellationToken,
    ) -> Result<Option<crate::repository::Page>, String> {
        let mut attempt = 0;
        loop {
            match Box::pin(self.repository.search(plan, after, access, false)).await {
                Ok(page) => return Ok(Some(page)),
                Err(error)
                    if matches!(error.kind, DbErrorKind::Unavailable | DbErrorKind::Timeout)
                        && attempt + 1 < PAGE_ATTEMPTS =>
                {
                    attempt += 1;
                    let wait = Duration::from_secs(1 << attempt);
                    tracing::warn!(
                        error = %error.message,
                        retry_in_s = wait.as_secs(),
                        "an export page could not be read; trying again"
                    );
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(None),
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                Err(error) => return Err(format!("{}: {}", plan.resource_type, error.message)),
            }
        }
    }
}

fn state(error: crate::state::StateError) -> String {
    format!("the state store: {error}")
}

/// What an error file says of a row left out: its type, PMS table and key, and why, never data.
fn left_out_note(row: &LeftOutRow) -> String {
    format!(
        "{} from {} {} cannot be served as valid FHIR R4: {}",
        row.resource_type,
        row.table,
        row.key,
        row.left_out.reason.summary()
    )
}

/// One run of a job, as each of its parts reads it: shared by the tasks that run its types.
struct JobRun {
    job: ExportJob,
    spec: ExportSpec,
    access: crate::access::Access,
    fingerprint: [u8; 32],
    output: tokio::sync::Mutex<JobOutput>,
    /// Cancelled by shutdown, or by the first part that ends early.
    stop: CancellationToken,
}

/// What the parts of a running job share: its files, and the notes still to write.
struct JobOutput {
    files: NdjsonFiles,
    pending_notes: Vec<String>,
}

/// A page of resources as NDJSON lines (in consecutive chunks), with the patients they concern.
struct NdjsonPage {
    lines: Vec<Vec<u8>>,
    written: i64,
    patients: PatientsTouched,
}

impl NdjsonPage {
    /// Writes `resources` (cut down to `elements`, if given) in order. A large page is written
    /// in two halves at once, on rayon's pool (`halves::in_halves_detached`): serializing, and
    /// dropping what was serialized, is most of a page's time once its rows are mapped, and the
    /// task's thread meanwhile reads and maps the next page.
    async fn write(
        resources: Vec<Tree>,
        elements: Option<Vec<String>>,
    ) -> Result<NdjsonPage, String> {
        let mut halves = crate::halves::in_halves_detached(resources, move |_, resources| {
            NdjsonPage::write_sequentially(resources, elements.as_deref())
        })
        .await
        .into_iter();
        let mut page = halves.next().expect("at least one half")?;
        for rest in halves {
            let rest = rest?;
            page.lines.extend(rest.lines);
            page.written += rest.written;
            page.patients.0.extend(rest.patients.0);
        }
        Ok(page)
    }

    fn write_sequentially(
        resources: Vec<Tree>,
        elements: Option<&[String]>,
    ) -> Result<NdjsonPage, String> {
        let mut lines = Vec::with_capacity(resources.len() * 512);
        let mut page = NdjsonPage {
            lines: Vec::new(),
            written: 0,
            patients: PatientsTouched::default(),
        };
        for resource in resources {
            // Before `_elements` drops the references.
            page.patients.add_mapped(&resource);
            let written = match elements {
                Some(names) => {
                    let mut resource = resource.into_json();
                    crate::fhir::subset::elements(&mut resource, names);
                    serde_json::to_writer(&mut lines, &resource)
                }
                None => serde_json::to_writer(&mut lines, &resource),
            };
            written.map_err(|e| format!("cannot write a resource: {e}"))?;
            lines.push(b'\n');
            page.written += 1;
        }
        page.lines.push(lines);
        Ok(page)
    }
}
