//! Real SMART apps end to end: SMART's JS client (npm `fhirclient`) in Debian's headless Chromium,
//! driven by puppeteer-core as a person would (login, patient picker, consent), makes standalone
//! and EHR launches with PKCE against Portico serving a generated OpenEMR SQLite database, and
//! reads its patient; what it read is compared with Portico's own answer and plain SQL.
//! It also watches the operator's /status page (tests/browser/status.cjs) turn red and clear while
//! the PMS database (MariaDB, through a TCP proxy) goes away and comes back.
//!
//! The test app (tests/browser/app: launch.html and index.html, with fhirclient's browser bundle)
//! is served by this test on its own port, so that its redirect URI can be registered before the
//! browser starts. tests/browser/drive.cjs runs the browser. The npm packages live outside the
//! clone ($PORTICO_TEST_NPM, default $HOME/.cache/portico-npm), installed by tests/browser/npm.sh
//! from the pinned package-lock.json. These tests need node, npm (and the npm registry on a first
//! run) and Chromium at /usr/bin/chromium (or $PORTICO_TEST_CHROMIUM); they fail, never skip,
//! without them.

mod common;
#[path = "common/proxy.rs"]
mod proxy;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::response::Html;
use axum::routing::get;
use common::{Served, rows, text};
use portico::demo::seed_openemr;
use portico::state::clients::{ClientKind, NewClient};
use portico::state::users::Role;
use serde_json::{Value as Json, json};

const PATIENTS: usize = 30;
const CLIENT_ID: &str = "browser-test-app";
const CLINICIAN: (&str, &str) = ("dr-browser", "clinician-password-1");
const PORTAL: (&str, &str) = ("portal-browser", "portal-password-1");
const ADMIN: (&str, &str) = ("admin-browser", "admin-password-1");

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// The npm folder, installed or refreshed by npm.sh once per test binary (the script is
/// idempotent and locks against other callers).
fn npm_dir() -> &'static Path {
    static NPM: OnceLock<PathBuf> = OnceLock::new();
    NPM.get_or_init(|| {
        let output = std::process::Command::new("bash")
            .arg(browser_dir().join("npm.sh"))
            .output()
            .expect("bash runs tests/browser/npm.sh");
        assert!(
            output.status.success(),
            "tests/browser/npm.sh failed (the browser test needs node, npm and, on a first run, the npm registry):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let path = String::from_utf8_lossy(&output.stdout)
            .lines()
            .last()
            .expect("npm.sh prints the folder")
            .to_owned();
        PathBuf::from(path)
    })
}

fn chromium() -> PathBuf {
    let path = std::env::var_os("PORTICO_TEST_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "the browser test needs Chromium at {} (Debian: apt-get install chromium; or set PORTICO_TEST_CHROMIUM)",
        path.display()
    );
    path
}

