//! `/fhir/Subscription`: create, read, update, delete and search a client's subscriptions, and
//! the backport operations `$status` (type and instance), `$events` and `$get-ws-binding-token`,
//! and the websocket channel's socket (`subscriptions::websocket`). Subscriptions live in
//! the state store; each belongs to the client and user whose token created it, acts under that
//! token's claims, and is seen only by them. SMART scopes on `Subscription` decide what a token
//! may do (`c`, `r`, `u`, `d`, `s`); the topic's resource type must be readable by the same token.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value as Json;

use super::AppState;
use super::handlers::{error_response, form_pairs, param, query_pairs};
use super::negotiate::{Negotiated, body, negotiate, respond};
use super::origin::PublicBase;
use crate::access::{Access, Interaction, PatientLimit};
use crate::auth::scope::{Scope, parse_scopes_lenient};
use crate::auth::tokens::AccessClaims;
use crate::error::ApiError;
use crate::fhir::outcome::{Issue, IssueType};
use crate::search::compile::plan;
use crate::search::parse::parse;
use crate::state::subscriptions::{
    StoredSubscription, SubscriptionWrite, WebsocketBinding, now_ms,
};
use crate::state::{hash_token, random_token};
use crate::subscriptions::channel_secrets;
use crate::subscriptions::deliver::{
    HL7V2_MLLP, REST_HOOK, WEBSOCKET, notification_events, status_of,
};
use crate::subscriptions::endpoint_guard::{vet, vet_mllp_peer};
use crate::subscriptions::notification::{
    NotificationType, SubscriptionStatusInfo, notification_bundle, status_searchset,
};
use crate::subscriptions::owner::{owner_claims, owner_json};
use crate::subscriptions::resource::{
    ChannelKind, Criteria, PayloadContent, SubscriptionSpec, SubscriptionStatus, SubscriptionView,
    parse_subscription, render_subscription,
};
use crate::subscriptions::websocket::{
    BINDING_TOKEN_LIFETIME, MAX_CLIENT_MESSAGE_BYTES, SocketContext, binding_parameters,
    serve_socket, websocket_url,
};

pub const SUBSCRIPTION: &str = "Subscription";

/// Events one `$events` answer carries at most.
const MAX_EVENTS_PER_QUERY: i64 = 100;

/// What a request does to subscriptions, as SMART v2 letters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operation {
    Create,
    Read,
    Update,
    Delete,
    Search,
}

/// The token's claims, or 401: subscriptions always have an owner.
fn claims_of(claims: Option<Extension<Arc<AccessClaims>>>) -> Result<Arc<AccessClaims>, ApiError> {
    claims
        .map(|Extension(c)| c)
        .ok_or_else(|| ApiError::Unauthorized {
            error: None,
            description:
                "subscriptions need a bearer token: each belongs to the client that made it".into(),
        })
}

/// 403 unless one of the token's scopes grants `operation` on Subscription.
fn require_scope(claims: &AccessClaims, operation: Operation) -> Result<(), ApiError> {
    let (scopes, _) = parse_scopes_lenient(&claims.scope);
    let granted = scopes.iter().any(|scope| match scope {
        Scope::Resource(r) => {
            r.resource_type.as_deref().is_none_or(|t| t == SUBSCRIPTION)
                && match operation {
                    Operation::Create => r.create,
                    Operation::Read => r.read,
                    Operation::Update => r.update,
                    Operation::Delete => r.delete,
                    Operation::Search => r.search,
                }
        }
        _ => false,
    });
    if granted {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "the token's scopes do not grant {operation:?} on Subscription (for example \
             system/Subscription.cruds or user/Subscription.cruds)"
        )))
    }
}

/// Whether the token speaks for the subscription's owner (same client, same user).
fn owns(stored: &StoredSubscription, claims: &AccessClaims) -> bool {
    stored.client_id == claims.client_id
        && owner_claims(&stored.owner).is_some_and(|owner| owner.sub == claims.sub)
}

fn store_unavailable(error: crate::state::StateError) -> ApiError {
    tracing::warn!(%error, "subscription store unavailable");
    ApiError::Unavailable("the subscription store is unavailable; retry shortly".into())
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("Subscription/{id} is not known"))
}

