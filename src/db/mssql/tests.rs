//! SQL Server without a server: URL parsing, decoding of every TDS type used, and the pool's
//! behaviour when the server is unreachable or silent.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use chrono::{NaiveDate, NaiveTime};
use tiberius::numeric::Numeric;
use tiberius::{ColumnData, ToSql};

use super::{MssqlPool, cell_value, parse_url, showplan_documents};
use crate::db::DbErrorKind;
use crate::dialect::RenderedQuery;
use crate::dialect::ast::Value;

#[test]
fn urls_name_host_port_database_and_tls() {
    let config = parse_url("mssql://portico:p%40ss@db.local:14330/Cerebello?encrypt=true&trust_server_certificate=true").unwrap();
    assert_eq!(config.get_addr(), "db.local:14330");
    let config = parse_url("sqlserver://u:p@10.0.0.5/PMS?encrypt=false").unwrap();
    assert_eq!(config.get_addr(), "10.0.0.5:1433");
    for (url, why) in [
        ("mssql://db.local/PMS", "user and password"),
        ("mssql://u:secret@db.local", "database name"),
        ("mssql://u:secret@db.local:x/PMS", "port"),
        ("mssql://u:secret@db.local/PMS?colour=red", "unknown option"),
    ] {
        let error = parse_url(url).unwrap_err();
        assert!(error.message.contains(why), "{url}: {}", error.message);
        assert!(
            !error.message.contains("secret"),
            "the password leaked: {}",
            error.message
        );
    }
}

#[test]
fn every_tds_type_decodes_to_a_cell() {
    let day = NaiveDate::from_ymd_opt(2024, 2, 29).unwrap();
    let at = day.and_hms_opt(13, 45, 10).unwrap();
    let guid = tiberius::Uuid::parse_str("6F9619FF-8B86-D011-B42D-00C04FC964FF").unwrap();
    let cases: Vec<(ColumnData<'static>, Value)> = vec![
        (ColumnData::U8(Some(7)), Value::Int(7)),
        (ColumnData::I16(Some(-3)), Value::Int(-3)),
        (ColumnData::I32(Some(70_000)), Value::Int(70_000)),
        (ColumnData::I64(Some(1 << 40)), Value::Int(1 << 40)),
        (ColumnData::F32(Some(1.5)), Value::Float(1.5)),
        (ColumnData::F64(Some(98.6)), Value::Float(98.6)),
        (ColumnData::Bit(Some(true)), Value::Bool(true)),
        (
            ColumnData::String(Some(Cow::from("D0120   "))),
            Value::Text("D0120   ".into()),
        ),
        (ColumnData::Guid(Some(guid)), Value::Uuid(*guid.as_bytes())),
        // rowversion arrives as binary(8).
        (
            ColumnData::Binary(Some(Cow::from(vec![0, 0, 0, 0, 0, 0, 7, 209]))),
            Value::Bytes(vec![0, 0, 0, 0, 0, 0, 7, 209]),
        ),
        (
            ColumnData::Numeric(Some(Numeric::new_with_scale(12345, 2))),
            Value::Decimal("123.45".parse().unwrap()),
        ),
        (day.to_sql().into_owned_data(), Value::Date(day)),
        (at.to_sql().into_owned_data(), Value::DateTime(at)),
        (
            NaiveTime::from_hms_opt(8, 30, 0)
                .unwrap()
                .to_sql()
                .into_owned_data(),
            Value::Time(NaiveTime::from_hms_opt(8, 30, 0).unwrap()),
        ),
        (ColumnData::I32(None), Value::Null),
        (ColumnData::String(None), Value::Null),
        (ColumnData::DateTime2(None), Value::Null),
    ];
    for (data, expected) in cases {
        assert_eq!(cell_value(&data).unwrap(), expected, "{data:?}");
    }
    let offset = chrono::DateTime::parse_from_rfc3339("2024-07-01T09:00:00-04:00").unwrap();
    assert_eq!(
        cell_value(&offset.to_sql().into_owned_data()).unwrap(),
        Value::DateTime(
            NaiveDate::from_ymd_opt(2024, 7, 1)
                .unwrap()
                .and_hms_opt(13, 0, 0)
                .unwrap()
        ),
        "datetimeoffset reads as UTC wall time"
    );
}

