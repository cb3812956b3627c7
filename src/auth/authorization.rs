//! The authorization endpoint's decisions (SMART App Launch, RFC 6749 §4.1, RFC 9700): checking
//! an authorization request, deciding the next step of a sign-in (login, patient picker,
//! consent), and issuing the single-use code. No HTTP here: `api::sign_in` carries cookies, forms
//! and pages; this module says what is allowed.
//!
//! Order of checks, because of where an error may be sent: the client and its exact redirect URI
//! first (when either is wrong, the browser gets Portico's own error page and is never sent to
//! the URI); every later error is a redirect to that registered URI with `error` and `state`.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::auth::endpoints;
use crate::auth::scope::{self, Context, Scope};
use crate::auth::token_endpoint::AuthServer;
use crate::state::authorizations::{AuthorizationCode, PendingAuthorization};
use crate::state::clients::{Client, constant_time_eq};
use crate::state::users::{Role, User};
use crate::state::{StateError, hash_token, now, random_token};

/// A code is exchanged within this many seconds or never (issue 8: at most 60).
pub const CODE_SECONDS: i64 = 60;
/// The time a person has to sign in and consent.
pub const SIGN_IN_SECONDS: i64 = 600;
/// A sign-in session lasts this long (the browser skips the login page meanwhile).
pub const SESSION_SECONDS: i64 = 8 * 3600;
/// An EHR launch value is used within this many seconds.
pub const LAUNCH_SECONDS: i64 = 300;

/// Why an authorization request stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Shown on Portico's own page: the client or its redirect URI cannot be trusted, or the
    /// sign-in itself went wrong.
    Page { status: StatusCode, message: String },
    /// Sent back to the app at its registered redirect URI (RFC 6749 §4.1.2.1).
    Redirect { url: String },
}

impl Refusal {
    pub fn page(status: StatusCode, message: impl Into<String>) -> Refusal {
        Refusal::Page {
            status,
            message: message.into(),
        }
    }

    fn unavailable(error: StateError) -> Refusal {
        tracing::error!(error = %error, "the state store failed during sign-in");
        Refusal::page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-in is unavailable right now; try again shortly.",
        )
    }
}

impl From<StateError> for Refusal {
    fn from(error: StateError) -> Refusal {
        Refusal::unavailable(error)
    }
}

/// Where the app gets its answer: its redirect URI with the parameters added (RFC 9207's `iss`
/// included, so an app talking to several servers can tell which one answered).
pub fn redirect_to(redirect_uri: &str, parameters: &[(&str, &str)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in parameters {
        query.append_pair(name, value);
    }
    let query = query.finish();
    // A fragment cannot carry the answer (the browser keeps it from the app's server).
    let base = redirect_uri.split('#').next().unwrap_or(redirect_uri);
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}{query}")
}

/// The app's redirect URI carrying an RFC 6749 §4.1.2.1 error.
fn error_url(
    fhir_base: &str,
    redirect_uri: &str,
    state: Option<&str>,
    error: &str,
    description: &str,
) -> String {
    let issuer = endpoints::absolute(fhir_base, endpoints::ISSUER);
    let mut parameters = vec![("error", error), ("error_description", description)];
    if let Some(state) = state {
        parameters.push(("state", state));
    }
    parameters.push(("iss", &issuer));
    redirect_to(redirect_uri, &parameters)
}

/// Whether `challenge` can be an S256 code challenge (the base64url SHA-256 of a verifier).
fn is_s256_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether a presented verifier belongs to the challenge (RFC 7636 §4.6); the verifier must have
/// the RFC's shape (43-128 unreserved characters).
pub fn verifier_matches(verifier: &str, challenge: &str) -> bool {
    let shaped = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    shaped && {
        let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        constant_time_eq(computed.as_bytes(), challenge.as_bytes())
    }
}

