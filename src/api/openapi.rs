//! The OpenAPI 3.1 document of the HTTP surface, built once at startup from the active adapter:
//! one read, search and `_search` path per served type, with that type's search parameters as the
//! CapabilityStatement lists them (`fhir::capability::search_params`), the same three for the
//! audit trail (`api::audit::SEARCH_PARAMS`) and Portico's Groups (`api::groups::SEARCH_PARAMS`)
//! whatever the adapter, the subscription paths (`subscriptions`), the Bulk Data export paths
//! (`export`), and every status code, header and content type the handlers really answer. Parameter schemas describe exactly the
//! values the server accepts (the grammars next to the parsers), so a schema-driven client or
//! fuzzer can tell a valid request from an invalid one; `tests` holds them to the parsers.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{AdditionalProperties, ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder, Ref, RefOr, Required,
    SchemaFormat,
};

use super::AppState;
use super::negotiate::{Format, MEDIA_TYPES};
use super::{audit, groups};
use crate::adapter::Adapter;
use crate::adapter::model::ResourceDef;
use crate::auth::endpoints;
use crate::error::RETRY_AFTER_SECONDS;
use crate::fhir::capability::{search_includes, search_params, search_revincludes};
use crate::search::cursor::CURSOR_PATTERN;
use crate::search::date::date_values_pattern;
use crate::search::parse::{DEFAULT_COUNT, INCLUDE_PATTERN, MAX_COUNT, token_values_pattern};
use crate::state::audit::AUDIT_EVENT;
use crate::state::groups::GROUP;

/// The document as JSON bytes, ready to serve.
pub fn document_json(adapter: &Adapter) -> Bytes {
    Bytes::from(serde_json::to_vec(&document(adapter)).expect("the OpenAPI document serializes"))
}

/// `GET /openapi.json`: the document built at startup.
pub async fn openapi_json(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi_json.clone(),
    )
        .into_response()
}

/// The media types a FHIR answer (200) may have: every type content negotiation can pick.
fn answer_media_types() -> Vec<(&'static str, Format)> {
    let mut types: Vec<(&'static str, Format)> = Vec::new();
    for (_, format, content_type) in MEDIA_TYPES {
        let bare = content_type.split(';').next().unwrap_or_default();
        if !types.iter().any(|(known, _)| *known == bare) {
            types.push((bare, *format));
        }
    }
    types
}

/// The media types of an OperationOutcome after negotiation succeeded: FHIR JSON (errors are
/// written as `application/fhir+json` for every JSON choice) or the negotiated XML type.
fn error_media_types() -> Vec<(&'static str, Format)> {
    answer_media_types()
        .into_iter()
        .filter(|(name, format)| *format == Format::Xml || *name == "application/fhir+json")
        .collect()
}

fn component(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn patterned(pattern: impl Into<String>) -> Schema {
    string().pattern(Some(pattern)).into()
}

fn enumerated(values: &[&str]) -> Schema {
    string().enum_values(Some(values.iter().copied())).into()
}

/// A body in each of `types`; JSON ones carry `schema`, XML ones are the same resource as FHIR XML.
fn fhir_response(
    description: &str,
    types: &[(&str, Format)],
    schema: &RefOr<Schema>,
) -> ResponseBuilder {
    let mut response = ResponseBuilder::new().description(description);
    for (media_type, format) in types {
        let content = match format {
            Format::Json => ContentBuilder::new().schema(Some(schema.clone())).build(),
            Format::Xml => ContentBuilder::new()
                .schema(Some(string().description(Some("FHIR XML"))))
                .build(),
        };
        response = response.content(*media_type, content);
    }
    response
}

fn retry_after(response: ResponseBuilder) -> ResponseBuilder {
    response.header(
        "Retry-After",
        retry_after_header(format!(
            "Always sent: seconds to wait before retrying ({RETRY_AFTER_SECONDS})"
        )),
    )
}

/// A `Retry-After` header in seconds, as Portico sends it.
fn retry_after_header(description: String) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0)),
        )
        .description(Some(description))
        .build()
}

