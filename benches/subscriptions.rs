//! Subscriptions benchmark (issue 9): change-to-delivery latency, delivery throughput per CPU
//! second, and the cost of a row-hash scan against a raw-SQL baseline, on MariaDB with the
//! `openemr` adapter. BENCHMARKS.md ("Subscriptions (issue 9)") has the method and the figures.
//!
//! Run: `cargo bench --bench subscriptions`. Variables (defaults in brackets):
//! `PORTICO_BENCH_PATIENTS` [25000: about 113,000 calendar rows, enough for the scan, and a run
//! under 10 minutes; 100000 takes about 4 minutes more, mostly the detection baseline],
//! `PORTICO_BENCH_MYSQL` [mysql://root@127.0.0.1:3306],
//! `PORTICO_BENCH_DATABASE` [portico_bench_subs], `PORTICO_BENCH_RESEED` [0],
//! `PORTICO_BENCH_STATE` [sqlite: a new file; or a `postgres://` URL of an empty database],
//! `PORTICO_BENCH_SUBSCRIPTIONS` [100], `PORTICO_BENCH_FANOUT` [one: each change matches one
//! subscription (an `_id` filter per subscription); all: every subscription, no filter],
//! `PORTICO_BENCH_RATE` [100 changes/s], `PORTICO_BENCH_SECONDS` [60 per latency run],
//! `PORTICO_BENCH_POLL_MS` [5000,1000], `PORTICO_BENCH_BACKLOG` [20000 events],
//! `PORTICO_BENCH_SCAN_TOTAL` [100000 rows], `PORTICO_BENCH_SCAN_ROWS` [the mapping's scan_rows],
//! `PORTICO_BENCH_MAX_MINUTES` [10]. Everything targets 127.0.0.1 and stops by itself.
//!
//! 1. Latency: Portico (`Application::build`, detection and delivery on) polls every
//!    `poll_interval_ms`; 100 rest-hook subscriptions to `patient-demographics-changed` point at a
//!    receiver in this process. A writer issues OpenEMR's demographics UPDATE (`patient_data`,
//!    whose `last_updated` is `ON UPDATE`) at a fixed rate, each on a distinct patient, and stamps
//!    each with the instant its commit returned; the receiver matches each notification's focus
//!    to that stamp.
//! 2. Throughput: a backlog of events numbered by a detection pass while no delivery runs, then
//!    one delivery worker drains it; events per CPU second of the process (and of Portico's
//!    threads alone).
//! 3. Scan: the passes of the calendar's scan-strategy mapping over 100,000 rows (map, hash,
//!    compare with the stored hashes, commit), against the same keyset-paged SELECT run with sqlx
//!    and nothing else.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use portico::adapter::model::Mapping;
use portico::app::{Application, load_adapter};
use portico::config::{
    LegacySettings, Secret, ServerSettings, Settings, StateSettings, SubscriptionsSettings,
    default_adapters_dir, default_lookup_refresh_ms,
};
use portico::demo::{OPENEMR_SCHEMA, seed_openemr};
use portico::dialect::ast::{Cond, Value};
use portico::dialect::{DialectKind, render};
use portico::repository::Repository;
use portico::search::compile::{BranchPlan, RowAccess, page_select};
use portico::search::cursor::CursorKey;
use portico::state::StateStore;
use portico::state::clients::{ClientKind, NewClient};
use portico::subscriptions::deliver::{Clock, DeliveryWorker};
use portico::subscriptions::detect::{DetectionSettings, Detector};
use portico::subscriptions::rest_hook::RestHookSender;
use serde_json::Value as Json;
use sqlx::Row;
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use tokio_util::sync::CancellationToken;

mod support;
use support::{
    admin_pool, clock_ticks, env_or, find_db_process, fnv, fresh_fixture, process_ticks,
    seed_reusable, stat_ticks, thread_ticks, watchdog, write_seed_marker,
};

#[path = "../tests/common/notifications.rs"]
mod notifications;
use notifications::{event_numbers, status_part, topic_subscription};

/// Portico's runtime; everything the bench itself runs (receiver, writer) is on `BENCH_THREAD`.
const SERVER_THREAD: &str = "portico-srv";
const BENCH_THREAD: &str = "bench-client";
const CLIENT_ID: &str = "subs-bench";
const TOPIC: &str = "patient-demographics-changed";

struct Config {
    patients: usize,
    server_url: String,
    database: String,
    reseed: bool,
    state: Option<String>,
    subscriptions: usize,
    fan_out_all: bool,
    rate: f64,
    seconds: f64,
    polls_ms: Vec<u64>,
    backlog: usize,
    scan_total: usize,
    scan_rows: Option<usize>,
    max_minutes: u64,
}

