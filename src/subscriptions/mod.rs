//! Subscriptions: pushing PMS changes to subscribers (issue 9); here the rest-hook delivery pieces.

pub mod endpoint_guard;
pub mod rest_hook;
pub mod schedule;
