//! The harness shared by the per-adapter integration tests (tests/opendental.rs, tests/cerebello.rs,
//! tests/dentned.rs): a FHIR client that follows `next` links and checks every body strictly as R4,
//! plain-SQL helpers over a read-only `Database`, and the start-up of Portico on a free port for an
//! adapter, on a SQLite file seeded by a generator or on any database URL; `portico check` run
//! as a user runs it; and the pinned Python venv of tests/clients.rs and tests/hl7v2.rs.

// Each integration test file is a crate of its own that compiles this module and uses a different
// subset of it; what one of them leaves unused is not dead code.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use portico::app::Application;
use portico::config::{
    LegacySettings, Secret, ServerSettings, Settings, default_adapters_dir,
    default_lookup_refresh_ms,
};
use portico::db::fixture::FixtureWriter;
use portico::db::{Database, DbError, DbSettings};
use portico::dialect::RenderedQuery;
use portico::dialect::ast::Value;
use portico::state::StateStore;
use serde_json::Value as Json;

/// A client for one running Portico.
pub struct Fhir {
    pub base: String,
    http: reqwest::Client,
    /// The bearer token `http` sends (for clients outside Rust).
    pub token: String,
}

impl Fhir {
    /// A client of the Portico at `base` that sends `token` with every request.
    pub fn with_token(base: String, token: String) -> Fhir {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("a header value"),
        );
        Fhir {
            base,
            http: reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .expect("an HTTP client"),
            token,
        }
    }

    /// GETs a path below the FHIR base (or an absolute URL): the status and the body.
    pub async fn get(&self, path: &str) -> (u16, Vec<u8>) {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}/{path}", self.base)
        };
        let response = self.http.get(&url).send().await.expect("Portico answers");
        let status = response.status().as_u16();
        (status, response.bytes().await.expect("body").to_vec())
    }

    /// GETs FHIR JSON, expects 200, and checks that the body is strictly valid R4.
    pub async fn json(&self, path: &str) -> Json {
        let (status, body) = self.get(path).await;
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, 200, "GET {path}: {text}");
        if let Err(error) = portico::fhir::xml::parse_strict(&body) {
            panic!("GET {path}: not valid R4 ({error}):\n{text}");
        }
        serde_json::from_slice(&body).expect("JSON")
    }

    /// Every match of a search, following `next` links.
    pub async fn all(&self, path: &str) -> Vec<Json> {
        let mut found = Vec::new();
        let mut next = Some(path.to_owned());
        let mut pages = 0;
        while let Some(url) = next {
            pages += 1;
            assert!(pages < 5_000, "paging does not end");
            let bundle = self.json(&url).await;
            for entry in bundle["entry"].as_array().cloned().unwrap_or_default() {
                if entry["search"]["mode"] == "match" {
                    found.push(entry["resource"].clone());
                }
            }
            next = bundle["link"]
                .as_array()
                .expect("links")
                .iter()
                .find(|l| l["relation"] == "next")
                .map(|l| l["url"].as_str().expect("url").to_owned());
        }
        found
    }
}

/// Deserializes strictly into fhirbolt's R4 model (unknown elements and wrong types fail).
pub fn strict(bytes: &[u8]) {
    if let Err(error) = portico::fhir::xml::parse_strict(bytes) {
        panic!(
            "not valid R4 ({error}):\n{}",
            String::from_utf8_lossy(bytes)
        );
    }
}

/// Every row of a plain SQL query.
pub async fn rows(database: &Database, sql: &str) -> Vec<Vec<Value>> {
    database
        .fetch(&RenderedQuery {
            sql: sql.to_owned(),
            params: Vec::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", e.message))
}

/// The `COUNT(*)` (or `SUM`) a query returns in its first column.
pub async fn count(database: &Database, sql: &str) -> usize {
    match &rows(database, sql).await[0][0] {
        Value::Int(n) => *n as usize,
        Value::Decimal(d) => d.to_string().parse().expect("count"),
        other => panic!("{sql}: not a count: {other:?}"),
    }
}

/// The first column of the first row, an integer.
pub async fn first_int(database: &Database, sql: &str) -> i64 {
    match rows(database, sql).await.first().and_then(|r| r.first()) {
        Some(Value::Int(n)) => *n,
        other => panic!("{sql}: no integer: {other:?}"),
    }
}

/// An integer column that is never NULL.
pub fn int(value: &Value) -> i64 {
    match value {
        Value::Int(n) => *n,
        other => panic!("not an integer: {other:?}"),
    }
}

/// An integer column that may be NULL.
pub fn nullable_int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        Value::Null => None,
        other => panic!("not an integer: {other:?}"),
    }
}

/// A text column that may be NULL.
pub fn text(value: &Value) -> Option<String> {
    match value {
        Value::Text(text) => Some(text.clone()),
        Value::Null => None,
        other => panic!("not text: {other:?}"),
    }
}

/// A SQLite file seeded by a generator, in a directory of its own.
pub struct Seeded<C> {
    pub adapter: String,
    pub dir: PathBuf,
    pub url: String,
    /// What the generator reports it wrote.
    pub counts: C,
}

