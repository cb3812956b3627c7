//! OperationOutcome issues: the one shape every error answer takes.

use serde_json::{Value as Json, json};

/// FHIR issue-type codes Portico uses (value set `issue-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueType {
    Invalid,
    NotFound,
    NotSupported,
    Exception,
    Timeout,
    Transient,
    Informational,
    Processing,
    Forbidden,
    Login,
    Throttled,
}

impl IssueType {
    pub fn code(self) -> &'static str {
        match self {
            IssueType::Invalid => "invalid",
            IssueType::NotFound => "not-found",
            IssueType::NotSupported => "not-supported",
            IssueType::Exception => "exception",
            IssueType::Timeout => "timeout",
            IssueType::Transient => "transient",
            IssueType::Informational => "informational",
            IssueType::Processing => "processing",
            IssueType::Forbidden => "forbidden",
            IssueType::Login => "login",
            IssueType::Throttled => "throttled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Fatal,
    Error,
    Warning,
    Information,
}

impl Severity {
    pub fn code(self) -> &'static str {
        match self {
            Severity::Fatal => "fatal",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Information => "information",
        }
    }
}

/// One issue: what went wrong and, when it is a request parameter, which one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub severity: Severity,
    pub code: IssueType,
    pub diagnostics: String,
    /// A parameter name or element path (OperationOutcome.issue.expression).
    pub expression: Option<String>,
}

impl Issue {
    pub fn error(code: IssueType, diagnostics: impl Into<String>) -> Issue {
        Issue {
            severity: Severity::Error,
            code,
            diagnostics: diagnostics.into(),
            expression: None,
        }
    }

    pub fn at(mut self, expression: impl Into<String>) -> Issue {
        self.expression = Some(expression.into());
        self
    }
}

/// Builds the OperationOutcome resource for `issues`.
pub fn operation_outcome(issues: &[Issue]) -> Json {
    let issues: Vec<Json> = issues
        .iter()
        .map(|issue| {
            let mut entry = json!({
                "severity": issue.severity.code(),
                "code": issue.code.code(),
                "diagnostics": issue.diagnostics,
            });
            if let Some(expression) = &issue.expression {
                entry["expression"] = json!([expression]);
            }
            entry
        })
        .collect();
    json!({ "resourceType": "OperationOutcome", "issue": issues })
}
