//! FHIR search semantics: a parsed request plus a resource's mappings become one SQL condition per
//! mapping (branch), a sort, and the SELECTs that fetch a page, a count, or resources by key.
//!
//! Every filter is pushed into SQL. Token values over unpivot variants and constant codes are
//! decided here, at compile time, because they do not depend on rows.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::{Datelike, NaiveDate, NaiveDateTime, TimeDelta};
use chrono_tz::Tz;

use super::SearchError;
use super::cursor::CursorKey;
use super::date::{DateQuery, Prefix, approximate, ceil_day, parse_date_query};
use super::parse::{
    Clause, SearchRequest, SortKey, SummaryMode, TotalMode, split_escaped, unescape,
};
use crate::adapter::format::{ColumnType, SearchType};
use crate::adapter::map::{uuid_bytes, uuid_text};
use crate::adapter::model::{
    BASE_ALIAS, COLLECTION_ALIAS, Collection, ColumnRef, JoinDef, LookupKey, Mapping, Predicate,
    PredicateOp, ReferenceTarget, ResourceDef, SearchKind, SearchParam, TokenTarget,
};
use crate::dialect::ast::{
    CachedJoin, CmpOp, Cond, Expr, Join, JoinKind, LikeMode, OrderTerm, Select, TableRef, Value,
};

/// A compiled search over one resource type.
#[derive(Debug)]
pub struct Plan {
    pub resource_type: String,
    pub branches: Vec<BranchPlan>,
    /// The applied sort keys (for the self link).
    pub sort: Vec<SortKey>,
    pub count: usize,
    pub total: TotalMode,
    pub summary: SummaryMode,
    pub elements: Option<Vec<String>>,
    /// `(reference parameter, target type)` of this type to include.
    pub includes: Vec<(String, String)>,
    /// `(source type, reference parameter)` pointing at this type to include.
    pub revincludes: Vec<(String, String)>,
    /// The parameters as applied, in order: the self link and the cursor's query identity.
    pub applied: Vec<(String, String)>,
    /// Parameters left out under lenient handling, with the reason.
    pub ignored: Vec<SearchError>,
    pub cursor: Option<String>,
}

impl Plan {
    /// What a cursor of this plan is sealed to: `query`, and the page keys of branches that have
    /// their own, so that a cursor stored before an adapter changed a page key (a resumed export,
    /// a next link) is refused rather than read against other columns.
    pub fn cursor_identity(&self, query: &str) -> String {
        let mut identity = query.to_owned();
        for label in self
            .branches
            .iter()
            .filter_map(|b| own_page_key(&b.mapping))
        {
            identity.push('|');
            identity.push_str(&label);
        }
        identity
    }
}

/// `Claim:patient_id,encounter_id,version` when `mapping` pages by its own `source.page_key`
/// rather than its id: stored positions carry it, and one made under another key is not used.
pub fn own_page_key(mapping: &Mapping) -> Option<String> {
    (mapping.page_key != mapping.id.columns).then(|| {
        let columns: Vec<&str> = mapping
            .page_key
            .iter()
            .map(|&i| mapping.columns[i].column.as_str())
            .collect();
        format!("{}:{}", mapping.name, columns.join(","))
    })
}

/// One mapping's part of a search.
#[derive(Debug)]
pub struct BranchPlan {
    pub index: usize,
    pub mapping: Arc<Mapping>,
    pub cond: Cond,
    /// For unpivoting mappings: which variants the search admits.
    pub variants: Option<Vec<bool>>,
    pub sort: Vec<SortColumn>,
    /// Read from start to end, page after page (an export's pass, a full scan): its pages walk
    /// the base table in key order whatever the criteria read (`Select::fixed_join_order`), so
    /// the pass reads each row once instead of sorting what is left at every page.
    pub whole_pass: bool,
}

#[derive(Debug, Clone)]
pub struct SortColumn {
    pub column: ColumnRef,
    /// Position in the mapping's SELECT list.
    pub index: usize,
    pub descending: bool,
}

impl BranchPlan {
    pub fn variant_allowed(&self, variant: usize) -> bool {
        self.variants.as_ref().is_none_or(|mask| mask[variant])
    }
}

