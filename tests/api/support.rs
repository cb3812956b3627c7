//! Test harness: seeds a fixture database, starts Portico on port 0, and checks FHIR responses.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use portico::access::Access;
use portico::app::Application;
use portico::config::{
    LegacySettings, Secret, ServerSettings, Settings, default_adapters_dir,
    default_lookup_refresh_ms,
};
use portico::db::fixture::{FixtureWriter, recreate_mysql_database};
use portico::db::{Database, DbSettings};
use portico::demo::seed_openemr;
use serde_json::Value as Json;

/// Patients in each test's fixture database.
pub const PATIENTS: usize = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    MariaDb,
    /// A real SQL Server, only when PORTICO_TEST_MSSQL_URL names one (none runs on CI machines).
    SqlServer,
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    /// URL of the seeded legacy database.
    pub db_url: String,
}

pub fn mysql_server_url() -> String {
    std::env::var("PORTICO_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

/// `PORTICO_TEST_MSSQL_URL`: any database on a SQL Server where the login may create databases,
/// e.g. `mssql://sa:Secret-123@127.0.0.1:1433/master?encrypt=true&trust_server_certificate=true`.
pub fn mssql_server_url() -> Option<String> {
    std::env::var("PORTICO_TEST_MSSQL_URL")
        .ok()
        .filter(|url| !url.is_empty())
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Seeds a fresh OpenEMR database for `test` and returns its URL.
pub async fn seed(backend: Backend, test: &str) -> String {
    seed_with(backend, test, seed_openemr).await
}

/// Seeds a fresh database for `test` with `PATIENTS` patients of a PMS generator (`seed_openemr`,
/// `seed_opendental`, ...) and returns its URL.
pub async fn seed_with(
    backend: Backend,
    test: &str,
    generator: impl AsyncFnOnce(
        &FixtureWriter,
        usize,
    ) -> Result<portico::demo::Counts, portico::db::DbError>,
) -> String {
    seed_patients(backend, test, generator, PATIENTS).await
}

/// `seed_with`, with `patients` patients.
pub async fn seed_patients(
    backend: Backend,
    test: &str,
    generator: impl AsyncFnOnce(
        &FixtureWriter,
        usize,
    ) -> Result<portico::demo::Counts, portico::db::DbError>,
    patients: usize,
) -> String {
    let url = fresh_database(backend, test).await;
    let writer = FixtureWriter::open(&url)
        .await
        .unwrap_or_else(|e| panic!("{}", e.message));
    generator(&writer, patients)
        .await
        .unwrap_or_else(|e| panic!("{}", e.message));
    writer.close().await;
    url
}

/// An empty database for `test` (recreated on MariaDB, a new file on SQLite); returns its URL.
pub async fn fresh_database(backend: Backend, test: &str) -> String {
    match backend {
        Backend::Sqlite => {
            let n = COUNTER.fetch_add(1, Ordering::SeqCst);
            let dir = std::env::temp_dir().join(format!("portico-test-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            format!("sqlite://{}", dir.join(format!("{test}.sqlite")).display())
        }
        Backend::MariaDb => {
            let name = format!("portico_t_{test}");
            recreate_mysql_database(&mysql_server_url(), &name)
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "MariaDB must be running for the integration tests ({}): {}",
                        mysql_server_url(),
                        e.message
                    )
                });
            format!("{}/{name}", mysql_server_url())
        }
        Backend::SqlServer => {
            let server = mssql_server_url().expect("PORTICO_TEST_MSSQL_URL is set");
            portico::db::fixture::recreate_mssql_database(&server, &format!("portico_t_{test}"))
                .await
                .unwrap_or_else(|e| panic!("SQL Server at PORTICO_TEST_MSSQL_URL: {}", e.message))
        }
    }
}

pub fn settings(db_url: &str, statement_timeout_ms: u64) -> Settings {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    Settings {
        server: ServerSettings {
            host: "127.0.0.1".into(),
            port: 0,
            base_url: None,
            cursor_secret: Some(Secret::new("test-cursor-secret")),
            state_dir: std::env::temp_dir()
                .join(format!("portico-state-{}-{n}", std::process::id())),
            ..ServerSettings::default()
        },
        legacy: LegacySettings {
            adapter: "openemr".into(),
            adapters_dir: default_adapters_dir(),
            url: Secret::new(db_url),
            max_connections: 4,
            statement_timeout_ms,
            acquire_timeout_ms: 1000,
            timezone: None,
            lookup_refresh_ms: default_lookup_refresh_ms(),
            // Start-up plan advice explains every statement: only its own test wants it.
            plan_advice_min_rows: 0,
        },
        state: Default::default(),
        auth: Default::default(),
        // Detection and delivery run only in the tests that ask for them.
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
    }
}

/// The bearer token `start` issued for each server it started, by FHIR base URL: `TestApp::at`
/// sends it with every request, so the suites go through token validation like any client.
static TOKENS: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<String, String>>> =
    std::sync::LazyLock::new(Default::default);

/// An access token signed by a server's own key (its `TokenService`) for `base`, as `portico
/// token` makes them.
pub async fn mint_token(
    tokens: &portico::auth::tokens::TokenService,
    base: &str,
    scope: &str,
    patient: Option<&str>,
) -> String {
    let grant = portico::auth::tokens::Grant {
        client_id: "portico-tests".into(),
        subject: "portico-tests".into(),
        scope: scope.into(),
        patient: patient.map(str::to_owned),
        ..Default::default()
    };
    tokens
        .issue_for(&grant, base, 3600)
        .await
        .expect("a test token")
        .0
}

/// The token services of the servers `start` started, by FHIR base URL.
static SERVICES: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<String, portico::auth::tokens::TokenService>>,
> = std::sync::LazyLock::new(Default::default);

/// A `system/*.rs` token from the server `start` started at `base`, for the public base
/// `audience` its requests will derive (behind a proxy, say).
pub async fn token_for_audience(base: &str, audience: &str) -> String {
    let tokens = SERVICES
        .lock()
        .unwrap()
        .get(base)
        .cloned()
        .unwrap_or_else(|| panic!("no server started at {base}"));
    mint_token(&tokens, audience, "system/*.rs", None).await
}

/// The token service of the server `start` started at `base`, to mint other tokens for it.
pub fn token_service(base: &str) -> portico::auth::tokens::TokenService {
    SERVICES
        .lock()
        .unwrap()
        .get(base)
        .cloned()
        .unwrap_or_else(|| panic!("no server started at {base}"))
}

/// The `system/*.rs` token `start` issued for the server at `base`.
pub fn bearer_for(base: &str) -> String {
    TOKENS
        .lock()
        .unwrap()
        .get(base)
        .cloned()
        .unwrap_or_else(|| panic!("no server started at {base}"))
}

/// Starts Portico on `settings` and returns its FHIR base URL.
pub async fn start(settings: &Settings) -> String {
    start_stoppable(settings).await.0
}

/// `start`, with the token that stops that server (and its background workers) when cancelled.
pub async fn start_stoppable(settings: &Settings) -> (String, tokio_util::sync::CancellationToken) {
    let (base, shutdown, _) = launch(settings).await;
    (base, shutdown)
}

/// `start`, with a handle on the server's audit writer: `flush` waits until every request
/// answered so far has its event in the state store (journaled events follow the answers).
/// The handle keeps the writer running: a test that checks shutdown uses `start_stoppable`.
pub async fn start_audited(settings: &Settings) -> (String, portico::state::audit::AuditWriter) {
    let (base, _, audit) = launch(settings).await;
    (base, audit)
}

async fn launch(
    settings: &Settings,
) -> (
    String,
    tokio_util::sync::CancellationToken,
    portico::state::audit::AuditWriter,
) {
    let application = Application::build(settings)
        .await
        .expect("application builds");
    let shutdown = application.shutdown_token();
    let base = format!("http://127.0.0.1:{}/fhir", application.port());
    let token = mint_token(&application.state.auth.tokens, &base, "system/*.rs", None).await;
    TOKENS.lock().unwrap().insert(base.clone(), token);
    SERVICES
        .lock()
        .unwrap()
        .insert(base.clone(), application.state.auth.tokens.clone());
    let audit = application.state.audit.clone();
    tokio::spawn(application.run_until_cancelled());
    (base, shutdown, audit)
}

/// Starts Portico on `settings` with `access` in every request, where token validation puts a
/// token's access (the router's placeholder would grant everything), and returns its FHIR base URL.
pub async fn start_with_access(settings: &Settings, access: Access) -> String {
    let application = Application::build(settings)
        .await
        .expect("application builds");
    let router =
        portico::api::router(application.state.clone()).layer(axum::Extension(Arc::new(access)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let base = format!(
        "http://127.0.0.1:{}/fhir",
        listener.local_addr().expect("bound").port()
    );
    // The application owns the background workers (the audit writer): it lives as long as the
    // server does.
    tokio::spawn(async move {
        let _workers = application;
        axum::serve(listener, router).await
    });
    base
}

pub async fn spawn(backend: Backend, test: &str) -> TestApp {
    let db_url = seed(backend, test).await;
    let base = start(&settings(&db_url, 5000)).await;
    TestApp::at(base, db_url)
}

/// The repository a server over `db_url` with `adapter` reads the PMS through.
pub fn repository(db_url: &str, adapter: &str) -> portico::repository::Repository {
    let mut settings = settings(db_url, 5000);
    settings.legacy.adapter = adapter.into();
    portico::repository::Repository {
        adapter: Arc::new(portico::app::load_adapter(&settings).unwrap()),
        db: legacy_database(db_url, Duration::from_secs(5)),
        lookups: Arc::new(portico::repository::LookupCache::new(
            settings.legacy.lookup_refresh(),
        )),
    }
}

/// A read-only pool on a test database, for oracle queries and driver-level checks.
pub fn legacy_database(url: &str, statement_timeout: Duration) -> Database {
    Database::connect_lazy(&DbSettings {
        url: url.to_owned(),
        max_connections: 2,
        statement_timeout,
        acquire_timeout: Duration::from_secs(5),
    })
    .unwrap_or_else(|e| panic!("{}", e.message))
}

/// Runs a test body on SQLite and on MariaDB, as two tests.
#[macro_export]
macro_rules! on_every_backend {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn sqlite() {
                let app =
                    $crate::support::spawn($crate::support::Backend::Sqlite, stringify!($name))
                        .await;
                ($body)(app).await;
            }

            #[tokio::test]
            async fn mariadb() {
                let app =
                    $crate::support::spawn($crate::support::Backend::MariaDb, stringify!($name))
                        .await;
                ($body)(app).await;
            }
        }
    };
}

/// A response: status, headers and body.
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Json {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

impl TestApp {
    /// A client for the Portico serving `base` over the database at `db_url`.
    pub fn at(base: String, db_url: String) -> TestApp {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = TOKENS.lock().unwrap().get(&base) {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {token}")
                    .parse()
                    .expect("a token is a header value"),
            );
        }
        TestApp {
            base,
            client: reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .expect("an HTTP client"),
            db_url,
        }
    }

    /// GETs with `Prefer: handling=strict`.
    pub async fn get_strict(&self, path: &str) -> Reply {
        self.send(
            self.client
                .get(self.url(path))
                .header("Prefer", "handling=strict"),
        )
        .await
    }

    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}/{}", self.base, path)
        }
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("request reaches Portico");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.expect("body").to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.client.get(self.url(path))).await
    }

    /// GETs a FHIR JSON resource, expects `status`, and checks the body is strictly valid R4.
    pub async fn get_fhir(&self, path: &str, status: u16) -> Json {
        let reply = self.get(path).await;
        assert_eq!(
            reply.status,
            status,
            "GET {path}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        let body = reply.json();
        assert_valid_r4(&body);
        body
    }

    /// Follows `next` links from `path` and returns every match, checking each page.
    pub async fn all_pages(&self, path: &str) -> Vec<Json> {
        self.all_pages_and_left_out(path).await.0
    }

    /// Follows `next` links from `path`: every match, and how many resources the pages reported
    /// as left out (rows that cannot be served as valid R4).
    pub async fn all_pages_and_left_out(&self, path: &str) -> (Vec<Json>, usize) {
        let mut matches = Vec::new();
        let mut left_out = 0;
        let mut next = Some(path.to_owned());
        let mut pages = 0;
        while let Some(url) = next {
            pages += 1;
            assert!(pages < 10_000, "paging does not end");
            let bundle = self.get_fhir(&url, 200).await;
            for entry in bundle["entry"].as_array().cloned().unwrap_or_default() {
                if entry["search"]["mode"] == "match" {
                    matches.push(entry["resource"].clone());
                }
                left_out += left_out_count(&entry);
            }
            next = bundle["link"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["relation"] == "next")
                .map(|l| l["url"].as_str().unwrap().to_owned());
        }
        (matches, left_out)
    }
}

