//! `portico reconcile`: compares what Portico serves with what the EHR's FHIR API holds (per type
//! and day: counts, records missing from the EHR, extra in it, differing statuses), prints the
//! report, records its counts in the state store, and exits 1 when anything drifted. Its options
//! default to the settings file's `[reconcile]`, which `portico serve` runs on a schedule.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use super::audit::open_repository;
use super::state_commands::open_store;
use crate::reconcile::{Ehr, ReconcileReport, record, record_failure, window_start};

#[derive(clap::Args)]
pub struct ReconcileArgs {
    /// The EHR's FHIR base URL [default: reconcile.ehr_url].
    #[arg(long)]
    ehr: Option<String>,
    /// The client id Portico is registered under at the EHR (SMART Backend Services)
    /// [default: reconcile.client_id].
    #[arg(long)]
    client_id: Option<String>,
    /// The client's RSA private key (PEM); the EHR holds its public half (RS384)
    /// [default: reconcile.key_file].
    #[arg(long)]
    key: Option<PathBuf>,
    /// The key's `kid` in the JWKS the EHR holds [default: reconcile.key_id].
    #[arg(long)]
    key_id: Option<String>,
    /// Resource types to compare, comma-separated [default: reconcile.types, or
    /// Patient,Appointment,Claim].
    #[arg(long, value_delimiter = ',')]
    types: Option<Vec<String>>,
    /// Only resources dated on or after this day (YYYY-MM-DD) [default: everything, or the last
    /// reconcile.days days].
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
    let mut settings = crate::config::load(config_file)?.reconcile;
    settings.ehr_url = args.ehr.or(settings.ehr_url);
    settings.client_id = args.client_id.or(settings.client_id);
    settings.key_file = args.key.or(settings.key_file);
    settings.key_id = args.key_id.or(settings.key_id);
    settings.types = args.types.unwrap_or(settings.types);
    let since = args.since.or_else(|| window_start(settings.days));
    let ehr = Ehr::configured(&settings)?;
    let repository = open_repository(config_file).await?;
    let store = open_store(config_file).await?;
    let started_ms = crate::state::subscriptions::now_ms();
    let report =
        match crate::reconcile::run(&repository, &ehr, &settings.types, since.as_deref()).await {
            Ok(report) => report,
            Err(error) => {
                record_failure(&store, &ehr.base, started_ms, &error)
                    .await
                    .context("cannot record the failed reconciliation in the state store")?;
                return Err(error);
            }
        };
    let text = if args.json {
        serde_json::to_string_pretty(&report).expect("the report serializes")
    } else {
        markdown(&report)
    };
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("cannot write the report")?;
    record(&store, &report)
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
