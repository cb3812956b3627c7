//! The adapter conformance kit: one behavioural suite that every adapter × dialect combination
//! passes. It knows nothing of a particular PMS: it reads the CapabilityStatement, takes search
//! values from the served data, and checks the answers against FHIR's meaning of each parameter.
//! Adding a combination is one `kit!` line at the bottom of this file.

use portico::dialect::fold::fold;
use serde_json::Value as Json;

use crate::support::{TestApp, assert_valid_r4, ids, matches};

/// Where a search parameter looks in a resource (its FHIRPath, as dotted JSON paths; a segment
/// `name(key=value)` keeps array items whose `key` is `value`), and for references the resource
/// type its values point at.
pub(crate) fn expression(
    resource_type: &str,
    param: &str,
) -> Option<(&'static [&'static str], Option<&'static str>)> {
    let found: (&'static [&'static str], Option<&'static str>) = match (resource_type, param) {
        (_, "_lastUpdated") => (&["meta.lastUpdated"], None),
        (_, "identifier") => (&["identifier"], None),
        ("Patient" | "Practitioner", "name") => (&["name.family", "name.given", "name.text"], None),
        ("Organization" | "Location", "name") => (&["name"], None),
        (_, "family") => (&["name.family"], None),
        (_, "given") => (&["name.given"], None),
        (_, "birthdate") => (&["birthDate"], None),
        (_, "gender") => (&["gender"], None),
        (_, "death-date") => (&["deceasedDateTime"], None),
        (_, "general-practitioner") => (&["generalPractitioner"], Some("Practitioner")),
        (_, "phone") => (&["telecom(system=phone).value"], None),
        (_, "email") => (&["telecom(system=email).value"], None),
        (_, "address-postalcode") => (&["address.postalCode"], None),
        (_, "address-city") => (&["address.city"], None),
        ("Location", "organization") => (&["managingOrganization"], Some("Organization")),
        ("Patient", "organization") => (&["managingOrganization"], Some("Organization")),
        ("Organization", "partof") => (&["partOf"], Some("Organization")),
        ("Appointment", "patient") => (&["participant.actor"], Some("Patient")),
        ("Appointment", "practitioner") => (&["participant.actor"], Some("Practitioner")),
        ("Appointment", "location") => (&["participant.actor"], Some("Location")),
        ("Appointment", "actor") => (&["participant.actor"], None),
        ("Appointment", "date") => (&["start"], None),
        ("Encounter", "date") => (&["period.start"], None),
        ("Encounter", "practitioner") => (&["participant.individual"], Some("Practitioner")),
        ("Observation" | "Encounter", "patient" | "subject") => (&["subject"], Some("Patient")),
        ("Observation", "encounter") => (&["encounter"], Some("Encounter")),
        ("Observation", "category") => (&["category"], None),
        ("Observation", "code") => (&["code"], None),
        ("Observation", "component-code") => (&["component.code"], None),
        ("Observation", "date") => (
            &[
                "effectiveDateTime",
                "effectivePeriod.start",
                "effectiveInstant",
            ],
            None,
        ),
        (_, "status") => (&["status"], None),
        ("Coverage", "patient" | "beneficiary") => (&["beneficiary"], Some("Patient")),
        ("Coverage", "payor") => (&["payor"], None),
        ("Coverage", "subscriber") => (&["subscriber"], Some("Patient")),
        ("Claim", "patient") => (&["patient"], Some("Patient")),
        ("Claim", "created") => (&["created"], None),
        ("Claim", "use") => (&["use"], None),
        ("Claim", "provider") => (&["provider"], None),
        ("Claim", "insurer") => (&["insurer"], Some("Organization")),
        _ => return None,
    };
    Some(found)
}

/// The values at a dotted path, arrays flattened.
fn values_at<'a>(resource: &'a Json, path: &str) -> Vec<&'a Json> {
    let mut current = vec![resource];
    for segment in path.split('.') {
        let (name, filter) = match segment.split_once('(') {
            Some((name, rest)) => (name, rest.trim_end_matches(')').split_once('=')),
            None => (segment, None),
        };
        let mut next = Vec::new();
        for value in current {
            let Some(child) = value.get(name) else {
                continue;
            };
            let items: Vec<&Json> = match child {
                Json::Array(items) => items.iter().collect(),
                other => vec![other],
            };
            next.extend(
                items
                    .into_iter()
                    .filter(|item| filter.is_none_or(|(key, wanted)| item[key] == *wanted)),
            );
        }
        current = next;
    }
    current
}

