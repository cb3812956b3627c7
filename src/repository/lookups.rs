//! Cached copies of the small tables that adapters declare as lookups (`lookup = true`), refreshed
//! on an interval, and the rewrite of each query that uses them before it is rendered:
//!
//! - **Key lists.** A filtering lookup's semi-join (`Cond::InLookup`) becomes the list of keys
//!   that pass its conditions, bound as constants. On MySQL/MariaDB a semi-join `t.pc_catid IN
//!   (SELECT ...)` is flattened into a join, and the optimizer may again start from the 15-row
//!   lookup table and reach the big table through an index led by the lookup's column, fetching
//!   every row by primary key. A list of constants leaves it the base table's own access paths.
//! - **Rows.** A lookup join the rest of the query does not read (no filter, sort or other join on
//!   its columns) is left out of the SQL; its columns are filled in from the cached lookup rows by
//!   the base row's foreign key, as the LEFT JOIN would have. The statement is then the plain
//!   single-table query, and the database does no per-row lookup (ARCHITECTURE.md, "Lookups").
//!
//! When no copy is at hand (never read because the database was down, more than
//! `MAX_LOOKUP_KEYS` rows, or a key that more than one lookup row matches), the query runs as
//! compiled: the same rows, only the plan differs.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::db::{Database, DbError};
use crate::dialect::ast::{CachedJoin, Expr, Select, TableRef, Value};
use crate::dialect::fold::fold;
use crate::dialect::{DialectKind, render};

/// Longest list bound in place of a semi-join, and most rows kept of a lookup table; a larger one
/// is no lookup table. Keeps a statement well under SQL Server's 2,100 parameters.
pub const MAX_LOOKUP_KEYS: usize = 1000;

/// Key lists and rows by lookup name (`Appointment:cat`).
#[derive(Debug)]
pub struct LookupCache {
    refresh: Duration,
    keys: Entries<Vec<Value>>,
    rows: Entries<LookupRows>,
}

/// A query ready to render, and how to complete the rows it returns (`Prepared::complete`).
#[derive(Debug)]
pub struct Prepared {
    /// The rewritten query; `None`: the query as given.
    pub select: Option<Select>,
    fills: Vec<Fill>,
    /// Columns appended to the SELECT list for the fills' foreign keys, dropped after filling.
    appended: usize,
}

/// The columns of one left-out lookup join: `(position in the row, position in the lookup row)`.
#[derive(Debug)]
struct Fill {
    rows: Arc<LookupRows>,
    foreign: usize,
    columns: Vec<(usize, usize)>,
}

/// A lookup table's rows as its join reads them: the join's columns, by normalised key.
#[derive(Debug)]
struct LookupRows {
    by_key: HashMap<String, Vec<Value>>,
    /// Every key is a number: a text foreign key is compared as a number (as SQL does).
    numeric_keys: bool,
    dialect: DialectKind,
}

type Entries<T> = Mutex<HashMap<String, Arc<Entry<T>>>>;

#[derive(Debug)]
struct Entry<T> {
    current: Mutex<Current<T>>,
    /// Held while the copy is read from the database, so that one request refreshes it.
    refreshing: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct Current<T> {
    /// `None`: run the query as compiled (never read, or not a lookup's size).
    value: Option<Arc<T>>,
    /// When the copy was last read or a read was last tried.
    checked: Option<Instant>,
}

impl<T> Default for Entry<T> {
    fn default() -> Self {
        Entry {
            current: Mutex::new(Current {
                value: None,
                checked: None,
            }),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }
}

impl<T> Current<T> {
    fn snapshot(&self) -> Current<T> {
        Current {
            value: self.value.clone(),
            checked: self.checked,
        }
    }
}

impl LookupCache {
    pub fn new(refresh: Duration) -> LookupCache {
        LookupCache {
            refresh,
            keys: Mutex::new(HashMap::new()),
            rows: Mutex::new(HashMap::new()),
        }
    }

