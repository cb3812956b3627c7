//! SQL Server through tiberius: a small pool (`db::pool`) that never reuses a connection whose
//! statement did not finish cleanly, and the conversion of TDS values into `Value` cells.
//!
//! A statement that times out, fails, or whose future is dropped (the HTTP client went away) takes
//! its connection with it: the connection is closed, which makes SQL Server abandon the batch,
//! instead of going back to the pool mid-stream (tiberius issues #79 and #300).

use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use tiberius::{AuthMethod, Client, ColumnData, Config, EncryptionLevel, FromSql, Query};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

use super::pool::Connections;
use super::{DbError, DbErrorKind, redact_url};
use crate::dialect::RenderedQuery;
use crate::dialect::ast::Value;

pub(super) type Connection = Client<Compat<TcpStream>>;

pub(super) struct MssqlPool {
    config: Config,
    connections: Connections<Connection>,
    statement_timeout: Duration,
}

impl std::fmt::Debug for MssqlPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MssqlPool")
            .field("addr", &self.config.get_addr())
            .finish()
    }
}

/// Reads `mssql://user:password@host[:port]/database[?encrypt=true|false&trust_server_certificate=true]`.
pub(super) fn parse_url(url: &str) -> Result<Config, DbError> {
    let invalid = |why: &str| {
        DbError::new(
            DbErrorKind::Unavailable,
            format!("invalid SQL Server URL {}: {why}", redact_url(url)),
        )
    };
    let rest = url
        .strip_prefix("mssql://")
        .or_else(|| url.strip_prefix("sqlserver://"))
        .ok_or_else(|| invalid("it must start with mssql://"))?;
    let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (credentials, address) = location
        .rsplit_once('@')
        .ok_or_else(|| invalid("user and password are required"))?;
    let (user, password) = credentials
        .split_once(':')
        .ok_or_else(|| invalid("user and password are required"))?;
    let (host_port, database) = address
        .split_once('/')
        .ok_or_else(|| invalid("the database name is required"))?;
    let (host, port) = match host_port.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse::<u16>()
                .map_err(|_| invalid("the port is not a number"))?,
        ),
        None => (host_port, 1433),
    };
    let decode = |text: &str| percent_decode(text);
    let mut config = Config::new();
    config.host(host);
    config.port(port);
    config.database(decode(database));
    config.authentication(AuthMethod::sql_server(decode(user), decode(password)));
    config.application_name("portico");
    config.encryption(EncryptionLevel::Required);
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match (key.as_ref(), value.as_ref()) {
            ("encrypt", "false") => config.encryption(EncryptionLevel::NotSupported),
            ("encrypt", "true") => config.encryption(EncryptionLevel::Required),
            ("trust_server_certificate", "true") => config.trust_cert(),
            ("trust_server_certificate", "false") => {}
            (key, _) => return Err(invalid(&format!("unknown option {key:?}"))),
        }
    }
    Ok(config)
}

