//! Crash safety of subscriptions: the built `portico serve` is SIGKILLed at random moments while it
//! detects and delivers PMS edits (55 times, at seeded random delays), restarted each time on the
//! same settings and state store (a few kills also fall in the first baseline, some edits are
//! made while no Portico runs, and the receiver answers slowly so kills land mid-delivery), and
//! the receiver must end up with every patient's last written name, and event numbers
//! 1..=events-since-subscription-start with none missing. Once with a replica name kept across
//! restarts, once with a new one each start (the killed process's leases must run out).

#[path = "common/notifications.rs"]
mod notifications;
#[path = "common/serve_process.rs"]
mod serve_process;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use notifications::{
    Receiver, carried_resources, event_numbers, eventually, focuses, status_part,
    topic_subscription,
};
use portico::demo::Rng;
use serde_json::Value as Json;
use serve_process::{Server, registered_client, seeded_mariadb, settings_toml};
use sqlx::Connection;
use tokio::time::Instant;

/// Kills of the running Portico, one per round.
const ROUNDS: u64 = 55;
/// Rounds of the variant whose every kill leaves leases to run out (each waits for delivery's).
const FRESH_NAME_ROUNDS: u64 = 20;
/// Kills while the first baseline runs, before the rounds.
const BASELINE_KILLS: u64 = 3;
/// Patients whose names the rounds change, round-robin.
const PATIENTS_CHANGED: usize = 7;
/// The whole test, kills and settling included.
const TEST_LIMIT: Duration = Duration::from_secs(240);

/// How the restarted processes name themselves in leases.
#[derive(Clone, Copy)]
enum Naming {
    /// One name across restarts, as a pod with a stable name has: a restarted process takes
    /// back at once what the killed one leased.
    Stable,
    /// A new random name each start: what a killed process leased waits for its lease to run
    /// out (detection's shortened to 1 s here, delivery's 60 s).
    FreshEachStart,
}

fn settings(port: u16, state_dir: &Path, db_url: &str, naming: Naming) -> String {
    let leases = match naming {
        Naming::Stable => "replica = \"crash-test\"",
        Naming::FreshEachStart => "lease_ms = 1000",
    };
    let subscriptions = format!(
        "[subscriptions]\nenabled = true\npoll_interval_ms = 200\nallow_private_endpoints = true\n{leases}\n"
    );
    settings_toml(port, state_dir, db_url, &subscriptions)
}

/// The subscription's status as `$status` states it (`events-since-subscription-start`).
async fn events_since_start(http: &reqwest::Client, base: &str, token: &str, id: &str) -> i64 {
    let status: Json = http
        .get(format!("{base}/Subscription/{id}/$status"))
        .bearer_auth(token)
        .send()
        .await
        .expect("$status answers")
        .json()
        .await
        .expect("$status is JSON");
    status_part(&status, "events-since-subscription-start")["valueString"]
        .as_str()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no events-since-subscription-start in {status}"))
}

#[tokio::test]
async fn every_change_survives_sigkill_during_detection_and_delivery() {
    kill_and_restart("subscriptions_crash", Naming::Stable, ROUNDS).await;
}

#[tokio::test]
async fn every_change_survives_sigkill_when_leases_must_run_out() {
    kill_and_restart(
        "subscriptions_crash_fresh",
        Naming::FreshEachStart,
        FRESH_NAME_ROUNDS,
    )
    .await;
}

