//! MySQL and MariaDB connections for `Database::fetch`, pooled by `db::pool` rather than by
//! sqlx's pool: sqlx 0.8 pings every connection as it comes back to its pool, a round trip to
//! the server for every statement (7 % of a search's CPU in Portico, and the server's share).
//! Here a connection comes back only from a statement that finished cleanly, so there is nothing
//! to check then; one idle for `IDLE_BEFORE_PING` is pinged before use, and one idle past
//! `IDLE_LIMIT` is closed instead. Every connection is set up read-only with the server-side
//! statement limit as it is opened.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlRow};
use sqlx::{Connection, Executor};
use tokio::sync::OwnedSemaphorePermit;

use super::pool::Connections;
use super::{DbError, DbErrorKind, bind_mysql, classify, mariadb_join_order};
use crate::dialect::RenderedQuery;

/// A connection idle this long is pinged before use; one in steady use is not (a connection that
/// breaks under load fails its statement, as one breaking mid-statement would).
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);
/// A connection idle this long is closed rather than used: a quiet Portico gives the server its
/// connections back.
const IDLE_LIMIT: Duration = Duration::from_secs(600);

pub(super) struct MySqlPool {
    options: MySqlConnectOptions,
    statement_timeout: Duration,
    connections: Connections<MySqlConnection>,
    /// Whether the server has turned out to be MariaDB (learned as connections are made).
    mariadb: AtomicBool,
}

impl std::fmt::Debug for MySqlPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MySqlPool")
            .field("host", &self.options.get_host())
            .finish()
    }
}

impl MySqlPool {
    pub(super) fn new(
        options: MySqlConnectOptions,
        max_connections: u32,
        statement_timeout: Duration,
        acquire_timeout: Duration,
    ) -> MySqlPool {
        MySqlPool {
            options,
            statement_timeout,
            connections: Connections::new(max_connections, acquire_timeout),
            mariadb: AtomicBool::new(false),
        }
    }

    /// Runs `query`'s statement on a pooled connection (MariaDB's spelling once a connection has
    /// told which server this is); the connection returns to the pool only when every row was
    /// read without error. Dropped with this future, or after an error, it is closed.
    pub(super) async fn fetch(&self, query: &RenderedQuery) -> Result<Vec<MySqlRow>, DbError> {
        let (permit, mut connection) = self.acquire().await?;
        let sql = mariadb_join_order(&query.sql, self.mariadb.load(Ordering::Relaxed));
        let mut statement = sqlx::query(&sql);
        for param in &query.params {
            statement = bind_mysql(statement, param);
        }
        let rows = statement
            .fetch_all(&mut connection)
            .await
            .map_err(classify)?;
        self.connections.give_back(permit, connection);
        Ok(rows)
    }

    /// (open, idle, most allowed) connections.
    pub(super) fn usage(&self) -> (u32, u32, u32) {
        self.connections.usage()
    }

    pub(super) async fn close(&self) {
        for connection in self.connections.drain() {
            let _ = connection.close().await;
        }
    }

    /// A permit and a connection: the most recently used idle one that is still fit, else a new
    /// one, each within the acquire limit.
    async fn acquire(&self) -> Result<(OwnedSemaphorePermit, MySqlConnection), DbError> {
        let permit = self.connections.permit("MySQL").await?;
        while let Some((mut connection, idle_for)) = self.connections.take_idle() {
            if idle_for >= IDLE_LIMIT {
                let _ = connection.close().await;
                continue;
            }
            if idle_for < IDLE_BEFORE_PING || connection.ping().await.is_ok() {
                return Ok((permit, connection));
            }
        }
        let connection = tokio::time::timeout(self.connections.acquire_timeout(), self.connect())
            .await
            .map_err(|_| {
                DbError::new(
                    DbErrorKind::Unavailable,
                    "MySQL did not accept a connection in time",
                )
            })??;
        Ok((permit, connection))
    }

    /// Opens a connection, read-only, with the server-side statement limit.
    async fn connect(&self) -> Result<MySqlConnection, DbError> {
        let mut connection = MySqlConnection::connect_with(&self.options)
            .await
            .map_err(classify)?;
        connection
            .execute("SET SESSION TRANSACTION READ ONLY")
            .await
            .map_err(classify)?;
        // MariaDB and MySQL spell the server-side statement limit differently; the server then
        // stops the statement itself when the limit passes.
        let mariadb = format!(
            "SET SESSION max_statement_time = {}",
            self.statement_timeout.as_secs_f64()
        );
        if connection.execute(mariadb.as_str()).await.is_ok() {
            self.mariadb.store(true, Ordering::Relaxed);
        } else {
            let mysql = format!(
                "SET SESSION max_execution_time = {}",
                self.statement_timeout.as_millis()
            );
            connection.execute(mysql.as_str()).await.map_err(classify)?;
        }
        Ok(connection)
    }
}
