//! What the benches share: environment settings, CPU readings from `/proc`, the MariaDB server
//! they measure against, the marker that lets a seeded database be reused, and the watchdog.
//! Included by benches/load.rs and benches/subscriptions.rs (`mod support;`).

// Each bench that includes this file uses a different subset of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};

/// `name` parsed from the environment, `default` when unset; a value that does not parse stops
/// the bench (a typo must not measure the default silently).
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a valid value")),
        Err(_) => default,
    }
}

/// Ends the process with status 3 once `minutes` have passed, so a stuck run cannot hang.
pub fn watchdog(bench: &'static str, minutes: u64) {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(minutes * 60));
        eprintln!("{bench} bench: exceeded PORTICO_BENCH_MAX_MINUTES; stopping");
        std::process::exit(3);
    });
}

// ---------------------------------------------------------------------------------------------
// CPU readings

pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// (comm, utime + stime in ticks) from a /proc stat file.
pub fn stat_ticks(path: &std::path::Path) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_owned();
    let fields: Vec<&str> = text[close + 2..].split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

/// CPU ticks of this whole process (every thread, living or ended).
pub fn process_ticks() -> u64 {
    stat_ticks(std::path::Path::new("/proc/self/stat"))
        .map(|(_, ticks)| ticks)
        .unwrap_or(0)
}

/// CPU ticks of this process's threads whose name starts with `prefix`.
pub fn thread_ticks(prefix: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| stat_ticks(&t.path().join("stat")))
        .filter(|(comm, _)| comm.starts_with(prefix))
        .map(|(_, ticks)| ticks)
        .sum()
}

/// The `/proc` stat file of the database server the bench talks to: the `mariadbd`/`mysqld` whose
/// command line names the port of `server_url` (several servers may run on one machine), else the
/// only one running.
pub fn find_db_process(server_url: &str) -> Option<PathBuf> {
    let port = server_url
        .rsplit(':')
        .next()
        .map(|p| p.trim_end_matches('/').to_owned())
        .filter(|p| p.chars().all(|c| c.is_ascii_digit()));
    let mut servers = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.filter_map(|e| e.ok()) {
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if matches!(comm.trim(), "mariadbd" | "mysqld") {
            let command = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let command = String::from_utf8_lossy(&command).replace('\0', " ");
            servers.push((command, entry.path().join("stat")));
        }
    }
    if let Some(port) = port {
        let flag = format!("--port={port}");
        if let Some((_, stat)) = servers
            .iter()
            .find(|(c, _)| c.split(' ').any(|a| a == flag))
        {
            return Some(stat.clone());
        }
    }
    match servers.len() {
        1 => servers.pop().map(|(_, stat)| stat),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// The seeded database and its marker

/// FNV-1a, stable across builds: ties a seeded database to the schema it was seeded with.
pub fn fnv(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The table a seeded bench database keeps its patient count and schema hash in.
pub const META_TABLE: &str = "portico_bench_meta";

/// A small pool on `server_url` (`mysql://...`), in `database` when given.
pub async fn admin_pool(
    server_url: &str,
    database: Option<&str>,
) -> Result<MySqlPool, sqlx::Error> {
    let url = match database {
        Some(db) => format!("{}/{}", server_url.trim_end_matches('/'), db),
        None => server_url.to_owned(),
    };
    let options: MySqlConnectOptions = url.parse()?;
    MySqlPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
}

/// Whether `database` already holds this seed: its marker names `patients` and `schema_hash`,
/// and `patient_table` has that many rows.
pub async fn seed_reusable(
    server_url: &str,
    database: &str,
    patient_table: &str,
    patients: usize,
    schema_hash: &str,
) -> bool {
    let Ok(pool) = admin_pool(server_url, None).await else {
        return false;
    };
    let exists: Option<i64> = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME IN (?, ?)",
    )
    .bind(database)
    .bind(META_TABLE)
    .bind(patient_table)
    .fetch_one(&pool)
    .await
    .ok();
    pool.close().await;
    if exists != Some(2) {
        return false;
    }
    let Ok(pool) = admin_pool(server_url, Some(database)).await else {
        return false;
    };
    let meta: Option<(i64, String)> = sqlx::query_as(&format!(
        "SELECT patients, schema_hash FROM {META_TABLE} LIMIT 1"
    ))
    .fetch_optional(&pool)
    .await
    .ok()
    .flatten();
    let count: Option<i64> = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {patient_table}"))
        .fetch_one(&pool)
        .await
        .ok();
    pool.close().await;
    matches!(meta, Some((p, ref h)) if p == patients as i64 && h == schema_hash)
        && count == Some(patients as i64)
}

/// Writes the marker `seed_reusable` reads, once a seed is complete.
pub async fn write_seed_marker(
    pool: &MySqlPool,
    patients: usize,
    schema_hash: &str,
) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(&format!("CREATE TABLE {META_TABLE} (patients BIGINT NOT NULL, schema_hash VARCHAR(32) NOT NULL, seeded_at DATETIME NOT NULL)"))
        .execute(pool)
        .await?;
    sqlx::query(&format!("INSERT INTO {META_TABLE} VALUES (?, ?, NOW())"))
        .bind(patients as i64)
        .bind(schema_hash)
        .execute(pool)
        .await?;
    Ok(())
}

/// An empty database `database` on the MariaDB server at `server_url`, opened for seeding.
pub async fn fresh_fixture(
    server_url: &str,
    database: &str,
) -> anyhow::Result<portico::db::fixture::FixtureWriter> {
    portico::db::fixture::recreate_mysql_database(server_url, database)
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the database: {}", e.message))?;
    let url = format!("{}/{database}", server_url.trim_end_matches('/'));
    portico::db::fixture::FixtureWriter::open(&url)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the database: {}", e.message))
}
