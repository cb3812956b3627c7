//! The same adapter over the same data gives the same resources on MariaDB and SQLite.

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
    use portico::db::{Database, DbSettings};
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
    let database = Database::connect_lazy(&DbSettings {
        url,
        max_connections: 1,
        statement_timeout: std::time::Duration::from_secs(5),
        acquire_timeout: std::time::Duration::from_secs(5),
    })
    .unwrap();
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
}
