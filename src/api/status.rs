//! The operator's status for administrators: the fail-safe flag, the PMS database (a round trip,
//! pool use, failed statements by kind), the state store (a write), each detected mapping, each
//! subscription's delivery health, the latest audit and reconciliation, and the last hour of
//! samples (`crate::status`). `GET /status.json` answers it as JSON; `GET /status` as a
//! server-rendered page (inline SVG charts, no external assets, a strict CSP) whose script
//! (`/status.js`) replaces its content every 5 s with `GET /status/fragment`, the same rendering,
//! so there is one way to draw it.
//!
//! A browser signs in on the page's own form (`/status/sign-in`), with the admin accounts of the
//! SMART sign-in and under its rate limits; the session cookie is scoped to `/status`, so it
//! opens nothing else. Scripts present HTTP Basic of an admin user or a bearer token issued to
//! one, as every operator's view takes them (`admin::Administrator`).

use axum::Json as JsonBody;
use axum::body::Bytes;
use axum::extract::{Extension, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};

use super::AppState;
use super::admin::{Administrator, instant, unauthorized, unavailable};
use super::handlers::{error_response, readiness};
use super::origin::{ClientAddress, PublicBase};
use super::sign_in::{
    PasswordCheck, check_password, cookie, html, html_response, pairs, see_other, session_user,
    set_cookie, single,
};
use crate::auth::authorization::SESSION_SECONDS;
use crate::auth::pages::{self, escape};
use crate::metrics::metrics;
use crate::state::clients::constant_time_eq;
use crate::state::users::Role;
use crate::state::{hash_token, now, random_token};
use crate::status::PMS_ERROR_KINDS;

/// The page's path under the server root; its cookies are scoped to it.
const STATUS_PATH: &str = "/status";
/// The session of an administrator signed in on the page's form.
const STATUS_COOKIE: &str = "portico_status";
/// The sign-in form's CSRF token (double submit: the form carries the cookie's value).
const FORM_COOKIE: &str = "portico_status_form";
const FORM_SECONDS: i64 = 15 * 60;

/// Who looks at the status page: an administrator signed in on its form, or one presenting
/// credentials as every operator's view takes them.
pub struct Viewer {
    /// The administrator signed in on the page's form, who gets a sign-out button.
    signed_in: Option<String>,
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Viewer, Response> {
        let headers = &parts.headers;
        if !headers.contains_key(header::AUTHORIZATION) && cookie(headers, STATUS_COOKIE).is_some()
        {
            return match session_user(state, headers, STATUS_COOKIE).await {
                Ok(Some(user)) if user.role == Role::Admin => Ok(Viewer {
                    signed_in: Some(user.username),
                }),
                Ok(_) => Err(error_response(
                    unauthorized("the sign-in has ended; sign in again"),
                    None,
                )),
                Err(error) => Err(error_response(unavailable(error), None)),
            };
        }
        Administrator::from_request_parts(parts, state)
            .await
            .map(|_| Viewer { signed_in: None })
    }
}

pub async fn status_json(State(state): State<AppState>, _: Administrator) -> Response {
    (
        StatusCode::OK,
        [(header::CACHE_CONTROL, "no-store")],
        JsonBody(snapshot(&state).await),
    )
        .into_response()
}

/// Bulk export jobs the page lists, newest first.
const RECENT_EXPORTS: i64 = 10;

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
        "failedStatements": PMS_ERROR_KINDS
            .iter()
            .map(|kind| (kind.to_string(), json!(failed(kind))))
            .collect::<serde_json::Map<_, _>>(),
        "failedStatementsLastHour": PMS_ERROR_KINDS
            .iter()
            .zip(state.status_history.recent_pms_errors())
            .map(|(kind, count)| (kind.to_string(), json!(count)))
            .collect::<serde_json::Map<_, _>>(),
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
                "since": summary["since"],
                "failed": run.error,
                "drift": run.findings,
                "types": summary["types"],
            })
        }
        Ok(None) => Json::Null,
        Err(error) => json!({ "error": error.to_string() }),
    };
    let mut exports = Vec::new();
    for job in store
        .recent_exports(RECENT_EXPORTS)
        .await
        .unwrap_or_default()
    {
        let totals = crate::state::exports::ExportTotals::of(
            &store.export_parts(&job.id).await.unwrap_or_default(),
        );
        exports.push(json!({
            "id": job.id,
            "client": job.client_id,
            "status": job.status,
            "createdAt": instant(Some(job.created_ms)),
            "finishedAt": instant(job.finished_ms),
            "written": totals.written,
            "estimate": totals.estimate,
            "leftOut": totals.left_out,
            "error": job.error,
        }));
    }
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
        "exports": exports,
        "history": state.status_history.samples(),
    });
    body
}

