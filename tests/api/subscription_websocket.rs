//! The websocket channel (SB-31) end to end: a real Portico over a MariaDB OpenEMR database, a
//! binding token from `$get-ws-binding-token`, a tokio-tungstenite client that binds with it, and
//! edits made as the PMS makes them. The socket must carry the handshake, the events (the backlog
//! first, then new ones as detection numbers them) and heartbeats, and close with a reason when
//! the token is bad or expired, the access token is revoked or the subscription is deleted.

use std::time::Duration;

use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::{SinkExt, StreamExt};
use portico::state::StateStore;
use portico::state::subscriptions::{WebsocketBinding, now_ms};
use portico::state::{hash_token, random_token};
use portico::subscriptions::resource::HEARTBEAT_PERIOD_EXTENSION;
use serde_json::{Value as Json, json};
use sqlx::Connection;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::notifications::{
    carried_resources, event_numbers, focuses, status_part, topic_subscription,
};
use crate::subscriptions::{Running, register_subscriber, start_with, subscribing_settings};
use crate::support::{self, Backend};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A websocket Subscription request to `topic` with `filters`, heartbeats every `heartbeat` s.
fn websocket_subscription(topic: &str, filters: &[&str], content: &str, heartbeat: u32) -> Json {
    let mut subscription = topic_subscription(topic, filters, "", content);
    let channel = subscription["channel"].as_object_mut().unwrap();
    channel.remove("endpoint");
    channel.insert("type".into(), json!("websocket"));
    channel.insert(
        "extension".into(),
        json!([{"url": HEARTBEAT_PERIOD_EXTENSION, "valueUnsignedInt": heartbeat}]),
    );
    subscription
}

/// The value of a `Parameters` parameter.
fn parameter<'a>(parameters: &'a Json, name: &str, value: &str) -> &'a str {
    parameters["parameter"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .and_then(|p| p[value].as_str())
        .unwrap_or_else(|| panic!("no {name} in {parameters}"))
}

impl Running {
    /// `$get-ws-binding-token` on `path` (an instance, or the type with `id` parameters).
    async fn binding_token(&self, path: &str) -> (StatusCode, Json) {
        let response = self
            .client
            .get(format!("{}/{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = response.status();
        if status == StatusCode::OK {
            assert_eq!(response.headers().get("cache-control").unwrap(), "no-store");
        }
        (status, response.json().await.unwrap_or(Json::Null))
    }
}

/// Connects to the socket a binding token's Parameters name and sends the bind command.
async fn bind(parameters: &Json, command: &str) -> Socket {
    let url = parameter(parameters, "websocket-url", "valueUrl");
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let token = parameter(parameters, "token", "valueString");
    socket
        .send(Message::text(format!("{command} {token}")))
        .await
        .unwrap();
    socket
}

/// What the socket sends next: a JSON text frame, or the close frame's code and reason.
#[derive(Debug)]
enum Frame {
    Json(Json),
    Closed(Option<(CloseCode, String)>),
}

async fn next_frame(socket: &mut Socket, limit: Duration) -> Frame {
    loop {
        let message = tokio::time::timeout(limit, socket.next())
            .await
            .expect("the socket sent nothing in time");
        match message {
            None | Some(Err(_)) => return Frame::Closed(None),
            Some(Ok(Message::Text(text))) => {
                return Frame::Json(serde_json::from_str(text.as_str()).expect("JSON text"));
            }
            Some(Ok(Message::Close(frame))) => {
                return Frame::Closed(frame.map(|f| (f.code, f.reason.as_str().to_owned())));
            }
            Some(Ok(_)) => {}
        }
    }
}

/// The next notification of `kind` (others, heartbeats say, are passed over), strictly R4.
async fn next_notification(socket: &mut Socket, kind: &str) -> Json {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(!left.is_zero(), "no {kind} notification in time");
        match next_frame(socket, left).await {
            Frame::Json(bundle) => {
                support::assert_valid_r4(&bundle);
                assert_eq!(bundle["resourceType"], "Bundle", "{bundle}");
                assert_eq!(bundle["type"], "history");
                if status_part(&bundle, "type")["valueCode"] == kind {
                    return bundle;
                }
            }
            Frame::Closed(reason) => panic!("closed while waiting for {kind}: {reason:?}"),
        }
    }
}

/// Reads until the socket closes (notifications before it are passed over): the close frame's
/// code and reason, after the OperationOutcome that states it.
async fn closed(socket: &mut Socket) -> (CloseCode, String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut outcome = None;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(!left.is_zero(), "the socket stayed open");
        match next_frame(socket, left).await {
            Frame::Json(json) if json["resourceType"] == "OperationOutcome" => {
                support::assert_valid_r4(&json);
                outcome = Some(json);
            }
            Frame::Json(_) => {}
            Frame::Closed(frame) => {
                let (code, reason) = frame.expect("a close frame with a reason");
                let outcome = outcome.expect("an OperationOutcome before the close");
                assert_eq!(outcome["issue"][0]["diagnostics"], reason.as_str());
                return (code, reason);
            }
        }
    }
}

