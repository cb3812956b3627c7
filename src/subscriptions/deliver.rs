//! The outbox worker: takes subscriptions with something to send (a handshake, undelivered
//! events, a heartbeat due) under a lease, builds the notification from the numbered events —
//! re-reading each focus under the owner's access as it is now — sends it over the rest-hook
//! channel, and records the outcome (delivered through event N, or the next attempt per
//! `schedule`). Events are sent in order, per subscription, at least once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::deliver_mllp::{MllpRun, MllpSenders, send_events};
use super::endpoint_guard::{SubscriptionSettings, vet_mllp_peer};
use super::notification::{
    Focus, NotificationEvent, NotificationType, SubscriptionStatusInfo, notification_bundle,
};
use super::owner::{owner_access, owner_claims};
use super::resource::MAX_TIMEOUT_SECONDS;
use super::resource::{ChannelKind, PayloadContent, SubscriptionSpec, SubscriptionStatus};
use super::rest_hook::{Delivery, DeliveryOutcome, RestHookSender};
use super::schedule::{NextStep, after_failure, system_unit_random};
use crate::access::Access;
use crate::adapter::model::ChangeKind;
use crate::repository::{ReadOutcome, Repository};
use crate::state::StateStore;
use crate::state::subscriptions::{DeliveryRecord, StoredEvent, StoredSubscription, now_ms};

/// The channels the worker delivers, as stored.
pub const REST_HOOK: &str = "rest-hook";
pub const HL7V2_MLLP: &str = "hl7v2-mllp";
/// Stored, never claimed here: a bound socket sends (`websocket`), and without one events wait.
pub const WEBSOCKET: &str = "websocket";

/// Events per notification when the subscriber set no `max-count`.
pub const DEFAULT_EVENTS_PER_NOTIFICATION: u32 = 20;
/// Subscriptions leased per round.
const CLAIM_BATCH: i64 = 16;
/// A lease outlives the slowest send (the connect timeout plus the longest response timeout a
/// subscription may ask for) with room to record it.
const LEASE: Duration = Duration::from_secs(MAX_TIMEOUT_SECONDS as u64 + 30);
/// Events are kept this long for `$events` (and until delivered).
pub const EVENT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Without a wake-up, the worker looks for due retries and heartbeats this often.
const IDLE_POLL: Duration = Duration::from_millis(500);
/// How often the worker ends expired subscriptions and purges old events.
pub const HOUSEKEEPING_PERIOD: Duration = Duration::from_secs(60);

/// Where the worker reads the time (milliseconds since the Unix epoch) and draws the retry
/// jitter: the system's in production; a test drives both to follow the schedule exactly.
#[derive(Clone)]
pub struct Clock {
    now_ms: Arc<dyn Fn() -> i64 + Send + Sync>,
    unit_random: Arc<dyn Fn() -> f64 + Send + Sync>,
}

impl Clock {
    /// The system clock and random generator.
    pub fn system() -> Clock {
        Clock::new(now_ms, system_unit_random)
    }

    /// A clock reading `now_ms` and drawing jitter from `unit_random` (a fraction in [0, 1)).
    pub fn new(
        now_ms: impl Fn() -> i64 + Send + Sync + 'static,
        unit_random: impl Fn() -> f64 + Send + Sync + 'static,
    ) -> Clock {
        Clock {
            now_ms: Arc::new(now_ms),
            unit_random: Arc::new(unit_random),
        }
    }

    pub fn now_ms(&self) -> i64 {
        (self.now_ms)()
    }

    pub fn unit_random(&self) -> f64 {
        (self.unit_random)()
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::system()
    }
}

