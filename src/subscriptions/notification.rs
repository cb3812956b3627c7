//! Notification Bundles and subscription-status Parameters in the backport's R4 shape (SB-20..30):
//! what a rest-hook POSTs, a websocket sends, `$status` and `$events` answer. Pure, apart from the
//! Bundle's random id and timestamp.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value as Json, json};
use uuid::Uuid;

use crate::adapter::model::ChangeKind;
use crate::subscriptions::resource::{PayloadContent, SubscriptionStatus, fhir_instant};

/// The profile every notification Bundle conforms to (SB-20).
pub const NOTIFICATION_BUNDLE_PROFILE: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-notification-r4";
/// The profile of the status Parameters (SB-21).
pub const STATUS_PARAMETERS_PROFILE: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-status-r4";

/// Why a notification is sent (backport-notification-type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationType {
    Handshake,
    Heartbeat,
    EventNotification,
    QueryStatus,
    QueryEvent,
}

impl NotificationType {
    pub fn code(self) -> &'static str {
        match self {
            NotificationType::Handshake => "handshake",
            NotificationType::Heartbeat => "heartbeat",
            NotificationType::EventNotification => "event-notification",
            NotificationType::QueryStatus => "query-status",
            NotificationType::QueryEvent => "query-event",
        }
    }
}

/// A subscription's state as a notification or `$status` reports it.
#[derive(Debug, Clone)]
pub struct SubscriptionStatusInfo<'a> {
    /// Absolute: `{base}/Subscription/{id}`.
    pub subscription_url: &'a str,
    /// The topic URL; `None` for a classic (search criteria) subscription.
    pub topic: Option<&'a str>,
    pub status: SubscriptionStatus,
    pub kind: NotificationType,
    pub events_since_start: u64,
    /// Each becomes an `error` CodeableConcept with this text.
    pub errors: Vec<String>,
}

/// One numbered event of a subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct NotificationEvent {
    /// Its ordinal among the subscription's events (SB-28).
    pub number: u64,
    pub timestamp: DateTime<Utc>,
    pub focus: Option<Focus>,
}

/// The resource an event is about.
#[derive(Debug, Clone, PartialEq)]
pub struct Focus {
    /// `Appointment/123`.
    pub reference: String,
    /// `{base}/Appointment/123`.
    pub full_url: String,
    pub change: ChangeKind,
    /// Some only when content is full-resource and the resource could be read.
    pub resource: Option<Json>,
}

impl Focus {
    /// The history entry's request and response for the change: a create is a POST to the type
    /// (201), an update a PUT (200), a delete a DELETE (204) of the instance.
    fn request_and_response(&self) -> (Json, &'static str) {
        let resource_type = self
            .reference
            .split_once('/')
            .map_or(self.reference.as_str(), |(resource_type, _)| resource_type);
        match self.change {
            ChangeKind::Create => (
                json!({"method": "POST", "url": resource_type}),
                "201 Created",
            ),
            ChangeKind::Update => (json!({"method": "PUT", "url": self.reference}), "200 OK"),
            ChangeKind::Delete => (
                json!({"method": "DELETE", "url": self.reference}),
                "204 No Content",
            ),
        }
    }
}

fn parameter(name: &str, value_key: &str, value: Json) -> Json {
    let mut parameter = Map::new();
    parameter.insert("name".into(), json!(name));
    parameter.insert(value_key.into(), value);
    Json::Object(parameter)
}

