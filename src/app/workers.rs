//! Background workers (subscription delivery, export jobs, cache refreshes): each is spawned
//! through `Workers::spawn` with a cancellation token, and `Workers::stop` cancels them all when
//! the application shuts down, waits a grace period, then aborts what is still running.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::task::JoinSet;
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

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
