//! The rest-hook sender against a real receiver on 127.0.0.1: what arrives (body, Content-Type,
//! channel headers, Standard Webhooks signatures checked by the independent `standardwebhooks`
//! crate), what each kind of answer or fault becomes, the SSRF guard, and outbound OAuth tokens
//! from a token endpoint in the test. Needs no database.
//!
//! Only loopback addresses are ever connected to: the private and link-local cases are refused
//! before any connection, and where private endpoints are allowed they are only vetted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use portico::subscriptions::endpoint_guard::{SubscriptionSettings, vet};
use portico::subscriptions::rest_hook::{
    Delivery, DeliveryOutcome, OutboundOAuth, RestHookSender, SigningSecret,
};
use standardwebhooks::Webhook;

const FHIR_JSON: &str = "application/fhir+json";
const CLIENT_ID: &str = "portico-at-ehr";
const CLIENT_SECRET: &str = "client-secret-never-logged";

/// A request the receiver got.
#[derive(Clone)]
struct Seen {
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// A request the token endpoint got: its form fields and HTTP Basic credentials.
#[derive(Clone)]
struct TokenRequest {
    form: HashMap<String, String>,
    basic: Option<String>,
}

#[derive(Default)]
struct ReceiverState {
    seen: Mutex<Vec<Seen>>,
    token_requests: Mutex<Vec<TokenRequest>>,
    /// The number in the last token issued (`token-N`); `/guarded` admits only that one.
    issued: AtomicUsize,
    /// `expires_in` of the tokens issued.
    expires_in: AtomicU64,
}

/// An axum receiver on 127.0.0.1:0 that records every request.
struct Receiver {
    base: String,
    port: u16,
    state: Arc<ReceiverState>,
}

impl Receiver {
    async fn start() -> Receiver {
        let state = Arc::new(ReceiverState::default());
        state.expires_in.store(3600, Ordering::SeqCst);
        let app = Router::new()
            .route("/answer/{code}", post(answer))
            .route("/slow", post(slow))
            .route("/guarded", post(guarded))
            .route("/token", post(token))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            base: format!("http://127.0.0.1:{port}"),
            port,
            state,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    fn seen_at(&self, path: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.path == path).collect()
    }

    fn token_requests(&self) -> usize {
        self.state.token_requests.lock().unwrap().len()
    }

    fn oauth(&self) -> OutboundOAuth {
        OutboundOAuth {
            token_url: self.url("/token"),
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
            scope: Some("system/Subscription.write  system/Patient.read".into()),
        }
    }
}

fn record(state: &ReceiverState, path: String, headers: HeaderMap, body: Bytes) {
    state.seen.lock().unwrap().push(Seen {
        path,
        headers,
        body: body.to_vec(),
    });
}

/// Answers the status in the path; `?retry_after=` adds that header, and a 3xx points back at
/// `/answer/200` (which must then not be called).
async fn answer(
    State(state): State<Arc<ReceiverState>>,
    Path(code): Path<u16>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(&state, format!("/answer/{code}"), headers, body);
    let mut response = StatusCode::from_u16(code).unwrap().into_response();
    if let Some(value) = query.get("retry_after") {
        response
            .headers_mut()
            .insert("retry-after", value.parse().unwrap());
    }
    if (300..400).contains(&code) {
        response
            .headers_mut()
            .insert("location", "/answer/200".parse().unwrap());
    }
    response
}

/// Answers 200 after 3 s: past the test sender's 1 s response timeout.
async fn slow(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    record(&state, "/slow".into(), headers, body);
    tokio::time::sleep(Duration::from_secs(3)).await;
    StatusCode::OK
}

/// 200 for the last token issued, 401 for anything else.
async fn guarded(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let current = format!("Bearer token-{}", state.issued.load(Ordering::SeqCst));
    let admitted = headers
        .get("authorization")
        .is_some_and(|value| value.as_bytes() == current.as_bytes());
    record(&state, "/guarded".into(), headers, body);
    if admitted {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    }
}

/// A client_credentials token endpoint for one client (HTTP Basic), issuing `token-1`, `token-2`...
async fn token(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| STANDARD.decode(v).ok())
        .and_then(|v| String::from_utf8(v).ok());
    state.token_requests.lock().unwrap().push(TokenRequest {
        form: form.clone(),
        basic: basic.clone(),
    });
    if basic.as_deref() != Some(&format!("{CLIENT_ID}:{CLIENT_SECRET}"))
        || form.get("grant_type").map(String::as_str) != Some("client_credentials")
    {
        let error = serde_json::json!({"error": "invalid_client"});
        return (StatusCode::UNAUTHORIZED, axum::Json(error)).into_response();
    }
    let n = state.issued.fetch_add(1, Ordering::SeqCst) + 1;
    axum::Json(serde_json::json!({
        "access_token": format!("token-{n}"),
        "token_type": "bearer",
        "expires_in": state.expires_in.load(Ordering::SeqCst),
        "scope": form.get("scope"),
    }))
    .into_response()
}

