//! The neutral SQL tree that the search compiler builds and every dialect renders.
//!
//! Architecture invariant: values only ever appear as `Expr::Value` and are rendered as bound
//! parameters; identifiers only come from validated adapter files and are quoted by the dialect.

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use rust_decimal::Decimal;

/// A database value: a bound parameter on the way in, a row cell on the way out.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Decimal(Decimal),
    Text(String),
    Bytes(Vec<u8>),
    /// A UUID key, bytes in RFC 4122 order: 16 bytes for MySQL and SQLite (`binary(16)`), a
    /// `uniqueidentifier` for SQL Server (which keeps GUIDs in another byte order).
    Uuid([u8; 16]),
    Date(NaiveDate),
    DateTime(NaiveDateTime),
    Time(NaiveTime),
    /// A cell the driver refused (invalid UTF-8 text, a number out of range...): never bound,
    /// it makes its row unservable. The text says which column and why, never the value.
    Undecodable(String),
}

/// A query: `SELECT columns FROM table [JOIN ...] WHERE filter ORDER BY ... LIMIT n`.
#[derive(Debug, Clone, PartialEq)]
pub struct Select {
    pub columns: Vec<Expr>,
    pub from: TableRef,
    pub joins: Vec<Join>,
    pub filter: Cond,
    pub order_by: Vec<OrderTerm>,
    pub limit: Option<u64>,
    /// Join the tables in the order written, the FROM table first. Set on keyset pages whose
    /// request conditions and sort read the FROM table alone: walked in its key's order, the
    /// first `limit` rows end the query, where a plan starting from a joined table reads and
    /// sorts every row after the cursor (MySQL's `STRAIGHT_JOIN`; other dialects ignore it).
    pub fixed_join_order: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TableRef {
    pub table: String,
    pub alias: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    Inner,
    Left,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Join {
    pub kind: JoinKind,
    pub table: TableRef,
    pub on: Cond,
    /// Set on a lookup join (adapters' `lookup = true`): the repository may leave the join out of
    /// the SQL and fill its columns from a cached copy of the lookup table. Never rendered.
    pub cached: Option<CachedJoin>,
}

/// How a lookup join's columns are read from its cached rows instead of the database: the row of
/// the lookup whose `key` equals the base row's `foreign`, among the rows `conditions` admit.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedJoin {
    /// The cache entry (`Patient:race`).
    pub name: String,
    /// The lookup's key column.
    pub key: String,
    /// The base table's column that the key equals.
    pub foreign: Expr,
    /// The join's other conditions: each tests a column of the lookup against constants.
    pub conditions: Cond,
    /// Every column of the lookup the mapping reads, what the cache keeps of each row.
    pub columns: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderTerm {
    pub expr: Expr,
    pub descending: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Column {
        table: String,
        column: String,
    },
    Value(Value),
    /// `COUNT(*)`.
    CountAll,
    /// The number of (row, condition) pairs that hold: `SUM(CASE WHEN c1 THEN 1 ELSE 0 END + ...)`.
    /// Counts the resources an unpivoting mapping yields.
    CountWhere(Vec<Cond>),
    /// SQL Server's `MIN_ACTIVE_ROWVERSION()`: the lowest rowversion an open transaction may
    /// still commit. Rowversion change detection reads only below it, so a slow transaction's
    /// rows are not skipped. Engines without rowversions render NULL (nothing compares true).
    MinActiveRowVersion,
    /// `CASE WHEN when THEN then END`: `then` where `when` holds, NULL elsewhere.
    Case {
        when: Box<Cond>,
        then: Box<Expr>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LikeMode {
    StartsWith,
    /// The text follows a space: the start of a word other than the first.
    WordStartsWith,
    Contains,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    True,
    False,
    And(Vec<Cond>),
    Or(Vec<Cond>),
    Not(Box<Cond>),
    Compare {
        left: Expr,
        op: CmpOp,
        right: Expr,
    },
    In {
        expr: Expr,
        values: Vec<Value>,
        negated: bool,
    },
    IsNull {
        expr: Expr,
        negated: bool,
    },
    /// Case- and accent-insensitive text match (the FHIR string default); wildcards in `text` are
    /// escaped. Each dialect decides how: the column collation (MySQL/MariaDB), an explicit
    /// `_CI_AI` collation (SQL Server), `portico_fold` on both sides (SQLite).
    Like {
        expr: Expr,
        text: String,
        mode: LikeMode,
    },
    /// Case- and accent-sensitive equality, whatever the column collation (`:exact`).
    ExactText {
        expr: Expr,
        text: String,
    },
    /// A date column holding a zero or partial date no calendar accepts (`0000-00-00`,
    /// `1958-00-00`, `2001-07-00`), as old MySQL installs keep them. The driver reads a zero date
    /// as NULL, so only SQL can find those rows (`portico audit`). Engines whose date types
    /// cannot hold them render a condition that is never true.
    ZeroDate {
        expr: Expr,
    },
    Exists {
        select: Box<Select>,
        negated: bool,
    },
    /// `expr IN (keys)`: a semi-join on a small lookup table, `keys` selecting one column of it.
    /// Before rendering, the repository replaces it with the lookup's cached key list (an `In` of
    /// constants, which an optimizer cannot turn back into a join that drives the plan); it is
    /// rendered as the subquery only when no list is at hand. `lookup` names the cache entry.
    InLookup {
        expr: Expr,
        lookup: String,
        keys: Box<Select>,
    },
}

impl Select {
    /// Whether any part of this query reads a column of the table aliased `alias`.
    pub fn reads(&self, alias: &str) -> bool {
        self.from.alias == alias
            || self.columns.iter().any(|c| c.reads(alias))
            || self
                .joins
                .iter()
                .any(|j| j.table.alias == alias || j.on.reads(alias))
            || self.filter.reads(alias)
            || self.order_by.iter().any(|o| o.expr.reads(alias))
    }

    /// This query with the lookups `keys` knows resolved to constant lists (`Cond::InLookup`).
    pub fn with_lookup_keys(&self, keys: &dyn Fn(&str) -> Option<Vec<Value>>) -> Select {
        Select {
            filter: self.filter.with_lookup_keys(keys),
            ..self.clone()
        }
    }
}

impl Expr {
    pub fn column(table: &str, column: &str) -> Expr {
        Expr::Column {
            table: table.to_owned(),
            column: column.to_owned(),
        }
    }

    /// Whether every column this expression reads is of the table aliased `alias` (a constant
    /// reads none; an aggregate is not a row's value).
    pub fn reads_only(&self, alias: &str) -> bool {
        match self {
            Expr::Column { table, .. } => table == alias,
            Expr::Value(_) | Expr::MinActiveRowVersion => true,
            Expr::Case { when, then } => when.reads_only(alias) && then.reads_only(alias),
            Expr::CountAll | Expr::CountWhere(_) => false,
        }
    }

    /// Whether this expression reads a column of the table aliased `alias`.
    pub fn reads(&self, alias: &str) -> bool {
        match self {
            Expr::Column { table, .. } => table == alias,
            Expr::CountWhere(conds) => conds.iter().any(|c| c.reads(alias)),
            Expr::Case { when, then } => when.reads(alias) || then.reads(alias),
            Expr::Value(_) | Expr::CountAll | Expr::MinActiveRowVersion => false,
        }
    }
}

impl Cond {
    pub fn compare(left: Expr, op: CmpOp, value: Value) -> Cond {
        Cond::Compare {
            left,
            op,
            right: Expr::Value(value),
        }
    }

    /// `AND` that folds constants and repeats (a date criterion's presence test once per bound),
    /// so compiled trees stay small and snapshots readable. An AND holds a few criteria, so the
    /// scan for repeats stays short.
    pub fn and(conds: Vec<Cond>) -> Cond {
        let mut kept = Vec::with_capacity(conds.len());
        for cond in conds {
            match cond {
                Cond::True => {}
                Cond::False => return Cond::False,
                Cond::And(inner) => inner.into_iter().for_each(|c| push_new(&mut kept, c)),
                other => push_new(&mut kept, other),
            }
        }
        match kept.len() {
            0 => Cond::True,
            1 => kept.pop().expect("one element"),
            _ => Cond::And(kept),
        }
    }

    /// `OR` that folds constants. Repeats stay: an OR's long lists are alternatives distinct by
    /// construction (a page's ids, a compartment's patients), which a scan for repeats would
    /// make quadratic (22 ms for 2,000 ids).
    pub fn or(conds: Vec<Cond>) -> Cond {
        let mut kept = Vec::with_capacity(conds.len());
        for cond in conds {
            match cond {
                Cond::False => {}
                Cond::True => return Cond::True,
                Cond::Or(inner) => kept.extend(inner),
                other => kept.push(other),
            }
        }
        match kept.len() {
            0 => Cond::False,
            1 => kept.pop().expect("one element"),
            _ => Cond::Or(kept),
        }
    }

    /// This condition with every `InLookup` that `keys` knows replaced by `expr IN (its keys)`.
    pub fn with_lookup_keys(&self, keys: &dyn Fn(&str) -> Option<Vec<Value>>) -> Cond {
        match self {
            Cond::And(conds) => Cond::And(conds.iter().map(|c| c.with_lookup_keys(keys)).collect()),
            Cond::Or(conds) => Cond::Or(conds.iter().map(|c| c.with_lookup_keys(keys)).collect()),
            Cond::Not(inner) => Cond::Not(Box::new(inner.with_lookup_keys(keys))),
            Cond::Exists { select, negated } => Cond::Exists {
                select: Box::new(select.with_lookup_keys(keys)),
                negated: *negated,
            },
            Cond::InLookup { expr, lookup, .. } => match keys(lookup) {
                Some(values) => Cond::In {
                    expr: expr.clone(),
                    values,
                    negated: false,
                },
                None => self.clone(),
            },
            other => other.clone(),
        }
    }

    /// Whether this condition reads a column of the table aliased `alias`, subqueries included (a
    /// subquery's own table of that alias counts too: the answer errs towards yes).
    pub fn reads(&self, alias: &str) -> bool {
        match self {
            Cond::True | Cond::False => false,
            Cond::And(conds) | Cond::Or(conds) => conds.iter().any(|c| c.reads(alias)),
            Cond::Not(inner) => inner.reads(alias),
            Cond::Compare { left, right, .. } => left.reads(alias) || right.reads(alias),
            Cond::In { expr, .. }
            | Cond::IsNull { expr, .. }
            | Cond::Like { expr, .. }
            | Cond::ExactText { expr, .. }
            | Cond::ZeroDate { expr } => expr.reads(alias),
            Cond::Exists { select, .. } => select.reads(alias),
            Cond::InLookup { expr, keys, .. } => expr.reads(alias) || keys.reads(alias),
        }
    }

    /// Whether every column this condition reads is of the table aliased `alias`, without a
    /// subquery.
    pub fn reads_only(&self, alias: &str) -> bool {
        match self {
            Cond::True | Cond::False => true,
            Cond::And(conds) | Cond::Or(conds) => conds.iter().all(|c| c.reads_only(alias)),
            Cond::Not(inner) => inner.reads_only(alias),
            Cond::Compare { left, right, .. } => left.reads_only(alias) && right.reads_only(alias),
            Cond::In { expr, .. }
            | Cond::IsNull { expr, .. }
            | Cond::Like { expr, .. }
            | Cond::ExactText { expr, .. }
            | Cond::ZeroDate { expr } => expr.reads_only(alias),
            Cond::Exists { .. } | Cond::InLookup { .. } => false,
        }
    }

    /// This condition with `f` applied to every expression it tests, through AND, OR and NOT.
    /// A subquery (`EXISTS`, an `InLookup`'s keys) is left as it is.
    pub fn map_exprs(self, f: &impl Fn(Expr) -> Expr) -> Cond {
        match self {
            Cond::And(conds) => Cond::And(conds.into_iter().map(|c| c.map_exprs(f)).collect()),
            Cond::Or(conds) => Cond::Or(conds.into_iter().map(|c| c.map_exprs(f)).collect()),
            Cond::Not(inner) => Cond::Not(Box::new(inner.map_exprs(f))),
            Cond::Compare { left, op, right } => Cond::Compare {
                left: f(left),
                op,
                right: f(right),
            },
            Cond::In {
                expr,
                values,
                negated,
            } => Cond::In {
                expr: f(expr),
                values,
                negated,
            },
            Cond::IsNull { expr, negated } => Cond::IsNull {
                expr: f(expr),
                negated,
            },
            Cond::Like { expr, text, mode } => Cond::Like {
                expr: f(expr),
                text,
                mode,
            },
            Cond::ExactText { expr, text } => Cond::ExactText {
                expr: f(expr),
                text,
            },
            Cond::ZeroDate { expr } => Cond::ZeroDate { expr: f(expr) },
            Cond::InLookup { expr, lookup, keys } => Cond::InLookup {
                expr: f(expr),
                lookup,
                keys,
            },
            other @ (Cond::True | Cond::False | Cond::Exists { .. }) => other,
        }
    }

    /// The `(lookup, keys)` of every `InLookup` in this condition.
    pub fn lookups<'a>(&'a self, found: &mut Vec<(&'a str, &'a Select)>) {
        match self {
            Cond::And(conds) | Cond::Or(conds) => conds.iter().for_each(|c| c.lookups(found)),
            Cond::Not(inner) => inner.lookups(found),
            Cond::Exists { select, .. } => select.filter.lookups(found),
            Cond::InLookup { lookup, keys, .. } => found.push((lookup, keys)),
            _ => {}
        }
    }

    pub fn negate(cond: Cond) -> Cond {
        match cond {
            Cond::True => Cond::False,
            Cond::False => Cond::True,
            Cond::Not(inner) => *inner,
            other => Cond::Not(Box::new(other)),
        }
    }
}

/// Adds `cond` to the operands of an AND unless it is one already (`x AND x` is `x`).
fn push_new(operands: &mut Vec<Cond>, cond: Cond) {
    if !operands.contains(&cond) {
        operands.push(cond);
    }
}
