//! Legacy database access: the only module that sees driver types (sqlx today, tiberius later).
//!
//! Rows come out as `dialect::ast::Value` cells, so mapping never sees a driver row. Errors are
//! classified into the few kinds the API answers differently (unavailable, timeout, other).
//! Architecture invariant: the legacy pool is read-only: MySQL sessions are set `READ ONLY`, SQLite
//! files are opened read-only. Only `fixture` (demo and test data) writes, through its own pool.

pub mod fixture;
mod mssql;
mod mysql_pool;
mod mysql_temporal;
mod pool;
mod sqlite_fold;

use std::sync::Arc;
use std::time::Duration;

use rust_decimal::Decimal;
use sqlx::mysql::{MySqlConnectOptions, MySqlRow};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{Column, Row, TypeInfo, ValueRef};

use crate::dialect::ast::Value;
use crate::dialect::{DialectKind, RenderedQuery};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbErrorKind {
    /// Cannot reach or log in to the database; worth retrying later (503).
    Unavailable,
    /// The statement ran past its time limit and was cancelled.
    Timeout,
    /// The database refused the statement (missing table, bad column...).
    Query,
    /// A value could not be decoded.
    Decode,
}

impl DbErrorKind {
    /// The kind as a metrics label and a log word.
    pub fn name(self) -> &'static str {
        match self {
            DbErrorKind::Unavailable => "unavailable",
            DbErrorKind::Timeout => "timeout",
            DbErrorKind::Query => "query",
            DbErrorKind::Decode => "decode",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DbError {
    pub kind: DbErrorKind,
    pub message: String,
}

impl DbError {
    fn new(kind: DbErrorKind, message: impl Into<String>) -> DbError {
        DbError {
            kind,
            message: message.into(),
        }
    }
}

/// How the query-plan advisor asks MySQL and MariaDB for a statement's plan (prefixed to it).
pub const MYSQL_EXPLAIN: &str = "EXPLAIN FORMAT=JSON ";

/// A statement that fixes its join order (`SELECT STRAIGHT_JOIN`: a page that walks the base
/// table in key order), or the `EXPLAIN` of one, runs on MariaDB without join buffers. A join
/// buffer gives up the base table's order, so the whole rest of the table is joined and sorted for
/// every page: MariaDB chose one for OpenEMR's claims at 10,000 patients (a range over
/// `form_encounter` and a block nested loop, 10 s a page, against 20 ms by `encounter_number`).
/// MySQL has no per-statement form of this setting that MariaDB also accepts; it runs as written.
fn mariadb_join_order(sql: &str, mariadb: bool) -> std::borrow::Cow<'_, str> {
    let statement = sql.strip_prefix(MYSQL_EXPLAIN).unwrap_or(sql);
    if mariadb && statement.starts_with("SELECT STRAIGHT_JOIN ") {
        format!("SET STATEMENT join_cache_level = 0 FOR {sql}").into()
    } else {
        sql.into()
    }
}

/// Connection settings of a legacy database.
#[derive(Debug, Clone)]
pub struct DbSettings {
    pub url: String,
    pub max_connections: u32,
    pub statement_timeout: Duration,
    pub acquire_timeout: Duration,
}

#[derive(Debug, Clone)]
enum Pool {
    MySql(Arc<mysql_pool::MySqlPool>),
    Sqlite(SqlitePool),
    Mssql(std::sync::Arc<mssql::MssqlPool>),
}

/// A pooled, read-only connection to a legacy database.
#[derive(Debug, Clone)]
pub struct Database {
    pool: Pool,
    statement_timeout: Duration,
}

/// The dialect a connection URL speaks.
pub fn dialect_of(url: &str) -> Option<DialectKind> {
    let scheme = url.split_once(':')?.0;
    match scheme {
        "mysql" | "mariadb" => Some(DialectKind::Mysql),
        "sqlite" => Some(DialectKind::Sqlite),
        "mssql" | "sqlserver" => Some(DialectKind::Mssql),
        _ => None,
    }
}

/// The URL with any password replaced, for logs and reports.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            match url[scheme_end + 3..at].split_once(':') {
                Some((user, _password)) => {
                    format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..])
                }
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl Database {
    /// Creates the pool without connecting: Portico starts while the database is down and
    /// recovers when it returns.
    pub fn connect_lazy(settings: &DbSettings) -> Result<Database, DbError> {
        let invalid = |e: sqlx::Error| {
            DbError::new(
                DbErrorKind::Unavailable,
                format!("invalid database URL {}: {e}", redact_url(&settings.url)),
            )
        };
        let pool = match dialect_of(&settings.url) {
            Some(DialectKind::Mysql) => {
                let url = settings.url.replacen("mariadb:", "mysql:", 1);
                let options: MySqlConnectOptions = url.parse().map_err(invalid)?;
                Pool::MySql(Arc::new(mysql_pool::MySqlPool::new(
                    options,
                    settings.max_connections,
                    settings.statement_timeout,
                    settings.acquire_timeout,
                )))
            }
            Some(DialectKind::Sqlite) => {
                let options: SqliteConnectOptions = settings.url.parse().map_err(invalid)?;
                let pool = SqlitePoolOptions::new()
                    .max_connections(settings.max_connections)
                    .acquire_timeout(settings.acquire_timeout)
                    // String search compiles to `portico_fold(column) LIKE ?` on SQLite.
                    .after_connect(|conn, _meta| Box::pin(sqlite_fold::register(conn)))
                    .connect_lazy_with(options.read_only(true));
                Pool::Sqlite(pool)
            }
            Some(DialectKind::Mssql) => Pool::Mssql(std::sync::Arc::new(mssql::MssqlPool::new(
                &settings.url,
                settings.max_connections,
                settings.statement_timeout,
                settings.acquire_timeout,
            )?)),
            None => {
                return Err(DbError::new(
                    DbErrorKind::Unavailable,
                    format!(
                        "unsupported database URL {}: use mysql://, mariadb://, sqlite:// or mssql://",
                        redact_url(&settings.url)
                    ),
                ));
            }
        };
        Ok(Database {
            pool,
            statement_timeout: settings.statement_timeout,
        })
    }

    pub fn dialect(&self) -> DialectKind {
        match self.pool {
            Pool::MySql(..) => DialectKind::Mysql,
            Pool::Sqlite(_) => DialectKind::Sqlite,
            Pool::Mssql(_) => DialectKind::Mssql,
        }
    }

    /// Runs a query and returns its rows as cells. The client-side limit backs up the server-side
    /// one; dropping the future discards the connection rather than reusing it mid-statement.
    pub async fn fetch(&self, query: &RenderedQuery) -> Result<Vec<Vec<Value>>, DbError> {
        let run = async {
            match &self.pool {
                Pool::MySql(pool) => {
                    let rows = pool.fetch(query).await?;
                    rows.iter().map(decode_mysql_row).collect()
                }
                Pool::Sqlite(pool) => {
                    let mut q = sqlx::query(&query.sql);
                    for param in &query.params {
                        q = bind_sqlite(q, param);
                    }
                    let rows = q.fetch_all(pool).await.map_err(classify)?;
                    rows.iter().map(decode_sqlite_row).collect()
                }
                // The SQL Server pool enforces the statement limit itself, connection by connection.
                Pool::Mssql(pool) => pool.fetch(query).await,
            }
        };
        // Boxed: the drivers' futures are large, and every caller up to the HTTP handler would
        // otherwise carry (and, in debug builds, copy on the stack) their size.
        self.limited_and_measured(Box::pin(run)).await
    }

    /// SQL Server's estimated plan of `query` as SHOWPLAN XML, the statement compiled with its
    /// parameters bound but not run (the query-plan advisor reads it). Other dialects answer their
    /// plans to an `EXPLAIN` through `fetch`.
    pub async fn mssql_showplan(&self, query: &RenderedQuery) -> Result<String, DbError> {
        let Pool::Mssql(pool) = &self.pool else {
            return Err(DbError::new(
                DbErrorKind::Query,
                format!(
                    "SHOWPLAN is SQL Server's; this database speaks {}",
                    self.dialect().name()
                ),
            ));
        };
        self.limited_and_measured(pool.showplan(query)).await
    }

    /// Runs one round of statements under the client-side limit and counts it in the PMS query
    /// metrics.
    async fn limited_and_measured<T>(
        &self,
        run: impl Future<Output = Result<T, DbError>>,
    ) -> Result<T, DbError> {
        let limit = self.statement_timeout + Duration::from_millis(500);
        let started = std::time::Instant::now();
        let result = match tokio::time::timeout(limit, run).await {
            Ok(result) => result,
            Err(_) => Err(DbError::new(
                DbErrorKind::Timeout,
                format!(
                    "statement exceeded the {} ms limit",
                    self.statement_timeout.as_millis()
                ),
            )),
        };
        let metrics = crate::metrics::metrics();
        metrics.pms_query_duration.observe(&[], started.elapsed());
        let outcome = match &result {
            Ok(_) => "ok",
            Err(error) => error.kind.name(),
        };
        metrics.pms_queries.inc(&[outcome]);
        result
    }

    /// The pool's connections: (open, idle, most allowed).
    pub fn pool_use(&self) -> (u32, u32, u32) {
        match &self.pool {
            Pool::MySql(pool) => pool.usage(),
            Pool::Sqlite(pool) => (
                pool.size(),
                pool.num_idle() as u32,
                pool.options().get_max_connections(),
            ),
            Pool::Mssql(pool) => pool.usage(),
        }
    }

    /// A cheap round trip, for the status page and readiness.
    pub async fn ping(&self) -> Result<(), DbError> {
        let query = RenderedQuery {
            sql: "SELECT 1".into(),
            params: Vec::new(),
        };
        self.fetch(&query).await.map(|_| ())
    }

    /// The column names and declared types of `table`, or an empty list when it does not exist.
    pub async fn table_columns(&self, table: &str) -> Result<Vec<(String, String)>, DbError> {
        let query = match self.dialect() {
            DialectKind::Mysql => RenderedQuery {
                sql: "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS \
                      WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION"
                    .into(),
                params: vec![Value::Text(table.to_owned())],
            },
            DialectKind::Sqlite => RenderedQuery {
                sql: "SELECT name, type FROM pragma_table_info(?1)".into(),
                params: vec![Value::Text(table.to_owned())],
            },
            DialectKind::Mssql => RenderedQuery {
                sql: "SELECT COLUMN_NAME, DATA_TYPE FROM INFORMATION_SCHEMA.COLUMNS \
                      WHERE TABLE_NAME = @P1 ORDER BY ORDINAL_POSITION"
                    .into(),
                params: vec![Value::Text(table.to_owned())],
            },
        };
        let rows = self.fetch(&query).await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| match (row.first(), row.get(1)) {
                (Some(Value::Text(name)), Some(Value::Text(kind))) => {
                    Some((name.clone(), kind.clone()))
                }
                (Some(Value::Text(name)), Some(Value::Bytes(kind))) => {
                    Some((name.clone(), String::from_utf8_lossy(kind).into_owned()))
                }
                _ => None,
            })
            .collect())
    }

    pub async fn close(&self) {
        match &self.pool {
            Pool::MySql(pool) => pool.close().await,
            Pool::Sqlite(pool) => pool.close().await,
            Pool::Mssql(pool) => pool.close().await,
        }
    }
}

