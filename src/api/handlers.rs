//! Request handlers: metadata, read, search (GET and POST), and the error-only routes.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};

use super::AppState;
use super::audit::{AuditQuery, PatientsTouched};
use super::negotiate::{Format, Negotiated, body, negotiate, respond};
use super::origin::PublicBase;
use crate::access::{Access, Interaction};
use crate::adapter::model::ResourceDef;
use crate::adapter::tree::{Field, Tree};
use crate::error::ApiError;
use crate::fhir::bundle::Searchset;
use crate::fhir::capability::capability_statement;
use crate::fhir::outcome::{Issue, IssueType, Severity, operation_outcome};
use crate::fhir::resource_types::is_resource_type;
use crate::fhir::subset;
use crate::repository::{LeftOutRow, ReadOutcome};
use crate::search::compile::plan;
use crate::search::cursor::CursorError;
use crate::search::parse::{SummaryMode, TotalMode, parse};

pub(super) fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

pub(super) fn encode_query(pairs: &[(String, String)]) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs {
        serializer.append_pair(key, value);
    }
    serializer.finish()
}

pub(super) fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// An error as a response in the negotiated format (JSON when negotiation itself failed).
pub(super) fn error_response(error: ApiError, negotiated: Option<&Negotiated>) -> Response {
    let xml = negotiated.filter(|n| n.format == Format::Xml);
    let Some(negotiated) = xml else {
        return error.into_response();
    };
    let status = error.status();
    let outcome = operation_outcome(&error.issues());
    let mut response = error.into_response();
    if let Ok(bytes) = body(negotiated, &outcome) {
        let mut replaced = (status, bytes).into_response();
        for (name, value) in response
            .headers_mut()
            .drain()
            .filter_map(|(k, v)| k.map(|k| (k, v)))
        {
            replaced.headers_mut().insert(name, value);
        }
        replaced.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(negotiated.content_type),
        );
        response = replaced;
    }
    response
}

/// The adapter's definition of `resource_type`, or the 404 that explains why there is none.
fn resource_def<'a>(state: &'a AppState, resource_type: &str) -> Result<&'a ResourceDef, ApiError> {
    match state.adapter.resources.get(resource_type) {
        Some(def) => Ok(def),
        None if is_resource_type(resource_type) => Err(ApiError::NotFound(format!(
            "resource type {resource_type} is not served by this server (adapter {})",
            state.adapter.name
        ))),
        None => Err(ApiError::NotFound(format!(
            "unknown resource type {resource_type:?}"
        ))),
    }
}

/// 403 when `access` does not grant `interaction` on `resource_type`: decided from the access
/// alone, before any query, so the answer is the same whether or not such data exist.
fn require(access: &Access, resource_type: &str, interaction: Interaction) -> Result<(), ApiError> {
    if access.allows(resource_type, interaction) {
        return Ok(());
    }
    let verb = match interaction {
        Interaction::Read => "read",
        Interaction::Search => "search",
    };
    Err(ApiError::Forbidden(format!(
        "this access does not grant {verb} on {resource_type}"
    )))
}

fn now_instant() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub async fn metadata(
    State(state): State<AppState>,
    Extension(base): Extension<PublicBase>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let pairs = query_pairs(raw.as_deref());
    let negotiated = match negotiate(&headers, param(&pairs, "_format"), param(&pairs, "_pretty")) {
        Ok(n) => n,
        Err(e) => return error_response(e, None),
    };
    let statement = capability_statement(
        &state.capability_base,
        &state.adapter,
        base.fhir(),
        &now_instant(),
        state.auth.external.as_ref().map(|external| external.idp()),
    );
    match body(&negotiated, &statement) {
        Ok(bytes) => respond(&negotiated, bytes),
        Err(e) => error_response(e, Some(&negotiated)),
    }
}

