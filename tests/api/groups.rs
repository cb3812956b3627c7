//! Portico's own Groups (for `/Group/[id]/$export`): stored groups read and searched over HTTP on
//! a SQLite and a PostgreSQL state store (strict R4, every search checked against the groups'
//! fields, paging, who may read them), `groups::members` checked against plain SQL on the seeded
//! OpenEMR data for each criterion, an adapter without a criterion's parameter named, and
//! `portico groups` end to end.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::NaiveDate;
use portico::auth::tokens::{Grant, TokenService};
use portico::config::Secret;
use portico::dialect::RenderedQuery;
use portico::dialect::ast::Value;
use portico::groups::{MembersError, members};
use portico::state::StateStore;
use portico::state::groups::{
    GroupCriterion, GroupDefinition, GroupIdentifier, NewGroup, StoredGroup,
};
use portico::state::users::Role;
use serde_json::Value as Json;

use crate::commands::portico;
use crate::support::{self, Backend, Reply, TestApp, assert_valid_r4, outcome_code};

fn day(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
}

fn identifier(system: Option<&str>, value: &str) -> Option<GroupIdentifier> {
    Some(GroupIdentifier {
        system: system.map(str::to_owned),
        value: value.to_owned(),
    })
}

/// The groups every HTTP test stores: each definition kind, identifiers with and without a
/// system, names that differ in case and accents.
fn sample_groups() -> Vec<NewGroup> {
    let group = |id: &str, name: &str, identifier, definition| NewGroup {
        id: id.into(),
        name: name.into(),
        identifier,
        definition,
    };
    vec![
        group(
            "diabetes-2024",
            "Diabetes follow-up",
            identifier(Some("urn:example:cohorts"), "D-24"),
            GroupDefinition::Members(vec!["3".into(), "1".into(), "7".into()]),
        ),
        group(
            "dr-4",
            "Dr. Four's panel",
            identifier(Some("urn:example:panels"), "D-24"),
            GroupDefinition::Criterion(GroupCriterion::GeneralPractitioner("4".into())),
        ),
        group(
            "elm-street",
            "Élm Street visits",
            identifier(None, "ELM"),
            GroupDefinition::Criterion(GroupCriterion::AppointmentLocation("1".into())),
        ),
        group(
            "summer.2024",
            "diabetes summer clinic",
            None,
            GroupDefinition::Criterion(GroupCriterion::AppointmentPeriod {
                start: day("2024-06-01"),
                end: day("2024-08-31"),
            }),
        ),
        group(
            "z-single",
            "100% attendance",
            identifier(Some("urn:example:cohorts"), "Z"),
            GroupDefinition::Members(vec!["12".into()]),
        ),
    ]
}

/// A Portico over one seeded SQLite OpenEMR database, with the sample groups in its state store.
struct Served {
    app: TestApp,
    store: StateStore,
    audit: portico::state::audit::AuditWriter,
    tokens: TokenService,
    state_url: String,
    groups: Vec<StoredGroup>,
}

impl Served {
    fn backend(&self) -> &str {
        self.state_url.split(':').next().unwrap()
    }

    async fn token_for(&self, grant: Grant) -> String {
        self.tokens
            .issue_for(&grant, &self.app.base, 3600)
            .await
            .unwrap()
            .0
    }

    async fn client_token(&self, scope: &str, patient: Option<&str>) -> String {
        self.token_for(Grant {
            client_id: "cohort-tool".into(),
            subject: "cohort-tool".into(),
            scope: scope.into(),
            patient: patient.map(str::to_owned),
            ..Grant::default()
        })
        .await
    }

    async fn get(&self, path: &str, token: &str) -> Reply {
        self.app
            .send(
                reqwest::Client::new()
                    .get(self.app.url(path))
                    .bearer_auth(token),
            )
            .await
    }

    /// GETs `path` with the server's `system/*.rs` token, expects `status` and strict R4.
    async fn fhir(&self, path: &str, status: u16) -> Json {
        let body = self.app.get_fhir(path, status).await;
        assert_valid_r4(&body);
        body
    }

