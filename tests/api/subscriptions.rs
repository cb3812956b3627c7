//! Subscriptions end to end: a real Portico over a MariaDB OpenEMR database, a receiver on
//! 127.0.0.1, and edits made as the PMS makes them (its own UPDATE and DELETE statements). The
//! receiver must get the right notification for each topic and filter, and nothing for edits
//! outside the filter or that change nothing served.

use std::time::Duration;

use axum::http::StatusCode;
use portico::config::{Secret, Settings};
use portico::state::StateStore;
use portico::state::clients::{ClientKind, NewClient};
use serde_json::{Value as Json, json};
use sqlx::Connection;

use crate::notifications::{
    Receiver, carried_resources, eventually, focuses, status_part, topic_subscription,
};
use crate::support::{self, Backend};

pub(crate) struct Running {
    pub(crate) base: String,
    pub(crate) token: String,
    pub(crate) store: StateStore,
    pub(crate) client: reqwest::Client,
    pub(crate) settings: Settings,
}

/// Settings with detection and delivery on (polling every 200 ms, loopback endpoints allowed).
pub(crate) fn subscribing_settings(db_url: &str) -> Settings {
    let mut settings: Settings = support::settings(db_url, 5000);
    settings.subscriptions.enabled = true;
    settings.subscriptions.poll_interval_ms = 200;
    settings.subscriptions.allow_private_endpoints = true;
    settings
}

/// Portico with detection and delivery on, a registered client and a token that may manage
/// subscriptions and read everything.
pub(crate) async fn start(db_url: &str, state_url: Option<String>) -> Running {
    start_with(db_url, state_url, true).await
}

/// `start`, with detection and delivery in the server or not (a test that drives the delivery
/// worker itself).
pub(crate) async fn start_with(
    db_url: &str,
    state_url: Option<String>,
    detect_and_deliver: bool,
) -> Running {
    let mut settings = subscribing_settings(db_url);
    settings.subscriptions.enabled = detect_and_deliver;
    if let Some(url) = state_url {
        settings.state.url = Some(Secret::new(url.as_str()));
    }
    start_on(settings).await
}

/// Portico on `settings` (any adapter), with the subscribing client registered and a token for
/// it; when detection runs, every mapping's baseline is done before this returns.
pub(crate) async fn start_on(settings: Settings) -> Running {
    let base = support::start(&settings).await;
    let store = StateStore::open(&settings.state.url(&settings.server.state_dir).unwrap())
        .await
        .unwrap();
    register_subscriber(&store).await;
    let detecting = settings.subscriptions.enabled;
    let running = Running::at(base, store, settings).await;
    if detecting {
        wait_for_baselines(&running.store, &running.settings).await;
    }
    running
}

/// The client subscriptions are made by.
pub(crate) async fn register_subscriber(store: &StateStore) {
    store
        .add_client(NewClient {
            client_id: Some("portico-tests".into()),
            name: "an EHR subscribing".into(),
            kind: Some(ClientKind::Public),
            ..NewClient::default()
        })
        .await
        .unwrap();
}

