//! The search compiler against the real openemr adapter: exact SQL per dialect for every search
//! case (a snapshot file), plus semantic checks that do not need a database.
//!
//! `UPDATE_EXPECT=1 cargo test` rewrites `snapshots/*.sql.txt` after an intended change; review
//! the diff like code.

use std::fmt::Write;
use std::path::PathBuf;

use chrono::NaiveDateTime;
use chrono_tz::Tz;

use super::{Plan, RowAccess, collection_select, page_select, plan, row_access, rows_select};
use crate::access::{Access, Interaction, PatientLimit, TypeRule};
use crate::adapter::{self, Adapter};
use crate::dialect::ast::{Cond, Value};
use crate::dialect::{DialectKind, render};
use crate::search::cursor::CursorKey;
use crate::search::parse::parse;

fn openemr() -> Adapter {
    adapter::load(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("adapters/openemr"))
        .expect("openemr adapter is valid")
}

fn cerebello() -> Adapter {
    adapter::load(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("adapters/cerebello"))
        .expect("cerebello adapter is valid")
}

fn adapter_named(name: &str) -> Adapter {
    adapter::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("adapters")
            .join(name),
    )
    .unwrap_or_else(|issues| panic!("{name}: {issues:?}"))
}

/// What `Access::everything()` compiles to (checked below for every shipped mapping).
fn unrestricted() -> RowAccess {
    RowAccess {
        cond: Cond::True,
        variants: None,
    }
}

/// `patient/*.rs` for the given patients, plus `rules`.
fn patient_access(ids: &[&str], rules: Vec<TypeRule>) -> Access {
    let mut all = vec![TypeRule {
        resource_type: None,
        read: true,
        search: true,
        filter: Vec::new(),
    }];
    if !rules.is_empty() {
        all = rules;
    }
    Access::new(
        PatientLimit::Only(ids.iter().map(|id| (*id).to_owned()).collect()),
        all,
    )
}

