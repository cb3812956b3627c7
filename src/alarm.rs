//! The fail-safe flag, "critical sync error": raised when the link between PMS and EHR has been
//! broken for longer than an operator accepts (change detection failing, a subscription failing
//! to deliver, a reconciliation that found the EHR drifted), shown in `/metrics` and `portico status`, sent once per raising to the operator
//! alert endpoints (Standard Webhooks signed), cleared when the condition no longer holds, or
//! acknowledged by an administrator (`portico status ack`, kept in the audit trail).
//!
//! The detector records each mapping's failures in the state store (`change_cursor`, by the
//! replica holding its lease), so every replica's watchdog sees the same facts; `causes` is the
//! pure decision; `Watchdog` is the worker that applies it to the `sync_alarm` rows and alerts.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::config::AlarmSettings;
use crate::state::StateStore;
use crate::state::alarms::{Alarm, DetectionFailure};
use crate::state::check_runs::CheckRun;
use crate::state::subscriptions::{StoredSubscription, now_ms};
use crate::subscriptions::rest_hook::{Delivery, DeliveryOutcome, RestHookSender, SigningSecret};

/// Change detection failing on some mapping.
pub const DETECTION: &str = "detection";
/// A subscription failing to deliver.
pub const DELIVERY: &str = "delivery";
/// The latest reconciliation against the EHR found more drift than `alarm.reconcile_drift`.
pub const RECONCILE: &str = "reconcile";
/// Every cause the watchdog raises and clears.
pub const CAUSES: &[&str] = &[DETECTION, DELIVERY, RECONCILE];

/// The causes that hold at `now_ms`, each with a detail for operators (mapping names,
/// subscription ids and error texts: no PHI).
pub fn causes(
    detection: &[DetectionFailure],
    subscriptions: &[StoredSubscription],
    settings: &AlarmSettings,
    now_ms: i64,
) -> BTreeMap<&'static str, String> {
    let mut causes = BTreeMap::new();
    let detection_limit = settings.detection_failure_ms as i64;
    // Mappings that fail the same way (the database gone: all of them) are named together.
    let mut by_error: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for failure in detection
        .iter()
        .filter(|failure| now_ms - failure.failing_since_ms >= detection_limit)
    {
        by_error
            .entry(failure.last_error.as_deref().unwrap_or("failed"))
            .or_default()
            .push(&failure.mapping);
    }
    let failing: Vec<String> = by_error
        .iter()
        .map(|(error, mappings)| format!("{} ({error})", mappings.join(", ")))
        .collect();
    if !failing.is_empty() {
        causes.insert(
            DETECTION,
            format!(
                "change detection has failed for {} s or more: {}",
                detection_limit / 1000,
                failing.join("; ")
            ),
        );
    }
    let delivery_limit = settings.delivery_failure_ms as i64;
    let undelivered: Vec<&str> = subscriptions
        .iter()
        .filter(|s| s.status != "off")
        .filter(|s| {
            s.failing_since_ms
                .is_some_and(|since| now_ms - since >= delivery_limit)
        })
        .map(|s| s.id.as_str())
        .collect();
    if !undelivered.is_empty() {
        causes.insert(
            DELIVERY,
            format!(
                "{} subscription(s) have failed to deliver for {} s or more: {}",
                undelivered.len(),
                delivery_limit / 1000,
                undelivered.join(", ")
            ),
        );
    }
    causes
}

/// Whether the latest reconciliation (`check_run` of kind `reconcile`) drifted past the threshold:
/// the detail to raise the flag with. A later run within it clears the cause.
pub fn reconcile_cause(latest: Option<&CheckRun>, settings: &AlarmSettings) -> Option<String> {
    let run = latest?;
    (run.findings > settings.reconcile_drift as i64).then(|| {
        let at = chrono::DateTime::from_timestamp_millis(run.started_ms)
            .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default();
        format!(
            "the reconciliation of {at} found {} record(s) missing, extra or differing in the EHR \
             (more than alarm.reconcile_drift = {})",
            run.findings, settings.reconcile_drift
        )
    })
}

/// The worker that raises, clears and announces the flag.
pub struct Watchdog {
    pub store: StateStore,
    pub settings: AlarmSettings,
    pub sender: Arc<RestHookSender>,
}

