//! External identity provider mode (`[auth.external]`): Portico is only the resource server and
//! accepts the access tokens of one configured issuer (Entra ID, Okta, Keycloak, an EHR's
//! authorization server), checked against that issuer's JWKS, instead of its own. The claims the
//! configuration names become an `AccessClaims`, so `permissions::access_for` and everything after
//! it are the same road as for Portico's own tokens.

use std::collections::HashMap;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use jsonwebtoken::{Algorithm, Validation};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value as Json};
use sha2::{Digest, Sha256};

use crate::auth::client_auth::{JwksFetcher, KeySelectionError, select_key};
use crate::auth::token_endpoint::AuthServer;
use crate::auth::tokens::{
    AccessClaims, MAX_TOKEN_BYTES, MAX_VALIDATED, TokenRejection, rejection_of,
};
use crate::state::now;

/// The signature algorithms an IdP's tokens may be configured to use: asymmetric only, so that
/// the key Portico holds can verify but never sign (no HS*, no `none`).
pub const ACCEPTED_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::PS256,
    Algorithm::PS384,
];
/// The largest clock skew that may be tolerated on `exp`, `nbf` and `iat` (issue 8).
pub const MAX_LEEWAY_SECONDS: u64 = 60;
/// Header `typ` values of access tokens; a token without `typ` is accepted too (most IdPs send
/// none or `JWT`). Any other type (a logout token, a DPoP proof...) is refused.
const ACCESS_TOKEN_TYPES: &[&str] = &["at+jwt", "application/at+jwt", "JWT"];

