//! MySQL and MariaDB: backtick quoting, `?` placeholders, `LIMIT n`; string matching follows the
//! column collation.

use super::ast::{Expr, Value};
use super::{Dialect, Renderer};

pub(super) struct MySql;

impl Dialect for MySql {
    fn quote_ident(&self, out: &mut String, ident: &str) {
        out.push('`');
        out.push_str(&ident.replace('`', "``"));
        out.push('`');
    }

    fn placeholder(&self, out: &mut String, _index: usize) {
        out.push('?');
    }

    fn fixed_join_order(&self, out: &mut String) {
        out.push_str("STRAIGHT_JOIN ");
    }

    fn limit_suffix(&self, out: &mut String, limit: u64) {
        out.push_str(" LIMIT ");
        out.push_str(&limit.to_string());
    }

    /// Legacy MySQL columns use case- and accent-insensitive collations, so `=` alone would ignore
    /// both. The plain `=` keeps the index usable; the `BINARY` comparison (bytes) then enforces
    /// case and accents.
    fn exact_text(&self, renderer: &mut Renderer<'_>, expr: &Expr, text: &str) {
        renderer.sql.push('(');
        renderer.expr(expr);
        renderer.sql.push_str(" = ");
        renderer.bind(Value::Text(text.to_owned()));
        renderer.sql.push_str(" AND BINARY ");
        renderer.expr(expr);
        renderer.sql.push_str(" = BINARY ");
        renderer.bind(Value::Text(text.to_owned()));
        renderer.sql.push(')');
    }

    /// MONTH and DAYOFMONTH are 0 exactly for zero and partial dates.
    fn zero_date(&self, renderer: &mut Renderer<'_>, expr: &Expr) {
        renderer.sql.push_str("(MONTH(");
        renderer.expr(expr);
        renderer.sql.push_str(") = 0 OR DAYOFMONTH(");
        renderer.expr(expr);
        renderer.sql.push_str(") = 0)");
    }
}
