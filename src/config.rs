//! Typed settings, layered: defaults, then an optional TOML file, then `PORTICO_*` environment
//! variables (`PORTICO_LEGACY__URL` sets `legacy.url`). Secrets never print.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::db::DbSettings;

/// A string that never shows in `Debug` output or logs.
#[derive(Clone, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub server: ServerSettings,
    pub legacy: LegacySettings,
    #[serde(default)]
    pub state: StateSettings,
    #[serde(default)]
    pub auth: crate::auth::token_endpoint::AuthSettings,
    #[serde(default)]
    pub subscriptions: SubscriptionsSettings,
    #[serde(default)]
    pub alarm: AlarmSettings,
    #[serde(default)]
    pub quality: QualitySettings,
    #[serde(default)]
    pub reconcile: ReconcileSettings,
    #[serde(default)]
    pub export: ExportSettings,
}

/// `[quality]`: the data-quality audit (`portico audit`, `crate::quality`) on a schedule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualitySettings {
    /// Minutes between audits under `portico serve`, counted from the latest recorded run; 0:
    /// only on demand.
    #[serde(default = "default_quality_schedule_minutes")]
    pub schedule_minutes: u64,
}

impl Default for QualitySettings {
    fn default() -> QualitySettings {
        QualitySettings {
            schedule_minutes: default_quality_schedule_minutes(),
        }
    }
}

fn default_quality_schedule_minutes() -> u64 {
    24 * 60
}

/// `[export]`: Bulk Data `$export` (`crate::export`): where files go, how long they stay, how
/// many jobs run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportSettings {
    /// Run export jobs in this process (every replica may; jobs are leased in the state store).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Where the NDJSON files are written; unset: `exports` in `server.state_dir`. Replicas that
    /// share a state store must share this directory too.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// A file is closed and the next begun once it passes this size (at a page's end).
    #[serde(default = "default_export_file_megabytes")]
    pub file_megabytes: u64,
    /// Hours a finished export's files stay; then they are deleted.
    #[serde(default = "default_export_expire_hours")]
    pub expire_hours: u64,
    /// Jobs run at once, across the replicas sharing the state store.
    #[serde(default = "default_export_max_running")]
    pub max_running: u64,
    /// Unfinished jobs one client may have; another kick-off is answered 429.
    #[serde(default = "default_export_max_per_client")]
    pub max_per_client: u64,
    /// Resources read per page of the PMS (each page is one commit of the job's progress).
    #[serde(default = "default_export_page_size")]
    pub page_size: u64,
    /// How long a worker holds a job without committing a page (each page's commit renews it):
    /// a worker that dies without releasing its job hands it over after at most this long. It
    /// must be longer than reading and writing one page takes; 0 is refused.
    #[serde(
        default = "default_export_lease_seconds",
        deserialize_with = "export_lease_seconds"
    )]
    pub lease_seconds: u64,
    /// Resource types one job exports at once: while the PMS reads one type's page, Portico maps
    /// another's. 1 exports them one after another.
    #[serde(default = "default_export_parallel_types")]
    pub parallel_types: u64,
}

impl Default for ExportSettings {
    fn default() -> ExportSettings {
        ExportSettings {
            enabled: true,
            dir: None,
            file_megabytes: default_export_file_megabytes(),
            expire_hours: default_export_expire_hours(),
            max_running: default_export_max_running(),
            max_per_client: default_export_max_per_client(),
            page_size: default_export_page_size(),
            lease_seconds: default_export_lease_seconds(),
            parallel_types: default_export_parallel_types(),
        }
    }
}

impl ExportSettings {
    /// The directory the files are written in.
    pub fn files_dir(&self, state_dir: &Path) -> PathBuf {
        self.dir
            .clone()
            .unwrap_or_else(|| state_dir.join("exports"))
    }

    /// How long a job's lease lasts without renewal (`lease_seconds`), in milliseconds as the
    /// state store counts them (a huge setting saturates rather than wraps).
    pub fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease_seconds.saturating_mul(1000)).unwrap_or(i64::MAX)
    }
}

fn default_export_parallel_types() -> u64 {
    2
}

fn default_export_file_megabytes() -> u64 {
    256
}

