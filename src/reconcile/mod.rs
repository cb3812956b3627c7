//! Reconciliation against the EHR (`portico reconcile`, issue 10): what Portico serves compared,
//! per resource type and per day, with what the EHR's FHIR API holds. So far the comparison
//! (`compare`); the EHR client (SMART Backend Services), the command, the schedule and the
//! fail-safe cause come next (see ARCHITECTURE.md).

pub mod compare;
