//! The rest-hook sender's outbound OAuth against a real OAuth server: Portico's own `/auth/token`
//! with a symmetric client. The bearer the receiver gets is then used on Portico's FHIR API, which
//! admits it for exactly the scope asked for.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use portico::state::StateStore;
use portico::state::clients::{ClientKind, NewClient};
use portico::subscriptions::endpoint_guard::SubscriptionSettings;
use portico::subscriptions::rest_hook::{Delivery, DeliveryOutcome, OutboundOAuth, RestHookSender};
use serde_json::Value as Json;

use crate::support::{self, Backend};

#[tokio::test]
async fn a_bearer_from_portico_token_endpoint_reaches_the_receiver() {
    let db_url = support::seed(Backend::Sqlite, "rest_hook_oauth").await;
    let settings = support::settings(&db_url, 5000);
    let base = support::start(&settings).await;
    let root = base.trim_end_matches("/fhir").to_owned();
    let store = StateStore::open(&settings.state.url(&settings.server.state_dir).unwrap())
        .await
        .unwrap();
    let (client, secret) = store
        .add_client(NewClient {
            client_id: Some("rest-hook-sender".into()),
            name: "Portico as a subscriber's client".into(),
            kind: Some(ClientKind::Symmetric),
            allowed_scopes: "system/Patient.rs".into(),
            ..NewClient::default()
        })
        .await
        .unwrap();

    // The receiver records the Authorization header of each notification.
    let authorizations = Arc::new(Mutex::new(Vec::<String>::new()));
    let recorded = authorizations.clone();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap| async move {
            let value = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            recorded.lock().unwrap().push(value.to_owned());
            StatusCode::NO_CONTENT
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let sender = RestHookSender::new(SubscriptionSettings {
        allow_private_endpoints: true,
    });
    let delivery = Delivery {
        endpoint: format!("http://127.0.0.1:{port}/hook"),
        content_type: "application/fhir+json".into(),
        channel_headers: Vec::new(),
        body: br#"{"resourceType":"Bundle","type":"history"}"#.to_vec(),
        webhook_id: "event-1".into(),
        signing_secrets: Vec::new(),
        oauth: Some(OutboundOAuth {
            token_url: format!("{root}/auth/token"),
            client_id: client.client_id.clone(),
            client_secret: secret.unwrap(),
            scope: Some("system/Patient.rs".into()),
        }),
        response_timeout: None,
    };
    assert_eq!(sender.deliver(&delivery).await, DeliveryOutcome::Delivered);
    assert_eq!(sender.deliver(&delivery).await, DeliveryOutcome::Delivered);
    let seen = authorizations.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0], seen[1], "the token is cached between deliveries");
    let bearer = seen[0].strip_prefix("Bearer ").expect("a bearer token");

    // A token Portico issued, for the scope asked for and no more.
    let http = reqwest::Client::new();
    let patients = http
        .get(format!("{base}/Patient?_count=1"))
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(patients.status(), 200);
    let bundle: Json = patients.json().await.unwrap();
    support::assert_valid_r4(&bundle);
    assert_eq!(bundle["entry"][0]["resource"]["resourceType"], "Patient");
    let observations = http
        .get(format!("{base}/Observation?_count=1"))
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(observations.status(), 403);
}