impl TestApp {
    /// Pages through `query` (which has no `_count`) in pages of `page` and checks that nothing is
    /// lost: the resources served plus those reported as left out are `_total=accurate`.
    /// Returns what was served and how many were left out.
    pub async fn page_all_nothing_lost(&self, query: &str, page: usize) -> (Vec<Json>, usize) {
        let separator = if query.contains('?') { '&' } else { '?' };
        let total = self
            .get_fhir(&format!("{query}{separator}_total=accurate&_count=1"), 200)
            .await["total"]
            .as_u64()
            .unwrap() as usize;
        let (served, left_out) = self
            .all_pages_and_left_out(&format!("{query}{separator}_count={page}"))
            .await;
        assert_eq!(
            served.len() + left_out,
            total,
            "{query}: served + left out must be the total"
        );
        (served, left_out)
    }

    /// Reads `path`, whose legacy row cannot be served: 502, an OperationOutcome with code
    /// `processing`, and diagnostics that contain `why`.
    pub async fn assert_unservable(&self, path: &str, why: &str) {
        let reply = self.get(path).await;
        assert_eq!(reply.status, 502, "{path}");
        assert_eq!(outcome_code(&reply), "processing");
        let diagnostics = reply.json()["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(diagnostics.contains(why), "{path}: {diagnostics}");
    }
}

/// The number of resources an outcome entry of a searchset reports as left out.
pub fn left_out_count(entry: &Json) -> usize {
    if entry["search"]["mode"] != "outcome" {
        return 0;
    }
    entry["resource"]["issue"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|issue| issue["diagnostics"].as_str())
        .filter(|text| text.contains("left out of this page"))
        .filter_map(|text| text.split(' ').next()?.parse::<usize>().ok())
        .sum()
}

/// Every resource Portico emits deserializes strictly into fhirbolt's R4 model.
pub fn assert_valid_r4(resource: &Json) {
    let bytes = serde_json::to_vec(resource).unwrap();
    if let Err(error) = portico::fhir::xml::parse_strict(&bytes) {
        panic!(
            "not valid R4 ({error}):\n{}",
            serde_json::to_string_pretty(resource).unwrap()
        );
    }
}

/// The resource types Portico serves from its state store whatever the adapter: the audit trail,
/// its own Groups and subscriptions.
pub const STATE_STORE_TYPES: [&str; 3] = ["AuditEvent", "Group", "Subscription"];

/// The CapabilityStatement's resource entries the adapter serves: all but those served from the
/// state store (`STATE_STORE_TYPES`).
pub fn adapter_resources(statement: &Json) -> Vec<Json> {
    statement["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|resource| {
            !STATE_STORE_TYPES
                .iter()
                .any(|state_type| resource["type"] == *state_type)
        })
        .cloned()
        .collect()
}

