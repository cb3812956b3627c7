//! SQL dialects: render the neutral tree of `ast` into SQL text plus bound values.
//!
//! Architecture invariant: this module does no I/O and knows no driver. Every dialect shares one
//! renderer; a dialect only answers the questions where SQL engines differ (quoting, placeholders,
//! row limits, case- and accent-insensitive matching, exact comparison). MySQL/MariaDB, SQLite and
//! T-SQL are here; PostgreSQL is one more `Dialect` impl.

pub mod ast;
pub mod fold;
mod mysql;
mod sqlite;
mod tsql;

use std::fmt::Write;

use serde::Deserialize;

use self::ast::{CmpOp, Cond, Expr, JoinKind, LikeMode, Select, Value};

/// The SQL engines Portico can read from. A closed set: each is a `Dialect` impl.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DialectKind {
    Mysql,
    Sqlite,
    /// SQL Server. Rendering and snapshot tests exist; the driver (tiberius) is not wired yet.
    Mssql,
}

impl DialectKind {
    pub fn name(self) -> &'static str {
        match self {
            DialectKind::Mysql => "mysql",
            DialectKind::Sqlite => "sqlite",
            DialectKind::Mssql => "mssql",
        }
    }

    fn dialect(self) -> &'static dyn Dialect {
        match self {
            DialectKind::Mysql => &mysql::MySql,
            DialectKind::Sqlite => &sqlite::Sqlite,
            DialectKind::Mssql => &tsql::Tsql,
        }
    }
}

/// SQL text with its parameters, in placeholder order.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedQuery {
    pub sql: String,
    pub params: Vec<Value>,
}

/// What differs between SQL engines. Everything else is in `Renderer`.
trait Dialect: Sync {
    fn quote_ident(&self, out: &mut String, ident: &str);
    /// Appends the placeholder for the `index`-th parameter (1-based).
    fn placeholder(&self, out: &mut String, index: usize);
    /// Text placed right after `SELECT` (T-SQL's `TOP n`); none by default.
    fn limit_prefix(&self, _out: &mut String, _limit: u64) {}
    /// Text placed right after `SELECT` that makes the engine join in the written order; none by
    /// default (SQLite already keeps LEFT JOINs in order and its planner follows ORDER BY ...
    /// LIMIT on the FROM table's key).
    fn fixed_join_order(&self, _out: &mut String) {}
    /// Text placed after `ORDER BY` (`LIMIT n`).
    fn limit_suffix(&self, out: &mut String, limit: u64);
    /// Renders a case- and accent-insensitive match (the FHIR string default). By default the
    /// column's collation decides, as on MySQL/MariaDB, whose default collations ignore both.
    fn insensitive_like(
        &self,
        renderer: &mut Renderer<'_>,
        expr: &Expr,
        text: &str,
        mode: LikeMode,
    ) {
        renderer.expr(expr);
        renderer.like(like_pattern(text, mode), None);
    }
    /// Renders a case- and accent-sensitive equality between a column and a bound text.
    fn exact_text(&self, renderer: &mut Renderer<'_>, expr: &Expr, text: &str);
    /// `Cond::ZeroDate`: never true by default (date types that cannot hold zero dates).
    fn zero_date(&self, renderer: &mut Renderer<'_>, _expr: &Expr) {
        renderer.sql.push_str("1 = 0");
    }
    /// `Expr::MinActiveRowVersion`; only SQL Server has rowversions.
    fn min_active_rowversion(&self, out: &mut String) {
        out.push_str("NULL");
    }
}

/// Characters escaped in LIKE patterns. `!` is the escape character because backslash means
/// different things in MySQL string literals depending on `sql_mode`.
pub(crate) const LIKE_ESCAPE: char = '!';

fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() + 2);
    for ch in text.chars() {
        if ch == '%' || ch == '_' || ch == LIKE_ESCAPE {
            escaped.push(LIKE_ESCAPE);
        }
        escaped.push(ch);
    }
    escaped
}

/// The LIKE pattern matching `text` (its wildcards escaped) in `mode`.
pub(crate) fn like_pattern(text: &str, mode: LikeMode) -> String {
    match mode {
        LikeMode::StartsWith => format!("{}%", escape_like(text)),
        LikeMode::WordStartsWith => format!("% {}%", escape_like(text)),
        LikeMode::Contains => format!("%{}%", escape_like(text)),
    }
}

/// Renders `select` for `kind`.
pub fn render(kind: DialectKind, select: &Select) -> RenderedQuery {
    let mut renderer = Renderer {
        dialect: kind.dialect(),
        sql: String::with_capacity(256),
        params: Vec::new(),
    };
    renderer.select(select);
    RenderedQuery {
        sql: renderer.sql,
        params: renderer.params,
    }
}

/// Quotes an identifier for `kind`; used by `portico check` for catalogue queries.
pub fn quote_ident(kind: DialectKind, ident: &str) -> String {
    let mut out = String::new();
    kind.dialect().quote_ident(&mut out, ident);
    out
}

struct Renderer<'d> {
    dialect: &'d dyn Dialect,
    sql: String,
    params: Vec<Value>,
}