impl Watchdog {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(Duration::from_millis(
            self.settings.check_interval_ms.max(100),
        ));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
            }
            if let Err(error) = self.check(now_ms()).await {
                tracing::warn!(%error, "the alarm watchdog could not check; it retries");
            }
        }
    }

    /// One look: raise what holds, clear what no longer does, alert what is raised and not yet
    /// announced.
    pub async fn check(&self, now_ms: i64) -> Result<(), crate::state::StateError> {
        let subscriptions = self.store.subscriptions(None).await?;
        let mut holding = causes(
            &self.store.detection_failures().await?,
            &subscriptions,
            &self.settings,
            now_ms,
        );
        let reconciled = self
            .store
            .latest_finished_check_run(crate::reconcile::KIND)
            .await?;
        if let Some(detail) = reconcile_cause(reconciled.as_ref(), &self.settings) {
            holding.insert(RECONCILE, detail);
        }
        for cause in CAUSES {
            match holding.get(cause) {
                Some(detail) => {
                    if self.store.raise_alarm(cause, detail, now_ms).await? {
                        tracing::error!(cause, detail = %detail, "critical sync error raised");
                    }
                }
                None => {
                    if self.store.clear_alarm(cause, now_ms).await? {
                        tracing::info!(
                            cause,
                            "critical sync error cleared: the condition no longer holds"
                        );
                    }
                }
            }
        }
        for alarm in self.store.alarms().await? {
            if alarm.flagged() && alarm.notified_ms.is_none() && self.alert(&alarm).await {
                self.store
                    .mark_alarm_notified(&alarm.cause, alarm.raised_ms, now_ms)
                    .await?;
            }
        }
        Ok(())
    }

    /// Sends `alarm` to every operator endpoint; `true` when all accepted it (or there are none).
    async fn alert(&self, alarm: &Alarm) -> bool {
        let signing_secrets: Vec<SigningSecret> = match self.settings.secret.expose() {
            "" => Vec::new(),
            secret => match SigningSecret::parse(secret) {
                Ok(secret) => vec![secret],
                Err(error) => {
                    tracing::warn!(%error, "alarm.secret is not a signing secret; alerts are not sent");
                    return false;
                }
            },
        };
        let body = alert_body(alarm);
        let mut all = true;
        for endpoint in &self.settings.endpoints {
            let delivery = Delivery {
                endpoint: endpoint.clone(),
                content_type: "application/json".into(),
                channel_headers: Vec::new(),
                body: body.clone(),
                webhook_id: format!("portico-alarm-{}-{}", alarm.cause, alarm.raised_ms),
                signing_secrets: signing_secrets.clone(),
                oauth: None,
                response_timeout: None,
            };
            match self.sender.deliver(&delivery).await {
                DeliveryOutcome::Delivered => {}
                other => {
                    tracing::warn!(endpoint, outcome = ?other, "an operator alert endpoint did not accept the alert; retried at the next check");
                    all = false;
                }
            }
        }
        all
    }
}

/// The alert's JSON: what was raised, when, and why.
fn alert_body(alarm: &Alarm) -> Vec<u8> {
    let raised = chrono::DateTime::from_timestamp_millis(alarm.raised_ms)
        .map(|at| at.to_rfc3339())
        .unwrap_or_default();
    json!({
        "type": "portico.critical-sync-error",
        "cause": alarm.cause,
        "detail": alarm.detail,
        "raisedAt": raised,
    })
    .to_string()
    .into_bytes()
}

/// What the fail-safe flag tells one subscription's `$status` (each an `error` entry): change
/// detection failing on a mapping of its resource type, or its own deliveries failing, while the
/// cause is open (acknowledged or not: the subscriber is affected either way).
pub fn subscription_errors(
    alarms: &[Alarm],
    failures: &[DetectionFailure],
    subscription: &StoredSubscription,
) -> Vec<String> {
    let open = |cause: &str| alarms.iter().any(|a| a.cause == cause && a.open());
    let since = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default()
    };
    let mut errors = Vec::new();
    if open(DETECTION) {
        for failure in failures {
            let resource_type = failure.mapping.split('.').next().unwrap_or_default();
            if resource_type == subscription.resource_type {
                errors.push(format!(
                    "critical sync error: change detection of {} has failed since {}; \
                     notifications wait until it recovers",
                    failure.mapping,
                    since(failure.failing_since_ms)
                ));
            }
        }
    }
    if open(DELIVERY)
        && let Some(failing_since) = subscription.failing_since_ms
    {
        errors.push(format!(
            "critical sync error: deliveries to this subscription have failed since {}",
            since(failing_since)
        ));
    }
    errors
}

