//! The dentned adapter on a SQLite copy of DentneD's schema: the generator's rows (padded char(3)
//! codes, archived patients, invoices without a doctor or without a patient, lines typed by hand)
//! come out as the adapter's README says. The conformance kit (tests/api/kit.rs) covers the
//! generic behaviour; this file checks what is particular to DentneD against plain SQL.
//! Needs no server.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDateTime, TimeZone};
use common::{count, int, nullable_int, rows, text};
use portico::demo::dentned::seed_dentned;
use portico::dialect::ast::Value;
use serde_json::Value as Json;

const PATIENTS: usize = 120;

fn number(value: &Value) -> f64 {
    match value {
        Value::Int(n) => *n as f64,
        Value::Float(f) => *f,
        Value::Decimal(d) => d.to_string().parse().expect("decimal"),
        other => panic!("not a number: {other:?}"),
    }
}

/// The id in a `Type/id` reference.
fn id_of(reference: &Json, resource_type: &str) -> i64 {
    reference["reference"]
        .as_str()
        .and_then(|r| r.strip_prefix(&format!("{resource_type}/")))
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("not a {resource_type} reference: {reference}"))
}

#[tokio::test]
async fn dentned_on_sqlite() {
    let seeded = common::seed_sqlite("dentned", "all", async |writer| {
        seed_dentned(writer, PATIENTS).await
    })
    .await;
    let counts = &seeded.counts;
    assert_eq!(counts.patients, PATIENTS);
    common::assert_check_accepts("dentned", &seeded.url);
    let common::Served { fhir, database, .. } = seeded.serve().await;

    // Claims: one per invoice with a patient; items are the invoice's lines, codes trimmed.
    let invoices = rows(
        &database,
        "SELECT invoices_id, patients_id, doctors_id, invoices_totalgross FROM invoices",
    )
    .await;
    let mut lines: BTreeMap<i64, Vec<(String, i64, f64)>> = BTreeMap::new();
    for row in rows(
        &database,
        "SELECT invoices_id, invoiceslines_code, invoiceslines_quantity, invoiceslines_unitprice \
         FROM invoiceslines ORDER BY invoices_id, invoiceslines_id",
    )
    .await
    {
        lines.entry(int(&row[0])).or_default().push((
            text(&row[1]).expect("text"),
            int(&row[2]),
            number(&row[3]),
        ));
    }
    assert!(
        lines
            .values()
            .flatten()
            .any(|(code, ..)| code.ends_with(' ')),
        "the fixture has padded char(3) codes"
    );
    let claims: BTreeMap<i64, Json> = fhir
        .all("Claim?_count=100")
        .await
        .into_iter()
        .map(|c| (c["id"].as_str().unwrap().parse().unwrap(), c))
        .collect();
    let with_patient: BTreeSet<i64> = invoices
        .iter()
        .filter(|r| nullable_int(&r[1]).is_some())
        .map(|r| int(&r[0]))
        .collect();
    assert!(
        with_patient.len() < invoices.len(),
        "some invoices have no patient"
    );
    assert_eq!(
        claims.keys().copied().collect::<BTreeSet<_>>(),
        with_patient
    );
    assert_eq!(claims.len(), counts.claims);
    let (mut without_doctor, mut beyond_ten) = (0, 0);
    for row in &invoices {
        let Some(claim) = claims.get(&int(&row[0])) else {
            continue;
        };
        let patient = int(&row[1]);
        let expected = &lines[&int(&row[0])];
        let items = claim["item"].as_array().expect("items");
        assert_eq!(items.len(), expected.len(), "{claim}");
        for (item, (code, quantity, unit)) in items.iter().zip(expected) {
            let coding = &item["productOrService"]["coding"][0];
            assert_eq!(coding["system"], "urn:portico:dentned:treatment-code");
            assert_eq!(coding["code"], code.trim_end());
            assert_eq!(item["quantity"]["value"], *quantity);
            assert_eq!(item["unitPrice"]["value"].as_f64(), Some(*unit));
            let net = item["net"]["value"].as_f64().expect("net");
            assert!((net - unit * *quantity as f64).abs() < 0.005, "{item}");
            if *quantity > 10 {
                beyond_ten += 1;
            }
        }
        assert_eq!(claim["total"]["value"].as_f64(), Some(number(&row[3])));
        assert_eq!(claim["total"]["currency"], "EUR");
        assert_eq!(id_of(&claim["patient"], "Patient"), patient);
        match nullable_int(&row[2]) {
            Some(doctor) => assert_eq!(id_of(&claim["provider"], "Practitioner"), doctor),
            None => {
                without_doctor += 1;
                assert!(claim["provider"].get("reference").is_none());
                assert!(
                    claim["provider"]["display"]
                        .as_str()
                        .is_some_and(|d| !d.is_empty())
                );
            }
        }
        let coverage_reference = format!("Coverage/selfpay-{patient}");
        assert_eq!(
            claim["insurance"][0]["coverage"]["reference"],
            coverage_reference
        );
        let coverage = fhir.json(&coverage_reference).await;
        assert_eq!(id_of(&coverage["beneficiary"], "Patient"), patient);
        assert_eq!(id_of(&coverage["payor"][0], "Patient"), patient);
        assert_eq!(coverage["type"]["coding"][0]["code"], "pay");
    }
    assert!(without_doctor > 0 && beyond_ten > 0);

    // Archived patients are served, inactive, and their claims still point at them.
    let archived: BTreeSet<i64> = rows(
        &database,
        "SELECT patients_id FROM patients WHERE patients_isarchived = 1",
    )
    .await
    .iter()
    .map(|r| int(&r[0]))
    .collect();
    assert!(!archived.is_empty());
    let patients = fhir.all("Patient?_count=100").await;
    assert_eq!(patients.len(), PATIENTS);
    for patient in &patients {
        let id: i64 = patient["id"].as_str().unwrap().parse().unwrap();
        assert_eq!(patient["active"], !archived.contains(&id), "{patient}");
    }
    assert!(
        claims
            .values()
            .any(|c| archived.contains(&id_of(&c["patient"], "Patient")))
    );

    // Gender and birthdate searches return exactly what the columns say.
    let women = fhir.all("Patient?gender=female&_count=100").await;
    let expected_women = count(
        &database,
        "SELECT COUNT(*) FROM patients WHERE patients_sex = 'F'",
    )
    .await;
    assert_eq!(women.len(), expected_women);
    assert!(women.iter().all(|p| p["gender"] == "female"));
    let eighties = fhir
        .all("Patient?birthdate=ge1980-01-01&birthdate=lt1990-01-01&_count=100")
        .await;
    let expected_eighties = count(
        &database,
        "SELECT COUNT(*) FROM patients WHERE patients_birthdate >= '1980-01-01' \
         AND patients_birthdate < '1990-01-01'",
    )
    .await;
    assert_eq!(eighties.len(), expected_eighties);
    assert!(eighties.iter().all(|p| {
        let day = p["birthDate"].as_str().unwrap();
        ("1980-01-01".."1990-01-01").contains(&day)
    }));

    // Appointment times are DentneD's local times with Rome's offset of that day (both offsets
    // occur), and every appointment is booked.
    let local: BTreeMap<String, (String, String)> = rows(
        &database,
        "SELECT appointments_id, appointments_from, appointments_to FROM appointments",
    )
    .await
    .iter()
    .map(|r| {
        (
            int(&r[0]).to_string(),
            (text(&r[1]).expect("text"), text(&r[2]).expect("text")),
        )
    })
    .collect();
    let appointments = fhir.all("Appointment?_count=100").await;
    assert_eq!(appointments.len(), local.len());
    let mut offsets = BTreeSet::new();
    for appointment in &appointments {
        assert_eq!(appointment["status"], "booked");
        let (from, to) = &local[appointment["id"].as_str().unwrap()];
        for (element, stored) in [("start", from), ("end", to)] {
            let instant = DateTime::parse_from_rfc3339(appointment[element].as_str().unwrap())
                .expect("an instant with an offset");
            let wall = NaiveDateTime::parse_from_str(stored, "%Y-%m-%d %H:%M:%S").unwrap();
            let rome = chrono_tz::Europe::Rome
                .from_local_datetime(&wall)
                .earliest()
                .unwrap();
            assert_eq!(instant, rome, "{element} of {appointment}");
            assert_eq!(instant.offset().local_minus_utc(), {
                use chrono::Offset;
                rome.offset().fix().local_minus_utc()
            });
            offsets.insert(instant.offset().local_minus_utc());
        }
    }
    assert_eq!(offsets, BTreeSet::from([3600, 7200]));
    database.close().await;
}
