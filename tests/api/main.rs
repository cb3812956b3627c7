//! Integration tests: the real application on a random port against real databases.
//! Each test runs on SQLite and on a fresh MariaDB database (PORTICO_TEST_MYSQL_URL, default
//! mysql://root@127.0.0.1:3306).

mod support;
// The rest-hook receiver and notification readers the subscription tests share.
#[path = "../common/notifications.rs"]
mod notifications;
// A public client registered with a token (a second EHR).
#[path = "../common/clients.rs"]
mod clients;
// A TCP proxy that cuts and restores the way to MariaDB.
#[path = "../common/proxy.rs"]
mod proxy;

// The adapter conformance kit: every adapter × dialect.
mod kit;
// The leak test: a patient-limited access sees exactly its compartment, per adapter.
mod compartment;
// CapabilityStatement shape, formats, OpenAPI, CORS.
mod conformance;
// The binary: portico demo and portico check.
mod commands;
// The same data through both dialects.
mod dialects;
// Status codes and OperationOutcomes for bad input; the injection corpus.
mod errors;
// Legacy database down, statement timeouts, read-only sessions.
mod faults;
// Partial zero dates, profile claims, rows that cannot become valid R4.
mod legacy_rows;
// Lookup joins: cached key lists against plain SQL, refreshed after their interval.
mod lookups;
// The data-quality audit: each rule's count against plain SQL on the demo data.
mod quality;
// Reconciliation against an EHR (a second Portico over diverged data).
mod reconcile;
// Read: ids, ETag/Last-Modified, conditional reads, subsetting.
mod read;
// Search semantics, paging, sorting, includes, totals.
mod search;
// Portico's own state store (clients, users, keys, replay cache) on SQLite and PostgreSQL.
mod state_store;
// Access tokens and client authentication (JWT and Backend Services negatives).
mod auth_keys;
mod tokens;
// The token endpoint over HTTP (oauth2 crate, Backend Services assertions, OAuth errors).
mod token_endpoint;
// The authorization-code flow: sign-in pages, PKCE, refresh rotation, EHR launch.
mod authorization_code;
// The resource server with real tokens: 401s, 403s, patient and granular scopes over HTTP.
mod resource_server;
// HTTPS, trusted proxies, request ids, graceful shutdown and background workers.
mod serving;
// SMART discovery and the CapabilityStatement's security part.
mod smart_discovery;
// External identity provider mode: a test IdP's JWKS, claim mapping, key fetching, discovery.
mod external_idp;
// The audit trail: events per request, AuditEvent search, fail closed, the hash chain.
mod audit;
// Portico's own Groups: read and search over HTTP, members against plain SQL, portico groups.
mod groups;
// Outbound OAuth of the rest-hook sender against Portico's own token endpoint.
mod rest_hook;
// Subscriptions end to end: PMS edits, topics, filters, handshakes, $status and $events.
mod subscriptions;
// Rest-hook delivery against a misbehaving receiver on a test clock, on both state stores.
mod subscription_delivery;
// A rest-hook subscription's signing secret and outbound OAuth client, end to end.
mod subscription_credentials;
// The operator's view of subscription health, administrators only.
mod subscription_admin;
// Signing in to the status page with its own form, and out again.
mod status_page;
// Bulk Data $export: kick-offs, status, manifests, files, filters, access, resumption.
mod export;
// Open Dental subscriptions end to end on MariaDB: every topic the adapter declares.
mod subscriptions_opendental;
// A removed client's subscriptions are off at once, on both state stores.
mod subscriptions_revoked;
// The websocket channel: binding tokens, the socket, its handshake, events, heartbeats and closes.
mod subscription_websocket;
