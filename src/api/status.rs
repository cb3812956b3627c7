//! The operator's status for administrators (HTTP Basic of an admin user or a bearer token issued
//! to one): the fail-safe flag, the PMS database (a round trip, pool use, failed statements by
//! kind), the state store (a write), each detected mapping, each subscription's delivery health,
//! and the last hour of samples (`crate::status`). `GET /status.json` answers it as JSON; `GET
//! /status` as a server-rendered page (inline SVG charts, no external assets, a strict CSP) whose
//! script (`/status.js`) replaces its content every 5 s with `GET /status/fragment`, the same
//! rendering, so there is one way to draw it. A browser without credentials gets a Basic
//! challenge, so it asks for the admin user's name and password.

use axum::Json as JsonBody;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};

use super::AppState;
use super::admin::{Administrator, instant};
use super::handlers::readiness;
use super::sign_in::html_response;
use crate::auth::pages::escape;
use crate::metrics::metrics;

pub async fn status_json(State(state): State<AppState>, _: Administrator) -> Response {
    (
        StatusCode::OK,
        [(header::CACHE_CONTROL, "no-store")],
        JsonBody(snapshot(&state).await),
    )
        .into_response()
}

/// Everything the status shows, read now.
async fn snapshot(state: &AppState) -> Json {
    let store = state.auth.tokens.store();
    let checked = readiness(state).await;
    let (open, idle, most) = state.repository.db.pool_use();
    let failed = |kind: &str| metrics().pms_queries.get(&[kind]);
    let pms = json!({
        "up": checked.database.is_ok(),
        "dialect": state.repository.db.dialect().name(),
        "roundTripMs": checked.database.as_ref().ok().map(|t| t.as_secs_f64() * 1000.0),
        "error": checked.database.as_ref().err(),
        "pool": {"open": open, "idle": idle, "max": most},
        "failedStatements": {
            "unavailable": failed("unavailable"),
            "timeout": failed("timeout"),
            "query": failed("query"),
            "decode": failed("decode"),
        },
    });
    let alarms = store.alarms().await.unwrap_or_default();
    let failures = store.detection_failures().await.unwrap_or_default();
    let cursors = store.change_cursors().await.unwrap_or_default();
    let subscriptions = store.subscriptions(None).await.unwrap_or_default();
    let quality = match store.latest_check_run(crate::quality::schedule::KIND).await {
        Ok(Some(run)) => {
            let summary: Json = serde_json::from_str(&run.summary).unwrap_or_default();
            json!({
                "startedAt": instant(Some(run.started_ms)),
                "seconds": (run.finished_ms - run.started_ms) as f64 / 1000.0,
                "fails": run.fails,
                "findings": run.findings,
                "rules": summary["rules"],
            })
        }
        Ok(None) => Json::Null,
        Err(error) => json!({ "error": error.to_string() }),
    };
    let reconcile = match store.latest_check_run(crate::reconcile::KIND).await {
        Ok(Some(run)) => {
            let summary: Json = serde_json::from_str(&run.summary).unwrap_or_default();
            json!({
                "startedAt": instant(Some(run.started_ms)),
                "ehr": summary["ehr"],
                "drift": run.findings,
                "types": summary["types"],
            })
        }
        Ok(None) => Json::Null,
        Err(error) => json!({ "error": error.to_string() }),
    };
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
        "stateStore": {"up": checked.state_store.is_ok()},
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
        "quality": quality,
        "reconcile": reconcile,
        "history": state.status_history.samples(),
    });
    body
}

/// The page's policy: its own script, style and requests only; nothing framed, no forms.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// `GET /status`: the whole page.
pub async fn status_page(
    State(state): State<AppState>,
    admin: Result<Administrator, Response>,
) -> Response {
    if let Err(refused) = admin {
        return challenge(refused);
    }
    let content = render(&snapshot(&state).await);
    page_response(format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Portico status</title><link rel=\"stylesheet\" href=\"status.css\">\
         <script src=\"status.js\" defer></script></head>\
         <body><main id=\"status\" aria-live=\"polite\">{content}</main></body></html>"
    ))
}