type MySqlQuery<'q> = sqlx::query::Query<'q, sqlx::MySql, sqlx::mysql::MySqlArguments>;
type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

/// Binds one value as the next `?` of a MySQL query (the benchmarks bind their raw baseline with it).
pub fn bind_mysql<'q>(query: MySqlQuery<'q>, value: &Value) -> MySqlQuery<'q> {
    match value.clone() {
        Value::Null => query.bind(None::<String>),
        Value::Bool(b) => query.bind(b),
        Value::Int(i) => query.bind(i),
        Value::Float(f) => query.bind(f),
        Value::Decimal(d) => query.bind(d),
        Value::Text(s) => query.bind(s),
        Value::Bytes(b) => query.bind(b),
        Value::Uuid(u) => query.bind(u.to_vec()),
        Value::Date(d) => query.bind(d),
        Value::DateTime(dt) => query.bind(dt),
        Value::Time(t) => query.bind(t),
        Value::Undecodable(_) => query.bind(None::<String>),
    }
}

/// SQLite keeps dates as ISO text, so date values bind as text in the same layout.
pub(crate) fn bind_sqlite<'q>(query: SqliteQuery<'q>, value: &Value) -> SqliteQuery<'q> {
    match value.clone() {
        Value::Null => query.bind(None::<String>),
        Value::Bool(b) => query.bind(b),
        Value::Int(i) => query.bind(i),
        Value::Float(f) => query.bind(f),
        Value::Decimal(d) => query.bind(d.to_string().parse::<f64>().unwrap_or_default()),
        Value::Text(s) => query.bind(s),
        Value::Bytes(b) => query.bind(b),
        Value::Uuid(u) => query.bind(u.to_vec()),
        Value::Date(d) => query.bind(d.format("%Y-%m-%d").to_string()),
        Value::DateTime(dt) => query.bind(dt.format("%Y-%m-%d %H:%M:%S").to_string()),
        Value::Time(t) => query.bind(t.format("%H:%M:%S").to_string()),
        Value::Undecodable(_) => query.bind(None::<String>),
    }
}

