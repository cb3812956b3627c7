//! The data-quality audit (`portico audit`, and on a schedule under `portico serve`): finds the
//! data the PMS holds badly before the EHR gets it. Built-in rules run over every mapping through
//! the adapter (each row as Portico maps it, plus SQL for what the driver cannot see); the
//! adapter's own rules (`quality.toml`) are read-only SELECTs. Findings name the rule, the FHIR
//! resource and the PMS row (table and key), never more of the row than that.

pub mod checks;
pub mod report;
pub mod schedule;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use crate::adapter::map::{
    cell_datetime, cell_text, is_sentinel_date, is_sentinel_date_text, map_cell,
};
use crate::adapter::model::{CodeMap, Mapping, Severity, SqlRule, Transform};
use crate::dialect::RenderedQuery;
use crate::dialect::ast::{Cond, Expr, Value};
use crate::repository::{Repository, row_key};

/// Rows read per step of an audit's keyset scan.
const SCAN_ROWS: u64 = 2000;
/// Findings listed per rule in a report (all are counted).
pub const LISTED_PER_RULE: usize = 200;

/// A built-in rule: its id (what `quality.toml`'s `[severity]` names), title and default severity.
pub struct BuiltinRule {
    pub id: &'static str,
    pub title: &'static str,
    pub severity: Severity,
}

pub const LEFT_OUT: &str = "left-out";
pub const UNMAPPED_CODE: &str = "unmapped-code";
pub const ZERO_DATE: &str = "zero-date";
pub const UNPARSEABLE_DATE: &str = "unparseable-date";
pub const BIRTH_DATE_RANGE: &str = "birth-date-out-of-range";
pub const PATIENT_WITHOUT_NAME: &str = "patient-without-name";
pub const BAD_PHONE: &str = "unparseable-phone";
pub const BAD_EMAIL: &str = "unparseable-email";
pub const BAD_POSTAL_CODE: &str = "unparseable-postal-code";
pub const DUPLICATE_PATIENT: &str = "duplicate-patient";
pub const MISSING_PATIENT: &str = "missing-patient";

/// Every built-in rule, in report order.
pub const BUILTIN_RULES: &[BuiltinRule] = &[
    BuiltinRule {
        id: LEFT_OUT,
        title: "Rows Portico skips: they cannot become valid R4",
        severity: Severity::Error,
    },
    BuiltinRule {
        id: MISSING_PATIENT,
        title: "Resources whose patient does not exist",
        severity: Severity::Error,
    },
    BuiltinRule {
        id: UNMAPPED_CODE,
        title: "Codes a code map does not list, served as the map's default",
        severity: Severity::Warning,
    },
    BuiltinRule {
        id: ZERO_DATE,
        title: "Zero, partial and sentinel dates (0000-00-00, 1958-00-00, 0001-01-01)",
        severity: Severity::Info,
    },
    BuiltinRule {
        id: UNPARSEABLE_DATE,
        title: "Dates that do not parse",
        severity: Severity::Warning,
    },
    BuiltinRule {
        id: BIRTH_DATE_RANGE,
        title: "Birth dates in the future or more than 120 years ago",
        severity: Severity::Warning,
    },
    BuiltinRule {
        id: PATIENT_WITHOUT_NAME,
        title: "Patients without a name",
        severity: Severity::Warning,
    },
    BuiltinRule {
        id: BAD_PHONE,
        title: "Phone numbers that do not parse",
        severity: Severity::Warning,
    },
    BuiltinRule {
        id: BAD_EMAIL,
        title: "Email addresses that do not parse",
        severity: Severity::Warning,
    },
    BuiltinRule {
        id: BAD_POSTAL_CODE,
        title: "Postal codes that do not parse",
        severity: Severity::Warning,
    },
    BuiltinRule {
        id: DUPLICATE_PATIENT,
        title: "Likely duplicate patients (same name and birth date)",
        severity: Severity::Warning,
    },
];

pub fn builtin_rule(id: &str) -> Option<&'static BuiltinRule> {
    BUILTIN_RULES.iter().find(|rule| rule.id == id)
}