/// The 401 of every operation that needs a bearer token, in `types`.
fn unauthorized(types: &[(&str, Format)]) -> ResponseBuilder {
    fhir_response(
        "OperationOutcome (code login): no bearer token, or one that is invalid, expired or revoked; `WWW-Authenticate: Bearer` says which",
        types,
        &component("OperationOutcome"),
    )
    .header(
        "WWW-Authenticate",
        HeaderBuilder::new()
            .schema(string())
            .description(Some("RFC 6750 challenge: `Bearer realm=\"portico\"`, with `error` and `error_description` when a token was sent".to_owned()))
            .build(),
    )
}

/// Where an operation's data comes from, which decides its 503 and whether it can time out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The practice database: 503 when it is down, 504 past the statement time limit.
    Practice,
    /// Portico's state store (the audit trail): 503 when it is down.
    State,
}

/// Which of the optional answers an operation gives (with what the 400 and 404 mean); every
/// resource operation also answers 401, 403, 406, 500 and 503.
#[derive(Clone, Copy)]
struct Answers {
    not_modified: bool,
    bad_request: Option<&'static str>,
    not_found: Option<&'static str>,
    /// What a 415 means, when the operation takes a body.
    unsupported_body: Option<&'static str>,
    /// A read: the resource's legacy row may be unservable (502).
    unservable: bool,
    source: Source,
}

/// The 415 of a form search.
const FORM_BODY_REFUSED: &str =
    "OperationOutcome: the body is not application/x-www-form-urlencoded";

fn with_responses(
    operation: OperationBuilder,
    ok: ResponseBuilder,
    answers: Answers,
) -> OperationBuilder {
    with_responses_as(operation, "200", ok, answers)
}

/// `with_responses` for an operation whose success is `ok_status` (201 for a create, 204 for
/// a delete).
fn with_responses_as(
    mut operation: OperationBuilder,
    ok_status: &str,
    ok: ResponseBuilder,
    answers: Answers,
) -> OperationBuilder {
    let outcome = component("OperationOutcome");
    let errors = error_media_types();
    let json_only = [("application/fhir+json", Format::Json)];
    let etag = || {
        HeaderBuilder::new()
            .schema(string())
            .description(Some("Weak validator of the resource's content".to_owned()))
            .build()
    };
    let ok = if answers.not_modified {
        ok.header("ETag", etag()).header(
            "Last-Modified",
            HeaderBuilder::new()
                .schema(string())
                .description(Some(
                    "HTTP date of meta.lastUpdated, when the row has one".to_owned(),
                ))
                .build(),
        )
    } else {
        ok
    };
    operation = operation.response(ok_status, ok.build());
    if answers.not_modified {
        operation = operation.response(
            "304",
            ResponseBuilder::new()
                .description("Not modified: If-None-Match matched the ETag, or the resource is not newer than If-Modified-Since")
                .header("ETag", etag())
                .build(),
        );
    }
    if let Some(description) = answers.bad_request {
        operation =
            operation.response("400", fhir_response(description, &errors, &outcome).build());
    }
    // Every resource operation needs a bearer token and runs under the access it grants.
    operation = operation.security(SecurityRequirement::new("bearer", Vec::<String>::new()));
    operation = operation.response("401", unauthorized(&errors).build());
    operation = operation.response(
        "403",
        fhir_response(
            "OperationOutcome (code forbidden): the request's access does not grant this interaction on this type; answered before any query",
            &errors,
            &outcome,
        )
        .build(),
    );
    if let Some(description) = answers.not_found {
        operation =
            operation.response("404", fhir_response(description, &errors, &outcome).build());
    }
    operation = operation.response(
        "406",
        fhir_response(
            "OperationOutcome: neither `_format` nor `Accept` names a format Portico writes",
            &json_only,
            &outcome,
        )
        .build(),
    );
    if let Some(description) = answers.unsupported_body {
        operation = operation.response(
            "415",
            fhir_response(description, &json_only, &outcome).build(),
        );
    }
    if answers.unservable {
        operation = operation.response(
            "502",
            fhir_response(
                "OperationOutcome (code processing): the resource exists in the practice database, but its row cannot be served as valid FHIR R4; retrying does not help",
                &errors,
                &outcome,
            )
            .build(),
        );
    }
    let unavailable = match answers.source {
        Source::Practice => {
            "OperationOutcome: the practice database is unavailable, or the request's audit event could not be stored (no answer leaves unaudited)"
        }
        Source::State => {
            "OperationOutcome: Portico's state store (the audit trail, Groups, subscriptions) is unavailable, or the request's own audit event could not be stored"
        }
    };
    operation = operation
        .response(
            "500",
            fhir_response(
                "OperationOutcome: a fault on Portico's side (details are in its log)",
                &errors,
                &outcome,
            )
            .build(),
        )
        .response(
            "503",
            retry_after(fhir_response(unavailable, &errors, &outcome)).build(),
        );
    if answers.source == Source::Practice {
        operation = operation.response(
            "504",
            retry_after(fhir_response(
                "OperationOutcome: the practice database did not answer within the statement time limit; the query was cancelled",
                &errors,
                &outcome,
            ))
            .build(),
        );
    }
    operation
}

