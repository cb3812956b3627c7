//! Startup and shutdown: settings in, a bound server out. `Application::build` loads the adapter,
//! creates the pool (lazily: Portico starts while the database is down), reads the TLS files,
//! binds the listener (port 0 allowed) and assembles the router; `run` serves (HTTP, or HTTPS under
//! `server.tls_cert`) until SIGTERM or ctrl-c, then drains connections and stops the background
//! workers (`workers`).

mod tls;
pub mod workers;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::adapter;
use crate::api::origin::{Origin, PeerAddr};
use crate::api::{AppState, router};
use crate::auth::client_auth::JwksFetcher;
use crate::auth::external::ExternalValidator;
use crate::auth::token_endpoint::AuthServer;
use crate::auth::tokens::TokenService;
use crate::config::Settings;
use crate::db::Database;
use crate::fhir::capability::BASE_STATEMENT;
use crate::repository::{LookupCache, Repository};
use crate::search::cursor::CursorSigner;
use crate::state::audit::{
    AUDIT_JOURNAL_DIR, AuditWriter, AuditWriterTask, audit_writer, journaled_audit_writer,
};
use crate::state::{Backend, StateStore};

pub use workers::Workers;

/// How long workers get to return after shutdown is signalled before they are aborted.
const WORKER_GRACE: Duration = Duration::from_secs(10);

pub struct Application {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: axum::Router,
    pub state: AppState,
    workers: Workers,
}

/// Loads and validates the adapter named in `settings`, applying the site's time zone.
pub fn load_adapter(settings: &Settings) -> anyhow::Result<adapter::Adapter> {
    let dir = settings.legacy.adapter_dir();
    let mut adapter = adapter::load(&dir).map_err(|issues| {
        let lines: Vec<String> = issues.iter().map(|i| format!("  {i}")).collect();
        anyhow::anyhow!(
            "adapter {} has {} problem(s):\n{}",
            dir.display(),
            issues.len(),
            lines.join("\n")
        )
    })?;
    if let Some(zone) = &settings.legacy.timezone {
        adapter.timezone = zone
            .parse()
            .map_err(|_| anyhow::anyhow!("legacy.timezone {zone:?} is not an IANA time zone"))?;
    }
    Ok(adapter)
}

/// The key that signs paging cursors: configured, or random and kept in the state directory so
/// that next links survive restarts.
fn cursor_key(settings: &Settings) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = &settings.server.cursor_secret {
        return Ok(secret.expose().as_bytes().to_vec());
    }
    let path = settings.server.state_dir.join("cursor.key");
    if let Ok(existing) = std::fs::read(&path)
        && existing.len() >= 32
    {
        return Ok(existing);
    }
    std::fs::create_dir_all(&settings.server.state_dir).with_context(|| {
        format!(
            "cannot create state directory {}",
            settings.server.state_dir.display()
        )
    })?;
    let key = random_key()?;
    write_private(&path, &key).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(key)
}