fn default_export_expire_hours() -> u64 {
    24
}

fn default_export_max_running() -> u64 {
    2
}

fn default_export_max_per_client() -> u64 {
    1
}

fn default_export_page_size() -> u64 {
    1000
}

fn default_export_lease_seconds() -> u64 {
    120
}

/// `export.lease_seconds`: at least one second (a lease of 0 would expire as it is taken, and
/// every worker would take every job over from every other).
fn export_lease_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let seconds = u64::deserialize(d)?;
    if seconds == 0 {
        return Err(serde::de::Error::custom(
            "export.lease_seconds is 0: a job's lease must last at least 1 second (default 120; \
             make it longer than one page of export.page_size rows takes to read and write)",
        ));
    }
    Ok(seconds)
}

/// `[reconcile]`: the EHR `portico reconcile` compares Portico with (`crate::reconcile`), and
/// how often `portico serve` does it. The command's options override each setting.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileSettings {
    /// The EHR's FHIR base URL; unset, nothing is reconciled on a schedule.
    #[serde(default)]
    pub ehr_url: Option<String>,
    /// The client id Portico is registered under at the EHR (SMART Backend Services).
    #[serde(default)]
    pub client_id: Option<String>,
    /// The client's RSA private key (PEM file); the EHR holds its public half (RS384).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The key's `kid` in the JWKS the EHR holds.
    #[serde(default)]
    pub key_id: Option<String>,
    /// The resource types compared: a list, or one comma-separated string.
    #[serde(
        default = "default_reconcile_types",
        deserialize_with = "list_or_commas"
    )]
    pub types: Vec<String>,
    /// A scheduled run compares resources dated within this many days back (and undated ones);
    /// 0: everything.
    #[serde(default)]
    pub days: u64,
    /// Minutes between runs under `portico serve` when `ehr_url` is set, counted from the
    /// latest recorded run; 0: only on demand.
    #[serde(default = "default_reconcile_schedule_minutes")]
    pub schedule_minutes: u64,
}

impl Default for ReconcileSettings {
    fn default() -> ReconcileSettings {
        ReconcileSettings {
            ehr_url: None,
            client_id: None,
            key_file: None,
            key_id: None,
            types: default_reconcile_types(),
            days: 0,
            schedule_minutes: default_reconcile_schedule_minutes(),
        }
    }
}

fn default_reconcile_types() -> Vec<String> {
    ["Patient", "Appointment", "Claim"]
        .map(String::from)
        .to_vec()
}

fn default_reconcile_schedule_minutes() -> u64 {
    24 * 60
}

/// `[alarm]`: the fail-safe flag ("critical sync error", `crate::alarm`): when it is raised and
/// whom it alerts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmSettings {
    /// Raise the flag when a mapping's change detection has failed without a success for this
    /// long.
    #[serde(default = "default_detection_failure_ms")]
    pub detection_failure_ms: u64,
    /// Raise it when a subscription has failed to deliver continuously for this long.
    #[serde(default = "default_delivery_failure_ms")]
    pub delivery_failure_ms: u64,
    /// How often the watchdog looks.
    #[serde(default = "default_alarm_check_ms")]
    pub check_interval_ms: u64,
    /// Raise it when the latest reconciliation found more records than this missing, extra or
    /// differing in the EHR (0: any drift).
    #[serde(default)]
    pub reconcile_drift: u64,
    /// Operator alert endpoints: each gets one POST per raising (JSON, Standard Webhooks signed
    /// with `secret`), retried at each check until it answers 2xx. A list, or comma-separated.
    #[serde(default, deserialize_with = "list_or_commas")]
    pub endpoints: Vec<String>,
    /// `whsec_` signing secret of the alerts; none: alerts are sent unsigned.
    #[serde(default)]
    pub secret: Secret,
}

impl Default for AlarmSettings {
    fn default() -> AlarmSettings {
        AlarmSettings {
            detection_failure_ms: default_detection_failure_ms(),
            delivery_failure_ms: default_delivery_failure_ms(),
            check_interval_ms: default_alarm_check_ms(),
            reconcile_drift: 0,
            endpoints: Vec::new(),
            secret: Secret::default(),
        }
    }
}

fn default_detection_failure_ms() -> u64 {
    300_000
}

