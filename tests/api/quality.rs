//! The data-quality audit (`portico::quality`) on the demo generator's data, which plants legacy
//! quirks: every rule's count equals the same question asked in plain SQL, on SQLite and MariaDB,
//! for the openemr and opendental adapters; and `portico audit` prints each format and exits
//! non-zero on error-severity findings.

use std::sync::Arc;
use std::time::Duration;

use portico::app::load_adapter;
use portico::dialect::RenderedQuery;
use portico::dialect::ast::Value;
use portico::quality::{AuditReport, Finding};
use portico::repository::{LookupCache, Repository};

use crate::support::{self, Backend};

/// Enough patients for every planted quirk (one patient in `QUIRK_PERIOD` has each) to occur
/// at least twice.
const AUDIT_PATIENTS: usize = 2 * portico::demo::QUIRK_PERIOD as usize + 10;

fn repository(db_url: &str, adapter: &str) -> Repository {
    let mut settings = support::settings(db_url, 10_000);
    settings.legacy.adapter = adapter.to_owned();
    Repository {
        adapter: Arc::new(load_adapter(&settings).unwrap()),
        db: support::legacy_database(db_url, Duration::from_secs(10)),
        lookups: Arc::new(LookupCache::new(settings.legacy.lookup_refresh())),
    }
}

async fn count(repository: &Repository, sql: &str) -> u64 {
    let rows = repository
        .db
        .fetch(&RenderedQuery {
            sql: sql.to_owned(),
            params: Vec::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", e.message));
    match rows[0][0] {
        Value::Int(n) => n as u64,
        ref other => panic!("{sql}: {other:?}"),
    }
}

fn findings<'a>(report: &'a AuditReport, rule: &str) -> &'a [Finding] {
    &report
        .rule(rule)
        .unwrap_or_else(|| panic!("rule {rule}"))
        .findings
}

/// Asserts the rule's tally under `key` (a code or a column) equals the oracle's, which is not 0.
async fn assert_tally(
    report: &AuditReport,
    repository: &Repository,
    (rule, key): (&str, &str),
    sql: &str,
) {
    let expected = count(repository, sql).await;
    assert!(
        expected > 0,
        "{rule} {key}: the demo data plants none ({sql})"
    );
    let result = report.rule(rule).unwrap_or_else(|| panic!("rule {rule}"));
    assert_eq!(
        result.tally.get(key).copied(),
        Some(expected),
        "{rule} {key}: {:?}",
        result.tally
    );
}

fn count_of(report: &AuditReport, rule: &str) -> u64 {
    report
        .rule(rule)
        .unwrap_or_else(|| panic!("rule {rule}"))
        .count
}

/// Asserts the rule's count equals the oracle's, and that the data has such rows at all.
async fn assert_rule(report: &AuditReport, repository: &Repository, rule: &str, sql: &str) {
    assert_rule_summed(report, repository, rule, &[sql.to_owned()]).await;
}

/// `assert_rule` for an oracle asked in several statements (one per column), their counts added.
async fn assert_rule_summed(
    report: &AuditReport,
    repository: &Repository,
    rule: &str,
    statements: &[String],
) {
    let mut expected = 0;
    for sql in statements {
        expected += count(repository, sql).await;
    }
    assert!(
        expected > 0,
        "{rule}: the demo data plants none ({statements:?})"
    );
    assert_eq!(count_of(report, rule), expected, "{rule}: {statements:?}");
}

