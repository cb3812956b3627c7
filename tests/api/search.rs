//! Search semantics: results satisfy their criteria, match independent SQL counts, page exactly
//! once through every match, sort, include, and count.

use std::collections::HashSet;

use portico::dialect::RenderedQuery;
use portico::dialect::ast::Value;
use portico::dialect::fold::fold;
use serde_json::Value as Json;

use crate::on_every_backend;
use crate::support::{PATIENTS, TestApp, ids, matches};

/// Counts rows with plain SQL written for the test: an oracle independent of the compiler.
async fn oracle_count(app: &TestApp, sql: &str, params: Vec<Value>) -> usize {
    let database = crate::support::legacy_database(&app.db_url, std::time::Duration::from_secs(10));
    // The oracle SQL is written with MySQL quoting; SQLite takes double quotes.
    let sql = match database.dialect() {
        portico::dialect::DialectKind::Sqlite => sql.replace('`', "\""),
        _ => sql.to_owned(),
    };
    let rows = database
        .fetch(&RenderedQuery { sql, params })
        .await
        .unwrap_or_else(|e| panic!("{}", e.message));
    database.close().await;
    match &rows[0][0] {
        Value::Int(n) => *n as usize,
        other => panic!("count is {other:?}"),
    }
}

/// Every `patient_data` row's id and its (lname, fname, mname), in plain SQL: the oracle of
/// string searches, which the test then matches with the shared fold.
async fn patient_names(app: &TestApp, order: &str) -> Vec<(String, [String; 3])> {
    let database = crate::support::legacy_database(&app.db_url, std::time::Duration::from_secs(10));
    let sql = format!("SELECT `pid`, `lname`, `fname`, `mname` FROM `patient_data` {order}");
    let sql = match database.dialect() {
        portico::dialect::DialectKind::Sqlite => sql.replace('`', "\""),
        _ => sql,
    };
    let rows = database
        .fetch(&RenderedQuery {
            sql,
            params: vec![],
        })
        .await
        .unwrap_or_else(|e| panic!("{}", e.message));
    database.close().await;
    let cell = |value: &Value| match value {
        Value::Text(text) => text.clone(),
        Value::Int(n) => n.to_string(),
        Value::Null => String::new(),
        other => panic!("unexpected cell {other:?}"),
    };
    rows.iter()
        .map(|row| (cell(&row[0]), [cell(&row[1]), cell(&row[2]), cell(&row[3])]))
        .collect()
}

fn text(value: &Json) -> String {
    value.as_str().unwrap_or_default().to_lowercase()
}

fn has_coding(concept: &Json, system: &str, code: &str) -> bool {
    concept["coding"].as_array().is_some_and(|codings| {
        codings
            .iter()
            .any(|c| c["system"] == system && c["code"] == code)
    })
}

