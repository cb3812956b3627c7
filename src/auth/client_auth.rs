//! How a client proves who it is at the token endpoint: a public client only names itself; a
//! symmetric one shows its secret (HTTP Basic or form fields); an asymmetric one signs a JWT
//! assertion (private_key_jwt, RS384 or ES384; SMART Backend Services) checked against the keys
//! it registered, inline or at its JWKS URL. Every failure is `invalid_client` with a reason that
//! names the check, never a secret.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::state::StateStore;
use crate::state::clients::{Client, ClientKind};

pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// SMART: an assertion's `exp` SHALL be at most five minutes ahead.
pub const MAX_ASSERTION_LIFETIME_SECONDS: i64 = 300;
/// Clock skew tolerated on an assertion's `exp`, `nbf` and `iat`.
const ASSERTION_LEEWAY_SECONDS: i64 = 60;

/// The credentials a token request carries, wherever they came from.
#[derive(Debug, Default)]
pub struct PresentedCredentials {
    /// From an `Authorization: Basic` header.
    pub basic: Option<(String, String)>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub assertion_type: Option<String>,
    pub assertion: Option<String>,
}

impl PresentedCredentials {
    /// Reads `Authorization: Basic` (client_secret_basic: id and secret form-urlencoded, then
    /// base64, RFC 6749 §2.3.1). `None` when the header is absent; an error when it is malformed.
    pub fn basic_from_header(value: &str) -> Result<(String, String), ClientAuthError> {
        let encoded = value
            .strip_prefix("Basic ")
            .or_else(|| value.strip_prefix("basic "))
            .ok_or(ClientAuthError("the Authorization header is not Basic"))?;
        let decoded = STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or(ClientAuthError(
                "the Basic credentials are not valid base64",
            ))?;
        let (id, secret) = decoded
            .split_once(':')
            .ok_or(ClientAuthError("the Basic credentials have no ':'"))?;
        let decode = |part: &str| {
            form_urlencoded::parse(format!("v={part}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        Ok((decode(id), decode(secret)))
    }
}

/// A failed client authentication (RFC 6749 §5.2 `invalid_client`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ClientAuthError(pub &'static str);

/// Fetches and caches JWKS by URL: those of clients that registered a URL, and an external
/// identity provider's (`auth::external`). A cached set is used for as long as its
/// `Cache-Control: max-age` allows (at most an hour); a `kid` not in it causes one refetch, at
/// most every `REFETCH_INTERVAL` per URL, whether the last attempt succeeded or failed.
#[derive(Clone)]
pub struct JwksFetcher {
    http: reqwest::Client,
    cache: Arc<Mutex<HashMap<String, CachedJwks>>>,
}

struct CachedJwks {
    keys: JwkSet,
    fetched_at: Instant,
    fresh_for: Duration,
    /// The last fetch attempt, and why it failed if it did: a URL that is down is tried again
    /// only after `REFETCH_INTERVAL` too, so a flood costs one attempt per interval, not a wait
    /// on the network per request.
    tried_at: Instant,
    failure: Option<ClientAuthError>,
}

const REFETCH_INTERVAL: Duration = Duration::from_secs(10);
const MAX_JWKS_CACHE: Duration = Duration::from_secs(3600);
const MAX_JWKS_BYTES: usize = 256 * 1024;

impl Default for JwksFetcher {
    fn default() -> JwksFetcher {
        JwksFetcher {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("an HTTP client builds"),
            cache: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl JwksFetcher {
    /// The key set at `url` for a JWT naming `kid`: the cached set while it is fresh and holds
    /// `kid`; otherwise fetched again, at most once per `REFETCH_INTERVAL` (within it, the last
    /// answer stands, keys or failure).
    pub(crate) async fn keys(&self, url: &str, kid: &str) -> Result<JwkSet, ClientAuthError> {
        let mut cache = self.cache.lock().await;
        if let Some(cached) = cache.get(url) {
            let has_kid = cached
                .keys
                .keys
                .iter()
                .any(|k| k.common.key_id.as_deref() == Some(kid));
            if has_kid && cached.fetched_at.elapsed() < cached.fresh_for {
                return Ok(cached.keys.clone());
            }
            if cached.tried_at.elapsed() < REFETCH_INTERVAL {
                return match &cached.failure {
                    None => Ok(cached.keys.clone()),
                    Some(failure) => Err(failure.clone()),
                };
            }
        }
        match self.fetch(url).await {
            Ok((keys, fresh_for)) => {
                let now = Instant::now();
                cache.insert(
                    url.to_owned(),
                    CachedJwks {
                        keys: keys.clone(),
                        fetched_at: now,
                        fresh_for,
                        tried_at: now,
                        failure: None,
                    },
                );
                Ok(keys)
            }
            Err(error) => {
                tracing::warn!(url, error = error.0, "cannot fetch a JWKS");
                let now = Instant::now();
                let entry = cache.entry(url.to_owned()).or_insert_with(|| CachedJwks {
                    keys: JwkSet { keys: Vec::new() },
                    fetched_at: now,
                    fresh_for: Duration::ZERO,
                    tried_at: now,
                    failure: None,
                });
                entry.tried_at = now;
                entry.failure = Some(error.clone());
                Err(error)
            }
        }
    }

    async fn fetch(&self, url: &str) -> Result<(JwkSet, Duration), ClientAuthError> {
        let response = self
            .http
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|_| ClientAuthError("the client's JWKS URL does not answer"))?;
        if !response.status().is_success() {
            return Err(ClientAuthError(
                "the client's JWKS URL answers with an error",
            ));
        }
        let fresh_for = response
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .map(max_age)
            .unwrap_or(Duration::ZERO)
            .min(MAX_JWKS_CACHE);
        let body = response
            .bytes()
            .await
            .map_err(|_| ClientAuthError("the client's JWKS could not be read"))?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(ClientAuthError("the client's JWKS is too large"));
        }
        let keys = serde_json::from_slice(&body)
            .map_err(|_| ClientAuthError("the client's JWKS is not a JSON Web Key Set"))?;
        Ok((keys, fresh_for))
    }
}

/// `max-age` of a Cache-Control value; `no-store`/`no-cache` or none mean zero.
fn max_age(cache_control: &str) -> Duration {
    let mut seconds = 0;
    for directive in cache_control.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Duration::ZERO;
        }
        if let Some(value) = lower.strip_prefix("max-age=") {
            seconds = value.trim_matches('"').parse().unwrap_or(0);
        }
    }
    Duration::from_secs(seconds)
}

/// The claims of a client assertion (RFC 7523).
#[derive(Debug, Deserialize)]
struct AssertionClaims {
    iss: String,
    sub: String,
    exp: i64,
    #[serde(default)]
    jti: Option<String>,
}

/// Authenticates the client of a token request; `token_endpoint` is the URL an assertion's `aud`
/// must name.
pub async fn authenticate(
    store: &StateStore,
    jwks: &JwksFetcher,
    presented: &PresentedCredentials,
    token_endpoint: &str,
) -> Result<Client, ClientAuthError> {
    let unknown = ClientAuthError("unknown client or bad credentials");
    if let Some(assertion) = &presented.assertion {
        if presented.assertion_type.as_deref() != Some(JWT_BEARER_ASSERTION) {
            return Err(ClientAuthError("client_assertion_type is not jwt-bearer"));
        }
        if presented.basic.is_some() || presented.client_secret.is_some() {
            return Err(ClientAuthError(
                "more than one client authentication method",
            ));
        }
        return authenticate_assertion(
            store,
            jwks,
            assertion,
            presented.client_id.as_deref(),
            token_endpoint,
        )
        .await;
    }
    if presented.assertion_type.is_some() {
        return Err(ClientAuthError(
            "client_assertion_type without client_assertion",
        ));
    }
    let (client_id, secret) = match (&presented.basic, &presented.client_secret) {
        (Some(_), Some(_)) => {
            return Err(ClientAuthError(
                "more than one client authentication method",
            ));
        }
        (Some((id, secret)), None) => {
            if presented
                .client_id
                .as_deref()
                .is_some_and(|form_id| form_id != id)
            {
                return Err(ClientAuthError(
                    "client_id differs from the Basic credentials",
                ));
            }
            (id.clone(), Some(secret.clone()))
        }
        (None, secret) => (
            presented
                .client_id
                .clone()
                .ok_or(ClientAuthError("no client_id"))?,
            secret.clone(),
        ),
    };
    let client = lookup(store, &client_id).await?.ok_or(unknown.clone())?;
    match (client.kind, secret) {
        (ClientKind::Symmetric, Some(secret)) if client.secret_matches(&secret) => Ok(client),
        (ClientKind::Public, None) => Ok(client),
        (ClientKind::Asymmetric, _) => Err(ClientAuthError(
            "this client must authenticate with a signed assertion",
        )),
        _ => Err(unknown),
    }
}

async fn lookup(store: &StateStore, client_id: &str) -> Result<Option<Client>, ClientAuthError> {
    store.client(client_id).await.map_err(|e| {
        tracing::warn!(error = %e, "cannot read clients");
        ClientAuthError("the client registry cannot be read now")
    })
}

async fn authenticate_assertion(
    store: &StateStore,
    jwks: &JwksFetcher,
    assertion: &str,
    form_client_id: Option<&str>,
    token_endpoint: &str,
) -> Result<Client, ClientAuthError> {
    let header = jsonwebtoken::decode_header(assertion)
        .map_err(|_| ClientAuthError("client_assertion is not a signed JWT"))?;
    if !matches!(header.alg, Algorithm::RS384 | Algorithm::ES384) {
        return Err(ClientAuthError(
            "client_assertion must be signed with RS384 or ES384",
        ));
    }
    if header
        .typ
        .as_deref()
        .is_some_and(|typ| !typ.eq_ignore_ascii_case("JWT"))
    {
        return Err(ClientAuthError("client_assertion typ must be JWT"));
    }
    let kid = header
        .kid
        .ok_or(ClientAuthError("client_assertion names no kid"))?;
    // The issuer decides whose keys verify the signature, so it is read before verification and
    // trusted only once that signature checks against that client's registered keys.
    let issuer = unverified_issuer(assertion)?;
    if form_client_id.is_some_and(|id| id != issuer) {
        return Err(ClientAuthError(
            "client_id differs from the assertion's issuer",
        ));
    }
    let client = lookup(store, &issuer)
        .await?
        .ok_or(ClientAuthError("unknown client or bad credentials"))?;
    if client.kind != ClientKind::Asymmetric {
        return Err(ClientAuthError("this client has no registered keys"));
    }
    if let Some(jku) = &header.jku
        && client.jwks_url.as_deref() != Some(jku.as_str())
    {
        // Never dereferenced: a jku the client did not register could point anywhere.
        return Err(ClientAuthError(
            "jku is not the client's registered JWKS URL",
        ));
    }
    let set: JwkSet = match (&client.jwks, &client.jwks_url) {
        (Some(inline), _) => serde_json::from_str(inline)
            .map_err(|_| ClientAuthError("the client's registered JWKS is unreadable"))?,
        (None, Some(url)) => jwks.keys(url, &kid).await?,
        (None, None) => return Err(ClientAuthError("this client has no registered keys")),
    };
    let key = select_key(&set, &kid, header.alg).map_err(|e| match e {
        KeySelectionError::NoMatch => {
            ClientAuthError("no registered key matches the assertion's kid and alg")
        }
        KeySelectionError::Several => {
            ClientAuthError("several registered keys match the assertion's kid")
        }
        KeySelectionError::Unusable => ClientAuthError("the client's key is unusable"),
    })?;
    let mut validation = Validation::new(header.alg);
    validation.leeway = ASSERTION_LEEWAY_SECONDS as u64;
    validation.set_audience(&[token_endpoint]);
    validation.set_issuer(&[&client.client_id]);
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    let claims = jsonwebtoken::decode::<AssertionClaims>(assertion, &key, &validation)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                ClientAuthError("client_assertion has expired")
            }
            jsonwebtoken::errors::ErrorKind::InvalidAudience => {
                ClientAuthError("client_assertion aud is not the token endpoint")
            }
            jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                ClientAuthError("client_assertion signature does not verify")
            }
            jsonwebtoken::errors::ErrorKind::ImmatureSignature => {
                ClientAuthError("client_assertion is not valid yet")
            }
            _ => ClientAuthError("client_assertion is malformed"),
        })?
        .claims;
    if claims.sub != claims.iss {
        return Err(ClientAuthError("client_assertion sub differs from iss"));
    }
    let now = crate::state::now();
    if claims.exp > now + MAX_ASSERTION_LIFETIME_SECONDS + ASSERTION_LEEWAY_SECONDS {
        return Err(ClientAuthError(
            "client_assertion exp is more than five minutes ahead",
        ));
    }
    let jti = claims
        .jti
        .filter(|j| !j.is_empty() && j.len() <= 256)
        .ok_or(ClientAuthError("client_assertion has no jti"))?;
    let fresh = store
        .claim_assertion_jti(&claims.iss, &jti, claims.exp + ASSERTION_LEEWAY_SECONDS)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "cannot record an assertion jti");
            ClientAuthError("the replay cache cannot be written now")
        })?;
    if !fresh {
        return Err(ClientAuthError("client_assertion jti was already used"));
    }
    Ok(client)
}