pub async fn read(
    State(state): State<AppState>,
    Extension(access): Extension<Arc<Access>>,
    Path((resource_type, id)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let pairs = query_pairs(raw.as_deref());
    let negotiated = match negotiate(&headers, param(&pairs, "_format"), param(&pairs, "_pretty")) {
        Ok(n) => n,
        Err(e) => return error_response(e, None),
    };
    let request = ReadRequest {
        resource_type: &resource_type,
        id: &id,
        access: &access,
    };
    match read_inner(&state, request, &headers, &pairs, &negotiated).await {
        Ok(response) => response,
        Err(e) => error_response(e, Some(&negotiated)),
    }
}

/// What a read asks for, and under which access.
struct ReadRequest<'a> {
    resource_type: &'a str,
    id: &'a str,
    access: &'a Access,
}

async fn read_inner(
    state: &AppState,
    request: ReadRequest<'_>,
    headers: &HeaderMap,
    pairs: &[(String, String)],
    negotiated: &Negotiated,
) -> Result<Response, ApiError> {
    let ReadRequest {
        resource_type,
        id,
        access,
    } = request;
    resource_def(state, resource_type)?;
    require(access, resource_type, Interaction::Read)?;
    let not_found = || ApiError::NotFound(format!("{resource_type}/{id} is not known"));
    let valid_id = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !valid_id {
        return Err(not_found());
    }
    let resource = match state.repository.read(resource_type, id, access).await? {
        ReadOutcome::Found(resource) => resource,
        ReadOutcome::Missing => return Err(not_found()),
        ReadOutcome::LeftOut(row) => {
            return Err(ApiError::Unservable(format!(
                "{resource_type}/{id} exists in the practice database, but its row cannot be \
                 served as valid FHIR R4: {}. An administrator can list such rows with \
                 `portico check --data`.",
                row.left_out.reason.summary()
            )));
        }
    };
    let mut patients = PatientsTouched::default();
    patients.add_mapped(&resource);
    let compact = serde_json::to_vec(&resource).map_err(|e| ApiError::Internal(e.to_string()))?;
    let etag = format!("W/\"{}\"", hex_prefix(&Sha256::digest(&compact)));
    let last_modified = resource
        .get("meta")
        .and_then(|meta| meta.get("lastUpdated"))
        .and_then(Field::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    if let Some(tags) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        if tags
            .split(',')
            .any(|tag| tag.trim() == etag || tag.trim() == "*")
        {
            return Ok(with_patients(not_modified(&etag), patients));
        }
    } else if let (Some(since), Some(modified)) = (
        headers
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok()),
        last_modified,
    ) && std::time::SystemTime::from(modified) <= since
    {
        return Ok(with_patients(not_modified(&etag), patients));
    }
    let names: Option<Vec<String>> = param(pairs, "_elements").map(|elements| {
        elements
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    });
    let edit: Option<&dyn Fn(&mut Json)> = match (param(pairs, "_summary"), &names) {
        (Some("true"), _) => Some(&subset::summary),
        (Some("data"), _) => Some(&subset::data),
        (_, Some(names)) => Some(&|resource| subset::elements(resource, names)),
        _ => None,
    };
    // The plain JSON answer is the bytes the ETag was computed from; serialize only once.
    let bytes = match edit {
        Some(edit) => {
            let mut resource = resource.into_json();
            edit(&mut resource);
            body(negotiated, &resource)?
        }
        None if negotiated.format == Format::Json && !negotiated.pretty => compact,
        None => body(negotiated, &resource)?,
    };
    let mut response = respond(negotiated, bytes);
    let response_headers = response.headers_mut();
    response_headers.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).expect("ascii etag"),
    );
    if let Some(modified) = last_modified {
        let date = httpdate::fmt_http_date(modified.into());
        response_headers.insert(
            header::LAST_MODIFIED,
            HeaderValue::from_str(&date).expect("ascii date"),
        );
    }
    Ok(with_patients(response, patients))
}

/// `response` with the patients it carries, for the audit trail.
fn with_patients(mut response: Response, patients: PatientsTouched) -> Response {
    response.extensions_mut().insert(patients);
    response
}