/// `GET /status/fragment`: the page's content, for its script to swap in.
pub async fn status_fragment(
    State(state): State<AppState>,
    admin: Result<Administrator, Response>,
) -> Response {
    if let Err(refused) = admin {
        return refused;
    }
    page_response(render(&snapshot(&state).await))
}

/// `GET /status.js`: refreshes the page's content every 5 s, keeping the page.
pub async fn status_script() -> Response {
    asset("text/javascript; charset=utf-8", STATUS_SCRIPT)
}

/// `GET /status.css`.
pub async fn status_style() -> Response {
    asset("text/css; charset=utf-8", STATUS_STYLE)
}

const STATUS_SCRIPT: &str = "\"use strict\";\n\
// Portico status: swap in the server-rendered content every 5 s; mark the page stale when the\n\
// server does not answer, so an old green page is never mistaken for a healthy link.\n\
(function () {\n\
  const main = document.getElementById(\"status\");\n\
  async function refresh() {\n\
    try {\n\
      const reply = await fetch(\"status/fragment\", {credentials: \"same-origin\", cache: \"no-store\"});\n\
      if (!reply.ok) throw new Error(String(reply.status));\n\
      main.innerHTML = await reply.text();\n\
      document.body.classList.remove(\"stale\");\n\
    } catch (error) {\n\
      document.body.classList.add(\"stale\");\n\
    }\n\
  }\n\
  setInterval(refresh, 5000);\n\
})();\n";