impl Config {
    fn from_env() -> Config {
        Config {
            patients: env_or("PORTICO_BENCH_PATIENTS", 25_000usize),
            server_url: env_or(
                "PORTICO_BENCH_MYSQL",
                "mysql://root@127.0.0.1:3306".to_owned(),
            ),
            database: env_or("PORTICO_BENCH_DATABASE", "portico_bench_subs".to_owned()),
            reseed: env_or("PORTICO_BENCH_RESEED", 0u8) == 1,
            state: std::env::var("PORTICO_BENCH_STATE")
                .ok()
                .filter(|v| v.starts_with("postgres")),
            subscriptions: env_or("PORTICO_BENCH_SUBSCRIPTIONS", 100usize).max(1),
            fan_out_all: match env_or("PORTICO_BENCH_FANOUT", "one".to_owned()).as_str() {
                "one" => false,
                "all" => true,
                other => panic!("PORTICO_BENCH_FANOUT={other:?}: one or all"),
            },
            rate: env_or("PORTICO_BENCH_RATE", 100.0f64).max(1.0),
            seconds: env_or("PORTICO_BENCH_SECONDS", 60.0f64).max(1.0),
            polls_ms: env_or("PORTICO_BENCH_POLL_MS", "5000,1000".to_owned())
                .split(',')
                .map(|p| {
                    p.trim()
                        .parse()
                        .expect("PORTICO_BENCH_POLL_MS: milliseconds")
                })
                .collect(),
            backlog: env_or("PORTICO_BENCH_BACKLOG", 20_000usize).max(1),
            scan_total: env_or("PORTICO_BENCH_SCAN_TOTAL", 100_000usize).max(1),
            scan_rows: std::env::var("PORTICO_BENCH_SCAN_ROWS")
                .ok()
                .map(|v| v.trim().parse().expect("PORTICO_BENCH_SCAN_ROWS: rows")),
            max_minutes: env_or("PORTICO_BENCH_MAX_MINUTES", 10u64),
        }
    }

    fn database_url(&self) -> String {
        format!(
            "{}/{}",
            self.server_url.trim_end_matches('/'),
            self.database
        )
    }

    fn changes_per_run(&self) -> usize {
        (self.rate * self.seconds).round() as usize
    }
}

// ---------------------------------------------------------------------------------------------
// Database, settings, CPU

/// Seeds `config.database` with `seed_openemr`, or reuses it when it already holds this seed.
/// The bench edits patient rows, so it keeps its own database (not the load bench's).
async fn prepare_database(config: &Config) -> anyhow::Result<()> {
    let schema_hash = fnv(OPENEMR_SCHEMA);
    if !config.reseed
        && seed_reusable(
            &config.server_url,
            &config.database,
            "patient_data",
            config.patients,
            &schema_hash,
        )
        .await
    {
        println!(
            "- reusing database `{}` ({} patients)",
            config.database, config.patients
        );
        return Ok(());
    }
    let started = Instant::now();
    let writer = fresh_fixture(&config.server_url, &config.database).await?;
    let counts = seed_openemr(&writer, config.patients)
        .await
        .map_err(|e| anyhow::anyhow!("seeding failed: {}", e.message))?;
    writer.close().await;
    let pool = admin_pool(&config.server_url, Some(&config.database)).await?;
    sqlx::raw_sql("ANALYZE TABLE patient_data, openemr_postcalendar_events")
        .execute(&pool)
        .await?;
    write_seed_marker(&pool, config.patients, &schema_hash).await?;
    pool.close().await;
    println!(
        "- seeded `{}` in {:.1} s: {} patients, {} calendar rows",
        config.database,
        started.elapsed().as_secs_f64(),
        counts.patients,
        counts.appointments
    );
    Ok(())
}