/// The `iss` claim of a JWT, without verifying anything.
fn unverified_issuer(jwt: &str) -> Result<String, ClientAuthError> {
    let payload = jwt
        .split('.')
        .nth(1)
        .ok_or(ClientAuthError("client_assertion is malformed"))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| ClientAuthError("client_assertion is malformed"))?;
    #[derive(Deserialize)]
    struct Issuer {
        iss: String,
    }
    serde_json::from_slice::<Issuer>(&bytes)
        .map(|i| i.iss)
        .map_err(|_| ClientAuthError("client_assertion has no iss"))
}

/// Why no single key of a set can verify a JWT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeySelectionError {
    /// No key has the JWT's `kid` and fits its `alg`.
    NoMatch,
    /// Several do (SMART: the JWT is refused rather than one of them guessed).
    Several,
    /// The one key that fits cannot be used (its parameters do not decode).
    Unusable,
}

/// Exactly one key with this `kid` that fits `alg`: its type (RSA for RS*/PS*, EC on the
/// algorithm's curve for ES*), its declared `alg` and `use` if it has them.
pub(crate) fn select_key(
    set: &JwkSet,
    kid: &str,
    alg: Algorithm,
) -> Result<DecodingKey, KeySelectionError> {
    let fits = |jwk: &Jwk| {
        let type_fits = match (&jwk.algorithm, alg) {
            (
                AlgorithmParameters::RSA(_),
                Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512,
            ) => true,
            (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => {
                ec.curve == EllipticCurve::P256
            }
            (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES384) => {
                ec.curve == EllipticCurve::P384
            }
            _ => false,
        };
        // Debug names are the JOSE names in both enums ("RS256").
        let declared_fits = jwk
            .common
            .key_algorithm
            .is_none_or(|declared| declared.to_string() == format!("{alg:?}"));
        let use_fits = jwk
            .common
            .public_key_use
            .as_ref()
            .is_none_or(|key_use| *key_use == PublicKeyUse::Signature);
        type_fits && declared_fits && use_fits
    };
    let matching: Vec<&Jwk> = set
        .keys
        .iter()
        .filter(|jwk| jwk.common.key_id.as_deref() == Some(kid) && fits(jwk))
        .collect();
    match matching.as_slice() {
        [jwk] => DecodingKey::from_jwk(jwk).map_err(|_| KeySelectionError::Unusable),
        [] => Err(KeySelectionError::NoMatch),
        _ => Err(KeySelectionError::Several),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_reads_cache_control() {
        assert_eq!(max_age("public, max-age=600"), Duration::from_secs(600));
        assert_eq!(max_age("no-store"), Duration::ZERO);
        assert_eq!(max_age("max-age=60, no-cache"), Duration::ZERO);
        assert_eq!(max_age("private"), Duration::ZERO);
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let header = format!("Basic {}", STANDARD.encode("my%20app:s%3Acret"));
        assert_eq!(
            PresentedCredentials::basic_from_header(&header).unwrap(),
            ("my app".to_owned(), "s:cret".to_owned())
        );
        assert!(PresentedCredentials::basic_from_header("Bearer x").is_err());
        assert!(PresentedCredentials::basic_from_header("Basic !!!").is_err());
    }
}