    /// The ids of every match of `query`, following `next` links, each page strict R4, none
    /// twice; and the total the first page gave.
    async fn search(&self, query: &str) -> (BTreeSet<String>, u64) {
        let backend = self.backend();
        let mut next = Some(query.to_owned());
        let mut ids = BTreeSet::new();
        let mut total = None;
        while let Some(url) = next {
            let bundle = self.fhir(&url, 200).await;
            total.get_or_insert(bundle["total"].as_u64().unwrap());
            for group in support::matches(&bundle) {
                assert_eq!(group["resourceType"], "Group");
                let id = group["id"].as_str().unwrap().to_owned();
                assert!(ids.insert(id), "{backend}: {query}: paging repeats");
            }
            next = bundle["link"]
                .as_array()
                .unwrap()
                .iter()
                .find(|link| link["relation"] == "next")
                .map(|link| link["url"].as_str().unwrap().to_owned());
        }
        (ids, total.unwrap())
    }

    /// The ids of the stored groups `keep` selects: the oracle of a search.
    fn expected(&self, keep: impl Fn(&StoredGroup) -> bool) -> BTreeSet<String> {
        self.groups
            .iter()
            .filter(|group| keep(group))
            .map(|group| group.id.clone())
            .collect()
    }
}

/// One server per state store backend, over one seeded SQLite PMS database, each with the sample
/// groups stored.
async fn servers(test: &str) -> Vec<Served> {
    let db_url = support::seed(Backend::Sqlite, test).await;
    let mut servers = Vec::new();
    for state_url in support::state_urls(test).await {
        let mut settings = support::settings(&db_url, 5000);
        settings.state.url = Some(Secret::new(state_url.as_str()));
        let (base, audit) = support::start_audited(&settings).await;
        let tokens = support::token_service(&base);
        let store = tokens.store().clone();
        let mut groups = Vec::new();
        for group in sample_groups() {
            groups.push(store.add_group(&group).await.unwrap());
        }
        servers.push(Served {
            app: TestApp::at(base, db_url.clone()),
            store,
            audit,
            tokens,
            state_url,
            groups,
        });
    }
    servers
}

#[tokio::test]
async fn a_group_reads_as_strict_r4_with_its_definition() {
    for server in servers("groups_read").await {
        let backend = server.backend().to_owned();
        for stored in &server.groups {
            let group = server.fhir(&format!("Group/{}", stored.id), 200).await;
            assert_eq!(group["resourceType"], "Group", "{backend}");
            assert_eq!(group["id"], stored.id.as_str());
            assert_eq!(group["name"], stored.name.as_str());
            assert_eq!(group["type"], "person");
            let updated = chrono::DateTime::parse_from_rfc3339(
                group["meta"]["lastUpdated"].as_str().unwrap(),
            )
            .unwrap();
            assert_eq!(updated.timestamp_millis(), stored.updated_ms);
            match &stored.identifier {
                Some(identifier) => {
                    assert_eq!(group["identifier"][0]["value"], identifier.value.as_str());
                    assert_eq!(
                        group["identifier"][0]["system"].as_str(),
                        identifier.system.as_deref()
                    );
                }
                None => assert!(group.get("identifier").is_none()),
            }
            match &stored.definition {
                GroupDefinition::Members(patients) => {
                    assert_eq!(group["actual"], true);
                    assert_eq!(group["quantity"], patients.len());
                    let listed: Vec<String> = group["member"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|m| m["entity"]["reference"].as_str().unwrap().to_owned())
                        .collect();
                    let expected: Vec<String> =
                        patients.iter().map(|p| format!("Patient/{p}")).collect();
                    assert_eq!(listed, expected, "{backend}: in the order given");
                }
                GroupDefinition::Criterion(criterion) => {
                    assert_eq!(group["actual"], false);
                    assert!(group.get("member").is_none());
                    let characteristic = &group["characteristic"][0];
                    assert_eq!(
                        characteristic["code"]["coding"][0]["code"],
                        criterion.kind()
                    );
                    assert!(characteristic["code"]["text"].is_string());
                    assert_eq!(characteristic["exclude"], false);
                    match criterion {
                        GroupCriterion::GeneralPractitioner(id) => assert_eq!(
                            characteristic["valueReference"]["reference"],
                            format!("Practitioner/{id}")
                        ),
                        GroupCriterion::AppointmentLocation(id) => assert_eq!(
                            characteristic["valueReference"]["reference"],
                            format!("Location/{id}")
                        ),
                        GroupCriterion::AppointmentPeriod { start, end } => {
                            assert_eq!(characteristic["valueBoolean"], true);
                            assert_eq!(characteristic["period"]["start"], start.to_string());
                            assert_eq!(characteristic["period"]["end"], end.to_string());
                        }
                    }
                }
            }
        }
        // XML too, through fhirbolt's model.
        let xml = server
            .app
            .get("Group/diabetes-2024?_format=application/fhir%2Bxml")
            .await;
        assert_eq!(xml.status, 200, "{backend}");
        assert!(String::from_utf8_lossy(&xml.body).contains("<Group xmlns="));

        for missing in ["Group/no-such-group", "Group/not%20an%20id"] {
            let reply = server.app.get(missing).await;
            assert_eq!(reply.status, 404, "{backend}: {missing}");
            assert_eq!(outcome_code(&reply), "not-found");
        }
        // Removed, it is gone.
        assert!(server.store.remove_group("z-single").await.unwrap());
        assert_eq!(server.app.get("Group/z-single").await.status, 404);
        assert!(!server.store.remove_group("z-single").await.unwrap());
        // An id is taken once; a bad group is refused whole.
        let again = server.store.add_group(&sample_groups()[0]).await;
        assert!(format!("{:?}", again.unwrap_err()).contains("already exists"));
    }
}

