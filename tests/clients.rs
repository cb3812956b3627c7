//! Published clients against a running Portico (an OpenEMR SQLite database from the generator):
//! fhirpy and fhirclient run the scripts in tests/python/ and their JSON output is compared with
//! plain SQL and with Portico's own answers (fhirclient also makes a SMART standalone launch with
//! PKCE through Portico's login, picker and consent pages); schemathesis fuzzes the server from its
//! /openapi.json with all its default checks and must find nothing; smart-fetch (SMART's bulk
//! client) runs a Backend Services `$export` and its files are compared with full searches.
//!
//! The Python side lives in a venv outside the clone ($PORTICO_TEST_VENV, default
//! $HOME/.cache/portico-venv), which tests/python/venv.sh creates from the pinned
//! tests/python/requirements.txt when it is missing or stale: these tests need python3 and, on a
//! first run, PyPI. They fail (never skip) when that cannot be had.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{Served, int, python_dir, rows, venv};
use portico::demo::seed_openemr;
use portico::state::clients::{ClientKind, NewClient};
use portico::state::users::Role;
use serde_json::{Value as Json, json};
use tokio::io::AsyncWriteExt;

const PATIENTS: usize = 60;

/// A fresh working directory for one test's Python run: hypothesis and schemathesis keep
/// databases and caches in the current directory, which must be neither the clone nor a previous
/// run's (a replayed cache would make runs differ).
fn work_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("portico-clients-{test}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).expect("a working directory");
    dir
}

/// Runs `program` (from the venv's bin) with `args` in `dir`, `input` on its standard input;
/// asserts success and returns stdout.
async fn run_venv(program: &str, args: &[&str], dir: &Path, input: &[u8]) -> String {
    let output = venv_output(program, args, dir, input).await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{program} {args:?} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// `run_venv`, leaving the exit status to the caller.
async fn venv_output(
    program: &str,
    args: &[&str],
    dir: &Path,
    input: &[u8],
) -> std::process::Output {
    let venv = tokio::task::spawn_blocking(venv).await.expect("venv");
    let mut child = tokio::process::Command::new(venv.join("bin").join(program))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input).await.expect("input written");
    drop(stdin);
    child
        .wait_with_output()
        .await
        .unwrap_or_else(|e| panic!("{program} runs: {e}"))
}

/// Runs a client script from tests/python against `base` and parses the JSON it prints.
async fn client_script(script: &str, base: &str, token: &str) -> Json {
    let dir = work_dir(script.trim_end_matches(".py"));
    let path = python_dir().join(script);
    let stdout = run_venv(
        "python",
        &[path.to_str().expect("a UTF-8 path"), base, token],
        &dir,
        b"",
    )
    .await;
    std::fs::remove_dir_all(&dir).ok();
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{script} printed no JSON ({e}):\n{stdout}"))
}

async fn serve(name: &str) -> Served {
    let seeded = common::seed_sqlite("openemr", name, async |writer| {
        seed_openemr(writer, PATIENTS).await
    })
    .await;
    seeded.serve().await
}

/// Patient ids by plain SQL, as Portico writes them (the pid).
async fn patient_ids(served: &Served, sex: Option<&str>) -> Vec<String> {
    let sql = match sex {
        Some(sex) => format!("SELECT pid FROM patient_data WHERE sex = '{sex}' ORDER BY pid"),
        None => "SELECT pid FROM patient_data ORDER BY pid".to_owned(),
    };
    rows(&served.database, &sql)
        .await
        .iter()
        .map(|row| int(&row[0]).to_string())
        .collect()
}

fn strings(value: &Json) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_str().expect("a string").to_owned())
        .collect()
}

fn sorted_numerically(mut ids: Vec<String>) -> Vec<String> {
    ids.sort_by_key(|id| id.parse::<i64>().unwrap_or(i64::MAX));
    ids
}

