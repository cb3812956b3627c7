//! SQLite: double-quote quoting, `?N` placeholders, `LIMIT n`.

use super::ast::{Expr, Value};
use super::{Dialect, Renderer};

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

    /// SQLite's default BINARY collation already compares case-sensitively.
    fn exact_text(&self, renderer: &mut Renderer<'_>, expr: &Expr, text: &str) {
        renderer.expr(expr);
        renderer.sql.push_str(" = ");
        renderer.bind(Value::Text(text.to_owned()));
    }
}
