//! External identity provider mode over HTTP: a test IdP on loopback serves its JWKS (RS256 and
//! ES256 keys, every fetch counted); Portico, configured with `[auth.external]`, accepts the
//! tokens it signs, maps their claims by configuration, refuses every other token with 401,
//! fetches keys rarely (floods of unknown `kid`s, rotation, the IdP down), points SMART discovery
//! at the IdP and closes its own `/auth` endpoints.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portico::auth::external::ExternalIdp;
use serde_json::{Value as Json, json};
use tokio_util::sync::CancellationToken;

use crate::auth_keys::{ClientKey, jwks};
use crate::support::{self, Backend, assert_valid_r4};

const ISSUER: &str = "https://idp.test/tenant-1/v2.0";
const AUDIENCE: &str = "api://portico-tests";

/// A test identity provider: its JWKS at `jwks_url` (changeable, `max-age=300`), how many times
/// it was fetched, and a switch that stops it.
struct TestIdp {
    jwks_url: String,
    keys: Arc<Mutex<Json>>,
    hits: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl TestIdp {
    async fn start(keys: Json) -> TestIdp {
        TestIdp::serve(keys, axum::http::StatusCode::OK).await
    }

    /// An IdP whose JWKS URL answers `status` (an error status: the IdP is failing).
    async fn serve(keys: Json, status: axum::http::StatusCode) -> TestIdp {
        let keys = Arc::new(Mutex::new(keys));
        let hits = Arc::new(AtomicUsize::new(0));
        let (served, counter) = (keys.clone(), hits.clone());
        let app = axum::Router::new().route(
            "/keys",
            axum::routing::get(move || {
                let body = served.lock().unwrap().clone();
                counter.fetch_add(1, Ordering::SeqCst);
                async move { (status, [("cache-control", "max-age=300")], axum::Json(body)) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let jwks_url = format!(
            "http://127.0.0.1:{}/keys",
            listener.local_addr().unwrap().port()
        );
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await
        });
        TestIdp {
            jwks_url,
            keys,
            hits,
            stop,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// `[auth.external]` for an IdP whose keys are at `jwks_url`, accepting RS256 and ES256.
fn external(jwks_url: &str) -> ExternalIdp {
    ExternalIdp {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        jwks_url: jwks_url.into(),
        algorithms: vec![Algorithm::RS256, Algorithm::ES256],
        leeway_seconds: 30,
        scope_claim: "scope".into(),
        patient_claim: "patient".into(),
        fhir_user_claim: "fhirUser".into(),
        client_id_claim: "client_id".into(),
        authorization_endpoint: Some("https://idp.test/tenant-1/oauth2/v2.0/authorize".into()),
        token_endpoint: Some("https://idp.test/tenant-1/oauth2/v2.0/token".into()),
    }
}

/// Portico in external IdP mode over the database at `db_url`; returns its FHIR base URL.
async fn portico(db_url: &str, idp: ExternalIdp) -> String {
    let mut settings = support::settings(db_url, 5000);
    settings.auth.external = Some(idp);
    support::start(&settings).await
}

/// An access token as the IdP signs them (`system/*.rs`, five minutes), after `edit`.
fn idp_token(key: &ClientKey, edit: impl FnOnce(&mut Header, &mut Json)) -> String {
    let now = portico::state::now();
    let mut header = Header::new(key.alg);
    header.kid = Some(key.kid.clone());
    header.typ = Some("JWT".into());
    let mut claims = json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "someone", "client_id": "idp-app",
        "iat": now, "nbf": now, "exp": now + 300,
        "jti": portico::state::random_token(12), "scope": "system/*.rs",
    });
    edit(&mut header, &mut claims);
    jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap()
}

/// A GET with `token`: status, `WWW-Authenticate`, body.
async fn get(base: &str, path: &str, token: &str) -> (u16, String, Json) {
    let response = reqwest::Client::new()
        .get(format!("{base}/{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (
        status,
        challenge,
        response.json().await.unwrap_or(Json::Null),
    )
}

/// Reads `path` with `token` and expects strictly valid R4 with `status`.
async fn read(base: &str, path: &str, token: &str, status: u16) -> Json {
    let (got, challenge, body) = get(base, path, token).await;
    assert_eq!(got, status, "{path}: {challenge} {body}");
    assert_valid_r4(&body);
    body
}

/// Expects 401 `invalid_token` naming `reason`, with an OperationOutcome that does not echo the
/// token.
async fn refused(base: &str, token: &str, reason: &str, case: &str) {
    let (status, challenge, body) = get(base, "Patient/1", token).await;
    assert_eq!(status, 401, "{case}: {challenge}");
    assert!(
        challenge.starts_with("Bearer realm=\"portico\"")
            && challenge.contains("error=\"invalid_token\"")
            && challenge.contains(reason),
        "{case}: {challenge}"
    );
    assert_eq!(body["resourceType"], "OperationOutcome", "{case}");
    assert_valid_r4(&body);
    assert!(!body.to_string().contains(token), "{case}: token echoed");
}

/// A JWT with `alg: none` and no signature, naming a real `kid`.
fn unsigned(kid: &str) -> String {
    let header =
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT", "kid": kid}).to_string());
    let now = portico::state::now();
    let claims = json!({
        "iss": ISSUER, "aud": AUDIENCE, "client_id": "x", "exp": now + 300, "scope": "system/*.rs",
    });
    format!("{header}.{}.", URL_SAFE_NO_PAD.encode(claims.to_string()))
}

#[tokio::test]
async fn idp_tokens_are_accepted_and_mapped_and_bad_ones_get_401() {
    let rs = ClientKey::rsa("rs-1", Algorithm::RS256);
    let es = ClientKey::es256("es-1");
    let ps = ClientKey::rsa("ps-1", Algorithm::PS256);
    let idp = TestIdp::start(jwks(&[&rs, &es, &ps])).await;
    let db_url = support::seed(Backend::Sqlite, "idp_tokens").await;
    let base = portico(&db_url, external(&idp.jwks_url)).await;

    // RS256 and ES256, scope a space-separated string.
    for key in [&rs, &es] {
        let token = idp_token(key, |_, _| {});
        let patient = read(&base, "Patient/1", &token, 200).await;
        assert_eq!(patient["id"], "1");
        let bundle = read(&base, "Patient?_count=3", &token, 200).await;
        assert_eq!(bundle["entry"].as_array().unwrap().len(), 3);
    }
    // The patient claim limits the token to that patient; another's record does not exist.
    let patient_1 = idp_token(&rs, |_, claims| {
        claims["scope"] = json!("launch/patient patient/*.rs");
        claims["patient"] = json!("1");
    });
    read(&base, "Patient/1", &patient_1, 200).await;
    read(&base, "Patient/2", &patient_1, 404).await;
    // A clinician user (fhirUser a Practitioner) sees every patient through user/ scopes.
    let clinician = idp_token(&es, |_, claims| {
        claims["scope"] = json!("openid fhirUser user/Patient.rs");
        claims["fhirUser"] = json!("Practitioner/1");
    });
    read(&base, "Patient/2", &clinician, 200).await;
    read(&base, "Claim?_count=1", &clinician, 403).await;
    // Within the leeway (30 s) an expired token still reads.
    let just_expired = idp_token(&rs, |_, claims| {
        claims["exp"] = json!(portico::state::now() - 10)
    });
    read(&base, "Patient/1", &just_expired, 200).await;
    // Several audiences, one of them Portico's.
    let audiences = idp_token(&rs, |_, claims| {
        claims["aud"] = json!(["https://graph.example", AUDIENCE])
    });
    read(&base, "Patient/1", &audiences, 200).await;

    let now = portico::state::now();
    let hs256 = {
        // HS256 "signed" with the IdP's public key, the classic key-confusion forgery.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(rs.kid.clone());
        let claims = json!({
            "iss": ISSUER, "aud": AUDIENCE, "client_id": "x", "exp": now + 300, "scope": "system/*.rs",
        });
        let secret = rs.public_jwk.to_string();
        jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let tampered = {
        let token = idp_token(&rs, |_, _| {});
        let (signed, _) = token.rsplit_once('.').unwrap();
        let other = idp_token(&rs, |_, claims| claims["scope"] = json!("system/Claim.rs"));
        format!("{signed}.{}", other.rsplit_once('.').unwrap().1)
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "wrong issuer",
            idp_token(&rs, |_, c| c["iss"] = json!("https://evil.test/")),
            "issuer is not trusted",
        ),
        (
            "wrong audience",
            idp_token(&rs, |_, c| c["aud"] = json!("api://another-api")),
            "another server",
        ),
        (
            "expired beyond the leeway",
            idp_token(&rs, |_, c| c["exp"] = json!(now - 45)),
            "expired",
        ),
        (
            "not valid yet",
            idp_token(&rs, |_, c| c["nbf"] = json!(now + 120)),
            "not valid yet",
        ),
        (
            "issued in the future",
            idp_token(&rs, |_, c| c["iat"] = json!(now + 120)),
            "issued in the future",
        ),
        ("alg none", unsigned(&rs.kid), "not a signed JWT"),
        (
            "HS256 with the public key",
            hs256,
            "algorithm is not accepted",
        ),
        (
            "PS256, outside the allow-list",
            idp_token(&ps, |_, _| {}),
            "algorithm is not accepted",
        ),
        (
            "RS256 header on the ES256 key",
            idp_token(&rs, |h, _| h.kid = Some(es.kid.clone())),
            "key is unknown",
        ),
        (
            "unknown kid",
            idp_token(&rs, |h, _| h.kid = Some("x' OR '1'='1".into())),
            "key is unknown",
        ),
        (
            "no kid",
            idp_token(&rs, |h, _| h.kid = None),
            "names no key",
        ),
        (
            "signature of another token",
            tampered,
            "signature does not verify",
        ),
        (
            "a logout token",
            idp_token(&rs, |h, _| h.typ = Some("logout+jwt".into())),
            "not an access token",
        ),
        (
            "no client",
            idp_token(&rs, |_, c| {
                c.as_object_mut().unwrap().remove("client_id");
            }),
            "names no client",
        ),
        (
            "a scope that is a number",
            idp_token(&rs, |_, c| c["scope"] = json!(42)),
            "scope claim",
        ),
        (
            "patient/ scopes without a patient",
            idp_token(&rs, |_, c| c["scope"] = json!("patient/*.rs")),
            "without a patient",
        ),
    ];
    for (case, token, reason) in &cases {
        refused(&base, token, reason, case).await;
    }
    // Portico's own tokens are not accepted in this mode.
    refused(
        &base,
        &support::bearer_for(&base),
        "key is unknown",
        "own token",
    )
    .await;
    // One fetch served every key; the unknown kids fetched again at most once per 10 s.
    assert!(idp.hits() <= 3, "{} JWKS fetches", idp.hits());

    // Claim names are configuration: Entra ID / Okta style `scp` list, `cid`, `pid`.
    let mut mapped = external(&idp.jwks_url);
    mapped.scope_claim = "scp".into();
    mapped.client_id_claim = "cid".into();
    mapped.patient_claim = "pid".into();
    let mapped_base = portico(&db_url, mapped).await;
    let scp = idp_token(&rs, |_, claims| {
        let claims = claims.as_object_mut().unwrap();
        claims.remove("scope");
        claims.remove("client_id");
        claims.insert(
            "scp".into(),
            json!(["patient/Patient.rs", "patient/Coverage.rs"]),
        );
        claims.insert("cid".into(), json!("okta-app"));
        claims.insert("pid".into(), json!(1));
    });
    read(&mapped_base, "Patient/1", &scp, 200).await;
    read(&mapped_base, "Patient/2", &scp, 404).await;
    read(&mapped_base, "Claim?_count=1", &scp, 403).await;
    // `azp` names the client when the configured claim is absent.
    let azp = idp_token(&es, |_, claims| {
        claims.as_object_mut().unwrap().remove("client_id");
        claims["azp"] = json!("spa-client");
        claims["scp"] = json!(["system/Patient.rs"]);
    });
    read(&mapped_base, "Patient/2", &azp, 200).await;
    // The `scope` claim means nothing to this configuration: no scope, nothing granted.
    read(
        &mapped_base,
        "Patient/1",
        &idp_token(&rs, |_, c| c["cid"] = json!("a")),
        403,
    )
    .await;
}

#[tokio::test]
async fn keys_are_fetched_rarely_and_a_rotated_key_is_seen() {
    let old = ClientKey::rsa("2026-old", Algorithm::RS256);
    let new = ClientKey::es256("2026-new");
    let idp = TestIdp::start(jwks(&[&old])).await;
    let db_url = support::seed(Backend::Sqlite, "idp_rotation").await;
    let base = portico(&db_url, external(&idp.jwks_url)).await;
    let first_fetch = Instant::now();
    read(&base, "Patient/1", &idp_token(&old, |_, _| {}), 200).await;
    assert_eq!(idp.hits(), 1);

    // A flood of made-up kids, all at once: 401s, and at most one more fetch.
    let flood: Vec<_> = (0..50)
        .map(|n| {
            let token = idp_token(&old, |h, _| h.kid = Some(format!("made-up-{n}")));
            let base = base.clone();
            tokio::spawn(async move { get(&base, "Patient/1", &token).await.0 })
        })
        .collect();
    for request in flood {
        assert_eq!(request.await.unwrap(), 401);
    }
    assert!(idp.hits() <= 2, "{} JWKS fetches for the flood", idp.hits());

    // Rotation: the IdP now signs with a new key and has retired the old one. Once the refetch
    // interval (10 s) has passed, the new kid makes Portico fetch again and is accepted.
    *idp.keys.lock().unwrap() = jwks(&[&new]);
    let wait = Duration::from_millis(10_500).saturating_sub(first_fetch.elapsed());
    tokio::time::sleep(wait).await;
    let rotated = idp_token(&new, |_, _| {});
    read(&base, "Patient/1", &rotated, 200).await;
    let after_rotation = idp.hits();
    assert!(after_rotation <= 3, "{after_rotation} JWKS fetches");
    // A new token under the retired key is refused; another flood fetches nothing within 10 s.
    refused(
        &base,
        &idp_token(&old, |_, _| {}),
        "key is unknown",
        "retired key",
    )
    .await;
    for n in 0..20 {
        let token = idp_token(&new, |h, _| h.kid = Some(format!("again-{n}")));
        refused(&base, &token, "key is unknown", "second flood").await;
    }
    assert_eq!(idp.hits(), after_rotation);
}

#[tokio::test]
async fn an_unreachable_or_failing_idp_means_401_not_500() {
    let key = ClientKey::rsa("k1", Algorithm::RS256);
    let db_url = support::seed(Backend::Sqlite, "idp_down").await;

    // Nothing listens at the JWKS URL.
    let dead_url = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("http://{}/keys", listener.local_addr().unwrap())
    };
    let base = portico(&db_url, external(&dead_url)).await;
    refused(
        &base,
        &idp_token(&key, |_, _| {}),
        "keys cannot be fetched now",
        "no IdP",
    )
    .await;

    // The IdP answers 500: a burst of new tokens costs one fetch, every answer a quick 401.
    let failing =
        TestIdp::serve(jwks(&[&key]), axum::http::StatusCode::INTERNAL_SERVER_ERROR).await;
    let base = portico(&db_url, external(&failing.jwks_url)).await;
    let started = Instant::now();
    let burst: Vec<_> = (0..20)
        .map(|_| {
            let token = idp_token(&key, |_, _| {});
            let base = base.clone();
            tokio::spawn(async move { get(&base, "Patient/1", &token).await })
        })
        .collect();
    for request in burst {
        let (status, challenge, _) = request.await.unwrap();
        assert_eq!(status, 401, "{challenge}");
        assert!(
            challenge.contains("keys cannot be fetched now"),
            "{challenge}"
        );
    }
    assert_eq!(failing.hits(), 1);
    assert!(started.elapsed() < Duration::from_secs(5));

    // The IdP stops after its keys were fetched: cached keys (max-age 300) still verify new
    // tokens under a known kid; an unknown kid is a 401.
    let idp = TestIdp::start(jwks(&[&key])).await;
    let base = portico(&db_url, external(&idp.jwks_url)).await;
    read(&base, "Patient/1", &idp_token(&key, |_, _| {}), 200).await;
    idp.stop.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    read(&base, "Patient/2", &idp_token(&key, |_, _| {}), 200).await;
    refused(
        &base,
        &idp_token(&key, |h, _| h.kid = Some("k2".into())),
        "key is unknown",
        "IdP stopped",
    )
    .await;
    assert_eq!(idp.hits(), 1);
}

#[tokio::test]
async fn discovery_names_the_idp_and_portico_issues_nothing() {
    let key = ClientKey::rsa("k1", Algorithm::RS256);
    let idp = TestIdp::start(jwks(&[&key])).await;
    let db_url = support::seed(Backend::Sqlite, "idp_discovery").await;
    let idp_settings = external(&idp.jwks_url);
    let base = portico(&db_url, idp_settings.clone()).await;
    let root = base.trim_end_matches("/fhir");
    let client = reqwest::Client::new();

    for url in [
        format!("{base}/.well-known/smart-configuration"),
        format!("{root}/.well-known/smart-configuration"),
    ] {
        let document: Json = client.get(&url).send().await.unwrap().json().await.unwrap();
        assert_eq!(document["issuer"], ISSUER, "{url}");
        assert_eq!(document["jwks_uri"], idp.jwks_url.as_str());
        assert_eq!(
            document["authorization_endpoint"],
            idp_settings.authorization_endpoint.as_deref().unwrap()
        );
        assert_eq!(
            document["token_endpoint"],
            idp_settings.token_endpoint.as_deref().unwrap()
        );
        assert!(
            document["capabilities"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c.as_str().unwrap().starts_with("permission-")),
            "{document}"
        );
        assert!(!document.to_string().contains("/auth/"), "{document}");
    }

    let statement: Json = client
        .get(format!("{base}/metadata"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_valid_r4(&statement);
    let security = &statement["rest"][0]["security"];
    let uris: Vec<(&str, &str)> = security["extension"][0]["extension"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["url"].as_str().unwrap(), e["valueUri"].as_str().unwrap()))
        .collect();
    assert_eq!(
        uris,
        [
            (
                "authorize",
                idp_settings.authorization_endpoint.as_deref().unwrap()
            ),
            ("token", idp_settings.token_endpoint.as_deref().unwrap()),
        ]
    );
    // Without configured endpoints the extension is left out, and the statement stays valid.
    let mut bare = external(&idp.jwks_url);
    bare.authorization_endpoint = None;
    bare.token_endpoint = None;
    let bare_base = portico(&db_url, bare).await;
    let statement: Json = client
        .get(format!("{bare_base}/metadata"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_valid_r4(&statement);
    assert!(statement["rest"][0]["security"].get("extension").is_none());

    // Portico's authorization server, sign-in pages included, is closed: RFC 6749 JSON errors
    // naming the IdP.
    for (method, path) in [
        (reqwest::Method::POST, "/auth/token"),
        (reqwest::Method::POST, "/auth/introspect"),
        (reqwest::Method::POST, "/auth/revoke"),
        (reqwest::Method::GET, "/auth/jwks"),
        (reqwest::Method::GET, "/auth/authorize?response_type=code"),
        (reqwest::Method::GET, "/auth/login"),
        (reqwest::Method::POST, "/auth/consent"),
        (reqwest::Method::POST, "/auth/launch"),
        (
            reqwest::Method::GET,
            "/auth/.well-known/openid-configuration",
        ),
        (reqwest::Method::GET, "/auth"),
    ] {
        let response = client
            .request(method, format!("{root}{path}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials&scope=system%2F*.rs")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 404, "{path}");
        assert_eq!(response.headers()["cache-control"], "no-store", "{path}");
        let error: Json = response.json().await.unwrap();
        assert_eq!(error["error"], "invalid_request", "{path}");
        assert!(
            error["error_description"]
                .as_str()
                .unwrap()
                .contains(ISSUER),
            "{path}: {error}"
        );
    }
    // Paths that only begin like /auth are not closed.
    let other = client.get(format!("{root}/authx")).send().await.unwrap();
    assert_eq!(other.status().as_u16(), 404);
    assert_eq!(
        other.json::<Json>().await.unwrap()["resourceType"],
        "OperationOutcome"
    );
    // The IdP's token still reads data here.
    read(&base, "Patient/1", &idp_token(&key, |_, _| {}), 200).await;
}

#[test]
fn portico_token_and_launch_refuse_in_external_idp_mode() {
    let dir = std::env::temp_dir().join(format!("portico-idp-cli-{}", std::process::id()));
    for args in [
        &["token", "--client", "ehr", "--scope", "system/*.rs"][..],
        &["launch", "--client", "app", "--patient", "1"][..],
    ] {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_portico"));
        for (name, _) in std::env::vars() {
            if name.starts_with("PORTICO_") {
                command.env_remove(name);
            }
        }
        let output = command
            .args(args)
            .env("PORTICO_SERVER__STATE_DIR", &dir)
            .env("PORTICO_AUTH__EXTERNAL__ISSUER", ISSUER)
            .env("PORTICO_AUTH__EXTERNAL__AUDIENCE", AUDIENCE)
            .env("PORTICO_AUTH__EXTERNAL__JWKS_URL", "https://idp.test/keys")
            .output()
            .expect("portico runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
        assert!(
            stderr.contains("auth.external is set") && stderr.contains(ISSUER),
            "{args:?}: {stderr}"
        );
    }
}