/// One query (or form) parameter and its schema.
struct Param {
    name: String,
    schema: Schema,
    description: String,
    repeats: bool,
    /// The operation refuses a request without it.
    required: bool,
}

impl Param {
    fn new(name: &str, schema: Schema, description: impl Into<String>) -> Param {
        Param {
            name: name.to_owned(),
            schema,
            description: description.into(),
            repeats: false,
            required: false,
        }
    }

    /// The schema as sent: repeatable parameters are arrays, exploded into repeated keys.
    fn value_schema(&self) -> RefOr<Schema> {
        if self.repeats {
            ArrayBuilder::new()
                .items(RefOr::T(self.schema.clone()))
                .build()
                .into()
        } else {
            self.schema.clone().into()
        }
    }

    /// The schema as sent, with the description (form bodies have no parameter objects).
    fn value_schema_described(&self) -> RefOr<Schema> {
        match self.value_schema() {
            RefOr::T(Schema::Object(mut object)) => {
                object.description = Some(self.description.clone());
                RefOr::T(Schema::Object(object))
            }
            RefOr::T(Schema::Array(mut array)) => {
                array.description = Some(self.description.clone());
                RefOr::T(Schema::Array(array))
            }
            other => other,
        }
    }

    fn query(&self) -> utoipa::openapi::path::Parameter {
        ParameterBuilder::new()
            .name(&self.name)
            .parameter_in(ParameterIn::Query)
            .required(if self.required {
                Required::True
            } else {
                Required::False
            })
            .description(Some(&self.description))
            .schema(Some(self.value_schema()))
            .build()
    }
}

fn format_params() -> Vec<Param> {
    let names: Vec<String> = MEDIA_TYPES
        .iter()
        .map(|(name, _, _)| regex_escape(name))
        .collect();
    vec![
        Param::new(
            "_format",
            patterned(format!(
                "^[ \\t]*(?:{})[ \\t]*(?:;[\\s\\S]*)?$",
                names.join("|")
            )),
            "Output format; wins over Accept. json, xml, or a media type (FHIR JSON and XML, application/json, application/xml, text/xml)",
        ),
        Param::new(
            "_pretty",
            string().into(),
            "true indents the output; any other value is ignored",
        ),
    ]
}

fn regex_escape(text: &str) -> String {
    let mut escaped = String::new();
    for ch in text.chars() {
        if "\\^$.|?*+()[]{}/".contains(ch) {
            escaped.push('\\');
        }
        escaped.push(ch);
    }
    escaped
}

/// The names `_sort` takes for `def` (the rule is `search::compile::sort_columns`).
fn sort_names(def: &ResourceDef) -> Vec<String> {
    let mut names = vec!["_id".to_owned()];
    if def.mappings.iter().any(|m| m.last_updated.is_some()) {
        names.push("_lastUpdated".into());
    }
    names.extend(
        def.search
            .iter()
            .filter(|(_, info)| info.sortable)
            .map(|(name, _)| name.clone()),
    );
    names
}

