//! Runs compiled reads and searches against the legacy database and maps the rows to resources.
//!
//! The read path after `search::compile`: render for the connection's dialect, fetch (one query
//! per branch, plus one per collection), map rows, merge branches in sort order, cut the page.
//! Every method takes the request's `Access`: a type it does not grant is never queried, and each
//! mapping's SELECT carries what the access admits of its rows (`search::compile::row_access`);
//! collections are read only for rows already admitted.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::access::{Access, Interaction};
use crate::adapter::Adapter;
use crate::adapter::map::{
    LeftOut, MapOutcome, MappedResource, RowData, cell_text, check_r4, map_row,
};
use crate::adapter::model::Mapping;
use crate::adapter::tree::Tree;
use crate::db::{Database, DbError};
use crate::dialect::ast::{Cond, Select, Value};
use crate::dialect::fold::fold;
use crate::dialect::{RenderedQuery, render};
use crate::search::compile::{
    BranchPlan, Plan, RowAccess, collection_select, count_select, page_select, parse_id,
    referencing_cond, row_access, rows_select,
};
use crate::search::cursor::CursorKey;

mod lookups;
use lookups::Prepared;
pub use lookups::{LookupCache, MAX_LOOKUP_KEYS};

/// At most this many resources are added by `_include` and `_revinclude` per page.
pub const MAX_INCLUDED: usize = 1000;

/// Ids (or parent keys) looked up per statement. A key has at most a few columns, so a statement
/// stays under SQL Server's 2,100-parameter limit, the lowest of the supported engines.
const IDS_PER_QUERY: usize = 500;

#[derive(Debug, Clone)]
pub struct Repository {
    pub adapter: Arc<Adapter>,
    pub db: Database,
    pub lookups: Arc<LookupCache>,
}

/// A mapped resource with the row it came from and its place in the search's total order.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub resource: MappedResource,
    pub row: Arc<Vec<Value>>,
    pub order: CursorKey,
}

/// A row, or one unpivot variant of it, that could not be served: where it lives and why.
#[derive(Debug, Clone)]
pub struct LeftOutRow {
    pub resource_type: String,
    /// The mapping's name (`Observation.vitals`).
    pub mapping: String,
    pub table: String,
    /// The row's key as `column=value` pairs (`pid=12`): PMS keys, no other data.
    pub key: String,
    pub left_out: LeftOut,
}

/// What a row yielded, in the search's total order: paging counts left-out rows too, so a page of
/// bad rows still advances the cursor.
#[derive(Debug, Clone)]
struct Candidate {
    outcome: MapOutcome,
    row: Arc<Vec<Value>>,
    order: CursorKey,
}

/// What one fetch of a branch yielded (`Repository::load`).
struct LoadedRows {
    candidates: Vec<Candidate>,
    /// Rows read: fewer than asked for means the branch has no more.
    rows: usize,
    /// The position after the last row read, whole (variant `None`): where a scan goes on. A
    /// scan's SQL does not filter on the variants, so its last rows may yield nothing.
    last_row: Option<CursorKey>,
}

/// One page of a search.
#[derive(Debug)]
pub struct Page {
    pub matches: Vec<Loaded>,
    pub next: Option<CursorKey>,
    pub total: Option<u64>,
    pub included: Vec<Tree>,
    /// `_include`/`_revinclude` hit `MAX_INCLUDED`.
    pub included_truncated: bool,
    /// Matches and included resources left out because they cannot be served as valid R4.
    pub left_out: Vec<LeftOutRow>,
}

/// One step of a keyset scan (`Repository::scan`).
#[derive(Debug)]
pub struct Scanned {
    /// What each row (or unpivot variant) yielded, in key order, with its row.
    pub outcomes: Vec<(MapOutcome, Arc<Vec<Value>>)>,
    /// The key of the last row read: where the next step starts.
    pub last_key: Option<Vec<Value>>,
    /// Rows read (a step that read fewer than its limit reached the end).
    pub rows: usize,
}

/// The outcome of a read by id.
#[derive(Debug)]
pub enum ReadOutcome {
    Found(Tree),
    /// The row exists but cannot be served as valid R4.
    LeftOut(LeftOutRow),
    Missing,
}

impl Repository {
    /// A round trip to the legacy database (`SELECT 1`), for the health check.
    pub async fn ping(&self) -> Result<(), DbError> {
        self.db.ping().await
    }

