//! The command line: `serve`, `demo`, `check`, `dictionary`, and the state commands `clients`,
//! `users` and `keys` (in `state_commands`) and `groups` (in `groups`).

mod audit;
mod groups;
mod reconcile;
mod state_commands;
mod status;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::adapter::Adapter;
use crate::app::{Application, load_adapter};
use crate::config::{
    self, LegacySettings, Secret, ServerSettings, Settings, default_adapters_dir,
    default_lookup_refresh_ms, default_plan_advice_min_rows,
};
use crate::db::fixture::FixtureWriter;
use crate::db::{Database, redact_url};
use crate::demo::cerebello::seed_cerebello;
use crate::demo::dentned::seed_dentned;
use crate::demo::seed_openemr;
use crate::dictionary::{self, Dictionary, FIXTURE_SCHEMA, TableColumns};

#[derive(Parser)]
#[command(
    name = "portico",
    version,
    about = "A FHIR R4 facade over legacy practice-management databases"
)]
struct Cli {
    /// Log lines on standard error: `text` for people, `json` (one object per line, with the
    /// request id and span fields) for log collectors.
    #[arg(long, global = true, env = "PORTICO_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve FHIR R4 over the legacy database named in the settings.
    Serve {
        /// Settings file (TOML); every key can also come from PORTICO_SECTION__KEY variables.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Build an embedded SQLite database in a PMS's shape (OpenEMR by default) with synthetic data
    /// and serve it.
    Demo {
        /// The PMS to imitate: an adapter with a synthetic data generator.
        #[arg(long, value_enum, default_value_t = DemoAdapter::Openemr)]
        adapter: DemoAdapter,
        /// Number of synthetic patients.
        #[arg(long, default_value_t = 1000)]
        patients: usize,
        #[arg(long, default_value_t = 8080)]
        port: u16,
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Where to write the demo database (default portico-state/demo-<adapter>.sqlite).
        #[arg(long)]
        database: Option<PathBuf>,
    },
    /// Validate the adapter, then check it against the live database; non-zero exit on problems.
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Only validate the adapter files; do not connect.
        #[arg(long)]
        offline: bool,
        /// Also page through every resource (read-only) and list the rows that cannot be served
        /// as valid FHIR R4, per mapping, with table, key and reason.
        #[arg(long, conflicts_with = "offline")]
        data: bool,
        /// Also explain (never run) the statement of every advertised search parameter, sort,
        /// read and collection; flag full scans and sorts of large tables, and print the CREATE
        /// INDEX statements that would serve them (Portico never runs them).
        #[arg(long, conflicts_with = "offline")]
        explain: bool,
        /// With --explain: a table with fewer rows than this is never flagged.
        #[arg(long, default_value_t = crate::check::explain::DEFAULT_MIN_ROWS, requires = "explain")]
        min_rows: u64,
    },
    /// Audit the PMS data through the adapter: built-in rules (unmapped codes, zero and bad dates,
    /// phones, emails and postal codes that do not parse, patients without a name, duplicates,
    /// missing patients, rows Portico skips) and the adapter's quality.toml rules. Exits 1 when
    /// a rule of severity error has findings.
    Audit {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = audit::AuditFormat::Md)]
        format: audit::AuditFormat,
    },
    /// Compare what Portico serves with what the EHR's FHIR API holds (SMART Backend Services):
    /// counts per type and day, records missing, extra and with differing statuses. Exits 1 on
    /// any drift.
    Reconcile {
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        args: reconcile::ReconcileArgs,
    },
    /// Print the adapter's data dictionary: every FHIR element with the legacy columns it comes
    /// from, and the columns no mapping reads.
    Dictionary {
        /// Adapter name: a folder of the adapters directory.
        #[arg(long)]
        adapter: String,
        #[arg(long, value_enum, default_value_t = DictionaryFormat::Md)]
        format: DictionaryFormat,
        /// Where adapters live (default: legacy.adapters_dir, else ./adapters).
        #[arg(long)]
        adapters_dir: Option<PathBuf>,
        /// Settings file. With a legacy.url (here or in PORTICO_LEGACY__URL), unmapped columns
        /// come from the live database; without one, from the adapter's fixture/schema.sql.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Manage OAuth clients (Portico's state store).
    Clients {
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: state_commands::ClientsCommand,
    },
    /// Manage the users who sign in to Portico's authorization server.
    Users {
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: state_commands::UsersCommand,
    },
    /// Print an access token for a registered client (and nothing else), for scripts and curl.
    Token {
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        args: state_commands::TokenArgs,
    },
    /// Create an EHR launch context and print its `launch` value (and nothing else).
    Launch {
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        args: state_commands::LaunchArgs,
    },
    /// List or rotate the keys Portico signs its tokens with.
    Keys {
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: state_commands::KeysCommand,
    },
    /// Subscription health: list, show, retry now, turn off.
    Subscriptions {
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: state_commands::SubscriptionsCommand,
    },
    /// Portico's own Groups of patients (for Bulk Data's /Group/[id]/$export): add, list, show
    /// with the members resolved through the PMS, remove.
    Groups {
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: groups::GroupsCommand,
    },
    /// The operator's summary: PMS database, state store, the fail-safe flag ("critical sync
    /// error"), change detection and subscriptions. Exits 2 while the flag is raised.
    Status {
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: Option<status::StatusCommand>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum DictionaryFormat {
    Md,
    Csv,
    Html,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PORTICO_LOG")
                .unwrap_or_else(|_| "portico=info,tower_http=warn".into()),
        )
        .with_writer(std::io::stderr);
    let log_format = cli.log_format;
    match log_format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().with_current_span(true).init(),
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve { config } => serve(config).await,
            Command::Demo {
                adapter,
                patients,
                port,
                host,
                database,
            } => {
                let database = database.unwrap_or_else(|| {
                    PathBuf::from(format!("portico-state/demo-{}.sqlite", adapter.name()))
                });
                demo(adapter, patients, host, port, database).await
            }
            Command::Check {
                config,
                offline,
                data,
                explain,
                min_rows,
            } => {
                let explain = explain.then_some(min_rows);
                return crate::check::run(config, offline, data, explain).await;
            }
            Command::Audit { config, format } => {
                return audit::run(config.as_deref(), format).await;
            }
            Command::Reconcile { config, args } => {
                return reconcile::run(config.as_deref(), args).await;
            }
            Command::Dictionary {
                adapter,
                format,
                adapters_dir,
                config,
            } => print_dictionary(adapter, format, adapters_dir, config).await,
            Command::Clients { config, command } => {
                state_commands::clients(config.as_deref(), command).await
            }
            Command::Users { config, command } => {
                state_commands::users(config.as_deref(), command).await
            }
            Command::Token { config, args } => state_commands::token(config.as_deref(), args).await,
            Command::Launch { config, args } => {
                state_commands::launch(config.as_deref(), args).await
            }
            Command::Keys { config, command } => {
                state_commands::keys(config.as_deref(), command).await
            }
            Command::Subscriptions { config, command } => {
                state_commands::subscriptions(config.as_deref(), command).await
            }
            Command::Groups { config, command } => groups::run(config.as_deref(), command).await,
            Command::Status { config, command } => {
                return status::run(config.as_deref(), command).await;
            }
        }
        .map(|()| ExitCode::SUCCESS)
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            match log_format {
                LogFormat::Text => eprintln!("error: {error:#}"),
                // A log collector reads standard error as JSON lines only.
                LogFormat::Json => tracing::error!(error = format!("{error:#}"), "stopped"),
            }
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
        "serving FHIR R4 on {}://{}:{}/fhir",
        application.scheme(),
        settings.server.host,
        application.port()
    );
    application.run().await?;
    Ok(())
}