fn hex_prefix(digest: &[u8]) -> String {
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn not_modified(etag: &str) -> Response {
    let mut response = StatusCode::NOT_MODIFIED.into_response();
    response.headers_mut().insert(
        header::ETAG,
        HeaderValue::from_str(etag).expect("ascii etag"),
    );
    response
}

pub async fn search_get(
    State(state): State<AppState>,
    Extension(base): Extension<PublicBase>,
    Extension(access): Extension<Arc<Access>>,
    Path(resource_type): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let pairs = query_pairs(raw.as_deref());
    search_with(state, &base, access, resource_type, headers, pairs).await
}

pub async fn search_post(
    State(state): State<AppState>,
    Extension(base): Extension<PublicBase>,
    Extension(access): Extension<Arc<Access>>,
    Path(resource_type): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    form: Bytes,
) -> Response {
    match form_pairs(&headers, raw.as_deref(), &form) {
        Ok(pairs) => search_with(state, &base, access, resource_type, headers, pairs).await,
        Err(e) => error_response(e, None),
    }
}

/// The parameters of a `POST _search`: the query string's, then the form body's.
pub(super) fn form_pairs(
    headers: &HeaderMap,
    raw: Option<&str>,
    form: &[u8],
) -> Result<Vec<(String, String)>, ApiError> {
    let mut pairs = query_pairs(raw);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let is_form =
        content_type.split(';').next().unwrap_or("").trim() == "application/x-www-form-urlencoded";
    let no_body = form.is_empty() && content_type.is_empty();
    if !(is_form || no_body) {
        return Err(ApiError::UnsupportedMediaType(format!(
            "POST _search takes application/x-www-form-urlencoded, not {content_type:?}"
        )));
    }
    pairs.extend(form_urlencoded::parse(form).into_owned());
    Ok(pairs)
}

async fn search_with(
    state: AppState,
    base: &PublicBase,
    access: Arc<Access>,
    resource_type: String,
    headers: HeaderMap,
    pairs: Vec<(String, String)>,
) -> Response {
    let negotiated = match negotiate(&headers, param(&pairs, "_format"), param(&pairs, "_pretty")) {
        Ok(n) => n,
        Err(e) => return error_response(e, None),
    };
    let mut response = match search_inner(
        &state,
        base,
        &access,
        &resource_type,
        &headers,
        &pairs,
        &negotiated,
    )
    .await
    {
        Ok(response) => response,
        Err(e) => error_response(e, Some(&negotiated)),
    };
    response
        .extensions_mut()
        .insert(AuditQuery(encode_query(&pairs)));
    response
}

/// `Prefer: handling=strict` turns ignored parameters into 400s (R4-41).
fn strict_handling(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|pref| pref.trim().eq_ignore_ascii_case("handling=strict"))
}

