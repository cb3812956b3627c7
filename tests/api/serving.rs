//! How Portico is reached and stopped: HTTPS served by Portico itself (self-signed certificates
//! made here), the public base URL behind trusted and untrusted proxies, request ids, and
//! graceful shutdown with its background workers.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use portico::app::Application;
use portico::config::Settings;
use tokio_rustls::rustls;

use crate::support::{Backend, TestApp, assert_valid_r4, fresh_database, seed, settings, start};

/// A self-signed certificate for localhost and 127.0.0.1, written as PEM files in `dir`.
fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf, rcgen::Certificate) {
    std::fs::create_dir_all(dir).unwrap();
    let made =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert = dir.join(format!("{name}.crt.pem"));
    let key = dir.join(format!("{name}.key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    (cert, key, made.cert)
}

fn strict(body: &[u8]) {
    assert_valid_r4(&serde_json::from_slice(body).expect("JSON"));
}

fn temp_dir(test: &str) -> PathBuf {
    std::env::temp_dir().join(format!("portico-{test}-{}", std::process::id()))
}

/// A TLS client configuration that trusts exactly `certificate`, limited to `versions`.
fn trusting(
    certificate: &rcgen::Certificate,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certificate.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(config)
}

/// An answer over HTTPS.
struct Answer {
    status: u16,
    headers: hyper::HeaderMap,
    body: Vec<u8>,
}

/// GETs `path` from `localhost:port` over TLS with `config`, HTTP/1.1.
async fn https_get(
    config: &Arc<rustls::ClientConfig>,
    port: u16,
    bearer: Option<&str>,
    path: &str,
) -> Result<Answer, String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let mut request = hyper::Request::get(path).header("host", format!("localhost:{port}"));
    if let Some(token) = bearer {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .map_err(|e| e.to_string())?
        .to_bytes()
        .to_vec();
    Ok(Answer {
        status,
        headers,
        body,
    })
}

fn tls_settings(db_url: &str, cert: &Path, key: &Path) -> Settings {
    let mut settings = settings(db_url, 5000);
    settings.server.tls_cert = Some(cert.to_owned());
    settings.server.tls_key = Some(key.to_owned());
    settings
}

#[tokio::test]
async fn https_is_served_with_hsts_and_plain_http_is_not() {
    let dir = temp_dir("tls");
    let (cert, key, certificate) = self_signed(&dir, "server");
    let db_url = seed(Backend::Sqlite, "https").await;
    let application = Application::build(&tls_settings(&db_url, &cert, &key))
        .await
        .expect("builds with TLS");
    assert_eq!(application.scheme(), "https");
    let port = application.port();
    let base = format!("https://localhost:{port}/fhir");
    let token =
        crate::support::mint_token(&application.state.auth.tokens, &base, "system/*.rs", None)
            .await;
    tokio::spawn(application.run_until_cancelled());
    let client = trusting(&certificate, rustls::ALL_VERSIONS);

    for (path, status) in [
        ("/fhir/metadata", 200),
        ("/fhir/Patient/1", 200),
        ("/fhir/Patient/999999", 404),
        ("/.well-known/smart-configuration", 200),
    ] {
        let answer = https_get(&client, port, Some(&token), path).await.unwrap();
        assert_eq!(answer.status, status, "{path}");
        assert_eq!(
            answer.headers["strict-transport-security"], "max-age=31536000",
            "{path}"
        );
    }
    let patient = https_get(&client, port, Some(&token), "/fhir/Patient/1")
        .await
        .unwrap();
    strict(&patient.body);
    let patient: serde_json::Value = serde_json::from_slice(&patient.body).unwrap();
    assert_eq!(patient["id"], "1");
    // Links and endpoints say https: the scheme Portico serves.
    let statement = https_get(&client, port, Some(&token), "/fhir/metadata")
        .await
        .unwrap();
    strict(&statement.body);
    let statement: serde_json::Value = serde_json::from_slice(&statement.body).unwrap();
    assert_eq!(statement["implementation"]["url"], base);
    let discovery = https_get(
        &client,
        port,
        Some(&token),
        "/.well-known/smart-configuration",
    )
    .await
    .unwrap();
    let discovery: serde_json::Value = serde_json::from_slice(&discovery.body).unwrap();
    assert_eq!(
        discovery["token_endpoint"],
        format!("https://localhost:{port}/auth/token")
    );
    let bundle = https_get(&client, port, Some(&token), "/fhir/Patient?_count=1")
        .await
        .unwrap();
    let bundle: serde_json::Value = serde_json::from_slice(&bundle.body).unwrap();
    let self_link = bundle["link"][0]["url"].as_str().unwrap();
    assert!(
        self_link.starts_with(&format!("{base}/Patient?")),
        "{self_link}"
    );

    // TLS 1.2 alone is enough; TLS 1.3 alone too.
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let only = trusting(&certificate, &[version]);
        let answer = https_get(&only, port, None, "/fhir/metadata")
            .await
            .unwrap();
        assert_eq!(answer.status, 200, "{version:?}");
    }
    // A client that does not trust the certificate refuses it.
    let stranger = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth(),
    );
    let refused = https_get(&stranger, port, None, "/fhir/metadata").await;
    assert!(refused.as_ref().is_err_and(|e| e.contains("handshake")));
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/fhir/metadata"))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    // And the server still serves after all that.
    let answer = https_get(&client, port, Some(&token), "/fhir/metadata")
        .await
        .unwrap();
    assert_eq!(answer.status, 200);

    openssl_refuses_old_versions(port).await;
}