fn random_key() -> anyhow::Result<Vec<u8>> {
    let mut key = vec![0u8; 32];
    let mut file =
        std::fs::File::open("/dev/urandom").context("no /dev/urandom to make a cursor key")?;
    std::io::Read::read_exact(&mut file, &mut key)?;
    Ok(key)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// Opens Portico's state store and the authorization server over it.
async fn open_auth_server(settings: &Settings) -> anyhow::Result<AuthServer> {
    let url = settings.state.url(&settings.server.state_dir)?;
    let store = StateStore::open(&url).await.with_context(|| {
        format!(
            "cannot open the state store {}",
            crate::db::redact_url(&url)
        )
    })?;
    Ok(AuthServer {
        tokens: TokenService::new(store),
        jwks: JwksFetcher::default(),
        settings: settings.auth.clone(),
        external: settings.auth.external.clone().map(ExternalValidator::new),
    })
}

/// This process's name in the state store's leases: the configured one, else one it picks.
fn replica_name(settings: &Settings) -> String {
    settings
        .subscriptions
        .replica
        .clone()
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// Change detection and rest-hook delivery, each one task; replicas share the work through
/// leases in the state store, under the configured replica name or one this process picks.
fn spawn_subscription_workers(workers: &Workers, state: &AppState, settings: &Settings) {
    let replica = replica_name(settings);
    let store = state.auth.tokens.store().clone();
    let detector = crate::subscriptions::detect::Detector {
        repository: state.repository.clone(),
        store: store.clone(),
        settings: crate::subscriptions::detect::DetectionSettings {
            poll_interval: std::time::Duration::from_millis(
                settings.subscriptions.poll_interval_ms.max(100),
            ),
            // Renewed every pass: a lease shorter than the poll interval would lapse between them.
            lease: std::time::Duration::from_millis(
                settings
                    .subscriptions
                    .lease_ms
                    .max(settings.subscriptions.poll_interval_ms.saturating_mul(2))
                    .max(1_000),
            ),
        },
        replica: replica.clone(),
        delivery: state.subscriptions.wake.clone(),
        sockets: state.subscriptions.sockets.clone(),
    };
    let delivery = crate::subscriptions::deliver::DeliveryWorker {
        repository: state.repository.clone(),
        store,
        sender: Arc::new(crate::subscriptions::rest_hook::RestHookSender::new(
            settings.subscriptions.endpoint_policy(),
        )),
        sender_policy: settings.subscriptions.endpoint_policy(),
        replica,
        wake: state.subscriptions.wake.clone(),
        mllp: Default::default(),
        clock: crate::subscriptions::deliver::Clock::system(),
    };
    workers.spawn("change-detection", move |shutdown| detector.run(shutdown));
    workers.spawn("subscription-delivery", move |shutdown| {
        delivery.run(shutdown)
    });
}

/// How many of the query-plan advisor's findings `serve` logs at start-up.
const LOGGED_PLAN_FINDINGS: usize = 5;

/// Logs the largest tables the adapter's statements read whole or sort (`portico check
/// --explain` prints them all, with the indexes that would serve them).
fn log_plan_advice(advice: anyhow::Result<Vec<crate::check::explain::Finding>>) {
    match advice {
        Ok(findings) if findings.is_empty() => {
            tracing::info!("query plans: no statement reads or sorts a large table whole")
        }
        Ok(findings) => {
            for finding in findings.iter().take(LOGGED_PLAN_FINDINGS) {
                tracing::warn!(
                    table = %finding.table,
                    rows = finding.rows,
                    "query plan: {}; `portico check --explain` names the index that would serve it",
                    finding.summary()
                );
            }
        }
        Err(error) => tracing::info!(%error, "query plans were not checked"),
    }
}

/// The audit trail's writer. Over a SQLite store, events go through the journal in
/// `server.state_dir` (a request waits for one line written, not a commit; the store's own
/// commits are no more durable). PostgreSQL commits each batch durably on its server, which a
/// local journal would weaken, so there requests wait for the commit.
async fn open_audit_writer(
    settings: &Settings,
    store: &StateStore,
) -> anyhow::Result<(AuditWriter, AuditWriterTask)> {
    Ok(match store.backend() {
        Backend::Sqlite => {
            let dir = settings.server.state_dir.join(AUDIT_JOURNAL_DIR);
            journaled_audit_writer(store.clone(), &dir, settings.state.audit_backlog())
                .await
                .context("cannot open the audit journal")?
        }
        Backend::Postgres => audit_writer(store.clone()),
    })
}

impl Application {
    pub async fn build(settings: &Settings) -> anyhow::Result<Application> {
        let adapter = Arc::new(load_adapter(settings)?);
        settings.legacy.require_url()?;
        let database = Database::connect_lazy(&settings.legacy.db_settings())
            .map_err(|e| anyhow::anyhow!(e.message))?;
        if !adapter.dialects.contains(&database.dialect()) {
            anyhow::bail!(
                "adapter {} does not support {} databases (it lists {:?})",
                adapter.name,
                database.dialect().name(),
                adapter
                    .dialects
                    .iter()
                    .map(|d| d.name())
                    .collect::<Vec<_>>()
            );
        }
        let tls = match (&settings.server.tls_cert, &settings.server.tls_key) {
            (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
            (None, None) => None,
            _ => anyhow::bail!(
                "server.tls_cert and server.tls_key go together: set both to serve HTTPS, or neither"
            ),
        };
        let origin = Origin::new(
            settings.server.base_url.clone(),
            tls.is_some(),
            &settings.server.trusted_proxies,
        )
        .map_err(anyhow::Error::msg)?;
        let auth = open_auth_server(settings).await?;
        let workers = Workers::new();
        let (audit, audit_task) = open_audit_writer(settings, auth.tokens.store()).await?;
        // It returns once the router, the last holder of its handles, is gone (see serve_until).
        workers.spawn("audit", move |shutdown| audit_task.run(shutdown));
        let capability_base: serde_json::Value = serde_json::from_str(BASE_STATEMENT)
            .context("capability-statement.json is not valid JSON")?;
        let repository = Repository {
            adapter: adapter.clone(),
            db: database,
            lookups: Arc::new(LookupCache::new(settings.legacy.lookup_refresh())),
        };
        let signer = CursorSigner::new(&cursor_key(settings)?);
        let exports = Arc::new(crate::export::worker::ExportRuntime {
            repository: repository.clone(),
            store: auth.tokens.store().clone(),
            settings: settings.export.clone(),
            dir: settings.export.files_dir(&settings.server.state_dir),
            signer: signer.clone(),
            owner: replica_name(settings),
            wake: Arc::new(tokio::sync::Notify::new()),
        });
        let state = AppState::new(crate::api::AppShared {
            openapi_json: crate::api::openapi::document_json(&adapter),
            adapter,
            repository,
            signer,
            exports: exports.clone(),
            origin: Arc::new(origin),
            capability_base: Arc::new(capability_base),
            auth,
            audit,
            subscriptions: crate::subscriptions::SubscriptionsRuntime {
                endpoint_policy: settings.subscriptions.endpoint_policy(),
                wake: Arc::new(tokio::sync::Notify::new()),
                sockets: Default::default(),
                shutdown: workers.shutdown_token(),
            },
            status_history: Default::default(),
        });
        let history = state.status_history.clone();
        let history_store = state.auth.tokens.store().clone();
        workers.spawn("status-samples", move |shutdown| {
            history.run(history_store, crate::status::SAMPLE_EVERY, shutdown)
        });
        if settings.subscriptions.enabled {
            spawn_subscription_workers(&workers, &state, settings);
        }
        if settings.export.enabled {
            // Nothing runs under this name yet: a lease it holds is a killed predecessor's.
            let released = exports
                .store
                .release_exports(&exports.owner, None)
                .await
                .context("cannot release the export leases of an earlier run")?;
            if released > 0 {
                tracing::info!(released, "export jobs of an earlier run resume");
            }
            // One loop per job that may run at once; the first also deletes expired files.
            for index in 0..settings.export.max_running.max(1) {
                let runtime = exports.clone();
                workers.spawn("export", move |shutdown| runtime.run(index == 0, shutdown));
            }
        }
        let watchdog = crate::alarm::Watchdog {
            store: state.auth.tokens.store().clone(),
            settings: settings.alarm.clone(),
            // The operator's own endpoints, from the settings file: the SSRF guard that keeps
            // clients' endpoints public does not apply (link-local and multicast stay refused).
            sender: Arc::new(crate::subscriptions::rest_hook::RestHookSender::new(
                crate::subscriptions::endpoint_guard::SubscriptionSettings {
                    allow_private_endpoints: true,
                },
            )),
        };
        workers.spawn("alarm-watchdog", move |shutdown| watchdog.run(shutdown));
        if settings.quality.schedule_minutes > 0 {
            let repository = state.repository.clone();
            let store = state.auth.tokens.store().clone();
            let every = std::time::Duration::from_secs(settings.quality.schedule_minutes * 60);
            workers.spawn("quality-audit", move |shutdown| {
                crate::quality::schedule::run(repository, store, every, shutdown)
            });
        }
        if settings.reconcile.schedule_minutes > 0 && settings.reconcile.ehr_url.is_some() {
            // A schedule that could never run is a settings error, told at start.
            crate::reconcile::Ehr::configured(&settings.reconcile).context("[reconcile]")?;
            let repository = state.repository.clone();
            let store = state.auth.tokens.store().clone();
            let reconcile = settings.reconcile.clone();
            workers.spawn("reconcile", move |shutdown| {
                crate::reconcile::run_on_schedule(repository, store, reconcile, shutdown)
            });
        }
        if settings.legacy.plan_advice_min_rows > 0 {
            let repository = state.repository.clone();
            let min_rows = settings.legacy.plan_advice_min_rows;
            workers.spawn("plan-advice", move |shutdown| async move {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    advice = crate::check::explain::advise(&repository, min_rows) => {
                        log_plan_advice(advice);
                    }
                }
            });
        }
        let address = format!("{}:{}", settings.server.host, settings.server.port);
        let listener = TcpListener::bind(&address)
            .await
            .with_context(|| format!("cannot listen on {address}"))?;
        Ok(Application {
            listener,
            tls,
            router: router(state.clone()),
            state,
            workers,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// `https` when Portico serves TLS itself, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Where background work is spawned; it is cancelled when the application stops.
    pub fn workers(&self) -> &Workers {
        &self.workers
    }

    /// Cancelling this stops the application as SIGTERM does.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.workers.shutdown_token()
    }

    /// Serves until SIGTERM, ctrl-c or the shutdown token; then finishes the requests in flight
    /// and stops the workers.
    pub async fn run(self) -> std::io::Result<()> {
        let token = self.shutdown_token();
        self.serve_until(async move {
            tokio::select! {
                _ = termination_signal() => tracing::info!("shutting down on a signal"),
                _ = token.cancelled() => {}
            }
        })
        .await
    }

    /// `run` without signal handlers, for an embedding process (and tests) that keeps its own:
    /// stops only when the shutdown token is cancelled.
    pub async fn run_until_cancelled(self) -> std::io::Result<()> {
        let token = self.shutdown_token();
        self.serve_until(async move { token.cancelled().await })
            .await
    }

    async fn serve_until(
        self,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Application {
            listener,
            tls,
            router,
            state,
            workers,
        } = self;
        // The router holds the only other handles on the state (and the audit writer): once it
        // has answered its last request and is dropped, the audit writer stops by itself.
        drop(state);
        let service = router.into_make_service_with_connect_info::<PeerAddr>();
        let served = match tls {
            None => {
                axum::serve(listener, service)
                    .with_graceful_shutdown(stop)
                    .await
            }
            Some(acceptor) => {
                axum::serve(tls::TlsListener::new(listener, acceptor), service)
                    .with_graceful_shutdown(stop)
                    .await
            }
        };
        workers.stop(WORKER_GRACE).await;
        served
    }
}

/// SIGTERM (what service managers and container runtimes send) or ctrl-c.
async fn termination_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
}
