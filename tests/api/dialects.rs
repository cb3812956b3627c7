//! The same adapter over the same data gives the same resources on MariaDB and SQLite; MariaDB
//! runs statements that fix their join order without join buffers.

use crate::support::{Backend, spawn};

#[tokio::test]
async fn mariadb_and_sqlite_serve_identical_resources() {
    let sqlite = spawn(Backend::Sqlite, "identical").await;
    let mariadb = spawn(Backend::MariaDb, "identical").await;
    for query in [
        "Patient?_count=1000",
        "Practitioner?_count=1000",
        "Organization?_count=1000",
        "Location?_count=1000",
        "Encounter?_count=1000",
        "Appointment?_count=1000",
        "Observation?_count=1000",
        "Coverage?_count=1000",
        "Claim?_count=1000",
        "Patient?_sort=-birthdate,family&_count=1000",
        "Observation?_sort=date&category=vital-signs&_count=1000",
    ] {
        let from_sqlite = sqlite.all_pages(query).await;
        let from_mariadb = mariadb.all_pages(query).await;
        assert_eq!(from_sqlite.len(), from_mariadb.len(), "{query}");
        for (a, b) in from_sqlite.iter().zip(&from_mariadb) {
            assert_eq!(a, b, "{query}: resources differ between SQLite and MariaDB");
        }
    }
}

#[tokio::test]
async fn mariadb_temporal_columns_decode_and_zero_dates_are_null() {
    use portico::db::fixture::{FixtureWriter, recreate_mysql_database};
    use portico::dialect::RenderedQuery;
    use portico::dialect::ast::Value;

    let server = crate::support::mysql_server_url();
    recreate_mysql_database(&server, "portico_t_temporal")
        .await
        .unwrap();
    let url = format!("{server}/portico_t_temporal");
    let writer = FixtureWriter::open(&url).await.unwrap();
    writer
        .execute(
            "CREATE TABLE t (d date, dt datetime, ts timestamp NULL, tm time, n decimal(12,6))",
            &[],
        )
        .await
        .unwrap();
    writer
        .execute("INSERT INTO t VALUES ('0000-00-00', '0000-00-00 00:00:00', NULL, '08:30:00', 0), ('2024-02-29', '2024-02-29 13:45:10', '2024-02-29 13:45:10', '23:59:59', 98.6)", &[])
        .await
        .unwrap();
    writer.close().await;
    let database = crate::support::legacy_database(&url, std::time::Duration::from_secs(5));
    let rows = database
        .fetch(&RenderedQuery {
            sql: "SELECT d, dt, ts, tm, n FROM t ORDER BY d".into(),
            params: vec![],
        })
        .await
        .unwrap();
    assert_eq!(rows[0][0], Value::Null, "zero date");
    assert_eq!(rows[0][1], Value::Null, "zero datetime");
    let day = chrono::NaiveDate::from_ymd_opt(2024, 2, 29).unwrap();
    let at = day.and_hms_opt(13, 45, 10).unwrap();
    assert_eq!(rows[1][0], Value::Date(day));
    assert_eq!(rows[1][1], Value::DateTime(at));
    assert_eq!(
        rows[1][2],
        Value::DateTime(at),
        "TIMESTAMP reads as its local wall time"
    );
    assert_eq!(
        rows[1][3],
        Value::Time(chrono::NaiveTime::from_hms_opt(23, 59, 59).unwrap())
    );
    assert_eq!(rows[1][4], Value::Decimal("98.600000".parse().unwrap()));

    // What an install with an empty sql_mode holds, which the driver itself refuses: each cell is
    // decoded on its own, and a bad one never fails its row or the query.
    let writer = FixtureWriter::open(&url).await.unwrap();
    writer
        .execute(
            "CREATE TABLE legacy (k int, d date, dt datetime, ts timestamp NULL, tm time,              wide decimal(65,2))",
            &[],
        )
        .await
        .unwrap();
    writer
        .execute(
            "INSERT INTO legacy VALUES              (1, '1958-00-00', '2001-07-00 10:30:00', NULL, '25:00:00', 1),              (2, '2001-07-00', '1958-00-00 00:00:00', NULL, '-01:30:00', 1e50),              (3, '2021-02-30', '2021-02-30 08:00:00', '2024-01-01 00:00:00', '838:59:59', 2)",
            &[],
        )
        .await
        .unwrap();
    writer.close().await;
    let rows = database
        .fetch(&RenderedQuery {
            sql: "SELECT k, d, dt, tm, wide FROM legacy ORDER BY k".into(),
            params: vec![],
        })
        .await
        .expect("one query returns every row, whatever its cells hold");
    let text = |s: &str| Value::Text(s.into());
    assert_eq!(rows[0][1], text("1958-00-00"));
    assert_eq!(rows[0][2], text("2001-07-00 10:30:00"));
    assert_eq!(rows[0][3], text("25:00:00"));
    assert_eq!(rows[1][1], text("2001-07-00"));
    assert_eq!(rows[1][2], text("1958-00-00 00:00:00"));
    assert_eq!(rows[1][3], text("-01:30:00"));
    assert!(
        matches!(&rows[1][4], Value::Undecodable(why) if why.starts_with("column wide:")),
        "{:?}",
        rows[1][4]
    );
    // Without ALLOW_INVALID_DATES the server itself stored the impossible day as a zero date.
    assert_eq!(rows[2][1], Value::Null);
    assert_eq!(rows[2][2], Value::Null);
    assert_eq!(rows[2][3], text("838:59:59"));
    assert_eq!(rows[2][4], Value::Decimal("2.00".parse().unwrap()));
    // A partial date bound back (a keyset cursor) compares as MySQL orders it.
    let after = database
        .fetch(&RenderedQuery {
            sql: "SELECT k FROM legacy WHERE d > ? ORDER BY d".into(),
            params: vec![text("1958-00-00")],
        })
        .await
        .unwrap();
    assert_eq!(after, vec![vec![Value::Int(2)]]);
}