/// Serves the test app on a free port of 127.0.0.1: its two pages and fhirclient's browser
/// bundle from the npm folder. Returns its origin.
async fn serve_app() -> String {
    let npm = tokio::task::spawn_blocking(npm_dir).await.expect("npm");
    let bundle = npm.join("node_modules/fhirclient/build/fhir-client.js");
    let bundle =
        Bytes::from(std::fs::read(&bundle).unwrap_or_else(|e| panic!("{}: {e}", bundle.display())));
    let router = Router::new()
        .route(
            "/launch.html",
            get(|| async { Html(include_str!("browser/app/launch.html")) }),
        )
        .route(
            "/index.html",
            get(|| async { Html(include_str!("browser/app/index.html")) }),
        )
        .route(
            "/fhir-client.js",
            get(move || async move { ([(header::CONTENT_TYPE, "text/javascript")], bundle) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port for the app");
    let port = listener.local_addr().expect("its address").port();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://127.0.0.1:{port}")
}

/// Portico on a generated OpenEMR database, the test app, and the app's registration and users.
struct Setup {
    served: Served,
    app: String,
    practitioner: String,
}

async fn start(name: &str) -> Setup {
    let seeded = common::seed_sqlite("openemr", &format!("browser-{name}"), async |writer| {
        seed_openemr(writer, PATIENTS).await
    })
    .await;
    let served = seeded.serve().await;
    let app = serve_app().await;
    served
        .state
        .add_client(NewClient {
            client_id: Some(CLIENT_ID.into()),
            name: "Browser test app".into(),
            kind: Some(ClientKind::Public),
            redirect_uris: vec![format!("{app}/index.html")],
            allowed_scopes: "launch launch/patient openid fhirUser offline_access patient/*.rs user/*.rs".into(),
            ..Default::default()
        })
        .await
        .expect("the app is registered");
    let practitioners = served.fhir.json("Practitioner?_count=1").await;
    let practitioner = practitioners["entry"][0]["resource"]["id"]
        .as_str()
        .expect("a practitioner")
        .to_owned();
    let users = [
        (
            CLINICIAN,
            Role::Clinician,
            Some(format!("Practitioner/{practitioner}")),
        ),
        (PORTAL, Role::Patient, Some("Patient/1".to_owned())),
        (ADMIN, Role::Admin, None),
    ];
    for ((username, password), role, fhir_user) in users {
        served
            .state
            .add_user(username, password, role, fhir_user.as_deref())
            .await
            .expect("a user");
    }
    Setup {
        served,
        app,
        practitioner,
    }
}

/// One browser at a time: the machines have two cores.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs drive.cjs with `settings` (see its header) and returns what it printed.
async fn drive(settings: Json) -> Json {
    let npm = tokio::task::spawn_blocking(npm_dir).await.expect("npm");
    let mut settings = settings;
    settings["chromium"] = json!(chromium());
    settings["timeoutMs"] = json!(120_000);
    let _turn = BROWSER.lock().await;
    let mut child = tokio::process::Command::new("node")
        .arg(browser_dir().join("drive.cjs"))
        .arg(npm.join("node_modules"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs tests/browser/drive.cjs (the browser test needs node)");
    // The password goes through standard input, not the command line.
    let mut stdin = child.stdin.take().expect("stdin");
    tokio::io::AsyncWriteExt::write_all(&mut stdin, settings.to_string().as_bytes())
        .await
        .expect("settings written");
    drop(stdin);
    let output = tokio::time::timeout(Duration::from_secs(150), child.wait_with_output())
        .await
        .expect("drive.cjs ends within its time")
        .expect("drive.cjs runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "drive.cjs failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("drive.cjs printed no JSON ({e}):\n{stdout}"))
}

/// The launch page's URL for a standalone launch (`launch` None) or an EHR launch.
fn launch_url(setup: &Setup, scope: &str, launch: Option<&str>, probe: Option<&str>) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("iss", &setup.served.fhir.base);
    query.append_pair("clientId", CLIENT_ID);
    query.append_pair("scope", scope);
    if let Some(launch) = launch {
        query.append_pair("launch", launch);
    }
    if let Some(probe) = probe {
        query.append_pair("probe", probe);
    }
    format!("{}/launch.html?{}", setup.app, query.finish())
}

fn query_pairs(url: &str) -> std::collections::BTreeMap<String, String> {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

fn scope_set(scope: &str) -> BTreeSet<&str> {
    scope.split_whitespace().collect()
}

/// The scopes a consent page offers for `scope`: all but the launch context ones, which come with
/// the patient picked or launched.
fn consentable(scope: &str) -> BTreeSet<&str> {
    scope_set(scope)
        .into_iter()
        .filter(|s| !s.starts_with("launch"))
        .collect()
}

/// What every completed launch shows: the authorize request carried PKCE S256 and the app's
/// registration, the consent page offered the requested scopes but the launch ones (all checked),
/// the token response had the patient and the scopes, and the patient the app read is Portico's
/// own answer for that patient, strictly R4, and the row plain SQL finds.
async fn assert_launch(setup: &Setup, seen: &Json, scope: &str, patient: &str) {
    let app = &seen["app"];
    assert!(app["error"].is_null(), "the app failed: {seen}");
    let authorize_url = app["authorizeUrl"].as_str().expect("the authorize URL");
    // The browser went to the URL the app built.
    assert_eq!(seen["authorizeRequests"][0], authorize_url, "{seen}");
    let authorize = query_pairs(authorize_url);
    assert_eq!(authorize["code_challenge_method"], "S256");
    let challenge = &authorize["code_challenge"];
    assert!(
        challenge.len() == 43
            && challenge
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "a base64url SHA-256: {challenge}"
    );
    assert_eq!(authorize["response_type"], "code");
    assert_eq!(authorize["client_id"], CLIENT_ID);
    assert_eq!(
        authorize["redirect_uri"],
        format!("{}/index.html", setup.app)
    );
    assert_eq!(authorize["aud"], setup.served.fhir.base);
    assert_eq!(scope_set(&authorize["scope"]), scope_set(scope));

    let offered = seen["consentScopes"].as_array().expect("a consent page");
    assert!(offered.iter().all(|s| s["checked"] == true), "{seen}");
    let offered: BTreeSet<&str> = offered
        .iter()
        .map(|s| s["scope"].as_str().unwrap())
        .collect();
    assert_eq!(offered, consentable(scope));

    let token = &app["token"];
    assert_eq!(token["token_type"], "Bearer");
    assert_eq!(token["patient"], patient);
    let granted = scope_set(token["scope"].as_str().expect("the granted scope"));
    assert!(granted.contains("patient/*.rs"), "{token}");
    assert!(granted.is_subset(&scope_set(scope)), "{token}");
    assert!(
        token["expires_in"].as_u64().is_some_and(|s| s > 0),
        "{token}"
    );
    assert_eq!(token["has_id_token"], true, "openid fhirUser: {token}");
    assert_eq!(app["patientId"], patient);
    assert_eq!(app["serverUrl"], setup.served.fhir.base);
    // RFC 9207: the redirect names the authorization server, as discovery does.
    let (_, discovery) = setup
        .served
        .fhir
        .get(".well-known/smart-configuration")
        .await;
    let discovery: Json = serde_json::from_slice(&discovery).expect("JSON");
    assert!(discovery["issuer"].is_string(), "{discovery}");
    assert_eq!(app["callbackIss"], discovery["issuer"]);

    let read = &app["patient"];
    common::strict(&serde_json::to_vec(read).unwrap());
    assert_eq!(
        *read,
        setup.served.fhir.json(&format!("Patient/{patient}")).await
    );
    assert_eq!(read["name"][0]["family"], family_of(setup, patient).await);
}

/// A patient's family name by plain SQL.
async fn family_of(setup: &Setup, pid: &str) -> String {
    let found = rows(
        &setup.served.database,
        &format!("SELECT lname FROM patient_data WHERE pid = {pid}"),
    )
    .await;
    text(&found[0][0]).expect("a family name")
}

#[tokio::test]
async fn clinician_standalone_launch_picks_patient_2_reads_it_and_refreshes() {
    let setup = start("clinician").await;
    let scope = "launch/patient openid fhirUser offline_access patient/*.rs";
    let seen = drive(json!({
        "launchUrl": launch_url(&setup, scope, None, Some("3")),
        "username": CLINICIAN.0,
        "password": CLINICIAN.1,
        "pick": {"id": "2", "query": family_of(&setup, "2").await},
        "consent": "allow",
    }))
    .await;
    assert_eq!(seen["pages"], json!(["login", "picker", "consent"]));
    assert_launch(&setup, &seen, scope, "2").await;
    let app = &seen["app"];
    assert_eq!(
        app["fhirUser"],
        format!("Practitioner/{}", setup.practitioner)
    );
    // The token is for Patient/2 only: another patient is not there for it.
    assert_eq!(app["probe"]["status"], 404, "{app}");
    // offline_access: a refresh token, which gives a new access token for the same patient.
    assert_eq!(app["token"]["has_refresh_token"], true, "{app}");
    assert_eq!(app["refreshed"]["new_access_token"], true, "{app}");
    assert_eq!(app["refreshed"]["patient"], "2", "{app}");
}

/// The picker lists 20 patients at first; the last one is found by its family name.
#[tokio::test]
async fn clinician_finds_a_patient_past_the_first_picker_page_by_name() {
    let setup = start("search").await;
    let last = PATIENTS.to_string();
    let scope = "launch/patient openid fhirUser patient/*.rs";
    let seen = drive(json!({
        "launchUrl": launch_url(&setup, scope, None, None),
        "username": CLINICIAN.0,
        "password": CLINICIAN.1,
        "pick": {"id": last, "query": family_of(&setup, &last).await},
        "consent": "allow",
    }))
    .await;
    assert_eq!(
        seen["pages"],
        json!(["login", "picker", "search", "consent"])
    );
    assert_launch(&setup, &seen, scope, &last).await;
}

#[tokio::test]
async fn patient_portal_user_gets_no_picker_and_reads_only_their_own_record() {
    let setup = start("portal").await;
    let scope = "launch/patient openid fhirUser patient/*.rs";
    let seen = drive(json!({
        "launchUrl": launch_url(&setup, scope, None, Some("2")),
        "username": PORTAL.0,
        "password": PORTAL.1,
        "pick": null,
        "consent": "allow",
    }))
    .await;
    assert_eq!(seen["pages"], json!(["login", "consent"]));
    assert_launch(&setup, &seen, scope, "1").await;
    let app = &seen["app"];
    assert_eq!(app["fhirUser"], "Patient/1");
    assert_eq!(app["probe"]["status"], 404, "{app}");
    // Neither offline_access nor online_access was asked for.
    assert_eq!(app["token"]["has_refresh_token"], false, "{app}");
    assert!(app["refreshed"].is_null(), "{app}");
}

#[tokio::test]
async fn ehr_launch_carries_the_launch_patient_into_the_app() {
    let setup = start("ehr").await;
    let root = setup.served.fhir.base.trim_end_matches("/fhir");
    let launch: Json = reqwest::Client::new()
        .post(format!("{root}/auth/launch"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .form(&[("patient", "3"), ("client_id", CLIENT_ID)])
        .send()
        .await
        .expect("Portico answers")
        .error_for_status()
        .expect("a launch")
        .json()
        .await
        .expect("JSON");
    let launch = launch["launch"].as_str().expect("an opaque launch value");
    let scope = "launch openid fhirUser patient/*.rs";
    let seen = drive(json!({
        "launchUrl": launch_url(&setup, scope, Some(launch), Some("1")),
        "username": CLINICIAN.0,
        "password": CLINICIAN.1,
        "pick": null,
        "consent": "allow",
    }))
    .await;
    // The launch names the patient: no picker.
    assert_eq!(seen["pages"], json!(["login", "consent"]));
    assert_eq!(
        query_pairs(seen["app"]["authorizeUrl"].as_str().unwrap_or_default())["launch"],
        launch
    );
    assert_launch(&setup, &seen, scope, "3").await;
    assert_eq!(seen["app"]["probe"]["status"], 404);
}

#[tokio::test]
async fn a_denied_consent_reaches_the_app_as_access_denied() {
    let setup = start("deny").await;
    let scope = "launch/patient openid fhirUser patient/*.rs";
    let seen = drive(json!({
        "launchUrl": launch_url(&setup, scope, None, None),
        "username": PORTAL.0,
        "password": PORTAL.1,
        "pick": null,
        "consent": "deny",
    }))
    .await;
    assert_eq!(seen["pages"], json!(["login", "consent"]));
    let error = seen["app"]["error"]
        .as_str()
        .expect("the app reports an error");
    assert!(error.contains("access_denied"), "{seen}");
    assert!(seen["app"]["patient"].is_null(), "{seen}");
}

/// The status page in Chromium, signed in to on its form as an admin user and then never
/// reloaded: healthy (green); the PMS database
/// cut through a TCP proxy turns it red with the fail-safe flag within the configured time (a
/// screenshot is kept in the target dir); restored, it clears, all by the page's own refresh.
#[tokio::test]
async fn the_status_page_turns_red_when_the_database_goes_and_clears_when_it_returns() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

    let server = std::env::var("PORTICO_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_owned());
    let name = "portico_t_browser_status";
    portico::db::fixture::recreate_mysql_database(&server, name)
        .await
        .unwrap_or_else(|e| panic!("{}", e.message));
    let db_url = format!("{}/{name}", server.trim_end_matches('/'));
    let writer = portico::db::fixture::FixtureWriter::open(&db_url)
        .await
        .unwrap_or_else(|e| panic!("{}", e.message));
    seed_openemr(&writer, PATIENTS)
        .await
        .unwrap_or_else(|e| panic!("{}", e.message));
    writer.close().await;
    let (proxy, through_proxy) = proxy::Proxy::in_front_of(&server, &db_url).await;
    let state_dir =
        std::env::temp_dir().join(format!("portico-browser-status-{}", std::process::id()));
    std::fs::remove_dir_all(&state_dir).ok();
    let served = common::serve_with("openemr", &through_proxy, state_dir, |settings| {
        settings.subscriptions.enabled = true;
        settings.subscriptions.poll_interval_ms = 300;
        settings.alarm.detection_failure_ms = 1_000;
        settings.alarm.check_interval_ms = 250;
    })
    .await;
    served
        .state
        .add_user(ADMIN.0, ADMIN.1, Role::Admin, None)
        .await
        .expect("an admin user");
    let url = format!("{}/status", served.fhir.base.trim_end_matches("/fhir"));
    let screenshot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status-page-raised.png");
    std::fs::remove_file(&screenshot).ok();

    let npm = tokio::task::spawn_blocking(npm_dir).await.expect("npm");
    let _turn = BROWSER.lock().await;
    let mut child = tokio::process::Command::new("node")
        .arg(browser_dir().join("status.cjs"))
        .arg(npm.join("node_modules"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs tests/browser/status.cjs");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let settings = json!({
        "url": url,
        "username": ADMIN.0,
        "password": ADMIN.1,
        "chromium": chromium(),
        "screenshot": screenshot,
        "timeoutMs": 60_000,
    });
    stdin
        .write_all(format!("{settings}\n").as_bytes())
        .await
        .unwrap();
    let mut next_state = async || -> Json {
        let line = tokio::time::timeout(Duration::from_secs(90), lines.next_line())
            .await
            .expect("status.cjs answers in time")
            .expect("status.cjs output")
            .unwrap_or_else(|| panic!("status.cjs stopped"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    };
    let healthy = next_state().await;
    assert_eq!(healthy["state"], "healthy");

    proxy.cut().await;
    stdin.write_all(b"next\n").await.unwrap();
    let raised = next_state().await;
    assert_eq!(raised["state"], "raised");
    let banner = raised["banner"].as_str().unwrap();
    assert!(
        banner.starts_with("CRITICAL SYNC ERROR (detection) since "),
        "{banner}"
    );
    assert!(
        raised["msAfterNext"].as_u64().unwrap() >= 1_000,
        "not before the configured time: {raised}"
    );
    assert!(
        std::fs::metadata(&screenshot).is_ok_and(|m| m.len() > 10_000),
        "a screenshot of the red page at {}",
        screenshot.display()
    );

    proxy.restore();
    stdin.write_all(b"next\n").await.unwrap();
    let cleared = next_state().await;
    assert_eq!(cleared["state"], "cleared");
    drop(stdin);
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("status.cjs ends")
        .expect("status.cjs runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