/// The rest-hook delivery worker.
#[derive(Clone)]
pub struct DeliveryWorker {
    pub repository: Repository,
    pub store: StateStore,
    pub sender: Arc<RestHookSender>,
    /// What the SSRF guard admits, for the channels that connect without `sender`.
    pub sender_policy: SubscriptionSettings,
    pub replica: String,
    /// Detection wakes it when it numbered events.
    pub wake: Arc<Notify>,
    /// The HL7 v2 channel's connections, one per subscription.
    pub mllp: MllpSenders,
    /// The time every due date, lease and record is reckoned in.
    pub clock: Clock,
}

impl DeliveryWorker {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut last_housekeeping: Option<std::time::Instant> = None;
        loop {
            if last_housekeeping.is_none_or(|at| at.elapsed() >= HOUSEKEEPING_PERIOD) {
                last_housekeeping = Some(std::time::Instant::now());
                self.housekeeping().await;
            }
            let sent = match self.round().await {
                Ok(count) => count,
                Err(error) => {
                    tracing::warn!(error = %error, "subscription delivery round failed");
                    0
                }
            };
            if sent == 0 {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                }
            } else if shutdown.is_cancelled() {
                break;
            }
        }
    }

    /// Leases the due subscriptions and sends to each (concurrently); how many were handled.
    pub async fn round(&self) -> Result<usize, crate::state::StateError> {
        let now = self.clock.now_ms();
        let until = now + LEASE.as_millis() as i64;
        let mut due = Vec::new();
        for channel in [REST_HOOK, HL7V2_MLLP] {
            due.extend(
                self.store
                    .claim_due_subscriptions(channel, &self.replica, now, until, CLAIM_BATCH)
                    .await?,
            );
        }
        let count = due.len();
        let mut sends = tokio::task::JoinSet::new();
        for subscription in due {
            let worker = self.clone();
            sends.spawn(async move { worker.serve(subscription).await });
        }
        while let Some(done) = sends.join_next().await {
            if let Ok(Err(error)) = done {
                tracing::warn!(error = %error, "recording a delivery failed");
            }
        }
        Ok(count)
    }

    /// Ends subscriptions past their `end` and forgets delivered events past retention (every
    /// `HOUSEKEEPING_PERIOD` while it runs).
    pub async fn housekeeping(&self) {
        let now = self.clock.now_ms();
        match self.store.subscriptions(None).await {
            Ok(all) => {
                for ended in all
                    .iter()
                    .filter(|s| s.status != "off" && s.end_ms.is_some_and(|end| end <= now))
                {
                    let _ = self
                        .store
                        .set_subscription_status(
                            &ended.id,
                            "off",
                            Some("the subscription's end has passed"),
                        )
                        .await;
                }
            }
            Err(error) => tracing::warn!(error = %error, "cannot list subscriptions"),
        }
        if let Err(error) = self
            .store
            .purge_subscription_events(now - EVENT_RETENTION.as_millis() as i64)
            .await
        {
            tracing::warn!(error = %error, "cannot purge old subscription events");
        }
    }

    /// Sends what one leased subscription is due and records the outcome.
    async fn serve(
        &self,
        subscription: StoredSubscription,
    ) -> Result<(), crate::state::StateError> {
        let Ok(spec) = serde_json::from_str::<SubscriptionSpec>(&subscription.spec) else {
            self.store
                .set_subscription_status(
                    &subscription.id,
                    "error",
                    Some("stored subscription unreadable"),
                )
                .await?;
            return self
                .store
                .release_subscription(&subscription.id, &self.replica)
                .await;
        };
        // The owner's client must still exist and its claims still make an access: a removed
        // client's subscriptions stop.
        let owner_client = owner_claims(&subscription.owner).map(|c| c.client_id);
        let client_exists = match &owner_client {
            Some(client) => self.store.client(client).await?.is_some(),
            None => false,
        };
        let access = owner_access(&subscription.owner);
        let (true, Some(access)) = (client_exists, access) else {
            self.store
                .set_subscription_status(
                    &subscription.id,
                    "off",
                    Some("the client that owns this subscription is no longer registered"),
                )
                .await?;
            return self
                .store
                .release_subscription(&subscription.id, &self.replica)
                .await;
        };
        match spec.channel.kind {
            ChannelKind::RestHook => {}
            ChannelKind::Hl7v2Mllp => return self.serve_mllp(&subscription, &spec, &access).await,
            ChannelKind::Websocket => {
                return self
                    .store
                    .release_subscription(&subscription.id, &self.replica)
                    .await;
            }
        }

        let (kind, events) = if subscription.handshake_pending {
            (NotificationType::Handshake, Vec::new())
        } else if subscription.delivered_through < subscription.events_since_start {
            let limit = spec
                .channel
                .max_count
                .unwrap_or(DEFAULT_EVENTS_PER_NOTIFICATION);
            let events = self
                .store
                .subscription_events(
                    &subscription.id,
                    subscription.delivered_through + 1,
                    subscription.events_since_start,
                    i64::from(limit.max(1)),
                )
                .await?;
            (NotificationType::EventNotification, events)
        } else {
            (NotificationType::Heartbeat, Vec::new())
        };
        let through = events
            .last()
            .map_or(subscription.delivered_through, |e| e.number);
        let notification_events = notification_events(
            &self.repository,
            &subscription.base_url,
            spec.channel.content,
            &access,
            &events,
        )
        .await;
        let status = status_of(&subscription);
        let subscription_url =
            format!("{}/Subscription/{}", subscription.base_url, subscription.id);
        let info = SubscriptionStatusInfo {
            subscription_url: &subscription_url,
            topic: subscription.topic.as_deref(),
            status,
            kind,
            events_since_start: subscription.events_since_start.max(0) as u64,
            errors: Vec::new(),
        };
        let bundle = notification_bundle(&info, &notification_events, spec.channel.content);
        let delivery = Delivery {
            endpoint: spec.channel.endpoint.clone().unwrap_or_default(),
            content_type: spec
                .channel
                .payload
                .clone()
                .unwrap_or_else(|| "application/fhir+json".to_owned()),
            channel_headers: spec.channel.headers.clone(),
            body: serde_json::to_vec(&bundle).expect("JSON serializes"),
            webhook_id: webhook_id(&subscription, kind, &events, self.clock.now_ms()),
            signing_secrets: spec
                .channel
                .signing
                .as_ref()
                .map_or_else(Vec::new, |signing| {
                    signing.signing_secrets(
                        chrono::DateTime::from_timestamp_millis(self.clock.now_ms())
                            .unwrap_or_default(),
                    )
                }),
            oauth: spec.channel.oauth.as_ref().map(|oauth| oauth.outbound()),
            // SB-25's `backport-timeout`, already capped at MAX_TIMEOUT_SECONDS.
            response_timeout: spec
                .channel
                .timeout
                .map(|seconds| Duration::from_secs(u64::from(seconds))),
        };
        let outcome = self.sender.deliver(&delivery).await;
        let word = match &outcome {
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::Retry { .. } => "retry",
            DeliveryOutcome::Gone => "gone",
            DeliveryOutcome::Failed { .. } => "failed",
        };
        crate::metrics::metrics()
            .deliveries
            .inc(&["rest-hook", word]);
        let record = match (kind, outcome) {
            (NotificationType::Heartbeat, DeliveryOutcome::Delivered) => {
                DeliveryRecord::Heartbeat { failure: None }
            }
            (NotificationType::Heartbeat, failed) => DeliveryRecord::Heartbeat {
                failure: Some(describe(&failed)),
            },
            (_, DeliveryOutcome::Delivered) => DeliveryRecord::Delivered {
                through,
                handshake: kind == NotificationType::Handshake,
            },
            (_, DeliveryOutcome::Gone) => DeliveryRecord::Failed {
                reason: "the endpoint answered 410 Gone: the subscriber wants no more".into(),
                next_attempt_ms: 0,
                stop: true,
                status: "off".into(),
            },
            (_, failed) => failure_record(
                &subscription,
                &failed,
                self.clock.now_ms(),
                self.clock.unit_random(),
            ),
        };
        if let DeliveryRecord::Failed { reason, .. } = &record {
            tracing::info!(subscription = %subscription.id, reason = %reason, "notification not delivered");
        }
        self.store
            .record_delivery(
                &subscription.id,
                &self.replica,
                &record,
                self.clock.now_ms(),
            )
            .await?;
        Ok(())
    }
}

