//! The key lists of adapter lookup joins (`lookup = true`), cached per mapping and join and
//! refreshed on an interval, that replace the compiled semi-joins (`Cond::InLookup`) before a
//! query is rendered.
//!
//! Why constant lists: on MySQL/MariaDB a semi-join `t.pc_catid IN (SELECT ...)` is flattened into
//! a join, and the optimizer may again start from the 15-row lookup table and reach the big table
//! through an index led by the lookup's column, fetching every row by primary key. A list of
//! bound constants leaves it the base table's own access paths (ARCHITECTURE.md, "Lookups").
//! When no list is at hand (never fetched because the database was down, or longer than
//! `MAX_LOOKUP_KEYS`), the semi-join is rendered as compiled: the same rows, only the plan differs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::db::Database;
use crate::dialect::ast::{Select, Value};
use crate::dialect::render;

/// Longest list bound in place of a semi-join; a longer one is no lookup table. Keeps a statement
/// well under SQL Server's 2,100 parameters.
pub const MAX_LOOKUP_KEYS: usize = 1000;

/// Key lists by lookup name (`Appointment:cat`).
#[derive(Debug)]
pub struct LookupCache {
    refresh: Duration,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
}

#[derive(Debug, Default)]
struct Entry {
    current: Mutex<Current>,
    /// Held while the list is read from the database, so that one request refreshes it.
    refreshing: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default, Clone)]
struct Current {
    /// `None`: render the semi-join (never read, or too long).
    keys: Option<Arc<Vec<Value>>>,
    /// When the list was last read or a read was last tried.
    checked: Option<Instant>,
}

impl LookupCache {
    pub fn new(refresh: Duration) -> LookupCache {
        LookupCache {
            refresh,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// `select` with each of its lookups replaced by the current key list (read or refreshed here
    /// when due). Never fails: a lookup without a list stays a semi-join.
    pub async fn resolve(&self, db: &Database, select: &Select) -> Option<Select> {
        let mut wanted = Vec::new();
        select.filter.lookups(&mut wanted);
        if wanted.is_empty() {
            return None;
        }
        let mut lists: HashMap<String, Arc<Vec<Value>>> = HashMap::new();
        for (name, keys) in wanted {
            if let Some(list) = self.keys(db, name, keys).await {
                lists.insert(name.to_owned(), list);
            }
        }
        Some(select.with_lookup_keys(&|name| lists.get(name).map(|l| l.as_ref().clone())))
    }

    fn entry(&self, name: &str) -> Arc<Entry> {
        let mut entries = self.entries.lock().expect("lookup cache lock");
        entries.entry(name.to_owned()).or_default().clone()
    }

    async fn keys(&self, db: &Database, name: &str, select: &Select) -> Option<Arc<Vec<Value>>> {
        let entry = self.entry(name);
        let current = entry.current.lock().expect("lookup entry lock").clone();
        let fresh = |c: &Current| c.checked.is_some_and(|at| at.elapsed() < self.refresh);
        if fresh(&current) {
            return current.keys;
        }
        let _guard = match entry.refreshing.try_lock() {
            Ok(guard) => guard,
            // Another request is reading the list: serve the last one, or wait for the first.
            Err(_) if current.checked.is_some() => return current.keys,
            Err(_) => entry.refreshing.lock().await,
        };
        let current = entry.current.lock().expect("lookup entry lock").clone();
        if fresh(&current) {
            return current.keys;
        }
        let keys = match db.fetch(&render(db.dialect(), select)).await {
            Ok(rows) => {
                let keys: Vec<Value> = rows
                    .into_iter()
                    .filter_map(|row| row.into_iter().next())
                    .filter(|value| *value != Value::Null)
                    .collect();
                if keys.len() > MAX_LOOKUP_KEYS {
                    tracing::warn!(
                        lookup = name,
                        keys = keys.len(),
                        "lookup has more keys than a list binds; querying it as a semi-join"
                    );
                    None
                } else {
                    Some(Arc::new(keys))
                }
            }
            Err(error) => {
                tracing::warn!(
                    lookup = name,
                    error = %error.message,
                    "cannot refresh lookup keys; serving the last list"
                );
                current.keys
            }
        };
        *entry.current.lock().expect("lookup entry lock") = Current {
            keys: keys.clone(),
            checked: Some(Instant::now()),
        };
        keys
    }
}
