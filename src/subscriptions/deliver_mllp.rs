//! The HL7 v2 over MLLP channel of the outbox: a subscription's events, in order, one message at
//! a time, each made from the resources as its owner may read them now (`hl7v2::encode`) and sent
//! over one kept connection per subscription (`mllp::MllpSender`). `MSH-10` is the subscription and
//! the event number, so a resend is the same message; the next event waits for the ACK.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use serde_json::Value as Json;
use tokio::sync::Mutex;

use super::hl7v2::{EventKind, Header, ProcessingId, Resources, encode};
use super::mllp::{DeliveryOutcome as MllpOutcome, MllpSender, MllpTimeouts, OutgoingMessage};
use crate::access::Access;
use crate::adapter::model::TOPIC_URL_PREFIX;
use crate::repository::{ReadOutcome, Repository};
use crate::state::subscriptions::{StoredEvent, StoredSubscription};

/// MLLP senders by subscription id: one connection each, kept between rounds.
pub type MllpSenders = Arc<Mutex<HashMap<String, MllpSender>>>;

/// What sending a run of events came to.
pub enum MllpRun {
    /// Events through this number were acknowledged (or had nothing to send as HL7 v2).
    Through(i64),
    /// The run stopped at an event: events before it are through `delivered`, the failure is
    /// `reason` (retried per the schedule).
    Failed { delivered: i64, reason: String },
}

/// The message an event becomes, or `None` when it has no HL7 v2 form (a claim's status, a
/// resource gone or no longer readable by the owner): such an event is passed over.
async fn message_for(
    repository: &Repository,
    subscription: &StoredSubscription,
    access: &Access,
    event: &StoredEvent,
) -> Option<String> {
    let kind = event_kind(subscription.topic.as_deref(), event)?;
    let read = |resource_type: String, id: String| async move {
        match repository.read(&resource_type, &id, access).await {
            Ok(ReadOutcome::Found(resource)) => Some(resource.into_json()),
            _ => None,
        }
    };
    let focus = read(event.resource_type.clone(), event.resource_id.clone()).await?;
    let patient_of = |resource: &Json| -> Option<String> {
        let mut references = Vec::new();
        collect_references(resource, &mut references);
        references
            .into_iter()
            .find_map(|r| r.rsplit_once("Patient/").map(|(_, id)| id.to_owned()))
    };
    let header = Header {
        sending_application: "PORTICO".into(),
        sending_facility: String::new(),
        receiving_application: String::new(),
        receiving_facility: String::new(),
        message_control_id: control_id(subscription, event.number),
        timestamp: Utc::now().fixed_offset(),
        processing_id: ProcessingId::Production,
    };
    let text = match kind {
        EventKind::PatientRegistered | EventKind::PatientUpdated => {
            encode(kind, Resources::Patient(&focus), &header)
        }
        EventKind::ResultAvailable => {
            let patient = read("Patient".into(), patient_of(&focus)?).await?;
            encode(
                kind,
                Resources::Result {
                    observation: &focus,
                    patient: &patient,
                },
                &header,
            )
        }
        _ => {
            let patient = read("Patient".into(), patient_of(&focus)?).await?;
            encode(
                kind,
                Resources::Appointment {
                    appointment: &focus,
                    patient: &patient,
                },
                &header,
            )
        }
    };
    match text {
        Ok(text) => Some(text),
        Err(error) => {
            tracing::warn!(subscription = %subscription.id, error = %error, "event has no HL7 v2 message");
            None
        }
    }
}

fn collect_references(value: &Json, out: &mut Vec<String>) {
    match value {
        Json::Object(object) => {
            for (key, inner) in object {
                match (key.as_str(), inner) {
                    ("reference", Json::String(reference)) => out.push(reference.clone()),
                    _ => collect_references(inner, out),
                }
            }
        }
        Json::Array(items) => items.iter().for_each(|item| collect_references(item, out)),
        _ => {}
    }
}

/// `MSH-10`: stable for an event of a subscription (resends are recognisably the same message).
fn control_id(subscription: &StoredSubscription, number: i64) -> String {
    format!("{}-{number}", subscription.id)
}

