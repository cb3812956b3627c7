//! Bulk Data `$export` over HTTP (Bulk Data Access 2.0.0): the kick-offs (`/$export`,
//! `/Patient/$export`, `/Group/{id}/$export`, GET or POST with a Parameters body), the status
//! URL (202 with `X-Progress` while running, 429 when polled too fast, the manifest when done,
//! DELETE to cancel) and the files. Only the requester that started an export (its client, user
//! and patient context) sees its status and files; anyone else gets 404, as if it did not exist. `crate::export` decides what a job
//! exports and runs it.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};

use super::AppState;
use super::handlers::{error_response, query_pairs};
use super::origin::PublicBase;
use crate::access::{Access, Interaction, PatientLimit};
use crate::auth::tokens::AccessClaims;
use crate::error::ApiError;
use crate::export::{ExportSpec, KickoffRequest, Level, SINCE_NOT_APPLIED, instant, kickoff};
use crate::fhir::outcome::{Issue, IssueType, Severity, operation_outcome};
use crate::state::exports::{self, ExportJob};
use crate::state::subscriptions::now_ms;

/// The status URL's path under the FHIR base, and the files'.
const STATUS_PATH: &str = "$export-status";
const FILE_PATH: &str = "$export-file";
/// Seconds a client is asked to wait between status requests; sooner is answered 429.
const POLL_SECONDS: i64 = 2;

/// Who asks, and where: the token's access and claims (the authorization layer put them in the
/// request) and the public base URL.
pub struct Caller {
    access: Arc<Access>,
    base: PublicBase,
    claims: Option<Arc<AccessClaims>>,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Caller, Response> {
        let extensions = &parts.extensions;
        Ok(Caller {
            access: extensions
                .get::<Arc<Access>>()
                .cloned()
                .expect("the authorization layer runs first"),
            base: extensions
                .get::<PublicBase>()
                .cloned()
                .expect("the public base layer runs first"),
            claims: extensions.get::<Arc<AccessClaims>>().cloned(),
        })
    }
}

fn unavailable(error: crate::state::StateError) -> ApiError {
    tracing::warn!(%error, "the state store failed during an export request");
    ApiError::Unavailable("the state store is unavailable; retry shortly".into())
}

/// The token's claims: every export request carries a token.
fn claims_of(claims: Option<&AccessClaims>) -> Result<&AccessClaims, ApiError> {
    claims.ok_or_else(|| ApiError::Unauthorized {
        error: None,
        description: "an export needs a bearer token".into(),
    })
}

/// Who an export belongs to: the client, the user (or the client itself, for Backend Services)
/// and the patient context of the token. A refreshed token of the same requester is the same.
fn requester(claims: &AccessClaims) -> String {
    format!(
        "{}|{}|{}",
        claims.client_id,
        claims.sub,
        claims.patient.as_deref().unwrap_or("")
    )
}

/// `GET|POST /fhir/$export`.
pub async fn system(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let request = (&method, &headers, raw.as_deref(), &body);
    start(&state, &caller, (Level::System, None), request)
        .await
        .unwrap_or_else(|e| error_response(e, None))
}

/// `GET|POST /fhir/Patient/$export`.
pub async fn patients(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let request = (&method, &headers, raw.as_deref(), &body);
    start(&state, &caller, (Level::Patient, None), request)
        .await
        .unwrap_or_else(|e| error_response(e, None))
}

/// `GET|POST /fhir/Group/{id}/$export`.
pub async fn group(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let request = (&method, &headers, raw.as_deref(), &body);
    start(&state, &caller, (Level::Group, Some(id)), request)
        .await
        .unwrap_or_else(|e| error_response(e, None))
}