/// An adapter keyed by binary UUIDs, with a column kept in UTC: reads, searches and references.
async fn uuid_keys_and_zones(backend: crate::support::Backend) {
    use portico::db::fixture::{FixtureWriter, recreate_mysql_database};
    use portico::dialect::DialectKind;
    use portico::dialect::ast::Value;

    let url = match backend {
        crate::support::Backend::MariaDb => {
            let server = crate::support::mysql_server_url();
            recreate_mysql_database(&server, "portico_t_uuid")
                .await
                .unwrap();
            format!("{server}/portico_t_uuid")
        }
        crate::support::Backend::Sqlite => format!(
            "sqlite://{}",
            std::env::temp_dir()
                .join(format!("portico-uuid-{}.sqlite", std::process::id()))
                .display()
        ),
        crate::support::Backend::SqlServer => unreachable!("binary(16) keys are a MySQL layout"),
    };
    let writer = FixtureWriter::open(&url).await.unwrap();
    writer.execute_script("DROP TABLE IF EXISTS people;\nCREATE TABLE people (uuid binary(16) NOT NULL, name varchar(40), seen_utc datetime, PRIMARY KEY (uuid));\n", DialectKind::Mysql).await.unwrap();
    let people: Vec<Vec<Value>> = [(0x01u8, 1), (0x02, 2), (0xab, 3)]
        .into_iter()
        .map(|(byte, day)| {
            vec![
                Value::Bytes(vec![byte; 16]),
                Value::Text(format!("Person {day}")),
                Value::Text(format!("2024-07-0{day} 12:00:00")),
            ]
        })
        .collect();
    writer
        .insert("people", &["uuid", "name", "seen_utc"], &people)
        .await
        .unwrap();
    writer.close().await;

    let dir = std::env::temp_dir().join(format!(
        "portico-uuid-adapter-{}-{backend:?}",
        std::process::id()
    ));
    let adapter = dir.join("people");
    std::fs::create_dir_all(&adapter).unwrap();
    std::fs::write(adapter.join("adapter.toml"), "version = 1\nname = \"people\"\ntitle = \"People\"\ntimezone = \"America/New_York\"\ndialects = [\"mysql\", \"sqlite\"]\n").unwrap();
    std::fs::write(
        adapter.join("Patient.toml"),
        r#"
version = 1
resource = "Patient"
[source]
table = "people"
id = { columns = ["uuid"], uuid = true }
[elements]
identifier = [{ system = "urn:uuid-key", value = "$uuid" }]
name = [{ text = "$name" }]
deceasedDateTime = { fn = "datetime", column = "seen_utc", zone = "UTC" }
[search.death-date]
type = "date"
column = "seen_utc"
zone = "UTC"
[search.link]
type = "reference"
target = "Patient"
column = "uuid"
"#,
    )
    .unwrap();
    let mut settings = crate::support::settings(&url, 5000);
    settings.legacy.adapter = "people".into();
    settings.legacy.adapters_dir = dir;
    let app = crate::support::TestApp::at(crate::support::start(&settings).await, url);
    let id = "02020202-0202-0202-0202-020202020202";
    let patient = app.get_fhir(&format!("Patient/{id}"), 200).await;
    assert_eq!(patient["id"], id);
    assert_eq!(patient["identifier"][0]["value"], id);
    assert_eq!(patient["deceasedDateTime"], "2024-07-02T12:00:00+00:00");
    for (query, expected) in [
        (format!("_id={id}"), 1),
        ("_id=02020202-0202-0202-0202-02020202020".to_owned(), 0),
        (format!("link=Patient/{id}"), 1),
        ("death-date=ge2024-07-02T08:00:00-04:00".to_owned(), 2),
        ("death-date=lt2024-07-02T12:00:00Z".to_owned(), 1),
    ] {
        let bundle = app.get_fhir(&format!("Patient?{query}"), 200).await;
        assert_eq!(crate::support::matches(&bundle).len(), expected, "{query}");
    }
    let lower = "abababab-abab-abab-abab-abababababab";
    app.get_fhir(&format!("Patient/{lower}"), 200).await;
    let upper = app.get(&format!("Patient/{}", lower.to_uppercase())).await;
    assert_eq!(upper.status, 404, "ids are canonical lowercase");
}

