//! The command line: `serve`, `demo` and `check`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::Application;
use crate::config::{self, LegacySettings, Secret, ServerSettings, Settings, default_adapters_dir};
use crate::db::fixture::FixtureWriter;
use crate::demo::seed_openemr;

#[derive(Parser)]
#[command(
    name = "portico",
    version,
    about = "A FHIR R4 facade over legacy practice-management databases"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve FHIR R4 over the legacy database named in the settings.
    Serve {
        /// Settings file (TOML); every key can also come from PORTICO_SECTION__KEY variables.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Build an embedded SQLite database in OpenEMR's shape with synthetic data and serve it.
    Demo {
        /// Number of synthetic patients.
        #[arg(long, default_value_t = 1000)]
        patients: usize,
        #[arg(long, default_value_t = 8080)]
        port: u16,
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Where to write the demo database.
        #[arg(long, default_value = "portico-state/demo-openemr.sqlite")]
        database: PathBuf,
    },
    /// Validate the adapter, then check it against the live database; non-zero exit on problems.
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Only validate the adapter files; do not connect.
        #[arg(long)]
        offline: bool,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PORTICO_LOG")
                .unwrap_or_else(|_| "portico=info,tower_http=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve { config } => serve(config).await,
            Command::Demo {
                patients,
                port,
                host,
                database,
            } => demo(patients, host, port, database).await,
            Command::Check { config, offline } => return crate::check::run(config, offline).await,
        }
        .map(|()| ExitCode::SUCCESS)
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config_file: Option<PathBuf>) -> anyhow::Result<()> {
    let settings = config::load(config_file.as_deref())?;
    let application = Application::build(&settings).await?;
    tracing::info!(
        adapter = %application.state.adapter.name,
        database = %crate::db::redact_url(settings.legacy.url.expose()),
        "serving FHIR R4 on http://{}:{}/fhir",
        settings.server.host,
        application.port()
    );
    application.run().await?;
    Ok(())
}

async fn demo(patients: usize, host: String, port: u16, database: PathBuf) -> anyhow::Result<()> {
    if let Some(parent) = database.parent() {
        std::fs::create_dir_all(parent)?;
    }
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", database.display()));
    }
    let url = format!("sqlite://{}", database.display());
    eprintln!(
        "Creating {} with {patients} synthetic OpenEMR patients...",
        database.display()
    );
    let writer = FixtureWriter::open(&url)
        .await
        .map_err(|e| anyhow::anyhow!(e.message))?;
    let counts = seed_openemr(&writer, patients)
        .await
        .map_err(|e| anyhow::anyhow!(e.message))?;
    writer.close().await;
    let settings = Settings {
        server: ServerSettings {
            host: host.clone(),
            port,
            ..ServerSettings::default()
        },
        legacy: LegacySettings {
            adapter: "openemr".into(),
            adapters_dir: default_adapters_dir(),
            url: Secret::new(url),
            max_connections: 4,
            statement_timeout_ms: 5000,
            acquire_timeout_ms: 3000,
            timezone: None,
        },
    };
    let application = Application::build(&settings).await?;
    let base = format!("http://{host}:{}/fhir", application.port());
    println!(
        "Portico demo: {} patients, {} appointments, {} vitals forms, {} lab results, {} coverages, {} claim versions.",
        counts.patients,
        counts.appointments,
        counts.vitals,
        counts.lab_results,
        counts.coverages,
        counts.claims
    );
    println!("FHIR R4 base: {base}\n\nTry:");
    for example in [
        "metadata",
        "Patient/1",
        "Patient?family=smi&_count=5",
        "Patient?birthdate=ge1980-01-01&gender=female&_sort=-birthdate",
        "Observation?patient=1&category=vital-signs",
        "Observation?patient=1&code=http://loinc.org|4548-4",
        "Appointment?patient=1&date=ge2024-01-01&_include=Appointment:actor",
        "Claim?patient=1",
        "Patient/1?_format=xml",
    ] {
        println!("  curl '{base}/{example}'");
    }
    application.run().await?;
    Ok(())
}