/// The stored subscription `id` if the token owns it (404 otherwise: no oracle).
async fn owned(
    state: &AppState,
    claims: &AccessClaims,
    id: &str,
) -> Result<StoredSubscription, ApiError> {
    let stored = state
        .auth
        .tokens
        .store()
        .subscription(id)
        .await
        .map_err(store_unavailable)?
        .filter(|s| owns(s, claims))
        .ok_or_else(|| not_found(id))?;
    Ok(stored)
}

fn spec_of(stored: &StoredSubscription) -> Result<SubscriptionSpec, ApiError> {
    serde_json::from_str(&stored.spec)
        .map_err(|e| ApiError::Internal(format!("stored subscription unreadable: {e}")))
}

/// The served Subscription; `reveal_signing_secret` for the answer that generated its secret.
fn rendered(stored: &StoredSubscription, reveal_signing_secret: bool) -> Result<Json, ApiError> {
    let spec = spec_of(stored)?;
    Ok(render_subscription(&SubscriptionView {
        id: &stored.id,
        spec: &spec,
        status: status_of(stored),
        error: stored.error.as_deref(),
        events_since_start: stored.events_since_start.max(0) as u64,
        version: stored.version.max(1) as u64,
        last_updated: chrono::DateTime::from_timestamp_millis(stored.updated_ms)
            .unwrap_or_default(),
        reveal_signing_secret,
    }))
}

/// The body as FHIR JSON (415 for anything else).
fn json_body(headers: &HeaderMap, bytes: &[u8]) -> Result<Json, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !matches!(essence, "application/fhir+json" | "application/json") {
        return Err(ApiError::UnsupportedMediaType(format!(
            "a Subscription is sent as application/fhir+json, not {content_type:?}"
        )));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::BadRequest(vec![Issue::error(
            IssueType::Invalid,
            format!("the body is not JSON: {e}"),
        )])
    })
}

/// Validates a client's Subscription against the adapter's topics, the search compiler, the
/// token's access and the SSRF guard, settling its credentials against the `stored` one an
/// update replaces; the write to store, and whether a signing secret was generated.
async fn validated_write(
    state: &AppState,
    base: &PublicBase,
    claims: &AccessClaims,
    access: &Access,
    (id, stored): (String, Option<&SubscriptionSpec>),
    resource: &Json,
) -> Result<(SubscriptionWrite, bool), ApiError> {
    let adapter = &state.adapter;
    let search_params = |resource_type: &str| -> Option<Vec<String>> {
        adapter
            .resources
            .get(resource_type)
            .map(|def| def.search.keys().cloned().collect())
    };
    let mut spec = parse_subscription(resource, &adapter.topics, &search_params)
        .map_err(ApiError::BadRequest)?;
    let generated_secret = channel_secrets::settle(
        &mut spec.channel,
        stored.map(|s| &s.channel),
        chrono::Utc::now(),
    )
    .map_err(ApiError::BadRequest)?;
    let resource_type = spec
        .criteria
        .resource_type(&adapter.topics)
        .ok_or_else(|| {
            ApiError::BadRequest(vec![
                Issue::error(
                    IssueType::NotSupported,
                    "the criteria name no served resource type",
                )
                .at("Subscription.criteria"),
            ])
        })?
        .to_owned();
    if !access.allows(&resource_type, Interaction::Search) {
        return Err(ApiError::Forbidden(format!(
            "the token cannot search {resource_type}, so it cannot subscribe to its changes"
        )));
    }
    // The filters go through the search compiler as they will at each match: what it refuses
    // is refused now.
    let filters = spec.criteria.query_pairs();
    let def = adapter.resources.get(&resource_type).ok_or_else(|| {
        ApiError::BadRequest(vec![Issue::error(
            IssueType::NotSupported,
            format!("{resource_type} is not served here"),
        )])
    })?;
    let request = parse(&filters).map_err(ApiError::search)?;
    let timezone = adapter.timezone;
    let now = chrono::Utc::now().with_timezone(&timezone).naive_local();
    plan(def, &adapter.resources, request, true, timezone, now).map_err(ApiError::search)?;
    if let PatientLimit::Only(ids) = access.patients() {
        for (name, value) in &filters {
            if name == "patient" || name == "subject" {
                let outside = value
                    .split(',')
                    .map(|v| v.rsplit('/').next().unwrap_or(v))
                    .any(|id| !ids.iter().any(|allowed| allowed == id));
                if outside {
                    return Err(ApiError::Forbidden(
                        "a filter names a patient outside the token's patient context".into(),
                    ));
                }
            }
        }
    }
    let channel = match spec.channel.kind {
        ChannelKind::RestHook => REST_HOOK,
        ChannelKind::Hl7v2Mllp => HL7V2_MLLP,
        ChannelKind::Websocket => WEBSOCKET,
    };
    if let Some(endpoint) = &spec.channel.endpoint {
        let policy = &state.subscriptions.endpoint_policy;
        let vetted = match spec.channel.kind {
            ChannelKind::Hl7v2Mllp => vet_mllp_peer(endpoint, policy).await.map(|_| ()),
            _ => vet(endpoint, policy).await.map(|_| ()),
        };
        vetted.map_err(|refused| {
            ApiError::BadRequest(vec![
                Issue::error(
                    IssueType::Invalid,
                    format!("the endpoint is refused: {refused}"),
                )
                .at("Subscription.channel.endpoint"),
            ])
        })?;
    }
    if let Some(oauth) = &spec.channel.oauth {
        vet(&oauth.token_url, &state.subscriptions.endpoint_policy)
            .await
            .map_err(|refused| {
                ApiError::BadRequest(vec![
                    Issue::error(
                        IssueType::Invalid,
                        format!("the OAuth token URL is refused: {refused}"),
                    )
                    .at("Subscription.channel.extension"),
                ])
            })?;
    }
    let status = match spec.requested_status {
        SubscriptionStatus::Off => "off",
        _ => "requested",
    };
    let write = SubscriptionWrite {
        id,
        client_id: claims.client_id.clone(),
        owner: owner_json(claims),
        topic: match &spec.criteria {
            Criteria::Topic { url, .. } => Some(url.clone()),
            Criteria::Search { .. } => None,
        },
        resource_type,
        channel: channel.to_owned(),
        base_url: base.fhir().to_owned(),
        status: status.into(),
        end_ms: spec.end.map(|end| end.timestamp_millis()),
        heartbeat_ms: spec.channel.heartbeat_period.map(|s| i64::from(s) * 1000),
        spec: serde_json::to_string(&spec).expect("spec serializes"),
    };
    Ok((write, generated_secret))
}