/// The page's policy: its own script, style and requests only; nothing framed; its one form
/// (signing out) posts here.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

/// `GET /status`: the whole page. A browser without credentials is sent to the sign-in form.
pub async fn status_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Result<Viewer, Response>,
) -> Response {
    let viewer = match viewer {
        Ok(viewer) => viewer,
        Err(refused)
            if refused.status() == StatusCode::UNAUTHORIZED
                && !headers.contains_key(header::AUTHORIZATION) =>
        {
            return see_other("status/sign-in");
        }
        Err(refused) => return refused,
    };
    let signed_in = viewer
        .signed_in
        .map(|name| {
            format!(
                "<form class=\"who\" method=\"post\" action=\"status/sign-out\">Signed in as \
                 <span id=\"viewer\">{}</span> <button type=\"submit\" id=\"sign-out\">Sign \
                 out</button></form>",
                escape(&name)
            )
        })
        .unwrap_or_default();
    let content = render(&snapshot(&state).await);
    page_response(format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Portico status</title><link rel=\"stylesheet\" href=\"status.css\">\
         <script src=\"status.js\" defer></script></head>\
         <body>{signed_in}<main id=\"status\" aria-live=\"polite\">{content}</main></body></html>"
    ))
}

/// `GET /status/fragment`: the page's content, for its script to swap in.
pub async fn status_fragment(
    State(state): State<AppState>,
    viewer: Result<Viewer, Response>,
) -> Response {
    if let Err(refused) = viewer {
        return refused;
    }
    page_response(render(&snapshot(&state).await))
}

/// The sign-in form with a fresh CSRF token in its cookie.
fn sign_in_form(base: &PublicBase, status: StatusCode, error: Option<&str>) -> Response {
    let csrf = random_token(24);
    let mut response = html(status, pages::operator_sign_in(&csrf, error), None);
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(base, STATUS_PATH, FORM_COOKIE, &csrf, Some(FORM_SECONDS)),
    );
    response
}

/// `GET /status/sign-in`.
pub async fn sign_in_page(Extension(base): Extension<PublicBase>) -> Response {
    sign_in_form(&base, StatusCode::OK, None)
}

/// `POST /status/sign-in`: an administrator's name and password (under the sign-in rate limits)
/// start a session for the page; anyone else gets the form again.
pub async fn sign_in(
    State(state): State<AppState>,
    Extension(base): Extension<PublicBase>,
    Extension(address): Extension<ClientAddress>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = pairs(&body);
    let expected = cookie(&headers, FORM_COOKIE).unwrap_or_default();
    let presented = single(&form, "csrf").unwrap_or("");
    if expected.is_empty() || !constant_time_eq(presented.as_bytes(), expected.as_bytes()) {
        return sign_in_form(
            &base,
            StatusCode::FORBIDDEN,
            Some("The form had expired; sign in again."),
        );
    }
    let username = single(&form, "username").unwrap_or("").trim();
    let password = single(&form, "password").unwrap_or("");
    let user = match check_password(&state, &address, username, password).await {
        Ok(PasswordCheck::Accepted(user)) if user.role == Role::Admin => user,
        Ok(PasswordCheck::Accepted(_)) => {
            return sign_in_form(
                &base,
                StatusCode::FORBIDDEN,
                Some("Only administrators see the status page."),
            );
        }
        Ok(PasswordCheck::Refused) => {
            return sign_in_form(
                &base,
                StatusCode::UNAUTHORIZED,
                Some("Wrong user name or password."),
            );
        }
        Ok(PasswordCheck::TooMany) => {
            return sign_in_form(
                &base,
                StatusCode::TOO_MANY_REQUESTS,
                Some("Too many failed sign-ins; wait 15 minutes and try again."),
            );
        }
        Err(error) => return error_response(unavailable(error), None),
    };
    let session = random_token(24);
    let started = state
        .auth
        .tokens
        .store()
        .start_session(
            &hash_token(&session),
            &user.username,
            now() + SESSION_SECONDS,
        )
        .await;
    if let Err(error) = started {
        return error_response(unavailable(error), None);
    }
    tracing::info!(user = %user.username, "an administrator signed in to the status page");
    let mut response = see_other("../status");
    let cookies = response.headers_mut();
    cookies.append(
        header::SET_COOKIE,
        set_cookie(
            &base,
            STATUS_PATH,
            STATUS_COOKIE,
            &session,
            Some(SESSION_SECONDS),
        ),
    );
    cookies.append(
        header::SET_COOKIE,
        set_cookie(&base, STATUS_PATH, FORM_COOKIE, "", Some(0)),
    );
    response
}

