//! Legacy rows as long-running installs hold them: partial zero dates served and searched as partial
//! FHIR dates, profiles claimed only where their required elements are filled, and rows that
//! cannot become valid R4 (an undecodable cell, a key that cannot form an id, a required element
//! missing) left out and reported without failing a page, while paging goes on past them.

use std::collections::HashSet;
use std::time::Duration;

use portico::db::fixture::FixtureWriter;
use portico::dialect::RenderedQuery;
use portico::dialect::ast::{Cond, Value};

use crate::on_every_backend;
use crate::support::{self, *};

const US_CORE_PRACTITIONER: &str =
    "http://hl7.org/fhir/us/core/StructureDefinition/us-core-practitioner";

/// Plain SQL over the test database: the first column of each row, as text.
async fn column_texts(app: &TestApp, sql: &str) -> Vec<String> {
    let db = legacy_database(&app.db_url, Duration::from_secs(5));
    let rows = db
        .fetch(&RenderedQuery {
            sql: sql.into(),
            params: Vec::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", e.message));
    rows.into_iter()
        .map(|row| match &row[0] {
            Value::Int(i) => i.to_string(),
            Value::Text(t) => t.clone(),
            other => panic!("{sql}: unexpected cell {other:?}"),
        })
        .collect()
}

/// Changes the test database the way a long-running install has it (the PMS's own rows; Portico
/// itself never writes there).
async fn damage(app: &TestApp, statements: &str) {
    let writer = FixtureWriter::open(&app.db_url)
        .await
        .unwrap_or_else(|e| panic!("{}", e.message));
    let dialect = writer.dialect();
    writer
        .execute_script(statements, dialect)
        .await
        .unwrap_or_else(|e| panic!("{statements}: {}", e.message));
    writer.close().await;
}

fn patient_ids(resources: &[serde_json::Value]) -> HashSet<String> {
    ids(resources).into_iter().collect()
}

on_every_backend!(partial_zero_dates, |app: TestApp| async move {
    // The generator plants both kinds; SQL finds them without Portico.
    let years = column_texts(
            &app,
            "SELECT pid FROM patient_data WHERE DOB LIKE '%-00-00' AND DOB NOT LIKE '0000%' ORDER BY pid",
        )
        .await;
    let months = column_texts(
            &app,
            "SELECT pid FROM patient_data WHERE DOB LIKE '%-00' AND DOB NOT LIKE '%-00-00' ORDER BY pid",
        )
        .await;
    assert!(
        !years.is_empty() && !months.is_empty(),
        "fixture lacks partial dates"
    );
    for pid in &years {
        let patient = app.get_fhir(&format!("Patient/{pid}"), 200).await;
        assert_valid_r4(&patient);
        let year = patient["birthDate"].as_str().unwrap().to_owned();
        assert_eq!(year.len(), 4, "{patient}");
        let next_year = year.parse::<i32>().unwrap() + 1;
        let found = |query: String| {
            let app = &app;
            async move { patient_ids(&app.all_pages(&query).await) }
        };
        // The year 1958 is contained in `birthdate=1958`, not in one of its days; it overlaps
        // every range that reaches into that year.
        for (query, expected) in [
            (format!("Patient?birthdate={year}"), true),
            (format!("Patient?birthdate={year}-06-01"), false),
            (format!("Patient?birthdate=ne{year}-06-01"), true),
            (format!("Patient?birthdate=ge{year}-06-01"), true),
            (format!("Patient?birthdate=gt{year}-12-31"), false),
            (format!("Patient?birthdate=le{year}-01-01"), true),
            (format!("Patient?birthdate=lt{year}-01-01"), false),
            (format!("Patient?birthdate=lt{year}-01-02"), true),
            (format!("Patient?birthdate=eb{next_year}"), true),
            (format!("Patient?birthdate=sa{}", next_year - 2), true),
            (format!("Patient?birthdate=sa{year}-01-01"), false),
        ] {
            let hit = found(format!("{query}&_count=500")).await.contains(pid);
            assert_eq!(hit, expected, "{query} for birthDate {year}");
        }
    }
    for pid in &months {
        let patient = app.get_fhir(&format!("Patient/{pid}"), 200).await;
        let month = patient["birthDate"].as_str().unwrap().to_owned();
        assert_eq!(month.len(), 7, "{patient}");
        let year = &month[..4];
        // A January month (`1971-01-00`) sorts with its year's partial date (`1971-00-00`):
        // no valid date lies between them, so for where a range ends it counts as the whole
        // year (README, Limits).
        let january = month.ends_with("-01");
        for (query, expected) in [
            (format!("Patient?birthdate={month}"), !january),
            (format!("Patient?birthdate={year}"), true),
            (format!("Patient?birthdate={month}-15"), false),
            (format!("Patient?birthdate=ge{month}-15"), true),
            (format!("Patient?birthdate=sa{month}-15"), false),
        ] {
            let hit =
                patient_ids(&app.all_pages(&format!("{query}&_count=500")).await).contains(pid);
            assert_eq!(hit, expected, "{query} for birthDate {month}");
        }
    }
    // Paging through every patient with a birth date filter goes past them all.
    let (all, left_out) = app
        .all_pages_and_left_out("Patient?birthdate=le2100-01-01&_count=9")
        .await;
    assert_eq!(left_out, 0);
    assert!(
        all.iter()
            .any(|p| p["birthDate"].as_str().unwrap().len() == 4)
    );
});

on_every_backend!(profile_claims, |app: TestApp| async move {
    let practitioners = app.all_pages("Practitioner?_count=50").await;
    let claims = |p: &serde_json::Value| {
        p["meta"]["profile"]
            .as_array()
            .is_some_and(|profiles| profiles.iter().any(|u| u == US_CORE_PRACTITIONER))
    };
    let mut unnamed = 0;
    for practitioner in &practitioners {
        assert_valid_r4(practitioner);
        let has_family = practitioner["name"]
            .as_array()
            .is_some_and(|names| names.iter().all(|n| n["family"].is_string()));
        assert_eq!(claims(practitioner), has_family, "{practitioner}");
        unnamed += usize::from(!has_family);
    }
    // Users 5 (no last name) and 8 (no name at all) of the generator.
    assert_eq!(unnamed, 2, "{practitioners:?}");
    let nameless = app.get_fhir("Practitioner/8", 200).await;
    assert!(nameless["name"][0].get("family").is_none(), "{nameless}");
    assert!(nameless["name"][0].get("given").is_none(), "{nameless}");
    assert!(!claims(&nameless));
});

on_every_backend!(missing_required_element, |app: TestApp| async move {
    let uncoded = column_texts(
            &app,
            "SELECT procedure_result_id FROM procedure_result WHERE result_code = '' AND result_text = '' ORDER BY procedure_result_id",
        )
        .await;
    assert!(!uncoded.is_empty(), "fixture lacks uncoded lab results");
    let (served, left_out) = app
        .page_all_nothing_lost("Observation?category=laboratory", 40)
        .await;
    assert_eq!(left_out, uncoded.len());
    let served_ids = patient_ids(&served);
    for id in &uncoded {
        assert!(!served_ids.contains(&format!("lab-{id}")));
        app.assert_unservable(
            &format!("Observation/lab-{id}"),
            "required element code is missing",
        )
        .await;
    }
    // The page's outcome entry says what was left out and why, and names no patient.
    let bundle = app
        .get_fhir("Observation?category=laboratory&_count=1000", 200)
        .await;
    let outcome = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["search"]["mode"] == "outcome")
        .expect("an outcome entry");
    assert_valid_r4(&outcome["resource"]);
    let issue = &outcome["resource"]["issue"][0];
    assert_eq!(issue["severity"], "warning");
    assert!(
        issue["diagnostics"]
            .as_str()
            .unwrap()
            .contains("Observation (the required element code is missing)"),
        "{issue}"
    );
});

on_every_backend!(undecodable_cells_and_bad_keys, |app: TestApp| async move {
    let sqlite = app.db_url.starts_with("sqlite:");
    // A key that cannot form an id, on both backends.
    damage(&app, "UPDATE patient_data SET pid = -4 WHERE pid = 4").await;
    // A cell the driver refuses: text that is not UTF-8 (SQLite), a decimal wider than any
    // Rust decimal (MariaDB).
    let (undecodable_read, column) = if sqlite {
        damage(
            &app,
            "UPDATE patient_data SET fname = CAST(X'C328' AS TEXT) WHERE pid = 3",
        )
        .await;
        ("Patient/3".to_owned(), "fname")
    } else {
        let vitals = column_texts(
            &app,
            "SELECT id FROM form_vitals WHERE weight > 0 ORDER BY id LIMIT 1",
        )
        .await;
        damage(
            &app,
            &format!(
                "ALTER TABLE form_vitals MODIFY weight DECIMAL(65,2);\n\
                     UPDATE form_vitals SET weight = 1e50 WHERE id = {}",
                vitals[0]
            ),
        )
        .await;
        (format!("Observation/vs-{}-weight", vitals[0]), "weight")
    };
    app.assert_unservable(
        &undecodable_read,
        &format!("cannot decode (column {column})"),
    )
    .await;

    for (resource_type, expected_left_out) in [
        ("Patient", if sqlite { 2 } else { 1 }),
        ("Observation", if sqlite { 0 } else { 1 }),
    ] {
        let (served, left_out) = app.page_all_nothing_lost(resource_type, 3).await;
        // Uncoded lab results are left out too (the generator's).
        let uncoded = if resource_type == "Observation" {
            column_texts(
                    &app,
                    "SELECT procedure_result_id FROM procedure_result WHERE result_code = '' AND result_text = ''",
                )
                .await
                .len()
        } else {
            0
        };
        // An unpivoted vitals row stands for one Observation per recorded measurement.
        assert!(
            left_out >= expected_left_out + uncoded,
            "{resource_type}: {left_out} left out"
        );
        for resource in &served {
            assert_valid_r4(resource);
        }
    }
    // Paging with a sort over the damaged rows still reaches the end, once each.
    let sorted = app.all_pages("Patient?_sort=family&_count=4").await;
    let unique = patient_ids(&sorted);
    assert_eq!(unique.len(), sorted.len());
    assert!(!unique.contains("3") || !sqlite);
});

on_every_backend!(
    empty_vitals_forms_end_neither_a_search_nor_a_scan,
    |app: TestApp| async move {
        // Forms opened and saved empty: each row yields no Observation at all. A run of them
        // longer than a page must not end the paging before the rows after it, nor a keyset scan
        // (change detection, reconciliation, the audit), whose SQL does not filter on variants.
        let empty = column_texts(&app, "SELECT id FROM form_vitals ORDER BY id LIMIT 12").await;
        damage(
            &app,
            &format!(
                "UPDATE form_vitals SET height = 0, weight = 0, temperature = 0, pulse = 0, \
                 respiration = 0, BMI = 0, head_circ = 0, oxygen_saturation = 0, bps = '', \
                 bpd = '' WHERE id IN ({})",
                empty.join(", ")
            ),
        )
        .await;
        for (query, page) in [
            ("Observation", 3),
            ("Observation?date=ge1900-01-01", 3),
            ("Observation?category=vital-signs", 3),
            ("Observation?category=vital-signs", 1),
            ("Observation?category=vital-signs&_sort=-date", 2),
            ("Observation?code=http://loinc.org|8867-4", 2),
        ] {
            let separator = if query.contains('?') { '&' } else { '?' };
            let whole = ids(&app
                .all_pages(&format!("{query}{separator}_count=1000"))
                .await);
            assert!(whole.len() > 10, "{query}: fixture has too few vitals");
            let (served, _) = app.page_all_nothing_lost(query, page).await;
            assert_eq!(ids(&served), whole, "{query} in pages of {page}");
        }
        let repository = support::repository(&app.db_url, "openemr");
        let vitals = repository.adapter.resources["Observation"]
            .mappings
            .iter()
            .position(|m| m.table == "form_vitals")
            .expect("the vitals mapping");
        let mapping = repository.adapter.resources["Observation"].mappings[vitals].clone();
        let mut scanned = HashSet::new();
        let mut after = None;
        for step in 0.. {
            assert!(
                step < 1000,
                "the scan does not end (restarted from {after:?})"
            );
            let found = repository
                .scan(vitals, &mapping, Cond::True, after.clone(), 5)
                .await
                .unwrap();
            for (outcome, _) in found.outcomes {
                let id = outcome.expect("a vitals Observation").id;
                assert!(scanned.insert(id.clone()), "{id} scanned twice");
            }
            if found.rows < 5 {
                break;
            }
            after = found.last_key;
        }
        let searched = ids(&app
            .all_pages("Observation?category=vital-signs&_count=1000")
            .await);
        assert_eq!(
            scanned
                .into_iter()
                .collect::<std::collections::BTreeSet<_>>(),
            searched
                .into_iter()
                .collect::<std::collections::BTreeSet<_>>(),
            "the scan serves what the search does"
        );
    }
);

on_every_backend!(
    claims_of_two_payers_page_by_the_table_key,
    |app: TestApp| async move {
        // OpenEMR versions a claim per encounter, whichever payer it goes to: a second payer's
        // versions interleave with the first's. Claims page by the table's key (patient,
        // encounter, version), not by their id (patient, encounter, payer); the latest version of
        // each payer must be served once, whatever the page size.
        let db = legacy_database(&app.db_url, Duration::from_secs(5));
        let fetch = |sql: &'static str| {
            let db = db.clone();
            async move {
                db.fetch(&RenderedQuery {
                    sql: sql.into(),
                    params: Vec::new(),
                })
                .await
                .unwrap_or_else(|e| panic!("{sql}: {}", e.message))
            }
        };
        let latest = fetch(
            "SELECT c.patient_id, c.encounter_id, MAX(c.version), MAX(c.payer_id) FROM claims c \
             JOIN form_encounter e ON e.pid = c.patient_id AND e.encounter = c.encounter_id \
             WHERE c.payer_id > 0 GROUP BY c.patient_id, c.encounter_id \
             ORDER BY c.patient_id, c.encounter_id LIMIT 6",
        )
        .await;
        assert_eq!(latest.len(), 6, "the fixture has too few claims");
        let int = |value: &Value| match value {
            Value::Int(i) => *i,
            other => panic!("not an integer: {other:?}"),
        };
        let payers: Vec<i64> = fetch("SELECT id FROM insurance_companies ORDER BY id")
            .await
            .iter()
            .map(|row| int(&row[0]))
            .collect();
        let second_payer = |payer: i64| *payers.iter().find(|&&p| p != payer).expect("two payers");
        let mut statements = String::new();
        for (index, row) in latest.iter().enumerate() {
            let (pid, encounter, version, payer) =
                (int(&row[0]), int(&row[1]), int(&row[2]), int(&row[3]));
            // A second payer billed after the first, then the first billed again, then the
            // second again: the served rows are versions +2 (first payer) and +3 (second). The
            // patient holds a coverage with the second payer (a Claim names its coverage).
            let second = second_payer(payer);
            statements.push_str(&format!(
                "INSERT INTO insurance_data (id, type, provider, pid, date, policy_type) VALUES \
                 ({}, 'tertiary', '{second}', {pid}, '2024-0{}-01', '');\n",
                900_000 + index,
                index + 1
            ));
            for (step, to) in [(1, second), (2, payer), (3, second)] {
                statements.push_str(&format!(
                    "INSERT INTO claims (patient_id, encounter_id, version, payer_id, status, \
                     payer_type, bill_process, target) VALUES ({pid}, {encounter}, {}, {to}, 2, \
                     1, 2, 'hcfa');\n",
                    version + step
                ));
            }
        }
        damage(&app, &statements).await;
        let expected = fetch(
            "SELECT c.patient_id, c.encounter_id, c.payer_id FROM claims c \
             JOIN form_encounter e ON e.pid = c.patient_id AND e.encounter = c.encounter_id \
             WHERE c.payer_id > 0 AND NOT EXISTS (SELECT 1 FROM claims n WHERE \
             n.patient_id = c.patient_id AND n.encounter_id = c.encounter_id \
             AND n.payer_id = c.payer_id AND n.version > c.version)",
        )
        .await;
        let expected: std::collections::BTreeSet<String> = expected
            .iter()
            .map(|row| format!("{}-{}-{}", int(&row[0]), int(&row[1]), int(&row[2])))
            .collect();
        for row in &latest {
            let (pid, encounter) = (int(&row[0]), int(&row[1]));
            let second = second_payer(int(&row[3]));
            assert!(expected.contains(&format!("{pid}-{encounter}-{second}")));
        }
        for page in [1, 2, 7] {
            let (served, _) = app.page_all_nothing_lost("Claim", page).await;
            let served_ids = ids(&served);
            let unique: std::collections::BTreeSet<String> = served_ids.iter().cloned().collect();
            assert_eq!(
                unique.len(),
                served_ids.len(),
                "a Claim served twice in pages of {page}"
            );
            assert_eq!(unique, expected, "Claims in pages of {page}");
        }
        // The keyset scan (change detection, reconciliation) walks the same key.
        let repository = support::repository(&app.db_url, "openemr");
        let mapping = repository.adapter.resources["Claim"].mappings[0].clone();
        let mut scanned = std::collections::BTreeSet::new();
        let mut after = None;
        for step in 0.. {
            assert!(step < 10_000, "the scan does not end");
            let found = repository
                .scan(0, &mapping, Cond::True, after.clone(), 2)
                .await
                .unwrap();
            for (outcome, _) in found.outcomes {
                if let Ok(resource) = outcome {
                    assert!(
                        scanned.insert(resource.id.clone()),
                        "{} scanned twice",
                        resource.id
                    );
                }
            }
            if found.rows < 2 {
                break;
            }
            after = found.last_key;
        }
        assert_eq!(scanned, expected, "the scan serves what the search does");
    }
);

