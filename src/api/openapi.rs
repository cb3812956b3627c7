//! The OpenAPI description of the HTTP surface (utoipa). FHIR bodies are generic objects here: the
//! CapabilityStatement, not OpenAPI, is the contract FHIR clients read.

use axum::Json;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Portico FHIR R4 facade",
        description = "Read-only FHIR R4 API over a legacy practice-management database."
    ),
    paths(metadata, read, search_get, search_post, health)
)]
pub struct ApiDoc;

/// The CapabilityStatement.
#[utoipa::path(get, path = "/fhir/metadata", params(("_format" = Option<String>, Query, description = "json or xml")),
    responses((status = 200, description = "CapabilityStatement", content_type = "application/fhir+json", body = Object)))]
#[allow(dead_code)]
fn metadata() {}

/// Read a resource by logical id.
#[utoipa::path(get, path = "/fhir/{resource_type}/{id}",
    params(("resource_type" = String, Path), ("id" = String, Path), ("_format" = Option<String>, Query), ("_summary" = Option<String>, Query), ("_elements" = Option<String>, Query)),
    responses((status = 200, description = "The resource", content_type = "application/fhir+json", body = Object),
        (status = 304, description = "Not modified (If-None-Match / If-Modified-Since)"),
        (status = 404, description = "OperationOutcome: unknown type or id", body = Object)))]
#[allow(dead_code)]
fn read() {}

/// Search a resource type; see the CapabilityStatement for the parameters of each type.
#[utoipa::path(get, path = "/fhir/{resource_type}",
    params(("resource_type" = String, Path), ("_count" = Option<u32>, Query), ("_sort" = Option<String>, Query),
        ("_include" = Option<String>, Query), ("_revinclude" = Option<String>, Query), ("_total" = Option<String>, Query),
        ("_summary" = Option<String>, Query), ("_elements" = Option<String>, Query), ("_cursor" = Option<String>, Query, description = "Opaque; from a next link")),
    responses((status = 200, description = "Bundle of type searchset", content_type = "application/fhir+json", body = Object),
        (status = 400, description = "OperationOutcome naming the bad parameter", body = Object),
        (status = 503, description = "Legacy database unavailable; see Retry-After", body = Object)))]
#[allow(dead_code)]
fn search_get() {}

/// Search with parameters in an application/x-www-form-urlencoded body.
#[utoipa::path(post, path = "/fhir/{resource_type}/_search", params(("resource_type" = String, Path)),
    request_body(content_type = "application/x-www-form-urlencoded", content = String),
    responses((status = 200, description = "Bundle of type searchset", body = Object), (status = 415, description = "Wrong body type", body = Object)))]
#[allow(dead_code)]
fn search_post() {}

/// Health: 200 when the legacy database answers, 503 when it does not.
#[utoipa::path(get, path = "/health", responses((status = 200, description = "Up", body = Object), (status = 503, description = "Database down", body = Object)))]
#[allow(dead_code)]
fn health() {}

pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