#[tokio::test]
async fn group_searches_find_exactly_the_groups_that_match() {
    for server in servers("groups_search").await {
        let backend = server.backend().to_owned();
        let has_identifier = |group: &StoredGroup, system: Option<Option<&str>>, value: &str| {
            group.identifier.as_ref().is_some_and(|identifier| {
                system.is_none_or(|system| identifier.system.as_deref() == system)
                    && (value.is_empty() || identifier.value == value)
            })
        };
        let named = |group: &StoredGroup, prefix: &str| {
            portico::dialect::fold::fold(&group.name)
                .starts_with(&portico::dialect::fold::fold(prefix))
        };
        let cases: Vec<(&str, BTreeSet<String>)> = vec![
            ("Group", server.expected(|_| true)),
            (
                "Group?_id=dr-4,summer.2024,nothing",
                server.expected(|g| g.id == "dr-4" || g.id == "summer.2024"),
            ),
            (
                "Group?identifier=D-24",
                server.expected(|g| has_identifier(g, None, "D-24")),
            ),
            (
                "Group?identifier=urn:example:cohorts|D-24",
                server.expected(|g| has_identifier(g, Some(Some("urn:example:cohorts")), "D-24")),
            ),
            (
                "Group?identifier=urn:example:cohorts|",
                server.expected(|g| has_identifier(g, Some(Some("urn:example:cohorts")), "")),
            ),
            (
                "Group?identifier=|ELM,|D-24",
                server.expected(|g| has_identifier(g, Some(None), "ELM")),
            ),
            (
                "Group?name=DIABETES",
                server.expected(|g| named(g, "diabetes")),
            ),
            ("Group?name=elm", server.expected(|g| named(g, "elm"))),
            (
                "Group?name=dr.,100%25",
                server.expected(|g| named(g, "dr.") || named(g, "100%")),
            ),
            // LIKE's wildcards are text: `_` matches no other character.
            ("Group?name=d_", BTreeSet::new()),
            (
                "Group?name=diabetes&identifier=D-24",
                server.expected(|g| named(g, "diabetes") && has_identifier(g, None, "D-24")),
            ),
            // A blank value is ignored.
            ("Group?name=&identifier=", server.expected(|_| true)),
        ];
        for (query, expected) in cases {
            assert!(
                query == "Group?name=d_" || !expected.is_empty(),
                "{query}: the case selects something"
            );
            let (found, total) = server.search(query).await;
            assert_eq!(found, expected, "{backend}: {query}");
            assert_eq!(total, expected.len() as u64, "{backend}: {query}: total");
            // Paged two at a time, the same groups, each once.
            let separator = if query.contains('?') { '&' } else { '?' };
            let (paged, _) = server.search(&format!("{query}{separator}_count=2")).await;
            assert_eq!(paged, expected, "{backend}: {query} in pages of 2");
        }

        // Pages go by id; the self link shows the parameters as applied.
        let first = server.fhir("Group?_count=2&name=d", 200).await;
        let ids = support::ids(&support::matches(&first));
        assert_eq!(ids.len(), 2, "{backend}");
        assert!(ids[0] < ids[1], "{backend}: {ids:?}");
        let self_link = first["link"][0]["url"].as_str().unwrap();
        assert!(
            self_link.ends_with("/Group?_count=2&name=d"),
            "{backend}: {self_link}"
        );
        let count_only = server.fhir("Group?_count=0", 200).await;
        assert_eq!(count_only["total"], server.groups.len());
        assert!(count_only.get("entry").is_none());

        // POST _search takes the same parameters as a form.
        let token = support::bearer_for(&server.app.base);
        let posted = server
            .app
            .send(
                reqwest::Client::new()
                    .post(server.app.url("Group/_search"))
                    .bearer_auth(&token)
                    .form(&[("identifier", "urn:example:cohorts|D-24")]),
            )
            .await;
        assert_eq!(posted.status, 200, "{backend}");
        let bundle = posted.json();
        assert_valid_r4(&bundle);
        assert_eq!(support::ids(&support::matches(&bundle)), ["diabetes-2024"]);

        // Anything else is a 400 naming the parameter.
        for (query, code) in [
            ("Group?type=person", "not-supported"),
            ("Group?name:exact=x", "not-supported"),
            ("Group?_id=not%20an%20id", "invalid"),
            ("Group?identifier=a|b|c", "invalid"),
            ("Group?_cursor=%20", "invalid"),
            ("Group?_count=x", "invalid"),
        ] {
            let reply = server.app.get(query).await;
            assert_eq!(reply.status, 400, "{backend}: {query}");
            assert_eq!(outcome_code(&reply), code, "{backend}: {query}");
        }
    }
}

