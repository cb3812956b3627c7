//! Lookup joins: OpenEMR's appointment categories are read as a cached key list, whose results
//! equal plain SQL over the join, and which follows a change of the category table once the
//! refresh interval has passed (and not before); lookup joins nothing else reads are left out of
//! the SQL, their columns filled from cached rows, giving exactly the rows of the join.

use std::time::{Duration, Instant};

use portico::config::default_adapters_dir;
use portico::db::fixture::FixtureWriter;
use portico::demo::opendental::seed_opendental;
use portico::dialect::ast::{Cond, Value};
use portico::dialect::{RenderedQuery, render};
use portico::repository::LookupCache;
use portico::search::compile::{RowAccess, rows_select};

use crate::support::{Backend, TestApp, ids, seed, seed_with, settings, start};

/// The Appointment ids plain SQL finds: events of patient categories (pc_cattype 0) with a patient,
/// optionally of one patient.
async fn plain_sql_ids(app: &TestApp, patient: Option<&str>) -> Vec<String> {
    let database = crate::support::legacy_database(&app.db_url, Duration::from_secs(10));
    let mut sql = "SELECT e.pc_eid FROM openemr_postcalendar_events e \
                   JOIN openemr_postcalendar_categories c ON c.pc_catid = e.pc_catid \
                   WHERE c.pc_cattype = 0 AND e.pc_pid NOT IN ('', '0')"
        .to_owned();
    let mut params = Vec::new();
    if let Some(pid) = patient {
        sql.push_str(" AND e.pc_pid = ?");
        params.push(Value::Text(pid.to_owned()));
    }
    let rows = database
        .fetch(&RenderedQuery { sql, params })
        .await
        .unwrap_or_else(|e| panic!("{}", e.message));
    database.close().await;
    let mut ids: Vec<String> = rows
        .iter()
        .map(|row| match &row[0] {
            Value::Int(id) => id.to_string(),
            other => panic!("pc_eid is {other:?}"),
        })
        .collect();
    ids.sort();
    ids
}

async fn portico_ids(app: &TestApp, query: &str) -> Vec<String> {
    let mut found = ids(&app.all_pages(query).await);
    found.sort();
    found
}

async fn total(app: &TestApp, query: &str) -> u64 {
    app.get_fhir(query, 200).await["total"]
        .as_u64()
        .expect("a total")
}