    /// What `access` admits of `mapping`'s rows for `interaction`, compiled now (date filters in
    /// granular scopes are relative to the current time).
    fn row_access(
        &self,
        mapping: &Mapping,
        access: &Access,
        interaction: Interaction,
    ) -> RowAccess {
        let denied = RowAccess {
            cond: Cond::False,
            variants: None,
        };
        let Some(def) = self.adapter.resources.get(&mapping.resource_type) else {
            return denied;
        };
        let timezone = self.adapter.timezone;
        let now = chrono::Utc::now().with_timezone(&timezone).naive_local();
        row_access(def, mapping, access, interaction, timezone, now)
    }

    /// Every query runs through here: lookups become their cached key lists and rows, then it
    /// renders; the rows come back as the compiled query would return them.
    async fn fetch(&self, select: &Select) -> Result<Vec<Vec<Value>>, DbError> {
        let (rendered, prepared) = self.statement(select).await;
        let mut rows = self.db.fetch(&rendered).await?;
        prepared.complete(&mut rows);
        Ok(rows)
    }

    /// The statement Portico sends for `select` (after the lookup cache, rendered for the pool's
    /// dialect), and how to complete the rows it returns.
    async fn statement(&self, select: &Select) -> (RenderedQuery, Prepared) {
        // Boxed: in debug builds the cache's future is large, and every read path nests it.
        let prepared = Box::pin(self.lookups.prepare(&self.db, select)).await;
        let rendered = render(
            self.db.dialect(),
            prepared.select.as_ref().unwrap_or(select),
        );
        (rendered, prepared)
    }

    /// The statement `fetch` would send for `select`, without sending it (the query-plan
    /// advisor explains it).
    pub async fn sent_statement(&self, select: &Select) -> RenderedQuery {
        self.statement(select).await.0
    }

    /// Fetches `select` over `mapping` with its collections, and maps each row. Rows that cannot be
    /// served are logged (table and key) and returned as left out, in order with the others.
    async fn load(
        &self,
        branch_index: usize,
        mapping: &Mapping,
        select: &Select,
        sort_indices: &[usize],
        keep_variant: &(dyn Fn(usize) -> bool + Sync),
    ) -> Result<LoadedRows, DbError> {
        let rows = self.fetch(select).await?;
        let row_count = rows.len();
        // Where the next step starts: the last row read, all its variants consumed (a row whose
        // variants are all empty yields no candidate but is read all the same).
        let last_row = rows.last().map(|row| CursorKey {
            sort: sort_indices.iter().map(|&i| row[i].clone()).collect(),
            branch: branch_index,
            key: mapping.page_key.iter().map(|&i| row[i].clone()).collect(),
            variant: None,
        });
        let children = self.load_collections(mapping, &rows).await?;
        // Mapping is pure CPU work: a large page's rows are mapped in two halves at once.
        let map_rows = |first: usize, rows: Vec<Vec<Value>>| -> Vec<Candidate> {
            let mut loaded = Vec::with_capacity(rows.len());
            for (offset, row) in rows.into_iter().enumerate() {
                let row_index = first + offset;
                let row_children: Vec<Vec<&[Value]>> = children
                    .iter()
                    .map(|per_row| {
                        per_row[row_index]
                            .iter()
                            .map(|child| child.as_slice())
                            .collect()
                    })
                    .collect();
                let data = RowData {
                    row: &row,
                    children: &row_children,
                };
                let outcomes = map_row(mapping, &data, self.adapter.timezone, keep_variant);
                let row = Arc::new(row);
                for outcome in outcomes {
                    let outcome = outcome.and_then(check_r4);
                    let variant = match &outcome {
                        Ok(resource) => resource.variant,
                        Err(left_out) => {
                            let report = left_out_row(mapping, &row, left_out.clone());
                            tracing::warn!(
                                table = %report.table,
                                key = %report.key,
                                mapping = %report.mapping,
                                reason = %report.left_out.reason,
                                "legacy row left out: it cannot be served as valid FHIR R4"
                            );
                            left_out.variant
                        }
                    };
                    let order = CursorKey {
                        sort: sort_indices.iter().map(|&i| row[i].clone()).collect(),
                        branch: branch_index,
                        key: mapping.page_key.iter().map(|&i| row[i].clone()).collect(),
                        variant,
                    };
                    loaded.push(Candidate {
                        outcome,
                        row: row.clone(),
                        order,
                    });
                }
            }
            loaded
        };
        // An unpivoted row is as much work as the resources it yields.
        let weight = mapping.variants.len().max(1);
        let loaded: Vec<Candidate> = crate::halves::in_halves_weighted(rows, weight, map_rows)
            .into_iter()
            .flatten()
            .collect();
        Ok(LoadedRows {
            candidates: loaded,
            rows: row_count,
            last_row,
        })
    }

