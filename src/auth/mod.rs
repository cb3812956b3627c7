//! SMART on FHIR authorization: scopes, the authorization server's endpoint paths, its discovery
//! document, Portico's own tokens and their validation, client authentication, the authorization
//! endpoint's decisions (sign-in, consent, codes), its HTML pages, and the token endpoint.

pub mod authorization;
pub mod client_auth;
pub mod code_grant;
pub mod discovery;
pub mod endpoints;
pub mod pages;
pub mod permissions;
pub mod scope;
pub mod token_endpoint;
pub mod tokens;
