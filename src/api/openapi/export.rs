//! The OpenAPI paths of Bulk Data `$export` (`api::export`): the kick-offs (`/fhir/$export`,
//! `/fhir/Patient/$export`, `/fhir/Group/{id}/$export`, each by GET or by POST with a Parameters
//! body), the status URL (GET, DELETE) and the files; each with the answers the handlers give.
//! The kick-off parameters' grammars are `crate::export`'s, next to the parser (`kickoff`).

use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{
    ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type,
};
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{KnownFormat, RefOr, Required, SchemaFormat};

use super::{
    Format, Param, component, enumerated, fhir_response, patterned, retry_after_header, string,
    unauthorized,
};
use crate::adapter::Adapter;
use crate::error::RETRY_AFTER_SECONDS;
use crate::export::{
    Level, OUTPUT_FORMATS, SINCE_NOT_APPLIED, SINCE_PATTERN, type_filter_pattern, type_pattern,
};

const TAG: &str = "Bulk export";

/// The one media type of every answer of these paths but the manifest and the files: the
/// handlers write FHIR JSON whatever `Accept` says.
const FHIR_JSON: [(&str, Format); 1] = [("application/fhir+json", Format::Json)];

/// The Parameters value keys a POSTed kick-off reads, in the order it looks for a string.
const VALUE_KEYS: [&str; 5] = [
    "valueString",
    "valueInstant",
    "valueCode",
    "valueDateTime",
    "valueUri",
];

/// How the kick-off at a level is documented, beyond what every kick-off takes and answers.
trait KickOffDocument {
    fn path(self) -> &'static str;
    fn operation_id(self) -> &'static str;
    fn summary(self) -> &'static str;
}

impl KickOffDocument for Level {
    fn path(self) -> &'static str {
        match self {
            Level::System => "/fhir/$export",
            Level::Patient => "/fhir/Patient/$export",
            Level::Group => "/fhir/Group/{id}/$export",
        }
    }

    fn operation_id(self) -> &'static str {
        match self {
            Level::System => "exportSystem",
            Level::Patient => "exportPatients",
            Level::Group => "exportGroup",
        }
    }

    fn summary(self) -> &'static str {
        match self {
            Level::System => {
                "Bulk Data kick-off: every resource the token may read (system/ scopes only)"
            }
            Level::Patient => {
                "Bulk Data kick-off: the compartments of every patient the token may see (or of the POSTed patient references)"
            }
            Level::Group => {
                "Bulk Data kick-off: the compartments of a Portico Group's members (resolved when the job starts)"
            }
        }
    }
}

/// The kick-off's query parameters (`export::kickoff`); any other answers 400 (dropped and
/// reported in an error file under `Prefer: handling=lenient`).
fn kickoff_params(adapter: &Adapter) -> Vec<Param> {
    let repeated = |param: Param| Param {
        repeats: true,
        ..param
    };
    vec![
        Param::new(
            "_outputFormat",
            enumerated(&OUTPUT_FORMATS),
            "The files' format: NDJSON, in any of its three spellings (the default). Anything else answers 400",
        ),
        Param::new(
            "_since",
            patterned(SINCE_PATTERN),
            format!(
                "A FHIR instant: only resources last updated after it (and at or before the kick-off). Types whose mappings have no last-updated column are exported whole and named in the manifest's {SINCE_NOT_APPLIED} extension"
            ),
        ),
        repeated(Param::new(
            "_type",
            patterned(type_pattern(adapter)),
            "Comma-separated resource types this server exports (blank items are skipped); default: every type the token grants. A type the token does not grant answers 400; an unknown one too, unless `Prefer: handling=lenient` drops it",
        )),
        repeated(Param::new(
            "_typeFilter",
            patterned(type_filter_pattern(adapter)),
            "Type?query: a search of that type this server compiles (its search parameters, no _include, _revinclude, _sort, _count, _summary, _elements, _total or _cursor). Several for one type are ORed. A query that does not compile, or a type _type leaves out, answers 400 (dropped under `Prefer: handling=lenient`): the pattern only says the type",
        )),
        repeated(Param::new(
            "_elements",
            string().into(),
            "Comma-separated elements to keep, `element` or `Type.element`; the resources carry the SUBSETTED tag, mandatory and modifier elements stay",
        )),
    ]
}