/// Every parameter a search of `def` takes: its search parameters, then the result parameters.
fn search_parameters(adapter: &Adapter, def: &ResourceDef) -> Vec<Param> {
    let mut params: Vec<Param> = search_params(def)
        .into_iter()
        .map(|param| {
            // `_id` values are ids, read as they are (search::compile), not system|code tokens.
            let schema = match param.kind {
                "token" if param.name != "_id" => patterned(token_values_pattern()),
                "date" => patterned(date_values_pattern()),
                _ => string().into(),
            };
            let mut description = format!("FHIR {} search parameter", param.kind);
            if let Some(documentation) = param.documentation {
                description = format!("{documentation} ({description})");
            }
            Param::new(&param.name, schema, description)
        })
        .collect();
    let sortable = sort_names(def);
    let includes = search_includes(adapter, def);
    let revincludes = search_revincludes(def);
    let list = |values: &[String]| match values {
        [] => "none here".to_owned(),
        values => values.join(", "),
    };
    params.push(count_param(
        "0 answers with the total only, as _summary=count does",
    ));
    params.push(Param::new(
        "_sort",
        string().into(),
        format!(
            "Comma-separated names, - for descending: {}. Other names are ignored and reported in an OperationOutcome entry",
            list(&sortable)
        ),
    ));
    for (name, values) in [("_include", &includes), ("_revinclude", &revincludes)] {
        let mut param = Param::new(
            name,
            patterned(INCLUDE_PATTERN),
            format!(
                "SourceType:parameter[:TargetType]; served: {}. Others are ignored and reported",
                list(values)
            ),
        );
        param.repeats = true;
        params.push(param);
    }
    params.push(Param::new(
        "_total",
        enumerated(&["none", "estimate", "accurate"]),
        "accurate counts every match; none and estimate give a total only when the first page holds every match",
    ));
    params.push(Param::new(
        "_summary",
        enumerated(&["true", "data", "count", "false"]),
        "true and data subset each resource; count answers with the total only",
    ));
    params.push(Param::new(
        "_elements",
        string().into(),
        "Comma-separated top-level elements to keep",
    ));
    params.extend(format_params());
    params.push(Param::new(
        "_cursor",
        patterned(CURSOR_PATTERN),
        "Opaque position from a next link. One this server did not issue for the same query answers 404",
    ));
    params
}

/// `_count` (`search::parse::parse_count`, for every search).
fn count_param(zero: &str) -> Param {
    Param::new(
        "_count",
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0))
            .into(),
        format!(
            "Page size (default {DEFAULT_COUNT}; more than {MAX_COUNT} gives {MAX_COUNT}). {zero}"
        ),
    )
}

fn read_parameters() -> Vec<Param> {
    let mut params = vec![
        Param::new(
            "_summary",
            string().into(),
            "true or data subset the resource; other values are ignored",
        ),
        Param::new(
            "_elements",
            string().into(),
            "Comma-separated top-level elements to keep",
        ),
    ];
    params.extend(format_params());
    params
}

fn resource_schema(resource_type: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .required("resourceType")
        .required("id")
        .property("resourceType", enumerated(&[resource_type]))
        .property("id", string())
        .description(Some(format!("A FHIR R4 {resource_type}")))
        .into()
}

/// `/fhir/{type}` (GET search) and `/fhir/{type}/_search` (POST search) for `def`.
fn search_paths(adapter: &Adapter, def: &ResourceDef) -> (PathItem, PathItem) {
    let answers = Answers {
        not_modified: false,
        bad_request: Some(
            "OperationOutcome naming every malformed parameter (and, under `Prefer: handling=strict`, every unknown one)",
        ),
        not_found: Some("OperationOutcome: no such page"),
        unsupported_body: None,
        unservable: false,
        source: Source::Practice,
    };
    search_operations(
        &def.resource_type,
        &search_parameters(adapter, def),
        "Commas OR values, repeated parameters AND. Modifiers (:missing; :exact and :contains on strings; :not on tokens; :Type on references) are written after the name. Unknown parameters are ignored and reported in an OperationOutcome entry, or answered with 400 under `Prefer: handling=strict`. 404 answers a _cursor this server did not issue for the query.",
        answers,
        false,
    )
}