/// Compiles `request` against `def`. `strict` turns unsupported parameters into errors.
pub fn plan(
    def: &ResourceDef,
    all: &BTreeMap<String, ResourceDef>,
    request: SearchRequest,
    strict: bool,
    timezone: Tz,
    now: NaiveDateTime,
) -> Result<Plan, Vec<SearchError>> {
    let mut errors = Vec::new();
    let mut ignored = Vec::new();
    let mut applied = Vec::new();
    let mut branches: Vec<BranchPlan> = def
        .mappings
        .iter()
        .enumerate()
        .map(|(index, mapping)| BranchPlan {
            index,
            mapping: mapping.clone(),
            cond: Cond::True,
            variants: (!mapping.variants.is_empty()).then(|| vec![true; mapping.variants.len()]),
            sort: Vec::new(),
            whole_pass: false,
        })
        .collect();
    let skip =
        |error: SearchError, errors: &mut Vec<SearchError>, ignored: &mut Vec<SearchError>| {
            if strict {
                errors.push(error)
            } else {
                ignored.push(error)
            }
        };

    for clause in &request.clauses {
        if clause.values.iter().all(|v| v.is_empty()) {
            // R4: a parameter with an empty value is ignored.
            continue;
        }
        let supported = match clause.name.as_str() {
            "_id" => true,
            "_lastUpdated" => def.mappings.iter().any(|m| m.last_updated.is_some()),
            name => def.search.contains_key(name),
        };
        if !supported {
            let why = if clause.name.contains('.') {
                "chained parameters are not supported"
            } else {
                "not a search parameter of this resource type on this server"
            };
            skip(
                SearchError::unsupported(&clause.key(), why),
                &mut errors,
                &mut ignored,
            );
            continue;
        }
        let mut clause_ok = true;
        for branch in &mut branches {
            match clause_cond(&branch.mapping, clause, timezone, now) {
                Ok(ClauseCond { cond, variants }) => {
                    branch.cond =
                        Cond::and(vec![std::mem::replace(&mut branch.cond, Cond::True), cond]);
                    if let (Some(mask), Some(allowed)) = (&mut branch.variants, variants) {
                        for (slot, ok) in mask.iter_mut().zip(allowed) {
                            *slot &= ok;
                        }
                    }
                }
                Err(error) => {
                    clause_ok = false;
                    if !errors.contains(&error) {
                        errors.push(error);
                    }
                }
            }
        }
        if clause_ok {
            applied.push((clause.key(), clause.raw_value.clone()));
        }
    }
    // Variant masks become SQL: a row qualifies when one admitted variant's condition holds on it.
    for branch in &mut branches {
        if let Some(mask) = &branch.variants {
            let any_variant = Cond::or(
                branch
                    .mapping
                    .variants
                    .iter()
                    .zip(mask)
                    .filter(|(_, allowed)| **allowed)
                    .map(|(variant, _)| predicates_cond(&variant.when, BASE_ALIAS))
                    .collect(),
            );
            branch.cond = Cond::and(vec![
                std::mem::replace(&mut branch.cond, Cond::True),
                any_variant,
            ]);
        }
    }

    let mut sort = Vec::new();
    for key in &request.sort {
        match sort_columns(def, &branches, key) {
            Ok(per_branch) => {
                for (branch, columns) in branches.iter_mut().zip(per_branch) {
                    branch.sort.extend(columns);
                }
                sort.push(key.clone());
            }
            Err(error) => skip(error, &mut errors, &mut ignored),
        }
    }
    if !sort.is_empty() {
        let text: Vec<String> = sort
            .iter()
            .map(|k| format!("{}{}", if k.descending { "-" } else { "" }, k.name))
            .collect();
        applied.push(("_sort".into(), text.join(",")));
    }

    let mut includes = Vec::new();
    for include in &request.includes {
        let targets: Vec<String> = def
            .search
            .get(&include.param)
            .map(|info| info.targets.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|target| {
                include.target_type.as_ref().is_none_or(|t| t == target) && all.contains_key(target)
            })
            .collect();
        match targets.is_empty() {
            false if include.source_type == def.resource_type => {
                let mut text = format!("{}:{}", include.source_type, include.param);
                if let Some(target_type) = &include.target_type {
                    text.push(':');
                    text.push_str(target_type);
                }
                applied.push(("_include".into(), text));
                for target in targets {
                    includes.push((include.param.clone(), target));
                }
            }
            _ => skip(
                SearchError::unsupported(
                    "_include",
                    format!(
                        "{}:{} is not a mapped reference of {}",
                        include.source_type, include.param, def.resource_type
                    ),
                ),
                &mut errors,
                &mut ignored,
            ),
        }
    }
    let mut revincludes = Vec::new();
    for include in &request.revincludes {
        let points_here = all
            .get(&include.source_type)
            .and_then(|source| source.search.get(&include.param))
            .is_some_and(|info| {
                info.kind == SearchType::Reference && info.targets.contains(&def.resource_type)
            });
        if points_here {
            applied.push((
                "_revinclude".into(),
                format!("{}:{}", include.source_type, include.param),
            ));
            revincludes.push((include.source_type.clone(), include.param.clone()));
        } else {
            skip(
                SearchError::unsupported(
                    "_revinclude",
                    format!(
                        "{}:{} is not a mapped reference to {}",
                        include.source_type, include.param, def.resource_type
                    ),
                ),
                &mut errors,
                &mut ignored,
            );
        }
    }
    if request.count_given {
        applied.push(("_count".into(), request.count.to_string()));
    }
    match request.total {
        TotalMode::None => {}
        TotalMode::Estimate => applied.push(("_total".into(), "estimate".into())),
        TotalMode::Accurate => applied.push(("_total".into(), "accurate".into())),
    }
    match request.summary {
        SummaryMode::False => {}
        SummaryMode::True => applied.push(("_summary".into(), "true".into())),
        SummaryMode::Data => applied.push(("_summary".into(), "data".into())),
        SummaryMode::Count => applied.push(("_summary".into(), "count".into())),
    }
    if let Some(elements) = &request.elements {
        applied.push(("_elements".into(), elements.join(",")));
    }

    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Plan {
        resource_type: def.resource_type.clone(),
        branches,
        sort,
        count: request.count,
        total: request.total,
        summary: request.effective_summary(),
        elements: request.elements,
        includes,
        revincludes,
        applied,
        ignored,
        cursor: request.cursor,
    })
}

struct ClauseCond {
    cond: Cond,
    variants: Option<Vec<bool>>,
}

impl ClauseCond {
    fn sql(cond: Cond) -> ClauseCond {
        ClauseCond {
            cond,
            variants: None,
        }
    }
}

fn column_expr(column: &ColumnRef) -> Expr {
    Expr::column(&column.alias, &column.column)
}

fn clause_cond(
    mapping: &Mapping,
    clause: &Clause,
    timezone: Tz,
    now: NaiveDateTime,
) -> Result<ClauseCond, SearchError> {
    let key = clause.key();
    let modifier = clause.modifier.as_deref();
    let values: Vec<String> = clause
        .values
        .iter()
        .filter(|v| !v.is_empty())
        .cloned()
        .collect();
    if clause.name == "_id" {
        if modifier.is_some() {
            return Err(SearchError::new(&key, "_id takes no modifier"));
        }
        let mut conds = Vec::new();
        let mut mask = (!mapping.variants.is_empty()).then(|| vec![false; mapping.variants.len()]);
        for value in &values {
            if let Some(target) = parse_id(mapping, &unescape(value)) {
                if let (Some(mask), Some(variant)) = (&mut mask, target.variant) {
                    mask[variant] = true;
                }
                conds.push(target.cond);
            }
        }
        return Ok(ClauseCond {
            cond: Cond::or(conds),
            variants: mask,
        });
    }
    if clause.name == "_lastUpdated" {
        let Some(index) = mapping.last_updated else {
            return Ok(ClauseCond::sql(Cond::False));
        };
        let column = mapping.columns[index].clone();
        return date_cond(
            &key,
            modifier,
            &values,
            DateColumns {
                column: &column,
                time: None,
                column_type: ColumnType::Datetime,
                text_layout: None,
            },
            timezone,
            now,
        )
        .map(ClauseCond::sql);
    }
    let Some(param) = mapping.search.get(&clause.name) else {
        // Another mapping of this type serves the parameter; this one has no such element.
        return Ok(ClauseCond::sql(
            if modifier == Some("missing") && values.iter().any(|v| v == "true") {
                Cond::True
            } else {
                Cond::False
            },
        ));
    };
    if let Some(index) = param.collection {
        return collection_param_cond(mapping, index, param, &clause.name, &key, modifier, &values);
    }
    match &param.kind {
        SearchKind::String { columns, words } => {
            string_cond(&key, modifier, &values, columns, *words).map(ClauseCond::sql)
        }
        SearchKind::Token { targets } => {
            token_cond(mapping, &clause.name, &key, modifier, &values, targets)
        }
        SearchKind::Date {
            column,
            time,
            column_type,
            zone,
            format,
        } => date_cond(
            &key,
            modifier,
            &values,
            DateColumns {
                column,
                time: time.as_ref(),
                column_type: *column_type,
                text_layout: format.as_deref(),
            },
            zone.unwrap_or(timezone),
            now,
        )
        .map(ClauseCond::sql),
        SearchKind::Reference { targets } => {
            reference_cond(&key, modifier, &values, targets).map(ClauseCond::sql)
        }
    }
}

