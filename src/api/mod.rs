//! The HTTP surface (axum only): routes, request parsing, content negotiation, OpenAPI.
//!
//! Architecture invariant: handlers hold no FHIR or SQL logic; they parse, call `search` and the
//! `Repository`, and format. Every error leaves through `ApiError`.

mod admin;
pub mod audit;
mod authorize;
mod export;
pub mod groups;
mod handlers;
mod metrics;
pub mod negotiate;
mod oauth;
pub mod openapi;
pub mod origin;
pub mod request_id;
mod sign_in;
mod smart;
mod status;
mod subscriptions;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::http::Method;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{get, post};
use serde_json::Value as Json;
use tower_http::cors::{Any, CorsLayer};

use crate::adapter::Adapter;
use crate::auth::endpoints;
use crate::repository::Repository;
use crate::search::cursor::CursorSigner;

/// Everything handlers share. Every middleware layer and extractor of every request clones it:
/// one reference count (`AppShared` behind an `Arc`), not one per field.
#[derive(Clone)]
pub struct AppState(Arc<AppShared>);

impl AppState {
    pub fn new(shared: AppShared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppShared;

    fn deref(&self) -> &AppShared {
        &self.0
    }
}

/// What `AppState` shares.
pub struct AppShared {
    pub adapter: Arc<Adapter>,
    pub repository: Repository,
    pub signer: CursorSigner,
    /// How the public base URL is decided (`server.base_url`, TLS, trusted proxies); each
    /// request carries the result as an `origin::PublicBase` extension.
    pub origin: Arc<origin::Origin>,
    pub capability_base: Arc<Json>,
    /// `/openapi.json`, built from the adapter at startup (`openapi::document_json`).
    pub openapi_json: Bytes,
    /// Portico's authorization server: its state store, token signing and validation.
    pub auth: crate::auth::token_endpoint::AuthServer,
    /// Appends the audit trail's events (group commit; `state::audit::AuditWriter`).
    pub audit: crate::state::audit::AuditWriter,
    /// The SSRF policy for subscription endpoints and the delivery worker's wake-up.
    pub subscriptions: crate::subscriptions::SubscriptionsRuntime,
    /// The last hour of status samples (`crate::status`), for `/status.json`.
    pub status_history: Arc<crate::status::StatusHistory>,
    /// Bulk export: its settings, files and workers' wake-up (`crate::export`).
    pub exports: Arc<crate::export::worker::ExportRuntime>,
}

pub fn router(state: AppState) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers(Any)
        .expose_headers(Any);
    // Every path answers the methods it does not take with a 405 OperationOutcome and `Allow`.
    let router = Router::new()
        .route(
            "/fhir/metadata",
            get(handlers::metadata).fallback(handlers::only_get),
        )
        // The audit trail comes from the state store; these precede the adapter's types.
        .route(
            "/fhir/AuditEvent",
            get(audit::search_get).fallback(handlers::only_get),
        )
        .route(
            "/fhir/AuditEvent/_search",
            post(audit::search_post).fallback(handlers::only_post),
        )
        .route(
            "/fhir/AuditEvent/{id}",
            get(audit::read).fallback(handlers::only_get),
        )
        // So do Portico's own Groups (the cohorts of Bulk Data's /Group/[id]/$export).
        .route(
            "/fhir/Group",
            get(groups::search_get).fallback(handlers::only_get),
        )
        .route(
            "/fhir/Group/_search",
            post(groups::search_post).fallback(handlers::only_post),
        )
        .route(
            "/fhir/Group/{id}",
            get(groups::read).fallback(handlers::only_get),
        )
        // Subscriptions come from the state store too.
        .route(
            "/fhir/Subscription",
            get(subscriptions::search)
                .post(subscriptions::create)
                .fallback(handlers::only_get_post),
        )
        .route(
            "/fhir/Subscription/_search",
            post(subscriptions::search).fallback(handlers::only_post),
        )
        .route(
            "/fhir/Subscription/$status",
            get(subscriptions::type_status)
                .post(subscriptions::type_status)
                .fallback(handlers::only_get_post),
        )
        .route(
            "/fhir/Subscription/$get-ws-binding-token",
            get(subscriptions::type_binding_token)
                .post(subscriptions::type_binding_token)
                .fallback(handlers::only_get_post),
        )
        .route(
            "/fhir/Subscription/{id}",
            get(subscriptions::read)
                .put(subscriptions::update)
                .delete(subscriptions::delete)
                .fallback(handlers::only_get_put_delete),
        )
        .route(
            "/fhir/Subscription/{id}/$status",
            get(subscriptions::instance_status)
                .post(subscriptions::instance_status)
                .fallback(handlers::only_get_post),
        )
        .route(
            "/fhir/Subscription/{id}/$events",
            get(subscriptions::events_operation)
                .post(subscriptions::events_operation)
                .fallback(handlers::only_get_post),
        )
        .route(
            "/fhir/Subscription/{id}/$get-ws-binding-token",
            get(subscriptions::instance_binding_token)
                .post(subscriptions::instance_binding_token)
                .fallback(handlers::only_get_post),
        )
        // The websocket channel's socket: outside /fhir, authenticated by a binding token.
        .route(
            crate::subscriptions::websocket::WEBSOCKET_PATH,
            get(subscriptions::socket).fallback(handlers::only_get),
        )
        // Bulk Data export: kick-offs, the status URL, the files (gzip when accepted).
        .route(
            "/fhir/$export",
            get(export::system)
                .post(export::system)
                .fallback(handlers::only_get_post),
        )
        .route(
            "/fhir/Patient/$export",
            get(export::patients)
                .post(export::patients)
                .fallback(handlers::only_get_post),
        )
        .route(
            "/fhir/Group/{id}/$export",
            get(export::group)
                .post(export::group)
                .fallback(handlers::only_get_post),
        )
        .route(
            "/fhir/$export-status/{id}",
            get(export::status)
                .delete(export::cancel)
                .fallback(handlers::only_get_delete),
        )
        .route(
            "/fhir/$export-file/{id}/{name}",
            get(export::file)
                .fallback(handlers::only_get)
                .layer(tower_http::compression::CompressionLayer::new().gzip(true)),
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
        // The operator's view of subscription health (administrators only).
        .route(
            "/admin/subscriptions",
            get(admin::list).fallback(handlers::only_get),
        )
        .route(
            "/admin/subscriptions/{id}",
            get(admin::show).fallback(handlers::only_get),
        )
        .route(
            "/admin/subscriptions/{id}/retry",
            post(admin::retry).fallback(handlers::only_post),
        )
        .route(
            "/admin/subscriptions/{id}/disable",
            post(admin::disable).fallback(handlers::only_post),
        )
        .route(
            "/health",
            get(handlers::health_ready).fallback(handlers::only_get),
        )
        .route(
            "/health/ready",
            get(handlers::health_ready).fallback(handlers::only_get),
        )
        .route(
            "/health/live",
            get(handlers::health_live).fallback(handlers::only_get),
        )
        .route(
            "/metrics",
            get(metrics::scrape).fallback(handlers::only_get),
        )
        .route(
            "/status.json",
            get(status::status_json).fallback(handlers::only_get),
        )
        .route(
            "/status",
            get(status::status_page).fallback(handlers::only_get),
        )
        .route(
            "/status/fragment",
            get(status::status_fragment).fallback(handlers::only_get),
        )
        .route(
            "/status.js",
            get(status::status_script).fallback(handlers::only_get),
        )
        .route(
            "/status.css",
            get(status::status_style).fallback(handlers::only_get),
        )
        .route(
            "/openapi.json",
            get(openapi::openapi_json).fallback(handlers::only_get),
        )
        .route(
            endpoints::SMART_CONFIGURATION,
            get(smart::smart_configuration).fallback(handlers::only_get),
        )
        .route(
            &format!("{}{}", endpoints::FHIR, endpoints::SMART_CONFIGURATION),
            get(smart::smart_configuration).fallback(handlers::only_get),
        )
        .route(
            endpoints::TOKEN,
            post(oauth::token).fallback(handlers::only_post),
        )
        .route(
            endpoints::INTROSPECT,
            post(oauth::introspect).fallback(handlers::only_post),
        )
        .route(
            endpoints::REVOKE,
            post(oauth::revoke).fallback(handlers::only_post),
        )
        .route(
            endpoints::JWKS,
            get(oauth::jwks).fallback(handlers::only_get),
        )
        .route(
            endpoints::OPENID_CONFIGURATION,
            get(sign_in::openid_configuration).fallback(handlers::only_get),
        )
        .fallback(handlers::fallback)
        .layer(from_fn_with_state(state.clone(), authorize::require_token))
        // Outside the token check, so refused requests are audited too.
        .layer(from_fn_with_state(state.clone(), audit::record))
        .layer(cors)
        // The sign-in pages (the authorization server's and the status page's) answer browsers
        // navigating to them, never scripts of other origins: no CORS (RFC 9700 §2.6), so they
        // are routed outside the CORS layer.
        .route(
            endpoints::AUTHORIZE,
            get(sign_in::authorize_get)
                .post(sign_in::authorize_post)
                .fallback(handlers::only_get_post),
        )
        .route(
            "/status/sign-in",
            get(status::sign_in_page)
                .post(status::sign_in)
                .fallback(handlers::only_get_post),
        )
        .route(
            "/status/sign-out",
            post(status::sign_out).fallback(handlers::only_post),
        )
        .route(
            endpoints::LOGIN,
            get(sign_in::login_page)
                .post(sign_in::login)
                .fallback(handlers::only_get_post),
        )
        .route(
            endpoints::PICK,
            get(sign_in::pick_page)
                .post(sign_in::pick)
                .fallback(handlers::only_get_post),
        )
        .route(
            endpoints::CONSENT,
            get(sign_in::consent_page)
                .post(sign_in::consent)
                .fallback(handlers::only_get_post),
        )
        .route(
            endpoints::LAUNCH,
            post(sign_in::launch).fallback(handlers::only_post),
        )
        // In external identity provider mode nothing under /auth answers, sign-in pages included.
        .layer(from_fn_with_state(
            state.clone(),
            oauth::closed_in_external_idp_mode,
        ));
    edge_layers(router, state)
}

/// The layers every response passes, outermost last: the public base URL, HSTS under TLS, and
/// the request id with its tracing span around all of it.
fn edge_layers(router: Router<AppState>, state: AppState) -> Router {
    // Inside the edge layers, so every answer is counted, refused and unmatched ones too.
    let router = router.layer(from_fn_with_state(state.clone(), metrics::record));
    let mut router = router.layer(from_fn_with_state(state.clone(), origin::public_base));
    if state.origin.https() {
        router = router.layer(from_fn(origin::strict_transport_security));
    }
    router
        .layer(from_fn(request_id::request_id))
        .with_state(state)
}
