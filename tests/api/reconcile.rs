//! Reconciliation against an EHR (`portico::reconcile`): a second Portico over a copy of the PMS
//! data with planted differences plays the EHR; the reconciler gets its token by SMART Backend
//! Services and finds exactly the planted differences.

use std::sync::Arc;
use std::time::Duration;

use portico::app::load_adapter;
use portico::reconcile::{Ehr, run};
use portico::repository::{LookupCache, Repository};
use portico::state::StateStore;
use portico::state::clients::{ClientKind, NewClient};
use sqlx::Connection;

use crate::auth_keys::{ClientKey, jwks};
use crate::support::{self, Backend};

/// Served appointments, in id order: (pc_eid, status code).
async fn appointments(pms: &mut sqlx::MySqlConnection) -> Vec<(i64, String)> {
    sqlx::query_as(
        "SELECT CAST(e.pc_eid AS SIGNED), e.pc_apptstatus FROM openemr_postcalendar_events e \
         JOIN openemr_postcalendar_categories c ON c.pc_catid = e.pc_catid \
         WHERE c.pc_cattype = 0 AND e.pc_pid NOT IN ('', '0') ORDER BY e.pc_eid",
    )
    .fetch_all(pms)
    .await
    .unwrap()
}

#[tokio::test]
async fn reconcile_finds_exactly_the_planted_differences() {
    let ours = support::seed(Backend::MariaDb, "reconcile_portico").await;
    let theirs = support::seed(Backend::MariaDb, "reconcile_ehr").await;

    // The EHR's copy diverges: one appointment never arrived, one is still booked there though the
    // PMS cancelled it, and one it holds the PMS does not.
    let mut ehr_pms = sqlx::MySqlConnection::connect(&theirs).await.unwrap();
    let served = appointments(&mut ehr_pms).await;
    let gone = served[0].0;
    // Neither the deleted appointment nor the copied one.
    let (changed, _) = served
        .iter()
        .skip(2)
        .find(|(_, status)| !["x", "%", "!"].contains(&status.as_str()))
        .cloned()
        .unwrap();
    sqlx::query("DELETE FROM openemr_postcalendar_events WHERE pc_eid = ?")
        .bind(gone)
        .execute(&mut ehr_pms)
        .await
        .unwrap();
    let mut pms = sqlx::MySqlConnection::connect(&ours).await.unwrap();
    sqlx::query("UPDATE openemr_postcalendar_events SET pc_apptstatus = 'x' WHERE pc_eid = ?")
        .bind(changed)
        .execute(&mut pms)
        .await
        .unwrap();
    let extra = served.last().unwrap().0 + 1_000_000;
    for statement in [
        "CREATE TEMPORARY TABLE copied AS SELECT * FROM openemr_postcalendar_events WHERE pc_eid = ?",
        "UPDATE copied SET pc_eid = ?",
        "INSERT INTO openemr_postcalendar_events SELECT * FROM copied",
    ] {
        let bound = if statement.starts_with("CREATE") {
            served[1].0
        } else {
            extra
        };
        sqlx::query(statement)
            .bind(bound)
            .execute(&mut ehr_pms)
            .await
            .unwrap();
    }

    // The EHR: Portico over the diverged copy, with a Backend Services client for the reconciler.
    let ehr_settings = support::settings(&theirs, 5000);
    let store = StateStore::open(
        &ehr_settings
            .state
            .url(&ehr_settings.server.state_dir)
            .unwrap(),
    )
    .await
    .unwrap();
    let key = ClientKey::rs384("reconcile-1");
    store
        .add_client(NewClient {
            client_id: Some("portico-reconcile".into()),
            name: "Portico reconciliation".into(),
            kind: Some(ClientKind::Asymmetric),
            jwks: Some(jwks(&[&key])),
            allowed_scopes: "system/*.rs".into(),
            ..NewClient::default()
        })
        .await
        .unwrap();
    let ehr_base = support::start(&ehr_settings).await;

    let settings = support::settings(&ours, 5000);
    let repository = Repository {
        adapter: Arc::new(load_adapter(&settings).unwrap()),
        db: support::legacy_database(&ours, Duration::from_secs(10)),
        lookups: Arc::new(LookupCache::new(settings.legacy.lookup_refresh())),
    };
    let ehr = Ehr {
        base: ehr_base.clone(),
        client_id: "portico-reconcile".into(),
        private_key_pem: key.private_pem.clone().unwrap(),
        key_id: Some("reconcile-1".into()),
        scope: "system/Patient.rs system/Appointment.rs".into(),
    };
    let report = run(
        &repository,
        &ehr,
        &["Patient".to_owned(), "Appointment".to_owned()],
        None,
    )
    .await
    .unwrap();

    let patients = &report.types[0];
    assert_eq!(patients.resource_type, "Patient");
    assert_eq!(patients.drift(), 0, "{patients:#?}");
    assert_eq!(patients.portico, patients.ehr);
    let appointments = &report.types[1];
    let ids = |records: &[portico::reconcile::compare::Keyed]| -> Vec<String> {
        records.iter().map(|r| r.id.clone()).collect()
    };
    assert_eq!(ids(&appointments.missing), vec![gone.to_string()]);
    assert_eq!(ids(&appointments.extra), vec![extra.to_string()]);
    assert_eq!(appointments.differing.len(), 1, "{appointments:#?}");
    let differing = &appointments.differing[0];
    assert_eq!(differing.portico_id, changed.to_string());
    assert_eq!(differing.portico_status.as_deref(), Some("cancelled"));
    assert_ne!(differing.ehr_status.as_deref(), Some("cancelled"));
    assert_eq!(report.drift(), 3);

    // The same from the command line, the EHR and its client taken from the settings'
    // `[reconcile]` (here from the environment), the types from an option: the report, exit 1
    // on drift, the run recorded.
    let dir = std::env::temp_dir().join(format!("portico-reconcile-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("reconcile-key.pem");
    std::fs::write(&key_file, key.private_pem.clone().unwrap()).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_portico"));
    command
        .args(["reconcile", "--types", "Patient,Appointment"])
        .env("PORTICO_RECONCILE__EHR_URL", &ehr_base)
        .env("PORTICO_RECONCILE__CLIENT_ID", "portico-reconcile")
        .env("PORTICO_RECONCILE__KEY_FILE", &key_file)
        .env("PORTICO_RECONCILE__KEY_ID", "reconcile-1")
        .env("PORTICO_LEGACY__ADAPTER", "openemr")
        .env("PORTICO_LEGACY__URL", &ours)
        .env("PORTICO_SERVER__STATE_DIR", &dir);
    // The EHR serves from this test's runtime: wait for the command off it.
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{printed}");
    assert!(
        printed.contains(&format!(
            "- missing from the EHR: urn:portico:openemr:pc_eid|{gone} (Appointment/{gone})"
        )),
        "{printed}"
    );
    assert!(printed.contains("| Appointment | "), "{printed}");
    let recorded = StateStore::open(&StateStore::default_url(&dir).unwrap())
        .await
        .unwrap()
        .latest_check_run("reconcile")
        .await
        .unwrap()
        .unwrap();
    assert!(recorded.fails);
    assert_eq!(recorded.findings, 3);
    // The drift raises the fail-safe flag's reconcile cause.
    let cli_store = StateStore::open(&StateStore::default_url(&dir).unwrap())
        .await
        .unwrap();
    let watchdog = portico::alarm::Watchdog {
        store: cli_store.clone(),
        settings: portico::config::AlarmSettings::default(),
        sender: Arc::new(portico::subscriptions::rest_hook::RestHookSender::new(
            portico::subscriptions::endpoint_guard::SubscriptionSettings {
                allow_private_endpoints: true,
            },
        )),
    };
    watchdog
        .check(portico::state::subscriptions::now_ms())
        .await
        .unwrap();
    let alarms = cli_store.alarms().await.unwrap();
    let raised = alarms
        .iter()
        .find(|a| a.cause == portico::alarm::RECONCILE)
        .expect("the reconcile cause");
    assert!(raised.flagged());
    assert!(
        raised.detail.contains("found 3 record(s)"),
        "{}",
        raised.detail
    );

    // `portico status` shows the latest run.
    let mut status = std::process::Command::new(env!("CARGO_BIN_EXE_portico"));
    status
        .arg("status")
        .env("PORTICO_LEGACY__ADAPTER", "openemr")
        .env("PORTICO_LEGACY__URL", &ours)
        .env("PORTICO_SERVER__STATE_DIR", &dir);
    let output = tokio::task::spawn_blocking(move || status.output().unwrap())
        .await
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        printed.contains(&format!(
            "reconcile      3 record(s) drifted with {ehr_base} at "
        )),
        "{printed}"
    );

    // A client the EHR does not know gets no token: the reconciliation says so.
    let stranger = Ehr {
        client_id: "nobody".into(),
        ..ehr
    };
    let refused = run(&repository, &stranger, &["Patient".to_owned()], None)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("invalid_client"), "{refused}");

    // What `portico serve` runs on its schedule: a run that finishes is recorded with its
    // drift; one that fails is recorded as failed, says why on the status page, and leaves the
    // flag to the latest finished run.
    let mut scheduled = portico::config::ReconcileSettings {
        ehr_url: Some(ehr_base.clone()),
        client_id: Some("portico-reconcile".into()),
        key_file: Some(key_file.clone()),
        key_id: Some("reconcile-1".into()),
        types: vec!["Appointment".into()],
        days: 0,
        schedule_minutes: 60,
    };
    portico::reconcile::run_and_record(&repository, &cli_store, &scheduled).await;
    let latest = cli_store
        .latest_check_run("reconcile")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(latest.findings, 3, "{latest:?}");
    scheduled.client_id = Some("nobody".into());
    portico::reconcile::run_and_record(&repository, &cli_store, &scheduled).await;
    let failed = cli_store
        .latest_check_run("reconcile")
        .await
        .unwrap()
        .unwrap();
    assert!(failed.fails);
    assert_eq!(failed.findings, 0);
    let why = failed.error.as_deref().unwrap_or_default();
    assert!(why.contains("invalid_client"), "{failed:?}");
    // The failed run neither clears the drift's cause nor counts as drift.
    watchdog
        .check(portico::state::subscriptions::now_ms())
        .await
        .unwrap();
    let alarms = cli_store.alarms().await.unwrap();
    let still = alarms
        .iter()
        .find(|a| a.cause == portico::alarm::RECONCILE)
        .expect("the reconcile cause holds");
    assert!(still.flagged(), "{still:?}");
    assert!(
        still.detail.contains("found 3 record(s)"),
        "{}",
        still.detail
    );
    let mut status_settings = support::settings(&ours, 5000);
    status_settings.server.state_dir = dir.clone();
    status_settings.subscriptions.enabled = false;
    let status_base = support::start(&status_settings).await;
    cli_store
        .add_user(
            "ops",
            "a long admin password",
            portico::state::users::Role::Admin,
            None,
        )
        .await
        .unwrap();
    let page = reqwest::Client::new()
        .get(format!("{}/status", status_base.trim_end_matches("/fhir")))
        .basic_auth("ops", Some("a long admin password"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(&format!("The reconciliation with {ehr_base} at ")),
        "{page}"
    );
    assert!(page.contains("invalid_client"), "{page}");
    // /metrics: the drift of the latest finished run, and that the latest could not finish.
    let metrics = reqwest::Client::new()
        .get(format!("{}/metrics", status_base.trim_end_matches("/fhir")))
        .basic_auth("ops", Some("a long admin password"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "portico_reconcile_drift{type=\"Appointment\",difference=\"missing\"} 1",
        "portico_reconcile_drift{type=\"Appointment\",difference=\"extra\"} 1",
        "portico_reconcile_drift{type=\"Appointment\",difference=\"differing\"} 1",
        "portico_reconcile_failed 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }

    // A schedule that could never run stops the server at start, naming the setting.
    let mut misconfigured = support::settings(&ours, 5000);
    misconfigured.reconcile.ehr_url = Some(ehr_base.clone());
    let refused = portico::app::Application::build(&misconfigured)
        .await
        .err()
        .expect("no client id: the server does not start");
    let refused = format!("{refused:#}");
    assert!(refused.contains("[reconcile]"), "{refused}");
    assert!(refused.contains("reconcile.client_id"), "{refused}");
}