/// A string or token parameter over a collection: a resource matches when one of its child rows
/// does (`EXISTS`), and `:not` when none does.
fn collection_param_cond(
    mapping: &Mapping,
    index: usize,
    param: &SearchParam,
    name: &str,
    key: &str,
    modifier: Option<&str>,
    values: &[String],
) -> Result<ClauseCond, SearchError> {
    let negated = match modifier {
        // `:not` is a token modifier; string_cond rejects it on strings.
        Some("not") => matches!(param.kind, SearchKind::Token { .. }),
        Some("missing") => {
            return Err(SearchError::new(
                key,
                "modifier :missing is not supported on this parameter (it reads repeating rows)",
            ));
        }
        _ => false,
    };
    let row_modifier = if negated { None } else { modifier };
    let row_cond = match &param.kind {
        SearchKind::String { columns, words } => {
            string_cond(key, row_modifier, values, columns, *words)?
        }
        SearchKind::Token { targets } => {
            token_cond(mapping, name, key, row_modifier, values, targets)?.cond
        }
        SearchKind::Date { .. } | SearchKind::Reference { .. } => {
            unreachable!("validation allows string and token parameters over collections")
        }
    };
    let collection = &mapping.collections[index];
    let mut conds: Vec<Cond> = collection
        .columns
        .iter()
        .zip(&collection.match_parent)
        .map(|(child, &parent)| Cond::Compare {
            left: column_expr(child),
            op: CmpOp::Eq,
            right: column_expr(&mapping.columns[parent]),
        })
        .collect();
    conds.push(row_cond);
    let rows = child_rows(
        collection,
        vec![Expr::Value(Value::Int(1))],
        conds,
        Vec::new(),
    );
    Ok(ClauseCond::sql(Cond::Exists {
        select: Box::new(rows),
        negated,
    }))
}

fn present(column: &ColumnRef) -> Cond {
    Cond::and(vec![
        Cond::IsNull {
            expr: column_expr(column),
            negated: true,
        },
        Cond::compare(column_expr(column), CmpOp::Ne, Value::Text(String::new())),
    ])
}

fn missing_cond(key: &str, values: &[String], present_cond: Cond) -> Result<Cond, SearchError> {
    let mut conds = Vec::new();
    for value in values {
        match value.as_str() {
            "true" => conds.push(Cond::negate(present_cond.clone())),
            "false" => conds.push(present_cond.clone()),
            other => {
                return Err(SearchError::new(
                    key,
                    format!(":missing takes true or false, got {other:?}"),
                ));
            }
        }
    }
    Ok(Cond::or(conds))
}

fn string_cond(
    key: &str,
    modifier: Option<&str>,
    values: &[String],
    columns: &[ColumnRef],
    words: bool,
) -> Result<Cond, SearchError> {
    if modifier == Some("missing") {
        return missing_cond(key, values, Cond::or(columns.iter().map(present).collect()));
    }
    let mode = match modifier {
        None => Some(LikeMode::StartsWith),
        Some("contains") => Some(LikeMode::Contains),
        Some("exact") => None,
        Some(other) => {
            return Err(SearchError::new(
                key,
                format!(
                    "modifier :{other} is not supported on string parameters (use :exact, :contains or :missing)"
                ),
            ));
        }
    };
    let mut alternatives = Vec::new();
    for value in values {
        let text = unescape(value);
        for column in columns {
            alternatives.push(match mode {
                Some(mode) => Cond::Like {
                    expr: column_expr(column),
                    text: text.clone(),
                    mode,
                },
                None => Cond::ExactText {
                    expr: column_expr(column),
                    text: text.clone(),
                },
            });
            if words && mode == Some(LikeMode::StartsWith) {
                alternatives.push(Cond::Like {
                    expr: column_expr(column),
                    text: text.clone(),
                    mode: LikeMode::WordStartsWith,
                });
            }
        }
    }
    Ok(Cond::or(alternatives))
}

/// `(system, code)` of a token value; `system` is `Some("")` for `|code`.
fn parse_token(key: &str, value: &str) -> Result<(Option<String>, String), SearchError> {
    let parts = split_escaped(value, '|');
    match parts.as_slice() {
        [code] => Ok((None, unescape(code))),
        [system, code] => Ok((Some(unescape(system)), unescape(code))),
        _ => Err(SearchError::new(
            key,
            format!("a token is [system|]code, got {value:?}"),
        )),
    }
}

fn system_matches(requested: &Option<String>, declared: &Option<String>) -> bool {
    match requested {
        None => true,
        Some(system) if system.is_empty() => declared.is_none(),
        Some(system) => declared.as_deref() == Some(system.as_str()),
    }
}

fn token_cond(
    mapping: &Mapping,
    name: &str,
    key: &str,
    modifier: Option<&str>,
    values: &[String],
    targets: &[TokenTarget],
) -> Result<ClauseCond, SearchError> {
    let negated = match modifier {
        None => false,
        Some("not") => true,
        Some("missing") => {
            let present = Cond::or(
                targets
                    .iter()
                    .map(|target| match target {
                        TokenTarget::Column { column, .. } => present(column),
                        TokenTarget::Constant { .. } | TokenTarget::PerVariant => Cond::True,
                    })
                    .collect(),
            );
            return missing_cond(key, values, present).map(ClauseCond::sql);
        }
        Some(other) => {
            return Err(SearchError::new(
                key,
                format!(
                    "modifier :{other} is not supported on token parameters (use :not or :missing)"
                ),
            ));
        }
    };
    let tokens: Vec<(Option<String>, String)> = values
        .iter()
        .map(|v| parse_token(key, v))
        .collect::<Result<_, _>>()?;
    let mut alternatives = Vec::new();
    let mut variant_mask: Option<Vec<bool>> = None;
    for target in targets {
        match target {
            TokenTarget::Column {
                system,
                column,
                map,
            } => {
                for (requested, code) in &tokens {
                    if !system_matches(requested, system) {
                        continue;
                    }
                    if code.is_empty() {
                        alternatives.push(present(column));
                        continue;
                    }
                    match map {
                        Some(map) => {
                            let (legacy, default_matches) = map.reverse(code);
                            if !legacy.is_empty() {
                                alternatives.push(Cond::In {
                                    expr: column_expr(column),
                                    values: legacy.into_iter().map(Value::Text).collect(),
                                    negated: false,
                                });
                            }
                            if default_matches {
                                let listed =
                                    map.listed_values().into_iter().map(Value::Text).collect();
                                alternatives.push(Cond::and(vec![
                                    present(column),
                                    Cond::In {
                                        expr: column_expr(column),
                                        values: listed,
                                        negated: true,
                                    },
                                ]));
                            }
                        }
                        None => alternatives.push(Cond::compare(
                            column_expr(column),
                            CmpOp::Eq,
                            Value::Text(code.clone()),
                        )),
                    }
                }
            }
            TokenTarget::Constant {
                system,
                code: constant,
            } => {
                let hit = tokens.iter().any(|(requested, code)| {
                    system_matches(requested, system) && (code.is_empty() || code == constant)
                });
                alternatives.push(if hit { Cond::True } else { Cond::False });
            }
            TokenTarget::PerVariant => {
                let mask = mapping
                    .variants
                    .iter()
                    .map(|variant| {
                        variant.search.get(name).is_some_and(|codes| {
                            codes.iter().any(|(system, constant)| {
                                tokens.iter().any(|(requested, code)| {
                                    system_matches(requested, system)
                                        && (code.is_empty() || code == constant)
                                })
                            })
                        })
                    })
                    .collect::<Vec<bool>>();
                variant_mask = Some(mask);
            }
        }
    }
    if let Some(mask) = variant_mask {
        let mask = if negated {
            mask.iter().map(|m| !m).collect()
        } else {
            mask
        };
        return Ok(ClauseCond {
            cond: Cond::True,
            variants: Some(mask),
        });
    }
    let matched = Cond::or(alternatives);
    if !negated {
        return Ok(ClauseCond::sql(matched));
    }
    // :not also matches resources that lack the element altogether.
    let absent: Vec<Cond> = targets
        .iter()
        .filter_map(|target| match target {
            TokenTarget::Column { column, .. } => Some(Cond::negate(present(column))),
            _ => None,
        })
        .collect();
    let mut either = vec![Cond::negate(matched)];
    either.extend(absent);
    Ok(ClauseCond::sql(Cond::or(either)))
}

