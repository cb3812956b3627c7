//! A rest-hook subscription's own credentials, end to end: a signing secret Portico generates
//! (shown once, then `***`), kept across a read-modify-write, rotated with both secrets signing
//! meanwhile; and an outbound OAuth client whose bearer token, from a real token endpoint
//! (Portico's own), reaches the receiver. Each signature is checked here with the secret the
//! client was given, as a Standard Webhooks receiver checks it.

use std::time::Duration;

use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use portico::state::clients::{ClientKind, NewClient};
use portico::subscriptions::channel_secrets::{
    OUTBOUND_OAUTH_EXTENSION, REDACTED, SIGNING_SECRET_EXTENSION,
};
use serde_json::{Value as Json, json};
use sha2::Sha256;

use crate::notifications::{Received, Receiver, eventually, topic_subscription};
use crate::subscriptions::start;
use crate::support::{self, Backend};

/// Whether `received` carries a valid Standard Webhooks signature by each of `secrets`.
fn signed_by(received: &Received, secrets: &[&str]) -> bool {
    let header = |name: &str| {
        received
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (id, timestamp, signatures) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let fresh = timestamp
        .parse::<i64>()
        .is_ok_and(|at| (chrono::Utc::now().timestamp() - at).abs() < 300);
    let offered: Vec<&str> = signatures.split(' ').collect();
    fresh
        && offered.len() == secrets.len()
        && secrets.iter().all(|secret| {
            let key = STANDARD
                .decode(secret.strip_prefix("whsec_").expect("a whsec secret"))
                .expect("base64");
            let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
            mac.update(format!("{id}.{timestamp}.").as_bytes());
            mac.update(&received.body);
            let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
            offered.contains(&expected.as_str())
        })
}

fn signing_value(subscription: &Json) -> Option<&str> {
    subscription["channel"]["extension"]
        .as_array()?
        .iter()
        .find(|e| e["url"] == SIGNING_SECRET_EXTENSION)?["valueString"]
        .as_str()
}

/// The `count`-th handshake of subscription `id` the receiver got.
async fn handshake(receiver: &Receiver, id: &str, count: usize) -> Received {
    eventually("a handshake", Duration::from_secs(20), || {
        receiver.of(id, "handshake").get(count - 1).cloned()
    })
    .await
}

#[tokio::test]
async fn signed_and_authorized_notifications_reach_the_receiver() {
    let db_url = support::seed(Backend::Sqlite, "subscription_credentials").await;
    let receiver = Receiver::start().await;
    let app = start(&db_url, None).await;
    let root = app.base.trim_end_matches("/fhir").to_owned();
    // Portico's own token endpoint stands in for the EHR's OAuth server.
    let (oauth_client, oauth_secret) = app
        .store
        .add_client(NewClient {
            client_id: Some("portico-at-the-ehr".into()),
            name: "Portico as the EHR's client".into(),
            kind: Some(ClientKind::Symmetric),
            allowed_scopes: "system/Patient.rs".into(),
            ..NewClient::default()
        })
        .await
        .unwrap();
    let oauth_secret = oauth_secret.unwrap();

    let mut request = topic_subscription(
        "patient-demographics-changed",
        &[],
        &receiver.url,
        "id-only",
    );
    request["channel"]["extension"] = json!([
        {"url": SIGNING_SECRET_EXTENSION, "valueString": "generate"},
        {"url": OUTBOUND_OAUTH_EXTENSION, "extension": [
            {"url": "tokenUrl", "valueUrl": format!("{root}/auth/token")},
            {"url": "clientId", "valueString": oauth_client.client_id},
            {"url": "clientSecret", "valueString": oauth_secret},
            {"url": "scope", "valueString": "system/Patient.rs"},
        ]},
    ]);
    let (status, created) = app.create(&request).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    support::assert_valid_r4(&created);
    let id = created["id"].as_str().unwrap().to_owned();
    // Shown once, in the answer to the create; `***` ever after.
    let secret = signing_value(&created)
        .expect("the generated secret")
        .to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    let read = app.get(&format!("Subscription/{id}")).await;
    support::assert_valid_r4(&read);
    assert_eq!(signing_value(&read), Some(REDACTED));
    let text = read.to_string();
    assert!(
        !text.contains(&secret) && !text.contains(&oauth_secret),
        "{text}"
    );

    let first = handshake(&receiver, &id, 1).await;
    assert!(signed_by(&first, &[&secret]), "{:?}", first.headers);
    let bearer = first
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .expect("a bearer token from the token endpoint")
        .to_owned();
    let patients = app
        .client
        .get(format!("{}/Patient?_count=1", app.base))
        .bearer_auth(&bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(patients.status(), 200, "the token Portico issued works");

    // Read, modify, write back: the `***` values keep what is stored; reactivating sends a
    // new handshake, signed with the same single secret.
    let mut back = read.clone();
    back["status"] = json!("requested");
    back["reason"] = json!("keep the EHR in step, again");
    let (status, updated) = app.put(&back).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(signing_value(&updated), Some(REDACTED));
    let second = handshake(&receiver, &id, 2).await;
    assert!(signed_by(&second, &[&secret]), "{:?}", second.headers);
    assert!(second.headers.contains_key("authorization"));

    // A new secret: for a day, each notification is signed by both.
    let rotated = format!("whsec_{}", STANDARD.encode([42u8; 32]));
    let mut rotate = updated.clone();
    rotate["status"] = json!("requested");
    for extension in rotate["channel"]["extension"].as_array_mut().unwrap() {
        if extension["url"] == SIGNING_SECRET_EXTENSION {
            extension["valueString"] = json!(rotated);
        }
    }
    let (status, answer) = app.put(&rotate).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        signing_value(&answer),
        Some(REDACTED),
        "only a generated secret is shown"
    );
    let third = handshake(&receiver, &id, 3).await;
    assert!(
        signed_by(&third, &[&rotated, &secret]),
        "{:?}",
        third.headers
    );

    // Bad credentials are refused with an OperationOutcome naming the extension.
    let mut bad = request.clone();
    bad["channel"]["extension"][0]["valueString"] = json!("whsec_dG9vIHNob3J0");
    let (status, outcome) = app.create(&bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{outcome}");
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    let mut keep_nothing = request.clone();
    keep_nothing["channel"]["extension"][0]["valueString"] = json!(REDACTED);
    let (status, outcome) = app.create(&keep_nothing).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{outcome}");
    assert!(outcome.to_string().contains("has none"), "{outcome}");
}