fn header_param(name: &str, description: &str) -> ParameterBuilder {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(string()))
}

/// `Prefer` and `Accept`, which a kick-off may send and need not.
fn kickoff_headers() -> [ParameterBuilder; 2] {
    [
        header_param(
            "Prefer",
            "respond-async is assumed when absent (any value is taken); handling=lenient drops unsupported parameters, types and filters instead of answering 400, and reports them in an error file",
        ),
        header_param(
            "Accept",
            "application/fhir+json is assumed when absent; the answer is FHIR JSON whatever this says",
        ),
    ]
}

/// A schema without a type that every value but a string satisfies (`not`, which utoipa's
/// builders lack, is written through extensions, which are serialized as given).
fn not_a_string() -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::AnyValue)
        .extensions(Some(Extensions::from_iter([(
            "not",
            serde_json::json!({ "type": "string" }),
        )])))
        .into()
}

/// The `parameter` entries a POSTed kick-off at `level` takes: for each query parameter, its
/// value in the first of `VALUE_KEYS` that holds a string, with the same grammar as in the query;
/// at Patient and Group level, `patient` references. Any other entry answers 400.
fn parameter_entry(level: Level, params: &[Param]) -> Schema {
    let mut entries = OneOfBuilder::new();
    for param in params {
        for (position, key) in VALUE_KEYS.iter().enumerate() {
            let mut entry = ObjectBuilder::new()
                .required("name")
                .required(*key)
                .property("name", enumerated(&[param.name.as_str()]))
                .property(*key, param.schema.clone());
            for earlier in &VALUE_KEYS[..position] {
                entry = entry.property(*earlier, not_a_string());
            }
            entries = entries.item(entry.description(Some(param.description.clone())));
        }
    }
    if level != Level::System {
        let reference = ObjectBuilder::new()
            .required("reference")
            .property("reference", patterned("^Patient/[^/]+$"));
        entries = entries.item(
            ObjectBuilder::new()
                .required("name")
                .required("valueReference")
                .property("name", enumerated(&["patient"]))
                .property("valueReference", reference)
                .description(Some(
                    "A patient whose compartment to export (repeat for several); the export reads only patients the token may see",
                )),
        );
    }
    entries.into()
}

/// The POSTed Parameters resource of a kick-off at `level`.
fn parameters_body(level: Level, params: &[Param]) -> RefOr<Schema> {
    ObjectBuilder::new()
        .required("resourceType")
        .property("resourceType", enumerated(&["Parameters"]))
        .property(
            "parameter",
            ArrayBuilder::new().items(RefOr::T(parameter_entry(level, params))),
        )
        .description(Some(
            "A FHIR R4 Parameters resource with the kick-off's parameters; query parameters on the URL are taken too",
        ))
        .into()
}

fn retry_after(seconds: &str) -> utoipa::openapi::header::Header {
    retry_after_header(format!("Seconds to wait before asking again ({seconds})"))
}

fn outcome(description: &str) -> ResponseBuilder {
    fhir_response(description, &FHIR_JSON, &component("OperationOutcome"))
}

/// The answers every operation here can give: 401, 500 and 503; and the bearer token it needs.
fn common(operation: OperationBuilder) -> OperationBuilder {
    operation
        .security(SecurityRequirement::new("bearer", Vec::<String>::new()))
        .response("401", unauthorized(&FHIR_JSON).build())
        .response(
            "500",
            outcome("OperationOutcome: a fault on Portico's side (details are in its log)").build(),
        )
        .response(
            "503",
            outcome(
                "OperationOutcome: Portico's state store (where export jobs live) is unavailable, or the request's audit event could not be stored",
            )
            .header("Retry-After", retry_after(&RETRY_AFTER_SECONDS.to_string()))
            .build(),
        )
}

fn group_id() -> ParameterBuilder {
    ParameterBuilder::new()
        .name("id")
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(
            "The id of one of Portico's Groups (GET /fhir/Group lists them)",
        ))
        .schema(Some(string()))
}

