//! The HTTP surface (axum only): routes, request parsing, content negotiation, OpenAPI.
//!
//! Architecture invariant: handlers hold no FHIR or SQL logic; they parse, call `search` and the
//! `Repository`, and format. Every error leaves through `ApiError`.

mod handlers;
pub mod negotiate;
pub mod openapi;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Request;
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::Value as Json;
use tower_http::cors::{Any, CorsLayer};

use crate::access::Access;
use crate::adapter::Adapter;
use crate::repository::Repository;
use crate::search::cursor::CursorSigner;

/// Everything handlers share; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub adapter: Arc<Adapter>,
    pub repository: Repository,
    pub signer: CursorSigner,
    /// Public base URL of the FHIR endpoint; derived from the Host header when `None`.
    pub base_url: Option<String>,
    pub capability_base: Arc<Json>,
    /// `/openapi.json`, built from the adapter at startup (`openapi::document_json`).
    pub openapi_json: Bytes,
}

pub fn router(state: AppState) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(Any)
        .expose_headers(Any);
    // Every path answers the methods it does not take with a 405 OperationOutcome and `Allow`.
    Router::new()
        .route(
            "/fhir/metadata",
            get(handlers::metadata).fallback(handlers::only_get),
        )
        .route(
            "/fhir/{resource_type}",
            get(handlers::search_get).fallback(handlers::only_get),
        )
        .route(
            "/fhir/{resource_type}/_search",
            post(handlers::search_post).fallback(handlers::only_post),
        )
        .route(
            "/fhir/{resource_type}/{id}",
            get(handlers::read).fallback(handlers::only_get),
        )
        .route(
            "/fhir/{resource_type}/{id}/_history/{version}",
            get(handlers::vread).fallback(handlers::only_get),
        )
        .route(
            "/health",
            get(handlers::health).fallback(handlers::only_get),
        )
        .route(
            "/openapi.json",
            get(openapi::openapi_json).fallback(handlers::only_get),
        )
        .fallback(handlers::fallback)
        .layer(middleware::from_fn(
            unrestricted_access_until_authentication,
        ))
        .layer(cors)
        .with_state(state)
}

/// PLACEHOLDER until token validation lands: every request that carries no `Access` yet may see
/// everything. Handlers read the request's `Arc<Access>` and pass it down to the repository, so
/// token validation replaces only this layer. A layer outside this one (the tests' fixed patient
/// access) may insert an `Access` first, which is kept.
async fn unrestricted_access_until_authentication(mut request: Request, next: Next) -> Response {
    if request.extensions().get::<Arc<Access>>().is_none() {
        request
            .extensions_mut()
            .insert(Arc::new(Access::everything()));
    }
    next.run(request).await
}
