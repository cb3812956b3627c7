//! Bulk Data `$export` (Bulk Data Access 2.0.0): what a kick-off asks for, checked against the
//! adapter and the token's access (`kickoff`), and the search plan of each of the job's passes
//! (`part_plan`). `worker` runs the stored jobs in the background, page by page, into NDJSON files
//! (`files`); `api/export.rs` is the HTTP side (kick-off, status, manifest, files, cancel).
//!
//! A pass reads through the same path as a search (`Repository::search`, the compiled SQL with the
//! patient compartment inside it), so an exported resource is exactly what a read serves.

pub mod files;
pub mod worker;

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::access::{Access, Interaction};
use crate::adapter::model::Adapter;
use crate::dialect::ast::Cond;
use crate::error::ApiError;
use crate::fhir::outcome::{Issue, IssueType};
use crate::search::compile::{Plan, plan};
use crate::search::parse::parse;

/// The `_outputFormat` spellings of NDJSON (BD-04); the default.
pub const OUTPUT_FORMATS: [&str; 3] = ["application/fhir+ndjson", "application/ndjson", "ndjson"];

/// The manifest extension naming the types whose `_since` could not be applied: their mappings
/// have no last-updated column, so every resource of them is exported.
pub const SINCE_NOT_APPLIED: &str = "https://portico.health/fhir/bulk-export/since-not-applied-to";

/// Where an export starts (BD-01).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// `/$export`: every resource.
    System,
    /// `/Patient/$export`: the compartments of all patients (or of the `patient` parameter).
    Patient,
    /// `/Group/[id]/$export`: the compartments of the group's members.
    Group,
}

/// What a job exports, as stored with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportSpec {
    pub level: Level,
    pub group: Option<String>,
    /// The types exported, in order.
    pub types: Vec<String>,
    /// `_since`, as an RFC 3339 instant.
    pub since: Option<String>,
    /// `_typeFilter` queries per type (ORed).
    pub type_filters: BTreeMap<String, Vec<String>>,
    /// `_elements` per type; the key `*` holds the elements named without a type.
    pub elements: BTreeMap<String, Vec<String>>,
    /// The `patient` parameter's ids.
    pub patients: Option<Vec<String>>,
    /// A Group export's members, resolved when the job first runs.
    #[serde(default)]
    pub members: Option<Vec<String>>,
    /// The access of the kick-off's token: the job reads under it.
    pub access: Access,
    /// Problems ignored under `Prefer: handling=lenient`, reported in the error files.
    pub ignored: Vec<String>,
}

impl ExportSpec {
    /// The `_elements` that apply to `resource_type`; `None` keeps every element.
    pub fn elements_of(&self, resource_type: &str) -> Option<Vec<String>> {
        let names: Vec<String> = self
            .elements
            .get("*")
            .into_iter()
            .chain(self.elements.get(resource_type))
            .flatten()
            .cloned()
            .collect();
        (!names.is_empty()).then_some(names)
    }

    /// The passes of the job, in order: each type once, or once per `_typeFilter` query.
    pub fn parts(&self) -> Vec<(String, Option<String>)> {
        let mut parts = Vec::new();
        for resource_type in &self.types {
            match self.type_filters.get(resource_type) {
                Some(filters) if !filters.is_empty() => parts.extend(
                    filters
                        .iter()
                        .map(|filter| (resource_type.clone(), Some(filter.clone()))),
                ),
                _ => parts.push((resource_type.clone(), None)),
            }
        }
        parts
    }

    /// The access a pass reads under: the token's, narrowed to the group's members and to the
    /// `patient` parameter's patients.
    pub fn reading_access(&self) -> Access {
        let mut access = self.access.clone();
        for ids in [&self.members, &self.patients].into_iter().flatten() {
            access = access.narrowed_to_patients(ids);
        }
        access
    }
}

/// The kick-off's parameters, from the query string or a POSTed Parameters resource.
#[derive(Debug, Default)]
pub struct KickoffRequest {
    pub pairs: Vec<(String, String)>,
    /// `patient` references (POST only).
    pub patients: Vec<String>,
    /// `Prefer: handling=lenient`.
    pub lenient: bool,
}