/// With the openssl command line: TLS 1.2 handshakes, TLS 1.0 and 1.1 are refused by the server.
/// Skipped where there is no openssl, or one that cannot offer the old versions at all.
async fn openssl_refuses_old_versions(port: u16) {
    let handshake = async |version: &str, cipher: &str| -> Option<(bool, String)> {
        // Async: the server under test runs on this test's runtime thread.
        let output = tokio::process::Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{port}"),
                version,
            ])
            .args(["-cipher", cipher])
            .stdin(Stdio::null())
            .output()
            .await
            .ok()?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        Some((output.status.success(), text))
    };
    let Some((ok, text)) = handshake("-tls1_2", "DEFAULT").await else {
        eprintln!("no openssl command: TLS version refusal not checked with it");
        return;
    };
    assert!(ok, "TLS 1.2 handshake failed: {text}");
    assert!(text.contains("Protocol  : TLSv1.2"), "{text}");
    for old in ["-tls1_1", "-tls1"] {
        // Security level 0 lets OpenSSL 3 offer the old versions at all.
        let (ok, text) = handshake(old, "DEFAULT:@SECLEVEL=0").await.unwrap();
        assert!(!ok, "{old} handshake succeeded: {text}");
        if text.contains("no protocols available") {
            eprintln!("this openssl cannot offer {old}: refusal not checked with it");
            continue;
        }
        assert!(
            text.contains("alert handshake failure") || text.contains("alert protocol version"),
            "{old}: {text}"
        );
        assert!(!text.contains("New, TLSv1"), "{old}: {text}");
    }
}

#[tokio::test]
async fn bad_tls_files_stop_startup_with_a_clear_error() {
    let dir = temp_dir("tls-errors");
    let (cert, key, _) = self_signed(&dir, "one");
    let (_, other_key, _) = self_signed(&dir, "two");
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a PEM file\n").unwrap();
    let missing = dir.join("missing.pem");
    let db_url = fresh_database(Backend::Sqlite, "tls_errors").await;

    let cases: Vec<(Option<&Path>, Option<&Path>, &str)> = vec![
        (Some(&missing), Some(&key), "server.tls_cert"),
        (Some(&garbage), Some(&key), "no CERTIFICATE"),
        (Some(&cert), Some(&missing), "server.tls_key"),
        (Some(&cert), Some(&garbage), "server.tls_key"),
        (Some(&cert), Some(&cert), "server.tls_key"),
        (
            Some(&cert),
            Some(&other_key),
            "does not fit server.tls_cert",
        ),
        (Some(&cert), None, "go together"),
        (None, Some(&key), "go together"),
    ];
    for (cert_path, key_path, expected) in cases {
        let mut settings = settings(&db_url, 5000);
        settings.server.tls_cert = cert_path.map(Path::to_owned);
        settings.server.tls_key = key_path.map(Path::to_owned);
        let error = match Application::build(&settings).await {
            Ok(_) => panic!("{cert_path:?} + {key_path:?} started"),
            Err(error) => format!("{error:#}"),
        };
        assert!(
            error.contains(expected),
            "{cert_path:?} + {key_path:?}: {error:?} does not say {expected:?}"
        );
    }
}