/// One row (or resource) breaking a rule.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Finding {
    pub resource_type: String,
    /// The FHIR id, when the row forms one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    pub table: String,
    /// The PMS row's key (`pid=12`).
    pub key: String,
    /// What is wrong, in words that carry no patient data (column names, codes, counts).
    pub detail: String,
}

/// A rule's outcome in one audit.
#[derive(Debug, Clone, Serialize)]
pub struct RuleResult {
    pub id: String,
    pub title: String,
    pub severity: Severity,
    /// `builtin`, or `adapter` for `quality.toml` rules.
    pub source: &'static str,
    /// Every finding counted.
    pub count: u64,
    /// The first `LISTED_PER_RULE` findings.
    pub findings: Vec<Finding>,
    /// Findings per code or column: `Appointment status: Z` (the codes a site adds to its maps),
    /// `Patient DOB: zero or partial`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tally: BTreeMap<String, u64>,
    /// Why the rule could not run (an adapter rule's SQL failed): counts as an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RuleResult {
    fn new(id: &str, title: &str, severity: Severity, source: &'static str) -> RuleResult {
        RuleResult {
            id: id.to_owned(),
            title: title.to_owned(),
            severity,
            source,
            count: 0,
            findings: Vec::new(),
            tally: BTreeMap::new(),
            error: None,
        }
    }

    fn add(&mut self, finding: Finding) {
        self.count += 1;
        if self.findings.len() < LISTED_PER_RULE {
            self.findings.push(finding);
        }
    }

    /// Adds a finding and counts it under `tally`.
    fn add_tallied(&mut self, finding: Finding, tally: String) {
        *self.tally.entry(tally).or_default() += 1;
        self.add(finding);
    }

    /// Whether this rule fails the audit: an error-severity rule with findings, or one that
    /// could not run.
    pub fn fails(&self) -> bool {
        self.error.is_some() || (self.severity == Severity::Error && self.count > 0)
    }
}

/// One audit's results.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    pub adapter: String,
    pub started_ms: i64,
    pub finished_ms: i64,
    /// Rows read by the built-in rules' scans.
    pub rows_read: u64,
    pub rules: Vec<RuleResult>,
}

impl AuditReport {
    /// Whether the audit fails (`portico audit` exits non-zero).
    pub fn fails(&self) -> bool {
        self.rules.iter().any(RuleResult::fails)
    }

    pub fn findings(&self) -> u64 {
        self.rules.iter().map(|r| r.count).sum()
    }

    pub fn rule(&self, id: &str) -> Option<&RuleResult> {
        self.rules.iter().find(|r| r.id == id)
    }
}

/// Runs every built-in rule and every adapter rule. Read-only: the PMS pool is read-only and each
/// statement is bounded by the legacy statement timeout.
pub async fn run(repository: &Repository) -> AuditReport {
    let adapter = &repository.adapter;
    let started_ms = crate::state::subscriptions::now_ms();
    let mut audit = Audit::new(repository);
    // Patients first: every other resource's patient references are then checked as its rows
    // are read, with nothing kept but the Patient ids.
    let mut types: Vec<&crate::adapter::model::ResourceDef> = adapter.resources.values().collect();
    types.sort_by_key(|def| def.resource_type != "Patient");
    for def in types {
        for (branch_index, mapping) in def.mappings.iter().enumerate() {
            if let Err(message) = audit.scan_mapping(branch_index, mapping).await {
                audit.scan_failed(mapping, &message);
            }
            if let Err(message) = audit.zero_dates(branch_index, mapping).await {
                audit.scan_failed(mapping, &message);
            }
        }
    }
    audit.resolve_duplicates();
    let mut rules: Vec<RuleResult> = BUILTIN_RULES
        .iter()
        .map(|rule| {
            audit
                .results
                .remove(rule.id)
                .expect("every built-in rule has a result")
        })
        .collect();
    for rule in &adapter.quality.rules {
        rules.push(run_sql_rule(repository, rule).await);
    }
    AuditReport {
        adapter: adapter.name.clone(),
        started_ms,
        finished_ms: crate::state::subscriptions::now_ms(),
        rows_read: audit.rows_read,
        rules,
    }
}