/// 1 for each cause whose flag is up, 0 for the others (a stable series per cause for alert
/// rules).
pub fn flag_samples(alarms: &[Alarm]) -> Vec<(Vec<String>, f64)> {
    let flagged: HashMap<&str, bool> = alarms
        .iter()
        .map(|alarm| (alarm.cause.as_str(), alarm.flagged()))
        .collect();
    CAUSES
        .iter()
        .map(|cause| {
            let up = flagged.get(cause).copied().unwrap_or(false);
            (vec![(*cause).to_owned()], if up { 1.0 } else { 0.0 })
        })
        .collect()
}

/// The AuditEvent an acknowledgement leaves in the audit trail: an application activity by the
/// named operator on Portico itself.
pub fn acknowledgement_event(by: &str, causes: &[String], now_ms: i64) -> serde_json::Value {
    let recorded = chrono::DateTime::from_timestamp_millis(now_ms)
        .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default();
    json!({
        "resourceType": "AuditEvent",
        "type": {
            "system": "http://dicom.nema.org/resources/ontology/DCM",
            "code": "110100",
            "display": "Application Activity"
        },
        "subtype": [{
            "system": "https://portico.health/fhir/CodeSystem/operator-action",
            "code": "alarm-acknowledged",
            "display": "Critical sync error acknowledged"
        }],
        "action": "U",
        "recorded": recorded,
        "outcome": "0",
        "outcomeDesc": format!("acknowledged: {}", causes.join(", ")),
        "agent": [{
            "type": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
                "code": "humanuser",
                "display": "human user"
            }]},
            "who": {"display": by},
            "requestor": true
        }],
        "source": {"observer": {"display": "Portico"}},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> AlarmSettings {
        AlarmSettings {
            detection_failure_ms: 60_000,
            delivery_failure_ms: 600_000,
            ..AlarmSettings::default()
        }
    }

    fn failure_of(mapping: &str) -> DetectionFailure {
        DetectionFailure {
            mapping: mapping.into(),
            failing_since_ms: 1_000,
            last_error: Some("unavailable: connection refused".into()),
        }
    }

    #[test]
    fn detection_failing_past_its_limit_raises() {
        let failure = failure_of("Patient");
        let none = causes(std::slice::from_ref(&failure), &[], &settings(), 60_999);
        assert!(none.is_empty(), "{none:?}");
        let same_way = DetectionFailure {
            mapping: "Appointment".into(),
            ..failure.clone()
        };
        let other_way = DetectionFailure {
            mapping: "Claim".into(),
            last_error: Some("timeout".into()),
            ..failure.clone()
        };
        let raised = causes(&[failure], &[], &settings(), 61_000);
        assert_eq!(
            raised[DETECTION],
            "change detection has failed for 60 s or more: Patient (unavailable: connection refused)"
        );
        let grouped = causes(
            &[same_way, failure_of("Patient"), other_way],
            &[],
            &settings(),
            61_000,
        );
        assert_eq!(
            grouped[DETECTION],
            "change detection has failed for 60 s or more: Claim (timeout); \
             Appointment, Patient (unavailable: connection refused)"
        );
        assert!(causes(&[], &[], &settings(), 200_000).is_empty());
    }

    #[test]
    fn a_subscription_failing_past_its_limit_raises_unless_it_is_off() {
        let failing = |id: &str, status: &str, since: Option<i64>| StoredSubscription {
            id: id.into(),
            status: status.into(),
            failing_since_ms: since,
            ..StoredSubscription::default()
        };
        let subscriptions = [
            failing("a", "error", Some(0)),
            failing("b", "off", Some(0)),
            failing("c", "active", Some(500_000)),
            failing("d", "active", None),
        ];
        let raised = causes(&[], &subscriptions, &settings(), 600_000);
        assert_eq!(
            raised[DELIVERY],
            "1 subscription(s) have failed to deliver for 600 s or more: a"
        );
        assert!(!raised.contains_key(DETECTION));
    }

    #[test]
    fn a_subscription_status_names_the_causes_that_concern_it() {
        let open = |cause: &str| Alarm {
            cause: cause.into(),
            detail: String::new(),
            raised_ms: 1,
            notified_ms: None,
            acknowledged_ms: Some(2),
            acknowledged_by: Some("ops".into()),
            cleared_ms: None,
        };
        let failures = [DetectionFailure {
            mapping: "Observation.labs".into(),
            failing_since_ms: 1_796_000_000_000,
            last_error: None,
        }];
        let observations = StoredSubscription {
            resource_type: "Observation".into(),
            failing_since_ms: Some(1_796_000_000_000),
            ..StoredSubscription::default()
        };
        let patients = StoredSubscription {
            resource_type: "Patient".into(),
            ..StoredSubscription::default()
        };
        let errors =
            subscription_errors(&[open(DETECTION), open(DELIVERY)], &failures, &observations);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with(
            "critical sync error: change detection of Observation.labs has failed since 2026-"
        ));
        assert!(errors[1].starts_with("critical sync error: deliveries to this subscription"));
        assert!(
            subscription_errors(&[open(DETECTION), open(DELIVERY)], &failures, &patients)
                .is_empty()
        );
        assert!(
            subscription_errors(&[], &failures, &observations).is_empty(),
            "no open cause"
        );
    }

    #[test]
    fn flag_samples_name_every_cause() {
        let alarm = |cause: &str, acknowledged: Option<i64>, cleared: Option<i64>| Alarm {
            cause: cause.into(),
            detail: String::new(),
            raised_ms: 1,
            notified_ms: None,
            acknowledged_ms: acknowledged,
            acknowledged_by: None,
            cleared_ms: cleared,
        };
        assert_eq!(
            flag_samples(&[alarm(DETECTION, None, None), alarm(DELIVERY, Some(2), None)]),
            vec![
                (vec![DETECTION.to_owned()], 1.0),
                (vec![DELIVERY.to_owned()], 0.0),
                (vec![RECONCILE.to_owned()], 0.0)
            ]
        );
        assert_eq!(
            flag_samples(&[alarm(DETECTION, None, Some(3))]),
            vec![
                (vec![DETECTION.to_owned()], 0.0),
                (vec![DELIVERY.to_owned()], 0.0),
                (vec![RECONCILE.to_owned()], 0.0)
            ]
        );
    }

    #[test]
    fn the_acknowledgement_is_a_valid_r4_audit_event() {
        let event = acknowledgement_event("jane.ops", &[DETECTION.to_owned()], 1_796_000_000_000);
        let text = event.to_string();
        let parsed = crate::fhir::xml::parse_strict(text.as_bytes());
        assert!(parsed.is_ok(), "{:?}: {text}", parsed.err());
        assert_eq!(event["agent"][0]["who"]["display"], "jane.ops");
    }

    #[test]
    fn drift_past_the_threshold_raises_the_reconcile_cause() {
        let run = |findings: i64| CheckRun {
            kind: crate::reconcile::KIND.into(),
            started_ms: 1_764_000_000_000,
            finished_ms: 1_764_000_060_000,
            fails: findings > 0,
            findings,
            summary: "{}".into(),
            error: None,
        };
        assert_eq!(reconcile_cause(None, &settings()), None);
        assert_eq!(reconcile_cause(Some(&run(0)), &settings()), None);
        let detail = reconcile_cause(Some(&run(3)), &settings()).unwrap();
        assert!(detail.contains("found 3 record(s)"), "{detail}");
        let tolerant = AlarmSettings {
            reconcile_drift: 3,
            ..settings()
        };
        assert_eq!(reconcile_cause(Some(&run(3)), &tolerant), None);
        assert!(reconcile_cause(Some(&run(4)), &tolerant).is_some());
    }
}