/// A cell the driver refused: the column and the driver's reason, never the value.
fn undecodable(column: &str, error: impl std::fmt::Display) -> Value {
    Value::Undecodable(format!("column {column}: {error}"))
}

/// Decodes each cell on its own, so one bad cell (invalid text, an out-of-range number) becomes
/// `Value::Undecodable` without failing the other cells, the row or the page.
fn decode_mysql_row(row: &MySqlRow) -> Result<Vec<Value>, DbError> {
    Ok(row
        .columns()
        .iter()
        .enumerate()
        .map(|(index, column)| {
            decode_mysql_cell(row, index).unwrap_or_else(|e| undecodable(column.name(), e))
        })
        .collect())
}

fn decode_mysql_cell(row: &MySqlRow, index: usize) -> Result<Value, sqlx::Error> {
    let raw = row.try_get_raw(index)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let type_name = raw.type_info().name().to_owned();
    let cell = match type_name.as_str() {
        "BOOLEAN" => Value::Int(i64::from(row.try_get::<bool, _>(index)?)),
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR" => {
            Value::Int(row.try_get::<i64, _>(index)?)
        }
        "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "MEDIUMINT UNSIGNED" | "INT UNSIGNED"
        | "BIGINT UNSIGNED" => {
            let unsigned = row.try_get::<u64, _>(index)?;
            Value::Int(i64::try_from(unsigned).unwrap_or(i64::MAX))
        }
        "FLOAT" => Value::Float(f64::from(row.try_get::<f32, _>(index)?)),
        "DOUBLE" => Value::Float(row.try_get::<f64, _>(index)?),
        "DECIMAL" => Value::Decimal(row.try_get::<Decimal, _>(index)?),
        // MySQL's own wire form is read, since the driver refuses what old installs are full of.
        "DATE" | "DATETIME" | "TIMESTAMP" => mysql_temporal::calendar(
            &row.try_get_unchecked::<Vec<u8>, _>(index)?,
            type_name != "DATE",
        )
        .map_err(|e| sqlx::Error::Decode(e.into()))?,
        "TIME" => mysql_temporal::clock(&row.try_get_unchecked::<Vec<u8>, _>(index)?)
            .map_err(|e| sqlx::Error::Decode(e.into()))?,
        // sqlx names text columns TEXT/VARCHAR; these names mean binary data (e.g. a UUID).
        "BINARY" | "VARBINARY" | "TINYBLOB" | "BLOB" | "MEDIUMBLOB" | "LONGBLOB" | "BIT" => {
            Value::Bytes(row.try_get::<Vec<u8>, _>(index)?)
        }
        _ => Value::Text(row.try_get::<String, _>(index)?),
    };
    Ok(cell)
}

