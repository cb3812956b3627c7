//! Faults: the legacy database goes away and comes back; statements run too long; writes refused.

use std::sync::Arc;
use std::time::{Duration, Instant};

use portico::db::DbErrorKind;
use portico::dialect::RenderedQuery;
use portico::dialect::ast::Value;
use tokio::net::TcpListener;

use crate::on_every_backend;
use crate::proxy::Proxy;
use crate::support::{
    Backend, TestApp, legacy_database, mysql_server_url, outcome_code, seed, settings, start,
};

#[tokio::test]
async fn database_outage_is_503_and_recovers_without_restart() {
    let db_url = seed(Backend::MariaDb, "outage").await;
    let (proxy, through_proxy) = Proxy::in_front_of(&mysql_server_url(), &db_url).await;
    let base = start(&settings(&through_proxy, 2000)).await;
    let client = reqwest::Client::new();
    let token = crate::support::bearer_for(&base);
    let get = |path: &str| {
        client
            .get(format!("{base}/{path}"))
            .bearer_auth(&token)
            .send()
    };
    assert_eq!(get("Patient/1").await.unwrap().status(), 200);

    proxy.cut().await;
    let reply = get("Patient/2").await.unwrap();
    assert_eq!(reply.status(), 503);
    assert_eq!(reply.headers()["retry-after"], "5");
    let reply = crate::support::Reply {
        status: 503,
        headers: reply.headers().clone(),
        body: reply.bytes().await.unwrap().to_vec(),
    };
    assert_eq!(outcome_code(&reply), "transient");
    let health = client
        .get(base.replace("/fhir", "/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 503);
    let health: serde_json::Value = health.json().await.unwrap();
    assert_eq!(health["database"], "down", "{health}");
    assert_eq!(health["stateStore"], "up", "{health}");
    let live = client
        .get(base.replace("/fhir", "/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200, "liveness does not depend on the PMS");

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = get("Patient/2").await.unwrap().status();
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Portico did not recover: last status {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn statement_timeouts_cancel_the_query_on_the_server() {
    let server = format!("{}/mysql", mysql_server_url());
    let database = legacy_database(&server, Duration::from_millis(300));
    let started = Instant::now();
    let sleepy = RenderedQuery {
        sql: "SELECT SLEEP(3) AS portico_timeout_probe".into(),
        params: vec![],
    };
    let error = database.fetch(&sleepy).await.unwrap_err();
    assert_eq!(error.kind, DbErrorKind::Timeout, "{}", error.message);
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "took {:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let observer = legacy_database(&server, Duration::from_secs(5));
    let running = observer
        .fetch(&RenderedQuery {
            sql: "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP(3) AS portico_timeout_probe%'".into(),
            params: vec![],
        })
        .await
        .unwrap();
    assert_eq!(
        running[0][0],
        Value::Int(0),
        "the timed-out statement still runs on the server"
    );
    // The pool keeps serving after a timeout.
    let quick = RenderedQuery {
        sql: "SELECT 1".into(),
        params: vec![],
    };
    assert_eq!(database.fetch(&quick).await.unwrap()[0][0], Value::Int(1));
}

on_every_backend!(legacy_sessions_refuse_writes, |app: TestApp| async move {
    let database = legacy_database(&app.db_url, Duration::from_secs(5));
    let insert = RenderedQuery {
        sql: "INSERT INTO patient_data (id, pid, lname) VALUES (99999, 99999, 'Intruder')".into(),
        params: vec![],
    };
    assert!(
        database.fetch(&insert).await.is_err(),
        "the legacy pool must be read-only"
    );
    let reply = app.get("Patient?family=Intruder").await;
    assert_eq!(crate::support::matches(&reply.json()).len(), 0);
});

/// A practice gives Portico a SELECT-only account: it serves everything, and its password never
/// appears in what `portico check` prints.
/// A MySQL connection goes back to the pool after a statement that finished cleanly, and is used
/// again without a check; one whose statement was abandoned (its future dropped) is closed, so
/// the next statement gets a new connection.
#[tokio::test]
async fn a_mysql_connection_is_reused_after_a_clean_statement_and_closed_after_an_abandoned_one() {
    let server = format!("{}/mysql", mysql_server_url());
    let database = legacy_database(&server, Duration::from_secs(5));
    let connection_id = RenderedQuery {
        sql: "SELECT CONNECTION_ID() AS id".into(),
        params: vec![],
    };
    let id = |rows: Vec<Vec<Value>>| rows[0][0].clone();
    let first = id(database.fetch(&connection_id).await.unwrap());
    assert_eq!(id(database.fetch(&connection_id).await.unwrap()), first);
    assert_eq!(database.pool_use(), (1, 1, 2), "one connection, idle");

    let sleepy = RenderedQuery {
        sql: "SELECT SLEEP(2) AS abandoned".into(),
        params: vec![],
    };
    let abandoned = tokio::time::timeout(Duration::from_millis(200), database.fetch(&sleepy)).await;
    assert!(abandoned.is_err(), "the statement was still running");
    assert_eq!(
        database.pool_use(),
        (0, 0, 2),
        "the abandoned connection is closed"
    );
    assert_ne!(id(database.fetch(&connection_id).await.unwrap()), first);
}

#[tokio::test]
async fn a_select_only_account_is_enough() {
    let db_url = seed(Backend::MariaDb, "readonly").await;
    let writer = portico::db::fixture::FixtureWriter::open(&db_url)
        .await
        .unwrap();
    for statement in [
        "CREATE USER IF NOT EXISTS 'portico_ro'@'127.0.0.1' IDENTIFIED BY 'ro-S3cret'",
        "CREATE USER IF NOT EXISTS 'portico_ro'@'localhost' IDENTIFIED BY 'ro-S3cret'",
        "GRANT SELECT ON `portico_t_readonly`.* TO 'portico_ro'@'127.0.0.1'",
        "GRANT SELECT ON `portico_t_readonly`.* TO 'portico_ro'@'localhost'",
    ] {
        writer.execute(statement, &[]).await.unwrap();
    }
    writer.close().await;
    let host = mysql_server_url().rsplit('@').next().unwrap().to_owned();
    let read_only_url = format!("mysql://portico_ro:ro-S3cret@{host}/portico_t_readonly");
    let app = TestApp::at(
        start(&settings(&read_only_url, 5000)).await,
        read_only_url.clone(),
    );
    assert_eq!(
        app.all_pages("Patient?_count=50").await.len(),
        crate::support::PATIENTS
    );
    app.get_fhir("Claim?_count=5&_include=Claim:patient", 200)
        .await;

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("check")
        .env("PORTICO_LEGACY__ADAPTER", "openemr")
        .env("PORTICO_LEGACY__URL", &read_only_url)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{report}");
    assert!(report.contains("portico_ro:***@"), "{report}");
    assert!(
        !report.contains("ro-S3cret"),
        "the password leaked: {report}"
    );
}

/// Alerts an operator endpoint got: (headers, body) of each POST.
type Alerts = Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, Vec<u8>)>>>;

/// An operator alert endpoint on 127.0.0.1 that keeps every POST; returns its URL.
async fn alert_receiver(alerts: Alerts) -> String {
    let app = axum::Router::new().route(
        "/alerts",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| async move {
                alerts.lock().unwrap().push((headers, body.to_vec()));
                axum::http::StatusCode::NO_CONTENT
            },
        ),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://127.0.0.1:{port}/alerts")
}

/// Change detection loses the PMS: past `alarm.detection_failure_ms` the fail-safe flag rises,
/// the operator endpoint gets one signed alert (checked by the independent `standardwebhooks`
/// crate), and when the database is back the flag clears by itself.
#[tokio::test]
async fn a_detection_outage_raises_the_fail_safe_flag_once_and_recovery_clears_it() {
    use portico::alarm::DETECTION;
    use portico::subscriptions::rest_hook::SigningSecret;

    let db_url = seed(Backend::MariaDb, "alarm_outage").await;
    let (proxy, through_proxy) = Proxy::in_front_of(&mysql_server_url(), &db_url).await;
    let alerts: Alerts = Arc::default();
    let endpoint = alert_receiver(alerts.clone()).await;
    let secret = SigningSecret::generate().to_whsec();
    let mut settings = settings(&through_proxy, 2000);
    settings.subscriptions.enabled = true;
    settings.subscriptions.poll_interval_ms = 200;
    settings.alarm = portico::config::AlarmSettings {
        detection_failure_ms: 1_000,
        check_interval_ms: 200,
        endpoints: vec![endpoint],
        secret: portico::config::Secret::new(secret.clone()),
        ..Default::default()
    };
    let store =
        portico::state::StateStore::open(&settings.state.url(&settings.server.state_dir).unwrap())
            .await
            .unwrap();
    settings.subscriptions.allow_private_endpoints = true;
    let base = start(&settings).await;
    // A subscriber to Patient changes, to read the flag in its `$status`.
    let subscriber = crate::support::mint_token(
        &crate::support::token_service(&base),
        &base,
        "system/Patient.rs system/Subscription.cruds",
        None,
    )
    .await;
    let client = reqwest::Client::new();
    let created: serde_json::Value = client
        .post(format!("{base}/Subscription"))
        .bearer_auth(&subscriber)
        .header("content-type", "application/fhir+json")
        .body(
            serde_json::json!({
                "resourceType": "Subscription",
                "status": "requested",
                "reason": "the fail-safe flag test",
                "criteria": "https://portico.health/fhir/SubscriptionTopic/patient-demographics-changed",
                "channel": {
                    "type": "rest-hook",
                    "endpoint": "http://127.0.0.1:9/hook",
                    "payload": "application/fhir+json"
                }
            })
            .to_string(),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let subscription = created["id"].as_str().expect("created").to_owned();
    // The operator's snapshot, for an admin user.
    store
        .add_user(
            "ops",
            "ops-password-1",
            portico::state::users::Role::Admin,
            None,
        )
        .await
        .unwrap();
    let root = base.trim_end_matches("/fhir").to_owned();
    let anonymous = client
        .get(format!("{root}/status.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401, "administrators only");
    let status = async || -> serde_json::Value {
        let reply = client
            .get(format!("{root}/status.json"))
            .basic_auth("ops", Some("ops-password-1"))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200);
        reply.json().await.unwrap()
    };
    let page = async |path: &str| -> (u16, axum::http::HeaderMap, String) {
        let reply = client
            .get(format!("{root}/{path}"))
            .basic_auth("ops", Some("ops-password-1"))
            .send()
            .await
            .unwrap();
        let status = reply.status().as_u16();
        let headers = reply.headers().clone();
        (status, headers, reply.text().await.unwrap())
    };
    let refused = client
        .get(format!("{root}/status.json"))
        .basic_auth("ops", Some("a wrong password"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let (code, headers, html) = page("status").await;
    assert_eq!(code, 200);
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'none'; script-src 'self'"),
        "{headers:?}"
    );
    assert!(html.contains("<div class=\"banner ok\">"), "{html}");
    assert!(html.contains("<script src=\"status.js\" defer></script>"));
    let (code, headers, script) = page("status.js").await;
    assert_eq!(code, 200);
    assert_eq!(headers["content-type"], "text/javascript; charset=utf-8");
    assert!(script.contains("status/fragment"));
    let healthy = status().await;
    assert_eq!(healthy["flag"]["raised"], false, "{healthy}");
    assert_eq!(healthy["pms"]["up"], true, "{healthy}");
    assert_eq!(healthy["stateStore"]["up"], true, "{healthy}");
    assert!(
        healthy["detection"].as_array().unwrap().len() >= 5,
        "{healthy}"
    );
    let status_errors = async || -> Vec<String> {
        let bundle: serde_json::Value = client
            .get(format!("{base}/Subscription/{subscription}/$status"))
            .bearer_auth(&subscriber)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        bundle["entry"][0]["resource"]["parameter"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["name"] == "error")
            .map(|p| {
                p["valueCodeableConcept"]["text"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    let wait_for = async |what: &str, done: &dyn Fn(&[portico::state::alarms::Alarm]) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let alarms = store.alarms().await.unwrap();
            if done(&alarms) {
                return alarms;
            }
            assert!(Instant::now() < deadline, "{what}: {alarms:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    // Detection runs (its cursors exist) and nothing is raised.
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.change_cursors().await.unwrap().len() < 5 {
        assert!(Instant::now() < deadline, "detection did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(store.alarms().await.unwrap().is_empty());

    proxy.cut().await;
    let cut_at = Instant::now();
    let alarms = wait_for("the flag rises", &|alarms| {
        alarms.iter().any(|a| a.cause == DETECTION && a.flagged())
    })
    .await;
    assert!(
        cut_at.elapsed() >= Duration::from_millis(1_000),
        "not before the configured time"
    );
    let raised = alarms.iter().find(|a| a.cause == DETECTION).unwrap();
    assert!(
        raised
            .detail
            .starts_with("change detection has failed for 1 s or more: "),
        "{raised:?}"
    );
    let failures = store.detection_failures().await.unwrap();
    assert!(!failures.is_empty(), "failures are on record per mapping");
    let snapshot = status().await;
    assert_eq!(snapshot["flag"]["raised"], true, "{snapshot}");
    assert_eq!(
        snapshot["flag"]["causes"][0]["cause"], DETECTION,
        "{snapshot}"
    );
    assert_eq!(snapshot["pms"]["up"], false, "{snapshot}");
    assert!(
        snapshot["detection"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mapping"] == "Patient" && m["failingSince"].is_string()),
        "{snapshot}"
    );
    let (_, _, fragment) = page("status/fragment").await;
    assert!(
        fragment.contains(
            "<div class=\"banner raised\" role=\"alert\">CRITICAL SYNC ERROR (detection)"
        ),
        "{fragment}"
    );
    assert!(fragment.contains("<p class=\"down\">DOWN: "), "{fragment}");
    let errors = status_errors().await;
    assert!(
        errors
            .iter()
            .any(|e| e
                .starts_with("critical sync error: change detection of Patient has failed since ")),
        "the subscription's $status names the cause: {errors:?}"
    );
    wait_for("the alert is accepted", &|alarms| {
        alarms
            .iter()
            .any(|a| a.cause == DETECTION && a.notified_ms.is_some())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let got = alerts.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "one alert per raising");
    let (headers, body) = &got[0];
    standardwebhooks::Webhook::new(&secret)
        .unwrap()
        .verify(body, headers)
        .expect("a valid Standard Webhooks signature");
    let alert: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(alert["type"], "portico.critical-sync-error");
    assert_eq!(alert["cause"], DETECTION);

    proxy.restore();
    let alarms = wait_for("recovery clears the flag", &|alarms| {
        alarms.iter().all(|a| !a.open())
    })
    .await;
    assert!(alarms.iter().all(|a| a.cleared_ms.is_some()), "{alarms:?}");
    assert!(store.detection_failures().await.unwrap().is_empty());
    assert_eq!(alerts.lock().unwrap().len(), 1, "clearing sends nothing");
    assert!(
        !status_errors()
            .await
            .iter()
            .any(|e| e.starts_with("critical sync error")),
        "cleared: $status no longer names it"
    );
    let (_, _, fragment) = page("status/fragment").await;
    assert!(fragment.contains("<div class=\"banner ok\">"), "{fragment}");
    let recovered = status().await;
    assert_eq!(recovered["flag"]["raised"], false, "{recovered}");
    assert_eq!(recovered["pms"]["up"], true, "{recovered}");
}