/// Seeds `portico-{adapter}-{name}-{pid}/{adapter}.sqlite` in the temporary directory afresh.
pub async fn seed_sqlite<C>(
    adapter: &str,
    name: &str,
    seed: impl AsyncFnOnce(&FixtureWriter) -> Result<C, DbError>,
) -> Seeded<C> {
    let dir = std::env::temp_dir().join(format!("portico-{adapter}-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{adapter}.sqlite"));
    std::fs::remove_file(&path).ok();
    let url = format!("sqlite://{}", path.display());
    let writer = FixtureWriter::open(&url)
        .await
        .unwrap_or_else(|e| panic!("{}", e.message));
    let counts = seed(&writer)
        .await
        .unwrap_or_else(|e| panic!("{}", e.message));
    writer.close().await;
    Seeded {
        adapter: adapter.to_owned(),
        dir,
        url,
        counts,
    }
}

impl<C> Seeded<C> {
    /// Serves the file with its adapter, keeping Portico's state next to it.
    pub async fn serve(&self) -> Served {
        serve(&self.adapter, &self.url, self.dir.join("state")).await
    }
}

/// A running Portico, a read-only connection to the database it serves, and its state store
/// (where a test registers the clients and users of an authorization flow).
pub struct Served {
    pub fhir: Fhir,
    pub database: Database,
    pub state: StateStore,
}

/// Starts Portico with `adapter` on `url` on a free port, and opens the same database read-only.
pub async fn serve(adapter: &str, url: &str, state_dir: PathBuf) -> Served {
    serve_with(adapter, url, state_dir, |_| {}).await
}

/// `serve`, with the settings changed by `customize` first.
pub async fn serve_with(
    adapter: &str,
    url: &str,
    state_dir: PathBuf,
    customize: impl FnOnce(&mut Settings),
) -> Served {
    let mut settings = Settings {
        server: ServerSettings {
            host: "127.0.0.1".into(),
            port: 0,
            base_url: None,
            cursor_secret: Some(Secret::new(format!("{adapter}-test-secret"))),
            state_dir,
            ..ServerSettings::default()
        },
        legacy: LegacySettings {
            adapter: adapter.into(),
            adapters_dir: default_adapters_dir(),
            url: Secret::new(url),
            max_connections: 4,
            statement_timeout_ms: 10_000,
            acquire_timeout_ms: 3_000,
            timezone: None,
            lookup_refresh_ms: default_lookup_refresh_ms(),
            // Start-up plan advice explains every statement: only its own test wants it.
            plan_advice_min_rows: 0,
        },
        state: Default::default(),
        auth: Default::default(),
        subscriptions: portico::config::SubscriptionsSettings {
            enabled: false,
            ..Default::default()
        },
        alarm: Default::default(),
        // No scheduled audit: a test that wants one runs it.
        quality: portico::config::QualitySettings {
            schedule_minutes: 0,
        },
        reconcile: Default::default(),
        export: Default::default(),
    };
    customize(&mut settings);
    let application = Application::build(&settings)
        .await
        .unwrap_or_else(|e| panic!("Portico starts with the {adapter} adapter: {e:?}"));
    let base = format!("http://127.0.0.1:{}/fhir", application.port());
    // Every request carries a system/*.rs token signed by this server's own key.
    let grant = portico::auth::tokens::Grant {
        client_id: "portico-tests".into(),
        subject: "portico-tests".into(),
        scope: "system/*.rs".into(),
        ..Default::default()
    };
    let (token, _) = application
        .state
        .auth
        .tokens
        .issue_for(&grant, &base, 3600)
        .await
        .expect("a test token");
    let fhir = Fhir::with_token(base, token);
    let state = application.state.auth.tokens.store().clone();
    tokio::spawn(application.run_until_cancelled());
    let database = Database::connect_lazy(&DbSettings {
        url: url.to_owned(),
        max_connections: 2,
        statement_timeout: Duration::from_secs(10),
        acquire_timeout: Duration::from_secs(5),
    })
    .unwrap_or_else(|e| panic!("{}", e.message));
    Served {
        fhir,
        database,
        state,
    }
}

/// Runs the built `portico check` for `adapter` against `url` (no other PORTICO_ setting leaks in)
/// and asserts that it accepts the database: every table and column exists with a fitting type.
pub fn assert_check_accepts(adapter: &str, url: &str) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_portico"));
    command.current_dir(env!("CARGO_MANIFEST_DIR"));
    for (name, _) in std::env::vars() {
        if name.starts_with("PORTICO_") {
            command.env_remove(name);
        }
    }
    let output = command
        .arg("check")
        .env("PORTICO_LEGACY__ADAPTER", adapter)
        .env("PORTICO_LEGACY__URL", url)
        .output()
        .expect("portico runs");
    let report = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{report}");
    assert!(report.contains("ok   every table and column"), "{report}");
}

/// tests/python: the Python side of the client and HL7 v2 tests.
pub fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python")
}

/// The venv, created or refreshed by venv.sh once per test binary (the script is idempotent and
/// locks against other callers).
pub fn venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let output = std::process::Command::new("bash")
            .arg(python_dir().join("venv.sh"))
            .output()
            .expect("bash runs tests/python/venv.sh");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "tests/python/venv.sh failed (the client tests need python3 and PyPI on a first run):\n{stderr}"
        );
        let path = String::from_utf8_lossy(&output.stdout)
            .lines()
            .last()
            .expect("venv.sh prints the venv path")
            .to_owned();
        PathBuf::from(path)
    })
}