fn decode_sqlite_row(row: &SqliteRow) -> Result<Vec<Value>, DbError> {
    Ok(row
        .columns()
        .iter()
        .enumerate()
        .map(|(index, column)| {
            decode_sqlite_cell(row, index).unwrap_or_else(|e| undecodable(column.name(), e))
        })
        .collect())
}

fn decode_sqlite_cell(row: &SqliteRow, index: usize) -> Result<Value, sqlx::Error> {
    let raw = row.try_get_raw(index)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    // SQLite types values, not columns: decode by the value's storage class.
    let storage = raw.type_info().name().to_owned();
    let cell = match storage.as_str() {
        "INTEGER" => Value::Int(row.try_get_unchecked::<i64, _>(index)?),
        "REAL" => Value::Float(row.try_get_unchecked::<f64, _>(index)?),
        "BLOB" => Value::Bytes(row.try_get_unchecked::<Vec<u8>, _>(index)?),
        _ => Value::Text(row.try_get_unchecked::<String, _>(index)?),
    };
    Ok(cell)
}

fn classify(error: sqlx::Error) -> DbError {
    let kind = match &error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => DbErrorKind::Unavailable,
        sqlx::Error::Database(db) => match db.code().as_deref() {
            // MariaDB max_statement_time, MySQL max_execution_time, query killed.
            Some("70100") | Some("HY000")
                if db.message().contains("max_statement_time")
                    || db.message().contains("interrupted") =>
            {
                DbErrorKind::Timeout
            }
            _ => match db
                .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                .map(|e| e.number())
            {
                Some(1969) | Some(3024) | Some(1317) => DbErrorKind::Timeout,
                Some(1040) | Some(1045) | Some(1049) | Some(1053) | Some(2002) | Some(2003)
                | Some(2006) | Some(2013) => DbErrorKind::Unavailable,
                _ => DbErrorKind::Query,
            },
        },
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => DbErrorKind::Decode,
        _ => DbErrorKind::Query,
    };
    DbError::new(kind, error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_fixed_order_statements_on_mariadb_lose_their_join_buffers() {
        let page = "SELECT STRAIGHT_JOIN `t`.`id` FROM `claims` `t` JOIN `x` ON 1";
        assert_eq!(
            mariadb_join_order(page, true),
            format!("SET STATEMENT join_cache_level = 0 FOR {page}")
        );
        let explain = format!("{MYSQL_EXPLAIN}{page}");
        assert!(mariadb_join_order(&explain, true).starts_with("SET STATEMENT"));
        assert_eq!(mariadb_join_order(page, false), page);
        let search = "SELECT `t`.`id` FROM `t` WHERE `t`.`STRAIGHT_JOIN` = ?";
        assert_eq!(mariadb_join_order(search, true), search);
    }

    #[test]
    fn urls_name_their_dialect() {
        assert_eq!(
            dialect_of("mysql://root@127.0.0.1/test"),
            Some(DialectKind::Mysql)
        );
        assert_eq!(
            dialect_of("mariadb://root@127.0.0.1/test"),
            Some(DialectKind::Mysql)
        );
        assert_eq!(dialect_of("sqlite://demo.db"), Some(DialectKind::Sqlite));
        assert_eq!(dialect_of("postgres://x"), None);
    }

    #[tokio::test]
    async fn only_sql_server_answers_a_showplan() {
        let database = Database::connect_lazy(&DbSettings {
            url: "sqlite://never-opened.db".into(),
            max_connections: 1,
            statement_timeout: Duration::from_secs(1),
            acquire_timeout: Duration::from_secs(1),
        })
        .unwrap();
        let query = RenderedQuery {
            sql: "SELECT 1".into(),
            params: Vec::new(),
        };
        let error = database.mssql_showplan(&query).await.unwrap_err();
        assert_eq!(error.kind, DbErrorKind::Query);
        assert!(error.message.contains("speaks sqlite"), "{}", error.message);
    }

    #[test]
    fn passwords_never_reach_reports() {
        assert_eq!(
            redact_url("mysql://portico:s3cret@db:3306/openemr"),
            "mysql://portico:***@db:3306/openemr"
        );
        assert_eq!(redact_url("sqlite://demo.db"), "sqlite://demo.db");
        assert_eq!(redact_url("mysql://root@h/db"), "mysql://root@h/db");
    }
}