fn rule(resource_type: &str, filter: &[(&str, &str)]) -> TypeRule {
    TypeRule {
        resource_type: Some(resource_type.to_owned()),
        read: true,
        search: true,
        filter: filter
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

fn access_of(adapter: &Adapter, mapping_name: &str, access: &Access) -> RowAccess {
    let resource_type = mapping_name.split('.').next().unwrap();
    let def = &adapter.resources[resource_type];
    let mapping = def
        .mappings
        .iter()
        .find(|m| m.name == mapping_name)
        .unwrap_or_else(|| panic!("no mapping {mapping_name}"));
    row_access(
        def,
        mapping,
        access,
        Interaction::Search,
        adapter.timezone,
        now(),
    )
}

fn now() -> NaiveDateTime {
    NaiveDateTime::parse_from_str("2025-06-15 12:00:00", "%Y-%m-%d %H:%M:%S").unwrap()
}

fn compile(
    adapter: &Adapter,
    resource_type: &str,
    query: &str,
    strict: bool,
) -> Result<Plan, Vec<crate::search::SearchError>> {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let request = parse(&pairs)?;
    let tz: Tz = adapter.timezone;
    plan(
        &adapter.resources[resource_type],
        &adapter.resources,
        request,
        strict,
        tz,
        now(),
    )
}

/// Every search case the MySQL and SQLite suites must render identically in meaning.
const CASES: &[(&str, &str)] = &[
    ("Patient", ""),
    ("Patient", "_id=42"),
    ("Patient", "_id=42,43&_id=43"),
    ("Patient", "_id=abc"),
    ("Patient", "_lastUpdated=ge2025-01-01"),
    ("Patient", "family=Smi"),
    ("Patient", "family:exact=Smith"),
    ("Patient", "family:contains=mit"),
    // Accents and case: insensitive by default and with :contains, exact with :exact.
    ("Patient", "family=Müller"),
    ("Patient", "family:contains=ÜLLE"),
    ("Patient", "family:exact=Müller"),
    ("Patient", "family=Smi,Jon&given=Ma"),
    ("Patient", "name=o'br%_!"),
    ("Patient", "family:missing=true"),
    ("Patient", "gender=female"),
    (
        "Patient",
        "gender=http://hl7.org/fhir/administrative-gender|male",
    ),
    ("Patient", "gender=other"),
    ("Patient", "gender=http://example.org/wrong|male"),
    ("Patient", "gender:not=female"),
    ("Patient", "gender:missing=true"),
    (
        "Patient",
        "identifier=urn:portico:openemr:pubpid|MRN0000001",
    ),
    ("Patient", "identifier=MRN0000001"),
    ("Patient", "identifier=urn:portico:openemr:pid|"),
    ("Patient", "birthdate=1980"),
    ("Patient", "birthdate=1980-02-29"),
    ("Patient", "birthdate=ne1980-02"),
    ("Patient", "birthdate=lt1980-02-15"),
    ("Patient", "birthdate=le1980-02-15"),
    ("Patient", "birthdate=gt1980-02-15"),
    ("Patient", "birthdate=ge1980-02-15"),
    ("Patient", "birthdate=sa1980-02-15"),
    ("Patient", "birthdate=eb1980-02-15"),
    ("Patient", "birthdate=ap1980-02-15"),
    (
        "Patient",
        "birthdate=ge1980-01-01&birthdate=lt1990-01-01&gender=female",
    ),
    ("Patient", "birthdate:missing=true"),
    ("Patient", "death-date=2024-01-01T10:00:00Z"),
    ("Patient", "general-practitioner=Practitioner/3"),
    (
        "Patient",
        "general-practitioner=http://example.org/fhir/Practitioner/3",
    ),
    ("Patient", "general-practitioner:Practitioner=3"),
    ("Patient", "_sort=family,-birthdate"),
    ("Patient", "_sort=-_lastUpdated&_count=10"),
    ("Observation", "patient=7"),
    ("Observation", "patient=Patient/7&category=vital-signs"),
    ("Observation", "patient=7&category=laboratory"),
    (
        "Observation",
        "patient=7&category=http://terminology.hl7.org/CodeSystem/observation-category|vital-signs",
    ),
    (
        "Observation",
        "patient=7&code=http://loinc.org|8302-2,http://loinc.org|85354-9",
    ),
    ("Observation", "patient=7&code=2345-7"),
    (
        "Observation",
        "patient=7&code:not=http://loinc.org|8302-2&category=vital-signs",
    ),
    (
        "Observation",
        "patient=7&category=vital-signs&date=ge2024-01-01T00:00:00Z&date=lt2025-01-01",
    ),
    ("Observation", "patient=7&status=final,amended"),
    ("Observation", "_id=vs-70-bp"),
    ("Observation", "_id=lab-701"),
    ("Observation", "patient=7&_sort=-date"),
    ("Appointment", "patient=7"),
    ("Appointment", "patient=7&date=ge2024-01-01"),
    ("Appointment", "date=2024-03-01T09:30"),
    ("Appointment", "actor=Practitioner/3"),
    ("Appointment", "actor=7"),
    ("Appointment", "practitioner=3&status=cancelled"),
    ("Appointment", "location=1&status=booked,arrived"),
    ("Appointment", "identifier=urn:portico:openemr:pc_eid|70"),
    ("Claim", "patient=7"),
    (
        "Claim",
        "patient=7&created=ge2024-01-01&status=active&use=claim",
    ),
    ("Claim", "_id=7-70-3"),
    ("Claim", "provider=Practitioner/2"),
    ("Coverage", "patient=7"),
    ("Coverage", "beneficiary=7&payor=Organization/ins-3"),
    (
        "Practitioner",
        "identifier=http://hl7.org/fhir/sid/us-npi|1910087919",
    ),
    ("Practitioner", "name=gup"),
    ("Organization", "name=river"),
    ("Organization", "_id=ins-3"),
];

/// Cases the OpenEMR adapter cannot show: a whole name in one column (word-start matching), joins
/// through a many-to-many table.
const CEREBELLO_CASES: &[(&str, &str)] = &[
    ("Patient", "name=sil"),
    ("Patient", "name=Conceição"),
    ("Patient", "name:contains=silva&birthdate=1980-05-02"),
    ("Patient", "organization=Organization/practice-1&_sort=name"),
    ("Coverage", "payor=Organization/insurer-12"),
    (
        "Patient",
        "address-postalcode=01310&address-city:exact=Campinas",
    ),
];

/// Open Dental reads an appointment's date through a join of the appointment to itself (`slot`),
/// which the compiled SQL reads from the base row instead: sargable where a condition admits rows,
/// a CASE where it does not (`:missing`, sorting, the SELECT list).
const OPENDENTAL_CASES: &[(&str, &str)] = &[
    ("Appointment", "patient=7&date=ge2024-01-01"),
    ("Appointment", "date:missing=true"),
    ("Appointment", "patient=7&_sort=-date"),
];

fn render_all(dialect: DialectKind) -> String {
    let mut out = render_cases(dialect, &openemr(), CASES, "");
    out.push_str(&render_cases(
        dialect,
        &adapter_named("opendental"),
        OPENDENTAL_CASES,
        "opendental: ",
    ));
    let cerebello = cerebello();
    out.push_str(&render_cases(
        dialect,
        &cerebello,
        CEREBELLO_CASES,
        "cerebello: ",
    ));
    // A collection joined to another table: a patient's addresses through PersonAddress.
    let patient = &cerebello.resources["Patient"].mappings[0];
    let addresses = collection_select(
        &patient.collections[0],
        &[vec![Value::Int(7)], vec![Value::Int(8)]],
    );
    let query = render(dialect, &addresses);
    writeln!(
        out,
        "## cerebello: Patient addresses of persons 7 and 8\n{}\n   params: {:?}",
        query.sql, query.params
    )
    .unwrap();
    out.push_str(&render_access(dialect));
    out
}

/// Every mapping of every adapter read under `patient/*.rs` for patients 7 and 8: the WHERE
/// clause that keeps the rows inside their compartments.
fn render_access(dialect: DialectKind) -> String {
    let mut out = String::new();
    let access = patient_access(&["7", "8"], Vec::new());
    for name in ["openemr", "opendental", "cerebello", "dentned"] {
        let adapter = adapter_named(name);
        for def in adapter.resources.values() {
            for mapping in &def.mappings {
                let admitted = access_of(&adapter, &mapping.name, &access);
                writeln!(out, "## access {name}: {} for patients 7, 8", mapping.name).unwrap();
                if admitted.denies_all() {
                    writeln!(out, "-- not queried").unwrap();
                    continue;
                }
                let query = render(dialect, &rows_select(mapping, &admitted, Cond::True, None));
                let from = query.sql.find(" FROM ").unwrap();
                writeln!(
                    out,
                    "...{}\n   params: {:?}",
                    &query.sql[from..],
                    query.params
                )
                .unwrap();
            }
        }
    }
    // Granular: labs only, and one vital sign by code (an unpivot variant).
    let openemr = openemr();
    let granular = [
        (
            "Observation.labs",
            vec![rule("Observation", &[("category", LABORATORY)])],
        ),
        (
            "Observation.vitals",
            vec![rule("Observation", &[("category", LABORATORY)])],
        ),
        (
            "Observation.vitals",
            vec![rule("Observation", &[("code", "http://loinc.org|29463-7")])],
        ),
    ];
    for (mapping, rules) in granular {
        let filter = &rules[0].filter;
        let admitted = access_of(&openemr, mapping, &patient_access(&["7"], rules.clone()));
        writeln!(
            out,
            "## access openemr: {mapping} for patient 7 with {filter:?}"
        )
        .unwrap();
        if admitted.denies_all() {
            writeln!(out, "-- not queried").unwrap();
            continue;
        }
        let def_mapping = openemr.resources["Observation"]
            .mappings
            .iter()
            .find(|m| m.name == mapping)
            .unwrap();
        let query = render(
            dialect,
            &rows_select(def_mapping, &admitted, Cond::True, None),
        );
        let from = query.sql.find(" FROM ").unwrap();
        writeln!(
            out,
            "...{}\n   params: {:?}",
            &query.sql[from..],
            query.params
        )
        .unwrap();
        writeln!(out, "   variants: {:?}", admitted.variants).unwrap();
    }
    out
}

const LABORATORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory";

fn render_cases(
    dialect: DialectKind,
    adapter: &Adapter,
    cases: &[(&str, &str)],
    heading: &str,
) -> String {
    let mut out = String::new();
    for (resource_type, query) in cases {
        let plan = compile(adapter, resource_type, query, true)
            .unwrap_or_else(|e| panic!("{resource_type}?{query}: {e:?}"));
        writeln!(out, "## {heading}{resource_type}?{query}").unwrap();
        for branch in &plan.branches {
            if branch.cond == Cond::False {
                writeln!(out, "-- {}: no match", branch.mapping.name).unwrap();
                continue;
            }
            let query = render(dialect, &page_select(branch, &unrestricted(), None, 21));
            // The SELECT list is long and the same for every case of a mapping; what precedes it
            // (T-SQL's TOP) and what follows it are what matter.
            let first_column = query.sql.find(['`', '"', '[']).unwrap();
            let from = query.sql.find(" FROM ").unwrap();
            writeln!(
                out,
                "-- {}\n{}...{}",
                branch.mapping.name,
                &query.sql[..first_column],
                &query.sql[from..]
            )
            .unwrap();
            writeln!(out, "   params: {:?}", query.params).unwrap();
            if let Some(mask) = &branch.variants {
                let admitted: Vec<&str> = branch
                    .mapping
                    .variants
                    .iter()
                    .zip(mask)
                    .filter(|(_, a)| **a)
                    .map(|(v, _)| v.key.as_str())
                    .collect();
                writeln!(out, "   variants: {admitted:?}").unwrap();
            }
        }
        out.push('\n');
    }
    out
}

fn check_snapshot(name: &str, actual: &str) {
    check_snapshot_in("src/search/compile/snapshots", name, actual);
}

/// Compares `actual` with the file `name` in `dir` (relative to the crate); `UPDATE_EXPECT=1`
/// writes it instead.
pub(crate) fn check_snapshot_in(dir: &str, name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(dir)
        .join(name);
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if expected != actual {
        let first_difference = expected
            .lines()
            .zip(actual.lines())
            .position(|(e, a)| e != a)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "{name} differs from the snapshot at line {}:\n  expected: {:?}\n  actual:   {:?}\nrun UPDATE_EXPECT=1 cargo test to accept",
            first_difference + 1,
            expected.lines().nth(first_difference),
            actual.lines().nth(first_difference)
        );
    }
}

#[test]
fn mysql_sql_for_every_search_case() {
    check_snapshot("mysql.sql.txt", &render_all(DialectKind::Mysql));
}

#[test]
fn tsql_sql_for_every_search_case() {
    check_snapshot("tsql.sql.txt", &render_all(DialectKind::Mssql));
}

#[test]
fn sqlite_sql_for_every_search_case() {
    check_snapshot("sqlite.sql.txt", &render_all(DialectKind::Sqlite));
}

#[test]
fn lookup_filters_become_a_key_list_on_the_base_table() {
    let adapter = openemr();
    let plan = compile(&adapter, "Appointment", "patient=7", true).unwrap();
    let select = page_select(&plan.branches[0], &unrestricted(), None, 21);
    // Compiled: a LEFT JOIN for the category's columns and a semi-join for the filter.
    let compiled = render(DialectKind::Mysql, &select);
    assert!(
        compiled.sql.contains("LEFT JOIN `openemr_postcalendar_categories` `cat` ON `cat`.`pc_catid` = `t`.`pc_catid`")
            && compiled.sql.contains("`t`.`pc_catid` IN (SELECT `cat`.`pc_catid` FROM `openemr_postcalendar_categories` `cat` WHERE `cat`.`pc_cattype` = ?)")
            && !compiled.sql.contains("WHERE (`cat`."),
        "{}",
        compiled.sql
    );
    let mut lookups = Vec::new();
    select.filter.lookups(&mut lookups);
    let names: Vec<&str> = lookups.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, ["Appointment:cat"]);
    assert_eq!(
        render(DialectKind::Mysql, lookups[0].1).sql,
        "SELECT `cat`.`pc_catid` FROM `openemr_postcalendar_categories` `cat` WHERE `cat`.`pc_cattype` = ?"
    );
    // Resolved: the keys are bound values, and no subquery is left.
    let resolved = select.with_lookup_keys(&|name| {
        (name == "Appointment:cat").then(|| vec![Value::Int(5), Value::Int(9)])
    });
    let rendered = render(DialectKind::Mysql, &resolved);
    assert!(
        rendered.sql.contains("`t`.`pc_catid` IN (?, ?)") && !rendered.sql.contains("(SELECT"),
        "{}",
        rendered.sql
    );
    assert_eq!(
        rendered.params,
        [
            Value::Text(String::new()),
            Value::Int(1),
            Value::Text(String::new()),
            Value::Text("0".into()),
            Value::Int(5),
            Value::Int(9),
            Value::Text("7".into()),
        ]
    );
    // An unknown lookup stays a semi-join; an empty list matches nothing.
    assert_eq!(select.with_lookup_keys(&|_| None), select);
    let empty = render(
        DialectKind::Mysql,
        &select.with_lookup_keys(&|_| Some(Vec::new())),
    );
    assert!(empty.sql.contains("1 = 0"), "{}", empty.sql);
    // Counts and reads share the rewrite; joins without a filter (Encounter's category) do not.
    let encounter = compile(&adapter, "Encounter", "", true).unwrap();
    let encounters = page_select(&encounter.branches[0], &unrestricted(), None, 21);
    let mut none = Vec::new();
    encounters.filter.lookups(&mut none);
    assert!(none.is_empty());
}

