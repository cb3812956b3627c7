//! SQLite: double-quote quoting, `?N` placeholders, `LIMIT n`, string matching through
//! `portico_fold`.

use super::ast::{Expr, LikeMode, Value};
use super::fold::{SQL_FUNCTION, fold};
use super::{Dialect, Renderer, like_pattern};

pub(super) struct Sqlite;

impl Dialect for Sqlite {
    fn quote_ident(&self, out: &mut String, ident: &str) {
        out.push('"');
        out.push_str(&ident.replace('"', "\"\""));
        out.push('"');
    }

    fn placeholder(&self, out: &mut String, index: usize) {
        out.push('?');
        out.push_str(&index.to_string());
    }

    fn limit_suffix(&self, out: &mut String, limit: u64) {
        out.push_str(" LIMIT ");
        out.push_str(&limit.to_string());
    }

    /// SQLite's LIKE ignores the case of ASCII letters only, and no collation of its own ignores
    /// accents: both sides go through the same fold (`portico_fold`, registered on every reading
    /// connection), the value folded here and then escaped.
    fn insensitive_like(
        &self,
        renderer: &mut Renderer<'_>,
        expr: &Expr,
        text: &str,
        mode: LikeMode,
    ) {
        renderer.sql.push_str(SQL_FUNCTION);
        renderer.sql.push('(');
        renderer.expr(expr);
        renderer.sql.push(')');
        renderer.like(like_pattern(&fold(text), mode), None);
    }

    /// SQLite's default BINARY collation already compares code points: case and accents count.
    fn exact_text(&self, renderer: &mut Renderer<'_>, expr: &Expr, text: &str) {
        renderer.expr(expr);
        renderer.sql.push_str(" = ");
        renderer.bind(Value::Text(text.to_owned()));
    }

    /// Dates are text here: a month or day of `00`.
    fn zero_date(&self, renderer: &mut Renderer<'_>, expr: &Expr) {
        renderer.sql.push_str("(CAST(");
        renderer.expr(expr);
        renderer.sql.push_str(" AS TEXT) LIKE '____-00-%' OR CAST(");
        renderer.expr(expr);
        renderer.sql.push_str(" AS TEXT) LIKE '____-__-00%')");
    }
}
