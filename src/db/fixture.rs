//! Writes demo and test fixture databases (never a PMS): creates databases, loads DDL, inserts rows.
//!
//! The only writing code in Portico, kept apart from the read-only legacy pool.

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Executor};

use tiberius::Query;
use tokio::sync::Mutex;

use super::mssql::{self, Connection as MssqlConnection};
use super::{DbError, DbErrorKind, dialect_of};
use crate::dialect::ast::Value;
use crate::dialect::{DialectKind, quote_ident};

enum Pool {
    MySql(MySqlPool),
    Sqlite(SqlitePool),
    /// One connection: fixtures are written by a single task.
    Mssql(Box<Mutex<MssqlConnection>>),
}

pub struct FixtureWriter {
    pool: Pool,
}

fn failed(error: sqlx::Error) -> DbError {
    DbError {
        kind: DbErrorKind::Query,
        message: error.to_string(),
    }
}

/// Creates (or recreates) a MySQL database on the server at `server_url`.
pub async fn recreate_mysql_database(server_url: &str, name: &str) -> Result<(), DbError> {
    let options: MySqlConnectOptions = server_url
        .replacen("mariadb:", "mysql:", 1)
        .parse()
        .map_err(failed)?;
    let mut conn = options.connect().await.map_err(failed)?;
    let quoted = quote_ident(DialectKind::Mysql, name);
    conn.execute(format!("DROP DATABASE IF EXISTS {quoted}").as_str())
        .await
        .map_err(failed)?;
    conn.execute(
        format!("CREATE DATABASE {quoted} CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")
            .as_str(),
    )
    .await
    .map_err(failed)?;
    conn.close().await.map_err(failed)?;
    Ok(())
}

/// Drops a MySQL database on the server at `server_url`.
pub async fn drop_mysql_database(server_url: &str, name: &str) -> Result<(), DbError> {
    let options: MySqlConnectOptions = server_url
        .replacen("mariadb:", "mysql:", 1)
        .parse()
        .map_err(failed)?;
    let mut conn = options.connect().await.map_err(failed)?;
    let quoted = quote_ident(DialectKind::Mysql, name);
    conn.execute(format!("DROP DATABASE IF EXISTS {quoted}").as_str())
        .await
        .map_err(failed)?;
    conn.close().await.map_err(failed)
}

/// Creates (or recreates) database `name` on the SQL Server that `url` points at (any database
/// there), and returns the URL of the new database.
pub async fn recreate_mssql_database(url: &str, name: &str) -> Result<String, DbError> {
    let target = mssql_url_with_database(url, name);
    let mut config = mssql::parse_url(url)?;
    config.database("master");
    let mut connection = mssql::connect(&config).await?;
    let quoted = quote_ident(DialectKind::Mssql, name);
    connection
        .simple_query(format!(
            "IF DB_ID(N'{name}') IS NOT NULL BEGIN \
             ALTER DATABASE {quoted} SET SINGLE_USER WITH ROLLBACK IMMEDIATE; \
             DROP DATABASE {quoted}; END; \
             CREATE DATABASE {quoted};"
        ))
        .await
        .map_err(mssql::classify)?
        .into_results()
        .await
        .map_err(mssql::classify)?;
    Ok(target)
}