fn allowing_private() -> SubscriptionSettings {
    SubscriptionSettings {
        allow_private_endpoints: true,
    }
}

fn delivery(endpoint: String) -> Delivery {
    Delivery {
        endpoint,
        content_type: FHIR_JSON.into(),
        channel_headers: Vec::new(),
        body: notification(),
        webhook_id: "9f0c6d0e-4cf6-4b7e-9d5f-0c2f2b7a1e11".into(),
        signing_secrets: Vec::new(),
        oauth: None,
        response_timeout: None,
    }
}

/// A small notification Bundle as the outbox will hand it over.
fn notification() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "resourceType": "Bundle",
        "type": "history",
        "entry": [{
            "fullUrl": "urn:uuid:3b1f6c61-0b6a-4a49-9d7a-5f4b0a3f8c11",
            "resource": {
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "subscription", "valueReference": {"reference": "Subscription/1"}},
                    {"name": "status", "valueCode": "active"},
                    {"name": "type", "valueCode": "event-notification"},
                    {"name": "events-since-subscription-start", "valueString": "1"}
                ]
            },
            "request": {"method": "GET", "url": "Subscription/1/$status"},
            "response": {"status": "200"}
        }]
    }))
    .unwrap()
}

#[tokio::test]
async fn a_signed_notification_arrives_as_sent() {
    let receiver = Receiver::start().await;
    let sender = RestHookSender::new(allowing_private());
    let current = SigningSecret::generate();
    let previous = SigningSecret::generate();
    let mut signed = delivery(receiver.url("/answer/200"));
    signed.channel_headers = vec![
        "Authorization: Bearer ehr-issued-credential".into(),
        "X-Tenant:  clinic-7 ".into(),
    ];
    // During a rotation both secrets sign; a receiver holding either accepts.
    signed.signing_secrets = vec![current.clone(), previous.clone()];

    assert_eq!(sender.deliver(&signed).await, DeliveryOutcome::Delivered);

    let seen = receiver.seen();
    assert_eq!(seen.len(), 1);
    let got = &seen[0];
    assert_eq!(got.body, signed.body);
    assert_eq!(got.headers["content-type"], FHIR_JSON);
    assert_eq!(got.headers["authorization"], "Bearer ehr-issued-credential");
    assert_eq!(got.headers["x-tenant"], "clinic-7");
    assert_eq!(got.headers["webhook-id"], signed.webhook_id.as_str());
    let timestamp: u64 = got.headers["webhook-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(timestamp) < 60, "{timestamp} vs {now}");
    let signatures = got.headers["webhook-signature"].to_str().unwrap();
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
    assert!(signatures.split(' ').all(|s| s.starts_with("v1,")));
    // The receiver's library is not ours: a real independent check of the scheme.
    for secret in [&current, &previous] {
        Webhook::new(&secret.to_whsec())
            .unwrap()
            .verify(&got.body, &got.headers)
            .expect("the signature verifies with the subscriber's whsec_ secret");
    }
    let mut tampered = got.body.clone();
    tampered.push(b' ');
    let checker = Webhook::new(&current.to_whsec()).unwrap();
    assert!(checker.verify(&tampered, &got.headers).is_err());
    let stranger = Webhook::new(&SigningSecret::generate().to_whsec()).unwrap();
    assert!(stranger.verify(&got.body, &got.headers).is_err());

    // Unsigned without a secret; the same event id on a retry.
    let plain = delivery(receiver.url("/answer/200"));
    assert_eq!(sender.deliver(&plain).await, DeliveryOutcome::Delivered);
    let got = &receiver.seen()[1];
    for name in [
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "authorization",
    ] {
        assert!(!got.headers.contains_key(name), "{name} sent unsigned");
    }
    assert_eq!(got.headers["content-type"], FHIR_JSON);
    let mut xml = delivery(receiver.url("/answer/200"));
    xml.content_type = "application/fhir+xml".into();
    assert_eq!(sender.deliver(&xml).await, DeliveryOutcome::Delivered);
    assert_eq!(
        receiver.seen()[2].headers["content-type"],
        "application/fhir+xml"
    );
}

#[tokio::test]
async fn each_answer_becomes_an_outcome() {
    let receiver = Receiver::start().await;
    let sender = RestHookSender::new(allowing_private());
    let in_two_minutes = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
    let retry = |after: Option<u64>, code: u16| DeliveryOutcome::Retry {
        after: after.map(Duration::from_secs),
        reason: format!("the endpoint answered {code}"),
    };
    let failed = |code: u16| DeliveryOutcome::Failed {
        status: Some(code),
        reason: format!("the endpoint answered {code}"),
    };
    let table = [
        ("/answer/200".to_owned(), DeliveryOutcome::Delivered),
        ("/answer/202".to_owned(), DeliveryOutcome::Delivered),
        ("/answer/204".to_owned(), DeliveryOutcome::Delivered),
        ("/answer/500".to_owned(), retry(None, 500)),
        ("/answer/502".to_owned(), retry(None, 502)),
        ("/answer/408".to_owned(), retry(None, 408)),
        (
            "/answer/429?retry_after=120".to_owned(),
            retry(Some(120), 429),
        ),
        (
            "/answer/503?retry_after=nonsense".to_owned(),
            retry(None, 503),
        ),
        ("/answer/410".to_owned(), DeliveryOutcome::Gone),
        ("/answer/400".to_owned(), failed(400)),
        ("/answer/401".to_owned(), failed(401)),
        ("/answer/404".to_owned(), failed(404)),
        ("/answer/413".to_owned(), failed(413)),
    ];
    for (path, expected) in table {
        assert_eq!(
            sender.deliver(&delivery(receiver.url(&path))).await,
            expected,
            "{path}"
        );
    }

    // An HTTP-date: about two minutes from now (the header has whole seconds).
    let path = format!(
        "/answer/503?retry_after={}",
        in_two_minutes.replace(' ', "%20")
    );
    match sender.deliver(&delivery(receiver.url(&path))).await {
        DeliveryOutcome::Retry {
            after: Some(after), ..
        } => assert!(
            (Duration::from_secs(115)..=Duration::from_secs(120)).contains(&after),
            "{after:?}"
        ),
        other => panic!("{other:?}"),
    }

    // Redirects are failures and are not followed: nothing reaches their target.
    let before = receiver.seen_at("/answer/200").len();
    for code in [301, 302, 307, 308] {
        let outcome = sender
            .deliver(&delivery(receiver.url(&format!("/answer/{code}"))))
            .await;
        assert_eq!(
            outcome,
            DeliveryOutcome::Failed {
                status: Some(code),
                reason: format!("the endpoint answered {code} (redirects are not followed)"),
            }
        );
    }
    assert_eq!(receiver.seen_at("/answer/200").len(), before);
}

#[tokio::test]
async fn timeouts_and_broken_connections_are_retried() {
    let receiver = Receiver::start().await;
    let sender = RestHookSender::with_timeouts(
        allowing_private(),
        Duration::from_secs(5),
        Duration::from_secs(1),
    );

    let started = Instant::now();
    let outcome = sender.deliver(&delivery(receiver.url("/slow"))).await;
    assert_eq!(
        outcome,
        DeliveryOutcome::Retry {
            after: None,
            reason: "the endpoint did not answer in time".into()
        }
    );
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(receiver.seen_at("/slow").len(), 1, "the request was sent");

    // A peer that reads the request and closes the connection without answering.
    let closer = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closer_port = closer.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        loop {
            let (mut socket, _) = closer.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            let mut buffer = [0u8; 4096];
            let _ = socket.read(&mut buffer).await;
            drop(socket);
        }
    });
    let outcome = sender
        .deliver(&delivery(format!("http://127.0.0.1:{closer_port}/hook")))
        .await;
    assert_eq!(
        outcome,
        DeliveryOutcome::Retry {
            after: None,
            reason: "the connection failed before an answer".into()
        }
    );
    assert!(accepted.load(Ordering::SeqCst) >= 1);

    // Nobody listening.
    let vacant = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let vacant_port = vacant.local_addr().unwrap().port();
    drop(vacant);
    let outcome = sender
        .deliver(&delivery(format!("http://127.0.0.1:{vacant_port}/hook")))
        .await;
    assert_eq!(
        outcome,
        DeliveryOutcome::Retry {
            after: None,
            reason: "could not connect to the endpoint".into()
        }
    );
}

