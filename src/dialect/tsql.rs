//! SQL Server (T-SQL): bracket quoting, `@P1..` placeholders, `SELECT TOP n`.

use super::ast::{Expr, Value};
use super::{Dialect, Renderer};

pub(super) struct Tsql;

/// A binary collation: compares code points, so case and accents count.
const CASE_SENSITIVE_COLLATION: &str = "Latin1_General_BIN2";

impl Dialect for Tsql {
    fn quote_ident(&self, out: &mut String, ident: &str) {
        out.push('[');
        out.push_str(&ident.replace(']', "]]"));
        out.push(']');
    }

    fn placeholder(&self, out: &mut String, index: usize) {
        out.push_str("@P");
        out.push_str(&index.to_string());
    }

    /// T-SQL has no `LIMIT`; `TOP` goes right after `SELECT` (every paged query has an ORDER BY).
    fn limit_prefix(&self, out: &mut String, limit: u64) {
        out.push_str("TOP ");
        out.push_str(&limit.to_string());
        out.push(' ');
    }

    fn limit_suffix(&self, _out: &mut String, _limit: u64) {}

    /// Legacy SQL Server columns are case-insensitive (`*_CI_AS`). The plain `=` keeps an index
    /// usable; the binary collation then enforces case.
    fn exact_text(&self, renderer: &mut Renderer<'_>, expr: &Expr, text: &str) {
        renderer.sql.push('(');
        renderer.expr(expr);
        renderer.sql.push_str(" = ");
        renderer.bind(Value::Text(text.to_owned()));
        renderer.sql.push_str(" AND ");
        renderer.expr(expr);
        renderer.sql.push_str(" COLLATE ");
        renderer.sql.push_str(CASE_SENSITIVE_COLLATION);
        renderer.sql.push_str(" = ");
        renderer.bind(Value::Text(text.to_owned()));
        renderer.sql.push(')');
    }
}