/// The scenario: `rounds` kills over a database and state store of `test`'s own.
async fn kill_and_restart(test: &str, naming: Naming, rounds: u64) {
    let started = Instant::now();
    let db_url = seeded_mariadb(&format!("portico_t_{test}"), 60).await;
    let (mut server, dir) = Server::prepare(test, |port, state_dir| {
        settings(port, state_dir, &db_url, naming)
    });
    let state_dir = dir.join("state");
    let base = server.base();
    server.start();
    server.wait_listening(Duration::from_secs(60)).await;
    // Kills while the first baseline runs: it resumes where its last committed step ended.
    let mut rng = Rng::new(0x5EED_C4A5);
    for _ in 0..BASELINE_KILLS {
        tokio::time::sleep(Duration::from_millis(100 + rng.below(400))).await;
        server.kill();
        server.start();
        server.wait_listening(Duration::from_secs(30)).await;
    }

    // The test's own handle on the same state store: the client, tokens, the cursors.
    let (store, token) = registered_client(
        &state_dir,
        &base,
        "portico-tests",
        "an EHR subscribing",
        "system/Subscription.cruds system/*.rs",
    )
    .await;
    let http = reqwest::Client::new();

    let adapter =
        portico::adapter::load(&portico::config::default_adapters_dir().join("openemr")).unwrap();
    let detected = adapter
        .resources
        .values()
        .flat_map(|def| def.mappings.iter())
        .filter(|m| m.changes.is_some())
        .count();
    let baseline_deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let cursors = store.change_cursors().await.unwrap();
        if cursors.len() == detected && cursors.iter().all(|c| c.baselined) {
            break;
        }
        assert!(
            Instant::now() < baseline_deadline,
            "baseline did not finish: {cursors:?}\n{}",
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A slow receiver, so that kills also fall between a notification's arrival and its answer.
    let receiver = Receiver::answering_after(Duration::from_millis(250)).await;
    let created: Json = http
        .post(format!("{base}/Subscription"))
        .bearer_auth(&token)
        .header("content-type", "application/fhir+json")
        .body(
            topic_subscription(
                "patient-demographics-changed",
                &[],
                &receiver.url,
                "full-resource",
            )
            .to_string(),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"]
        .as_str()
        .unwrap_or_else(|| panic!("not created: {created}"))
        .to_owned();
    eventually("the handshake", Duration::from_secs(30), || {
        receiver.of(&id, "handshake").first().cloned()
    })
    .await;

    let mut pms = sqlx::MySqlConnection::connect(&db_url).await.unwrap();
    let patients: Vec<i64> =
        sqlx::query_scalar("SELECT pid FROM patient_data ORDER BY pid LIMIT ?")
            .bind(PATIENTS_CHANGED as i64)
            .fetch_all(&mut pms)
            .await
            .unwrap();
    assert_eq!(patients.len(), PATIENTS_CHANGED, "the fixture has patients");

    // Each round: an edit as the PMS makes it, a random while for detection or delivery to be
    // under way, SIGKILL, restart.
    let mut last_name: BTreeMap<String, String> = BTreeMap::new();
    // Where the kills fell, for the log: before this round's edit was numbered (detection), and
    // with numbered events not yet delivered (delivery).
    let (mut kills_before_numbering, mut kills_with_undelivered) = (0, 0);
    for round in 0..rounds {
        assert!(
            started.elapsed() < TEST_LIMIT,
            "the test ran past {TEST_LIMIT:?} after {round} kills"
        );
        let events_before_edit = store
            .subscription(&id)
            .await
            .unwrap()
            .expect("still stored")
            .events_since_start;
        let patient = patients[round as usize % patients.len()];
        let name = format!("Crash{round}");
        sqlx::query("UPDATE patient_data SET fname = ? WHERE pid = ?")
            .bind(&name)
            .bind(patient)
            .execute(&mut pms)
            .await
            .unwrap();
        last_name.insert(patient.to_string(), name);
        tokio::time::sleep(Duration::from_millis(50 + rng.below(551))).await;
        let before_kill = store
            .subscription(&id)
            .await
            .unwrap()
            .expect("still stored");
        if before_kill.events_since_start == events_before_edit {
            kills_before_numbering += 1;
        }
        if before_kill.delivered_through < before_kill.events_since_start {
            kills_with_undelivered += 1;
        }
        server.kill();
        if round % 5 == 4 {
            // An edit while no Portico runs.
            let patient = patients[(round as usize + 1) % patients.len()];
            let name = format!("Down{round}");
            sqlx::query("UPDATE patient_data SET fname = ? WHERE pid = ?")
                .bind(&name)
                .bind(patient)
                .execute(&mut pms)
                .await
                .unwrap();
            last_name.insert(patient.to_string(), name);
        }
        server.start();
        server.wait_listening(Duration::from_secs(30)).await;
    }

    // Settle: the last process runs on until every event is delivered and every patient's last
    // name has arrived.
    let remaining = TEST_LIMIT.saturating_sub(started.elapsed());
    let settle_deadline = Instant::now() + remaining;
    loop {
        let subscription = store
            .subscription(&id)
            .await
            .unwrap()
            .expect("still stored");
        let missing = missing_last_names(&receiver, &id, &last_name);
        if missing.is_empty() && subscription.delivered_through == subscription.events_since_start {
            break;
        }
        assert!(
            Instant::now() < settle_deadline,
            "the test ran past {TEST_LIMIT:?} while settling: delivered through {} of {}; no \
             notification carried the last name of {missing:?}\n{}",
            subscription.delivered_through,
            subscription.events_since_start,
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let total = events_since_start(&http, &base, &token, &id).await;
    let notifications = receiver.of(&id, "event-notification");
    let every_number: Vec<i64> = notifications
        .iter()
        .flat_map(|n| event_numbers(&n.bundle))
        .collect();
    let numbers: BTreeSet<i64> = every_number.iter().copied().collect();
    let expected: BTreeSet<i64> = (1..=total).collect();
    assert_eq!(
        numbers, expected,
        "the event numbers received, de-duplicated, are 1..={total}"
    );
    assert!(
        total >= PATIENTS_CHANGED as i64,
        "each changed patient was at least one event ({total})"
    );
    for notification in receiver.received.lock().unwrap().iter() {
        if let Err(error) = portico::fhir::xml::parse_strict(&notification.body) {
            panic!("not valid R4 ({error}): {}", notification.bundle);
        }
    }
    for notification in &notifications {
        for focus in focuses(&notification.bundle) {
            assert!(focus.starts_with("Patient/"), "{focus}");
        }
    }
    eprintln!(
        "{test}: {rounds} kills ({kills_before_numbering} before the round's edit was numbered, \
         {kills_with_undelivered} with events undelivered); {total} events, {} received again \
         after a kill; {} notifications ({} with events) in {:?}",
        every_number.len() - numbers.len(),
        receiver.received.lock().unwrap().len(),
        notifications.len(),
        started.elapsed()
    );
    server.kill();
}

/// The patients of `last_name` no event notification has carried with that name.
fn missing_last_names(
    receiver: &Receiver,
    subscription: &str,
    last_name: &BTreeMap<String, String>,
) -> Vec<String> {
    let notifications = receiver.of(subscription, "event-notification");
    last_name
        .iter()
        .filter(|(patient, name)| {
            !notifications.iter().any(|n| {
                carried_resources(&n.bundle).iter().any(|resource| {
                    resource["resourceType"] == "Patient"
                        && resource["id"].as_str() == Some(patient.as_str())
                        && resource["name"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .flat_map(|n| n["given"].as_array().into_iter().flatten())
                            .any(|given| given == name.as_str())
                })
            })
        })
        .map(|(patient, _)| patient.clone())
        .collect()
}
