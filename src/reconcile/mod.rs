//! Reconciliation against the EHR (`portico reconcile`, issue 10): what Portico serves compared,
//! per resource type and per day, with what the EHR's FHIR API holds (`compare`). Portico's side
//! is read through the repository, as detection reads it; the EHR's through its search API with a
//! SMART Backend Services token. `portico reconcile` (`cli/reconcile.rs`) runs it on demand and
//! `portico serve` every `reconcile.schedule_minutes` (`run_on_schedule`); both record the run
//! here (`record`), which the status page and the fail-safe flag read.

pub mod compare;

use anyhow::Context;
use oauth2::basic::BasicClient;
use oauth2::{AuthType, ClientId, Scope, TokenResponse, TokenUrl};
use serde::Serialize;
use serde_json::Value as Json;

use self::compare::{Keyed, TypeReport};
use crate::config::ReconcileSettings;
use crate::dialect::ast::Cond;
use crate::repository::Repository;
use crate::state::check_runs::CheckRun;
use crate::state::{StateError, StateStore};

/// The `check_run` kind of reconciliations.
pub const KIND: &str = "reconcile";

/// Resources asked of the EHR per page.
const EHR_PAGE: usize = 500;
/// Rows read per step of Portico's side.
const SCAN_ROWS: u64 = 2000;
/// Pages followed at the most per type: a guard against a `next` link that never ends.
const MAX_EHR_PAGES: usize = 10_000;

/// How Portico reaches the EHR: its FHIR base and the Backend Services client it is registered as.
#[derive(Debug, Clone)]
pub struct Ehr {
    pub base: String,
    pub client_id: String,
    /// PEM (PKCS#8) of the client's RS384 private key.
    pub private_key_pem: String,
    /// The `kid` of the key in the JWKS the EHR holds for the client.
    pub key_id: Option<String>,
    pub scope: String,
}

impl Ehr {
    /// The EHR `settings` name (`[reconcile]`, with any command-line overrides laid over it),
    /// with its key read from the key file.
    pub fn configured(settings: &ReconcileSettings) -> anyhow::Result<Ehr> {
        let base = settings
            .ehr_url
            .clone()
            .context("no EHR to reconcile with: give --ehr or set reconcile.ehr_url")?;
        let client_id = settings
            .client_id
            .clone()
            .context("give --client-id or set reconcile.client_id")?;
        let key_file = settings
            .key_file
            .as_ref()
            .context("give --key or set reconcile.key_file")?;
        let private_key_pem = std::fs::read_to_string(key_file)
            .with_context(|| format!("cannot read the key file {}", key_file.display()))?;
        Ok(Ehr {
            base,
            client_id,
            private_key_pem,
            key_id: settings.key_id.clone(),
            scope: settings
                .types
                .iter()
                .map(|t| format!("system/{t}.rs"))
                .collect::<Vec<_>>()
                .join(" "),
        })
    }
}

/// One reconciliation's results.
#[derive(Debug, Clone, Serialize)]
pub struct ReconcileReport {
    pub ehr: String,
    pub started_ms: i64,
    pub finished_ms: i64,
    /// Only resources on or after this day were compared (`--since`).
    pub since: Option<String>,
    pub types: Vec<TypeReport>,
}

impl ReconcileReport {
    pub fn drift(&self) -> u64 {
        self.types.iter().map(TypeReport::drift).sum()
    }
}

/// Compares each of `types` on both sides.
pub async fn run(
    repository: &Repository,
    ehr: &Ehr,
    types: &[String],
    since: Option<&str>,
) -> anyhow::Result<ReconcileReport> {
    let started_ms = crate::state::subscriptions::now_ms();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .context("HTTP client")?;
    let token = backend_services_token(&http, ehr).await?;
    let mut reports = Vec::new();
    for resource_type in types {
        let ours = served(repository, resource_type).await?;
        let theirs = held(&http, &ehr.base, &token, resource_type).await?;
        let on_or_after = |records: Vec<Keyed>| -> Vec<Keyed> {
            match since {
                Some(day) => records
                    .into_iter()
                    .filter(|r| r.day.as_deref().is_none_or(|d| d >= day))
                    .collect(),
                None => records,
            }
        };
        reports.push(compare::compare(
            resource_type,
            on_or_after(ours),
            on_or_after(theirs),
        ));
    }
    Ok(ReconcileReport {
        ehr: ehr.base.clone(),
        started_ms,
        finished_ms: crate::state::subscriptions::now_ms(),
        since: since.map(str::to_owned),
        types: reports,
    })
}