#[test]
fn unknown_parameters_are_ignored_leniently_and_rejected_strictly() {
    let adapter = openemr();
    let lenient = compile(
        &adapter,
        "Patient",
        "family=Smi&shoe-size=12&subject.name=x",
        false,
    )
    .unwrap();
    assert_eq!(
        lenient.applied,
        vec![("family".to_owned(), "Smi".to_owned())]
    );
    let ignored: Vec<&str> = lenient
        .ignored
        .iter()
        .map(|e| e.parameter.as_str())
        .collect();
    assert_eq!(ignored, vec!["shoe-size", "subject.name"]);
    let strict = compile(&adapter, "Patient", "family=Smi&shoe-size=12", true).unwrap_err();
    assert_eq!(strict.len(), 1);
    assert_eq!(strict[0].parameter, "shoe-size");
    assert!(strict[0].unsupported);
}

#[test]
fn malformed_values_are_errors_in_both_modes_and_name_the_parameter() {
    let adapter = openemr();
    for (resource_type, query, parameter) in [
        ("Patient", "birthdate=1980-13-01", "birthdate"),
        ("Patient", "birthdate=yesterday", "birthdate"),
        ("Patient", "family:sounds-like=x", "family:sounds-like"),
        ("Patient", "gender:text=x", "gender:text"),
        ("Patient", "gender=a|b|c", "gender"),
        ("Patient", "family:missing=maybe", "family:missing"),
        (
            "Observation",
            "patient:identifier=x|1",
            "patient:identifier",
        ),
        ("Patient", "_id:exact=1", "_id:exact"),
    ] {
        for strict in [false, true] {
            let errors = compile(&adapter, resource_type, query, strict).unwrap_err();
            assert_eq!(errors[0].parameter, parameter, "{query}");
            assert!(!errors[0].unsupported, "{query}");
        }
    }
}

