//! SMART on FHIR authorization: scopes, the authorization server's endpoint paths and its
//! discovery document.

pub mod discovery;
pub mod endpoints;
pub mod scope;
