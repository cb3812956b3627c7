//! Writes demo and test fixture databases (never a PMS): creates databases, loads DDL, inserts rows.
//!
//! The only writing code in Portico, kept apart from the read-only legacy pool.

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Executor};

use super::{DbError, DbErrorKind, dialect_of};
use crate::dialect::ast::Value;
use crate::dialect::{DialectKind, quote_ident};

enum Pool {
    MySql(MySqlPool),
    Sqlite(SqlitePool),
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
            Some(DialectKind::Mssql) | None => {
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
        }
    }

    /// Runs a DDL script written for MySQL, adapted for SQLite when needed.
    pub async fn execute_script(&self, mysql_script: &str) -> Result<(), DbError> {
        let script = match self.dialect() {
            DialectKind::Sqlite => mysql_ddl_to_sqlite(mysql_script),
            DialectKind::Mysql | DialectKind::Mssql => mysql_script.to_owned(),
        };
        for statement in statements(&script) {
            match &self.pool {
                Pool::MySql(pool) => pool.execute(statement.as_str()).await.map(|_| ()),
                Pool::Sqlite(pool) => pool.execute(statement.as_str()).await.map(|_| ()),
            }
            .map_err(failed)?;
        }
        Ok(())
    }

    /// Inserts rows in multi-row statements, all values bound, inside one transaction.
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
        let per_statement = (30_000 / columns.len()).max(1);
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
        }
        Ok(())
    }

    pub async fn close(self) {
        match self.pool {
            Pool::MySql(pool) => pool.close().await,
            Pool::Sqlite(pool) => pool.close().await,
        }
    }
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
    fn scripts_split_on_statement_ends() {
        let parts =
            statements("-- comment\nCREATE TABLE a (\n x int\n);\n\nCREATE INDEX i ON a (x);\n");
        assert_eq!(parts.len(), 2);
        assert!(parts[1].starts_with("CREATE INDEX"));
    }
}