fn negotiated(headers: &HeaderMap, pairs: &[(String, String)]) -> Result<Negotiated, ApiError> {
    negotiate(headers, param(pairs, "_format"), param(pairs, "_pretty"))
}

/// The query and form parameters, and the answer's format they and `Accept` ask for.
fn form_and_format(
    headers: &HeaderMap,
    raw: Option<&str>,
    bytes: &[u8],
) -> Result<(Vec<(String, String)>, Negotiated), ApiError> {
    let pairs = form_pairs(headers, raw, bytes)?;
    let negotiated = negotiated(headers, &pairs)?;
    Ok((pairs, negotiated))
}

fn answer(negotiated: &Negotiated, result: Result<(StatusCode, Json), ApiError>) -> Response {
    match result.and_then(|(status, json)| Ok((status, body(negotiated, &json)?))) {
        Ok((status, bytes)) => {
            let mut response = respond(negotiated, bytes);
            *response.status_mut() = status;
            response
        }
        Err(error) => error_response(error, Some(negotiated)),
    }
}

/// `POST /fhir/Subscription`.
pub async fn create(
    State(state): State<AppState>,
    Extension(access): Extension<Arc<Access>>,
    Extension(base): Extension<PublicBase>,
    claims: Option<Extension<Arc<AccessClaims>>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    bytes: Bytes,
) -> Response {
    let pairs = query_pairs(raw.as_deref());
    let negotiated = match negotiated(&headers, &pairs) {
        Ok(n) => n,
        Err(error) => return error_response(error, None),
    };
    let result = async {
        let claims = claims_of(claims)?;
        require_scope(&claims, Operation::Create)?;
        let resource = json_body(&headers, &bytes)?;
        let id = uuid::Uuid::new_v4().to_string();
        let (write, generated_secret) =
            validated_write(&state, &base, &claims, &access, (id, None), &resource).await?;
        let stored = state
            .auth
            .tokens
            .store()
            .insert_subscription(&write)
            .await
            .map_err(store_unavailable)?;
        state.subscriptions.wake.notify_one();
        Ok((StatusCode::CREATED, rendered(&stored, generated_secret)?))
    }
    .await;
    let location = result.as_ref().ok().and_then(|(_, json)| {
        let id = json["id"].as_str()?;
        HeaderValue::from_str(&format!("{}/Subscription/{id}/_history/1", base.fhir())).ok()
    });
    let mut response = answer(&negotiated, result);
    if let Some(location) = location {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// `GET /fhir/Subscription/{id}`.
pub async fn read(
    State(state): State<AppState>,
    claims: Option<Extension<Arc<AccessClaims>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let pairs = query_pairs(raw.as_deref());
    let negotiated = match negotiated(&headers, &pairs) {
        Ok(n) => n,
        Err(error) => return error_response(error, None),
    };
    let result = async {
        let claims = claims_of(claims)?;
        require_scope(&claims, Operation::Read)?;
        let stored = owned(&state, &claims, &id).await?;
        Ok((StatusCode::OK, rendered(&stored, false)?))
    }
    .await;
    answer(&negotiated, result)
}

// Each argument is an axum extractor; a struct of them would only move the list.
#[allow(clippy::too_many_arguments)]
/// `PUT /fhir/Subscription/{id}`: replaces the request; status `requested` (or `active`)
/// reactivates it with a new handshake, keeping its event numbers (SB-29).
pub async fn update(
    State(state): State<AppState>,
    Extension(access): Extension<Arc<Access>>,
    Extension(base): Extension<PublicBase>,
    claims: Option<Extension<Arc<AccessClaims>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    bytes: Bytes,
) -> Response {
    let pairs = query_pairs(raw.as_deref());
    let negotiated = match negotiated(&headers, &pairs) {
        Ok(n) => n,
        Err(error) => return error_response(error, None),
    };
    let result = async {
        let claims = claims_of(claims)?;
        require_scope(&claims, Operation::Update)?;
        let resource = json_body(&headers, &bytes)?;
        if resource["id"].as_str() != Some(id.as_str()) {
            return Err(ApiError::BadRequest(vec![
                Issue::error(
                    IssueType::Invalid,
                    "the resource's id must equal the id in the URL",
                )
                .at("Subscription.id"),
            ]));
        }
        let previous = spec_of(&owned(&state, &claims, &id).await?)?;
        let (write, generated_secret) = validated_write(
            &state,
            &base,
            &claims,
            &access,
            (id.clone(), Some(&previous)),
            &resource,
        )
        .await?;
        let stored = state
            .auth
            .tokens
            .store()
            .replace_subscription(&write)
            .await
            .map_err(store_unavailable)?
            .ok_or_else(|| not_found(&id))?;
        state.subscriptions.wake.notify_one();
        Ok((StatusCode::OK, rendered(&stored, generated_secret)?))
    }
    .await;
    answer(&negotiated, result)
}

/// `DELETE /fhir/Subscription/{id}`.
pub async fn delete(
    State(state): State<AppState>,
    claims: Option<Extension<Arc<AccessClaims>>>,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        let claims = claims_of(claims)?;
        require_scope(&claims, Operation::Delete)?;
        owned(&state, &claims, &id).await?;
        state
            .auth
            .tokens
            .store()
            .delete_subscription(&id, Some(&claims.client_id))
            .await
            .map_err(store_unavailable)?;
        Ok(())
    }
    .await;
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => error_response(error, None),
    }
}