#[tokio::test]
async fn groups_are_for_group_readers_never_for_a_token_limited_to_a_patient() {
    for server in servers("groups_access").await {
        let backend = server.backend().to_owned();
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
        server
            .store
            .add_user("pat", "a long password", Role::Patient, Some("Patient/1"))
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
        let system_group = server.client_token("system/Group.rs", None).await;
        let system_read_only = server.client_token("system/Group.r", None).await;
        let admin = server
            .token_for(user_token("root-admin", None, "user/Group.rs"))
            .await;
        let clinician = server
            .token_for(user_token(
                "dr-who",
                Some("Practitioner/1"),
                "user/Group.rs user/Patient.rs",
            ))
            .await;
        let clinician_everything = server
            .token_for(user_token("dr-who", Some("Practitioner/1"), "user/*.rs"))
            .await;
        let portal = server
            .token_for(user_token("pat", Some("Patient/1"), "user/Group.rs"))
            .await;
        let patient = server.client_token("patient/*.rs", Some("1")).await;
        let patient_group = server.client_token("patient/Group.rs", Some("1")).await;
        let narrow = server
            .client_token("system/Patient.rs system/AuditEvent.rs", None)
            .await;
        let granular = server
            .client_token("system/Group.rs?name=diabetes", None)
            .await;
        let everything = support::bearer_for(&server.app.base);
        for (token, read, search, who) in [
            (&everything, 200, 200, "system/*.rs"),
            (&system_group, 200, 200, "system/Group.rs"),
            (&system_read_only, 200, 403, "system/Group.r"),
            (&admin, 200, 200, "an admin's user/Group.rs"),
            (&clinician, 200, 200, "a clinician's user/Group.rs"),
            (&clinician_everything, 200, 200, "a clinician's user/*.rs"),
            (&portal, 403, 403, "a patient-portal user's user/Group.rs"),
            (&patient, 403, 403, "patient/*.rs"),
            (&patient_group, 403, 403, "patient/Group.rs"),
            (&narrow, 403, 403, "scopes without Group"),
            (&granular, 403, 403, "a granular Group scope"),
        ] {
            for (path, status) in [("Group/diabetes-2024", read), ("Group?name=d", search)] {
                let reply = server.get(path, token).await;
                assert_eq!(reply.status, status, "{backend}: {who} on {path}");
                if status == 403 {
                    assert_eq!(outcome_code(&reply), "forbidden");
                }
            }
        }
        // A 403 says nothing about which groups exist.
        assert_eq!(
            server.get("Group/no-such-group", &patient).await.status,
            403
        );
        // Group scopes grant no PMS data.
        assert_eq!(server.get("Patient/1", &system_group).await.status, 403);
        assert_eq!(server.get("Patient/1", &admin).await.status, 403);

        // A read is audited with the patients the group lists.
        let request_id = format!("group-read-{backend}");
        let reply = server
            .app
            .send(
                reqwest::Client::new()
                    .get(server.app.url("Group/diabetes-2024"))
                    .bearer_auth(&system_group)
                    .header("X-Request-Id", &request_id),
            )
            .await;
        assert_eq!(reply.status, 200);
        server.audit.flush().await.unwrap();
        let filter = portico::state::audit::AuditFilter {
            patients: vec![vec!["7".into()]],
            agents: vec![vec!["cohort-tool".into()]],
            ..Default::default()
        };
        let events = server
            .store
            .search_audit_events(&filter, 100, None)
            .await
            .unwrap();
        let event: Json = events
            .iter()
            .map(|stored| serde_json::from_str::<Json>(&stored.resource).unwrap())
            .find(|event| event.to_string().contains(&request_id))
            .unwrap_or_else(|| panic!("{backend}: the read's AuditEvent names Patient/7"));
        assert_eq!(event["subtype"][0]["code"], "read");
    }
}