/// Checks a kick-off against the adapter and the access and makes the job's spec. Errors are
/// 400s naming the parameter; under lenient handling, unsupported parameters are dropped and
/// reported in the error files instead.
pub fn kickoff(
    adapter: &Adapter,
    access: &Access,
    level: Level,
    group: Option<String>,
    request: &KickoffRequest,
) -> Result<ExportSpec, ApiError> {
    let mut errors: Vec<Issue> = Vec::new();
    let mut ignored: Vec<String> = Vec::new();
    let mut unsupported = |parameter: &str, message: String, errors: &mut Vec<Issue>| {
        if request.lenient {
            ignored.push(format!("{parameter}: {message} (ignored)"));
        } else {
            errors.push(Issue::error(IssueType::NotSupported, message).at(parameter));
        }
    };
    let mut since = None;
    let mut types: Vec<String> = Vec::new();
    let mut type_filters: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut elements: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let served = |resource_type: &str| {
        adapter.resources.contains_key(resource_type)
            && access.allows(resource_type, Interaction::Search)
    };
    for (name, value) in &request.pairs {
        match name.as_str() {
            "_outputFormat" => {
                if !OUTPUT_FORMATS.contains(&value.as_str()) {
                    errors.push(
                        Issue::error(
                            IssueType::NotSupported,
                            format!(
                                "_outputFormat {value:?} is not supported: NDJSON only ({})",
                                OUTPUT_FORMATS.join(", ")
                            ),
                        )
                        .at("_outputFormat"),
                    );
                }
            }
            "_since" => match DateTime::parse_from_rfc3339(value) {
                Ok(instant) => {
                    since = Some(
                        instant
                            .with_timezone(&Utc)
                            .to_rfc3339_opts(SecondsFormat::Millis, true),
                    )
                }
                Err(_) => errors.push(
                    Issue::error(
                        IssueType::Invalid,
                        format!(
                            "_since {value:?} is not a FHIR instant (such as 2026-11-01T00:00:00Z)"
                        ),
                    )
                    .at("_since"),
                ),
            },
            "_type" => {
                for resource_type in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    if !adapter.resources.contains_key(resource_type) {
                        unsupported(
                            "_type",
                            format!("{resource_type} is not a resource type this server exports"),
                            &mut errors,
                        );
                    } else if !access.allows(resource_type, Interaction::Search) {
                        errors.push(
                            Issue::error(
                                IssueType::Forbidden,
                                format!("the token's scopes do not grant {resource_type}"),
                            )
                            .at("_type"),
                        );
                    } else if !types.iter().any(|t| t == resource_type) {
                        types.push(resource_type.to_owned());
                    }
                }
            }
            "_typeFilter" => match value.split_once('?') {
                Some((resource_type, query)) if adapter.resources.contains_key(resource_type) => {
                    match check_type_filter(adapter, resource_type, query) {
                        Ok(()) => type_filters
                            .entry(resource_type.to_owned())
                            .or_default()
                            .push(query.to_owned()),
                        Err(why) => unsupported("_typeFilter", why, &mut errors),
                    }
                }
                _ => unsupported(
                    "_typeFilter",
                    format!(
                        "_typeFilter {value:?} is not Type?query for a type this server exports"
                    ),
                    &mut errors,
                ),
            },
            "_elements" => {
                for element in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                    let (scope, name) = match element.split_once('.') {
                        Some((resource_type, name)) => (resource_type, name),
                        None => ("*", element),
                    };
                    elements
                        .entry(scope.to_owned())
                        .or_default()
                        .push(name.to_owned());
                }
            }
            "patient" => {}
            "includeAssociatedData" => unsupported(
                name,
                "includeAssociatedData is not supported".into(),
                &mut errors,
            ),
            other => unsupported(
                other,
                format!("{other} is not a parameter of $export"),
                &mut errors,
            ),
        }
    }
    let patients = if request.patients.is_empty() {
        None
    } else if level == Level::System {
        errors.push(
            Issue::error(
                IssueType::Invalid,
                "the patient parameter is for Patient and Group exports, not a system export",
            )
            .at("patient"),
        );
        None
    } else {
        let mut ids = Vec::new();
        for reference in &request.patients {
            match reference.strip_prefix("Patient/") {
                Some(id) if !id.is_empty() && !id.contains('/') => ids.push(id.to_owned()),
                _ => errors.push(
                    Issue::error(
                        IssueType::Invalid,
                        format!("patient {reference:?} is not a reference Patient/[id]"),
                    )
                    .at("patient"),
                ),
            }
        }
        Some(ids)
    };
    if types.is_empty() {
        types = adapter
            .resources
            .keys()
            .filter(|t| served(t))
            .cloned()
            .collect();
    }
    // A filter for a type the export leaves out is a request the client did not mean.
    let stray: Vec<String> = type_filters
        .keys()
        .filter(|t| !types.contains(t))
        .cloned()
        .collect();
    for resource_type in stray {
        type_filters.remove(&resource_type);
        unsupported(
            "_typeFilter",
            format!("_typeFilter for {resource_type}, which _type leaves out"),
            &mut errors,
        );
    }
    if types.is_empty() && errors.is_empty() {
        errors.push(Issue::error(
            IssueType::Forbidden,
            "the token's scopes grant no resource type this server exports",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::BadRequest(errors));
    }
    Ok(ExportSpec {
        level,
        group,
        types,
        since,
        type_filters,
        elements,
        patients,
        members: None,
        access: access.clone(),
        ignored,
    })
}

