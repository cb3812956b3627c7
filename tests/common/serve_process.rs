//! A built `portico serve` as a child process, for the crash tests (tests/subscriptions_crash.rs,
//! tests/export_crash.rs): its settings file, SIGKILL and restart, waiting for it to listen, its
//! accumulated log; the seeded MariaDB database it serves; and a client of it registered in its
//! state store.

// Each crash test compiles this module and may leave a part of it unused.
#![allow(dead_code)]

#[path = "clients.rs"]
mod clients;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use portico::auth::tokens::TokenService;
use portico::db::fixture::{FixtureWriter, recreate_mysql_database};
use portico::demo::seed_openemr;
use portico::state::StateStore;
use tokio::time::Instant;

pub fn mysql_server_url() -> String {
    std::env::var("PORTICO_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

/// A fresh OpenEMR database `name` on MariaDB with `patients` of the generator's patients.
pub async fn seeded_mariadb(name: &str, patients: usize) -> String {
    let url = recreate_mysql_database(&mysql_server_url(), name)
        .await
        .map(|()| format!("{}/{name}", mysql_server_url()))
        .unwrap_or_else(|e| {
            panic!(
                "MariaDB must be running ({}): {}",
                mysql_server_url(),
                e.message
            )
        });
    let writer = FixtureWriter::open(&url)
        .await
        .unwrap_or_else(|e| panic!("{}", e.message));
    seed_openemr(&writer, patients)
        .await
        .unwrap_or_else(|e| panic!("{}", e.message));
    writer.close().await;
    url
}

/// A settings file for `portico serve` on `port` over the OpenEMR database `db_url`, its state in
/// `state_dir`, followed by the test's own sections (`extra`).
pub fn settings_toml(port: u16, state_dir: &std::path::Path, db_url: &str, extra: &str) -> String {
    format!(
        r#"[server]
host = "127.0.0.1"
port = {port}
cursor_secret = "crash-test-cursors"
state_dir = {state_dir:?}

[legacy]
adapter = "openemr"
url = {db_url:?}
max_connections = 4
statement_timeout_ms = 10000

{extra}"#,
        state_dir = state_dir.display().to_string(),
    )
}

/// A port nothing listens on now (bound and released), for a child the test must reach.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("bound").port()
}

/// `portico serve` on one settings file, restarted after each kill; its log accumulates in one
/// file so a failure can show what the processes did.
pub struct Server {
    pub config: PathBuf,
    pub log: PathBuf,
    pub port: u16,
    pub child: Option<Child>,
}

impl Server {
    /// A fresh directory `portico-{test}-{pid}` in the temporary directory, a free port, and the
    /// settings `settings(port, state_dir)` written there as `portico.toml` (the state in
    /// `state/`, the log in `portico.log`); not started yet. Returns the directory too.
    pub fn prepare(
        test: &str,
        settings: impl FnOnce(u16, &std::path::Path) -> String,
    ) -> (Server, PathBuf) {
        let dir = std::env::temp_dir().join(format!("portico-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let config = dir.join("portico.toml");
        std::fs::write(&config, settings(port, &dir.join("state"))).unwrap();
        let server = Server {
            config,
            log: dir.join("portico.log"),
            port,
            child: None,
        };
        (server, dir)
    }

    /// The FHIR base URL the server answers at.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}/fhir", self.port)
    }

    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("the log file opens");
        let mut command = Command::new(env!("CARGO_BIN_EXE_portico"));
        for (name, _) in std::env::vars() {
            if name.starts_with("PORTICO_") {
                command.env_remove(name);
            }
        }
        let child = command
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("PORTICO_LOG", "portico=info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("portico runs");
        self.child = Some(child);
    }

    /// SIGKILL (what `Child::kill` sends on Unix), and the process reaped.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until the port accepts connections; panics with the log's tail if the process
    /// exits or `limit` passes.
    pub async fn wait_listening(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("portico exited ({status}):\n{}", self.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "portico did not listen on {} within {limit:?}:\n{}",
                self.port,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The test's own handle on the state store in `state_dir` (the child's), with a public client
/// `client_id` registered and a token issued to it for `base` with `scope`.
pub async fn registered_client(
    state_dir: &std::path::Path,
    base: &str,
    client_id: &str,
    name: &str,
    scope: &str,
) -> (StateStore, String) {
    let store = StateStore::open(&StateStore::default_url(state_dir).unwrap())
        .await
        .unwrap();
    let tokens = TokenService::new(store.clone());
    let token =
        clients::register_public_client(&store, &tokens, base, (client_id, name), scope).await;
    (store, token)
}
