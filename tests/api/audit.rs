//! The audit trail, on a SQLite and a PostgreSQL state store: every FHIR data request and every
//! refusal leaves one BALP-shaped AuditEvent naming exactly the patients the answer carried;
//! `/fhir/AuditEvent` finds exactly what was written, and only for audit readers; the answer is
//! withheld (503) when its event cannot be made durable (stored, or journaled within the
//! backlog); the hash chain catches one changed byte.

use std::collections::BTreeSet;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use portico::auth::tokens::{Grant, TokenService};
use portico::config::{Secret, Settings};
use portico::state::StateStore;
use portico::state::audit::{AuditFilter, AuditRecord, AuditWriter, journaled_audit_writer};
use portico::state::journal::AuditJournal;
use portico::state::users::Role;
use serde_json::Value as Json;
use sqlx::Connection;

use crate::support::{self, Backend, Reply, TestApp, assert_valid_r4, outcome_code};

/// A Portico whose state store (and so its audit trail) is `state_url`.
struct Audited {
    /// Sends the `system/*.rs` token of client `portico-tests`.
    app: TestApp,
    store: StateStore,
    /// Its audit writer: `flush` before reading the store directly.
    audit: AuditWriter,
    state_url: String,
    tokens: TokenService,
}

/// One server per state store backend, over one seeded SQLite PMS database.
async fn servers(test: &str) -> Vec<Audited> {
    servers_with(test, |_| ()).await
}

/// `servers`, with the settings changed by `change`.
async fn servers_with(test: &str, change: impl Fn(&mut Settings)) -> Vec<Audited> {
    let db_url = support::seed(Backend::Sqlite, test).await;
    let mut servers = Vec::new();
    for state_url in support::state_urls(test).await {
        let mut settings = support::settings(&db_url, 5000);
        settings.state.url = Some(Secret::new(state_url.as_str()));
        change(&mut settings);
        let (base, audit) = support::start_audited(&settings).await;
        let tokens = support::token_service(&base);
        servers.push(Audited {
            app: TestApp::at(base, db_url.clone()),
            store: tokens.store().clone(),
            audit,
            state_url,
            tokens,
        });
    }
    servers
}

impl Audited {
    fn backend(&self) -> &str {
        self.state_url.split(':').next().unwrap()
    }

    async fn token(&self, client_id: &str, scope: &str, patient: Option<&str>) -> String {
        self.token_for(Grant {
            client_id: client_id.into(),
            subject: client_id.into(),
            scope: scope.into(),
            patient: patient.map(str::to_owned),
            ..Grant::default()
        })
        .await
    }

    async fn token_for(&self, grant: Grant) -> String {
        self.tokens
            .issue_for(&grant, &self.app.base, 3600)
            .await
            .unwrap()
            .0
    }

    /// GETs `path` with `token` (none: no Authorization header) and `X-Request-Id: request_id`.
    async fn get(&self, path: &str, token: Option<&str>, request_id: &str) -> Reply {
        let mut request = reqwest::Client::new()
            .get(self.app.url(path))
            .header("X-Request-Id", request_id);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        self.app.send(request).await
    }

    /// Every stored event, newest first, each checked as strict R4.
    async fn events(&self) -> Vec<Json> {
        self.audit.flush().await.unwrap();
        self.store
            .search_audit_events(&AuditFilter::default(), 100_000, None)
            .await
            .unwrap()
            .iter()
            .map(|stored| {
                let event: Json = serde_json::from_str(&stored.resource).unwrap();
                assert_valid_r4(&event);
                event
            })
            .collect()
    }

    /// The one event of the request `request_id`.
    async fn event(&self, request_id: &str) -> Json {
        let found: Vec<Json> = self
            .events()
            .await
            .into_iter()
            .filter(|event| request_id_of(event) == request_id)
            .collect();
        assert_eq!(found.len(), 1, "{}: events of {request_id}", self.backend());
        found.into_iter().next().unwrap()
    }

    /// A raw connection to the state store, for what Portico itself never does.
    async fn raw(&self) -> sqlx::AnyConnection {
        sqlx::AnyConnection::connect(&self.state_url).await.unwrap()
    }
}

