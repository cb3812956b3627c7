//! The audit trail at the HTTP edge: `record`, the middleware that writes one IHE BALP-shaped
//! AuditEvent for every FHIR data request (reads, searches with their includes, and every 401,
//! 403 and other failure), and the `/fhir/AuditEvent` read and search served from the state store.
//!
//! The middleware wraps `authorize::require_token`, so it sees refused requests too. It learns
//! who asked from the token's claims (`require_token` puts them in the response's extensions) and
//! the client's address (`origin::ClientAddress`: behind a trusted proxy, the client it names),
//! which patients the answer touched from the handlers (`PatientsTouched`), and the query from
//! the handlers (`AuditQuery`, which includes a POST form) or the URL. The answer leaves only
//! after its event is durable (committed, or written to the audit journal): when it cannot be,
//! the client gets 503 and no data (fail closed). Reading the trail waits for the writer to
//! catch up, so a reader sees every request answered before its own.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{SecondsFormat, TimeZone, Utc};
use serde::Serialize;
use serde_json::Value as Json;

use super::AppState;
use super::handlers::{encode_query, error_response, form_pairs, param, query_pairs};
use super::negotiate::{body, negotiate, respond};
use super::origin::{ClientAddress, PublicBase};
use super::request_id::RequestId;
use crate::access::{Access, Interaction, PatientLimit};
use crate::adapter::tree::{Field, Tree};
use crate::auth::scope::{Context, Scope, parse_scopes_lenient};
use crate::auth::tokens::AccessClaims;
use crate::error::ApiError;
use crate::fhir::bundle::Searchset;
use crate::fhir::is_fhir_id;
use crate::fhir::outcome::{Issue, IssueType};
use crate::search::date::{Prefix, date_value_pattern, parse_date_query};
use crate::search::parse::{DEFAULT_COUNT, parse_count};
use crate::state::audit::{AUDIT_EVENT, AuditFilter, AuditRecord, RecordedBound};
use crate::state::users::Role;

/// Response extension: the Patient ids whose data the answer carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatientsTouched(pub BTreeSet<String>);

impl PatientsTouched {
    /// Adds the patients `resource` is about: a Patient itself, and every Patient it references
    /// (subject, patient, beneficiary, participant actors, ...). Counting every reference errs on
    /// the side of recording a patient whose name the answer merely carries.
    pub fn add(&mut self, resource: &Json) {
        self.add_field(Field::Json(resource));
    }

    /// `add` for a mapped resource.
    pub fn add_mapped(&mut self, resource: &Tree) {
        self.add_field(Field::Tree(resource));
    }

    fn add_field(&mut self, resource: Field<'_>) {
        let text = |name| resource.get(name).and_then(Field::as_str);
        if text("resourceType") == Some("Patient")
            && let Some(id) = text("id")
            && !self.0.contains(id)
        {
            self.0.insert(id.to_owned());
        }
        resource.each_reference(&mut |reference| {
            if let Some(id) = patient_id(reference)
                && !self.0.contains(id)
            {
                self.0.insert(id.to_owned());
            }
        });
    }
}

/// The id in `Patient/<id>` or `<base>/Patient/<id>`.
fn patient_id(reference: &str) -> Option<&str> {
    let (before, id) = reference.rsplit_once('/')?;
    let is_patient = before == "Patient" || before.ends_with("/Patient");
    (is_patient && is_fhir_id(id)).then_some(id)
}

/// Response extension: the search parameters as the handler received them (query string and
/// POST form), encoded as a query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery(pub String);

/// What a request did, in FHIR's restful-interaction terms, and the BALP action code.
fn interaction(method: &Method, segments: &[&str]) -> (Option<&'static str>, &'static str) {
    let read = *method == Method::GET || *method == Method::HEAD;
    match (segments, read) {
        ([_], true) => (Some("search-type"), "E"),
        ([_, "_search"], _) if *method == Method::POST => (Some("search-type"), "E"),
        ([_, _], true) => (Some("read"), "R"),
        ([_, _, "_history", _], true) => (Some("vread"), "R"),
        ([_], false) if *method == Method::POST => (Some("create"), "C"),
        ([_, _], false) if *method == Method::PUT => (Some("update"), "U"),
        ([_, _], false) if *method == Method::PATCH => (Some("patch"), "U"),
        ([_, _], false) if *method == Method::DELETE => (Some("delete"), "D"),
        _ => (None, "E"),
    }
}