/// The kick-off: checks, stores the job, wakes a worker, and answers 202 with the status URL.
async fn start(
    state: &AppState,
    caller: &Caller,
    (level, group): (Level, Option<String>),
    (method, headers, raw, body): (&Method, &HeaderMap, Option<&str>, &Bytes),
) -> Result<Response, ApiError> {
    let (access, base) = (caller.access.as_ref(), &caller.base);
    let claims = claims_of(caller.claims.as_deref())?;
    let client_id = claims.client_id.clone();
    if level == Level::System && access.patients() != &PatientLimit::Everyone {
        return Err(ApiError::Forbidden(
            "a system export needs system/ scopes: this token is limited to some patients' \
             records (use Patient/$export)"
                .into(),
        ));
    }
    let mut request = if method == Method::POST {
        parameters_body(headers, raw, body)?
    } else {
        KickoffRequest {
            pairs: query_pairs(raw),
            ..KickoffRequest::default()
        }
    };
    request.lenient = prefers(headers, "handling=lenient");
    let store = state.auth.tokens.store();
    if let Some(id) = &group {
        // Only who may read the Group learns whether it exists (a group lists other patients).
        super::groups::may_read_groups(state, access, caller.claims.as_deref(), Interaction::Read)
            .await?;
        if store.group(id).await.map_err(unavailable)?.is_none() {
            return Err(ApiError::NotFound(format!("Group/{id} is not known")));
        }
    }
    let spec = kickoff(&state.adapter, access, level, group, &request)?;
    let limit = state.exports.settings.max_per_client as i64;
    if store
        .unfinished_exports(Some(&client_id))
        .await
        .map_err(unavailable)?
        >= limit
    {
        return Err(ApiError::TooManyRequests(format!(
            "this client already has {limit} export(s) under way; wait for them, or cancel one"
        )));
    }
    let now = now_ms();
    let id = uuid::Uuid::new_v4().to_string();
    let request_url = match raw {
        Some(query) if !query.is_empty() => format!("{}?{query}", kickoff_url(base, &spec)),
        _ => kickoff_url(base, &spec),
    };
    let job = ExportJob {
        id: id.clone(),
        client_id,
        requester: requester(claims),
        request: request_url,
        spec: serde_json::to_string(&spec).expect("the spec serializes"),
        status: exports::ACCEPTED.into(),
        transaction_ms: now,
        created_ms: now,
        finished_ms: None,
        expires_ms: None,
        error: None,
        polled_ms: 0,
    };
    store
        .create_export(&job, &spec.parts())
        .await
        .map_err(unavailable)?;
    state.exports.wake.notify_one();
    tracing::info!(export = %id, level = ?level, types = spec.types.len(), "export accepted");
    let outcome = operation_outcome(&[Issue {
        severity: Severity::Information,
        code: IssueType::Informational,
        diagnostics: format!(
            "export accepted: {} type(s); poll the Content-Location URL",
            spec.types.len()
        ),
        expression: None,
    }]);
    let mut response = (StatusCode::ACCEPTED, fhir_json(&outcome)).into_response();
    let location = format!("{}/{STATUS_PATH}/{id}", base.fhir());
    response.headers_mut().insert(
        header::CONTENT_LOCATION,
        HeaderValue::from_str(&location).expect("the status URL is a header value"),
    );
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/fhir+json"),
    );
    Ok(response)
}

fn kickoff_url(base: &PublicBase, spec: &ExportSpec) -> String {
    match (spec.level, &spec.group) {
        (Level::System, _) => format!("{}/$export", base.fhir()),
        (Level::Patient, _) => format!("{}/Patient/$export", base.fhir()),
        (Level::Group, group) => format!(
            "{}/Group/{}/$export",
            base.fhir(),
            group.as_deref().unwrap_or("")
        ),
    }
}

/// Whether a `Prefer` header asks for `preference`.
fn prefers(headers: &HeaderMap, preference: &str) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case(preference))
}

/// A POSTed kick-off: a Parameters resource (BD-01, BD-09). Query parameters on the URL are
/// taken too.
fn parameters_body(
    headers: &HeaderMap,
    raw: Option<&str>,
    body: &Bytes,
) -> Result<KickoffRequest, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/fhir+json")
        && !content_type.starts_with("application/json")
    {
        return Err(ApiError::UnsupportedMediaType(
            "a POSTed $export takes a Parameters resource as application/fhir+json".into(),
        ));
    }
    let invalid = |why: String| ApiError::BadRequest(vec![Issue::error(IssueType::Invalid, why)]);
    let parameters: Json =
        serde_json::from_slice(body).map_err(|e| invalid(format!("the body is not JSON: {e}")))?;
    if parameters["resourceType"] != "Parameters" {
        return Err(invalid("the body must be a Parameters resource".into()));
    }
    let mut request = KickoffRequest {
        pairs: query_pairs(raw),
        ..KickoffRequest::default()
    };
    let listed = match parameters.get("parameter") {
        None => &[][..],
        Some(Json::Array(listed)) => &listed[..],
        Some(_) => return Err(invalid("parameter must be an array".into())),
    };
    for parameter in listed {
        let name = parameter["name"]
            .as_str()
            .ok_or_else(|| invalid("a parameter without a name".into()))?;
        if name == "patient" {
            let reference = parameter["valueReference"]["reference"]
                .as_str()
                .ok_or_else(|| invalid("patient takes a valueReference".into()))?;
            request.patients.push(reference.to_owned());
            continue;
        }
        let value = [
            "valueString",
            "valueInstant",
            "valueCode",
            "valueDateTime",
            "valueUri",
        ]
        .iter()
        .find_map(|key| parameter[*key].as_str())
        .ok_or_else(|| invalid(format!("{name} has no value this server reads")))?;
        request.pairs.push((name.to_owned(), value.to_owned()));
    }
    Ok(request)
}