/// Keeps a finished run as the latest reconciliation: its counts per type (the records
/// themselves are the report's, printed by `portico reconcile`).
pub async fn record(store: &StateStore, report: &ReconcileReport) -> Result<(), StateError> {
    let types: Vec<Json> = report
        .types
        .iter()
        .map(|t| {
            serde_json::json!({
                "type": t.resource_type, "portico": t.portico, "ehr": t.ehr,
                "missing": t.missing.len(), "extra": t.extra.len(),
                "differing": t.differing.len(),
            })
        })
        .collect();
    store
        .record_check_run(&CheckRun {
            kind: KIND.to_owned(),
            started_ms: report.started_ms,
            finished_ms: report.finished_ms,
            fails: report.drift() > 0,
            findings: report.drift() as i64,
            summary: serde_json::json!({"ehr": report.ehr, "since": report.since, "types": types})
                .to_string(),
            error: None,
        })
        .await
}

/// A recorded run's drift per type: (resource type, `missing`|`extra`|`differing`, count).
pub fn drift_counts(run: &CheckRun) -> Vec<(String, &'static str, u64)> {
    let summary: Json = serde_json::from_str(&run.summary).unwrap_or_default();
    let mut counts = Vec::new();
    for row in summary["types"].as_array().into_iter().flatten() {
        let Some(resource_type) = row["type"].as_str() else {
            continue;
        };
        for difference in ["missing", "extra", "differing"] {
            counts.push((
                resource_type.to_owned(),
                difference,
                row[difference].as_u64().unwrap_or(0),
            ));
        }
    }
    counts
}

/// Keeps a run that could not finish (the EHR unreachable, its token refused) as the latest
/// reconciliation, so the status page says so instead of showing an old result as current. The
/// fail-safe flag keeps reading the latest finished run: a comparison not made neither raises
/// nor clears its cause.
pub async fn record_failure(
    store: &StateStore,
    ehr: &str,
    started_ms: i64,
    error: &anyhow::Error,
) -> Result<(), StateError> {
    store
        .record_check_run(&CheckRun {
            kind: KIND.to_owned(),
            started_ms,
            finished_ms: crate::state::subscriptions::now_ms(),
            fails: true,
            findings: 0,
            summary: serde_json::json!({"ehr": ehr}).to_string(),
            error: Some(format!("{error:#}")),
        })
        .await
}

/// The first day a run with a window of `days` compares (`reconcile.days`; 0: no window).
pub fn window_start(days: u64) -> Option<String> {
    (days > 0).then(|| {
        (chrono::Utc::now().date_naive() - chrono::Days::new(days))
            .format("%Y-%m-%d")
            .to_string()
    })
}

/// One scheduled reconciliation, recorded whether it finished or failed.
pub async fn run_and_record(
    repository: &Repository,
    store: &StateStore,
    settings: &ReconcileSettings,
) {
    let started_ms = crate::state::subscriptions::now_ms();
    let ehr_url = settings.ehr_url.clone().unwrap_or_default();
    let outcome = match Ehr::configured(settings) {
        Ok(ehr) => {
            run(
                repository,
                &ehr,
                &settings.types,
                window_start(settings.days).as_deref(),
            )
            .await
        }
        Err(error) => Err(error),
    };
    let recorded = match &outcome {
        Ok(report) => {
            tracing::info!(
                drift = report.drift(),
                seconds = (report.finished_ms - report.started_ms) / 1000,
                "reconciliation with the EHR done"
            );
            record(store, report).await
        }
        Err(error) => {
            tracing::warn!(error = %format!("{error:#}"), "the reconciliation with the EHR failed");
            record_failure(store, &ehr_url, started_ms, error).await
        }
    };
    if let Err(error) = recorded {
        tracing::warn!(%error, "the reconciliation could not be recorded");
    }
}

/// Reconciles every `reconcile.schedule_minutes` under `portico serve`, until `shutdown`.
pub async fn run_on_schedule(
    repository: Repository,
    store: StateStore,
    settings: ReconcileSettings,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let every = std::time::Duration::from_secs(settings.schedule_minutes * 60);
    let recorder = store.clone();
    crate::app::workers::run_check_on_schedule(
        store,
        KIND,
        every,
        crate::app::workers::SETTLE,
        shutdown,
        || run_and_record(&repository, &recorder, &settings),
    )
    .await
}