fn settings(
    config: &Config,
    state_dir: &std::path::Path,
    state_url: &str,
    poll_ms: u64,
    enabled: bool,
) -> Settings {
    Settings {
        server: ServerSettings {
            host: "127.0.0.1".into(),
            port: 0,
            cursor_secret: Some(Secret::new("portico-subscriptions-bench-cursor-key")),
            state_dir: state_dir.to_path_buf(),
            ..ServerSettings::default()
        },
        legacy: LegacySettings {
            adapter: "openemr".into(),
            adapters_dir: default_adapters_dir(),
            url: Secret::new(config.database_url()),
            max_connections: 10,
            statement_timeout_ms: 30_000,
            acquire_timeout_ms: 30_000,
            // The PMS's clock: MariaDB here stamps `ON UPDATE` columns in its own zone (UTC on
            // the bench machines). Left to the adapter's America/New_York, every edit would look
            // hours ahead and each pass would re-read them all (see Detector::capped_watermark).
            timezone: Some("UTC".into()),
            lookup_refresh_ms: default_lookup_refresh_ms(),
            // Start-up plan advice explains every statement: only its own test wants it.
            plan_advice_min_rows: 0,
        },
        state: StateSettings {
            url: Some(Secret::new(state_url)),
            ..Default::default()
        },
        auth: Default::default(),
        subscriptions: SubscriptionsSettings {
            enabled,
            poll_interval_ms: poll_ms,
            allow_private_endpoints: true,
            ..Default::default()
        },
        alarm: Default::default(),
        // No scheduled audit: its full scans would run beside what is measured.
        quality: portico::config::QualitySettings {
            schedule_minutes: 0,
        },
        reconcile: Default::default(),
        export: Default::default(),
    }
}

/// CPU seconds used so far: the whole process, the bench's own threads, and MariaDB.
#[derive(Clone, Copy)]
struct Cpu {
    process: f64,
    bench: f64,
    db: f64,
}

impl Cpu {
    fn now(db: &Option<std::path::PathBuf>, tick: f64) -> Cpu {
        Cpu {
            process: process_ticks() as f64 / tick,
            bench: thread_ticks(BENCH_THREAD) as f64 / tick,
            db: db
                .as_deref()
                .and_then(stat_ticks)
                .map_or(0.0, |(_, t)| t as f64 / tick),
        }
    }