fn percent_decode(text: &str) -> String {
    form_urlencoded::parse(format!("x={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

impl MssqlPool {
    pub(super) fn new(
        url: &str,
        max_connections: u32,
        statement_timeout: Duration,
        acquire_timeout: Duration,
    ) -> Result<MssqlPool, DbError> {
        let mut config = parse_url(url)?;
        // ApplicationIntent=ReadOnly: Portico only reads, and an availability group then routes it
        // to a readable secondary, away from the PMS's primary.
        config.readonly(true);
        Ok(MssqlPool {
            config,
            connections: Connections::new(max_connections, acquire_timeout),
            statement_timeout,
        })
    }

    /// (open, idle, most allowed) connections, as `Database::pool_use` reports them.
    pub(super) fn usage(&self) -> (u32, u32, u32) {
        self.connections.usage()
    }

    /// Runs a query on a pooled connection; the connection returns to the pool only when the
    /// whole result was read without error.
    pub(super) async fn fetch(&self, query: &RenderedQuery) -> Result<Vec<Vec<Value>>, DbError> {
        let (permit, mut connection) = self.acquire().await?;
        match tokio::time::timeout(self.statement_timeout, run(&mut connection, query)).await {
            Ok(Ok(rows)) => {
                self.connections.give_back(permit, connection);
                Ok(rows)
            }
            // The connection is dropped here, closing it: SQL Server stops the statement.
            Ok(Err(error)) => Err(error),
            Err(_) => Err(self.timed_out()),
        }
    }

    /// SQL Server's estimated plan of `query` (`SET SHOWPLAN_XML ON`): the statement is compiled
    /// with its parameters bound, not run. The setting belongs to the session, so the three
    /// batches share one connection, which returns to the pool only after `SET SHOWPLAN_XML OFF`
    /// finished cleanly; any failure or timeout on the way closes it, and with it the setting.
    pub(super) async fn showplan(&self, query: &RenderedQuery) -> Result<String, DbError> {
        let (permit, mut connection) = self.acquire().await?;
        match tokio::time::timeout(self.statement_timeout, showplan(&mut connection, query)).await {
            Ok(Ok(plan)) => {
                self.connections.give_back(permit, connection);
                Ok(plan)
            }
            Ok(Err(error)) => Err(error),
            Err(_) => Err(self.timed_out()),
        }
    }

    /// A permit and a connection (an idle one, else a new one), each within the acquire limit.
    async fn acquire(&self) -> Result<(OwnedSemaphorePermit, Connection), DbError> {
        let permit = self.connections.permit("SQL Server").await?;
        let connection = match self.connections.take_idle() {
            Some((connection, _)) => connection,
            None => tokio::time::timeout(self.connections.acquire_timeout(), connect(&self.config))
                .await
                .map_err(|_| {
                    DbError::new(
                        DbErrorKind::Unavailable,
                        "SQL Server did not accept a connection in time",
                    )
                })??,
        };
        Ok((permit, connection))
    }

    fn timed_out(&self) -> DbError {
        DbError::new(
            DbErrorKind::Timeout,
            format!(
                "statement exceeded the {} ms limit",
                self.statement_timeout.as_millis()
            ),
        )
    }

    pub(super) async fn close(&self) {
        self.connections.drain();
    }
}

/// Opens one connection (TCP, then TLS and login as the config says).
pub(super) async fn connect(config: &Config) -> Result<Connection, DbError> {
    let tcp = TcpStream::connect(config.get_addr()).await.map_err(|e| {
        DbError::new(
            DbErrorKind::Unavailable,
            format!("cannot reach SQL Server: {e}"),
        )
    })?;
    tcp.set_nodelay(true).ok();
    Client::connect(config.clone(), tcp.compat_write())
        .await
        .map_err(classify)
}

/// Binds one cell as the next `@Pn` parameter.
pub(super) fn bind(query: &mut Query<'_>, value: &Value) {
    match value.clone() {
        Value::Null => query.bind(Option::<String>::None),
        Value::Bool(b) => query.bind(b),
        Value::Int(i) => query.bind(i),
        Value::Float(f) => query.bind(f),
        Value::Decimal(d) => query.bind(d),
        Value::Text(s) => query.bind(s),
        Value::Bytes(b) => query.bind(b),
        Value::Uuid(u) => query.bind(tiberius::Uuid::from_bytes(u)),
        // As a datetime2 at midnight, not a `date`: compared with a `datetime` column a `date`
        // parameter is converted to `datetime`, which fails before 1753 (e.g. the year-1 floor that
        // skips sentinel dates), while a datetime2 converts the column instead. Against `date`
        // columns, midnight compares as the day itself.
        Value::Date(d) => query.bind(d.and_time(NaiveTime::MIN)),
        Value::DateTime(dt) => query.bind(dt),
        Value::Time(t) => query.bind(t),
        Value::Undecodable(_) => query.bind(Option::<String>::None),
    }
}

async fn run(
    connection: &mut Connection,
    rendered: &RenderedQuery,
) -> Result<Vec<Vec<Value>>, DbError> {
    let mut query = Query::new(rendered.sql.as_str());
    for value in &rendered.params {
        bind(&mut query, value);
    }
    let stream = query.query(connection).await.map_err(classify)?;
    let rows = stream.into_first_result().await.map_err(classify)?;
    // Each cell on its own: one that cannot be decoded does not fail its row or the page.
    Ok(rows
        .into_iter()
        .map(|row| {
            let names: Vec<String> = row.columns().iter().map(|c| c.name().to_owned()).collect();
            row.into_iter()
                .enumerate()
                .map(|(index, cell)| {
                    cell_value(&cell).unwrap_or_else(|error| {
                        let column = names.get(index).map_or("?", String::as_str);
                        Value::Undecodable(format!("column {column}: {}", error.message))
                    })
                })
                .collect()
        })
        .collect())
}

/// `SET SHOWPLAN_XML` must be alone in its batch, so it goes as a plain batch before and after
/// the statement. The statement goes as `run` sends it (an RPC to sp_executesql with its bound
/// parameters), which under the setting answers its plan as one row instead of running.
async fn showplan(
    connection: &mut Connection,
    rendered: &RenderedQuery,
) -> Result<String, DbError> {
    set_showplan(connection, "SET SHOWPLAN_XML ON").await?;
    let mut query = Query::new(rendered.sql.as_str());
    for value in &rendered.params {
        bind(&mut query, value);
    }
    let stream = query.query(connection).await.map_err(classify)?;
    let results = stream.into_results().await.map_err(classify)?;
    set_showplan(connection, "SET SHOWPLAN_XML OFF").await?;
    let cells = results
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|cell| cell_value(&cell).ok());
    showplan_documents(cells)
}

async fn set_showplan(connection: &mut Connection, batch: &'static str) -> Result<(), DbError> {
    let stream = connection.simple_query(batch).await.map_err(classify)?;
    stream.into_results().await.map_err(classify)?;
    Ok(())
}

/// The showplan documents among the cells a statement answered under `SET SHOWPLAN_XML ON`
/// (one per statement compiled), joined. Rows of any other kind mean the setting did not apply.
fn showplan_documents(cells: impl Iterator<Item = Value>) -> Result<String, DbError> {
    let documents: Vec<String> = cells
        .filter_map(|cell| match cell {
            Value::Text(text) if text.contains("<ShowPlanXML") => Some(text),
            _ => None,
        })
        .collect();
    if documents.is_empty() {
        return Err(DbError::new(
            DbErrorKind::Query,
            "SQL Server answered no SHOWPLAN XML for the statement",
        ));
    }
    Ok(documents.join("\n"))
}

fn decode_failure(what: &str, error: tiberius::error::Error) -> DbError {
    DbError::new(
        DbErrorKind::Decode,
        format!("cannot decode a SQL Server {what}: {error}"),
    )
}

/// One TDS value as a cell. `char`/`nchar` padding stays (absent-value rules trim text); GUIDs
/// become lowercase text; `datetimeoffset` becomes its UTC wall time (map it with `zone = "UTC"`).
pub(super) fn cell_value(data: &ColumnData<'static>) -> Result<Value, DbError> {
    let value = match data {
        ColumnData::U8(v) => v.map(|n| Value::Int(n.into())),
        ColumnData::I16(v) => v.map(|n| Value::Int(n.into())),
        ColumnData::I32(v) => v.map(|n| Value::Int(n.into())),
        ColumnData::I64(v) => v.map(Value::Int),
        ColumnData::F32(v) => v.map(|n| Value::Float(n.into())),
        ColumnData::F64(v) => v.map(Value::Float),
        ColumnData::Bit(v) => v.map(Value::Bool),
        ColumnData::String(v) => v.as_ref().map(|s| Value::Text(s.to_string())),
        ColumnData::Guid(v) => v.map(|g| Value::Uuid(g.into_bytes())),
        ColumnData::Binary(v) => v.as_ref().map(|b| Value::Bytes(b.to_vec())),
        ColumnData::Numeric(_) => rust_decimal::Decimal::from_sql(data)
            .map_err(|e| decode_failure("numeric", e))?
            .map(Value::Decimal),
        ColumnData::Xml(v) => v.as_ref().map(|x| Value::Text(x.to_string())),
        ColumnData::DateTime(_) | ColumnData::SmallDateTime(_) | ColumnData::DateTime2(_) => {
            NaiveDateTime::from_sql(data)
                .map_err(|e| decode_failure("date-time", e))?
                .map(Value::DateTime)
        }
        ColumnData::Date(_) => NaiveDate::from_sql(data)
            .map_err(|e| decode_failure("date", e))?
            .map(Value::Date),
        ColumnData::Time(_) => NaiveTime::from_sql(data)
            .map_err(|e| decode_failure("time", e))?
            .map(Value::Time),
        // TDS stores the UTC instant and the offset. tiberius 0.13's `DateTime<Utc>` conversion
        // applies the offset a second time; its `DateTime<FixedOffset>` one reads it right.
        ColumnData::DateTimeOffset(_) => chrono::DateTime::<chrono::FixedOffset>::from_sql(data)
            .map_err(|e| decode_failure("datetimeoffset", e))?
            .map(|dt| Value::DateTime(dt.naive_utc())),
    };
    Ok(value.unwrap_or(Value::Null))
}

pub(super) fn classify(error: tiberius::error::Error) -> DbError {
    use tiberius::error::Error;
    let kind = match &error {
        Error::Io { .. } | Error::Tls(_) | Error::Routing { .. } => DbErrorKind::Unavailable,
        // Login failed, database unavailable or unknown, server paused or shutting down.
        Error::Server(token)
            if matches!(token.code(), 18456 | 4060 | 4064 | 17142 | 6005 | 40613) =>
        {
            DbErrorKind::Unavailable
        }
        Error::Server(_) => DbErrorKind::Query,
        Error::Conversion(_) | Error::Utf8 | Error::Utf16 | Error::ParseInt(_) => {
            DbErrorKind::Decode
        }
        _ => DbErrorKind::Query,
    };
    DbError::new(kind, error.to_string())
}

#[cfg(test)]
mod tests;
