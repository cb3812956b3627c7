//! Bulk Data `$export` against a real Portico over the OpenEMR fixture: kick-offs at each level,
//! the status URL (202 with X-Progress, 429 when polled too fast, the manifest), the files (every
//! line valid R4, each type's ids exactly those a full search serves), `_type`, `_typeFilter`,
//! `_since` and `_elements` checked against searches, the errors a client gets, who may see an
//! export, cancelling, a job resumed by another server after the first stopped mid-way, and a
//! type that cannot be read failing the job. The system export runs on both state stores
//! (SQLite and PostgreSQL).

use std::collections::BTreeSet;
use std::time::Duration;

use portico::state::groups::{GroupDefinition, NewGroup};
use serde_json::{Value as Json, json};

use crate::subscriptions::{Running, start_on};
use crate::support::{self, Backend, TestApp, assert_valid_r4};

/// What a request got back.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Json {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.unwrap();
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await.unwrap(),
    }
}

async fn kick_off(app: &Running, path: &str, token: &str) -> Answer {
    send(
        app.client
            .get(format!("{}/{path}", app.base))
            .bearer_auth(token)
            .header("accept", "application/fhir+json")
            .header("prefer", "respond-async"),
    )
    .await
}

/// Polls a status URL as a client should (waiting its Retry-After) until the manifest comes.
async fn finished_manifest(app: &Running, status_url: &str, token: &str) -> Json {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let answer = send(app.client.get(status_url).bearer_auth(token)).await;
        match answer.status {
            200 => {
                assert_eq!(answer.header("content-type"), Some("application/json"));
                assert!(answer.header("expires").is_some(), "BD-12: Expires");
                return answer.json();
            }
            202 => {
                let progress = answer.header("x-progress").expect("X-Progress");
                assert!(progress.len() < 100, "{progress}");
                let wait: u64 = answer.header("retry-after").unwrap().parse().unwrap();
                tokio::time::sleep(Duration::from_secs(wait)).await;
            }
            other => panic!("status {other}: {}", answer.body),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the export did not finish"
        );
    }
}

/// Every line of every output file of `kind` in the manifest, each checked as strict R4 and as
/// the file's type; by type.
async fn downloaded(
    app: &Running,
    manifest: &Json,
    kind: &str,
    token: &str,
) -> std::collections::BTreeMap<String, Vec<Json>> {
    let mut by_type: std::collections::BTreeMap<String, Vec<Json>> = Default::default();
    for entry in manifest[kind].as_array().unwrap() {
        let url = entry["url"].as_str().unwrap();
        let answer = send(app.client.get(url).bearer_auth(token)).await;
        assert_eq!(answer.status, 200, "{url}: {}", answer.body);
        assert_eq!(
            answer.header("content-type"),
            Some("application/fhir+ndjson")
        );
        let lines: Vec<Json> = answer
            .body
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(
            lines.len() as u64,
            entry["count"].as_u64().unwrap(),
            "{url}"
        );
        let resource_type = entry["type"].as_str().unwrap();
        for resource in &lines {
            assert_eq!(resource["resourceType"], resource_type, "{url}");
            assert_valid_r4(resource);
        }
        by_type
            .entry(resource_type.to_owned())
            .or_default()
            .extend(lines);
    }
    by_type
}

