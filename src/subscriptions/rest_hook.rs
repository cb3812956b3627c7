//! The rest-hook channel's sender: one POST of a notification to a subscriber's endpoint, past the
//! SSRF guard, signed per Standard Webhooks v1, with the channel's headers and, for EHRs that want
//! one, an OAuth2 client-credentials bearer token. It reports what happened; the outbox worker
//! decides what follows (`schedule`). No secret, header value or body is ever logged or put in
//! an outcome's reason.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use oauth2::basic::BasicClient;
use oauth2::{ClientId, ClientSecret, RequestTokenError, Scope, TokenResponse, TokenUrl};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use sha2::Sha256;

use super::endpoint_guard::{self, EndpointRefused, GuardedResolver, SubscriptionSettings};
use super::schedule::parse_retry_after;

/// Time to establish the TCP (and TLS) connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for the whole exchange, from sending to the end of the response (Svix hosted's 15 s).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(15);

/// One notification to POST.
pub struct Delivery {
    /// `channel.endpoint`.
    pub endpoint: String,
    /// `channel.payload`: sent as `Content-Type` (SB-26).
    pub content_type: String,
    /// `channel.header`: each `Name: value` is sent as a header (SB-26); see `channel_headers`.
    pub channel_headers: Vec<String>,
    pub body: Vec<u8>,
    /// The event's stable id: the same on every attempt, so receivers de-duplicate on it
    /// (`webhook-id`).
    pub webhook_id: String,
    /// The subscription's signing secrets: none sends no signature; two (during a rotation) send
    /// one signature per secret, space-separated, as Standard Webhooks prescribes.
    pub signing_secrets: Vec<SigningSecret>,
    /// Client-credentials settings when the endpoint wants a bearer token.
    pub oauth: Option<OutboundOAuth>,
    /// The subscription's own limit on the whole exchange (`backport-timeout`), in place of the
    /// sender's.
    pub response_timeout: Option<Duration>,
}

/// What one delivery came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The endpoint answered 2xx.
    Delivered,
    /// A transient failure: a timeout, a connection that failed or closed, 408, 429 or 5xx (with
    /// the endpoint's `Retry-After` when it sent one the schedule can use).
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// 410 Gone: the subscriber wants no more; the subscription is disabled.
    Gone,
    /// The endpoint refused the notification (3xx, since redirects are not followed, and 4xx
    /// other than 408, 410 and 429), or Portico refused to send it (`status` is `None`: the SSRF
    /// guard, a malformed channel header, an OAuth error answer from the token endpoint).
    Failed { status: Option<u16>, reason: String },
}

/// A Standard Webhooks v1 signing secret (the HMAC-SHA256 key), written `whsec_` + base64.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(Vec<u8>);

/// Why a `whsec_` string is not a signing secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a signing secret is whsec_ followed by the base64 of 32 to 64 bytes")]
pub struct InvalidSigningSecret;

impl SigningSecret {
    /// The length of the secrets `generate` makes (the policy's at least 32 bytes).
    pub const GENERATED_BYTES: usize = 32;

    /// A new secret of `GENERATED_BYTES` bytes from the system's random generator.
    pub fn generate() -> SigningSecret {
        let mut key = vec![0u8; Self::GENERATED_BYTES];
        aws_lc_rs::rand::fill(&mut key).expect("the system random generator failed");
        SigningSecret(key)
    }

    /// Reads `whsec_<base64>`, 32 to 64 bytes (at least the generated length; Standard
    /// Webhooks' maximum of 512 bits).
    pub fn parse(text: &str) -> Result<SigningSecret, InvalidSigningSecret> {
        let encoded = text.strip_prefix("whsec_").ok_or(InvalidSigningSecret)?;
        let key = STANDARD.decode(encoded).map_err(|_| InvalidSigningSecret)?;
        if !(Self::GENERATED_BYTES..=64).contains(&key.len()) {
            return Err(InvalidSigningSecret);
        }
        Ok(SigningSecret(key))
    }

    /// The `whsec_` form, to hand to the subscriber once.
    pub fn to_whsec(&self) -> String {
        format!("whsec_{}", STANDARD.encode(&self.0))
    }

    /// `v1,` + base64 HMAC-SHA256 of `id.timestamp.body`.
    fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(..)")
    }
}

/// An EHR's OAuth2 token endpoint and Portico's client there (client_credentials, the secret in
/// HTTP Basic as RFC 6749 §2.3.1 requires servers to accept).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct OutboundOAuth {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: String,
    /// Space-separated scopes to ask for, if any.
    pub scope: Option<String>,
}