async fn openemr_counts_match_sql(backend: Backend) {
    let name = match backend {
        Backend::Sqlite => "quality_openemr_sqlite",
        _ => "quality_openemr",
    };
    let url =
        support::seed_patients(backend, name, portico::demo::seed_openemr, AUDIT_PATIENTS).await;
    let repository = repository(&url, "openemr");
    let mysql = backend == Backend::MariaDb;
    let report = portico::quality::run(&repository).await;
    assert!(report.rows_read > 0);
    assert!(
        report.rules.iter().all(|r| r.error.is_none()),
        "{report:#?}"
    );

    assert_rule(
        &report,
        &repository,
        "patient-without-name",
        "SELECT COUNT(*) FROM patient_data WHERE TRIM(fname) = '' AND TRIM(mname) = '' AND TRIM(lname) = ''",
    )
    .await;
    let not_phone = |column: &str| {
        if mysql {
            format!(
                "SELECT COUNT(*) FROM patient_data WHERE {column} <> '' AND {column} REGEXP '[^-0-9 ()+.]'"
            )
        } else {
            format!(
                "SELECT COUNT(*) FROM patient_data WHERE {column} <> '' AND {column} GLOB '*[^-0-9 ()+.]*'"
            )
        }
    };
    let phones: Vec<String> = ["phone_home", "phone_biz", "phone_cell"]
        .into_iter()
        .map(not_phone)
        .collect();
    assert_rule_summed(&report, &repository, "unparseable-phone", &phones).await;
    assert_rule(
        &report,
        &repository,
        "unparseable-email",
        "SELECT COUNT(*) FROM patient_data WHERE email <> '' AND email NOT LIKE '_%@_%._%'",
    )
    .await;
    let zip = if mysql {
        "postal_code REGEXP '^[0-9]{5}(-[0-9]{4})?$'"
    } else {
        "(postal_code GLOB '[0-9][0-9][0-9][0-9][0-9]' OR postal_code GLOB '[0-9][0-9][0-9][0-9][0-9]-[0-9][0-9][0-9][0-9]')"
    };
    assert_rule(
        &report,
        &repository,
        "unparseable-postal-code",
        &format!("SELECT COUNT(*) FROM patient_data WHERE postal_code <> '' AND NOT {zip}"),
    )
    .await;
    let today = if mysql { "CURDATE()" } else { "date('now')" };
    assert_rule(
        &report,
        &repository,
        "birth-date-out-of-range",
        &format!("SELECT COUNT(*) FROM patient_data WHERE DOB > {today}"),
    )
    .await;
    let full_date = |alias: &str| {
        if mysql {
            format!("MONTH({alias}.DOB) > 0 AND DAYOFMONTH({alias}.DOB) > 0")
        } else {
            format!("{alias}.DOB NOT LIKE '%-00%'")
        }
    };
    assert_rule(
        &report,
        &repository,
        "duplicate-patient",
        &format!(
            "SELECT COUNT(*) FROM patient_data p WHERE p.fname <> '' AND p.lname <> '' AND {} \
             AND EXISTS (SELECT 1 FROM patient_data q WHERE q.pid <> p.pid \
             AND LOWER(q.fname) = LOWER(p.fname) AND LOWER(q.lname) = LOWER(p.lname) AND q.DOB = p.DOB)",
            full_date("p")
        ),
    )
    .await;
    // Only appointments name patients who are gone in the demo data.
    assert_rule(
        &report,
        &repository,
        "missing-patient",
        "SELECT COUNT(*) FROM openemr_postcalendar_events e \
         JOIN openemr_postcalendar_categories c ON c.pc_catid = e.pc_catid \
         WHERE c.pc_cattype = 0 AND e.pc_pid NOT IN ('', '0') \
         AND NOT EXISTS (SELECT 1 FROM patient_data p WHERE p.pid = e.pc_pid)",
    )
    .await;
    assert!(
        findings(&report, "missing-patient")
            .iter()
            .all(|f| f.resource_type == "Appointment" && f.table == "openemr_postcalendar_events")
    );
    // Zero and partial birth dates: the driver reads a zero date as NULL, the audit's SQL finds it.
    let zero_dob = if mysql {
        "MONTH(DOB) = 0 OR DAYOFMONTH(DOB) = 0"
    } else {
        "DOB LIKE '____-00-%' OR DOB LIKE '____-__-00%'"
    };
    assert_tally(
        &report,
        &repository,
        ("zero-date", "Patient DOB: zero or partial"),
        &format!("SELECT COUNT(*) FROM patient_data WHERE {zero_dob}"),
    )
    .await;
    // Results the interface sent without a code are left out; so are no others here.
    assert_rule(
        &report,
        &repository,
        "left-out",
        "SELECT COUNT(*) FROM procedure_result r \
         JOIN procedure_report p ON p.procedure_report_id = r.procedure_report_id \
         JOIN procedure_order o ON o.procedure_order_id = p.procedure_order_id \
         WHERE o.activity = 1 AND r.result_code = '' AND r.result_text = ''",
    )
    .await;
    let late = if mysql {
        "r.date > o.date_ordered + INTERVAL 30 DAY"
    } else {
        "julianday(r.date) - julianday(o.date_ordered) > 30"
    };
    assert_rule(
        &report,
        &repository,
        "lab-result-long-after-order",
        &format!(
            "SELECT COUNT(*) FROM procedure_result r \
             JOIN procedure_report p ON p.procedure_report_id = r.procedure_report_id \
             JOIN procedure_order o ON o.procedure_order_id = p.procedure_order_id \
             WHERE o.activity = 1 AND {late}"
        ),
    )
    .await;
    let late_finding = &findings(&report, "lab-result-long-after-order")[0];
    assert!(late_finding.key.starts_with("procedure_result_id="));
    assert!(
        late_finding
            .resource_id
            .as_deref()
            .unwrap()
            .starts_with("lab-")
    );
    assert_eq!(late_finding.detail, "45 days after the order");

    // The left-out rows fail the audit (severity error); findings carry keys, not PHI.
    assert!(report.fails());
    let names: Vec<String> = {
        let rows = repository
            .db
            .fetch(&RenderedQuery {
                sql: "SELECT lname FROM patient_data WHERE lname <> ''".into(),
                params: Vec::new(),
            })
            .await
            .unwrap();
        rows.iter()
            .filter_map(|r| portico::adapter::map::cell_text(&r[0]))
            .collect()
    };
    let json = portico::quality::report::json(&report);
    for name in names.iter().filter(|n| *n != "Duplicate") {
        assert!(
            !json.contains(&format!("\"{name}\"")) && !json.contains(&format!(" {name} ")),
            "{name} in the report"
        );
    }
}

