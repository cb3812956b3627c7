//! The data-quality audit on a schedule under `portico serve` (`[quality] schedule_minutes`), and
//! the one way a run is recorded, whoever ran it: the latest result feeds the status page,
//! `/metrics` and `portico status`.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::AuditReport;
use crate::repository::Repository;
use crate::state::StateStore;
use crate::state::check_runs::CheckRun;

/// The `check_run` kind of data-quality audits.
pub const KIND: &str = "quality";

/// Keeps `report` in the state store as the latest audit: its counts per rule (the findings
/// themselves are the report's, printed by `portico audit`).
pub async fn record(
    store: &StateStore,
    report: &AuditReport,
) -> Result<(), crate::state::StateError> {
    let rules: Vec<serde_json::Value> = report
        .rules
        .iter()
        .map(|rule| {
            serde_json::json!({
                "id": rule.id,
                "title": rule.title,
                "severity": rule.severity,
                "count": rule.count,
                "error": rule.error,
            })
        })
        .collect();
    let summary = serde_json::json!({
        "adapter": report.adapter,
        "rowsRead": report.rows_read,
        "rules": rules,
    });
    store
        .record_check_run(&CheckRun {
            kind: KIND.to_owned(),
            started_ms: report.started_ms,
            finished_ms: report.finished_ms,
            fails: report.fails(),
            findings: report.findings() as i64,
            summary: summary.to_string(),
            error: None,
        })
        .await
}

/// A recorded audit's counts per rule: (rule id, severity, count).
pub fn rule_counts(run: &CheckRun) -> Vec<(String, String, u64)> {
    let summary: serde_json::Value = serde_json::from_str(&run.summary).unwrap_or_default();
    summary["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|rule| {
            Some((
                rule["id"].as_str()?.to_owned(),
                rule["severity"].as_str()?.to_owned(),
                rule["count"].as_u64()?,
            ))
        })
        .collect()
}

/// Runs the audit every `every` under `portico serve`, until `shutdown`.
pub async fn run(
    repository: Repository,
    store: StateStore,
    every: Duration,
    shutdown: CancellationToken,
) {
    let recorder = store.clone();
    crate::app::workers::run_check_on_schedule(
        store,
        KIND,
        every,
        crate::app::workers::SETTLE,
        shutdown,
        || async {
            let report = super::run(&repository).await;
            tracing::info!(
                findings = report.findings(),
                fails = report.fails(),
                seconds = (report.finished_ms - report.started_ms) / 1000,
                "data-quality audit done"
            );
            if let Err(error) = record(&recorder, &report).await {
                tracing::warn!(%error, "the data-quality audit could not be recorded");
            }
        },
    )
    .await
}