/// The adapters `portico demo` can imitate (those whose PMS schema loads into SQLite).
#[derive(Clone, Copy, clap::ValueEnum)]
enum DemoAdapter {
    Openemr,
    Cerebello,
    Dentned,
}

impl DemoAdapter {
    fn name(self) -> &'static str {
        match self {
            DemoAdapter::Openemr => "openemr",
            DemoAdapter::Cerebello => "cerebello",
            DemoAdapter::Dentned => "dentned",
        }
    }

    fn title(self) -> &'static str {
        match self {
            DemoAdapter::Openemr => "OpenEMR",
            DemoAdapter::Cerebello => "Cerebello",
            DemoAdapter::Dentned => "DentneD",
        }
    }

    /// A topic of the demo's adapter and an SQL statement, as the PMS would write it, that fires
    /// it for `appointment`.
    fn subscription_example(self, appointment: &str) -> (&'static str, String) {
        match self {
            DemoAdapter::Openemr => (
                "appointment-cancelled",
                format!(
                    "UPDATE openemr_postcalendar_events SET pc_apptstatus = 'x' WHERE pc_eid = {appointment}"
                ),
            ),
            DemoAdapter::Cerebello => (
                "appointment-cancelled",
                format!("UPDATE Appointment SET Status = 50 WHERE Id = {appointment}"),
            ),
            DemoAdapter::Dentned => (
                "appointment-rescheduled",
                format!(
                    "UPDATE appointments SET appointments_from = datetime(appointments_from, '+1 hour'), \
                     appointments_to = datetime(appointments_to, '+1 hour') WHERE appointments_id = {appointment}"
                ),
            ),
        }
    }

    /// Requests worth trying on the synthetic data.
    fn examples(self) -> &'static [&'static str] {
        match self {
            DemoAdapter::Openemr => &[
                "metadata",
                "Patient/1",
                "Patient?family=smi&_count=5",
                "Patient?birthdate=ge1980-01-01&gender=female&_sort=-birthdate",
                "Observation?patient=1&category=vital-signs",
                "Observation?patient=1&code=http://loinc.org|4548-4",
                "Appointment?patient=1&date=ge2024-01-01&_include=Appointment:actor",
                "Claim?patient=1",
                "Patient/1?_format=xml",
            ],
            DemoAdapter::Cerebello => &[
                "metadata",
                "Patient/1",
                "Patient?name=silva&_count=5",
                "Patient?birthdate=ge1980-01-01&gender=female&_sort=-birthdate",
                "Appointment?patient=1&_include=Appointment:actor",
                "Coverage?patient=1",
                "Observation?patient=1",
                "Organization?name=cl",
                "Patient/1?_format=xml",
            ],
            DemoAdapter::Dentned => &[
                "metadata",
                "Patient/1",
                "Patient?family=ros&_count=5",
                "Appointment?patient=1&_include=Appointment:actor",
                "Claim?patient=1",
                "Claim?created=ge2024-01-01&_sort=-created&_count=5",
                "Coverage?patient=1",
                "Location",
                "Patient/1?_format=xml",
            ],
        }
    }
}

