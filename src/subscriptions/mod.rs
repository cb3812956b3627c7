//! Subscriptions: pushing PMS changes to subscribers (issue 9); here the delivery pieces: rest-hook
//! (retry schedule, SSRF guard, signed sender) and HL7 v2 over MLLP (encoder and sender), and the
//! Subscription resource with its notification Bundles.

pub mod endpoint_guard;
pub mod hl7v2;
pub mod mllp;
pub mod notification;
pub mod resource;
pub mod rest_hook;
pub mod schedule;
#[cfg(test)]
mod tests;
