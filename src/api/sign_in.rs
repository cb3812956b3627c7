//! The browser side of the authorization server: `/auth/authorize` (GET and POST), the sign-in,
//! patient picker and consent pages, and the admin-authenticated EHR launch (`/auth/launch`).
//! `auth::authorization` decides; this module carries cookies, forms, pages and their headers.
//!
//! Browser binding: `/auth/authorize` gives the browser a random cookie and keeps its hash with
//! the pending request, so a transaction id taken to another browser is useless; each form also
//! carries the request's CSRF token. Cookies are HttpOnly, SameSite=Lax, scoped to `/auth`, and
//! Secure when the public base is https. Pages are never framed and run no script.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Extension, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{Value as Json, json};

use super::AppState;
use super::audit::{SignedInSearch, record_signed_in_search};
use super::origin::{ClientAddress, PublicBase};
use super::request_id::RequestId;
use crate::access::Access;
use crate::auth::authorization::{
    self, LAUNCH_SECONDS, Refusal, SESSION_SECONDS, Step, consentable, describe,
};
use crate::auth::client_auth::PresentedCredentials;
use crate::auth::endpoints;
use crate::auth::pages::{self, PatientChoice, ScopeChoice};
use crate::auth::scope::Scope;
use crate::auth::token_endpoint::{OAuthError, no_store, parse_form};
use crate::auth::tokens::AccessClaims;
use crate::repository::ReadOutcome;
use crate::search::compile::plan;
use crate::search::parse::parse;
use crate::state::authorizations::{LaunchContext, PendingAuthorization};
use crate::state::clients::constant_time_eq;
use crate::state::users::{Role, User};
use crate::state::{StateError, hash_token, now, random_token};

const BROWSER_COOKIE: &str = "portico_browser";
const SESSION_COOKIE: &str = "portico_session";
/// Failed sign-ins tolerated per account, and per client address, in `FAILURE_WINDOW` seconds.
const FAILURES_PER_ACCOUNT: i64 = 5;
const FAILURES_PER_ADDRESS: i64 = 20;
const FAILURE_WINDOW: i64 = 15 * 60;
/// Patients the picker lists at once (a name narrows them).
const PICKER_ROWS: &str = "20";

pub(super) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

/// A cookie for the pages under `scope` (`endpoints::ISSUER`, or the status page's path), on
/// the public URL: `/auth`, or `/pms/auth` behind a proxy that serves Portico under `/pms`.
pub(super) fn set_cookie(
    base: &PublicBase,
    scope: &str,
    name: &str,
    value: &str,
    max_age: Option<i64>,
) -> HeaderValue {
    let secure = if base.fhir().starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let max_age = max_age
        .map(|seconds| format!("; Max-Age={seconds}"))
        .unwrap_or_default();
    let url = endpoints::absolute(base.fhir(), scope);
    let path = url
        .find("://")
        .and_then(|at| url[at + 3..].find('/').map(|slash| &url[at + 3 + slash..]))
        .unwrap_or(scope);
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; HttpOnly; SameSite=Lax{max_age}{secure}"
    ))
    .expect("cookie values are base64url")
}

/// The origin of an absolute URL (`https://app.example:8443`), for the CSP's form-action.
fn url_origin(url: &str) -> Option<&str> {
    let after_scheme = url.find("://")? + 3;
    let end = url[after_scheme..]
        .find(['/', '?', '#'])
        .map(|at| after_scheme + at)
        .unwrap_or(url.len());
    Some(&url[..end])
}

/// An HTML page with the headers every sign-in page carries: no caching, no framing, no script,
/// forms posting only here (and, for the consent page, to the app it redirects to: browsers
/// apply form-action to the redirect after a form post).
pub(super) fn html(status: StatusCode, body: String, redirect_uri: Option<&str>) -> Response {
    let form_action = match redirect_uri.and_then(url_origin) {
        Some(origin) => format!("'self' {origin}"),
        None => "'self'".to_owned(),
    };
    let policy = HeaderValue::from_str(&format!(
        "default-src 'none'; style-src 'unsafe-inline'; form-action {form_action}; \
         frame-ancestors 'none'; base-uri 'none'"
    ))
    .unwrap_or(HeaderValue::from_static("default-src 'none'"));
    html_response(status, body, policy)
}

