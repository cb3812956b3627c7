//! Reconciliation against the EHR (`portico reconcile`, issue 10): what Portico serves compared,
//! per resource type and per day, with what the EHR's FHIR API holds (`compare`). Portico's side
//! is read through the repository, as detection reads it; the EHR's through its search API with a
//! SMART Backend Services token. `portico reconcile` (`cli/reconcile.rs`) runs it; the status page
//! and the fail-safe flag read its recorded runs. Still to come: a schedule under `portico serve`.

pub mod compare;

use anyhow::Context;
use oauth2::basic::BasicClient;
use oauth2::{AuthType, ClientId, Scope, TokenResponse, TokenUrl};
use serde::Serialize;
use serde_json::Value as Json;

use self::compare::{Keyed, TypeReport};
use crate::dialect::ast::Cond;
use crate::repository::Repository;

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
                    .map(|found| Keyed::of(&found.resource)),
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