#[tokio::test]
async fn uuid_keys_and_column_zones_on_sqlite() {
    uuid_keys_and_zones(crate::support::Backend::Sqlite).await;
}

#[tokio::test]
async fn uuid_keys_and_column_zones_on_mariadb() {
    uuid_keys_and_zones(crate::support::Backend::MariaDb).await;
}

/// A join on a column no index has: MariaDB plans a block nested loop (a join buffer) for it, but
/// not when the statement fixes its join order, as export pages and whole passes do.
#[tokio::test]
async fn mariadb_runs_fixed_order_statements_without_join_buffers() {
    let db_url = crate::support::seed(Backend::MariaDb, "join_order").await;
    let database = crate::support::legacy_database(&db_url, std::time::Duration::from_secs(10));
    let plan = |fixed: &str| {
        let sql = format!(
            "EXPLAIN FORMAT=JSON SELECT {fixed}`t`.`pid` FROM `patient_data` `t` \
             JOIN `form_encounter` `e` ON `e`.`reason` = `t`.`fname`"
        );
        let database = database.clone();
        async move {
            let rows = database
                .fetch(&portico::dialect::RenderedQuery {
                    sql,
                    params: Vec::new(),
                })
                .await
                .unwrap_or_else(|e| panic!("{}", e.message));
            match &rows[0][0] {
                portico::dialect::ast::Value::Text(json) => json.clone(),
                other => panic!("EXPLAIN answered {other:?}"),
            }
        }
    };
    let free = plan("").await;
    assert!(free.contains("block-nl-join"), "a join buffer: {free}");
    let fixed = plan("STRAIGHT_JOIN ").await;
    assert!(fixed.contains("\"table_name\": \"e\""), "{fixed}");
    assert!(!fixed.contains("block-nl-join"), "no join buffer: {fixed}");
    database.close().await;
}
