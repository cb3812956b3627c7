//! The OAuth endpoints over Portico's tokens: token (`POST /auth/token`: authorization_code and
//! refresh_token through `code_grant`; client_credentials for SMART Backend Services and
//! confidential clients with a shared secret), introspection (`POST /auth/introspect`, RFC 7662), revocation (`POST /auth/revoke`,
//! RFC 7009) and the JWKS (`GET /auth/jwks`). Every answer carries `Cache-Control: no-store` and
//! `Pragma: no-cache`; every error is an RFC 6749 §5.2 JSON error.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::auth::client_auth::{self, JwksFetcher, PresentedCredentials};
use crate::auth::code_grant;
use crate::auth::endpoints;
use crate::auth::scope::{self, Context, Scope};
use crate::auth::tokens::{Grant, TokenService};
use crate::state::clients::{Client, ClientKind};
use crate::state::{StateError, hash_token};

/// Token lifetimes and the rest of the `[auth]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Access tokens of user-facing flows (SMART: SHOULD be at most an hour).
    #[serde(default = "default_access_token_seconds")]
    pub access_token_seconds: i64,
    /// Access tokens of Backend Services (SMART: SHOULD NOT exceed 300).
    #[serde(default = "default_backend_token_seconds")]
    pub backend_token_seconds: i64,
}

impl Default for AuthSettings {
    fn default() -> AuthSettings {
        AuthSettings {
            access_token_seconds: default_access_token_seconds(),
            backend_token_seconds: default_backend_token_seconds(),
        }
    }
}

fn default_access_token_seconds() -> i64 {
    3600
}
fn default_backend_token_seconds() -> i64 {
    300
}

/// The authorization server's shared parts; cheap to clone.
#[derive(Clone)]
pub struct AuthServer {
    pub tokens: TokenService,
    pub jwks: JwksFetcher,
    pub settings: AuthSettings,
}

/// An RFC 6749 §5.2 error answer.
#[derive(Debug)]
pub struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
    basic_challenge: bool,
}

impl OAuthError {
    pub fn new(error: &'static str, description: impl Into<String>) -> OAuthError {
        OAuthError {
            status: StatusCode::BAD_REQUEST,
            error,
            description: description.into(),
            basic_challenge: false,
        }
    }

    pub fn description(&self) -> &str {
        &self.description
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.error, "error_description": self.description });
        let mut response = (self.status, axum::Json(body)).into_response();
        no_store(response.headers_mut());
        if self.basic_challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"portico\""),
            );
        }
        response
    }
}

/// The answer when the state store fails under a grant: 503 `temporarily_unavailable`.
pub fn unavailable(error: StateError) -> OAuthError {
    tracing::error!(error = %error, "the token store failed");
    OAuthError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        error: "temporarily_unavailable",
        description: "the token store cannot be used now".into(),
        basic_challenge: false,
    }
}