fn ids(resources: &[Json]) -> BTreeSet<String> {
    resources
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The ids a full search of `query` serves.
async fn searched(fhir: &TestApp, query: &str) -> BTreeSet<String> {
    let separator = if query.contains('?') { '&' } else { '?' };
    ids(&fhir
        .all_pages(&format!("{query}{separator}_count=200"))
        .await)
}

async fn running(db_url: &str, page_size: u64) -> Running {
    let mut settings = support::settings(db_url, 5000);
    settings.export.page_size = page_size;
    start_on(settings).await
}

/// Once with the state store on SQLite, once on PostgreSQL: jobs, parts, files and leases live
/// there.
#[tokio::test]
async fn a_system_export_writes_exactly_what_searches_serve() {
    let db_url = support::seed(Backend::Sqlite, "export_system").await;
    for state_url in support::state_urls("export_system").await {
        let mut settings = support::settings(&db_url, 5000);
        settings.export.page_size = 40;
        settings.state.url = Some(portico::config::Secret::new(state_url.as_str()));
        system_export(start_on(settings).await, &db_url).await;
    }
}

async fn system_export(app: Running, db_url: &str) {
    let fhir = TestApp::at(app.base.clone(), db_url.to_owned());

    let accepted = kick_off(&app, "$export", &app.token).await;
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    let status_url = accepted.header("content-location").unwrap().to_owned();
    assert!(
        status_url.starts_with(&format!("{}/$export-status/", app.base)),
        "{status_url}"
    );
    // Polled again at once: too fast.
    let first = send(app.client.get(&status_url).bearer_auth(&app.token)).await;
    let again = send(app.client.get(&status_url).bearer_auth(&app.token)).await;
    if first.status == 202 {
        assert_eq!(again.status, 429, "{}", again.body);
        assert_eq!(again.header("retry-after"), Some("2"));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let manifest = finished_manifest(&app, &status_url, &app.token).await;
    assert_eq!(manifest["requiresAccessToken"], true);
    assert_eq!(manifest["request"], format!("{}/$export", app.base));
    let transaction = manifest["transactionTime"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(transaction).is_ok(),
        "{transaction}"
    );
    let exported = downloaded(&app, &manifest, "output", &app.token).await;
    let served = support::adapter_resources(&fhir.get_fhir("metadata", 200).await);
    let served: Vec<String> = served
        .iter()
        .map(|r| r["type"].as_str().unwrap().to_owned())
        .filter(|t| {
            !["Group", "Subscription", "AuditEvent", "SubscriptionTopic"].contains(&t.as_str())
        })
        .collect();
    assert!(served.len() >= 8, "{served:?}");
    for resource_type in &served {
        let expected = searched(&fhir, resource_type).await;
        let got = exported
            .get(resource_type)
            .map(|r| ids(r))
            .unwrap_or_default();
        assert_eq!(
            got, expected,
            "{resource_type}: the export holds exactly what a search serves"
        );
        let lines = exported.get(resource_type).map_or(0, Vec::len);
        assert_eq!(lines, expected.len(), "{resource_type}: no resource twice");
    }
    // The fixture's rows that cannot be valid R4 are in the error files, as OperationOutcomes.
    let mut left_out = 0;
    for (resource_type, outcomes) in downloaded(&app, &manifest, "error", &app.token).await {
        assert_eq!(resource_type, "OperationOutcome");
        for outcome in outcomes {
            let text = outcome["issue"][0]["diagnostics"].as_str().unwrap();
            assert!(text.contains("cannot be served as valid FHIR R4"), "{text}");
            assert_eq!(outcome["issue"][0]["severity"], "error", "{outcome}");
            left_out += 1;
        }
    }

    // The operator sees the job on the status page's snapshot: complete, with what it wrote.
    app.store
        .add_user(
            "export-ops",
            "ops-password-1",
            portico::state::users::Role::Admin,
            None,
        )
        .await
        .unwrap();
    let snapshot = send(
        app.client
            .get(format!(
                "{}/status.json",
                app.base.trim_end_matches("/fhir")
            ))
            .basic_auth("export-ops", Some("ops-password-1")),
    )
    .await;
    assert_eq!(snapshot.status, 200, "{}", snapshot.body);
    let job = &snapshot.json()["exports"][0];
    let written: usize = exported.values().map(Vec::len).sum();
    assert_eq!(job["status"], "complete", "{job}");
    assert_eq!(job["written"], written, "{job}");
    assert_eq!(job["leftOut"], left_out, "{job}");
    assert!(status_url.ends_with(job["id"].as_str().unwrap()), "{job}");

    // Another client sees nothing of it; without a token, nothing either.
    app.store
        .add_client(portico::state::clients::NewClient {
            client_id: Some("another-client".into()),
            name: "another client".into(),
            kind: Some(portico::state::clients::ClientKind::Public),
            ..Default::default()
        })
        .await
        .unwrap();
    let stranger = support::token_service(&app.base)
        .issue_for(
            &portico::auth::tokens::Grant {
                client_id: "another-client".into(),
                subject: "another-client".into(),
                scope: "system/*.rs".into(),
                ..Default::default()
            },
            &app.base,
            600,
        )
        .await
        .unwrap()
        .0;
    let file_url = manifest["output"][0]["url"].as_str().unwrap();
    for url in [status_url.as_str(), file_url] {
        let other = send(app.client.get(url).bearer_auth(&stranger)).await;
        assert_eq!(other.status, 404, "{url}: {}", other.body);
        let anonymous = send(app.client.get(url)).await;
        assert_eq!(anonymous.status, 401, "{url}");
    }
    // gzip when asked for.
    let gzipped = app
        .client
        .get(file_url)
        .bearer_auth(&app.token)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gzipped.headers()["content-encoding"], "gzip");

    // DELETE cancels and removes: the status and the files are gone.
    let deleted = send(app.client.delete(&status_url).bearer_auth(&app.token)).await;
    assert_eq!(deleted.status, 202, "{}", deleted.body);
    for url in [status_url.as_str(), file_url] {
        let gone = send(app.client.get(url).bearer_auth(&app.token)).await;
        assert_eq!(gone.status, 404, "{url}");
        assert_eq!(gone.json()["resourceType"], "OperationOutcome");
    }
}

/// Every part is counted before the first page is read: X-Progress reports the whole job's
/// estimate from the start, each estimate is exact for a full export, and the largest type runs
/// first (with one type at a time, its file is the first the manifest lists).
#[tokio::test]
async fn every_part_is_estimated_at_once_and_the_largest_type_runs_first() {
    let db_url = support::seed(Backend::Sqlite, "export_largest_first").await;
    let mut settings = support::settings(&db_url, 5000);
    settings.export.page_size = 30;
    settings.export.parallel_types = 1;
    let app = start_on(settings).await;

    let accepted = kick_off(&app, "$export", &app.token).await;
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    let status_url = accepted.header("content-location").unwrap().to_owned();
    let id = status_url.rsplit('/').next().unwrap().to_owned();
    let manifest = finished_manifest(&app, &status_url, &app.token).await;
    let parts = app.store.export_parts(&id).await.unwrap();
    assert!(parts.len() >= 8, "{parts:?}");
    for part in &parts {
        assert!(part.done, "{part:?}");
        assert_eq!(
            part.estimate,
            Some(part.written + part.left_out),
            "{}: the estimate counts what the export then read",
            part.resource_type
        );
    }
    let largest = parts
        .iter()
        .max_by_key(|part| part.estimate)
        .expect("a part");
    assert!(
        parts
            .iter()
            .filter(|part| part.estimate == largest.estimate)
            .count()
            == 1,
        "the fixture has one largest type: {parts:?}"
    );
    // Parts are made in type-name order: the check means something only when the largest type
    // is not the first of them anyway.
    assert_ne!(parts[0].resource_type, largest.resource_type, "{parts:?}");
    assert_eq!(
        manifest["output"][0]["type"], largest.resource_type,
        "{manifest}"
    );
}

#[tokio::test]
async fn type_type_filter_since_and_elements_narrow_the_export_as_searches_do() {
    let db_url = support::seed(Backend::Sqlite, "export_filters").await;
    let app = running(&db_url, 25).await;
    let fhir = TestApp::at(app.base.clone(), db_url.clone());
    // Two ORed filters on one type: a patient both match is written once.
    let path = "$export?_type=Patient,Encounter\
                &_typeFilter=Patient%3Fgender%3Dfemale\
                &_typeFilter=Patient%3Fbirthdate%3Dlt1960-01-01\
                &_elements=Patient.gender,Encounter.status";
    let accepted = kick_off(&app, path, &app.token).await;
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let manifest = finished_manifest(
        &app,
        accepted.header("content-location").unwrap(),
        &app.token,
    )
    .await;
    let exported = downloaded(&app, &manifest, "output", &app.token).await;
    assert_eq!(
        exported.keys().cloned().collect::<Vec<_>>(),
        ["Encounter", "Patient"],
        "_type"
    );
    let female = searched(&fhir, "Patient?gender=female").await;
    let older = searched(&fhir, "Patient?birthdate=lt1960-01-01").await;
    assert!(
        !female.is_disjoint(&older),
        "the fixture has patients both filters match"
    );
    let patients = &exported["Patient"];
    assert_eq!(
        ids(patients),
        &female | &older,
        "_typeFilter ORs its queries"
    );
    assert_eq!(patients.len(), (&female | &older).len(), "once each");
    assert_eq!(
        ids(&exported["Encounter"]),
        searched(&fhir, "Encounter").await,
        "a type without a filter is whole"
    );
    // `_elements` cuts as a search's `_elements` does (mandatory and modifier elements stay).
    for patient in patients.iter().take(5) {
        let id = patient["id"].as_str().unwrap();
        let bundle = fhir
            .get_fhir(&format!("Patient?_id={id}&_elements=gender"), 200)
            .await;
        assert_eq!(patient, &bundle["entry"][0]["resource"]);
        assert_eq!(patient["meta"]["tag"][0]["code"], "SUBSETTED", "{patient}");
        assert!(patient.get("name").is_none(), "{patient}");
    }

    // _since: what a _lastUpdated search after it serves, for a type whose mapping has the column.
    // The fixture stamps its patients 2025-01-06 00:07 to 07:00 New York time: this splits them.
    let since = "2025-01-06T08:00:00Z";
    let accepted = kick_off(
        &app,
        &format!("$export?_type=Patient&_since={since}"),
        &app.token,
    )
    .await;
    // One export at a time per client: the previous one is complete, so this one is accepted.
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let manifest = finished_manifest(
        &app,
        accepted.header("content-location").unwrap(),
        &app.token,
    )
    .await;
    let exported = downloaded(&app, &manifest, "output", &app.token).await;
    let expected = searched(&fhir, &format!("Patient?_lastUpdated=gt{since}")).await;
    assert!(!expected.is_empty() && expected.len() < searched(&fhir, "Patient").await.len());
    assert_eq!(
        exported.get("Patient").map(|p| ids(p)).unwrap_or_default(),
        expected
    );
}

#[tokio::test]
async fn bad_kick_offs_get_an_operation_outcome_and_lenient_ones_an_error_file() {
    let db_url = support::seed(Backend::Sqlite, "export_errors").await;
    let mut settings = support::settings(&db_url, 5000);
    // No worker: accepted jobs stay unfinished, so the per-client limit shows.
    settings.export.enabled = false;
    let app = start_on(settings).await;
    for (path, status, expression) in [
        (
            "$export?_outputFormat=application/json",
            400,
            "_outputFormat",
        ),
        ("$export?_since=yesterday", 400, "_since"),
        ("$export?_type=Spaceship", 400, "_type"),
        (
            "$export?_typeFilter=Patient%3F_sort%3Dname",
            400,
            "_typeFilter",
        ),
        (
            "$export?_typeFilter=Patient%3Fnosuch%3D1",
            400,
            "_typeFilter",
        ),
        (
            "$export?_type=Encounter&_typeFilter=Patient%3Fgender%3Dmale",
            400,
            "_typeFilter",
        ),
        (
            "$export?includeAssociatedData=LatestProvenanceResources",
            400,
            "includeAssociatedData",
        ),
        ("$export?_unknown=1", 400, "_unknown"),
        ("Group/no-such-group/$export", 404, ""),
    ] {
        let answer = kick_off(&app, path, &app.token).await;
        assert_eq!(answer.status, status, "{path}: {}", answer.body);
        let outcome = answer.json();
        assert_eq!(outcome["resourceType"], "OperationOutcome", "{path}");
        if !expression.is_empty() {
            assert_eq!(
                outcome["issue"][0]["expression"][0], expression,
                "{path}: {outcome}"
            );
        }
    }
    // The three NDJSON spellings are accepted.
    let accepted = send(
        app.client
            .get(format!(
                "{}/$export?_outputFormat=ndjson&_type=Spaceship,Patient",
                app.base
            ))
            .bearer_auth(&app.token)
            .header("prefer", "respond-async, handling=lenient"),
    )
    .await;
    assert_eq!(accepted.status, 202, "lenient: {}", accepted.body);
    // A second export while the first is unfinished: 429 with Retry-After.
    let busy = kick_off(
        &app,
        "$export?_outputFormat=application/fhir%2Bndjson",
        &app.token,
    )
    .await;
    assert_eq!(busy.status, 429, "{}", busy.body);
    assert!(busy.header("retry-after").is_some());
    let status_url = accepted.header("content-location").unwrap();
    let polled = send(app.client.get(status_url).bearer_auth(&app.token)).await;
    assert_eq!(polled.status, 202);
    assert!(polled.header("x-progress").is_some());
    // Cancelled, the client may start another.
    assert_eq!(
        send(app.client.delete(status_url).bearer_auth(&app.token))
            .await
            .status,
        202
    );
    let next = kick_off(&app, "$export?_outputFormat=application/ndjson", &app.token).await;
    assert_eq!(next.status, 202, "{}", next.body);

    // POST: a Parameters body; `patient` is for Patient and Group exports only.
    let post = |path: &str, body: Json| {
        app.client
            .post(format!("{}/{path}", app.base))
            .bearer_auth(&app.token)
            .header("content-type", "application/fhir+json")
            .header("prefer", "respond-async")
            .body(body.to_string())
    };
    let system_with_patient = send(post(
        "$export",
        json!({"resourceType": "Parameters", "parameter": [
            {"name": "patient", "valueReference": {"reference": "Patient/1"}}]}),
    ))
    .await;
    assert_eq!(
        system_with_patient.status, 400,
        "{}",
        system_with_patient.body
    );
    let not_parameters = send(post("Patient/$export", json!({"resourceType": "Patient"}))).await;
    assert_eq!(not_parameters.status, 400);
}

#[tokio::test]
async fn patient_and_group_exports_hold_only_their_patients_data() {
    let db_url = support::seed(Backend::Sqlite, "export_patients").await;
    let app = running(&db_url, 50).await;
    let fhir = TestApp::at(app.base.clone(), db_url.clone());
    let mut all = searched(&fhir, "Patient").await.into_iter();
    let (one, two) = (all.next().unwrap(), all.next().unwrap());

    // A patient's own token: only its compartment, whatever it asks for.
    let tokens = support::token_service(&app.base);
    let own = support::mint_token(&tokens, &app.base, "patient/*.rs", Some(&one)).await;
    let system = kick_off(&app, "$export", &own).await;
    assert_eq!(system.status, 403, "a system export needs system scopes");
    let accepted = kick_off(&app, "Patient/$export?_type=Patient,Encounter", &own).await;
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let manifest_own =
        finished_manifest(&app, accepted.header("content-location").unwrap(), &own).await;
    let exported = downloaded(&app, &manifest_own, "output", &own).await;
    assert_eq!(ids(&exported["Patient"]), [one.clone()].into());
    assert_eq!(
        exported
            .get("Encounter")
            .map(|e| ids(e))
            .unwrap_or_default(),
        searched(&fhir, &format!("Encounter?patient={one}")).await
    );

    // A group of two members.
    app.store
        .add_group(&NewGroup {
            id: "two-patients".into(),
            name: "Two patients".into(),
            identifier: None,
            definition: GroupDefinition::Members(vec![one.clone(), two.clone()]),
        })
        .await
        .unwrap();
    // A patient's token may not read Groups: whether a group exists or not, the answer is 403.
    for group in ["two-patients", "no-such-group"] {
        let refused = kick_off(&app, &format!("Group/{group}/$export"), &own).await;
        assert_eq!(refused.status, 403, "Group/{group}: {}", refused.body);
    }
    let accepted = kick_off(
        &app,
        "Group/two-patients/$export?_type=Patient,Encounter",
        &app.token,
    )
    .await;
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let manifest = finished_manifest(
        &app,
        accepted.header("content-location").unwrap(),
        &app.token,
    )
    .await;
    assert_eq!(
        manifest["request"],
        format!(
            "{}/Group/two-patients/$export?_type=Patient,Encounter",
            app.base
        )
    );
    let exported = downloaded(&app, &manifest, "output", &app.token).await;
    assert_eq!(ids(&exported["Patient"]), [one.clone(), two.clone()].into());
    let mut encounters = searched(&fhir, &format!("Encounter?patient={one}")).await;
    encounters.extend(searched(&fhir, &format!("Encounter?patient={two}")).await);
    assert_eq!(
        exported
            .get("Encounter")
            .map(|e| ids(e))
            .unwrap_or_default(),
        encounters
    );
    // A download is audited with every patient whose data the file holds.
    let patient_file = manifest["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["type"] == "Patient")
        .unwrap()["url"]
        .as_str()
        .unwrap();
    let download = send(app.client.get(patient_file).bearer_auth(&app.token)).await;
    let request_id = download.header("x-request-id").unwrap().to_owned();
    let events = fhir
        .all_pages(&format!("AuditEvent?patient=Patient/{two}&_count=100"))
        .await;
    let event = events
        .iter()
        .find(|e| {
            e["entity"]
                .as_array()
                .unwrap()
                .iter()
                .any(|entity| entity["what"]["identifier"]["value"] == request_id)
        })
        .expect("the download's AuditEvent");
    let audited: BTreeSet<String> = event["entity"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|entity| entity["what"]["reference"].as_str())
        .map(str::to_owned)
        .collect();
    assert_eq!(
        audited,
        [format!("Patient/{one}"), format!("Patient/{two}")].into()
    );
    // The same client's token for one patient opens neither the group's export nor its files:
    // an export is the requester's (client, user and patient context), not the whole client's.
    let theirs = manifest["output"][0]["url"].as_str().unwrap();
    assert_eq!(
        send(app.client.get(theirs).bearer_auth(&own)).await.status,
        404
    );
    let mine = manifest_own["output"][0]["url"].as_str().unwrap();
    assert_eq!(
        send(app.client.get(mine).bearer_auth(&app.token))
            .await
            .status,
        404
    );
}

/// Types run two at once: one that cannot be read (its table is gone) fails the whole job. The
/// status answers 500 with an OperationOutcome (the details stay in the server's log), never a
/// manifest; the job keeps the type and the database's reason for the operator.
#[tokio::test]
async fn a_type_that_cannot_be_read_fails_the_export() {
    let db_url = support::seed(Backend::Sqlite, "export_failing_type").await;
    let writer = portico::db::fixture::FixtureWriter::open(&db_url)
        .await
        .unwrap_or_else(|e| panic!("{}", e.message));
    writer
        .execute("DROP TABLE insurance_data", &[])
        .await
        .unwrap_or_else(|e| panic!("{}", e.message));
    writer.close().await;
    let app = running(&db_url, 5).await;

    let accepted = kick_off(&app, "$export", &app.token).await;
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    let status_url = accepted.header("content-location").unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let failed = loop {
        let answer = send(app.client.get(&status_url).bearer_auth(&app.token)).await;
        match answer.status {
            202 | 429 => tokio::time::sleep(Duration::from_millis(500)).await,
            500 => break answer,
            other => panic!("status {other}: {}", answer.body),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the export did not fail"
        );
    };
    let outcome = failed.json();
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    assert_eq!(outcome["issue"][0]["code"], "exception", "{outcome}");
    let id = status_url.rsplit('/').next().unwrap();
    let job = app.store.export_job(id).await.unwrap().expect("the job");
    assert_eq!(job.status, portico::state::exports::FAILED);
    let why = job.error.unwrap_or_default();
    // Coverage and Claim both read the table; whichever runs into it first names itself.
    assert!(
        why.starts_with("Coverage: ") || why.starts_with("Claim: "),
        "{why}"
    );
    assert!(
        why.contains("insurance_data"),
        "the database's reason: {why}"
    );
}