async fn search_inner(
    state: &AppState,
    base: &PublicBase,
    access: &Access,
    resource_type: &str,
    headers: &HeaderMap,
    pairs: &[(String, String)],
    negotiated: &Negotiated,
) -> Result<Response, ApiError> {
    let def = resource_def(state, resource_type)?;
    require(access, resource_type, Interaction::Search)?;
    let request = parse(pairs).map_err(ApiError::search)?;
    let timezone = state.adapter.timezone;
    let now = Utc::now().with_timezone(&timezone).naive_local();
    let plan = plan(
        def,
        &state.adapter.resources,
        request,
        strict_handling(headers),
        timezone,
        now,
    )
    .map_err(ApiError::search)?;

    let identity = plan.cursor_identity(&encode_query(&plan.applied));
    let fingerprint = access.fingerprint();
    let after =
        match &plan.cursor {
            Some(token) => Some(state.signer.open(&identity, &fingerprint, token).map_err(
                |why| match why {
                    CursorError::Malformed => ApiError::BadRequest(vec![
                        Issue::error(IssueType::Invalid, format!("invalid paging cursor: {why}"))
                            .at("_cursor"),
                    ]),
                    CursorError::NotIssued(_) => {
                        ApiError::NotFound(format!("no such page of this search: {why}"))
                    }
                },
            )?),
            None => None,
        };
    let base = base.fhir();
    // Links keep the output format the client chose, outside the cursor's query identity.
    let presentation: Vec<(String, String)> = ["_format", "_pretty"]
        .iter()
        .filter_map(|name| param(pairs, name).map(|v| ((*name).to_owned(), v.to_owned())))
        .collect();
    let link = |extra: &[(String, String)]| {
        let query: Vec<(String, String)> = plan
            .applied
            .iter()
            .chain(extra)
            .chain(&presentation)
            .cloned()
            .collect();
        match encode_query(&query) {
            query if query.is_empty() => format!("{base}/{resource_type}"),
            query => format!("{base}/{resource_type}?{query}"),
        }
    };
    let self_url = link(&[]);

    let mut warnings: Vec<Issue> = plan
        .ignored
        .iter()
        .map(|e| Issue {
            severity: Severity::Warning,
            code: IssueType::NotSupported,
            diagnostics: format!("ignored: {}", e.message),
            expression: Some(e.parameter.clone()),
        })
        .collect();

    let mut patients = PatientsTouched::default();
    let bundle = if plan.summary == SummaryMode::Count {
        let total = state.repository.count(&plan, access).await?;
        Searchset {
            base_url: base,
            self_url,
            next_url: None,
            total: Some(total),
            matches: Vec::new(),
            included: Vec::new(),
            outcome: (!warnings.is_empty()).then(|| operation_outcome(&warnings)),
            timestamp: now_instant(),
        }
    } else {
        let page = state
            .repository
            .search(
                &plan,
                after.as_ref(),
                access,
                plan.total == TotalMode::Accurate,
            )
            .await?;
        if !page.left_out.is_empty() {
            warnings.push(left_out_issue(&page.left_out));
        }
        if page.included_truncated {
            warnings.push(Issue {
                severity: Severity::Warning,
                code: IssueType::Processing,
                diagnostics: format!(
                    "_include/_revinclude stopped at {} resources; page through the referencing search instead",
                    crate::repository::MAX_INCLUDED
                ),
                expression: None,
            });
        }
        let next_url = page.next.as_ref().map(|key| {
            link(&[(
                "_cursor".to_owned(),
                state.signer.seal(&identity, &fingerprint, key),
            )])
        });
        // The patients of what was read, before `_summary`/`_elements` drop their references.
        for loaded in &page.matches {
            patients.add_mapped(&loaded.resource.resource);
        }
        for included in &page.included {
            patients.add_mapped(included);
        }
        let matches: Vec<Tree> = page
            .matches
            .into_iter()
            .map(|loaded| {
                let resource = loaded.resource.resource;
                let edit: &dyn Fn(&mut Json) = match (&plan.summary, &plan.elements) {
                    (SummaryMode::True, _) => &subset::summary,
                    (SummaryMode::Data, _) => &subset::data,
                    (_, Some(names)) => &|resource| subset::elements(resource, names),
                    _ => return resource,
                };
                let mut resource = resource.into_json();
                edit(&mut resource);
                Tree::Json(resource)
            })
            .collect();
        Searchset {
            base_url: base,
            self_url,
            next_url,
            total: page.total,
            matches,
            included: page.included,
            outcome: (!warnings.is_empty()).then(|| operation_outcome(&warnings)),
            timestamp: now_instant(),
        }
    };
    Ok(with_patients(
        respond(negotiated, body(negotiated, &bundle)?),
        patients,
    ))
}

/// One warning for the rows a page left out: how many, of which type, and why, without PHI.
fn left_out_issue(left_out: &[LeftOutRow]) -> Issue {
    let mut groups: Vec<(String, usize)> = Vec::new();
    for row in left_out {
        let label = format!("{} ({})", row.resource_type, row.left_out.reason.summary());
        match groups.iter_mut().find(|(existing, _)| *existing == label) {
            Some((_, count)) => *count += 1,
            None => groups.push((label, 1)),
        }
    }
    let parts: Vec<String> = groups
        .iter()
        .map(|(label, count)| format!("{count} {label}"))
        .collect();
    Issue {
        severity: Severity::Warning,
        code: IssueType::Processing,
        diagnostics: format!(
            "{} resource(s) left out of this page because their rows in the practice database \
             cannot be served as valid FHIR R4: {}. Paging continues past them; an administrator \
             can list them with `portico check --data`.",
            left_out.len(),
            parts.join("; ")
        ),
        expression: None,
    }
}