async fn demo(
    adapter: DemoAdapter,
    patients: usize,
    host: String,
    port: u16,
    database: PathBuf,
) -> anyhow::Result<()> {
    if let Some(parent) = database.parent() {
        std::fs::create_dir_all(parent)?;
    }
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", database.display()));
    }
    let url = format!("sqlite://{}", database.display());
    tracing::info!(
        "creating {} with {patients} synthetic {} patients",
        database.display(),
        adapter.title()
    );
    let writer = FixtureWriter::open(&url)
        .await
        .map_err(|e| anyhow::anyhow!(e.message))?;
    let counts = match adapter {
        DemoAdapter::Openemr => seed_openemr(&writer, patients).await,
        DemoAdapter::Cerebello => seed_cerebello(&writer, patients).await,
        DemoAdapter::Dentned => seed_dentned(&writer, patients).await,
    }
    .map_err(|e| anyhow::anyhow!(e.message))?;
    writer.close().await;
    let settings = Settings {
        server: ServerSettings {
            host: host.clone(),
            port,
            // The demo keeps its state (users, clients, keys) beside its database.
            state_dir: database
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map(|p| p.to_path_buf())
                .unwrap_or_else(|| PathBuf::from(".")),
            ..ServerSettings::default()
        },
        legacy: LegacySettings {
            adapter: adapter.name().into(),
            adapters_dir: default_adapters_dir(),
            url: Secret::new(url),
            max_connections: 4,
            statement_timeout_ms: 5000,
            acquire_timeout_ms: 3000,
            timezone: None,
            lookup_refresh_ms: default_lookup_refresh_ms(),
            plan_advice_min_rows: default_plan_advice_min_rows(),
        },
        state: Default::default(),
        auth: Default::default(),
        // The demo polls its database like a real PMS and lets a receiver on this machine subscribe.
        subscriptions: crate::config::SubscriptionsSettings {
            allow_private_endpoints: true,
            poll_interval_ms: 2_000,
            ..Default::default()
        },
        alarm: Default::default(),
        quality: Default::default(),
        reconcile: Default::default(),
        export: Default::default(),
    };
    let application = Application::build(&settings).await?;
    let base = format!("http://{host}:{}/fhir", application.port());
    let store = application.state.auth.tokens.store().clone();
    let state_dir = settings.server.state_dir.clone();
    let repository = application.state.repository.clone();
    // Serves until SIGTERM or Ctrl-C (`Application::run`); the demo ends when the server has.
    let server = tokio::spawn(application.run());
    let mut accounts = state_commands::demo_clients(&store).await?;
    let token = state_commands::issue_token(
        &store,
        "demo-backend",
        "system/*.rs system/Subscription.cruds",
        None,
        &base,
        3600,
    )
    .await?;
    let practitioner = first_id(&base, "Practitioner", &token).await;
    let users = state_commands::demo_users(&store, practitioner.as_deref(), "1").await?;
    accounts.splice(0..0, users);
    println!(
        "Portico demo: {} patients, {} appointments, {} vitals forms, {} lab results, {} coverages, {} claim versions.",
        counts.patients,
        counts.appointments,
        counts.vitals,
        counts.lab_results,
        counts.coverages,
        counts.claims
    );
    println!(
        "Accounts (in {}; new passwords and secret on every start):",
        state_dir.display()
    );
    for line in accounts {
        println!("{line}");
    }
    println!(
        "A system/*.rs system/Subscription.cruds token for demo-backend, valid 1 hour (portico token --client demo-backend --scope 'system/*.rs' makes another):"
    );
    println!("export PORTICO_TOKEN={token}");
    println!("FHIR R4 base: {base}");
    let audit = crate::quality::run(&repository).await;
    crate::quality::schedule::record(&store, &audit).await?;
    println!(
        "Data-quality audit of the demo data, which plants legacy quirks (the status page lists them): {}",
        crate::quality::report::verdict(&audit)
    );
    println!(
        "Status page (sign in as the admin user above): {}/status\n\nTry:",
        base.trim_end_matches("/fhir")
    );
    for example in adapter.examples() {
        println!("  curl -H \"Authorization: Bearer $PORTICO_TOKEN\" '{base}/{example}'");
    }
    print_export_example(&base);
    print_sign_in_example(&base);
    if let Some(appointment) = first_id(&base, "Appointment", &token).await {
        print_subscription_example(&base, adapter, &appointment, &database);
    }
    server
        .await
        .context("the demo server stopped abnormally")??;
    Ok(())
}