/// An HTML page of Portico's own (sign-in pages, the status page): HTML, never cached, never
/// framed, no sniffing, no referrer, under `policy` (its Content-Security-Policy).
pub(super) fn html_response(status: StatusCode, body: String, policy: HeaderValue) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    no_store(headers);
    headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

pub(super) fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    no_store(response.headers_mut());
    response
}

fn refusal(refusal: Refusal) -> Response {
    match refusal {
        Refusal::Page { status, message } => {
            html(status, pages::message("Cannot continue", &message), None)
        }
        Refusal::Redirect { url } => see_other(&url),
    }
}

/// Query or form pairs of a page; names may repeat (the consent form's `scope`).
pub(super) fn pairs(bytes: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(bytes)
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect()
}

pub(super) fn single<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn step_url(step: &Step, tx: &str) -> String {
    let path = match step {
        Step::Login => endpoints::LOGIN,
        Step::PickPatient => endpoints::PICK,
        Step::Consent => endpoints::CONSENT,
    };
    format!("{path}?tx={tx}")
}

/// The user signed in on this browser with the session cookie `name`, if any.
pub(super) async fn session_user(
    state: &AppState,
    headers: &HeaderMap,
    name: &str,
) -> Result<Option<User>, StateError> {
    let Some(session) = cookie(headers, name) else {
        return Ok(None);
    };
    let store = state.auth.tokens.store();
    match store.session_user(&hash_token(&session)).await? {
        Some(username) => store.user(&username).await,
        None => Ok(None),
    }
}

/// `GET /auth/authorize`.
pub async fn authorize_get(
    State(state): State<AppState>,
    Extension(base): Extension<PublicBase>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    authorize(&state, &base, &headers, query.as_bytes()).await
}

/// `POST /auth/authorize` (SMART `authorize-post`).
pub async fn authorize_post(
    State(state): State<AppState>,
    Extension(base): Extension<PublicBase>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return refusal(Refusal::page(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "An authorization request by POST must be a form.",
        ));
    }
    authorize(&state, &base, &headers, &body).await
}

async fn authorize(
    state: &AppState,
    base: &PublicBase,
    headers: &HeaderMap,
    raw: &[u8],
) -> Response {
    let mut parameters = BTreeMap::new();
    for (name, value) in pairs(raw) {
        if parameters.insert(name.clone(), value).is_some() {
            return refusal(Refusal::page(
                StatusCode::BAD_REQUEST,
                format!("The app sent the parameter {name} twice."),
            ));
        }
    }
    let (browser, new_browser) = match cookie(headers, BROWSER_COOKIE) {
        Some(value) if value.len() >= 22 => (value, false),
        _ => (random_token(24), true),
    };
    let answer = async {
        let mut pending =
            authorization::begin(&state.auth, base.fhir(), &parameters, &hash_token(&browser))
                .await?;
        let user = session_user(state, headers, SESSION_COOKIE).await?;
        let step = authorization::next_step(&state.auth, &mut pending, user.as_ref()).await?;
        Ok::<_, Refusal>(see_other(&step_url(&step, &pending.tx)))
    }
    .await;
    let mut response = answer.unwrap_or_else(refusal);
    if new_browser {
        response.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(base, endpoints::ISSUER, BROWSER_COOKIE, &browser, None),
        );
    }
    response
}

