//! The query-plan advisor (`portico check --explain`, and a summary logged by `portico serve` at
//! start-up): builds the statements Portico sends for every advertised search parameter, sort,
//! read by id and collection of every mapping, asks the live database for their plans (MySQL's
//! and MariaDB's `EXPLAIN FORMAT=JSON`, SQLite's `EXPLAIN QUERY PLAN`, SQL Server's SHOWPLAN XML:
//! nothing is run), flags full scans and sorts over large tables, and names the index that would
//! serve each. It prints `CREATE INDEX` statements; it never runs one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use crate::access::{Access, Interaction};
use crate::adapter::map::cell_text;
use crate::adapter::model::{ColumnRef, Mapping, ResourceDef, SearchKind, TokenTarget};
use crate::dialect::ast::{Cond, Expr, Select, Value};
use crate::dialect::{DialectKind, RenderedQuery, quote_ident};
use crate::repository::Repository;
use crate::search::compile::{
    collection_select, page_select, parse_id, plan, row_access, rows_select,
};
use crate::search::parse::{DEFAULT_COUNT, parse};

/// Tables with fewer rows than this are read whole without harm.
pub const DEFAULT_MIN_ROWS: u64 = 10_000;

/// The leading columns of an index on one table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct IndexColumns {
    pub table: String,
    pub columns: Vec<String>,
}

/// A statement Portico sends, the request it serves, and the index that would serve it.
struct Probe {
    request: String,
    select: Select,
    wanted: Option<IndexColumns>,
    /// The statement looks rows up by a value (a search, a read, child rows), so walking a whole
    /// index in order is a scan; a sort alone is served by such a walk (it stops at the limit).
    seeks: bool,
}