impl DeliveryWorker {
    /// An HL7 v2 subscription: no handshake or heartbeat exists in v2 (activation is immediate);
    /// events go one message at a time, each waiting for its ACK.
    async fn serve_mllp(
        &self,
        subscription: &StoredSubscription,
        spec: &SubscriptionSpec,
        access: &Access,
    ) -> Result<(), crate::state::StateError> {
        let record = if subscription.delivered_through >= subscription.events_since_start {
            if subscription.handshake_pending {
                DeliveryRecord::Delivered {
                    through: subscription.delivered_through,
                    handshake: true,
                }
            } else {
                DeliveryRecord::Heartbeat { failure: None }
            }
        } else {
            let endpoint = spec.channel.endpoint.clone().unwrap_or_default();
            let peer = match vet_mllp_peer(&endpoint, &self.sender_policy).await {
                Ok(peer) => peer,
                Err(refused) => {
                    let failed = DeliveryOutcome::Failed {
                        status: None,
                        reason: refused.to_string(),
                    };
                    let now = self.clock.now_ms();
                    let record =
                        failure_record(subscription, &failed, now, self.clock.unit_random());
                    self.store
                        .record_delivery(&subscription.id, &self.replica, &record, now)
                        .await?;
                    return Ok(());
                }
            };
            let limit = spec
                .channel
                .max_count
                .unwrap_or(DEFAULT_EVENTS_PER_NOTIFICATION);
            let events = self
                .store
                .subscription_events(
                    &subscription.id,
                    subscription.delivered_through + 1,
                    subscription.events_since_start,
                    i64::from(limit.max(1)),
                )
                .await?;
            let run = send_events(
                &self.mllp,
                &self.repository,
                subscription,
                access,
                &peer,
                &events,
            )
            .await;
            let word = match &run {
                MllpRun::Through(_) => "delivered",
                MllpRun::Failed { .. } => "retry",
            };
            crate::metrics::metrics()
                .deliveries
                .inc(&["hl7v2-mllp", word]);
            match run {
                MllpRun::Through(through) => DeliveryRecord::Delivered {
                    through,
                    handshake: subscription.handshake_pending,
                },
                MllpRun::Failed { delivered, reason } => {
                    if delivered > subscription.delivered_through {
                        // What was acknowledged stays delivered even though the run stopped.
                        self.store
                            .advance_delivered(&subscription.id, &self.replica, delivered)
                            .await?;
                    }
                    let failed = DeliveryOutcome::Retry {
                        after: None,
                        reason,
                    };
                    failure_record(
                        subscription,
                        &failed,
                        self.clock.now_ms(),
                        self.clock.unit_random(),
                    )
                }
            }
        };
        self.store
            .record_delivery(
                &subscription.id,
                &self.replica,
                &record,
                self.clock.now_ms(),
            )
            .await?;
        Ok(())
    }
}