/// Values of the first column of `sql` (MySQL quoting) on the PMS at `db_url`, as text.
async fn oracle(db_url: &str, sql: &str, params: Vec<Value>) -> BTreeSet<String> {
    let database = support::legacy_database(db_url, Duration::from_secs(10));
    let sql = match database.dialect() {
        portico::dialect::DialectKind::Sqlite => sql.replace('`', "\""),
        _ => sql.to_owned(),
    };
    let rows = database
        .fetch(&RenderedQuery { sql, params })
        .await
        .unwrap_or_else(|e| panic!("{}", e.message));
    database.close().await;
    rows.iter()
        .map(|row| match &row[0] {
            Value::Text(text) => text.clone(),
            Value::Int(n) => n.to_string(),
            other => panic!("unexpected cell {other:?}"),
        })
        .collect()
}

fn stored(definition: GroupDefinition) -> StoredGroup {
    StoredGroup {
        id: "g".into(),
        name: "g".into(),
        identifier: None,
        definition,
        created_ms: 0,
        updated_ms: 0,
    }
}

/// The OpenEMR calendar rows that are Appointments (patient categories, a patient named).
const APPOINTMENTS: &str = "FROM `openemr_postcalendar_events` e \
     JOIN `openemr_postcalendar_categories` c ON c.`pc_catid` = e.`pc_catid` \
     WHERE c.`pc_cattype` = 0 AND e.`pc_pid` NOT IN ('', '0')";

