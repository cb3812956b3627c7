//! Startup: settings in, a bound server out. `Application::build` loads the adapter, creates the
//! pool (lazily: Portico starts while the database is down), binds the listener (port 0 allowed)
//! and assembles the router; `run` serves until the process stops.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::adapter;
use crate::api::{AppState, router};
use crate::config::Settings;
use crate::db::Database;
use crate::fhir::capability::BASE_STATEMENT;
use crate::repository::{LookupCache, Repository};
use crate::search::cursor::CursorSigner;

pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    pub state: AppState,
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
        let capability_base: serde_json::Value = serde_json::from_str(BASE_STATEMENT)
            .context("capability-statement.json is not valid JSON")?;
        let state = AppState {
            openapi_json: crate::api::openapi::document_json(&adapter),
            adapter: adapter.clone(),
            repository: Repository {
                adapter,
                db: database,
                lookups: Arc::new(LookupCache::new(settings.legacy.lookup_refresh())),
            },
            signer: CursorSigner::new(&cursor_key(settings)?),
            base_url: settings.server.base_url.clone(),
            capability_base: Arc::new(capability_base),
        };
        let address = format!("{}:{}", settings.server.host, settings.server.port);
        let listener = TcpListener::bind(&address)
            .await
            .with_context(|| format!("cannot listen on {address}"))?;
        Ok(Application {
            listener,
            router: router(state.clone()),
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub async fn run(self) -> std::io::Result<()> {
        axum::serve(self.listener, self.router).await
    }
}