/// The GET search and the POST `_search` of `resource_type`, taking `params`; when
/// `unknown_refused`, no other parameter is taken (the form allows no other field).
fn search_operations(
    resource_type: &str,
    params: &[Param],
    description: &str,
    answers: Answers,
    unknown_refused: bool,
) -> (PathItem, PathItem) {
    let bundle = component("Bundle");
    // The first entry of a page is a match (warnings come last): a link a client (or a stateful
    // fuzzer) can follow to the read.
    let ok = || {
        fhir_response("A searchset Bundle", &answer_media_types(), &bundle).link(
            "read",
            LinkBuilder::new()
                // utoipa 5.5 writes LinkBuilder::operation_id as `operation_id`; OpenAPI's name
                // is `operationId`, which extensions (written as given) can carry.
                .extensions(Some(Extensions::from_iter([(
                    "operationId",
                    format!("read{resource_type}"),
                )])))
                .parameter("id", "$response.body#/entry/0/resource/id")
                .description("Read the first match")
                .build(),
        )
    };
    let get = OperationBuilder::new()
        .operation_id(Some(format!("search{resource_type}")))
        .tag(resource_type)
        .summary(Some(format!("Search {resource_type}")))
        .description(Some(description))
        .parameters(Some(params.iter().map(Param::query)));
    let mut form = ObjectBuilder::new();
    for param in params {
        form = form.property(&param.name, param.value_schema_described());
    }
    if unknown_refused {
        form = form.additional_properties(Some(AdditionalProperties::FreeForm(false)));
    }
    let post = OperationBuilder::new()
        .operation_id(Some(format!("search{resource_type}Form")))
        .tag(resource_type)
        .summary(Some(format!("Search {resource_type} with a form body")))
        .description(Some(
            "The parameters of the GET search, in an application/x-www-form-urlencoded body (query parameters add to them). An empty body without a Content-Type searches without parameters.",
        ))
        .request_body(Some(
            RequestBodyBuilder::new()
                .content(
                    "application/x-www-form-urlencoded",
                    ContentBuilder::new().schema(Some(form)).build(),
                )
                .required(Some(Required::False))
                .build(),
        ));
    let post_answers = Answers {
        unsupported_body: Some(FORM_BODY_REFUSED),
        ..answers
    };
    (
        PathItem::new(HttpMethod::Get, with_responses(get, ok(), answers)),
        PathItem::new(HttpMethod::Post, with_responses(post, ok(), post_answers)),
    )
}

/// `/fhir/{type}/{id}` for `def`.
fn read_path(def: &ResourceDef) -> PathItem {
    let answers = Answers {
        not_modified: true,
        bad_request: None,
        not_found: Some("OperationOutcome: no such resource"),
        unsupported_body: None,
        unservable: true,
        source: Source::Practice,
    };
    read_operation(&def.resource_type, &read_parameters(), answers)
}

/// The read of `resource_type` by id, taking `params`; with the conditional headers when
/// `answers` has 304.
fn read_operation(resource_type: &str, params: &[Param], answers: Answers) -> PathItem {
    let mut read = OperationBuilder::new()
        .operation_id(Some(format!("read{resource_type}")))
        .tag(resource_type)
        .summary(Some(format!("Read a {resource_type} by id")))
        .parameter(
            ParameterBuilder::new()
                .name("id")
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some("Logical id (an id that cannot be one answers 404)"))
                .schema(Some(string())),
        )
        .parameters(Some(params.iter().map(Param::query)));
    let conditional = [
        ("If-None-Match", "ETags; a match (or *) answers 304"),
        (
            "If-Modified-Since",
            "HTTP date; a resource not modified since answers 304",
        ),
    ];
    for (name, description) in conditional.iter().filter(|_| answers.not_modified) {
        read = read.parameter(
            ParameterBuilder::new()
                .name(*name)
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(*description))
                .schema(Some(string())),
        );
    }
    let ok = fhir_response(
        &format!("The {resource_type}"),
        &answer_media_types(),
        &resource_schema(resource_type),
    );
    PathItem::new(HttpMethod::Get, with_responses(read, ok, answers))
}

/// What the search and read paths of a resource served from the state store (the audit trail,
/// Groups) say beyond its parameters.
struct StatePaths<'a> {
    resource_type: &'a str,
    params: &'a [audit::StateSearchParam],
    /// What a `_cursor` names, and its grammar.
    cursor: (&'a str, &'a str),
    description: &'a str,
    not_found: &'static str,
}