#[test]
fn empty_values_are_ignored_and_left_out_of_the_self_link() {
    let adapter = openemr();
    let plan = compile(&adapter, "Patient", "family=&gender=female", true).unwrap();
    assert_eq!(
        plan.applied,
        vec![("gender".to_owned(), "female".to_owned())]
    );
}

#[test]
fn result_parameters_are_echoed_in_canonical_form() {
    let adapter = openemr();
    let plan = compile(&adapter, "Appointment", "patient=1&_include=Appointment:actor:Patient&_revinclude=Claim:patient&_count=5&_sort=-date", false).unwrap();
    let keys: Vec<&str> = plan.applied.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, vec!["patient", "_sort", "_include", "_count"]);
    assert_eq!(
        plan.includes,
        vec![("actor".to_owned(), "Patient".to_owned())]
    );
    assert_eq!(
        plan.ignored[0].parameter, "_revinclude",
        "Claim:patient points at Patient, not Appointment"
    );
    let plan = compile(
        &adapter,
        "Patient",
        "_revinclude=Observation:patient&_revinclude=Appointment:actor",
        true,
    )
    .unwrap();
    assert_eq!(
        plan.revincludes,
        vec![
            ("Observation".to_owned(), "patient".to_owned()),
            ("Appointment".to_owned(), "actor".to_owned())
        ]
    );
}