/// A token's (system, code) pairs: codes, Codings, CodeableConcepts and Identifiers.
fn tokens(value: &Json) -> Vec<(Option<String>, String)> {
    let text = |v: &Json| v.as_str().map(str::to_owned);
    match value {
        Json::String(code) => vec![(None, code.clone())],
        Json::Bool(flag) => vec![(None, flag.to_string())],
        Json::Object(object) if object.contains_key("coding") => value["coding"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(tokens)
            .collect(),
        Json::Object(object) if object.contains_key("code") => text(&value["code"])
            .map(|c| (text(&value["system"]), c))
            .into_iter()
            .collect(),
        Json::Object(object) if object.contains_key("value") => text(&value["value"])
            .map(|v| (text(&value["system"]), v))
            .into_iter()
            .collect(),
        _ => Vec::new(),
    }
}

/// A search value for `param` taken from `resource`, and the test each match must then pass.
pub(crate) struct Probe {
    pub(crate) query: String,
    pub(crate) holds: Box<dyn Fn(&Json) -> bool>,
}

pub(crate) fn probe(
    resource_type: &str,
    param: &str,
    kind: &str,
    resource: &Json,
) -> Option<Probe> {
    if param == "_id" {
        let id = resource["id"].as_str()?.to_owned();
        return Some(Probe {
            query: format!("_id={id}"),
            holds: Box::new(move |r| r["id"] == id.as_str()),
        });
    }
    let (paths, target) = expression(resource_type, param)?;
    let values: Vec<&Json> = paths.iter().flat_map(|p| values_at(resource, p)).collect();
    let encode =
        |text: &str| -> String { form_urlencoded::byte_serialize(text.as_bytes()).collect() };
    let at = move |r: &Json| -> Vec<Json> {
        paths
            .iter()
            .flat_map(|p| values_at(r, p))
            .cloned()
            .collect()
    };
    match kind {
        "string" => {
            // FHIR string matching ignores case and accents: the value is sent as served, and a
            // match holds when its fold starts with the value's fold.
            let value = values.iter().find_map(|v| v.as_str())?;
            let prefix: String = value.chars().take(3).collect();
            let query = format!("{param}={}", encode(&prefix));
            let folded = fold(&prefix);
            Some(Probe {
                query,
                holds: Box::new(move |r| {
                    at(r)
                        .iter()
                        .any(|v| v.as_str().is_some_and(|s| fold(s).starts_with(&folded)))
                }),
            })
        }
        "token" => {
            let (system, code) = values.iter().flat_map(|v| tokens(v)).next()?;
            let query = match &system {
                Some(system) => format!("{param}={}", encode(&format!("{system}|{code}"))),
                None => format!("{param}={}", encode(&code)),
            };
            Some(Probe {
                query,
                holds: Box::new(move |r| {
                    at(r)
                        .iter()
                        .flat_map(tokens)
                        .any(|(s, c)| c == code && (system.is_none() || s == system))
                }),
            })
        }
        "date" => {
            let day: String = values
                .iter()
                .find_map(|v| v.as_str().or_else(|| v["start"].as_str()))?
                .chars()
                .take(10)
                .collect();
            if day.len() != 10 {
                return None;
            }
            Some(Probe {
                query: format!("{param}={day}"),
                holds: Box::new(move |r| {
                    at(r).iter().any(|v| {
                        v.as_str()
                            .or_else(|| v["start"].as_str())
                            .is_some_and(|s| s.starts_with(&day))
                    })
                }),
            })
        }
        "reference" => {
            let reference = values
                .iter()
                .filter_map(|v| v["reference"].as_str())
                .find(|r| target.is_none_or(|t| r.starts_with(&format!("{t}/"))))?
                .to_owned();
            Some(Probe {
                query: format!("{param}={}", encode(&reference)),
                holds: Box::new(move |r| {
                    at(r).iter().any(|v| v["reference"] == reference.as_str())
                }),
            })
        }
        _ => None,
    }
}

/// A value of each type that parses, for checking that an advertised parameter is accepted.
pub(crate) fn any_value(kind: &str, name: &str) -> &'static str {
    match (kind, name) {
        ("date", _) => "ge2000-01-01",
        ("reference", _) | ("token", "_id") => "1",
        ("token", _) => "x",
        _ => "a",
    }
}

pub(crate) fn collect_references(value: &Json, out: &mut Vec<String>) {
    match value {
        Json::Object(map) => {
            for (key, child) in map {
                match (key.as_str(), child.as_str()) {
                    ("reference", Some(text)) => out.push(text.to_owned()),
                    _ => collect_references(child, out),
                }
            }
        }
        Json::Array(items) => items.iter().for_each(|i| collect_references(i, out)),
        _ => {}
    }
}

/// The resources a searchset adds with `search.mode = include`.
pub(crate) fn included(bundle: &Json) -> Vec<Json> {
    bundle["entry"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["search"]["mode"] == "include")
        .map(|e| e["resource"].clone())
        .collect()
}