    /// For each collection of `mapping`, the child rows of each parent row (one query each).
    async fn load_collections(
        &self,
        mapping: &Mapping,
        rows: &[Vec<Value>],
    ) -> Result<Vec<Vec<Vec<Vec<Value>>>>, DbError> {
        let mut result = Vec::with_capacity(mapping.collections.len());
        for collection in &mapping.collections {
            let parent_key = |row: &Vec<Value>| -> Vec<Value> {
                collection
                    .match_parent
                    .iter()
                    .map(|&i| row[i].clone())
                    .collect()
            };
            let text_key = |values: &[Value]| -> Option<String> {
                values
                    .iter()
                    .map(cell_text)
                    .collect::<Option<Vec<String>>>()
                    .map(|parts| parts.join("\u{1f}"))
            };
            let mut seen = HashSet::new();
            let mut keys = Vec::new();
            for row in rows {
                let key = parent_key(row);
                if let Some(text) = text_key(&key)
                    && seen.insert(text)
                {
                    keys.push(key);
                }
            }
            let mut grouped: HashMap<String, Vec<Vec<Value>>> = HashMap::new();
            for chunk in keys.chunks(IDS_PER_QUERY) {
                let select = collection_select(collection, chunk);
                for child in self.fetch(&select).await? {
                    if let Some(text) = text_key(&child[..collection.match_parent.len()]) {
                        grouped.entry(text).or_default().push(child);
                    }
                }
            }
            let per_row = rows
                .iter()
                .map(|row| {
                    text_key(&parent_key(row))
                        .and_then(|k| grouped.get(&k).cloned())
                        .unwrap_or_default()
                })
                .collect();
            result.push(per_row);
        }
        Ok(result)
    }

    /// Reads one resource by logical id: found, left out (the row exists but cannot be served),
    /// or missing (no row has it, or `access` does not admit it: the same answer, no oracle).
    pub async fn read(
        &self,
        resource_type: &str,
        id: &str,
        access: &Access,
    ) -> Result<ReadOutcome, DbError> {
        let Some(def) = self.adapter.resources.get(resource_type) else {
            return Ok(ReadOutcome::Missing);
        };
        if !access.allows(resource_type, Interaction::Read) {
            return Ok(ReadOutcome::Missing);
        }
        for (branch_index, mapping) in def.mappings.iter().enumerate() {
            let Some(target) = parse_id(mapping, id) else {
                continue;
            };
            let admitted = self.row_access(mapping, access, Interaction::Read);
            if admitted.denies_all() {
                continue;
            }
            let select = rows_select(mapping, &admitted, target.cond, Some(2));
            let wanted = target.variant;
            let candidates = self
                .load(branch_index, mapping, &select, &[], &|variant| {
                    wanted.is_none_or(|w| w == variant) && admitted.variant_allowed(variant)
                })
                .await?
                .candidates;
            for candidate in candidates {
                match candidate.outcome {
                    Ok(found) if found.id == id => return Ok(ReadOutcome::Found(found.resource)),
                    // The select is by this id's key: a failure without an id is its row's.
                    Err(left_out) if left_out.id.as_deref().is_none_or(|i| i == id) => {
                        return Ok(ReadOutcome::LeftOut(left_out_row(
                            mapping,
                            &candidate.row,
                            left_out,
                        )));
                    }
                    _ => {}
                }
            }
        }
        Ok(ReadOutcome::Missing)
    }