/// A date-time as a text bound in `layout`. Digit-only layouts (HL7 `YYYYMMDD[HHMM[SS]]`) often
/// hold values of several precisions; without its trailing zeros the bound compares with a shorter
/// value as if that value were padded with zeros ("20231102" is midnight).
fn text_bound(at: NaiveDateTime, layout: &str) -> String {
    let text = at.format(layout).to_string();
    if text.bytes().all(|b| b.is_ascii_digit()) {
        text.trim_end_matches('0').to_owned()
    } else {
        text
    }
}

/// The column(s) a date parameter compares with, and how they hold dates.
struct DateColumns<'a> {
    column: &'a ColumnRef,
    time: Option<&'a ColumnRef>,
    column_type: ColumnType,
    /// Set when the column holds date-times as text in this layout.
    text_layout: Option<&'a str>,
}

fn date_cond(
    key: &str,
    modifier: Option<&str>,
    values: &[String],
    columns: DateColumns<'_>,
    timezone: Tz,
    now: NaiveDateTime,
) -> Result<Cond, SearchError> {
    let DateColumns {
        column,
        time,
        column_type,
        text_layout,
    } = columns;
    let date_floor = chrono::NaiveDate::from_ymd_opt(1, 1, 2).expect("valid date");
    // Sentinel dates (0000-00-00, 0001-01-01) mean "no date" in legacy schemas.
    let floor = match text_layout {
        Some(layout) => Value::Text(text_bound(
            date_floor.and_time(chrono::NaiveTime::MIN),
            layout,
        )),
        None => Value::Date(date_floor),
    };
    let present = Cond::and(vec![
        Cond::IsNull {
            expr: column_expr(column),
            negated: true,
        },
        Cond::compare(column_expr(column), CmpOp::Ge, floor),
    ]);
    match modifier {
        None => {}
        Some("missing") => return missing_cond(key, values, present),
        Some(other) => {
            return Err(SearchError::new(
                key,
                format!("modifier :{other} is not supported on date parameters (use :missing)"),
            ));
        }
    }
    let mut alternatives = Vec::new();
    for value in values {
        let query =
            parse_date_query(value, timezone).map_err(|message| SearchError::new(key, message))?;
        alternatives.push(match (column_type, time) {
            // Text in a layout that sorts in time order: compare as text.
            _ if text_layout.is_some() => point_cond(&query, now, |op, at| {
                let layout = text_layout.expect("guarded");
                Cond::compare(column_expr(column), op, Value::Text(text_bound(at, layout)))
            }),
            (ColumnType::Datetime, _) => point_cond(&query, now, |op, at| {
                Cond::compare(column_expr(column), op, Value::DateTime(at))
            }),
            (ColumnType::Date, Some(time)) => {
                point_cond(&query, now, |op, at| split_compare(column, time, op, at))
            }
            (ColumnType::Date, None) => day_cond(column, &query, now),
        });
    }
    Ok(Cond::and(vec![present, Cond::or(alternatives)]))
}

/// Date search against a target that is an instant `t`: the conditions of R4-52 for a point.
fn point_cond(
    query: &DateQuery,
    now: NaiveDateTime,
    cmp: impl Fn(CmpOp, NaiveDateTime) -> Cond,
) -> Cond {
    let range = query.range;
    let within = |start, end| Cond::and(vec![cmp(CmpOp::Ge, start), cmp(CmpOp::Lt, end)]);
    match query.prefix {
        Prefix::Eq => within(range.start, range.end),
        Prefix::Ne => Cond::or(vec![cmp(CmpOp::Lt, range.start), cmp(CmpOp::Ge, range.end)]),
        Prefix::Lt | Prefix::Eb => cmp(CmpOp::Lt, range.start),
        Prefix::Le => cmp(CmpOp::Lt, range.end),
        Prefix::Gt | Prefix::Sa => cmp(CmpOp::Ge, range.end),
        Prefix::Ge => cmp(CmpOp::Ge, range.start),
        Prefix::Ap => {
            let wide = approximate(range, now);
            within(wide.start, wide.end)
        }
    }
}

/// Compares a (date column, time column) pair with a local date-time, keeping a plain range on the
/// date column so its index stays usable.
fn split_compare(date: &ColumnRef, time: &ColumnRef, op: CmpOp, at: NaiveDateTime) -> Cond {
    let day = Value::Date(at.date());
    let clock = Value::Time(at.time());
    let (date_op, time_op) = match op {
        CmpOp::Lt => (CmpOp::Lt, CmpOp::Lt),
        CmpOp::Ge => (CmpOp::Gt, CmpOp::Ge),
        _ => unreachable!("point conditions only use < and >="),
    };
    let bound_op = if op == CmpOp::Lt {
        CmpOp::Le
    } else {
        CmpOp::Ge
    };
    Cond::and(vec![
        Cond::compare(column_expr(date), bound_op, day.clone()),
        Cond::or(vec![
            Cond::compare(column_expr(date), date_op, day.clone()),
            Cond::and(vec![
                Cond::compare(column_expr(date), CmpOp::Eq, day),
                Cond::compare(column_expr(time), time_op, clock),
            ]),
        ]),
    ])
}

