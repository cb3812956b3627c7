//! SQL Server (T-SQL): bracket quoting, `@P1..` placeholders, `SELECT TOP n`, explicit
//! collations for string matching.
//!
//! The collation is attached to the bound parameter, never to the column: by collation
//! precedence an explicit collation on either operand governs the comparison, while a `varchar`
//! column is still converted to the `nvarchar` parameter's type through its own code page. A
//! `COLLATE` on the column would first move a `varchar` column into the named collation's code
//! page (1252), losing the letters of other code pages (Czech `ř` under `Czech_CI_AS`, code page
//! 1250).

use super::ast::{Expr, LikeMode, Value};
use super::{Dialect, Renderer, like_pattern};

pub(super) struct Tsql;

/// A binary collation: compares code points, so case and accents count.
const EXACT_COLLATION: &str = "Latin1_General_BIN2";

/// Case- and accent-insensitive, with the version-100 (SQL Server 2008) Unicode weights.
const INSENSITIVE_COLLATION: &str = "Latin1_General_100_CI_AI";

impl Dialect for Tsql {
    fn min_active_rowversion(&self, out: &mut String) {
        out.push_str("MIN_ACTIVE_ROWVERSION()");
    }

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

    /// Legacy SQL Server databases mostly use accent-sensitive collations (the installer's
    /// default `SQL_Latin1_General_CP1_CI_AS`, `Latin1_General_CI_AS`), so the column's own
    /// collation cannot be trusted to ignore accents: every match names a `_CI_AI` collation. An
    /// index on the column can then no longer be sought for a prefix (it is ordered by the
    /// column's collation); `:contains` and word starts never could.
    fn insensitive_like(
        &self,
        renderer: &mut Renderer<'_>,
        expr: &Expr,
        text: &str,
        mode: LikeMode,
    ) {
        renderer.expr(expr);
        renderer.like(like_pattern(text, mode), Some(INSENSITIVE_COLLATION));
    }

    /// Legacy SQL Server columns are case-insensitive (`*_CI_AS`). The plain `=` keeps an index
    /// usable; the binary collation then enforces case and accents.
    fn exact_text(&self, renderer: &mut Renderer<'_>, expr: &Expr, text: &str) {
        renderer.sql.push('(');
        renderer.expr(expr);
        renderer.sql.push_str(" = ");
        renderer.bind(Value::Text(text.to_owned()));
        renderer.sql.push_str(" AND ");
        renderer.expr(expr);
        renderer.sql.push_str(" = ");
        renderer.bind(Value::Text(text.to_owned()));
        renderer.sql.push_str(" COLLATE ");
        renderer.sql.push_str(EXACT_COLLATION);
        renderer.sql.push(')');
    }
}
