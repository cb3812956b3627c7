//! SMART on FHIR authorization: scopes, the authorization server's endpoint paths, its discovery
//! document, Portico's own tokens and their validation, client authentication and the token
//! endpoint.

pub mod client_auth;
pub mod discovery;
pub mod endpoints;
pub mod permissions;
pub mod scope;
pub mod token_endpoint;
pub mod tokens;