on_every_backend!(
    claim_lines_follow_their_own_patient_and_encounter,
    |app: TestApp| async move {
        // Claim lines are read for a page by each match column's list of values, so a line of
        // patient A at patient B's encounter comes back with the page's lines. It is no line of
        // either Claim (OpenEMR numbers encounters per site, but a merged or hand-edited install
        // can hold such rows) and must not be served as one.
        let db = legacy_database(&app.db_url, Duration::from_secs(5));
        let rows = db
            .fetch(&RenderedQuery {
                sql: "SELECT c.patient_id, c.encounter_id, c.payer_id FROM claims c \
                      JOIN form_encounter e ON e.pid = c.patient_id AND e.encounter = c.encounter_id \
                      WHERE c.payer_id > 0 ORDER BY c.patient_id, c.encounter_id"
                    .into(),
                params: Vec::new(),
            })
            .await
            .unwrap_or_else(|e| panic!("claims: {}", e.message));
        let text = |value: &Value| match value {
            Value::Int(i) => i.to_string(),
            other => panic!("not an integer: {other:?}"),
        };
        let keys: Vec<[String; 3]> = rows
            .iter()
            .map(|row| [text(&row[0]), text(&row[1]), text(&row[2])])
            .collect();
        let a = keys[0].clone();
        let b = keys
            .iter()
            .find(|key| key[0] != a[0])
            .expect("claims of two patients")
            .clone();
        let (first, second) = (a.join("-"), b.join("-"));
        let (pid_a, encounter_a) = (&a[0], &a[1]);
        let (pid_b, encounter_b) = (&b[0], &b[1]);
        let line = |id: u32, pid: &str, encounter: &str, code: &str| {
            format!(
                "INSERT INTO billing (id, date, code_type, code, pid, encounter, code_text, \
                 activity, units, fee) VALUES ({id}, '2024-03-01 09:00:00', 'ICD10', '{code}', \
                 {pid}, {encounter}, 'planted', 1, 1, 0);\n"
            )
        };
        let statements = [
            line(900_001, pid_a, encounter_b, "Z99.81"),
            line(900_002, pid_b, encounter_a, "Z99.82"),
            line(900_003, pid_a, encounter_a, "Z99.83"),
        ]
        .concat();
        damage(&app, &statements).await;
        let bundle = app
            .get_fhir(&format!("Claim?_id={first},{second}&_count=50"), 200)
            .await;
        let served = matches(&bundle);
        assert_eq!(
            ids(&served).into_iter().collect::<HashSet<_>>(),
            HashSet::from([first.clone(), second.clone()]),
            "both Claims on one page"
        );
        for claim in &served {
            assert_valid_r4(claim);
            let codes: Vec<&str> = claim["diagnosis"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter_map(|d| d["diagnosisCodeableConcept"]["coding"][0]["code"].as_str())
                .collect();
            let own = claim["id"] == first.as_str();
            assert_eq!(
                codes.contains(&"Z99.83"),
                own,
                "{}: the line planted at its own pair: {codes:?}",
                claim["id"]
            );
            assert!(
                !codes.contains(&"Z99.81") && !codes.contains(&"Z99.82"),
                "{}: a line of another patient's encounter: {codes:?}",
                claim["id"]
            );
        }
    }
);