/// `/fhir/<type>` (GET search), `/fhir/<type>/_search` (POST search) and `/fhir/<type>/{id}` of
/// a resource served from the state store whatever the adapter, with its parser's parameters
/// and their grammars; any other parameter answers 400.
fn state_paths(paths: StatePaths<'_>) -> (PathItem, PathItem, PathItem) {
    let mut params: Vec<Param> = paths
        .params
        .iter()
        .map(|param| {
            Param::new(
                param.name,
                patterned((param.pattern)()),
                format!(
                    "{} (FHIR {} search parameter)",
                    param.documentation, param.kind
                ),
            )
        })
        .collect();
    params.push(count_param(
        "0 answers with the total only. The total is always given",
    ));
    let (cursor_description, cursor_pattern) = paths.cursor;
    params.push(Param::new(
        "_cursor",
        patterned(cursor_pattern),
        cursor_description,
    ));
    params.extend(format_params());
    let search_answers = Answers {
        not_modified: false,
        bad_request: Some(
            "OperationOutcome naming every malformed parameter and every parameter not listed here",
        ),
        not_found: None,
        unsupported_body: None,
        unservable: false,
        source: Source::State,
    };
    let (search, form) = search_operations(
        paths.resource_type,
        &params,
        paths.description,
        search_answers,
        true,
    );
    let read_answers = Answers {
        bad_request: None,
        not_found: Some(paths.not_found),
        ..search_answers
    };
    let read = read_operation(paths.resource_type, &format_params(), read_answers);
    (search, form, read)
}

/// The audit trail's paths (`api::audit`).
fn audit_paths() -> (PathItem, PathItem, PathItem) {
    state_paths(StatePaths {
        resource_type: AUDIT_EVENT,
        params: &audit::SEARCH_PARAMS,
        cursor: (
            "Position from a next link: the page of events recorded before it",
            audit::CURSOR_PATTERN,
        ),
        description: "Newest first; next links page back in time. Needs system/AuditEvent.rs (or system/*.rs), or user/AuditEvent.rs of an admin user; never a token limited to a patient. Commas OR values, repeated parameters AND. Any parameter not listed here answers 400.",
        not_found: "OperationOutcome: no such AuditEvent",
    })
}

/// Portico's own Groups' paths (`api::groups`).
fn group_paths() -> (PathItem, PathItem, PathItem) {
    state_paths(StatePaths {
        resource_type: GROUP,
        params: &groups::SEARCH_PARAMS,
        cursor: (
            "Position from a next link: the page of groups whose ids follow it",
            groups::CURSOR_PATTERN,
        ),
        description: "Portico's own groups of patients (for /Group/[id]/$export), by id. Needs system/Group.rs (or system/*.rs), or user/Group.rs of a clinician or an admin user; never a token limited to a patient. Commas OR values, repeated parameters AND; blank values are ignored. Any parameter not listed here answers 400.",
        not_found: "OperationOutcome: no such Group",
    })
}

fn metadata_path() -> PathItem {
    let operation = OperationBuilder::new()
        .operation_id(Some("capabilities"))
        .tag("Server")
        .summary(Some(
            "The CapabilityStatement: what this server and its adapter answer",
        ))
        .parameters(Some(format_params().iter().map(Param::query)))
        .response(
            "200",
            fhir_response(
                "CapabilityStatement",
                &answer_media_types(),
                &component("CapabilityStatement"),
            )
            .build(),
        )
        .response(
            "406",
            fhir_response(
                "OperationOutcome: neither `_format` nor `Accept` names a format Portico writes",
                &[("application/fhir+json", Format::Json)],
                &component("OperationOutcome"),
            )
            .build(),
        )
        .response(
            "500",
            fhir_response(
                "OperationOutcome: a fault on Portico's side (details are in its log)",
                &error_media_types(),
                &component("OperationOutcome"),
            )
            .build(),
        );
    PathItem::new(HttpMethod::Get, operation)
}

fn plain_json(description: &str, schema: RefOr<Schema>) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new().schema(Some(schema)).build(),
    )
}