const STATUS_STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0 auto;max-width:60rem;\
padding:0 .8rem 2rem;color:#222;background:#fff}h1{font-size:1.3rem;margin:.8rem 0 .2rem}\
h2{font-size:1.05rem;margin:1.2rem 0 .4rem}.meta{color:#555;font-size:.85rem;margin:0}\
.banner{padding:.7rem .9rem;border-radius:.4rem;margin:.8rem 0;font-weight:600}\
.banner.ok{background:#e6f4ea;color:#135c2a}.banner.raised{background:#b3261e;color:#fff}\
.up{color:#135c2a}.down{color:#b3261e;font-weight:600}.stale main{opacity:.45}\
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(15rem,1fr));gap:.8rem}\
figure{margin:0}figcaption{font-size:.85rem;color:#444}\
svg.chart{width:100%;height:3.5rem;background:#f6f7f9;border-radius:.3rem}\
svg.chart polyline{fill:none;stroke:#1a5fb4;stroke-width:1.5}\
.wide{overflow-x:auto}table{border-collapse:collapse;font-size:.85rem;min-width:100%}\
th,td{text-align:left;padding:.25rem .5rem;border-bottom:1px solid #e3e5e8;white-space:nowrap}";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn page_response(body: String) -> Response {
    html_response(StatusCode::OK, body, HeaderValue::from_static(PAGE_POLICY))
}

/// A refused page asks a browser for an admin user's name and password.
fn challenge(mut refused: Response) -> Response {
    if refused.status() == StatusCode::UNAUTHORIZED {
        refused.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"Portico status\", charset=\"UTF-8\""),
        );
    }
    refused
}

fn text(value: &Json) -> String {
    match value {
        Json::String(text) => escape(text),
        Json::Null => "-".to_owned(),
        other => escape(&other.to_string()),
    }
}

/// The page's content from a snapshot; every value escaped.
fn render(snapshot: &Json) -> String {
    let mut out = String::with_capacity(8 * 1024);
    out.push_str(&format!(
        "<h1>Portico status</h1><p class=\"meta\">adapter {} &middot; {}</p>",
        text(&snapshot["adapter"]),
        text(&snapshot["generatedAt"])
    ));
    let causes = snapshot["flag"]["causes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if snapshot["flag"]["raised"] == true {
        for cause in causes.iter().filter(|c| c["acknowledgedBy"].is_null()) {
            out.push_str(&format!(
                "<div class=\"banner raised\" role=\"alert\">CRITICAL SYNC ERROR ({}) since {}: {}</div>",
                text(&cause["cause"]),
                text(&cause["raisedAt"]),
                text(&cause["detail"])
            ));
        }
    } else {
        out.push_str("<div class=\"banner ok\">The PMS to EHR link is healthy: no critical sync error.</div>");
    }
    for cause in causes.iter().filter(|c| !c["acknowledgedBy"].is_null()) {
        out.push_str(&format!(
            "<p class=\"meta\">{} acknowledged by {} at {} (still holds): {}</p>",
            text(&cause["cause"]),
            text(&cause["acknowledgedBy"]),
            text(&cause["acknowledgedAt"]),
            text(&cause["detail"])
        ));
    }

    let pms = &snapshot["pms"];
    let failed = &pms["failedStatements"];
    out.push_str("<h2>PMS database</h2>");
    if pms["up"] == true {
        out.push_str(&format!(
            "<p class=\"up\">up ({}, {:.1} ms round trip)</p>",
            text(&pms["dialect"]),
            pms["roundTripMs"].as_f64().unwrap_or(0.0)
        ));
    } else {
        out.push_str(&format!(
            "<p class=\"down\">DOWN: {}</p>",
            text(&pms["error"])
        ));
    }
    out.push_str(&format!(
        "<p class=\"meta\">pool {} open, {} idle, {} at most &middot; failed statements since start: \
         unavailable {}, timeout {}, query {}, decode {}</p>",
        text(&pms["pool"]["open"]),
        text(&pms["pool"]["idle"]),
        text(&pms["pool"]["max"]),
        text(&failed["unavailable"]),
        text(&failed["timeout"]),
        text(&failed["query"]),
        text(&failed["decode"])
    ));
    out.push_str("<h2>State store</h2>");
    out.push_str(if snapshot["stateStore"]["up"] == true {
        "<p class=\"up\">up (takes writes)</p>"
    } else {
        "<p class=\"down\">NOT WRITABLE</p>"
    });

    let history = snapshot["history"].as_array().cloned().unwrap_or_default();
    out.push_str("<h2>Last hour</h2><div class=\"charts\">");
    for (key, caption) in [
        ("requestsPerSecond", "requests per second"),
        ("p99Ms", "p99 latency (ms)"),
        ("serverErrors", "5xx answers per 10 s"),
        ("pmsErrors", "failed PMS statements per 10 s"),
        ("backlog", "subscription backlog (events)"),
    ] {
        let values: Vec<Option<f64>> = history
            .iter()
            .map(|sample| sample[key].as_f64().filter(|v| *v >= 0.0))
            .collect();
        out.push_str(&chart(&values, caption));
    }
    out.push_str("</div>");

    out.push_str("<h2>Change detection</h2><div class=\"wide\"><table><tr><th>mapping</th>\
        <th>state</th><th>scan cycle</th><th>last pass</th><th>failing since</th><th>last error</th></tr>");
    for mapping in snapshot["detection"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let state = if !mapping["failingSince"].is_null() {
            "<span class=\"down\">failing</span>"
        } else if mapping["baselined"] == true {
            "<span class=\"up\">ok</span>"
        } else {
            "first full scan"
        };
        out.push_str(&format!(
            "<tr><td>{}</td><td>{state}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            text(&mapping["mapping"]),
            text(&mapping["cycle"]),
            text(&mapping["lastPass"]),
            text(&mapping["failingSince"]),
            text(&mapping["lastError"])
        ));
    }
    out.push_str("</table></div>");

    render_quality(&snapshot["quality"], &mut out);
    render_reconcile(&snapshot["reconcile"], &mut out);

    out.push_str("<h2>Subscriptions</h2><div class=\"wide\"><table><tr><th>id</th><th>channel</th>\
        <th>status</th><th>backlog</th><th>last delivery</th><th>failures</th><th>failing since</th>\
        <th>next retry</th></tr>");
    for subscription in snapshot["subscriptions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        out.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            text(&subscription["id"]),
            text(&subscription["channel"]),
            text(&subscription["status"]),
            text(&subscription["backlog"]),
            text(&subscription["lastDelivered"]),
            text(&subscription["failedAttempts"]),
            text(&subscription["failingSince"]),
            text(&subscription["nextRetry"])
        ));
    }
    out.push_str("</table></div>");
    out
}