/// A `_typeFilter` query must be a search this server compiles, without the result parameters
/// an export cannot honour (BD-07).
fn check_type_filter(adapter: &Adapter, resource_type: &str, query: &str) -> Result<(), String> {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    if let Some((name, _)) = pairs.iter().find(|(name, _)| {
        name.starts_with("_include")
            || name.starts_with("_revinclude")
            || [
                "_sort",
                "_count",
                "_summary",
                "_elements",
                "_total",
                "_cursor",
            ]
            .contains(&name.as_str())
    }) {
        return Err(format!(
            "{name} cannot be part of a _typeFilter ({resource_type}?{query})"
        ));
    }
    let now = Utc::now().naive_utc();
    let request = parse(&pairs).map_err(|errors| describe(resource_type, query, &errors))?;
    plan(
        &adapter.resources[resource_type],
        &adapter.resources,
        request,
        true,
        adapter.timezone,
        now,
    )
    .map(|_| ())
    .map_err(|errors| describe(resource_type, query, &errors))
}

fn describe(resource_type: &str, query: &str, errors: &[crate::search::SearchError]) -> String {
    let reasons: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
    format!(
        "_typeFilter {resource_type}?{query}: {}",
        reasons.join("; ")
    )
}

/// The plan of one pass: the type's search (under its `_typeFilter` query, if any), bounded on
/// each mapping with a last-updated column to `(_since, transactionTime]`, read `page_size` at
/// a time. Mappings without that column are read whole (the manifest says which).
pub fn part_plan(
    adapter: &Adapter,
    spec: &ExportSpec,
    resource_type: &str,
    filter: Option<&str>,
    transaction_ms: i64,
    page_size: usize,
) -> Result<Plan, String> {
    let def = adapter
        .resources
        .get(resource_type)
        .ok_or_else(|| format!("the adapter no longer serves {resource_type}"))?;
    let now = Utc::now().naive_utc();
    let pairs: Vec<(String, String)> = filter
        .map(|query| {
            form_urlencoded::parse(query.as_bytes())
                .map(|(name, value)| (name.into_owned(), value.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    let request = parse(&pairs).map_err(|e| describe(resource_type, filter.unwrap_or(""), &e))?;
    let mut planned = plan(
        def,
        &adapter.resources,
        request,
        true,
        adapter.timezone,
        now,
    )
    .map_err(|e| describe(resource_type, filter.unwrap_or(""), &e))?;
    if def.mappings.iter().any(|m| m.last_updated.is_some()) {
        let transaction = instant(transaction_ms);
        let mut bounds = vec![("_lastUpdated".to_owned(), format!("le{transaction}"))];
        if let Some(since) = &spec.since {
            bounds.push(("_lastUpdated".to_owned(), format!("gt{since}")));
        }
        let request = parse(&bounds).map_err(|e| describe(resource_type, "_since", &e))?;
        let bounded = plan(
            def,
            &adapter.resources,
            request,
            true,
            adapter.timezone,
            now,
        )
        .map_err(|e| describe(resource_type, "_since", &e))?;
        for (branch, bound) in planned.branches.iter_mut().zip(bounded.branches) {
            if branch.mapping.last_updated.is_some() {
                branch.cond = Cond::and(vec![branch.cond.clone(), bound.cond]);
            }
        }
    }
    planned.count = page_size;
    Ok(planned)
}

/// The types of `spec` whose `_since` is not applied (no last-updated column on some mapping).
pub fn since_not_applied(adapter: &Adapter, spec: &ExportSpec) -> Vec<String> {
    if spec.since.is_none() {
        return Vec::new();
    }
    spec.types
        .iter()
        .filter(|t| {
            adapter
                .resources
                .get(t.as_str())
                .is_some_and(|def| def.mappings.iter().any(|m| m.last_updated.is_none()))
        })
        .cloned()
        .collect()
}

/// Milliseconds since the epoch as a FHIR instant (UTC, milliseconds).
pub fn instant(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}
