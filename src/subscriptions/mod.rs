//! Subscriptions: pushing PMS changes to subscribers (issue 9). Change detection (`detect`) turns
//! PMS edits into numbered events in the state store; the outbox worker (`deliver`) sends them as
//! notification Bundles (`notification`) over rest-hook (`rest_hook`: retry `schedule`, SSRF
//! `endpoint_guard`); `resource` is the Subscription resource, `trigger` the topics' rules,
//! `owner` whose access a subscription acts under, `channel_secrets` a rest-hook's signing secret
//! and OAuth client; HL7 v2 over MLLP (`hl7v2`, `mllp`); the websocket channel (`websocket`:
//! binding tokens and the socket).

use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub mod channel_secrets;
pub mod deliver;
pub mod deliver_mllp;
pub mod detect;
pub mod endpoint_guard;
pub mod hl7v2;
pub mod mllp;
pub mod notification;
pub mod owner;
pub mod resource;
pub mod rest_hook;
pub mod schedule;
pub mod trigger;
pub mod websocket;

#[cfg(test)]
mod tests;

/// What the HTTP side shares with detection and delivery.
#[derive(Clone, Debug, Default)]
pub struct SubscriptionsRuntime {
    /// What the SSRF guard admits (`subscriptions.allow_private_endpoints`).
    pub endpoint_policy: endpoint_guard::SubscriptionSettings,
    /// Wakes the delivery worker (a new subscription's handshake, newly numbered events).
    pub wake: Arc<Notify>,
    /// Wakes the bound websockets when detection numbered events.
    pub sockets: websocket::EventSignal,
    /// The application's shutdown, which closes open websockets.
    pub shutdown: CancellationToken,
}