fn entities_of_type<'a>(event: &'a Json, code: &'a str) -> impl Iterator<Item = &'a Json> {
    event["entity"]
        .as_array()
        .unwrap()
        .iter()
        .filter(move |entity| entity["type"]["code"] == code)
}

fn request_id_of(event: &Json) -> String {
    entities_of_type(event, "XrequestId")
        .map(|entity| entity["what"]["identifier"]["value"].as_str().unwrap())
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The Patient ids of an event's patient entities.
fn patients_of(event: &Json) -> BTreeSet<String> {
    entities_of_type(event, "1")
        .map(|entity| {
            assert_eq!(entity["role"]["code"], "1");
            let reference = entity["what"]["reference"].as_str().unwrap();
            reference.strip_prefix("Patient/").unwrap().to_owned()
        })
        .collect()
}

fn agent<'a>(event: &'a Json, code: &str) -> Option<&'a Json> {
    event["agent"]
        .as_array()
        .unwrap()
        .iter()
        .find(|agent| agent["type"]["coding"][0]["code"] == code)
}

/// The decoded query an event's query entity carries.
fn query_of(event: &Json) -> String {
    let entity = entities_of_type(event, "2")
        .find(|entity| entity["role"]["code"] == "24")
        .expect("a query entity");
    String::from_utf8(STANDARD.decode(entity["query"].as_str().unwrap()).unwrap()).unwrap()
}

/// The `jti` claim of a token (its payload is plain base64url JSON).
fn jti_of(token: &str) -> String {
    let payload = token.split('.').nth(1).unwrap();
    let claims: Json = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["jti"].as_str().unwrap().to_owned()
}

/// The Patient ids a searchset carries: matched or included Patients, and the patients its other
/// resources name as subject, patient or beneficiary.
fn bundle_patients(bundle: &Json) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for entry in bundle["entry"].as_array().into_iter().flatten() {
        let resource = &entry["resource"];
        if resource["resourceType"] == "Patient" {
            ids.insert(resource["id"].as_str().unwrap().to_owned());
        }
        for field in ["subject", "patient", "beneficiary"] {
            if let Some(id) = resource[field]["reference"]
                .as_str()
                .and_then(|r| r.strip_prefix("Patient/"))
            {
                ids.insert(id.to_owned());
            }
        }
    }
    ids
}

#[tokio::test]
async fn a_read_writes_one_event_naming_its_patient() {
    for server in servers("audit_read").await {
        let backend = server.backend().to_owned();
        let token = server.token("reader-app", "system/*.rs", None).await;
        let reply = server.get("Patient/1", Some(&token), "audit-read-1").await;
        assert_eq!(reply.status, 200, "{backend}");
        let patient = reply.json();

        let event = server.event("audit-read-1").await;
        assert_eq!(event["type"]["code"], "rest", "{backend}");
        assert_eq!(event["subtype"][0]["code"], "read");
        assert_eq!(event["action"], "R");
        assert_eq!(event["outcome"], "0");
        assert_eq!(patients_of(&event), BTreeSet::from(["1".to_owned()]));
        let data: Vec<&Json> = entities_of_type(&event, "2").collect();
        assert_eq!(data[0]["what"]["reference"], "Patient/1");
        let client = agent(&event, "110153").expect("a client agent");
        assert_eq!(client["who"]["identifier"]["value"], "reader-app");
        assert_eq!(client["network"]["address"], "127.0.0.1");
        let user = agent(&event, "IRCP").expect("a user agent");
        assert_eq!(user["who"]["identifier"]["value"], "reader-app");
        assert!(
            user["who"]["identifier"]["system"]
                .as_str()
                .unwrap()
                .ends_with("/auth")
        );
        assert_eq!(user["policy"], serde_json::json!([jti_of(&token)]));
        assert_eq!(
            event["source"]["observer"]["identifier"]["value"],
            server.app.base.as_str()
        );
        // Identifiers only: never the token, never the answer.
        let text = event.to_string();
        assert!(
            !text.contains(&token),
            "{backend}: the token is in the event"
        );
        let family = patient["name"][0]["family"].as_str().unwrap();
        assert!(
            !text.contains(family),
            "{backend}: the answer is in the event"
        );
        // The search columns agree with the JSON.
        let by_client = AuditFilter {
            agents: vec![vec!["reader-app".into()]],
            patients: vec![vec!["1".into()]],
            outcomes: vec![vec!["0".into()]],
            ..AuditFilter::default()
        };
        assert_eq!(
            server.store.count_audit_events(&by_client).await.unwrap(),
            1
        );

        // A read that finds nothing names no patient; a conditional read that answers 304 does.
        let missing = server
            .get("Patient/999999", Some(&token), "audit-read-2")
            .await;
        assert_eq!(missing.status, 404);
        let event = server.event("audit-read-2").await;
        assert_eq!(event["outcome"], "4");
        assert!(patients_of(&event).is_empty());
        let etag = reply.header("etag").unwrap();
        let not_modified = server
            .app
            .send(
                reqwest::Client::new()
                    .get(server.app.url("Patient/2"))
                    .bearer_auth(&token)
                    .header("X-Request-Id", "audit-read-3")
                    .header("If-None-Match", "*"),
            )
            .await;
        assert_eq!(not_modified.status, 304, "{etag}");
        assert_eq!(
            patients_of(&server.event("audit-read-3").await),
            BTreeSet::from(["2".to_owned()])
        );
    }
}

