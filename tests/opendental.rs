//! The opendental adapter end to end: the adapter loads and validates, a fresh MariaDB database in
//! Open Dental's schema is seeded with the synthetic generator, Portico serves it, and every
//! resource of every advertised type is paged through, parsed strictly as R4, read back by id and
//! its references resolved. Searches are checked against their FHIR meaning and against counts
//! taken with plain SQL, including Open Dental's quirks (deleted patients, planned appointments,
//! claimproc rows that are not claim lines, empty dates).
//!
//! Needs MariaDB (PORTICO_TEST_MYSQL_URL, default mysql://root@127.0.0.1:3306).

mod common;

use std::collections::BTreeSet;

use common::{count, first_int, rows, strict};
use portico::config::default_adapters_dir;
use portico::db::fixture::{FixtureWriter, drop_mysql_database, recreate_mysql_database};
use portico::demo::opendental::seed_opendental;
use portico::dialect::DialectKind;
use portico::dialect::ast::Value;
use portico::dialect::fold::fold;
use serde_json::Value as Json;

const DATABASE: &str = "portico_t_opendental";
const PATIENTS: usize = 150;

fn server_url() -> String {
    std::env::var("PORTICO_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

#[test]
fn the_adapter_loads_and_validates() {
    let adapter = portico::adapter::load(&default_adapters_dir().join("opendental"))
        .unwrap_or_else(|issues| {
            panic!(
                "the opendental adapter has problems:\n{}",
                issues
                    .iter()
                    .map(|i| format!("  {i}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        });
    assert_eq!(adapter.name, "opendental");
    assert_eq!(adapter.title, "Open Dental 24.x");
    assert_eq!(adapter.dialects, vec![DialectKind::Mysql]);
    let types: Vec<&str> = adapter.resources.keys().map(String::as_str).collect();
    assert_eq!(
        types,
        [
            "Appointment",
            "Claim",
            "Coverage",
            "Location",
            "Observation",
            "Organization",
            "Patient",
            "Practitioner"
        ]
    );
    // The parameters the openemr adapter offers per type, at least.
    let expected: &[(&str, &[&str])] = &[
        (
            "Patient",
            &[
                "identifier",
                "name",
                "family",
                "given",
                "birthdate",
                "gender",
                "general-practitioner",
                "phone",
                "email",
                "address-postalcode",
                "death-date",
            ],
        ),
        (
            "Observation",
            &["patient", "subject", "category", "code", "date", "status"],
        ),
        (
            "Appointment",
            &[
                "patient",
                "actor",
                "practitioner",
                "location",
                "date",
                "status",
            ],
        ),
        (
            "Claim",
            &["patient", "created", "status", "use", "provider"],
        ),
        ("Coverage", &["patient", "beneficiary", "payor"]),
        ("Practitioner", &["identifier", "name", "family", "given"]),
    ];
    for (resource_type, params) in expected {
        let def = &adapter.resources[*resource_type];
        for param in *params {
            assert!(
                def.search.contains_key(*param),
                "{resource_type}?{param} is not declared"
            );
        }
    }
}

fn references(value: &Json, out: &mut BTreeSet<String>) {
    match value {
        Json::Object(map) => {
            for (key, child) in map {
                match (key.as_str(), child.as_str()) {
                    ("reference", Some(text)) => {
                        out.insert(text.to_owned());
                    }
                    _ => references(child, out),
                }
            }
        }
        Json::Array(items) => items.iter().for_each(|i| references(i, out)),
        _ => {}
    }
}

fn codes(concept: &Json) -> Vec<(String, String)> {
    concept["coding"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|c| {
            (
                c["system"].as_str().unwrap_or_default().to_owned(),
                c["code"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn has_actor(appointment: &Json, reference: &str) -> bool {
    appointment["participant"]
        .as_array()
        .expect("participants")
        .iter()
        .any(|p| p["actor"]["reference"] == reference)
}

#[tokio::test]
async fn opendental_on_mariadb() {
    let server = server_url();
    recreate_mysql_database(&server, DATABASE)
        .await
        .unwrap_or_else(|e| panic!("MariaDB must be running ({server}): {}", e.message));
    let url = format!("{server}/{DATABASE}");
    let writer = FixtureWriter::open(&url)
        .await
        .unwrap_or_else(|e| panic!("{}", e.message));
    let counts = seed_opendental(&writer, PATIENTS)
        .await
        .unwrap_or_else(|e| panic!("{}", e.message));
    writer.close().await;
    assert_eq!(counts.patients, PATIENTS);
    assert!(counts.appointments > PATIENTS && counts.claims > 50 && counts.lab_results > 5);
    common::assert_check_accepts("opendental", &url);

    let common::Served { fhir, database, .. } = common::serve(
        "opendental",
        &url,
        std::env::temp_dir().join(format!("portico-state-opendental-{}", std::process::id())),
    )
    .await;

    // Every advertised type: all resources, strictly R4, no Open Dental empty date, each id once,
    // every tenth read back identical, every reference resolvable.
    let statement = fhir.json("metadata").await;
    let advertised: Vec<String> = statement["rest"][0]["resource"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r["type"].as_str().expect("type").to_owned())
        // The audit trail, Groups and subscriptions are served from the state store, not the PMS
        // (tests/api/audit.rs, tests/api/groups.rs, tests/api/subscriptions.rs).
        .filter(|t| t != "AuditEvent" && t != "Group" && t != "Subscription")
        .collect();
    assert_eq!(advertised.len(), 8, "{advertised:?}");
    let mut served = std::collections::BTreeMap::new();
    let mut all_references = BTreeSet::new();
    for resource_type in &advertised {
        let all = fhir.all(&format!("{resource_type}?_count=40")).await;
        assert!(!all.is_empty(), "{resource_type}: nothing served");
        let ids: BTreeSet<&str> = all.iter().map(|r| r["id"].as_str().expect("id")).collect();
        assert_eq!(ids.len(), all.len(), "{resource_type}: an id served twice");
        for (index, resource) in all.iter().enumerate() {
            let text = resource.to_string();
            assert!(
                !text.contains("0001-01-01") && !text.contains("0000-00-00"),
                "an empty date leaked: {text}"
            );
            strict(text.as_bytes());
            references(resource, &mut all_references);
            if index % 10 == 0 {
                let id = resource["id"].as_str().expect("id");
                let read = fhir.json(&format!("{resource_type}/{id}")).await;
                assert_eq!(
                    &read, resource,
                    "{resource_type}/{id}: read differs from search"
                );
            }
        }
        eprintln!("{resource_type}: {} resources", all.len());
        served.insert(resource_type.clone(), all);
    }
    for reference in &all_references {
        let (status, body) = fhir.get(reference).await;
        assert_eq!(
            status,
            200,
            "{reference} does not resolve: {}",
            String::from_utf8_lossy(&body)
        );
    }
    // XML rendering goes through the same R4 model.
    for path in [
        "Claim?_count=5&_format=xml",
        "Observation?_count=5&_format=xml",
    ] {
        let (status, body) = fhir.get(path).await;
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        let xml = String::from_utf8_lossy(&body);
        assert!(
            xml.contains("<Bundle xmlns=\"http://hl7.org/fhir\""),
            "{xml}"
        );
    }

    // Counts against plain SQL over Open Dental's tables.
    let live = "JOIN patient p ON p.PatNum = t.PatNum AND p.PatStatus <> 4";
    let expect = [
        (
            "Patient",
            "SELECT COUNT(*) FROM patient WHERE PatStatus <> 4".to_owned(),
        ),
        (
            "Appointment",
            format!("SELECT COUNT(*) FROM appointment t {live} WHERE t.AptStatus IN (1, 2, 3, 5)"),
        ),
        (
            "Claim",
            format!("SELECT COUNT(*) FROM claim t {live} WHERE t.PlanNum > 0 AND t.InsSubNum > 0"),
        ),
        (
            "Coverage",
            format!("SELECT COUNT(*) FROM patplan t {live} WHERE t.InsSubNum > 0"),
        ),
        (
            "Observation",
            format!(
                "SELECT (SELECT COALESCE(SUM((t.Height > 0) + (t.Weight > 0) \
                 + (t.BpSystolic > 0 AND t.BpDiastolic > 0) + (t.Pulse > 0) \
                 + (t.BMIPercentile > 0)), 0) FROM vitalsign t {live} \
                 WHERE t.DateTaken <> '0001-01-01') + (SELECT COUNT(*) FROM ehrlabresult r \
                 JOIN ehrlab t ON t.EhrLabNum = r.EhrLabNum {live})"
            ),
        ),
        (
            "Practitioner",
            "SELECT COUNT(*) FROM provider WHERE IsNotPerson = 0".to_owned(),
        ),
        (
            "Location",
            "SELECT (SELECT COUNT(*) FROM clinic) + (SELECT COUNT(*) FROM operatory)".to_owned(),
        ),
        (
            "Organization",
            "SELECT (SELECT COUNT(*) FROM clinic) + (SELECT COUNT(*) FROM carrier) \
             + (SELECT COUNT(*) FROM preference WHERE PrefName = 'PracticeTitle')"
                .to_owned(),
        ),
    ];
    for (resource_type, sql) in &expect {
        assert_eq!(
            served[*resource_type].len(),
            count(&database, sql).await,
            "{resource_type}: served resources differ from the SQL count"
        );
        let total = fhir
            .json(&format!("{resource_type}?_total=accurate&_count=1"))
            .await["total"]
            .as_u64()
            .expect("total");
        assert_eq!(
            total as usize,
            served[*resource_type].len(),
            "{resource_type}: _total"
        );
    }

    // Deleted patients (PatStatus 4) and everything they own are not served.
    let deleted = first_int(
        &database,
        "SELECT p.PatNum FROM patient p WHERE p.PatStatus = 4 \
         AND EXISTS (SELECT 1 FROM appointment a WHERE a.PatNum = p.PatNum) ORDER BY p.PatNum",
    )
    .await;
    assert_eq!(fhir.get(&format!("Patient/{deleted}")).await.0, 404);
    for search in ["Appointment", "Claim", "Coverage", "Observation"] {
        let found = fhir.all(&format!("{search}?patient={deleted}")).await;
        assert!(
            found.is_empty(),
            "{search} of deleted patient {deleted} served"
        );
    }

    // Patient: gender enum, identifiers, names, deceased.
    let patients = &served["Patient"];
    for (code, ordinal) in [("female", 1), ("male", 0), ("unknown", 2), ("other", 3)] {
        let found = fhir.all(&format!("Patient?gender={code}&_count=100")).await;
        assert!(found.iter().all(|p| p["gender"] == code), "gender={code}");
        let expected = count(
            &database,
            &format!("SELECT COUNT(*) FROM patient WHERE PatStatus <> 4 AND Gender = {ordinal}"),
        )
        .await;
        assert_eq!(found.len(), expected, "gender={code}");
    }
    let with_ssn = patients
        .iter()
        .find(|p| {
            p["identifier"]
                .as_array()
                .expect("identifiers")
                .iter()
                .any(|i| i["system"] == "http://hl7.org/fhir/sid/us-ssn")
        })
        .expect("a patient with an SSN");
    let ssn = with_ssn["identifier"]
        .as_array()
        .expect("identifiers")
        .iter()
        .find(|i| i["system"] == "http://hl7.org/fhir/sid/us-ssn")
        .expect("SSN");
    assert_eq!(ssn["type"]["coding"][0]["code"], "SS");
    let found = fhir
        .all(&format!(
            "Patient?identifier=http://hl7.org/fhir/sid/us-ssn|{}",
            ssn["value"].as_str().expect("value")
        ))
        .await;
    assert!(found.iter().any(|p| p["id"] == with_ssn["id"]));
    let family = with_ssn["name"][0]["family"].as_str().expect("family");
    let prefix: String = family.chars().take(3).collect();
    let found = fhir
        .all(&format!(
            "Patient?family={}&_count=100",
            form_urlencoded::byte_serialize(prefix.as_bytes()).collect::<String>()
        ))
        .await;
    assert!(found.iter().all(|p| {
        p["name"][0]["family"]
            .as_str()
            .is_some_and(|f| fold(f).starts_with(&fold(&prefix)))
    }));
    assert!(
        patients.iter().any(|p| p["name"]
            .as_array()
            .expect("names")
            .iter()
            .any(|n| n["use"] == "nickname")),
        "Preferred names appear as nicknames"
    );
    assert!(
        patients
            .iter()
            .all(|p| !(p.get("deceasedBoolean").is_some() && p.get("deceasedDateTime").is_some()))
    );
    assert!(patients.iter().any(|p| p["deceasedBoolean"] == true));
    assert!(patients.iter().any(|p| p.get("deceasedDateTime").is_some()));
    let without_birthdate = count(
        &database,
        "SELECT COUNT(*) FROM patient WHERE PatStatus <> 4 AND Birthdate = '0001-01-01'",
    )
    .await;
    assert_eq!(
        patients
            .iter()
            .filter(|p| p.get("birthDate").is_none())
            .count(),
        without_birthdate
    );
    let born_1980s = fhir
        .all("Patient?birthdate=ge1980-01-01&birthdate=lt1990-01-01")
        .await;
    assert!(born_1980s.iter().all(|p| {
        p["birthDate"]
            .as_str()
            .is_some_and(|d| ("1980".."1990").contains(&&d[..4]))
    }));

    // Appointment: status handling, participants, dates.
    let appointments = &served["Appointment"];
    let planned = first_int(
        &database,
        "SELECT AptNum FROM appointment WHERE AptStatus = 6",
    )
    .await;
    assert_eq!(fhir.get(&format!("Appointment/{planned}")).await.0, 404);
    for status in ["booked", "fulfilled", "cancelled", "waitlist"] {
        let found = fhir
            .all(&format!("Appointment?status={status}&_count=100"))
            .await;
        assert!(!found.is_empty(), "no {status} appointment");
        for appointment in &found {
            assert_eq!(appointment["status"], status);
            assert_eq!(
                appointment.get("start").is_some(),
                status != "waitlist",
                "start only for scheduled slots: {appointment}"
            );
            assert_eq!(
                appointment.get("cancelationReason").is_some(),
                status == "cancelled"
            );
        }
    }
    assert!(appointments.iter().all(|a| {
        a["participant"]
            .as_array()
            .expect("participants")
            .iter()
            .all(|p| p["status"] == "accepted" && p["actor"]["reference"].is_string())
    }));
    let recent = fhir.all("Appointment?date=ge2025-01-06&_count=100").await;
    assert!(!recent.is_empty());
    assert!(
        recent
            .iter()
            .all(|a| a["start"].as_str().expect("start")[..10] >= *"2025-01-06")
    );
    // The date reads the appointment's own row for scheduled statuses only (the `slot` join,
    // which the SQL reads from the base row): a search finds exactly the served appointments
    // whose start matches, and a waitlisted one has no date.
    let ids = |found: &[Json]| -> BTreeSet<String> {
        found
            .iter()
            .map(|a| a["id"].as_str().expect("id").to_owned())
            .collect()
    };
    let starting = |matches: &dyn Fn(Option<&str>) -> bool| -> BTreeSet<String> {
        ids(&appointments
            .iter()
            .filter(|a| matches(a["start"].as_str()))
            .cloned()
            .collect::<Vec<_>>())
    };
    assert_eq!(
        ids(&recent),
        starting(&|start| start.is_some_and(|s| s[..10] >= *"2025-01-06"))
    );
    let undated = fhir.all("Appointment?date:missing=true&_count=100").await;
    assert!(!undated.is_empty());
    assert_eq!(ids(&undated), starting(&|start| start.is_none()));
    assert!(undated.iter().all(|a| a["status"] == "waitlist"));
    let latest_first = fhir.all("Appointment?_sort=-date&_count=50").await;
    assert_eq!(latest_first.len(), appointments.len());
    let starts: Vec<Option<&str>> = latest_first.iter().map(|a| a["start"].as_str()).collect();
    assert!(
        starts.windows(2).all(|pair| match pair {
            [Some(a), Some(b)] => a[..19] >= b[..19],
            [Some(_), None] | [None, None] => true,
            [None, Some(_)] => false,
            _ => unreachable!(),
        }),
        "sorted latest first, undated last: {starts:?}"
    );
    let hygienist = fhir
        .all("Appointment?practitioner=Practitioner/5&_count=100")
        .await;
    assert!(!hygienist.is_empty());
    assert!(hygienist.iter().all(|a| has_actor(a, "Practitioner/5")));
    let patient = appointments[0]["participant"][0]["actor"]["reference"]
        .as_str()
        .expect("patient")
        .to_owned();
    let theirs = fhir.all(&format!("Appointment?actor={patient}")).await;
    assert!(theirs.iter().all(|a| has_actor(a, &patient)));
    let in_op = fhir
        .all("Appointment?location=Location/op-3&_count=100")
        .await;
    assert!(!in_op.is_empty() && in_op.iter().all(|a| has_actor(a, "Location/op-3")));

    // Observation: vital signs unpivoted, zeros not recorded, labs with a value or a reason.
    let observations = &served["Observation"];
    let vital = observations
        .iter()
        .find(|o| o["id"].as_str().expect("id").starts_with("vs-"))
        .expect("a vital sign");
    let subject = vital["subject"]["reference"].as_str().expect("subject");
    let id = subject.trim_start_matches("Patient/");
    let theirs = fhir
        .all(&format!("Observation?patient={id}&category=vital-signs"))
        .await;
    assert!(!theirs.is_empty());
    for observation in &theirs {
        assert_eq!(observation["subject"]["reference"], subject);
        assert_eq!(
            observation["category"][0]["coding"][0]["code"],
            "vital-signs"
        );
        assert!(
            observation["valueQuantity"]["value"]
                .as_f64()
                .is_some_and(|v| v > 0.0)
                || observation["component"].is_array()
        );
    }
    let pressures = fhir
        .all("Observation?code=http://loinc.org|85354-9&_count=100")
        .await;
    assert!(!pressures.is_empty());
    for bp in &pressures {
        let components = bp["component"].as_array().expect("components");
        assert_eq!(components.len(), 2);
        assert!(
            components
                .iter()
                .all(|c| c["valueQuantity"]["code"] == "mm[Hg]")
        );
    }
    let heights = fhir.all("Observation?code=http://loinc.org|8302-2").await;
    assert!(
        heights
            .iter()
            .all(|o| o["valueQuantity"]["code"] == "[in_i]")
    );
    let weights = fhir.all("Observation?code=http://loinc.org|29463-7").await;
    assert!(
        weights
            .iter()
            .all(|o| o["valueQuantity"]["code"] == "[lb_av]")
    );
    let labs = fhir.all("Observation?category=laboratory&_count=100").await;
    assert!(!labs.is_empty());
    for lab in &labs {
        assert_eq!(lab["category"][0]["coding"][0]["code"], "laboratory");
        let valued = [
            "valueQuantity",
            "valueString",
            "valueCodeableConcept",
            "valueRange",
        ]
        .iter()
        .filter(|k| lab.get(**k).is_some())
        .count();
        assert_eq!(
            valued + usize::from(lab.get("dataAbsentReason").is_some()),
            1,
            "one value or a reason: {lab}"
        );
        assert!(lab["effectiveDateTime"].is_string(), "{lab}");
    }
    for kind in [
        "valueQuantity",
        "valueString",
        "valueCodeableConcept",
        "valueRange",
    ] {
        assert!(
            labs.iter().any(|l| l.get(kind).is_some()),
            "no lab result with {kind}"
        );
    }
    assert!(labs.iter().any(|l| l["valueQuantity"]["comparator"] == "<"));
    let fasting = fhir.all("Observation?code=http://loinc.org|1558-6").await;
    assert!(
        !fasting.is_empty(),
        "the LOINC alternate of a local code is searchable"
    );
    assert!(fasting.iter().all(|o| {
        codes(&o["code"])
            .iter()
            .any(|(s, c)| s == "http://loinc.org" && c == "1558-6")
    }));
    let a1c = fhir.all("Observation?code=http://loinc.org|4548-4").await;
    assert!(!a1c.is_empty());
    assert!(a1c.iter().all(|o| {
        codes(&o["code"])
            .iter()
            .any(|(s, c)| s == "http://loinc.org" && c == "4548-4")
    }));
    let finals = fhir
        .all("Observation?category=laboratory&status=final&_count=100")
        .await;
    assert!(finals.iter().all(|o| o["status"] == "final"));
    let dated = fhir
        .all("Observation?category=vital-signs&date=ge2024-07-01&_count=100")
        .await;
    assert!(
        dated
            .iter()
            .all(|o| *o["effectiveDateTime"].as_str().expect("date") >= *"2024-07-01")
    );

    // Coverage: the patient, the payor, the relationship.
    let coverage = &served["Coverage"][0];
    let beneficiary = coverage["beneficiary"]["reference"]
        .as_str()
        .expect("beneficiary");
    let theirs = fhir.all(&format!("Coverage?patient={beneficiary}")).await;
    assert!(
        theirs
            .iter()
            .all(|c| c["beneficiary"]["reference"] == beneficiary)
    );
    let delta = fhir
        .all("Coverage?payor=Organization/carrier-1&_count=100")
        .await;
    assert!(!delta.is_empty());
    assert!(
        delta
            .iter()
            .all(|c| c["payor"][0]["reference"] == "Organization/carrier-1")
    );
    assert!(served["Coverage"].iter().all(|c| {
        c["relationship"]["coding"][0]["code"].is_string()
            && c["identifier"][0]["type"]["coding"][0]["code"] == "MB"
    }));

    // Claim: status letters, use, provider fallbacks, lines.
    let claims = &served["Claim"];
    for (status, letters) in [("draft", "'U', 'H'"), ("active", "'W', 'S', 'R', 'I'")] {
        let found = fhir.all(&format!("Claim?status={status}&_count=100")).await;
        assert!(
            found.iter().all(|c| c["status"] == status),
            "status={status}"
        );
        let expected = count(
            &database,
            &format!(
                "SELECT COUNT(*) FROM claim t {live} WHERE t.PlanNum > 0 AND t.InsSubNum > 0 \
                 AND t.ClaimStatus IN ({letters})"
            ),
        )
        .await;
        assert_eq!(found.len(), expected, "status={status}");
    }
    let preauths = fhir.all("Claim?use=preauthorization").await;
    assert!(!preauths.is_empty());
    assert!(preauths.iter().all(|c| c["use"] == "preauthorization"));
    let by_clinic = fhir.all("Claim?provider=Organization/clinic-1").await;
    assert!(
        !by_clinic.is_empty(),
        "claims billed under the group fall back to the clinic"
    );
    assert!(
        by_clinic
            .iter()
            .all(|c| c["provider"]["reference"] == "Organization/clinic-1")
    );
    let recent = fhir.all("Claim?created=ge2024-09-01&_count=100").await;
    assert!(
        recent
            .iter()
            .all(|c| *c["created"].as_str().expect("created") >= *"2024-09-01")
    );
    let lines = count(
        &database,
        &format!(
            "SELECT COUNT(*) FROM claimproc cp JOIN claim t ON t.ClaimNum = cp.ClaimNum {live} \
             WHERE t.PlanNum > 0 AND t.InsSubNum > 0 AND cp.Status IN (0, 1, 2, 5) \
             AND cp.ProcNum > 0"
        ),
    )
    .await;
    let served_lines: usize = claims
        .iter()
        .map(|c| c["item"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(
        served_lines, lines,
        "claim lines are the claimproc procedure lines"
    );
    let mut described = 0;
    for claim in claims {
        assert!(
            claim["insurance"][0]["focal"] == true && claim["provider"]["reference"].is_string()
        );
        let oral = claim["type"]["coding"][0]["code"] == "oral";
        for item in claim["item"].as_array().cloned().unwrap_or_default() {
            let coding = &item["productOrService"]["coding"][0];
            if oral {
                assert_eq!(coding["system"], "http://www.ada.org/cdt");
                assert!(coding["code"].as_str().expect("code").starts_with('D'));
                described += usize::from(coding["display"].is_string());
            } else {
                assert!(coding.get("system").is_none(), "{claim}");
            }
        }
        let total: f64 = claim["item"].as_array().map_or(0.0, |items| {
            items
                .iter()
                .map(|i| i["net"]["value"].as_f64().expect("net"))
                .sum()
        });
        if claim["item"].is_array() {
            let fee = claim["total"]["value"].as_f64().expect("total");
            assert!((total - fee).abs() < 0.01, "{claim}");
        }
    }
    assert!(
        claims
            .iter()
            .any(|c| c["type"]["coding"][0]["code"] == "professional")
    );
    // Each line with a diagnosis adds one, numbered like the line, which points at it.
    let diagnosed_lines = count(
        &database,
        &format!(
            "SELECT COUNT(*) FROM claimproc cp JOIN claim t ON t.ClaimNum = cp.ClaimNum {live} \
             JOIN procedurelog pl ON pl.ProcNum = cp.ProcNum \
             WHERE t.PlanNum > 0 AND t.InsSubNum > 0 AND cp.Status IN (0, 1, 2, 5) \
             AND cp.ProcNum > 0 AND pl.DiagnosticCode <> ''"
        ),
    )
    .await;
    let mut served_diagnoses = 0;
    for claim in claims {
        let diagnoses: std::collections::BTreeMap<u64, &Json> = claim["diagnosis"]
            .as_array()
            .map(|all| {
                all.iter()
                    .map(|d| (d["sequence"].as_u64().expect("sequence"), d))
                    .collect()
            })
            .unwrap_or_default();
        served_diagnoses += diagnoses.len();
        let mut pointed = 0;
        for item in claim["item"].as_array().cloned().unwrap_or_default() {
            if let Some(pointers) = item["diagnosisSequence"].as_array() {
                assert_eq!(pointers.len(), 1, "{claim}");
                assert_eq!(pointers[0], item["sequence"], "{claim}");
                let diagnosis = diagnoses[&pointers[0].as_u64().expect("pointer")];
                let coding = &diagnosis["diagnosisCodeableConcept"]["coding"][0];
                assert!(coding["code"].is_string(), "{claim}");
                assert!(
                    coding["system"]
                        .as_str()
                        .is_some_and(|s| s.starts_with("http://hl7.org/fhir/sid/icd-")),
                    "{claim}"
                );
                pointed += 1;
            }
        }
        assert_eq!(
            pointed,
            diagnoses.len(),
            "every diagnosis has its line: {claim}"
        );
    }
    assert!(diagnosed_lines > 0);
    assert_eq!(served_diagnoses, diagnosed_lines);

    // A dental line names its code when it sends the procedure's own code.
    let own_code_lines = count(
        &database,
        &format!(
            "SELECT COUNT(*) FROM claimproc cp JOIN claim t ON t.ClaimNum = cp.ClaimNum {live} \
             JOIN procedurelog pl ON pl.ProcNum = cp.ProcNum \
             JOIN procedurecode pc ON pc.CodeNum = pl.CodeNum AND pc.ProcCode = cp.CodeSent \
             WHERE t.PlanNum > 0 AND t.InsSubNum > 0 AND t.MedType = 0 \
             AND cp.Status IN (0, 1, 2, 5) AND cp.ProcNum > 0 AND pc.Descript <> ''"
        ),
    )
    .await;
    assert!(own_code_lines > 0);
    assert_eq!(described, own_code_lines);

    // Dental lines carry the tooth or quadrant and the surfaces of the procedure behind them.
    let expected_sites: Vec<(String, String, String)> = rows(
        &database,
        &format!(
            "SELECT t.ClaimNum, pl.ToothNum, pl.Surf FROM claimproc cp \
             JOIN claim t ON t.ClaimNum = cp.ClaimNum {live} \
             JOIN procedurelog pl ON pl.ProcNum = cp.ProcNum \
             WHERE t.PlanNum > 0 AND t.InsSubNum > 0 AND t.MedType = 0 \
             AND cp.Status IN (0, 1, 2, 5) AND cp.ProcNum > 0"
        ),
    )
    .await
    .into_iter()
    .map(|row| {
        let text = |v: &Value| match v {
            Value::Int(n) => n.to_string(),
            Value::Text(s) => s.clone(),
            other => panic!("{other:?}"),
        };
        let (tooth, surface) = (text(&row[1]), text(&row[2]));
        let site = if !tooth.is_empty() {
            format!("tooth {tooth}")
        } else {
            match surface.as_str() {
                "UR" => "area 10".into(),
                "UL" => "area 20".into(),
                "LL" => "area 30".into(),
                "LR" => "area 40".into(),
                _ => String::new(),
            }
        };
        let surface = if tooth.is_empty() {
            String::new()
        } else {
            surface
        };
        (text(&row[0]), site, surface)
    })
    .collect();
    let mut served_sites: Vec<(String, String, String)> = claims
        .iter()
        .filter(|c| c["type"]["coding"][0]["code"] == "oral")
        .flat_map(|claim| {
            let id = claim["id"].as_str().expect("id").to_owned();
            claim["item"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |item| {
                    let site = &item["bodySite"]["coding"][0];
                    let site = match site["system"].as_str() {
                        Some("http://terminology.hl7.org/CodeSystem/ADAUniversalToothDesignationSystem") => {
                            format!("tooth {}", site["code"].as_str().expect("tooth"))
                        }
                        Some("http://terminology.hl7.org/CodeSystem/ADAAreaOralCavitySystem") => {
                            format!("area {}", site["code"].as_str().expect("area"))
                        }
                        _ => String::new(),
                    };
                    let surface = item["subSite"][0]["text"].as_str().unwrap_or("").to_owned();
                    if let Some(code) = item["subSite"][0]["coding"][0]["code"].as_str() {
                        assert_eq!(code, surface, "an FDI surface code is the surface letters");
                    }
                    (id.clone(), site, surface)
                })
        })
        .collect();
    let mut expected_sites = expected_sites;
    expected_sites.sort();
    served_sites.sort();
    assert_eq!(served_sites, expected_sites);
    assert!(
        served_sites
            .iter()
            .any(|(_, site, _)| site.starts_with("tooth"))
    );
    assert!(
        served_sites
            .iter()
            .any(|(_, site, _)| site.starts_with("area"))
    );
    assert!(served_sites.iter().any(|(_, _, surface)| surface.len() > 1));

    // Race and ethnicity: every reported OMB category (ASKU for "declined"), names as text.
    let reported = rows(
        &database,
        "SELECT PatNum, CdcrecCode FROM patientrace ORDER BY PatientRaceNum",
    )
    .await;
    let mut by_patient: std::collections::BTreeMap<String, (Vec<String>, Vec<String>)> =
        std::collections::BTreeMap::new();
    for row in &reported {
        let (Value::Int(patient), Value::Text(code)) = (&row[0], &row[1]) else {
            panic!("{row:?}")
        };
        let entry = by_patient.entry(patient.to_string()).or_default();
        match code.as_str() {
            "2135-2" | "2186-5" => entry.1.push(code.clone()),
            "ASKU-ETHNICITY" => entry.1.push("ASKU".into()),
            "ASKU-RACE" => entry.0.push("ASKU".into()),
            _ => entry.0.push(code.clone()),
        }
    }
    let omb = |patient: &Json, url: &str| -> (Vec<String>, Option<String>) {
        let Some(extension) = patient["extension"]
            .as_array()
            .and_then(|all| all.iter().find(|e| e["url"] == url))
        else {
            return (Vec::new(), None);
        };
        let parts = extension["extension"].as_array().expect("parts");
        let codes = parts
            .iter()
            .filter(|p| p["url"] == "ombCategory")
            .map(|p| p["valueCoding"]["code"].as_str().expect("code").to_owned())
            .collect();
        let text = parts
            .iter()
            .find(|p| p["url"] == "text")
            .map(|p| p["valueString"].as_str().expect("text").to_owned());
        (codes, text)
    };
    let mut several_races = 0;
    for patient in &served["Patient"] {
        let id = patient["id"].as_str().expect("id");
        let (races, ethnicities) = by_patient.get(id).cloned().unwrap_or_default();
        let (served_races, race_text) = omb(
            patient,
            "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
        );
        let (served_ethnicities, ethnicity_text) = omb(
            patient,
            "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity",
        );
        assert_eq!(served_races, races, "{patient}");
        assert_eq!(served_ethnicities, ethnicities, "{patient}");
        assert_eq!(race_text.is_some(), !races.is_empty(), "{patient}");
        assert_eq!(
            ethnicity_text.is_some(),
            !ethnicities.is_empty(),
            "{patient}"
        );
        if races.len() > 1 {
            several_races += 1;
            assert!(race_text.expect("text").contains(", "), "{patient}");
        }
    }
    assert!(several_races > 0, "the data has patients of several races");

    // Patients of no clinic belong to the practice (its PracticeTitle preference row).
    let practice = "Organization/practice-PracticeTitle".to_owned();
    let no_clinic = count(
        &database,
        "SELECT COUNT(*) FROM patient WHERE PatStatus <> 4 AND ClinicNum = 0",
    )
    .await;
    let at_practice = served["Patient"]
        .iter()
        .filter(|p| p["managingOrganization"]["reference"] == practice.as_str())
        .count();
    assert!(no_clinic > 0);
    assert_eq!(at_practice, no_clinic);
    let organization = fhir.json(&practice).await;
    assert_eq!(organization["name"], "Willamette Family Dental");
    assert_eq!(organization["address"][0]["city"], "Portland");

    database.close().await;
    drop_mysql_database(&server, DATABASE)
        .await
        .unwrap_or_else(|e| panic!("{}", e.message));
}
