//! The operator's status: the last hour of samples (request rate, server errors, p99 latency, PMS
//! errors by kind, subscription backlog) taken every `SAMPLE_EVERY` by a worker, kept in memory per
//! process, and the snapshot `/status.json` serves (with the state store's view of the fail-safe
//! flag, detection and subscriptions, and a PMS round trip). The status page draws it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::metrics::{metrics, quantile_bound};
use crate::state::StateStore;
use crate::state::subscriptions::now_ms;

/// How often the sampler samples.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Samples kept: one hour.
pub const SAMPLES_KEPT: usize = 360;

/// The kinds a failed PMS statement is counted under (`portico_pms_queries_total{outcome}`).
pub const PMS_ERROR_KINDS: [&str; 4] = ["unavailable", "timeout", "query", "decode"];

/// One interval of the last hour.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    /// The end of the interval (milliseconds since the epoch).
    pub at_ms: i64,
    pub requests_per_second: f64,
    /// Answers with a 5xx status in the interval.
    pub server_errors: u64,
    /// The bucket bound under which 99 % of the interval's answers took (milliseconds); `None`
    /// without answers; above 10 s, 10,000 or more is not told apart.
    pub p99_ms: Option<f64>,
    /// PMS statements that failed in the interval (unavailable, timeout, query, decode).
    pub pms_errors: u64,
    /// The same by kind (`PMS_ERROR_KINDS`, in that order).
    #[serde(skip)]
    pub pms_errors_by_kind: [u64; 4],
    /// Events stored and not yet delivered, across subscriptions, at the end of the interval.
    pub backlog: i64,
}

/// Cumulative counters at one instant, to difference into a `Sample`.
#[derive(Debug, Clone, Default)]
struct Totals {
    at_ms: i64,
    requests: u64,
    server_errors: u64,
    pms_errors_by_kind: [u64; 4],
    latency: Vec<u64>,
}

fn totals(at_ms: i64) -> Totals {
    let recorded = metrics();
    Totals {
        at_ms,
        requests: recorded.http_requests.total(|_| true),
        server_errors: recorded
            .http_requests
            .total(|labels| labels.get(3).is_some_and(|status| status.starts_with('5'))),
        pms_errors_by_kind: PMS_ERROR_KINDS.map(|kind| recorded.pms_queries.get(&[kind])),
        latency: recorded.http_duration.merged().0,
    }
}

/// The samples of the last hour, oldest first.
#[derive(Debug, Default)]
pub struct StatusHistory {
    samples: Mutex<VecDeque<Sample>>,
}

impl StatusHistory {
    pub fn samples(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .expect("status history lock")
            .iter()
            .cloned()
            .collect()
    }

    /// PMS statements that failed in the last hour, by kind (`PMS_ERROR_KINDS`).
    pub fn recent_pms_errors(&self) -> [u64; 4] {
        let samples = self.samples.lock().expect("status history lock");
        let mut sums = [0; 4];
        for sample in samples.iter() {
            for (sum, count) in sums.iter_mut().zip(sample.pms_errors_by_kind) {
                *sum += count;
            }
        }
        sums
    }

    fn push(&self, sample: Sample) {
        let mut samples = self.samples.lock().expect("status history lock");
        if samples.len() == SAMPLES_KEPT {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// Samples every `every` until `shutdown`.
    pub async fn run(
        self: Arc<Self>,
        store: StateStore,
        every: Duration,
        shutdown: CancellationToken,
    ) {
        let mut previous = totals(now_ms());
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let now = totals(now_ms());
            let backlog = match store.subscriptions(None).await {
                Ok(subscriptions) => subscriptions
                    .iter()
                    .map(|s| (s.events_since_start - s.delivered_through).max(0))
                    .sum(),
                Err(error) => {
                    tracing::debug!(%error, "status sample: the state store did not answer");
                    -1
                }
            };
            self.push(sample_between(&previous, &now, backlog));
            previous = now;
        }
    }
}

/// The interval from `before` to `after` as a sample.
fn sample_between(before: &Totals, after: &Totals, backlog: i64) -> Sample {
    let seconds = ((after.at_ms - before.at_ms) as f64 / 1000.0).max(0.001);
    let latency: Vec<u64> = after
        .latency
        .iter()
        .enumerate()
        .map(|(i, count)| count - before.latency.get(i).copied().unwrap_or(0))
        .collect();
    let mut by_kind = [0; 4];
    for (kind, slot) in by_kind.iter_mut().enumerate() {
        *slot = after.pms_errors_by_kind[kind] - before.pms_errors_by_kind[kind];
    }
    Sample {
        at_ms: after.at_ms,
        requests_per_second: (after.requests - before.requests) as f64 / seconds,
        server_errors: after.server_errors - before.server_errors,
        p99_ms: quantile_bound(&latency, 0.99).map(|bound| (bound * 1000.0).min(10_000.0)),
        pms_errors: by_kind.iter().sum(),
        pms_errors_by_kind: by_kind,
        backlog,
    }
}

#[cfg(test)]
mod tests {
    use super::{SAMPLES_KEPT, StatusHistory, Totals, sample_between};

    #[test]
    fn a_sample_is_the_difference_of_two_totals() {
        let before = Totals {
            at_ms: 0,
            requests: 100,
            server_errors: 1,
            pms_errors_by_kind: [0, 1, 0, 0],
            latency: vec![50, 50, 0],
        };
        let after = Totals {
            at_ms: 10_000,
            requests: 300,
            server_errors: 3,
            pms_errors_by_kind: [3, 2, 0, 0],
            latency: vec![50, 247, 3],
        };
        let sample = sample_between(&before, &after, 12);
        assert_eq!(sample.requests_per_second, 20.0);
        assert_eq!(sample.server_errors, 2);
        assert_eq!(sample.pms_errors, 4);
        assert_eq!(sample.pms_errors_by_kind, [3, 1, 0, 0]);
        assert_eq!(sample.backlog, 12);
        // 200 answers: 197 in the second bucket (2.5 ms), 3 in the third (5 ms).
        assert_eq!(sample.p99_ms, Some(5.0));
    }

    #[test]
    fn the_history_keeps_one_hour() {
        let history = StatusHistory::default();
        let empty = Totals::default();
        for at in 0..(SAMPLES_KEPT as i64 + 5) {
            let now = Totals {
                at_ms: at * 10_000 + 10_000,
                ..Totals::default()
            };
            history.push(sample_between(&empty, &now, at));
        }
        let samples = history.samples();
        assert_eq!(samples.len(), SAMPLES_KEPT);
        assert_eq!(samples[0].backlog, 5, "the oldest went first");
        // What failed in the last hour, by kind: the samples kept, not the ones dropped.
        let failing = Totals {
            at_ms: 1,
            pms_errors_by_kind: [2, 0, 0, 1],
            ..Totals::default()
        };
        history.push(sample_between(&empty, &failing, 0));
        history.push(sample_between(&empty, &failing, 0));
        assert_eq!(history.recent_pms_errors(), [4, 0, 0, 2]);
    }
}