#[tokio::test]
async fn a_search_names_exactly_the_patients_of_its_bundle() {
    for server in servers("audit_search").await {
        let backend = server.backend().to_owned();
        let token = support::bearer_for(&server.app.base);
        let reply = server
            .get("Patient?_count=3", Some(&token), "audit-search-1")
            .await;
        assert_eq!(reply.status, 200, "{backend}");
        let bundle = reply.json();
        let expected = bundle_patients(&bundle);
        assert_eq!(expected.len(), 3, "{backend}");
        let event = server.event("audit-search-1").await;
        assert_eq!(event["subtype"][0]["code"], "search-type");
        assert_eq!(event["action"], "E");
        assert_eq!(patients_of(&event), expected, "{backend}");
        assert_eq!(query_of(&event), "Patient?_count=3");

        // Includes count: the observations' patients, matched or included, and no one else.
        let path = "Observation?category=vital-signs&_count=7&_include=Observation:patient";
        let reply = server.get(path, Some(&token), "audit-search-2").await;
        assert_eq!(reply.status, 200);
        let bundle = reply.json();
        let expected = bundle_patients(&bundle);
        assert!(!expected.is_empty());
        let event = server.event("audit-search-2").await;
        assert_eq!(patients_of(&event), expected, "{backend}");
        assert_eq!(
            query_of(&event),
            "Observation?category=vital-signs&_count=7&_include=Observation%3Apatient"
        );

        // A POST search's form is its query; a count touches no patient.
        let posted = server
            .app
            .send(
                reqwest::Client::new()
                    .post(server.app.url("Patient/_search"))
                    .bearer_auth(&token)
                    .header("X-Request-Id", "audit-search-3")
                    .form(&[("_summary", "count")]),
            )
            .await;
        assert_eq!(posted.status, 200);
        let event = server.event("audit-search-3").await;
        assert_eq!(query_of(&event), "Patient?_summary=count");
        assert!(patients_of(&event).is_empty());
    }
}

