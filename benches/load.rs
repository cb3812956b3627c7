//! Load benchmark: Portico against a raw-SQL baseline that runs the same SQL, in one process and
//! one run, so that the ratios hold whatever the machine. BENCHMARKS.md explains the method.
//!
//! Run: `cargo bench --bench load` (see the `PORTICO_BENCH_*` variables below).
//! `PORTICO_BENCH_ADAPTER` picks the adapter: `openemr` (the default), `opendental`, `cerebello` or
//! `dentned`. The last two are SQL Server PMSs; the bench runs them on their MariaDB fixture copies
//! (their T-SQL schemas converted by the fixture writer), so their figures measure the adapters'
//! mapping and SQL shape, not SQL Server.
//!
//! 1. Seeds (or reuses) a MariaDB database with the adapter's deterministic generator
//!    (`portico::demo::seed_openemr`, `opendental::seed_opendental`, `cerebello::seed_cerebello`,
//!    `dentned::seed_dentned`), and reads back the ids of the patients the adapter serves (Open
//!    Dental's deleted patients, PatStatus 4, are not served: the random ids are drawn among the
//!    served ones only).
//! 2. Starts Portico (`Application::build`, port 0) and a minimal baseline server (axum, port 0).
//!    The baseline compiles each request with Portico's own pure compiler (`search::parse`,
//!    `search::compile::{plan, page_select, rows_select, collection_select}`, `dialect::render`),
//!    exactly as `Repository::read`/`Repository::search` do, runs the SQL on its own sqlx pool
//!    (the collection queries included) and writes the rows straight to JSON: no mapping to FHIR,
//!    no Bundle.
//! 3. Closed-loop load, a fixed number of HTTP clients for a fixed time, per scenario and target;
//!    `PORTICO_BENCH_ROUNDS` (default 1) repeats each Portico-then-raw pair, and the table shows
//!    the round with the median ratio (one pair's ratio moves by ±15 % from run to run).
//! 4. Pages through every served Patient with `_count=1000` while sampling the resident memory.
//! 5. With `PORTICO_BENCH_EXPORT=1`: a system `$export` of every type (the default
//!    `export.page_size` pages), timed from kick-off to completion in the state store, with the
//!    resident memory sampled, against the baseline reading the same branches in the same keyset
//!    pages and writing each row (with its collections) as one NDJSON line to a file.
//!    `PORTICO_BENCH_EXPORT_TYPES` sets `export.parallel_types` (the default: 2).
//! 6. Prints a markdown table.
//!
//! Everything targets 127.0.0.1 and stops by itself (a watchdog ends the process if a run
//! overstays `PORTICO_BENCH_MAX_MINUTES`).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use portico::adapter::Adapter;
use portico::adapter::model::{BASE_ALIAS, COLLECTION_ALIAS, Collection, ColumnRef, Mapping};
use portico::app::Application;
use portico::config::{
    LegacySettings, Secret, ServerSettings, Settings, default_adapters_dir,
    default_lookup_refresh_ms,
};
use portico::db::fixture::FixtureWriter;
use portico::db::{Database, DbSettings};
use portico::demo::cerebello::{CEREBELLO_SCHEMA, seed_cerebello};
use portico::demo::dentned::{DENTNED_SCHEMA, seed_dentned};
use portico::demo::opendental::{OPENDENTAL_SCHEMA, seed_opendental};
use portico::demo::{Counts, OPENEMR_SCHEMA, Rng, seed_openemr};
use portico::dialect::ast::{CmpOp, Cond, Expr, Join, Select, Value};
use portico::dialect::{DialectKind, RenderedQuery, render};
use portico::repository::LookupCache;
use portico::search::compile::{
    Plan, RowAccess, collection_select, count_select, page_select, parse_id, plan, rows_select,
};
use portico::search::cursor::CursorKey;
use portico::search::parse::{SummaryMode, parse};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::{Column, Executor, Row, TypeInfo, ValueRef};

/// The allocator the `portico` binary ships with (src/main.rs), so the figures are its.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod support;
use support::{
    clock_ticks, env_or, find_db_process, fnv, fresh_fixture, seed_reusable, stat_ticks,
    thread_ticks, watchdog, write_seed_marker,
};

// ---------------------------------------------------------------------------------------------
// Configuration

struct Config {
    profile: &'static Profile,
    patients: usize,
    seconds: f64,
    warmup_seconds: f64,
    concurrency: usize,
    server_url: String,
    database: String,
    server_threads: usize,
    client_threads: usize,
    pool_size: u32,
    reseed: bool,
    max_minutes: u64,
    /// Portico-then-raw pairs run per scenario (`PORTICO_BENCH_ROUNDS`).
    rounds: usize,
    scenarios: Option<Vec<String>>,
    paging: bool,
    /// Run the bulk export comparison (`PORTICO_BENCH_EXPORT=1`).
    export: bool,
    /// Types an export runs at once (`PORTICO_BENCH_EXPORT_TYPES`).
    export_types: u64,
    indexes: IndexSet,
    baseline: BaselineKind,
}

/// Which indexes the run's database has (`PORTICO_BENCH_INDEXES`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum IndexSet {
    /// The fixture schema as written: the PMS's own indexes plus those its README recommends.
    Recommended,
    /// The PMS's own indexes only: the profile's recommended indexes are dropped.
    Stock,
}

/// What the raw-SQL baseline runs (`PORTICO_BENCH_BASELINE`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum BaselineKind {
    /// Portico's SELECT cut down to the base table: no joins, only the conditions on the base
    /// table's own columns (a joined column its join equates with a base column counts as that
    /// column; lookup key lists written in as constants), the joined columns selected
    /// as NULL. The plain single-table query of issue 7.
    SingleTable,
    /// Portico's SELECT as Portico renders it (lookups as the subquery compiled).
    SameSql,
}

