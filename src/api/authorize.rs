//! The resource server's gate: every FHIR data request (all of `/fhir/...` except `metadata` and
//! `.well-known`) needs a valid bearer token, whose claims become the request's `Access`; the
//! handlers and the compiled SQL enforce it from there. 401 with `WWW-Authenticate` when the token
//! is missing or invalid (an external IdP's keys that cannot be fetched included), 503 when it
//! cannot be checked (the state store is down). `AuthServer::validate_bearer` decides whose
//! tokens are valid: Portico's own, or the external identity provider's.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::origin::PublicBase;
use crate::access::Access;
use crate::auth::endpoints;
use crate::auth::permissions::access_for;
use crate::auth::tokens::{MAX_TOKEN_BYTES, TokenRejection};
use crate::error::ApiError;

/// Paths under the FHIR base anyone may read: the CapabilityStatement and SMART discovery.
pub(super) fn is_public(path: &str) -> bool {
    let Some(rest) = path.strip_prefix(endpoints::FHIR) else {
        return true;
    };
    matches!(rest, "" | "/" | "/metadata") || rest.starts_with("/.well-known/")
}

pub async fn require_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    // An Access already present was put there by the server itself (clients cannot set
    // extensions): the tests' fixed access. Everything else is decided by the token.
    if request.extensions().get::<Arc<Access>>().is_some() || is_public(request.uri().path()) {
        return next.run(request).await;
    }
    let base = request
        .extensions()
        .get::<PublicBase>()
        .expect("the public base layer runs first")
        .fhir()
        .to_owned();
    let authorization: Vec<_> = request
        .headers()
        .get_all(header::AUTHORIZATION)
        .iter()
        .cloned()
        .collect();
    match authorize(&state, &base, &authorization).await {
        Ok((access, claims)) => {
            let claims = Arc::new(claims);
            request.extensions_mut().insert(Arc::new(access));
            request.extensions_mut().insert(claims.clone());
            // The audit layer outside this one reads who asked from the answer.
            let mut response = next.run(request).await;
            response.extensions_mut().insert(claims);
            response
        }
        Err(error) => error.into_response(),
    }
}

pub(super) async fn authorize(
    state: &AppState,
    base: &str,
    authorization: &[HeaderValue],
) -> Result<(Access, crate::auth::tokens::AccessClaims), ApiError> {
    let invalid = |error: &'static str, description: &str| ApiError::Unauthorized {
        error: Some(error),
        description: description.to_owned(),
    };
    let mut values = authorization.iter();
    let value = match (values.next(), values.next()) {
        (None, _) => {
            return Err(ApiError::Unauthorized {
                error: None,
                description: "this request needs a bearer token (SMART on FHIR; see /.well-known/smart-configuration)".into(),
            });
        }
        (Some(_), Some(_)) => {
            return Err(invalid(
                "invalid_request",
                "more than one Authorization header",
            ));
        }
        (Some(value), None) => value,
    };
    if value.len() > MAX_TOKEN_BYTES + 16 {
        return Err(invalid(
            "invalid_token",
            "the Authorization header is too long",
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| invalid("invalid_request", "the Authorization header is not text"))?;
    let token = match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            token.trim()
        }
        _ => {
            return Err(invalid(
                "invalid_request",
                "the Authorization header is not a Bearer token",
            ));
        }
    };
    let claims = match state.auth.validate_bearer(token, base).await {
        Ok(claims) => claims,
        Err(TokenRejection::Unavailable) => {
            return Err(ApiError::Unavailable(
                "tokens cannot be checked now (the state store is unavailable); retry shortly"
                    .into(),
            ));
        }
        Err(other) => return Err(invalid("invalid_token", &other.to_string())),
    };
    let access = access_for(&claims)
        .map_err(|rejection| invalid("invalid_token", &rejection.to_string()))?;
    Ok((access, claims))
}

#[cfg(test)]
mod tests {
    use super::is_public;

    #[test]
    fn only_metadata_and_discovery_are_public_under_the_base() {
        for path in [
            "/fhir/metadata",
            "/fhir/.well-known/smart-configuration",
            "/health",
            "/openapi.json",
            "/auth/token",
            "/.well-known/smart-configuration",
        ] {
            assert!(is_public(path), "{path}");
        }
        for path in [
            "/fhir/Patient",
            "/fhir/Patient/1",
            "/fhir/Observation/_search",
            "/fhir/metadata/x",
            "/fhir/Patient/1/_history/1",
        ] {
            assert!(!is_public(path), "{path}");
        }
    }
}