/// Checks an authorization request (the query of `GET /auth/authorize` or the form of its POST)
/// and records it as pending, bound to the browser whose cookie hashes to `browser_hash`.
pub async fn begin(
    server: &AuthServer,
    fhir_base: &str,
    parameters: &BTreeMap<String, String>,
    browser_hash: &str,
) -> Result<PendingAuthorization, Refusal> {
    let get = |name: &str| parameters.get(name).map(String::as_str);
    let client_id = get("client_id").ok_or_else(|| {
        Refusal::page(
            StatusCode::BAD_REQUEST,
            "The app sent no client_id; it cannot be signed in to.",
        )
    })?;
    let client = server
        .tokens
        .store()
        .client(client_id)
        .await?
        .ok_or_else(|| {
            Refusal::page(
                StatusCode::BAD_REQUEST,
                "This app is not registered with this server.",
            )
        })?;
    let redirect_uri = get("redirect_uri")
        .filter(|uri| {
            client
                .redirect_uris
                .iter()
                .any(|registered| registered == uri)
        })
        .ok_or_else(|| {
            Refusal::page(
                StatusCode::BAD_REQUEST,
                "The app's redirect_uri is missing or is not one registered for it.",
            )
        })?;
    let state = get("state").filter(|s| !s.is_empty());
    let refuse = |error: &str, description: &str| Refusal::Redirect {
        url: error_url(fhir_base, redirect_uri, state, error, description),
    };
    if get("response_type") != Some("code") {
        return Err(refuse(
            "unsupported_response_type",
            "only response_type=code is supported",
        ));
    }
    let state = state.ok_or_else(|| refuse("invalid_request", "state is required"))?;
    if state.len() > 2048 {
        return Err(refuse("invalid_request", "state is too long"));
    }
    let aud = get("aud").ok_or_else(|| refuse("invalid_request", "aud is required"))?;
    if aud.trim_end_matches('/') != fhir_base.trim_end_matches('/') {
        return Err(refuse(
            "invalid_request",
            "aud is not this server's FHIR base URL",
        ));
    }
    if get("code_challenge_method") != Some("S256") {
        return Err(refuse(
            "invalid_request",
            "PKCE with code_challenge_method=S256 is required (plain is not supported)",
        ));
    }
    let code_challenge = get("code_challenge")
        .filter(|c| is_s256_challenge(c))
        .ok_or_else(|| {
            refuse(
                "invalid_request",
                "code_challenge is missing or is not an S256 challenge",
            )
        })?;
    let (granted, launch) = requested_scopes(server, &client, get("scope"), get("launch"))
        .await
        .map_err(|(error, description)| refuse(error, &description))?;
    let pending = PendingAuthorization {
        tx: random_token(18),
        browser_hash: browser_hash.to_owned(),
        csrf: random_token(18),
        client_id: client.client_id.clone(),
        redirect_uri: redirect_uri.to_owned(),
        scope: scope::format_scopes(&granted),
        state: state.to_owned(),
        code_challenge: code_challenge.to_owned(),
        nonce: get("nonce").map(str::to_owned),
        username: None,
        from_launch: launch.as_ref().is_some_and(|l| l.patient.is_some()),
        patient: launch.as_ref().and_then(|l| l.patient.clone()),
        encounter: launch.and_then(|l| l.encounter),
        expires_at: now() + SIGN_IN_SECONDS,
    };
    server.tokens.store().begin_authorization(&pending).await?;
    Ok(pending)
}

/// The scopes an authorization request may lead to (what the client asked for, narrowed to what
/// it is registered for; never system/ scopes) and the EHR launch context its `launch` names.
async fn requested_scopes(
    server: &AuthServer,
    client: &Client,
    requested: Option<&str>,
    launch: Option<&str>,
) -> Result<
    (
        Vec<Scope>,
        Option<crate::state::authorizations::LaunchContext>,
    ),
    (&'static str, String),
> {
    let requested = requested
        .filter(|s| !s.trim().is_empty())
        .ok_or(("invalid_scope", "scope is required".to_owned()))?;
    // Unknown words are left out of the grant rather than failing the sign-in: the token
    // response's `scope` tells the app what it got.
    let (requested, _unknown) = scope::parse_scopes_lenient(requested);
    let (allowed, _) = scope::parse_scopes_lenient(&client.allowed_scopes);
    let granted: Vec<Scope> = scope::narrow(&requested, &allowed)
        .into_iter()
        .filter(|s| !matches!(s, Scope::Resource(r) if r.context == Context::System))
        .collect();
    if !granted.iter().any(|s| {
        matches!(
            s,
            Scope::Resource(_) | Scope::OpenId | Scope::FhirUser | Scope::Profile
        )
    }) {
        return Err((
            "invalid_scope",
            "none of the requested scopes may be granted to this app".to_owned(),
        ));
    }
    let context = match (granted.contains(&Scope::Launch), launch) {
        (true, Some(launch)) => Some(
            server
                .tokens
                .store()
                .take_launch(&hash_token(launch), &client.client_id)
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "cannot read launch contexts");
                    ("temporarily_unavailable", "try again shortly".to_owned())
                })?
                .ok_or((
                    "invalid_request",
                    "the launch value is unknown, expired, used, or for another app".to_owned(),
                ))?,
        ),
        (true, None) => {
            return Err((
                "invalid_request",
                "scope launch needs the launch parameter the EHR gave".to_owned(),
            ));
        }
        (false, _) => None,
    };
    Ok((granted, context))
}

/// What the browser is shown next for a pending request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Login,
    PickPatient,
    Consent,
}