    /// One step of a keyset scan for change detection: the rows of `mapping` (the
    /// `branch_index`-th of its type) that satisfy `cond`, after the key `after`, in key order,
    /// at most `limit`, mapped (left-out rows included, in order). It reads everything the
    /// mapping serves: what a subscriber may see is decided when it is notified.
    pub async fn scan(
        &self,
        branch_index: usize,
        mapping: &Arc<Mapping>,
        cond: Cond,
        after: Option<Vec<Value>>,
        limit: u64,
    ) -> Result<Scanned, DbError> {
        let admitted = self.row_access(mapping, &Access::everything(), Interaction::Search);
        let branch = BranchPlan {
            index: branch_index,
            mapping: mapping.clone(),
            // A scan under a criterion (rows changed since a watermark) may be short.
            whole_pass: cond == Cond::True,
            cond,
            variants: None,
            sort: Vec::new(),
        };
        let cursor = after.map(|key| CursorKey {
            sort: Vec::new(),
            branch: branch_index,
            key,
            variant: None,
        });
        let select = page_select(&branch, &admitted, cursor.as_ref(), limit);
        let fetched = self
            .load(branch_index, mapping, &select, &[], &|variant| {
                admitted.variant_allowed(variant)
            })
            .await?;
        Ok(Scanned {
            // The cursor has no variant: the SELECT starts after its whole row.
            outcomes: fetched
                .candidates
                .into_iter()
                .map(|c| (c.outcome, c.row))
                .collect(),
            last_key: fetched.last_row.map(|c| c.key),
            rows: fetched.rows,
        })
    }

    /// Counts all matches of `plan` that `access` admits.
    pub async fn count(&self, plan: &Plan, access: &Access) -> Result<u64, DbError> {
        let mut total = 0u64;
        if !access.allows(&plan.resource_type, Interaction::Search) {
            return Ok(total);
        }
        for branch in plan.branches.iter().filter(|b| b.cond != Cond::False) {
            let admitted = self.row_access(&branch.mapping, access, Interaction::Search);
            if admitted.denies_all() {
                continue;
            }
            let rows = self.fetch(&count_select(branch, &admitted)).await?;
            let count = rows.first().and_then(|r| r.first()).and_then(|v| match v {
                Value::Int(i) => Some(*i as u64),
                Value::Decimal(d) => d.to_string().parse::<u64>().ok(),
                Value::Float(f) => Some(*f as u64),
                Value::Null => Some(0),
                _ => None,
            });
            total += count.unwrap_or(0);
        }
        Ok(total)
    }

    /// Fetches the page of `plan` that follows `after`, within `access`.
    pub async fn search(
        &self,
        plan: &Plan,
        after: Option<&CursorKey>,
        access: &Access,
        want_total: bool,
    ) -> Result<Page, DbError> {
        let limit = plan.count;
        let sorted = !plan.sort.is_empty();
        let mut collected: Vec<Candidate> = Vec::new();
        let mut more_rows = false;
        let searchable = access.allows(&plan.resource_type, Interaction::Search);
        for branch in &plan.branches {
            if branch.cond == Cond::False || !searchable {
                continue;
            }
            let admitted = self.row_access(&branch.mapping, access, Interaction::Search);
            if admitted.denies_all() {
                continue;
            }
            if !sorted {
                if after.is_some_and(|c| branch.index < c.branch) {
                    continue;
                }
                if collected.len() > limit {
                    more_rows = true;
                    break;
                }
            }
            let wanted_rows = if sorted {
                limit + 1
            } else {
                limit + 1 - collected.len().min(limit)
            };
            // Every row this reads yields a resource or a left-out row: the plan puts "one admitted
            // variant holds" of an unpivoted mapping into the SQL (`search::compile::plan`).
            let select = page_select(branch, &admitted, after, wanted_rows as u64);
            let sort_indices: Vec<usize> = branch.sort.iter().map(|s| s.index).collect();
            let fetched = self
                .load(
                    branch.index,
                    &branch.mapping,
                    &select,
                    &sort_indices,
                    &|v| branch.variant_allowed(v) && admitted.variant_allowed(v),
                )
                .await?;
            more_rows |= fetched.rows >= wanted_rows;
            collected.extend(
                fetched
                    .candidates
                    .into_iter()
                    .filter(|l| is_after(l, after, branch)),
            );
        }
        // One branch's rows are already in the database's order, which its next keyset condition
        // follows; re-sorting them in Rust would differ wherever the collation does (MariaDB
        // sorts Müller, MÜLLER and Muller as equals). Only a merge of branches sorts here.
        let branches_with_rows: HashSet<usize> = collected.iter().map(|l| l.order.branch).collect();
        if sorted && branches_with_rows.len() > 1 {
            let descending: Vec<bool> = plan
                .branches
                .first()
                .map(|b| b.sort.iter().map(|s| s.descending).collect())
                .unwrap_or_default();
            collected.sort_by(|a, b| compare_order(&a.order, &b.order, &descending));
        }
        let has_more = collected.len() > limit || (more_rows && collected.len() >= limit);
        collected.truncate(limit);
        let next = if has_more && limit > 0 {
            collected.last().map(|l| l.order.clone())
        } else {
            None
        };
        let total = if want_total {
            Some(self.count(plan, access).await?)
        } else if after.is_none() && !has_more {
            // The first page holds every match, so the total is known for free.
            Some(collected.len() as u64)
        } else {
            None
        };
        let mut left_out = Vec::new();
        let mut matches = Vec::with_capacity(collected.len());
        for candidate in collected {
            match candidate.outcome {
                Ok(resource) => matches.push(Loaded {
                    resource,
                    row: candidate.row,
                    order: candidate.order,
                }),
                Err(reason) => {
                    let mapping = &plan.branches[candidate.order.branch].mapping;
                    left_out.push(left_out_row(mapping, &candidate.row, reason));
                }
            }
        }
        let (included, included_truncated) =
            self.includes(plan, &matches, access, &mut left_out).await?;
        Ok(Page {
            matches,
            next,
            total,
            included,
            included_truncated,
            left_out,
        })
    }