/// The events as a notification states them: each focus re-read under `access` as it is now (a
/// resource it may no longer read is named by no focus), with the resource for `full-resource`.
pub async fn notification_events(
    repository: &Repository,
    base_url: &str,
    content: PayloadContent,
    access: &Access,
    events: &[StoredEvent],
) -> Vec<NotificationEvent> {
    let mut out = Vec::with_capacity(events.len());
    for event in events {
        let change = match event.change_kind.as_str() {
            "create" => ChangeKind::Create,
            "delete" => ChangeKind::Delete,
            _ => ChangeKind::Update,
        };
        let reference = format!("{}/{}", event.resource_type, event.resource_id);
        let focus = if content == PayloadContent::Empty {
            None
        } else if change == ChangeKind::Delete {
            Some(Focus {
                full_url: format!("{base_url}/{reference}"),
                reference,
                change,
                resource: None,
            })
        } else {
            match repository
                .read(&event.resource_type, &event.resource_id, access)
                .await
            {
                Ok(ReadOutcome::Found(resource)) => Some(Focus {
                    full_url: format!("{base_url}/{reference}"),
                    reference,
                    change,
                    resource: (content == PayloadContent::FullResource)
                        .then(|| resource.into_json()),
                }),
                Ok(_) => None,
                Err(error) => {
                    tracing::warn!(error = %error, "cannot read a notification's focus; sent without it");
                    None
                }
            }
        };
        out.push(NotificationEvent {
            number: event.number.max(0) as u64,
            timestamp: chrono::DateTime::from_timestamp_millis(event.occurred_ms)
                .unwrap_or_default(),
            focus,
        });
    }
    out
}

