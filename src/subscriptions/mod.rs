//! Subscriptions: pushing PMS changes to subscribers (issue 9); here the delivery pieces: rest-hook
//! (retry schedule, SSRF guard, signed sender) and HL7 v2 over MLLP (encoder and sender); and
//! which topics a detected change fires (`trigger`).

pub mod endpoint_guard;
pub mod hl7v2;
pub mod mllp;
pub mod rest_hook;
pub mod schedule;
pub mod trigger;