/// Date search against a date column. A full value is the day `[d, d+1)`; a MySQL partial date
/// (`1958-00-00`, `1958-07-00`) is the year or month it names, and sorts just before that period's
/// first day (after the previous day). Every condition is put in terms of four questions about the
/// target's range, each answered with valid dates only (so SQL Server, which holds no partial
/// dates, runs the same SQL): does it start at or after / before a day boundary, does it end at or
/// before / after one.
fn day_cond(column: &ColumnRef, query: &DateQuery, now: NaiveDateTime) -> Cond {
    let range = query.range;
    let days = DayBounds { column };
    let contained = |start: NaiveDateTime, end: NaiveDateTime| {
        Cond::and(vec![
            days.starts_at_or_after(ceil_day(start)),
            days.ends_at_or_before(end.date()),
        ])
    };
    match query.prefix {
        Prefix::Eq => contained(range.start, range.end),
        Prefix::Ne => Cond::negate(contained(range.start, range.end)),
        Prefix::Lt => days.starts_before(ceil_day(range.start)),
        Prefix::Le => days.starts_before(ceil_day(range.end)),
        Prefix::Gt => days.ends_after(range.end.date()),
        Prefix::Ge => days.ends_after(range.start.date()),
        Prefix::Sa => days.starts_at_or_after(ceil_day(range.end)),
        Prefix::Eb => days.ends_at_or_before(range.start.date()),
        Prefix::Ap => {
            let wide = approximate(range, now);
            Cond::and(vec![
                days.starts_at_or_after(wide.start.date()),
                days.starts_before(ceil_day(wide.end)),
            ])
        }
    }
}

/// The range questions of `day_cond` for one date column, at day boundaries.
struct DayBounds<'a> {
    column: &'a ColumnRef,
}

impl DayBounds<'_> {
    fn cmp(&self, op: CmpOp, date: NaiveDate) -> Cond {
        Cond::compare(column_expr(self.column), op, Value::Date(date))
    }

    /// The partial dates of the period starting at `first` (a first of month or of year): the
    /// values strictly between the day before and that day.
    fn gap_before(&self, first: NaiveDate) -> Cond {
        Cond::and(vec![
            self.cmp(CmpOp::Gt, first - TimeDelta::days(1)),
            self.cmp(CmpOp::Lt, first),
        ])
    }

    /// The partial periods that contain `boundary` and start at or before it: its year's and its
    /// month's (one gap when the month is January).
    fn gaps_covering(&self, boundary: NaiveDate) -> Vec<Cond> {
        let month = boundary.with_day(1).expect("day 1 exists");
        let year = month.with_month(1).expect("January exists");
        let mut gaps = vec![self.gap_before(year)];
        if month != year {
            gaps.push(self.gap_before(month));
        }
        gaps
    }

    fn starts_at_or_after(&self, boundary: NaiveDate) -> Cond {
        if boundary.day() == 1 {
            // Partial dates of the period starting here sort just before it.
            self.cmp(CmpOp::Gt, boundary - TimeDelta::days(1))
        } else {
            self.cmp(CmpOp::Ge, boundary)
        }
    }

    fn starts_before(&self, boundary: NaiveDate) -> Cond {
        if boundary.day() == 1 {
            self.cmp(CmpOp::Le, boundary - TimeDelta::days(1))
        } else {
            self.cmp(CmpOp::Lt, boundary)
        }
    }

    fn ends_at_or_before(&self, boundary: NaiveDate) -> Cond {
        let mut conds = vec![self.cmp(CmpOp::Lt, boundary)];
        conds.extend(self.gaps_covering(boundary).into_iter().map(Cond::negate));
        Cond::and(conds)
    }

    fn ends_after(&self, boundary: NaiveDate) -> Cond {
        let mut conds = vec![self.cmp(CmpOp::Ge, boundary)];
        conds.extend(self.gaps_covering(boundary));
        Cond::or(conds)
    }
}

fn reference_cond(
    key: &str,
    modifier: Option<&str>,
    values: &[String],
    targets: &[ReferenceTarget],
) -> Result<Cond, SearchError> {
    let mut type_filter = None;
    match modifier {
        None => {}
        Some("missing") => {
            let present = Cond::or(
                targets
                    .iter()
                    .map(|t| Cond::and(t.columns.iter().map(present).collect()))
                    .collect(),
            );
            return missing_cond(key, values, present);
        }
        Some(resource_type) if resource_type.starts_with(|c: char| c.is_ascii_uppercase()) => {
            type_filter = Some(resource_type)
        }
        Some(other) => {
            let names: Vec<String> = targets
                .iter()
                .map(|t| format!(":{}", t.target_type))
                .collect();
            return Err(SearchError::new(
                key,
                format!(
                    "modifier :{other} is not supported on reference parameters (use {} or :missing)",
                    names.join(", ")
                ),
            ));
        }
    }
    let mut alternatives = Vec::new();
    for value in values {
        let value = unescape(value);
        let path = value.split("/_history/").next().unwrap_or_default();
        let segments: Vec<&str> = path.rsplitn(3, '/').collect();
        let (explicit_type, id) = match segments.as_slice() {
            [id] => (None, *id),
            [id, resource_type, ..] => (Some(*resource_type), *id),
            [] => continue,
        };
        for target in targets {
            let wanted = explicit_type.or(type_filter);
            if wanted.is_some_and(|t| t != target.target_type)
                || type_filter.is_some_and(|t| t != target.target_type)
            {
                continue;
            }
            if let Some(cond) = reference_key_cond(target, id) {
                alternatives.push(cond);
            }
        }
    }
    Ok(Cond::or(alternatives))
}

/// `columns = key parts of id` for one reference target, or `None` if `id` cannot be one of its ids.
fn reference_key_cond(target: &ReferenceTarget, id: &str) -> Option<Cond> {
    let values = key_values(
        id,
        &target.target_prefix,
        target.columns.len(),
        target.text_key,
        target.uuid,
    )?;
    Some(key_cond(&target.columns, values))
}

fn key_cond<'a>(columns: impl IntoIterator<Item = &'a ColumnRef>, values: Vec<Value>) -> Cond {
    Cond::and(
        columns
            .into_iter()
            .zip(values)
            .map(|(column, value)| Cond::compare(column_expr(column), CmpOp::Eq, value))
            .collect(),
    )
}

/// The key values `id` stands for, for a key of `count` columns, or `None` if it cannot be one of
/// ours. Integer keys must be canonical, so that the id read back equals the id asked for.
fn key_values(id: &str, prefix: &str, count: usize, text: bool, uuid: bool) -> Option<Vec<Value>> {
    if uuid {
        let rest = id.strip_prefix(prefix)?;
        let bytes: [u8; 16] = uuid_bytes(rest)?.try_into().ok()?;
        return (uuid_text(&bytes)? == rest).then(|| vec![Value::Uuid(bytes)]);
    }
    key_parts(id, prefix, count)?
        .into_iter()
        .map(|part| {
            if text {
                return Some(Value::Text(part.to_owned()));
            }
            let number: i64 = part.parse().ok()?;
            (number.to_string() == part).then_some(Value::Int(number))
        })
        .collect()
}

/// Splits `id` (after `prefix`) into `count` key parts, or `None` if it cannot be one of ours.
fn key_parts<'a>(id: &'a str, prefix: &str, count: usize) -> Option<Vec<&'a str>> {
    let rest = id.strip_prefix(prefix)?;
    let parts: Vec<&str> = rest.split('-').collect();
    let valid = parts.len() == count
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '.'));
    valid.then_some(parts)
}

/// Where a logical id points inside one mapping.
pub struct IdTarget {
    pub cond: Cond,
    pub variant: Option<usize>,
}