/// Whether the scopes need a patient in context: launch/patient, or any patient/ scope.
pub fn needs_patient(scope_text: &str) -> bool {
    scope::parse_scopes_lenient(scope_text)
        .0
        .iter()
        .any(|s| match s {
            Scope::LaunchPatient => true,
            Scope::Resource(r) => r.context == Context::Patient,
            _ => false,
        })
}

/// The next step for `pending` now that `user` (if any) is signed in. A patient-portal user's
/// patient is their own; an EHR launch's patient must be theirs too.
pub async fn next_step(
    server: &AuthServer,
    pending: &mut PendingAuthorization,
    user: Option<&User>,
) -> Result<Step, Refusal> {
    let Some(user) = user else {
        return Ok(Step::Login);
    };
    if pending.username.as_deref() != Some(&user.username) {
        server
            .tokens
            .store()
            .set_authorization_user(&pending.tx, &user.username)
            .await?;
        pending.username = Some(user.username.clone());
    }
    match user.role {
        Role::Patient => {
            let own = user.patient_id().unwrap_or_default().to_owned();
            match &pending.patient {
                Some(patient) if patient != &own => {
                    return Err(Refusal::page(
                        StatusCode::FORBIDDEN,
                        "This launch is for another patient's record.",
                    ));
                }
                Some(_) => {}
                None => {
                    server
                        .tokens
                        .store()
                        .set_authorization_patient(&pending.tx, &own)
                        .await?;
                    pending.patient = Some(own);
                }
            }
            Ok(Step::Consent)
        }
        Role::Clinician if pending.patient.is_none() && needs_patient(&pending.scope) => {
            Ok(Step::PickPatient)
        }
        Role::Clinician => Ok(Step::Consent),
        Role::Admin if only_operator_scopes(&pending.scope) => Ok(Step::Consent),
        Role::Admin => Err(Refusal::page(
            StatusCode::FORBIDDEN,
            "Administrators cannot authorize apps to read patient data (only the audit trail and Portico's Groups); sign in as a clinician or a patient.",
        )),
    }
}

/// Whether an administrator may grant these scopes: no patient context, and every resource
/// scope is for Portico's own operator resources (the audit trail, Groups: an admin's review
/// and cohort tools), never for PMS data.
fn only_operator_scopes(scope_text: &str) -> bool {
    !needs_patient(scope_text)
        && scope::parse_scopes_lenient(scope_text)
            .0
            .iter()
            .all(|s| match s {
                Scope::Resource(r) => {
                    crate::auth::permissions::decided_by_their_endpoints(r.resource_type.as_deref())
                }
                _ => true,
            })
}

/// The scopes shown on the consent page: every one the user may untick. Launch context scopes
/// are not among them: they come with the patient the user picked or the EHR chose.
pub fn consentable(scope_text: &str) -> Vec<Scope> {
    scope::parse_scopes_lenient(scope_text)
        .0
        .into_iter()
        .filter(|s| {
            !matches!(
                s,
                Scope::Launch | Scope::LaunchPatient | Scope::LaunchEncounter
            )
        })
        .collect()
}

/// A scope in plain words for the consent page.
pub fn describe(scope: &Scope) -> String {
    match scope {
        Scope::Resource(resource) => {
            let what = match resource.resource_type.as_deref() {
                None => "all health records".to_owned(),
                Some(resource_type) => format!("{resource_type} records"),
            };
            let verb = match (resource.read, resource.search) {
                (true, true) => "Read and search",
                (true, false) => "Read",
                (false, true) => "Search",
                (false, false) => "Use",
            };
            let whose = match resource.context {
                Context::Patient => "of the selected patient",
                Context::User => "that you can see",
                Context::System => "of every patient",
            };
            let only = resource
                .filter
                .iter()
                .map(|(name, value)| {
                    let value = value.rsplit('|').next().unwrap_or(value);
                    format!("{name} {value}")
                })
                .collect::<Vec<_>>();
            if only.is_empty() {
                format!("{verb} {what} {whose}")
            } else {
                format!("{verb} {what} {whose}, only where {}", only.join(" and "))
            }
        }
        Scope::OpenId | Scope::FhirUser | Scope::Profile => {
            "Know who you are (your user name and your record on this server)".to_owned()
        }
        Scope::OfflineAccess => {
            "Keep access after you close the app, until you revoke it".to_owned()
        }
        Scope::OnlineAccess => "Keep access while you use the app".to_owned(),
        Scope::Launch => "Know which record the EHR has open".to_owned(),
        Scope::LaunchPatient => "Know which patient you choose".to_owned(),
        Scope::LaunchEncounter => "Know which encounter the EHR has open".to_owned(),
    }
}

