//! What the subscription tests share: a rest-hook receiver on 127.0.0.1 that records every
//! notification, readers for the parts of a notification Bundle, a Subscription request per topic,
//! and a bounded wait. Included by tests/api (subscriptions.rs) and tests/subscriptions_crash.rs.

// Each test crate that includes this file uses a different subset of it.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value as Json, json};

pub const TOPIC: &str = "https://portico.health/fhir/SubscriptionTopic/";

/// A notification as the receiver got it.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: HeaderMap,
    pub bundle: Json,
    /// The body as sent, for strict R4 parsing.
    pub body: Bytes,
}

/// An HTTP receiver on 127.0.0.1 that records every POST and answers 200.
pub struct Receiver {
    pub url: String,
    pub received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        Receiver::answering_after(Duration::ZERO).await
    }

    /// A receiver that records each notification at once but answers only after `delay`: a
    /// sender that dies meanwhile never learns it was delivered.
    pub async fn answering_after(delay: Duration) -> Receiver {
        let received = Arc::new(Mutex::new(Vec::new()));
        let recorded = received.clone();
        let app = Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: Bytes| async move {
                let bundle = serde_json::from_slice(&body).unwrap_or(Json::Null);
                recorded.lock().unwrap().push(Received {
                    headers,
                    bundle,
                    body,
                });
                tokio::time::sleep(delay).await;
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
    pub fn of(&self, subscription: &str, kind: &str) -> Vec<Received> {
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
pub fn status_part<'a>(bundle: &'a Json, name: &str) -> &'a Json {
    bundle["entry"][0]["resource"]["parameter"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .unwrap_or(&Json::Null)
}

/// The `notification-event` parameters of a notification, in order.
fn notification_events(bundle: &Json) -> impl Iterator<Item = &Json> {
    bundle["entry"][0]["resource"]["parameter"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"] == "notification-event")
}

/// The focus references of a notification's events, as `Type/id` (they are absolute URLs).
pub fn focuses(bundle: &Json) -> Vec<String> {
    notification_events(bundle)
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

/// The event numbers a notification carries, in order.
pub fn event_numbers(bundle: &Json) -> Vec<i64> {
    notification_events(bundle)
        .flat_map(|p| p["part"].as_array().into_iter().flatten())
        .filter(|part| part["name"] == "event-number")
        .filter_map(|part| part["valueString"].as_str()?.parse().ok())
        .collect()
}

/// The resources a full-resource notification carries (every entry after the status).
pub fn carried_resources(bundle: &Json) -> Vec<&Json> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .skip(1)
        .map(|entry| &entry["resource"])
        .filter(|resource| resource.is_object())
        .collect()
}

/// Waits up to `limit` for `check` to give a value.
pub async fn eventually<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
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

/// A rest-hook Subscription request to `topic` (one of Portico's topics) with `filters`.
pub fn topic_subscription(topic: &str, filters: &[&str], endpoint: &str, content: &str) -> Json {
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
