//! `portico status`: the operator's summary in a terminal (PMS database, state store, the
//! fail-safe flag, change detection per mapping, subscriptions, the latest data-quality audit and
//! reconciliation), exiting non-zero while the flag
//! is raised; and `portico status ack --by NAME`, which acknowledges it and records who did in the
//! audit trail. Reads the settings file and the state store, as the server does; writes only the
//! acknowledgement.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use clap::Subcommand;

use super::state_commands::{open_store, time_ms};
use crate::config;
use crate::db::{Database, redact_url};
use crate::state::audit::AuditRecord;
use crate::state::subscriptions::now_ms;

#[derive(Subcommand)]
pub enum StatusCommand {
    /// Acknowledge the raised fail-safe flag: it stops showing as raised until its cause clears
    /// and comes back. Who and when go into the audit trail.
    Ack {
        /// Who acknowledges (kept in the audit trail).
        #[arg(long)]
        by: String,
    },
}

pub async fn run(
    config_file: Option<&Path>,
    command: Option<StatusCommand>,
) -> anyhow::Result<ExitCode> {
    match command {
        Some(StatusCommand::Ack { by }) => acknowledge(config_file, &by).await,
        None => summary(config_file).await,
    }
}

async fn acknowledge(config_file: Option<&Path>, by: &str) -> anyhow::Result<ExitCode> {
    let by = by.trim();
    anyhow::ensure!(!by.is_empty(), "--by names who acknowledges");
    let store = open_store(config_file).await?;
    let now = now_ms();
    let causes = store.acknowledge_alarms(by, now).await?;
    if causes.is_empty() {
        println!("nothing to acknowledge: the fail-safe flag is not raised");
        return Ok(ExitCode::SUCCESS);
    }
    let id = uuid::Uuid::new_v4().to_string();
    let mut event = crate::alarm::acknowledgement_event(by, &causes, now);
    event["id"] = serde_json::json!(id);
    store
        .append_audit_events(&[AuditRecord {
            id,
            recorded_ms: now,
            subtype: None,
            outcome: "0".into(),
            client_id: None,
            subject: Some(by.to_owned()),
            fhir_user: None,
            request_id: "portico-status-ack".into(),
            patients: Vec::new(),
            resource: event.to_string(),
        }])
        .await?;
    println!("acknowledged by {by}: {}", causes.join(", "));
    Ok(ExitCode::SUCCESS)
}

async fn summary(config_file: Option<&Path>) -> anyhow::Result<ExitCode> {
    let settings = config::load(config_file)?;
    match settings.legacy.require_url() {
        Err(_) => println!("PMS database   not configured (legacy.url)"),
        Ok(url) => {
            let database = Database::connect_lazy(&settings.legacy.db_settings())
                .map_err(|e| anyhow::anyhow!(e.message))?;
            let started = Instant::now();
            match database.ping().await {
                Ok(()) => println!(
                    "PMS database   up ({}, {} ms round trip) {}",
                    database.dialect().name(),
                    started.elapsed().as_millis(),
                    redact_url(url)
                ),
                Err(error) => {
                    println!("PMS database   DOWN: {} {}", error.message, redact_url(url))
                }
            }
        }
    }
    let store = open_store(config_file).await?;
    match store.probe_write().await {
        Ok(()) => println!("state store    up ({:?}, takes writes)", store.backend()),
        Err(error) => println!("state store    NOT WRITABLE: {error}"),
    }

    let alarms = store.alarms().await?;
    let raised: Vec<_> = alarms.iter().filter(|a| a.flagged()).collect();
    if raised.is_empty() {
        println!("fail-safe flag ok: no critical sync error");
    } else {
        for alarm in &raised {
            println!(
                "fail-safe flag RAISED ({}) since {}: {}",
                alarm.cause,
                time_ms(Some(alarm.raised_ms)),
                alarm.detail
            );
        }
    }
    for alarm in alarms.iter().filter(|a| a.open() && !a.flagged()) {
        println!(
            "               {} acknowledged by {} at {} (still holds: {})",
            alarm.cause,
            alarm.acknowledged_by.as_deref().unwrap_or("-"),
            time_ms(alarm.acknowledged_ms),
            alarm.detail
        );
    }

    let failures = store.detection_failures().await?;
    for cursor in store.change_cursors().await? {
        let failure = failures.iter().find(|f| f.mapping == cursor.mapping);
        let state = match failure {
            Some(failure) => format!(
                "FAILING since {} ({})",
                time_ms(Some(failure.failing_since_ms)),
                failure.last_error.as_deref().unwrap_or("-")
            ),
            None if cursor.baselined => format!("ok, scan cycle {}", cursor.cycle),
            None => "first full scan under way".to_owned(),
        };
        println!("detection      {}: {state}", cursor.mapping);
    }

    let subscriptions = store.subscriptions(None).await?;
    let mut by_status = std::collections::BTreeMap::<&str, usize>::new();
    for subscription in &subscriptions {
        *by_status.entry(subscription.status.as_str()).or_default() += 1;
    }
    let backlog: i64 = subscriptions
        .iter()
        .map(|s| (s.events_since_start - s.delivered_through).max(0))
        .sum();
    let failing = subscriptions
        .iter()
        .filter(|s| s.failing_since_ms.is_some())
        .count();
    let counts: Vec<String> = by_status
        .iter()
        .map(|(status, count)| format!("{count} {status}"))
        .collect();
    println!(
        "subscriptions  {} ({}); backlog {backlog} events; {failing} failing",
        subscriptions.len(),
        if counts.is_empty() {
            "none".to_owned()
        } else {
            counts.join(", ")
        }
    );
    match store
        .latest_check_run(crate::quality::schedule::KIND)
        .await?
    {
        Some(run) => println!(
            "quality audit  {} finding(s){} at {}",
            run.findings,
            if run.fails {
                ", error-severity rules failing"
            } else {
                ""
            },
            time_ms(Some(run.started_ms))
        ),
        None => println!("quality audit  none recorded yet (portico audit)"),
    }
    match store.latest_check_run(crate::reconcile::KIND).await? {
        Some(run) => {
            let summary: serde_json::Value = serde_json::from_str(&run.summary).unwrap_or_default();
            let ehr = summary["ehr"].as_str().unwrap_or("-");
            match &run.error {
                Some(error) => println!(
                    "reconcile      FAILED with {ehr} at {}: {error}",
                    time_ms(Some(run.started_ms))
                ),
                None => println!(
                    "reconcile      {} record(s) drifted with {ehr} at {}",
                    run.findings,
                    time_ms(Some(run.started_ms))
                ),
            }
        }
        None => println!("reconcile      none recorded yet (portico reconcile)"),
    }
    Ok(if raised.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