    /// (process, Portico = process minus the bench's threads, MariaDB) since `before`.
    fn since(&self, before: &Cpu) -> (f64, f64, f64) {
        let process = self.process - before.process;
        (
            process,
            process - (self.bench - before.bench),
            self.db - before.db,
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The receiver

/// What the receiver records; shared with the writer, which stamps each change's commit.
#[derive(Default)]
struct Tracker {
    /// pid -> the instant its UPDATE returned (committed), and that time by the wall clock (to
    /// compare with the event's own timestamp).
    committed: Mutex<HashMap<i64, (Instant, SystemTime)>>,
    /// Each sample's latency split at the event's timestamp (when detection matched it): commit
    /// to event, event to arrival (ms).
    split_ms: Mutex<Vec<(f64, f64)>>,
    /// (subscription index, pid) already counted: a resend is not a second sample.
    seen: Mutex<HashSet<(usize, i64)>>,
    latencies_ms: Mutex<Vec<f64>>,
    handshakes: AtomicU64,
    notifications: AtomicU64,
    events: AtomicU64,
}

async fn receive(
    State(tracker): State<Arc<Tracker>>,
    Path(subscription): Path<usize>,
    body: Bytes,
) -> StatusCode {
    let arrived = Instant::now();
    let Ok(bundle) = serde_json::from_slice::<Json>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    match status_part(&bundle, "type")["valueCode"].as_str() {
        Some("handshake") => {
            tracker.handshakes.fetch_add(1, Ordering::Relaxed);
        }
        Some("event-notification") => {
            tracker.notifications.fetch_add(1, Ordering::Relaxed);
            tracker
                .events
                .fetch_add(event_numbers(&bundle).len() as u64, Ordering::Relaxed);
            let arrived_wall = SystemTime::now();
            let committed = tracker.committed.lock().unwrap();
            let mut seen = tracker.seen.lock().unwrap();
            let mut latencies = tracker.latencies_ms.lock().unwrap();
            let mut split = tracker.split_ms.lock().unwrap();
            for (pid, event_at) in patient_events(&bundle) {
                if let Some((at, at_wall)) = committed.get(&pid)
                    && seen.insert((subscription, pid))
                {
                    latencies.push(arrived.duration_since(*at).as_secs_f64() * 1000.0);
                    let ms = |from: SystemTime, to: SystemTime| match to.duration_since(from) {
                        Ok(d) => d.as_secs_f64() * 1000.0,
                        Err(e) => -e.duration().as_secs_f64() * 1000.0,
                    };
                    if let Some(event_at) = event_at {
                        split.push((ms(*at_wall, event_at), ms(event_at, arrived_wall)));
                    }
                }
            }
        }
        _ => {}
    }
    StatusCode::OK
}

/// Each event's focus pid (Patient focuses only) and its timestamp (when detection matched it).
fn patient_events(bundle: &Json) -> Vec<(i64, Option<SystemTime>)> {
    let events = bundle["entry"][0]["resource"]["parameter"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"] == "notification-event");
    events
        .filter_map(|event| {
            let parts = event["part"].as_array()?;
            let part = |name: &str| parts.iter().find(|p| p["name"] == name);
            let reference = part("focus")?["valueReference"]["reference"].as_str()?;
            let pid = reference.rsplit_once("Patient/")?.1.parse().ok()?;
            let at = part("timestamp")
                .and_then(|p| p["valueInstant"].as_str())
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(SystemTime::from);
            Some((pid, at))
        })
        .collect()
}

/// Starts the receiver on this runtime; its base URL (`/hook/{subscription index}`).
async fn start_receiver(tracker: Arc<Tracker>) -> String {
    let app = Router::new()
        .route("/hook/{subscription}", post(receive))
        .with_state(tracker);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("receiver port");
    let port = listener.local_addr().expect("receiver address").port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://127.0.0.1:{port}/hook")
}

// ---------------------------------------------------------------------------------------------
// Portico, subscriptions, PMS edits

struct Running {
    base: String,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<std::io::Result<()>>,
    repository: Repository,
    token: String,
}

fn start_portico(server: &tokio::runtime::Runtime, settings: &Settings) -> anyhow::Result<Running> {
    let app = server.block_on(Application::build(settings))?;
    let base = format!("http://127.0.0.1:{}/fhir", app.port());
    let grant = portico::auth::tokens::Grant {
        client_id: CLIENT_ID.into(),
        subject: CLIENT_ID.into(),
        scope: "system/Subscription.cruds system/*.rs".into(),
        ..Default::default()
    };
    let token = server
        .block_on(app.state.auth.tokens.issue_for(&grant, &base, 24 * 3600))?
        .0;
    let repository = app.state.repository.clone();
    let shutdown = app.shutdown_token();
    let handle = server.spawn(app.run_until_cancelled());
    Ok(Running {
        base,
        shutdown,
        handle,
        repository,
        token,
    })
}

fn stop_portico(server: &tokio::runtime::Runtime, running: Running) {
    running.shutdown.cancel();
    let _ = server.block_on(running.handle);
}

/// Creates one rest-hook subscription per filter (`None`: no filter), endpoint
/// `{receiver}/{index}`, id-only; their ids.
async fn subscribe(
    running: &Running,
    receiver: &str,
    filters: &[Option<String>],
) -> anyhow::Result<Vec<String>> {
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for (index, filter) in filters.iter().enumerate() {
        let filter: Vec<&str> = filter.iter().map(String::as_str).collect();
        let request = topic_subscription(TOPIC, &filter, &format!("{receiver}/{index}"), "id-only");
        let reply = http
            .post(format!("{}/Subscription", running.base))
            .bearer_auth(&running.token)
            .header("Content-Type", "application/fhir+json")
            .json(&request)
            .send()
            .await?;
        let status = reply.status();
        let body: Json = reply.json().await?;
        if status != StatusCode::CREATED {
            anyhow::bail!("creating a subscription answered {status}: {body}");
        }
        ids.push(body["id"].as_str().unwrap_or_default().to_owned());
    }
    Ok(ids)
}

/// Polls `check` every 50 ms until it holds or `limit` passes; whether it held.
async fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

/// OpenEMR's demographics edit on each of `pids`, `rate` per second (each UPDATE its own task, so
/// a slow commit does not delay the next), stamped with the instant its commit returned. The
/// achieved rate.
async fn write_changes(
    pool: &MySqlPool,
    tracker: &Arc<Tracker>,
    pids: &[i64],
    rate: f64,
    tag: &str,
) -> f64 {
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut edits = tokio::task::JoinSet::new();
    for (index, &pid) in pids.iter().enumerate() {
        ticker.tick().await;
        let (pool, tracker, phone) = (pool.clone(), tracker.clone(), format!("555-{tag}-{index}"));
        edits.spawn(async move {
            // Stamped before too, in case the notification outruns the stamp after the commit.
            tracker
                .committed
                .lock()
                .unwrap()
                .insert(pid, (Instant::now(), SystemTime::now()));
            let done = sqlx::query("UPDATE patient_data SET phone_home = ? WHERE pid = ?")
                .bind(phone)
                .bind(pid)
                .execute(&pool)
                .await;
            tracker
                .committed
                .lock()
                .unwrap()
                .insert(pid, (Instant::now(), SystemTime::now()));
            done.expect("the demographics UPDATE");
        });
    }
    while edits.join_next().await.is_some() {}
    pids.len() as f64 / started.elapsed().as_secs_f64()
}

/// The detection passes since `before` (a reading of the pass-duration histogram), per mapping
/// that passed: `name n×mean ms`.
fn pass_means(before: &[(Vec<String>, u64, f64)]) -> String {
    let now = portico::metrics::metrics().detection_pass_duration.totals();
    now.iter()
        .filter_map(|(labels, count, sum)| {
            let (count_before, sum_before) = before
                .iter()
                .find(|(l, _, _)| l == labels)
                .map_or((0, 0.0), |(_, c, s)| (*c, *s));
            let passes = count - count_before;
            (passes > 0).then(|| {
                format!(
                    "{} {passes}×{:.0}",
                    labels.join(","),
                    (sum - sum_before) * 1000.0 / passes as f64
                )
            })
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// ---------------------------------------------------------------------------------------------

fn main() {
    // PORTICO_BENCH_LOG (an EnvFilter, e.g. `portico::subscriptions::detect=debug`): Portico's
    // logs on stderr, such as each detection pass's phase timings.
    if let Ok(filter) = std::env::var("PORTICO_BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let config = Config::from_env();
    watchdog("subscriptions", config.max_minutes);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .thread_name(SERVER_THREAD)
        .enable_all()
        .build()
        .expect("server runtime");
    let bench = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .thread_name(BENCH_THREAD)
        .enable_all()
        .build()
        .expect("bench runtime");
    if let Err(error) = run(&config, &server, &bench) {
        eprintln!("subscriptions bench: {error:#}");
        std::process::exit(2);
    }
}

fn run(
    config: &Config,
    server: &tokio::runtime::Runtime,
    bench: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    let polls = config.polls_ms.len();
    let per_run = config.changes_per_run();
    let subscriptions = config.subscriptions;
    // The backlog's subscriptions have no filter: each change is one event per subscription.
    let backlog_changes = config.backlog.div_ceil(subscriptions);
    if per_run * polls + backlog_changes > config.patients {
        anyhow::bail!(
            "{} changes on distinct patients need more than {} patients",
            per_run * polls + backlog_changes,
            config.patients
        );
    }
    println!("# Subscriptions benchmark (issue 9)\n");
    println!(
        "- {} patients, {subscriptions} rest-hook subscriptions to `{TOPIC}` (id-only), each change reaching {}; {} changes/s for {} s per poll interval {:?} ms; backlog {} events; scan {} rows; {cores} cores",
        config.patients,
        if config.fan_out_all {
            "every subscription"
        } else {
            "one subscription"
        },
        config.rate,
        config.seconds,
        config.polls_ms,
        config.backlog,
        config.scan_total,
        cores = std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    bench.block_on(prepare_database(config))?;

    let dir = std::env::temp_dir().join(format!("portico-subs-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let state_url = match &config.state {
        Some(url) => url.clone(),
        None => StateStore::default_url(&dir)?,
    };
    let store = server.block_on(StateStore::open(&state_url))?;
    println!("- state store: {:?}", store.backend());
    if !server.block_on(store.subscriptions(None))?.is_empty() {
        anyhow::bail!("the state store already holds subscriptions: give the bench an empty one");
    }
    server.block_on(store.add_client(NewClient {
        name: "subscriptions bench".into(),
        client_id: Some(CLIENT_ID.into()),
        kind: Some(ClientKind::Public),
        ..NewClient::default()
    }))?;
    let pms = bench.block_on(
        MySqlPoolOptions::new()
            .max_connections(8)
            .connect(&config.database_url()),
    )?;
    let tracker = Arc::new(Tracker::default());
    let receiver = bench.block_on(start_receiver(tracker.clone()));
    let db_stat = find_db_process(&config.server_url);
    let tick = clock_ticks();

    // Which patients change: distinct ones, run after run, then the backlog's.
    let pids: Vec<i64> = (1..=(per_run * polls + backlog_changes) as i64).collect();
    let filters: Vec<Option<String>> = (0..subscriptions)
        .map(|index| {
            (!config.fan_out_all).then(|| {
                let ids: Vec<String> = pids[..per_run * polls]
                    .iter()
                    .skip(index)
                    .step_by(subscriptions)
                    .map(i64::to_string)
                    .collect();
                format!("_id={}", ids.join(","))
            })
        })
        .collect();

    // 1. Latency.
    let mut latency_rows = Vec::new();
    let mut split_rows = Vec::new();
    let mut latency_ids = Vec::new();
    for (run, &poll_ms) in config.polls_ms.iter().enumerate() {
        let running = start_portico(server, &settings(config, &dir, &state_url, poll_ms, true))?;
        if run == 0 {
            let started = Instant::now();
            let adapter = running.repository.adapter.clone();
            let detected = adapter
                .resources
                .values()
                .flat_map(|def| def.mappings.iter())
                .filter(|m| m.changes.is_some())
                .count();
            let baselined = server.block_on(async {
                let deadline = Instant::now() + Duration::from_secs(300);
                while Instant::now() < deadline {
                    let cursors = store.change_cursors().await.unwrap_or_default();
                    if cursors.len() == detected && cursors.iter().all(|c| c.baselined) {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                false
            });
            if !baselined {
                anyhow::bail!("the detection baseline did not finish in 5 minutes");
            }
            println!(
                "- baseline of the {detected} detected mappings (every served resource remembered): {:.1} s",
                started.elapsed().as_secs_f64()
            );
            latency_ids = bench.block_on(subscribe(&running, &receiver, &filters))?;
            let all = bench.block_on(wait_until(Duration::from_secs(60), || {
                tracker.handshakes.load(Ordering::Relaxed) >= subscriptions as u64
            }));
            if !all {
                anyhow::bail!("not every subscription got its handshake");
            }
        }
        // A pass or two at this interval before the changes start.
        std::thread::sleep(Duration::from_millis(2 * poll_ms));
        tracker.latencies_ms.lock().unwrap().clear();
        tracker.split_ms.lock().unwrap().clear();
        let passes_before = portico::metrics::metrics().detection_pass_duration.totals();
        let expected = per_run * if config.fan_out_all { subscriptions } else { 1 };
        let run_pids = &pids[run * per_run..(run + 1) * per_run];
        let before = Cpu::now(&db_stat, tick);
        let started = Instant::now();
        let achieved = bench.block_on(write_changes(
            &pms,
            &tracker,
            run_pids,
            config.rate,
            &format!("{}r{run}", std::process::id()),
        ));
        let drained = bench.block_on(wait_until(
            Duration::from_millis(3 * poll_ms + 30_000),
            || tracker.latencies_ms.lock().unwrap().len() >= expected,
        ));
        let wall = started.elapsed().as_secs_f64();
        let (process, portico, db) = Cpu::now(&db_stat, tick).since(&before);
        let mut latencies = std::mem::take(&mut *tracker.latencies_ms.lock().unwrap());
        latencies.sort_by(f64::total_cmp);
        let p99 = percentile(&latencies, 99.0);
        let split = std::mem::take(&mut *tracker.split_ms.lock().unwrap());
        let (mut detected, mut delivered): (Vec<f64>, Vec<f64>) = split.into_iter().unzip();
        detected.sort_by(f64::total_cmp);
        delivered.sort_by(f64::total_cmp);
        split_rows.push(format!(
            "| {poll_ms} | {:.0} / {:.0} | {:.0} / {:.0} | {} |",
            percentile(&detected, 50.0),
            percentile(&detected, 99.0),
            percentile(&delivered, 50.0),
            percentile(&delivered, 99.0),
            pass_means(&passes_before),
        ));
        latency_rows.push(format!(
            "| {poll_ms} | {achieved:.1} | {} / {expected}{} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {:.1} / {:.1} / {:.1} |",
            latencies.len(),
            if drained { "" } else { " (timed out)" },
            percentile(&latencies, 50.0),
            p99,
            percentile(&latencies, 100.0),
            poll_ms as f64 + 1000.0,
            if p99 < poll_ms as f64 + 1000.0 {
                "**met**"
            } else {
                "**missed**"
            },
            process / wall,
            portico / wall,
            db / wall,
        ));
        stop_portico(server, running);
    }
    println!("\n## 1. Change-to-delivery latency\n");
    println!(
        "| poll ms | changes/s achieved | deliveries matched | p50 ms | p99 ms | max ms | target p99 < ms | target | CPU cores used: process / Portico / MariaDB |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---|---:|");
    for row in &latency_rows {
        println!("{row}");
    }
    println!(
        "\nWhere it goes: commit to the event's timestamp (detection matched it), then to its arrival \
         (delivery); and the detection passes during the run (count x mean ms, per mapping).\n"
    );
    println!("| poll ms | commit → event p50 / p99 ms | event → arrival p50 / p99 ms | passes |");
    println!("|---:|---:|---:|---|");
    for row in &split_rows {
        println!("{row}");
    }

    // 2. Delivery throughput: the latency subscriptions off, new unfiltered ones, a backlog
    // numbered while no delivery runs, then one worker drains it.
    for id in &latency_ids {
        server.block_on(store.set_subscription_status(id, "off", Some("latency runs done")))?;
    }
    let running = start_portico(server, &settings(config, &dir, &state_url, 5000, false))?;
    let sender_policy = portico::subscriptions::endpoint_guard::SubscriptionSettings {
        allow_private_endpoints: true,
    };
    let worker = |replica: &str| DeliveryWorker {
        repository: running.repository.clone(),
        store: store.clone(),
        sender: Arc::new(RestHookSender::new(sender_policy.clone())),
        sender_policy: sender_policy.clone(),
        replica: replica.to_owned(),
        wake: Arc::new(tokio::sync::Notify::new()),
        mllp: Default::default(),
        clock: Clock::system(),
    };
    let handshakes_before = tracker.handshakes.load(Ordering::Relaxed);
    bench.block_on(subscribe(&running, &receiver, &vec![None; subscriptions]))?;
    let stop = CancellationToken::new();
    let handshaking = server.spawn(worker("subs-bench-handshakes").run(stop.clone()));
    bench.block_on(wait_until(Duration::from_secs(60), || {
        tracker.handshakes.load(Ordering::Relaxed) >= handshakes_before + subscriptions as u64
    }));
    stop.cancel();
    let _ = server.block_on(handshaking);

    let detector = Detector {
        repository: running.repository.clone(),
        store: store.clone(),
        settings: DetectionSettings::default(),
        replica: "subs-bench-detector".into(),
        delivery: Arc::new(tokio::sync::Notify::new()),
        sockets: Default::default(),
    };
    let (patient_index, patient_mapping) = detector
        .detected_mappings()
        .into_iter()
        .find(|(_, m)| m.name == "Patient")
        .ok_or_else(|| anyhow::anyhow!("the openemr adapter detects no Patient mapping"))?;
    // Catch up with the latency runs' edits (already numbered: no events).
    server.block_on(detector.pass(patient_index, &patient_mapping))?;
    let backlog_pids = &pids[per_run * polls..];
    bench.block_on(write_changes(
        &pms,
        &tracker,
        backlog_pids,
        10_000.0,
        &format!("{}b", std::process::id()),
    ));
    std::thread::sleep(Duration::from_millis(1100));
    let before = Cpu::now(&db_stat, tick);
    let started = Instant::now();
    let mut numbered = 0;
    while numbered < config.backlog && started.elapsed() < Duration::from_secs(120) {
        numbered += server
            .block_on(detector.pass(patient_index, &patient_mapping))?
            .events;
    }
    let detect_wall = started.elapsed().as_secs_f64();
    let (_, detect_portico, _) = Cpu::now(&db_stat, tick).since(&before);

    let events_before = tracker.events.load(Ordering::Relaxed);
    let notifications_before = tracker.notifications.load(Ordering::Relaxed);
    let before = Cpu::now(&db_stat, tick);
    let started = Instant::now();
    let stop = CancellationToken::new();
    let draining = server.spawn(worker("subs-bench-delivery").run(stop.clone()));
    let drained = bench.block_on(wait_until(Duration::from_secs(300), || {
        tracker.events.load(Ordering::Relaxed) - events_before >= numbered as u64
    }));
    let wall = started.elapsed().as_secs_f64();
    let (process, portico, db) = Cpu::now(&db_stat, tick).since(&before);
    stop.cancel();
    let _ = server.block_on(draining);
    let delivered = tracker.events.load(Ordering::Relaxed) - events_before;
    let notifications = tracker.notifications.load(Ordering::Relaxed) - notifications_before;
    println!("\n## 2. Delivery throughput (backlog drained by one worker)\n");
    println!("| measure | value |\n|---|---:|");
    println!(
        "| events numbered (one detection pass over {} changed patients) | {numbered} in {detect_wall:.2} s, {detect_portico:.2} Portico CPU-s |",
        backlog_pids.len()
    );
    println!(
        "| events delivered | {delivered} of {numbered}{} in {notifications} notifications |",
        if drained { "" } else { " (timed out)" }
    );
    println!(
        "| wall time | {wall:.2} s ({:.0} events/s) |",
        delivered as f64 / wall
    );
    println!(
        "| CPU-s: process (Portico + receiver) / Portico alone / MariaDB | {process:.2} / {portico:.2} / {db:.2} |"
    );
    println!(
        "| **events per CPU-second of the process** | **{:.0}** |",
        delivered as f64 / process
    );
    println!(
        "| events per CPU-second of Portico's threads | {:.0} |",
        delivered as f64 / portico
    );

    // 3. The scan: the calendar mapping (strategy scan) over `scan_total` rows, then the same
    // keyset-paged SELECT with sqlx alone.
    let mut adapter = load_adapter(&settings(config, &dir, &state_url, 5000, false))?;
    let calendar = adapter
        .resources
        .get_mut("Appointment")
        .and_then(|def| def.mappings.first_mut())
        .ok_or_else(|| anyhow::anyhow!("the openemr adapter maps no Appointment"))?;
    if let Some(rows) = config.scan_rows
        && let Some(changes) = Arc::get_mut(calendar).and_then(|m| m.changes.as_mut())
    {
        changes.scan_rows = rows;
    }
    let calendar: Arc<Mapping> = calendar.clone();
    let scan_rows = calendar.changes.as_ref().map_or(5000, |c| c.scan_rows);
    // Every pass from the start of a cycle, as a full cycle runs.
    let mut settle = 0;
    loop {
        let cursors = server.block_on(store.change_cursors())?;
        if cursors
            .iter()
            .any(|c| c.mapping == calendar.name && c.baselined && c.scan_after.is_none())
        {
            break;
        }
        server.block_on(detector.pass(0, &calendar))?;
        settle += 1;
        if settle > 1000 {
            anyhow::bail!("the calendar scan never reached the end of its cycle");
        }
    }
    let passes = config.scan_total.div_ceil(scan_rows);
    let before = Cpu::now(&db_stat, tick);
    let started = Instant::now();
    let mut rows_read = 0;
    for _ in 0..passes {
        rows_read += server.block_on(detector.pass(0, &calendar))?.rows_read;
    }
    let portico_wall = started.elapsed().as_secs_f64();
    let (portico_cpu, _, portico_db) = Cpu::now(&db_stat, tick).since(&before);

    let raw_pool = server.block_on(
        MySqlPoolOptions::new()
            .max_connections(1)
            .connect(&config.database_url()),
    )?;
    let before = Cpu::now(&db_stat, tick);
    let started = Instant::now();
    let raw_rows = server.block_on(raw_scan(
        &running.repository,
        &raw_pool,
        &calendar,
        passes,
        scan_rows,
    ))?;
    let raw_wall = started.elapsed().as_secs_f64();
    let (raw_cpu, _, raw_db) = Cpu::now(&db_stat, tick).since(&before);
    println!(
        "\n## 3. Row-hash scan of `{}` (strategy scan, {} rows per pass)\n",
        calendar.table, scan_rows
    );
    println!(
        "| target | passes | rows | wall s | rows/s | ms per pass | CPU-s in process | MariaDB CPU-s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| Portico detection pass (map, hash, compare, commit) | {passes} | {rows_read} | {portico_wall:.2} | {:.0} | {:.0} | {portico_cpu:.2} | {portico_db:.2} |",
        rows_read as f64 / portico_wall,
        portico_wall * 1000.0 / passes as f64
    );
    println!(
        "| raw sqlx: the same keyset-paged SELECT | {passes} | {raw_rows} | {raw_wall:.2} | {:.0} | {:.0} | {raw_cpu:.2} | {raw_db:.2} |",
        raw_rows as f64 / raw_wall,
        raw_wall * 1000.0 / passes as f64
    );
    println!(
        "\nPortico / raw time: **{:.1}×**",
        portico_wall / raw_wall.max(1e-9)
    );

    stop_portico(server, running);
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

/// What `Access::everything()` compiles to (the detector reads every row).
const EVERYTHING: RowAccess = RowAccess {
    cond: Cond::True,
    variants: None,
};

/// The detector's keyset-paged SELECT of `mapping` (`Repository::scan`: `page_select` with the
/// lookups resolved from Portico's cache), `passes` pages of `page` rows from the start, run with
/// sqlx and nothing else: no mapping, no hashing, no state store. The rows read.
async fn raw_scan(
    repository: &Repository,
    pool: &MySqlPool,
    mapping: &Arc<Mapping>,
    passes: usize,
    page: usize,
) -> anyhow::Result<usize> {
    let branch = BranchPlan {
        index: 0,
        mapping: mapping.clone(),
        cond: Cond::True,
        variants: None,
        sort: Vec::new(),
        whole_pass: true,
    };
    let mut after: Option<Vec<Value>> = None;
    let mut total = 0;
    for _ in 0..passes {
        let cursor = after.take().map(|key| CursorKey {
            sort: Vec::new(),
            branch: 0,
            key,
            variant: None,
        });
        let select = page_select(&branch, &EVERYTHING, cursor.as_ref(), page as u64);
        let select = repository
            .lookups
            .prepare(&repository.db, &select)
            .await
            .select
            .unwrap_or(select);
        let rendered = render(DialectKind::Mysql, &select);
        let mut query = sqlx::query(&rendered.sql);
        for param in &rendered.params {
            query = portico::db::bind_mysql(query, param);
        }
        let rows = query.fetch_all(pool).await?;
        total += rows.len();
        let Some(last) = rows.last() else { break };
        after = Some(
            mapping
                .id
                .columns
                .iter()
                .map(|&index| Value::Int(last.try_get::<i64, _>(index).unwrap_or_default()))
                .collect(),
        );
        if rows.len() < page {
            break;
        }
    }
    Ok(total)
}
