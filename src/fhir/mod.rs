//! FHIR semantics that do not depend on HTTP: OperationOutcome, Bundle, CapabilityStatement,
//! `_summary`/`_elements` subsetting, FHIR ids, and JSON-to-XML conversion through fhirbolt's R4
//! model.

pub mod bundle;
pub mod capability;
pub mod outcome;
pub mod required;
pub mod resource_types;
pub mod subset;
pub mod xml;

/// FHIR's id grammar: `[A-Za-z0-9\-\.]{1,64}`.
pub fn is_fhir_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}