impl fmt::Debug for OutboundOAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundOAuth")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// Why a channel header cannot be sent. Names the header (by position, and by name when it has
/// one), never its value, which is often a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HeaderRefused(pub String);

/// Headers Portico sets itself, or that would change how the request is framed or routed.
const RESERVED_HEADERS: [&str; 14] = [
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "expect",
    "proxy-connection",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

/// The channel's `Name: value` strings as headers: a token name, a value without control
/// characters, none of `RESERVED_HEADERS`, and no `Authorization` when Portico fetches the bearer
/// token itself (`with_oauth`). For create-time validation as well as for sending.
pub fn channel_headers(
    lines: &[String],
    with_oauth: bool,
) -> Result<Vec<(HeaderName, HeaderValue)>, HeaderRefused> {
    let mut headers = Vec::with_capacity(lines.len());
    for (index, line) in lines.iter().enumerate() {
        let refuse = |why: String| HeaderRefused(format!("channel header {}: {why}", index + 1));
        let Some((name, value)) = line.split_once(':') else {
            return Err(refuse("is not `Name: value`".into()));
        };
        let Ok(name) = HeaderName::from_bytes(name.trim().as_bytes()) else {
            return Err(refuse("its name is not a valid header name".into()));
        };
        if RESERVED_HEADERS.contains(&name.as_str()) {
            return Err(refuse(format!("{name} is set by Portico")));
        }
        if with_oauth && name == AUTHORIZATION {
            return Err(refuse(format!(
                "{name} is set by Portico from the channel's OAuth token"
            )));
        }
        let Ok(value) = HeaderValue::from_str(value.trim_matches([' ', '\t'])) else {
            return Err(refuse(format!(
                "the value of {name} holds characters a header cannot carry"
            )));
        };
        headers.push((name, value));
    }
    Ok(headers)
}

/// POSTs notifications; cheap to clone (one HTTP client and one token cache, shared).
#[derive(Clone)]
pub struct RestHookSender {
    http: reqwest::Client,
    resolver: Arc<GuardedResolver>,
    settings: SubscriptionSettings,
    tokens: TokenCache,
}

impl RestHookSender {
    pub fn new(settings: SubscriptionSettings) -> RestHookSender {
        RestHookSender::with_timeouts(settings, CONNECT_TIMEOUT, RESPONSE_TIMEOUT)
    }

    /// A sender with other timeouts (tests shorten them).
    pub fn with_timeouts(
        settings: SubscriptionSettings,
        connect: Duration,
        response: Duration,
    ) -> RestHookSender {
        let resolver = GuardedResolver::new(settings.clone());
        // rustls with the ring provider reqwest picks explicitly for its own client (no process
        // default is installed), as for the JWKS fetcher; redirects are failures, never followed.
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(connect)
            .timeout(response)
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(resolver.clone())
            .user_agent(concat!("portico/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client builds");
        RestHookSender {
            http,
            resolver,
            settings,
            tokens: TokenCache::default(),
        }
    }

    /// Sends `delivery` once (twice when the endpoint answers 401 to a cached OAuth token: once
    /// more with a fresh one).
    pub async fn deliver(&self, delivery: &Delivery) -> DeliveryOutcome {
        let request = match self.prepare(delivery).await {
            Ok(request) => request,
            Err(outcome) => return outcome,
        };
        let mut token = match &delivery.oauth {
            Some(oauth) => match self.bearer(oauth, None).await {
                Ok(token) => Some(token),
                Err(outcome) => return outcome,
            },
            None => None,
        };
        let mut response = self.post(&request, delivery, token.as_deref()).await;
        if let (Ok(answer), Some(oauth)) = (&response, &delivery.oauth)
            && answer.status() == StatusCode::UNAUTHORIZED
        {
            token = match self.bearer(oauth, token.as_deref()).await {
                Ok(token) => Some(token),
                Err(outcome) => return outcome,
            };
            response = self.post(&request, delivery, token.as_deref()).await;
        }
        let outcome = match response {
            Ok(answer) => {
                let outcome = classify(&answer);
                drain(answer).await;
                outcome
            }
            Err(error) => transport_failure(&error),
        };
        tracing::debug!(
            host = request.url.host_str().unwrap_or(""),
            outcome = outcome_name(&outcome),
            "rest-hook delivery"
        );
        outcome
    }

    /// Everything about the request that does not change between sends, checked.
    async fn prepare(&self, delivery: &Delivery) -> Result<PreparedRequest, DeliveryOutcome> {
        let refused = |reason: String| DeliveryOutcome::Failed {
            status: None,
            reason,
        };
        let mut headers = HeaderMap::new();
        for (name, mut value) in
            channel_headers(&delivery.channel_headers, delivery.oauth.is_some())
                .map_err(|e| refused(e.0))?
        {
            // Channel header values are often credentials: kept out of any Debug output.
            value.set_sensitive(true);
            headers.append(name, value);
        }
        let content_type = HeaderValue::from_str(&delivery.content_type)
            .map_err(|_| refused("the payload type is not a valid Content-Type".into()))?;
        headers.insert(CONTENT_TYPE, content_type);
        // Standard Webhooks: the id is signed as `id.timestamp.body`, so it must not hold a dot.
        if delivery.webhook_id.is_empty()
            || delivery.webhook_id.contains('.')
            || HeaderValue::from_str(&delivery.webhook_id).is_err()
        {
            return Err(refused("the event id cannot be a webhook-id".into()));
        }
        let vetted = endpoint_guard::vet(&delivery.endpoint, &self.settings)
            .await
            .map_err(|e| refused(e.0))?;
        self.resolver.pin(&vetted);
        Ok(PreparedRequest {
            url: vetted.url,
            headers,
        })
    }

    async fn post(
        &self,
        request: &PreparedRequest,
        delivery: &Delivery,
        bearer: Option<&str>,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let mut headers = request.headers.clone();
        if !delivery.signing_secrets.is_empty() {
            // Signed at each send: receivers reject timestamps more than 5 minutes off.
            let timestamp = crate::state::now();
            let signatures: Vec<String> = delivery
                .signing_secrets
                .iter()
                .map(|secret| secret.sign(&delivery.webhook_id, timestamp, &delivery.body))
                .collect();
            let value = |text: String| HeaderValue::try_from(text).expect("checked or generated");
            headers.insert("webhook-id", value(delivery.webhook_id.clone()));
            headers.insert("webhook-timestamp", value(timestamp.to_string()));
            headers.insert("webhook-signature", value(signatures.join(" ")));
        }
        // `bearer` only returns header-safe tokens.
        if let Some(token) = bearer
            && let Ok(mut value) = HeaderValue::try_from(format!("Bearer {token}"))
        {
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let mut post = self
            .http
            .post(request.url.clone())
            .headers(headers)
            .body(delivery.body.clone());
        if let Some(limit) = delivery.response_timeout {
            post = post.timeout(limit);
        }
        post.send().await
    }

    /// An access token for `oauth`: the cached one while it is fresh and is not `rejected`,
    /// otherwise a new one from the token endpoint. Concurrent deliveries to the same client
    /// wait for one fetch.
    async fn bearer(
        &self,
        oauth: &OutboundOAuth,
        rejected: Option<&str>,
    ) -> Result<String, DeliveryOutcome> {
        let slot = self.tokens.slot(oauth);
        let mut cached = slot.lock().await;
        if let Some(token) = cached.as_ref()
            && token.fresh_until > Instant::now()
            && rejected != Some(token.access_token.as_str())
        {
            return Ok(token.access_token.clone());
        }
        *cached = None;
        let fetched = self.fetch_token(oauth).await?;
        let access_token = fetched.access_token.clone();
        *cached = Some(fetched);
        Ok(access_token)
    }

    async fn fetch_token(&self, oauth: &OutboundOAuth) -> Result<CachedToken, DeliveryOutcome> {
        let failed = |reason: String| DeliveryOutcome::Failed {
            status: None,
            reason,
        };
        let vetted = endpoint_guard::vet(&oauth.token_url, &self.settings)
            .await
            .map_err(|e| failed(format!("token URL: {}", e.0)))?;
        self.resolver.pin(&vetted);
        let token_url = TokenUrl::new(vetted.url.to_string())
            .map_err(|_| failed("the token URL is not a URL".into()))?;
        let client = BasicClient::new(ClientId::new(oauth.client_id.clone()))
            .set_client_secret(ClientSecret::new(oauth.client_secret.clone()))
            .set_token_uri(token_url);
        let mut request = client.exchange_client_credentials();
        for scope in oauth.scope.iter().flat_map(|s| s.split_whitespace()) {
            request = request.add_scope(Scope::new(scope.to_owned()));
        }
        let fetched_at = Instant::now();
        let response = request.request_async(&self.http).await.map_err(|error| {
            let retry = |reason: String| DeliveryOutcome::Retry {
                after: None,
                reason,
            };
            match error {
                // An OAuth error answer (invalid_client, invalid_scope...): the settings are wrong.
                RequestTokenError::ServerResponse(answer) => {
                    failed(format!("the token endpoint answered {}", answer.error()))
                }
                RequestTokenError::Request(oauth2::HttpClientError::Reqwest(error)) => {
                    match transport_failure(&error) {
                        DeliveryOutcome::Retry { reason, .. } => {
                            retry(format!("token endpoint: {reason}"))
                        }
                        other => other,
                    }
                }
                // Bodies are not quoted: a token endpoint's answer may hold anything.
                _ => retry("the token endpoint gave no usable answer".into()),
            }
        })?;
        let access_token = response.access_token().secret().clone();
        if HeaderValue::from_str(&format!("Bearer {access_token}")).is_err() {
            return Err(failed(
                "the token endpoint issued a token that cannot be a header".into(),
            ));
        }
        Ok(CachedToken {
            access_token,
            fresh_until: fetched_at + fresh_for(response.expires_in()),
        })
    }
}

struct PreparedRequest {
    url: reqwest::Url,
    headers: HeaderMap,
}

/// Tokens by the client settings they were issued for.
#[derive(Clone, Default)]
struct TokenCache {
    slots: Arc<Mutex<HashMap<OutboundOAuth, TokenSlot>>>,
}

/// One client's token, locked across a fetch so concurrent deliveries wait for one.
type TokenSlot = Arc<tokio::sync::Mutex<Option<CachedToken>>>;

impl TokenCache {
    fn slot(&self, oauth: &OutboundOAuth) -> TokenSlot {
        self.slots
            .lock()
            .expect("the token cache is never poisoned")
            .entry(oauth.clone())
            .or_default()
            .clone()
    }
}

struct CachedToken {
    access_token: String,
    fresh_until: Instant,
}

/// Assumed lifetime of a token issued without `expires_in`.
const UNSTATED_TOKEN_LIFETIME: Duration = Duration::from_secs(300);
/// A token is replaced this long before it expires (or at half its lifetime, if shorter), so it
/// does not expire in flight.
const TOKEN_EXPIRY_MARGIN: Duration = Duration::from_secs(30);

/// How long a token issued with `expires_in` is used.
fn fresh_for(expires_in: Option<Duration>) -> Duration {
    let lifetime = expires_in.unwrap_or(UNSTATED_TOKEN_LIFETIME);
    lifetime - TOKEN_EXPIRY_MARGIN.min(lifetime / 2)
}

/// The outcome an HTTP answer means.
fn classify(answer: &reqwest::Response) -> DeliveryOutcome {
    let status = answer.status();
    let reason = format!("the endpoint answered {}", status.as_u16());
    match status.as_u16() {
        200..=299 => DeliveryOutcome::Delivered,
        410 => DeliveryOutcome::Gone,
        408 | 429 | 500..=599 => DeliveryOutcome::Retry {
            after: answer
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| parse_retry_after(value, SystemTime::now())),
            reason,
        },
        300..=399 => DeliveryOutcome::Failed {
            status: Some(status.as_u16()),
            reason: format!("{reason} (redirects are not followed)"),
        },
        code => DeliveryOutcome::Failed {
            status: Some(code),
            reason,
        },
    }
}

/// How much of an answer's body is read (and discarded) so its connection can carry the next
/// notification; a longer body closes the connection instead.
const DRAINED_BODY: usize = 64 * 1024;

async fn drain(mut answer: reqwest::Response) {
    let mut read = 0;
    while let Ok(Some(chunk)) = answer.chunk().await {
        read += chunk.len();
        if read > DRAINED_BODY {
            break;
        }
    }
}

/// The outcome of a request that got no answer. The URL is left out of the reason: its query may
/// hold a credential.
fn transport_failure(error: &reqwest::Error) -> DeliveryOutcome {
    // The connect-time resolver refused the name (it changed since `vet`, or was never pinned).
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(EndpointRefused(reason)) = cause.downcast_ref::<EndpointRefused>() {
            return DeliveryOutcome::Failed {
                status: None,
                reason: reason.clone(),
            };
        }
        source = cause.source();
    }
    let reason = if error.is_timeout() {
        "the endpoint did not answer in time".to_owned()
    } else if error.is_connect() {
        "could not connect to the endpoint".to_owned()
    } else {
        "the connection failed before an answer".to_owned()
    };
    DeliveryOutcome::Retry {
        after: None,
        reason,
    }
}

fn outcome_name(outcome: &DeliveryOutcome) -> &'static str {
    match outcome {
        DeliveryOutcome::Delivered => "delivered",
        DeliveryOutcome::Retry { .. } => "retry",
        DeliveryOutcome::Gone => "gone",
        DeliveryOutcome::Failed { .. } => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_random_and_read_back() {
        let secret = SigningSecret::generate();
        let text = secret.to_whsec();
        assert!(text.starts_with("whsec_"));
        assert_eq!(SigningSecret::parse(&text).unwrap(), secret);
        assert_eq!(secret.0.len(), 32);
        assert_ne!(SigningSecret::generate(), secret);
        assert_eq!(format!("{secret:?}"), "SigningSecret(..)");
    }

    #[test]
    fn secrets_that_are_refused() {
        let short = format!("whsec_{}", STANDARD.encode([7u8; 24]));
        let long = format!("whsec_{}", STANDARD.encode([7u8; 65]));
        let bare = STANDARD.encode([7u8; 32]);
        for text in [
            short.as_str(),
            long.as_str(),
            bare.as_str(),
            "whsec_!!",
            "whsec_",
        ] {
            assert_eq!(
                SigningSecret::parse(text),
                Err(InvalidSigningSecret),
                "{text}"
            );
        }
        let longest = format!("whsec_{}", STANDARD.encode([7u8; 64]));
        assert!(SigningSecret::parse(&longest).is_ok());
    }

    #[test]
    fn the_signature_of_the_standard_webhooks_example() {
        // The specification's own test vector (standard-webhooks, spec/standard-webhooks.md).
        let secret = SigningSecret(STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap());
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn channel_header_rules() {
        let ok = |lines: &[&str], oauth| {
            let lines: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
            channel_headers(&lines, oauth)
        };
        let headers = ok(
            &["Authorization: Bearer abc", "X-Tenant:  7 ", "X-Empty:"],
            false,
        )
        .unwrap();
        let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["authorization", "x-tenant", "x-empty"]);
        assert_eq!(headers[1].1, "7");
        assert_eq!(headers[2].1, "");

        // Columns: the header line, what the refusal says.
        let table = [
            ("no colon", "is not `Name: value`"),
            (": value", "not a valid header name"),
            ("Bad Name: value", "not a valid header name"),
            ("X-Split\r\nHost: evil: value", "not a valid header name"),
            (
                "X-Inject: a\r\nHost: evil",
                "characters a header cannot carry",
            ),
            ("X-Nul: a\0b", "characters a header cannot carry"),
            ("Content-Type: text/plain", "content-type is set by Portico"),
            ("HOST: elsewhere", "host is set by Portico"),
            ("Content-Length: 0", "content-length is set by Portico"),
            (
                "Transfer-Encoding: chunked",
                "transfer-encoding is set by Portico",
            ),
            (
                "webhook-signature: v1,forged",
                "webhook-signature is set by Portico",
            ),
        ];
        for (line, refusal) in table {
            let HeaderRefused(why) = ok(&["X-Fine: 1", line], false).unwrap_err();
            assert!(why.starts_with("channel header 2: "), "{line}: {why}");
            assert!(why.contains(refusal), "{line}: {why}");
            assert!(!why.contains("evil") && !why.contains("forged"), "{why}");
        }
        let HeaderRefused(why) = ok(&["Authorization: Bearer secret-value"], true).unwrap_err();
        assert!(why.contains("OAuth"), "{why}");
        assert!(!why.contains("secret-value"), "{why}");
    }

    #[test]
    fn tokens_are_replaced_shortly_before_they_expire() {
        let secs = Duration::from_secs;
        // Columns: expires_in, used for.
        let table = [
            (Some(3600), 3570),
            (Some(300), 270),
            (Some(40), 20),
            (Some(1), 0),
            (Some(0), 0),
            (None, 270),
        ];
        for (expires_in, used_for) in table {
            let used = fresh_for(expires_in.map(secs));
            assert_eq!(used.as_secs(), used_for, "expires_in {expires_in:?}");
        }
        assert_eq!(fresh_for(Some(secs(1))), Duration::from_millis(500));
    }

    #[test]
    fn the_oauth_secret_is_not_debug_printed() {
        let oauth = OutboundOAuth {
            token_url: "https://ehr.example/token".into(),
            client_id: "portico".into(),
            client_secret: "s3cr3t".into(),
            scope: Some("system/Subscription.write".into()),
        };
        let printed = format!("{oauth:?}");
        assert!(
            printed.contains("portico") && !printed.contains("s3cr3t"),
            "{printed}"
        );
    }
}