/// The GET and the POST kick-off at `level`.
fn kickoff(adapter: &Adapter, level: Level) -> PathItem {
    let params = kickoff_params(adapter);
    let accepted = || {
        outcome("Accepted: an informational OperationOutcome; poll the Content-Location URL")
            .header(
                "Content-Location",
                HeaderBuilder::new()
                    .schema(string().format(Some(SchemaFormat::Custom("uri".into()))))
                    .description(Some(
                        "The export's status URL (/fhir/$export-status/{id}), absolute".to_owned(),
                    ))
                    .build(),
            )
    };
    let answers = |mut operation: OperationBuilder, post: bool| {
        operation = common(operation)
            .response("202", accepted().build())
            .response(
                "400",
                outcome(
                    "OperationOutcome naming each parameter that is malformed or not supported, each type or filter the server does not export, and each type the token does not grant",
                )
                .build(),
            )
            .response(
                "429",
                outcome(
                    "OperationOutcome: this client already has export.max_per_client unfinished exports (default 1); wait for them, or cancel one",
                )
                .header("Retry-After", retry_after(&RETRY_AFTER_SECONDS.to_string()))
                .build(),
            );
        if level == Level::System {
            operation = operation.response(
                "403",
                outcome(
                    "OperationOutcome (code forbidden): the token is limited to some patients' records (a system export needs system/ scopes; use Patient/$export)",
                )
                .build(),
            );
        }
        if level == Level::Group {
            operation = operation.response(
                "404",
                outcome("OperationOutcome: no Group has this id").build(),
            );
        }
        if post {
            operation = operation.response(
                "415",
                outcome(
                    "OperationOutcome: the body is not application/fhir+json (or application/json)",
                )
                .build(),
            );
        }
        operation
    };
    let with_path = |operation: OperationBuilder| {
        let operation = operation
            .tag(TAG)
            .summary(Some(level.summary()))
            .parameters(Some(params.iter().map(Param::query)))
            .parameters(Some(kickoff_headers()));
        if level == Level::Group {
            operation.parameter(group_id())
        } else {
            operation
        }
    };
    let get = with_path(OperationBuilder::new().operation_id(Some(level.operation_id())));
    let body = parameters_body(level, &params);
    let post = with_path(
        OperationBuilder::new().operation_id(Some(format!("{}Form", level.operation_id()))),
    )
    .description(Some(
        "The kick-off with a Parameters body (BD-09): each parameter in valueString (or valueInstant, valueCode, valueDateTime, valueUri: the first that holds a string), patient as a valueReference",
    ))
    .request_body(Some(
        RequestBodyBuilder::new()
            .content(
                "application/fhir+json",
                ContentBuilder::new().schema(Some(body.clone())).build(),
            )
            .content(
                "application/json",
                ContentBuilder::new().schema(Some(body)).build(),
            )
            .required(Some(Required::True))
            .build(),
    ));
    let mut item = PathItem::new(HttpMethod::Get, answers(get, false));
    item.merge_operations(PathItem::new(HttpMethod::Post, answers(post, true)));
    item
}

fn job_id() -> ParameterBuilder {
    ParameterBuilder::new()
        .name("id")
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(
            "The export's id, from the kick-off's Content-Location",
        ))
        .schema(Some(string()))
}

const NOT_YOURS: &str = "OperationOutcome: no export of this requester (the token's client, user and patient context) has this id, or it was cancelled or has expired";

/// The complete export's manifest (BD-12).
fn manifest() -> RefOr<Schema> {
    let file = || {
        ObjectBuilder::new()
            .required("type")
            .required("url")
            .required("count")
            .property("type", string())
            .property(
                "url",
                string().format(Some(SchemaFormat::Custom("uri".into()))),
            )
            .property(
                "count",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1)),
            )
    };
    ObjectBuilder::new()
        .required("transactionTime")
        .required("request")
        .required("requiresAccessToken")
        .required("output")
        .required("error")
        .property(
            "transactionTime",
            string().format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
        )
        .property("request", string())
        .property(
            "requiresAccessToken",
            ObjectBuilder::new()
                .schema_type(Type::Boolean)
                .enum_values(Some([true])),
        )
        .property("output", ArrayBuilder::new().items(file()))
        .property("error", ArrayBuilder::new().items(file()))
        .property(
            "extension",
            ObjectBuilder::new().property(
                SINCE_NOT_APPLIED,
                ArrayBuilder::new().items(string()),
            ),
        )
        .description(Some(
            "The Bulk Data manifest: one output entry per NDJSON file (with its count of resources), error entries for the OperationOutcome files",
        ))
        .into()
}