/// `[auth.external]`: whose tokens the resource server accepts, and which claims say what.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalIdp {
    /// The tokens' `iss`, exactly.
    #[serde(deserialize_with = "required_text")]
    pub issuer: String,
    /// A value the tokens' `aud` must be or contain: the FHIR base URL, or an API identifier such
    /// as `api://portico`.
    #[serde(deserialize_with = "required_text")]
    pub audience: String,
    /// The issuer's public keys: `https://`, or `http://` on a loopback address only.
    #[serde(deserialize_with = "jwks_url")]
    pub jwks_url: String,
    /// The allow-list of header `alg` values (a list, or commas in an environment variable).
    #[serde(default = "default_algorithms", deserialize_with = "algorithms")]
    pub algorithms: Vec<Algorithm>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`; more than `MAX_LEEWAY_SECONDS` is refused.
    #[serde(
        default = "default_leeway_seconds",
        deserialize_with = "leeway_seconds"
    )]
    pub leeway_seconds: u64,
    /// The claim holding the granted SMART scopes: a space-separated string (`scope`) or a list
    /// of strings (Entra ID's and Okta's `scp`).
    #[serde(default = "default_scope_claim")]
    pub scope_claim: String,
    /// The claim holding the patient in context (a FHIR Patient id), for `patient/` scopes.
    #[serde(default = "default_patient_claim")]
    pub patient_claim: String,
    /// The claim holding the user's FHIR reference (`Practitioner/3`, `Patient/1`), for `user/`
    /// scopes.
    #[serde(default = "default_fhir_user_claim")]
    pub fhir_user_claim: String,
    /// The claim naming the client; `azp` when the token does not have it.
    #[serde(default = "default_client_id_claim")]
    pub client_id_claim: String,
    /// The IdP's endpoints, advertised in SMART discovery and the CapabilityStatement.
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
}

fn default_algorithms() -> Vec<Algorithm> {
    vec![Algorithm::RS256]
}
fn default_leeway_seconds() -> u64 {
    30
}
fn default_scope_claim() -> String {
    "scope".into()
}
fn default_patient_claim() -> String {
    "patient".into()
}
fn default_fhir_user_claim() -> String {
    "fhirUser".into()
}
fn default_client_id_claim() -> String {
    "client_id".into()
}

fn required_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    if text.trim().is_empty() {
        return Err(D::Error::custom(
            "auth.external: issuer and audience must not be empty",
        ));
    }
    Ok(text)
}

fn jwks_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let url = String::deserialize(d)?;
    if url.starts_with("https://") || is_loopback_http(&url) {
        Ok(url)
    } else {
        Err(D::Error::custom(format!(
            "auth.external.jwks_url {url:?} must be an https:// URL (http:// only on a loopback address)"
        )))
    }
}

/// `http://` to `localhost` or a loopback IP address (a test or a sidecar on the same host).
fn is_loopback_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn accepted_list() -> String {
    ACCEPTED_ALGORITHMS
        .iter()
        .map(|alg| format!("{alg:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn algorithms<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Algorithm>, D::Error> {
    let names = crate::config::list_or_commas(d)?;
    if names.is_empty() {
        return Err(D::Error::custom(format!(
            "auth.external.algorithms is empty; list some of {}",
            accepted_list()
        )));
    }
    names
        .iter()
        .map(|name| match Algorithm::from_str(name.trim()) {
            Ok(alg) if ACCEPTED_ALGORITHMS.contains(&alg) => Ok(alg),
            Ok(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) => {
                Err(D::Error::custom(format!(
                    "auth.external.algorithms: {name} is refused: with a shared-secret algorithm \
                     anyone who has the IdP's public key could sign tokens; accepted: {}",
                    accepted_list()
                )))
            }
            _ => Err(D::Error::custom(format!(
                "auth.external.algorithms: {name} is not accepted; accepted: {}",
                accepted_list()
            ))),
        })
        .collect()
}

fn leeway_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let seconds = u64::deserialize(d)?;
    if seconds > MAX_LEEWAY_SECONDS {
        return Err(D::Error::custom(format!(
            "auth.external.leeway_seconds is {seconds}: at most {MAX_LEEWAY_SECONDS} seconds of clock skew may be tolerated"
        )));
    }
    Ok(seconds)
}

/// Checks the IdP's tokens: keys from its JWKS (`JwksFetcher`: cached per `Cache-Control`,
/// fetched again on an unknown `kid` at most every 10 s), tokens already checked remembered by
/// hash like `TokenService` does. Cheap to clone.
#[derive(Clone)]
pub struct ExternalValidator {
    idp: Arc<ExternalIdp>,
    jwks: JwksFetcher,
    validated: Arc<Mutex<HashMap<[u8; 32], AccessClaims>>>,
}

impl ExternalValidator {
    pub fn new(idp: ExternalIdp) -> ExternalValidator {
        ExternalValidator {
            idp: Arc::new(idp),
            // Its own cache: a client's slow JWKS URL at the token endpoint never holds up the
            // resource server.
            jwks: JwksFetcher::default(),
            validated: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub fn idp(&self) -> &ExternalIdp {
        &self.idp
    }

    /// Checks a bearer token and returns its claims, mapped to Portico's.
    pub async fn validate(&self, token: &str) -> Result<AccessClaims, TokenRejection> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenRejection::Invalid("the token is too long"));
        }
        let fingerprint: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let remembered = self
            .validated
            .lock()
            .expect("validated tokens")
            .get(&fingerprint)
            .cloned();
        if let Some(claims) = remembered {
            if claims.exp + self.leeway() < now() {
                return Err(TokenRejection::Expired);
            }
            return Ok(claims);
        }
        let claims = self.validate_uncached(token, &fingerprint).await?;
        let mut validated = self.validated.lock().expect("validated tokens");
        if validated.len() >= MAX_VALIDATED {
            validated.clear();
        }
        validated.insert(fingerprint, claims.clone());
        Ok(claims)
    }

    fn leeway(&self) -> i64 {
        self.idp.leeway_seconds as i64
    }

    async fn validate_uncached(
        &self,
        token: &str,
        fingerprint: &[u8; 32],
    ) -> Result<AccessClaims, TokenRejection> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| TokenRejection::Invalid("the token is not a signed JWT"))?;
        // The allow-list decides, before any key is looked up (RFC 8725 §3.1).
        if !self.idp.algorithms.contains(&header.alg) {
            return Err(TokenRejection::Invalid(
                "the token's algorithm is not accepted",
            ));
        }
        if header.typ.as_deref().is_some_and(|typ| {
            !ACCESS_TOKEN_TYPES
                .iter()
                .any(|t| t.eq_ignore_ascii_case(typ))
        }) {
            return Err(TokenRejection::Invalid("the token is not an access token"));
        }
        // Keys come from the configured URL only: a `jku`, `x5u` or `jwk` in the header is never
        // used or fetched.
        let kid = header
            .kid
            .ok_or(TokenRejection::Invalid("the token names no key"))?;
        let keys = self
            .jwks
            .keys(&self.idp.jwks_url, &kid)
            .await
            .map_err(|_| {
                TokenRejection::Invalid("the identity provider's keys cannot be fetched now")
            })?;
        let key = select_key(&keys, &kid, header.alg).map_err(|e| match e {
            KeySelectionError::NoMatch => TokenRejection::Invalid("the token's key is unknown"),
            KeySelectionError::Several => TokenRejection::Invalid(
                "several of the identity provider's keys match the token's kid",
            ),
            KeySelectionError::Unusable => {
                TokenRejection::Invalid("the identity provider's key for this token is unusable")
            }
        })?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.idp.leeway_seconds;
        validation.validate_nbf = true;
        validation.set_audience(&[&self.idp.audience]);
        validation.set_issuer(&[&self.idp.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let claims = jsonwebtoken::decode::<Map<String, Json>>(token, &key, &validation)
            .map_err(|e| rejection_of(&e))?
            .claims;
        self.access_claims(&claims, fingerprint)
    }

    /// The token's claims as Portico's, through the configured claim names.
    fn access_claims(
        &self,
        claims: &Map<String, Json>,
        fingerprint: &[u8; 32],
    ) -> Result<AccessClaims, TokenRejection> {
        let idp = &self.idp;
        let issued_at = seconds(claims, "iat");
        if issued_at.is_some_and(|iat| iat > now() + self.leeway()) {
            return Err(TokenRejection::Invalid(
                "the token was issued in the future",
            ));
        }
        let scope = match claims.get(&idp.scope_claim) {
            None | Some(Json::Null) => String::new(),
            Some(Json::String(scope)) => scope.clone(),
            Some(Json::Array(items)) => items
                .iter()
                .map(Json::as_str)
                .collect::<Option<Vec<_>>>()
                .ok_or(TokenRejection::Invalid(
                    "the token's scope claim is neither text nor a list of text",
                ))?
                .join(" "),
            Some(_) => {
                return Err(TokenRejection::Invalid(
                    "the token's scope claim is neither text nor a list of text",
                ));
            }
        };
        let patient = identifier(claims, &idp.patient_claim)
            .map_err(|()| TokenRejection::Invalid("the token's patient claim is not an id"))?;
        let fhir_user = text(claims, &idp.fhir_user_claim)
            .map_err(|()| TokenRejection::Invalid("the token's fhirUser claim is not text"))?;
        let client_id = text(claims, &idp.client_id_claim)
            .ok()
            .flatten()
            .or_else(|| text(claims, "azp").ok().flatten())
            .ok_or(TokenRejection::Invalid(
                "the token names no client (auth.external.client_id_claim or azp)",
            ))?;
        let exp =
            seconds(claims, "exp").ok_or(TokenRejection::Invalid("the token is malformed"))?;
        let iat = issued_at.unwrap_or_else(now);
        let jti = text(claims, "jti")
            .ok()
            .flatten()
            .filter(|jti| jti.len() <= 256)
            .unwrap_or_else(|| fingerprint.iter().map(|b| format!("{b:02x}")).collect());
        Ok(AccessClaims {
            iss: idp.issuer.clone(),
            sub: text(claims, "sub")
                .ok()
                .flatten()
                .unwrap_or_else(|| client_id.clone()),
            aud: idp.audience.clone(),
            exp,
            iat,
            nbf: seconds(claims, "nbf").unwrap_or(iat),
            jti,
            client_id,
            scope,
            patient,
            encounter: None,
            fhir_user,
        })
    }
}