/// The token's own subscriptions that match the search parameters `_id`, `status` and `url`
/// (the endpoint), each list comma-separated (OR); other parameters are refused.
async fn matching_subscriptions(
    state: &AppState,
    claims: &AccessClaims,
    pairs: &[(String, String)],
) -> Result<Vec<StoredSubscription>, ApiError> {
    let mut issues = Vec::new();
    let mut wanted: Vec<(&str, Vec<&str>)> = Vec::new();
    for (name, value) in pairs {
        match name.as_str() {
            "_id" | "id" | "status" | "url" => {
                wanted.push((name.as_str(), value.split(',').collect()))
            }
            "_format" | "_pretty" | "_count" => {}
            other => issues.push(
                Issue::error(
                    IssueType::NotSupported,
                    format!("{other} is not a search parameter of Subscription here (use _id, status or url)"),
                )
                .at(other),
            ),
        }
    }
    if !issues.is_empty() {
        return Err(ApiError::BadRequest(issues));
    }
    let all = state
        .auth
        .tokens
        .store()
        .subscriptions(Some(&claims.client_id))
        .await
        .map_err(store_unavailable)?;
    Ok(all
        .into_iter()
        .filter(|s| owns(s, claims))
        .filter(|s| {
            wanted.iter().all(|(name, values)| match *name {
                "_id" | "id" => values.contains(&s.id.as_str()),
                "status" => values.contains(&s.status.as_str()),
                _ => spec_of(s).is_ok_and(|spec| {
                    spec.channel
                        .endpoint
                        .is_some_and(|e| values.contains(&e.as_str()))
                }),
            })
        })
        .collect())
}

