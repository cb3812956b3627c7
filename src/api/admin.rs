//! `/admin/subscriptions`: the operator's view of subscription health (status, backlog, last
//! delivery, failures, next retry, detection progress) and the two remedies (`retry` now,
//! `disable`), as JSON for scripts and monitoring. Administrators only: HTTP Basic of an admin
//! user (as `/auth/launch` takes it) or a bearer token issued to one. The same view as
//! `portico subscriptions list|show|retry|disable`, for operators without a shell on the host.

use axum::Json as JsonBody;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};

use super::AppState;
use super::handlers::error_response;
use super::origin::{ClientAddress, PublicBase};
use super::sign_in::{PasswordCheck, check_password};
use crate::auth::client_auth::PresentedCredentials;
use crate::error::ApiError;
use crate::state::StateError;
use crate::state::subscriptions::{ChangeCursor, StoredSubscription};
use crate::state::users::Role;

/// Events `GET /admin/subscriptions/{id}` lists, the latest.
const RECENT_EVENTS: i64 = 10;

pub(super) fn unavailable(error: StateError) -> ApiError {
    tracing::warn!(%error, "the state store failed during an admin request");
    ApiError::Unavailable("the state store is unavailable; retry shortly".into())
}

pub(super) fn unauthorized(description: &str) -> ApiError {
    ApiError::Unauthorized {
        error: None,
        description: description.into(),
    }
}

/// Admits an administrator: Basic credentials of an admin user (under the sign-in rate
/// limits), or a valid bearer token issued to one.
async fn require_admin(
    state: &AppState,
    address: &ClientAddress,
    base: &PublicBase,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let authorization = headers.get_all(header::AUTHORIZATION);
    let values: Vec<_> = authorization.iter().cloned().collect();
    let Some(value) = values.first().and_then(|v| v.to_str().ok()) else {
        return Err(unauthorized(
            "an administrator's credentials are required (HTTP Basic, or a bearer token issued \
             to an admin user)",
        ));
    };
    if values.len() == 1
        && value
            .get(..6)
            .is_some_and(|s| s.eq_ignore_ascii_case("basic "))
    {
        let (username, password) = PresentedCredentials::basic_from_header(value)
            .map_err(|_| unauthorized("malformed Basic credentials"))?;
        return match check_password(state, address, &username, &password)
            .await
            .map_err(unavailable)?
        {
            PasswordCheck::Accepted(user) if user.role == Role::Admin => Ok(()),
            PasswordCheck::Accepted(_) => Err(ApiError::Forbidden(
                "only administrators see the operator's views".into(),
            )),
            PasswordCheck::Refused => Err(unauthorized("the credentials are not accepted")),
            PasswordCheck::TooMany => Err(ApiError::TooManyRequests(
                "too many failed sign-ins; wait 15 minutes".into(),
            )),
        };
    }
    let (_, claims) = super::authorize::authorize(state, base.fhir(), &values).await?;
    if super::audit::is_admin(state, &claims).await? {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "only administrators see the operator's views: the token was not issued to an admin \
             user"
                .into(),
        ))
    }
}

/// A time in milliseconds since the epoch as RFC 3339, or null.
pub(super) fn instant(ms: Option<i64>) -> Json {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map_or(Json::Null, |at| json!(at.to_rfc3339()))
}

/// One subscription's health.
fn health(s: &StoredSubscription) -> Json {
    let retry_due = !s.retries_stopped && (s.failed_attempts > 0 || s.handshake_pending);
    json!({
        "id": s.id,
        "client": s.client_id,
        "topic": s.topic,
        "resourceType": s.resource_type,
        "channel": s.channel,
        "status": s.status,
        "error": s.error,
        "eventsSinceStart": s.events_since_start,
        "deliveredThrough": s.delivered_through,
        "backlog": (s.events_since_start - s.delivered_through).max(0),
        "handshakePending": s.handshake_pending,
        "lastSent": instant(s.last_sent_ms),
        "lastDelivered": instant(s.last_delivered_ms),
        "failedAttempts": s.failed_attempts,
        "failingSince": instant(s.failing_since_ms),
        "lastFailure": s.last_failure,
        "nextRetry": if retry_due { instant(Some(s.next_attempt_ms)) } else { Json::Null },
        "retriesStopped": s.retries_stopped,
        "end": instant(s.end_ms),
    })
}