/// `GET` (poll) and `DELETE` (cancel) of `/fhir/$export-status/{id}`.
fn status() -> PathItem {
    let poll = OperationBuilder::new()
        .operation_id(Some("exportStatus"))
        .tag(TAG)
        .summary(Some(
            "The export's status: 202 while it runs, the manifest once it is complete",
        ))
        .parameter(job_id());
    let poll = common(poll)
        .response(
            "200",
            ResponseBuilder::new()
                .description("Complete: the manifest")
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(manifest())).build(),
                )
                .header(
                    "Expires",
                    HeaderBuilder::new()
                        .schema(string())
                        .description(Some(
                            "HTTP date after which the files are deleted".to_owned(),
                        ))
                        .build(),
                )
                .build(),
        )
        .response(
            "202",
            ResponseBuilder::new()
                .description("In progress (no body)")
                .header("Retry-After", retry_after("2"))
                .header(
                    "X-Progress",
                    HeaderBuilder::new()
                        .schema(string())
                        .description(Some(
                            "Resources written of about how many, passes done, the type under way"
                                .to_owned(),
                        ))
                        .build(),
                )
                .build(),
        )
        .response("404", outcome(NOT_YOURS).build())
        .response(
            "429",
            outcome("OperationOutcome: polled sooner than 2 s after the previous poll")
                .header("Retry-After", retry_after("2"))
                .build(),
        );
    // The job's own failure is a 500 too, described with the rest (`common`).
    let cancel = OperationBuilder::new()
        .operation_id(Some("exportCancel"))
        .tag(TAG)
        .summary(Some(
            "Cancel the export and delete its files; its URLs then answer 404",
        ))
        .parameter(job_id());
    let cancel = common(cancel)
        .response(
            "202",
            outcome("Cancelled: an informational OperationOutcome").build(),
        )
        .response("404", outcome(NOT_YOURS).build());
    let mut item = PathItem::new(HttpMethod::Get, poll);
    item.merge_operations(PathItem::new(HttpMethod::Delete, cancel));
    item
}

/// `GET /fhir/$export-file/{id}/{name}`.
fn file() -> PathItem {
    let download = OperationBuilder::new()
        .operation_id(Some("exportFile"))
        .tag(TAG)
        .summary(Some(
            "One NDJSON file of a complete export (gzip when Accept-Encoding allows); audited with every patient it holds",
        ))
        .parameter(job_id())
        .parameter(
            ParameterBuilder::new()
                .name("name")
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some("The file's name, as the manifest's url ends: <Type>-<n>.ndjson"))
                .schema(Some(string())),
        );
    let download = common(download)
        .response(
            "200",
            ResponseBuilder::new()
                .description("The file: one FHIR resource (or OperationOutcome) per line")
                .content(
                    "application/fhir+ndjson",
                    ContentBuilder::new()
                        .schema(Some(string().description(Some("NDJSON"))))
                        .build(),
                )
                .build(),
        )
        .response(
            "404",
            outcome(
                "OperationOutcome: the export is not this requester's, not complete, cancelled or expired, or has no such file",
            )
            .build(),
        );
    PathItem::new(HttpMethod::Get, download)
}

/// Every export path, with its item.
pub(super) fn paths(adapter: &Adapter) -> Vec<(String, PathItem)> {
    let mut paths: Vec<(String, PathItem)> = [Level::System, Level::Patient, Level::Group]
        .into_iter()
        .map(|level| (level.path().to_owned(), kickoff(adapter, level)))
        .collect();
    paths.push(("/fhir/$export-status/{id}".to_owned(), status()));
    paths.push(("/fhir/$export-file/{id}/{name}".to_owned(), file()));
    paths
}