#[test]
fn category_constants_prune_whole_mappings() {
    let adapter = openemr();
    let plan = compile(&adapter, "Observation", "category=laboratory", true).unwrap();
    let conds: Vec<(&str, bool)> = plan
        .branches
        .iter()
        .map(|b| (b.mapping.name.as_str(), b.cond == Cond::False))
        .collect();
    assert_eq!(
        conds,
        vec![("Observation.labs", false), ("Observation.vitals", true)]
    );
}

#[test]
fn code_searches_select_unpivot_variants() {
    let adapter = openemr();
    let plan = compile(
        &adapter,
        "Observation",
        "component-code=http://loinc.org|8480-6",
        true,
    )
    .unwrap();
    let vitals = plan
        .branches
        .iter()
        .find(|b| b.mapping.name == "Observation.vitals")
        .unwrap();
    let admitted: Vec<&str> = vitals
        .mapping
        .variants
        .iter()
        .zip(vitals.variants.as_ref().unwrap())
        .filter(|(_, a)| **a)
        .map(|(v, _)| v.key.as_str())
        .collect();
    assert_eq!(admitted, vec!["bp"], "a component code finds its panel");
    let by_code = compile(
        &adapter,
        "Observation",
        "code=http://loinc.org|8480-6",
        true,
    )
    .unwrap();
    let vitals = by_code
        .branches
        .iter()
        .find(|b| b.mapping.name == "Observation.vitals")
        .unwrap();
    assert_eq!(
        vitals.cond,
        Cond::False,
        "code does not search component codes"
    );
}