/// Parses a logical id for `mapping`: prefix, key parts, and the variant key for unpivots.
pub fn parse_id(mapping: &Mapping, id: &str) -> Option<IdTarget> {
    let key_count = mapping.id.columns.len();
    let (key_part, variant) = if mapping.variants.is_empty() {
        (id, None)
    } else {
        let (key, variant_key) = id.rsplit_once('-')?;
        let variant = mapping.variants.iter().position(|v| v.key == variant_key)?;
        (key, Some(variant))
    };
    let values = key_values(
        key_part,
        &mapping.id.prefix,
        key_count,
        mapping.id.text,
        mapping.id.uuid,
    )?;
    let columns = mapping
        .id
        .columns
        .iter()
        .map(|&index| &mapping.columns[index]);
    let mut conds = vec![key_cond(columns, values)];
    if let Some(variant) = variant {
        conds.push(predicates_cond(&mapping.variants[variant].when, BASE_ALIAS));
    }
    Some(IdTarget {
        cond: Cond::and(conds),
        variant,
    })
}

fn sort_columns(
    def: &ResourceDef,
    branches: &[BranchPlan],
    key: &SortKey,
) -> Result<Vec<Vec<SortColumn>>, SearchError> {
    let unsupported = || {
        SearchError::unsupported(
            "_sort",
            format!("cannot sort {} by {}", def.resource_type, key.name),
        )
    };
    let mut per_branch = Vec::new();
    for branch in branches {
        let mapping = &branch.mapping;
        let columns: Vec<ColumnRef> = match key.name.as_str() {
            "_id" => mapping
                .id
                .columns
                .iter()
                .map(|&i| mapping.columns[i].clone())
                .collect(),
            "_lastUpdated" => match mapping.last_updated {
                Some(index) => vec![mapping.columns[index].clone()],
                None => return Err(unsupported()),
            },
            name => {
                if !def.search.get(name).is_some_and(|info| info.sortable) {
                    return Err(unsupported());
                }
                match mapping.search.get(name).map(|p| &p.kind) {
                    Some(SearchKind::String { columns, .. }) => vec![columns[0].clone()],
                    Some(SearchKind::Date { column, time, .. }) => {
                        let mut columns = vec![column.clone()];
                        columns.extend(time.clone());
                        columns
                    }
                    Some(SearchKind::Token { targets }) => match targets.as_slice() {
                        [TokenTarget::Column { column, .. }] => vec![column.clone()],
                        _ => return Err(unsupported()),
                    },
                    _ => return Err(unsupported()),
                }
            }
        };
        let sort = columns
            .into_iter()
            .map(|column| {
                let index = mapping
                    .column_index(&column)
                    .expect("search columns are selected");
                SortColumn {
                    column,
                    index,
                    descending: key.descending,
                }
            })
            .collect();
        per_branch.push(sort);
    }
    Ok(per_branch)
}

/// SQL for a list of adapter predicates on `alias`'s table.
pub fn predicates_cond(predicates: &[Predicate], default_alias: &str) -> Cond {
    Cond::and(
        predicates
            .iter()
            .map(|p| predicate_cond(p, default_alias))
            .collect(),
    )
}

fn predicate_cond(predicate: &Predicate, default_alias: &str) -> Cond {
    let alias = if predicate.column.alias.is_empty() {
        default_alias
    } else {
        &predicate.column.alias
    };
    let expr = Expr::column(alias, &predicate.column.column);
    match &predicate.op {
        PredicateOp::Equals(value) => Cond::compare(expr, CmpOp::Eq, value.clone()),
        PredicateOp::NotEquals(value) => Cond::compare(expr, CmpOp::Ne, value.clone()),
        PredicateOp::In(values) => Cond::In {
            expr,
            values: values.clone(),
            negated: false,
        },
        PredicateOp::NotIn(values) => Cond::In {
            expr,
            values: values.clone(),
            negated: true,
        },
        PredicateOp::Null(null) => Cond::IsNull {
            expr,
            negated: !null,
        },
        PredicateOp::Empty(true) => Cond::or(vec![
            Cond::IsNull {
                expr: expr.clone(),
                negated: false,
            },
            Cond::compare(expr, CmpOp::Eq, Value::Text(String::new())),
        ]),
        PredicateOp::Empty(false) => Cond::and(vec![
            Cond::IsNull {
                expr: expr.clone(),
                negated: true,
            },
            Cond::compare(expr, CmpOp::Ne, Value::Text(String::new())),
        ]),
        PredicateOp::Positive => Cond::compare(expr, CmpOp::Gt, Value::Int(0)),
        PredicateOp::EqualsColumn(other) => Cond::Compare {
            left: expr,
            op: CmpOp::Eq,
            right: Expr::column(&other.alias, &other.column),
        },
    }
}

/// The mapping's FROM, joins, row filter and `latest` rule, with what `access` admits and `cond`
/// ANDed in: every SELECT over a mapping's rows is built here, so none runs without its access.
///
/// A lookup join that filters (required, or tested by `source.filter`) becomes a LEFT JOIN that
/// only reads the lookup's columns, and the filter becomes `t.foreign IN (the lookup's keys)`: the
/// key list guarantees the match, and a LEFT JOIN cannot make the optimizer start from the lookup
/// table and reach the base table through an index of the lookup's column.
fn base_select(mapping: &Mapping, columns: Vec<Expr>, access: &RowAccess, cond: Cond) -> Select {
    let filtering: Vec<(&JoinDef, &LookupKey)> = mapping
        .joins
        .iter()
        .filter_map(|j| Some((j, j.lookup.as_ref()?)))
        .filter(|(j, _)| j.required || mapping.filter.iter().any(|p| p.column.alias == j.alias))
        .collect();
    let is_filtering = |alias: &str| filtering.iter().any(|(j, _)| j.alias == alias);
    let joins = mapping
        .joins
        .iter()
        .map(|def| Join {
            kind: if is_filtering(&def.alias) {
                JoinKind::Left
            } else {
                join_kind(def)
            },
            cached: def
                .lookup
                .as_ref()
                .map(|key| cached_join(mapping, def, key)),
            ..join(def)
        })
        .collect();
    let base_filter: Vec<&Predicate> = mapping
        .filter
        .iter()
        .filter(|p| !is_filtering(&p.column.alias))
        .collect();
    let mut filter = vec![Cond::and(
        base_filter
            .into_iter()
            .map(|p| predicate_cond(p, BASE_ALIAS))
            .collect(),
    )];
    filter.extend(
        filtering
            .iter()
            .map(|(def, key)| lookup_cond(mapping, def, key)),
    );
    if let Some(latest) = &mapping.latest {
        let newer_alias = "newer";
        let mut conds: Vec<Cond> = latest
            .partition
            .iter()
            .map(|column| Cond::Compare {
                left: Expr::column(newer_alias, &column.column),
                op: CmpOp::Eq,
                right: column_expr(column),
            })
            .collect();
        conds.push(Cond::Compare {
            left: Expr::column(newer_alias, &latest.column.column),
            op: CmpOp::Gt,
            right: column_expr(&latest.column),
        });
        filter.push(Cond::Exists {
            select: Box::new(Select {
                columns: vec![Expr::Value(Value::Int(1))],
                from: TableRef {
                    table: mapping.table.clone(),
                    alias: newer_alias.into(),
                },
                joins: Vec::new(),
                filter: Cond::and(conds),
                order_by: Vec::new(),
                limit: None,
                fixed_join_order: false,
            }),
            negated: true,
        });
    }
    filter.push(access.cond.clone());
    filter.push(cond);
    Select {
        columns,
        from: TableRef {
            table: mapping.table.clone(),
            alias: BASE_ALIAS.into(),
        },
        joins,
        filter: Cond::and(filter),
        order_by: Vec::new(),
        limit: None,
        fixed_join_order: false,
    }
}

