//! `/metrics` (Prometheus text format, administrators only: a scraper sends an admin user's Basic
//! credentials or bearer token) and the layer that counts and times every HTTP answer. What is
//! recorded while serving lives in `crate::metrics`; what is measured when scraped (pool use,
//! change-detection lag, subscriptions and their backlog, the latest data-quality audit and
//! reconciliation) is read here.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::admin::Administrator;
use crate::metrics::{metrics, render_gauge};

/// The text exposition format's media type.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Resource types Portico serves from its own state store, whatever the adapter.
const STATE_STORE_TYPES: &[&str] = &["AuditEvent", "Group", "Subscription"];

/// Counts and times each answer by route template (never the raw path: ids are not labels),
/// resource type (only a type Portico serves, so a client cannot grow the label set), method and
/// status.
pub async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |path| path.as_str())
        .to_owned();
    let method = match *request.method() {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    };
    let resource_type = request
        .uri()
        .path()
        .strip_prefix("/fhir/")
        .and_then(|rest| rest.split('/').next())
        .filter(|name| {
            state.adapter.resources.contains_key(*name) || STATE_STORE_TYPES.contains(name)
        })
        .unwrap_or("")
        .to_owned();
    let response = next.run(request).await;
    let recorded = metrics();
    recorded
        .http_requests
        .inc(&[&route, &resource_type, method, response.status().as_str()]);
    recorded.http_duration.observe(&[&route], started.elapsed());
    response
}

/// `GET /metrics`.
pub async fn scrape(State(state): State<AppState>, _: Administrator) -> Response {
    let mut out = String::with_capacity(16 * 1024);
    let recorded = metrics();
    recorded.render(&mut out);

    let (open, idle, most) = state.repository.db.pool_use();
    render_gauge(
        &mut out,
        "portico_pms_pool_connections",
        "PMS database connections: open, idle, and the most the pool opens.",
        &["state"],
        &[
            (vec!["open".into()], f64::from(open)),
            (vec!["idle".into()], f64::from(idle)),
            (vec!["max".into()], f64::from(most)),
        ],
    );

    render_gauge(
        &mut out,
        "portico_audit_backlog_events",
        "AuditEvents written to the audit journal and not yet committed to the state store.",
        &[],
        &[(Vec::new(), state.audit.backlog() as f64)],
    );

    let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    let lags: Vec<(Vec<String>, f64)> = recorded
        .detection_last_pass
        .values()
        .into_iter()
        .map(|(mapping, at)| (mapping, (now - at).max(0.0)))
        .collect();
    render_gauge(
        &mut out,
        "portico_change_detection_lag_seconds",
        "Seconds since each mapping's latest completed change detection step on this replica.",
        &["mapping"],
        &lags,
    );

    match state.auth.tokens.store().alarms().await {
        Ok(alarms) => render_gauge(
            &mut out,
            "portico_critical_sync_error",
            "1 while the fail-safe flag is raised for the cause and not acknowledged, else 0.",
            &["cause"],
            &crate::alarm::flag_samples(&alarms),
        ),
        Err(error) => tracing::warn!(%error, "metrics: the state store did not list alarms"),
    }
    match state
        .auth
        .tokens
        .store()
        .latest_check_run(crate::quality::schedule::KIND)
        .await
    {
        Ok(Some(run)) => {
            let counts: Vec<(Vec<String>, f64)> = crate::quality::schedule::rule_counts(&run)
                .into_iter()
                .map(|(rule, severity, count)| (vec![rule, severity], count as f64))
                .collect();
            render_gauge(
                &mut out,
                "portico_quality_findings",
                "Findings of the latest data-quality audit, by rule and severity.",
                &["rule", "severity"],
                &counts,
            );
            render_gauge(
                &mut out,
                "portico_quality_audit_timestamp_seconds",
                "When the latest data-quality audit started (Unix seconds).",
                &[],
                &[(Vec::new(), run.started_ms as f64 / 1000.0)],
            );
        }
        Ok(None) => {}
        Err(error) => {
            tracing::warn!(%error, "metrics: the state store did not give the latest audit")
        }
    }
    let store = state.auth.tokens.store();
    match (
        store
            .latest_finished_check_run(crate::reconcile::KIND)
            .await,
        store.latest_check_run(crate::reconcile::KIND).await,
    ) {
        (Ok(finished), Ok(Some(latest))) => {
            if let Some(finished) = finished {
                let counts: Vec<(Vec<String>, f64)> = crate::reconcile::drift_counts(&finished)
                    .into_iter()
                    .map(|(resource_type, difference, count)| {
                        (vec![resource_type, difference.to_owned()], count as f64)
                    })
                    .collect();
                render_gauge(
                    &mut out,
                    "portico_reconcile_drift",
                    "Records of the latest finished reconciliation with the EHR missing from \
                     it, extra in it or differing, by type.",
                    &["type", "difference"],
                    &counts,
                );
            }
            render_gauge(
                &mut out,
                "portico_reconcile_timestamp_seconds",
                "When the latest reconciliation with the EHR started (Unix seconds).",
                &[],
                &[(Vec::new(), latest.started_ms as f64 / 1000.0)],
            );
            render_gauge(
                &mut out,
                "portico_reconcile_failed",
                "1 when the latest reconciliation with the EHR could not finish, else 0.",
                &[],
                &[(Vec::new(), f64::from(u8::from(latest.error.is_some())))],
            );
        }
        (Ok(_), Ok(None)) => {}
        (Err(error), _) | (_, Err(error)) => {
            tracing::warn!(%error, "metrics: the state store did not give the latest reconciliation")
        }
    }
    match state.auth.tokens.store().subscriptions(None).await {
        Ok(subscriptions) => {
            let mut by_status: std::collections::BTreeMap<(String, String), f64> =
                Default::default();
            let mut backlog: std::collections::BTreeMap<String, f64> = Default::default();
            for subscription in &subscriptions {
                *by_status
                    .entry((subscription.channel.clone(), subscription.status.clone()))
                    .or_default() += 1.0;
                *backlog.entry(subscription.channel.clone()).or_default() +=
                    (subscription.events_since_start - subscription.delivered_through).max(0)
                        as f64;
            }
            let by_status: Vec<(Vec<String>, f64)> = by_status
                .into_iter()
                .map(|((channel, status), count)| (vec![channel, status], count))
                .collect();
            render_gauge(
                &mut out,
                "portico_subscriptions",
                "Subscriptions by channel and status.",
                &["channel", "status"],
                &by_status,
            );
            let backlog: Vec<(Vec<String>, f64)> = backlog
                .into_iter()
                .map(|(channel, events)| (vec![channel], events))
                .collect();
            render_gauge(
                &mut out,
                "portico_subscription_backlog_events",
                "Events stored for subscriptions and not yet delivered (the outbox), by channel.",
                &["channel"],
                &backlog,
            );
        }
        Err(error) => {
            tracing::warn!(%error, "metrics: the state store did not list subscriptions");
        }
    }
    (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], out).into_response()
}