/// `AuditEvent.outcome` for an HTTP status: success, minor failure (the client's request), or
/// serious failure (the server's).
fn outcome_code(status: StatusCode) -> &'static str {
    if status.is_client_error() {
        "4"
    } else if status.is_server_error() {
        "8"
    } else {
        "0"
    }
}

/// Everything an event says about one request, gathered by `record`.
struct Exchange<'a> {
    method: &'a Method,
    path: &'a str,
    query: Option<&'a str>,
    status: StatusCode,
    claims: Option<&'a AccessClaims>,
    peer: Option<IpAddr>,
    base: Option<&'a str>,
    request_id: &'a RequestId,
    patients: &'a BTreeSet<String>,
}

const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const ENTITY_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
const OBJECT_ROLE: &str = "http://terminology.hl7.org/CodeSystem/object-role";

// The AuditEvent's elements, in FHIR's element order, written straight to JSON: every request
// makes one, and building it as a `serde_json::Value` tree (a map per coding) cost more than
// serializing it.

#[derive(Serialize)]
struct Coding<'a> {
    system: &'a str,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    display: Option<&'a str>,
}

const fn coding<'a>(system: &'a str, code: &'a str, display: &'a str) -> Coding<'a> {
    Coding {
        system,
        code,
        display: Some(display),
    }
}

#[derive(Serialize)]
struct Concept<'a> {
    coding: [Coding<'a>; 1],
}

#[derive(Serialize)]
struct Identifier<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<&'a str>,
    value: &'a str,
}

#[derive(Serialize, Default)]
struct Reference<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    identifier: Option<Identifier<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    display: Option<&'a str>,
}

#[derive(Serialize)]
struct Network<'a> {
    address: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct Agent<'a> {
    #[serde(rename = "type")]
    kind: Concept<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    who: Option<Reference<'a>>,
    requestor: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<[&'a str; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    network: Option<Network<'a>>,
}

#[derive(Serialize)]
struct Source<'a> {
    observer: Reference<'a>,
    #[serde(rename = "type")]
    kind: [Coding<'a>; 1],
}

#[derive(Serialize)]
struct Entity<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    what: Option<Reference<'a>>,
    #[serde(rename = "type")]
    kind: Coding<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<Coding<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    query: Option<String>,
}