/// The whole suite against one running Portico.
pub async fn run_kit(app: &TestApp) {
    let statement = app.get_fhir("metadata", 200).await;
    let resources = crate::support::adapter_resources(&statement);
    assert!(!resources.is_empty());
    for resource in &resources {
        let resource_type = resource["type"].as_str().unwrap();
        // Every resource, paged in small pages: strict R4, each exactly once, all counted.
        // Rows that cannot become valid R4 are reported, never lost: served + left out = total.
        let (all, _) = app.page_all_nothing_lost(resource_type, 7).await;
        assert!(!all.is_empty(), "{resource_type}: the fixture has no data");
        let unique: std::collections::HashSet<String> = ids(&all).into_iter().collect();
        assert_eq!(
            unique.len(),
            all.len(),
            "{resource_type}: paging repeated resources"
        );
        let mut references = Vec::new();
        for (index, item) in all.iter().enumerate() {
            assert_valid_r4(item);
            assert!(
                !item.to_string().contains("0001-01-01")
                    && !item.to_string().contains("0000-00-00"),
                "sentinel date emitted: {item}"
            );
            if index % 10 == 0 {
                let read = app
                    .get_fhir(
                        &format!("{resource_type}/{}", item["id"].as_str().unwrap()),
                        200,
                    )
                    .await;
                assert_eq!(&read, item, "{resource_type}: read differs from search");
                collect_references(item, &mut references);
            }
        }
        references.sort();
        references.dedup();
        for reference in references {
            app.get_fhir(&reference, 200).await;
        }

        // Every advertised parameter is accepted, and answers what FHIR says it means.
        let params = resource["searchParam"].as_array().unwrap();
        let mut probes = Vec::new();
        for param in params {
            let name = param["name"].as_str().unwrap();
            let kind = param["type"].as_str().unwrap();
            let accepted = app
                .get_strict(&format!("{resource_type}?{name}={}", any_value(kind, name)))
                .await;
            assert_eq!(
                accepted.status, 200,
                "advertised {resource_type}?{name} is refused"
            );
            assert!(
                expression(resource_type, name).is_some() || name == "_id",
                "the kit has no expression for {resource_type}.{name}: add it so the parameter is checked"
            );
            let Some(sample) = all
                .iter()
                .find(|r| probe(resource_type, name, kind, r).is_some())
            else {
                continue;
            };
            let probe = probe(resource_type, name, kind, sample).unwrap();
            let found = app
                .all_pages(&format!("{resource_type}?{}&_count=50", probe.query))
                .await;
            assert!(
                found.iter().any(|r| r["id"] == sample["id"]),
                "{resource_type}?{} misses {}",
                probe.query,
                sample["id"]
            );
            for item in &found {
                assert!(
                    (probe.holds)(item),
                    "{resource_type}?{} returned a resource that does not match: {item}",
                    probe.query
                );
            }
            probes.push((sample["id"].clone(), probe));
        }
        let unprobed: Vec<&str> = params
            .iter()
            .filter_map(|p| p["name"].as_str())
            .filter(|name| {
                !probes
                    .iter()
                    .any(|(_, probe)| probe.query.starts_with(&format!("{name}=")))
            })
            .collect();
        eprintln!(
            "{resource_type}: {} parameters checked against the data; no sample value for {unprobed:?}",
            probes.len()
        );
        assert!(
            probes.len() * 2 >= params.len(),
            "{resource_type}: most parameters must be checked, not only accepted"
        );
        // Combinations: two parameters from the same resource AND together.
        for pair in probes.windows(2) {
            let ((first_id, first), (second_id, second)) = (&pair[0], &pair[1]);
            if first_id != second_id {
                continue;
            }
            let found = app
                .all_pages(&format!(
                    "{resource_type}?{}&{}&_count=50",
                    first.query, second.query
                ))
                .await;
            assert!(
                found.iter().any(|r| r["id"] == *first_id),
                "{resource_type}?{}&{} misses {first_id}",
                first.query,
                second.query
            );
            assert!(found.iter().all(|r| (first.holds)(r) && (second.holds)(r)));
        }

        // Includes add exactly resources the matches reference; revincludes, resources that reference them.
        for include in resource["searchInclude"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let bundle = app
                .get_fhir(
                    &format!(
                        "{resource_type}?_count=10&_include={}",
                        include.as_str().unwrap()
                    ),
                    200,
                )
                .await;
            let page = matches(&bundle);
            for included in included(&bundle) {
                let reference = format!(
                    "{}/{}",
                    included["resourceType"].as_str().unwrap(),
                    included["id"].as_str().unwrap()
                );
                assert!(
                    page.iter()
                        .any(|m| m.to_string().contains(&format!("\"{reference}\""))),
                    "{include}: {reference} is not referenced"
                );
            }
        }
        for include in resource["searchRevInclude"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let bundle = app
                .get_fhir(
                    &format!(
                        "{resource_type}?_count=10&_revinclude={}",
                        include.as_str().unwrap()
                    ),
                    200,
                )
                .await;
            let page_refs: Vec<String> = matches(&bundle)
                .iter()
                .map(|m| format!("\"{resource_type}/{}\"", m["id"].as_str().unwrap()))
                .collect();
            for included in included(&bundle) {
                let text = included.to_string();
                assert!(
                    page_refs.iter().any(|r| text.contains(r)),
                    "{include}: an included resource references no match"
                );
            }
        }

        // Errors: malformed values are 400, unknown ids 404, unknown parameters 400 when strict.
        if let Some(date) = params.iter().find(|p| p["type"] == "date") {
            let reply = app
                .get(&format!(
                    "{resource_type}?{}=not-a-date",
                    date["name"].as_str().unwrap()
                ))
                .await;
            assert_eq!(reply.status, 400);
        }
        assert_eq!(
            app.get(&format!("{resource_type}/no-such-id-00"))
                .await
                .status,
            404
        );
        assert_eq!(
            app.get_strict(&format!("{resource_type}?no-such-parameter=1"))
                .await
                .status,
            400
        );
    }
}

