//! When a failed rest-hook delivery is tried again, and when a subscription that keeps failing is
//! given up on (security-reliability.md §1.2). Pure: the clock and the random draw come in as
//! arguments, so the table tests are exact.

use std::time::{Duration, SystemTime};

/// The delay before each attempt, counted from the previous one (Svix's schedule): the first
/// attempt is immediate, the eighth comes about 27 h 35 min after it. Attempts past the eighth
/// wait as long as the last step, until `DISABLE_AFTER`.
pub const SCHEDULE: [Duration; 8] = [
    Duration::ZERO,
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

/// Each delay is moved by up to this fraction either way, so receivers that failed together are
/// not all retried in the same second.
pub const JITTER: f64 = 0.2;

/// A receiver's `Retry-After` is honoured up to this long; beyond it the schedule stands.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// A subscription whose deliveries have failed without a success for this long goes to status
/// `error` (Svix's `endpoint_failure_disable_after`).
pub const DISABLE_AFTER: Duration = Duration::from_secs(5 * 24 * 3600);

/// What follows a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NextStep {
    /// Try again this long after the failed attempt.
    RetryIn(Duration),
    /// Stop: the subscription goes to status `error` (its owner may reactivate it).
    Disable,
}

/// The step after the `failed_attempts`-th failure in a row (1 for the first), given how long
/// deliveries have been failing without a success (`failing_for`, 0 at the first failure), the
/// receiver's `Retry-After` if it sent one, and a uniform draw in [0, 1) for the jitter.
///
/// The jittered schedule step is used unless `Retry-After` (capped at `MAX_RETRY_AFTER`) asks
/// for longer. A failure `DISABLE_AFTER` or more into a run of failures disables.
pub fn after_failure(
    failed_attempts: u32,
    failing_for: Duration,
    retry_after: Option<Duration>,
    unit_random: f64,
) -> NextStep {
    if failing_for >= DISABLE_AFTER {
        return NextStep::Disable;
    }
    let step = usize::try_from(failed_attempts)
        .unwrap_or(usize::MAX)
        .min(SCHEDULE.len() - 1);
    let jittered = jitter(SCHEDULE[step], unit_random);
    let asked = retry_after.map_or(Duration::ZERO, |after| after.min(MAX_RETRY_AFTER));
    NextStep::RetryIn(jittered.max(asked))
}

/// `delay` scaled by a factor in [1 - JITTER, 1 + JITTER), picked by `unit_random` (clamped to
/// [0, 1) so a bad draw cannot make a negative or runaway delay).
fn jitter(delay: Duration, unit_random: f64) -> Duration {
    let draw = if unit_random.is_finite() {
        unit_random.clamp(0.0, 1.0)
    } else {
        0.5
    };
    delay.mul_f64(1.0 - JITTER + 2.0 * JITTER * draw)
}

