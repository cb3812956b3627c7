//! Crash safety of bulk export: the built `portico serve` is SIGKILLed at seeded random moments
//! while a system `$export` runs (small pages, so every kill lands between or inside page
//! commits), restarted each time on the same settings and state store under the same replica
//! name, and the finished export must hold every resource a full search serves, once, every line
//! valid R4. The committed progress never goes back across a restart: the job resumes where its
//! last page ended, not from the start.

mod common;
#[path = "common/serve_process.rs"]
mod serve_process;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{Fhir, strict};
use portico::demo::Rng;
use portico::state::StateStore;
use portico::state::exports::COMPLETE;
use serde_json::Value as Json;
use serve_process::{Server, registered_client, seeded_mariadb, settings_toml};
use tokio::time::Instant;

const PATIENTS: usize = 600;
/// Kills while the export runs (fewer if it finishes first).
const KILLS: u64 = 12;
const TYPES: [&str; 4] = ["Patient", "Appointment", "Encounter", "Observation"];
/// The whole test, kills and the export's end included.
const TEST_LIMIT: Duration = Duration::from_secs(240);

/// Detection off; the export in small pages, under a replica name kept across restarts.
const SETTINGS: &str =
    "[subscriptions]\nenabled = false\nreplica = \"export-crash\"\n\n[export]\npage_size = 10\n";

/// The job's status, as the test's own handle on the state store reads it.
async fn job_status(store: &StateStore, job: &str) -> String {
    store
        .export_job(job)
        .await
        .unwrap()
        .expect("the job")
        .status
}

/// Panics if a part's committed count is below what it was before: progress never goes back.
fn assert_not_back(progress: &[i64], highest: &[i64]) {
    for (now, before) in progress.iter().zip(highest) {
        assert!(
            now >= before,
            "committed progress went back: {progress:?} < {highest:?}"
        );
    }
}

/// Resources committed so far, per part of the job.
async fn committed(store: &StateStore, job: &str) -> Vec<i64> {
    store
        .export_parts(job)
        .await
        .expect("the job's parts")
        .iter()
        .map(|p| p.written)
        .collect()
}

#[tokio::test]
async fn an_export_survives_sigkill_and_resumes_where_it_stopped() {
    let started = Instant::now();
    let db_url = seeded_mariadb("portico_t_export_crash", PATIENTS).await;
    let (mut server, dir) = Server::prepare("export-crash", |port, state_dir| {
        settings_toml(port, state_dir, &db_url, SETTINGS)
    });
    let base = server.base();
    server.start();
    server.wait_listening(Duration::from_secs(60)).await;

    let (store, token) = registered_client(
        &dir.join("state"),
        &base,
        "bulk-client",
        "an EHR loading the practice",
        "system/*.rs",
    )
    .await;
    let fhir = Fhir::with_token(base.clone(), token.clone());
    let http = reqwest::Client::new();

    let kick_off = http
        .get(format!("{base}/$export?_type={}", TYPES.join(",")))
        .bearer_auth(&token)
        .header("prefer", "respond-async")
        .send()
        .await
        .expect("the kick-off answers");
    assert_eq!(kick_off.status(), 202, "{:?}", kick_off.text().await);
    let status_url = kick_off.headers()["content-location"]
        .to_str()
        .unwrap()
        .to_owned();
    let job = status_url.rsplit('/').next().unwrap().to_owned();

    // Kills at seeded random moments; each restart must go on from the committed progress.
    let mut rng = Rng::new(0xE_C0A5);
    let mut interrupted = 0;
    let mut highest = committed(&store, &job).await;
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(50 + rng.below(300))).await;
        let status = job_status(&store, &job).await;
        if status == COMPLETE {
            break;
        }
        server.kill();
        interrupted += 1;
        let at_kill = committed(&store, &job).await;
        assert_not_back(&at_kill, &highest);
        highest = at_kill;
        server.start();
        server.wait_listening(Duration::from_secs(30)).await;
        // The restarted process takes the job back at once (its replica name's lease is
        // released at start), not after the lease runs out.
        let resumed_by = Instant::now() + Duration::from_secs(30);
        loop {
            let status = job_status(&store, &job).await;
            let progress = committed(&store, &job).await;
            if status == COMPLETE || progress.iter().sum::<i64>() > highest.iter().sum::<i64>() {
                break;
            }
            assert!(
                Instant::now() < resumed_by,
                "no progress since the restart: {status} {progress:?}\n{}",
                server.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    eprintln!("{interrupted} kills during the export; committed then: {highest:?}");
    assert!(
        interrupted >= 3,
        "only {interrupted} kills landed while the export ran: make it larger"
    );

    // It completes.
    let manifest: Json = loop {
        let polled = http
            .get(&status_url)
            .bearer_auth(&token)
            .send()
            .await
            .expect("the status answers");
        match polled.status().as_u16() {
            200 => break polled.json().await.expect("the manifest"),
            202 | 429 => {}
            other => panic!("status {other}: {:?}", polled.text().await),
        }
        let progress = committed(&store, &job).await;
        assert_not_back(&progress, &highest);
        assert!(
            started.elapsed() < TEST_LIMIT,
            "the export did not finish: {progress:?}\n{}",
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    // Every resource a full search serves, exactly once, every line valid R4.
    let mut exported: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for output in manifest["output"].as_array().expect("output") {
        let resource_type = output["type"].as_str().unwrap();
        let file = http
            .get(output["url"].as_str().unwrap())
            .bearer_auth(&token)
            .send()
            .await
            .expect("the file answers");
        assert_eq!(file.status(), 200);
        let text = file.text().await.unwrap();
        let mut lines = 0;
        for line in text.lines() {
            strict(line.as_bytes());
            let resource: Json = serde_json::from_str(line).unwrap();
            assert_eq!(resource["resourceType"], resource_type);
            exported
                .entry(resource_type.to_owned())
                .or_default()
                .push(resource["id"].as_str().unwrap().to_owned());
            lines += 1;
        }
        assert_eq!(output["count"], lines, "{output}");
    }
    for resource_type in TYPES {
        let ids = exported.remove(resource_type).unwrap_or_default();
        let unique: BTreeSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "{resource_type}: a resource twice");
        let searched: BTreeSet<String> = fhir
            .all(&format!("{resource_type}?_count=1000"))
            .await
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect();
        assert!(!searched.is_empty(), "{resource_type}: the seed has some");
        assert_eq!(
            unique,
            searched.iter().collect::<BTreeSet<_>>(),
            "{resource_type}: the export holds what a search serves"
        );
    }
    assert!(exported.is_empty(), "only the asked types: {exported:?}");
    server.kill();
    let _ = std::fs::remove_dir_all(&dir);
}