/// `url` with its database part replaced by `name`.
pub fn mssql_url_with_database(url: &str, name: &str) -> String {
    let (location, query) = url
        .split_once('?')
        .map_or((url, None), |(l, q)| (l, Some(q)));
    let scheme_end = location.find("://").map_or(0, |i| i + 3);
    let base = match location[scheme_end..].find('/') {
        Some(slash) => &location[..scheme_end + slash],
        None => location,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

/// Rewrites the fixture subset of T-SQL DDL (`[bracket]` names, `IDENTITY`, `(max)` lengths,
/// `bit`, `CLUSTERED`) for MySQL or SQLite: the SQL Server fixture schemas are written once, in
/// T-SQL, with the PMS's own column types.
pub fn tsql_ddl_to(kind: DialectKind, ddl: &str) -> String {
    if kind == DialectKind::Mssql {
        return ddl.to_owned();
    }
    let mut out = String::with_capacity(ddl.len());
    for line in ddl.lines() {
        let mut converted = String::with_capacity(line.len());
        let mut rest = line;
        while let Some(open) = rest.find('[') {
            let Some(close) = rest[open..].find(']') else {
                break;
            };
            converted.push_str(&rest[..open]);
            converted.push_str(&quote_ident(kind, &rest[open + 1..open + close]));
            rest = &rest[open + close + 1..];
        }
        converted.push_str(rest);
        let long_text = match kind {
            DialectKind::Mysql => "longtext",
            _ => "text",
        };
        let mut line = converted
            .replace("nvarchar(max)", long_text)
            .replace("varchar(max)", long_text)
            .replace("nvarchar(", "varchar(")
            .replace("nchar(", "char(")
            .replace(" NONCLUSTERED", "")
            .replace(" CLUSTERED", "")
            .replace(" uniqueidentifier", " char(36)")
            .replace(" datetime2", " datetime")
            .replace(" money", " decimal(19, 4)");
        line = match kind {
            DialectKind::Mysql => line
                .replace(" IDENTITY(1,1)", " AUTO_INCREMENT")
                .replace(" bit ", " tinyint(1) "),
            _ => line.replace(" IDENTITY(1,1)", ""),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Rewrites MySQL DDL into what SQLite accepts: the fixture schemas are written once, for MySQL.
pub fn mysql_ddl_to_sqlite(ddl: &str) -> String {
    let mut out = String::with_capacity(ddl.len());
    for line in ddl.lines() {
        let mut line = line
            .replace(" ON UPDATE CURRENT_TIMESTAMP", "")
            .replace(" unsigned", "");
        if let Some(start) = line.find("enum(")
            && let Some(end) = line[start..].find(')')
        {
            line.replace_range(start..start + end + 1, "varchar(16)");
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Splits a script into statements at `;` line ends, dropping `--` comment lines.
fn statements(script: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    for line in script.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") || trimmed.is_empty() {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if trimmed.ends_with(';') {
            statements.push(std::mem::take(&mut current));
        }
    }
    if !current.trim().is_empty() {
        statements.push(current);
    }
    statements
}

impl FixtureWriter {
    /// Opens a writable connection; a SQLite file is created if missing.
    pub async fn open(url: &str) -> Result<FixtureWriter, DbError> {
        let pool = match dialect_of(url) {
            Some(DialectKind::Mysql) => {
                let options: MySqlConnectOptions = url
                    .replacen("mariadb:", "mysql:", 1)
                    .parse()
                    .map_err(failed)?;
                Pool::MySql(
                    MySqlPoolOptions::new()
                        .max_connections(2)
                        // As OpenEMR's installer does: legacy rows keep partial and zero dates.
                        .after_connect(|conn, _meta| {
                            Box::pin(async move {
                                conn.execute("SET SESSION sql_mode = ''").await?;
                                Ok(())
                            })
                        })
                        .connect_with(options)
                        .await
                        .map_err(failed)?,
                )
            }
            Some(DialectKind::Sqlite) => {
                let options: SqliteConnectOptions = url.parse().map_err(failed)?;
                let options = options
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Off);
                Pool::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(1)
                        .connect_with(options)
                        .await
                        .map_err(failed)?,
                )
            }
            Some(DialectKind::Mssql) => {
                let config = mssql::parse_url(url)?;
                Pool::Mssql(Box::new(Mutex::new(mssql::connect(&config).await?)))
            }
            None => {
                return Err(DbError {
                    kind: DbErrorKind::Query,
                    message: format!("unsupported fixture URL {}", super::redact_url(url)),
                });
            }
        };
        Ok(FixtureWriter { pool })
    }

    pub fn dialect(&self) -> DialectKind {
        match self.pool {
            Pool::MySql(_) => DialectKind::Mysql,
            Pool::Sqlite(_) => DialectKind::Sqlite,
            Pool::Mssql(_) => DialectKind::Mssql,
        }
    }

    /// Runs a DDL script written for `written_for` (MySQL or T-SQL), adapted to this database.
    pub async fn execute_script(
        &self,
        script: &str,
        written_for: DialectKind,
    ) -> Result<(), DbError> {
        let script = match (written_for, self.dialect()) {
            (DialectKind::Mysql, DialectKind::Sqlite) => mysql_ddl_to_sqlite(script),
            (DialectKind::Mssql, kind) => tsql_ddl_to(kind, script),
            (from, to) if from == to => script.to_owned(),
            (from, to) => {
                return Err(DbError::new(
                    DbErrorKind::Query,
                    format!("no conversion of {from:?} DDL for {to:?}"),
                ));
            }
        };
        for statement in statements(&script) {
            match &self.pool {
                Pool::MySql(pool) => pool.execute(statement.as_str()).await.map(|_| ()),
                Pool::Sqlite(pool) => pool.execute(statement.as_str()).await.map(|_| ()),
                Pool::Mssql(connection) => {
                    let mut connection = connection.lock().await;
                    let results = connection
                        .simple_query(statement.as_str())
                        .await
                        .map_err(mssql::classify)?;
                    results.into_results().await.map_err(mssql::classify)?;
                    continue;
                }
            }
            .map_err(failed)?;
        }
        Ok(())
    }

    /// Inserts rows in multi-row statements, all values bound (inside one transaction on MySQL and
    /// SQLite).
    pub async fn insert(
        &self,
        table: &str,
        columns: &[&str],
        rows: &[Vec<Value>],
    ) -> Result<(), DbError> {
        if rows.is_empty() {
            return Ok(());
        }
        let kind = self.dialect();
        let column_list: Vec<String> = columns.iter().map(|c| quote_ident(kind, c)).collect();
        let per_statement = match kind {
            // At most 2,100 parameters and 1,000 rows per INSERT ... VALUES.
            DialectKind::Mssql => (2_000 / columns.len()).clamp(1, 1_000),
            DialectKind::Mysql | DialectKind::Sqlite => (30_000 / columns.len()).max(1),
        };
        match &self.pool {
            Pool::MySql(pool) => {
                let mut tx = pool.begin().await.map_err(failed)?;
                for chunk in rows.chunks(per_statement) {
                    let sql = insert_sql(kind, table, &column_list, columns.len(), chunk.len());
                    let mut query = sqlx::query(&sql);
                    for row in chunk {
                        for value in row {
                            query = super::bind_mysql(query, value);
                        }
                    }
                    query.execute(&mut *tx).await.map_err(failed)?;
                }
                tx.commit().await.map_err(failed)?;
            }
            Pool::Sqlite(pool) => {
                let mut tx = pool.begin().await.map_err(failed)?;
                for chunk in rows.chunks(per_statement) {
                    let sql = insert_sql(kind, table, &column_list, columns.len(), chunk.len());
                    let mut query = sqlx::query(&sql);
                    for row in chunk {
                        for value in row {
                            query = super::bind_sqlite(query, value);
                        }
                    }
                    query.execute(&mut *tx).await.map_err(failed)?;
                }
                tx.commit().await.map_err(failed)?;
            }
            Pool::Mssql(connection) => {
                let mut connection = connection.lock().await;
                // Fixture rows carry their keys; IDENTITY columns accept them only when told to,
                // within the same batch. No explicit transaction: tiberius sends parameterized
                // batches through sp_executesql, which must end with the transaction count it
                // started with, and each INSERT is atomic on its own.
                for chunk in rows.chunks(per_statement) {
                    let sql = mssql_insert_batch(table, &column_list, chunk.len());
                    let params: Vec<Value> = chunk.iter().flatten().cloned().collect();
                    run_mssql(&mut connection, &sql, &params).await?;
                }
            }
        }
        Ok(())
    }

    /// Runs one statement with bound values (tests use it to change rows).
    pub async fn execute(&self, sql: &str, params: &[Value]) -> Result<(), DbError> {
        match &self.pool {
            Pool::MySql(pool) => {
                let mut query = sqlx::query(sql);
                for value in params {
                    query = super::bind_mysql(query, value);
                }
                query.execute(pool).await.map_err(failed)?;
            }
            Pool::Sqlite(pool) => {
                let mut query = sqlx::query(sql);
                for value in params {
                    query = super::bind_sqlite(query, value);
                }
                query.execute(pool).await.map_err(failed)?;
            }
            Pool::Mssql(connection) => {
                run_mssql(&mut *connection.lock().await, sql, params).await?;
            }
        }
        Ok(())
    }

    pub async fn close(self) {
        match self.pool {
            Pool::MySql(pool) => pool.close().await,
            Pool::Sqlite(pool) => pool.close().await,
            Pool::Mssql(connection) => {
                connection.into_inner().close().await.ok();
            }
        }
    }
}

/// Runs one T-SQL batch with bound values and reads every result, so the connection is ready for
/// the next.
async fn run_mssql(
    connection: &mut MssqlConnection,
    sql: &str,
    params: &[Value],
) -> Result<(), DbError> {
    let mut query = Query::new(sql);
    for value in params {
        mssql::bind(&mut query, value);
    }
    query.execute(connection).await.map_err(mssql::classify)?;
    Ok(())
}

/// The T-SQL batch that inserts `rows` rows with their keys: `IDENTITY_INSERT` on around the
/// INSERT when the table has an IDENTITY column (it is an error to set it on a table without one).
fn mssql_insert_batch(table: &str, columns: &[String], rows: usize) -> String {
    let quoted = quote_ident(DialectKind::Mssql, table);
    let identity = |state: &str| {
        format!(
            "IF OBJECTPROPERTY(OBJECT_ID(N'{quoted}'), 'TableHasIdentity') = 1 \
             SET IDENTITY_INSERT {quoted} {state};"
        )
    };
    format!(
        "{} {}; {}",
        identity("ON"),
        insert_sql(DialectKind::Mssql, table, columns, columns.len(), rows),
        identity("OFF")
    )
}

fn insert_sql(
    kind: DialectKind,
    table: &str,
    columns: &[String],
    width: usize,
    rows: usize,
) -> String {
    let mut sql = format!(
        "INSERT INTO {} ({}) VALUES ",
        quote_ident(kind, table),
        columns.join(", ")
    );
    let mut index = 0;
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..width {
            if column > 0 {
                sql.push_str(", ");
            }
            index += 1;
            match kind {
                DialectKind::Mysql => sql.push('?'),
                DialectKind::Sqlite => {
                    sql.push('?');
                    sql.push_str(&index.to_string());
                }
                DialectKind::Mssql => {
                    sql.push_str("@P");
                    sql.push_str(&index.to_string());
                }
            }
        }
        sql.push(')');
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_ddl_becomes_sqlite_ddl() {
        let ddl = "  a int(11) unsigned NOT NULL,\n  b enum('x','y') default NULL,\n  c DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,";
        assert_eq!(
            mysql_ddl_to_sqlite(ddl),
            "  a int(11) NOT NULL,\n  b varchar(16) default NULL,\n  c DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,\n"
        );
    }

    #[test]
    fn tsql_ddl_becomes_mysql_and_sqlite_ddl() {
        let ddl = "CREATE TABLE [Appointment] (\n  [Id] int IDENTITY(1,1) NOT NULL,\n  [End] datetime NOT NULL,\n  [Notified] bit NOT NULL,\n  [Description] nvarchar(max) NULL,\n  [Code] nchar(12) NULL,\n  CONSTRAINT [PK_Appointment] PRIMARY KEY CLUSTERED ([Id] ASC)\n);\nCREATE NONCLUSTERED INDEX [IX_End] ON [Appointment] ([End] ASC);";
        assert_eq!(
            tsql_ddl_to(DialectKind::Mysql, ddl),
            "CREATE TABLE `Appointment` (\n  `Id` int AUTO_INCREMENT NOT NULL,\n  `End` datetime NOT NULL,\n  `Notified` tinyint(1) NOT NULL,\n  `Description` longtext NULL,\n  `Code` char(12) NULL,\n  CONSTRAINT `PK_Appointment` PRIMARY KEY (`Id` ASC)\n);\nCREATE INDEX `IX_End` ON `Appointment` (`End` ASC);\n"
        );
        assert_eq!(
            tsql_ddl_to(DialectKind::Sqlite, ddl),
            "CREATE TABLE \"Appointment\" (\n  \"Id\" int NOT NULL,\n  \"End\" datetime NOT NULL,\n  \"Notified\" bit NOT NULL,\n  \"Description\" text NULL,\n  \"Code\" char(12) NULL,\n  CONSTRAINT \"PK_Appointment\" PRIMARY KEY (\"Id\" ASC)\n);\nCREATE INDEX \"IX_End\" ON \"Appointment\" (\"End\" ASC);\n"
        );
        assert_eq!(tsql_ddl_to(DialectKind::Mssql, ddl), ddl);
    }

    #[test]
    fn sql_server_inserts_carry_their_keys_into_identity_columns() {
        let columns = vec!["[Id]".to_owned(), "[End]".to_owned()];
        assert_eq!(
            mssql_insert_batch("User", &columns, 2),
            "IF OBJECTPROPERTY(OBJECT_ID(N'[User]'), 'TableHasIdentity') = 1 SET IDENTITY_INSERT [User] ON; \
             INSERT INTO [User] ([Id], [End]) VALUES (@P1, @P2), (@P3, @P4); \
             IF OBJECTPROPERTY(OBJECT_ID(N'[User]'), 'TableHasIdentity') = 1 SET IDENTITY_INSERT [User] OFF;"
        );
    }

    #[test]
    fn mssql_urls_take_another_database() {
        assert_eq!(
            mssql_url_with_database("mssql://sa:p@db:1433/master?encrypt=false", "t1"),
            "mssql://sa:p@db:1433/t1?encrypt=false"
        );
        assert_eq!(
            mssql_url_with_database("mssql://sa:p@db", "t1"),
            "mssql://sa:p@db/t1"
        );
    }

    #[test]
    fn scripts_split_on_statement_ends() {
        let parts =
            statements("-- comment\nCREATE TABLE a (\n x int\n);\n\nCREATE INDEX i ON a (x);\n");
        assert_eq!(parts.len(), 2);
        assert!(parts[1].starts_with("CREATE INDEX"));
    }
}