/// The HL7 v2 event a topic's event is: by topic for backport subscriptions, by type and change
/// for classic ones.
fn event_kind(topic: Option<&str>, event: &StoredEvent) -> Option<EventKind> {
    let slug = topic.and_then(|t| t.strip_prefix(TOPIC_URL_PREFIX));
    Some(
        match (
            slug,
            event.resource_type.as_str(),
            event.change_kind.as_str(),
        ) {
            (_, _, "delete") => return None,
            (Some("patient-registered"), ..) => EventKind::PatientRegistered,
            (Some("patient-demographics-changed"), ..) => EventKind::PatientUpdated,
            (Some("appointment-booked"), ..) => EventKind::AppointmentBooked,
            (Some("appointment-rescheduled"), ..) => EventKind::AppointmentRescheduled,
            (Some("appointment-cancelled"), ..) => EventKind::AppointmentCancelled,
            (Some("appointment-no-show"), ..) => EventKind::AppointmentNoShow,
            (Some("appointment-checked-in"), ..) => EventKind::AppointmentCheckedIn,
            (Some("lab-result-available" | "vital-signs-recorded"), ..) => {
                EventKind::ResultAvailable
            }
            (Some(_), ..) => return None,
            (None, "Patient", "create") => EventKind::PatientRegistered,
            (None, "Patient", _) => EventKind::PatientUpdated,
            (None, "Appointment", "create") => EventKind::AppointmentBooked,
            (None, "Appointment", _) => EventKind::AppointmentModified,
            (None, "Observation", _) => EventKind::ResultAvailable,
            (None, ..) => return None,
        },
    )
}

/// Sends `events` in order to the subscription's peer (`peer`: the vetted `ip:port`), stopping at
/// the first that is not acknowledged with AA/CA.
pub async fn send_events(
    senders: &MllpSenders,
    repository: &Repository,
    subscription: &StoredSubscription,
    access: &Access,
    peer: &str,
    events: &[StoredEvent],
) -> MllpRun {
    let mut delivered = subscription.delivered_through;
    let mut senders = senders.lock().await;
    let sender = senders
        .entry(subscription.id.clone())
        .or_insert_with(|| MllpSender::new(peer, MllpTimeouts::default()));
    if sender.peer() != peer {
        *sender = MllpSender::new(peer, MllpTimeouts::default());
    }
    for event in events {
        let Some(text) = message_for(repository, subscription, access, event).await else {
            delivered = event.number;
            continue;
        };
        let message = match OutgoingMessage::new(text) {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(subscription = %subscription.id, error = %error, "HL7 v2 message refused before sending; passed over");
                delivered = event.number;
                continue;
            }
        };
        match sender.deliver(&message).await {
            MllpOutcome::Accepted(_) => delivered = event.number,
            MllpOutcome::Rejected(ack) | MllpOutcome::Error(ack) => {
                return MllpRun::Failed {
                    delivered,
                    reason: format!(
                        "the peer answered {} to event {}",
                        ack.code.as_str(),
                        event.number
                    ),
                };
            }
            MllpOutcome::Retry(cause) => {
                return MllpRun::Failed {
                    delivered,
                    reason: format!("event {} not acknowledged: {cause}", event.number),
                };
            }
        }
    }
    MllpRun::Through(delivered)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(resource_type: &str, change: &str) -> StoredEvent {
        StoredEvent {
            number: 1,
            topic: None,
            resource_type: resource_type.into(),
            resource_id: "1".into(),
            change_kind: change.into(),
            occurred_ms: 0,
        }
    }

    #[test]
    fn topics_and_changes_choose_the_message() {
        let topic = |slug: &str| format!("{TOPIC_URL_PREFIX}{slug}");
        assert_eq!(
            event_kind(
                Some(&topic("appointment-cancelled")),
                &event("Appointment", "update")
            ),
            Some(EventKind::AppointmentCancelled)
        );
        assert_eq!(
            event_kind(
                Some(&topic("patient-registered")),
                &event("Patient", "create")
            ),
            Some(EventKind::PatientRegistered)
        );
        assert_eq!(
            event_kind(
                Some(&topic("claim-status-changed")),
                &event("Claim", "update")
            ),
            None
        );
        assert_eq!(
            event_kind(
                Some(&topic("appointment-cancelled")),
                &event("Appointment", "delete")
            ),
            None,
            "a deleted appointment cannot be described"
        );
        assert_eq!(
            event_kind(None, &event("Appointment", "update")),
            Some(EventKind::AppointmentModified)
        );
    }
}