/// How to run a Bulk Data export in two curl lines: the kick-off prints its status URL, which
/// answers the manifest once the files are written.
fn print_export_example(base: &str) {
    println!(
        "\nExport everything as NDJSON (Bulk Data): the first line prints the status URL \
         (Content-Location); poll it until it answers the manifest with the files' URLs, which \
         take the same token:"
    );
    println!(
        "  curl -si -H \"Authorization: Bearer $PORTICO_TOKEN\" -H 'Accept: application/fhir+json' \
         -H 'Prefer: respond-async' '{base}/$export?_type=Patient,Appointment' | grep -i content-location"
    );
    println!("  curl -s -H \"Authorization: Bearer $PORTICO_TOKEN\" '<the Content-Location URL>'");
}

/// How to try the browser sign-in as the demo app: an authorization URL with a fixed PKCE pair
/// (RFC 7636's example; fine for a local demo, never for an app) and the code exchange.
fn print_sign_in_example(base: &str) {
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    const REDIRECT: &str = "http://127.0.0.1:9999/callback";
    let root = crate::auth::endpoints::server_root(base);
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", "demo-app")
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("scope", "launch/patient openid fhirUser patient/*.rs")
        .append_pair("state", "demo")
        .append_pair("aud", base)
        .append_pair("code_challenge", CHALLENGE)
        .append_pair("code_challenge_method", "S256")
        .finish();
    println!(
        "\nSign in as the demo app would (a clinician picks a patient; the browser then fails to \
         reach {REDIRECT}: copy the code from its address bar):"
    );
    println!("  {root}{}?{query}", crate::auth::endpoints::AUTHORIZE);
    println!(
        "  curl -d grant_type=authorization_code -d client_id=demo-app -d redirect_uri={REDIRECT} \
         -d code_verifier={VERIFIER} -d code=CODE {root}{}",
        crate::auth::endpoints::TOKEN
    );
}

/// How to watch a PMS edit become a notification: a receiver on 127.0.0.1 (the demo allows
/// loopback endpoints), the curl that subscribes it, and an UPDATE as the PMS would write it.
fn print_subscription_example(
    base: &str,
    adapter: DemoAdapter,
    appointment: &str,
    database: &Path,
) {
    let (topic, statement) = adapter.subscription_example(appointment);
    let subscription = serde_json::json!({
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "demo",
        "criteria": format!("{}{topic}", crate::adapter::model::TOPIC_URL_PREFIX),
        "channel": {
            "type": "rest-hook",
            "endpoint": "http://127.0.0.1:9998/hook",
            "payload": "application/fhir+json",
            "_payload": { "extension": [{
                "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content",
                "valueCode": "full-resource",
            }]},
        },
    });
    println!(
        "\nSubscriptions (the demo reads its database every 2 s, as it would a PMS):\n  \
         1. a receiver that prints what it gets:\n  \
         python3 -c 'import http.server as h\nclass R(h.BaseHTTPRequestHandler):\n def do_POST(s):\n  \
         print(s.rfile.read(int(s.headers[\"Content-Length\"])).decode(), flush=True); \
         s.send_response(200); s.end_headers()\nh.HTTPServer((\"127.0.0.1\", 9998), R).serve_forever()'"
    );
    println!(
        "  2. subscribe it to {topic}:\n  curl -H \"Authorization: Bearer $PORTICO_TOKEN\" \
         -H 'Content-Type: application/fhir+json' -d '{subscription}' {base}/Subscription"
    );
    println!(
        "  3. change the appointment as the PMS would; the receiver prints the notification within seconds:\n  \
         sqlite3 {} \"{statement}\"",
        database.display()
    );
}