    /// `select` with each lookup semi-join replaced by its current key list, and each lookup join
    /// nothing else reads replaced by its cached rows (read or refreshed here when due). Never
    /// fails: a lookup without a copy stays in the SQL.
    pub async fn prepare(&self, db: &Database, select: &Select) -> Prepared {
        let mut prepared = Prepared {
            select: None,
            fills: Vec::new(),
            appended: 0,
        };
        let mut wanted = Vec::new();
        select.filter.lookups(&mut wanted);
        if !wanted.is_empty() {
            let mut lists: HashMap<String, Arc<Vec<Value>>> = HashMap::new();
            for (name, keys) in wanted {
                if let Some(list) = self.key_list(db, name, keys).await {
                    lists.insert(name.to_owned(), list);
                }
            }
            prepared.select =
                Some(select.with_lookup_keys(&|name| lists.get(name).map(|l| l.as_ref().clone())));
        }
        if select.joins.iter().all(|join| join.cached.is_none()) {
            return prepared;
        }
        let mut rewritten = prepared.select.take().unwrap_or_else(|| select.clone());
        // Last join first: a lookup linked through an earlier one is left out before it, so that
        // the earlier one is then read by nothing but the SELECT list (its key column for the
        // later fill). `complete` fills in the reverse order.
        for index in (0..rewritten.joins.len()).rev() {
            let join = &rewritten.joins[index];
            let rows = match &join.cached {
                Some(cached) if !read_elsewhere(&rewritten, index) => {
                    self.lookup_rows(db, &join.table, cached).await
                }
                _ => None,
            };
            let Some(rows) = rows else {
                continue;
            };
            let join = rewritten.joins.remove(index);
            let cached = join.cached.expect("only cached joins are left out");
            prepared.fills.extend(fill_columns(
                &mut rewritten,
                &join.table.alias,
                &cached,
                rows,
            ));
        }
        prepared.appended = rewritten.columns.len() - select.columns.len();
        prepared.select = Some(rewritten);
        prepared
    }

    async fn key_list(
        &self,
        db: &Database,
        name: &str,
        select: &Select,
    ) -> Option<Arc<Vec<Value>>> {
        self.current(&self.keys, name, async {
            let rows = db.fetch(&render(db.dialect(), select)).await?;
            let keys: Vec<Value> = rows
                .into_iter()
                .filter_map(|row| row.into_iter().next())
                .filter(|value| *value != Value::Null)
                .collect();
            if keys.len() > MAX_LOOKUP_KEYS {
                tracing::warn!(
                    lookup = name,
                    keys = keys.len(),
                    "lookup has more keys than a list binds; querying it as a semi-join"
                );
                return Ok(None);
            }
            Ok(Some(keys))
        })
        .await
    }

    async fn lookup_rows(
        &self,
        db: &Database,
        table: &TableRef,
        cached: &CachedJoin,
    ) -> Option<Arc<LookupRows>> {
        self.current(&self.rows, &cached.name, async {
            let mut columns = vec![Expr::column(&table.alias, &cached.key)];
            columns.extend(cached.columns.iter().map(|c| Expr::column(&table.alias, c)));
            let select = Select {
                columns,
                from: table.clone(),
                joins: Vec::new(),
                filter: cached.conditions.clone(),
                order_by: Vec::new(),
                limit: Some(MAX_LOOKUP_KEYS as u64 + 1),
                fixed_join_order: false,
            };
            let rows = db.fetch(&render(db.dialect(), &select)).await?;
            if rows.len() > MAX_LOOKUP_KEYS {
                tracing::warn!(
                    lookup = %cached.name,
                    "lookup table has more rows than Portico keeps; joining it"
                );
                return Ok(None);
            }
            Ok(LookupRows::new(&cached.name, db.dialect(), rows))
        })
        .await
    }

