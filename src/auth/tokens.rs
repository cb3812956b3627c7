//! Portico's access tokens: JWTs it signs itself (RS256, `typ: at+jwt`) with the state store's
//! keys, and their strict validation at the resource server: one algorithm, a known `kid`, the
//! right issuer and audience, time limits with a small leeway, and not revoked.

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::{Header, Validation};
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;

use crate::auth::endpoints;
use crate::state::keys::SigningKey;
use crate::state::tokens::IssuedToken;
use crate::state::{StateError, StateStore, now, random_token};

/// The media type of Portico's access tokens (RFC 9068): an id_token or a client assertion
/// presented as an access token is refused because of it.
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";
/// Clock skew tolerated on `exp`, `nbf` and `iat` (issue 8: at most 60 s).
pub const LEEWAY_SECONDS: u64 = 30;
/// The longest Authorization header read; a longer one is refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The claims of a Portico access token.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    /// The user's name for user-facing flows, the client id for Backend Services.
    pub sub: String,
    /// The FHIR base URL the token is for.
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    pub client_id: String,
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encounter: Option<String>,
    #[serde(default, rename = "fhirUser", skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<String>,
}

/// The claims of an OpenID Connect id_token (SMART `openid fhirUser`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdTokenClaims {
    pub iss: String,
    pub sub: String,
    /// The client the token was issued to.
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    #[serde(default, rename = "fhirUser", skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<String>,
}

/// What an access token is issued for.
#[derive(Clone, Debug, Default)]
pub struct Grant {
    pub client_id: String,
    pub subject: String,
    pub scope: String,
    pub patient: Option<String>,
    pub encounter: Option<String>,
    pub fhir_user: Option<String>,
    pub username: Option<String>,
    pub family_id: Option<String>,
}

/// Why a presented token was refused. The text goes into `WWW-Authenticate`'s
/// `error_description` and the OperationOutcome: it names the check, never the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejection {
    #[error("no bearer token")]
    Missing,
    #[error("{0}")]
    Invalid(&'static str),
    #[error("the token has expired")]
    Expired,
    #[error("the token has been revoked")]
    Revoked,
    #[error("the token cannot be checked now")]
    Unavailable,
}

/// The signing keys in memory, read again from the store when a token names an unknown `kid`
/// (another replica rotated) at most once per `KEY_REFRESH_INTERVAL`, so a flood of made-up kids
/// costs no more than one store read per interval; and the revoked `jti`s, read again every
/// `REVOCATION_REFRESH`.
#[derive(Clone)]
pub struct TokenService {
    store: StateStore,
    keys: Arc<RwLock<KeyCache>>,
    revoked: Arc<RwLock<RevokedCache>>,
    /// Tokens whose signature and claims were already checked, by SHA-256 of token, issuer and
    /// audience: a client sends the same token many times, and the RSA check is the costly part.
    /// Expiry and revocation are still checked on every use.
    validated: Arc<std::sync::Mutex<HashMap<[u8; 32], AccessClaims>>>,
}

/// Validated tokens remembered at most; the memory is dropped whole when full.
const MAX_VALIDATED: usize = 10_000;

const KEY_REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// A token revoked on another replica is refused here within this time (issue target: 60 s).
const REVOCATION_REFRESH: Duration = Duration::from_secs(5);

struct KeyCache {
    keys: Vec<SigningKey>,
    read_at: Option<Instant>,
}

struct RevokedCache {
    jtis: HashSet<String>,
    read_at: Option<Instant>,
}

impl TokenService {
    pub fn new(store: StateStore) -> TokenService {
        TokenService {
            store,
            keys: Arc::new(RwLock::new(KeyCache {
                keys: Vec::new(),
                read_at: None,
            })),
            revoked: Arc::new(RwLock::new(RevokedCache {
                jtis: HashSet::new(),
                read_at: None,
            })),
            validated: Arc::new(std::sync::Mutex::new(HashMap::new())),
        }
    }

    pub fn store(&self) -> &StateStore {
        &self.store
    }