/// The subscription's status as a notification states it.
pub fn status_of(subscription: &StoredSubscription) -> SubscriptionStatus {
    match subscription.status.as_str() {
        "active" => SubscriptionStatus::Active,
        "error" => SubscriptionStatus::Error,
        "off" => SubscriptionStatus::Off,
        _ => SubscriptionStatus::Requested,
    }
}

/// Stable across attempts, so receivers de-duplicate resends (`webhook-id`).
fn webhook_id(
    subscription: &StoredSubscription,
    kind: NotificationType,
    events: &[StoredEvent],
    now_ms: i64,
) -> String {
    match (events.first(), events.last()) {
        (Some(first), Some(last)) => {
            format!("{}-{}-{}", subscription.id, first.number, last.number)
        }
        _ => format!(
            "{}-{}-{}",
            subscription.id,
            match kind {
                NotificationType::Handshake => "handshake",
                _ => "heartbeat",
            },
            now_ms
        ),
    }
}

fn describe(outcome: &DeliveryOutcome) -> String {
    match outcome {
        DeliveryOutcome::Delivered => "delivered".into(),
        DeliveryOutcome::Retry { reason, .. } => reason.clone(),
        DeliveryOutcome::Gone => "the endpoint answered 410 Gone".into(),
        DeliveryOutcome::Failed { reason, .. } => reason.clone(),
    }
}

/// A failed delivery at `now` per the schedule (jittered by `unit_random`): the next attempt, or
/// retries stop after 5 days of failures (the owner reactivates). The status is `error`
/// meanwhile (SB-29).
pub fn failure_record(
    subscription: &StoredSubscription,
    outcome: &DeliveryOutcome,
    now: i64,
    unit_random: f64,
) -> DeliveryRecord {
    let retry_after = match outcome {
        DeliveryOutcome::Retry { after, .. } => *after,
        _ => None,
    };
    let failing_for = subscription
        .failing_since_ms
        .map_or(Duration::ZERO, |since| {
            Duration::from_millis(now.saturating_sub(since).max(0) as u64)
        });
    let attempts = u32::try_from(subscription.failed_attempts + 1).unwrap_or(u32::MAX);
    match after_failure(attempts, failing_for, retry_after, unit_random) {
        NextStep::RetryIn(delay) => DeliveryRecord::Failed {
            reason: describe(outcome),
            next_attempt_ms: now + delay.as_millis() as i64,
            stop: false,
            status: "error".into(),
        },
        NextStep::Disable => DeliveryRecord::Failed {
            reason: format!(
                "{}; deliveries have failed for 5 days, so retries stopped (update the \
                 subscription with status requested to resume)",
                describe(outcome)
            ),
            next_attempt_ms: 0,
            stop: true,
            status: "error".into(),
        },
    }
}