impl<'a> Entity<'a> {
    /// An entity naming a resource by its reference (`Patient/7`).
    fn about(reference: &'a str, kind: Coding<'a>, role: Coding<'a>) -> Entity<'a> {
        Entity {
            what: Some(Reference {
                reference: Some(reference),
                ..Reference::default()
            }),
            kind,
            role: Some(role),
            query: None,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AuditEventJson<'a> {
    resource_type: &'static str,
    id: &'a str,
    #[serde(rename = "type")]
    kind: Coding<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subtype: Option<[Coding<'a>; 1]>,
    action: &'static str,
    recorded: String,
    outcome: &'static str,
    outcome_desc: String,
    agent: Vec<Agent<'a>>,
    source: Source<'a>,
    entity: Vec<Entity<'a>>,
}

/// The AuditEvent of `exchange` (BALP: RESTful interaction, OAuth agents, patient, query and
/// request-id entities) and the fields search needs.
fn audit_record(exchange: &Exchange<'_>) -> AuditRecord {
    // Time-ordered (UUID v7): the store's unique index on the id then grows at its end, where a
    // random id would dirty a page of it anywhere for every event a commit writes.
    let id = uuid::Uuid::now_v7().to_string();
    let recorded = Utc::now();
    let segments: Vec<&str> = exchange
        .path
        .strip_prefix("/fhir/")
        .unwrap_or_default()
        .split('/')
        .collect();
    let (subtype, action) = interaction(exchange.method, &segments);
    let outcome = outcome_code(exchange.status);
    let peer = exchange.peer.map(|peer| peer.to_string());

    let mut agents = Vec::with_capacity(3);
    agents.push(Agent {
        kind: Concept {
            coding: [coding(DCM, "110153", "Source Role ID")],
        },
        who: exchange.claims.map(|claims| Reference {
            identifier: Some(Identifier {
                system: Some(&claims.iss),
                value: &claims.client_id,
            }),
            ..Reference::default()
        }),
        requestor: exchange.claims.is_none(),
        policy: None,
        network: peer
            .as_deref()
            .map(|address| Network { address, kind: "2" }),
    });
    if let Some(claims) = exchange.claims {
        agents.push(Agent {
            kind: Concept {
                coding: [coding(
                    "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                    "IRCP",
                    "information recipient",
                )],
            },
            who: Some(Reference {
                reference: claims.fhir_user.as_deref(),
                identifier: Some(Identifier {
                    system: Some(&claims.iss),
                    value: &claims.sub,
                }),
                display: None,
            }),
            requestor: true,
            policy: Some([&claims.jti]),
            network: None,
        });
    }
    agents.push(Agent {
        kind: Concept {
            coding: [coding(DCM, "110152", "Destination Role ID")],
        },
        who: Some(Reference {
            display: Some("Portico"),
            ..Reference::default()
        }),
        requestor: false,
        policy: None,
        network: exchange.base.map(|address| Network { address, kind: "5" }),
    });

    let patient_references: Vec<String> = exchange
        .patients
        .iter()
        .map(|patient| format!("Patient/{patient}"))
        .collect();
    let mut entities: Vec<Entity<'_>> = Vec::with_capacity(patient_references.len() + 2);
    entities.extend(patient_references.iter().map(|reference| {
        Entity::about(
            reference,
            coding(ENTITY_TYPE, "1", "Person"),
            coding(OBJECT_ROLE, "1", "Patient"),
        )
    }));
    let read_reference = match (segments.as_slice(), subtype) {
        ([resource_type, id, ..], Some("read" | "vread"))
            if resource_type.bytes().all(|b| b.is_ascii_alphabetic()) && is_fhir_id(id) =>
        {
            Some(format!("{resource_type}/{id}"))
        }
        _ => None,
    };
    if let Some(reference) = &read_reference {
        entities.push(Entity::about(
            reference,
            coding(ENTITY_TYPE, "2", "System Object"),
            coding(OBJECT_ROLE, "4", "Domain Resource"),
        ));
    }
    if subtype == Some("search-type") {
        let resource_type = segments.first().copied().unwrap_or_default();
        let query = match exchange.query {
            Some(query) if !query.is_empty() => format!("{resource_type}?{query}"),
            _ => resource_type.to_owned(),
        };
        entities.push(Entity {
            what: None,
            kind: coding(ENTITY_TYPE, "2", "System Object"),
            role: Some(coding(OBJECT_ROLE, "24", "Query")),
            query: Some(STANDARD.encode(query)),
        });
    }
    entities.push(Entity {
        what: Some(Reference {
            identifier: Some(Identifier {
                system: None,
                value: exchange.request_id.as_str(),
            }),
            ..Reference::default()
        }),
        kind: coding(
            "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType",
            "XrequestId",
            "X-Request-Id",
        ),
        role: None,
        query: None,
    });

    let event = AuditEventJson {
        resource_type: AUDIT_EVENT,
        id: &id,
        kind: coding(
            "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "rest",
            "RESTful Operation",
        ),
        subtype: subtype.map(|code| {
            [Coding {
                system: "http://hl7.org/fhir/restful-interaction",
                code,
                display: None,
            }]
        }),
        action,
        recorded: recorded.to_rfc3339_opts(SecondsFormat::Millis, true),
        outcome,
        outcome_desc: format!("HTTP {}", exchange.status.as_u16()),
        agent: agents,
        source: Source {
            observer: Reference {
                identifier: exchange.base.map(|base| Identifier {
                    system: Some("urn:ietf:rfc:3986"),
                    value: base,
                }),
                display: Some("Portico"),
                ..Reference::default()
            },
            kind: [coding(
                "http://terminology.hl7.org/CodeSystem/security-source-type",
                "4",
                "Application Server",
            )],
        },
        entity: entities,
    };
    let resource = serde_json::to_string(&event).expect("an AuditEvent serializes");

    AuditRecord {
        id,
        recorded_ms: recorded.timestamp_millis(),
        subtype: subtype.map(str::to_owned),
        outcome: outcome.to_owned(),
        client_id: exchange.claims.map(|c| c.client_id.clone()),
        subject: exchange.claims.map(|c| c.sub.clone()),
        fhir_user: exchange.claims.and_then(|c| c.fhir_user.clone()),
        request_id: exchange.request_id.as_str().to_owned(),
        patients: exchange.patients.iter().cloned().collect(),
        resource,
    }
}

/// A search Portico runs for a signed-in person outside the FHIR API: the patient picker, which
/// shows a clinician patients' names and birth dates before any token exists.
pub struct SignedInSearch<'a> {
    /// The signed-in user and the app they are authorizing, in the shape of a token's claims
    /// (`jti` names the sign-in transaction).
    pub who: &'a AccessClaims,
    pub resource_type: &'a str,
    pub query: &'a str,
    pub patients: &'a BTreeSet<String>,
    pub peer: Option<IpAddr>,
    pub base: &'a str,
    pub request_id: &'a RequestId,
}

/// Audits a `SignedInSearch` as the FHIR search it amounts to; the caller withholds the page
/// when this fails (fail closed, as for the API).
pub async fn record_signed_in_search(
    state: &AppState,
    search: SignedInSearch<'_>,
) -> Result<(), ApiError> {
    let path = format!("/fhir/{}", search.resource_type);
    let record = audit_record(&Exchange {
        method: &Method::GET,
        path: &path,
        query: Some(search.query),
        status: StatusCode::OK,
        claims: Some(search.who),
        peer: search.peer,
        base: Some(search.base),
        request_id: search.request_id,
        patients: search.patients,
    });
    state.audit.append(record).await.map_err(|error| {
        tracing::error!(%error, "the audit event was not stored; the page is withheld");
        ApiError::Unavailable("the audit trail cannot be written now; retry shortly".into())
    })
}

/// Middleware: audits every request to a non-public FHIR path and withholds the answer (503)
/// when its event cannot be committed.
pub async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    if super::authorize::is_public(&path) {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let url_query = request.uri().query().map(str::to_owned);
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .cloned()
        .unwrap_or_default();
    let peer = request
        .extensions()
        .get::<ClientAddress>()
        .and_then(|address| address.0);
    let base = request
        .extensions()
        .get::<PublicBase>()
        .map(|base| base.fhir().to_owned());
    let mut response = next.run(request).await;
    let patients = response
        .extensions_mut()
        .remove::<PatientsTouched>()
        .unwrap_or_default();
    let query = response
        .extensions_mut()
        .remove::<AuditQuery>()
        .map(|query| query.0)
        .or(url_query);
    let claims = response.extensions().get::<Arc<AccessClaims>>().cloned();
    let record = audit_record(&Exchange {
        method: &method,
        path: &path,
        query: query.as_deref(),
        status: response.status(),
        claims: claims.as_deref(),
        peer,
        base: base.as_deref(),
        request_id: &request_id,
        patients: &patients.0,
    });
    match state.audit.append(record).await {
        Ok(()) => response,
        Err(error) => {
            tracing::error!(%error, "the audit event was not stored; the answer is withheld");
            ApiError::Unavailable(
                "the audit trail cannot be written now, so the request was not answered; retry shortly"
                    .into(),
            )
            .into_response()
        }
    }
}

/// Whether this request may read the audit trail: never under a patient limit; with a token,
/// a `system/` scope granting AuditEvent (`system/AuditEvent.rs`, `system/*.rs`) or a `user/`
/// one held by an admin user; without one (an access the server itself set), its access.
async fn may_read_audit(
    state: &AppState,
    access: &Access,
    claims: Option<&AccessClaims>,
    interaction: Interaction,
) -> Result<(), ApiError> {
    let forbidden = || {
        ApiError::Forbidden(format!(
            "this access does not grant {} on {AUDIT_EVENT}",
            match interaction {
                Interaction::Read => "read",
                Interaction::Search => "search",
            }
        ))
    };
    if *access.patients() != PatientLimit::Everyone {
        return Err(forbidden());
    }
    let Some(claims) = claims else {
        return if access.allows(AUDIT_EVENT, interaction) {
            Ok(())
        } else {
            Err(forbidden())
        };
    };
    let (scopes, _) = parse_scopes_lenient(&claims.scope);
    let mut user_scope = false;
    for scope in &scopes {
        let Scope::Resource(scope) = scope else {
            continue;
        };
        let covers = scope
            .resource_type
            .as_deref()
            .is_none_or(|t| t == AUDIT_EVENT)
            && match interaction {
                Interaction::Read => scope.read,
                Interaction::Search => scope.search,
            }
            && scope.filter.is_empty();
        match scope.context {
            Context::System if covers => return Ok(()),
            Context::User if covers => user_scope = true,
            _ => {}
        }
    }
    if user_scope && is_admin(state, claims).await? {
        return Ok(());
    }
    Err(forbidden())
}

/// Whether the token was issued to an admin user: the store's record of the token names the
/// user (a client's own tokens name none), and the user's role decides.
pub(super) async fn is_admin(state: &AppState, claims: &AccessClaims) -> Result<bool, ApiError> {
    let store = state.auth.tokens.store();
    let unavailable = |error: crate::state::StateError| {
        tracing::warn!(%error, "cannot check the user's role");
        ApiError::Unavailable("the state store is unavailable; retry shortly".into())
    };
    let Some(username) = store
        .access_token(&claims.jti)
        .await
        .map_err(unavailable)?
        .and_then(|token| token.username)
    else {
        return Ok(false);
    };
    let user = store.user(&username).await.map_err(unavailable)?;
    Ok(user.is_some_and(|user| user.role == Role::Admin))
}

/// `GET /fhir/AuditEvent/{id}`.
pub async fn read(
    State(state): State<AppState>,
    Extension(access): Extension<Arc<Access>>,
    claims: Option<Extension<Arc<AccessClaims>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let pairs = query_pairs(raw.as_deref());
    let negotiated = match negotiate(&headers, param(&pairs, "_format"), param(&pairs, "_pretty")) {
        Ok(n) => n,
        Err(e) => return error_response(e, None),
    };
    let claims = claims.map(|Extension(claims)| claims);
    match read_event(&state, &access, claims.as_deref(), &id).await {
        Ok(event) => match body(&negotiated, &event) {
            Ok(bytes) => respond(&negotiated, bytes),
            Err(e) => error_response(e, Some(&negotiated)),
        },
        Err(e) => error_response(e, Some(&negotiated)),
    }
}

async fn read_event(
    state: &AppState,
    access: &Access,
    claims: Option<&AccessClaims>,
    id: &str,
) -> Result<Json, ApiError> {
    may_read_audit(state, access, claims, Interaction::Read).await?;
    let not_found = || ApiError::NotFound(format!("{AUDIT_EVENT}/{id} is not known"));
    if !is_fhir_id(id) {
        return Err(not_found());
    }
    caught_up(state).await?;
    let stored = state
        .auth
        .tokens
        .store()
        .audit_event(id)
        .await
        .map_err(store_unavailable)?
        .ok_or_else(not_found)?;
    serde_json::from_str(&stored).map_err(|e| ApiError::Internal(e.to_string()))
}

/// Waits until the events of every request answered so far are in the store (journaled events
/// are committed behind the answers), so a reader sees its own requests.
async fn caught_up(state: &AppState) -> Result<(), ApiError> {
    state.audit.flush().await.map_err(|error| {
        tracing::warn!(%error, "the audit trail is not caught up");
        ApiError::Unavailable(format!(
            "the audit trail cannot be read now ({error}); retry shortly"
        ))
    })
}

fn store_unavailable(error: crate::state::StateError) -> ApiError {
    tracing::warn!(%error, "audit store unavailable");
    ApiError::Unavailable("the audit store is unavailable; retry shortly".into())
}

/// A search parameter of a resource served from the state store (the audit trail, Groups) as the
/// CapabilityStatement and the OpenAPI document advertise it, with the grammar of the values its
/// search parser (`parse_search` here, `groups::parse_search`) accepts for it.
pub struct StateSearchParam {
    pub name: &'static str,
    /// The FHIR search parameter type.
    pub kind: &'static str,
    pub documentation: &'static str,
    /// The values the parser accepts, as an ECMA-262 regular expression (the OpenAPI document
    /// publishes it; a test in `api::openapi` holds the two together).
    pub pattern: fn() -> String,
}

/// The audit trail's search parameters; `_count` and `_cursor` come after them.
pub const SEARCH_PARAMS: [StateSearchParam; 4] = [
    StateSearchParam {
        name: "date",
        kind: "date",
        documentation: "recorded; values without a zone are UTC",
        pattern: date_pattern,
    },
    StateSearchParam {
        name: "patient",
        kind: "reference",
        documentation: "a patient whose data the answer carried",
        pattern: patient_pattern,
    },
    StateSearchParam {
        name: "agent",
        kind: "token",
        documentation: "a client id, a token subject or a fhirUser reference",
        pattern: agent_pattern,
    },
    StateSearchParam {
        name: "outcome",
        kind: "token",
        documentation: "0, 4, 8 or 12",
        pattern: outcome_pattern,
    },
];

/// The characters `str::trim` takes off each comma-separated value (Unicode White_Space), as the
/// inside of a regular expression class.
pub(crate) const TRIMMED: &str =
    "\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";

/// Comma-separated values as `parse_search` splits them (each trimmed, blank ones skipped): at
/// least one, each matching `value`.
pub(super) fn listed(value: &str) -> String {
    let blank = format!("[{TRIMMED}]*");
    let full = format!("{blank}(?:{value}){blank}");
    format!("^(?:{blank},)*{full}(?:,(?:{full}|{blank}))*$")
}

/// `date`: one value (no commas), any prefix but `ap`.
fn date_pattern() -> String {
    format!("^{}$", date_value_pattern(|prefix| prefix != Prefix::Ap))
}

/// `patient`: ids or `Patient/<id>`.
fn patient_pattern() -> String {
    listed("(?:Patient/)?[-.0-9A-Za-z]{1,64}")
}

/// `agent`: any text in which one comma-separated value is not blank.
fn agent_pattern() -> String {
    format!("^[,{TRIMMED}]*[^,{TRIMMED}][\\s\\S]*$")
}

/// `outcome`: AuditEvent's outcome codes.
fn outcome_pattern() -> String {
    listed("0|4|8|12")
}

/// The values `_cursor` takes: a position as `next` links write it (an event's sequence number:
/// positive, without sign or leading zero, at most 18 digits, so it always fits an `i64`).
pub const CURSOR_PATTERN: &str = "^[1-9][0-9]{0,17}$";

fn parse_cursor(value: &str) -> Option<i64> {
    let canonical = (1..=18).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_digit())
        && !value.starts_with('0');
    canonical.then(|| value.parse().ok()).flatten()
}

/// A parsed AuditEvent search.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct AuditSearch {
    filter: AuditFilter,
    count: usize,
    before_seq: Option<i64>,
    /// The parameters as applied (for `self` and `next`), without `_cursor`.
    applied: Vec<(String, String)>,
}

/// The parameters of an AuditEvent search: `SEARCH_PARAMS`, `_count`, `_cursor` (from a `next`
/// link), `_format` and `_pretty`. Anything else is a 400.
pub(super) fn parse_search(pairs: &[(String, String)]) -> Result<AuditSearch, ApiError> {
    let mut search = AuditSearch {
        count: DEFAULT_COUNT,
        ..AuditSearch::default()
    };
    let mut issues = Vec::new();
    let invalid = |name: &str, message: String| Issue::error(IssueType::Invalid, message).at(name);
    for (name, value) in pairs {
        let values = || -> Vec<String> {
            value
                .split(',')
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .collect()
        };
        match name.as_str() {
            "_format" | "_pretty" => {}
            "date" => match date_bounds(value) {
                Ok(bounds) => search.filter.recorded.extend(bounds),
                Err(message) => issues.push(invalid(name, message)),
            },
            "patient" => {
                let ids: Vec<String> = values()
                    .into_iter()
                    .map(|v| v.strip_prefix("Patient/").map(str::to_owned).unwrap_or(v))
                    .collect();
                if ids.is_empty() || !ids.iter().all(|id| is_fhir_id(id)) {
                    issues.push(invalid(
                        name,
                        format!("{value:?} is not a Patient id or Patient/<id>"),
                    ));
                } else {
                    search.filter.patients.push(ids);
                }
            }
            "agent" => match values() {
                agents if agents.is_empty() => {
                    issues.push(invalid(name, "agent needs a value".into()))
                }
                agents => search.filter.agents.push(agents),
            },
            "outcome" => {
                let codes = values();
                if codes.is_empty()
                    || !codes
                        .iter()
                        .all(|c| ["0", "4", "8", "12"].contains(&c.as_str()))
                {
                    issues.push(invalid(
                        name,
                        format!("{value:?}: outcome is 0, 4, 8 or 12"),
                    ));
                } else {
                    search.filter.outcomes.push(codes);
                }
            }
            "_count" => match parse_count(value) {
                Some(count) => search.count = count,
                None => issues.push(invalid(name, format!("{value:?} is not a count"))),
            },
            "_cursor" => {
                match parse_cursor(value) {
                    Some(seq) => search.before_seq = Some(seq),
                    None => issues.push(invalid(name, "invalid paging cursor".into())),
                }
                continue;
            }
            _ => {
                issues.push(
                    Issue::error(
                        IssueType::NotSupported,
                        format!(
                            "{name} is not a search parameter of {AUDIT_EVENT} ({}, _count)",
                            SEARCH_PARAMS.map(|param| param.name).join(", ")
                        ),
                    )
                    .at(name.as_str()),
                );
                continue;
            }
        }
        search.applied.push((name.clone(), value.clone()));
    }
    if issues.is_empty() {
        Ok(search)
    } else {
        Err(ApiError::BadRequest(issues))
    }
}

/// A `date` value as conditions on `recorded`. Values without a zone are UTC.
fn date_bounds(value: &str) -> Result<Vec<RecordedBound>, String> {
    let query = parse_date_query(value, chrono_tz::UTC)?;
    let millis = |t: chrono::NaiveDateTime| Utc.from_utc_datetime(&t).timestamp_millis();
    let (start, end) = (millis(query.range.start), millis(query.range.end));
    Ok(match query.prefix {
        Prefix::Eq => vec![RecordedBound::AtOrAfter(start), RecordedBound::Before(end)],
        Prefix::Ne => vec![RecordedBound::Outside(start, end)],
        Prefix::Ge => vec![RecordedBound::AtOrAfter(start)],
        Prefix::Gt | Prefix::Sa => vec![RecordedBound::AtOrAfter(end)],
        Prefix::Le => vec![RecordedBound::Before(end)],
        Prefix::Lt | Prefix::Eb => vec![RecordedBound::Before(start)],
        Prefix::Ap => {
            return Err(format!(
                "{value:?}: the ap prefix is not supported on {AUDIT_EVENT} date"
            ));
        }
    })
}

/// `GET /fhir/AuditEvent`: newest first, `next` links page back in time.
pub async fn search_get(
    State(state): State<AppState>,
    Extension(access): Extension<Arc<Access>>,
    Extension(base): Extension<PublicBase>,
    claims: Option<Extension<Arc<AccessClaims>>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let pairs = query_pairs(raw.as_deref());
    search(&state, &access, &base, claims, &headers, pairs).await
}

/// `POST /fhir/AuditEvent/_search` (form body).
pub async fn search_post(
    State(state): State<AppState>,
    Extension(access): Extension<Arc<Access>>,
    Extension(base): Extension<PublicBase>,
    claims: Option<Extension<Arc<AccessClaims>>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    form: Bytes,
) -> Response {
    match form_pairs(&headers, raw.as_deref(), &form) {
        Ok(pairs) => search(&state, &access, &base, claims, &headers, pairs).await,
        Err(e) => error_response(e, None),
    }
}

async fn search(
    state: &AppState,
    access: &Access,
    base: &PublicBase,
    claims: Option<Extension<Arc<AccessClaims>>>,
    headers: &HeaderMap,
    pairs: Vec<(String, String)>,
) -> Response {
    let negotiated = match negotiate(headers, param(&pairs, "_format"), param(&pairs, "_pretty")) {
        Ok(n) => n,
        Err(e) => return error_response(e, None),
    };
    let claims = claims.map(|Extension(claims)| claims);
    let mut response =
        match search_events(state, access, claims.as_deref(), base.fhir(), &pairs).await {
            Ok(bundle) => match body(&negotiated, &bundle) {
                Ok(bytes) => respond(&negotiated, bytes),
                Err(e) => error_response(e, Some(&negotiated)),
            },
            Err(e) => error_response(e, Some(&negotiated)),
        };
    response
        .extensions_mut()
        .insert(AuditQuery(encode_query(&pairs)));
    response
}

async fn search_events<'a>(
    state: &AppState,
    access: &Access,
    claims: Option<&AccessClaims>,
    base: &'a str,
    pairs: &[(String, String)],
) -> Result<Searchset<'a>, ApiError> {
    may_read_audit(state, access, claims, Interaction::Search).await?;
    let search = parse_search(pairs)?;
    caught_up(state).await?;
    let store = state.auth.tokens.store();
    let total = store
        .count_audit_events(&search.filter)
        .await
        .map_err(store_unavailable)?;
    let mut events = if search.count == 0 {
        Vec::new()
    } else {
        store
            .search_audit_events(&search.filter, search.count + 1, search.before_seq)
            .await
            .map_err(store_unavailable)?
    };
    let more = events.len() > search.count;
    events.truncate(search.count);
    let link = |extra: Option<i64>| {
        let mut query = search.applied.clone();
        if let Some(seq) = extra {
            query.push(("_cursor".into(), seq.to_string()));
        }
        match encode_query(&query) {
            query if query.is_empty() => format!("{base}/{AUDIT_EVENT}"),
            query => format!("{base}/{AUDIT_EVENT}?{query}"),
        }
    };
    let next_url = (more && search.count > 0)
        .then(|| events.last().map(|last| link(Some(last.seq))))
        .flatten();
    let matches = events
        .iter()
        .map(|event| serde_json::from_str(&event.resource).map(Tree::Json))
        .collect::<Result<Vec<Tree>, _>>()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Searchset {
        base_url: base,
        self_url: link(search.before_seq),
        next_url,
        total: Some(total),
        matches,
        included: Vec::new(),
        outcome: None,
        timestamp: Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::parse::MAX_COUNT;
    use serde_json::json;

    #[test]
    fn patients_are_the_patient_itself_and_every_patient_reference() {
        let mut touched = PatientsTouched::default();
        touched.add(&json!({"resourceType": "Patient", "id": "7", "link": [{"other": {"reference": "Patient/8"}}]}));
        touched.add(&json!({
            "resourceType": "Appointment", "id": "a1",
            "participant": [
                {"actor": {"reference": "Patient/9"}},
                {"actor": {"reference": "Practitioner/9"}},
                {"actor": {"reference": "https://h/fhir/Patient/10"}},
            ],
        }));
        touched.add(&json!({"resourceType": "Observation", "subject": {"reference": "Patient/bad id"}, "note": [{"text": "Patient/11"}]}));
        let ids: Vec<&str> = touched.0.iter().map(String::as_str).collect();
        assert_eq!(ids, ["10", "7", "8", "9"]);
    }

    #[test]
    fn interactions_follow_method_and_path() {
        let cases = [
            (Method::GET, "Patient", Some("search-type"), "E"),
            (Method::POST, "Patient/_search", Some("search-type"), "E"),
            (Method::GET, "Patient/1", Some("read"), "R"),
            (Method::HEAD, "Patient/1", Some("read"), "R"),
            (Method::GET, "Patient/1/_history/2", Some("vread"), "R"),
            (Method::POST, "Patient", Some("create"), "C"),
            (Method::PUT, "Patient/1", Some("update"), "U"),
            (Method::DELETE, "Patient/1", Some("delete"), "D"),
            (Method::GET, "Patient/1/x", None, "E"),
        ];
        for (method, path, subtype, action) in cases {
            let segments: Vec<&str> = path.split('/').collect();
            assert_eq!(
                interaction(&method, &segments),
                (subtype, action),
                "{method} {path}"
            );
        }
    }

    #[test]
    fn search_parameters_are_parsed_or_refused() {
        let pairs = |text: &str| query_pairs(Some(text));
        let search = parse_search(&pairs(
            "patient=Patient/1,2&agent=app&outcome=0,4&date=ge2026-01-01&date=lt2026-02&_count=5000&_cursor=9",
        ))
        .unwrap();
        assert_eq!(
            search.filter.patients,
            vec![vec!["1".to_owned(), "2".to_owned()]]
        );
        assert_eq!(search.filter.agents, vec![vec!["app".to_owned()]]);
        assert_eq!(
            search.filter.outcomes,
            vec![vec!["0".to_owned(), "4".to_owned()]]
        );
        assert_eq!(
            search.filter.recorded,
            vec![
                RecordedBound::AtOrAfter(1_767_225_600_000),
                RecordedBound::Before(1_769_904_000_000)
            ]
        );
        assert_eq!(search.count, MAX_COUNT);
        assert_eq!(search.before_seq, Some(9));
        assert!(search.applied.iter().all(|(name, _)| name != "_cursor"));
        for bad in [
            "family=smith",
            "outcome=1",
            "patient=Patient/a b",
            "date=yesterday",
            "date=ap2026",
            "_count=-1",
            "_count=+5",
            "_cursor=x",
            "_cursor=01",
            "agent=",
        ] {
            let Err(ApiError::BadRequest(issues)) = parse_search(&pairs(bad)) else {
                panic!("{bad} is refused");
            };
            assert_eq!(issues.len(), 1, "{bad}");
        }
    }
}