impl Renderer<'_> {
    fn select(&mut self, select: &Select) {
        self.sql.push_str("SELECT ");
        if select.fixed_join_order && !select.joins.is_empty() {
            self.dialect.fixed_join_order(&mut self.sql);
        }
        if let Some(limit) = select.limit {
            self.dialect.limit_prefix(&mut self.sql, limit);
        }
        for (index, column) in select.columns.iter().enumerate() {
            if index > 0 {
                self.sql.push_str(", ");
            }
            self.expr(column);
        }
        self.sql.push_str(" FROM ");
        self.table(&select.from.table, &select.from.alias);
        for join in &select.joins {
            self.sql.push_str(match join.kind {
                JoinKind::Inner => " JOIN ",
                JoinKind::Left => " LEFT JOIN ",
            });
            self.table(&join.table.table, &join.table.alias);
            self.sql.push_str(" ON ");
            self.cond(&join.on);
        }
        if select.filter != Cond::True {
            self.sql.push_str(" WHERE ");
            self.cond(&select.filter);
        }
        if !select.order_by.is_empty() {
            self.sql.push_str(" ORDER BY ");
            for (index, term) in select.order_by.iter().enumerate() {
                if index > 0 {
                    self.sql.push_str(", ");
                }
                self.expr(&term.expr);
                if term.descending {
                    self.sql.push_str(" DESC");
                }
            }
        }
        if let Some(limit) = select.limit {
            self.dialect.limit_suffix(&mut self.sql, limit);
        }
    }

    fn table(&mut self, table: &str, alias: &str) {
        self.dialect.quote_ident(&mut self.sql, table);
        self.sql.push(' ');
        self.dialect.quote_ident(&mut self.sql, alias);
    }

    fn bind(&mut self, value: Value) {
        self.params.push(value);
        self.dialect.placeholder(&mut self.sql, self.params.len());
    }

    fn expr(&mut self, expr: &Expr) {
        match expr {
            Expr::Column { table, column } => {
                self.dialect.quote_ident(&mut self.sql, table);
                self.sql.push('.');
                self.dialect.quote_ident(&mut self.sql, column);
            }
            Expr::Value(value) => self.bind(value.clone()),
            Expr::CountAll => self.sql.push_str("COUNT(*)"),
            Expr::MinActiveRowVersion => self.dialect.min_active_rowversion(&mut self.sql),
            Expr::Case { when, then } => {
                self.sql.push_str("CASE WHEN ");
                self.cond(when);
                self.sql.push_str(" THEN ");
                self.expr(then);
                self.sql.push_str(" END");
            }
            Expr::CountWhere(conds) => {
                self.sql.push_str("SUM(");
                for (index, cond) in conds.iter().enumerate() {
                    if index > 0 {
                        self.sql.push_str(" + ");
                    }
                    self.sql.push_str("CASE WHEN ");
                    self.cond(cond);
                    self.sql.push_str(" THEN 1 ELSE 0 END");
                }
                if conds.is_empty() {
                    self.sql.push('0');
                }
                self.sql.push(')');
            }
        }
    }

    fn cond(&mut self, cond: &Cond) {
        match cond {
            Cond::True => self.sql.push_str("1 = 1"),
            Cond::False => self.sql.push_str("1 = 0"),
            Cond::And(conds) => self.joined(conds, " AND "),
            Cond::Or(conds) => self.joined(conds, " OR "),
            Cond::Not(inner) => {
                self.sql.push_str("NOT (");
                self.cond(inner);
                self.sql.push(')');
            }
            Cond::Compare { left, op, right } => {
                self.expr(left);
                self.sql.push_str(match op {
                    CmpOp::Eq => " = ",
                    CmpOp::Ne => " <> ",
                    CmpOp::Lt => " < ",
                    CmpOp::Le => " <= ",
                    CmpOp::Gt => " > ",
                    CmpOp::Ge => " >= ",
                });
                self.expr(right);
            }
            Cond::In {
                expr,
                values,
                negated,
            } => {
                if values.is_empty() {
                    self.cond(if *negated { &Cond::True } else { &Cond::False });
                    return;
                }
                self.expr(expr);
                self.sql
                    .push_str(if *negated { " NOT IN (" } else { " IN (" });
                for (index, value) in values.iter().enumerate() {
                    if index > 0 {
                        self.sql.push_str(", ");
                    }
                    self.bind(value.clone());
                }
                self.sql.push(')');
            }
            Cond::IsNull { expr, negated } => {
                self.expr(expr);
                self.sql
                    .push_str(if *negated { " IS NOT NULL" } else { " IS NULL" });
            }
            Cond::Like { expr, text, mode } => {
                let dialect = self.dialect;
                dialect.insensitive_like(self, expr, text, *mode);
            }
            Cond::ExactText { expr, text } => {
                let dialect = self.dialect;
                dialect.exact_text(self, expr, text);
            }
            Cond::ZeroDate { expr } => {
                let dialect = self.dialect;
                dialect.zero_date(self, expr);
            }
            Cond::InLookup { expr, keys, .. } => {
                self.expr(expr);
                self.sql.push_str(" IN (");
                self.select(keys);
                self.sql.push(')');
            }
            Cond::Exists { select, negated } => {
                self.sql
                    .push_str(if *negated { "NOT EXISTS (" } else { "EXISTS (" });
                self.select(select);
                self.sql.push(')');
            }
        }
    }

    /// ` LIKE pattern [COLLATE collation] ESCAPE '!'`, after the matched expression.
    fn like(&mut self, pattern: String, collation: Option<&str>) {
        self.sql.push_str(" LIKE ");
        self.bind(Value::Text(pattern));
        if let Some(collation) = collation {
            self.sql.push_str(" COLLATE ");
            self.sql.push_str(collation);
        }
        let _ = write!(self.sql, " ESCAPE '{LIKE_ESCAPE}'");
    }

    fn joined(&mut self, conds: &[Cond], separator: &str) {
        self.sql.push('(');
        for (index, cond) in conds.iter().enumerate() {
            if index > 0 {
                self.sql.push_str(separator);
            }
            self.cond(cond);
        }
        self.sql.push(')');
    }
}

#[cfg(test)]
mod tests;