fn detection(cursor: &ChangeCursor) -> Json {
    json!({
        "mapping": cursor.mapping,
        "baselined": cursor.baselined,
        "cycle": cursor.cycle,
        "lastReconcile": instant(Some(cursor.last_reconcile_ms).filter(|ms| *ms > 0)),
    })
}

fn answer(result: Result<Json, ApiError>) -> Response {
    match result {
        Ok(body) => (StatusCode::OK, JsonBody(body)).into_response(),
        Err(error) => error_response(error, None),
    }
}

/// A request from an administrator (see `require_admin`); anyone else is answered 401, 403 or
/// 429 before the handler runs.
pub struct Administrator;

impl FromRequestParts<AppState> for Administrator {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Administrator, Response> {
        let address = parts
            .extensions
            .get::<ClientAddress>()
            .cloned()
            .unwrap_or(ClientAddress(None));
        let base = parts
            .extensions
            .get::<PublicBase>()
            .cloned()
            .expect("the public base layer runs first");
        require_admin(state, &address, &base, &parts.headers)
            .await
            .map(|()| Administrator)
            .map_err(|error| error_response(error, None))
    }
}

/// `GET /admin/subscriptions`: every subscription's health and each detected mapping's
/// progress.
pub async fn list(State(state): State<AppState>, _: Administrator) -> Response {
    let store = state.auth.tokens.store();
    answer(
        async {
            let subscriptions = store.subscriptions(None).await.map_err(unavailable)?;
            let cursors = store.change_cursors().await.map_err(unavailable)?;
            Ok(json!({
                "subscriptions": subscriptions.iter().map(health).collect::<Vec<_>>(),
                "detection": cursors.iter().map(detection).collect::<Vec<_>>(),
            }))
        }
        .await,
    )
}

/// `GET /admin/subscriptions/{id}`: one subscription's health and its latest events.
pub async fn show(
    State(state): State<AppState>,
    _: Administrator,
    Path(id): Path<String>,
) -> Response {
    let store = state.auth.tokens.store();
    answer(
        async {
            let s = store
                .subscription(&id)
                .await
                .map_err(unavailable)?
                .ok_or_else(|| not_found(&id))?;
            let first = (s.events_since_start - RECENT_EVENTS + 1).max(1);
            let events = store
                .subscription_events(&s.id, first, s.events_since_start, RECENT_EVENTS)
                .await
                .map_err(unavailable)?;
            let mut body = health(&s);
            body["recentEvents"] = events
                .iter()
                .map(|e| {
                    json!({
                        "number": e.number,
                        "occurred": instant(Some(e.occurred_ms)),
                        "change": e.change_kind,
                        "focus": format!("{}/{}", e.resource_type, e.resource_id),
                        "delivered": e.number <= s.delivered_through,
                    })
                })
                .collect();
            Ok(body)
        }
        .await,
    )
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("no subscription {id}"))
}

/// `POST /admin/subscriptions/{id}/retry`: due now, retries resumed (after five days of failures
/// stopped them).
pub async fn retry(
    State(state): State<AppState>,
    _: Administrator,
    Path(id): Path<String>,
) -> Response {
    let store = state.auth.tokens.store();
    answer(match store.retry_subscription_now(&id).await {
        Ok(true) => {
            state.subscriptions.wake.notify_one();
            tracing::info!(subscription = %id, "an administrator made a subscription due now");
            Ok(json!({"id": id, "retry": "due now"}))
        }
        Ok(false) => Err(not_found(&id)),
        Err(error) => Err(unavailable(error)),
    })
}

/// `POST /admin/subscriptions/{id}/disable`: off, with the reason shown to its owner.
pub async fn disable(
    State(state): State<AppState>,
    _: Administrator,
    Path(id): Path<String>,
) -> Response {
    let store = state.auth.tokens.store();
    let turned_off = store
        .set_subscription_status(&id, "off", Some("turned off by the operator"))
        .await;
    answer(match turned_off {
        Ok(true) => {
            tracing::info!(subscription = %id, "an administrator turned a subscription off");
            Ok(json!({"id": id, "status": "off"}))
        }
        Ok(false) => Err(not_found(&id)),
        Err(error) => Err(unavailable(error)),
    })
}