async fn members_match_plain_sql(backend: Backend, test: &str) {
    let db_url = support::seed(backend, test).await;
    let repository = support::repository(&db_url, "openemr");
    let resolved = |definition: GroupDefinition| {
        let repository = repository.clone();
        async move {
            let ids = members(&repository, &stored(definition)).await.unwrap();
            let set: BTreeSet<String> = ids.iter().cloned().collect();
            assert_eq!(set.len(), ids.len(), "each member once");
            set
        }
    };

    // A member list comes back as stored, missing patients too.
    let listed = vec!["9".to_owned(), "2".into(), "99999".into()];
    assert_eq!(
        members(
            &repository,
            &stored(GroupDefinition::Members(listed.clone()))
        )
        .await
        .unwrap(),
        listed
    );

    // General practitioner: patient_data.providerID (users with an NPI are Practitioners).
    let mut nonempty = 0;
    for practitioner in 1..=9i64 {
        let expected = oracle(
            &db_url,
            "SELECT p.`pid` FROM `patient_data` p JOIN `users` u ON u.`id` = p.`providerID` \
             WHERE u.`npi` IS NOT NULL AND u.`npi` <> '' AND u.`id` = ?",
            vec![Value::Int(practitioner)],
        )
        .await;
        let found = resolved(GroupDefinition::Criterion(
            GroupCriterion::GeneralPractitioner(practitioner.to_string()),
        ))
        .await;
        assert_eq!(found, expected, "{test}: Practitioner/{practitioner}");
        nonempty += usize::from(!found.is_empty());
    }
    assert!(nonempty >= 5, "{test}: the practitioners have patients");

    // Appointment location: service locations only are Locations.
    let mut nonempty = 0;
    for location in 1..=3i64 {
        let expected = oracle(
            &db_url,
            &format!(
                "SELECT DISTINCT e.`pc_pid` {APPOINTMENTS} AND e.`pc_facility` IN \
                 (SELECT f.`id` FROM `facility` f WHERE f.`service_location` = 1 AND f.`id` = ?)"
            ),
            vec![Value::Int(location)],
        )
        .await;
        let found = resolved(GroupDefinition::Criterion(
            GroupCriterion::AppointmentLocation(location.to_string()),
        ))
        .await;
        assert_eq!(found, expected, "{test}: Location/{location}");
        nonempty += usize::from(!found.is_empty());
    }
    assert!(nonempty >= 1, "{test}: a location has appointments");

    // Appointment period: both days included.
    for (start, end) in [
        ("2024-06-01", "2024-08-31"),
        ("2025-01-06", "2025-01-06"),
        ("2019-01-01", "2019-12-31"),
    ] {
        let expected = oracle(
            &db_url,
            &format!(
                "SELECT DISTINCT e.`pc_pid` {APPOINTMENTS} \
                 AND e.`pc_eventDate` >= ? AND e.`pc_eventDate` <= ?"
            ),
            vec![Value::Date(day(start)), Value::Date(day(end))],
        )
        .await;
        let found = resolved(GroupDefinition::Criterion(
            GroupCriterion::AppointmentPeriod {
                start: day(start),
                end: day(end),
            },
        ))
        .await;
        assert_eq!(found, expected, "{test}: {start}..{end}");
        if start == "2024-06-01" {
            assert!(found.len() >= 5, "{test}: the summer has patients");
        }
    }
}

#[tokio::test]
async fn members_are_what_plain_sql_finds_for_each_criterion_on_sqlite() {
    members_match_plain_sql(Backend::Sqlite, "groups_members").await;
}

#[tokio::test]
async fn members_are_what_plain_sql_finds_for_each_criterion_on_mariadb() {
    members_match_plain_sql(Backend::MariaDb, "groups_members").await;
}

#[tokio::test]
async fn a_criterion_the_adapter_cannot_search_is_an_error_naming_its_parameter() {
    // Cerebello's appointments name no Location; its patients have a general practitioner.
    let db_url = support::seed_with(
        Backend::Sqlite,
        "groups_cerebello",
        portico::demo::cerebello::seed_cerebello,
    )
    .await;
    let repository = support::repository(&db_url, "cerebello");
    let error = members(
        &repository,
        &stored(GroupDefinition::Criterion(
            GroupCriterion::AppointmentLocation("1".into()),
        )),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            error,
            MembersError::ParameterNotSupported {
                resource_type: "Appointment",
                parameter: "location",
                ..
            }
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("cerebello") && message.contains("location"),
        "{message}"
    );
    let of_practitioner = members(
        &repository,
        &stored(GroupDefinition::Criterion(
            GroupCriterion::GeneralPractitioner("1".into()),
        )),
    )
    .await;
    assert!(of_practitioner.is_ok(), "{of_practitioner:?}");
}