/// One adapter × dialect combination: fresh database, the adapter's seed, Portico, the suite.
async fn run_combination(
    test: &str,
    adapter: &str,
    backend: crate::support::Backend,
    seed: impl AsyncFnOnce(
        &portico::db::fixture::FixtureWriter,
        usize,
    ) -> Result<portico::demo::Counts, portico::db::DbError>,
) {
    use crate::support::{
        Backend, PATIENTS, TestApp, fresh_database, mssql_server_url, settings, start,
    };
    if backend == Backend::SqlServer {
        assert!(
            mssql_server_url().is_some(),
            "set PORTICO_TEST_MSSQL_URL to a SQL Server to run {test}"
        );
    }
    let url = fresh_database(backend, &format!("kit_{test}")).await;
    let writer = portico::db::fixture::FixtureWriter::open(&url)
        .await
        .unwrap_or_else(|e| panic!("{}", e.message));
    seed(&writer, PATIENTS)
        .await
        .unwrap_or_else(|e| panic!("{}", e.message));
    writer.close().await;
    let mut settings = settings(&url, 5000);
    settings.legacy.adapter = adapter.into();
    let app = TestApp::at(start(&settings).await, url);
    run_kit(&app).await;
}

/// Declares one combination as a test; attributes before the name (such as `#[ignore]`) go on it.
macro_rules! kit {
    ($(#[$attribute:meta])* $name:ident, $adapter:literal, $backend:ident, $seed:path) => {
        #[tokio::test]
        $(#[$attribute])*
        async fn $name() {
            run_combination(
                stringify!($name),
                $adapter,
                crate::support::Backend::$backend,
                $seed,
            )
            .await;
        }
    };
}

kit!(
    openemr_on_sqlite,
    "openemr",
    Sqlite,
    portico::demo::seed_openemr
);
kit!(
    openemr_on_mariadb,
    "openemr",
    MariaDb,
    portico::demo::seed_openemr
);
kit!(
    opendental_on_mariadb,
    "opendental",
    MariaDb,
    portico::demo::opendental::seed_opendental
);
kit!(
    cerebello_on_sqlite,
    "cerebello",
    Sqlite,
    portico::demo::cerebello::seed_cerebello
);
kit!(
    cerebello_on_mariadb,
    "cerebello",
    MariaDb,
    portico::demo::cerebello::seed_cerebello
);
kit!(
    // No SQL Server runs where CI does.
    #[ignore = "needs a SQL Server: set PORTICO_TEST_MSSQL_URL and pass --include-ignored"]
    cerebello_on_sqlserver,
    "cerebello",
    SqlServer,
    portico::demo::cerebello::seed_cerebello
);
kit!(
    dentned_on_sqlite,
    "dentned",
    Sqlite,
    portico::demo::dentned::seed_dentned
);
kit!(
    dentned_on_mariadb,
    "dentned",
    MariaDb,
    portico::demo::dentned::seed_dentned
);
kit!(
    // No SQL Server runs where CI does.
    #[ignore = "needs a SQL Server: set PORTICO_TEST_MSSQL_URL and pass --include-ignored"]
    dentned_on_sqlserver,
    "dentned",
    SqlServer,
    portico::demo::dentned::seed_dentned
);
