//! The authorization server's HTTP endpoints (`/auth/...`): thin wrappers that hand the public
//! FHIR base and the raw request to `auth::token_endpoint`.

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::AppState;
use super::origin::PublicBase;
use crate::auth::token_endpoint;

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