on_every_backend!(
    string_searches_are_case_insensitive_prefixes,
    |app: TestApp| async move {
        let all = app.all_pages("Patient?family=sm&_count=10").await;
        for patient in &all {
            assert!(
                text(&patient["name"][0]["family"]).starts_with("sm"),
                "{patient}"
            );
        }
        let expected = oracle_count(
            &app,
            "SELECT COUNT(*) FROM `patient_data` WHERE LOWER(`lname`) LIKE 'sm%'",
            vec![],
        )
        .await;
        assert_eq!(all.len(), expected);
        assert!(expected > 0, "fixture has no Sm* family names");
        let exact = app.all_pages("Patient?family:exact=Smith").await;
        assert!(exact.iter().all(|p| p["name"][0]["family"] == "Smith"));
        assert_eq!(
            app.all_pages("Patient?family:exact=smith").await.len(),
            0,
            ":exact is case-sensitive"
        );
        let contains = app.all_pages("Patient?family:contains=ER").await;
        assert!(!contains.is_empty());
        assert!(
            contains
                .iter()
                .all(|p| fold(&text(&p["name"][0]["family"])).contains("er"))
        );
        // name covers family and given names; repeated parameters AND, commas OR.
        let both = app.all_pages("Patient?name=ma&family=j,w").await;
        for patient in &both {
            let name = &patient["name"][0];
            let family = text(&name["family"]);
            assert!(family.starts_with('j') || family.starts_with('w'));
            let parts: Vec<String> = std::iter::once(family.clone())
                .chain(
                    name["given"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .map(text),
                )
                .collect();
            assert!(parts.iter().any(|p| p.starts_with("ma")), "{name}");
        }
    }
);

on_every_backend!(
    strings_ignore_accents_and_case_unless_exact,
    |app: TestApp| async move {
        let patients = patient_names(&app, "").await;
        // The ids whose chosen names, folded, satisfy `matches`: computed without Portico.
        let expected = |columns: &[usize], matches: &dyn Fn(&str) -> bool| -> HashSet<String> {
            patients
                .iter()
                .filter(|(_, names)| columns.iter().any(|&c| matches(&fold(&names[c]))))
                .map(|(pid, _)| pid.clone())
                .collect()
        };
        let served = |query: &'static str| {
            let app = &app;
            async move {
                ids(&app.all_pages(&format!("{query}&_count=50")).await)
                    .into_iter()
                    .collect::<HashSet<String>>()
            }
        };
        let spellings = |ids: &HashSet<String>| -> HashSet<String> {
            patients
                .iter()
                .filter(|(pid, _)| ids.contains(pid))
                .map(|(_, names)| names[0].clone())
                .collect()
        };

        let muller = expected(&[0], &|f| f.starts_with("muller"));
        for spelling in ["Müller", "MÜLLER", "Muller"] {
            assert!(
                spellings(&muller).contains(spelling),
                "the fixture has no {spelling}: {muller:?}"
            );
        }
        for query in [
            "Patient?family=Muller",
            "Patient?family=muller",
            "Patient?family=MÜLLER",
            "Patient?family=mül",
        ] {
            assert_eq!(served(query).await, muller, "{query}");
        }
        let pena = expected(&[0, 1, 2], &|f| f.starts_with("pena"));
        assert!(spellings(&pena).contains("Peña"), "{pena:?}");
        assert_eq!(served("Patient?name=pena").await, pena);
        assert_eq!(served("Patient?name=PEÑA").await, pena);
        let ulle = expected(&[0], &|f| f.contains("ulle"));
        assert!(ulle.is_superset(&muller) && !ulle.is_empty());
        assert_eq!(served("Patient?family:contains=ulle").await, ulle);
        assert_eq!(served("Patient?family:contains=ÜLL").await, ulle);
        let given = expected(&[1, 2], &|f| f.starts_with("rene") || f.starts_with("ines"));
        assert!(!given.is_empty(), "the fixture has no Renée or Inés");
        assert_eq!(served("Patient?given=rene,INES").await, given);

        // :exact compares code points: case and accents count.
        let exactly = |spelling: &str| -> HashSet<String> {
            patients
                .iter()
                .filter(|(_, names)| names[0] == spelling)
                .map(|(pid, _)| pid.clone())
                .collect()
        };
        for (query, spelling) in [
            ("Patient?family:exact=Muller", "Muller"),
            ("Patient?family:exact=Müller", "Müller"),
            ("Patient?family:exact=MÜLLER", "MÜLLER"),
        ] {
            let found = served(query).await;
            assert!(!found.is_empty(), "{query}");
            assert_eq!(found, exactly(spelling), "{query}");
        }
        assert!(served("Patient?family:exact=müller").await.is_empty());
        assert!(
            served("Patient?family:exact=Pena")
                .await
                .is_disjoint(&exactly("Peña"))
        );
    }
);