pub async fn vread(
    Path((resource_type, id, _version)): Path<(String, String, String)>,
) -> Response {
    ApiError::NotFound(format!(
        "{resource_type}/{id}: version history is not supported; the legacy database keeps only the current row"
    ))
    .into_response()
}

/// The 405 for a method a path does not take: Portico is read-only.
fn method_not_allowed(method: &Method, uri: &Uri, allow: &'static str) -> Response {
    let mut response = ApiError::MethodNotAllowed(format!(
        "{} takes {allow}, not {method} (the practice database is read-only)",
        uri.path()
    ))
    .into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// For paths that take GET (and so HEAD).
pub async fn only_get(method: Method, uri: Uri) -> Response {
    method_not_allowed(&method, &uri, "GET, HEAD")
}

/// For `{type}/_search`.
pub async fn only_post(method: Method, uri: Uri) -> Response {
    method_not_allowed(&method, &uri, "POST")
}

/// For operations taken by GET and POST (`$export`, `$status`, ...).
pub async fn only_get_post(method: Method, uri: Uri) -> Response {
    method_not_allowed(&method, &uri, "GET, HEAD, POST")
}

/// For the export's status URL (polled, or cancelled by DELETE).
pub async fn only_get_delete(method: Method, uri: Uri) -> Response {
    method_not_allowed(&method, &uri, "GET, HEAD, DELETE")
}

/// For `Subscription/{id}`.
pub async fn only_get_put_delete(method: Method, uri: Uri) -> Response {
    method_not_allowed(&method, &uri, "GET, HEAD, PUT, DELETE")
}

pub async fn fallback() -> Response {
    ApiError::NotFound("no such endpoint; the FHIR API is under /fhir".into()).into_response()
}

/// `/health/live`: the process serves HTTP. Nothing else is checked, so an orchestrator never
/// restarts Portico because the PMS is down.
pub async fn health_live() -> Response {
    (StatusCode::OK, axum::Json(json!({"status": "ok"}))).into_response()
}

/// How long a readiness check waits for each store.
const READINESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// One look at both stores, each bounded by `READINESS_TIMEOUT`: the PMS database's round trip
/// (its time) and a write to the state store; each failure is logged and returned as text.
pub(super) struct Readiness {
    pub database: Result<std::time::Duration, String>,
    pub state_store: Result<(), String>,
}

pub(super) async fn readiness(state: &AppState) -> Readiness {
    let started = std::time::Instant::now();
    let database = match tokio::time::timeout(READINESS_TIMEOUT, state.repository.ping()).await {
        Ok(Ok(())) => Ok(started.elapsed()),
        Ok(Err(error)) => Err(error.message),
        Err(_) => Err("the PMS database did not answer in time".to_owned()),
    };
    if let Err(error) = &database {
        tracing::warn!(%error, "readiness: the PMS database is down");
    }
    let store = state.auth.tokens.store().probe_write();
    let state_store = match tokio::time::timeout(READINESS_TIMEOUT, store).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("the state store did not answer in time".to_owned()),
    };
    if let Err(error) = &state_store {
        tracing::warn!(%error, "readiness: the state store takes no writes");
    }
    Readiness {
        database,
        state_store,
    }
}

/// `/health/ready` (and `/health`): the adapter is loaded (it is, or nothing would serve), the
/// PMS database answers a round trip and the state store takes a write. 200 when all hold, else
/// 503 naming what does not.
pub async fn health_ready(State(state): State<AppState>) -> Response {
    let checked = readiness(&state).await;
    let database_up = checked.database.is_ok();
    let store_up = checked.state_store.is_ok();
    let word = |up: bool| if up { "up" } else { "down" };
    let ready = database_up && store_up;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ok" } else { "degraded" },
        "adapter": state.adapter.name,
        "database": word(database_up),
        "stateStore": word(store_up),
    });
    (status, axum::Json(body)).into_response()
}
