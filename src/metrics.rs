//! Prometheus metrics: the counters, gauges and histograms Portico keeps in memory while it
//! serves, and their rendering in the Prometheus text exposition format (0.0.4) for `/metrics`.
//! One process-wide set (`metrics()`), as a metrics facade keeps one recorder: every part of the
//! server records into it without carrying a handle. Values measured at scrape time (pool use,
//! outbox backlog, detection lag) are added by the handler (`api::metrics`), never stored here.
//! No label carries PHI: routes are route templates, resource types are the adapter's, and
//! mappings are adapter names.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histograms' buckets.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A counter per combination of label values.
pub struct CounterFamily {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    values: Mutex<BTreeMap<Vec<String>, u64>>,
}

impl CounterFamily {
    const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> CounterFamily {
        CounterFamily {
            name,
            help,
            labels,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    /// Adds one for `values`, one per label in order.
    pub fn inc(&self, values: &[&str]) {
        self.add(values, 1);
    }

    pub fn add(&self, values: &[&str], amount: u64) {
        debug_assert_eq!(values.len(), self.labels.len(), "{}", self.name);
        let key = values.iter().map(|v| v.to_string()).collect();
        *self
            .values
            .lock()
            .expect("metrics lock")
            .entry(key)
            .or_default() += amount;
    }

    /// The current value for `values` (0 when never counted).
    pub fn get(&self, values: &[&str]) -> u64 {
        let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        self.values
            .lock()
            .expect("metrics lock")
            .get(&key)
            .copied()
            .unwrap_or(0)
    }

    /// The sum over every label combination `keep` admits (values in label order).
    pub fn total(&self, keep: impl Fn(&[String]) -> bool) -> u64 {
        self.values
            .lock()
            .expect("metrics lock")
            .iter()
            .filter(|(values, _)| keep(values))
            .map(|(_, count)| count)
            .sum()
    }

    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, "counter");
        for (values, count) in self.values.lock().expect("metrics lock").iter() {
            sample(out, self.name, self.labels, values, None, *count as f64);
        }
    }
}

/// A gauge per combination of label values, set to the latest value.
pub struct GaugeFamily {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    values: Mutex<BTreeMap<Vec<String>, f64>>,
}

