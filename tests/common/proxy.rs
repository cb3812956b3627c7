//! A TCP proxy to MariaDB that a test can cut (dropping every connection) and restore: the PMS
//! database going away and coming back, for the fault, fail-safe flag and status page tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

/// A TCP proxy to MariaDB that can be cut (dropping every connection) and restored.
pub struct Proxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    /// A proxy to the MariaDB server of `server_url` (`mysql://user@host:port`), and `db_url` (a
    /// database on that server) rewritten to go through it.
    pub async fn in_front_of(server_url: &str, db_url: &str) -> (Proxy, String) {
        let target = server_url
            .trim_start_matches("mysql://")
            .rsplit('@')
            .next()
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_owned();
        let proxy = Proxy::start(&target).await;
        let through = db_url.replace(&target, &format!("127.0.0.1:{}", proxy.port));
        (proxy, through)
    }

    pub async fn start(target: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (accept_up, accept_connections, target) =
            (up.clone(), connections.clone(), target.to_owned());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !accept_up.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let handle = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                accept_connections.lock().await.push(handle);
            }
        });
        Proxy {
            port,
            up,
            connections,
        }
    }

    pub async fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for handle in self.connections.lock().await.drain(..) {
            handle.abort();
        }
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}
