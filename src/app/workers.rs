//! Background workers (subscription delivery, export jobs, cache refreshes, the scheduled checks):
//! each is spawned through `Workers::spawn` with a cancellation token, and `Workers::stop` cancels
//! them all when the application shuts down, waits a grace period, then aborts what is still
//! running. `run_check_on_schedule` is the one loop of the operator's scheduled checks.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::state::StateStore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The application's workers and its shutdown signal.
pub struct Workers {
    shutdown: CancellationToken,
    running: Mutex<JoinSet<&'static str>>,
}

impl Default for Workers {
    fn default() -> Workers {
        Workers::new()
    }
}

impl Workers {
    pub fn new() -> Workers {
        Workers {
            shutdown: CancellationToken::new(),
            running: Mutex::new(JoinSet::new()),
        }
    }

    /// Runs `work` in the background until it returns. The token it gets is cancelled at
    /// shutdown, and the work should then return promptly; cancelling it stops only this worker.
    pub fn spawn<F, Fut>(&self, name: &'static str, work: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let future = work(self.shutdown.child_token())
            .instrument(tracing::info_span!("worker", worker = name));
        self.running
            .lock()
            .expect("worker set lock")
            .spawn(async move {
                future.await;
                name
            });
    }

    /// The application's shutdown signal: cancelling it stops the server and every worker.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Cancels every worker and waits up to `grace` for them to return; aborts the rest.
    pub async fn stop(&self, grace: Duration) {
        self.shutdown.cancel();
        let mut running = std::mem::take(&mut *self.running.lock().expect("worker set lock"));
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            match tokio::time::timeout_at(deadline, running.join_next()).await {
                Ok(None) => break,
                Ok(Some(Ok(name))) => tracing::debug!(worker = name, "worker stopped"),
                Ok(Some(Err(error))) if error.is_panic() => {
                    tracing::error!("a worker panicked before shutdown")
                }
                Ok(Some(Err(_))) => {}
                Err(_) => {
                    tracing::warn!(
                        workers = running.len(),
                        "workers still running {grace:?} after shutdown; aborting them"
                    );
                    running.shutdown().await;
                    break;
                }
            }
        }
    }
}

/// Time left for the server to settle before a scheduled check first runs.
pub const SETTLE: Duration = Duration::from_secs(60);

/// Runs `check` every `every`, counted from the latest recorded `check_run` of `kind` (whichever
/// replica or command ran it), never sooner than `settle` after the previous wait began, until
/// `shutdown`. `check` records its own run; one that does not is retried after `every` from the
/// previous attempt's start only when the store remembers nothing newer, so it waits `settle`.
pub async fn run_check_on_schedule<F, Fut>(
    store: StateStore,
    kind: &'static str,
    every: Duration,
    settle: Duration,
    shutdown: CancellationToken,
    mut check: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        let latest = match store.latest_check_run(kind).await {
            Ok(latest) => latest.map(|run| run.started_ms),
            Err(error) => {
                tracing::warn!(%error, kind, "cannot read the latest check run");
                None
            }
        };
        let now = crate::state::subscriptions::now_ms();
        let due_in = latest.map_or(Duration::ZERO, |started| {
            Duration::from_millis((started + every.as_millis() as i64 - now).max(0) as u64)
        });
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(due_in.max(settle)) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            () = check() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_scheduled_check_waits_for_its_time_counted_from_the_latest_recorded_run() {
        use crate::state::check_runs::CheckRun;
        use std::sync::atomic::AtomicUsize;

        let dir =
            std::env::temp_dir().join(format!("portico-check-schedule-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        let store = StateStore::open(&StateStore::default_url(&dir).unwrap())
            .await
            .unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        let schedule = |every: Duration| {
            let (store, ran) = (store.clone(), ran.clone());
            let shutdown = CancellationToken::new();
            let stop = shutdown.clone();
            let task = tokio::spawn(run_check_on_schedule(
                store.clone(),
                "test-check",
                every,
                Duration::from_millis(50),
                shutdown,
                move || {
                    let (store, ran) = (store.clone(), ran.clone());
                    async move {
                        ran.fetch_add(1, Ordering::SeqCst);
                        let now = crate::state::subscriptions::now_ms();
                        store
                            .record_check_run(&CheckRun {
                                kind: "test-check".into(),
                                started_ms: now,
                                finished_ms: now,
                                fails: false,
                                findings: 0,
                                summary: "{}".into(),
                                error: None,
                            })
                            .await
                            .unwrap();
                    }
                },
            ));
            (stop, task)
        };

        // Nothing recorded: the first run comes once the server has settled, then every `every`.
        let (stop, task) = schedule(Duration::from_millis(200));
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(ran.load(Ordering::SeqCst), 0, "not before settling");
        tokio::time::sleep(Duration::from_millis(900)).await;
        let runs = ran.load(Ordering::SeqCst);
        assert!((2..=6).contains(&runs), "about every 200 ms: {runs} runs");
        stop.cancel();
        task.await.unwrap();

        // A run recorded a moment ago (by another replica, or the command) is not repeated
        // before its time; cancelling stops the wait at once.
        let before = ran.load(Ordering::SeqCst);
        let (stop, task) = schedule(Duration::from_secs(3600));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(ran.load(Ordering::SeqCst), before);
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("stops at once")
            .unwrap();
        std::fs::remove_dir_all(&dir).ok();
    }

    #[tokio::test]
    async fn stop_cancels_cooperative_workers_and_aborts_the_rest() {
        let workers = Workers::new();
        let saw_cancel = Arc::new(AtomicBool::new(false));
        let flag = saw_cancel.clone();
        workers.spawn("polite", move |cancel| async move {
            cancel.cancelled().await;
            flag.store(true, Ordering::SeqCst);
        });
        let finished = Arc::new(AtomicBool::new(false));
        let stubborn_finished = finished.clone();
        workers.spawn("stubborn", move |_cancel| async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            stubborn_finished.store(true, Ordering::SeqCst);
        });
        // A worker cancelling its own token does not stop the others.
        workers.spawn("quits", |cancel| async move { cancel.cancel() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!workers.shutdown_token().is_cancelled());
        assert!(!saw_cancel.load(Ordering::SeqCst));

        let started = std::time::Instant::now();
        workers.stop(Duration::from_millis(200)).await;
        assert!(saw_cancel.load(Ordering::SeqCst));
        assert!(
            !finished.load(Ordering::SeqCst),
            "the stubborn worker was aborted"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(workers.shutdown_token().is_cancelled());
    }
}