fn join(def: &JoinDef) -> Join {
    Join {
        kind: join_kind(def),
        table: TableRef {
            table: def.table.clone(),
            alias: def.alias.clone(),
        },
        on: predicates_cond(&def.on, &def.alias),
        cached: None,
    }
}

/// What the repository needs to serve a lookup join's columns from its cache (`CachedJoin`).
fn cached_join(mapping: &Mapping, def: &JoinDef, key: &LookupKey) -> CachedJoin {
    let mut columns: Vec<String> = Vec::new();
    // What the mapping reads of the lookup, and the keys of lookups linked through it (filled
    // from its row once it is filled).
    let linked = mapping
        .joins
        .iter()
        .filter_map(|j| j.lookup.as_ref())
        .map(|k| &k.foreign);
    for column in mapping.columns.iter().chain(linked) {
        if column.alias == def.alias && !columns.contains(&column.column) {
            columns.push(column.column.clone());
        }
    }
    CachedJoin {
        name: lookup_name(mapping, def),
        key: key.key.column.clone(),
        foreign: column_expr(&key.foreign),
        conditions: Cond::and(
            def.on
                .iter()
                .filter(|p| !matches!(p.op, PredicateOp::EqualsColumn(_)))
                .map(|p| predicate_cond(p, &def.alias))
                .collect(),
        ),
        columns,
    }
}

fn join_kind(def: &JoinDef) -> JoinKind {
    if def.required {
        JoinKind::Inner
    } else {
        JoinKind::Left
    }
}

/// `t.foreign IN (SELECT key FROM lookup WHERE its conditions and the mapping's filters on it)`.
fn lookup_cond(mapping: &Mapping, def: &JoinDef, key: &LookupKey) -> Cond {
    let own = def
        .on
        .iter()
        .filter(|p| !matches!(p.op, PredicateOp::EqualsColumn(_)))
        .chain(
            mapping
                .filter
                .iter()
                .filter(|p| p.column.alias == def.alias),
        );
    Cond::InLookup {
        expr: column_expr(&key.foreign),
        lookup: lookup_name(mapping, def),
        keys: Box::new(Select {
            columns: vec![column_expr(&key.key)],
            from: TableRef {
                table: def.table.clone(),
                alias: def.alias.clone(),
            },
            joins: Vec::new(),
            filter: Cond::and(own.map(|p| predicate_cond(p, &def.alias)).collect()),
            order_by: Vec::new(),
            limit: None,
            fixed_join_order: false,
        }),
    }
}

/// The cache entry of a mapping's lookup join: `Appointment:cat`.
pub fn lookup_name(mapping: &Mapping, def: &JoinDef) -> String {
    format!("{}:{}", mapping.name, def.alias)
}

fn selected_columns(mapping: &Mapping) -> Vec<Expr> {
    mapping.columns.iter().map(column_expr).collect()
}

/// The SELECT for one page of one branch, after `after` (the previous page's last resource),
/// within what the request's access admits of the branch's mapping.
pub fn page_select(
    branch: &BranchPlan,
    access: &RowAccess,
    after: Option<&CursorKey>,
    limit: u64,
) -> Select {
    let mapping = &branch.mapping;
    let key_columns: Vec<&ColumnRef> = mapping
        .page_key
        .iter()
        .map(|&i| &mapping.columns[i])
        .collect();
    let after_cond = match after {
        None => Cond::True,
        Some(cursor) => {
            let sort_terms: Vec<(Expr, bool, &Value)> = branch
                .sort
                .iter()
                .zip(&cursor.sort)
                .map(|(s, v)| (column_expr(&s.column), s.descending, v))
                .collect();
            if branch.index < cursor.branch {
                lexicographic_after(&sort_terms, false)
            } else if branch.index > cursor.branch {
                lexicographic_after(&sort_terms, true)
            } else {
                let mut terms = sort_terms;
                terms.extend(
                    key_columns
                        .iter()
                        .zip(&cursor.key)
                        .map(|(c, v)| (column_expr(c), false, v)),
                );
                // An unpivoted row may still hold variants after the cursor's; a cursor without
                // a variant stands after its whole row.
                lexicographic_after(
                    &terms,
                    !mapping.variants.is_empty() && cursor.variant.is_some(),
                )
            }
        }
    };
    let cond = Cond::and(vec![branch.cond.clone(), after_cond]);
    // When what the request asks (criteria, access, sort) reads the base table alone, the rows
    // come in key order from the cursor on, each joined row found by its key. A criterion on a
    // joined table may be selective enough to start from, unless the pass reads everything; a
    // patient compartment on a joined column is (a few patients' rows).
    let reads_joins = |cond: &Cond| mapping.joins.iter().any(|join| cond.reads(&join.alias));
    let sorts_joins = branch.sort.iter().any(|s| {
        mapping
            .joins
            .iter()
            .any(|join| s.column.alias == join.alias)
    });
    let base_first =
        !sorts_joins && !reads_joins(&access.cond) && (branch.whole_pass || !reads_joins(&cond));
    let mut select = base_select(mapping, selected_columns(mapping), access, cond);
    select.fixed_join_order = base_first;
    select.order_by = branch
        .sort
        .iter()
        .map(|s| OrderTerm {
            expr: column_expr(&s.column),
            descending: s.descending,
        })
        .chain(key_columns.iter().map(|c| OrderTerm {
            expr: column_expr(c),
            descending: false,
        }))
        .collect();
    select.limit = Some(limit);
    same_row::inline_same_row_joins(mapping, &mut select);
    select
}