fn default_delivery_failure_ms() -> u64 {
    3_600_000
}

fn default_alarm_check_ms() -> u64 {
    10_000
}

/// `[subscriptions]`: change detection and notification delivery.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionsSettings {
    /// Run change detection and delivery in this process (every replica may; leases share the
    /// work). Off: the Subscription endpoints still answer, nothing is detected or sent here.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Time between detection passes over each mapping.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Admit `http` endpoints and private, loopback and other non-public addresses (tests, the
    /// demo, an EHR on the practice's own network). Link-local and multicast stay refused.
    #[serde(default)]
    pub allow_private_endpoints: bool,
    /// How long a replica holds a mapping's detection lease without renewing it: when a replica
    /// dies, another takes its mappings over after at most this long.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// This process's name in leases. Unset, each start picks a random one, and what a killed
    /// process leased waits for its lease to run out; a name kept across restarts (a pod's
    /// stable name) takes its own leases back at once. Two running replicas must never share one.
    #[serde(default)]
    pub replica: Option<String>,
}

impl Default for SubscriptionsSettings {
    fn default() -> SubscriptionsSettings {
        SubscriptionsSettings {
            enabled: true,
            poll_interval_ms: default_poll_interval_ms(),
            allow_private_endpoints: false,
            lease_ms: default_lease_ms(),
            replica: None,
        }
    }
}

impl SubscriptionsSettings {
    /// What the SSRF guard admits.
    pub fn endpoint_policy(&self) -> crate::subscriptions::endpoint_guard::SubscriptionSettings {
        crate::subscriptions::endpoint_guard::SubscriptionSettings {
            allow_private_endpoints: self.allow_private_endpoints,
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_poll_interval_ms() -> u64 {
    5_000
}

fn default_lease_ms() -> u64 {
    30_000
}

/// The settings of the commands that only touch Portico's own state (`clients`, `users`,
/// `token`): a settings file's `[legacy]` section is not needed, and not read.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LocalSettings {
    #[serde(default)]
    pub server: ServerSettings,
    #[serde(default)]
    pub state: StateSettings,
    #[serde(default)]
    pub auth: crate::auth::token_endpoint::AuthSettings,
}

/// Where Portico keeps its own state (never the PMS).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSettings {
    /// `postgres://...` when replicas share state; unset: SQLite `state.db` in `server.state_dir`.
    pub url: Option<Secret>,
    /// SQLite stores: audit events written to the journal but not yet committed, at most, before
    /// requests are refused (503); unset: `state::audit::JOURNAL_BACKLOG`.
    pub audit_backlog: Option<usize>,
}

impl StateSettings {
    pub fn audit_backlog(&self) -> usize {
        self.audit_backlog
            .unwrap_or(crate::state::audit::JOURNAL_BACKLOG)
            .max(1)
    }