/// The pending request `tx`, if it belongs to this browser and, for a form, carries its CSRF token.
async fn pending_for(
    state: &AppState,
    headers: &HeaderMap,
    tx: Option<&str>,
    csrf: Option<Option<&str>>,
) -> Result<PendingAuthorization, Refusal> {
    let expired = || {
        Refusal::page(
            StatusCode::BAD_REQUEST,
            "This sign-in has expired or is unknown; start again from the app.",
        )
    };
    let tx = tx.ok_or_else(expired)?;
    let pending = state
        .auth
        .tokens
        .store()
        .pending_authorization(tx)
        .await?
        .ok_or_else(expired)?;
    let browser = cookie(headers, BROWSER_COOKIE).unwrap_or_default();
    if !constant_time_eq(
        hash_token(&browser).as_bytes(),
        pending.browser_hash.as_bytes(),
    ) {
        return Err(Refusal::page(
            StatusCode::FORBIDDEN,
            "This sign-in was started in another browser; start again from the app.",
        ));
    }
    if let Some(csrf) = csrf
        && !constant_time_eq(csrf.unwrap_or("").as_bytes(), pending.csrf.as_bytes())
    {
        return Err(Refusal::page(
            StatusCode::FORBIDDEN,
            "The form was not the one this server showed; start again from the app.",
        ));
    }
    Ok(pending)
}

/// The pending request a posted page form belongs to: its `tx`, checked against this browser and
/// the form's CSRF token.
async fn posted_pending(
    state: &AppState,
    headers: &HeaderMap,
    form: &[(String, String)],
) -> Result<PendingAuthorization, Refusal> {
    pending_for(
        state,
        headers,
        single(form, "tx"),
        Some(single(form, "csrf")),
    )
    .await
}

/// The pending request and its signed-in user, for the pages after the login; `None` sends the
/// browser back to the login page.
async fn signed_in(
    state: &AppState,
    headers: &HeaderMap,
    pending: &PendingAuthorization,
) -> Result<Option<User>, Refusal> {
    let user = session_user(state, headers, SESSION_COOKIE).await?;
    Ok(user.filter(|u| pending.username.as_deref() == Some(u.username.as_str())))
}

async fn app_name(state: &AppState, client_id: &str) -> Result<String, Refusal> {
    Ok(state
        .auth
        .tokens
        .store()
        .client(client_id)
        .await?
        .map(|c| c.name)
        .unwrap_or_else(|| client_id.to_owned()))
}

/// `GET /auth/login?tx=...`.
pub async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let query = pairs(query.unwrap_or_default().as_bytes());
    let answer = async {
        let pending = pending_for(&state, &headers, single(&query, "tx"), None).await?;
        let app = app_name(&state, &pending.client_id).await?;
        Ok::<_, Refusal>(html(
            StatusCode::OK,
            pages::login(&pending.tx, &pending.csrf, &app, None),
            Some(&pending.redirect_uri),
        ))
    }
    .await;
    answer.unwrap_or_else(refusal)
}

/// `POST /auth/login`: checks the password (rate-limited per account and per address), starts
/// a session and moves on.
pub async fn login(
    State(state): State<AppState>,
    Extension(base): Extension<PublicBase>,
    Extension(address): Extension<ClientAddress>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = pairs(&body);
    let answer = async {
        let mut pending = posted_pending(&state, &headers, &form).await?;
        let app = app_name(&state, &pending.client_id).await?;
        let username = single(&form, "username").unwrap_or("").trim().to_owned();
        let password = single(&form, "password").unwrap_or("");
        let again = |status: StatusCode, error: &str| {
            html(
                status,
                pages::login(&pending.tx, &pending.csrf, &app, Some(error)),
                Some(&pending.redirect_uri),
            )
        };
        let user = match check_password(&state, &address, &username, password).await? {
            PasswordCheck::Accepted(user) => user,
            PasswordCheck::Refused => {
                return Ok(again(
                    StatusCode::UNAUTHORIZED,
                    "Wrong user name or password.",
                ));
            }
            PasswordCheck::TooMany => {
                return Ok(again(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many failed sign-ins; wait 15 minutes and try again.",
                ));
            }
        };
        let session = random_token(24);
        state
            .auth
            .tokens
            .store()
            .start_session(
                &hash_token(&session),
                &user.username,
                now() + SESSION_SECONDS,
            )
            .await?;
        let step = authorization::next_step(&state.auth, &mut pending, Some(&user)).await?;
        let mut response = see_other(&step_url(&step, &pending.tx));
        response.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(
                &base,
                endpoints::ISSUER,
                SESSION_COOKIE,
                &session,
                Some(SESSION_SECONDS),
            ),
        );
        Ok::<_, Refusal>(response)
    }
    .await;
    answer.unwrap_or_else(refusal)
}

