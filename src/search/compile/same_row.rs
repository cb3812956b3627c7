//! Joins of a mapping's table to itself on its own key, read from the base row instead.
//!
//! Such a join (Open Dental's `slot`: the appointment again, matched only for the statuses whose
//! date is a real slot) yields the base row where its other conditions hold and NULL elsewhere.
//! The engine pays a second key lookup per row for it; reading the base row directly does not:
//! a column of the join becomes `CASE WHEN conditions THEN column END`, and a condition on it
//! that no NULL satisfies, where nothing negates it, becomes `conditions AND condition` on the
//! base columns, which an index on them still serves (`slot.AptDateTime >= ?` becomes
//! `t.AptStatus IN (1, 2, 5) AND t.AptDateTime >= ?`).

use crate::adapter::model::{BASE_ALIAS, Mapping};
use crate::dialect::ast::{CmpOp, Cond, Expr, Join, JoinKind, Select};

/// Leaves out of `select` every LEFT JOIN of `mapping`'s table to itself on its page key (unique,
/// since keyset paging relies on it), rewriting what read the join to read the base row.
pub(super) fn inline_same_row_joins(mapping: &Mapping, select: &mut Select) {
    let mut index = 0;
    while index < select.joins.len() {
        let Some(conditions) = same_row_conditions(mapping, &select.joins[index]) else {
            index += 1;
            continue;
        };
        let join = select.joins.remove(index);
        let row = SameRow {
            alias: &join.table.alias,
            conditions,
        };
        row.select(select);
    }
}

/// The join's conditions beyond the key, on the base row, when `join` matches the base row itself.
fn same_row_conditions(mapping: &Mapping, join: &Join) -> Option<Cond> {
    if join.kind != JoinKind::Left || join.cached.is_some() || join.table.table != mapping.table {
        return None;
    }
    let alias = join.table.alias.as_str();
    let atoms = match &join.on {
        Cond::And(atoms) => atoms.as_slice(),
        other => std::slice::from_ref(other),
    };
    let is_key_equality = |atom: &Cond, key: &str| {
        let Cond::Compare {
            left,
            op: CmpOp::Eq,
            right,
        } = atom
        else {
            return false;
        };
        let is = |expr: &Expr, table: &str| matches!(expr, Expr::Column { table: t, column } if t == table && column == key);
        (is(left, alias) && is(right, BASE_ALIAS)) || (is(left, BASE_ALIAS) && is(right, alias))
    };
    let key: Vec<&str> = mapping
        .page_key
        .iter()
        .map(|&i| &mapping.columns[i])
        .filter(|column| column.alias == BASE_ALIAS)
        .map(|column| column.column.as_str())
        .collect();
    if key.is_empty()
        || key.len() != mapping.page_key.len()
        || !key
            .iter()
            .all(|column| atoms.iter().any(|atom| is_key_equality(atom, column)))
    {
        return None;
    }
    let mut conditions = Vec::new();
    for atom in atoms {
        if key.iter().any(|column| is_key_equality(atom, column)) {
            continue;
        }
        // Only conditions on the joined row itself carry over to the base row.
        if !atom.reads_only(alias) {
            return None;
        }
        conditions.push(atom.clone());
    }
    Some(Cond::and(
        conditions
            .into_iter()
            .map(|c| c.map_exprs(&|e| on_base_row(e, alias)))
            .collect(),
    ))
}

/// `expr` with a column of the join `alias` read from the base row instead.
fn on_base_row(expr: Expr, alias: &str) -> Expr {
    match expr {
        Expr::Column { table, column } if table == alias => Expr::Column {
            table: BASE_ALIAS.into(),
            column,
        },
        other => other,
    }
}

/// The rewrite of what read the join `alias`, given its `conditions` on the base row.
struct SameRow<'a> {
    alias: &'a str,
    conditions: Cond,
}

impl SameRow<'_> {
    fn select(&self, select: &mut Select) {
        select.columns = std::mem::take(&mut select.columns)
            .into_iter()
            .map(|column| self.expr(column))
            .collect();
        for join in &mut select.joins {
            join.on = self.cond(std::mem::replace(&mut join.on, Cond::True), true);
        }
        select.filter = self.cond(std::mem::replace(&mut select.filter, Cond::True), true);
        for term in &mut select.order_by {
            term.expr = self.expr(std::mem::replace(&mut term.expr, Expr::CountAll));
        }
    }

    /// `expr` reading the base row: a column of the join holds only where the conditions do.
    fn expr(&self, expr: Expr) -> Expr {
        match expr {
            Expr::Column { table, column } if table == self.alias => Expr::Case {
                when: Box::new(self.conditions.clone()),
                then: Box::new(Expr::Column {
                    table: BASE_ALIAS.into(),
                    column,
                }),
            },
            // A CASE or a count admits a row where its condition is true, as a WHERE does.
            Expr::CountWhere(conds) => {
                Expr::CountWhere(conds.into_iter().map(|c| self.cond(c, true)).collect())
            }
            Expr::Case { when, then } => Expr::Case {
                when: Box::new(self.cond(*when, true)),
                then: Box::new(self.expr(*then)),
            },
            other => other,
        }
    }

    /// `cond` reading the base row. Where `admits` (the row passes only if `cond` is true, with
    /// nothing negating it), a condition that fails on NULL needs the join's conditions to hold
    /// and then reads the base columns directly.
    fn cond(&self, cond: Cond, admits: bool) -> Cond {
        if !cond.reads(self.alias) {
            return cond;
        }
        match cond {
            Cond::And(conds) => {
                Cond::and(conds.into_iter().map(|c| self.cond(c, admits)).collect())
            }
            Cond::Or(conds) => Cond::or(conds.into_iter().map(|c| self.cond(c, admits)).collect()),
            Cond::Not(inner) => Cond::negate(self.cond(*inner, false)),
            atom if admits && self.fails_on_null(&atom) => Cond::and(vec![
                self.conditions.clone(),
                atom.map_exprs(&|e| self.expr(on_base_row(e, self.alias))),
            ]),
            Cond::Exists {
                mut select,
                negated,
            } => {
                self.select(&mut select);
                Cond::Exists { select, negated }
            }
            atom => atom.map_exprs(&|e| self.expr(e)),
        }
    }

    /// Whether `atom` is never true when a column of the join it reads is NULL (SQL's comparisons,
    /// `IN`, `LIKE` and `IS NOT NULL` on that column).
    fn fails_on_null(&self, atom: &Cond) -> bool {
        let joined =
            |expr: &Expr| matches!(expr, Expr::Column { table, .. } if table == self.alias);
        match atom {
            Cond::Compare { left, right, .. } => joined(left) || joined(right),
            Cond::In { expr, .. }
            | Cond::Like { expr, .. }
            | Cond::ExactText { expr, .. }
            | Cond::InLookup { expr, .. } => joined(expr),
            Cond::IsNull {
                expr,
                negated: true,
            } => joined(expr),
            _ => false,
        }
    }
}