#[test]
fn cursors_continue_after_the_last_row_in_sort_order() {
    let adapter = openemr();
    let plan = compile(&adapter, "Patient", "_sort=-birthdate", true).unwrap();
    let cursor = CursorKey {
        sort: vec![Value::Date(
            chrono::NaiveDate::from_ymd_opt(1980, 5, 1).unwrap(),
        )],
        branch: 0,
        key: vec![Value::Int(17)],
        variant: None,
    };
    let query = render(
        DialectKind::Mysql,
        &page_select(&plan.branches[0], &unrestricted(), Some(&cursor), 11),
    );
    let filter = &query.sql[query.sql.find(" WHERE ").unwrap()..];
    assert_eq!(
        filter,
        " WHERE (`t`.`DOB` < ? OR `t`.`DOB` IS NULL OR (`t`.`DOB` = ? AND `t`.`pid` > ?)) ORDER BY `t`.`DOB` DESC, `t`.`pid` LIMIT 11"
    );
    let null_cursor = CursorKey {
        sort: vec![Value::Null],
        ..cursor
    };
    let query = render(
        DialectKind::Sqlite,
        &page_select(&plan.branches[0], &unrestricted(), Some(&null_cursor), 11),
    );
    assert!(
        query
            .sql
            .contains("WHERE (\"t\".\"DOB\" IS NULL AND \"t\".\"pid\" > ?6) ORDER BY"),
        "{}",
        query.sql
    );
}

#[test]
fn ids_parse_only_in_canonical_form() {
    let adapter = openemr();
    let patient = &adapter.resources["Patient"].mappings[0];
    assert!(super::parse_id(patient, "42").is_some());
    for bad in ["042", "4 2", "-1", "42-1", "", "x"] {
        assert!(super::parse_id(patient, bad).is_none(), "{bad:?}");
    }
    let vitals = adapter.resources["Observation"]
        .mappings
        .iter()
        .find(|m| m.name == "Observation.vitals")
        .unwrap();
    assert!(super::parse_id(vitals, "vs-12-bp").is_some());
    assert!(super::parse_id(vitals, "vs-12-nope").is_none());
    assert!(super::parse_id(vitals, "lab-12").is_none());
}

#[test]
fn everything_compiles_to_no_restriction_on_every_shipped_mapping() {
    for name in ["openemr", "opendental", "cerebello", "dentned"] {
        let adapter = adapter_named(name);
        for def in adapter.resources.values() {
            for mapping in &def.mappings {
                for interaction in [Interaction::Read, Interaction::Search] {
                    let admitted = row_access(
                        def,
                        mapping,
                        &Access::everything(),
                        interaction,
                        adapter.timezone,
                        now(),
                    );
                    assert_eq!(admitted, unrestricted(), "{name} {}", mapping.name);
                }
            }
        }
    }
}