    /// The store's URL: the configured one, else the SQLite file in `state_dir`.
    pub fn url(&self, state_dir: &Path) -> Result<String, ConfigError> {
        match &self.url {
            Some(url) if !url.expose().is_empty() => Ok(url.expose().to_owned()),
            _ => crate::state::StateStore::default_url(state_dir)
                .map_err(|e| ConfigError::Invalid(e.to_string())),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// Public base URL of the FHIR endpoint (e.g. https://fhir.example.org/fhir). Derived from
    /// the Host header when unset.
    pub base_url: Option<String>,
    /// Key signing paging cursors. When unset, a random key is kept in `state_dir`.
    pub cursor_secret: Option<Secret>,
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// PEM certificate chain: with `tls_key`, Portico serves HTTPS itself (TLS 1.2 and 1.3).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Peers (IP addresses or CIDR ranges) whose `Forwarded` / `X-Forwarded-Proto` /
    /// `X-Forwarded-Host` headers are believed when deriving the public base URL. A list, or one
    /// comma-separated string (as environment variables give it).
    #[serde(default, deserialize_with = "list_or_commas")]
    pub trusted_proxies: Vec<String>,
}

/// A list of strings, or one comma-separated string (as environment variables give a list).
pub(crate) fn list_or_commas<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrCommas {
        List(Vec<String>),
        Commas(String),
    }
    Ok(match ListOrCommas::deserialize(d)? {
        ListOrCommas::List(items) => items,
        ListOrCommas::Commas(text) => text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

impl Default for ServerSettings {
    fn default() -> ServerSettings {
        ServerSettings {
            host: default_host(),
            port: default_port(),
            base_url: None,
            cursor_secret: None,
            state_dir: default_state_dir(),
            tls_cert: None,
            tls_key: None,
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacySettings {
    /// Adapter folder name inside `adapters_dir`.
    pub adapter: String,
    #[serde(default = "default_adapters_dir")]
    pub adapters_dir: PathBuf,
    /// mysql://, mariadb:// or sqlite:// URL. A read-only account is enough. Only `check --offline`
    /// runs without it.
    #[serde(default)]
    pub url: Secret,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    #[serde(default = "default_statement_timeout_ms")]
    pub statement_timeout_ms: u64,
    #[serde(default = "default_acquire_timeout_ms")]
    pub acquire_timeout_ms: u64,
    /// Overrides the adapter's time zone (IANA name) for this site.
    pub timezone: Option<String>,
    /// How long a lookup table's key list is used before it is read again.
    #[serde(default = "default_lookup_refresh_ms")]
    pub lookup_refresh_ms: u64,
    /// `serve` explains its statements once at start-up and logs the full scans and sorts of
    /// tables with at least this many rows (`check --explain`'s findings); 0: not at all.
    #[serde(default = "default_plan_advice_min_rows")]
    pub plan_advice_min_rows: u64,
}

impl LegacySettings {
    /// The connection URL, or the error that says how to set it.
    pub fn require_url(&self) -> Result<&str, ConfigError> {
        match self.url.expose() {
            "" => Err(ConfigError::Invalid(
                "legacy.url is not set (settings file or PORTICO_LEGACY__URL)".into(),
            )),
            url => Ok(url),
        }
    }

    pub fn db_settings(&self) -> DbSettings {
        DbSettings {
            url: self.url.expose().to_owned(),
            max_connections: self.max_connections,
            statement_timeout: Duration::from_millis(self.statement_timeout_ms),
            acquire_timeout: Duration::from_millis(self.acquire_timeout_ms),
        }
    }

    pub fn lookup_refresh(&self) -> Duration {
        Duration::from_millis(self.lookup_refresh_ms)
    }

    pub fn adapter_dir(&self) -> PathBuf {
        self.adapters_dir.join(&self.adapter)
    }
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    8080
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("portico-state")
}
/// `adapters/` beside the working directory, else the one in the source tree Portico was built from.
pub fn default_adapters_dir() -> PathBuf {
    let local = PathBuf::from("adapters");
    if local.is_dir() {
        local
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("adapters")
    }
}
pub fn default_lookup_refresh_ms() -> u64 {
    60_000
}
pub fn default_plan_advice_min_rows() -> u64 {
    crate::check::explain::DEFAULT_MIN_ROWS
}
fn default_max_connections() -> u32 {
    10
}
fn default_statement_timeout_ms() -> u64 {
    5000
}
fn default_acquire_timeout_ms() -> u64 {
    3000
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid settings: {0}")]
    Invalid(String),
}

/// Loads settings from `file` (optional) and the environment.
pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
    let vars: Vec<(String, String)> = std::env::vars().collect();
    load_from(file, &vars)
}

/// Loads settings from `file` and the given `(name, value)` environment pairs.
pub fn load_from(file: Option<&Path>, env: &[(String, String)]) -> Result<Settings, ConfigError> {
    toml::Value::Table(merged_table(file, env)?)
        .try_into::<Settings>()
        .map_err(|e| ConfigError::Invalid(e.message().trim().to_owned()))
}

/// Loads the settings of the state-only commands from `file` and the environment.
pub fn load_local(file: Option<&Path>) -> Result<LocalSettings, ConfigError> {
    let vars: Vec<(String, String)> = std::env::vars().collect();
    let mut table = merged_table(file, &vars)?;
    table.retain(|section, _| section == "server" || section == "state" || section == "auth");
    toml::Value::Table(table)
        .try_into::<LocalSettings>()
        .map_err(|e| ConfigError::Invalid(e.message().trim().to_owned()))
}

/// The settings file's table with the `PORTICO_SECTION__KEY` variables laid over it.
fn merged_table(file: Option<&Path>, env: &[(String, String)]) -> Result<toml::Table, ConfigError> {
    let mut table = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            text.parse::<toml::Table>()
                .map_err(|e| ConfigError::Invalid(format!("{}: {}", path.display(), e.message())))?
        }
        None => toml::Table::new(),
    };
    let overrides: BTreeMap<&str, &str> = env
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("PORTICO_").map(|rest| (rest, v.as_str())))
        .collect();
    for (name, value) in overrides {
        let path: Vec<String> = name
            .split("__")
            .map(|part| part.to_ascii_lowercase())
            .collect();
        // `SECTION__KEY`, or `SECTION__TABLE__KEY` for a nested table such as `auth.external`.
        let Some((key, tables)) = path.split_last() else {
            continue;
        };
        if tables.is_empty() || tables.len() > 2 {
            continue;
        }
        let mut current = &mut table;
        for table_name in tables {
            let entry = current
                .entry(table_name.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let toml::Value::Table(inner) = entry else {
                return Err(ConfigError::Invalid(format!(
                    "PORTICO_{name}: {} is not a table",
                    tables.join(".")
                )));
            };
            current = inner;
        }
        current.insert(key.clone(), env_value(key, value));
    }
    Ok(table)
}

/// Environment values are text; numbers stay numbers for the keys that are numbers.
fn env_value(key: &str, value: &str) -> toml::Value {
    const NUMERIC: &[&str] = &[
        "port",
        "max_connections",
        "statement_timeout_ms",
        "acquire_timeout_ms",
        "lookup_refresh_ms",
        "plan_advice_min_rows",
        "detection_failure_ms",
        "delivery_failure_ms",
        "check_interval_ms",
        "access_token_seconds",
        "backend_token_seconds",
        "leeway_seconds",
        "schedule_minutes",
        "days",
        "reconcile_drift",
        "file_megabytes",
        "expire_hours",
        "max_running",
        "max_per_client",
        "page_size",
        "lease_seconds",
    ];
    if NUMERIC.contains(&key)
        && let Ok(number) = value.parse::<i64>()
    {
        return toml::Value::Integer(number);
    }
    toml::Value::String(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn environment_overrides_file_and_defaults_fill_the_rest() {
        let dir = std::env::temp_dir().join(format!("portico-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("portico.toml");
        std::fs::write(
            &file,
            "[legacy]\nadapter = \"openemr\"\nurl = \"mysql://a:b@h/db\"\n[server]\nport = 9000\n",
        )
        .unwrap();
        let settings = load_from(
            Some(&file),
            &env(&[
                ("PORTICO_SERVER__PORT", "9100"),
                ("PORTICO_LEGACY__STATEMENT_TIMEOUT_MS", "250"),
            ]),
        )
        .unwrap();
        assert_eq!(settings.server.port, 9100);
        assert_eq!(settings.legacy.statement_timeout_ms, 250);
        assert_eq!(settings.legacy.max_connections, 10);
        assert_eq!(settings.server.host, "127.0.0.1");
    }

    #[test]
    fn the_example_settings_file_loads() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("portico.example.toml");
        let settings = load_from(Some(&example), &[]).unwrap();
        assert_eq!(settings.auth.backend_token_seconds, 300);
        assert!(settings.state.url.is_none());
        assert!(settings.subscriptions.enabled);
        assert_eq!(settings.subscriptions.poll_interval_ms, 5000);
        assert_eq!(
            settings.reconcile.types,
            ["Patient", "Appointment", "Claim"]
        );
        assert!(settings.reconcile.ehr_url.is_none());
        assert_eq!(settings.export.expire_hours, 24);
        assert_eq!(settings.export.lease_seconds, 120);
        assert_eq!(settings.quality.schedule_minutes, 1440);
        assert!(!settings.subscriptions.allow_private_endpoints);
        let local = load_from(
            Some(&example),
            &env(&[("PORTICO_AUTH__ACCESS_TOKEN_SECONDS", "600")]),
        )
        .unwrap();
        assert_eq!(local.auth.access_token_seconds, 600);
    }

    #[test]
    fn secrets_do_not_print_and_unknown_keys_fail() {
        let settings = load_from(
            None,
            &env(&[
                ("PORTICO_LEGACY__ADAPTER", "openemr"),
                ("PORTICO_LEGACY__URL", "mysql://u:hunter2@h/db"),
            ]),
        )
        .unwrap();
        assert!(!format!("{settings:?}").contains("hunter2"));
        let error = load_from(
            None,
            &env(&[
                ("PORTICO_LEGACY__ADAPTER", "x"),
                ("PORTICO_LEGACY__URL", "x"),
                ("PORTICO_LEGACY__COLOUR", "red"),
            ]),
        )
        .unwrap_err();
        assert!(error.to_string().contains("colour"), "{error}");
    }

    #[test]
    fn the_export_lease_defaults_to_two_minutes_and_refuses_zero() {
        let legacy = [("PORTICO_LEGACY__ADAPTER", "openemr")];
        let settings = load_from(None, &env(&legacy)).unwrap();
        assert_eq!(settings.export.lease_seconds, 120);
        assert_eq!(settings.export.lease_ms(), 120_000);
        assert_eq!(ExportSettings::default().lease_seconds, 120);
        let settings = load_from(
            None,
            &env(&[legacy[0], ("PORTICO_EXPORT__LEASE_SECONDS", "300")]),
        )
        .unwrap();
        assert_eq!(settings.export.lease_ms(), 300_000);
        let file = std::env::temp_dir().join(format!("portico-lease-{}.toml", std::process::id()));
        std::fs::write(
            &file,
            "[legacy]\nadapter = \"openemr\"\n[export]\nlease_seconds = 1\n",
        )
        .unwrap();
        assert_eq!(load_from(Some(&file), &[]).unwrap().export.lease_seconds, 1);
        let zero = env(&[legacy[0], ("PORTICO_EXPORT__LEASE_SECONDS", "0")]);
        let error = load_from(None, &zero).unwrap_err().to_string();
        assert!(error.contains("export.lease_seconds is 0"), "{error}");
        std::fs::write(
            &file,
            "[legacy]\nadapter = \"openemr\"\n[export]\nlease_seconds = 0\n",
        )
        .unwrap();
        let error = load_from(Some(&file), &[]).unwrap_err().to_string();
        assert!(
            error.contains("export.lease_seconds is 0") && error.contains("at least 1 second"),
            "{error}"
        );
        // Negative, fractional or textual values are refused too; a huge one saturates.
        for value in ["-5", "1.5", "\"two minutes\""] {
            std::fs::write(
                &file,
                format!("[legacy]\nadapter = \"openemr\"\n[export]\nlease_seconds = {value}\n"),
            )
            .unwrap();
            assert!(load_from(Some(&file), &[]).is_err(), "{value}");
        }
        let huge = ExportSettings {
            lease_seconds: u64::MAX,
            ..ExportSettings::default()
        };
        assert_eq!(huge.lease_ms(), i64::MAX);
        std::fs::remove_file(&file).ok();
    }

    #[test]
    fn trusted_proxies_come_as_a_list_or_as_commas() {
        let file =
            std::env::temp_dir().join(format!("portico-proxies-{}.toml", std::process::id()));
        std::fs::write(
            &file,
            "[legacy]\nadapter = \"openemr\"\n[server]\ntrusted_proxies = [\"10.0.0.1\", \"fd00::/8\"]\n",
        )
        .unwrap();
        let settings = load_from(Some(&file), &[]).unwrap();
        assert_eq!(settings.server.trusted_proxies, ["10.0.0.1", "fd00::/8"]);
        let settings = load_from(
            None,
            &env(&[
                ("PORTICO_LEGACY__ADAPTER", "openemr"),
                ("PORTICO_SERVER__TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8,"),
                ("PORTICO_SERVER__TLS_CERT", "/etc/portico/cert.pem"),
            ]),
        )
        .unwrap();
        assert_eq!(settings.server.trusted_proxies, ["127.0.0.1", "10.0.0.0/8"]);
        assert_eq!(
            settings.server.tls_cert.as_deref(),
            Some(Path::new("/etc/portico/cert.pem"))
        );
        assert_eq!(settings.server.tls_key, None);
    }
}