#[tokio::test]
async fn refusals_are_audited_without_patients() {
    for server in servers("audit_refusals").await {
        let backend = server.backend().to_owned();
        let unauthenticated = server.get("Patient/1", None, "audit-401").await;
        assert_eq!(unauthenticated.status, 401, "{backend}");
        let event = server.event("audit-401").await;
        assert_eq!(event["outcome"], "4");
        assert_eq!(event["outcomeDesc"], "HTTP 401");
        assert!(patients_of(&event).is_empty());
        assert!(agent(&event, "IRCP").is_none(), "no token, no user");
        let client = agent(&event, "110153").unwrap();
        assert_eq!(client["network"]["address"], "127.0.0.1");
        assert!(client.get("who").is_none());

        let garbage = server
            .get("Patient/1", Some("not-a-token"), "audit-401b")
            .await;
        assert_eq!(garbage.status, 401);
        let event = server.event("audit-401b").await;
        assert_eq!(event["outcome"], "4");
        assert!(!event.to_string().contains("not-a-token"));

        let patients_only = server.token("narrow-app", "system/Patient.rs", None).await;
        let forbidden = server
            .get("Claim?_count=5", Some(&patients_only), "audit-403")
            .await;
        assert_eq!(forbidden.status, 403);
        let event = server.event("audit-403").await;
        assert_eq!(event["outcome"], "4");
        assert!(patients_of(&event).is_empty());
        assert_eq!(
            agent(&event, "110153").unwrap()["who"]["identifier"]["value"],
            "narrow-app"
        );

        // Public paths are not audited.
        let before = server.events().await.len();
        for path in ["metadata", ".well-known/smart-configuration"] {
            assert_eq!(server.get(path, None, "audit-public").await.status, 200);
        }
        assert_eq!(server.events().await.len(), before, "{backend}");
    }
}