on_every_backend!(
    token_searches_use_codes_systems_and_maps,
    |app: TestApp| async move {
        let female = app.all_pages("Patient?gender=female&_count=50").await;
        assert!(female.iter().all(|p| p["gender"] == "female"));
        let expected = oracle_count(
            &app,
            "SELECT COUNT(*) FROM `patient_data` WHERE `sex` = 'Female'",
            vec![],
        )
        .await;
        assert_eq!(female.len(), expected);
        let with_system = app
            .all_pages("Patient?gender=http://hl7.org/fhir/administrative-gender|female&_count=50")
            .await;
        assert_eq!(ids(&with_system), ids(&female));
        assert!(
            app.all_pages("Patient?gender=http://example.org|female")
                .await
                .is_empty()
        );
        let not_female = app.all_pages("Patient?gender:not=female&_count=100").await;
        assert_eq!(not_female.len() + female.len(), PATIENTS);
        let identifier = app
            .all_pages("Patient?identifier=urn:portico:openemr:pubpid|MRN0000012")
            .await;
        assert_eq!(ids(&identifier), vec!["12"]);
        assert_eq!(
            ids(&app.all_pages("Patient?identifier=MRN0000012").await),
            vec!["12"]
        );
        let vitals = app
            .all_pages("Observation?component-code=http://loinc.org|8480-6&_count=50")
            .await;
        assert!(!vitals.is_empty());
        assert!(
            app.all_pages("Observation?code=http://loinc.org|8480-6")
                .await
                .is_empty(),
            "code matches Observation.code only"
        );
        assert!(
            vitals
                .iter()
                .all(|o| has_coding(&o["code"], "http://loinc.org", "85354-9")),
            "a component code finds BP panels"
        );
        let labs = app
            .all_pages("Observation?code=4548-4&category=laboratory")
            .await;
        assert!(!labs.is_empty());
        assert!(
            labs.iter()
                .all(|o| has_coding(&o["code"], "http://loinc.org", "4548-4")
                    && o["valueQuantity"]["unit"] == "%")
        );
        let cancelled = app
            .all_pages("Appointment?status=cancelled,noshow&_count=50")
            .await;
        assert!(!cancelled.is_empty());
        assert!(
            cancelled
                .iter()
                .all(|a| a["status"] == "cancelled" || a["status"] == "noshow")
        );
    }
);

on_every_backend!(
    date_searches_respect_prefixes_and_precision,
    |app: TestApp| async move {
        let born_80s = app
            .all_pages("Patient?birthdate=ge1980-01-01&birthdate=lt1990&_count=50")
            .await;
        for patient in &born_80s {
            let date = patient["birthDate"].as_str().unwrap();
            assert!(("1980-01-01".."1990-01-01").contains(&date), "{date}");
        }
        let expected = oracle_count(&app, "SELECT COUNT(*) FROM `patient_data` WHERE `DOB` >= '1980-01-01' AND `DOB` < '1990-01-01'", vec![]).await;
        assert_eq!(born_80s.len(), expected);
        let one = &app.all_pages("Patient?birthdate=ge1950&_count=1").await[0];
        let day = one["birthDate"].as_str().unwrap().to_owned();
        let same_day = app.all_pages(&format!("Patient?birthdate={day}")).await;
        assert!(same_day.iter().any(|p| p["id"] == one["id"]));
        assert!(same_day.iter().all(|p| p["birthDate"] == day.as_str()));
        let month = &day[..7];
        assert!(
            app.all_pages(&format!("Patient?birthdate={month}"))
                .await
                .iter()
                .any(|p| p["id"] == one["id"])
        );
        assert!(
            !app.all_pages(&format!("Patient?birthdate=ne{month}"))
                .await
                .iter()
                .any(|p| p["id"] == one["id"])
        );

        // Observation dates are instants with the adapter's offset.
        let recent = app
            .all_pages(
                "Observation?category=vital-signs&date=ge2024-06-01T00:00:00-04:00&_count=100",
            )
            .await;
        assert!(!recent.is_empty());
        for observation in &recent {
            let at = chrono::DateTime::parse_from_rfc3339(
                observation["effectiveDateTime"].as_str().unwrap(),
            )
            .unwrap();
            assert!(
                at >= chrono::DateTime::parse_from_rfc3339("2024-06-01T00:00:00-04:00").unwrap(),
                "{at}"
            );
        }
        // Appointments: date and time live in two columns.
        let appointments = app
            .all_pages("Appointment?date=ge2025-01-01T12:00:00-05:00&_count=100")
            .await;
        assert!(!appointments.is_empty());
        for appointment in &appointments {
            let start =
                chrono::DateTime::parse_from_rfc3339(appointment["start"].as_str().unwrap())
                    .unwrap();
            assert!(
                start >= chrono::DateTime::parse_from_rfc3339("2025-01-01T12:00:00-05:00").unwrap(),
                "{start}"
            );
        }
        let lt = app
            .all_pages("Appointment?date=lt2025-01-01T12:00:00-05:00&_count=100")
            .await;
        let all = app.all_pages("Appointment?_count=200").await;
        assert_eq!(
            lt.len() + appointments.len(),
            all.len(),
            "lt and ge split the appointments"
        );
    }
);