/// `(terms) > (values)` in sort order (`>=` when `inclusive`), with NULL sorting first ascending,
/// as MySQL, SQLite and SQL Server order it.
fn lexicographic_after(terms: &[(Expr, bool, &Value)], inclusive: bool) -> Cond {
    let equal = |expr: &Expr, value: &Value| match value {
        Value::Null => Cond::IsNull {
            expr: expr.clone(),
            negated: false,
        },
        other => Cond::compare(expr.clone(), CmpOp::Eq, other.clone()),
    };
    let beyond = |expr: &Expr, descending: bool, value: &Value| match (value, descending) {
        (Value::Null, false) => Cond::IsNull {
            expr: expr.clone(),
            negated: true,
        },
        (Value::Null, true) => Cond::False,
        (other, false) => Cond::compare(expr.clone(), CmpOp::Gt, other.clone()),
        (other, true) => Cond::or(vec![
            Cond::compare(expr.clone(), CmpOp::Lt, other.clone()),
            Cond::IsNull {
                expr: expr.clone(),
                negated: false,
            },
        ]),
    };
    let mut alternatives = Vec::new();
    for position in 0..terms.len() {
        let mut conds: Vec<Cond> = terms[..position]
            .iter()
            .map(|(e, _, v)| equal(e, v))
            .collect();
        let (expr, descending, value) = &terms[position];
        conds.push(beyond(expr, *descending, value));
        alternatives.push(Cond::and(conds));
    }
    if inclusive {
        alternatives.push(Cond::and(
            terms.iter().map(|(e, _, v)| equal(e, v)).collect(),
        ));
    }
    Cond::or(alternatives)
}

/// The SELECT counting a branch's matches within `access`: rows, or for unpivots the variants
/// both the search and the access admit.
pub fn count_select(branch: &BranchPlan, access: &RowAccess) -> Select {
    let mapping = &branch.mapping;
    let counter = if mapping.variants.is_empty() {
        Expr::CountAll
    } else {
        Expr::CountWhere(
            mapping
                .variants
                .iter()
                .enumerate()
                .filter(|(index, _)| {
                    branch.variant_allowed(*index) && access.variant_allowed(*index)
                })
                .map(|(_, variant)| predicates_cond(&variant.when, BASE_ALIAS))
                .collect(),
        )
    };
    let mut select = base_select(mapping, vec![counter], access, branch.cond.clone());
    same_row::inline_same_row_joins(mapping, &mut select);
    select
}

/// The SELECT reading rows of `mapping` that satisfy `cond` within `access` (a read by id, an
/// include).
pub fn rows_select(
    mapping: &Mapping,
    access: &RowAccess,
    cond: Cond,
    limit: Option<u64>,
) -> Select {
    let mut select = base_select(mapping, selected_columns(mapping), access, cond);
    select.order_by = mapping
        .id
        .columns
        .iter()
        .map(|&i| OrderTerm {
            expr: column_expr(&mapping.columns[i]),
            descending: false,
        })
        .collect();
    select.limit = limit;
    same_row::inline_same_row_joins(mapping, &mut select);
    select
}

/// Rows of `mapping` whose reference parameter `param` points at one of `ids` of `target_type`.
pub fn referencing_cond(mapping: &Mapping, param: &str, target_type: &str, ids: &[String]) -> Cond {
    let Some(SearchKind::Reference { targets }) = mapping.search.get(param).map(|p| &p.kind) else {
        return Cond::False;
    };
    let alternatives = targets
        .iter()
        .filter(|t| t.target_type == target_type)
        .flat_map(|target| ids.iter().filter_map(|id| reference_key_cond(target, id)))
        .collect();
    Cond::or(alternatives)
}

/// The SELECT of a collection's rows for a set of parent rows, keyed by the parents' match values:
/// each match column in the list of its values among `parent_keys`.
///
/// For a key of several columns that is a superset of the rows asked for (a child of parent
/// (7, 71) comes back for parents (7, 70) and (8, 71)), so callers group the children by their
/// whole key and drop the rest. Matching pairs in SQL instead, as an OR of ANDs, cost MariaDB
/// every alternative on every row examined: about 60 ms a page of 500 Claims for their lines in
/// `billing`, most of an export's database time, where the IN-lists take a binary search each.
pub fn collection_select(collection: &Collection, parent_keys: &[Vec<Value>]) -> Select {
    let match_count = collection.match_parent.len();
    let mut conds = Vec::with_capacity(match_count);
    for (position, column) in collection.columns[..match_count].iter().enumerate() {
        conds.push(Cond::In {
            expr: Expr::column(COLLECTION_ALIAS, &column.column),
            values: distinct(parent_keys.iter().filter_map(|key| key.get(position))),
            negated: false,
        });
    }
    let order_by = collection
        .order_by
        .iter()
        .map(|column| OrderTerm {
            expr: column_expr(column),
            descending: false,
        })
        .collect();
    child_rows(
        collection,
        collection.columns.iter().map(column_expr).collect(),
        conds,
        order_by,
    )
}

/// `values` without repeats, in the order first seen. An export page has a thousand parent keys:
/// integers and texts (nearly every key) are told apart by hash, not each against every other.
fn distinct<'a>(values: impl Iterator<Item = &'a Value>) -> Vec<Value> {
    let mut seen_ints = HashSet::new();
    let mut seen_texts = HashSet::new();
    let mut distinct: Vec<Value> = Vec::new();
    let mut others = Vec::new();
    for value in values {
        let new = match value {
            Value::Int(int) => seen_ints.insert(*int),
            Value::Text(text) => seen_texts.insert(text.as_str()),
            other if others.contains(&other) => false,
            other => {
                others.push(other);
                true
            }
        };
        if new {
            distinct.push(value.clone());
        }
    }
    distinct
}

/// A SELECT over a collection's table and its joins, under its own filter and `conds`.
fn child_rows(
    collection: &Collection,
    columns: Vec<Expr>,
    conds: Vec<Cond>,
    order_by: Vec<OrderTerm>,
) -> Select {
    let mut filter = vec![predicates_cond(&collection.filter, COLLECTION_ALIAS)];
    filter.extend(conds);
    Select {
        columns,
        from: TableRef {
            table: collection.table.clone(),
            alias: COLLECTION_ALIAS.into(),
        },
        joins: collection.joins.iter().map(join).collect(),
        filter: Cond::and(filter),
        order_by,
        limit: None,
        fixed_join_order: false,
    }
}

mod access;
mod same_row;
pub use access::{RowAccess, row_access};

#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod text_bound_tests {
    use chrono::NaiveDateTime;

    use super::text_bound;

    #[test]
    fn digit_bounds_compare_like_zero_padded_values() {
        let at = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap();
        let bound = text_bound(at("2023-11-02 00:00:00"), "%Y%m%d%H%M%S");
        assert_eq!(bound, "20231102");
        // Values of every precision on and after the bound compare >= it; earlier ones do not.
        for later in [
            "20231102",
            "2023110200",
            "202311021430",
            "20231102143000",
            "20231103",
        ] {
            assert!(later >= bound.as_str(), "{later}");
        }
        assert!("20231101235959" < bound.as_str());
        let afternoon = text_bound(at("2023-11-02 14:30:00"), "%Y%m%d%H%M%S");
        assert!("202311021430" >= afternoon.as_str() && "2023110214" < afternoon.as_str());
        assert_eq!(
            text_bound(at("2023-11-02 00:00:00"), "%Y-%m-%d %H:%M:%S"),
            "2023-11-02 00:00:00"
        );
    }
}