#[tokio::test]
async fn openemr_audit_counts_match_plain_sql_on_mariadb() {
    openemr_counts_match_sql(Backend::MariaDb).await;
}

#[tokio::test]
async fn openemr_audit_counts_match_plain_sql_on_sqlite() {
    openemr_counts_match_sql(Backend::Sqlite).await;
}

#[tokio::test]
async fn opendental_audit_counts_match_plain_sql() {
    let url = support::seed_patients(
        Backend::MariaDb,
        "quality_opendental",
        portico::demo::opendental::seed_opendental,
        AUDIT_PATIENTS,
    )
    .await;
    let repository = repository(&url, "opendental");
    let report = portico::quality::run(&repository).await;
    assert!(
        report.rules.iter().all(|r| r.error.is_none()),
        "{report:#?}"
    );
    let live = "FROM patient WHERE PatStatus <> 4";
    assert_rule(
        &report,
        &repository,
        "patient-without-name",
        &format!("SELECT COUNT(*) {live} AND TRIM(LName) = '' AND TRIM(FName) = '' AND TRIM(MiddleI) = '' AND TRIM(Preferred) = ''"),
    )
    .await;
    let phones: Vec<String> = ["HmPhone", "WkPhone", "WirelessPhone"]
        .into_iter()
        .map(|column| {
            format!("SELECT COUNT(*) {live} AND {column} <> '' AND {column} REGEXP '[^-0-9 ()+.]'")
        })
        .collect();
    assert_rule_summed(&report, &repository, "unparseable-phone", &phones).await;
    assert_rule(
        &report,
        &repository,
        "unparseable-email",
        &format!("SELECT COUNT(*) {live} AND Email <> '' AND Email NOT LIKE '_%@_%._%'"),
    )
    .await;
    assert_rule(
        &report,
        &repository,
        "unparseable-postal-code",
        &format!(
            "SELECT COUNT(*) {live} AND Zip <> '' AND NOT Zip REGEXP '^[0-9]{{5}}(-[0-9]{{4}})?$'"
        ),
    )
    .await;
    assert_rule(
        &report,
        &repository,
        "birth-date-out-of-range",
        &format!("SELECT COUNT(*) {live} AND Birthdate > CURDATE()"),
    )
    .await;
    assert_rule(
        &report,
        &repository,
        "duplicate-patient",
        "SELECT COUNT(*) FROM patient p WHERE p.PatStatus <> 4 AND p.FName <> '' AND p.LName <> '' \
         AND MONTH(p.Birthdate) > 0 AND DAYOFMONTH(p.Birthdate) > 0 AND p.Birthdate > '0001-01-01' \
         AND EXISTS (SELECT 1 FROM patient q WHERE q.PatStatus <> 4 AND q.PatNum <> p.PatNum \
         AND q.FName = p.FName AND q.LName = p.LName AND q.Birthdate = p.Birthdate)",
    )
    .await;
    assert_rule(
        &report,
        &repository,
        "appointment-scheduled-in-the-past",
        "SELECT COUNT(*) FROM appointment WHERE AptStatus = 1 AND AptDateTime < NOW() - INTERVAL 1 DAY",
    )
    .await;
    // Appointments of patients removed by hand or deleted (PatStatus 4): the mapping does not
    // serve them, so the adapter's rule finds them, and no served resource refers to a patient
    // who is not served.
    assert_rule(
        &report,
        &repository,
        "appointment-without-patient",
        "SELECT COUNT(*) FROM appointment a WHERE a.AptStatus IN (1, 2, 3, 5) \
         AND NOT EXISTS (SELECT 1 FROM patient p WHERE p.PatNum = a.PatNum AND p.PatStatus <> 4)",
    )
    .await;
    let gone = count(
        &repository,
        "SELECT COUNT(*) FROM appointment a WHERE a.AptStatus IN (1, 2, 3, 5) \
         AND NOT EXISTS (SELECT 1 FROM patient p WHERE p.PatNum = a.PatNum)",
    )
    .await;
    assert!(gone > 0, "the planted appointment of a removed patient");
    assert_eq!(count_of(&report, "missing-patient"), 0);
    // Birth dates kept as MySQL partial dates by older imports.
    assert_tally(
        &report,
        &repository,
        ("zero-date", "Patient Birthdate: zero or partial"),
        &format!("SELECT COUNT(*) {live} AND (MONTH(Birthdate) = 0 OR DAYOFMONTH(Birthdate) = 0)"),
    )
    .await;
}
