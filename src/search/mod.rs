//! FHIR search, from query string to SQL tree: `parse` (syntax), `compile` (FHIR semantics against
//! an adapter's mappings), `cursor` (opaque keyset paging tokens).
//!
//! Architecture invariant: pure. No I/O, no axum, no driver types; values end up as bound
//! parameters in `dialect::ast`, never in SQL text.

pub mod compile;
pub mod cursor;
pub mod date;
pub mod parse;

use std::fmt;

/// A problem with one search parameter; becomes an OperationOutcome issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchError {
    pub parameter: String,
    pub message: String,
    /// The parameter is valid FHIR but not supported here (only an error under strict handling).
    pub unsupported: bool,
}

impl SearchError {
    pub fn new(parameter: &str, message: impl Into<String>) -> SearchError {
        SearchError {
            parameter: parameter.to_owned(),
            message: message.into(),
            unsupported: false,
        }
    }

    pub fn unsupported(parameter: &str, message: impl Into<String>) -> SearchError {
        SearchError {
            parameter: parameter.to_owned(),
            message: message.into(),
            unsupported: true,
        }
    }
}

impl fmt::Display for SearchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.parameter, self.message)
    }
}
