//! `GET /status.json`: the operator's snapshot for administrators (HTTP Basic of an admin user
//! or a bearer token issued to one): the fail-safe flag, the PMS database (a round trip, pool
//! use, failed statements by kind), the state store (a write), each detected mapping, each
//! subscription's delivery health, and the last hour of samples (`crate::status`).

use std::time::Instant;

use axum::Json as JsonBody;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};

use super::AppState;
use super::admin::Administrator;
use crate::metrics::metrics;

/// A time in milliseconds since the epoch as RFC 3339, or null.
fn instant(ms: Option<i64>) -> Json {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map_or(Json::Null, |at| json!(at.to_rfc3339()))
}

pub async fn status_json(State(state): State<AppState>, _: Administrator) -> Response {
    let store = state.auth.tokens.store();
    let started = Instant::now();
    let ping = state.repository.ping().await;
    let round_trip_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (open, idle, most) = state.repository.db.pool_use();
    let failed = |kind: &str| metrics().pms_queries.get(&[kind]);
    let pms = json!({
        "up": ping.is_ok(),
        "dialect": state.repository.db.dialect().name(),
        "roundTripMs": if ping.is_ok() { json!(round_trip_ms) } else { Json::Null },
        "error": ping.err().map(|e| e.message),
        "pool": {"open": open, "idle": idle, "max": most},
        "failedStatements": {
            "unavailable": failed("unavailable"),
            "timeout": failed("timeout"),
            "query": failed("query"),
            "decode": failed("decode"),
        },
    });
    let writable = store.probe_write().await;
    let alarms = store.alarms().await.unwrap_or_default();
    let failures = store.detection_failures().await.unwrap_or_default();
    let cursors = store.change_cursors().await.unwrap_or_default();
    let subscriptions = store.subscriptions(None).await.unwrap_or_default();
    let last_passes: std::collections::HashMap<String, f64> = metrics()
        .detection_last_pass
        .values()
        .into_iter()
        .filter_map(|(mapping, at)| Some((mapping.into_iter().next()?, at)))
        .collect();
    let body = json!({
        "generatedAt": instant(Some(crate::state::subscriptions::now_ms())),
        "adapter": state.adapter.name,
        "flag": {
            "raised": alarms.iter().any(|a| a.flagged()),
            "causes": alarms.iter().filter(|a| a.open()).map(|a| json!({
                "cause": a.cause,
                "detail": a.detail,
                "raisedAt": instant(Some(a.raised_ms)),
                "alerted": instant(a.notified_ms),
                "acknowledgedBy": a.acknowledged_by,
                "acknowledgedAt": instant(a.acknowledged_ms),
            })).collect::<Vec<_>>(),
        },
        "pms": pms,
        "stateStore": {"up": writable.is_ok()},
        "detection": cursors.iter().map(|cursor| {
            let failure = failures.iter().find(|f| f.mapping == cursor.mapping);
            json!({
                "mapping": cursor.mapping,
                "baselined": cursor.baselined,
                "cycle": cursor.cycle,
                "lastPass": last_passes
                    .get(&cursor.mapping)
                    .map_or(Json::Null, |at| instant(Some((at * 1000.0) as i64))),
                "failingSince": instant(failure.map(|f| f.failing_since_ms)),
                "lastError": failure.and_then(|f| f.last_error.clone()),
            })
        }).collect::<Vec<_>>(),
        "subscriptions": subscriptions.iter().map(|s| json!({
            "id": s.id,
            "channel": s.channel,
            "status": s.status,
            "backlog": (s.events_since_start - s.delivered_through).max(0),
            "lastDelivered": instant(s.last_delivered_ms),
            "failedAttempts": s.failed_attempts,
            "failingSince": instant(s.failing_since_ms),
            "nextRetry": if s.failed_attempts > 0 && !s.retries_stopped {
                instant(Some(s.next_attempt_ms))
            } else {
                Json::Null
            },
        })).collect::<Vec<_>>(),
        "history": state.status_history.samples(),
    });
    (
        StatusCode::OK,
        [(header::CACHE_CONTROL, "no-store")],
        JsonBody(body),
    )
        .into_response()
}