/// A large table that some requests' statements read whole or sort.
#[derive(Debug, Clone)]
pub struct Finding {
    pub table: String,
    /// The table's rows (MySQL/MariaDB: the server's estimate; SQLite: counted; SQL Server: as
    /// `sys.partitions` keeps them).
    pub rows: u64,
    /// Read whole, filtering as it goes (MySQL `ALL`, or a full `index` scan with a condition;
    /// SQLite `SCAN` without an index; SQL Server `Table Scan` or unordered `Clustered Index
    /// Scan`, or an `Index Scan` or ordered `Clustered Index Scan` with a condition).
    pub scan: bool,
    /// Sorted outside an index (MySQL filesort, SQLite temporary B-tree, SQL Server `Sort`).
    pub sort: bool,
    /// The requests whose statements do this (`Appointment?patient=`).
    pub requests: Vec<String>,
    pub advice: Advice,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Advice {
    /// The statement that would add the index. Portico never runs it.
    Create(String),
    /// An index leading with the wanted columns exists; the database chose not to use it.
    Unused { index: String },
    /// No single index serves these statements (a word search, a match over several columns, a
    /// subquery).
    Nothing,
}

impl Finding {
    /// One line for a log or a terminal: what the plan does, where, and for which requests.
    pub fn summary(&self) -> String {
        let what = match (self.scan, self.sort) {
            (true, true) => "reads and sorts all of",
            (true, false) => "reads all of",
            _ => "sorts",
        };
        format!(
            "{} {what} {} (about {} rows)",
            self.requests.join(", "),
            self.table,
            self.rows
        )
    }
}

/// What a plan does with one table of the statement, by the alias the statement gives it.
#[derive(Debug, PartialEq)]
struct TableAccess {
    alias: String,
    how: Reading,
    /// Rows the plan expects to read (MySQL/MariaDB; SQL Server: the operator's estimate over
    /// all its executions). SQLite names none.
    rows: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// Rows found by key or range.
    Lookup,
    /// A whole index in its order, filtering as it goes (MySQL `index`, SQLite `SCAN t USING
    /// INDEX i`, SQL Server `Index Scan` or an ordered `Clustered Index Scan`): a sort's plan,
    /// and a scan for a statement that seeks.
    IndexWalk,
    /// The whole table (MySQL `ALL`, SQLite `SCAN t`, SQL Server `Table Scan` or an unordered
    /// `Clustered Index Scan`).
    Whole,
}

#[derive(Debug, Default, PartialEq)]
struct QueryPlan {
    tables: Vec<TableAccess>,
    sorts: bool,
}

/// Explains every statement the adapter's advertised requests make and returns the large tables
/// they read whole or sort, largest first, each with the index that would serve it.
pub async fn advise(repository: &Repository, min_rows: u64) -> anyhow::Result<Vec<Finding>> {
    let probes = probes(repository).await?;
    let mut catalogue = Catalogue::default();
    let mut grouped: BTreeMap<(String, Advice), Finding> = BTreeMap::new();
    for probe in probes {
        let sent = repository.sent_statement(&probe.select).await;
        let query_plan = explain(repository, &sent).await?;
        let tables = tables_by_alias(&probe.select);
        let base_alias = &probe.select.from.alias;
        for access in &query_plan.tables {
            let Some(table) = tables.get(access.alias.as_str()) else {
                continue;
            };
            let scan = match access.how {
                Reading::Whole => true,
                Reading::IndexWalk => probe.seeks,
                Reading::Lookup => false,
            };
            let sort = query_plan.sorts && &access.alias == base_alias;
            if !scan && !sort {
                continue;
            }
            let rows = catalogue.rows(repository, table).await?;
            // A sort reads what the plan expects to read of the base table, all of it when
            // scanned; SQLite names no estimate, and its scans are whole tables.
            let sorted_rows = access.rows.unwrap_or(if scan { rows } else { 0 });
            let scan = scan && rows >= min_rows;
            let sort = sort && sorted_rows >= min_rows;
            if !scan && !sort {
                continue;
            }
            let advice = match &probe.wanted {
                Some(wanted) if &wanted.table == table => {
                    catalogue.advice(repository, wanted).await?
                }
                _ => Advice::Nothing,
            };
            let finding = grouped
                .entry((table.clone(), advice.clone()))
                .or_insert_with(|| Finding {
                    table: table.clone(),
                    rows,
                    scan: false,
                    sort: false,
                    requests: Vec::new(),
                    advice,
                });
            finding.scan |= scan;
            finding.sort |= sort;
            if !finding.requests.contains(&probe.request) {
                finding.requests.push(probe.request.clone());
            }
        }
    }
    let mut findings: Vec<Finding> = grouped.into_values().collect();
    findings.sort_by(|a, b| b.rows.cmp(&a.rows).then(a.table.cmp(&b.table)));
    Ok(findings)
}

/// The statements to explain: per mapping, a search by each advertised parameter (with a value
/// taken from the mapping's first row where it can), a sort by each sortable one, a read by id
/// (what `_include` runs too) and each collection's child rows for one parent.
async fn probes(repository: &Repository) -> anyhow::Result<Vec<Probe>> {
    let adapter = &repository.adapter;
    let everything = Access::everything();
    let now = chrono::Utc::now()
        .with_timezone(&adapter.timezone)
        .naive_local();
    // One served row per mapping: real ids for references and reads, and real parent keys.
    let mut samples: HashMap<String, (Option<String>, Arc<Vec<Value>>)> = HashMap::new();
    let mut sample_ids: HashMap<&str, String> = HashMap::new();
    for (resource_type, def) in &adapter.resources {
        for (index, mapping) in def.mappings.iter().enumerate() {
            let scanned = repository
                .scan(index, mapping, Cond::True, None, 1)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {}", mapping.name, e.message))?;
            let Some((outcome, row)) = scanned.outcomes.into_iter().next() else {
                continue;
            };
            let id = outcome.ok().map(|resource| resource.id);
            if let Some(id) = &id {
                sample_ids
                    .entry(resource_type.as_str())
                    .or_insert_with(|| id.clone());
            }
            samples.insert(mapping.name.clone(), (id, row));
        }
    }
    let mut probes = Vec::new();
    for (resource_type, def) in &adapter.resources {
        for mapping in &def.mappings {
            let label = |request: String| {
                if def.mappings.len() > 1 {
                    format!("{request} ({})", mapping.name)
                } else {
                    request
                }
            };
            let sample = samples.get(&mapping.name);
            let sample_row = sample.map(|(_, row)| row.as_slice());
            for (name, param) in &mapping.search {
                let wanted = wanted_for_parameter(mapping, &param.kind, param.collection.is_some());
                let value = sample_value(&param.kind, mapping, sample_row, &sample_ids);
                if let Some(value) = value {
                    let pairs = [(name.clone(), value)];
                    if let Some(select) = search_select(repository, def, mapping, &pairs, now) {
                        probes.push(Probe {
                            request: label(format!("{resource_type}?{name}=")),
                            select,
                            seeks: true,
                            wanted: wanted.filter(|_| {
                                !is_string(&param.kind)
                                    || repository.db.dialect() == DialectKind::Mysql
                            }),
                        });
                    }
                }
                if param.sortable {
                    let pairs = [("_sort".to_owned(), name.clone())];
                    if let Some(select) = search_select(repository, def, mapping, &pairs, now) {
                        let wanted = sort_wanted(mapping, &select);
                        probes.push(Probe {
                            request: label(format!("{resource_type}?_sort={name}")),
                            select,
                            wanted,
                            seeks: false,
                        });
                    }
                }
            }
            let Some((id, row)) = sample else { continue };
            if let Some(target) = id.as_deref().and_then(|id| parse_id(mapping, id)) {
                let admitted = row_access(
                    def,
                    mapping,
                    &everything,
                    Interaction::Read,
                    adapter.timezone,
                    now,
                );
                let columns: Vec<&ColumnRef> = mapping
                    .id
                    .columns
                    .iter()
                    .map(|&i| &mapping.columns[i])
                    .collect();
                probes.push(Probe {
                    request: label(format!("{resource_type}/{{id}}")),
                    select: rows_select(mapping, &admitted, target.cond, Some(2)),
                    wanted: same_table(mapping, &columns),
                    seeks: true,
                });
            }
            for collection in &mapping.collections {
                let parent: Vec<Value> = collection
                    .match_parent
                    .iter()
                    .map(|&i| row[i].clone())
                    .collect();
                if parent.iter().any(|value| cell_text(value).is_none()) {
                    continue;
                }
                let columns = collection.columns[..collection.match_parent.len()]
                    .iter()
                    .map(|column| column.column.clone())
                    .collect();
                probes.push(Probe {
                    request: label(format!("{resource_type} {} rows", collection.name)),
                    select: collection_select(collection, &[parent]),
                    wanted: Some(IndexColumns {
                        table: collection.table.clone(),
                        columns,
                    }),
                    seeks: true,
                });
            }
        }
    }
    Ok(probes)
}

/// The page SELECT of `mapping`'s branch for a search by `pairs`, when the search reaches it.
fn search_select(
    repository: &Repository,
    def: &ResourceDef,
    mapping: &Mapping,
    pairs: &[(String, String)],
    now: chrono::NaiveDateTime,
) -> Option<Select> {
    let adapter = &repository.adapter;
    let request = parse(pairs).ok()?;
    let plan = plan(
        def,
        &adapter.resources,
        request,
        false,
        adapter.timezone,
        now,
    )
    .ok()?;
    let branch = plan
        .branches
        .iter()
        .find(|branch| branch.mapping.name == mapping.name && branch.cond != Cond::False)?;
    let admitted = row_access(
        def,
        mapping,
        &Access::everything(),
        Interaction::Search,
        adapter.timezone,
        now,
    );
    Some(page_select(
        branch,
        &admitted,
        None,
        DEFAULT_COUNT as u64 + 1,
    ))
}

fn is_string(kind: &SearchKind) -> bool {
    matches!(kind, SearchKind::String { .. })
}

/// A value to search `kind` by: from the mapping's sample row where the column is its own, else
/// a plausible constant. `None`: the parameter is not worth a probe (a code compared against a
/// short code list gains nothing from an index) or has no value to take.
fn sample_value(
    kind: &SearchKind,
    mapping: &Mapping,
    row: Option<&[Value]>,
    sample_ids: &HashMap<&str, String>,
) -> Option<String> {
    let cell = |column: &ColumnRef| -> Option<String> {
        let index = mapping.column_index(column)?;
        cell_text(&row?[index])
    };
    match kind {
        SearchKind::String { columns, .. } => {
            let text = columns.first().and_then(cell).unwrap_or_default();
            let prefix: String = text
                .chars()
                .filter(|c| c.is_alphanumeric())
                .take(3)
                .collect();
            Some(if prefix.is_empty() {
                "a".to_owned()
            } else {
                prefix
            })
        }
        SearchKind::Token { targets } => match targets.as_slice() {
            [
                TokenTarget::Column {
                    column, map: None, ..
                },
            ] => Some(cell(column).unwrap_or_else(|| "1".to_owned())),
            _ => None,
        },
        SearchKind::Date { .. } => Some("2020-01-01".to_owned()),
        SearchKind::Reference { targets } => targets.iter().find_map(|target| {
            let id = sample_ids.get(target.target_type.as_str())?;
            Some(format!("{}/{id}", target.target_type))
        }),
    }
}

/// The index a search by a parameter of `kind` would use: its one column (a reference's key
/// columns), when the mapping's own tables hold it.
fn wanted_for_parameter(
    mapping: &Mapping,
    kind: &SearchKind,
    in_collection: bool,
) -> Option<IndexColumns> {
    if in_collection {
        return None;
    }
    let columns: Vec<&ColumnRef> = match kind {
        SearchKind::String {
            columns,
            words: false,
        } if columns.len() == 1 => vec![&columns[0]],
        SearchKind::Token { targets } => match targets.as_slice() {
            [TokenTarget::Column { column, .. }] => vec![column],
            _ => return None,
        },
        SearchKind::Date { column, .. } => vec![column],
        SearchKind::Reference { targets } if targets.len() == 1 => {
            targets[0].columns.iter().collect()
        }
        _ => return None,
    };
    same_table(mapping, &columns)
}

/// A sort's index: the sort columns, then the key columns (the total order Portico pages in).
fn sort_wanted(mapping: &Mapping, select: &Select) -> Option<IndexColumns> {
    let columns: Vec<ColumnRef> = select
        .order_by
        .iter()
        .filter_map(|term| match &term.expr {
            Expr::Column { table, column } => Some(ColumnRef {
                alias: table.clone(),
                column: column.clone(),
            }),
            _ => None,
        })
        .collect();
    if columns.len() != select.order_by.len() {
        return None;
    }
    same_table(mapping, &columns.iter().collect::<Vec<_>>())
}

/// `columns` as an index of their table, when they all sit in one.
fn same_table(mapping: &Mapping, columns: &[&ColumnRef]) -> Option<IndexColumns> {
    let table = mapping.table_of(columns.first()?);
    if columns
        .iter()
        .any(|column| mapping.table_of(column) != table)
    {
        return None;
    }
    let mut names: Vec<String> = Vec::new();
    for column in columns {
        if !names.iter().any(|n| n.eq_ignore_ascii_case(&column.column)) {
            names.push(column.column.clone());
        }
    }
    Some(IndexColumns {
        table: table.to_owned(),
        columns: names,
    })
}

/// Table by alias, for the tables a statement names.
fn tables_by_alias(select: &Select) -> HashMap<&str, String> {
    let mut aliases = HashMap::new();
    aliases.insert(select.from.alias.as_str(), select.from.table.clone());
    for join in &select.joins {
        aliases.insert(join.table.alias.as_str(), join.table.table.clone());
    }
    aliases
}

/// The database's plan for `sent`, bound as Portico binds it.
async fn explain(repository: &Repository, sent: &RenderedQuery) -> anyhow::Result<QueryPlan> {
    let dialect = repository.db.dialect();
    if dialect == DialectKind::Mssql {
        let xml = repository
            .db
            .mssql_showplan(sent)
            .await
            .map_err(|e| anyhow::anyhow!("SHOWPLAN_XML {}: {}", sent.sql, e.message))?;
        return mssql_plan(&xml).map_err(|e| anyhow::anyhow!("SHOWPLAN_XML {}: {e}", sent.sql));
    }
    let prefix = match dialect {
        DialectKind::Mysql => crate::db::MYSQL_EXPLAIN,
        _ => "EXPLAIN QUERY PLAN ",
    };
    let rows = repository
        .db
        .fetch(&RenderedQuery {
            sql: format!("{prefix}{}", sent.sql),
            params: sent.params.clone(),
        })
        .await
        .map_err(|e| anyhow::anyhow!("EXPLAIN {}: {}", sent.sql, e.message))?;
    if dialect == DialectKind::Mysql {
        let text = rows.first().and_then(|row| text_of(row.first()?));
        let json: serde_json::Value = serde_json::from_str(text.as_deref().unwrap_or(""))
            .map_err(|e| anyhow::anyhow!("EXPLAIN FORMAT=JSON answered no JSON: {e}"))?;
        Ok(mysql_plan(&json))
    } else {
        let details: Vec<String> = rows.iter().filter_map(|row| text_of(row.last()?)).collect();
        Ok(sqlite_plan(&details))
    }
}

fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::Text(text) => Some(text.clone()),
        Value::Bytes(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        _ => None,
    }
}