/// `GET /fhir/Subscription` and `POST /fhir/Subscription/_search`.
pub async fn search(
    State(state): State<AppState>,
    Extension(base): Extension<PublicBase>,
    claims: Option<Extension<Arc<AccessClaims>>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    bytes: Bytes,
) -> Response {
    let (pairs, negotiated) = match form_and_format(&headers, raw.as_deref(), &bytes) {
        Ok(parts) => parts,
        Err(error) => return error_response(error, None),
    };
    let result = async {
        let claims = claims_of(claims)?;
        require_scope(&claims, Operation::Search)?;
        let found = matching_subscriptions(&state, &claims, &pairs).await?;
        let entries: Vec<Json> = found
            .iter()
            .map(|s| {
                Ok(serde_json::json!({
                    "fullUrl": format!("{}/Subscription/{}", base.fhir(), s.id),
                    "resource": rendered(s, false)?,
                    "search": { "mode": "match" },
                }))
            })
            .collect::<Result<_, ApiError>>()?;
        let mut bundle = serde_json::json!({
            "resourceType": "Bundle",
            "type": "searchset",
            "total": entries.len(),
            "link": [{ "relation": "self", "url": format!("{}/Subscription", base.fhir()) }],
        });
        // FHIR JSON forbids empty arrays (and the XML writer cannot take one).
        if !entries.is_empty() {
            bundle["entry"] = Json::Array(entries);
        }
        Ok((StatusCode::OK, bundle))
    }
    .await;
    answer(&negotiated, result)
}

/// `sync_errors`: what the fail-safe flag says of this subscription (`alarm::subscription_errors`).
fn status_info<'a>(
    stored: &'a StoredSubscription,
    url: &'a str,
    kind: NotificationType,
    sync_errors: Vec<String>,
) -> SubscriptionStatusInfo<'a> {
    SubscriptionStatusInfo {
        subscription_url: url,
        topic: stored.topic.as_deref(),
        status: status_of(stored),
        kind,
        events_since_start: stored.events_since_start.max(0) as u64,
        errors: stored.error.iter().cloned().chain(sync_errors).collect(),
    }
}

/// The raised flag's causes and the failing mappings, for `$status`; what cannot be read is left
/// out (the status itself still answers).
async fn sync_trouble(
    state: &AppState,
) -> (
    Vec<crate::state::alarms::Alarm>,
    Vec<crate::state::alarms::DetectionFailure>,
) {
    let store = state.auth.tokens.store();
    let alarms = store.alarms().await;
    let failures = store.detection_failures().await;
    match (alarms, failures) {
        (Ok(alarms), Ok(failures)) => (alarms, failures),
        (Err(error), _) | (_, Err(error)) => {
            tracing::warn!(%error, "$status: the fail-safe flag could not be read");
            (Vec::new(), Vec::new())
        }
    }
}

/// `$status` on the type: the token's subscriptions, narrowed by `id` and `status`.
pub async fn type_status(
    State(state): State<AppState>,
    claims: Option<Extension<Arc<AccessClaims>>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    bytes: Bytes,
) -> Response {
    status_operation(state, claims, None, headers, raw, bytes).await
}

/// `$status` on one subscription.
pub async fn instance_status(
    State(state): State<AppState>,
    claims: Option<Extension<Arc<AccessClaims>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    bytes: Bytes,
) -> Response {
    status_operation(state, claims, Some(id), headers, raw, bytes).await
}