/// A uniform draw in [0, 1) from the system's random generator: the jitter source in production.
pub fn system_unit_random() -> f64 {
    let mut bytes = [0u8; 8];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system random generator failed");
    // The top 53 bits make an exactly representable fraction below 1.
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// A `Retry-After` header value (RFC 9110 §10.2.3): delay seconds, or an HTTP-date read against
/// `now` (a date already past is no delay). Anything else is ignored (`None`).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u64 holds is "a very long time": the cap applies later.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1;
    const MIN: u64 = 60;
    const H: u64 = 3600;
    const DAY: u64 = 24 * H;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn the_schedule_without_jitter_or_retry_after() {
        // A draw of 0.5 is the unjittered delay. Columns: failures so far, the next delay.
        let table = [
            (1, 5 * S),
            (2, 5 * MIN),
            (3, 30 * MIN),
            (4, 2 * H),
            (5, 5 * H),
            (6, 10 * H),
            (7, 10 * H),
            (8, 10 * H),
            (12, 10 * H),
            (u32::MAX, 10 * H),
        ];
        for (failures, delay) in table {
            assert_eq!(
                after_failure(failures, Duration::ZERO, None, 0.5),
                NextStep::RetryIn(secs(delay)),
                "after {failures} failures"
            );
        }
        let first_eight: Duration = SCHEDULE.iter().sum();
        assert_eq!(
            first_eight,
            secs(27 * H + 35 * MIN + 5 * S),
            "Svix's 27 h 35 min"
        );
    }

    #[test]
    fn jitter_moves_a_delay_by_at_most_twenty_percent() {
        // Columns: failures so far, draw, delay in milliseconds.
        let table = [
            (1, 0.0, 4_000),
            (1, 0.25, 4_500),
            (1, 0.75, 5_500),
            (1, 0.999_999, 5_999),
            (4, 0.0, 5_760_000),
            (4, 1.0, 8_640_000),
            // Out-of-range and non-finite draws are clamped or centred, never trusted.
            (2, -3.0, 240_000),
            (2, 7.0, 360_000),
            (2, f64::NAN, 300_000),
        ];
        for (failures, draw, millis) in table {
            let NextStep::RetryIn(delay) = after_failure(failures, Duration::ZERO, None, draw)
            else {
                panic!("no retry after {failures}")
            };
            assert_eq!(
                delay.as_millis(),
                millis,
                "after {failures} failures, draw {draw}"
            );
        }
    }

    #[test]
    fn retry_after_wins_only_when_later_and_is_capped() {
        // Columns: failures so far, Retry-After, draw, next delay.
        let table = [
            // Later than the 5 s step: honoured exactly, without jitter.
            (1, Some(120 * S), 0.5, 120 * S),
            // Sooner than the 2 h step: the schedule stands.
            (4, Some(60 * S), 0.5, 2 * H),
            (4, Some(0), 0.0, 96 * MIN),
            // Past the cap: a day.
            (1, Some(3 * DAY), 0.5, DAY),
            (1, Some(u64::MAX), 0.5, DAY),
            (3, None, 0.5, 30 * MIN),
        ];
        for (failures, retry_after, draw, delay) in table {
            assert_eq!(
                after_failure(failures, Duration::ZERO, retry_after.map(secs), draw),
                NextStep::RetryIn(secs(delay)),
                "after {failures} failures, Retry-After {retry_after:?}"
            );
        }
    }

    #[test]
    fn five_days_of_continuous_failure_disable() {
        // Columns: failures so far, failing for, the step.
        let table = [
            (1, 0, NextStep::RetryIn(secs(5))),
            (14, 5 * DAY - 1, NextStep::RetryIn(secs(10 * H))),
            (14, 5 * DAY, NextStep::Disable),
            (3, 6 * DAY, NextStep::Disable),
        ];
        for (failures, failing_for, step) in table {
            assert_eq!(
                after_failure(failures, secs(failing_for), None, 0.5),
                step,
                "{failures} failures over {failing_for} s"
            );
        }
    }

    #[test]
    fn following_the_schedule_disables_after_about_five_days() {
        // Never succeeding, with the longest jitter: 15 retries after the first attempt, and the
        // sixteenth failure, 129 h into the run, disables.
        let mut failing_for = Duration::ZERO;
        let mut failures = 0;
        loop {
            failures += 1;
            match after_failure(failures, failing_for, None, 0.999) {
                NextStep::RetryIn(delay) => failing_for += delay,
                NextStep::Disable => break,
            }
        }
        assert!(failing_for >= DISABLE_AFTER);
        assert!(failing_for < DISABLE_AFTER + secs(12 * H));
        assert_eq!(failures, 16);
    }

    #[test]
    fn retry_after_headers() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2026 07:28:00 GMT").unwrap();
        let table = [
            ("120", Some(120)),
            (" 0 ", Some(0)),
            ("99999999999999999999999", Some(u64::MAX)),
            ("Wed, 21 Oct 2026 07:30:00 GMT", Some(120)),
            ("Wed, 21 Oct 2026 07:00:00 GMT", Some(0)),
            ("-5", None),
            ("1.5", None),
            ("", None),
            ("soon", None),
            ("Wed, 21 Oct 2026 07:30:00", None),
        ];
        for (value, expected) in table {
            assert_eq!(
                parse_retry_after(value, now),
                expected.map(secs),
                "Retry-After: {value:?}"
            );
        }
    }

    #[test]
    fn the_system_draw_is_a_fraction() {
        for _ in 0..1000 {
            let draw = system_unit_random();
            assert!((0.0..1.0).contains(&draw), "{draw}");
        }
    }
}