/// The latest data-quality audit: its verdict and the rules with findings.
fn render_quality(quality: &Json, out: &mut String) {
    out.push_str("<h2>Data quality</h2>");
    if quality.is_null() {
        out.push_str(
            "<p class=\"meta\">No audit recorded yet: <code>portico audit</code>, or wait for \
             the schedule (<code>quality.schedule_minutes</code>).</p>",
        );
        return;
    }
    if !quality["error"].is_null() {
        out.push_str(&format!(
            "<p class=\"down\">{}</p>",
            text(&quality["error"])
        ));
        return;
    }
    out.push_str(&format!(
        "<p class=\"{}\">{} finding(s){} &middot; audit of {} ({} s)</p>",
        if quality["fails"] == true {
            "down"
        } else {
            "up"
        },
        text(&quality["findings"]),
        if quality["fails"] == true {
            ", some of severity error"
        } else {
            ", none of severity error"
        },
        text(&quality["startedAt"]),
        text(&quality["seconds"]),
    ));
    let rules: Vec<Json> = quality["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|rule| rule["count"].as_u64().unwrap_or(0) > 0 || !rule["error"].is_null())
        .cloned()
        .collect();
    if rules.is_empty() {
        return;
    }
    out.push_str(
        "<div class=\"wide\"><table><tr><th>rule</th><th>severity</th><th>findings</th>\
         <th>what it finds</th></tr>",
    );
    for rule in rules {
        out.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}{}</td><td>{}</td></tr>",
            text(&rule["id"]),
            text(&rule["severity"]),
            text(&rule["count"]),
            if rule["error"].is_null() {
                String::new()
            } else {
                format!(" (did not run: {})", text(&rule["error"]))
            },
            text(&rule["title"]),
        ));
    }
    out.push_str("</table></div>");
}

/// The latest reconciliation against the EHR: its drift and the counts per type.
fn render_reconcile(reconcile: &Json, out: &mut String) {
    out.push_str("<h2>Reconciliation with the EHR</h2>");
    if reconcile.is_null() {
        out.push_str(
            "<p class=\"meta\">No reconciliation recorded yet: <code>portico reconcile</code>.</p>",
        );
        return;
    }
    if !reconcile["error"].is_null() {
        out.push_str(&format!(
            "<p class=\"down\">{}</p>",
            text(&reconcile["error"])
        ));
        return;
    }
    let drifted = reconcile["drift"].as_i64().unwrap_or(0) > 0;
    out.push_str(&format!(
        "<p class=\"{}\">{} record(s) drifted &middot; {} at {}</p>",
        if drifted { "down" } else { "up" },
        text(&reconcile["drift"]),
        text(&reconcile["ehr"]),
        text(&reconcile["startedAt"]),
    ));
    out.push_str(
        "<div class=\"wide\"><table><tr><th>type</th><th>Portico</th><th>EHR</th>\
         <th>missing from the EHR</th><th>extra in the EHR</th><th>status differs</th></tr>",
    );
    for row in reconcile["types"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            text(&row["type"]),
            text(&row["portico"]),
            text(&row["ehr"]),
            text(&row["missing"]),
            text(&row["extra"]),
            text(&row["differing"]),
        ));
    }
    out.push_str("</table></div>");
}