#[tokio::test]
async fn a_deliverys_own_timeout_replaces_the_senders() {
    let receiver = Receiver::start().await;
    // The production sender (15 s) with a subscription that allows 1 s (`backport-timeout`).
    let sender = RestHookSender::new(allowing_private());
    let mut impatient = delivery(receiver.url("/slow"));
    impatient.response_timeout = Some(Duration::from_secs(1));
    let started = Instant::now();
    let outcome = sender.deliver(&impatient).await;
    assert_eq!(
        outcome,
        DeliveryOutcome::Retry {
            after: None,
            reason: "the endpoint did not answer in time".into()
        }
    );
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );

    // A limit longer than the answer takes: delivered, although the test sender's own 1 s
    // would have given up.
    let short_sender = RestHookSender::with_timeouts(
        allowing_private(),
        Duration::from_secs(5),
        Duration::from_secs(1),
    );
    let mut patient = delivery(receiver.url("/slow"));
    patient.response_timeout = Some(Duration::from_secs(10));
    assert_eq!(
        short_sender.deliver(&patient).await,
        DeliveryOutcome::Delivered
    );
    assert_eq!(receiver.seen_at("/slow").len(), 2);
}

#[tokio::test]
async fn an_endpoint_whose_certificate_is_not_trusted_gets_nothing() {
    use tokio::io::AsyncReadExt;
    use tokio_rustls::rustls::ServerConfig;
    use tokio_rustls::rustls::crypto::aws_lc_rs;
    use tokio_rustls::rustls::pki_types::PrivateKeyDer;

    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into());
    let config = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![made.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let attempts = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (attempted, requested) = (attempts.clone(), requests.clone());
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            attempted.fetch_add(1, Ordering::SeqCst);
            if let Ok(mut tls) = acceptor.accept(socket).await {
                let mut buffer = [0u8; 1024];
                if tls.read(&mut buffer).await.is_ok_and(|n| n > 0) {
                    requested.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    });

    let sender = RestHookSender::new(allowing_private());
    let outcome = sender
        .deliver(&delivery(format!("https://localhost:{port}/hook")))
        .await;
    assert_eq!(
        outcome,
        DeliveryOutcome::Retry {
            after: None,
            reason: "could not connect to the endpoint".into()
        }
    );
    assert!(attempts.load(Ordering::SeqCst) >= 1, "TLS was tried");
    assert_eq!(
        requests.load(Ordering::SeqCst),
        0,
        "no request over an unverified TLS"
    );
}