/// `$status`: a searchset of status Parameters (SB-02).
async fn status_operation(
    state: AppState,
    claims: Option<Extension<Arc<AccessClaims>>>,
    id: Option<String>,
    headers: HeaderMap,
    raw: Option<String>,
    bytes: Bytes,
) -> Response {
    let (pairs, negotiated) = match form_and_format(&headers, raw.as_deref(), &bytes) {
        Ok(parts) => parts,
        Err(error) => return error_response(error, None),
    };
    let result = async {
        let claims = claims_of(claims)?;
        require_scope(&claims, Operation::Read)?;
        let found = match id {
            Some(id) => vec![owned(&state, &claims, &id).await?],
            None => matching_subscriptions(&state, &claims, &pairs).await?,
        };
        let urls: Vec<String> = found
            .iter()
            .map(|s| format!("{}/Subscription/{}", s.base_url, s.id))
            .collect();
        let (alarms, failures) = sync_trouble(&state).await;
        let statuses: Vec<SubscriptionStatusInfo> = found
            .iter()
            .zip(&urls)
            .map(|(s, url)| {
                let sync_errors = crate::alarm::subscription_errors(&alarms, &failures, s);
                status_info(s, url, NotificationType::QueryStatus, sync_errors)
            })
            .collect();
        Ok((StatusCode::OK, status_searchset(&statuses)))
    }
    .await;
    answer(&negotiated, result)
}

/// `$events` (SB-30): the events `eventsSinceNumber..=eventsUntilNumber` still kept (at least 7
/// days), as a `query-event` notification Bundle, at the subscription's content level or a lower
/// one asked for with `content`; each focus read under the caller's access now.
pub async fn events_operation(
    State(state): State<AppState>,
    Extension(access): Extension<Arc<Access>>,
    claims: Option<Extension<Arc<AccessClaims>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    bytes: Bytes,
) -> Response {
    let (pairs, negotiated) = match form_and_format(&headers, raw.as_deref(), &bytes) {
        Ok(parts) => parts,
        Err(error) => return error_response(error, None),
    };
    let result = async {
        let claims = claims_of(claims)?;
        require_scope(&claims, Operation::Read)?;
        let stored = owned(&state, &claims, &id).await?;
        let spec = spec_of(&stored)?;
        let number = |name: &str| -> Result<Option<i64>, ApiError> {
            match param(&pairs, name) {
                None => Ok(None),
                Some(text) => text.trim().parse::<i64>().ok().filter(|n| *n >= 1).map(Some).ok_or_else(|| {
                    ApiError::BadRequest(vec![
                        Issue::error(IssueType::Invalid, format!("{name} must be a positive whole number"))
                            .at(name),
                    ])
                }),
            }
        };
        let last = stored.events_since_start;
        let until = number("eventsUntilNumber")?.unwrap_or(last).min(last);
        let since = number("eventsSinceNumber")?
            .unwrap_or((until - MAX_EVENTS_PER_QUERY + 1).max(1));
        let content = match param(&pairs, "content") {
            None => spec.channel.content,
            Some("empty") => PayloadContent::Empty,
            Some("id-only") if spec.channel.content != PayloadContent::Empty => PayloadContent::IdOnly,
            Some("full-resource") if spec.channel.content == PayloadContent::FullResource => {
                PayloadContent::FullResource
            }
            Some(other) => {
                return Err(ApiError::BadRequest(vec![
                    Issue::error(
                        IssueType::Invalid,
                        format!("content {other:?} is not one of empty, id-only, full-resource, or exceeds the subscription's own"),
                    )
                    .at("content"),
                ]));
            }
        };
        let events = state
            .auth
            .tokens
            .store()
            .subscription_events(&stored.id, since, until, MAX_EVENTS_PER_QUERY)
            .await
            .map_err(store_unavailable)?;
        let listed = notification_events(
            &state.repository,
            &stored.base_url,
            content,
            &access,
            &events,
        )
        .await;
        let url = format!("{}/Subscription/{}", stored.base_url, stored.id);
        let info = status_info(&stored, &url, NotificationType::QueryEvent, Vec::new());
        Ok((StatusCode::OK, notification_bundle(&info, &listed, content)))
    }
    .await;
    answer(&negotiated, result)
}

// Each argument is an axum extractor; a struct of them would only move the list.
#[allow(clippy::too_many_arguments)]
/// `$get-ws-binding-token` on one subscription (SB-31).
pub async fn instance_binding_token(
    State(state): State<AppState>,
    Extension(base): Extension<PublicBase>,
    claims: Option<Extension<Arc<AccessClaims>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    bytes: Bytes,
) -> Response {
    binding_token_operation(state, base, claims, Some(id), headers, raw, bytes).await
}

