//! The cerebello adapter end to end on a SQLite copy of Cerebello's schema: what Portico serves over
//! HTTP (parsed strictly as R4) matches plain SQL on the seeded file, for the generator's Cerebello
//! habits (names in one field with double spaces, a parent's CPF, generic calendar entries,
//! private-pay plans, examinations without a code), and `portico check` accepts the file.
//! Needs no server.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDateTime};
use common::{Fhir, Seeded, Served, int, rows, text};
use portico::db::Database;
use portico::demo::Counts;
use portico::demo::cerebello::seed_cerebello;
use portico::dialect::ast::Value;
use serde_json::Value as Json;

const PATIENTS: usize = 150;
const CPF: &str = "http://rnds.saude.gov.br/fhir/r4/NamingSystem/cpf";
const SQLITE_DATETIME: &str = "%Y-%m-%d %H:%M:%S";
/// Cerebello's TypeEstadoBrasileiro in declaration order: MedicalEntityJurisdiction holds the ordinal.
const STATES: [&str; 27] = [
    "AC", "AL", "AP", "AM", "BA", "CE", "DF", "ES", "GO", "MA", "MT", "MS", "MG", "PA", "PB", "PR",
    "PE", "PI", "RJ", "RN", "RS", "RO", "RR", "SC", "SP", "SE", "TO",
];

impl Fhir {
    /// Every match of a search, by id (each id served once).
    async fn by_id(&self, path: &str) -> BTreeMap<String, Json> {
        let all = self.all(path).await;
        let count = all.len();
        let by_id: BTreeMap<String, Json> = all
            .into_iter()
            .map(|r| (r["id"].as_str().expect("id").to_owned(), r))
            .collect();
        assert_eq!(by_id.len(), count, "{path}: an id served twice");
        by_id
    }
}

/// A SQLite file seeded by the generator, in a directory of its own.
async fn seeded(name: &str) -> Seeded<Counts> {
    let seeded = common::seed_sqlite("cerebello", name, async |writer| {
        seed_cerebello(writer, PATIENTS).await
    })
    .await;
    assert_eq!(seeded.counts.patients, PATIENTS);
    seeded
}

/// Seeds a file, serves it with the cerebello adapter on a free port and opens it read-only.
async fn start(name: &str) -> Served {
    seeded(name).await.serve().await
}

/// The first column of every row, as integers.
async fn ids(database: &Database, sql: &str) -> BTreeSet<i64> {
    rows(database, sql)
        .await
        .iter()
        .map(|r| int(&r[0]))
        .collect()
}

fn datetime(value: &Value) -> NaiveDateTime {
    let stored = text(value).expect("a date-time");
    NaiveDateTime::parse_from_str(&stored, SQLITE_DATETIME).expect("SQLite date-time")
}

/// The ids a search serves, as integers.
fn int_ids(served: &BTreeMap<String, Json>) -> BTreeSet<i64> {
    served
        .keys()
        .map(|id| id.parse().expect("an integer id"))
        .collect()
}