/// Reads MySQL's and MariaDB's `EXPLAIN FORMAT=JSON` (their shapes differ; both name each table
/// access with `table_name` and `access_type`, and a sort with `filesort` or `using_filesort`).
/// `index` is a walk of a whole index in its order: how a sort by an index reads (stopping at the
/// page's limit), and how MariaDB searches by an unindexed column when it hopes to fill the page
/// early.
fn mysql_plan(json: &serde_json::Value) -> QueryPlan {
    fn walk(value: &serde_json::Value, plan: &mut QueryPlan) {
        match value {
            serde_json::Value::Object(object) => {
                if let (Some(alias), Some(access)) = (
                    object.get("table_name").and_then(|v| v.as_str()),
                    object.get("access_type").and_then(|v| v.as_str()),
                ) {
                    let rows = ["rows", "rows_examined_per_scan"]
                        .iter()
                        .find_map(|key| object.get(*key)?.as_u64());
                    plan.tables.push(TableAccess {
                        alias: alias.to_owned(),
                        how: match access {
                            "ALL" => Reading::Whole,
                            "index" => Reading::IndexWalk,
                            _ => Reading::Lookup,
                        },
                        rows,
                    });
                }
                if object.contains_key("filesort")
                    || object.get("using_filesort") == Some(&serde_json::Value::Bool(true))
                {
                    plan.sorts = true;
                }
                object.values().for_each(|v| walk(v, plan));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, plan)),
            _ => {}
        }
    }
    let mut plan = QueryPlan::default();
    walk(json, &mut plan);
    plan
}