/// Ends `pending` with the user's decision: `chosen` are the consentable scopes left ticked
/// (anything not requested is ignored). Returns where the browser goes: the app's redirect URI
/// with a code, or with `access_denied`.
pub async fn decide(
    server: &AuthServer,
    fhir_base: &str,
    pending: &PendingAuthorization,
    allow: bool,
    chosen: &[String],
) -> Result<String, Refusal> {
    let refuse = |error: &str, description: &str| {
        error_url(
            fhir_base,
            &pending.redirect_uri,
            Some(&pending.state),
            error,
            description,
        )
    };
    let store = server.tokens.store();
    // Only one submission of a pending request leads anywhere.
    if !store.finish_authorization(&pending.tx).await? {
        return Err(Refusal::page(
            StatusCode::BAD_REQUEST,
            "This sign-in was already completed or has expired; start again from the app.",
        ));
    }
    if !allow {
        return Ok(refuse("access_denied", "the user declined"));
    }
    let requested = scope::parse_scopes_lenient(&pending.scope).0;
    let granted: Vec<Scope> = requested
        .into_iter()
        .filter(|s| match s {
            Scope::Launch | Scope::LaunchPatient | Scope::LaunchEncounter => true,
            other => chosen.iter().any(|c| c == &other.to_string()),
        })
        .collect();
    let anything = granted.iter().any(|s| {
        matches!(
            s,
            Scope::Resource(_) | Scope::OpenId | Scope::FhirUser | Scope::Profile
        )
    });
    if !anything {
        return Ok(refuse("access_denied", "the user granted nothing"));
    }
    if needs_patient(&scope::format_scopes(&granted)) && pending.patient.is_none() {
        return Err(Refusal::page(
            StatusCode::BAD_REQUEST,
            "No patient was chosen for this app.",
        ));
    }
    let username = pending
        .username
        .clone()
        .ok_or_else(|| Refusal::page(StatusCode::BAD_REQUEST, "Nobody signed in for this app."))?;
    let code = random_token(32);
    store
        .store_code(
            &hash_token(&code),
            &AuthorizationCode {
                client_id: pending.client_id.clone(),
                redirect_uri: pending.redirect_uri.clone(),
                scope: scope::format_scopes(&granted),
                code_challenge: pending.code_challenge.clone(),
                username,
                patient: pending.patient.clone(),
                encounter: pending.encounter.clone(),
                nonce: pending.nonce.clone(),
                family_id: random_token(16),
                expires_at: now() + CODE_SECONDS,
            },
        )
        .await?;
    let issuer = endpoints::absolute(fhir_base, endpoints::ISSUER);
    Ok(redirect_to(
        &pending.redirect_uri,
        &[("code", &code), ("state", &pending.state), ("iss", &issuer)],
    ))
}

/// Records an EHR launch context for a registered client; returns the opaque launch value
/// (shown once, kept as a hash, usable once within `LAUNCH_SECONDS`). `/auth/launch` and
/// `portico launch` both come here.
pub async fn new_launch(
    store: &crate::state::StateStore,
    context: &crate::state::authorizations::LaunchContext,
    created_by: &str,
) -> Result<String, StateError> {
    if store.client(&context.client_id).await?.is_none() {
        return Err(StateError::Invalid(format!(
            "no client {} (see portico clients list)",
            context.client_id
        )));
    }
    let value = random_token(24);
    store
        .create_launch(
            &hash_token(&value),
            context,
            created_by,
            now() + LAUNCH_SECONDS,
        )
        .await?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_keep_the_registered_query_and_drop_fragments() {
        assert_eq!(
            redirect_to(
                "https://app.example/cb",
                &[("code", "a b"), ("state", "x&y")]
            ),
            "https://app.example/cb?code=a+b&state=x%26y"
        );
        assert_eq!(
            redirect_to("https://app.example/cb?tenant=1#frag", &[("code", "c")]),
            "https://app.example/cb?tenant=1&code=c"
        );
    }

    #[test]
    fn only_s256_verifiers_of_the_right_shape_match() {
        // RFC 7636 appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(is_s256_challenge(challenge));
        assert!(verifier_matches(verifier, challenge));
        assert!(!verifier_matches(challenge, challenge), "plain downgrade");
        assert!(!verifier_matches("", challenge));
        assert!(!verifier_matches(&format!("{verifier}!"), challenge));
        assert!(!verifier_matches("short", challenge));
    }

    #[test]
    fn consent_speaks_plainly_and_keeps_launch_context_out_of_the_choice() {
        let scopes = "launch/patient openid fhirUser patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory offline_access";
        let shown: Vec<String> = consentable(scopes).iter().map(describe).collect();
        assert_eq!(
            shown,
            [
                "Know who you are (your user name and your record on this server)",
                "Know who you are (your user name and your record on this server)",
                "Read and search Observation records of the selected patient, only where category laboratory",
                "Keep access after you close the app, until you revoke it",
            ]
        );
        assert!(needs_patient(scopes));
        assert!(!needs_patient("openid fhirUser user/*.rs"));
    }
}