on_every_backend!(
    reference_searches_accept_every_form,
    |app: TestApp| async move {
        let first = app
            .get_fhir("Observation?category=vital-signs&_count=1", 200)
            .await;
        let subject = first["entry"][0]["resource"]["subject"]["reference"]
            .as_str()
            .unwrap()
            .to_owned();
        let pid = subject.trim_start_matches("Patient/").to_owned();
        let by_id = app
            .all_pages(&format!("Observation?patient={pid}&_count=100"))
            .await;
        assert!(
            by_id
                .iter()
                .all(|o| o["subject"]["reference"] == subject.as_str())
        );
        let typed = app
            .all_pages(&format!("Observation?subject={subject}&_count=100"))
            .await;
        let absolute = app
            .all_pages(&format!(
                "Observation?patient={}/{subject}&_count=100",
                app.base
            ))
            .await;
        let modifier = app
            .all_pages(&format!("Observation?subject:Patient={pid}&_count=100"))
            .await;
        assert_eq!(ids(&typed), ids(&by_id));
        assert_eq!(ids(&absolute), ids(&by_id));
        assert_eq!(ids(&modifier), ids(&by_id));
        assert!(
            app.all_pages("Observation?subject=Group/4")
                .await
                .is_empty()
        );
        let expected_vitals = oracle_count(
            &app,
            "SELECT COUNT(*) FROM `form_vitals` WHERE `pid` = ? AND `activity` = 1",
            vec![Value::Int(pid.parse().unwrap())],
        )
        .await;
        let vital_rows: HashSet<String> = by_id
            .iter()
            .filter_map(|o| {
                o["id"]
                    .as_str()
                    .unwrap()
                    .strip_prefix("vs-")
                    .map(|rest| rest.split('-').next().unwrap().to_owned())
            })
            .collect();
        assert_eq!(
            vital_rows.len(),
            expected_vitals,
            "every vitals form of the patient yields observations"
        );
        let appointments = app.all_pages(&format!("Appointment?actor={subject}")).await;
        assert!(!appointments.is_empty(), "every patient has appointments");
        assert!(
            appointments
                .iter()
                .all(|a| a["participant"][0]["actor"]["reference"] == subject.as_str())
        );
        let by_practitioner = app.all_pages("Appointment?practitioner=2&_count=100").await;
        assert!(!by_practitioner.is_empty());
        assert!(by_practitioner.iter().all(|a| {
            a["participant"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["actor"]["reference"] == "Practitioner/2")
        }));
        let claims = app.all_pages(&format!("Claim?patient={subject}")).await;
        assert!(
            claims
                .iter()
                .all(|c| c["patient"]["reference"] == subject.as_str())
        );
    }
);

on_every_backend!(
    paging_visits_every_match_exactly_once,
    |app: TestApp| async move {
        for (query, page) in [
            ("Patient?", 7),
            ("Observation?patient=5", 4),
            ("Observation?", 50),
            ("Patient?_sort=-birthdate", 9),
            ("Patient?_sort=family,-_id", 11),
            ("Observation?_sort=-date", 37),
            ("Appointment?_sort=date", 13),
            ("Claim?", 6),
            ("Organization?", 2),
        ] {
            let (all, _) = app.page_all_nothing_lost(query, page).await;
            let unique: HashSet<String> = ids(&all).into_iter().collect();
            assert_eq!(unique.len(), all.len(), "{query}: duplicates across pages");
            let one_page = app.all_pages(&format!("{query}&_count=1000")).await;
            assert_eq!(
                ids(&one_page).into_iter().collect::<HashSet<_>>(),
                unique,
                "{query}"
            );
        }
        assert_eq!(app.all_pages("Patient?_count=7").await.len(), PATIENTS);
    }
);