/// The built-in rules' state across the scans.
struct Audit<'r> {
    repository: &'r Repository,
    results: HashMap<&'static str, RuleResult>,
    rows_read: u64,
    /// Every Patient id a row forms (served or not).
    patients: HashSet<String>,
    /// Normalized name and birth date -> the Patients that have them.
    people: HashMap<String, Vec<Finding>>,
    today: chrono::NaiveDate,
}

impl<'r> Audit<'r> {
    fn new(repository: &'r Repository) -> Audit<'r> {
        let severities = &repository.adapter.quality.severities;
        let results = BUILTIN_RULES
            .iter()
            .map(|rule| {
                let severity = severities.get(rule.id).copied().unwrap_or(rule.severity);
                (
                    rule.id,
                    RuleResult::new(rule.id, rule.title, severity, "builtin"),
                )
            })
            .collect();
        Audit {
            repository,
            results,
            rows_read: 0,
            patients: HashSet::new(),
            people: HashMap::new(),
            today: chrono::Utc::now()
                .with_timezone(&repository.adapter.timezone)
                .date_naive(),
        }
    }

    fn add(&mut self, rule: &'static str, finding: Finding) {
        self.results
            .get_mut(rule)
            .expect("a built-in rule")
            .add(finding);
    }

    /// A scan that stopped (the PMS went away, a statement timed out): the audit says so under
    /// `left-out`, as rows it could not check.
    fn scan_failed(&mut self, mapping: &Mapping, message: &str) {
        let result = self.results.get_mut(LEFT_OUT).expect("a built-in rule");
        let text = format!("{}: the scan stopped: {message}", mapping.name);
        result.error = Some(match result.error.take() {
            Some(previous) => format!("{previous}; {text}"),
            None => text,
        });
    }

    /// Every row of `mapping`, in key order, through the mapper.
    async fn scan_mapping(
        &mut self,
        branch_index: usize,
        mapping: &Arc<Mapping>,
    ) -> Result<(), String> {
        let checks = cell_checks(mapping);
        let mut after = None;
        loop {
            let scanned = self
                .repository
                .scan(branch_index, mapping, Cond::True, after, SCAN_ROWS)
                .await
                .map_err(|e| e.to_string())?;
            self.rows_read += scanned.rows as u64;
            let mut previous: Option<&Arc<Vec<Value>>> = None;
            for (outcome, row) in &scanned.outcomes {
                // An unpivoting row yields an outcome per variant, with the same row: its cells
                // are checked once.
                let new_row = previous.is_none_or(|p| !Arc::ptr_eq(p, row));
                previous = Some(row);
                self.check_row(mapping, outcome, row, &checks, new_row);
            }
            if (scanned.rows as u64) < SCAN_ROWS {
                return Ok(());
            }
            after = scanned.last_key;
        }
    }

    fn check_row(
        &mut self,
        mapping: &Mapping,
        outcome: &crate::adapter::map::MapOutcome,
        row: &[Value],
        checks: &[CellCheck],
        check_cells: bool,
    ) {
        let located = |resource_id: Option<String>, detail: String| Finding {
            resource_type: mapping.resource_type.clone(),
            resource_id,
            table: mapping.table.clone(),
            key: row_key(mapping, row),
            detail,
        };
        let resource_id = match outcome {
            Ok(found) => Some(found.id.clone()),
            Err(left_out) => left_out.id.clone(),
        };
        if mapping.resource_type == "Patient"
            && let Some(id) = &resource_id
        {
            self.patients.insert(id.clone());
        }
        if check_cells {
            let findings: Vec<_> = checks
                .iter()
                .filter_map(|check| check_cell(mapping, check, row))
                .collect();
            for (rule, detail, tally) in findings {
                self.results
                    .get_mut(rule)
                    .expect("a built-in rule")
                    .add_tallied(located(resource_id.clone(), detail), tally);
            }
        }
        let found = match outcome {
            Ok(found) => found,
            Err(left_out) => {
                self.add(
                    LEFT_OUT,
                    located(left_out.id.clone(), left_out.reason.to_string()),
                );
                return;
            }
        };
        let resource = found.resource.to_json();
        for (rule, detail) in checks::resource_findings(&resource, self.today) {
            self.add(rule, located(Some(found.id.clone()), detail));
        }
        if mapping.resource_type == "Patient" {
            if let Some(person) = checks::person_key(&resource) {
                self.people
                    .entry(person)
                    .or_default()
                    .push(located(Some(found.id.clone()), String::new()));
            }
        } else {
            // Patient mappings were all read first (`run`).
            for patient in checks::patient_references(&resource) {
                if !self.patients.contains(&patient) {
                    let detail = format!("refers to Patient/{patient}, which no PMS row forms");
                    self.add(MISSING_PATIENT, located(Some(found.id.clone()), detail));
                }
            }
        }
    }

    /// Rows whose date columns hold zero or partial dates, found in SQL (the driver reads a zero
    /// date as NULL).
    async fn zero_dates(
        &mut self,
        branch_index: usize,
        mapping: &Arc<Mapping>,
    ) -> Result<(), String> {
        // Columns read as dates in SQL's own layout (no format): where zero dates live.
        let columns: Vec<usize> = cell_checks(mapping)
            .into_iter()
            .filter_map(|check| match check {
                CellCheck::Date { column, formats } if formats.iter().all(Option::is_none) => {
                    Some(column)
                }
                _ => None,
            })
            .collect();
        for column in columns {
            let source = &mapping.columns[column];
            let cond = Cond::ZeroDate {
                expr: Expr::column(&source.alias, &source.column),
            };
            let mut after = None;
            loop {
                let scanned = self
                    .repository
                    .scan(branch_index, mapping, cond.clone(), after, SCAN_ROWS)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut seen = HashSet::new();
                for (outcome, row) in &scanned.outcomes {
                    let resource_id = match outcome {
                        Ok(found) => Some(found.id.clone()),
                        Err(left_out) => left_out.id.clone(),
                    };
                    let key = row_key(mapping, row);
                    if !seen.insert(key.clone()) {
                        continue;
                    }
                    self.results
                        .get_mut(ZERO_DATE)
                        .expect("a built-in rule")
                        .add_tallied(
                            Finding {
                                resource_type: mapping.resource_type.clone(),
                                resource_id,
                                table: mapping.table.clone(),
                                key,
                                detail: format!(
                                    "column {} holds a zero or partial date",
                                    source.column
                                ),
                            },
                            format!("{} {}: zero or partial", mapping.name, source.column),
                        );
                }
                if (scanned.rows as u64) < SCAN_ROWS {
                    break;
                }
                after = scanned.last_key;
            }
        }
        Ok(())
    }

    /// After every scan: patients sharing a name and a birth date.
    fn resolve_duplicates(&mut self) {
        let mut groups: Vec<Vec<Finding>> = std::mem::take(&mut self.people)
            .into_values()
            .filter(|group| group.len() > 1)
            .collect();
        groups.sort_by(|a, b| a[0].key.cmp(&b[0].key));
        for group in groups {
            let ids: Vec<String> = group
                .iter()
                .filter_map(|f| f.resource_id.as_ref().map(|id| format!("Patient/{id}")))
                .collect();
            for mut finding in group {
                let own = finding
                    .resource_id
                    .as_deref()
                    .map(|id| format!("Patient/{id}"));
                let others: Vec<&str> = ids
                    .iter()
                    .filter(|id| Some(id.as_str()) != own.as_deref())
                    .map(String::as_str)
                    .collect();
                finding.detail = format!("same name and birth date as {}", others.join(", "));
                self.add(DUPLICATE_PATIENT, finding);
            }
        }
    }
}

/// A row cell the built-in rules judge: a code some map translates, or a date some date
/// transforms read (with each one's format: a cell is a date when any of them reads it).
enum CellCheck {
    Code {
        column: usize,
        map: Arc<CodeMap>,
    },
    Date {
        column: usize,
        formats: Vec<Option<String>>,
    },
}

/// The cells of `mapping`'s rows the built-in rules judge, each once.
fn cell_checks(mapping: &Mapping) -> Vec<CellCheck> {
    let mut checks: Vec<CellCheck> = Vec::new();
    mapping.elements.visit_row_transforms(&mut |transform| match transform {
        // A map with `default_absent` declares that codes it does not list mean nothing to serve.
        Transform::Map { column, map } if map.default.is_some() => {
            let known = checks.iter().any(|check| {
                matches!(check, CellCheck::Code { column: c, map: m } if c == column && m.name == map.name)
            });
            if !known {
                checks.push(CellCheck::Code {
                    column: *column,
                    map: map.clone(),
                });
            }
        }
        Transform::Date { column, format } | Transform::DateTime { column, format, .. } => {
            match checks
                .iter_mut()
                .find(|check| matches!(check, CellCheck::Date { column: c, .. } if c == column))
            {
                Some(CellCheck::Date { formats, .. }) => formats.push(format.clone()),
                _ => checks.push(CellCheck::Date {
                    column: *column,
                    formats: vec![format.clone()],
                }),
            }
        }
        _ => {}
    });
    checks
}

/// What is wrong with a row's cell, if anything: (rule, detail, what it is tallied under).
fn check_cell(
    mapping: &Mapping,
    check: &CellCheck,
    row: &[Value],
) -> Option<(&'static str, String, String)> {
    match check {
        CellCheck::Code { column, map } => {
            let cell = &row[*column];
            if map_cell(map, cell)?.is_some() {
                return None;
            }
            let code = cell_text(cell)?;
            if map.knows(&code) {
                return None;
            }
            let column_name = &mapping.columns[*column].column;
            Some((
                UNMAPPED_CODE,
                format!(
                    "column {column_name}: code {code:?} is not in map {:?}",
                    map.name
                ),
                format!("{} {}: {code}", mapping.name, map.name),
            ))
        }
        CellCheck::Date { column, formats } => {
            let column_name = &mapping.columns[*column].column;
            let sentinel = || {
                Some((
                    ZERO_DATE,
                    format!("column {column_name} holds the sentinel date 0001-01-01"),
                    format!("{} {column_name}: 0001-01-01", mapping.name),
                ))
            };
            match &row[*column] {
                Value::Date(date) if is_sentinel_date(*date) => sentinel(),
                Value::DateTime(time) if is_sentinel_date(time.date()) => sentinel(),
                Value::Text(text) if text.trim().starts_with("0001-01-01") => sentinel(),
                // Zero and partial dates are the SQL check's (`zero_dates`): MySQL's driver
                // reads a zero date as NULL.
                Value::Text(text)
                    if !text.trim().is_empty()
                        && !is_sentinel_date_text(text.trim())
                        && !text.contains("-00")
                        && formats.iter().all(|format| {
                            cell_datetime(&row[*column], format.as_deref()).is_none()
                        }) =>
                {
                    Some((
                        UNPARSEABLE_DATE,
                        format!("column {column_name} holds text that is no date"),
                        format!("{} {column_name}", mapping.name),
                    ))
                }
                _ => None,
            }
        }
    }
}

/// An adapter rule: its SELECT for this database's dialect, run on the read-only pool.
async fn run_sql_rule(repository: &Repository, rule: &SqlRule) -> RuleResult {
    let mut result = RuleResult::new(&rule.id, &rule.title, rule.severity, "adapter");
    let dialect = repository.db.dialect();
    let Some((_, sql)) = rule.sql.iter().find(|(kind, _)| *kind == dialect) else {
        result.error = Some(format!("no SQL for {}", dialect.name()));
        return result;
    };
    let query = RenderedQuery {
        sql: sql.clone(),
        params: Vec::new(),
    };
    match repository.db.fetch(&query).await {
        Ok(rows) => {
            for row in rows {
                let text = |index: usize| row.get(index).and_then(cell_text);
                result.add(Finding {
                    resource_type: rule.resource_type.clone(),
                    resource_id: text(1),
                    table: rule.table.clone(),
                    key: format!(
                        "{}={}",
                        rule.key,
                        text(0).unwrap_or_else(|| "(absent)".to_owned())
                    ),
                    detail: text(2).unwrap_or_default(),
                });
            }
        }
        Err(error) => result.error = Some(error.to_string()),
    }
    result
}