/// `/health/ready` and `/health`: the PMS database and the state store, 200 or 503.
fn readiness_path(operation_id: &str) -> PathItem {
    let operation = OperationBuilder::new()
        .operation_id(Some(operation_id))
        .tag("Server")
        .summary(Some(
            "Readiness: the PMS database answers and the state store takes a write",
        ))
        .response(
            "200",
            plain_json("Both answer", component("Health")).build(),
        )
        .response(
            "503",
            plain_json("One of them does not", component("Health")).build(),
        );
    PathItem::new(HttpMethod::Get, operation)
}

fn liveness_path() -> PathItem {
    let live = ObjectBuilder::new()
        .required("status")
        .property("status", enumerated(&["ok"]));
    let operation = OperationBuilder::new()
        .operation_id(Some("healthLive"))
        .tag("Server")
        .summary(Some(
            "Liveness: the process serves HTTP (nothing else is checked)",
        ))
        .response("200", plain_json("Serving", live.into()).build());
    PathItem::new(HttpMethod::Get, operation)
}

fn openapi_path() -> PathItem {
    let document = ObjectBuilder::new()
        .required("openapi")
        .required("paths")
        .property("openapi", string())
        .property("paths", ObjectBuilder::new());
    let operation = OperationBuilder::new()
        .operation_id(Some("openapi"))
        .tag("Server")
        .summary(Some("This document"))
        .response("200", plain_json("OpenAPI 3.1", document.into()).build());
    PathItem::new(HttpMethod::Get, operation)
}

/// The SMART discovery document: the fields Portico always sends, each URL absolute.
/// `operation_id` tells the root's copy from the one under `/fhir` (ids are unique per document).
fn smart_configuration_path(operation_id: &str) -> PathItem {
    let urls = [
        "issuer",
        "jwks_uri",
        "authorization_endpoint",
        "token_endpoint",
        "introspection_endpoint",
        "revocation_endpoint",
    ];
    let lists = [
        "grant_types_supported",
        "token_endpoint_auth_methods_supported",
        "token_endpoint_auth_signing_alg_values_supported",
        "scopes_supported",
        "response_types_supported",
        "code_challenge_methods_supported",
        "capabilities",
    ];
    let mut document = ObjectBuilder::new().description(Some(
        "SMART App Launch 2.x configuration: the authorization server's endpoints and capabilities",
    ));
    for name in urls {
        document = document.required(name).property(
            name,
            string().format(Some(SchemaFormat::Custom("uri".into()))),
        );
    }
    for name in lists {
        document = document
            .required(name)
            .property(name, ArrayBuilder::new().items(string()));
    }
    let operation = OperationBuilder::new()
        .operation_id(Some(operation_id))
        .tag("Authorization")
        .summary(Some(
            "SMART on FHIR discovery (JSON whatever Accept says; no token needed)",
        ))
        .response(
            "200",
            plain_json("The SMART configuration", document.into()).build(),
        );
    PathItem::new(HttpMethod::Get, operation)
}

