//! Authorization benchmark: what a bearer token costs the resource server, and how many
//! client_credentials tokens the token endpoint issues per second. BENCHMARKS.md ("Authorization")
//! has the method and the figures.
//!
//! Run: `cargo bench --bench auth`. `PORTICO_BENCH_STATE` = `sqlite` (default) or a
//! `postgres://` URL names the state store; `PORTICO_BENCH_SECONDS` [5] is the token endpoint's
//! run time, `PORTICO_BENCH_CONCURRENCY` [8] its clients. Everything targets 127.0.0.1 and stops
//! by itself.
//!
//! 1. Signature checks: `TokenService::validate` on one token again and again (the remembered
//!    path a client's repeated requests take), and on 2,000 distinct tokens once each (the full
//!    RS256 check: header, key, signature, claims), both on one thread.
//! 2. The token endpoint: Portico serving an empty-enough SQLite OpenEMR database, a symmetric
//!    client, N clients posting client_credentials requests back to back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use portico::app::Application;
use portico::auth::endpoints::{ISSUER, absolute};
use portico::auth::tokens::{Grant, TokenService};
use portico::config::{
    LegacySettings, Secret, ServerSettings, Settings, default_adapters_dir,
    default_lookup_refresh_ms,
};
use portico::db::fixture::FixtureWriter;
use portico::state::StateStore;
use portico::state::clients::{ClientKind, NewClient};

const BASE: &str = "http://127.0.0.1:8080/fhir";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn grant() -> Grant {
    Grant {
        client_id: "bench".into(),
        subject: "bench".into(),
        scope: "system/*.rs".into(),
        ..Grant::default()
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = std::env::temp_dir().join(format!("portico-auth-bench-{}", std::process::id()));
    // The legacy fixture lives here whichever store holds the state.
    std::fs::create_dir_all(&dir).expect("bench directory");
    let state_url = match std::env::var("PORTICO_BENCH_STATE")
        .ok()
        .filter(|v| v.starts_with("postgres"))
    {
        Some(url) => url,
        None => StateStore::default_url(&dir).expect("state dir"),
    };
    let seconds: u64 = env_or("PORTICO_BENCH_SECONDS", 5);
    let concurrency: usize = env_or("PORTICO_BENCH_CONCURRENCY", 8);
    runtime.block_on(async {
        let store = StateStore::open(&state_url).await.expect("state store");
        println!(
            "# Authorization benchmark\n\nstate store: {:?}\n",
            store.backend()
        );
        let issuer = absolute(BASE, ISSUER);

        // 1. Validation, one thread.
        let tokens = TokenService::new(store.clone());
        let (token, _) = tokens
            .issue(&grant(), &issuer, BASE, 3600)
            .await
            .expect("a token");
        tokens.validate(&token, &issuer, BASE).await.expect("valid");
        let rounds = 200_000;
        let started = Instant::now();
        for _ in 0..rounds {
            tokens.validate(&token, &issuer, BASE).await.expect("valid");
        }
        let remembered = started.elapsed().as_secs_f64() * 1e6 / rounds as f64;
        let distinct = 2_000;
        let mut fresh = Vec::with_capacity(distinct);
        for _ in 0..distinct {
            fresh.push(
                tokens
                    .issue(&grant(), &issuer, BASE, 3600)
                    .await
                    .expect("a token")
                    .0,
            );
        }
        let cold = TokenService::new(store.clone());
        cold.validate(&fresh[0], &issuer, BASE)
            .await
            .expect("keys and revocations read once");
        let started = Instant::now();
        for token in &fresh[1..] {
            cold.validate(token, &issuer, BASE).await.expect("valid");
        }
        let full = started.elapsed().as_secs_f64() * 1e6 / (distinct - 1) as f64;
        println!("| validation | µs per token |\n|---|---:|");
        println!(
            "| the same token again (remembered: hash, expiry, revocation set) | {remembered:.2} |"
        );
        println!("| a token seen for the first time (RS256 signature and claims) | {full:.1} |\n");

        // 2. The token endpoint.
        let database = dir.join("legacy.sqlite");
        let legacy_url = format!("sqlite://{}?mode=rwc", database.display());
        let writer = FixtureWriter::open(&legacy_url)
            .await
            .map_err(|e| e.message)
            .expect("fixture");
        portico::demo::seed_openemr(&writer, 10)
            .await
            .map_err(|e| e.message)
            .expect("seed");
        writer.close().await;
        let settings = Settings {
            server: ServerSettings {
                host: "127.0.0.1".into(),
                port: 0,
                cursor_secret: Some(Secret::new("bench")),
                state_dir: dir.clone(),
                ..ServerSettings::default()
            },
            legacy: LegacySettings {
                adapter: "openemr".into(),
                adapters_dir: default_adapters_dir(),
                url: Secret::new(legacy_url),
                max_connections: 4,
                statement_timeout_ms: 5000,
                acquire_timeout_ms: 3000,
                timezone: None,
                lookup_refresh_ms: default_lookup_refresh_ms(),
                // Start-up plan advice explains every statement: only its own test wants it.
                plan_advice_min_rows: 0,
            },
            state: portico::config::StateSettings {
                url: Some(Secret::new(state_url.clone())),
                ..Default::default()
            },
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
            export: Default::default(),
        };
        let application = Application::build(&settings).await.expect("Portico starts");
        let root = format!("http://127.0.0.1:{}", application.port());
        tokio::spawn(application.run_until_cancelled());
        let (_, secret) = store
            .add_client(NewClient {
                name: "bench".into(),
                client_id: Some(format!("bench-{}", std::process::id())),
                kind: Some(ClientKind::Symmetric),
                allowed_scopes: "system/*.rs".into(),
                ..NewClient::default()
            })
            .await
            .expect("a client");
        let secret = secret.expect("a generated secret");
        let client_id = format!("bench-{}", std::process::id());
        let http = reqwest::Client::new();
        let issued = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for _ in 0..concurrency {
            let (http, issued, failed, stop) =
                (http.clone(), issued.clone(), failed.clone(), stop.clone());
            let (url, id, secret) = (
                format!("{root}/auth/token"),
                client_id.clone(),
                secret.clone(),
            );
            workers.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let ok = http
                        .post(&url)
                        .basic_auth(&id, Some(&secret))
                        .form(&[
                            ("grant_type", "client_credentials"),
                            ("scope", "system/Patient.rs"),
                        ])
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    if ok {
                        issued.fetch_add(1, Ordering::Relaxed)
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed)
                    };
                }
            }));
        }
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        stop.store(true, Ordering::Relaxed);
        for worker in workers {
            worker.await.ok();
        }
        let elapsed = started.elapsed().as_secs_f64();
        println!(
            "| token endpoint (client_credentials, client_secret_basic) | value |\n|---|---:|"
        );
        println!("| clients | {concurrency} |");
        println!(
            "| tokens issued per second | {:.0} |",
            issued.load(Ordering::Relaxed) as f64 / elapsed
        );
        println!("| failed requests | {} |", failed.load(Ordering::Relaxed));
    });
    std::fs::remove_dir_all(&dir).ok();
}