    /// Resources pulled in by `_include` and `_revinclude`, without duplicates or page matches.
    /// Each is admitted by `access` on its own type's terms: an included resource as a read of it
    /// (it is fetched by id), a revincluded one as a search of its type. Types the access does not
    /// grant are left out silently.
    async fn includes(
        &self,
        plan: &Plan,
        page: &[Loaded],
        access: &Access,
        left_out: &mut Vec<LeftOutRow>,
    ) -> Result<(Vec<Tree>, bool), DbError> {
        let mut seen: HashSet<(String, String)> = page
            .iter()
            .map(|l| (plan.resource_type.clone(), l.resource.id.clone()))
            .collect();
        let mut included = Vec::new();
        let mut truncated = false;
        let mut add = |mapping: &Mapping, loaded: Vec<Candidate>, included: &mut Vec<Tree>| {
            for item in loaded {
                if included.len() >= MAX_INCLUDED {
                    truncated = true;
                    break;
                }
                match item.outcome {
                    Ok(resource) => {
                        if seen.insert((mapping.resource_type.clone(), resource.id.clone())) {
                            included.push(resource.resource);
                        }
                    }
                    Err(reason) => left_out.push(left_out_row(mapping, &item.row, reason)),
                }
            }
        };
        for (param, target_type) in &plan.includes {
            let mut ids: Vec<String> = Vec::new();
            for loaded in page {
                let branch = &plan.branches[loaded.order.branch];
                for reference in reference_ids(&branch.mapping, param, target_type, &loaded.row) {
                    if !ids.contains(&reference) {
                        ids.push(reference);
                    }
                }
            }
            let Some(target_def) = self.adapter.resources.get(target_type) else {
                continue;
            };
            if !access.allows(target_type, Interaction::Read) {
                continue;
            }
            for (branch_index, mapping) in target_def.mappings.iter().enumerate() {
                let admitted = self.row_access(mapping, access, Interaction::Read);
                if admitted.denies_all() {
                    continue;
                }
                for chunk in ids.chunks(IDS_PER_QUERY) {
                    let conds: Vec<Cond> = chunk
                        .iter()
                        .filter_map(|id| parse_id(mapping, id))
                        .map(|t| t.cond)
                        .collect();
                    if conds.is_empty() {
                        continue;
                    }
                    let select = rows_select(
                        mapping,
                        &admitted,
                        Cond::or(conds),
                        Some(MAX_INCLUDED as u64 + 1),
                    );
                    let loaded = self
                        .load(branch_index, mapping, &select, &[], &|v| {
                            admitted.variant_allowed(v)
                        })
                        .await?
                        .candidates;
                    add(mapping, loaded, &mut included);
                }
            }
        }
        let page_ids: Vec<String> = page.iter().map(|l| l.resource.id.clone()).collect();
        for (source_type, param) in &plan.revincludes {
            let Some(source_def) = self.adapter.resources.get(source_type) else {
                continue;
            };
            if !access.allows(source_type, Interaction::Search) {
                continue;
            }
            for (branch_index, mapping) in source_def.mappings.iter().enumerate() {
                let admitted = self.row_access(mapping, access, Interaction::Search);
                if admitted.denies_all() {
                    continue;
                }
                for chunk in page_ids.chunks(IDS_PER_QUERY) {
                    let cond = referencing_cond(mapping, param, &plan.resource_type, chunk);
                    if cond == Cond::False {
                        continue;
                    }
                    let select =
                        rows_select(mapping, &admitted, cond, Some(MAX_INCLUDED as u64 + 1));
                    let loaded = self
                        .load(branch_index, mapping, &select, &[], &|v| {
                            admitted.variant_allowed(v)
                        })
                        .await?
                        .candidates;
                    add(mapping, loaded, &mut included);
                }
            }
        }
        Ok((included, truncated))
    }
}