pub(super) enum PasswordCheck {
    Accepted(User),
    Refused,
    TooMany,
}

/// A password check under the sign-in rate limits: after `FAILURES_PER_ACCOUNT` failures for a
/// name or `FAILURES_PER_ADDRESS` from an address within the window, nothing is checked at all.
pub(super) async fn check_password(
    state: &AppState,
    address: &ClientAddress,
    username: &str,
    password: &str,
) -> Result<PasswordCheck, StateError> {
    let store = state.auth.tokens.store();
    let account = format!("user:{username}");
    let from = address.0.map(|ip| format!("addr:{ip}"));
    let since = now() - FAILURE_WINDOW;
    if store.login_failures_since(&account, since).await? >= FAILURES_PER_ACCOUNT {
        return Ok(PasswordCheck::TooMany);
    }
    if let Some(from) = &from
        && store.login_failures_since(from, since).await? >= FAILURES_PER_ADDRESS
    {
        return Ok(PasswordCheck::TooMany);
    }
    match store.verify_password(username, password).await? {
        Some(user) => Ok(PasswordCheck::Accepted(user)),
        None => {
            tracing::warn!(address = ?address.0, "failed sign-in");
            let subjects: Vec<String> = std::iter::once(account).chain(from).collect();
            store.record_login_failure(&subjects).await?;
            Ok(PasswordCheck::Refused)
        }
    }
}

/// Patients whose name matches `query` (all when empty), as the picker lists them. A clinician
/// may choose any patient: their own access is every patient's records.
async fn find_patients(state: &AppState, query: &str) -> Result<Vec<PatientChoice>, Refusal> {
    let failed = |why: String| {
        tracing::warn!(error = %why, "the patient picker's search failed");
        Refusal::page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Patients cannot be listed right now; try again shortly.",
        )
    };
    let Some(def) = state.adapter.resources.get("Patient") else {
        return Ok(Vec::new());
    };
    let mut parameters = vec![("_count".to_owned(), PICKER_ROWS.to_owned())];
    if !query.trim().is_empty() {
        parameters.push(("name".to_owned(), query.trim().to_owned()));
    }
    let request = parse(&parameters).map_err(|e| failed(format!("{e:?}")))?;
    let timezone = state.adapter.timezone;
    let local_now = Utc::now().with_timezone(&timezone).naive_local();
    let plan = plan(
        def,
        &state.adapter.resources,
        request,
        false,
        timezone,
        local_now,
    )
    .map_err(|e| failed(format!("{e:?}")))?;
    let page = state
        .repository
        .search(&plan, None, &Access::everything(), false)
        .await
        .map_err(|e| failed(e.to_string()))?;
    Ok(page
        .matches
        .into_iter()
        .map(|loaded| {
            let patient = &loaded.resource.resource.into_json();
            PatientChoice {
                id: patient["id"].as_str().unwrap_or_default().to_owned(),
                label: patient_label(patient),
            }
        })
        .collect())
}