#[test]
fn guid_keys_read_back_as_the_ids_they_bind_from() {
    // What a uniqueidentifier key decodes to shows as the id SQL Server prints, and parsing that
    // id gives the same value, which binds as a uniqueidentifier again.
    let guid = tiberius::Uuid::parse_str("6F9619FF-8B86-D011-B42D-00C04FC964FF").unwrap();
    let cell = cell_value(&ColumnData::Guid(Some(guid))).unwrap();
    let id = crate::adapter::map::key_text(&cell).unwrap();
    assert_eq!(id, "6f9619ff-8b86-d011-b42d-00c04fc964ff");
    let Value::Uuid(bytes) = cell else {
        panic!("{cell:?}")
    };
    assert_eq!(tiberius::Uuid::from_bytes(bytes), guid);
    assert_eq!(
        crate::adapter::map::uuid_bytes(&id).unwrap(),
        bytes.to_vec()
    );
}

trait IntoOwned {
    fn into_owned_data(self) -> ColumnData<'static>;
}

impl IntoOwned for ColumnData<'_> {
    fn into_owned_data(self) -> ColumnData<'static> {
        match self {
            ColumnData::Date(v) => ColumnData::Date(v),
            ColumnData::DateTime2(v) => ColumnData::DateTime2(v),
            ColumnData::Time(v) => ColumnData::Time(v),
            ColumnData::DateTimeOffset(v) => ColumnData::DateTimeOffset(v),
            other => panic!("not a temporal value: {other:?}"),
        }
    }
}

fn probe() -> RenderedQuery {
    RenderedQuery {
        sql: "SELECT 1".into(),
        params: vec![],
    }
}

#[tokio::test]
async fn a_closed_port_is_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let pool = MssqlPool::new(
        &format!("mssql://u:p@127.0.0.1:{port}/PMS?encrypt=false"),
        2,
        Duration::from_secs(1),
        Duration::from_secs(1),
    )
    .unwrap();
    let error = pool.fetch(&probe()).await.unwrap_err();
    assert_eq!(error.kind, DbErrorKind::Unavailable, "{}", error.message);
}

#[tokio::test]
async fn a_silent_server_is_unavailable_within_the_acquire_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts connections and never answers the TDS pre-login.
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let pool = MssqlPool::new(
        &format!("mssql://u:p@127.0.0.1:{port}/PMS?encrypt=false"),
        2,
        Duration::from_secs(5),
        Duration::from_millis(300),
    )
    .unwrap();
    let started = Instant::now();
    let error = pool.fetch(&probe()).await.unwrap_err();
    assert_eq!(error.kind, DbErrorKind::Unavailable, "{}", error.message);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(pool.usage(), (0, 0, 2), "nothing half-open is pooled");
    silent.abort();
}

#[test]
fn the_showplan_is_the_text_cell_holding_the_plan_document() {
    let plan = r#"<ShowPlanXML xmlns="http://schemas.microsoft.com/sqlserver/2004/07/showplan"/>"#;
    let cells = vec![Value::Null, Value::Text(plan.into())];
    assert_eq!(showplan_documents(cells.into_iter()).unwrap(), plan);
    // Rows instead of a plan: the statement ran, SHOWPLAN did not apply.
    let rows = vec![Value::Int(12), Value::Text("Rossi".into())];
    let error = showplan_documents(rows.into_iter()).unwrap_err();
    assert_eq!(error.kind, DbErrorKind::Query);
    assert!(
        error.message.contains("no SHOWPLAN XML"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn a_showplan_without_a_server_is_unavailable_and_frees_its_permit() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let pool = MssqlPool::new(
        &format!("mssql://u:p@127.0.0.1:{port}/PMS?encrypt=false"),
        1,
        Duration::from_secs(1),
        Duration::from_secs(1),
    )
    .unwrap();
    for _ in 0..2 {
        let error = pool.showplan(&probe()).await.unwrap_err();
        assert_eq!(error.kind, DbErrorKind::Unavailable, "{}", error.message);
    }
    assert_eq!(pool.usage(), (0, 0, 1), "nothing held, nothing pooled");
}