    /// The entry's current copy, read with `read` first when it is due. A failed read keeps the
    /// last copy (and logs); concurrent requests serve the last copy while one reads.
    async fn current<T>(
        &self,
        entries: &Entries<T>,
        name: &str,
        read: impl Future<Output = Result<Option<T>, DbError>>,
    ) -> Option<Arc<T>> {
        let entry = {
            let mut entries = entries.lock().expect("lookup cache lock");
            entries.entry(name.to_owned()).or_default().clone()
        };
        let fresh = |c: &Current<T>| c.checked.is_some_and(|at| at.elapsed() < self.refresh);
        let current = entry.current.lock().expect("lookup entry lock").snapshot();
        if fresh(&current) {
            return current.value;
        }
        let _guard = match entry.refreshing.try_lock() {
            Ok(guard) => guard,
            // Another request is reading the copy: serve the last one, or wait for the first.
            Err(_) if current.checked.is_some() => return current.value,
            Err(_) => entry.refreshing.lock().await,
        };
        let current = entry.current.lock().expect("lookup entry lock").snapshot();
        if fresh(&current) {
            return current.value;
        }
        let value = match read.await {
            Ok(value) => value.map(Arc::new),
            Err(error) => {
                tracing::warn!(
                    lookup = name,
                    error = %error.message,
                    "cannot refresh a lookup table's copy; serving the last one"
                );
                current.value
            }
        };
        *entry.current.lock().expect("lookup entry lock") = Current {
            value: value.clone(),
            checked: Some(Instant::now()),
        };
        value
    }
}

/// Whether anything in `select` but the join at `index` and plain columns of it in the SELECT list
/// reads that join's table: a filter, a sort term, another join's `ON`, a computed column.
fn read_elsewhere(select: &Select, index: usize) -> bool {
    let alias = &select.joins[index].table.alias;
    select.from.alias == *alias
        || select
            .columns
            .iter()
            .any(|c| !matches!(c, Expr::Column { .. }) && c.reads(alias))
        || select
            .joins
            .iter()
            .enumerate()
            .any(|(other, j)| other != index && (j.table.alias == *alias || j.on.reads(alias)))
        || select.filter.reads(alias)
        || select.order_by.iter().any(|o| o.expr.reads(alias))
}

/// Points `select`'s columns of the left-out join `alias` at the lookup rows: each becomes a NULL
/// placeholder that `Prepared::complete` fills; the foreign key is selected if it is not already.
/// None when the SELECT list reads nothing of the join (a count): the join is simply left out, as
/// a LEFT JOIN on the lookup's key neither adds nor removes rows.
fn fill_columns(
    select: &mut Select,
    alias: &str,
    cached: &CachedJoin,
    rows: Arc<LookupRows>,
) -> Option<Fill> {
    let mut columns = Vec::new();
    for (position, expr) in select.columns.iter_mut().enumerate() {
        if let Expr::Column { table, column } = expr
            && table == alias
        {
            let in_lookup = cached
                .columns
                .iter()
                .position(|c| c == column)
                .expect("a cached join keeps every column the mapping reads");
            columns.push((position, in_lookup));
            *expr = Expr::Value(Value::Null);
        }
    }
    if columns.is_empty() {
        return None;
    }
    let foreign = match select.columns.iter().position(|c| *c == cached.foreign) {
        Some(position) => position,
        None => {
            select.columns.push(cached.foreign.clone());
            select.columns.len() - 1
        }
    };
    Some(Fill {
        rows,
        foreign,
        columns,
    })
}

impl Prepared {
    /// Fills the columns of the left-out lookup joins into `rows` and drops the columns added for
    /// their keys: the rows are then those of the query as compiled.
    pub fn complete(&self, rows: &mut [Vec<Value>]) {
        if self.fills.is_empty() {
            return;
        }
        for row in rows.iter_mut() {
            // Earlier joins first: a later lookup's key may be a column an earlier fill sets.
            for fill in self.fills.iter().rev() {
                let found = fill.rows.find(&row[fill.foreign]);
                for &(position, in_lookup) in &fill.columns {
                    row[position] = found.map_or(Value::Null, |r| r[in_lookup].clone());
                }
            }
            row.truncate(row.len() - self.appended);
        }
    }
}

impl LookupRows {
    /// `None` when two rows share a key: the join would then repeat base rows, which a copy by
    /// key cannot do.
    fn new(name: &str, dialect: DialectKind, rows: Vec<Vec<Value>>) -> Option<LookupRows> {
        let numeric_keys = rows
            .iter()
            .all(|row| matches!(row.first(), Some(Value::Int(_) | Value::Null)));
        let mut by_key = HashMap::with_capacity(rows.len());
        for mut row in rows {
            let key = row.remove(0);
            let Some(normalised) = join_key(&key, dialect, false) else {
                continue;
            };
            if by_key.insert(normalised, row).is_some() {
                tracing::warn!(
                    lookup = name,
                    "lookup table has a key that more than one row matches; joining it"
                );
                return None;
            }
        }
        Some(LookupRows {
            by_key,
            numeric_keys,
            dialect,
        })
    }