#[tokio::test]
async fn lookup_key_lists_equal_plain_sql_and_follow_changes_after_the_refresh_interval() {
    let refresh = Duration::from_millis(2500);
    let db_url = seed(Backend::MariaDb, "lookup_refresh").await;
    let mut settings = settings(&db_url, 5000);
    settings.legacy.lookup_refresh_ms = refresh.as_millis() as u64;
    let app = TestApp::at(start(&settings).await, db_url.clone());

    let listed_at = Instant::now();
    let before = portico_ids(&app, "Appointment?_count=500").await;
    assert_eq!(before, plain_sql_ids(&app, None).await);
    assert!(before.len() > 100, "{} appointments", before.len());
    assert_eq!(
        total(&app, "Appointment?_summary=count").await,
        before.len() as u64
    );
    let patient = plain_sql_ids(&app, Some("7")).await;
    assert!(!patient.is_empty());
    assert_eq!(
        portico_ids(&app, "Appointment?patient=7&_count=3").await,
        patient
    );

    // Category 10, one of the seeded patient categories, stops being one.
    let writer = FixtureWriter::open(&db_url)
        .await
        .unwrap_or_else(|e| panic!("{}", e.message));
    writer
        .execute(
            "UPDATE openemr_postcalendar_categories SET pc_cattype = 1 WHERE pc_catid = 10",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{}", e.message));
    writer.close().await;
    let changed_at = Instant::now();
    let after = plain_sql_ids(&app, None).await;
    assert!(after.len() < before.len(), "category 10 held appointments");

    // Within the interval, the list read before the change still applies.
    let stale = portico_ids(&app, "Appointment?_count=500").await;
    if listed_at.elapsed() < refresh {
        assert_eq!(
            stale, before,
            "the cached list serves until the interval ends"
        );
    }

    // After it, the next request reads the list again: the results are plain SQL's once more.
    tokio::time::sleep((refresh + Duration::from_millis(100)).saturating_sub(changed_at.elapsed()))
        .await;
    assert_eq!(portico_ids(&app, "Appointment?_count=500").await, after);
    assert_eq!(
        total(&app, "Appointment?_summary=count").await,
        after.len() as u64
    );
    assert_eq!(
        portico_ids(&app, "Appointment?patient=7&_count=3").await,
        plain_sql_ids(&app, Some("7")).await
    );
}

/// Runs `quirks` on the database at `db_url`, then, for every mapping of `adapter` with a lookup
/// join, compares all its rows read through the cached lookup rows with the rows of the compiled
/// join. Returns how many joins were left out of the SQL.
async fn cached_rows_equal_joined_rows(db_url: &str, adapter: &str, quirks: &[&str]) -> usize {
    let writer = FixtureWriter::open(db_url)
        .await
        .unwrap_or_else(|e| panic!("{}", e.message));
    for quirk in quirks {
        writer
            .execute(quirk, &[])
            .await
            .unwrap_or_else(|e| panic!("{quirk}: {}", e.message));
    }
    writer.close().await;
    let adapter = portico::adapter::load(&default_adapters_dir().join(adapter))
        .unwrap_or_else(|issues| panic!("{issues:?}"));
    let database = crate::support::legacy_database(db_url, Duration::from_secs(10));
    let cache = LookupCache::new(Duration::from_secs(60));
    let everything = RowAccess {
        cond: Cond::True,
        variants: None,
    };
    let mut left_out = 0;
    let mut compared = 0;
    for mapping in adapter.resources.values().flat_map(|def| &def.mappings) {
        if mapping.joins.iter().all(|join| join.lookup.is_none()) {
            continue;
        }
        let select = rows_select(mapping, &everything, Cond::True, None);
        let joined = database
            .fetch(&render(database.dialect(), &select))
            .await
            .unwrap_or_else(|e| panic!("{}: {}", mapping.name, e.message));
        let prepared = cache.prepare(&database, &select).await;
        let rewritten = prepared
            .select
            .clone()
            .expect("a query with lookups is rewritten");
        left_out += select.joins.len() - rewritten.joins.len();
        let mut rows = database
            .fetch(&render(database.dialect(), &rewritten))
            .await
            .unwrap_or_else(|e| panic!("{}: {}", mapping.name, e.message));
        prepared.complete(&mut rows);
        assert!(!joined.is_empty(), "{} has rows", mapping.name);
        assert_eq!(rows, joined, "{}: cached lookup rows differ", mapping.name);
        compared += joined.len();
    }
    database.close().await;
    assert!(compared > 100, "{compared} rows compared");
    left_out
}

/// Foreign keys as legacy data has them: another case and a trailing space (MySQL's `=` ignores
/// both; SQLite's does not), keys no option, user or payer has, and no key at all; a payer whose
/// plan type is missing (Coverage reads the plan type through the payer's column).
const OPENEMR_QUIRKS: &[&str] = &[
    "UPDATE patient_data SET race = 'WHITE ' WHERE pid = 3",
    "UPDATE patient_data SET language = 'klingon', ethnicity = '' WHERE pid = 4",
    "UPDATE patient_data SET providerID = 999999, status = '' WHERE pid = 5",
    "UPDATE insurance_data SET provider = '999' WHERE pid = 6",
    "UPDATE insurance_companies SET ins_type_code = 77 WHERE id = 5",
];

#[tokio::test]
async fn openemr_lookup_columns_from_cached_rows_equal_the_join_on_mariadb() {
    let db_url = seed(Backend::MariaDb, "lookup_rows").await;
    let left_out = cached_rows_equal_joined_rows(&db_url, "openemr", OPENEMR_QUIRKS).await;
    // Patient's five, Appointment's two (its category is filtered), Encounter's three, and
    // Coverage's payer with the plan type linked through it.
    assert!(left_out >= 12, "{left_out} joins left out");
}

#[tokio::test]
async fn openemr_lookup_columns_from_cached_rows_equal_the_join_on_sqlite() {
    let db_url = seed(Backend::Sqlite, "lookup_rows").await;
    let left_out = cached_rows_equal_joined_rows(&db_url, "openemr", OPENEMR_QUIRKS).await;
    assert!(left_out >= 12, "{left_out} joins left out");
}

#[tokio::test]
async fn opendental_lookup_columns_from_cached_rows_equal_the_join_on_mariadb() {
    let db_url = seed_with(Backend::MariaDb, "lookup_rows_opendental", seed_opendental).await;
    let quirks = [
        "UPDATE appointment SET ProvNum = 999999 WHERE AptNum = 2",
        "UPDATE patient SET PriProv = 0 WHERE PatNum = 3",
    ];
    let left_out = cached_rows_equal_joined_rows(&db_url, "opendental", &quirks).await;
    assert!(left_out >= 6, "{left_out} joins left out");
}
