//! The authorization server's HTTP endpoints (`/auth/...`): thin wrappers that hand the public
//! FHIR base and the raw request to `auth::token_endpoint`; in external identity provider mode,
//! the gate that closes all of them.

use axum::body::Bytes;
use axum::extract::{Extension, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::origin::PublicBase;
use crate::auth::{endpoints, token_endpoint};

/// In external identity provider mode Portico is not an authorization server: every path under
/// `/auth` (token, authorize, introspection, revocation, JWKS, launch...) answers 404 with an
/// RFC 6749 error naming the IdP, and no handler behind it runs.
pub async fn closed_in_external_idp_mode(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let under_auth = path
        .strip_prefix(endpoints::ISSUER)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    let Some(external) = state.auth.external.as_ref().filter(|_| under_auth) else {
        return next.run(request).await;
    };
    let body = json!({
        "error": "invalid_request",
        "error_description": format!(
            "Portico is not the authorization server here: tokens come from the identity provider {} (see .well-known/smart-configuration under the FHIR base)",
            external.idp().issuer
        ),
    });
    let mut response = (StatusCode::NOT_FOUND, axum::Json(body)).into_response();
    token_endpoint::no_store(response.headers_mut());
    response
}

/// `POST /auth/token`.
pub async fn token(
    State(state): State<AppState>,
    Extension(base): Extension<PublicBase>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    token_endpoint::token(&state.auth, base.fhir(), &headers, &body).await
}

/// `GET /auth/jwks`.
pub async fn jwks(State(state): State<AppState>) -> Response {
    token_endpoint::jwks(&state.auth).await
}

/// `POST /auth/introspect`.
pub async fn introspect(
    State(state): State<AppState>,
    Extension(base): Extension<PublicBase>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    token_endpoint::introspect(&state.auth, base.fhir(), &headers, &body).await
}

/// `POST /auth/revoke`.
pub async fn revoke(
    State(state): State<AppState>,
    Extension(base): Extension<PublicBase>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    token_endpoint::revoke(&state.auth, base.fhir(), &headers, &body).await
}