fn components() -> utoipa::openapi::Components {
    let issue = ObjectBuilder::new()
        .required("severity")
        .required("code")
        .property(
            "severity",
            enumerated(&["fatal", "error", "warning", "information"]),
        )
        .property("code", string())
        .property("diagnostics", string())
        .property("expression", ArrayBuilder::new().items(string()));
    let outcome = ObjectBuilder::new()
        .required("resourceType")
        .required("issue")
        .property("resourceType", enumerated(&["OperationOutcome"]))
        .property("issue", ArrayBuilder::new().items(issue).min_items(Some(1)))
        .description(Some("A FHIR R4 OperationOutcome"));
    let link = ObjectBuilder::new()
        .required("relation")
        .required("url")
        .property("relation", string())
        .property("url", string());
    let entry = ObjectBuilder::new()
        .property("fullUrl", string())
        .property(
            "resource",
            ObjectBuilder::new()
                .required("resourceType")
                .property("resourceType", string()),
        )
        .property(
            "search",
            ObjectBuilder::new().property("mode", enumerated(&["match", "include", "outcome"])),
        );
    let bundle = ObjectBuilder::new()
        .required("resourceType")
        .required("type")
        .property("resourceType", enumerated(&["Bundle"]))
        .property("type", enumerated(&["searchset"]))
        .property(
            "total",
            ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)),
        )
        .property("link", ArrayBuilder::new().items(link))
        .property("entry", ArrayBuilder::new().items(entry))
        .description(Some(
            "A FHIR R4 searchset Bundle: matches, included resources and an OperationOutcome entry for warnings",
        ));
    let capability = ObjectBuilder::new()
        .required("resourceType")
        .required("fhirVersion")
        .property("resourceType", enumerated(&["CapabilityStatement"]))
        .property("fhirVersion", enumerated(&["4.0.1"]))
        .description(Some("A FHIR R4 CapabilityStatement"));
    let health = ObjectBuilder::new()
        .required("status")
        .required("adapter")
        .required("database")
        .required("stateStore")
        .property("status", enumerated(&["ok", "degraded"]))
        .property("adapter", string())
        .property("database", enumerated(&["up", "down"]))
        .property("stateStore", enumerated(&["up", "down"]));
    ComponentsBuilder::new()
        .schema("OperationOutcome", outcome)
        .schema("Bundle", bundle)
        .schema("CapabilityStatement", capability)
        .schema("Health", health)
        .security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An access token from the token endpoint that /.well-known/smart-configuration names (SMART App Launch or Backend Services)",
                    ))
                    .build(),
            ),
        )
        .response(
            "MethodNotAllowed",
            fhir_response(
                "Any method a path does not document (the practice's data are read-only): OperationOutcome, with Allow listing the methods the path takes",
                &[("application/fhir+json", Format::Json)],
                &component("OperationOutcome"),
            )
            .header(
                "Allow",
                HeaderBuilder::new().schema(string()).build(),
            )
            .build(),
        )
        .build()
}

/// The document for `adapter`.
pub fn document(adapter: &Adapter) -> OpenApi {
    let mut paths = PathsBuilder::new()
        .path("/fhir/metadata", metadata_path())
        .path("/health", readiness_path("health"))
        .path("/health/ready", readiness_path("healthReady"))
        .path("/health/live", liveness_path())
        .path("/openapi.json", openapi_path())
        .path(
            endpoints::SMART_CONFIGURATION,
            smart_configuration_path("smart-configuration"),
        )
        .path(
            format!("{}{}", endpoints::FHIR, endpoints::SMART_CONFIGURATION),
            smart_configuration_path("smart-configuration-fhir"),
        );
    for (resource_type, (search, form, read)) in
        [(AUDIT_EVENT, audit_paths()), (GROUP, group_paths())]
    {
        paths = paths
            .path(format!("/fhir/{resource_type}"), search)
            .path(format!("/fhir/{resource_type}/_search"), form)
            .path(format!("/fhir/{resource_type}/{{id}}"), read);
    }
    for (path, item) in subscriptions::paths() {
        paths = paths.path(path, item);
    }
    for (path, item) in export::paths(adapter) {
        paths = paths.path(path, item);
    }
    for def in adapter.resources.values() {
        let resource_type = &def.resource_type;
        let (search, form) = search_paths(adapter, def);
        paths = paths
            .path(format!("/fhir/{resource_type}"), search)
            .path(format!("/fhir/{resource_type}/_search"), form)
            .path(format!("/fhir/{resource_type}/{{id}}"), read_path(def));
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Portico FHIR R4 facade")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(format!(
                    "FHIR R4 API over {} ({}): read-only over the practice database; subscriptions and bulk export jobs live in Portico's own state store. The CapabilityStatement (/fhir/metadata) is the FHIR contract; this document describes the same surface for HTTP tools. Methods a path does not list answer 405 with an OperationOutcome and Allow (components.responses.MethodNotAllowed). Authorization is SMART on FHIR: /.well-known/smart-configuration names the endpoints, and tokens are sent as bearer tokens (components.securitySchemes.bearer).",
                    adapter.title, adapter.name
                ))),
        )
        .paths(paths)
        .components(Some(components()))
        .build()
}

mod export;
mod subscriptions;
#[cfg(test)]
mod tests;