#[test]
fn patient_ids_are_bound_and_ids_that_cannot_be_keys_match_nothing() {
    let adapter = openemr();
    // `pid` is an integer: "x7" and an injection cannot be one, so only 7 is bound.
    let access = patient_access(&["7", "x7", "1 OR 1=1", "7/Patient/8"], Vec::new());
    let admitted = access_of(&adapter, "Patient", &access);
    let query = render(
        DialectKind::Mysql,
        &rows_select(
            &adapter.resources["Patient"].mappings[0],
            &admitted,
            Cond::True,
            None,
        ),
    );
    assert!(!query.sql.contains("OR 1=1"), "{}", query.sql);
    assert_eq!(
        query
            .params
            .iter()
            .filter(|p| matches!(p, Value::Int(7)))
            .count(),
        1,
        "{:?}",
        query.params
    );
    // No usable id at all: nothing of a patient's record is queried.
    let nobody = patient_access(&["not-a-pid"], Vec::new());
    assert!(access_of(&adapter, "Patient", &nobody).denies_all());
    assert!(access_of(&adapter, "Observation.labs", &nobody).denies_all());
    let empty = patient_access(&[], Vec::new());
    assert!(access_of(&adapter, "Encounter", &empty).denies_all());
    // Shared types stay readable.
    assert_eq!(access_of(&adapter, "Practitioner", &empty), unrestricted());
}

#[test]
fn undeclared_mappings_are_denied_under_a_patient_limit_only() {
    let mut adapter = openemr();
    let def = adapter.resources.get_mut("Practitioner").unwrap();
    let mapping = std::sync::Arc::get_mut(&mut def.mappings[0]).unwrap();
    mapping.compartment = crate::adapter::model::Compartment::Undeclared;
    assert!(
        access_of(
            &adapter,
            "Practitioner",
            &patient_access(&["7"], Vec::new())
        )
        .denies_all()
    );
    assert_eq!(
        access_of(&adapter, "Practitioner", &Access::everything()),
        unrestricted()
    );
}

#[test]
fn granular_filters_deny_what_they_cannot_express() {
    let adapter = openemr();
    let with = |filter: &[(&str, &str)]| {
        access_of(
            &adapter,
            "Observation.labs",
            &Access::new(PatientLimit::Everyone, vec![rule("Observation", filter)]),
        )
    };
    // A constant category: labs are all laboratory, so no condition is left.
    assert_eq!(with(&[("category", LABORATORY)]), unrestricted());
    for refused in [
        vec![("no-such-param", "1")],
        vec![("category", "")],
        vec![("_count", "5")],
        vec![("_has:Observation:subject:code", "x")],
        vec![("subject.name", "Smith")],
        vec![("date", "not-a-date")],
        vec![("category:bogus", "laboratory")],
        vec![("category", LABORATORY), ("nope", "1")],
    ] {
        assert!(with(&refused).denies_all(), "{refused:?} must deny");
    }
}

#[test]
fn rules_for_a_type_add_up() {
    let adapter = openemr();
    let labs = rule("Observation", &[("category", LABORATORY)]);
    let vitals = rule(
        "Observation",
        &[(
            "category",
            "http://terminology.hl7.org/CodeSystem/observation-category|vital-signs",
        )],
    );
    let both = Access::new(PatientLimit::Everyone, vec![labs.clone(), vitals]);
    assert_eq!(
        access_of(&adapter, "Observation.labs", &both),
        unrestricted()
    );
    assert_eq!(
        access_of(&adapter, "Observation.vitals", &both),
        unrestricted()
    );
    let labs_only = Access::new(PatientLimit::Everyone, vec![labs]);
    assert!(access_of(&adapter, "Observation.vitals", &labs_only).denies_all());
    // Another type's rule grants nothing here.
    let patients = Access::new(PatientLimit::Everyone, vec![rule("Patient", &[])]);
    assert!(access_of(&adapter, "Observation.labs", &patients).denies_all());
}