#[tokio::test]
async fn fhirpy_reads_searches_pages_counts_and_includes() {
    let served = serve("fhirpy").await;
    let seen = client_script("fhirpy_client.py", &served.fhir.base, &served.fhir.token).await;

    let patient = served.fhir.json("Patient/1").await;
    assert_eq!(seen["read"]["resourceType"], "Patient");
    assert_eq!(seen["read"]["id"], "1");
    assert_eq!(seen["read"]["family"], patient["name"][0]["family"]);

    // fetch_all over pages of 7 and 9 visits every match once, as plain SQL counts them.
    let female = patient_ids(&served, Some("Female")).await;
    assert!(female.len() > 7, "several pages");
    assert_eq!(sorted_numerically(strings(&seen["female_ids"])), female);
    assert_eq!(strings(&seen["female_genders"]), ["female"]);
    let everyone = patient_ids(&served, None).await;
    let paged = strings(&seen["patient_ids"]);
    assert_eq!(
        paged.iter().collect::<BTreeSet<_>>().len(),
        paged.len(),
        "no duplicates"
    );
    assert_eq!(sorted_numerically(paged), everyone);

    // count() sends _count=0 and reads Bundle.total.
    assert_eq!(seen["female_count"], female.len());
    assert_eq!(seen["patient_count"], everyone.len());

    // include(Appointment, patient): the page's appointments and their patient.
    let appointments = served.fhir.all("Appointment?patient=1&_count=100").await;
    assert!(!appointments.is_empty(), "patient 1 has appointments");
    let expected: Vec<String> = appointments
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(strings(&seen["include"]["matches"]), expected);
    assert_eq!(strings(&seen["include"]["subjects"]), ["Patient/1"]);
    assert_eq!(strings(&seen["include"]["included"]), ["Patient/1"]);
}

