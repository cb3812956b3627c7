//! `portico audit`: the data-quality audit on demand. Prints the report (Markdown, CSV, HTML or
//! JSON) on standard output, records it as the latest audit in the state store (the status page
//! shows it), and exits non-zero when a rule of severity `error` has findings or could not run.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::ValueEnum;

use super::state_commands::open_store;
use crate::app::load_adapter;
use crate::config;
use crate::db::{Database, redact_url};
use crate::quality::{report, schedule};
use crate::repository::{LookupCache, Repository};

#[derive(Clone, Copy, ValueEnum)]
pub enum AuditFormat {
    Md,
    Csv,
    Html,
    Json,
}

/// The PMS as the settings name it, through the adapter, reachable (a clear error if not): what
/// the commands that read the PMS data (`audit`, `reconcile`) start from.
pub async fn open_repository(config_file: Option<&Path>) -> anyhow::Result<Repository> {
    let settings = config::load(config_file)?;
    let adapter = load_adapter(&settings)?;
    settings.legacy.require_url()?;
    let database = Database::connect_lazy(&settings.legacy.db_settings())
        .map_err(|e| anyhow::anyhow!(e.message))?;
    database.ping().await.map_err(|error| {
        anyhow::anyhow!(
            "cannot reach {}: {}",
            redact_url(settings.legacy.url.expose()),
            error.message
        )
    })?;
    Ok(Repository {
        adapter: std::sync::Arc::new(adapter),
        db: database,
        lookups: std::sync::Arc::new(LookupCache::new(settings.legacy.lookup_refresh())),
    })
}

pub async fn run(config_file: Option<&Path>, format: AuditFormat) -> anyhow::Result<ExitCode> {
    let repository = open_repository(config_file).await?;
    let audit = crate::quality::run(&repository).await;
    let page = match format {
        AuditFormat::Md => report::markdown(&audit),
        AuditFormat::Csv => report::csv(&audit),
        AuditFormat::Html => report::html(&audit),
        AuditFormat::Json => report::json(&audit),
    };
    std::io::stdout()
        .lock()
        .write_all(page.as_bytes())
        .context("cannot write the report")?;
    let store = open_store(config_file).await?;
    schedule::record(&store, &audit)
        .await
        .context("cannot record the audit in the state store")?;
    eprintln!("{}", report::verdict(&audit));
    Ok(if audit.fails() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