impl Config {
    fn from_env() -> Config {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let seconds: f64 = env_or("PORTICO_BENCH_SECONDS", 10.0);
        let adapter: String = env_or("PORTICO_BENCH_ADAPTER", "openemr".to_owned());
        let profile = PROFILES
            .iter()
            .find(|p| p.adapter == adapter)
            .unwrap_or_else(|| {
                panic!(
                    "PORTICO_BENCH_ADAPTER={adapter:?} is not supported (one of: {})",
                    PROFILES
                        .iter()
                        .map(|p| p.adapter)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
        Config {
            profile,
            patients: env_or("PORTICO_BENCH_PATIENTS", 100_000usize),
            seconds,
            warmup_seconds: env_or(
                "PORTICO_BENCH_WARMUP_SECONDS",
                (seconds / 5.0).clamp(0.5, 3.0),
            ),
            concurrency: env_or("PORTICO_BENCH_CONCURRENCY", 16usize).max(1),
            server_url: env_or(
                "PORTICO_BENCH_MYSQL",
                "mysql://root@127.0.0.1:3306".to_owned(),
            ),
            database: env_or(
                "PORTICO_BENCH_DATABASE",
                profile.default_database.to_owned(),
            ),
            server_threads: env_or("PORTICO_BENCH_SERVER_THREADS", cores).max(1),
            client_threads: env_or("PORTICO_BENCH_CLIENT_THREADS", cores).max(1),
            pool_size: env_or("PORTICO_BENCH_POOL", 10u32).max(1),
            reseed: env_or("PORTICO_BENCH_RESEED", 0u8) == 1,
            max_minutes: env_or("PORTICO_BENCH_MAX_MINUTES", 30u64),
            rounds: env_or("PORTICO_BENCH_ROUNDS", 1usize).max(1),
            scenarios: std::env::var("PORTICO_BENCH_SCENARIOS").ok().map(|s| {
                s.split(',')
                    .map(|p| p.trim().to_owned())
                    .filter(|p| !p.is_empty())
                    .collect()
            }),
            paging: env_or("PORTICO_BENCH_PAGING", 1u8) == 1,
            export: env_or("PORTICO_BENCH_EXPORT", 0u8) == 1,
            export_types: env_or(
                "PORTICO_BENCH_EXPORT_TYPES",
                portico::config::ExportSettings::default().parallel_types,
            ),
            indexes: match env_or("PORTICO_BENCH_INDEXES", "recommended".to_owned()).as_str() {
                "recommended" => IndexSet::Recommended,
                "stock" => IndexSet::Stock,
                other => panic!("PORTICO_BENCH_INDEXES={other:?}: recommended or stock"),
            },
            baseline: match env_or("PORTICO_BENCH_BASELINE", "single-table".to_owned()).as_str() {
                "single-table" => BaselineKind::SingleTable,
                "same-sql" => BaselineKind::SameSql,
                other => panic!("PORTICO_BENCH_BASELINE={other:?}: single-table or same-sql"),
            },
        }
    }

    fn database_url(&self) -> String {
        format!(
            "{}/{}",
            self.server_url.trim_end_matches('/'),
            self.database
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Adapters: what differs between the runs.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Seed {
    OpenEmr,
    OpenDental,
    Cerebello,
    DentneD,
}

struct Profile {
    /// `[legacy] adapter`, and the value of `PORTICO_BENCH_ADAPTER`.
    adapter: &'static str,
    title: &'static str,
    seed: Seed,
    /// The fixture schema the seed writes: its hash ties a reused database to it.
    schema: &'static str,
    default_database: &'static str,
    /// The patient table and its id column (the Patient resource's id).
    patient_table: &'static str,
    patient_id: &'static str,
    /// SQL condition on `patient_table` for the patients the adapter serves (the ids the load
    /// draws from, and the ones paging must see).
    served: &'static str,
    /// The prefixes the name scenario rotates over, and a query counting the served patients each
    /// one matches the way the adapter's search does (every `?` is bound to the prefix). The bench
    /// stops before measuring if a prefix matches none.
    name_prefixes: &'static [&'static str],
    name_count: &'static str,
    /// Tables to `ANALYZE` after seeding.
    analyze: &'static str,
    /// `(table, index, columns)` of the fixture schema that the PMS itself lacks (its README
    /// recommends them): dropped with `PORTICO_BENCH_INDEXES=stock`.
    recommended_indexes: &'static [(&'static str, &'static str, &'static str)],
    scenarios: &'static [Scenario],
}

static PROFILES: &[Profile] = &[
    Profile {
        adapter: "openemr",
        title: "OpenEMR",
        seed: Seed::OpenEmr,
        schema: OPENEMR_SCHEMA,
        default_database: "portico_bench",
        patient_table: "patient_data",
        patient_id: "pid",
        served: "TRUE",
        name_prefixes: FAMILY_PREFIXES,
        name_count: "SELECT COUNT(*) FROM patient_data WHERE lname LIKE CONCAT(?, '%')",
        analyze: "patient_data, openemr_postcalendar_events, openemr_postcalendar_categories, form_vitals, forms, users, list_options",
        recommended_indexes: &[
            (
                "openemr_postcalendar_events",
                "pc_pid_date",
                "pc_pid, pc_eventDate",
            ),
            ("form_encounter", "encounter_number", "encounter"),
            ("billing", "billing_encounter", "encounter"),
        ],
        scenarios: SCENARIOS,
    },
    Profile {
        adapter: "opendental",
        title: "Open Dental",
        seed: Seed::OpenDental,
        schema: OPENDENTAL_SCHEMA,
        default_database: "portico_bench_opendental",
        patient_table: "patient",
        patient_id: "PatNum",
        // PatStatus 4 is Open Dental's soft delete: the adapter serves neither the patient nor
        // anything of theirs (about 5 % of the seeded patients).
        served: "PatStatus <> 4",
        name_prefixes: FAMILY_PREFIXES,
        name_count: "SELECT COUNT(*) FROM patient WHERE LName LIKE CONCAT(?, '%') AND PatStatus <> 4",
        analyze: "patient, patientrace, provider, clinic, operatory, definition, appointment, vitalsign, ehrlab, ehrlabresult, ehrlabnote",
        recommended_indexes: &[],
        scenarios: SCENARIOS,
    },
    Profile {
        adapter: "cerebello",
        title: "Cerebello (SQL Server PMS, on its MariaDB copy)",
        seed: Seed::Cerebello,
        schema: CEREBELLO_SCHEMA,
        default_database: "portico_bench_cerebello",
        patient_table: "Patient",
        patient_id: "Id",
        served: "TRUE",
        name_prefixes: CEREBELLO_NAME_PREFIXES,
        // The adapter's `name` matches the start of any word of Person.FullName (`words = true`).
        name_count: "SELECT COUNT(*) FROM Patient p JOIN Person per ON per.Id = p.PersonId \
                     WHERE per.FullName LIKE CONCAT(?, '%') OR per.FullName LIKE CONCAT('% ', ?, '%')",
        analyze: "Patient, Person, PersonAddress, Address, Doctor, `User`, HealthInsurance, Practice, Appointment, PhysicalExamination, ExaminationResult",
        recommended_indexes: &[],
        scenarios: CEREBELLO_SCENARIOS,
    },
    Profile {
        adapter: "dentned",
        title: "DentneD (SQL Server PMS, on its MariaDB copy)",
        seed: Seed::DentneD,
        schema: DENTNED_SCHEMA,
        default_database: "portico_bench_dentned",
        patient_table: "patients",
        patient_id: "patients_id",
        // Archived patients are served too (with active false).
        served: "TRUE",
        name_prefixes: DENTNED_FAMILY_PREFIXES,
        name_count: "SELECT COUNT(*) FROM patients WHERE patients_surname LIKE CONCAT(?, '%')",
        analyze: "patients, patientsaddresses, addressestypes, patientscontacts, contactstypes, doctors, rooms, appointments, invoices, invoiceslines, patientstreatments",
        recommended_indexes: &[],
        scenarios: DENTNED_SCENARIOS,
    },
];

// ---------------------------------------------------------------------------------------------
// Scenarios: each yields a request path under the FHIR base, the same for both targets.

/// Prefixes of common seeded surnames (`Wil` matches Williams and Wilson). The OpenEMR and Open
/// Dental generators draw surnames from the same list (`portico::demo`).
const FAMILY_PREFIXES: &[&str] = &["Smi", "Joh", "Wil", "Bro", "Jon", "Gar", "Mil", "Dav"];

/// Word starts in `seed_cerebello`'s full names: surnames, which are never the first word (`Sil`,
/// `Oli`, `Rod`, `Lim`), given names, which are (`Jos`, `Mar`: Maria, Márcia, Marcos), and both
/// (`San`: Santos, Sant'Anna; `Fer`: Ferreira, Fernanda).
const CEREBELLO_NAME_PREFIXES: &[&str] = &["Sil", "San", "Oli", "Fer", "Mar", "Jos", "Rod", "Lim"];

/// Prefixes of `seed_dentned`'s surnames (`D'A` matches D'Amico and D'Angelo, apostrophe included).
const DENTNED_FAMILY_PREFIXES: &[&str] = &["Ros", "Rus", "Fer", "Esp", "Bia", "Rom", "Col", "D'A"];

struct Scenario {
    key: &'static str,
    title: &'static str,
    resource_type: &'static str,
    /// The request, from the run's random generator and the served patient ids (sorted).
    request: fn(&mut Rng, &[u64]) -> String,
    /// Request used to show the SQL, its EXPLAIN and a sanity check.
    example: fn(&[u64]) -> String,
}

/// A random served patient id. With OpenEMR the ids are exactly 1..=N, so this draws the same
/// sequence as `1 + rng.below(N)`.
fn random_pid(rng: &mut Rng, ids: &[u64]) -> u64 {
    ids[rng.below(ids.len() as u64) as usize]
}

/// The patient of the example requests: the middle id (N/2 + 1 with OpenEMR).
fn middle_pid(ids: &[u64]) -> u64 {
    ids[ids.len() / 2]
}

/// A random prefix of `prefixes`, to rotate a name search over.
fn random_prefix(rng: &mut Rng, prefixes: &[&'static str]) -> &'static str {
    prefixes[rng.below(prefixes.len() as u64) as usize]
}

const READ: Scenario = Scenario {
    key: "read",
    title: "read Patient/{id}",
    resource_type: "Patient",
    request: |rng, ids| format!("Patient/{}", random_pid(rng, ids)),
    example: |ids| format!("Patient/{}", middle_pid(ids)),
};

const APPOINTMENTS: Scenario = Scenario {
    key: "appointments",
    title: "Appointment?patient={id}&date=ge2024-01-01",
    resource_type: "Appointment",
    request: |rng, ids| {
        format!(
            "Appointment?patient={}&date=ge2024-01-01",
            random_pid(rng, ids)
        )
    },
    example: |ids| format!("Appointment?patient={}&date=ge2024-01-01", middle_pid(ids)),
};

/// The count clients such as fhirpy's `count()` ask for: no page, only `Bundle.total`. Without an
/// index on the patient column, MariaDB ran the former join of OpenEMR's calendar from the category
/// table (issue 7).
const APPOINTMENT_COUNT: Scenario = Scenario {
    key: "appointment-count",
    title: "Appointment?patient={id}&_summary=count",
    resource_type: "Appointment",
    request: |rng, ids| {
        format!(
            "Appointment?patient={}&_summary=count",
            random_pid(rng, ids)
        )
    },
    example: |ids| format!("Appointment?patient={}&_summary=count", middle_pid(ids)),
};

/// OpenEMR and Open Dental: both adapters map these search parameters; what differs is the ids
/// they draw from (Open Dental: served PatNums, deleted patients left out).
static SCENARIOS: &[Scenario] = &[
    READ,
    Scenario {
        key: "family",
        title: "Patient?family={prefix}&_count=20",
        resource_type: "Patient",
        request: |rng, _| {
            format!(
                "Patient?family={}&_count=20",
                random_prefix(rng, FAMILY_PREFIXES)
            )
        },
        example: |_| "Patient?family=Smi&_count=20".to_owned(),
    },
    Scenario {
        key: "vitals",
        title: "Observation?patient={id}&category=vital-signs",
        resource_type: "Observation",
        request: |rng, ids| {
            format!(
                "Observation?patient={}&category=vital-signs",
                random_pid(rng, ids)
            )
        },
        example: |ids| {
            format!(
                "Observation?patient={}&category=vital-signs",
                middle_pid(ids)
            )
        },
    },
    APPOINTMENTS,
    APPOINTMENT_COUNT,
];

/// Cerebello keeps the whole name in one field, so it offers `name` (any word's start) and no
/// `family`; it records no vitals: its Observations are examinations (`exam`) and examination
/// results (`laboratory`), two mappings a `patient=` search runs one after the other.
static CEREBELLO_SCENARIOS: &[Scenario] = &[
    READ,
    Scenario {
        key: "name",
        title: "Patient?name={prefix}&_count=20",
        resource_type: "Patient",
        request: |rng, _| {
            format!(
                "Patient?name={}&_count=20",
                random_prefix(rng, CEREBELLO_NAME_PREFIXES)
            )
        },
        example: |_| "Patient?name=Sil&_count=20".to_owned(),
    },
    Scenario {
        key: "observations",
        title: "Observation?patient={id}",
        resource_type: "Observation",
        request: |rng, ids| format!("Observation?patient={}", random_pid(rng, ids)),
        example: |ids| format!("Observation?patient={}", middle_pid(ids)),
    },
    APPOINTMENTS,
];

/// DentneD records no vitals; its invoices (with their lines) are Claims instead.
static DENTNED_SCENARIOS: &[Scenario] = &[
    READ,
    Scenario {
        key: "family",
        title: "Patient?family={prefix}&_count=20",
        resource_type: "Patient",
        request: |rng, _| {
            format!(
                "Patient?family={}&_count=20",
                random_prefix(rng, DENTNED_FAMILY_PREFIXES)
            )
        },
        example: |_| "Patient?family=Ros&_count=20".to_owned(),
    },
    APPOINTMENTS,
    Scenario {
        key: "claims",
        title: "Claim?patient={id}",
        resource_type: "Claim",
        request: |rng, ids| format!("Claim?patient={}", random_pid(rng, ids)),
        example: |ids| format!("Claim?patient={}", middle_pid(ids)),
    },
];

// ---------------------------------------------------------------------------------------------
// SQL: Portico's own compiler, the same calls as `Repository::read` / `Repository::search`.

/// A path under the FHIR base (`Patient/12`, `Patient?family=Smi`) split into its parts.
enum Request {
    Read {
        resource_type: String,
        id: String,
    },
    Search {
        resource_type: String,
        pairs: Vec<(String, String)>,
    },
}

fn split_request(path: &str) -> Request {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let pairs = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    match path.split_once('/') {
        Some((resource_type, id)) => Request::Read {
            resource_type: resource_type.to_owned(),
            id: id.to_owned(),
        },
        None => Request::Search {
            resource_type: path.to_owned(),
            pairs,
        },
    }
}

/// The plan Portico's search handler builds (lenient handling).
fn search_plan(
    adapter: &Adapter,
    resource_type: &str,
    pairs: &[(String, String)],
) -> Result<Plan, String> {
    let def = adapter
        .resources
        .get(resource_type)
        .ok_or_else(|| format!("{resource_type} is not mapped"))?;
    let request = parse(pairs).map_err(|e| format!("{e:?}"))?;
    let now = Utc::now().with_timezone(&adapter.timezone).naive_local();
    plan(
        def,
        &adapter.resources,
        request,
        false,
        adapter.timezone,
        now,
    )
    .map_err(|e| format!("{e:?}"))
}

/// What `Access::everything()` compiles to for every mapping (the benchmark's clients see
/// everything; `search::compile` tests check that `row_access` agrees).
const EVERYTHING: RowAccess = RowAccess {
    cond: Cond::True,
    variants: None,
};

/// The SELECTs of a read: one per mapping the id can belong to, as `Repository::read` runs them.
fn read_selects(adapter: &Adapter, resource_type: &str, id: &str) -> Vec<(Arc<Mapping>, Select)> {
    let Some(def) = adapter.resources.get(resource_type) else {
        return Vec::new();
    };
    def.mappings
        .iter()
        .filter_map(|mapping| {
            let target = parse_id(mapping, id)?;
            Some((
                mapping.clone(),
                rows_select(mapping, &EVERYTHING, target.cond, Some(2)),
            ))
        })
        .collect()
}

/// The first-page SELECT of each live branch, as `Repository::search` runs them (no cursor), or
/// the count SELECTs of `_summary=count`, as `Repository::count` runs them.
fn first_page_selects(plan: &Plan) -> Vec<(Arc<Mapping>, Select)> {
    plan.branches
        .iter()
        .filter(|b| b.cond != Cond::False)
        .map(|branch| {
            let select = match plan.summary {
                SummaryMode::Count => count_select(branch, &EVERYTHING),
                _ => page_select(branch, &EVERYTHING, None, plan.count as u64 + 1),
            };
            (branch.mapping.clone(), select)
        })
        .collect()
}

/// The SQL with its parameters written in as literals, to show and to EXPLAIN.
fn inline_sql(query: &RenderedQuery) -> String {
    let mut out = String::with_capacity(query.sql.len() + 64);
    let mut params = query.params.iter();
    for ch in query.sql.chars() {
        if ch != '?' {
            out.push(ch);
            continue;
        }
        match params.next() {
            Some(Value::Null | Value::Undecodable(_)) | None => out.push_str("NULL"),
            Some(Value::Bool(b)) => out.push_str(if *b { "1" } else { "0" }),
            Some(Value::Int(i)) => out.push_str(&i.to_string()),
            Some(Value::Float(f)) => out.push_str(&f.to_string()),
            Some(Value::Decimal(d)) => out.push_str(&d.to_string()),
            Some(Value::Text(s)) => {
                let _ = write!(out, "'{}'", s.replace('\\', "\\\\").replace('\'', "''"));
            }
            Some(Value::Uuid(u)) => {
                out.push_str("X'");
                for byte in u {
                    let _ = write!(out, "{byte:02x}");
                }
                out.push('\'');
            }
            Some(Value::Bytes(b)) => {
                out.push_str("X'");
                for byte in b {
                    let _ = write!(out, "{byte:02x}");
                }
                out.push('\'');
            }
            Some(Value::Date(d)) => {
                let _ = write!(out, "'{}'", d.format("%Y-%m-%d"));
            }
            Some(Value::DateTime(d)) => {
                let _ = write!(out, "'{}'", d.format("%Y-%m-%d %H:%M:%S"));
            }
            Some(Value::Time(t)) => {
                let _ = write!(out, "'{}'", t.format("%H:%M:%S"));
            }
        }
    }
    out
}

/// The key list of every lookup of the adapter's mappings, read once (`Repository` reads the same
/// lists through its cache), by lookup name.
async fn lookup_keys(pool: &MySqlPool, adapter: &Adapter) -> HashMap<String, Vec<Value>> {
    let mut keys = HashMap::new();
    for mapping in adapter.resources.values().flat_map(|d| d.mappings.iter()) {
        let select = rows_select(mapping, &EVERYTHING, Cond::True, None);
        let mut found = Vec::new();
        select.filter.lookups(&mut found);
        for (name, lookup) in found {
            let rendered = render(DialectKind::Mysql, lookup);
            let mut query = sqlx::query(&rendered.sql);
            for param in &rendered.params {
                query = portico::db::bind_mysql(query, param);
            }
            let rows = query.fetch_all(pool).await.expect("lookup keys");
            let list = rows.iter().map(|row| key_value(row, 0)).collect();
            keys.insert(name.to_owned(), list);
        }
    }
    keys
}

/// `select` with its lookups resolved from `keys`, as `Repository::fetch` runs it.
fn resolved(select: &Select, keys: &HashMap<String, Vec<Value>>) -> Select {
    select.with_lookup_keys(&|name| keys.get(name).cloned())
}

/// The plain single-table query over `select`'s base table (see `BaselineKind::SingleTable`):
/// lookups resolved to constants, joins gone, conditions and sort terms on other tables dropped,
/// joined columns selected as NULL so that the row keys stay in place.
fn single_table(select: &Select, keys: &HashMap<String, Vec<Value>>) -> Select {
    let select = resolved(select, keys);
    let conjuncts = match select.filter {
        Cond::And(conds) => conds,
        other => vec![other],
    };
    // A condition on a joined column the join equates with a base column (Open Dental's
    // `pat.PatNum = 9996`, joined on `pat.PatNum = t.PatNum`) is kept, on the base column:
    // dropped, the baseline would read every patient's rows.
    let equated = equated_base_columns(&select.joins);
    let conjuncts = conjuncts
        .into_iter()
        .map(|cond| onto_base_columns(cond, &equated));
    let base_column =
        |expr: &Expr| matches!(expr, Expr::Column { table, .. } if table == BASE_ALIAS);
    Select {
        columns: select
            .columns
            .into_iter()
            .map(|c| match c {
                Expr::Column { .. } if !base_column(&c) => Expr::Value(Value::Null),
                other => other,
            })
            .collect(),
        from: select.from,
        joins: Vec::new(),
        filter: Cond::and(
            conjuncts
                .into_iter()
                .filter(|cond| cond.reads_only(BASE_ALIAS))
                .collect(),
        ),
        order_by: select
            .order_by
            .into_iter()
            .filter(|term| base_column(&term.expr))
            .collect(),
        limit: select.limit,
        fixed_join_order: false,
    }
}

/// Joined columns that a join's ON clause sets equal to a base-table column, with that column.
fn equated_base_columns(joins: &[Join]) -> HashMap<(String, String), Expr> {
    let mut equated = HashMap::new();
    for join in joins {
        let conds = match &join.on {
            Cond::And(conds) => conds.as_slice(),
            other => std::slice::from_ref(other),
        };
        for cond in conds {
            let Cond::Compare {
                left,
                op: CmpOp::Eq,
                right,
            } = cond
            else {
                continue;
            };
            for (joined, base) in [(left, right), (right, left)] {
                if let (
                    Expr::Column { table, column },
                    Expr::Column {
                        table: base_table, ..
                    },
                ) = (joined, base)
                    && table == &join.table.alias
                    && base_table == BASE_ALIAS
                {
                    equated.insert((table.clone(), column.clone()), base.clone());
                }
            }
        }
    }
    equated
}

/// `cond` with a compared or listed joined column replaced by its equated base column.
fn onto_base_columns(cond: Cond, equated: &HashMap<(String, String), Expr>) -> Cond {
    let onto = |expr: Expr| match &expr {
        Expr::Column { table, column } => equated
            .get(&(table.clone(), column.clone()))
            .cloned()
            .unwrap_or(expr),
        _ => expr,
    };
    match cond {
        Cond::Compare { left, op, right } => Cond::Compare {
            left: onto(left),
            op,
            right: onto(right),
        },
        Cond::In {
            expr,
            values,
            negated,
        } => Cond::In {
            expr: onto(expr),
            values,
            negated,
        },
        other => other,
    }
}

// ---------------------------------------------------------------------------------------------
// Rows straight to JSON (the baseline's only "mapping")

fn json_string(out: &mut Vec<u8>, text: &str) {
    serde_json::to_writer(&mut *out, text).expect("writing to a Vec");
}

fn write_cell(out: &mut Vec<u8>, row: &MySqlRow, index: usize) {
    let Ok(raw) = row.try_get_raw(index) else {
        out.extend_from_slice(b"null");
        return;
    };
    if raw.is_null() {
        out.extend_from_slice(b"null");
        return;
    }
    let type_name = raw.type_info().name().to_owned();
    let number = |out: &mut Vec<u8>, text: String| out.extend_from_slice(text.as_bytes());
    match type_name.as_str() {
        "BOOLEAN" => match row.try_get::<bool, _>(index) {
            Ok(v) => out.extend_from_slice(if v { b"1" } else { b"0" }),
            Err(_) => out.extend_from_slice(b"null"),
        },
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR" => {
            match row.try_get::<i64, _>(index) {
                Ok(v) => number(out, v.to_string()),
                Err(_) => out.extend_from_slice(b"null"),
            }
        }
        "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "MEDIUMINT UNSIGNED" | "INT UNSIGNED"
        | "BIGINT UNSIGNED" => match row.try_get::<u64, _>(index) {
            Ok(v) => number(out, v.to_string()),
            Err(_) => out.extend_from_slice(b"null"),
        },
        "FLOAT" => match row.try_get::<f32, _>(index) {
            Ok(v) if v.is_finite() => number(out, v.to_string()),
            _ => out.extend_from_slice(b"null"),
        },
        "DOUBLE" => match row.try_get::<f64, _>(index) {
            Ok(v) if v.is_finite() => number(out, v.to_string()),
            _ => out.extend_from_slice(b"null"),
        },
        "DECIMAL" => match row.try_get::<rust_decimal::Decimal, _>(index) {
            Ok(v) => number(out, v.to_string()),
            Err(_) => out.extend_from_slice(b"null"),
        },
        "DATE" => match row.try_get::<chrono::NaiveDate, _>(index) {
            Ok(v) => json_string(out, &v.format("%Y-%m-%d").to_string()),
            Err(_) => out.extend_from_slice(b"null"),
        },
        "DATETIME" | "TIMESTAMP" => match row.try_get::<chrono::NaiveDateTime, _>(index) {
            Ok(v) => json_string(out, &v.format("%Y-%m-%dT%H:%M:%S").to_string()),
            Err(_) => out.extend_from_slice(b"null"),
        },
        "TIME" => match row.try_get::<chrono::NaiveTime, _>(index) {
            Ok(v) => json_string(out, &v.format("%H:%M:%S").to_string()),
            Err(_) => out.extend_from_slice(b"null"),
        },
        _ => match row.try_get::<String, _>(index) {
            Ok(v) => json_string(out, &v),
            Err(_) => match row.try_get::<Vec<u8>, _>(index) {
                Ok(v) => json_string(out, &String::from_utf8_lossy(&v)),
                Err(_) => out.extend_from_slice(b"null"),
            },
        },
    }
}

/// The cells of one row as JSON members keyed by `keys` (no braces).
fn write_fields(out: &mut Vec<u8>, keys: &[String], row: &MySqlRow) {
    for index in 0..row.len() {
        if index > 0 {
            out.push(b',');
        }
        match keys.get(index) {
            Some(key) => json_string(out, key),
            None => json_string(out, row.columns()[index].name()),
        }
        out.push(b':');
        write_cell(out, row, index);
    }
}

/// One row as a JSON object keyed by the mapping's column names (`pid`, `race.title`...), with the
/// child rows of each of its collections as an array under the collection's name.
fn write_row(out: &mut Vec<u8>, keys: &MappingKeys, row: &MySqlRow, children: &[Children]) {
    out.push(b'{');
    write_fields(out, &keys.columns, row);
    for ((name, child_keys), collection) in keys.collections.iter().zip(children) {
        out.push(b',');
        json_string(out, name);
        out.extend_from_slice(b":[");
        let rows = collection
            .rows
            .get(&parent_key(row, &collection.match_parent))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for (position, child) in rows.iter().enumerate() {
            if position > 0 {
                out.push(b',');
            }
            out.push(b'{');
            write_fields(out, child_keys, child);
            out.push(b'}');
        }
        out.push(b']');
    }
    out.push(b'}');
}

fn column_key(column: &ColumnRef, own_alias: &str) -> String {
    if column.alias == own_alias {
        column.column.clone()
    } else {
        format!("{}.{}", column.alias, column.column)
    }
}

/// The JSON keys of a mapping's rows, and the name and keys of each of its collections' rows.
struct MappingKeys {
    columns: Vec<String>,
    collections: Vec<(String, Vec<String>)>,
}

fn mapping_keys(mapping: &Mapping) -> MappingKeys {
    MappingKeys {
        columns: mapping
            .columns
            .iter()
            .map(|c| column_key(c, BASE_ALIAS))
            .collect(),
        collections: mapping
            .collections
            .iter()
            .map(|collection| {
                let keys = collection
                    .columns
                    .iter()
                    .map(|c| column_key(c, COLLECTION_ALIAS))
                    .collect();
                (collection.name.clone(), keys)
            })
            .collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// The baseline server

struct Baseline {
    pool: MySqlPool,
    adapter: Arc<Adapter>,
    keys: HashMap<String, MappingKeys>,
    kind: BaselineKind,
    lookup_keys: HashMap<String, Vec<Value>>,
}

/// One collection's child rows for a set of parent rows, by parent key.
struct Children {
    /// The parent row's cells the children match on.
    match_parent: Vec<usize>,
    rows: HashMap<String, Vec<MySqlRow>>,
}

/// Parent keys per collection query, as in `Repository` (its `IDS_PER_QUERY`).
const KEYS_PER_QUERY: usize = 500;

/// A match cell as a bound value: the adapters match collections on integer or text keys.
fn key_value(row: &MySqlRow, index: usize) -> Value {
    if row.try_get_raw(index).is_ok_and(|raw| raw.is_null()) {
        return Value::Null;
    }
    row.try_get::<i64, _>(index)
        .map(Value::Int)
        .or_else(|_| row.try_get::<u64, _>(index).map(|v| Value::Int(v as i64)))
        .or_else(|_| row.try_get::<String, _>(index).map(Value::Text))
        .unwrap_or(Value::Null)
}

/// The text that groups children under their parent row.
fn parent_key(row: &MySqlRow, indices: &[usize]) -> String {
    let mut key = String::new();
    for &index in indices {
        let _ = write!(key, "{:?}\u{1f}", key_value(row, index));
    }
    key
}

async fn baseline_pool(url: &str, size: u32, timeout: Duration) -> Result<MySqlPool, sqlx::Error> {
    let options: MySqlConnectOptions = url.parse()?;
    MySqlPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(Duration::from_secs(30))
        // The same session set-up as Portico's pool (read only, a server-side statement limit).
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                conn.execute("SET SESSION TRANSACTION READ ONLY").await?;
                conn.execute(
                    format!("SET SESSION max_statement_time = {}", timeout.as_secs_f64()).as_str(),
                )
                .await?;
                Ok(())
            })
        })
        .connect_with(options)
        .await
}

impl Baseline {
    async fn fetch(&self, select: &Select) -> Result<Vec<MySqlRow>, sqlx::Error> {
        let rendered = render(DialectKind::Mysql, select);
        let mut query = sqlx::query(&rendered.sql);
        for param in &rendered.params {
            query = portico::db::bind_mysql(query, param);
        }
        query.fetch_all(&self.pool).await
    }

    /// The child rows of each collection of `mapping` for `rows`, fetched as
    /// `Repository::load_collections` fetches them: `collection_select` over the distinct parent
    /// keys, one query per collection and per `KEYS_PER_QUERY` keys.
    async fn children(
        &self,
        mapping: &Mapping,
        rows: &[MySqlRow],
    ) -> Result<Vec<Children>, sqlx::Error> {
        let mut result = Vec::with_capacity(mapping.collections.len());
        for collection in &mapping.collections {
            result.push(self.collection_rows(collection, rows).await?);
        }
        Ok(result)
    }

    async fn collection_rows(
        &self,
        collection: &Collection,
        rows: &[MySqlRow],
    ) -> Result<Children, sqlx::Error> {
        let mut seen = HashSet::new();
        let mut parents = Vec::new();
        for row in rows {
            let key: Vec<Value> = collection
                .match_parent
                .iter()
                .map(|&index| key_value(row, index))
                .collect();
            if !key.contains(&Value::Null) && seen.insert(parent_key(row, &collection.match_parent))
            {
                parents.push(key);
            }
        }
        let own: Vec<usize> = (0..collection.match_parent.len()).collect();
        let mut grouped: HashMap<String, Vec<MySqlRow>> = HashMap::new();
        for chunk in parents.chunks(KEYS_PER_QUERY) {
            for child in self.fetch(&collection_select(collection, chunk)).await? {
                grouped
                    .entry(parent_key(&child, &own))
                    .or_default()
                    .push(child);
            }
        }
        Ok(Children {
            match_parent: collection.match_parent.clone(),
            rows: grouped,
        })
    }

    fn keys(&self, mapping: &Mapping) -> &MappingKeys {
        &self.keys[&mapping.name]
    }

    /// What the baseline runs for one of Portico's base SELECTs.
    fn statement(&self, select: &Select) -> Select {
        baseline_select(self.kind, select, &self.lookup_keys)
    }
}

fn baseline_select(
    kind: BaselineKind,
    select: &Select,
    keys: &HashMap<String, Vec<Value>>,
) -> Select {
    match kind {
        BaselineKind::SingleTable => single_table(select, keys),
        BaselineKind::SameSql => select.clone(),
    }
}

fn json_response(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn failure(status: StatusCode, message: String) -> Response {
    (status, message).into_response()
}

async fn raw_read(
    State(state): State<Arc<Baseline>>,
    Path((resource_type, id)): Path<(String, String)>,
) -> Response {
    for (mapping, select) in read_selects(&state.adapter, &resource_type, &id) {
        match state.fetch(&state.statement(&select)).await {
            Ok(rows) => {
                if let Some(row) = rows.first() {
                    let children = match state.children(&mapping, &rows).await {
                        Ok(children) => children,
                        Err(error) => {
                            return failure(StatusCode::INTERNAL_SERVER_ERROR, error.to_string());
                        }
                    };
                    let mut out = Vec::with_capacity(1024);
                    write_row(&mut out, state.keys(&mapping), row, &children);
                    return json_response(out);
                }
            }
            Err(error) => return failure(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
        }
    }
    failure(
        StatusCode::NOT_FOUND,
        format!("{resource_type}/{id} not found"),
    )
}

async fn raw_search(
    State(state): State<Arc<Baseline>>,
    Path(resource_type): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let pairs: Vec<(String, String)> = raw
        .as_deref()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let plan = match search_plan(&state.adapter, &resource_type, &pairs) {
        Ok(plan) => plan,
        Err(message) => return failure(StatusCode::BAD_REQUEST, message),
    };
    if plan.summary == SummaryMode::Count {
        let mut total = 0i64;
        for branch in plan.branches.iter().filter(|b| b.cond != Cond::False) {
            let select = state.statement(&count_select(branch, &EVERYTHING));
            match state.fetch(&select).await {
                Ok(rows) => {
                    total += rows
                        .first()
                        .map(|r| key_value(r, 0))
                        .map_or(0, |v| match v {
                            Value::Int(n) => n,
                            _ => 0,
                        })
                }
                Err(error) => {
                    return failure(StatusCode::INTERNAL_SERVER_ERROR, error.to_string());
                }
            }
        }
        return json_response(format!("{{\"total\":{total}}}").into_bytes());
    }
    // Branch by branch in order, with Portico's row budget for unsorted searches.
    // The extra row only tells whether there is a next page: it is fetched, not written.
    let limit = plan.count;
    let mut fetched = 0usize;
    let mut written = 0usize;
    let mut out = Vec::with_capacity(8 * 1024);
    out.push(b'[');
    for branch in plan.branches.iter().filter(|b| b.cond != Cond::False) {
        if fetched > limit {
            break;
        }
        let wanted = limit + 1 - fetched.min(limit);
        let select = page_select(branch, &EVERYTHING, None, wanted as u64);
        let rows = match state.fetch(&state.statement(&select)).await {
            Ok(rows) => rows,
            Err(error) => return failure(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
        };
        fetched += rows.len();
        let children = match state.children(&branch.mapping, &rows).await {
            Ok(children) => children,
            Err(error) => return failure(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
        };
        let keys = state.keys(&branch.mapping);
        for row in rows.iter().take(limit - written) {
            if written > 0 {
                out.push(b',');
            }
            write_row(&mut out, keys, row, &children);
            written += 1;
        }
    }
    out.push(b']');
    json_response(out)
}

fn baseline_router(state: Arc<Baseline>) -> Router {
    Router::new()
        .route("/raw/{resource_type}", get(raw_search))
        .route("/raw/{resource_type}/{id}", get(raw_read))
        .with_state(state)
}

// ---------------------------------------------------------------------------------------------
// Process measurements: resident memory and CPU per thread group

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

#[derive(Clone, Copy, Default)]
struct CpuSnapshot {
    server: u64,
    client: u64,
    process: u64,
    db: u64,
    /// Busy ticks of the whole machine (all CPUs), to spot CPU used by anything else.
    machine: u64,
}

fn machine_busy_ticks() -> u64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().next() else {
        return 0;
    };
    // cpu user nice system idle iowait irq softirq steal ...
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|f| f.parse().ok())
        .collect();
    if fields.len() < 8 {
        return 0;
    }
    fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + fields[7]
}

fn cpu_snapshot(db: &Option<PathBuf>) -> CpuSnapshot {
    CpuSnapshot {
        server: thread_ticks(SERVER_THREAD),
        client: thread_ticks(CLIENT_THREAD),
        process: support::process_ticks(),
        machine: machine_busy_ticks(),
        db: db
            .as_deref()
            .and_then(stat_ticks)
            .map(|(_, t)| t)
            .unwrap_or(0),
    }
}

const SERVER_THREAD: &str = "portico-srv";
const CLIENT_THREAD: &str = "bench-client";

// ---------------------------------------------------------------------------------------------
// Load runs

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Portico,
    Baseline,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Portico => "Portico",
            Target::Baseline => "raw SQL",
        }
    }
}

#[derive(Default)]
struct WorkerResult {
    latencies_us: Vec<u32>,
    errors: u64,
    bytes: u64,
    samples: Vec<String>,
}

/// Portico's throughput over the baseline's in one round (0 when the baseline served nothing).
fn pair_ratio((portico, raw): &(&RunResult, &RunResult)) -> f64 {
    if raw.rps() > 0.0 {
        portico.rps() / raw.rps()
    } else {
        0.0
    }
}

struct RunResult {
    scenario: &'static str,
    target: Target,
    ok: u64,
    errors: u64,
    wall: Duration,
    p50_ms: f64,
    p99_ms: f64,
    bytes: u64,
    server_cpu_s: f64,
    client_cpu_s: f64,
    db_cpu_s: f64,
    /// CPU used on the machine by neither this process nor the database during the run.
    other_cpu_s: f64,
    samples: Vec<String>,
}

impl RunResult {
    fn rps(&self) -> f64 {
        self.ok as f64 / self.wall.as_secs_f64()
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

async fn worker(
    client: reqwest::Client,
    base: Arc<String>,
    scenario: &'static Scenario,
    ids: Arc<[u64]>,
    seed: u64,
    deadline: Instant,
) -> WorkerResult {
    let mut rng = Rng::new(seed);
    let mut result = WorkerResult {
        latencies_us: Vec::with_capacity(16 * 1024),
        ..WorkerResult::default()
    };
    while Instant::now() < deadline {
        let url = format!("{}/{}", base, (scenario.request)(&mut rng, &ids));
        let started = Instant::now();
        let outcome = match client.get(&url).send().await {
            Ok(response) => {
                let status = response.status();
                match response.bytes().await {
                    Ok(body) => Ok((status, body)),
                    Err(error) => Err(format!("GET {url}: reading the body failed: {error}")),
                }
            }
            Err(error) => Err(format!("GET {url}: {error}")),
        };
        let elapsed = started.elapsed();
        match outcome {
            Ok((status, body)) if status.is_success() => {
                result
                    .latencies_us
                    .push(elapsed.as_micros().min(u32::MAX as u128) as u32);
                result.bytes += body.len() as u64;
            }
            Ok((status, body)) => {
                result.errors += 1;
                if result.samples.len() < 3 {
                    let excerpt: String =
                        String::from_utf8_lossy(&body).chars().take(300).collect();
                    result
                        .samples
                        .push(format!("GET {url} -> {status}: {excerpt}"));
                }
            }
            Err(message) => {
                result.errors += 1;
                if result.samples.len() < 3 {
                    result.samples.push(message);
                }
            }
        }
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn load(
    client: &reqwest::Client,
    base: &str,
    scenario: &'static Scenario,
    scenario_index: usize,
    ids: &Arc<[u64]>,
    config: &Config,
    duration: Duration,
    seed_base: u64,
) -> Vec<WorkerResult> {
    let base = Arc::new(base.to_owned());
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = (0..config.concurrency)
        .map(|w| {
            let seed = seed_base
                ^ ((scenario_index as u64) << 32)
                ^ (w as u64 + 1).wrapping_mul(0x1000_0001);
            tokio::spawn(worker(
                client.clone(),
                base.clone(),
                scenario,
                ids.clone(),
                seed,
                deadline,
            ))
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("load worker panicked"));
    }
    results
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    client: &reqwest::Client,
    base: &str,
    target: Target,
    scenario: &'static Scenario,
    scenario_index: usize,
    ids: &Arc<[u64]>,
    config: &Config,
    db_stat: &Option<PathBuf>,
    ticks: f64,
) -> RunResult {
    // Warm-up on other ids than the measured ones (the same for both targets).
    if config.warmup_seconds > 0.0 {
        load(
            client,
            base,
            scenario,
            scenario_index,
            ids,
            config,
            Duration::from_secs_f64(config.warmup_seconds),
            0xA11CE,
        )
        .await;
    }
    let before = cpu_snapshot(db_stat);
    let started = Instant::now();
    let workers = load(
        client,
        base,
        scenario,
        scenario_index,
        ids,
        config,
        Duration::from_secs_f64(config.seconds),
        0xBE7C4,
    )
    .await;
    let wall = started.elapsed();
    let after = cpu_snapshot(db_stat);
    let mut latencies: Vec<u32> = Vec::new();
    let mut errors = 0;
    let mut bytes = 0;
    let mut samples = Vec::new();
    for w in workers {
        latencies.extend(w.latencies_us);
        errors += w.errors;
        bytes += w.bytes;
        for s in w.samples {
            if samples.len() < 5 {
                samples.push(s);
            }
        }
    }
    latencies.sort_unstable();
    RunResult {
        scenario: scenario.key,
        target,
        ok: latencies.len() as u64,
        errors,
        wall,
        p50_ms: percentile(&latencies, 50.0),
        p99_ms: percentile(&latencies, 99.0),
        bytes,
        server_cpu_s: after.server.saturating_sub(before.server) as f64 / ticks,
        client_cpu_s: after.client.saturating_sub(before.client) as f64 / ticks,
        db_cpu_s: after.db.saturating_sub(before.db) as f64 / ticks,
        other_cpu_s: after
            .machine
            .saturating_sub(before.machine)
            .saturating_sub(after.process.saturating_sub(before.process))
            .saturating_sub(after.db.saturating_sub(before.db)) as f64
            / ticks,
        samples,
    }
}

// ---------------------------------------------------------------------------------------------
// Database preparation

async fn admin_pool(config: &Config, database: Option<&str>) -> Result<MySqlPool, sqlx::Error> {
    support::admin_pool(&config.server_url, database).await
}

/// Whether the bench database already holds this seed (same patient count and schema).
async fn reusable(config: &Config, schema_hash: &str) -> bool {
    seed_reusable(
        &config.server_url,
        &config.database,
        config.profile.patient_table,
        config.patients,
        schema_hash,
    )
    .await
}

struct Dataset {
    seeded_seconds: Option<f64>,
    counts: Option<Counts>,
    tables: Vec<(String, i64, f64)>,
    buffer_pool_mib: f64,
    /// The ids of the patients the adapter serves, ascending (1..=N for OpenEMR; Open Dental
    /// without its deleted patients). The load draws from them, paging must see each once.
    ids: Arc<[u64]>,
    /// Served patients the name scenario's search matches, for each of the profile's prefixes.
    name_matches: Vec<(&'static str, i64)>,
}

async fn seed(config: &Config, writer: &FixtureWriter) -> Result<Counts, portico::db::DbError> {
    match config.profile.seed {
        Seed::OpenEmr => seed_openemr(writer, config.patients).await,
        Seed::OpenDental => seed_opendental(writer, config.patients).await,
        Seed::Cerebello => seed_cerebello(writer, config.patients).await,
        Seed::DentneD => seed_dentned(writer, config.patients).await,
    }
}

async fn prepare_database(config: &Config) -> anyhow::Result<Dataset> {
    let profile = config.profile;
    let schema_hash = fnv(profile.schema);
    let mut counts = None;
    let mut seeded_seconds = None;
    if !config.reseed && reusable(config, &schema_hash).await {
        println!(
            "- reusing database `{}`: it already holds {} patients with the current schema",
            config.database, config.patients
        );
    } else {
        println!(
            "- seeding database `{}` with {} patients (seed_{})...",
            config.database, config.patients, profile.adapter
        );
        let started = Instant::now();
        let writer = fresh_fixture(&config.server_url, &config.database).await?;
        let written = seed(config, &writer)
            .await
            .map_err(|e| anyhow::anyhow!("seeding failed: {}", e.message))?;
        writer.close().await;
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "- seeded in {seconds:.1} s: {} patients, {} appointment rows, {} vitals rows, {} lab results, {} coverages, {} claims",
            written.patients,
            written.appointments,
            written.vitals,
            written.lab_results,
            written.coverages,
            written.claims
        );
        counts = Some(written);
        let pool = admin_pool(config, Some(&config.database)).await?;
        sqlx::raw_sql(&format!("ANALYZE TABLE {}", profile.analyze))
            .execute(&pool)
            .await?;
        write_seed_marker(&pool, config.patients, &schema_hash).await?;
        pool.close().await;
        seeded_seconds = Some(seconds);
    }
    let pool = admin_pool(config, Some(&config.database)).await?;
    apply_index_set(config, &pool).await?;
    let tables: Vec<(String, i64, f64)> = sqlx::query_as::<_, (String, Option<u64>, Option<u64>)>(
        "SELECT TABLE_NAME, TABLE_ROWS, DATA_LENGTH + INDEX_LENGTH FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = DATABASE() ORDER BY DATA_LENGTH + INDEX_LENGTH DESC",
    )
    .fetch_all(&pool)
    .await?
    .into_iter()
    .map(|(name, rows, bytes)| {
        (
            name,
            rows.unwrap_or(0) as i64,
            bytes.unwrap_or(0) as f64 / 1_048_576.0,
        )
    })
    .collect();
    let buffer_pool: Option<u64> = sqlx::query_scalar("SELECT @@innodb_buffer_pool_size")
        .fetch_one(&pool)
        .await
        .ok();
    let ids: Vec<i64> = sqlx::query_scalar(&format!(
        "SELECT {id} FROM {table} WHERE {served} ORDER BY {id}",
        id = profile.patient_id,
        table = profile.patient_table,
        served = profile.served
    ))
    .fetch_all(&pool)
    .await?;
    let ids: Arc<[u64]> = ids.into_iter().map(|id| id as u64).collect();
    if ids.is_empty() {
        anyhow::bail!("the database serves no patients");
    }
    let mut name_matches = Vec::new();
    for prefix in profile.name_prefixes {
        let mut query = sqlx::query_scalar(profile.name_count);
        for _ in profile.name_count.matches('?') {
            query = query.bind(*prefix);
        }
        name_matches.push((*prefix, query.fetch_one(&pool).await?));
    }
    pool.close().await;
    Ok(Dataset {
        seeded_seconds,
        counts,
        tables,
        buffer_pool_mib: buffer_pool.unwrap_or(0) as f64 / 1_048_576.0,
        ids,
        name_matches,
    })
}

/// Drops (`stock`) or creates (`recommended`) the profile's recommended indexes, then analyzes the
/// tables whose indexes changed.
async fn apply_index_set(config: &Config, pool: &MySqlPool) -> anyhow::Result<()> {
    let mut changed = Vec::new();
    for (table, index, columns) in config.profile.recommended_indexes {
        let present: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND INDEX_NAME = ?",
        )
        .bind(table)
        .bind(index)
        .fetch_one(pool)
        .await?;
        let sql = match (config.indexes, present > 0) {
            (IndexSet::Stock, true) => format!("DROP INDEX `{index}` ON `{table}`"),
            (IndexSet::Recommended, false) => {
                format!("CREATE INDEX `{index}` ON `{table}` ({columns})")
            }
            _ => continue,
        };
        sqlx::raw_sql(&sql).execute(pool).await?;
        changed.push(table.to_string());
    }
    changed.sort();
    changed.dedup();
    if !changed.is_empty() {
        sqlx::raw_sql(&format!("ANALYZE TABLE {}", changed.join(", ")))
            .execute(pool)
            .await?;
    }
    let names: Vec<&str> = config
        .profile
        .recommended_indexes
        .iter()
        .map(|(_, index, _)| *index)
        .collect();
    println!(
        "- indexes: {} ({})",
        match config.indexes {
            IndexSet::Recommended => "recommended: the fixture schema as written",
            IndexSet::Stock => "stock: the PMS's own indexes only",
        },
        if names.is_empty() {
            "this profile declares no recommended indexes".to_owned()
        } else {
            format!(
                "{} {}",
                if config.indexes == IndexSet::Stock {
                    "without"
                } else {
                    "with"
                },
                names.join(", ")
            )
        }
    );
    Ok(())
}

/// Reads the scenario's tables and their indexes once, so that the first target measured does not
/// pay for a cold buffer pool that the second then enjoys.
async fn prewarm(pool: &MySqlPool, mappings: &[Arc<Mapping>]) {
    let mut tables = Vec::new();
    for mapping in mappings {
        tables.push(mapping.table.clone());
        tables.extend(mapping.joins.iter().map(|j| j.table.clone()));
        for collection in &mapping.collections {
            tables.push(collection.table.clone());
            tables.extend(collection.joins.iter().map(|j| j.table.clone()));
        }
    }
    tables.sort();
    tables.dedup();
    for table in tables {
        let indexes: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
        )
        .bind(&table)
        .fetch_all(pool)
        .await
        .unwrap_or_default();
        for index in indexes {
            let sql = format!("SELECT COUNT(*) FROM `{table}` FORCE INDEX (`{index}`)");
            let _ = sqlx::raw_sql(&sql).execute(pool).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SQL report: the compiled SQL of each scenario and MariaDB's EXPLAIN of it

async fn explain(pool: &MySqlPool, sql: &str) -> Vec<String> {
    let rows = match sqlx::raw_sql(&format!("EXPLAIN {sql}"))
        .fetch_all(pool)
        .await
    {
        Ok(rows) => rows,
        Err(error) => return vec![format!("EXPLAIN failed: {error}")],
    };
    let mut lines = Vec::new();
    let wanted = [
        "id",
        "select_type",
        "table",
        "type",
        "key",
        "key_len",
        "ref",
        "rows",
        "Extra",
    ];
    if let Some(first) = rows.first() {
        let header: Vec<&str> = first
            .columns()
            .iter()
            .map(|c| c.name())
            .filter(|n| wanted.contains(n))
            .collect();
        lines.push(format!("| {} |", header.join(" | ")));
        lines.push(format!("|{}", "---|".repeat(header.len())));
    }
    for row in &rows {
        let mut cells = Vec::new();
        for (index, column) in row.columns().iter().enumerate() {
            if !wanted.contains(&column.name()) {
                continue;
            }
            let mut out = Vec::new();
            write_cell(&mut out, row, index);
            cells.push(String::from_utf8_lossy(&out).trim_matches('"').to_owned());
        }
        lines.push(format!("| {} |", cells.join(" | ")));
    }
    lines
}

/// The base SELECTs of `path` as compiled (lookups unresolved).
fn compiled_selects(adapter: &Adapter, path: &str) -> Vec<Select> {
    match split_request(path) {
        Request::Read { resource_type, id } => read_selects(adapter, &resource_type, &id)
            .into_iter()
            .map(|(_, s)| s)
            .collect(),
        Request::Search {
            resource_type,
            pairs,
        } => match search_plan(adapter, &resource_type, &pairs) {
            Ok(plan) => first_page_selects(&plan)
                .into_iter()
                .map(|(_, s)| s)
                .collect(),
            Err(message) => {
                println!("  (cannot compile {path}: {message})");
                Vec::new()
            }
        },
    }
}

fn compiled_sql(adapter: &Adapter, path: &str) -> Vec<RenderedQuery> {
    compiled_selects(adapter, path)
        .iter()
        .map(|s| render(DialectKind::Mysql, s))
        .collect()
}

/// Microseconds per compilation (parse, plan, page SELECT, render) of `path`: the part of the
/// baseline's per-request work that is Portico code rather than "raw SQL".
fn compile_cost_us(adapter: &Adapter, path: &str) -> f64 {
    let rounds = 20_000;
    let started = Instant::now();
    let mut sink = 0usize;
    for _ in 0..rounds {
        sink += compiled_sql(adapter, path)
            .iter()
            .map(|q| q.sql.len())
            .sum::<usize>();
    }
    std::hint::black_box(sink);
    started.elapsed().as_secs_f64() * 1e6 / rounds as f64
}

// ---------------------------------------------------------------------------------------------
// Sanity: both targets answer the example request; Portico's resources vs the baseline's rows.

async fn sanity(client: &reqwest::Client, portico: &str, baseline: &str, path: &str) -> String {
    let get = |url: String| async move {
        match client.get(&url).send().await {
            Ok(r) => {
                let status = r.status();
                let body = r.bytes().await.unwrap_or_default();
                (Some(status), body)
            }
            Err(e) => (None, axum::body::Bytes::from(e.to_string())),
        }
    };
    let (p_status, p_body) = get(format!("{portico}/{path}")).await;
    let (b_status, b_body) = get(format!("{baseline}/{path}")).await;
    let p_json: serde_json::Value =
        serde_json::from_slice(&p_body).unwrap_or(serde_json::Value::Null);
    let b_json: serde_json::Value =
        serde_json::from_slice(&b_body).unwrap_or(serde_json::Value::Null);
    let portico_count = match p_json["resourceType"].as_str() {
        Some("Bundle") => p_json["entry"]
            .as_array()
            .map(|e| e.iter().filter(|e| e["search"]["mode"] == "match").count())
            .unwrap_or(0),
        Some(_) => 1,
        None => 0,
    };
    let baseline_count = match &b_json {
        serde_json::Value::Array(rows) => rows.len(),
        serde_json::Value::Object(_) => 1,
        _ => 0,
    };
    let status = |s: Option<reqwest::StatusCode>| {
        s.map(|s| s.as_u16().to_string())
            .unwrap_or_else(|| "no answer".into())
    };
    let mut line = format!(
        "Portico {} ({} resources, {} bytes); raw SQL {} ({} rows, {} bytes)",
        status(p_status),
        portico_count,
        p_body.len(),
        status(b_status),
        baseline_count,
        b_body.len()
    );
    if let (Some(p), Some(b)) = (p_json["total"].as_u64(), b_json["total"].as_u64()) {
        let _ = write!(line, "; total: Portico {p}, raw SQL {b}");
    }
    if p_status.is_none_or(|s| !s.is_success()) {
        let excerpt: String = String::from_utf8_lossy(&p_body).chars().take(300).collect();
        let _ = write!(line, "\n  Portico body: {excerpt}");
    }
    line
}

// ---------------------------------------------------------------------------------------------
// Paging through every Patient

struct PagingResult {
    pages: usize,
    resources: usize,
    duplicates: usize,
    missing: usize,
    seconds: f64,
    rss_before_kib: u64,
    rss_max_kib: u64,
    rss_after_kib: u64,
    checkpoints: Vec<(usize, u64)>,
    failure: Option<String>,
    bytes: u64,
    page_ms: Vec<f64>,
}

/// Pages through `Patient?_count=1000`; `ids` are the served patient ids (ascending), each of
/// which must be seen exactly once, and no other id at all (an Open Dental deleted patient would
/// count as foreign).
async fn page_all(client: &reqwest::Client, portico: &str, ids: &[u64]) -> PagingResult {
    let max_id = ids.last().copied().unwrap_or(0) as usize;
    let mut expected = vec![false; max_id + 1];
    for id in ids {
        expected[*id as usize] = true;
    }
    let mut seen = vec![false; max_id + 1];
    // Let earlier runs' memory settle before the baseline sample.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = rss_kib();
    let max = Arc::new(AtomicU64::new(rss_before));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let max = max.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                max.fetch_max(rss_kib(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let started = Instant::now();
    let mut url = Some(format!("{portico}/Patient?_count=1000"));
    let mut result = PagingResult {
        pages: 0,
        resources: 0,
        duplicates: 0,
        missing: 0,
        seconds: 0.0,
        rss_before_kib: rss_before,
        rss_max_kib: 0,
        rss_after_kib: 0,
        checkpoints: Vec::new(),
        failure: None,
        bytes: 0,
        page_ms: Vec::new(),
    };
    let expected_pages = ids.len().div_ceil(1000).max(1);
    let checkpoint_every = (expected_pages / 10).max(1);
    let mut foreign = 0usize;
    while let Some(current) = url.take() {
        let page_started = Instant::now();
        let response = match client.get(&current).send().await {
            Ok(r) => r,
            Err(error) => {
                result.failure = Some(format!("GET {current}: {error}"));
                break;
            }
        };
        let status = response.status();
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(error) => {
                result.failure = Some(format!(
                    "GET {current} -> {status}: reading the body failed: {error}"
                ));
                break;
            }
        };
        if !status.is_success() {
            let excerpt: String = String::from_utf8_lossy(&body).chars().take(500).collect();
            result.failure = Some(format!("GET {current} -> {status}: {excerpt}"));
            break;
        }
        result.bytes += body.len() as u64;
        let bundle: serde_json::Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(error) => {
                result.failure = Some(format!("GET {current}: the body is not JSON: {error}"));
                break;
            }
        };
        drop(body);
        result.pages += 1;
        result
            .page_ms
            .push(page_started.elapsed().as_secs_f64() * 1000.0);
        for entry in bundle["entry"]
            .as_array()
            .map(|a| a.as_slice())
            .unwrap_or(&[])
        {
            if entry["search"]["mode"] != "match" {
                continue;
            }
            result.resources += 1;
            match entry["resource"]["id"]
                .as_str()
                .and_then(|id| id.parse::<usize>().ok())
            {
                Some(id) if id <= max_id && expected[id] => {
                    if seen[id] {
                        result.duplicates += 1;
                    }
                    seen[id] = true;
                }
                _ => foreign += 1,
            }
        }
        url = bundle["link"]
            .as_array()
            .and_then(|links| links.iter().find(|l| l["relation"] == "next"))
            .and_then(|l| l["url"].as_str())
            .map(str::to_owned);
        if result.pages.is_multiple_of(checkpoint_every) {
            result.checkpoints.push((result.pages, rss_kib()));
        }
        if result.pages > expected_pages * 2 + 10 {
            result.failure = Some(format!(
                "stopped after {} pages: the next links do not end",
                result.pages
            ));
            break;
        }
    }
    result.seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    result.rss_max_kib = max.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    result.rss_after_kib = rss_kib();
    result.missing = ids.iter().filter(|id| !seen[**id as usize]).count();
    if foreign > 0 && result.failure.is_none() {
        result.failure = Some(format!(
            "{foreign} resources with ids that are not served patients"
        ));
    }
    result
}

// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// Bulk export against the baseline

/// One side of the export comparison.
#[derive(Default)]
struct ExportRun {
    /// Resources (Portico) or rows (baseline) written, per type.
    lines: Vec<(String, u64)>,
    bytes: u64,
    seconds: f64,
    /// CPU of this process (Portico: less the client threads polling) and of the database.
    process_cpu_s: f64,
    db_cpu_s: f64,
    rss_before_kib: u64,
    rss_max_kib: u64,
}

impl ExportRun {
    fn total(&self) -> u64 {
        self.lines.iter().map(|(_, n)| n).sum()
    }
}

struct ExportComparison {
    portico: ExportRun,
    raw: ExportRun,
    left_out: u64,
    failure: Option<String>,
}

/// The baseline's export: every branch of each type's unfiltered search, in keyset pages of
/// `page` rows (`page_select` after the last row's key, as `Repository::search` continues), each
/// page fetched with the baseline's statement and its collections, each row written as one JSON
/// line to a file per type.
async fn raw_export(
    baseline: &Baseline,
    page: usize,
    dir: &std::path::Path,
) -> Result<ExportRun, String> {
    use std::io::Write as _;
    let mut run = ExportRun::default();
    let mut types: Vec<&String> = baseline.adapter.resources.keys().collect();
    types.sort();
    for resource_type in types {
        let pairs = [("_count".to_owned(), page.to_string())];
        let plan = search_plan(&baseline.adapter, resource_type, &pairs)?;
        let path = dir.join(format!("{resource_type}.ndjson"));
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?,
        );
        let mut lines = 0;
        for branch in plan.branches.iter().filter(|b| b.cond != Cond::False) {
            let mapping = &branch.mapping;
            let keys = baseline.keys(mapping);
            let mut after: Option<CursorKey> = None;
            loop {
                let select = page_select(branch, &EVERYTHING, after.as_ref(), page as u64);
                let rows = baseline
                    .fetch(&baseline.statement(&select))
                    .await
                    .map_err(|e| e.to_string())?;
                let children = baseline
                    .children(mapping, &rows)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut out = Vec::with_capacity(rows.len() * 512);
                for row in &rows {
                    write_row(&mut out, keys, row, &children);
                    out.push(b'\n');
                }
                file.write_all(&out).map_err(|e| e.to_string())?;
                run.bytes += out.len() as u64;
                run.rss_max_kib = run.rss_max_kib.max(rss_kib());
                lines += rows.len() as u64;
                let Some(last) = rows.last() else { break };
                if rows.len() < page {
                    break;
                }
                after = Some(CursorKey {
                    sort: Vec::new(),
                    branch: branch.index,
                    key: mapping
                        .id
                        .columns
                        .iter()
                        .map(|&i| key_value(last, i))
                        .collect(),
                    variant: None,
                });
            }
        }
        file.flush().map_err(|e| e.to_string())?;
        run.lines.push((resource_type.clone(), lines));
    }
    Ok(run)
}

/// Portico's export: a system `$export` of every type the bench token grants, timed by the job's
/// own created and finished instants; the state store is polled every 100 ms (the status URL
/// asks for 2 s between polls), and the resident memory sampled with it.
async fn portico_export(
    client: &reqwest::Client,
    base: &str,
    store: &portico::state::StateStore,
    db_stat: &Option<PathBuf>,
    ticks: f64,
) -> Result<(ExportRun, u64), String> {
    let rss_before_kib = rss_kib();
    let before = cpu_snapshot(db_stat);
    let kicked = client
        .get(format!("{base}/$export"))
        .header("prefer", "respond-async")
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if kicked.status() != StatusCode::ACCEPTED {
        return Err(format!("kick-off answered {}", kicked.status()));
    }
    let status_url = kicked
        .headers()
        .get("content-location")
        .and_then(|v| v.to_str().ok())
        .ok_or("the kick-off has no Content-Location")?
        .to_owned();
    let id = status_url.rsplit('/').next().unwrap_or_default().to_owned();
    let mut rss_max_kib = rss_before_kib;
    let job = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        rss_max_kib = rss_max_kib.max(rss_kib());
        let job = store
            .export_job(&id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the job is gone")?;
        match job.status.as_str() {
            portico::state::exports::COMPLETE => break job,
            portico::state::exports::ACCEPTED | portico::state::exports::IN_PROGRESS => {}
            other => return Err(format!("the export ended {other}: {:?}", job.error)),
        }
    };
    let after = cpu_snapshot(db_stat);
    let mut run = ExportRun {
        seconds: (job.finished_ms.unwrap_or_default() - job.created_ms) as f64 / 1000.0,
        process_cpu_s: ((after.process - before.process) - (after.client - before.client)) as f64
            / ticks,
        db_cpu_s: (after.db - before.db) as f64 / ticks,
        rss_before_kib,
        rss_max_kib,
        ..ExportRun::default()
    };
    let mut lines: std::collections::BTreeMap<String, u64> = Default::default();
    for file in store.export_files(&id).await.map_err(|e| e.to_string())? {
        run.bytes += file.bytes as u64;
        if file.resource_type != "OperationOutcome" {
            *lines.entry(file.resource_type.clone()).or_default() += file.lines as u64;
        }
    }
    run.lines = lines.into_iter().collect();
    let left_out = portico::state::exports::ExportTotals::of(
        &store.export_parts(&id).await.map_err(|e| e.to_string())?,
    )
    .left_out as u64;
    // Done with it: the files go (the job's DELETE).
    let _ = client.delete(&status_url).send().await;
    Ok((run, left_out))
}

/// Both exports, the baseline's first (it also warms the buffer pool for Portico's).
async fn export_both(
    client: &reqwest::Client,
    base: &str,
    store: &portico::state::StateStore,
    baseline: &Baseline,
    scratch: &std::path::Path,
    db_stat: &Option<PathBuf>,
    ticks: f64,
) -> ExportComparison {
    let page = portico::config::ExportSettings::default().page_size as usize;
    let dir = scratch.join("raw-export");
    let _ = std::fs::create_dir_all(&dir);
    let rss_before_kib = rss_kib();
    let before = cpu_snapshot(db_stat);
    let started = Instant::now();
    let raw = raw_export(baseline, page, &dir).await;
    let seconds = started.elapsed().as_secs_f64();
    let after = cpu_snapshot(db_stat);
    let _ = std::fs::remove_dir_all(&dir);
    let raw = match raw {
        Ok(mut run) => {
            run.seconds = seconds;
            run.process_cpu_s = (after.process - before.process) as f64 / ticks;
            run.db_cpu_s = (after.db - before.db) as f64 / ticks;
            run.rss_before_kib = rss_before_kib;
            run.rss_max_kib = run.rss_max_kib.max(rss_before_kib);
            run
        }
        Err(why) => {
            return ExportComparison {
                portico: ExportRun::default(),
                raw: ExportRun::default(),
                left_out: 0,
                failure: Some(format!("the baseline's export failed: {why}")),
            };
        }
    };
    println!(
        "- raw-SQL baseline: {} rows in {:.1} s",
        raw.total(),
        raw.seconds
    );
    match portico_export(client, base, store, db_stat, ticks).await {
        Ok((portico, left_out)) => {
            println!(
                "- Portico: {} resources in {:.1} s ({left_out} rows left out)",
                portico.total(),
                portico.seconds
            );
            ExportComparison {
                portico,
                raw,
                left_out,
                failure: None,
            }
        }
        Err(why) => ExportComparison {
            portico: ExportRun::default(),
            raw,
            left_out: 0,
            failure: Some(format!("Portico's export failed: {why}")),
        },
    }
}

fn print_export(e: &ExportComparison) {
    println!();
    println!(
        "| bulk export | lines | seconds | lines/s | MiB written | process CPU s | DB CPU s | RSS before → max MiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, run) in [
        ("Portico `$export`", &e.portico),
        ("raw SQL, same pages", &e.raw),
    ] {
        println!(
            "| {name} | {} | {:.1} | {:.0} | {:.0} | {:.1} | {:.1} | {:.0} → {:.0} |",
            run.total(),
            run.seconds,
            run.total() as f64 / run.seconds.max(0.001),
            run.bytes as f64 / 1_048_576.0,
            run.process_cpu_s,
            run.db_cpu_s,
            run.rss_before_kib as f64 / 1024.0,
            run.rss_max_kib as f64 / 1024.0
        );
    }
    if e.portico.seconds > 0.0 {
        println!(
            "\nRaw time / Portico time: **{:.2}** (Portico {:.0} resources/s; {} rows left out).",
            e.raw.seconds / e.portico.seconds,
            e.portico.total() as f64 / e.portico.seconds,
            e.left_out
        );
    }
    println!("\n| type | Portico resources | baseline rows |\n|---|---:|---:|");
    for (resource_type, rows) in &e.raw.lines {
        let served = e
            .portico
            .lines
            .iter()
            .find(|(t, _)| t == resource_type)
            .map_or(0, |(_, n)| *n);
        println!("| {resource_type} | {served} | {rows} |");
    }
    if let Some(why) = &e.failure {
        println!("\nFAIL: {why}");
    }
}

fn main() {
    let config = Config::from_env();
    // Cargo runs benches with `--bench`; a filter argument is accepted and ignored.
    let total_started = Instant::now();
    watchdog("load", config.max_minutes);

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.server_threads)
        .thread_name(SERVER_THREAD)
        .enable_all()
        .build()
        .expect("server runtime");
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.client_threads)
        .thread_name(CLIENT_THREAD)
        .enable_all()
        .build()
        .expect("client runtime");

    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!("# Portico load benchmark\n");
    println!(
        "- adapter `{}` ({}), patients {}, {} s per run (+{} s warm-up), {} concurrent clients, {} cores; server runtime {} threads, client runtime {} threads; pools {} connections each",
        config.profile.adapter,
        config.profile.title,
        config.patients,
        config.seconds,
        config.warmup_seconds,
        config.concurrency,
        cores,
        config.server_threads,
        config.client_threads,
        config.pool_size
    );
    println!(
        "- raw-SQL baseline: {}",
        match config.baseline {
            BaselineKind::SingleTable => {
                "single-table (Portico's SELECT on its base table alone: no joins, base-table conditions (a joined column the join equates with a base column read as that column), lookup lists as constants)"
            }
            BaselineKind::SameSql => "same-sql (Portico's SELECTs, lookups as compiled)",
        }
    );

    let dataset = match client_rt.block_on(prepare_database(&config)) {
        Ok(d) => d,
        Err(error) => {
            eprintln!("load bench: database preparation failed: {error:#}");
            std::process::exit(2);
        }
    };
    let total_mib: f64 = dataset.tables.iter().map(|t| t.2).sum();
    println!(
        "- database `{}`: {:.0} MiB in {} tables (InnoDB buffer pool {:.0} MiB); largest: {}",
        config.database,
        total_mib,
        dataset.tables.len(),
        dataset.buffer_pool_mib,
        dataset
            .tables
            .iter()
            .take(5)
            .map(|(n, rows, mib)| format!("{n} ~{rows} rows {mib:.0} MiB"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let ids = dataset.ids.clone();
    println!(
        "- served patients: {} of {} (ids {}..={}; {} not served by the adapter, left out of the random ids and expected in no response)",
        ids.len(),
        config.patients,
        ids[0],
        ids[ids.len() - 1],
        config.patients.saturating_sub(ids.len())
    );
    println!(
        "- served patients per name prefix: {}",
        dataset
            .name_matches
            .iter()
            .map(|(prefix, n)| format!("{prefix} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some((prefix, _)) = dataset.name_matches.iter().find(|(_, n)| *n == 0) {
        eprintln!("load bench: the name prefix {prefix:?} matches no served patient");
        std::process::exit(2);
    }

    // Portico, as `portico serve` builds it, on port 0.
    let state_dir =
        std::env::temp_dir().join(format!("portico-bench-state-{}", std::process::id()));
    let settings = Settings {
        server: ServerSettings {
            host: "127.0.0.1".into(),
            port: 0,
            base_url: None,
            cursor_secret: Some(Secret::new("portico-load-bench-cursor-key-0123456789")),
            state_dir: state_dir.clone(),
            ..ServerSettings::default()
        },
        legacy: LegacySettings {
            adapter: config.profile.adapter.into(),
            adapters_dir: default_adapters_dir(),
            url: Secret::new(config.database_url()),
            max_connections: config.pool_size,
            statement_timeout_ms: 30_000,
            acquire_timeout_ms: 30_000,
            timezone: None,
            lookup_refresh_ms: default_lookup_refresh_ms(),
            // Start-up plan advice explains every statement: only its own test wants it.
            plan_advice_min_rows: 0,
        },
        state: Default::default(),
        auth: Default::default(),
        subscriptions: portico::config::SubscriptionsSettings {
            enabled: false,
            ..Default::default()
        },
        alarm: Default::default(),
        // No scheduled audit: its full scans would run beside what is measured.
        quality: portico::config::QualitySettings {
            schedule_minutes: 0,
        },
        reconcile: Default::default(),
        export: portico::config::ExportSettings {
            parallel_types: config.export_types,
            ..Default::default()
        },
    };
    let app = match server_rt.block_on(Application::build(&settings)) {
        Ok(app) => app,
        Err(error) => {
            eprintln!("load bench: Portico did not start: {error:#}");
            std::process::exit(2);
        }
    };
    let portico_port = app.port();
    let adapter = app.state.adapter.clone();
    // Every request carries a system/*.rs bearer token, as a Backend Services client sends it, so
    // Portico's figures include token validation. The baseline gets the same header and ignores it.
    let fhir_base = format!("http://127.0.0.1:{portico_port}/fhir");
    let bearer = server_rt
        .block_on(app.state.auth.tokens.issue_for(
            &portico::auth::tokens::Grant {
                client_id: "load-bench".into(),
                subject: "load-bench".into(),
                scope: "system/*.rs".into(),
                ..Default::default()
            },
            &fhir_base,
            24 * 3600,
        ))
        .expect("a bench token")
        .0;
    let state_store = app.state.auth.tokens.store().clone();
    server_rt.spawn(async move {
        if let Err(error) = app.run().await {
            eprintln!("Portico stopped: {error}");
        }
    });

    // The lookups' key lists, as Portico's cache reads them: the SQL report shows the statements
    // Portico runs, and the single-table baseline writes them in as constants.
    let lookup_lists = client_rt.block_on(async {
        let pool = admin_pool(&config, Some(&config.database))
            .await
            .expect("admin pool");
        let lists = lookup_keys(&pool, &adapter).await;
        pool.close().await;
        lists
    });
    for (name, keys) in &lookup_lists {
        println!("- lookup `{name}`: {} keys", keys.len());
    }

    // The baseline, on the same runtime.
    let (baseline_port, baseline_state) = {
        let keys = adapter
            .resources
            .values()
            .flat_map(|def| def.mappings.iter())
            .map(|m| (m.name.clone(), mapping_keys(m)))
            .collect();
        let url = config.database_url();
        let pool_size = config.pool_size;
        let adapter = adapter.clone();
        let kind = config.baseline;
        let lookup_keys = lookup_lists.clone();
        server_rt.block_on(async move {
            let pool = baseline_pool(&url, pool_size, Duration::from_secs(30))
                .await
                .expect("baseline pool");
            let state = Arc::new(Baseline {
                pool,
                adapter,
                keys,
                kind,
                lookup_keys,
            });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("baseline listener");
            let port = listener.local_addr().expect("address").port();
            let served = state.clone();
            tokio::spawn(async move {
                let _ = axum::serve(listener, baseline_router(served)).await;
            });
            (port, state)
        })
    };
    let portico_base = format!("http://127.0.0.1:{portico_port}/fhir");
    let baseline_base = format!("http://127.0.0.1:{baseline_port}/raw");
    println!("- Portico at {portico_base}, raw-SQL baseline at {baseline_base}");

    let db_stat = find_db_process(&config.server_url);
    if db_stat.is_none() {
        println!(
            "- (no mariadbd/mysqld process of this server found in /proc: DB CPU not reported)"
        );
    }
    let ticks = clock_ticks();

    let selected: Vec<(usize, &'static Scenario)> = config
        .profile
        .scenarios
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            config
                .scenarios
                .as_ref()
                .is_none_or(|keys| keys.iter().any(|k| k == s.key))
        })
        .collect();

    let results: Vec<RunResult>;
    let mut paging: Option<PagingResult> = None;
    let mut exported: Option<ExportComparison> = None;
    {
        let client_for = |size: usize| {
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {bearer}").parse().expect("a header value"),
            );
            reqwest::Client::builder()
                .default_headers(headers)
                .pool_max_idle_per_host(size)
                .timeout(Duration::from_secs(60))
                .build()
                .expect("HTTP client")
        };
        let portico_client = client_for(config.concurrency);
        let baseline_client = client_for(config.concurrency);
        let admin = client_rt
            .block_on(admin_pool(&config, Some(&config.database)))
            .expect("admin pool");

        // The SQL each scenario runs, and MariaDB's plan for it.
        println!(
            "\n## SQL per scenario (compiled by portico::search, rendered by portico::dialect)\n"
        );
        let mut compile_costs = Vec::new();
        // What Portico sends is the compiled SELECT after its lookup cache (`Repository::fetch`).
        // A lazy pool still needs a runtime to be made in.
        let _runtime = client_rt.enter();
        let portico_db = Database::connect_lazy(&DbSettings {
            url: config.database_url(),
            max_connections: 2,
            statement_timeout: Duration::from_secs(30),
            acquire_timeout: Duration::from_secs(10),
        })
        .expect("a MariaDB URL");
        let portico_lookups = LookupCache::new(Duration::from_secs(600));
        for (_, scenario) in &selected {
            let path = (scenario.example)(&ids);
            println!("### {} (example: `{path}`)\n", scenario.title);
            for select in compiled_selects(&adapter, &path) {
                let sent = client_rt
                    .block_on(portico_lookups.prepare(&portico_db, &select))
                    .select
                    .unwrap_or_else(|| select.clone());
                let mut statements = vec![("Portico", sent)];
                if config.baseline == BaselineKind::SingleTable {
                    let plain = baseline_select(config.baseline, &select, &lookup_lists);
                    if render(DialectKind::Mysql, &plain)
                        == render(DialectKind::Mysql, &statements[0].1)
                    {
                        println!("Portico sends the plain single-table query itself:\n");
                    } else {
                        statements.push(("raw SQL", plain));
                    }
                }
                for (target, statement) in statements {
                    let sql = inline_sql(&render(DialectKind::Mysql, &statement));
                    println!("{target}:\n\n```sql\n{sql}\n```\n");
                    for line in client_rt.block_on(explain(&admin, &sql)) {
                        println!("{line}");
                    }
                    println!();
                }
            }
            compile_costs.push((scenario.key, compile_cost_us(&adapter, &path)));
        }
        if config.paging {
            let path = "Patient?_count=1000";
            let middle = config.patients / 2;
            println!("### paging: `{path}`, then the page after pid {middle} (keyset condition)\n");
            let mut queries = compiled_sql(&adapter, path);
            let pairs = [("_count".to_owned(), "1000".to_owned())];
            if let Ok(plan) = search_plan(&adapter, "Patient", &pairs) {
                let cursor = CursorKey {
                    sort: Vec::new(),
                    branch: 0,
                    key: vec![Value::Int(middle as i64)],
                    variant: None,
                };
                if let Some(branch) = plan.branches.first() {
                    let select =
                        page_select(branch, &EVERYTHING, Some(&cursor), plan.count as u64 + 1);
                    queries.push(render(DialectKind::Mysql, &select));
                }
            }
            for query in queries {
                let sql = inline_sql(&query);
                println!("```sql\n{sql}\n```\n");
                for line in client_rt.block_on(explain(&admin, &sql)) {
                    println!("{line}");
                }
                println!();
            }
        }
        println!(
            "Compile cost per request inside the baseline (parse + plan + SELECT + render, µs): {}\n",
            compile_costs
                .iter()
                .map(|(k, us)| format!("{k} {us:.1}"))
                .collect::<Vec<_>>()
                .join(", ")
        );

        println!("## Sanity checks (example request on both targets)\n");
        for (_, scenario) in &selected {
            let path = (scenario.example)(&ids);
            let line = client_rt.block_on(sanity(
                &portico_client,
                &portico_base,
                &baseline_base,
                &path,
            ));
            println!("- `{path}`: {line}");
        }

        println!("\n## Load runs\n");
        let mut runs = Vec::new();
        for (index, scenario) in &selected {
            client_rt.block_on(prewarm(
                &admin,
                &adapter.resources[scenario.resource_type].mappings,
            ));
            let pairs = [
                (Target::Portico, &portico_client, &portico_base),
                (Target::Baseline, &baseline_client, &baseline_base),
            ];
            for (target, client, base) in pairs.iter().cycle().take(2 * config.rounds) {
                let (target, client, base) = (*target, *client, *base);
                let run = client_rt.block_on(measure(
                    client, base, target, scenario, *index, &ids, &config, &db_stat, ticks,
                ));
                println!(
                    "- {} / {}: {} ok, {} errors, {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, CPU s: server {:.1}, client {:.1}, DB {:.1}, other {:.1}",
                    scenario.key,
                    target.name(),
                    run.ok,
                    run.errors,
                    run.rps(),
                    run.p50_ms,
                    run.p99_ms,
                    run.server_cpu_s,
                    run.client_cpu_s,
                    run.db_cpu_s,
                    run.other_cpu_s
                );
                for sample in &run.samples {
                    println!("  - error: {sample}");
                }
                runs.push(run);
            }
        }
        results = runs;

        if config.paging {
            println!("\n## Paging through all patients (_count=1000)\n");
            let result = client_rt.block_on(page_all(&portico_client, &portico_base, &ids));
            for (page, rss) in &result.checkpoints {
                println!("- after page {page}: RSS {:.1} MiB", *rss as f64 / 1024.0);
            }
            paging = Some(result);
        }
        if config.export {
            println!("\n## Bulk export\n");
            let result = client_rt.block_on(export_both(
                &portico_client,
                &portico_base,
                &state_store,
                &baseline_state,
                &state_dir,
                &db_stat,
                ticks,
            ));
            exported = Some(result);
        }
        client_rt.block_on(admin.close());
    }

    // ------------------------------------------------------------------ report
    println!("\n## Results\n");
    println!(
        "Adapter `{}` ({}), database `{}`: {} patients, {} served.\n",
        config.profile.adapter,
        config.profile.title,
        config.database,
        config.patients,
        ids.len()
    );
    if let Some(seconds) = dataset.seeded_seconds {
        println!(
            "Seeding {} patients took {seconds:.1} s.\n",
            config.patients
        );
        if let Some(c) = &dataset.counts {
            // A generator leaves at 0 what its PMS does not record (DentneD has no vitals).
            let rows = [
                (c.appointments, "appointments"),
                (c.vitals, "vitals"),
                (c.lab_results, "lab results"),
                (c.coverages, "coverages"),
                (c.claims, "claims"),
            ];
            println!(
                "Seed rows: {}.\n",
                rows.iter()
                    .filter(|(n, _)| *n > 0)
                    .map(|(n, what)| format!("{n} {what}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    } else {
        println!("Seeding: reused the existing database.\n");
    }
    println!(
        "| scenario | target | req/s | p50 ms | p99 ms | errors | KiB/resp | server CPU µs/req | DB CPU µs/req | other CPU s | Portico / raw |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut round_ratios = Vec::new();
    for (_, scenario) in &selected {
        // Rounds pair up in the order they ran; the table shows the pair with the median ratio.
        let of = |target: Target| {
            results
                .iter()
                .filter(move |r| r.scenario == scenario.key && r.target == target)
        };
        let mut pairs: Vec<(&RunResult, &RunResult)> =
            of(Target::Portico).zip(of(Target::Baseline)).collect();
        pairs.sort_by(|a, b| pair_ratio(a).total_cmp(&pair_ratio(b)));
        if pairs.len() > 1 {
            round_ratios.push(format!(
                "{}: {}",
                scenario.key,
                pairs
                    .iter()
                    .map(|pair| format!("{:.2}", pair_ratio(pair)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let median = pairs.get(pairs.len() / 2);
        let portico = median.map(|pair| pair.0);
        let raw = median.map(|pair| pair.1);
        for run in [portico, raw].into_iter().flatten() {
            let per_req = |cpu: f64| {
                if run.ok > 0 {
                    cpu * 1e6 / run.ok as f64
                } else {
                    f64::NAN
                }
            };
            let ratio = match (run.target, portico, raw) {
                (Target::Portico, Some(p), Some(r)) if r.rps() > 0.0 => {
                    format!("**{:.2}**", p.rps() / r.rps())
                }
                _ => String::new(),
            };
            println!(
                "| {} | {} | {:.0} | {:.2} | {:.2} | {} | {:.1} | {:.0} | {:.0} | {:.1} | {} |",
                scenario.title,
                run.target.name(),
                run.rps(),
                run.p50_ms,
                run.p99_ms,
                run.errors,
                if run.ok > 0 {
                    run.bytes as f64 / run.ok as f64 / 1024.0
                } else {
                    0.0
                },
                per_req(run.server_cpu_s),
                per_req(run.db_cpu_s),
                run.other_cpu_s,
                ratio
            );
        }
    }
    if !round_ratios.is_empty() {
        println!(
            "\nPortico / raw per round, ascending (the table shows the median): {}",
            round_ratios.join("; ")
        );
    }
    let mut failed = results.iter().any(|r| r.errors > 0 || r.ok == 0);
    if let Some(p) = &paging {
        println!();
        println!("| paging (Portico, _count=1000) | value |");
        println!("|---|---:|");
        println!("| pages | {} |", p.pages);
        println!(
            "| resources seen | {} (expected {}) |",
            p.resources,
            ids.len()
        );
        println!(
            "| duplicates / missing ids | {} / {} |",
            p.duplicates, p.missing
        );
        println!(
            "| total time | {:.1} s ({:.0} resources/s, {:.1} MiB received) |",
            p.seconds,
            p.resources as f64 / p.seconds,
            p.bytes as f64 / 1_048_576.0
        );
        let tenth = (p.page_ms.len() / 10).max(1);
        let mean = |pages: &[f64]| pages.iter().sum::<f64>() / pages.len().max(1) as f64;
        if !p.page_ms.is_empty() {
            println!(
                "| mean ms per page: first {tenth} / last {tenth} pages | {:.1} / {:.1} |",
                mean(&p.page_ms[..tenth.min(p.page_ms.len())]),
                mean(&p.page_ms[p.page_ms.len().saturating_sub(tenth)..])
            );
        }
        println!(
            "| RSS before | {:.1} MiB |",
            p.rss_before_kib as f64 / 1024.0
        );
        println!(
            "| RSS max during | {:.1} MiB |",
            p.rss_max_kib as f64 / 1024.0
        );
        println!("| RSS after | {:.1} MiB |", p.rss_after_kib as f64 / 1024.0);
        if let (Some(first), Some(last)) = (p.checkpoints.first(), p.checkpoints.last()) {
            println!(
                "| RSS at page {} → page {} | {:.1} → {:.1} MiB |",
                first.0,
                last.0,
                first.1 as f64 / 1024.0,
                last.1 as f64 / 1024.0
            );
        }
        let complete =
            p.resources == ids.len() && p.duplicates == 0 && p.missing == 0 && p.failure.is_none();
        println!();
        if complete {
            println!("PASS: paging saw every served patient exactly once.");
        } else {
            failed = true;
            println!(
                "FAIL: paging saw {} resources ({} duplicates, {} missing) for {} served patients.",
                p.resources,
                p.duplicates,
                p.missing,
                ids.len()
            );
            if let Some(why) = &p.failure {
                println!("FAIL: {why}");
            }
        }
    }
    if let Some(e) = &exported {
        failed |= e.failure.is_some();
        print_export(e);
    }
    for run in results.iter().filter(|r| r.errors > 0) {
        println!("\nErrors in {} / {}:", run.scenario, run.target.name());
        for sample in &run.samples {
            println!("- {sample}");
        }
    }
    println!(
        "\nTotal bench time: {:.0} s.",
        total_started.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&state_dir);
    client_rt.shutdown_timeout(Duration::from_secs(2));
    server_rt.shutdown_timeout(Duration::from_secs(2));
    if failed {
        std::process::exit(1);
    }
}