#[tokio::test]
async fn portico_groups_adds_lists_shows_and_removes() {
    let db_url = support::seed(Backend::Sqlite, "groups_cli").await;
    let dir = std::env::temp_dir().join(format!("portico-groups-cli-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    let run = |args: &[&str]| {
        let output = portico()
            .args(args)
            .env("PORTICO_SERVER__STATE_DIR", &dir)
            .env("PORTICO_LEGACY__ADAPTER", "openemr")
            .env("PORTICO_LEGACY__URL", &db_url)
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let add = |id: &str, definition: &[&str]| {
        let mut args = vec![
            "groups",
            "add",
            "--id",
            id,
            "--name",
            "Cohort ",
            "--identifier",
        ];
        let identifier = format!("urn:example:cohorts|{id}");
        args.push(&identifier);
        args.extend(definition);
        let (ok, out, err) = run(&args);
        assert!(ok, "{args:?}: {out}{err}");
        out
    };
    assert!(
        add("listed", &["--member", "Patient/3", "1", "--member", "3"])
            .starts_with("added group listed: 2 listed members")
    );
    add("of-dr-2", &["--practitioner", "Practitioner/2"]);
    add("at-1", &["--location", "1"]);
    add("summer", &["--period", "2024-06-01..2024-08-31"]);

    // Refusals name the problem and add nothing.
    for (args, says) in [
        (
            vec![
                "groups", "add", "--id", "listed", "--name", "x", "--member", "1",
            ],
            "already exists",
        ),
        (
            vec![
                "groups",
                "add",
                "--id",
                "bad",
                "--name",
                "x",
                "--period",
                "2024-02-01..2024-01-01",
            ],
            "after it ends",
        ),
        (
            vec![
                "groups",
                "add",
                "--id",
                "bad",
                "--name",
                "x",
                "--period",
                "2024-02-30..2024-03-01",
            ],
            "not a YYYY-MM-DD day",
        ),
        (
            vec![
                "groups", "add", "--id", "bad id", "--name", "x", "--member", "1",
            ],
            "not a FHIR id",
        ),
        (
            vec![
                "groups",
                "add",
                "--id",
                "bad",
                "--name",
                "x",
                "--member",
                "1",
                "--location",
                "2",
            ],
            "cannot be used with",
        ),
        (vec!["groups", "show", "nobody"], "no group nobody"),
        (vec!["groups", "remove", "nobody"], "no group nobody"),
    ] {
        let (ok, out, err) = run(&args);
        assert!(!ok, "{args:?}: {out}");
        assert!(err.contains(says), "{args:?}: {err}");
    }

    let (ok, listed, err) = run(&["groups", "list"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 4, "{listed}");
    assert_eq!(
        lines[1],
        "listed\tCohort\turn:example:cohorts|listed\t2 listed members"
    );
    assert!(lines[3].contains("patients with an appointment in 2024-06-01..2024-08-31"));

    // `show` resolves through the PMS: the members `groups::members` finds.
    let repository = support::repository(&db_url, "openemr");
    let store = StateStore::open(&StateStore::default_url(&dir).unwrap())
        .await
        .unwrap();
    for id in ["listed", "of-dr-2", "at-1", "summer"] {
        let (ok, shown, err) = run(&["groups", "show", id]);
        assert!(ok, "{id}: {err}");
        let group = store.group(id).await.unwrap().unwrap();
        let expected = members(&repository, &group).await.unwrap();
        assert!(!expected.is_empty(), "{id}");
        assert!(
            shown.contains(&format!("\nmembers: {}\n", expected.len())),
            "{id}: {shown}"
        );
        let printed: Vec<String> = shown
            .lines()
            .filter_map(|line| line.strip_prefix("Patient/"))
            .map(str::to_owned)
            .collect();
        assert_eq!(printed, expected, "{id}");
    }
    assert_eq!(
        store.group("listed").await.unwrap().unwrap().definition,
        GroupDefinition::Members(vec!["3".into(), "1".into()])
    );

    let (ok, said, _) = run(&["groups", "remove", "at-1"]);
    assert!(ok && said.trim() == "removed group at-1", "{said}");
    assert!(store.group("at-1").await.unwrap().is_none());
    std::fs::remove_dir_all(&dir).ok();
}