/// Every resource of `resource_type` Portico serves, through each mapping's keyset scan.
async fn served(repository: &Repository, resource_type: &str) -> anyhow::Result<Vec<Keyed>> {
    let def = repository
        .adapter
        .resources
        .get(resource_type)
        .with_context(|| format!("the adapter does not serve {resource_type}"))?;
    let mut records = Vec::new();
    for (branch_index, mapping) in def.mappings.iter().enumerate() {
        let mut after = None;
        loop {
            let scanned = repository
                .scan(branch_index, mapping, Cond::True, after, SCAN_ROWS)
                .await
                .map_err(|e| anyhow::anyhow!("{resource_type}: {e}"))?;
            records.extend(
                scanned
                    .outcomes
                    .iter()
                    .filter_map(|(outcome, _)| outcome.as_ref().ok())
                    .map(|found| Keyed::of(&found.resource.to_json())),
            );
            if (scanned.rows as u64) < SCAN_ROWS {
                break;
            }
            after = scanned.last_key;
        }
    }
    Ok(records)
}

/// Every resource of `resource_type` the EHR holds, page after page of its search.
async fn held(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    resource_type: &str,
) -> anyhow::Result<Vec<Keyed>> {
    let mut records = Vec::new();
    let mut url = format!(
        "{}/{resource_type}?_count={EHR_PAGE}",
        base.trim_end_matches('/')
    );
    for _ in 0..MAX_EHR_PAGES {
        let answer = http
            .get(&url)
            .bearer_auth(token)
            .header("accept", "application/fhir+json")
            .send()
            .await
            .with_context(|| format!("the EHR did not answer {resource_type} search"))?;
        let status = answer.status();
        anyhow::ensure!(
            status.is_success(),
            "the EHR answered {status} to a {resource_type} search"
        );
        let bundle: Json = answer
            .json()
            .await
            .with_context(|| format!("the EHR's {resource_type} search is not JSON"))?;
        records.extend(
            bundle["entry"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|entry| {
                    entry["search"]["mode"]
                        .as_str()
                        .is_none_or(|m| m == "match")
                })
                .map(|entry| &entry["resource"])
                .filter(|resource| resource["resourceType"] == resource_type)
                .map(Keyed::of),
        );
        let next = bundle["link"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|link| link["relation"] == "next")
            .and_then(|link| link["url"].as_str());
        match next {
            Some(next) => url = next.to_owned(),
            None => return Ok(records),
        }
    }
    anyhow::bail!("the EHR's {resource_type} search had more than {MAX_EHR_PAGES} pages")
}

/// An access token from the EHR by SMART Backend Services: its token endpoint from
/// `.well-known/smart-configuration`, a client credentials grant authenticated by an RS384
/// assertion signed with the client's key (the `oauth2` crate sends it).
async fn backend_services_token(http: &reqwest::Client, ehr: &Ehr) -> anyhow::Result<String> {
    let discovery = format!(
        "{}/.well-known/smart-configuration",
        ehr.base.trim_end_matches('/')
    );
    let configuration: Json = http
        .get(&discovery)
        .send()
        .await
        .with_context(|| format!("cannot reach {discovery}"))?
        .error_for_status()
        .with_context(|| format!("{discovery} refused"))?
        .json()
        .await
        .with_context(|| format!("{discovery} is not JSON"))?;
    let token_endpoint = configuration["token_endpoint"]
        .as_str()
        .with_context(|| format!("{discovery} names no token_endpoint"))?;
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(ehr.private_key_pem.as_bytes())
        .context("the reconcile private key is not an RSA key in PEM")?;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS384);
    header.kid = ehr.key_id.clone();
    header.typ = Some("JWT".into());
    let now = chrono::Utc::now().timestamp();
    let claims = serde_json::json!({
        "iss": ehr.client_id, "sub": ehr.client_id, "aud": token_endpoint,
        "exp": now + 240, "iat": now, "jti": uuid::Uuid::new_v4().to_string(),
    });
    let assertion =
        jsonwebtoken::encode(&header, &claims, &key).context("cannot sign the client assertion")?;
    let client = BasicClient::new(ClientId::new(ehr.client_id.clone()))
        .set_auth_type(AuthType::RequestBody)
        .set_token_uri(TokenUrl::new(token_endpoint.to_owned()).context("token_endpoint")?);
    let mut request = client
        .exchange_client_credentials()
        .add_extra_param(
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        )
        .add_extra_param("client_assertion", assertion);
    for scope in ehr.scope.split_whitespace() {
        request = request.add_scope(Scope::new(scope.to_owned()));
    }
    let response = request
        .request_async(http)
        .await
        .map_err(|error| match error {
            oauth2::RequestTokenError::ServerResponse(answer) => {
                anyhow::anyhow!("the EHR's token endpoint answered {}", answer.error())
            }
            other => anyhow::anyhow!("no token from the EHR: {other}"),
        })?;
    Ok(response.access_token().secret().clone())
}