/// `POST /status/sign-out`: ends the page's session. Its cookie is SameSite, so another site
/// cannot sign an administrator out.
pub async fn sign_out(
    State(state): State<AppState>,
    Extension(base): Extension<PublicBase>,
    headers: HeaderMap,
) -> Response {
    if let Some(session) = cookie(&headers, STATUS_COOKIE)
        && let Err(error) = state
            .auth
            .tokens
            .store()
            .end_session(&hash_token(&session))
            .await
    {
        return error_response(unavailable(error), None);
    }
    let mut response = see_other("sign-in");
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&base, STATUS_PATH, STATUS_COOKIE, "", Some(0)),
    );
    response
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
      // A session that ended sends the page, reloaded, to the sign-in form.\n\
      if (reply.status === 401) { location.reload(); return; }\n\
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
.who{float:right;font-size:.85rem;margin:.9rem 0 0;color:#555}.who button{margin-left:.3rem}\
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
    let by_kind = |counts: &Json| {
        PMS_ERROR_KINDS
            .iter()
            .map(|kind| format!("{kind} {}", text(&counts[*kind])))
            .collect::<Vec<_>>()
            .join(", ")
    };
    out.push_str(&format!(
        "<p class=\"meta\">pool {} open, {} idle, {} at most &middot; failed statements in the \
         last hour: {} (since start: {})</p>",
        text(&pms["pool"]["open"]),
        text(&pms["pool"]["idle"]),
        text(&pms["pool"]["max"]),
        by_kind(&pms["failedStatementsLastHour"]),
        by_kind(&pms["failedStatements"]),
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
    render_exports(&snapshot["exports"], &mut out);

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
            "<p class=\"meta\">No reconciliation recorded yet: <code>portico reconcile</code>, \
             or set <code>reconcile.ehr_url</code> for a schedule.</p>",
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
    if !reconcile["failed"].is_null() {
        out.push_str(&format!(
            "<p class=\"down\">The reconciliation with {} at {} failed: {}</p>",
            text(&reconcile["ehr"]),
            text(&reconcile["startedAt"]),
            text(&reconcile["failed"]),
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

/// The newest bulk export jobs: who, how far, and why one failed.
fn render_exports(exports: &Json, out: &mut String) {
    out.push_str("<h2>Bulk export</h2>");
    let jobs = exports.as_array().cloned().unwrap_or_default();
    if jobs.is_empty() {
        out.push_str("<p class=\"meta\">No export jobs.</p>");
        return;
    }
    out.push_str(
        "<div class=\"wide\"><table><tr><th>id</th><th>client</th><th>status</th>\
         <th>written</th><th>left out</th><th>started</th><th>finished</th><th>error</th></tr>",
    );
    for job in jobs {
        let status = if job["status"] == crate::state::exports::FAILED {
            format!("<span class=\"down\">{}</span>", text(&job["status"]))
        } else {
            text(&job["status"])
        };
        out.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{status}</td><td>{} of about {}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            text(&job["id"]),
            text(&job["client"]),
            text(&job["written"]),
            text(&job["estimate"]),
            text(&job["leftOut"]),
            text(&job["createdAt"]),
            text(&job["finishedAt"]),
            text(&job["error"])
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
                    "failedStatements": {"unavailable": 3, "timeout": 0, "query": 0, "decode": 0},
                    "failedStatementsLastHour": {"unavailable": 2, "timeout": 0, "query": 0, "decode": 0}},
            "stateStore": {"up": true},
            "detection": [{"mapping": "Patient", "baselined": true, "cycle": 1,
                           "failingSince": "2026-12-03T14:58:00+00:00", "lastError": "unavailable"}],
            "subscriptions": [],
            "exports": [{"id": "job-1", "client": "ehr", "status": "error", "written": 120,
                         "estimate": 300, "leftOut": 1, "createdAt": "2026-12-03T14:00:00+00:00",
                         "finishedAt": null, "error": "Claim: <b>unreachable</b>"}],
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
        assert!(
            page.contains(
                "failed statements in the last hour: unavailable 2, timeout 0, query 0, decode 0 \
                 (since start: unavailable 3, timeout 0, query 0, decode 0)"
            ),
            "{page}"
        );
        assert!(page.contains("<span class=\"down\">failing</span>"));
        assert!(
            page.contains(
                "<td>job-1</td><td>ehr</td><td><span class=\"down\">error</span></td>\
                 <td>120 of about 300</td><td>1</td>"
            ) && page.contains("Claim: &lt;b&gt;unreachable&lt;/b&gt;"),
            "{page}"
        );
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