/// SMART SHALL: token responses are never cached.
pub fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// Parses an `application/x-www-form-urlencoded` body; a parameter sent twice is an error
/// (RFC 6749 §3.2).
pub fn parse_form(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<BTreeMap<String, String>, OAuthError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(OAuthError::new(
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let mut form = BTreeMap::new();
    for (name, value) in form_urlencoded::parse(body) {
        if form.insert(name.to_string(), value.into_owned()).is_some() {
            return Err(OAuthError::new(
                "invalid_request",
                format!("parameter {name} is repeated"),
            ));
        }
    }
    Ok(form)
}

/// `POST /auth/token` for the server whose FHIR base is `fhir_base`.
pub async fn token(
    server: &AuthServer,
    fhir_base: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    match issue(server, fhir_base, headers, body).await {
        Ok(answer) => {
            let mut response = (StatusCode::OK, axum::Json(answer)).into_response();
            no_store(response.headers_mut());
            response
        }
        Err(error) => error.into_response(),
    }
}

async fn issue(
    server: &AuthServer,
    fhir_base: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<serde_json::Value, OAuthError> {
    let form = parse_form(headers, body)?;
    let grant_type = form
        .get("grant_type")
        .ok_or_else(|| OAuthError::new("invalid_request", "grant_type is missing"))?;
    let authorization = authorization_text(headers)?;
    match grant_type.as_str() {
        "client_credentials" => {
            let client = authenticate_client(server, fhir_base, authorization, &form).await?;
            client_credentials(
                server,
                fhir_base,
                &client,
                form.get("scope").map(String::as_str),
            )
            .await
        }
        "authorization_code" => {
            let client = authenticate_client(server, fhir_base, authorization, &form).await?;
            code_grant::exchange_code(server, fhir_base, &client, &form).await
        }
        "refresh_token" => {
            let client = authenticate_client(server, fhir_base, authorization, &form).await?;
            code_grant::refresh(server, fhir_base, &client, &form).await
        }
        _ => Err(OAuthError::new(
            "unsupported_grant_type",
            "grant_type must be authorization_code, refresh_token or client_credentials",
        )),
    }
}

/// The Authorization header as text, if there is one.
fn authorization_text(headers: &HeaderMap) -> Result<Option<&str>, OAuthError> {
    match headers.get(header::AUTHORIZATION).map(|v| v.to_str()) {
        None => Ok(None),
        Some(Ok(value)) => Ok(Some(value)),
        Some(Err(_)) => Err(invalid_client("the Authorization header is not text", true)),
    }
}

/// Authenticates the calling client from `Authorization: Basic` or the form's client fields.
async fn authenticate_client(
    server: &AuthServer,
    fhir_base: &str,
    authorization: Option<&str>,
    form: &BTreeMap<String, String>,
) -> Result<Client, OAuthError> {
    let basic = authorization
        .map(PresentedCredentials::basic_from_header)
        .transpose()
        .map_err(|e| invalid_client(e.0, true))?;
    let used_basic = basic.is_some();
    let presented = PresentedCredentials {
        basic,
        client_id: form.get("client_id").cloned(),
        client_secret: form.get("client_secret").cloned(),
        assertion_type: form.get("client_assertion_type").cloned(),
        assertion: form.get("client_assertion").cloned(),
    };
    let token_endpoint = endpoints::absolute(fhir_base, endpoints::TOKEN);
    client_auth::authenticate(
        server.tokens.store(),
        &server.jwks,
        &presented,
        &token_endpoint,
    )
    .await
    .map_err(|e| invalid_client(e.0, used_basic))
}

fn invalid_client(reason: &'static str, used_basic: bool) -> OAuthError {
    OAuthError {
        status: if used_basic {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::BAD_REQUEST
        },
        error: "invalid_client",
        description: reason.to_owned(),
        basic_challenge: used_basic,
    }
}

/// The scopes a client may get for what it asked: each requested scope narrowed by the client's
/// registered scopes; `keep` says which of the narrowed scopes this grant type can carry.
pub fn grant_scopes(
    client: &Client,
    requested: Option<&str>,
    keep: impl Fn(&Scope) -> bool,
) -> Result<Vec<Scope>, OAuthError> {
    let requested = requested
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| OAuthError::new("invalid_scope", "scope is required"))?;
    let requested = scope::parse_scopes(requested)
        .map_err(|e| OAuthError::new("invalid_scope", e.to_string()))?;
    let (allowed, _) = scope::parse_scopes_lenient(&client.allowed_scopes);
    let granted: Vec<Scope> = scope::narrow(&requested, &allowed)
        .into_iter()
        .filter(|s| keep(s))
        .collect();
    if granted.is_empty() {
        return Err(OAuthError::new(
            "invalid_scope",
            "none of the requested scopes may be granted to this client",
        ));
    }
    Ok(granted)
}

async fn client_credentials(
    server: &AuthServer,
    fhir_base: &str,
    client: &Client,
    requested: Option<&str>,
) -> Result<serde_json::Value, OAuthError> {
    if client.kind == ClientKind::Public {
        return Err(OAuthError::new(
            "unauthorized_client",
            "a public client cannot use client_credentials",
        ));
    }
    // Without a user or a launch there is no patient in context: only system/ scopes make sense.
    let granted = grant_scopes(
        client,
        requested,
        |s| matches!(s, Scope::Resource(r) if r.context == Context::System),
    )?;
    let scope = scope::format_scopes(&granted);
    let lifetime = server.settings.backend_token_seconds;
    let grant = Grant {
        client_id: client.client_id.clone(),
        subject: client.client_id.clone(),
        scope: scope.clone(),
        ..Grant::default()
    };
    let (token, _) = server
        .tokens
        .issue_for(&grant, fhir_base, lifetime)
        .await
        .map_err(unavailable)?;
    Ok(
        json!({ "access_token": token, "token_type": "bearer", "expires_in": lifetime, "scope": scope }),
    )
}

/// `GET /auth/jwks`: the public keys Portico's tokens verify with.
pub async fn jwks(server: &AuthServer) -> Response {
    match server.tokens.jwks().await {
        Ok(set) => {
            let mut response = axum::Json(set).into_response();
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=300"),
            );
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read signing keys");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

/// Who is calling an introspection or revocation endpoint: a client that authenticated as at the
/// token endpoint (a public client by naming itself), or, for introspection only, the holder of a
/// valid Portico access token (SMART: an appropriately scoped bearer token SHALL be accepted).
async fn caller(
    server: &AuthServer,
    fhir_base: &str,
    headers: &HeaderMap,
    form: &BTreeMap<String, String>,
    bearer_allowed: bool,
) -> Result<String, OAuthError> {
    let authorization = authorization_text(headers)?;
    if let Some(token) = authorization.and_then(|v| {
        v.strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
    }) {
        if !bearer_allowed {
            return Err(invalid_client(
                "authenticate as a client, not with a bearer token",
                false,
            ));
        }
        return server
            .tokens
            .validate_for(token.trim(), fhir_base)
            .await
            .map(|claims| claims.client_id)
            .map_err(|e| OAuthError {
                status: StatusCode::UNAUTHORIZED,
                error: "invalid_token",
                description: e.to_string(),
                basic_challenge: false,
            });
    }
    authenticate_client(server, fhir_base, authorization, form)
        .await
        .map(|client| client.client_id)
}

/// `POST /auth/introspect` (RFC 7662, SMART token introspection): `active` and, for an active
/// token, its scope, client, expiry, subject and launch context. Anything that is not a valid,
/// unrevoked Portico access token for this server is `{"active": false}`.
pub async fn introspect(
    server: &AuthServer,
    fhir_base: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let answer = async {
        let form = parse_form(headers, body)?;
        caller(server, fhir_base, headers, &form, true).await?;
        let token = form
            .get("token")
            .ok_or_else(|| OAuthError::new("invalid_request", "token is missing"))?;
        Ok::<_, OAuthError>(match server.tokens.validate_for(token, fhir_base).await {
            Ok(claims) => {
                let mut active = json!({
                    "active": true,
                    "scope": claims.scope,
                    "client_id": claims.client_id,
                    "exp": claims.exp,
                    "iat": claims.iat,
                    "sub": claims.sub,
                    "iss": claims.iss,
                    "aud": claims.aud,
                    "token_type": "Bearer",
                });
                for (name, value) in [
                    ("patient", &claims.patient),
                    ("encounter", &claims.encounter),
                    ("fhirUser", &claims.fhir_user),
                ] {
                    if let Some(value) = value {
                        active[name] = json!(value);
                    }
                }
                active
            }
            Err(_) => json!({ "active": false }),
        })
    }
    .await;
    match answer {
        Ok(body) => {
            let mut response = axum::Json(body).into_response();
            no_store(response.headers_mut());
            response
        }
        Err(error) => error.into_response(),
    }
}

/// `POST /auth/revoke` (RFC 7009): revokes an access token issued to the calling client, or a
/// refresh token of it together with every token of its authorization. An
/// unknown, invalid or expired token, or one of another client, changes nothing and still
/// answers 200 (the RFC's answer, which also tells a caller nothing about other clients' tokens).
pub async fn revoke(
    server: &AuthServer,
    fhir_base: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let answer = async {
        let form = parse_form(headers, body)?;
        let client_id = caller(server, fhir_base, headers, &form, false).await?;
        let token = form
            .get("token")
            .ok_or_else(|| OAuthError::new("invalid_request", "token is missing"))?;
        if let Ok(claims) = server.tokens.validate_for(token, fhir_base).await
            && claims.client_id == client_id
        {
            server
                .tokens
                .revoke(&claims.jti)
                .await
                .map_err(unavailable)?;
        } else if let Some((family_id, owner)) = server
            .tokens
            .store()
            .live_refresh_token(&hash_token(token))
            .await
            .map_err(unavailable)?
            && owner == client_id
        {
            // A refresh token ends the whole authorization it belongs to (the patient or the
            // app withdrawing access): its access tokens too.
            server
                .tokens
                .revoke_family(&family_id)
                .await
                .map_err(unavailable)?;
        }
        Ok::<_, OAuthError>(())
    }
    .await;
    match answer {
        Ok(()) => {
            let mut response = StatusCode::OK.into_response();
            no_store(response.headers_mut());
            response
        }
        Err(error) => error.into_response(),
    }
}