/// A sparkline of `values` (oldest first; `None` leaves a gap) with the latest value in its
/// caption, as inline SVG.
fn chart(values: &[Option<f64>], caption: &str) -> String {
    const WIDTH: f64 = 360.0;
    const HEIGHT: f64 = 60.0;
    let peak = values.iter().flatten().fold(0.0_f64, |top, v| top.max(*v));
    // The vertical scale: the peak, and at least 1 so a flat zero line sits at the bottom.
    let top = peak.max(1.0);
    let step = WIDTH / (crate::status::SAMPLES_KEPT.max(2) - 1) as f64;
    let offset = WIDTH - step * values.len().saturating_sub(1) as f64;
    let mut lines = Vec::new();
    let mut points = Vec::new();
    for (index, value) in values.iter().enumerate() {
        match value {
            Some(value) => points.push(format!(
                "{:.1},{:.1}",
                offset + step * index as f64,
                HEIGHT - 2.0 - (value / top) * (HEIGHT - 4.0)
            )),
            None if !points.is_empty() => lines.push(std::mem::take(&mut points)),
            None => {}
        }
    }
    if !points.is_empty() {
        lines.push(points);
    }
    let latest = values
        .last()
        .copied()
        .flatten()
        .map_or("-".to_owned(), |v| format!("{v:.1}"));
    let polylines: String = lines
        .iter()
        .map(|points| format!("<polyline points=\"{}\"/>", points.join(" ")))
        .collect();
    format!(
        "<figure><svg class=\"chart\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" preserveAspectRatio=\"none\" \
         role=\"img\" aria-label=\"{caption} over the last hour\">{polylines}</svg>\
         <figcaption>{caption}: {latest} (peak {peak:.1})</figcaption></figure>",
        caption = escape(caption)
    )
}

#[cfg(test)]
mod tests {
    use super::{chart, render};
    use serde_json::json;

    #[test]
    fn the_page_escapes_what_it_shows_and_raises_a_banner() {
        let snapshot = json!({
            "adapter": "openemr",
            "generatedAt": "2026-12-03T15:00:00+00:00",
            "flag": {"raised": true, "causes": [{
                "cause": "detection", "detail": "Patient (<script>alert(1)</script>)",
                "raisedAt": "2026-12-03T14:59:00+00:00", "acknowledgedBy": null
            }]},
            "pms": {"up": false, "error": "connection refused", "pool": {"open": 0, "idle": 0, "max": 4},
                    "failedStatements": {"unavailable": 3, "timeout": 0, "query": 0, "decode": 0}},
            "stateStore": {"up": true},
            "detection": [{"mapping": "Patient", "baselined": true, "cycle": 1,
                           "failingSince": "2026-12-03T14:58:00+00:00", "lastError": "unavailable"}],
            "subscriptions": [],
            "history": [{"requestsPerSecond": 2.0, "p99Ms": 5.0, "serverErrors": 0,
                         "pmsErrors": 3, "backlog": 0}],
        });
        let page = render(&snapshot);
        assert!(page.contains(
            "<div class=\"banner raised\" role=\"alert\">CRITICAL SYNC ERROR (detection)"
        ));
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("<p class=\"down\">DOWN: connection refused</p>"));
        assert!(page.contains("<span class=\"down\">failing</span>"));
        assert_eq!(page.matches("<svg class=\"chart\"").count(), 5);
    }

    #[test]
    fn charts_leave_gaps_where_samples_are_missing() {
        let svg = chart(&[Some(1.0), Some(2.0), None, Some(4.0)], "backlog");
        assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
        assert!(svg.contains("backlog: 4.0 (peak 4.0)"), "{svg}");
        let empty = chart(&[], "requests");
        assert!(
            !empty.contains("<polyline") && empty.contains("requests: -"),
            "{empty}"
        );
    }
}