/// A NumericDate claim (RFC 7519: seconds, possibly with a fraction).
fn seconds(claims: &Map<String, Json>, name: &str) -> Option<i64> {
    let value = claims.get(name)?;
    value
        .as_i64()
        .or_else(|| value.as_f64().map(|seconds| seconds as i64))
}

/// A text claim: absent, null and empty are `None`; anything but a string is an error.
fn text(claims: &Map<String, Json>, name: &str) -> Result<Option<String>, ()> {
    match claims.get(name) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(value)) if value.is_empty() => Ok(None),
        Some(Json::String(value)) => Ok(Some(value.clone())),
        Some(_) => Err(()),
    }
}

/// An id claim: text, or a whole number some IdPs send unquoted.
fn identifier(claims: &Map<String, Json>, name: &str) -> Result<Option<String>, ()> {
    match claims.get(name) {
        Some(Json::Number(number)) if number.is_u64() => Ok(Some(number.to_string())),
        _ => text(claims, name),
    }
}

impl AuthServer {
    /// The resource server's one check of a bearer token presented at the FHIR base
    /// `fhir_base`: the external IdP's token when `[auth.external]` is configured, else one of
    /// Portico's own (`TokenService::validate_for`).
    pub async fn validate_bearer(
        &self,
        token: &str,
        fhir_base: &str,
    ) -> Result<AccessClaims, TokenRejection> {
        match &self.external {
            Some(external) => external.validate(token).await,
            None => self.tokens.validate_for(token, fhir_base).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_from;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut all = vec![
            ("PORTICO_LEGACY__ADAPTER", "openemr"),
            ("PORTICO_AUTH__EXTERNAL__ISSUER", "https://idp.example/"),
            ("PORTICO_AUTH__EXTERNAL__AUDIENCE", "api://portico"),
            (
                "PORTICO_AUTH__EXTERNAL__JWKS_URL",
                "https://idp.example/keys",
            ),
        ];
        all.extend_from_slice(pairs);
        all.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn refusal(pairs: &[(&str, &str)]) -> String {
        load_from(None, &env(pairs)).unwrap_err().to_string()
    }

    #[test]
    fn settings_come_from_the_environment_with_defaults() {
        let settings = load_from(None, &env(&[])).unwrap();
        let idp = settings.auth.external.expect("auth.external");
        assert_eq!(idp.algorithms, [Algorithm::RS256]);
        assert_eq!(idp.leeway_seconds, 30);
        assert_eq!(
            (
                idp.scope_claim.as_str(),
                idp.patient_claim.as_str(),
                idp.fhir_user_claim.as_str(),
                idp.client_id_claim.as_str()
            ),
            ("scope", "patient", "fhirUser", "client_id")
        );
        let settings = load_from(
            None,
            &env(&[
                ("PORTICO_AUTH__EXTERNAL__ALGORITHMS", "RS256, ES256,PS384"),
                ("PORTICO_AUTH__EXTERNAL__LEEWAY_SECONDS", "60"),
                ("PORTICO_AUTH__EXTERNAL__SCOPE_CLAIM", "scp"),
            ]),
        )
        .unwrap();
        let idp = settings.auth.external.unwrap();
        assert_eq!(
            idp.algorithms,
            [Algorithm::RS256, Algorithm::ES256, Algorithm::PS384]
        );
        assert_eq!(idp.leeway_seconds, 60);
        assert_eq!(idp.scope_claim, "scp");
    }

    #[test]
    fn the_commented_example_loads() {
        let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("portico.example.toml");
        let text = std::fs::read_to_string(&example).unwrap();
        let (before, block) = text.split_once("# [auth.external]").expect("the example");
        let block: String = block
            .lines()
            .map(|line| line.strip_prefix("# ").unwrap_or(line))
            .collect::<Vec<_>>()
            .join("\n");
        let file = std::env::temp_dir().join(format!("portico-idp-{}.toml", std::process::id()));
        std::fs::write(&file, format!("{before}[auth.external]{block}\n")).unwrap();
        let idp = load_from(Some(&file), &[]).unwrap().auth.external.unwrap();
        assert_eq!(idp.audience, "api://portico");
        assert_eq!((idp.scope_claim.as_str(), idp.leeway_seconds), ("scp", 30));
        assert!(idp.token_endpoint.is_some());
    }

    #[test]
    fn unsafe_settings_are_refused_at_load() {
        let error = refusal(&[("PORTICO_AUTH__EXTERNAL__LEEWAY_SECONDS", "120")]);
        assert!(
            error.contains("leeway_seconds is 120") && error.contains("at most 60"),
            "{error}"
        );
        for symmetric in ["HS256", "RS256,HS512"] {
            let error = refusal(&[("PORTICO_AUTH__EXTERNAL__ALGORITHMS", symmetric)]);
            assert!(
                error.contains("HS") && error.contains("is refused: with a shared-secret"),
                "{error}"
            );
        }
        for unknown in ["none", "EdDSA", "PS512", ""] {
            let error = refusal(&[("PORTICO_AUTH__EXTERNAL__ALGORITHMS", unknown)]);
            assert!(error.contains("auth.external.algorithms"), "{error}");
        }
        for url in [
            "http://idp.example/keys",
            "http://127.0.0.1@idp.example/keys",
            "ftp://idp.example/keys",
        ] {
            let error = refusal(&[("PORTICO_AUTH__EXTERNAL__JWKS_URL", url)]);
            assert!(error.contains("must be an https:// URL"), "{error}");
        }
        let error = refusal(&[("PORTICO_AUTH__EXTERNAL__ISSUER", " ")]);
        assert!(error.contains("must not be empty"), "{error}");
    }

    #[test]
    fn plain_http_is_only_for_loopback_keys() {
        for url in [
            "http://127.0.0.1:8080/jwks",
            "http://localhost/jwks",
            "http://[::1]:9000/jwks",
        ] {
            assert!(is_loopback_http(url), "{url}");
        }
        for url in [
            "http://10.0.0.1/jwks",
            "http://localhost.example/jwks",
            "https://127.0.0.1/jwks",
        ] {
            assert!(!is_loopback_http(url), "{url}");
        }
    }
}