on_every_backend!(
    sorting_orders_results_and_breaks_ties_stably,
    |app: TestApp| async move {
        let by_birth = app.all_pages("Patient?_sort=-birthdate&_count=8").await;
        let dates: Vec<&str> = by_birth
            .iter()
            .filter_map(|p| p["birthDate"].as_str())
            .collect();
        assert!(dates.windows(2).all(|w| w[0] >= w[1]), "{dates:?}");
        // Patients without a birth date sort last in descending order.
        let first_missing = by_birth
            .iter()
            .position(|p| p.get("birthDate").is_none())
            .unwrap_or(by_birth.len());
        assert!(
            by_birth[first_missing..]
                .iter()
                .all(|p| p.get("birthDate").is_none())
        );
        let observations = app
            .all_pages("Observation?patient=6&_sort=date&_count=3")
            .await;
        let instants: Vec<chrono::DateTime<chrono::FixedOffset>> = observations
            .iter()
            .map(|o| {
                chrono::DateTime::parse_from_rfc3339(o["effectiveDateTime"].as_str().unwrap())
                    .unwrap()
            })
            .collect();
        assert!(
            instants.windows(2).all(|w| w[0] <= w[1]),
            "merged across vitals and labs in date order"
        );
        // Text sorts in the column's collation (Müller beside Muller on MariaDB, after Young in
        // SQLite's code-point order), ties by key: the same order as plain SQL.
        let families = app.all_pages("Patient?_sort=family&_count=50").await;
        let expected: Vec<String> = patient_names(&app, "ORDER BY `lname`, `pid`")
            .await
            .into_iter()
            .map(|(pid, _)| pid)
            .collect();
        assert_eq!(ids(&families), expected);
    }
);

on_every_backend!(
    includes_add_referenced_and_referencing_resources,
    |app: TestApp| async move {
        let bundle = app.get_fhir("Appointment?patient=8&_include=Appointment:patient&_include=Appointment:actor:Practitioner", 200).await;
        let found = matches(&bundle);
        assert!(!found.is_empty());
        let included: Vec<&Json> = bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["search"]["mode"] == "include")
            .collect();
        assert!(
            included
                .iter()
                .any(|e| e["fullUrl"].as_str().unwrap().ends_with("/Patient/8"))
        );
        for entry in &included {
            let reference = format!(
                "{}/{}",
                entry["resource"]["resourceType"].as_str().unwrap(),
                entry["resource"]["id"].as_str().unwrap()
            );
            assert!(
                found
                    .iter()
                    .any(|a| a.to_string().contains(&format!("\"{reference}\""))),
                "{reference} is not referenced"
            );
        }
        let reverse = app
            .get_fhir(
                "Patient?_id=8&_revinclude=Observation:patient&_revinclude=Claim:patient",
                200,
            )
            .await;
        let extras: Vec<&Json> = reverse["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["search"]["mode"] == "include")
            .collect();
        let observations = app.all_pages("Observation?patient=8&_count=500").await;
        let claims = app.all_pages("Claim?patient=8").await;
        assert_eq!(extras.len(), observations.len() + claims.len());
        assert_eq!(reverse["total"], 1, "included resources do not count");
    }
);