/// The status Parameters alone (used inside the bundle and by $status).
pub fn status_parameters(
    status: &SubscriptionStatusInfo,
    events: &[NotificationEvent],
    content: PayloadContent,
) -> Json {
    let mut parameters = vec![parameter(
        "subscription",
        "valueReference",
        json!({"reference": status.subscription_url}),
    )];
    if let Some(topic) = status.topic {
        parameters.push(parameter("topic", "valueCanonical", json!(topic)));
    }
    parameters.push(parameter(
        "status",
        "valueCode",
        json!(status.status.code()),
    ));
    parameters.push(parameter("type", "valueCode", json!(status.kind.code())));
    parameters.push(parameter(
        "events-since-subscription-start",
        "valueString",
        json!(status.events_since_start.to_string()),
    ));
    for event in events {
        let mut parts = vec![
            parameter(
                "event-number",
                "valueString",
                json!(event.number.to_string()),
            ),
            parameter(
                "timestamp",
                "valueInstant",
                json!(fhir_instant(event.timestamp)),
            ),
        ];
        // SB-23: an empty notification names no resource.
        if let Some(focus) = event
            .focus
            .as_ref()
            .filter(|_| content != PayloadContent::Empty)
        {
            parts.push(parameter(
                "focus",
                "valueReference",
                json!({"reference": focus.full_url}),
            ));
        }
        parameters.push(json!({"name": "notification-event", "part": parts}));
    }
    for error in &status.errors {
        parameters.push(parameter(
            "error",
            "valueCodeableConcept",
            json!({"text": error}),
        ));
    }
    json!({
        "resourceType": "Parameters",
        "meta": {"profile": [STATUS_PARAMETERS_PROFILE]},
        "parameter": parameters,
    })
}

/// A fresh `urn:uuid:` for a Bundle entry that has no server URL.
fn uuid_urn() -> String {
    format!("urn:uuid:{}", Uuid::new_v4())
}

/// entry[0]: the status Parameters (backport-subscription-status-r4); then, per content level,
/// one entry per focus (id-only: fullUrl + request + response, no resource; full-resource: with
/// the resource; when a full-resource focus has no resource — deleted, or no longer readable by
/// the owner — an entry with request/response only). Bundle.type = history, id = random uuid,
/// timestamp now; every entry has request and response (bdl-3/4 for history).
/// entry[0].request = GET {subscription_url}/$status. `empty`: events carry no focus (SB-23).
pub fn notification_bundle(
    status: &SubscriptionStatusInfo,
    events: &[NotificationEvent],
    content: PayloadContent,
) -> Json {
    let mut entries = vec![json!({
        "fullUrl": uuid_urn(),
        "resource": status_parameters(status, events, content),
        "request": {"method": "GET", "url": format!("{}/$status", status.subscription_url)},
        "response": {"status": "200 OK"},
    })];
    if content != PayloadContent::Empty {
        for event in events {
            let Some(focus) = &event.focus else {
                continue;
            };
            let (request, response) = focus.request_and_response();
            let mut entry = Map::new();
            entry.insert("fullUrl".into(), json!(focus.full_url));
            if content == PayloadContent::FullResource
                && let Some(resource) = &focus.resource
            {
                entry.insert("resource".into(), resource.clone());
            }
            entry.insert("request".into(), request);
            entry.insert(
                "response".into(),
                json!({"status": response, "lastModified": fhir_instant(event.timestamp)}),
            );
            entries.push(Json::Object(entry));
        }
    }
    json!({
        "resourceType": "Bundle",
        "id": Uuid::new_v4().to_string(),
        "meta": {"profile": [NOTIFICATION_BUNDLE_PROFILE]},
        "type": "history",
        "timestamp": fhir_instant(Utc::now()),
        "entry": entries,
    })
}

/// `$status` answer: a searchset Bundle with one status Parameters per subscription (SB-02).
/// Each reports the status as is, without events.
pub fn status_searchset(statuses: &[SubscriptionStatusInfo]) -> Json {
    let entries: Vec<Json> = statuses
        .iter()
        .map(|status| {
            json!({
                "fullUrl": uuid_urn(),
                "resource": status_parameters(status, &[], PayloadContent::Empty),
                "search": {"mode": "match"},
            })
        })
        .collect();
    let mut bundle = json!({
        "resourceType": "Bundle",
        "id": Uuid::new_v4().to_string(),
        "type": "searchset",
        "timestamp": fhir_instant(Utc::now()),
        "total": statuses.len(),
    });
    // FHIR JSON forbids empty arrays.
    if !entries.is_empty() {
        bundle["entry"] = Json::Array(entries);
    }
    bundle
}