#[tokio::test]
async fn private_endpoints_are_refused_unless_allowed() {
    let receiver = Receiver::start().await;
    let port = receiver.port;
    let strict = RestHookSender::new(SubscriptionSettings::default());
    // Columns: endpoint, what the refusal names.
    let table = [
        (
            format!("https://127.0.0.1:{port}/answer/200"),
            "127.0.0.1 is loopback",
        ),
        (
            format!("https://localhost:{port}/answer/200"),
            "is loopback",
        ),
        (
            format!("https://LOCALHOST:{port}/answer/200"),
            "is loopback",
        ),
        (
            format!("https://[::1]:{port}/answer/200"),
            "::1 is loopback",
        ),
        (
            format!("https://[::ffff:127.0.0.1]:{port}/answer/200"),
            "is loopback",
        ),
        (
            format!("https://2130706433:{port}/answer/200"),
            "127.0.0.1 is loopback",
        ),
        (
            "https://10.0.0.1/hook".to_owned(),
            "10.0.0.1 is private (RFC 1918)",
        ),
        (
            "https://192.168.0.10/hook".to_owned(),
            "is private (RFC 1918)",
        ),
        (
            "https://100.64.0.1/hook".to_owned(),
            "is shared address space (CGNAT",
        ),
        (
            "https://169.254.169.254/latest/meta-data/".to_owned(),
            "169.254.169.254 is link-local",
        ),
        ("https://[fd00::1]/hook".to_owned(), "is unique local"),
        (
            "https://[::ffff:169.254.169.254]/hook".to_owned(),
            "is link-local",
        ),
        ("https://0.0.0.0/hook".to_owned(), "is unspecified"),
        ("https://[ff02::1]/hook".to_owned(), "is multicast"),
        (
            format!("http://127.0.0.1:{port}/answer/200"),
            "must use https",
        ),
        (
            format!("https://user:pass@127.0.0.1:{port}/answer/200"),
            "user name or password",
        ),
        ("https://no-such-host.invalid/hook".to_owned(), "resolve"),
    ];
    for (endpoint, refusal) in &table {
        match strict.deliver(&delivery(endpoint.clone())).await {
            DeliveryOutcome::Failed {
                status: None,
                reason,
            } => assert!(reason.contains(refusal), "{endpoint}: {reason}"),
            other => panic!("{endpoint}: {other:?}"),
        }
    }
    assert!(receiver.seen().is_empty(), "a refused endpoint was called");

    // A token URL is an endpoint too.
    let mut with_oauth = delivery("https://1.1.1.1/hook".into());
    with_oauth.oauth = Some(receiver.oauth());
    match strict.deliver(&with_oauth).await {
        DeliveryOutcome::Failed {
            status: None,
            reason,
        } => assert!(
            reason.starts_with("token URL: the endpoint must use https"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(receiver.token_requests(), 0);

    // Allowed: vetted to the addresses to connect to, but only loopback is ever called. Link-local
    // (the cloud metadata service) and multicast stay refused even then.
    let open = allowing_private();
    for (endpoint, refusal) in &table[..table.len() - 3] {
        let vetted = vet(endpoint, &open).await;
        if refusal.contains("link-local") || refusal.contains("multicast") {
            let error = vetted.expect_err(endpoint).to_string();
            assert!(error.contains("never a subscriber"), "{endpoint}: {error}");
        } else {
            let vetted = vetted.unwrap_or_else(|e| panic!("{endpoint}: {e}"));
            assert!(!vetted.addrs.is_empty(), "{endpoint}");
        }
    }
    let vetted = vet(&format!("http://localhost:{port}/x"), &open)
        .await
        .unwrap();
    assert!(
        vetted
            .addrs
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == port)
    );
    let sender = RestHookSender::new(open);
    for endpoint in [
        format!("http://127.0.0.1:{port}/answer/200"),
        format!("http://localhost:{port}/answer/200"),
    ] {
        assert_eq!(
            sender.deliver(&delivery(endpoint.clone())).await,
            DeliveryOutcome::Delivered,
            "{endpoint}"
        );
    }
    assert_eq!(receiver.seen().len(), 2);
}

#[tokio::test]
async fn malformed_deliveries_are_refused_before_sending() {
    let receiver = Receiver::start().await;
    let sender = RestHookSender::new(allowing_private());
    let refused = |reason: &str| DeliveryOutcome::Failed {
        status: None,
        reason: reason.into(),
    };

    let mut injected = delivery(receiver.url("/answer/200"));
    injected.channel_headers = vec!["X-Note: a\r\nX-Smuggled: b".into()];
    assert_eq!(
        sender.deliver(&injected).await,
        refused("channel header 1: the value of x-note holds characters a header cannot carry")
    );
    let mut retyped = delivery(receiver.url("/answer/200"));
    retyped.channel_headers = vec!["Content-Type: text/plain".into()];
    assert_eq!(
        sender.deliver(&retyped).await,
        refused("channel header 1: content-type is set by Portico")
    );
    let mut dotted = delivery(receiver.url("/answer/200"));
    dotted.webhook_id = "event.1".into();
    assert_eq!(
        sender.deliver(&dotted).await,
        refused("the event id cannot be a webhook-id")
    );
    let mut typed = delivery(receiver.url("/answer/200"));
    typed.content_type = "application/fhir+json\n".into();
    assert_eq!(
        sender.deliver(&typed).await,
        refused("the payload type is not a valid Content-Type")
    );
    assert!(receiver.seen().is_empty());
}

#[tokio::test]
async fn an_oauth_token_is_fetched_once_and_again_after_a_401() {
    let receiver = Receiver::start().await;
    let sender = RestHookSender::new(allowing_private());
    let mut guarded = delivery(receiver.url("/guarded"));
    guarded.oauth = Some(receiver.oauth());

    for _ in 0..3 {
        assert_eq!(sender.deliver(&guarded).await, DeliveryOutcome::Delivered);
    }
    assert_eq!(
        receiver.token_requests(),
        1,
        "one token for three deliveries"
    );
    let seen = receiver.seen_at("/guarded");
    assert!(
        seen.iter()
            .all(|s| s.headers["authorization"] == "Bearer token-1")
    );
    let TokenRequest { form, basic } = receiver.state.token_requests.lock().unwrap()[0].clone();
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(
        form["scope"],
        "system/Subscription.write system/Patient.read"
    );
    assert_eq!(
        basic.as_deref(),
        Some(&*format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );

    // The EHR stops accepting token-1 (the receiver now wants token-2, not yet issued): one 401,
    // one new token, the same notification again.
    receiver.state.issued.fetch_add(1, Ordering::SeqCst);
    assert_eq!(sender.deliver(&guarded).await, DeliveryOutcome::Delivered);
    assert_eq!(receiver.token_requests(), 2);
    let seen = receiver.seen_at("/guarded");
    assert_eq!(seen.len(), 5);
    assert_eq!(seen[3].headers["authorization"], "Bearer token-1");
    assert_eq!(seen[4].headers["authorization"], "Bearer token-3");
    assert_eq!(seen[3].body, seen[4].body);
    assert_eq!(sender.deliver(&guarded).await, DeliveryOutcome::Delivered);
    assert_eq!(receiver.token_requests(), 2, "the new token is cached");

    // An endpoint that answers 401 to every token: one refetch, then the 401 stands.
    let mut refusing = delivery(receiver.url("/answer/401"));
    refusing.oauth = Some(receiver.oauth());
    assert_eq!(
        sender.deliver(&refusing).await,
        DeliveryOutcome::Failed {
            status: Some(401),
            reason: "the endpoint answered 401".into()
        }
    );
    assert_eq!(receiver.token_requests(), 3);
    assert_eq!(receiver.seen_at("/answer/401").len(), 2);

    // A channel header may not bring its own Authorization beside OAuth.
    let mut doubled = guarded;
    doubled.channel_headers = vec!["Authorization: Bearer other".into()];
    assert!(matches!(
        sender.deliver(&doubled).await,
        DeliveryOutcome::Failed { status: None, .. }
    ));
}

#[tokio::test]
async fn a_token_is_replaced_before_it_expires() {
    let receiver = Receiver::start().await;
    receiver.state.expires_in.store(1, Ordering::SeqCst);
    let sender = RestHookSender::new(allowing_private());
    let mut guarded = delivery(receiver.url("/guarded"));
    guarded.oauth = Some(receiver.oauth());
    assert_eq!(sender.deliver(&guarded).await, DeliveryOutcome::Delivered);
    // A 1 s token is used for half of it.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(sender.deliver(&guarded).await, DeliveryOutcome::Delivered);
    assert_eq!(receiver.token_requests(), 2);
    let seen = receiver.seen_at("/guarded");
    assert_eq!(seen.len(), 2, "no 401 on the way");
    assert_eq!(seen[1].headers["authorization"], "Bearer token-2");
}

#[tokio::test]
async fn token_endpoint_failures() {
    let receiver = Receiver::start().await;
    let sender = RestHookSender::new(allowing_private());

    // Wrong credentials: the OAuth error, and no notification sent.
    let mut wrong = delivery(receiver.url("/guarded"));
    wrong.oauth = Some(OutboundOAuth {
        client_secret: "not-the-secret".into(),
        ..receiver.oauth()
    });
    assert_eq!(
        sender.deliver(&wrong).await,
        DeliveryOutcome::Failed {
            status: None,
            reason: "the token endpoint answered invalid_client".into()
        }
    );

    // A token endpoint that answers without a token, or is down: try again later.
    let mut broken = delivery(receiver.url("/guarded"));
    broken.oauth = Some(OutboundOAuth {
        token_url: receiver.url("/answer/502"),
        ..receiver.oauth()
    });
    assert_eq!(
        sender.deliver(&broken).await,
        DeliveryOutcome::Retry {
            after: None,
            reason: "the token endpoint gave no usable answer".into()
        }
    );
    let vacant = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let vacant_port = vacant.local_addr().unwrap().port();
    drop(vacant);
    let mut down = delivery(receiver.url("/guarded"));
    down.oauth = Some(OutboundOAuth {
        token_url: format!("http://127.0.0.1:{vacant_port}/token"),
        ..receiver.oauth()
    });
    assert_eq!(
        sender.deliver(&down).await,
        DeliveryOutcome::Retry {
            after: None,
            reason: "token endpoint: could not connect to the endpoint".into()
        }
    );
    assert!(receiver.seen_at("/guarded").is_empty());
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn nothing_secret_reaches_the_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    // The test's runtime polls every task on this thread, so this subscriber sees them all.
    let _default = tracing::subscriber::set_default(subscriber);

    let receiver = Receiver::start().await;
    let sender = RestHookSender::new(allowing_private());
    let secret = SigningSecret::generate();
    let mut full = delivery(receiver.url("/guarded?access_key=in-the-query"));
    full.channel_headers = vec!["X-Api-Key: channel-header-value".into()];
    full.signing_secrets = vec![secret.clone()];
    full.oauth = Some(receiver.oauth());
    full.body = br#"{"resourceType":"Bundle","type":"history","id":"body-marker"}"#.to_vec();
    assert_eq!(sender.deliver(&full).await, DeliveryOutcome::Delivered);
    receiver.state.issued.fetch_add(1, Ordering::SeqCst);
    assert_eq!(sender.deliver(&full).await, DeliveryOutcome::Delivered);

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("rest-hook delivery"), "{log}");
    let signature = receiver.seen_at("/guarded")[0].headers["webhook-signature"]
        .to_str()
        .unwrap()
        .to_owned();
    for private in [
        CLIENT_SECRET,
        "token-1",
        "token-3",
        "channel-header-value",
        "in-the-query",
        "body-marker",
        &secret.to_whsec()["whsec_".len()..],
        &signature["v1,".len()..],
    ] {
        assert!(!log.contains(private), "{private} in the log:\n{log}");
    }
}