    /// The lookup row the join would attach to a base row whose foreign key is `foreign`.
    fn find(&self, foreign: &Value) -> Option<&Vec<Value>> {
        self.by_key
            .get(&join_key(foreign, self.dialect, self.numeric_keys)?)
    }
}

/// A value as the database's `=` compares it: text by the dialect's default collation (MySQL and
/// MariaDB ignore case, accents and trailing spaces; SQL Server case and trailing spaces; SQLite
/// neither), and, against numeric keys, text as the number it spells. `None`: it equals nothing.
fn join_key(value: &Value, dialect: DialectKind, numeric: bool) -> Option<String> {
    Some(match value {
        Value::Null | Value::Undecodable(_) => return None,
        Value::Int(number) => number.to_string(),
        Value::Text(text) if numeric => text.trim().parse::<i64>().ok()?.to_string(),
        Value::Text(text) => match dialect {
            DialectKind::Mysql => fold(text.trim_end_matches(' ')),
            DialectKind::Mssql => text.trim_end_matches(' ').to_lowercase(),
            DialectKind::Sqlite => text.clone(),
        },
        Value::Bool(flag) => i64::from(*flag).to_string(),
        Value::Decimal(number) => number.normalize().to_string(),
        other => format!("{other:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A MySQL lookup copy of `rows` (key first), which must make one.
    fn copy(name: &str, rows: Vec<Vec<Value>>) -> Arc<LookupRows> {
        Arc::new(LookupRows::new(name, DialectKind::Mysql, rows).expect("a copy"))
    }

    /// A lookup join keyed by its `id`, without conditions of its own.
    fn cached_by_id(name: &str, foreign: Expr, columns: &[&str]) -> CachedJoin {
        CachedJoin {
            name: name.into(),
            key: "id".into(),
            foreign,
            conditions: crate::dialect::ast::Cond::True,
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    /// `SELECT columns FROM table t`, the joins already left out.
    fn base_select(table: &str, columns: Vec<Expr>) -> Select {
        Select {
            columns,
            from: TableRef {
                table: table.into(),
                alias: "t".into(),
            },
            joins: Vec::new(),
            filter: crate::dialect::ast::Cond::True,
            order_by: Vec::new(),
            limit: None,
            fixed_join_order: false,
        }
    }

    #[test]
    fn keys_compare_as_each_dialect_compares_them() {
        let text = |s: &str| Value::Text(s.into());
        assert_eq!(
            join_key(&text("Müller  "), DialectKind::Mysql, false),
            join_key(&text("muller"), DialectKind::Mysql, false)
        );
        assert_eq!(
            join_key(&text("White "), DialectKind::Mssql, false),
            join_key(&text("white"), DialectKind::Mssql, false)
        );
        assert_ne!(
            join_key(&text("White"), DialectKind::Sqlite, false),
            join_key(&text("white"), DialectKind::Sqlite, false)
        );
        assert_eq!(
            join_key(&text(" 12"), DialectKind::Mysql, true),
            join_key(&Value::Int(12), DialectKind::Mysql, true)
        );
        assert_eq!(join_key(&text("x12"), DialectKind::Mysql, true), None);
        assert_eq!(join_key(&Value::Null, DialectKind::Mysql, false), None);
    }

    #[test]
    fn a_key_two_rows_share_makes_no_copy() {
        let rows = vec![
            vec![Value::Text("Female".into()), Value::Text("F".into())],
            vec![Value::Text("female".into()), Value::Text("f".into())],
        ];
        assert!(LookupRows::new("Patient:sex", DialectKind::Mysql, rows.clone()).is_none());
        let copy = LookupRows::new("Patient:sex", DialectKind::Sqlite, rows).expect("distinct");
        assert_eq!(
            copy.find(&Value::Text("female".into())),
            Some(&vec![Value::Text("f".into())])
        );
        assert_eq!(copy.find(&Value::Text("FEMALE".into())), None);
    }

    #[test]
    fn filling_restores_the_compiled_rows_shape() {
        let copy = copy(
            "Patient:gp",
            vec![vec![Value::Int(7), Value::Text("Ada".into())]],
        );
        let cached = cached_by_id("Patient:gp", Expr::column("t", "providerID"), &["fname"]);
        let mut select = base_select(
            "patient_data",
            vec![Expr::column("t", "pid"), Expr::column("gp", "fname")],
        );
        let fill = fill_columns(&mut select, "gp", &cached, copy).expect("gp.fname is selected");
        assert_eq!(
            select.columns,
            vec![
                Expr::column("t", "pid"),
                Expr::Value(Value::Null),
                Expr::column("t", "providerID")
            ]
        );
        let prepared = Prepared {
            select: Some(select),
            fills: vec![fill],
            appended: 1,
        };
        let mut rows = vec![
            vec![Value::Int(1), Value::Null, Value::Text("7".into())],
            vec![Value::Int(2), Value::Null, Value::Int(8)],
            vec![Value::Int(3), Value::Null, Value::Null],
        ];
        prepared.complete(&mut rows);
        assert_eq!(
            rows,
            vec![
                vec![Value::Int(1), Value::Text("Ada".into())],
                vec![Value::Int(2), Value::Null],
                vec![Value::Int(3), Value::Null],
            ]
        );
    }

    #[test]
    fn a_count_leaves_its_lookups_out_without_selecting_their_keys() {
        // `COUNT(*), t.providerID` without GROUP BY is an error on SQL Server: nothing is added.
        let copy = copy(
            "Patient:gp",
            vec![vec![Value::Int(7), Value::Text("Ada".into())]],
        );
        let cached = cached_by_id("Patient:gp", Expr::column("t", "providerID"), &["fname"]);
        let mut select = base_select("patient_data", vec![Expr::CountAll]);
        assert!(fill_columns(&mut select, "gp", &cached, copy).is_none());
        assert_eq!(select.columns, vec![Expr::CountAll]);
    }

    #[test]
    fn a_lookup_linked_through_another_is_filled_after_it() {
        // Coverage: payer by t.provider (text against numeric ids), then the plan type by the
        // payer's ins_type_code. `prepare` leaves the later join out first.
        let payers = copy(
            "Coverage:payer",
            vec![vec![
                Value::Int(5),
                Value::Text("Acme".into()),
                Value::Int(2),
            ]],
        );
        let kinds = copy(
            "Coverage:kind",
            vec![vec![Value::Int(2), Value::Text("Medicare".into())]],
        );
        let payer = cached_by_id(
            "Coverage:payer",
            Expr::column("t", "provider"),
            &["name", "ins_type_code"],
        );
        let kind = cached_by_id(
            "Coverage:kind",
            Expr::column("payer", "ins_type_code"),
            &["type"],
        );
        let mut select = base_select(
            "insurance_data",
            vec![
                Expr::column("t", "id"),
                Expr::column("payer", "name"),
                Expr::column("kind", "type"),
            ],
        );
        let kind_fill =
            fill_columns(&mut select, "kind", &kind, kinds).expect("kind.type is selected");
        let payer_fill =
            fill_columns(&mut select, "payer", &payer, payers).expect("payer.name is selected");
        assert_eq!(
            select.columns,
            vec![
                Expr::column("t", "id"),
                Expr::Value(Value::Null),
                Expr::Value(Value::Null),
                Expr::Value(Value::Null),
                Expr::column("t", "provider"),
            ]
        );
        let prepared = Prepared {
            select: Some(select),
            fills: vec![kind_fill, payer_fill],
            appended: 2,
        };
        let mut rows = vec![
            vec![
                Value::Int(1),
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Text("5".into()),
            ],
            vec![
                Value::Int(2),
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Text("9".into()),
            ],
        ];
        prepared.complete(&mut rows);
        assert_eq!(
            rows,
            vec![
                vec![
                    Value::Int(1),
                    Value::Text("Acme".into()),
                    Value::Text("Medicare".into())
                ],
                vec![Value::Int(2), Value::Null, Value::Null],
            ]
        );
    }
}
