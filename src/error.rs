//! `ApiError`: every failure a request can meet, with its HTTP status and OperationOutcome issues.
//! The single place errors become responses.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::db::{DbError, DbErrorKind};
use crate::fhir::outcome::{Issue, IssueType, operation_outcome};
use crate::search::SearchError;

/// Seconds a client should wait before retrying when the legacy database is unavailable.
pub const RETRY_AFTER_SECONDS: u32 = 5;

#[derive(Debug)]
pub enum ApiError {
    /// 400: the request is malformed; one issue per problem.
    BadRequest(Vec<Issue>),
    /// 401: no valid token (RFC 6750 §3.1). `error` is `None` when none was sent, else
    /// `invalid_token` or `invalid_request`; the description names the check that failed, never
    /// the token.
    Unauthorized {
        error: Option<&'static str>,
        description: String,
    },
    /// 403: the request's access does not grant this interaction on this type. Answered before
    /// any query, so it says nothing about which data exist.
    Forbidden(String),
    /// 404: unknown resource type, unknown id, or unknown path.
    NotFound(String),
    /// 405
    MethodNotAllowed(String),
    /// 406: no acceptable output format.
    NotAcceptable(String),
    /// 415: unsupported request body type.
    UnsupportedMediaType(String),
    /// 429: too many failed sign-ins; the client waits before trying again.
    TooManyRequests(String),
    /// 503: the legacy database cannot be reached; retry later.
    Unavailable(String),
    /// 504: the legacy database did not answer within the statement time limit.
    Timeout(String),
    /// 502: the resource exists in the practice database, but its row cannot be served as valid
    /// R4 (the upstream's data, not the request, is at fault; retrying does not help).
    Unservable(String),
    /// 500: a fault on Portico's side; details go to the log, not the client.
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Unservable(_) => StatusCode::BAD_GATEWAY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn issues(&self) -> Vec<Issue> {
        match self {
            ApiError::BadRequest(issues) => issues.clone(),
            ApiError::Unauthorized { description, .. } => {
                vec![Issue::error(IssueType::Login, description.clone())]
            }
            ApiError::Forbidden(message) => {
                vec![Issue::error(IssueType::Forbidden, message.clone())]
            }
            ApiError::NotFound(message) => vec![Issue::error(IssueType::NotFound, message.clone())],
            ApiError::MethodNotAllowed(message)
            | ApiError::NotAcceptable(message)
            | ApiError::UnsupportedMediaType(message) => {
                vec![Issue::error(IssueType::NotSupported, message.clone())]
            }
            ApiError::Unavailable(message) => {
                vec![Issue::error(IssueType::Transient, message.clone())]
            }
            ApiError::TooManyRequests(message) => {
                vec![Issue::error(IssueType::Throttled, message.clone())]
            }
            ApiError::Timeout(message) => vec![Issue::error(IssueType::Timeout, message.clone())],
            ApiError::Unservable(message) => {
                vec![Issue::error(IssueType::Processing, message.clone())]
            }
            ApiError::Internal(_) => vec![Issue::error(
                IssueType::Exception,
                "internal error; the server log has details",
            )],
        }
    }

    pub fn search(errors: Vec<SearchError>) -> ApiError {
        ApiError::BadRequest(
            errors
                .into_iter()
                .map(|e| {
                    let code = if e.unsupported {
                        IssueType::NotSupported
                    } else {
                        IssueType::Invalid
                    };
                    Issue::error(code, e.message).at(e.parameter)
                })
                .collect(),
        )
    }
}

impl From<DbError> for ApiError {
    fn from(error: DbError) -> ApiError {
        match error.kind {
            DbErrorKind::Unavailable => {
                tracing::warn!(error = %error.message, "legacy database unavailable");
                ApiError::Unavailable("the practice database is unavailable; retry shortly".into())
            }
            DbErrorKind::Timeout => {
                tracing::warn!(error = %error.message, "legacy query timed out");
                ApiError::Timeout(
                    "the practice database did not answer in time; the query was cancelled".into(),
                )
            }
            DbErrorKind::Query | DbErrorKind::Decode => ApiError::Internal(error.message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(error = %detail, "request failed");
        }
        let body =
            serde_json::to_vec(&operation_outcome(&self.issues())).expect("outcome serializes");
        let mut response = (self.status(), body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/fhir+json; charset=utf-8"),
        );
        match &self {
            ApiError::Unauthorized { error, description } => {
                let challenge = match error {
                    None => "Bearer realm=\"portico\"".to_owned(),
                    Some(error) => format!(
                        "Bearer realm=\"portico\", error=\"{error}\", error_description=\"{}\"",
                        description.replace(['"', '\\'], "'")
                    ),
                };
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            }
            ApiError::Forbidden(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(
                        "Bearer realm=\"portico\", error=\"insufficient_scope\"",
                    ),
                );
            }
            _ => {}
        }
        if matches!(
            self,
            ApiError::Unavailable(_) | ApiError::Timeout(_) | ApiError::TooManyRequests(_)
        ) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_its_status_and_issue_code() {
        let cases = [
            (
                ApiError::BadRequest(vec![Issue::error(IssueType::Invalid, "x")]),
                400,
                "invalid",
            ),
            (ApiError::NotFound("x".into()), 404, "not-found"),
            (ApiError::MethodNotAllowed("x".into()), 405, "not-supported"),
            (ApiError::NotAcceptable("x".into()), 406, "not-supported"),
            (
                ApiError::UnsupportedMediaType("x".into()),
                415,
                "not-supported",
            ),
            (ApiError::Unavailable("x".into()), 503, "transient"),
            (ApiError::TooManyRequests("x".into()), 429, "throttled"),
            (ApiError::Timeout("x".into()), 504, "timeout"),
            (ApiError::Unservable("x".into()), 502, "processing"),
            (ApiError::Internal("secret detail".into()), 500, "exception"),
        ];
        for (error, status, code) in cases {
            assert_eq!(error.status().as_u16(), status);
            let issues = error.issues();
            assert_eq!(issues[0].code.code(), code);
            assert!(!issues[0].diagnostics.contains("secret detail"));
        }
    }
}