/// The `jti` of a Portico access token (its payload is not encrypted).
fn jti_of(token: &str) -> String {
    let payload = token.split('.').nth(1).unwrap();
    let claims: Json = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["jti"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_bound_socket_gets_the_handshake_the_backlog_new_events_and_heartbeats() {
    let db_url = support::seed(Backend::MariaDb, "subscriptions_websocket").await;
    let app = start_with(&db_url, None, true).await;
    let mut pms = sqlx::MySqlConnection::connect(&db_url).await.unwrap();
    let patient: i64 = sqlx::query_scalar("SELECT pid FROM patient_data ORDER BY pid LIMIT 1")
        .fetch_one(&mut pms)
        .await
        .unwrap();

    let (status, created) = app
        .create(&websocket_subscription(
            "patient-demographics-changed",
            &[&format!("_id={patient}")],
            "full-resource",
            1,
        ))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    support::assert_valid_r4(&created);
    assert_eq!(created["channel"]["type"], "websocket");
    let id = created["id"].as_str().unwrap().to_owned();

    // No socket yet: the event waits in the outbox, and the subscription is not failing.
    sqlx::query("UPDATE patient_data SET fname = 'Waiting' WHERE pid = ?")
        .bind(patient)
        .execute(&mut pms)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while app
        .store
        .subscription(&id)
        .await
        .unwrap()
        .unwrap()
        .events_since_start
        < 1
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the edit was not detected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let waiting = app.store.subscription(&id).await.unwrap().unwrap();
    assert_eq!(waiting.status, "requested");
    assert_eq!(waiting.delivered_through, 0);
    assert_eq!((waiting.failed_attempts, waiting.error), (0, None));

    let (status, parameters) = app
        .binding_token(&format!("Subscription/{id}/$get-ws-binding-token"))
        .await;
    assert_eq!(status, StatusCode::OK, "{parameters}");
    support::assert_valid_r4(&parameters);
    assert_eq!(
        parameter(&parameters, "subscription", "valueString"),
        format!("{}/Subscription/{id}", app.base)
    );
    let url = parameter(&parameters, "websocket-url", "valueUrl");
    assert!(url.starts_with("ws://127.0.0.1:"), "{url}");
    let expiration =
        chrono::DateTime::parse_from_rfc3339(parameter(&parameters, "expiration", "valueDateTime"))
            .unwrap();
    let lifetime = expiration.timestamp_millis() - now_ms();
    assert!(lifetime > 0 && lifetime <= 5 * 60 * 1000, "{lifetime} ms");

    let mut socket = bind(&parameters, "bind-with-token:").await;
    let handshake = next_notification(&mut socket, "handshake").await;
    assert!(
        status_part(&handshake, "subscription")["valueReference"]["reference"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/Subscription/{id}"))
    );
    assert_eq!(status_part(&handshake, "status")["valueCode"], "active");

    // The backlog, then an edit made while bound.
    let backlog = next_notification(&mut socket, "event-notification").await;
    assert_eq!(event_numbers(&backlog), vec![1]);
    assert_eq!(focuses(&backlog), vec![format!("Patient/{patient}")]);
    sqlx::query("UPDATE patient_data SET fname = 'Socketed' WHERE pid = ?")
        .bind(patient)
        .execute(&mut pms)
        .await
        .unwrap();
    let live = next_notification(&mut socket, "event-notification").await;
    assert_eq!(event_numbers(&live), vec![2]);
    assert_eq!(focuses(&live), vec![format!("Patient/{patient}")]);
    let resource = carried_resources(&live)[0];
    assert_eq!(resource["resourceType"], "Patient");
    assert_eq!(resource["name"][0]["given"][0], "Socketed");
    assert_eq!(
        status_part(&live, "events-since-subscription-start")["valueString"],
        "2"
    );

    // Nothing else to say for a second: a heartbeat.
    let heartbeat = next_notification(&mut socket, "heartbeat").await;
    assert_eq!(event_numbers(&heartbeat), Vec::<i64>::new());

    // $status shows it active with both events; both are recorded as delivered.
    let status = app.get(&format!("Subscription/{id}/$status")).await;
    support::assert_valid_r4(&status);
    assert_eq!(status_part(&status, "status")["valueCode"], "active");
    assert_eq!(
        status_part(&status, "events-since-subscription-start")["valueString"],
        "2"
    );
    let delivered = app.store.subscription(&id).await.unwrap().unwrap();
    assert_eq!(delivered.delivered_through, 2);

    // Its owner reactivates it while it is bound: a new handshake on the same socket.
    let mut read = app.get(&format!("Subscription/{id}")).await;
    read["status"] = json!("requested");
    let (status, updated) = app.put(&read).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    let again = next_notification(&mut socket, "handshake").await;
    assert_eq!(status_part(&again, "status")["valueCode"], "active");
    let reactivated = app.store.subscription(&id).await.unwrap().unwrap();
    assert!(!reactivated.handshake_pending, "{reactivated:?}");

    // Revoking the access token the binding token came from closes the socket.
    assert!(
        app.store
            .revoke_access_token(&jti_of(&app.token))
            .await
            .unwrap()
    );
    let (code, reason) = closed(&mut socket).await;
    assert_eq!(code, CloseCode::Policy);
    assert!(reason.contains("revoked"), "{reason}");
}

#[tokio::test]
async fn bad_expired_and_misdirected_binding_tokens_are_refused() {
    let test = "subscriptions_websocket_refused";
    let db_url = support::seed(Backend::Sqlite, test).await;
    for state_url in support::state_urls(test).await {
        refusals(&db_url, state_url).await;
    }
}

/// The refusals on one state store (SQLite or PostgreSQL).
async fn refusals(db_url: &str, state_url: String) {
    eprintln!(
        "on the {} state store",
        state_url.split(':').next().unwrap_or_default()
    );
    let app = start_with(db_url, Some(state_url), false).await;
    let (_, first) = app
        .create(&websocket_subscription(
            "appointment-cancelled",
            &[],
            "id-only",
            60,
        ))
        .await;
    let (_, second) = app
        .create(&websocket_subscription(
            "patient-registered",
            &[],
            "empty",
            60,
        ))
        .await;
    let (_, hook) = app
        .create(&topic_subscription(
            "appointment-cancelled",
            &[],
            "http://127.0.0.1:9/hook",
            "id-only",
        ))
        .await;
    let [first, second, hook] =
        [&first, &second, &hook].map(|s| s["id"].as_str().unwrap().to_owned());

    // Only for websocket subscriptions, only the caller's own, only with a token.
    let (status, outcome) = app
        .binding_token(&format!("Subscription/{hook}/$get-ws-binding-token"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{outcome}");
    support::assert_valid_r4(&outcome);
    let (status, _) = app
        .binding_token("Subscription/no-such-subscription/$get-ws-binding-token")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .binding_token("Subscription/$get-ws-binding-token")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let anonymous = app
        .client
        .post(format!(
            "{}/Subscription/{first}/$get-ws-binding-token",
            app.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    // A token nobody issued, and one whose time is up.
    let (_, parameters) = app
        .binding_token(&format!("Subscription/{first}/$get-ws-binding-token"))
        .await;
    let mut forged = parameters.clone();
    forged["parameter"][0]["valueString"] = json!(random_token(32));
    let mut socket = bind(&forged, "bind-with-token:").await;
    let (code, reason) = closed(&mut socket).await;
    assert_eq!(code, CloseCode::Policy);
    assert!(reason.contains("not known"), "{reason}");

    let expired = random_token(32);
    let jti = jti_of(&app.token);
    app.store
        .insert_websocket_bindings(
            &hash_token(&expired),
            &[WebsocketBinding {
                subscription_id: first.clone(),
                client_id: "portico-tests".into(),
                subject: "portico-tests".into(),
                access_jti: jti,
                expires_ms: now_ms() - 1,
            }],
            now_ms(),
        )
        .await
        .unwrap();
    let mut stale = parameters.clone();
    stale["parameter"][0]["valueString"] = json!(expired);
    let mut socket = bind(&stale, "bind-with-token:").await;
    let (code, reason) = closed(&mut socket).await;
    assert_eq!(code, CloseCode::Policy);
    assert!(reason.contains("expired"), "{reason}");

    // One token from the type-level form binds both websocket subscriptions (the form without
    // the colon works too); a message that is no command is answered and the socket stays.
    let (status, both) = app
        .binding_token(&format!(
            "Subscription/$get-ws-binding-token?id={first}&id={second}"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{both}");
    support::assert_valid_r4(&both);
    let mut socket = bind(&both, "bind-with-token").await;
    let mut bound = Vec::new();
    for _ in 0..2 {
        let handshake = next_notification(&mut socket, "handshake").await;
        bound.push(
            status_part(&handshake, "subscription")["valueReference"]["reference"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_owned(),
        );
    }
    bound.sort();
    let mut expected = vec![first.clone(), second.clone()];
    expected.sort();
    assert_eq!(bound, expected);
    socket.send(Message::text("hello")).await.unwrap();
    match next_frame(&mut socket, Duration::from_secs(10)).await {
        Frame::Json(outcome) => {
            assert_eq!(outcome["resourceType"], "OperationOutcome", "{outcome}");
            support::assert_valid_r4(&outcome);
        }
        other => panic!("{other:?}"),
    }

    // Deleting a bound subscription closes the socket.
    let deleted = app
        .client
        .delete(format!("{}/Subscription/{second}", app.base))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let (code, reason) = closed(&mut socket).await;
    assert_eq!(code, CloseCode::Policy);
    assert!(reason.contains("deleted"), "{reason}");
}

#[tokio::test]
async fn stopping_the_server_closes_bound_sockets() {
    let db_url = support::seed(Backend::Sqlite, "subscriptions_websocket_stop").await;
    let mut settings = subscribing_settings(&db_url);
    settings.subscriptions.enabled = false;
    let (base, stop) = support::start_stoppable(&settings).await;
    let store = StateStore::open(&settings.state.url(&settings.server.state_dir).unwrap())
        .await
        .unwrap();
    register_subscriber(&store).await;
    let app = Running::at(base, store, settings).await;
    let (_, created) = app
        .create(&websocket_subscription(
            "patient-registered",
            &[],
            "id-only",
            60,
        ))
        .await;
    let id = created["id"].as_str().unwrap();
    let (_, parameters) = app
        .binding_token(&format!("Subscription/{id}/$get-ws-binding-token"))
        .await;
    let mut socket = bind(&parameters, "bind-with-token:").await;
    next_notification(&mut socket, "handshake").await;

    stop.cancel();
    let (code, reason) = closed(&mut socket).await;
    assert_eq!(code, CloseCode::Away);
    assert!(reason.contains("stopping"), "{reason}");
}
