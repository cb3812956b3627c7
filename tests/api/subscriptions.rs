//! Subscriptions end to end: a real Portico over a MariaDB OpenEMR database, a receiver on
//! 127.0.0.1, and edits made as the PMS makes them (its own UPDATE and DELETE statements). The
//! receiver must get the right notification for each topic and filter, and nothing for edits
//! outside the filter or that change nothing served.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use portico::config::{Secret, Settings};
use portico::state::StateStore;
use portico::state::clients::{ClientKind, NewClient};
use serde_json::{Value as Json, json};
use sqlx::Connection;

use crate::support::{self, Backend};

pub(crate) const TOPIC: &str = "https://portico.health/fhir/SubscriptionTopic/";

/// A notification as the receiver got it.
#[derive(Clone, Debug)]
struct Received {
    headers: HeaderMap,
    bundle: Json,
}

/// An HTTP receiver on 127.0.0.1 that records every POST and answers 200.
struct Receiver {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let received = Arc::new(Mutex::new(Vec::new()));
        let recorded = received.clone();
        let app = Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: Bytes| async move {
                let bundle = serde_json::from_slice(&body).unwrap_or(Json::Null);
                recorded.lock().unwrap().push(Received { headers, bundle });
                StatusCode::OK
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url: format!("http://127.0.0.1:{port}/hook"),
            received,
        }
    }

    /// The notifications of one subscription, of one type (`handshake`, `event-notification`...).
    fn of(&self, subscription: &str, kind: &str) -> Vec<Received> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| {
                status_part(&r.bundle, "subscription")["valueReference"]["reference"]
                    .as_str()
                    .is_some_and(|s| s.ends_with(&format!("/Subscription/{subscription}")))
                    && status_part(&r.bundle, "type")["valueCode"] == kind
            })
            .cloned()
            .collect()
    }
}

/// A parameter of the status Parameters in entry[0].
pub(crate) fn status_part<'a>(bundle: &'a Json, name: &str) -> &'a Json {
    bundle["entry"][0]["resource"]["parameter"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .unwrap_or(&Json::Null)
}

/// The focus references of a notification's events, as `Type/id` (they are absolute URLs).
fn focuses(bundle: &Json) -> Vec<String> {
    bundle["entry"][0]["resource"]["parameter"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"] == "notification-event")
        .flat_map(|p| p["part"].as_array().into_iter().flatten())
        .filter(|part| part["name"] == "focus")
        .filter_map(|part| part["valueReference"]["reference"].as_str())
        .map(|reference| {
            let mut segments = reference.rsplit('/');
            let id = segments.next().unwrap_or_default();
            format!("{}/{id}", segments.next().unwrap_or_default())
        })
        .collect()
}

/// Waits up to `limit` for `check` to give a value.
pub(crate) async fn eventually<T>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) struct Running {
    pub(crate) base: String,
    pub(crate) token: String,
    pub(crate) store: StateStore,
    pub(crate) client: reqwest::Client,
    pub(crate) settings: Settings,
}

/// Portico with detection and delivery on (polling every 200 ms, loopback endpoints allowed),
/// a registered client and a token that may manage subscriptions and read everything.
async fn start(db_url: &str, state_url: Option<String>) -> Running {
    start_with(db_url, state_url, true).await
}

/// `start`, with detection and delivery in the server only when `detect_and_deliver` (without,
/// the Subscription endpoints answer and a test runs the delivery worker itself).
pub(crate) async fn start_with(
    db_url: &str,
    state_url: Option<String>,
    detect_and_deliver: bool,
) -> Running {
    let mut settings: Settings = support::settings(db_url, 5000);
    settings.subscriptions.enabled = detect_and_deliver;
    settings.subscriptions.poll_interval_ms = 200;
    settings.subscriptions.allow_private_endpoints = true;
    if let Some(url) = state_url {
        settings.state.url = Some(Secret::new(url.as_str()));
    }
    let base = support::start(&settings).await;
    let store = StateStore::open(&settings.state.url(&settings.server.state_dir).unwrap())
        .await
        .unwrap();
    store
        .add_client(NewClient {
            client_id: Some("portico-tests".into()),
            name: "an EHR subscribing".into(),
            kind: Some(ClientKind::Public),
            ..NewClient::default()
        })
        .await
        .unwrap();
    let token = support::mint_token(
        &support::token_service(&base),
        &base,
        "system/Subscription.cruds system/*.rs",
        None,
    )
    .await;
    if !detect_and_deliver {
        return Running {
            base,
            token,
            store,
            client: reqwest::Client::new(),
            settings,
        };
    }
    // Every detected mapping finishes its baseline (which notifies nobody) before edits begin.
    let adapter = portico::adapter::load(&settings.legacy.adapters_dir.join("openemr")).unwrap();
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
    Running {
        base,
        token,
        store,
        client: reqwest::Client::new(),
        settings,
    }
}

impl Running {
    pub(crate) async fn create(&self, subscription: &Json) -> (StatusCode, Json) {
        let response = self
            .client
            .post(format!("{}/Subscription", self.base))
            .bearer_auth(&self.token)
            .header("content-type", "application/fhir+json")
            .body(subscription.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Json::Null))
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

pub(crate) fn topic_subscription(
    topic: &str,
    filters: &[&str],
    endpoint: &str,
    content: &str,
) -> Json {
    json!({
        "resourceType": "Subscription",
        "meta": { "profile": ["http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription"] },
        "status": "requested",
        "reason": "keep the EHR in step",
        "criteria": format!("{TOPIC}{topic}"),
        "_criteria": {
            "extension": filters.iter().map(|f| json!({
                "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria",
                "valueString": f,
            })).collect::<Vec<_>>(),
        },
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": { "extension": [{
                "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content",
                "valueCode": content,
            }]},
        },
    })
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
    let ids: Vec<String> = [&cancelled_mine, &cancelled_other, &demographics]
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();

    // Handshakes activate each one (SB-16).
    for id in &ids {
        eventually("a handshake", Duration::from_secs(10), || {
            receiver.of(id, "handshake").first().cloned()
        })
        .await;
    }
    for id in &ids {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let read = app.get(&format!("Subscription/{id}")).await;
            if read["status"] == "active" {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{read}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

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