/// The id of the first `resource_type` the demo serves, if it serves that type.
async fn first_id(base: &str, resource_type: &str, token: &str) -> Option<String> {
    let bundle: serde_json::Value = reqwest::Client::new()
        .get(format!("{base}/{resource_type}?_count=1"))
        .bearer_auth(token)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    bundle["entry"][0]["resource"]["id"]
        .as_str()
        .map(str::to_owned)
}

async fn print_dictionary(
    adapter_name: String,
    format: DictionaryFormat,
    adapters_dir: Option<PathBuf>,
    config_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    // The command line names the adapter, over the settings file and the environment.
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    env.push(("PORTICO_LEGACY__ADAPTER".into(), adapter_name));
    let mut settings = config::load_from(config_file.as_deref(), &env)?;
    if let Some(dir) = adapters_dir {
        settings.legacy.adapters_dir = dir;
    }
    let adapter = load_adapter(&settings)?;
    let columns = if settings.legacy.url.expose().is_empty() {
        fixture_columns(&adapter)?
    } else {
        Some(live_columns(&adapter, &settings.legacy).await?)
    };
    let dictionary = Dictionary::build(&adapter, columns.as_ref());
    let page = match format {
        DictionaryFormat::Md => dictionary::markdown(&dictionary),
        DictionaryFormat::Csv => dictionary::csv(&dictionary),
        DictionaryFormat::Html => dictionary::html(&dictionary),
    };
    std::io::stdout()
        .lock()
        .write_all(page.as_bytes())
        .context("cannot write the dictionary")?;
    Ok(())
}

/// The tables' columns from the adapter's fixture schema, or `None` when it has none.
fn fixture_columns(adapter: &Adapter) -> anyhow::Result<Option<TableColumns>> {
    let path = adapter.dir.join(FIXTURE_SCHEMA);
    if !path.is_file() {
        return Ok(None);
    }
    let sql = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Some(TableColumns {
        source: format!("the adapter's fixture schema `{FIXTURE_SCHEMA}`"),
        tables: dictionary::parse_schema(&sql),
    }))
}

/// The columns of every table the adapter reads, from the live database.
async fn live_columns(adapter: &Adapter, legacy: &LegacySettings) -> anyhow::Result<TableColumns> {
    let url = legacy.require_url()?;
    let database =
        Database::connect_lazy(&legacy.db_settings()).map_err(|e| anyhow::anyhow!(e.message))?;
    let mut tables = std::collections::BTreeMap::new();
    for table in dictionary::tables_read(adapter) {
        let columns = database.table_columns(&table).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot read the columns of {table} from {}: {}",
                redact_url(url),
                e.message
            )
        })?;
        if !columns.is_empty() {
            tables.insert(table, columns.into_iter().map(|(name, _)| name).collect());
        }
    }
    database.close().await;
    Ok(TableColumns {
        source: format!("the live database `{}`", redact_url(url)),
        tables,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// adapters/<name>/DICTIONARY.md is what `portico dictionary --adapter <name>` prints without
    /// a database (from the fixture schema), for every shipped adapter.
    #[test]
    fn the_committed_dictionaries_are_current() {
        for name in ["openemr", "opendental", "cerebello", "dentned"] {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("adapters")
                .join(name);
            let adapter = crate::adapter::load(&dir)
                .unwrap_or_else(|e| panic!("the {name} adapter is invalid: {e:?}"));
            let columns = fixture_columns(&adapter).expect("the fixture schema is readable");
            assert!(columns.is_some(), "adapters/{name} has {FIXTURE_SCHEMA}");
            let generated = dictionary::markdown(&Dictionary::build(&adapter, columns.as_ref()));
            let committed = std::fs::read_to_string(dir.join("DICTIONARY.md")).unwrap_or_default();
            assert!(
                generated == committed,
                "adapters/{name}/DICTIONARY.md is stale; regenerate it (without PORTICO_LEGACY__URL set) with:\n  \
                 cargo run -- dictionary --adapter {name} > adapters/{name}/DICTIONARY.md"
            );
        }
    }
}