impl GaugeFamily {
    const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> GaugeFamily {
        GaugeFamily {
            name,
            help,
            labels,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn set(&self, values: &[&str], value: f64) {
        debug_assert_eq!(values.len(), self.labels.len(), "{}", self.name);
        let key = values.iter().map(|v| v.to_string()).collect();
        self.values.lock().expect("metrics lock").insert(key, value);
    }

    /// Every label combination with its value.
    pub fn values(&self) -> Vec<(Vec<String>, f64)> {
        let values = self.values.lock().expect("metrics lock");
        values.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    fn render(&self, out: &mut String) {
        render_gauge(out, self.name, self.help, self.labels, &self.values());
    }
}

/// A latency histogram per combination of label values.
pub struct HistogramFamily {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    values: Mutex<BTreeMap<Vec<String>, Histogram>>,
}

#[derive(Default)]
struct Histogram {
    /// Observations at or under each bucket's bound (not cumulative; summed when rendered).
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

impl HistogramFamily {
    const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> HistogramFamily {
        HistogramFamily {
            name,
            help,
            labels,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn observe(&self, values: &[&str], elapsed: Duration) {
        debug_assert_eq!(values.len(), self.labels.len(), "{}", self.name);
        let seconds = elapsed.as_secs_f64();
        let key = values.iter().map(|v| v.to_string()).collect();
        let mut histograms = self.values.lock().expect("metrics lock");
        let histogram = histograms.entry(key).or_default();
        if histogram.buckets.is_empty() {
            histogram.buckets = vec![0; LATENCY_BUCKETS.len()];
        }
        if let Some(bucket) = LATENCY_BUCKETS.iter().position(|&bound| seconds <= bound) {
            histogram.buckets[bucket] += 1;
        }
        histogram.sum += seconds;
        histogram.count += 1;
    }

    /// Every label combination's observations added up: the count per bucket (not cumulative;
    /// the last entry counts those above the largest bound) and in all.
    pub fn merged(&self) -> (Vec<u64>, u64) {
        let mut buckets = vec![0; LATENCY_BUCKETS.len() + 1];
        let mut total = 0;
        for histogram in self.values.lock().expect("metrics lock").values() {
            let mut counted = 0;
            for (slot, count) in buckets.iter_mut().zip(&histogram.buckets) {
                *slot += count;
                counted += count;
            }
            buckets[LATENCY_BUCKETS.len()] += histogram.count - counted;
            total += histogram.count;
        }
        (buckets, total)
    }

    /// Each label combination's count and sum of seconds (for a mean over an interval: the
    /// difference of two readings).
    pub fn totals(&self) -> Vec<(Vec<String>, u64, f64)> {
        self.values
            .lock()
            .expect("metrics lock")
            .iter()
            .map(|(values, histogram)| (values.clone(), histogram.count, histogram.sum))
            .collect()
    }

    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, "histogram");
        let bucket_name = format!("{}_bucket", self.name);
        let sum_name = format!("{}_sum", self.name);
        let count_name = format!("{}_count", self.name);
        for (values, histogram) in self.values.lock().expect("metrics lock").iter() {
            let mut cumulative = 0;
            for (bound, count) in LATENCY_BUCKETS.iter().zip(&histogram.buckets) {
                cumulative += count;
                let le = bound.to_string();
                sample(
                    out,
                    &bucket_name,
                    self.labels,
                    values,
                    Some(&le),
                    cumulative as f64,
                );
            }
            sample(
                out,
                &bucket_name,
                self.labels,
                values,
                Some("+Inf"),
                histogram.count as f64,
            );
            sample(out, &sum_name, self.labels, values, None, histogram.sum);
            sample(
                out,
                &count_name,
                self.labels,
                values,
                None,
                histogram.count as f64,
            );
        }
    }
}

/// The bound (seconds) under which `quantile` of the observations in `buckets` (per bucket, as
/// `HistogramFamily::merged` gives them) fall; `None` when there are none, infinity when they
/// lie above the largest bound.
pub fn quantile_bound(buckets: &[u64], quantile: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let wanted = (quantile * total as f64).ceil() as u64;
    let mut cumulative = 0;
    for (index, count) in buckets.iter().enumerate() {
        cumulative += count;
        if cumulative >= wanted {
            return Some(LATENCY_BUCKETS.get(index).copied().unwrap_or(f64::INFINITY));
        }
    }
    Some(f64::INFINITY)
}

/// Everything Portico records as it serves.
pub struct Metrics {
    pub http_requests: CounterFamily,
    pub http_duration: HistogramFamily,
    pub pms_queries: CounterFamily,
    pub pms_query_duration: HistogramFamily,
    pub detection_passes: CounterFamily,
    /// Unix seconds of each mapping's latest pass that completed (`api::metrics` turns it into a
    /// lag at scrape time).
    pub detection_last_pass: GaugeFamily,
    pub detection_pass_duration: HistogramFamily,
    pub deliveries: CounterFamily,
    pub audit_events: CounterFamily,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    http_requests: CounterFamily::new(
        "portico_http_requests_total",
        "HTTP requests answered, by route template, resource type, method and status.",
        &["route", "type", "method", "status"],
    ),
    http_duration: HistogramFamily::new(
        "portico_http_request_duration_seconds",
        "Time to answer an HTTP request, by route template.",
        &["route"],
    ),
    pms_queries: CounterFamily::new(
        "portico_pms_queries_total",
        "Statements sent to the PMS database, by outcome (ok, unavailable, timeout, query, decode).",
        &["outcome"],
    ),
    pms_query_duration: HistogramFamily::new(
        "portico_pms_query_duration_seconds",
        "Time from sending a statement to the PMS database to its last row.",
        &[],
    ),
    detection_passes: CounterFamily::new(
        "portico_change_detection_passes_total",
        "Change detection steps per mapping, by outcome (ok, error).",
        &["mapping", "outcome"],
    ),
    detection_last_pass: GaugeFamily::new(
        "portico_change_detection_last_pass_timestamp_seconds",
        "When each mapping's latest change detection step completed (Unix seconds).",
        &["mapping"],
    ),
    detection_pass_duration: HistogramFamily::new(
        "portico_change_detection_pass_duration_seconds",
        "Time of one change detection step per mapping: reading, comparing, matching and committing.",
        &["mapping"],
    ),
    deliveries: CounterFamily::new(
        "portico_subscription_deliveries_total",
        "Notification delivery attempts, by channel and outcome.",
        &["channel", "outcome"],
    ),
    audit_events: CounterFamily::new(
        "portico_audit_events_total",
        "AuditEvents written to the audit trail, by outcome (committed, failed).",
        &["outcome"],
    ),
});

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    /// The recorded families in the text exposition format.
    pub fn render(&self, out: &mut String) {
        self.http_requests.render(out);
        self.http_duration.render(out);
        self.pms_queries.render(out);
        self.pms_query_duration.render(out);
        self.detection_passes.render(out);
        self.detection_last_pass.render(out);
        self.detection_pass_duration.render(out);
        self.deliveries.render(out);
        self.audit_events.render(out);
    }
}

/// A gauge measured when scraped: one sample per label combination.
pub fn render_gauge(
    out: &mut String,
    name: &str,
    help: &str,
    labels: &[&str],
    samples: &[(Vec<String>, f64)],
) {
    header(out, name, help, "gauge");
    for (values, value) in samples {
        sample(out, name, labels, values, None, *value);
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// `name{label="value",...,le="bound"} value`, label values escaped as the format requires.
fn sample(
    out: &mut String,
    name: &str,
    labels: &[&str],
    values: &[String],
    le: Option<&str>,
    value: f64,
) {
    out.push_str(name);
    let pairs: Vec<(&str, &str)> = labels
        .iter()
        .copied()
        .zip(values.iter().map(String::as_str))
        .chain(le.map(|le| ("le", le)))
        .collect();
    if !pairs.is_empty() {
        out.push('{');
        for (index, (label, value)) in pairs.iter().enumerate() {
            if index > 0 {
                out.push(',');
            }
            out.push_str(label);
            out.push_str("=\"");
            for c in value.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '"' => out.push_str("\\\""),
                    '\n' => out.push_str("\\n"),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

#[cfg(test)]
mod tests {
    use super::{CounterFamily, HistogramFamily, render_gauge};
    use std::time::Duration;

    #[test]
    fn counters_render_with_escaped_labels() {
        let family = CounterFamily::new("t_total", "Things.", &["route"]);
        family.inc(&["/a\"b\\c\nd"]);
        family.add(&["/a\"b\\c\nd"], 2);
        let mut out = String::new();
        family.render(&mut out);
        assert_eq!(
            out,
            "# HELP t_total Things.\n# TYPE t_total counter\nt_total{route=\"/a\\\"b\\\\c\\nd\"} 3\n"
        );
    }

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let family = HistogramFamily::new("t_seconds", "Time.", &[]);
        family.observe(&[], Duration::from_millis(3));
        family.observe(&[], Duration::from_secs(20));
        let mut out = String::new();
        family.render(&mut out);
        assert!(out.contains("t_seconds_bucket{le=\"0.001\"} 0\n"), "{out}");
        assert!(out.contains("t_seconds_bucket{le=\"0.005\"} 1\n"), "{out}");
        assert!(out.contains("t_seconds_bucket{le=\"10\"} 1\n"), "{out}");
        assert!(out.contains("t_seconds_bucket{le=\"+Inf\"} 2\n"), "{out}");
        assert!(out.contains("t_seconds_count 2\n"), "{out}");
        assert!(out.contains("t_seconds_sum 20.003\n"), "{out}");
    }

    #[test]
    fn quantiles_are_read_from_merged_buckets() {
        let family = HistogramFamily::new("q_seconds", "Time.", &["route"]);
        for _ in 0..98 {
            family.observe(&["/a"], Duration::from_millis(2));
        }
        family.observe(&["/b"], Duration::from_millis(40));
        family.observe(&["/b"], Duration::from_secs(30));
        let (buckets, total) = family.merged();
        assert_eq!(total, 100);
        assert_eq!(buckets.iter().sum::<u64>(), 100);
        assert_eq!(super::quantile_bound(&buckets, 0.5), Some(0.0025));
        assert_eq!(super::quantile_bound(&buckets, 0.99), Some(0.05));
        assert_eq!(super::quantile_bound(&buckets, 1.0), Some(f64::INFINITY));
        assert_eq!(super::quantile_bound(&[0; 3], 0.99), None);
    }

    #[test]
    fn gauges_measured_at_scrape_render_each_sample() {
        let mut out = String::new();
        render_gauge(
            &mut out,
            "t_backlog",
            "Backlog.",
            &["channel"],
            &[(vec!["rest-hook".into()], 4.0)],
        );
        assert_eq!(
            out,
            "# HELP t_backlog Backlog.\n# TYPE t_backlog gauge\nt_backlog{channel=\"rest-hook\"} 4\n"
        );
    }
}
