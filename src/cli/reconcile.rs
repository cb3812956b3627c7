//! `portico reconcile`: compares what Portico serves with what the EHR's FHIR API holds (per type
//! and day: counts, records missing from the EHR, extra in it, differing statuses), prints the
//! report, records its counts in the state store, and exits 1 when anything drifted.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use super::audit::open_repository;
use super::state_commands::open_store;
use crate::reconcile::{Ehr, KIND, ReconcileReport};
use crate::state::check_runs::CheckRun;

#[derive(clap::Args)]
pub struct ReconcileArgs {
    /// The EHR's FHIR base URL.
    #[arg(long)]
    ehr: String,
    /// The client id Portico is registered under at the EHR (SMART Backend Services).
    #[arg(long)]
    client_id: String,
    /// The client's RSA private key (PEM); the EHR holds its public half (RS384).
    #[arg(long)]
    key: PathBuf,
    /// The key's `kid` in the JWKS the EHR holds.
    #[arg(long)]
    key_id: Option<String>,
    /// Resource types to compare, comma-separated.
    #[arg(
        long,
        default_value = "Patient,Appointment,Claim",
        value_delimiter = ','
    )]
    types: Vec<String>,
    /// Only resources dated on or after this day (YYYY-MM-DD).
    #[arg(long)]
    since: Option<String>,
    /// Print JSON instead of Markdown.
    #[arg(long)]
    json: bool,
}

pub async fn run(config_file: Option<&Path>, args: ReconcileArgs) -> anyhow::Result<ExitCode> {
    if let Some(day) = &args.since {
        chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d")
            .with_context(|| format!("--since {day:?}: a day is YYYY-MM-DD"))?;
    }
    let repository = open_repository(config_file).await?;
    let ehr = Ehr {
        base: args.ehr.clone(),
        client_id: args.client_id.clone(),
        private_key_pem: std::fs::read_to_string(&args.key)
            .with_context(|| format!("cannot read {}", args.key.display()))?,
        key_id: args.key_id.clone(),
        scope: args
            .types
            .iter()
            .map(|t| format!("system/{t}.rs"))
            .collect::<Vec<_>>()
            .join(" "),
    };
    let report =
        crate::reconcile::run(&repository, &ehr, &args.types, args.since.as_deref()).await?;
    let text = if args.json {
        serde_json::to_string_pretty(&report).expect("the report serializes")
    } else {
        markdown(&report)
    };
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("cannot write the report")?;
    let store = open_store(config_file).await?;
    store
        .record_check_run(&CheckRun {
            kind: KIND.to_owned(),
            started_ms: report.started_ms,
            finished_ms: report.finished_ms,
            fails: report.drift() > 0,
            findings: report.drift() as i64,
            summary: serde_json::json!({
                "ehr": report.ehr,
                "types": report.types.iter().map(|t| serde_json::json!({
                    "type": t.resource_type, "portico": t.portico, "ehr": t.ehr,
                    "missing": t.missing.len(), "extra": t.extra.len(), "differing": t.differing.len(),
                })).collect::<Vec<_>>(),
            })
            .to_string(),
        })
        .await
        .context("cannot record the reconciliation in the state store")?;
    eprintln!("{} record(s) drifted", report.drift());
    Ok(if report.drift() > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn markdown(report: &ReconcileReport) -> String {
    let mut out = format!("# Reconciliation with {}\n\n", report.ehr);
    out.push_str("| type | Portico | EHR | missing from the EHR | extra in the EHR | status differs |\n|---|---:|---:|---:|---:|---:|\n");
    for t in &report.types {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            t.resource_type,
            t.portico,
            t.ehr,
            t.missing.len(),
            t.extra.len(),
            t.differing.len()
        ));
    }
    for t in report
        .types
        .iter()
        .filter(|t| t.drift() > 0 || !t.days.is_empty())
    {
        out.push_str(&format!("\n## {}\n\n", t.resource_type));
        for (day, (ours, theirs)) in &t.days {
            out.push_str(&format!("- {day}: Portico {ours}, EHR {theirs}\n"));
        }
        for record in &t.missing {
            out.push_str(&format!(
                "- missing from the EHR: {} ({}/{})\n",
                record.key, t.resource_type, record.id
            ));
        }
        for record in &t.extra {
            out.push_str(&format!(
                "- extra in the EHR: {} (EHR id {})\n",
                record.key, record.id
            ));
        }
        for d in &t.differing {
            out.push_str(&format!(
                "- status differs: {} (Portico {}: {}, EHR {}: {})\n",
                d.key,
                d.portico_id,
                d.portico_status.as_deref().unwrap_or("-"),
                d.ehr_id,
                d.ehr_status.as_deref().unwrap_or("-"),
            ));
        }
    }
    out
}