/// Reads SQLite's `EXPLAIN QUERY PLAN` details: `SCAN t` reads a table whole, `SCAN t USING
/// INDEX i` walks an index in its order, `SEARCH t ...` looks rows up, and `USE TEMP B-TREE FOR
/// ORDER BY` sorts.
fn sqlite_plan(details: &[String]) -> QueryPlan {
    let mut plan = QueryPlan::default();
    for detail in details {
        if let Some(rest) = detail.strip_prefix("SCAN ") {
            let rest = rest.strip_prefix("TABLE ").unwrap_or(rest);
            let mut words = rest.split_whitespace();
            let Some(mut alias) = words.next() else {
                continue;
            };
            let rest: Vec<&str> = words.collect();
            if let ["AS", named, ..] = rest.as_slice() {
                alias = *named;
            }
            plan.tables.push(TableAccess {
                alias: alias.to_owned(),
                how: if rest.contains(&"INDEX") {
                    Reading::IndexWalk
                } else {
                    Reading::Whole
                },
                rows: None,
            });
        } else if detail.starts_with("USE TEMP B-TREE FOR") && detail.contains("ORDER BY") {
            plan.sorts = true;
        }
    }
    plan
}

/// Reads SQL Server's SHOWPLAN XML. Each `RelOp` is one operator, with its physical operation and
/// the rows it expects per execution; the table it reads is the first `Object` inside it that no
/// operator nested in it holds. `Table Scan` reads a heap whole and `Clustered Index Scan` the
/// table whole, unless ordered: a walk in key order, which stops at the statement's TOP as MySQL's
/// `index` stops at its LIMIT. `Index Scan` walks a whole index, seeks and lookups find rows by
/// key, and a `Sort` (or `Top N Sort`) sorts.
fn mssql_plan(xml: &str) -> anyhow::Result<QueryPlan> {
    /// One `RelOp`, as far as it was read.
    struct Operator {
        physical_op: String,
        rows: Option<u64>,
        /// The table its `Object` names, by the statement's alias (else by the table's name).
        alias: Option<String>,
        /// Its `IndexScan`'s `Ordered`: the scan follows the index's key order.
        ordered: Option<bool>,
    }
    let mut reader = Reader::from_str(xml);
    let mut operators: Vec<Operator> = Vec::new();
    // The operators whose start tag was read and end tag not yet: the last one holds what follows.
    let mut open: Vec<usize> = Vec::new();
    loop {
        let event = reader
            .read_event()
            .map_err(|e| anyhow::anyhow!("unreadable XML: {e}"))?;
        let (element, empty) = match &event {
            Event::Start(element) => (element, false),
            Event::Empty(element) => (element, true),
            Event::End(element) => {
                if element.local_name().as_ref() == b"RelOp" {
                    open.pop();
                }
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        match element.local_name().as_ref() {
            b"RelOp" => {
                let number = |name: &[u8]| -> anyhow::Result<Option<f64>> {
                    Ok(xml_attribute(element, name)?.and_then(|text| text.trim().parse().ok()))
                };
                let executions = 1.0
                    + number(b"EstimateRebinds")?.unwrap_or(0.0)
                    + number(b"EstimateRewinds")?.unwrap_or(0.0);
                operators.push(Operator {
                    physical_op: xml_attribute(element, b"PhysicalOp")?.unwrap_or_default(),
                    // Per execution; an operator inside a loop runs once per outer row.
                    rows: number(b"EstimateRows")?
                        .map(|rows| (rows * executions).ceil().max(0.0) as u64),
                    alias: None,
                    ordered: None,
                });
                if !empty {
                    open.push(operators.len() - 1);
                }
            }
            b"Object" => {
                let Some(operator) = open.last().map(|&index| &mut operators[index]) else {
                    continue;
                };
                if operator.alias.is_none()
                    && let Some(table) = xml_attribute(element, b"Table")?
                {
                    let named = xml_attribute(element, b"Alias")?.unwrap_or(table);
                    operator.alias = Some(unbracket(&named));
                }
            }
            b"IndexScan" => {
                let Some(operator) = open.last().map(|&index| &mut operators[index]) else {
                    continue;
                };
                if operator.ordered.is_none() {
                    let ordered = xml_attribute(element, b"Ordered")?;
                    operator.ordered = Some(matches!(ordered.as_deref(), Some("true" | "1")));
                }
            }
            _ => {}
        }
    }
    let mut plan = QueryPlan::default();
    for operator in operators {
        let ordered = operator.ordered == Some(true);
        let how = match operator.physical_op.as_str() {
            "Sort" | "Top N Sort" => {
                plan.sorts = true;
                continue;
            }
            "Table Scan" => Reading::Whole,
            "Clustered Index Scan" if ordered => Reading::IndexWalk,
            "Clustered Index Scan" => Reading::Whole,
            "Index Scan" => Reading::IndexWalk,
            "Index Seek" | "Clustered Index Seek" | "Key Lookup" | "RID Lookup" => Reading::Lookup,
            _ => continue,
        };
        let Some(alias) = operator.alias else {
            continue;
        };
        plan.tables.push(TableAccess {
            alias,
            how,
            rows: operator.rows,
        });
    }
    Ok(plan)
}

/// The unescaped value of `element`'s attribute `name` (namespace prefix ignored).
fn xml_attribute(element: &BytesStart<'_>, name: &[u8]) -> anyhow::Result<Option<String>> {
    for attribute in element.attributes() {
        let attribute = attribute.map_err(|e| anyhow::anyhow!("unreadable XML attribute: {e}"))?;
        if attribute.key.local_name().as_ref() == name {
            let value = attribute
                .unescape_value()
                .map_err(|e| anyhow::anyhow!("unreadable XML attribute: {e}"))?;
            return Ok(Some(value.into_owned()));
        }
    }
    Ok(None)
}

/// `[name]` as SQL Server quotes it in a plan, as the name itself.
fn unbracket(quoted: &str) -> String {
    match quoted
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
    {
        Some(name) => name.replace("]]", "]"),
        None => quoted.to_owned(),
    }
}

/// Table sizes and indexes, read once per table.
#[derive(Default)]
struct Catalogue {
    rows: HashMap<String, u64>,
    indexes: HashMap<String, Vec<(String, Vec<String>)>>,
}

impl Catalogue {
    async fn rows(&mut self, repository: &Repository, table: &str) -> anyhow::Result<u64> {
        if let Some(&rows) = self.rows.get(table) {
            return Ok(rows);
        }
        let dialect = repository.db.dialect();
        let query = match dialect {
            DialectKind::Mysql => RenderedQuery {
                sql: "SELECT TABLE_ROWS FROM information_schema.TABLES \
                      WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?"
                    .into(),
                params: vec![Value::Text(table.to_owned())],
            },
            // The heap's or the clustered index's rows, as SQL Server keeps them (no count).
            // QUOTENAME: the name as Portico's statements quote it, dots and spaces included.
            DialectKind::Mssql => RenderedQuery {
                sql: "SELECT SUM(p.rows) FROM sys.partitions AS p \
                      WHERE p.object_id = OBJECT_ID(QUOTENAME(@P1)) AND p.index_id IN (0, 1)"
                    .into(),
                params: vec![Value::Text(table.to_owned())],
            },
            DialectKind::Sqlite => RenderedQuery {
                sql: format!("SELECT COUNT(*) FROM {}", quote_ident(dialect, table)),
                params: Vec::new(),
            },
        };
        let found = repository
            .db
            .fetch(&query)
            .await
            .map_err(|e| anyhow::anyhow!("rows of {table}: {}", e.message))?;
        let rows = match found.first().and_then(|row| row.first()) {
            Some(Value::Int(n)) => (*n).max(0) as u64,
            Some(Value::Decimal(n)) => n.to_string().parse().unwrap_or(0),
            Some(other) => cell_text(other).and_then(|t| t.parse().ok()).unwrap_or(0),
            None => 0,
        };
        self.rows.insert(table.to_owned(), rows);
        Ok(rows)
    }

    /// Create `wanted`, or name the existing index that leads with its columns.
    async fn advice(
        &mut self,
        repository: &Repository,
        wanted: &IndexColumns,
    ) -> anyhow::Result<Advice> {
        let dialect = repository.db.dialect();
        if !self.indexes.contains_key(&wanted.table) {
            let query = match dialect {
                DialectKind::Mysql => RenderedQuery {
                    sql: "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS \
                          WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? \
                          ORDER BY INDEX_NAME, SEQ_IN_INDEX"
                        .into(),
                    params: vec![Value::Text(wanted.table.clone())],
                },
                // Key columns only: an index's included columns do not order it. Hypothetical
                // (tuning advisor) and disabled indexes serve nothing.
                DialectKind::Mssql => RenderedQuery {
                    sql: "SELECT i.name, c.name FROM sys.indexes AS i \
                          JOIN sys.index_columns AS ic \
                          ON ic.object_id = i.object_id AND ic.index_id = i.index_id \
                          JOIN sys.columns AS c \
                          ON c.object_id = ic.object_id AND c.column_id = ic.column_id \
                          WHERE i.object_id = OBJECT_ID(QUOTENAME(@P1)) \
                          AND ic.key_ordinal > 0 AND ic.is_included_column = 0 \
                          AND i.is_hypothetical = 0 AND i.is_disabled = 0 \
                          ORDER BY i.name, ic.key_ordinal"
                        .into(),
                    params: vec![Value::Text(wanted.table.clone())],
                },
                DialectKind::Sqlite => RenderedQuery {
                    sql: "SELECT il.name, ii.name FROM pragma_index_list(?1) AS il, \
                          pragma_index_info(il.name) AS ii ORDER BY il.name, ii.seqno"
                        .into(),
                    params: vec![Value::Text(wanted.table.clone())],
                },
            };
            let rows = repository
                .db
                .fetch(&query)
                .await
                .map_err(|e| anyhow::anyhow!("indexes of {}: {}", wanted.table, e.message))?;
            let mut indexes: Vec<(String, Vec<String>)> = Vec::new();
            for row in rows {
                let (Some(index), Some(column)) =
                    (row.first().and_then(text_of), row.get(1).and_then(text_of))
                else {
                    continue;
                };
                match indexes.last_mut() {
                    Some((name, columns)) if *name == index => columns.push(column),
                    _ => indexes.push((index, vec![column])),
                }
            }
            self.indexes.insert(wanted.table.clone(), indexes);
        }
        let existing = self.indexes[&wanted.table].iter().find(|(_, columns)| {
            columns.len() >= wanted.columns.len()
                && columns
                    .iter()
                    .zip(&wanted.columns)
                    .all(|(have, want)| have.eq_ignore_ascii_case(want))
        });
        Ok(match existing {
            Some((index, _)) => Advice::Unused {
                index: index.clone(),
            },
            None => Advice::Create(create_index(dialect, wanted)),
        })
    }
}

/// `CREATE INDEX portico_<table>_<columns> ON <table> (<columns>);` in the dialect's quoting,
/// the name cut to MySQL's 64 characters.
fn create_index(dialect: DialectKind, wanted: &IndexColumns) -> String {
    let mut name =
        format!("portico_{}_{}", wanted.table, wanted.columns.join("_")).to_ascii_lowercase();
    name.truncate(64);
    let columns: Vec<String> = wanted
        .columns
        .iter()
        .map(|column| quote_ident(dialect, column))
        .collect();
    format!(
        "CREATE INDEX {} ON {} ({});",
        quote_ident(dialect, &name),
        quote_ident(dialect, &wanted.table),
        columns.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::{
        IndexColumns, QueryPlan, Reading, TableAccess, create_index, mssql_plan, mysql_plan,
        sqlite_plan,
    };
    use crate::dialect::DialectKind;

    #[test]
    fn mariadb_plans_name_scans_index_reads_and_filesorts() {
        // MariaDB 10.11's own output for a search without an index on pc_pid: it walks the
        // primary key in order, filtering, and expects to stop at the limit.
        let filtered_walk = serde_json::json!({"query_block": {"select_id": 1, "nested_loop": [
            {"table": {"table_name": "t", "access_type": "index", "key": "PRIMARY",
                       "rows": 201, "filtered": 100,
                       "attached_condition": "t.pc_pid = '12'"}}]}});
        assert_eq!(
            mysql_plan(&filtered_walk),
            QueryPlan {
                tables: vec![TableAccess {
                    alias: "t".into(),
                    how: Reading::IndexWalk,
                    rows: Some(201)
                }],
                sorts: false
            }
        );
        let sorted_scan = serde_json::json!({"query_block": {"select_id": 1, "nested_loop": [
            {"read_sorted_file": {"filesort": {"sort_key": "t.pc_title", "table": {
                "table_name": "t", "access_type": "ALL", "rows": 20027, "filtered": 100}}}}]}});
        let plan = mysql_plan(&sorted_scan);
        assert!(
            plan.sorts && plan.tables[0].how == Reading::Whole,
            "{plan:?}"
        );
        // MySQL 8's shape: ordering_operation and rows_examined_per_scan.
        let mysql8 = serde_json::json!({"query_block": {"ordering_operation": {
            "using_filesort": true, "table": {"table_name": "t", "access_type": "ref",
            "rows_examined_per_scan": 40}}}});
        let plan = mysql_plan(&mysql8);
        assert!(
            plan.sorts && plan.tables[0].how == Reading::Lookup,
            "{plan:?}"
        );
        assert_eq!(plan.tables[0].rows, Some(40));
    }

    #[test]
    fn sqlite_plans_name_scans_searches_and_temporary_sorts() {
        let details = |lines: &[&str]| lines.iter().map(|l| l.to_string()).collect::<Vec<_>>();
        let plan = sqlite_plan(&details(&["SCAN t", "USE TEMP B-TREE FOR ORDER BY"]));
        assert!(
            plan.sorts && plan.tables[0].how == Reading::Whole,
            "{plan:?}"
        );
        let plan = sqlite_plan(&details(&["SEARCH t USING INDEX pc_pid (pc_pid=?)"]));
        assert!(plan.tables.is_empty() && !plan.sorts, "{plan:?}");
        let plan = sqlite_plan(&details(&["SCAN t USING INDEX patient_data_pid"]));
        assert_eq!(plan.tables[0].how, Reading::IndexWalk, "{plan:?}");
        let plan = sqlite_plan(&details(&["SCAN TABLE patient_data AS t"]));
        assert_eq!(plan.tables[0].alias, "t");
        assert_eq!(plan.tables[0].how, Reading::Whole);
    }

    /// A SHOWPLAN document around `operators` (the statement's outermost `RelOp`), shaped as SQL
    /// Server answers `SET SHOWPLAN_XML ON`: the default namespace, no prefixes.
    fn showplan(operators: &str) -> String {
        format!(
            r#"<ShowPlanXML xmlns="http://schemas.microsoft.com/sqlserver/2004/07/showplan" Version="1.0">
<BatchSequence><Batch><Statements>
<StmtSimple StatementText="SELECT TOP 21 [t].[a] FROM [x] AS [t] WHERE [t].[b] = @P1 &amp; more" StatementType="SELECT">
<QueryPlan CachedPlanSize="16">{operators}</QueryPlan>
</StmtSimple>
</Statements></Batch></BatchSequence>
</ShowPlanXML>"#
        )
    }

    fn access(alias: &str, how: Reading, rows: u64) -> TableAccess {
        TableAccess {
            alias: alias.into(),
            how,
            rows: Some(rows),
        }
    }

    #[test]
    fn sql_server_table_scans_name_the_alias_of_their_object() {
        // A heap read whole under a TOP; the column references carry table and alias too, but
        // only the operator's Object names what it reads.
        let plan = mssql_plan(&showplan(
            r#"<RelOp NodeId="0" PhysicalOp="Top" LogicalOp="Top" EstimateRows="21">
  <OutputList><ColumnReference Table="[decoy]" Alias="[d]" Column="a"/></OutputList>
  <Top><TopExpression/>
    <RelOp NodeId="1" PhysicalOp="Table Scan" LogicalOp="Table Scan" EstimateRows="1000">
      <OutputList><ColumnReference Table="[patients]" Alias="[t]" Column="a"/></OutputList>
      <TableScan Ordered="false">
        <Object Database="[pms]" Schema="[dbo]" Table="[patients]" Alias="[t]"/>
        <Predicate><ScalarOperator ScalarString="[t].[b]=[@P1]"/></Predicate>
      </TableScan>
    </RelOp>
  </Top>
</RelOp>"#,
        ))
        .unwrap();
        assert_eq!(
            plan,
            QueryPlan {
                tables: vec![access("t", Reading::Whole, 1000)],
                sorts: false
            }
        );
    }

    #[test]
    fn sql_server_clustered_scans_read_whole_unless_they_walk_the_key_in_order() {
        let clustered = |ordered: &str| {
            showplan(&format!(
                r#"<RelOp NodeId="0" PhysicalOp="Clustered Index Scan" LogicalOp="Clustered Index Scan" EstimateRows="4012.3">
  <IndexScan Ordered="{ordered}" ForcedIndex="false">
    <Object Database="[pms]" Schema="[dbo]" Table="[odd]]&amp;name]" Index="[PK_odd]" IndexKind="Clustered"/>
  </IndexScan>
</RelOp>"#
            ))
        };
        // No alias in the statement: the table's own name, brackets and escapes undone.
        assert_eq!(
            mssql_plan(&clustered("false")).unwrap().tables,
            vec![access("odd]&name", Reading::Whole, 4013)]
        );
        // In key order under a TOP it stops at the page, as MySQL's `index` at a LIMIT.
        assert_eq!(
            mssql_plan(&clustered("true")).unwrap().tables,
            vec![access("odd]&name", Reading::IndexWalk, 4013)]
        );
    }

    #[test]
    fn sql_server_seeks_and_key_lookups_look_rows_up() {
        let plan = mssql_plan(&showplan(
            r#"<RelOp NodeId="0" PhysicalOp="Nested Loops" LogicalOp="Inner Join" EstimateRows="12.5">
  <NestedLoops Optimized="0">
    <RelOp NodeId="1" PhysicalOp="Index Seek" LogicalOp="Index Seek" EstimateRows="12.5">
      <IndexScan Ordered="1" ScanDirection="FORWARD">
        <Object Database="[pms]" Schema="[dbo]" Table="[appointments]" Index="[IX_appointments_patients]" Alias="[t]" IndexKind="NonClustered"/>
        <SeekPredicates/>
      </IndexScan>
    </RelOp>
    <RelOp NodeId="2" PhysicalOp="Key Lookup" LogicalOp="Clustered Index Seek" EstimateRows="1" EstimateRebinds="11.5" EstimateRewinds="0">
      <IndexScan Lookup="1" Ordered="1">
        <Object Database="[pms]" Schema="[dbo]" Table="[appointments]" Index="[PK_appointments]" Alias="[t]" TableReferenceId="-1"/>
      </IndexScan>
    </RelOp>
    <RelOp NodeId="3" PhysicalOp="RID Lookup" LogicalOp="RID Lookup" EstimateRows="1">
      <RIDLookup><Object Table="[rooms]" Alias="[r]"/></RIDLookup>
    </RelOp>
  </NestedLoops>
</RelOp>"#,
        ))
        .unwrap();
        assert_eq!(
            plan,
            QueryPlan {
                tables: vec![
                    access("t", Reading::Lookup, 13),
                    // Once per row of the seek: 12.5 executions of one row each.
                    access("t", Reading::Lookup, 13),
                    access("r", Reading::Lookup, 1),
                ],
                sorts: false
            }
        );
    }

    #[test]
    fn sql_server_sorts_are_sort_operators_in_either_spelling() {
        for (physical, logical) in [("Sort", "TopN Sort"), ("Top N Sort", "Top N Sort")] {
            let plan = mssql_plan(&showplan(&format!(
                r#"<RelOp NodeId="0" PhysicalOp="{physical}" LogicalOp="{logical}" EstimateRows="21">
  <TopSort Rows="21"><OrderBy/>
    <RelOp NodeId="1" PhysicalOp="Clustered Index Scan" LogicalOp="Clustered Index Scan" EstimateRows="20000">
      <IndexScan Ordered="false"><Object Table="[appointments]" Alias="[t]"/></IndexScan>
    </RelOp>
  </TopSort>
</RelOp>"#
            )))
            .unwrap();
            assert_eq!(
                plan,
                QueryPlan {
                    tables: vec![access("t", Reading::Whole, 20000)],
                    sorts: true
                },
                "{physical}"
            );
        }
        // A namespace prefix changes nothing.
        let prefixed = r#"<sp:ShowPlanXML xmlns:sp="http://schemas.microsoft.com/sqlserver/2004/07/showplan">
<sp:RelOp PhysicalOp="Sort" EstimateRows="3"><sp:RelOp PhysicalOp="Index Scan" EstimateRows="3">
<sp:IndexScan Ordered="true"><sp:Object sp:Table="[x]" Alias="[y]"/></sp:IndexScan>
</sp:RelOp></sp:RelOp></sp:ShowPlanXML>"#;
        assert_eq!(
            mssql_plan(prefixed).unwrap(),
            QueryPlan {
                tables: vec![access("y", Reading::IndexWalk, 3)],
                sorts: true
            }
        );
        assert!(mssql_plan("<ShowPlanXML><RelOp></ShowPlanXML>").is_err());
    }

    #[test]
    fn suggested_indexes_are_quoted_per_dialect_and_named_within_64_characters() {
        let wanted = IndexColumns {
            table: "openemr_postcalendar_events".into(),
            columns: vec!["pc_pid".into()],
        };
        assert_eq!(
            create_index(DialectKind::Mysql, &wanted),
            "CREATE INDEX `portico_openemr_postcalendar_events_pc_pid` \
             ON `openemr_postcalendar_events` (`pc_pid`);"
        );
        assert_eq!(
            create_index(DialectKind::Sqlite, &wanted),
            "CREATE INDEX \"portico_openemr_postcalendar_events_pc_pid\" \
             ON \"openemr_postcalendar_events\" (\"pc_pid\");"
        );
        let odd = IndexColumns {
            table: "appointments".into(),
            columns: vec!["patients_id".into(), "odd]name".into()],
        };
        assert_eq!(
            create_index(DialectKind::Mssql, &odd),
            "CREATE INDEX [portico_appointments_patients_id_odd]]name] \
             ON [appointments] ([patients_id], [odd]]name]);"
        );
        let long = IndexColumns {
            table: "x".repeat(60),
            columns: vec!["a".into(), "b".into()],
        };
        let statement = create_index(DialectKind::Mysql, &long);
        let name = statement.split('`').nth(1).unwrap();
        assert_eq!(name.len(), 64, "{statement}");
    }
}