/// Where a left-out row lives: its mapping, table and key (`pid=12`).
fn left_out_row(mapping: &Mapping, row: &[Value], left_out: LeftOut) -> LeftOutRow {
    LeftOutRow {
        resource_type: mapping.resource_type.clone(),
        mapping: mapping.name.clone(),
        table: mapping.table.clone(),
        key: row_key(mapping, row),
        left_out,
    }
}

/// A row's key as `column=value` pairs (`pid=12`): how reports name a PMS row.
pub fn row_key(mapping: &Mapping, row: &[Value]) -> String {
    mapping
        .id
        .columns
        .iter()
        .map(|&index| {
            let value = match &row[index] {
                Value::Undecodable(_) => "(undecodable)".to_owned(),
                cell => cell_text(cell).unwrap_or_else(|| "(absent)".to_owned()),
            };
            format!("{}={value}", mapping.columns[index].column)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The ids a row's reference parameter points at, for targets of `target_type`.
fn reference_ids(mapping: &Mapping, param: &str, target_type: &str, row: &[Value]) -> Vec<String> {
    use crate::adapter::map::key_text;
    use crate::adapter::model::SearchKind;
    let Some(SearchKind::Reference { targets }) = mapping.search.get(param).map(|p| &p.kind) else {
        return Vec::new();
    };
    targets
        .iter()
        .filter(|t| t.target_type == target_type)
        .filter_map(|target| {
            let parts: Option<Vec<String>> = target
                .columns
                .iter()
                .map(|column| {
                    mapping
                        .column_index(column)
                        .and_then(|i| key_text(&row[i]))
                        .filter(|p| p != "0")
                })
                .collect();
            parts.map(|parts| format!("{}{}", target.target_prefix, parts.join("-")))
        })
        .collect()
}

/// SQL returns the cursor's own row again when it unpivots (its later variants may follow);
/// drop the variants at or before the cursor's.
fn is_after(loaded: &Candidate, after: Option<&CursorKey>, branch: &BranchPlan) -> bool {
    let Some(cursor) = after else { return true };
    if branch.index != cursor.branch
        || loaded.order.key != cursor.key
        || loaded.order.sort != cursor.sort
    {
        return true;
    }
    match (loaded.order.variant, cursor.variant) {
        (Some(variant), Some(last)) => variant > last,
        _ => false,
    }
}

/// The total order of a search: sort values (NULL first ascending), branch, key, variant.
pub fn compare_order(a: &CursorKey, b: &CursorKey, descending: &[bool]) -> Ordering {
    for (index, (x, y)) in a.sort.iter().zip(&b.sort).enumerate() {
        let ordering = compare_values(x, y);
        let ordering = if descending.get(index).copied().unwrap_or(false) {
            ordering.reverse()
        } else {
            ordering
        };
        if ordering != Ordering::Equal {
            return ordering;
        }
    }
    a.branch
        .cmp(&b.branch)
        .then_with(|| {
            a.key
                .iter()
                .zip(&b.key)
                .map(|(x, y)| compare_values(x, y))
                .find(|o| *o != Ordering::Equal)
                .unwrap_or(Ordering::Equal)
        })
        .then_with(|| a.variant.cmp(&b.variant))
}

fn compare_values(a: &Value, b: &Value) -> Ordering {
    use crate::adapter::map::cell_number;
    match (a, b) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        // As the case- and accent-insensitive collations legacy databases use, near enough.
        (Value::Text(x), Value::Text(y)) => fold(x).cmp(&fold(y)),
        (Value::Date(x), Value::Date(y)) => x.cmp(y),
        (Value::DateTime(x), Value::DateTime(y)) => x.cmp(y),
        (Value::Date(x), Value::DateTime(y)) => x.and_time(chrono::NaiveTime::MIN).cmp(y),
        (Value::DateTime(x), Value::Date(y)) => x.cmp(&y.and_time(chrono::NaiveTime::MIN)),
        (Value::Time(x), Value::Time(y)) => x.cmp(y),
        _ => match (cell_number(a), cell_number(b)) {
            (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
            _ => cell_text(a).cmp(&cell_text(b)),
        },
    }
}
