//! The audit journal across a SIGKILL: the built `portico serve` answers requests while its
//! SQLite state store refuses their AuditEvents (the table is moved away), so the events exist
//! only in the journal; the process is killed, the table put back, and the restarted process
//! must have every answered request's event in the hash chain before it serves, with the
//! journal emptied.

#[path = "common/serve_process.rs"]
mod serve_process;

use std::time::Duration;

use portico::state::StateStore;
use portico::state::audit::{AUDIT_JOURNAL_DIR, AuditFilter};
use serde_json::Value as Json;
use serve_process::{Server, registered_client, seeded_mariadb, settings_toml};
use sqlx::Connection;

const REQUESTS: usize = 6;

/// The journal's bytes on disk, every process's segments together.
fn journal_bytes(state_dir: &std::path::Path) -> u64 {
    let files_in = |dir: std::path::PathBuf| {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect::<Vec<_>>()
    };
    files_in(state_dir.join(AUDIT_JOURNAL_DIR))
        .into_iter()
        .filter(|path| path.is_dir())
        .flat_map(files_in)
        .filter(|path| path.extension().is_some_and(|e| e == "ndjson"))
        .map(|path| std::fs::metadata(path).unwrap().len())
        .sum()
}

async fn rename(state_dir: &std::path::Path, from: &str, to: &str) {
    let url = StateStore::default_url(state_dir).unwrap();
    let mut raw = sqlx::AnyConnection::connect(&url).await.unwrap();
    sqlx::query(&format!("ALTER TABLE {from} RENAME TO {to}"))
        .execute(&mut raw)
        .await
        .unwrap();
}

#[tokio::test]
async fn answered_requests_keep_their_audit_events_across_sigkill() {
    let db_url = seeded_mariadb("portico_t_audit_crash", 20).await;
    let (mut server, dir) = Server::prepare("audit-crash", |port, state_dir| {
        settings_toml(
            port,
            state_dir,
            &db_url,
            "[subscriptions]\nenabled = false\n",
        )
    });
    let state_dir = dir.join("state");
    let base = server.base();
    server.start();
    server.wait_listening(Duration::from_secs(60)).await;
    let (store, token) = registered_client(
        &state_dir,
        &base,
        "chart-viewer",
        "a viewer of charts",
        "system/*.rs",
    )
    .await;
    let http = reqwest::Client::new();

    rename(&state_dir, "audit_event", "audit_event_away").await;
    for n in 1..=REQUESTS {
        let reply = http
            .get(format!("{base}/Patient/{n}"))
            .bearer_auth(&token)
            .header("X-Request-Id", format!("journaled-{n}"))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200, "{}", server.log_tail());
    }
    assert!(
        journal_bytes(&state_dir) > 0,
        "the answered requests' events are in the journal"
    );
    server.kill();
    rename(&state_dir, "audit_event_away", "audit_event").await;
    assert!(
        store
            .search_audit_events(&AuditFilter::default(), 100, None)
            .await
            .unwrap()
            .iter()
            .all(|stored| !stored.resource.contains("journaled-")),
        "the store took none of them before the kill"
    );

    server.start();
    server.wait_listening(Duration::from_secs(60)).await;
    let stored: Vec<Json> = store
        .search_audit_events(&AuditFilter::default(), 100, None)
        .await
        .unwrap()
        .iter()
        .map(|stored| serde_json::from_str(&stored.resource).unwrap())
        .collect();
    for n in 1..=REQUESTS {
        let request_id = format!("journaled-{n}");
        let events: Vec<&Json> = stored
            .iter()
            .filter(|event| event.to_string().contains(&format!("\"{request_id}\"")))
            .collect();
        assert_eq!(events.len(), 1, "{request_id}: {stored:?}");
        let entity = events[0]["entity"]
            .as_array()
            .unwrap()
            .iter()
            .find(|entity| entity["what"]["reference"] == format!("Patient/{n}"));
        assert!(entity.is_some(), "{request_id} names Patient/{n}");
    }
    assert_eq!(
        store.verify_audit_chain().await.unwrap(),
        Ok(stored.len() as u64)
    );
    assert_eq!(
        journal_bytes(&state_dir),
        0,
        "the replayed journal is emptied"
    );
    std::fs::remove_dir_all(&dir).ok();
}