/// `/metrics` is for administrators, and what it answers parses with prometheus_client's own
/// text-format parser: requests by route template and type, latency histograms, PMS statements,
/// the pool, and no path or id as a label.
#[tokio::test]
async fn metrics_parse_with_the_prometheus_client_parser() {
    let served = serve("metrics").await;
    served.fhir.json("Patient/1").await;
    served.fhir.all("Patient?_count=7").await;
    let (status, _) = served.fhir.get("Patient/nosuchpatient").await;
    assert_eq!(status, 404);
    let root = served.fhir.base.trim_end_matches("/fhir").to_owned();
    let client = reqwest::Client::new();
    let anonymous = client.get(format!("{root}/metrics")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401, "administrators only");
    served
        .state
        .add_user("metrics-admin", "admin-password-1", Role::Admin, None)
        .await
        .expect("an admin");
    let scraped = client
        .get(format!("{root}/metrics"))
        .basic_auth("metrics-admin", Some("admin-password-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), 200);
    assert_eq!(
        scraped.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = scraped.text().await.unwrap();
    assert!(!text.contains("nosuchpatient"), "no id is a label:\n{text}");

    let dir = work_dir("metrics");
    let script = python_dir().join("prometheus_parse.py");
    let parsed = run_venv(
        "python",
        &[script.to_str().expect("a UTF-8 path")],
        &dir,
        text.as_bytes(),
    )
    .await;
    std::fs::remove_dir_all(&dir).ok();
    let families: Json = serde_json::from_str(parsed.trim())
        .unwrap_or_else(|e| panic!("the parser printed no JSON ({e}):\n{parsed}"));
    let sample = |family: &str, labels: &[(&str, &str)]| -> f64 {
        let samples = families[family]["samples"]
            .as_array()
            .unwrap_or_else(|| panic!("no family {family}:\n{text}"));
        samples
            .iter()
            .filter(|s| labels.iter().all(|(k, v)| s["labels"][*k] == *v))
            .map(|s| s["value"].as_f64().unwrap())
            .sum()
    };
    assert_eq!(families["portico_http_requests"]["type"], "counter");
    let read = [
        ("route", "/fhir/{resource_type}/{id}"),
        ("type", "Patient"),
        ("method", "GET"),
    ];
    assert!(
        sample(
            "portico_http_requests",
            &[read[0], read[1], read[2], ("status", "200")]
        ) >= 1.0
    );
    assert!(
        sample(
            "portico_http_requests",
            &[read[0], read[1], read[2], ("status", "404")]
        ) >= 1.0
    );
    assert!(
        sample(
            "portico_http_requests",
            &[("route", "/fhir/{resource_type}"), ("type", "Patient")]
        ) >= 1.0,
        "{text}"
    );
    assert_eq!(
        families["portico_http_request_duration_seconds"]["type"],
        "histogram"
    );
    assert!(
        sample(
            "portico_http_request_duration_seconds",
            &[("route", "/fhir/{resource_type}/{id}"), ("le", "+Inf")]
        ) >= 2.0
    );
    assert!(
        sample("portico_pms_queries", &[("outcome", "ok")]) >= 2.0,
        "{text}"
    );
    assert_eq!(families["portico_pms_pool_connections"]["type"], "gauge");
    assert!(sample("portico_pms_pool_connections", &[("state", "max")]) >= 1.0);
    // Journaled events are committed behind the answers: some may still wait.
    assert_eq!(families["portico_audit_backlog_events"]["type"], "gauge");
    assert!(
        sample("portico_audit_events", &[("outcome", "committed")])
            + sample("portico_audit_backlog_events", &[])
            >= 3.0,
        "every FHIR request is audited: {text}"
    );
}

#[tokio::test]
async fn fhirclient_parses_the_statement_reads_and_follows_next_links() {
    let served = serve("fhirclient").await;
    let seen = client_script(
        "fhirclient_client.py",
        &served.fhir.base,
        &served.fhir.token,
    )
    .await;

    let statement = served.fhir.json("metadata").await;
    assert_eq!(seen["fhirVersion"], "4.0.1");
    let mut types: Vec<String> = statement["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].as_str().unwrap().to_owned())
        .collect();
    types.sort();
    assert_eq!(strings(&seen["types"]), types);

    let patient = served.fhir.json("Patient/1").await;
    assert_eq!(seen["read"]["id"], "1");
    assert_eq!(seen["read"]["family"], patient["name"][0]["family"]);
    assert_eq!(seen["read"]["gender"], patient["gender"]);
    assert_eq!(seen["read"]["birthDate"], patient["birthDate"]);

    // perform_resources follows next links: every female patient once, nothing else.
    let female = patient_ids(&served, Some("Female")).await;
    let found = seen["female"].as_array().unwrap();
    assert!(
        found
            .iter()
            .all(|r| r["resourceType"] == "Patient" && r["gender"] == "female")
    );
    let ids: Vec<String> = found
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sorted_numerically(ids), female);
    assert_eq!(seen["pages"], female.len().div_ceil(7));
}

/// fhirclient's own SMART standalone launch: its authorize URL (PKCE S256), the user's login,
/// patient picker and consent played with requests by the script, its handle_callback exchanging
/// the code, then a read of the picked patient and a refresh.
#[tokio::test]
async fn fhirclient_launches_standalone_with_pkce_and_reads_the_picked_patient() {
    let served = serve("fhirclient-launch").await;
    // Never contacted: the script stops at the redirect and hands it to the client.
    let redirect_uri = "http://127.0.0.1:9/fhirclient-callback";
    served
        .state
        .add_client(NewClient {
            client_id: Some("fhirclient-py".into()),
            name: "fhirclient (Python)".into(),
            kind: Some(ClientKind::Public),
            redirect_uris: vec![redirect_uri.into()],
            allowed_scopes: "launch/patient openid fhirUser offline_access patient/*.rs".into(),
            ..Default::default()
        })
        .await
        .expect("the client is registered");
    let practitioner =
        served.fhir.json("Practitioner?_count=1").await["entry"][0]["resource"]["id"]
            .as_str()
            .expect("a practitioner")
            .to_owned();
    let password = "clinician-password-1";
    served
        .state
        .add_user(
            "dr-python",
            password,
            Role::Clinician,
            Some(&format!("Practitioner/{practitioner}")),
        )
        .await
        .expect("a clinician");
    let dir = work_dir("fhirclient_launch");
    let script = python_dir().join("fhirclient_launch.py");
    let settings = json!({
        "base": served.fhir.base,
        "client_id": "fhirclient-py",
        "redirect_uri": redirect_uri,
        "scope": "openid fhirUser offline_access patient/*.rs",
        "username": "dr-python",
        "password": password,
        "pick": "2",
        "probe": "3",
    });
    let stdout = run_venv(
        "python",
        &[script.to_str().expect("a UTF-8 path")],
        &dir,
        settings.to_string().as_bytes(),
    )
    .await;
    std::fs::remove_dir_all(&dir).ok();
    let seen: Json = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("fhirclient_launch.py printed no JSON ({e}):\n{stdout}"));

    // fhirclient added launch/patient itself, and PKCE S256.
    let requested: BTreeSet<&str> = "launch/patient openid fhirUser offline_access patient/*.rs"
        .split(' ')
        .collect();
    let authorize = &seen["authorize"];
    assert_eq!(authorize["code_challenge_method"], "S256", "{seen}");
    assert_eq!(seen["has_code_challenge"], true);
    assert_eq!(authorize["response_type"], "code");
    assert_eq!(authorize["client_id"], "fhirclient-py");
    assert_eq!(authorize["redirect_uri"], redirect_uri);
    assert_eq!(authorize["aud"], served.fhir.base);
    let scope: BTreeSet<&str> = authorize["scope"].as_str().unwrap().split(' ').collect();
    assert_eq!(scope, requested);

    assert_eq!(seen["pages"], json!(["login", "picker", "consent"]));
    let offered: BTreeSet<&str> = seen["consent_scopes"]
        .as_array()
        .expect("a consent page")
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    // Launch context scopes come with the picked patient; the user may untick all others.
    assert_eq!(offered, &requested - &BTreeSet::from(["launch/patient"]));
    assert_eq!(seen["callback"]["state"], authorize["state"]);
    // RFC 9207: the redirect names the authorization server, as discovery does.
    let (_, discovery) = served.fhir.get(".well-known/smart-configuration").await;
    let discovery: Json = serde_json::from_slice(&discovery).expect("JSON");
    assert!(discovery["issuer"].is_string(), "{discovery}");
    assert_eq!(seen["callback"]["iss"], discovery["issuer"]);

    let context = &seen["context"];
    assert_eq!(context["patient"], "2", "{seen}");
    assert_eq!(context["token_type"], "Bearer");
    assert!(
        context["scope"]
            .as_str()
            .is_some_and(|s| s.split(' ').any(|s| s == "patient/*.rs")),
        "{seen}"
    );
    assert_eq!(context["has_id_token"], true);
    assert_eq!(seen["patient_id"], "2");

    // The patient the client parsed into its R4 model is Portico's Patient/2, the row SQL finds.
    let patient = served.fhir.json("Patient/2").await;
    let read = &seen["patient"];
    assert_eq!(read["id"], "2");
    assert_eq!(read["name"], patient["name"]);
    assert_eq!(read["gender"], patient["gender"]);
    assert_eq!(read["birthDate"], patient["birthDate"]);
    let family = rows(
        &served.database,
        "SELECT lname FROM patient_data WHERE pid = 2",
    )
    .await;
    assert_eq!(
        read["name"][0]["family"].as_str(),
        common::text(&family[0][0]).as_deref()
    );
    // Another patient is not there for this token; the refresh token gives a new one.
    assert_eq!(seen["probe"]["status"], 404, "{seen}");
    assert_eq!(seen["reauthorized"], true, "{seen}");
    assert_eq!(seen["new_access_token"], true, "{seen}");
    assert_eq!(seen["patient_after_refresh"], "2");
}

/// smart-fetch, SMART's published Bulk Data client, exports the practice as an EHR would: Backend
/// Services (its own RS384 assertion, the public half registered with Portico, v1 system scopes),
/// `$export` kick-off, polling, every file downloaded, the job deleted. What it wrote is what full
/// searches serve, every line valid R4.
#[tokio::test]
async fn smart_fetch_exports_what_searches_serve_with_backend_services() {
    let served = serve("smart-fetch").await;
    let dir = work_dir("smart-fetch");
    let key_script = python_dir().join("bulk_client_key.py");
    let public = run_venv(
        "python",
        &[key_script.to_str().expect("a UTF-8 path"), "private.jwks"],
        &dir,
        b"",
    )
    .await;
    let jwks: Json = serde_json::from_str(public.trim())
        .unwrap_or_else(|e| panic!("the key script printed no JWKS ({e}):\n{public}"));
    served
        .state
        .add_client(NewClient {
            client_id: Some("smart-fetch".into()),
            name: "smart-fetch bulk client".into(),
            kind: Some(ClientKind::Asymmetric),
            jwks: Some(jwks),
            // v1, as README's `portico clients add` line registers it: Portico reads `.read`
            // as `.rs`.
            allowed_scopes: "system/*.read".into(),
            ..Default::default()
        })
        .await
        .expect("the client is registered");

    // The clinical types smart-fetch knows (it refuses Appointment, for one) that OpenEMR maps.
    let types = ["Patient", "Encounter", "Observation"];
    let statement = served.fhir.json("metadata").await;
    for resource_type in types {
        assert!(
            statement["rest"][0]["resource"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["type"] == resource_type),
            "the openemr adapter serves {resource_type}"
        );
    }
    let out = dir.join("export");
    let output = venv_output(
        "smart-fetch",
        &[
            "bulk",
            "--fhir-url",
            &served.fhir.base,
            "--smart-client-id",
            "smart-fetch",
            "--smart-key",
            "private.jwks",
            "--type",
            &types.join(","),
            "--no-compression",
            out.to_str().expect("a UTF-8 path"),
        ],
        &dir,
        b"",
    )
    .await;
    let printed = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // The seed plants a lab result without a code: it is left out of the files and reported in
    // an error file, which smart-fetch downloads with the rest and then reports as an error of
    // the export (exit status 1). Nothing else may fail.
    assert_eq!(output.status.code(), Some(1), "{printed}");
    assert!(
        printed.contains("Errors occurred during export"),
        "{printed}"
    );
    let mut reported = 0;
    for entry in std::fs::read_dir(out.join("error")).expect("the error files") {
        let text = std::fs::read_to_string(entry.expect("an entry").path()).unwrap();
        for line in text.lines() {
            common::strict(line.as_bytes());
            let outcome: Json = serde_json::from_str(line).unwrap();
            let diagnostics = outcome["issue"][0]["diagnostics"].as_str().unwrap();
            assert!(
                diagnostics.contains("cannot be served as valid FHIR R4"),
                "{diagnostics}"
            );
            assert!(printed.contains(diagnostics), "{printed}");
            reported += 1;
        }
    }
    assert!(reported > 0, "the planted row is reported");

    for resource_type in types {
        let mut exported = Vec::new();
        for entry in std::fs::read_dir(&out).expect("smart-fetch's output folder") {
            let path = entry.expect("an entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with(&format!("{resource_type}.")) && name.ends_with(".ndjson") {
                let text = std::fs::read_to_string(&path).expect("an NDJSON file");
                for line in text.lines() {
                    common::strict(line.as_bytes());
                    let resource: Json = serde_json::from_str(line).expect("JSON");
                    assert_eq!(resource["resourceType"], resource_type, "{name}");
                    exported.push(resource["id"].as_str().expect("an id").to_owned());
                }
            }
        }
        // Unless told otherwise, smart-fetch narrows Observations to its usual categories with a
        // _typeFilter; the search applies the same.
        let query = match resource_type {
            "Observation" => {
                "Observation?category=social-history,vital-signs,imaging,laboratory,survey,exam"
            }
            other => other,
        };
        let searched: Vec<String> = served
            .fhir
            .all(&format!(
                "{query}{}_count=500",
                if query.contains('?') { "&" } else { "?" }
            ))
            .await
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect();
        assert!(!searched.is_empty(), "{resource_type}: the seed has some");
        let unique: BTreeSet<&String> = exported.iter().collect();
        assert_eq!(unique.len(), exported.len(), "{resource_type}: none twice");
        assert_eq!(
            unique,
            searched.iter().collect::<BTreeSet<_>>(),
            "{resource_type}: smart-fetch got what a search serves\n{printed}"
        );
    }

    // Its log (the Bulk Data logging format) names the status URL it polled; when done it
    // DELETEd the job, whose files and row Portico then removed.
    let log = std::fs::read_to_string(out.join("log.ndjson")).expect("smart-fetch's log");
    let events: Vec<Json> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("a log event"))
        .collect();
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["eventId"].as_str().unwrap())
        .collect();
    assert_eq!(names.first(), Some(&"kickoff"), "{log}");
    assert!(names.contains(&"status_complete"), "{log}");
    assert!(names.contains(&"export_complete"), "{log}");
    let status_url = events[0]["exportId"].as_str().expect("the status URL");
    let job_id = status_url
        .strip_prefix(&format!("{}/$export-status/", served.fhir.base))
        .unwrap_or_else(|| panic!("not a status URL: {status_url}"));
    assert!(
        served.state.export_job(job_id).await.unwrap().is_none(),
        "smart-fetch deleted the job when done"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// schemathesis with every default check (status codes, content types, headers and bodies
/// against the document, schema-valid requests accepted, schema-violating ones refused, 405s,
/// no 5xx) over every operation, a bounded number of examples and a fixed seed. Its hooks
/// (tests/python/schemathesis_hooks.py) keep the kick-offs' `_typeFilter` values within the two
/// rules the document can only state in prose.
#[tokio::test]
async fn schemathesis_finds_nothing_against_the_openapi_document() {
    let served = serve("schemathesis").await;
    let root = served.fhir.base.trim_end_matches("/fhir");
    let dir = work_dir("schemathesis");
    let report = dir.join("report");
    let config = dir.join("schemathesis.toml");
    let hooks = python_dir().join("schemathesis_hooks.py");
    std::fs::write(
        &config,
        format!("hooks = {:?}\n", hooks.to_str().expect("a UTF-8 path")),
    )
    .expect("the schemathesis settings");
    let output = run_venv(
        "schemathesis",
        &[
            "--config-file",
            config.to_str().unwrap(),
            "run",
            &format!("{root}/openapi.json"),
            "--max-examples",
            "5",
            "--seed",
            "7",
            // One worker: with threads, CPython 3.11's ast.parse (which hypothesis calls to
            // describe strategies) can fail with "AST constructor recursion depth mismatch".
            "--workers",
            "1",
            "--no-color",
            // A system/*.rs token: the server's answers to requests without one are fuzzed too
            // (schemathesis's ignored_auth check), against the 401 the document declares.
            "--header",
            &format!("Authorization: Bearer {}", served.fhir.token),
            "--report",
            "junit",
            "--report-dir",
            report.to_str().unwrap(),
        ],
        &dir,
        b"",
    )
    .await;
    // Exit status 0 already means no failure; the report shows what ran.
    let junit = std::fs::read_dir(&report)
        .expect("a report")
        .filter_map(Result::ok)
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .next()
        .expect("a junit report");
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        junit.contains(r#"failures="0""#) && junit.contains(r#"errors="0""#),
        "{output}\n{junit}"
    );
    let statement = served.fhir.json("metadata").await;
    for resource in statement["rest"][0]["resource"].as_array().unwrap() {
        let resource_type = resource["type"].as_str().unwrap();
        for operation in [
            format!("GET /fhir/{resource_type}\""),
            format!("POST /fhir/{resource_type}/_search\""),
            format!("GET /fhir/{resource_type}/{{id}}\""),
        ] {
            assert!(
                junit.contains(&operation),
                "{operation} was tested:\n{junit}"
            );
        }
    }
    for operation in [
        "GET /fhir/$export\"",
        "POST /fhir/$export\"",
        "GET /fhir/Patient/$export\"",
        "POST /fhir/Patient/$export\"",
        "GET /fhir/Group/{id}/$export\"",
        "POST /fhir/Group/{id}/$export\"",
        "GET /fhir/$export-status/{id}\"",
        "DELETE /fhir/$export-status/{id}\"",
        "GET /fhir/$export-file/{id}/{name}\"",
    ] {
        assert!(
            junit.contains(operation),
            "{operation} was tested:\n{junit}"
        );
    }
    assert!(output.contains(" passed"), "{output}");
}