fn strings(value: &Json) -> Vec<String> {
    value
        .as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// Checks name[0] against a Cerebello FullName: text as stored, family its last word, given the
/// others (runs of spaces separate words; no empty given names).
fn check_name(resource: &Json, full_name: &str) {
    let name = &resource["name"][0];
    let words: Vec<&str> = full_name.split(' ').filter(|w| !w.is_empty()).collect();
    assert_eq!(name["text"], full_name, "{resource}");
    assert_eq!(name["family"], *words.last().unwrap(), "{resource}");
    assert_eq!(
        strings(&name["given"]),
        words[..words.len() - 1],
        "{resource}"
    );
}

/// The start or end of an Appointment: a UTC instant equal to the stored UTC value.
fn check_utc_instant(appointment: &Json, element: &str, stored: NaiveDateTime) {
    let served = appointment[element].as_str().expect(element);
    assert!(
        served.ends_with('Z') || served.ends_with("+00:00"),
        "{element} is not UTC: {appointment}"
    );
    let instant = DateTime::parse_from_rfc3339(served).expect("an instant");
    assert_eq!(instant.naive_utc(), stored, "{element} of {appointment}");
}

#[tokio::test]
async fn patients_come_from_their_person_with_own_cpf_and_addresses() {
    let c = start("patients").await;
    let expected = rows(
        &c.database,
        "SELECT p.Id, p.PersonId, per.FullName, per.CPF, per.CPFOwner, per.DateOfBirth, \
             per.Gender FROM Patient p JOIN Person per ON per.Id = p.PersonId ORDER BY p.Id",
    )
    .await;
    let mut cities: BTreeMap<i64, Vec<Option<String>>> = BTreeMap::new();
    for row in rows(
        &c.database,
        "SELECT pa.PersonId, a.City FROM PersonAddress pa JOIN Address a ON a.Id = pa.AddressId \
             ORDER BY pa.PersonId, pa.AddressId",
    )
    .await
    {
        cities.entry(int(&row[0])).or_default().push(text(&row[1]));
    }
    let served = c.fhir.by_id("Patient?_count=100").await;
    assert_eq!(served.len(), expected.len());
    assert_eq!(
        int_ids(&served),
        expected.iter().map(|r| int(&r[0])).collect()
    );
    let (mut double_spaced, mut own_cpf, mut others_cpf, mut two_addresses, mut no_address) =
        (0, 0, 0, 0, 0);
    for row in &expected {
        let patient = &served[&int(&row[0]).to_string()];
        let full_name = text(&row[2]).unwrap();
        check_name(patient, &full_name);
        double_spaced += usize::from(full_name.contains("  "));

        let cpfs: Vec<&str> = patient["identifier"]
            .as_array()
            .expect("identifiers")
            .iter()
            .filter(|i| i["system"] == CPF)
            .map(|i| i["value"].as_str().expect("value"))
            .collect();
        match (text(&row[3]), &row[4]) {
            (Some(cpf), Value::Int(0)) => {
                own_cpf += 1;
                assert_eq!(cpfs, [cpf.as_str()], "{patient}");
            }
            (cpf, owner) => {
                if cpf.is_some() && matches!(owner, Value::Int(1..=3)) {
                    others_cpf += 1;
                }
                assert!(cpfs.is_empty(), "not the patient's CPF: {patient}");
            }
        }

        let expected_cities = cities.get(&int(&row[1])).cloned().unwrap_or_default();
        let served_cities: Vec<Option<String>> = patient["address"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|a| a["city"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(served_cities, expected_cities, "{patient}");
        two_addresses += usize::from(expected_cities.len() == 2);
        no_address += usize::from(expected_cities.is_empty());

        let born = datetime(&row[5]).date().format("%Y-%m-%d").to_string();
        assert_eq!(patient["birthDate"], born, "{patient}");
        let gender = match int(&row[6]) {
            0 => "male",
            1 => "female",
            other => panic!("TypeGender {other}"),
        };
        assert_eq!(patient["gender"], gender, "{patient}");
    }
    assert!(double_spaced > 0, "the fixture has double-spaced names");
    assert!(own_cpf > 0 && others_cpf > 0, "both kinds of CPF occur");
    assert!(two_addresses > 0 && no_address > 0);
}

/// The patients whose FullName is `LIKE` the pattern (case-insensitive for ASCII letters).
async fn named(c: &Served, like: &str) -> BTreeSet<i64> {
    ids(
        &c.database,
        &format!(
            "SELECT p.Id FROM Patient p JOIN Person per ON per.Id = p.PersonId \
         WHERE per.FullName LIKE '{like}'"
        ),
    )
    .await
}

#[tokio::test]
async fn patient_name_matches_the_start_of_any_word() {
    let c = start("names").await;
    // "silva" (lower case) is only ever a later word; "Conceição" is a given name and a surname;
    // "ilv" is inside every Silva but starts no word.
    assert!(!(&named(&c, "% silva%").await - &named(&c, "silva%").await).is_empty());
    assert!(!named(&c, "Conceição %").await.is_empty());
    assert!(!named(&c, "% Conceição%").await.is_empty());
    assert!(!named(&c, "%ilv%").await.is_empty());
    for value in ["silva", "Conceição", "ilv"] {
        let expected =
            &named(&c, &format!("{value}%")).await | &named(&c, &format!("% {value}%")).await;
        let served = c
            .fhir
            .by_id(&format!("Patient?name={value}&_count=100"))
            .await;
        assert_eq!(int_ids(&served), expected, "Patient?name={value}");
    }
}

#[tokio::test]
async fn address_searches_match_any_of_a_patients_addresses() {
    let c = start("address").await;
    // Patients with two addresses match through either: compare with the SQL set.
    for city in ["Campinas", "Rio de Janeiro"] {
        let expected = ids(
            &c.database,
            &format!(
                "SELECT DISTINCT p.Id FROM Patient p JOIN PersonAddress pa ON pa.PersonId = p.PersonId \
                 JOIN Address a ON a.Id = pa.AddressId WHERE a.City = '{city}'"
            ),
        )
        .await;
        assert!(!expected.is_empty(), "{city}");
        let found = c
            .fhir
            .by_id(&format!(
                "Patient?address-city:exact={}&_count=100",
                city.replace(' ', "%20")
            ))
            .await;
        assert_eq!(int_ids(&found), expected, "{city}");
    }
    let two = ids(
        &c.database,
        "SELECT p.Id FROM Patient p JOIN PersonAddress pa ON pa.PersonId = p.PersonId \
         GROUP BY p.Id HAVING COUNT(*) > 1",
    )
    .await;
    assert!(!two.is_empty(), "the data has patients with two addresses");
    let (status, _) = c.fhir.get("Patient?address-postalcode:missing=true").await;
    assert_eq!(status, 400, ":missing is refused over repeating rows");
    let (status, _) = c.fhir.get("Patient?address-city:not=Campinas").await;
    assert_eq!(status, 400, ":not is a token modifier");
}

#[tokio::test]
async fn appointments_are_consultations_in_utc() {
    let c = start("appointments").await;
    let expected = rows(
        &c.database,
        "SELECT Id, Status, Start, \"End\", PatientId FROM Appointment \
             WHERE Type = 1 AND PatientId IS NOT NULL",
    )
    .await;
    let served = c.fhir.by_id("Appointment?_count=100").await;
    assert_eq!(served.len(), expected.len());
    let mut statuses = BTreeSet::new();
    for row in &expected {
        let id = int(&row[0]);
        let appointment = served
            .get(&id.to_string())
            .unwrap_or_else(|| panic!("Appointment {id} is not served"));
        let status = int(&row[1]);
        statuses.insert(status);
        let fhir_status = match status {
            0 => "booked",
            1 => "noshow",
            10 => "fulfilled",
            other => panic!("a consultation with Status {other}"),
        };
        assert_eq!(appointment["status"], fhir_status, "{appointment}");
        check_utc_instant(appointment, "start", datetime(&row[2]));
        check_utc_instant(appointment, "end", datetime(&row[3]));
        assert_eq!(
            appointment["participant"][0]["actor"]["reference"],
            format!("Patient/{}", int(&row[4]))
        );
    }
    assert_eq!(statuses, BTreeSet::from([0, 1, 10]));

    // Generic appointments (a doctor's own calendar entries) are neither listed nor readable.
    let generic = ids(&c.database, "SELECT Id FROM Appointment WHERE Type = 0").await;
    assert!(!generic.is_empty());
    for id in &generic {
        assert!(!served.contains_key(&id.to_string()));
        let (status, _) = c.fhir.get(&format!("Appointment/{id}")).await;
        assert_eq!(status, 404, "Appointment/{id} is a generic appointment");
    }

    // A date range is a range of the stored UTC Start.
    let window = ids(
        &c.database,
        "SELECT Id FROM Appointment WHERE Type = 1 AND PatientId IS NOT NULL \
             AND Start >= '2024-06-01 00:00:00' AND Start < '2024-09-01 00:00:00'",
    )
    .await;
    assert!(!window.is_empty() && window.len() < expected.len());
    let in_window = c
        .fhir
        .by_id("Appointment?date=ge2024-06-01&date=lt2024-09-01&_count=100")
        .await;
    assert_eq!(int_ids(&in_window), window);
}

#[tokio::test]
async fn coverage_is_the_last_used_plan() {
    let c = start("coverage").await;
    let expected = rows(
        &c.database,
        "SELECT p.Id, hi.Id, hi.IsParticular, hi.IsActive FROM Patient p \
             JOIN HealthInsurance hi ON hi.Id = p.LastUsedHealthInsuranceId",
    )
    .await;
    let without = ids(
        &c.database,
        "SELECT Id FROM Patient WHERE LastUsedHealthInsuranceId IS NULL",
    )
    .await;
    assert!(!without.is_empty());
    let served = c.fhir.by_id("Coverage?_count=100").await;
    assert_eq!(
        int_ids(&served),
        expected.iter().map(|r| int(&r[0])).collect()
    );
    let (mut self_pay, mut insured, mut cancelled) = (0, 0, 0);
    let mut payors = BTreeSet::new();
    for row in &expected {
        let patient = int(&row[0]);
        let coverage = &served[&patient.to_string()];
        assert_eq!(
            coverage["beneficiary"]["reference"],
            format!("Patient/{patient}")
        );
        let payor = coverage["payor"][0]["reference"]
            .as_str()
            .unwrap_or_else(|| panic!("no payor reference: {coverage}"))
            .to_owned();
        let pay_coding = coverage["type"]["coding"]
            .as_array()
            .expect("type codings")
            .iter()
            .any(|c| {
                c["system"] == "http://terminology.hl7.org/CodeSystem/coverage-selfpay"
                    && c["code"] == "pay"
            });
        if int(&row[2]) == 1 {
            self_pay += 1;
            assert!(pay_coding, "private pay is self-pay: {coverage}");
            assert_eq!(payor, format!("Patient/{patient}"), "{coverage}");
        } else {
            insured += 1;
            assert!(!pay_coding, "an insurer is not self-pay: {coverage}");
            assert_eq!(
                payor,
                format!("Organization/insurer-{}", int(&row[1])),
                "{coverage}"
            );
        }
        let active = int(&row[3]) == 1;
        cancelled += usize::from(!active);
        assert_eq!(
            coverage["status"],
            if active { "active" } else { "cancelled" },
            "{coverage}"
        );
        payors.insert(payor);
    }
    assert!(self_pay > 0 && insured > 0 && cancelled > 0);
    for payor in &payors {
        c.fhir.json(payor).await;
    }
}

#[tokio::test]
async fn organizations_are_practices_and_insurers() {
    let c = start("organizations").await;
    let practices = rows(&c.database, "SELECT Id, Name FROM Practice").await;
    let insurers = rows(
        &c.database,
        "SELECT Id, Name, PracticeId FROM HealthInsurance WHERE IsParticular = 0",
    )
    .await;
    let particular = ids(
        &c.database,
        "SELECT Id FROM HealthInsurance WHERE IsParticular = 1",
    )
    .await;
    assert!(!particular.is_empty());
    let served = c.fhir.by_id("Organization?_count=100").await;
    let mut expected = BTreeSet::new();
    for row in &practices {
        let id = format!("practice-{}", int(&row[0]));
        assert_eq!(served[&id]["name"], text(&row[1]).unwrap().as_str());
        expected.insert(id);
    }
    for row in &insurers {
        let id = format!("insurer-{}", int(&row[0]));
        let insurer = &served[&id];
        assert_eq!(insurer["name"], text(&row[1]).unwrap().as_str());
        let part_of = format!("Organization/practice-{}", int(&row[2]));
        assert_eq!(insurer["partOf"]["reference"], part_of, "{insurer}");
        c.fhir.json(&part_of).await;
        expected.insert(id);
    }
    assert_eq!(served.keys().cloned().collect::<BTreeSet<_>>(), expected);
    for id in &particular {
        let (status, _) = c.fhir.get(&format!("Organization/insurer-{id}")).await;
        assert_eq!(status, 404, "a private-pay price list is not an insurer");
    }
}

#[tokio::test]
async fn practitioners_are_doctors_named_by_their_user() {
    let c = start("practitioners").await;
    let expected = rows(&c.database, "SELECT d.Id, per.FullName, d.MedicalEntityCode, d.MedicalEntityJurisdiction, d.CRM \
             FROM Doctor d JOIN \"User\" u ON u.DoctorId = d.Id JOIN Person per ON per.Id = u.PersonId",
        )
        .await;
    let doctors = ids(&c.database, "SELECT Id FROM Doctor").await;
    assert_eq!(expected.len(), doctors.len(), "one user per doctor");
    let served = c.fhir.by_id("Practitioner?_count=100").await;
    assert_eq!(int_ids(&served), doctors);
    assert_eq!(STATES[24], "SP");
    for row in &expected {
        let practitioner = &served[&int(&row[0]).to_string()];
        check_name(practitioner, &text(&row[1]).unwrap());
        let ordinal: usize = text(&row[3]).unwrap().parse().expect("an ordinal");
        let registration = format!(
            "{}-{}-{}",
            text(&row[2]).unwrap(),
            STATES[ordinal],
            text(&row[4]).unwrap()
        );
        let official: Vec<&Json> = practitioner["identifier"]
            .as_array()
            .expect("identifiers")
            .iter()
            .filter(|i| i["system"] == "urn:portico:cerebello:council-registration")
            .map(|i| &i["value"])
            .collect();
        assert_eq!(official, [&Json::from(registration)], "{practitioner}");
    }
    // A user without a doctor (the secretary) is nobody's name.
    let secretaries = rows(
        &c.database,
        "SELECT per.FullName FROM \"User\" u JOIN Person per ON per.Id = u.PersonId \
             WHERE u.DoctorId IS NULL",
    )
    .await;
    assert!(!secretaries.is_empty());
    for row in &secretaries {
        let name = text(&row[0]).unwrap();
        assert!(
            served
                .values()
                .all(|p| p["name"][0]["text"] != name.as_str()),
            "{name} is not a doctor"
        );
    }
}

#[tokio::test]
async fn observations_are_examinations_and_results() {
    let c = start("observations").await;
    let exams = ids(&c.database, "SELECT Id FROM PhysicalExamination").await;
    let results = rows(
        &c.database,
        "SELECT Id, MedicalProcedureCode, MedicalProcedureName FROM ExaminationResult",
    )
    .await;
    let served = c.fhir.by_id("Observation?_count=100").await;
    let mut expected: BTreeSet<String> = exams.iter().map(|id| format!("exam-{id}")).collect();
    let mut uncoded = 0;
    for row in &results {
        let id = format!("result-{}", int(&row[0]));
        let observation = served
            .get(&id)
            .unwrap_or_else(|| panic!("Observation/{id} is not served"));
        let name = text(&row[2]).unwrap();
        assert_eq!(observation["code"]["text"], name.as_str(), "{observation}");
        let codes: Vec<&Json> = observation["code"]["coding"]
            .as_array()
            .map(|a| a.iter().filter_map(|c| c.get("code")).collect())
            .unwrap_or_default();
        match text(&row[1]) {
            Some(code) => assert_eq!(codes, [&Json::from(code.trim_end())], "{observation}"),
            None => {
                uncoded += 1;
                assert!(codes.is_empty(), "no code to serve: {observation}");
            }
        }
        expected.insert(id);
    }
    assert!(!exams.is_empty() && uncoded > 0);
    assert_eq!(served.keys().cloned().collect::<BTreeSet<_>>(), expected);
    assert_eq!(served.len(), exams.len() + results.len());

    let hemogram: BTreeSet<String> = ids(
        &c.database,
        "SELECT Id FROM ExaminationResult WHERE TRIM(MedicalProcedureCode) = '40304361'",
    )
    .await
    .iter()
    .map(|id| format!("result-{id}"))
    .collect();
    assert!(!hemogram.is_empty());
    let found = c
        .fhir
        .by_id("Observation?code=urn:portico:cerebello:medical-procedure|40304361&_count=100")
        .await;
    assert_eq!(found.keys().cloned().collect::<BTreeSet<_>>(), hemogram);
}

#[tokio::test]
async fn check_accepts_the_seeded_file() {
    let Seeded { url, .. } = seeded("check").await;
    common::assert_check_accepts("cerebello", &url);
}