#[test]
fn a_code_filter_keeps_only_that_vital_sign() {
    let adapter = openemr();
    let weight = Access::new(
        PatientLimit::Everyone,
        vec![rule("Observation", &[("code", "http://loinc.org|29463-7")])],
    );
    let admitted = access_of(&adapter, "Observation.vitals", &weight);
    let vitals = &adapter.resources["Observation"]
        .mappings
        .iter()
        .find(|m| m.name == "Observation.vitals")
        .unwrap()
        .variants;
    let kept: Vec<&str> = vitals
        .iter()
        .enumerate()
        .filter(|(i, _)| admitted.variant_allowed(*i))
        .map(|(_, v)| v.key.as_str())
        .collect();
    assert_eq!(kept, vec!["weight"]);
    assert_ne!(
        admitted.cond,
        Cond::True,
        "rows without a weight are not read"
    );
}

#[test]
fn variants_granted_under_different_row_conditions_are_never_widened() {
    let adapter = openemr();
    // Weights always; heights only when updated since 2020: one mask for all rows cannot say
    // both, so only the variants sharing one row condition are kept.
    let access = Access::new(
        PatientLimit::Everyone,
        vec![
            rule("Observation", &[("code", "http://loinc.org|29463-7")]),
            rule(
                "Observation",
                &[
                    ("code", "http://loinc.org|8302-2"),
                    ("_lastUpdated", "ge2020-01-01"),
                ],
            ),
        ],
    );
    let admitted = access_of(&adapter, "Observation.vitals", &access);
    let vitals = &adapter.resources["Observation"]
        .mappings
        .iter()
        .find(|m| m.name == "Observation.vitals")
        .unwrap()
        .variants;
    let kept: Vec<&str> = vitals
        .iter()
        .enumerate()
        .filter(|(i, _)| admitted.variant_allowed(*i))
        .map(|(_, v)| v.key.as_str())
        .collect();
    assert_eq!(kept, vec!["height"]);
    let sql = render(
        DialectKind::Mysql,
        &rows_select(
            &adapter.resources["Observation"]
                .mappings
                .iter()
                .find(|m| m.name == "Observation.vitals")
                .unwrap()
                .clone(),
            &admitted,
            Cond::True,
            None,
        ),
    );
    assert!(
        sql.params.iter().any(|p| matches!(p, Value::DateTime(_))),
        "heights keep their date condition: {}",
        sql.sql
    );
}

/// A collection matched on several columns is read by each column's distinct values, one IN-list
/// each and no OR of the pairs (callers keep only the children of pairs they asked for).
#[test]
fn collections_matched_on_several_columns_read_each_columns_values() {
    let adapter = openemr();
    let claim = &adapter.resources["Claim"].mappings[0];
    let lines = claim
        .collections
        .iter()
        .find(|c| c.table == "billing" && c.match_parent.len() == 2)
        .expect("the Claim lines, matched on pid and encounter");
    let keys = [
        vec![Value::Int(7), Value::Int(70)],
        vec![Value::Int(7), Value::Int(71)],
        vec![Value::Int(8), Value::Int(80)],
    ];
    let query = render(DialectKind::Mysql, &collection_select(lines, &keys));
    assert!(
        query.sql.contains("`c`.`pid` IN (?, ?)")
            && query.sql.contains("`c`.`encounter` IN (?, ?, ?)")
            && !query.sql.contains(" OR "),
        "{}",
        query.sql
    );
    assert_eq!(
        query.params.iter().filter(|v| **v == Value::Int(7)).count(),
        1,
        "7 once, in the pid list: {:?}",
        query.params
    );
}

/// Parent keys of every kind come out once each, in the order first seen.
#[test]
fn parent_key_lists_keep_each_value_once_in_order() {
    let values = [
        Value::Int(3),
        Value::Text("a".into()),
        Value::Int(1),
        Value::Int(3),
        Value::Decimal(rust_decimal::Decimal::new(25, 1)),
        Value::Text("a".into()),
        Value::Decimal(rust_decimal::Decimal::new(25, 1)),
        Value::Text("b".into()),
    ];
    assert_eq!(
        super::distinct(values.iter()),
        [
            Value::Int(3),
            Value::Text("a".into()),
            Value::Int(1),
            Value::Decimal(rust_decimal::Decimal::new(25, 1)),
            Value::Text("b".into()),
        ]
    );
}