/// `(trusted_proxies, base_url)` and what the metadata, the discovery document and search links
/// say when the request carries forwarding headers from 127.0.0.1.
#[tokio::test]
async fn forwarded_headers_are_believed_only_from_trusted_proxies() {
    let db_url = seed(Backend::Sqlite, "proxies").await;
    let cases: [(&[&str], Option<&str>, Option<&str>); 4] = [
        (&["127.0.0.1"], None, Some("https://fhir.example.org")),
        (&["10.0.0.0/8", "::1"], None, None),
        (&[], None, None),
        (
            &["0.0.0.0/0"],
            Some("https://configured.example/pms/fhir"),
            Some("https://configured.example/pms"),
        ),
    ];
    for (trusted, base_url, expected_root) in cases {
        let mut settings = settings(&db_url, 5000);
        settings.server.trusted_proxies = trusted.iter().map(|p| p.to_string()).collect();
        settings.server.base_url = base_url.map(str::to_owned);
        let direct = start(&settings).await;
        let direct_root = direct.trim_end_matches("/fhir").to_owned();
        let root = expected_root.map_or(direct_root.clone(), str::to_owned);
        let client = reqwest::Client::new();
        // A token for the base these requests derive (the one the proxy presents, when trusted).
        let token = crate::support::token_for_audience(&direct, &format!("{root}/fhir")).await;
        let forwarded = |path: &str| {
            client
                .get(format!("{direct_root}{path}"))
                .header("X-Forwarded-Proto", "https")
                .header("X-Forwarded-Host", "fhir.example.org")
                .bearer_auth(&token)
        };
        let context = format!("trusted {trusted:?}, base_url {base_url:?}");

        let statement: serde_json::Value = forwarded("/fhir/metadata")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            statement["implementation"]["url"],
            format!("{root}/fhir"),
            "{context}"
        );
        let discovery: serde_json::Value = forwarded("/.well-known/smart-configuration")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(discovery["issuer"], format!("{root}/auth"), "{context}");
        let bundle: serde_json::Value = forwarded("/fhir/Patient?_count=1")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let links = bundle["link"].as_array().unwrap();
        for link in links {
            let url = link["url"].as_str().unwrap();
            assert!(
                url.starts_with(&format!("{root}/fhir/Patient?")),
                "{context}: {url}"
            );
        }
        assert_eq!(
            bundle["entry"][0]["fullUrl"],
            format!(
                "{root}/fhir/Patient/{}",
                bundle["entry"][0]["resource"]["id"].as_str().unwrap()
            ),
            "{context}"
        );

        // RFC 7239 Forwarded too.
        let statement: serde_json::Value = client
            .get(format!("{direct_root}/fhir/metadata"))
            .header(
                "Forwarded",
                "for=192.0.2.1;proto=https;host=fhir.example.org",
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            statement["implementation"]["url"],
            format!("{root}/fhir"),
            "{context}, Forwarded"
        );
    }

    let mut bad = settings(&db_url, 5000);
    bad.server.trusted_proxies = vec!["10.0.0.0/33".into()];
    let error = match Application::build(&bad).await {
        Ok(_) => panic!("a bad proxy range started"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("server.trusted_proxies"), "{error}");
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let db_url = fresh_database(Backend::Sqlite, "request_ids").await;
    let app = TestApp::at(start(&settings(&db_url, 5000)).await, db_url);
    let root = app.base.trim_end_matches("/fhir").to_owned();

    // A well-formed client id is kept, on answers and on errors alike.
    for path in ["metadata", "NoSuchType", "Patient/1/_history/2"] {
        let reply = app
            .send(
                app.client
                    .get(app.url(path))
                    .header("X-Request-Id", "client-id-7"),
            )
            .await;
        assert_eq!(
            reply.header("x-request-id").as_deref(),
            Some("client-id-7"),
            "{path}"
        );
    }
    let preflight = app
        .send(
            app.client
                .request(reqwest::Method::OPTIONS, app.url("Patient"))
                .header("Origin", "https://app.example")
                .header("Access-Control-Request-Method", "GET")
                .header("X-Request-Id", "preflight-1"),
        )
        .await;
    assert_eq!(
        preflight.header("x-request-id").as_deref(),
        Some("preflight-1")
    );
    // Browsers may read it (CORS exposes every header).
    let cors = app
        .send(
            app.client
                .get(app.url("metadata"))
                .header("Origin", "https://app.example"),
        )
        .await;
    assert!(cors.header("access-control-expose-headers").is_some());

    // Otherwise each request gets a fresh UUID.
    let mut seen = Vec::new();
    for (path, sent) in [
        (format!("{root}/health"), None),
        (format!("{root}/openapi.json"), None),
        (app.url("metadata"), Some("has spaces in it")),
        (app.url("metadata"), Some(&*"x".repeat(129))),
        (app.url("metadata"), Some("semi;colon")),
    ] {
        let mut request = app.client.get(&path);
        if let Some(sent) = sent {
            request = request.header("X-Request-Id", sent);
        }
        let reply = app.send(request).await;
        let id = reply.header("x-request-id").expect("an id");
        assert_eq!(id.len(), 36, "{path} {sent:?}: {id}");
        assert_eq!(id.matches('-').count(), 4, "{id}");
        assert!(!seen.contains(&id));
        seen.push(id);
    }
}