    /// Signs an access token for `grant`, valid `lifetime_seconds`, and records its `jti`.
    pub async fn issue(
        &self,
        grant: &Grant,
        issuer: &str,
        audience: &str,
        lifetime_seconds: i64,
    ) -> Result<(String, AccessClaims), StateError> {
        let key = self.store.current_signing_key().await?;
        let issued_at = now();
        let claims = AccessClaims {
            iss: issuer.to_owned(),
            sub: grant.subject.clone(),
            aud: audience.to_owned(),
            exp: issued_at + lifetime_seconds,
            iat: issued_at,
            nbf: issued_at,
            jti: random_token(16),
            client_id: grant.client_id.clone(),
            scope: grant.scope.clone(),
            patient: grant.patient.clone(),
            encounter: grant.encounter.clone(),
            fhir_user: grant.fhir_user.clone(),
        };
        let mut header = Header::new(SigningKey::ALGORITHM);
        header.kid = Some(key.kid.clone());
        header.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
        let token = jsonwebtoken::encode(&header, &claims, key.encoding_key())
            .map_err(|e| StateError::Invalid(format!("cannot sign a token: {e}")))?;
        self.store
            .record_access_token(&IssuedToken {
                jti: claims.jti.clone(),
                family_id: grant.family_id.clone(),
                client_id: grant.client_id.clone(),
                scope: grant.scope.clone(),
                patient: grant.patient.clone(),
                username: grant.username.clone(),
                issued_at,
                expires_at: claims.exp,
                revoked_at: None,
            })
            .await?;
        Ok((token, claims))
    }

    /// Signs an access token for the server whose FHIR base is `fhir_base`: that base is the
    /// audience, and the issuer is its `/auth` (`endpoints::ISSUER`).
    pub async fn issue_for(
        &self,
        grant: &Grant,
        fhir_base: &str,
        lifetime_seconds: i64,
    ) -> Result<(String, AccessClaims), StateError> {
        let issuer = endpoints::absolute(fhir_base, endpoints::ISSUER);
        self.issue(grant, &issuer, fhir_base, lifetime_seconds)
            .await
    }

    /// Checks a bearer token presented to the server whose FHIR base is `fhir_base`.
    pub async fn validate_for(
        &self,
        token: &str,
        fhir_base: &str,
    ) -> Result<AccessClaims, TokenRejection> {
        let issuer = endpoints::absolute(fhir_base, endpoints::ISSUER);
        self.validate(token, &issuer, fhir_base).await
    }

    /// The public keys as a JWKS (`/auth/jwks`).
    pub async fn jwks(&self) -> Result<serde_json::Value, StateError> {
        self.store.current_signing_key().await?;
        let keys = self.store.verification_keys().await?;
        Ok(
            serde_json::json!({ "keys": keys.iter().map(SigningKey::public_jwk).collect::<Vec<_>>() }),
        )
    }