fn fhir_json(body: &Json) -> Vec<u8> {
    serde_json::to_vec(body).expect("JSON serializes")
}

/// The job `id` if it is this client's and still visible; else 404.
async fn own_job(
    state: &AppState,
    claims: Option<&AccessClaims>,
    id: &str,
) -> Result<ExportJob, ApiError> {
    let requester = requester(claims_of(claims)?);
    let job = state
        .auth
        .tokens
        .store()
        .export_job(id)
        .await
        .map_err(unavailable)?;
    job.filter(|job| job.requester == requester && job.status != exports::CANCELLED)
        .ok_or_else(|| ApiError::NotFound(format!("no export {id}")))
}

/// `GET /fhir/$export-status/{id}`.
pub async fn status(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Response {
    let base = &caller.base;
    let answer = async {
        let job = own_job(&state, caller.claims.as_deref(), &id).await?;
        let store = state.auth.tokens.store();
        let now = now_ms();
        let previous = store
            .note_export_poll(&id, now)
            .await
            .map_err(unavailable)?;
        match job.status.as_str() {
            exports::COMPLETE => manifest(&state, base, &job).await,
            exports::FAILED => Err(ApiError::Internal(format!(
                "the export failed: {}",
                job.error.as_deref().unwrap_or("unknown error")
            ))),
            _ if now - previous < POLL_SECONDS * 1000 => {
                let mut response =
                    ApiError::TooManyRequests(format!("poll at most every {POLL_SECONDS} s"))
                        .into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(POLL_SECONDS));
                Ok(response)
            }
            _ => {
                let parts = store.export_parts(&id).await.map_err(unavailable)?;
                let mut response = StatusCode::ACCEPTED.into_response();
                let headers = response.headers_mut();
                headers.insert(header::RETRY_AFTER, HeaderValue::from(POLL_SECONDS));
                if let Ok(progress) = HeaderValue::from_str(&progress(&parts)) {
                    headers.insert("x-progress", progress);
                }
                Ok(response)
            }
        }
    }
    .await;
    answer.unwrap_or_else(|e| error_response(e, None))
}

/// `X-Progress` (under 100 characters): resources written of those counted at the start.
fn progress(parts: &[crate::state::exports::ExportPart]) -> String {
    let crate::state::exports::ExportTotals {
        written, estimate, ..
    } = crate::state::exports::ExportTotals::of(parts);
    let done = parts.iter().filter(|p| p.done).count();
    let current = parts
        .iter()
        .find(|p| !p.done)
        .map(|p| p.resource_type.as_str());
    let mut text = format!(
        "{written} of about {estimate} resources; {done}/{} passes done",
        parts.len()
    );
    if let Some(current) = current {
        text.push_str(&format!("; now {current}"));
    }
    text.truncate(99);
    text
}

/// The complete manifest (BD-12).
async fn manifest(
    state: &AppState,
    base: &PublicBase,
    job: &ExportJob,
) -> Result<Response, ApiError> {
    let spec: ExportSpec = serde_json::from_str(&job.spec)
        .map_err(|e| ApiError::Internal(format!("stored export spec: {e}")))?;
    let files = state
        .auth
        .tokens
        .store()
        .export_files(&job.id)
        .await
        .map_err(unavailable)?;
    let entry = |file: &crate::state::exports::ExportFile| {
        json!({
            "type": file.resource_type,
            "url": format!("{}/{FILE_PATH}/{}/{}", base.fhir(), job.id, file.name),
            "count": file.lines,
        })
    };
    let output: Vec<Json> = files
        .iter()
        .filter(|f| f.resource_type != "OperationOutcome" && f.lines > 0)
        .map(entry)
        .collect();
    let error: Vec<Json> = files
        .iter()
        .filter(|f| f.resource_type == "OperationOutcome" && f.lines > 0)
        .map(entry)
        .collect();
    let mut body = json!({
        "transactionTime": instant(job.transaction_ms),
        "request": job.request,
        "requiresAccessToken": true,
        "output": output,
        "error": error,
    });
    let not_applied = crate::export::since_not_applied(&state.adapter, &spec);
    if !not_applied.is_empty() {
        body["extension"] = json!({ SINCE_NOT_APPLIED: not_applied });
    }
    let mut response = (StatusCode::OK, fhir_json(&body)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(expires) = job.expires_ms.and_then(|ms| {
        std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_millis(ms as u64))
    }) && let Ok(value) = HeaderValue::from_str(&httpdate::fmt_http_date(expires))
    {
        headers.insert(header::EXPIRES, value);
    }
    Ok(response)
}