#[tokio::test]
async fn shutdown_drains_the_server_and_cancels_workers() {
    let db_url = fresh_database(Backend::Sqlite, "shutdown").await;
    let application = Application::build(&settings(&db_url, 5000)).await.unwrap();
    let port = application.port();
    let cancelled = Arc::new(AtomicBool::new(false));
    let flag = cancelled.clone();
    let (started, is_running) = tokio::sync::oneshot::channel();
    application
        .workers()
        .spawn("test-ticker", move |cancel| async move {
            started.send(()).unwrap();
            cancel.cancelled().await;
            flag.store(true, Ordering::SeqCst);
        });
    let stop = application.shutdown_token();
    let server = tokio::spawn(application.run_until_cancelled());
    is_running.await.unwrap();

    let url = format!("http://127.0.0.1:{port}/fhir/metadata");
    let client = reqwest::Client::new();
    assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
    assert!(!cancelled.load(Ordering::SeqCst));

    stop.cancel();
    let result = tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("the server stops")
        .expect("the server task ends cleanly");
    assert!(result.is_ok(), "{result:?}");
    assert!(
        cancelled.load(Ordering::SeqCst),
        "the worker saw the shutdown"
    );
    assert!(
        reqwest::Client::new().get(&url).send().await.is_err(),
        "nothing listens any more"
    );
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `portico serve` stops cleanly on SIGTERM (what service managers and container runtimes send).
#[cfg(unix)]
#[tokio::test]
async fn serve_stops_gracefully_on_sigterm() {
    let dir = temp_dir("sigterm");
    std::fs::create_dir_all(&dir).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_portico"));
    for (name, _) in std::env::vars() {
        if name.starts_with("PORTICO_") {
            command.env_remove(name);
        }
    }
    let mut child = command
        .arg("serve")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("PORTICO_LEGACY__ADAPTER", "openemr")
        .env(
            "PORTICO_LEGACY__URL",
            format!("sqlite://{}", dir.join("none.sqlite").display()),
        )
        .env("PORTICO_SERVER__PORT", "0")
        .env("PORTICO_SERVER__STATE_DIR", dir.join("state"))
        .env("PORTICO_LOG", "portico=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let pid = child.id();
    // A failed assertion below must not leave the server running.
    let mut child = KillOnDrop(child);
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut base = None;
    let mut printed = Vec::new();
    while base.is_none() && Instant::now() < deadline {
        if let Ok(line) = receiver.recv_timeout(Duration::from_millis(200)) {
            if let Some(at) = line.find("serving FHIR R4 on ") {
                let url = &line[at + "serving FHIR R4 on ".len()..];
                base = url.split_whitespace().next().map(str::to_owned);
            }
            printed.push(line);
        }
    }
    let base = base.unwrap_or_else(|| panic!("serve did not start: {printed:?}"));
    let response = reqwest::get(format!("{base}/metadata")).await.unwrap();
    assert_eq!(response.status(), 200);

    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = child.0.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "still running 20 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
    let mut lines = printed;
    while let Ok(line) = receiver.recv_timeout(Duration::from_millis(500)) {
        lines.push(line);
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("shutting down on a signal")),
        "{lines:?}"
    );
}