    /// Checks a bearer token strictly and returns its claims.
    pub async fn validate(
        &self,
        token: &str,
        issuer: &str,
        audience: &str,
    ) -> Result<AccessClaims, TokenRejection> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenRejection::Invalid("the token is too long"));
        }
        let fingerprint: [u8; 32] = Sha256::new()
            .chain_update(token.as_bytes())
            .chain_update([0])
            .chain_update(issuer.as_bytes())
            .chain_update([0])
            .chain_update(audience.as_bytes())
            .finalize()
            .into();
        let remembered = self
            .validated
            .lock()
            .expect("validated tokens")
            .get(&fingerprint)
            .cloned();
        if let Some(claims) = remembered {
            if claims.exp + (LEEWAY_SECONDS as i64) < now() {
                return Err(TokenRejection::Expired);
            }
            if self.is_revoked(&claims.jti).await? {
                return Err(TokenRejection::Revoked);
            }
            return Ok(claims);
        }
        let claims = self.validate_uncached(token, issuer, audience).await?;
        let mut validated = self.validated.lock().expect("validated tokens");
        if validated.len() >= MAX_VALIDATED {
            validated.clear();
        }
        validated.insert(fingerprint, claims.clone());
        Ok(claims)
    }

    async fn validate_uncached(
        &self,
        token: &str,
        issuer: &str,
        audience: &str,
    ) -> Result<AccessClaims, TokenRejection> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| TokenRejection::Invalid("the token is not a signed JWT"))?;
        // One algorithm, whatever the header says (RFC 8725 §3.1): `none`, HS256 signed with the
        // public key, and every other algorithm are refused here, before any key is looked up.
        if header.alg != SigningKey::ALGORITHM {
            return Err(TokenRejection::Invalid(
                "the token's algorithm is not accepted",
            ));
        }
        if header
            .typ
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
            != Some(ACCESS_TOKEN_TYPE)
        {
            return Err(TokenRejection::Invalid("the token is not an access token"));
        }
        let kid = header
            .kid
            .ok_or(TokenRejection::Invalid("the token names no key"))?;
        let key = self
            .key(&kid)
            .await?
            .ok_or(TokenRejection::Invalid("the token's key is unknown"))?;
        let mut validation = Validation::new(SigningKey::ALGORITHM);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.set_audience(&[audience]);
        validation.set_issuer(&[issuer]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<AccessClaims>(token, key.decoding_key(), &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenRejection::Expired,
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => {
                    TokenRejection::Invalid("the token is not valid yet")
                }
                jsonwebtoken::errors::ErrorKind::InvalidAudience => {
                    TokenRejection::Invalid("the token is for another server")
                }
                jsonwebtoken::errors::ErrorKind::InvalidIssuer => {
                    TokenRejection::Invalid("the token's issuer is not trusted")
                }
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    TokenRejection::Invalid("the token's signature does not verify")
                }
                _ => TokenRejection::Invalid("the token is malformed"),
            })?
            .claims;
        if claims.iat > now() + LEEWAY_SECONDS as i64 {
            return Err(TokenRejection::Invalid(
                "the token was issued in the future",
            ));
        }
        if self.is_revoked(&claims.jti).await? {
            return Err(TokenRejection::Revoked);
        }
        Ok(claims)
    }

    /// Marks a token revoked here at once (other replicas see it within `REVOCATION_REFRESH`).
    pub async fn revoke(&self, jti: &str) -> Result<bool, StateError> {
        let revoked = self.store.revoke_access_token(jti).await?;
        self.revoked.write().await.jtis.insert(jti.to_owned());
        Ok(revoked)
    }

    /// Revokes every token of one authorization (code reuse, refresh-token replay, the holder's
    /// revocation) and reads the revoked list again at once, so this replica refuses them now.
    pub async fn revoke_family(&self, family_id: &str) -> Result<(), StateError> {
        self.store.revoke_family(family_id).await?;
        self.revoked.write().await.read_at = None;
        Ok(())
    }

    /// Signs an OpenID Connect id_token (RS256, `typ: JWT`) for the user a code was issued to:
    /// `aud` is the client, `fhirUser` the absolute URL of the user's FHIR resource.
    pub async fn id_token(&self, claims: &IdTokenClaims) -> Result<String, StateError> {
        let key = self.store.current_signing_key().await?;
        let mut header = Header::new(SigningKey::ALGORITHM);
        header.kid = Some(key.kid.clone());
        header.typ = Some("JWT".to_owned());
        jsonwebtoken::encode(&header, claims, key.encoding_key())
            .map_err(|e| StateError::Invalid(format!("cannot sign an id_token: {e}")))
    }

    async fn key(&self, kid: &str) -> Result<Option<SigningKey>, TokenRejection> {
        {
            let cache = self.keys.read().await;
            if let Some(key) = cache.keys.iter().find(|k| k.kid == kid) {
                return Ok(Some(key.clone()));
            }
            if cache
                .read_at
                .is_some_and(|at| at.elapsed() < KEY_REFRESH_INTERVAL)
            {
                return Ok(None);
            }
        }
        let mut cache = self.keys.write().await;
        if cache
            .read_at
            .is_none_or(|at| at.elapsed() >= KEY_REFRESH_INTERVAL)
        {
            cache.keys = self.store.verification_keys().await.map_err(|e| {
                tracing::warn!(error = %e, "cannot read signing keys");
                TokenRejection::Unavailable
            })?;
            cache.read_at = Some(Instant::now());
        }
        Ok(cache.keys.iter().find(|k| k.kid == kid).cloned())
    }

    async fn is_revoked(&self, jti: &str) -> Result<bool, TokenRejection> {
        {
            let cache = self.revoked.read().await;
            if cache
                .read_at
                .is_some_and(|at| at.elapsed() < REVOCATION_REFRESH)
            {
                return Ok(cache.jtis.contains(jti));
            }
        }
        let mut cache = self.revoked.write().await;
        if cache
            .read_at
            .is_none_or(|at| at.elapsed() >= REVOCATION_REFRESH)
        {
            let jtis = self.store.revoked_access_tokens().await.map_err(|e| {
                tracing::warn!(error = %e, "cannot read revoked tokens");
                TokenRejection::Unavailable
            })?;
            cache.jtis = jtis.into_iter().collect();
            cache.read_at = Some(Instant::now());
        }
        Ok(cache.jtis.contains(jti))
    }
}