/// `$get-ws-binding-token` on the type: the `id` parameters (repeated or comma-separated) name
/// the subscriptions one token binds.
pub async fn type_binding_token(
    State(state): State<AppState>,
    Extension(base): Extension<PublicBase>,
    claims: Option<Extension<Arc<AccessClaims>>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    bytes: Bytes,
) -> Response {
    binding_token_operation(state, base, claims, None, headers, raw, bytes).await
}

/// A short-lived token that binds the caller's websocket subscriptions on a socket: random,
/// good for nothing else, kept only as a hash with who asked and with which access token.
async fn binding_token_operation(
    state: AppState,
    base: PublicBase,
    claims: Option<Extension<Arc<AccessClaims>>>,
    id: Option<String>,
    headers: HeaderMap,
    raw: Option<String>,
    bytes: Bytes,
) -> Response {
    let (pairs, negotiated) = match form_and_format(&headers, raw.as_deref(), &bytes) {
        Ok(parts) => parts,
        Err(error) => return error_response(error, None),
    };
    let result = async {
        let claims = claims_of(claims)?;
        require_scope(&claims, Operation::Read)?;
        let ids: Vec<String> = match id {
            Some(id) => vec![id],
            None => pairs
                .iter()
                .filter(|(name, _)| name == "id")
                .flat_map(|(_, value)| value.split(','))
                .map(|id| id.trim().to_owned())
                .filter(|id| !id.is_empty())
                .collect(),
        };
        if ids.is_empty() {
            return Err(ApiError::BadRequest(vec![
                Issue::error(IssueType::Invalid, "name the subscriptions to bind with id").at("id"),
            ]));
        }
        let mut found = Vec::with_capacity(ids.len());
        for id in &ids {
            let stored = owned(&state, &claims, id).await?;
            if stored.channel != WEBSOCKET {
                return Err(ApiError::BadRequest(vec![
                    Issue::error(
                        IssueType::NotSupported,
                        format!(
                            "Subscription/{id} is delivered over {}, not websocket: binding \
                             tokens are for websocket subscriptions",
                            stored.channel
                        ),
                    )
                    .at("Subscription.channel.type"),
                ]));
            }
            found.push(stored);
        }
        let now = now_ms();
        let expires_ms = now + BINDING_TOKEN_LIFETIME.as_millis() as i64;
        let token = random_token(32);
        let bindings: Vec<WebsocketBinding> = found
            .iter()
            .map(|s| WebsocketBinding {
                subscription_id: s.id.clone(),
                client_id: claims.client_id.clone(),
                subject: claims.sub.clone(),
                access_jti: claims.jti.clone(),
                expires_ms,
            })
            .collect();
        state
            .auth
            .tokens
            .store()
            .insert_websocket_bindings(&hash_token(&token), &bindings, now)
            .await
            .map_err(store_unavailable)?;
        let urls: Vec<String> = found
            .iter()
            .map(|s| format!("{}/Subscription/{}", s.base_url, s.id))
            .collect();
        let expires = chrono::DateTime::from_timestamp_millis(expires_ms).unwrap_or_default();
        Ok((
            StatusCode::OK,
            binding_parameters(&token, expires, &urls, &websocket_url(base.fhir())),
        ))
    }
    .await;
    let mut response = answer(&negotiated, result);
    // A credential: no cache keeps it.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /subscriptions/ws`: upgrades to the websocket channel. No bearer token: the binding
/// token the client sends on the socket authenticates it.
pub async fn socket(
    State(state): State<AppState>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            return error_response(
                ApiError::BadRequest(vec![Issue::error(
                    IssueType::NotSupported,
                    format!(
                        "this path takes websocket connections only ({})",
                        rejection.body_text()
                    ),
                )]),
                None,
            );
        }
    };
    let context = SocketContext {
        store: state.auth.tokens.store().clone(),
        repository: state.repository.clone(),
        signal: state.subscriptions.sockets.clone(),
        shutdown: state.subscriptions.shutdown.clone(),
    };
    upgrade
        .max_message_size(MAX_CLIENT_MESSAGE_BYTES)
        .max_frame_size(MAX_CLIENT_MESSAGE_BYTES)
        .on_upgrade(move |socket| serve_socket(socket, context))
}