/// `DELETE /fhir/$export-status/{id}`: cancels the export and deletes its files (BD-14).
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Response {
    let answer = async {
        own_job(&state, caller.claims.as_deref(), &id).await?;
        state
            .auth
            .tokens
            .store()
            .cancel_export(&id, now_ms())
            .await
            .map_err(unavailable)?;
        // A worker still writing stops at its next commit; the sweeper removes what it adds.
        state.exports.sweep().await;
        tracing::info!(export = %id, "export cancelled");
        let outcome = operation_outcome(&[Issue {
            severity: Severity::Information,
            code: IssueType::Informational,
            diagnostics: format!("export {id} cancelled; its files are deleted"),
            expression: None,
        }]);
        let mut response = (StatusCode::ACCEPTED, fhir_json(&outcome)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/fhir+json"),
        );
        Ok::<_, ApiError>(response)
    }
    .await;
    answer.unwrap_or_else(|e| error_response(e, None))
}

/// `GET /fhir/$export-file/{id}/{name}`: one NDJSON file of a complete export, streamed (gzip
/// when the client accepts it, by the route's compression layer).
pub async fn file(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
) -> Response {
    let answer = async {
        let job = own_job(&state, caller.claims.as_deref(), &id).await?;
        let missing = || ApiError::NotFound(format!("no file {name} in export {id}"));
        if job.status != exports::COMPLETE || !crate::export::files::is_file_name(&name) {
            return Err(missing());
        }
        let files = state
            .auth
            .tokens
            .store()
            .export_files(&id)
            .await
            .map_err(unavailable)?;
        let known = files.iter().find(|f| f.name == name).ok_or_else(missing)?;
        let dir = state.exports.job_dir(&id);
        let handle = tokio::fs::File::open(dir.join(&known.name))
            .await
            .map_err(|_| missing())?;
        // The audit trail records the download with every patient whose data the file holds.
        let patients = crate::export::files::patients_in(&dir, &known.name)
            .await
            .map_err(|e| ApiError::Internal(format!("the export's patient list: {e}")))?;
        let stream = tokio_util::io::ReaderStream::new(handle);
        let mut response = Body::from_stream(stream).into_response();
        response
            .extensions_mut()
            .insert(super::audit::PatientsTouched(patients));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/fhir+ndjson"),
        );
        if known.bytes >= 0 {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(known.bytes));
        }
        Ok(response)
    }
    .await;
    answer.unwrap_or_else(|e| error_response(e, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parameters: Json) -> Result<KickoffRequest, ApiError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/fhir+json"),
        );
        parameters_body(&headers, None, &Bytes::from(parameters.to_string()))
    }

    #[test]
    fn a_posted_parameters_lists_its_parameters_in_an_array() {
        let listed = body(json!({"resourceType": "Parameters", "parameter": [
            {"name": "_type", "valueCode": 7, "valueUri": "Patient"},
            {"name": "patient", "valueReference": {"reference": "Patient/3"}}]}))
        .unwrap();
        assert_eq!(listed.pairs, [("_type".to_owned(), "Patient".to_owned())]);
        assert_eq!(listed.patients, ["Patient/3"]);
        assert!(
            body(json!({"resourceType": "Parameters"}))
                .unwrap()
                .pairs
                .is_empty()
        );
        for parameter in [json!(null), json!({}), json!("_type"), json!(1)] {
            let refused = body(json!({"resourceType": "Parameters", "parameter": parameter}));
            assert!(
                matches!(refused, Err(ApiError::BadRequest(_))),
                "{parameter}: {refused:?}"
            );
        }
    }
}