/// "Given Family (born 1970-01-02)" from a Patient resource.
fn patient_label(patient: &Json) -> String {
    let name = &patient["name"][0];
    let mut parts: Vec<String> = name["given"]
        .as_array()
        .map(|given| {
            given
                .iter()
                .filter_map(|g| g.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if let Some(family) = name["family"].as_str() {
        parts.push(family.to_owned());
    }
    let mut label = if parts.is_empty() {
        format!("Patient {}", patient["id"].as_str().unwrap_or_default())
    } else {
        parts.join(" ")
    };
    if let Some(born) = patient["birthDate"].as_str() {
        label.push_str(&format!(" (born {born})"));
    }
    label
}

async fn read_patient(state: &AppState, id: &str) -> Result<Option<Json>, Refusal> {
    match state
        .repository
        .read("Patient", id, &Access::everything())
        .await
    {
        Ok(ReadOutcome::Found(patient)) => Ok(Some(patient.into_json())),
        Ok(_) => Ok(None),
        Err(e) => {
            tracing::warn!(error = %e, "the patient picker's read failed");
            Err(Refusal::page(
                StatusCode::SERVICE_UNAVAILABLE,
                "The patient cannot be read right now; try again shortly.",
            ))
        }
    }
}

/// `GET /auth/pick?tx=...[&q=name]`. The list is PHI shown to the clinician: it is audited like
/// a FHIR search by that user through the app being authorized, and withheld if it cannot be.
pub async fn pick_page(
    State(state): State<AppState>,
    Extension(base): Extension<PublicBase>,
    Extension(address): Extension<ClientAddress>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let query = pairs(query.unwrap_or_default().as_bytes());
    let answer = async {
        let pending = pending_for(&state, &headers, single(&query, "tx"), None).await?;
        let Some(user) = signed_in(&state, &headers, &pending).await? else {
            return Ok(see_other(&step_url(&Step::Login, &pending.tx)));
        };
        let name = single(&query, "q").unwrap_or("");
        let patients = find_patients(&state, name).await?;
        let issued_at = now();
        let who = AccessClaims {
            iss: endpoints::absolute(base.fhir(), endpoints::ISSUER),
            sub: user.username.clone(),
            aud: base.fhir().to_owned(),
            exp: issued_at,
            iat: issued_at,
            nbf: issued_at,
            jti: format!("sign-in {}", pending.tx),
            client_id: pending.client_id.clone(),
            scope: String::new(),
            patient: None,
            encounter: None,
            fhir_user: user.fhir_user.clone(),
        };
        let search = form_urlencoded::Serializer::new(String::new())
            .append_pair("name", name)
            .append_pair("_count", PICKER_ROWS)
            .finish();
        record_signed_in_search(
            &state,
            SignedInSearch {
                who: &who,
                resource_type: "Patient",
                query: &search,
                patients: &patients.iter().map(|p| p.id.clone()).collect(),
                peer: address.0,
                base: base.fhir(),
                request_id: &request_id,
            },
        )
        .await
        .map_err(|_| {
            Refusal::page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Patients cannot be listed right now (the audit trail is unavailable); try again shortly.",
            )
        })?;
        let app = app_name(&state, &pending.client_id).await?;
        Ok::<_, Refusal>(html(
            StatusCode::OK,
            pages::picker(&pending.tx, &pending.csrf, &app, name, &patients),
            Some(&pending.redirect_uri),
        ))
    }
    .await;
    answer.unwrap_or_else(refusal)
}

/// `POST /auth/pick`: the chosen patient must exist.
pub async fn pick(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let form = pairs(&body);
    let answer = async {
        let pending = posted_pending(&state, &headers, &form).await?;
        let Some(user) = signed_in(&state, &headers, &pending).await? else {
            return Ok(see_other(&step_url(&Step::Login, &pending.tx)));
        };
        if user.role != Role::Clinician || pending.from_launch {
            return Err(Refusal::page(
                StatusCode::FORBIDDEN,
                "The patient of this sign-in is already decided.",
            ));
        }
        let patient = single(&form, "patient").unwrap_or("");
        if patient.is_empty() || read_patient(&state, patient).await?.is_none() {
            return Err(Refusal::page(
                StatusCode::BAD_REQUEST,
                "That patient does not exist.",
            ));
        }
        state
            .auth
            .tokens
            .store()
            .set_authorization_patient(&pending.tx, patient)
            .await?;
        Ok::<_, Refusal>(see_other(&step_url(&Step::Consent, &pending.tx)))
    }
    .await;
    answer.unwrap_or_else(refusal)
}

/// `GET /auth/consent?tx=...`.
pub async fn consent_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let query = pairs(query.unwrap_or_default().as_bytes());
    let answer = async {
        let mut pending = pending_for(&state, &headers, single(&query, "tx"), None).await?;
        let Some(user) = signed_in(&state, &headers, &pending).await? else {
            return Ok(see_other(&step_url(&Step::Login, &pending.tx)));
        };
        // The picker cannot be skipped by going to the consent page directly.
        let step = authorization::next_step(&state.auth, &mut pending, Some(&user)).await?;
        if step != Step::Consent {
            return Ok(see_other(&step_url(&step, &pending.tx)));
        }
        let patient = match &pending.patient {
            Some(id) => Some(
                read_patient(&state, id)
                    .await?
                    .map(|p| patient_label(&p))
                    .unwrap_or_else(|| format!("Patient {id}")),
            ),
            None => None,
        };
        let scopes = consentable(&pending.scope);
        let choices: Vec<ScopeChoice> = scopes
            .iter()
            .map(|s| ScopeChoice {
                scope: s.to_string(),
                description: describe(s),
            })
            .collect();
        let app = app_name(&state, &pending.client_id).await?;
        Ok::<_, Refusal>(html(
            StatusCode::OK,
            pages::consent(
                &pending.tx,
                &pending.csrf,
                &app,
                &user.username,
                patient.as_deref(),
                &choices,
                scopes.contains(&Scope::OfflineAccess),
            ),
            Some(&pending.redirect_uri),
        ))
    }
    .await;
    answer.unwrap_or_else(refusal)
}

/// `POST /auth/consent`: the decision and the scopes left ticked; sends the browser back to the
/// app with a code or `access_denied`.
pub async fn consent(
    State(state): State<AppState>,
    Extension(base): Extension<PublicBase>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = pairs(&body);
    let answer = async {
        let mut pending = posted_pending(&state, &headers, &form).await?;
        let Some(user) = signed_in(&state, &headers, &pending).await? else {
            return Ok(see_other(&step_url(&Step::Login, &pending.tx)));
        };
        let step = authorization::next_step(&state.auth, &mut pending, Some(&user)).await?;
        if step != Step::Consent {
            return Ok(see_other(&step_url(&step, &pending.tx)));
        }
        let chosen: Vec<String> = form
            .iter()
            .filter(|(name, _)| name == "scope")
            .map(|(_, value)| value.clone())
            .collect();
        let allow = single(&form, "decision") == Some("allow");
        let url = authorization::decide(&state.auth, base.fhir(), &pending, allow, &chosen).await?;
        Ok::<_, Refusal>(see_other(&url))
    }
    .await;
    answer.unwrap_or_else(refusal)
}

/// `POST /auth/launch` (HTTP Basic of an admin user; form `client_id`, `patient`, optional
/// `encounter`): an EHR launch context for one client, returned as the opaque `launch` value.
pub async fn launch(
    State(state): State<AppState>,
    Extension(address): Extension<ClientAddress>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answer = async {
        let (username, password) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(PresentedCredentials::basic_from_header)
            .transpose()
            .map_err(|_| {
                launch_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "malformed Basic credentials",
                )
            })?
            .ok_or_else(|| {
                launch_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "an administrator's Basic credentials are required",
                )
            })?;
        let store_failed = |e: StateError| {
            tracing::error!(error = %e, "the state store failed during a launch");
            launch_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "try again shortly",
            )
        };
        let user = match check_password(&state, &address, &username, &password)
            .await
            .map_err(store_failed)?
        {
            PasswordCheck::Accepted(user) if user.role == Role::Admin => user,
            PasswordCheck::Accepted(_) | PasswordCheck::Refused => {
                return Err(launch_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "an administrator's credentials are required",
                ));
            }
            PasswordCheck::TooMany => {
                return Err(launch_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "invalid_client",
                    "too many failed sign-ins; wait 15 minutes",
                ));
            }
        };
        let form = parse_form(&headers, &body).map_err(IntoResponse::into_response)?;
        let client_id = form.get("client_id").ok_or_else(|| {
            launch_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "client_id is missing",
            )
        })?;
        let context = LaunchContext {
            client_id: client_id.clone(),
            patient: form.get("patient").cloned(),
            encounter: form.get("encounter").cloned(),
        };
        let value = create_launch(&state, &context, &user.username)
            .await
            .map_err(|e| match e {
                StateError::Invalid(why) => {
                    launch_error(StatusCode::BAD_REQUEST, "invalid_request", &why)
                }
                other => store_failed(other),
            })?;
        let mut response =
            axum::Json(json!({ "launch": value, "expires_in": LAUNCH_SECONDS })).into_response();
        no_store(response.headers_mut());
        Ok::<_, Response>(response)
    }
    .await;
    answer.unwrap_or_else(|response| response)
}

