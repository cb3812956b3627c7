//! Portico's own state store: OAuth clients, users, signing keys, tokens, launch contexts, the
//! audit trail, subscriptions, Groups, the operator's checks and bulk export jobs. Never the
//! PMS. Embedded SQLite by default (`state.db` in `server.state_dir`), PostgreSQL when replicas
//! share state (`state.url = "postgres://..."`). One set of portable, versioned migrations
//! (`migrations/state`) runs on both through sqlx's `Any` driver; every statement here is written
//! in the SQL both accept (`$n` placeholders, `ON CONFLICT`).

pub mod alarms;
pub mod audit;
pub mod authorizations;
pub mod check_runs;
pub mod clients;
pub mod exports;
pub mod groups;
pub mod journal;
pub mod keys;
pub mod subscriptions;
pub mod tokens;
pub mod users;

use std::path::Path;
use std::sync::Once;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/state");

/// Which database holds the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store: {0}")]
    Database(#[from] sqlx::Error),
    #[error("state store migrations: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
}

/// A handle on the state store; cheap to clone (the pool is shared).
#[derive(Clone, Debug)]
pub struct StateStore {
    pool: AnyPool,
    backend: Backend,
}

impl StateStore {
    /// Opens the store at `url` (`sqlite://...` or `postgres://...`) and brings its schema up to
    /// date. SQLite files are created when missing.
    pub async fn open(url: &str) -> Result<StateStore, StateError> {
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StateError::Invalid(
                "state.url must be a sqlite:// or postgres:// URL".into(),
            ));
        };
        let options: AnyConnectOptions = url.parse()?;
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 10 })
            .acquire_timeout(Duration::from_secs(5))
            // Connections a quiet replica does not use go back to the server.
            .idle_timeout(Duration::from_secs(60))
            .after_connect(move |connection, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers go on while one writer commits; the busy timeout makes
                        // concurrent writers wait instead of failing with "database is locked".
                        connection.execute("PRAGMA journal_mode = WAL").await?;
                        connection.execute("PRAGMA busy_timeout = 5000").await?;
                        connection.execute("PRAGMA synchronous = NORMAL").await?;
                        // The audit trail appends on every request: pages read through a memory
                        // map instead of a read() call each (SQLite's own cache is 2 MiB).
                        connection.execute("PRAGMA mmap_size = 268435456").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        MIGRATIONS.run(&pool).await?;
        Ok(StateStore { pool, backend })
    }

    /// The SQLite file Portico uses when `state.url` is not set.
    pub fn default_url(state_dir: &Path) -> Result<String, StateError> {
        std::fs::create_dir_all(state_dir).map_err(|e| {
            StateError::Invalid(format!(
                "cannot create state directory {}: {e}",
                state_dir.display()
            ))
        })?;
        Ok(format!(
            "sqlite://{}?mode=rwc",
            state_dir.join("state.db").display()
        ))
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Whether the store answers (for health checks).
    pub async fn ping(&self) -> Result<(), StateError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Whether the store takes writes: one upsert of the readiness row (`/health/ready`).
    pub async fn probe_write(&self) -> Result<(), StateError> {
        sqlx::query(
            "INSERT INTO readiness_probe (id, probed_at) VALUES (1, $1) \
             ON CONFLICT (id) DO UPDATE SET probed_at = excluded.probed_at",
        )
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// `$first, $first+1, ...`: `count` numbered placeholders for a statement built at run time.
pub(crate) fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The VALUES rows of a multi-row INSERT, `rows` rows of `width`, bound in order: `($1, $2),
/// ($3, $4)`, and on SQLite `(?, ?), (?, ?)`. SQLite looks a numbered placeholder up by walking
/// the statement's list of names, once per value bound, so n `$n`s cost n² steps: at a few
/// hundred rows, most of the audit writer's time. Anonymous placeholders bind at no such cost.
pub(crate) fn value_rows(backend: Backend, rows: usize, width: usize) -> String {
    let row = |first: usize| match backend {
        Backend::Sqlite => vec!["?"; width].join(", "),
        Backend::Postgres => placeholders(first, width),
    };
    (0..rows)
        .map(|n| format!("({})", row(n * width + 1)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A value bound into a statement whose WHERE clause is built at run time (searches).
#[derive(Debug, Clone)]
pub(crate) enum Bind {
    Int(i64),
    Text(String),
}

/// Binds `binds` in order, after whatever `query` already has.
pub(crate) fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    binds: &'q [Bind],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for bind in binds {
        query = match bind {
            Bind::Int(value) => query.bind(*value),
            Bind::Text(value) => query.bind(value.as_str()),
        };
    }
    query
}

/// Seconds since the Unix epoch: the unit of every time the store keeps.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// `bytes` random bytes from the system's generator, base64url without padding: client ids,
/// secrets, codes, refresh tokens, jtis.
pub fn random_token(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    aws_lc_rs::rand::fill(&mut buffer).expect("the system random generator failed");
    URL_SAFE_NO_PAD.encode(buffer)
}

/// What the store keeps of a high-entropy secret (codes, refresh tokens, client secrets): its
/// SHA-256, so a copy of the store does not hand out working credentials.
pub fn hash_token(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_rows_number_placeholders_except_on_sqlite() {
        assert_eq!(
            value_rows(Backend::Postgres, 2, 3),
            "($1, $2, $3), ($4, $5, $6)"
        );
        assert_eq!(value_rows(Backend::Sqlite, 2, 2), "(?, ?), (?, ?)");
    }
}