/// The `match` entries of a searchset bundle.
pub fn matches(bundle: &Json) -> Vec<Json> {
    bundle["entry"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| e["resource"].clone())
        .collect()
}

pub fn ids(resources: &[Json]) -> Vec<String> {
    resources
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The OperationOutcome of an error reply, with its first issue's code.
pub fn outcome_code(reply: &Reply) -> String {
    let body = reply.json();
    assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
    assert_valid_r4(&body);
    body["issue"][0]["code"].as_str().unwrap().to_owned()
}

/// `PORTICO_TEST_POSTGRES_URL`: a PostgreSQL server where the login may create databases.
pub fn postgres_server_url() -> String {
    std::env::var("PORTICO_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Portico's state store for `test` on each backend it supports: a new SQLite file and a fresh
/// PostgreSQL database (`portico_t_<test>`, dropped first).
pub async fn state_stores(test: &str) -> Vec<portico::state::StateStore> {
    let mut stores = Vec::new();
    for url in state_urls(test).await {
        stores.push(
            portico::state::StateStore::open(&url)
                .await
                .unwrap_or_else(|e| panic!("state store {url}: {e}")),
        );
    }
    stores
}

/// Runs `body` once per state store backend (`state_urls`: SQLite, PostgreSQL) on a server with
/// that store, over one OpenEMR SQLite database seeded for `test`; `body` gets the server's FHIR
/// base (`token_service` has its store). Each run is announced, so a failure names its backend.
pub async fn on_each_state_store(test: &str, body: impl AsyncFn(String)) {
    let db_url = seed(Backend::Sqlite, test).await;
    for state_url in state_urls(test).await {
        let mut settings = settings(&db_url, 5000);
        settings.state.url = Some(Secret::new(state_url.as_str()));
        let backend = state_url.split(':').next().unwrap_or_default();
        eprintln!("{test}: on the {backend} state store");
        let base = start(&settings).await;
        STATE_URLS
            .lock()
            .unwrap()
            .insert(base.clone(), state_url.clone());
        body(base).await;
    }
}

/// The state store URL of each server `on_each_state_store` started, by FHIR base URL.
static STATE_URLS: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<String, String>>,
> = std::sync::LazyLock::new(Default::default);

/// The state store URL of the server `on_each_state_store` started at `base` (for a test that
/// must reach past the API, such as ageing a code).
pub fn state_url_of(base: &str) -> String {
    STATE_URLS
        .lock()
        .unwrap()
        .get(base)
        .cloned()
        .unwrap_or_else(|| panic!("no server started at {base} by on_each_state_store"))
}

/// The URLs of `state_stores`, for a server to open itself (`state.url`).
pub async fn state_urls(test: &str) -> Vec<String> {
    use sqlx::Connection;
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("portico-state-{}-{n}", std::process::id()));
    let sqlite_url = portico::state::StateStore::default_url(&dir).expect("state dir");
    let server = postgres_server_url();
    let name = format!("portico_t_{test}");
    let mut admin = sqlx::PgConnection::connect(&server)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {server}: {e}"));
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .expect("drop test database");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create test database");
    admin.close().await.ok();
    let (root, _) = server.rsplit_once('/').expect("a database in the URL");
    vec![sqlite_url, format!("{root}/{name}")]
}
