//! The connection pool both hand-made drivers' pools share (SQL Server through tiberius, MySQL
//! and MariaDB through sqlx's bare connections): permits bound the connections open at once, and
//! a connection goes back to the idle list only when its caller gives it back, after a statement
//! that finished cleanly. One dropped mid-statement (a timeout, a client gone) or after an error
//! is closed with its permit's holder instead, so a reused connection never carries the remains
//! of an abandoned statement, and nothing needs checking as it comes back.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{DbError, DbErrorKind};

pub(super) struct Connections<C> {
    /// Idle connections with when each was given back; the most recent last.
    idle: Mutex<Vec<(C, Instant)>>,
    permits: Arc<Semaphore>,
    max_connections: u32,
    acquire_timeout: Duration,
}

impl<C> Connections<C> {
    pub(super) fn new(max_connections: u32, acquire_timeout: Duration) -> Connections<C> {
        Connections {
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(max_connections.max(1) as usize)),
            max_connections: max_connections.max(1),
            acquire_timeout,
        }
    }

    pub(super) fn acquire_timeout(&self) -> Duration {
        self.acquire_timeout
    }

    /// A permit to hold one connection, within the acquire limit; `what` names the database in
    /// the error.
    pub(super) async fn permit(&self, what: &str) -> Result<OwnedSemaphorePermit, DbError> {
        let unavailable = || {
            DbError::new(
                DbErrorKind::Unavailable,
                format!("no {what} connection became free in time"),
            )
        };
        tokio::time::timeout(self.acquire_timeout, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| unavailable())?
            .map_err(|_| unavailable())
    }

    /// The most recently used idle connection and how long it has been idle.
    pub(super) fn take_idle(&self) -> Option<(C, Duration)> {
        self.list()
            .pop()
            .map(|(connection, since)| (connection, since.elapsed()))
    }

    /// Pools a connection whose last statement finished cleanly, then frees its permit.
    pub(super) fn give_back(&self, permit: OwnedSemaphorePermit, connection: C) {
        self.list().push((connection, Instant::now()));
        drop(permit);
    }

    /// (open, idle, most allowed) connections, as `Database::pool_use` reports them.
    pub(super) fn usage(&self) -> (u32, u32, u32) {
        let in_use = self.max_connections - self.permits.available_permits() as u32;
        let idle = self.list().len() as u32;
        (in_use + idle, idle, self.max_connections)
    }

    /// Takes every idle connection (to close them).
    pub(super) fn drain(&self) -> Vec<C> {
        self.list()
            .drain(..)
            .map(|(connection, _)| connection)
            .collect()
    }

    fn list(&self) -> std::sync::MutexGuard<'_, Vec<(C, Instant)>> {
        // Only pushes and pops happen under the lock: a panic cannot leave it half-changed.
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