fn launch_error(status: StatusCode, error: &'static str, description: &str) -> Response {
    let mut response = OAuthError::new(error, description).into_response();
    *response.status_mut() = status;
    response
}

/// Checks the launch's patient against the PMS, then records it (`authorization::new_launch`).
async fn create_launch(
    state: &AppState,
    context: &LaunchContext,
    created_by: &str,
) -> Result<String, StateError> {
    if let Some(patient) = &context.patient {
        let known = matches!(
            state
                .repository
                .read("Patient", patient, &Access::everything())
                .await,
            Ok(ReadOutcome::Found(_))
        );
        if !known {
            return Err(StateError::Invalid(format!("no Patient/{patient}")));
        }
    }
    authorization::new_launch(state.auth.tokens.store(), context, created_by).await
}

/// `GET /auth/.well-known/openid-configuration`: OpenID Connect discovery for Portico's issuer,
/// so apps that sign users in can find the keys that verify id_tokens.
pub async fn openid_configuration(Extension(base): Extension<PublicBase>) -> Response {
    let fhir = base.fhir();
    axum::Json(json!({
        "issuer": endpoints::absolute(fhir, endpoints::ISSUER),
        "authorization_endpoint": endpoints::absolute(fhir, endpoints::AUTHORIZE),
        "token_endpoint": endpoints::absolute(fhir, endpoints::TOKEN),
        "jwks_uri": endpoints::absolute(fhir, endpoints::JWKS),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "fhirUser", "profile"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nonce", "fhirUser"],
        "code_challenge_methods_supported": ["S256"],
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_and_origins_are_read_exactly() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; portico_session=abc; portico_browser=xyz"
                .parse()
                .unwrap(),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&headers, "portico"), None);
        assert_eq!(
            url_origin("https://app.example:8443/cb?x=1"),
            Some("https://app.example:8443")
        );
        assert_eq!(
            url_origin("http://127.0.0.1:9/"),
            Some("http://127.0.0.1:9")
        );
        assert_eq!(url_origin("not a url"), None);
    }

    #[test]
    fn session_cookies_are_locked_down() {
        let https = PublicBase::for_tests("https://fhir.example/fhir");
        let value = set_cookie(&https, endpoints::ISSUER, SESSION_COOKIE, "v", Some(60));
        assert_eq!(
            value.to_str().unwrap(),
            "portico_session=v; Path=/auth; HttpOnly; SameSite=Lax; Max-Age=60; Secure"
        );
        let http = PublicBase::for_tests("http://127.0.0.1:8080/fhir");
        assert!(
            !set_cookie(&http, endpoints::ISSUER, BROWSER_COOKIE, "v", None)
                .to_str()
                .unwrap()
                .contains("Secure")
        );
    }
}