/// Every detected mapping finishes its baseline (which notifies nobody) before edits begin.
async fn wait_for_baselines(store: &StateStore, settings: &Settings) {
    let adapter =
        portico::adapter::load(&settings.legacy.adapters_dir.join(&settings.legacy.adapter))
            .unwrap();
    let detected = adapter
        .resources
        .values()
        .flat_map(|def| def.mappings.iter())
        .filter(|m| m.changes.is_some())
        .count();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let cursors = store.change_cursors().await.unwrap();
        if cursors.len() == detected && cursors.iter().all(|c| c.baselined) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "baseline did not finish: {cursors:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Running {
    /// A client of the server `support::start` started at `base`, with a token that may manage
    /// subscriptions and read everything.
    pub(crate) async fn at(base: String, store: StateStore, settings: Settings) -> Running {
        let token = support::mint_token(
            &support::token_service(&base),
            &base,
            "system/Subscription.cruds system/*.rs",
            None,
        )
        .await;
        Running {
            base,
            token,
            store,
            client: reqwest::Client::new(),
            settings,
        }
    }

    pub(crate) async fn create(&self, subscription: &Json) -> (StatusCode, Json) {
        self.send_json(reqwest::Method::POST, "Subscription", subscription)
            .await
    }

    /// PUTs `subscription` to its own id.
    pub(crate) async fn put(&self, subscription: &Json) -> (StatusCode, Json) {
        let id = subscription["id"].as_str().expect("an id");
        self.send_json(
            reqwest::Method::PUT,
            &format!("Subscription/{id}"),
            subscription,
        )
        .await
    }

    /// Sends `body` as FHIR JSON to `path` with the token: the status and the JSON answer.
    async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Json,
    ) -> (StatusCode, Json) {
        let response = self
            .client
            .request(method, format!("{}/{path}", self.base))
            .bearer_auth(&self.token)
            .header("content-type", "application/fhir+json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Json::Null))
    }

    /// Waits until the handshake of each of `ids` reached `receiver` and activated it (SB-16).
    pub(crate) async fn await_handshakes(&self, receiver: &Receiver, ids: &[String]) {
        for id in ids {
            eventually("a handshake", Duration::from_secs(10), || {
                receiver.of(id, "handshake").first().cloned()
            })
            .await;
        }
        for id in ids {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let read = self.get(&format!("Subscription/{id}")).await;
                if read["status"] == "active" {
                    break;
                }
                assert!(tokio::time::Instant::now() < deadline, "{read}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    pub(crate) async fn get(&self, path: &str) -> Json {
        let response = self
            .client
            .get(format!("{}/{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.unwrap()
    }
}

/// One appointment per patient, for two patients: `(appointment id, patient id)`.
async fn two_patients_appointments(app: &Running) -> Vec<(String, String)> {
    let bundle = app.get("Appointment?_count=200").await;
    let mut picked: Vec<(String, String)> = Vec::new();
    for appointment in support::matches(&bundle) {
        let Some(patient) = appointment["participant"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["actor"]["reference"].as_str())
            .find_map(|r| r.strip_prefix("Patient/"))
        else {
            continue;
        };
        if appointment["status"] == "cancelled" || picked.iter().any(|(_, p)| p == patient) {
            continue;
        }
        picked.push((
            appointment["id"].as_str().unwrap().to_owned(),
            patient.to_owned(),
        ));
        if picked.len() == 2 {
            break;
        }
    }
    assert_eq!(
        picked.len(),
        2,
        "the fixture has appointments of two patients"
    );
    picked
}

#[tokio::test]
async fn pms_edits_reach_the_receiver_per_topic_and_filter() {
    let db_url = support::seed(Backend::MariaDb, "subscriptions_e2e").await;
    let receiver = Receiver::start().await;
    let app = start(&db_url, None).await;
    let picked = two_patients_appointments(&app).await;
    let (appointment, patient) = picked[0].clone();
    let (_, other_patient) = picked[1].clone();

    let (status, cancelled_mine) = app
        .create(&topic_subscription(
            "appointment-cancelled",
            &[&format!("Appointment?patient=Patient/{patient}")],
            &receiver.url,
            "id-only",
        ))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{cancelled_mine}");
    assert_eq!(cancelled_mine["status"], "requested");
    support::assert_valid_r4(&cancelled_mine);
    let (_, cancelled_other) = app
        .create(&topic_subscription(
            "appointment-cancelled",
            &[&format!("patient=Patient/{other_patient}")],
            &receiver.url,
            "id-only",
        ))
        .await;
    let (_, demographics) = app
        .create(&topic_subscription(
            "patient-demographics-changed",
            &[&format!("_id={patient}")],
            &receiver.url,
            "full-resource",
        ))
        .await;
    // Same owner, filters differing only in `_id`: matched by one query, each hears its own.
    let (_, demographics_other) = app
        .create(&topic_subscription(
            "patient-demographics-changed",
            &[&format!("_id={other_patient}")],
            &receiver.url,
            "full-resource",
        ))
        .await;
    let ids: Vec<String> = [
        &cancelled_mine,
        &cancelled_other,
        &demographics,
        &demographics_other,
    ]
    .iter()
    .map(|s| s["id"].as_str().unwrap().to_owned())
    .collect();

    // Handshakes activate each one (SB-16).
    app.await_handshakes(&receiver, &ids).await;

    // As the PMS writes: a status-only edit (OpenEMR does not bump pc_time), a name change, and
    // an edit of a column Portico does not serve.
    let mut pms = sqlx::MySqlConnection::connect(&db_url).await.unwrap();
    sqlx::query("UPDATE openemr_postcalendar_events SET pc_apptstatus = 'x' WHERE pc_eid = ?")
        .bind(&appointment)
        .execute(&mut pms)
        .await
        .unwrap();
    sqlx::query("UPDATE patient_data SET fname = 'Renamed' WHERE pid = ?")
        .bind(&patient)
        .execute(&mut pms)
        .await
        .unwrap();

    let cancelled = eventually("the cancellation", Duration::from_secs(15), || {
        receiver.of(&ids[0], "event-notification").first().cloned()
    })
    .await;
    assert_eq!(
        focuses(&cancelled.bundle),
        vec![format!("Appointment/{appointment}")],
        "{}",
        cancelled.bundle
    );
    assert_eq!(
        status_part(&cancelled.bundle, "events-since-subscription-start")["valueString"],
        "1"
    );
    support::assert_valid_r4(&cancelled.bundle);
    assert_eq!(cancelled.bundle["type"], "history");
    // id-only: the entry names the resource but does not carry it (SB-24).
    assert!(cancelled.bundle["entry"][1]["resource"].is_null());
    assert_eq!(
        cancelled.headers.get("content-type").unwrap(),
        "application/fhir+json"
    );

    let renamed = eventually("the demographics change", Duration::from_secs(15), || {
        receiver.of(&ids[2], "event-notification").first().cloned()
    })
    .await;
    assert_eq!(focuses(&renamed.bundle), vec![format!("Patient/{patient}")]);
    let resource = &renamed.bundle["entry"][1]["resource"];
    assert_eq!(resource["resourceType"], "Patient");
    assert_eq!(resource["name"][0]["given"][0], "Renamed");
    support::assert_valid_r4(&renamed.bundle);

    // An edit that changes nothing served notifies nobody; the other patient's subscription
    // heard nothing of this patient's appointment.
    sqlx::query("UPDATE patient_data SET occupation = 'astronaut' WHERE pid = ?")
        .bind(&patient)
        .execute(&mut pms)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.of(&ids[2], "event-notification").len(), 1);
    assert!(receiver.of(&ids[1], "event-notification").is_empty());
    assert!(receiver.of(&ids[3], "event-notification").is_empty());

    // A hard delete, as OpenEMR's calendar does, is a cancellation too (Appointment's topic
    // declares deletes).
    sqlx::query("DELETE FROM openemr_postcalendar_events WHERE pc_eid = ?")
        .bind(&appointment)
        .execute(&mut pms)
        .await
        .unwrap();
    let gone = eventually("the deletion", Duration::from_secs(15), || {
        receiver.of(&ids[0], "event-notification").get(1).cloned()
    })
    .await;
    assert_eq!(
        focuses(&gone.bundle),
        vec![format!("Appointment/{appointment}")]
    );
    assert_eq!(gone.bundle["entry"][1]["request"]["method"], "DELETE");

    // $status counts both events; $events replays them.
    let status = app.get(&format!("Subscription/{}/$status", ids[0])).await;
    support::assert_valid_r4(&status);
    assert_eq!(status["type"], "searchset");
    let parameters = &status["entry"][0]["resource"]["parameter"];
    let since = parameters
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "events-since-subscription-start")
        .unwrap();
    assert_eq!(since["valueString"], "2");
    let replay = app
        .get(&format!(
            "Subscription/{}/$events?eventsSinceNumber=1&eventsUntilNumber=2",
            ids[0]
        ))
        .await;
    support::assert_valid_r4(&replay);
    assert_eq!(status_part(&replay, "type")["valueCode"], "query-event");
    assert_eq!(
        focuses(&replay).len(),
        1,
        "the deleted appointment is named; the cancelled one is gone from the PMS now"
    );
    drop(app.store);
}

#[tokio::test]
async fn subscriptions_are_refused_clearly_at_create() {
    let db_url = support::seed(Backend::Sqlite, "subscriptions_refused").await;
    let app = start(&db_url, None).await;
    let hook = "http://127.0.0.1:9/hook";
    let cases = [
        (
            "unknown topic",
            topic_subscription("no-such-topic", &[], hook, "id-only"),
        ),
        (
            "filter not allowed",
            topic_subscription("appointment-cancelled", &["comment=x"], hook, "id-only"),
        ),
        (
            "filter on another type",
            topic_subscription("appointment-cancelled", &["Patient?_id=1"], hook, "id-only"),
        ),
        (
            "content level",
            topic_subscription("appointment-cancelled", &[], hook, "everything"),
        ),
        (
            "link-local endpoint",
            topic_subscription(
                "appointment-cancelled",
                &[],
                "http://169.254.169.254/latest",
                "id-only",
            ),
        ),
    ];
    for (why, subscription) in cases {
        let (status, outcome) = app.create(&subscription).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{why}: {outcome}");
        assert_eq!(outcome["resourceType"], "OperationOutcome", "{why}");
    }
    let mut email = topic_subscription("appointment-cancelled", &[], hook, "id-only");
    email["channel"]["type"] = json!("email");
    let (status, _) = app.create(&email).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A token without Subscription scopes may not create one.
    let reader = support::mint_token(
        &support::token_service(&app.base),
        &app.base,
        "system/*.rs",
        None,
    )
    .await;
    let response = app
        .client
        .post(format!("{}/Subscription", app.base))
        .bearer_auth(reader)
        .header("content-type", "application/fhir+json")
        .body(topic_subscription("appointment-cancelled", &[], hook, "id-only").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_patient_token_cannot_subscribe_to_another_patients_data() {
    let db_url = support::seed(Backend::Sqlite, "subscriptions_patient").await;
    let app = start(&db_url, None).await;
    let patient_token = support::mint_token(
        &support::token_service(&app.base),
        &app.base,
        "patient/Subscription.cruds patient/Appointment.rs",
        Some("1"),
    )
    .await;
    let create = |filter: String| {
        let body = topic_subscription(
            "appointment-cancelled",
            &[&filter],
            "http://127.0.0.1:9/hook",
            "id-only",
        );
        app.client
            .post(format!("{}/Subscription", app.base))
            .bearer_auth(&patient_token)
            .header("content-type", "application/fhir+json")
            .body(body.to_string())
            .send()
    };
    assert_eq!(
        create("patient=Patient/2".into()).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        create("patient=Patient/1".into()).await.unwrap().status(),
        StatusCode::CREATED
    );
}

/// A subscription made under a patient-context token, with no filter, hears only of its
/// patient: matching runs under the owner's access, inside the compiled SQL.
#[tokio::test]
async fn a_patient_tokens_unfiltered_subscription_hears_only_its_patient() {
    let db_url = support::seed(Backend::MariaDb, "subscriptions_patient_only").await;
    let receiver = Receiver::start().await;
    let app = start(&db_url, None).await;
    let mut pms = sqlx::MySqlConnection::connect(&db_url).await.unwrap();
    let patients: Vec<i64> =
        sqlx::query_scalar("SELECT pid FROM patient_data ORDER BY pid LIMIT 2")
            .fetch_all(&mut pms)
            .await
            .unwrap();
    let (mine, other) = (patients[0], patients[1]);
    let patient_token = support::mint_token(
        &support::token_service(&app.base),
        &app.base,
        "patient/Subscription.cruds patient/Patient.rs",
        Some(&mine.to_string()),
    )
    .await;
    let request = topic_subscription(
        "patient-demographics-changed",
        &[],
        &receiver.url,
        "full-resource",
    );
    let response = app
        .client
        .post(format!("{}/Subscription", app.base))
        .bearer_auth(&patient_token)
        .header("content-type", "application/fhir+json")
        .body(request.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let patient_scoped: Json = response.json().await.unwrap();
    let patient_scoped = patient_scoped["id"].as_str().unwrap().to_owned();
    // The same subscription under a system token hears of everyone: the control.
    let (_, control) = app.create(&request).await;
    let control = control["id"].as_str().unwrap().to_owned();
    app.await_handshakes(&receiver, &[patient_scoped.clone(), control.clone()])
        .await;

    rename_and_wait(&mut pms, &receiver, &control, other, "Elsewhere").await;
    rename_and_wait(&mut pms, &receiver, &control, mine, "Mine").await;
    rename_and_wait(&mut pms, &receiver, &patient_scoped, mine, "Mine").await;
    let heard: Vec<String> = receiver
        .of(&patient_scoped, "event-notification")
        .iter()
        .flat_map(|n| focuses(&n.bundle))
        .collect();
    assert_eq!(heard, vec![format!("Patient/{mine}")]);
    assert!(patients_named(&receiver, &patient_scoped, "Elsewhere").is_empty());
}

/// Patients whose notifications carried `given` as a given name, by id.
fn patients_named(receiver: &Receiver, subscription: &str, given: &str) -> Vec<String> {
    receiver
        .of(subscription, "event-notification")
        .iter()
        .flat_map(|n| {
            carried_resources(&n.bundle)
                .into_iter()
                .filter(|r| {
                    r["resourceType"] == "Patient"
                        && r["name"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .flat_map(|name| name["given"].as_array().into_iter().flatten())
                            .any(|g| g == given)
                })
                .filter_map(|r| r["id"].as_str().map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Renames `patient` as the PMS does and waits until the receiver has the new name.
async fn rename_and_wait(
    pms: &mut sqlx::MySqlConnection,
    receiver: &Receiver,
    subscription: &str,
    patient: i64,
    given: &str,
) {
    sqlx::query("UPDATE patient_data SET fname = ? WHERE pid = ?")
        .bind(given)
        .bind(patient)
        .execute(&mut *pms)
        .await
        .unwrap();
    eventually(
        &format!("{given} of Patient/{patient}"),
        Duration::from_secs(90),
        || {
            patients_named(receiver, subscription, given)
                .contains(&patient.to_string())
                .then_some(())
        },
    )
    .await;
}

/// Each event of the subscription names a different patient: no change was numbered twice.
async fn assert_one_event_per_change(store: &StateStore, subscription: &str, changed: &[i64]) {
    let stored = store.subscription(subscription).await.unwrap().unwrap();
    let events = store
        .subscription_events(subscription, 1, stored.events_since_start, 1000)
        .await
        .unwrap();
    let numbers: Vec<i64> = events.iter().map(|e| e.number).collect();
    assert_eq!(
        numbers,
        (1..=changed.len() as i64).collect::<Vec<_>>(),
        "{events:?}"
    );
    let mut named: Vec<String> = events.iter().map(|e| e.resource_id.clone()).collect();
    named.sort();
    let mut expected: Vec<String> = changed.iter().map(i64::to_string).collect();
    expected.sort();
    assert_eq!(named, expected, "one event per rename: {events:?}");
}

#[tokio::test]
async fn two_replicas_on_postgres_number_each_change_once_and_take_over() {
    let test = "subscriptions_replicas";
    let db_url = support::seed(Backend::MariaDb, test).await;
    let state_url = support::state_urls(test)
        .await
        .into_iter()
        .find(|url| url.starts_with("postgres"))
        .expect("a PostgreSQL state store");
    let replica = |name: &str| {
        let mut settings = subscribing_settings(&db_url);
        settings.state.url = Some(Secret::new(state_url.as_str()));
        settings.subscriptions.replica = Some(name.to_owned());
        // Short, so a replica that stopped renewing hands over quickly; still several passes long.
        settings.subscriptions.lease_ms = 3_000;
        settings
    };
    let names = ["replica-a", "replica-b"];
    let settings = replica(names[0]);
    let (base_a, stop_a) = support::start_stoppable(&settings).await;
    let (base_b, stop_b) = support::start_stoppable(&replica(names[1])).await;
    let store = StateStore::open(&state_url).await.unwrap();
    register_subscriber(&store).await;
    wait_for_baselines(&store, &settings).await;
    let a = Running::at(base_a, store.clone(), settings.clone()).await;
    let b = Running::at(base_b, store.clone(), replica(names[1])).await;

    let receiver = Receiver::start().await;
    let (status, created) = a
        .create(&topic_subscription(
            "patient-demographics-changed",
            &[],
            &receiver.url,
            "full-resource",
        ))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    eventually("the handshake", Duration::from_secs(30), || {
        receiver.of(&id, "handshake").first().cloned()
    })
    .await;

    let mut pms = sqlx::MySqlConnection::connect(&db_url).await.unwrap();
    let patients: Vec<i64> =
        sqlx::query_scalar("SELECT pid FROM patient_data ORDER BY pid LIMIT 4")
            .fetch_all(&mut pms)
            .await
            .unwrap();
    assert_eq!(patients.len(), 4);

    // Both replicas poll every 200 ms; each mapping is detected by one of them at a time.
    for (i, &patient) in patients[..2].iter().enumerate() {
        rename_and_wait(&mut pms, &receiver, &id, patient, &format!("Replica{i}")).await;
    }
    assert_one_event_per_change(&store, &id, &patients[..2]).await;
    let leases = store.change_leases().await.unwrap();
    let adapter = portico::adapter::load(&settings.legacy.adapters_dir.join("openemr")).unwrap();
    let patient_mapping = adapter.resources["Patient"].mappings[0].name.clone();
    for lease in &leases {
        assert!(
            lease
                .owner
                .as_deref()
                .is_none_or(|owner| names.contains(&owner)),
            "{lease:?}"
        );
    }
    let holder = leases
        .iter()
        .find(|l| l.mapping == patient_mapping)
        .and_then(|l| l.owner.clone())
        .expect("the Patient mapping is leased");

    // The replica detecting patients stops; the other takes every mapping over.
    let (stopped, survivor) = if holder == names[0] {
        (stop_a, (names[1], &b))
    } else {
        (stop_b, (names[0], &a))
    };
    stopped.cancel();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let leases = store.change_leases().await.unwrap();
        if leases.len() == adapter_detected(&adapter)
            && leases
                .iter()
                .all(|l| l.owner.as_deref() == Some(survivor.0))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} did not take over from {holder}: {leases:?}",
            survivor.0
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (i, &patient) in patients[2..].iter().enumerate() {
        rename_and_wait(&mut pms, &receiver, &id, patient, &format!("Survivor{i}")).await;
    }
    assert_one_event_per_change(&store, &id, &patients).await;
    let status = survivor.1.get(&format!("Subscription/{id}/$status")).await;
    assert_eq!(
        status_part(&status, "events-since-subscription-start")["valueString"],
        "4"
    );
}

/// The mappings of `adapter` that declare change detection.
fn adapter_detected(adapter: &portico::adapter::model::Adapter) -> usize {
    adapter
        .resources
        .values()
        .flat_map(|def| def.mappings.iter())
        .filter(|m| m.changes.is_some())
        .count()
}
