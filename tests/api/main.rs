//! Integration tests: the real application on a random port against real databases.
//! Each test runs on SQLite and on a fresh MariaDB database (PORTICO_TEST_MYSQL_URL, default
//! mysql://root@127.0.0.1:3306).

mod support;

// The adapter conformance kit: every adapter × dialect.
mod kit;
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
// Read: ids, ETag/Last-Modified, conditional reads, subsetting.
mod read;
// Search semantics, paging, sorting, includes, totals.
mod search;
// HTTPS, trusted proxies, request ids, graceful shutdown and background workers.
mod serving;
// SMART discovery and the CapabilityStatement's security part.
mod smart_discovery;
