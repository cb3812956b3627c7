//! FHIR semantics that do not depend on HTTP: OperationOutcome, Bundle, CapabilityStatement,
//! `_summary`/`_elements` subsetting, and JSON-to-XML conversion through fhirbolt's R4 model.

pub mod bundle;
pub mod capability;
pub mod outcome;
pub mod required;
pub mod resource_types;
pub mod subset;
pub mod xml;
