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

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, TimeDelta, Utc};
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

/// The values `_since` takes, as an ECMA-262 regular expression (the OpenAPI document publishes
/// it): a FHIR instant `YYYY-MM-DDThh:mm:ss[.fraction](Z|(+|-)hh:mm)` on a calendar day (leap
/// years included), without leap seconds, with an offset of at most 14:59 (as the search's date
/// parameters take it). Exactly what `parse_since` accepts; a test holds the two together.
pub const SINCE_PATTERN: &str = concat!(
    "^(?:[0-9]{4}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)",
    "|(?:0[13578]|1[02])-31)",
    "|(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)-02-29)",
    "T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]+)?",
    "(?:Z|[+-](?:0[0-9]|1[0-4]):[0-5][0-9])$",
);

/// `_since` as UTC with milliseconds, the form `part_plan` bounds `_lastUpdated` with; `None`
/// when it is not an instant as `SINCE_PATTERN` describes. An instant before year 0 or after 9999
/// in UTC (possible through the offset) is moved to the edge of that range, which the search's
/// dates cover and no row lies beyond.
fn parse_since(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let number = |from: usize, to: usize| -> Option<u32> {
        let digits = bytes.get(from..to)?;
        digits
            .iter()
            .all(u8::is_ascii_digit)
            .then(|| digits.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
    };
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if separators
        .iter()
        .any(|&(at, ch)| bytes.get(at) != Some(&ch))
    {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(number(0, 4)? as i32, number(5, 7)?, number(8, 10)?)?;
    let mut rest = bytes.get(19..)?;
    let mut nanos = 0;
    if let Some(fraction) = rest.strip_prefix(b".") {
        let length = fraction.iter().take_while(|d| d.is_ascii_digit()).count();
        if length == 0 {
            return None;
        }
        // Nanoseconds: the first nine digits, the rest dropped.
        nanos = fraction[..length.min(9)]
            .iter()
            .chain(std::iter::repeat_n(&b'0', 9 - length.min(9)))
            .fold(0, |n, d| n * 10 + u32::from(d - b'0'));
        rest = &fraction[length..];
    }
    // No leap second: `from_hms_nano_opt` refuses second 60 with nanoseconds under one second.
    let time =
        NaiveTime::from_hms_nano_opt(number(11, 13)?, number(14, 16)?, number(17, 19)?, nanos)?;
    let offset_seconds = match rest {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours = number_of(&[*h1, *h2])?;
            let minutes = number_of(&[*m1, *m2])?;
            if hours > 14 || minutes > 59 {
                return None;
            }
            let seconds = i64::from(hours * 3600 + minutes * 60);
            if *sign == b'-' { -seconds } else { seconds }
        }
        _ => return None,
    };
    let utc = NaiveDateTime::new(date, time) - TimeDelta::seconds(offset_seconds);
    let earliest = NaiveDate::from_ymd_opt(0, 1, 1)?.and_hms_opt(0, 0, 0)?;
    let latest = NaiveDate::from_ymd_opt(9999, 12, 31)?.and_hms_milli_opt(23, 59, 59, 999)?;
    Some(
        utc.clamp(earliest, latest)
            .and_utc()
            .to_rfc3339_opts(SecondsFormat::Millis, true),
    )
}

/// Two ASCII digits as a number.
fn number_of(digits: &[u8; 2]) -> Option<u32> {
    digits
        .iter()
        .all(u8::is_ascii_digit)
        .then(|| u32::from(digits[0] - b'0') * 10 + u32::from(digits[1] - b'0'))
}

/// The values `_type` takes for `adapter`, as an ECMA-262 regular expression (the OpenAPI document
/// publishes it): comma-separated types the adapter serves, each trimmed as `str::trim` trims,
/// blank ones skipped. (A type the token does not grant is a 400 too; the document cannot know
/// the token.)
pub fn type_pattern(adapter: &Adapter) -> String {
    let blank = format!("[{}]*", crate::api::audit::TRIMMED);
    let item = format!("{blank}(?:(?:{}){blank})?", type_names(adapter));
    format!("^{item}(?:,{item})*$")
}

/// The values `_typeFilter` takes for `adapter`, as far as a regular expression can say:
/// `Type?query` for a type the adapter serves. The query must also be a search of that type
/// this server compiles (`check_type_filter`), without result parameters, and the type must be
/// among `_type`'s when that is given; either is a 400 that no pattern can foresee.
pub fn type_filter_pattern(adapter: &Adapter) -> String {
    format!("^(?:{})\\?[\\s\\S]*$", type_names(adapter))
}

/// The adapter's types as alternatives of a regular expression (they are letters only).
fn type_names(adapter: &Adapter) -> String {
    adapter
        .resources
        .keys()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join("|")
}

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
            "_since" => match parse_since(value) {
                Some(instant) => since = Some(instant),
                None => errors.push(
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
            // A POST's Parameters carry the patients (`request.patients`); one in the URL would
            // otherwise be dropped without a word, exporting every patient the token may see.
            "patient" => unsupported(
                "patient",
                "patient is taken as a valueReference in a POSTed Parameters body, not in the URL"
                    .into(),
                &mut errors,
            ),
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
    for branch in &mut planned.branches {
        branch.whole_pass = true;
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn openemr() -> Adapter {
        crate::adapter::load(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("adapters/openemr"))
            .expect("openemr adapter is valid")
    }

    fn request(pairs: &[(&str, &str)], lenient: bool) -> KickoffRequest {
        KickoffRequest {
            pairs: pairs
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
            patients: Vec::new(),
            lenient,
        }
    }

    #[test]
    fn since_is_kept_as_utc_milliseconds_within_the_years_a_search_takes() {
        let adapter = openemr();
        let cases = [
            (
                "2024-03-01T10:00:00.123456+01:00",
                "2024-03-01T09:00:00.123Z",
            ),
            ("2024-02-29T23:30:00-05:30", "2024-03-01T05:00:00.000Z"),
            ("0000-01-01T00:00:00+14:00", "0000-01-01T00:00:00.000Z"),
            ("9999-12-31T23:59:59-14:59", "9999-12-31T23:59:59.999Z"),
        ];
        for (given, kept) in cases {
            let spec = kickoff(
                &adapter,
                &Access::everything(),
                Level::System,
                None,
                &request(&[("_since", given)], false),
            )
            .unwrap();
            assert_eq!(spec.since.as_deref(), Some(kept), "{given}");
            // Every pass's plan takes it (it becomes `_lastUpdated=gt<since>`).
            for resource_type in &spec.types {
                part_plan(&adapter, &spec, resource_type, None, 1_700_000_000_000, 10)
                    .unwrap_or_else(|e| panic!("{given}, {resource_type}: {e}"));
            }
        }
    }

    #[test]
    fn a_patient_in_the_url_is_refused_or_dropped_not_ignored() {
        let adapter = openemr();
        let everything = Access::everything();
        let pairs = [("patient", "Patient/1")];
        let error = kickoff(
            &adapter,
            &everything,
            Level::Patient,
            None,
            &request(&pairs, false),
        )
        .unwrap_err();
        let ApiError::BadRequest(issues) = error else {
            panic!("{error:?}")
        };
        assert_eq!(issues[0].expression.as_deref(), Some("patient"));
        let spec = kickoff(
            &adapter,
            &everything,
            Level::Patient,
            None,
            &request(&pairs, true),
        )
        .unwrap();
        assert_eq!(spec.patients, None);
        assert!(
            spec.ignored[0].starts_with("patient: "),
            "{:?}",
            spec.ignored
        );
    }
}