on_every_backend!(totals_and_summaries, |app: TestApp| async move {
    let count = app
        .get_fhir("Patient?gender=male&_summary=count", 200)
        .await;
    assert!(count.get("entry").is_none());
    let male = app.all_pages("Patient?gender=male&_count=100").await;
    assert_eq!(count["total"].as_u64().unwrap() as usize, male.len());
    let paged = app.get_fhir("Patient?_count=5", 200).await;
    assert!(
        paged.get("total").is_none(),
        "an accurate total is not computed unless asked"
    );
    let accurate = app.get_fhir("Patient?_count=5&_total=accurate", 200).await;
    assert_eq!(accurate["total"], PATIENTS as u64);
    let vitals = app
        .get_fhir("Observation?category=vital-signs&_summary=count", 200)
        .await;
    let listed = app
        .all_pages("Observation?category=vital-signs&_count=500")
        .await;
    assert_eq!(
        vitals["total"].as_u64().unwrap() as usize,
        listed.len(),
        "unpivoted rows count per resource"
    );
    let summarized = app.get_fhir("Patient?_count=2&_summary=true", 200).await;
    for patient in matches(&summarized) {
        assert_eq!(patient["meta"]["tag"][0]["code"], "SUBSETTED");
        assert!(patient.get("extension").is_none());
    }
    let elements = app
        .get_fhir("Observation?_count=2&_elements=subject", 200)
        .await;
    for observation in matches(&elements) {
        let mut keys: Vec<&String> = observation.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            vec!["code", "id", "meta", "resourceType", "status", "subject"]
        );
    }
});

on_every_backend!(count_zero_gives_the_total_only, |app: TestApp| async move {
    // R4: `_count=0` answers as `_summary=count` does; fhirpy's count() and HAPI clients rely on it.
    let female = app.get_fhir("Patient?gender=female&_count=0", 200).await;
    let expected = oracle_count(
        &app,
        "SELECT COUNT(*) FROM `patient_data` WHERE `sex` = 'Female'",
        vec![],
    )
    .await;
    assert!(expected > 0, "the fixture has female patients");
    assert_eq!(female["total"].as_u64().unwrap() as usize, expected);
    assert!(female.get("entry").is_none(), "no entries: {female}");
    let links: Vec<(&str, &str)> = female["link"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["relation"].as_str().unwrap(), l["url"].as_str().unwrap()))
        .collect();
    let self_url = format!("{}/Patient?gender=female&_count=0", app.base);
    assert_eq!(links, vec![("self", self_url.as_str())], "no next link");
    // Counted as `_total=accurate` counts, also when other summaries are asked for and with
    // includes (which add nothing to a count), and through POST _search.
    let accurate = app
        .get_fhir(
            "Observation?category=vital-signs&_count=1&_total=accurate",
            200,
        )
        .await;
    for query in [
        "Observation?category=vital-signs&_count=0",
        "Observation?category=vital-signs&_count=0&_summary=data",
        "Observation?category=vital-signs&_count=0&_include=Observation:patient",
    ] {
        let counted = app.get_fhir(query, 200).await;
        assert_eq!(counted["total"], accurate["total"], "{query}");
        assert!(counted.get("entry").is_none(), "{query}: {counted}");
    }
    let posted = app
        .send(
            app.client
                .post(app.url("Patient/_search"))
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body("gender=female&_count=0"),
        )
        .await;
    assert_eq!(posted.status, 200);
    let posted = posted.json();
    assert_eq!(posted["total"], female["total"]);
    assert!(posted.get("entry").is_none());
});

on_every_backend!(links_show_what_was_applied, |app: TestApp| async move {
    let bundle = app
        .get_fhir("Patient?family=Sm&shoe-size=9&_count=2&_sort=family", 200)
        .await;
    let self_link = bundle["link"][0]["url"].as_str().unwrap();
    assert_eq!(
        self_link,
        format!("{}/Patient?family=Sm&_sort=family&_count=2", app.base)
    );
    let outcome = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["search"]["mode"] == "outcome")
        .expect("an outcome entry");
    assert_eq!(
        outcome["resource"]["issue"][0]["expression"][0],
        "shoe-size"
    );
    assert_eq!(outcome["resource"]["issue"][0]["severity"], "warning");
    for entry in matches(&bundle) {
        assert!(entry["id"].is_string());
    }
    for entry in bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["search"]["mode"] == "match")
    {
        assert!(
            entry["fullUrl"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{}/Patient/", app.base))
        );
    }
    // POST _search: body and URL parameters combine.
    let posted = app
        .send(
            app.client
                .post(app.url("Patient/_search?_count=2"))
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body("family=Sm&_sort=family"),
        )
        .await;
    assert_eq!(posted.status, 200);
    assert_eq!(ids(&matches(&posted.json())), ids(&matches(&bundle)));
});