/// The ids of a search's events over every page from `path`.
async fn audit_search(server: &Audited, path: &str, token: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut next = Some(server.app.url(path));
    while let Some(url) = next {
        let reply = server.get(&url, Some(token), "audit-reader").await;
        assert_eq!(
            reply.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        let bundle = reply.json();
        assert_valid_r4(&bundle);
        assert_eq!(bundle["type"], "searchset");
        for event in support::matches(&bundle) {
            assert!(
                ids.insert(event["id"].as_str().unwrap().to_owned()),
                "paging repeats"
            );
        }
        next = bundle["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|link| link["relation"] == "next")
            .map(|link| link["url"].as_str().unwrap().to_owned());
    }
    ids
}

/// The ids of the stored events `keep` selects, read from the store just before a search.
async fn oracle(server: &Audited, keep: impl Fn(&Json) -> bool) -> BTreeSet<String> {
    server
        .events()
        .await
        .iter()
        .filter(|event| keep(event))
        .map(|event| event["id"].as_str().unwrap().to_owned())
        .collect()
}

fn recorded_ms(event: &Json) -> i64 {
    chrono::DateTime::parse_from_rfc3339(event["recorded"].as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

#[tokio::test]
async fn audit_event_search_finds_exactly_what_was_written() {
    for server in servers("audit_reads").await {
        let backend = server.backend().to_owned();
        let first = server.token("first-app", "system/*.rs", None).await;
        for (path, id) in [
            ("Patient/1", "w1"),
            ("Patient/2", "w2"),
            ("Patient?_id=1,4", "w3"),
        ] {
            assert_eq!(
                server.get(path, Some(&first), id).await.status,
                200,
                "{path}"
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let middle = chrono::Utc::now();
        let second = server.token("second-app", "system/Patient.rs", None).await;
        for (path, id) in [("Patient/2", "w4"), ("Coverage", "w5"), ("Patient/3", "w6")] {
            server.get(path, Some(&second), id).await;
        }
        let reader = server.token("auditor", "system/AuditEvent.rs", None).await;

        let has_patient = |id: &'static str| move |event: &Json| patients_of(event).contains(id);
        let expected = oracle(&server, has_patient("1")).await;
        assert!(expected.len() >= 2, "{backend}");
        assert_eq!(
            audit_search(&server, "AuditEvent?patient=1", &reader).await,
            expected
        );
        let expected = oracle(&server, has_patient("2")).await;
        assert_eq!(expected.len(), 2);
        assert_eq!(
            audit_search(&server, "AuditEvent?patient=Patient/2&_count=1", &reader).await,
            expected
        );
        let expected = oracle(&server, |event| {
            agent(event, "110153").unwrap()["who"]["identifier"]["value"] == "second-app"
        })
        .await;
        assert_eq!(expected.len(), 3);
        assert_eq!(
            audit_search(&server, "AuditEvent?agent=second-app", &reader).await,
            expected
        );
        let expected = oracle(&server, |event| event["outcome"] == "4").await;
        assert_eq!(expected.len(), 1, "the Coverage search was refused");
        assert_eq!(
            audit_search(&server, "AuditEvent?outcome=4,8", &reader).await,
            expected
        );

        let from = middle.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let path = format!("AuditEvent?date=ge{from}&agent=second-app,first-app&_count=2");
        let expected = oracle(&server, |event| {
            recorded_ms(event) >= middle.timestamp_millis()
                && ["first-app", "second-app"].contains(
                    &agent(event, "110153").unwrap()["who"]["identifier"]["value"]
                        .as_str()
                        .unwrap_or_default(),
                )
        })
        .await;
        assert_eq!(expected.len(), 3, "{backend}");
        assert_eq!(audit_search(&server, &path, &reader).await, expected);
        let expected = oracle(&server, |event| {
            recorded_ms(event) < middle.timestamp_millis()
        })
        .await;
        assert_eq!(
            audit_search(&server, &format!("AuditEvent?date=lt{from}"), &reader).await,
            expected
        );
        // Every page of everything: each event once.
        let expected = oracle(&server, |_| true).await;
        assert_eq!(
            audit_search(&server, "AuditEvent?_count=4", &reader).await,
            expected
        );

        // Read by id, and the answers around it.
        let event = server.event("w1").await;
        let id = event["id"].as_str().unwrap();
        let read = server
            .get(&format!("AuditEvent/{id}"), Some(&reader), "r1")
            .await;
        assert_eq!(read.status, 200);
        assert_eq!(read.json(), event);
        let missing = server
            .get("AuditEvent/no-such-event", Some(&reader), "r2")
            .await;
        assert_eq!(missing.status, 404);
        let unknown = server
            .get("AuditEvent?family=smith", Some(&reader), "r3")
            .await;
        assert_eq!(unknown.status, 400);
        assert_eq!(outcome_code(&unknown), "not-supported");
        // Reading the trail is audited too.
        assert_eq!(server.event("r1").await["subtype"][0]["code"], "read");

        // Who may read it.
        server
            .store
            .add_user("root-admin", "a long password", Role::Admin, None)
            .await
            .unwrap();
        server
            .store
            .add_user(
                "dr-who",
                "a long password",
                Role::Clinician,
                Some("Practitioner/1"),
            )
            .await
            .unwrap();
        let user_token = |username: &str, fhir_user: Option<&str>, scope: &str| Grant {
            client_id: "console".into(),
            subject: username.into(),
            username: Some(username.into()),
            fhir_user: fhir_user.map(str::to_owned),
            scope: scope.into(),
            ..Grant::default()
        };
        let admin = server
            .token_for(user_token("root-admin", None, "user/AuditEvent.rs"))
            .await;
        let clinician = server
            .token_for(user_token(
                "dr-who",
                Some("Practitioner/1"),
                "user/AuditEvent.rs user/*.rs",
            ))
            .await;
        let patient = server.token("portal", "patient/*.rs", Some("1")).await;
        let no_audit = server
            .token("narrow", "system/Patient.rs system/Observation.rs", None)
            .await;
        let everything = support::bearer_for(&server.app.base);
        for (token, status, who) in [
            (&reader, 200, "system/AuditEvent.rs"),
            (&everything, 200, "system/*.rs"),
            (&admin, 200, "an admin's user/AuditEvent.rs"),
            (&clinician, 403, "a clinician's user/ scopes"),
            (&patient, 403, "patient/*.rs"),
            (&no_audit, 403, "scopes without AuditEvent"),
        ] {
            for path in [
                "AuditEvent?patient=1".to_owned(),
                format!("AuditEvent/{id}"),
            ] {
                let reply = server.get(&path, Some(token), "who").await;
                assert_eq!(reply.status, status, "{backend}: {who} on {path}");
                if status == 403 {
                    assert_eq!(outcome_code(&reply), "forbidden");
                }
            }
        }
        // The admin's token reads no PHI.
        assert_eq!(
            server.get("Patient/1", Some(&admin), "a1").await.status,
            403
        );
    }
}

/// Without a journal (PostgreSQL), an answer waits for its event's commit: when the store cannot
/// take it, the client gets 503 and no data. With one (SQLite), answers go out while their
/// events wait, durable, in the journal; reading the audit trail is refused until the store
/// takes them; past the backlog, answers are refused the same way; and once the store is back,
/// every answered request's event is in the chain.
#[tokio::test]
async fn an_answer_whose_event_cannot_be_made_durable_is_withheld() {
    const BACKLOG: usize = 2;
    for server in servers_with("audit_fail_closed", |settings| {
        settings.state.audit_backlog = Some(BACKLOG);
    })
    .await
    {
        let backend = server.backend().to_owned();
        let journaled = backend == "sqlite";
        let token = support::bearer_for(&server.app.base);
        let auditor = server.token("auditor", "system/AuditEvent.rs", None).await;
        let family =
            server.get("Patient/1", Some(&token), "before").await.json()["name"][0]["family"]
                .as_str()
                .unwrap()
                .to_owned();
        let mut raw = server.raw().await;
        sqlx::query("ALTER TABLE audit_event RENAME TO audit_event_away")
            .execute(&mut raw)
            .await
            .unwrap();
        let assert_withheld = |reply: &Reply, path: &str| {
            assert_eq!(reply.status, 503, "{backend}: {path}");
            assert_eq!(outcome_code(reply), "transient");
            let text = String::from_utf8_lossy(&reply.body);
            assert!(
                !text.contains(&family),
                "{backend}: {path} leaked data: {text}"
            );
            assert!(!text.contains("\"Patient\""), "{text}");
        };
        let mut answered = Vec::new();
        let paths = [
            "Patient/1",
            "Patient?_count=5",
            "Observation?patient=1",
            "Patient/2",
            "Patient/3",
            "Patient/4",
        ];
        let mut withheld = 0;
        for (n, path) in paths.iter().enumerate() {
            let request_id = format!("while-away-{n}");
            let reply = server.get(path, Some(&token), &request_id).await;
            if journaled && reply.status == 200 && withheld == 0 {
                answered.push(request_id);
            } else {
                assert_withheld(&reply, path);
                withheld += 1;
            }
            if journaled && n == 0 {
                // The writer takes the first event, and the flush, into a batch the store
                // refuses, and holds it from then on. Without waiting for that, how many of the
                // next requests its batch takes depends on how fast they come.
                assert!(server.audit.flush().await.is_err(), "{backend}");
            }
        }
        if journaled {
            // The writer's failing batch holds what it gathered (the backlog at most), and the
            // backlog the rest; from then on every answer is refused.
            assert!(
                (BACKLOG..=2 * BACKLOG).contains(&answered.len()),
                "{backend}: {answered:?}"
            );
            let reading = server.get("AuditEvent", Some(&auditor), "read-away").await;
            assert_eq!(reading.status, 503, "{backend}: the trail is behind");
        }
        sqlx::query("ALTER TABLE audit_event_away RENAME TO audit_event")
            .execute(&mut raw)
            .await
            .unwrap();
        if journaled {
            // The writer offers its batch again within its longest wait between tries.
            let taken = async { while server.audit.flush().await.is_err() {} };
            tokio::time::timeout(std::time::Duration::from_secs(30), taken)
                .await
                .expect("the store takes the journaled events once it is back");
        }
        assert_eq!(
            server.get("Patient/1", Some(&token), "after").await.status,
            200,
            "{backend}"
        );
        let events = server.events().await;
        // Exactly one event per answered request, with its outcome and patients.
        for request_id in answered
            .iter()
            .map(String::as_str)
            .chain(["before", "after"])
        {
            let event = server.event(request_id).await;
            assert_eq!(event["outcome"], "0", "{backend}: {request_id}");
        }
        if journaled {
            let first = server.event("while-away-0").await;
            assert_eq!(patients_of(&first), BTreeSet::from(["1".to_owned()]));
        }
        // Nothing half-written: the chain verifies over every stored event.
        let verified = server.store.verify_audit_chain().await.unwrap();
        assert_eq!(verified, Ok(events.len() as u64), "{backend}");
    }
}

#[tokio::test]
async fn concurrent_requests_are_all_audited_and_the_chain_catches_one_changed_byte() {
    for server in servers("audit_chain").await {
        let backend = server.backend().to_owned();
        let token = support::bearer_for(&server.app.base);
        let mut requests = tokio::task::JoinSet::new();
        for n in 1..=16 {
            let request = reqwest::Client::new()
                .get(server.app.url(&format!("Patient/{n}")))
                .bearer_auth(&token)
                .header("X-Request-Id", format!("c{n}"));
            requests.spawn(async move { request.send().await.unwrap().status().as_u16() });
        }
        while let Some(status) = requests.join_next().await {
            assert_eq!(status.unwrap(), 200, "{backend}");
        }
        let events = server.events().await;
        assert_eq!(events.len(), 16, "{backend}");
        for n in 1..=16 {
            let event = server.event(&format!("c{n}")).await;
            assert_eq!(patients_of(&event), BTreeSet::from([n.to_string()]));
        }
        assert_eq!(server.store.verify_audit_chain().await.unwrap(), Ok(16));

        // One byte of one event's JSON changed: caught, at that event.
        let mut raw = server.raw().await;
        sqlx::query(
            "UPDATE audit_event SET resource = REPLACE(resource, '\"outcome\":\"0\"', '\"outcome\":\"4\"') WHERE seq = 7",
        )
        .execute(&mut raw)
        .await
        .unwrap();
        let broken = server
            .store
            .verify_audit_chain()
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(broken.seq, 7, "{backend}: {broken}");
        sqlx::query(
            "UPDATE audit_event SET resource = REPLACE(resource, '\"outcome\":\"4\"', '\"outcome\":\"0\"') WHERE seq = 7",
        )
        .execute(&mut raw)
        .await
        .unwrap();
        assert_eq!(server.store.verify_audit_chain().await.unwrap(), Ok(16));
        // A patient removed from an event, an event removed, the newest event removed: caught.
        sqlx::query("DELETE FROM audit_event_patient WHERE event_seq = 3")
            .execute(&mut raw)
            .await
            .unwrap();
        assert_eq!(
            server
                .store
                .verify_audit_chain()
                .await
                .unwrap()
                .unwrap_err()
                .seq,
            3
        );
        sqlx::query("DELETE FROM audit_event WHERE seq = 16")
            .execute(&mut raw)
            .await
            .unwrap();
        sqlx::query("DELETE FROM audit_event WHERE seq = 5")
            .execute(&mut raw)
            .await
            .unwrap();
        assert_eq!(
            server
                .store
                .verify_audit_chain()
                .await
                .unwrap()
                .unwrap_err()
                .seq,
            3
        );
    }
}

/// The audit writer is one of the application's workers: a graceful shutdown still audits the
/// requests it finishes, and the writer then stops by itself, well before the workers' grace.
#[tokio::test]
async fn the_audit_writer_stops_with_the_server() {
    let db_url = support::seed(Backend::Sqlite, "audit_shutdown").await;
    let settings = support::settings(&db_url, 5000);
    let application = portico::app::Application::build(&settings).await.unwrap();
    let base = format!("http://127.0.0.1:{}/fhir", application.port());
    let store = application.state.auth.tokens.store().clone();
    let token =
        support::mint_token(&application.state.auth.tokens, &base, "system/*.rs", None).await;
    let stop = application.shutdown_token();
    let server = tokio::spawn(application.run_until_cancelled());
    let reply = reqwest::Client::new()
        .get(format!("{base}/Patient/1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);

    let started = std::time::Instant::now();
    stop.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(20), server)
        .await
        .expect("the server stops")
        .expect("the server task ends")
        .expect("the server ends cleanly");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "the audit writer held shutdown for {:?}",
        started.elapsed()
    );
    assert_eq!(store.verify_audit_chain().await.unwrap(), Ok(1));
}

/// Events pending while the writer is busy go into one transaction (one commit, one fsync):
/// on PostgreSQL, every row of the burst carries the same inserting transaction id (`xmin`).
#[tokio::test]
async fn pending_events_are_committed_together() {
    for state_url in support::state_urls("audit_group_commit").await {
        let store = StateStore::open(&state_url).await.unwrap();
        let (writer, task) = portico::state::audit::audit_writer(store.clone());
        let mut appends = tokio::task::JoinSet::new();
        for n in 0..16 {
            let writer = writer.clone();
            appends.spawn(async move { writer.append(sample_record("burst", n)).await });
        }
        // Every append is queued before the writer starts.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let running = tokio::spawn(task.run(tokio_util::sync::CancellationToken::new()));
        while let Some(appended) = appends.join_next().await {
            assert_eq!(appended.unwrap(), Ok(()), "{state_url}");
        }
        assert_eq!(store.verify_audit_chain().await.unwrap(), Ok(16));
        if state_url.starts_with("postgres") {
            let mut raw = sqlx::AnyConnection::connect(&state_url).await.unwrap();
            let row = sqlx::query("SELECT COUNT(DISTINCT xmin::text) AS n FROM audit_event")
                .fetch_one(&mut raw)
                .await
                .unwrap();
            let transactions: i64 = sqlx::Row::get(&row, "n");
            assert_eq!(transactions, 1, "16 pending events, one transaction");
        }
        drop(writer);
        tokio::time::timeout(std::time::Duration::from_secs(5), running)
            .await
            .expect("the writer stops once its handles are gone")
            .unwrap();
    }
}

/// A stored-shape event `{prefix}-{n}` naming patient `n`.
fn sample_record(prefix: &str, n: i64) -> AuditRecord {
    AuditRecord {
        id: format!("{prefix}-{n}"),
        recorded_ms: 1_700_000_000_000 + n,
        subtype: Some("read".into()),
        outcome: "0".into(),
        client_id: Some("app".into()),
        subject: Some("app".into()),
        fhir_user: None,
        request_id: format!("r{n}"),
        patients: vec![n.to_string()],
        resource: format!("{{\"n\":{n}}}"),
    }
}

/// A journal a killed process left may end with events it had already committed: the next
/// start appends only the others, in the journal's order, and empties the journal.
#[tokio::test]
async fn a_journal_left_behind_is_appended_once_in_order() {
    for state_url in support::state_urls("audit_journal_replay").await {
        let store = StateStore::open(&state_url).await.unwrap();
        let backend = state_url.split(':').next().unwrap();
        let dir = std::env::temp_dir().join(format!(
            "portico-journal-replay-{backend}-{}",
            std::process::id()
        ));
        std::fs::remove_dir_all(&dir).ok();
        let records: Vec<AuditRecord> = (0..5).map(|n| sample_record("left", n)).collect();
        {
            let (journal, recovered) = AuditJournal::open(&dir).unwrap();
            assert!(recovered.is_empty());
            for record in &records {
                journal.append(record.clone(), |_, _| ()).unwrap();
            }
        }
        store.append_audit_events(&records[..2]).await.unwrap();

        let (writer, task) = journaled_audit_writer(store.clone(), &dir, 16)
            .await
            .unwrap();
        let mut stored: Vec<String> = store
            .search_audit_events(&AuditFilter::default(), 100, None)
            .await
            .unwrap()
            .into_iter()
            .map(|stored| stored.resource)
            .collect();
        stored.reverse();
        let journaled: Vec<String> = records.iter().map(|r| r.resource.clone()).collect();
        assert_eq!(
            stored, journaled,
            "{backend}: each once, in the journal's order"
        );
        assert_eq!(store.verify_audit_chain().await.unwrap(), Ok(5));
        drop((writer, task));
        let (_, recovered) = AuditJournal::open(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert!(recovered.is_empty(), "{backend}: the journal was emptied");
        std::fs::remove_dir_all(&dir).ok();
    }
}
