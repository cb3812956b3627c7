//! SMART on FHIR authorization: Portico's own tokens and their validation.

pub mod client_auth;
pub mod tokens;
