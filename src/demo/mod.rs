//! Deterministic synthetic OpenEMR data, for the embedded demo, the tests and the benchmarks.
//!
//! The same seed and patient count give the same rows on SQLite and MariaDB, so ids and search
//! results match across dialects. The data carries OpenEMR's quirks on purpose: empty strings for
//! "no value", zero dates, `pc_pid` as text, non-patient calendar events, vitals with 0 meaning
//! "not recorded", superseded claim versions, users without an NPI.

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime};

use crate::db::DbError;
use crate::db::fixture::FixtureWriter;
use crate::dialect::DialectKind;
use crate::dialect::ast::Value;
use crate::dialect::fold::fold;

pub mod cerebello;
pub mod dentned;
pub mod opendental;

/// The OpenEMR tables the openemr adapter reads, with their real column types.
pub const OPENEMR_SCHEMA: &str = include_str!("../../adapters/openemr/fixture/schema.sql");

/// SplitMix64: small, fast and the same everywhere (the benchmarks draw their ids from it too).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub(crate) fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub(crate) fn between(&mut self, low: f64, high: f64) -> f64 {
        low + (self.next_u64() as f64 / u64::MAX as f64) * (high - low)
    }
}

pub(crate) const FAMILY: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Torres",
    "Nguyen",
    "Hill",
    "Flores",
    "O'Brien",
    "Müller",
    "Chalmers",
    "Van der Berg",
    "Nakamura",
    // Accents and case for string search: `family=Muller` finds Müller, MÜLLER and Muller,
    // `:exact` only its own spelling. Eleven, so that 60 test patients draw several of them.
    "Dvořák",
    "Gómez",
    "Ærø",
    "Nuñez",
    "García",
    "MÜLLER",
    "Peña",
    "Muller",
    "Ibáñez",
    "Øster",
    "Pena",
];
pub(crate) const GIVEN_FEMALE: &[&str] = &[
    "Mary",
    "Patricia",
    "Jennifer",
    "Linda",
    "Elizabeth",
    "Barbara",
    "Susan",
    "Jessica",
    "Sarah",
    "Karen",
    "Lisa",
    "Nancy",
    "Betty",
    "Sandra",
    "Ashley",
    "Emily",
    "Donna",
    "Michelle",
    "Carol",
    "Amanda",
    "Zoë",
    "Inés",
    "Renée",
];
pub(crate) const GIVEN_MALE: &[&str] = &[
    "James",
    "Robert",
    "John",
    "Michael",
    "David",
    "William",
    "Richard",
    "Joseph",
    "Thomas",
    "Charles",
    "Christopher",
    "Daniel",
    "Matthew",
    "Anthony",
    "Mark",
    "Donald",
    "Steven",
    "Paul",
    "Andrew",
    "José",
    "Søren",
    "Björn",
];
const MIDDLE: &[&str] = &[
    "", "", "", "A", "B", "C", "J", "L", "M", "Marie", "Lee", "Ann",
];
const CITIES: &[(&str, &str, &str)] = &[
    ("Boston", "MA", "02108"),
    ("Springfield", "IL", "62701"),
    ("Portland", "OR", "97201"),
    ("Austin", "TX", "73301"),
    ("Madison", "WI", "53703"),
    ("Raleigh", "NC", "27601"),
];
pub(crate) const STREETS: &[&str] = &[
    "Main St",
    "Oak Ave",
    "Maple Dr",
    "Cedar Ln",
    "Elm St",
    "Pine Rd",
    "Washington Blvd",
];
const RACES: &[&str] = &[
    "white",
    "black_or_afri_amer",
    "Asian",
    "amer_ind_or_alaska_native",
    "native_hawai_or_pac_island",
    "decline_to_specify",
    "",
];
const ETHNICITIES: &[&str] = &[
    "hisp_or_latin",
    "not_hisp_or_latin",
    "not_hisp_or_latin",
    "decline_to_specify",
    "",
];
const MARITAL: &[&str] = &[
    "married",
    "single",
    "divorced",
    "widowed",
    "separated",
    "domestic partner",
    "",
];
const REFERRALS: &[&str] = &["", "", "web", "physician", "walk-in", "insurance"];
/// Patient appointment categories of the seeded category table (pc_cattype = 0).
const PATIENT_CATEGORIES: &[i64] = &[5, 9, 10, 12, 13];
const APPOINTMENT_STATUSES: &[&str] = &[
    "-", "*", "+", "x", "?", "@", "~", "!", "#", "<", ">", "$", "%", "^", "AVM", "SMS", "EMAIL",
    "CALL",
];
/// LOINC code, name, unit, low, high, decimals.
const LABS: &[(&str, &str, &str, f64, f64, i32)] = &[
    (
        "2345-7",
        "Glucose [Mass/volume] in Serum or Plasma",
        "mg/dL",
        70.0,
        180.0,
        0,
    ),
    (
        "4548-4",
        "Hemoglobin A1c/Hemoglobin.total in Blood",
        "%",
        4.5,
        9.5,
        1,
    ),
    (
        "2093-3",
        "Cholesterol [Mass/volume] in Serum or Plasma",
        "mg/dL",
        140.0,
        260.0,
        0,
    ),
    (
        "2951-2",
        "Sodium [Moles/volume] in Serum or Plasma",
        "mmol/L",
        132.0,
        148.0,
        0,
    ),
];
const PROCEDURES: &[(&str, &str, &str, f64)] = &[
    (
        "CPT4",
        "99213",
        "Office visit, established patient, low complexity",
        110.0,
    ),
    (
        "CPT4",
        "99214",
        "Office visit, established patient, moderate complexity",
        165.0,
    ),
    (
        "CPT4",
        "99203",
        "Office visit, new patient, low complexity",
        150.0,
    ),
    ("CPT4", "80053", "Comprehensive metabolic panel", 45.0),
    ("HCPCS", "G0439", "Annual wellness visit, subsequent", 120.0),
];
const DIAGNOSES: &[(&str, &str)] = &[
    ("E11.9", "Type 2 diabetes mellitus without complications"),
    ("I10", "Essential (primary) hypertension"),
    ("E78.5", "Hyperlipidemia, unspecified"),
    (
        "Z00.00",
        "Encounter for general adult medical examination without abnormal findings",
    ),
];

pub(crate) fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

pub(crate) fn int(i: i64) -> Value {
    Value::Int(i)
}

fn decimal(f: f64, places: u32) -> Value {
    let scale = 10f64.powi(places as i32);
    let rounded = (f * scale).round() / scale;
    Value::Decimal(
        rust_decimal::Decimal::from_f64_retain(rounded)
            .unwrap_or_default()
            .round_dp(places),
    )
}

pub(crate) fn base_time() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2025, 1, 6)
        .expect("valid")
        .and_time(NaiveTime::MIN)
}

/// Appends a fixed update time, so that reference tables do not take the seeding time from
/// their `DEFAULT CURRENT_TIMESTAMP` and the demo stays the same from run to run.
fn with_update_time(rows: Vec<Vec<Value>>) -> Vec<Vec<Value>> {
    rows.into_iter()
        .map(|mut row| {
            row.push(Value::DateTime(base_time() - Duration::days(90)));
            row
        })
        .collect()
}

/// Rows of one table, written with the column names beside each value so that a row can never
/// drift out of step with its column list.
pub(crate) struct Rows {
    table: &'static str,
    columns: Vec<&'static str>,
    rows: Vec<Vec<Value>>,
}

impl Rows {
    pub(crate) fn new(table: &'static str) -> Rows {
        Rows {
            table,
            columns: Vec::new(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, row: Vec<(&'static str, Value)>) {
        let (columns, values): (Vec<&'static str>, Vec<Value>) = row.into_iter().unzip();
        if self.columns.is_empty() {
            self.columns = columns;
        } else {
            assert_eq!(
                self.columns, columns,
                "{}: every row lists the same columns",
                self.table
            );
        }
        self.rows.push(values);
    }

    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    /// Adds a copy of the first row whose `key` column holds the key's value, with `changes`
    /// (a quirk planted after the fact); adds nothing when no row matches.
    pub(crate) fn push_copy(&mut self, key: (&str, &Value), changes: &[(&str, Value)]) {
        let position = |name: &str| {
            self.columns
                .iter()
                .position(|c| *c == name)
                .unwrap_or_else(|| panic!("{}: no column {name}", self.table))
        };
        let key_at = position(key.0);
        let Some(mut row) = self.rows.iter().find(|row| &row[key_at] == key.1).cloned() else {
            return;
        };
        for (column, value) in changes {
            row[position(column)] = value.clone();
        }
        self.rows.push(row);
    }

    pub(crate) async fn write(&self, writer: &FixtureWriter) -> Result<(), DbError> {
        writer.insert(self.table, &self.columns, &self.rows).await
    }
}

/// Row counts written, for the demo's banner and the benchmarks' report.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub patients: usize,
    pub appointments: usize,
    pub vitals: usize,
    pub lab_results: usize,
    pub coverages: usize,
    pub claims: usize,
}

/// Patient ids `1..=patients` in consecutive blocks of `size`: generators write a block at a time
/// so that memory stays flat for large seeds.
pub(crate) fn patient_blocks(
    patients: usize,
    size: usize,
) -> impl Iterator<Item = std::ops::RangeInclusive<i64>> {
    (1..=patients)
        .step_by(size.max(1))
        .map(move |start| start as i64..=(start + size - 1).min(patients) as i64)
}

/// Creates the OpenEMR tables and fills them with `patients` synthetic patients.
pub async fn seed_openemr(writer: &FixtureWriter, patients: usize) -> Result<Counts, DbError> {
    writer
        .execute_script(OPENEMR_SCHEMA, DialectKind::Mysql)
        .await?;
    seed_reference_tables(writer).await?;
    let mut counts = Counts::default();
    for pids in patient_blocks(patients, 5_000) {
        seed_patient_block(writer, *pids.start(), *pids.end(), &mut counts).await?;
    }
    Ok(counts)
}

async fn seed_reference_tables(writer: &FixtureWriter) -> Result<(), DbError> {
    let options: Vec<Vec<Value>> = [
        ("sex", "Female", "Female", "HL7:F"),
        ("sex", "Male", "Male", "HL7:M"),
        ("sex", "UNK", "Unknown", "HL7:UNK"),
        ("marital", "married", "Married", "M"),
        ("marital", "single", "Single", "S"),
        ("marital", "divorced", "Divorced", "D"),
        ("marital", "widowed", "Widowed", "W"),
        ("marital", "separated", "Separated", "L"),
        ("marital", "domestic partner", "Domestic Partner", "T"),
        ("race", "white", "White", "2106-3"),
        (
            "race",
            "black_or_afri_amer",
            "Black or African American",
            "2054-5",
        ),
        ("race", "Asian", "Asian", "2028-9"),
        (
            "race",
            "amer_ind_or_alaska_native",
            "American Indian or Alaska Native",
            "1002-5",
        ),
        (
            "race",
            "native_hawai_or_pac_island",
            "Native Hawaiian or Other Pacific Islander",
            "2076-8",
        ),
        ("race", "decline_to_specify", "Declined To Specify", "ASKU"),
        ("ethnicity", "hisp_or_latin", "Hispanic or Latino", "2135-2"),
        (
            "ethnicity",
            "not_hisp_or_latin",
            "Not Hispanic or Latino",
            "2186-5",
        ),
        (
            "ethnicity",
            "decline_to_specify",
            "Declined To Specify",
            "ASKU",
        ),
    ]
    .iter()
    .enumerate()
    .map(|(seq, (list, option, title, notes))| {
        // The sex list keeps its codes in `codes`; the others in `notes`, as OpenEMR does.
        let (notes, codes) = if *list == "sex" {
            ("", *notes)
        } else {
            (*notes, "")
        };
        vec![
            text(list),
            text(option),
            text(title),
            int(seq as i64),
            text(notes),
            text(codes),
            int(1),
        ]
    })
    .collect();
    writer
        .insert(
            "list_options",
            &[
                "list_id",
                "option_id",
                "title",
                "seq",
                "notes",
                "codes",
                "activity",
            ],
            &options,
        )
        .await?;

    let categories: Vec<Vec<Value>> = [
        (1, "no_show", "No Show", 0, 0),
        (2, "in_office", "In Office", 1, 0),
        (3, "out_of_office", "Out Of Office", 1, 0),
        (4, "vacation", "Vacation", 1, 0),
        (5, "office_visit", "Office Visit", 0, 900),
        (6, "holidays", "Holidays", 2, 86400),
        (7, "closed", "Closed", 2, 86400),
        (8, "lunch", "Lunch", 1, 3600),
        (9, "established_patient", "Established Patient", 0, 900),
        (10, "new_patient", "New Patient", 0, 1800),
        (11, "reserved", "Reserved", 1, 900),
        (
            12,
            "health_and_behavioral_assessment",
            "Health and Behavioral Assessment",
            0,
            900,
        ),
        (
            13,
            "preventive_care_services",
            "Preventive Care Services",
            0,
            900,
        ),
        (
            14,
            "ophthalmological_services",
            "Ophthalmological Services",
            0,
            900,
        ),
        (15, "group_therapy", "Group Therapy", 3, 3600),
    ]
    .iter()
    .map(|(id, constant, name, kind, duration)| {
        vec![
            int(*id),
            text(constant),
            text(name),
            int(*duration),
            int(*kind),
            int(1),
        ]
    })
    .collect();
    writer
        .insert(
            "openemr_postcalendar_categories",
            &[
                "pc_catid",
                "pc_constant_id",
                "pc_catname",
                "pc_duration",
                "pc_cattype",
                "pc_active",
            ],
            &categories,
        )
        .await?;

    let facilities = vec![
        vec![
            int(1),
            text("Riverside Family Practice"),
            text("617-555-0100"),
            text("617-555-0101"),
            text("12 Main St"),
            text("Boston"),
            text("MA"),
            text("02108"),
            text("US"),
            text("04-1234567"),
            int(1),
            int(1),
            int(11),
            text("05D1234567"),
            text("1234567893"),
            int(1),
            int(0),
        ],
        vec![
            int(2),
            text("Riverside North Clinic"),
            text("617-555-0200"),
            Value::Null,
            text("88 Oak Ave"),
            text("Boston"),
            text("MA"),
            text("02110"),
            text("US"),
            Value::Null,
            int(1),
            int(0),
            int(11),
            Value::Null,
            text("1245319599"),
            int(0),
            int(0),
        ],
        vec![
            int(3),
            text("Riverside Billing Office"),
            text("617-555-0300"),
            Value::Null,
            text("5 Elm St"),
            text("Boston"),
            text("MA"),
            text("02111"),
            text("US"),
            text("04-7654321"),
            int(0),
            int(1),
            Value::Null,
            Value::Null,
            Value::Null,
            int(0),
            int(0),
        ],
    ];
    writer
        .insert(
            "facility",
            &[
                "id",
                "name",
                "phone",
                "fax",
                "street",
                "city",
                "state",
                "postal_code",
                "country_code",
                "federal_ein",
                "service_location",
                "billing_location",
                "pos_code",
                "domain_identifier",
                "facility_npi",
                "primary_business_entity",
                "inactive",
                "last_updated",
            ],
            &with_update_time(facilities),
        )
        .await?;

    let specialties = [
        "Family Medicine",
        "Internal Medicine",
        "Cardiology",
        "Pediatrics",
        "Endocrinology",
        "Family Medicine",
        "Geriatrics",
        "Internal Medicine",
    ];
    let mut users = Vec::new();
    for id in 1..=10i64 {
        let has_npi = id <= 8;
        let npi = if has_npi {
            text(&format!("19{:08}", 10_000_000 + id * 7919))
        } else {
            Value::Null
        };
        users.push(vec![
            int(id),
            text(&format!("user{id}")),
            int(i64::from(has_npi)),
            // Blank names, as real users tables have: user 5 has no last name, user 8 none at all.
            text(
                [
                    "Ana", "Ben", "Carla", "Dev", "Elif", "Farid", "Grace", "", "Ivy", "Jon",
                ][(id - 1) as usize],
            ),
            text(if id % 3 == 0 { "R" } else { "" }),
            text(
                [
                    "Alvarez", "Brooks", "Chen", "Desai", " ", "Farah", "Gupta", "", "Ito",
                    "Jensen",
                ][(id - 1) as usize],
            ),
            text(if has_npi { "MD" } else { "" }),
            int(1 + (id % 2)),
            int(i64::from(id != 7)),
            npi,
            if has_npi {
                text(specialties[(id - 1) as usize])
            } else {
                Value::Null
            },
            text(&format!("user{id}@riverside.example")),
            text("12 Main St"),
            text("Boston"),
            text("MA"),
            text("02108"),
            text(&format!("617-555-01{id:02}")),
            text(if has_npi { "207Q00000X" } else { "" }),
            int(i64::from(has_npi)),
            text(if has_npi { "" } else { "ord_lab" }),
            if has_npi {
                text(&format!("MA-{:05}", id * 311))
            } else {
                Value::Null
            },
        ]);
    }
    writer
        .insert(
            "users",
            &[
                "id",
                "username",
                "authorized",
                "fname",
                "mname",
                "lname",
                "title",
                "facility_id",
                "active",
                "npi",
                "specialty",
                "email",
                "street",
                "city",
                "state",
                "zip",
                "phone",
                "taxonomy",
                "calendar",
                "abook_type",
                "state_license_number",
                "last_updated",
            ],
            &with_update_time(users),
        )
        .await?;

    let type_codes = vec![
        vec![int(2), text("Medicare Part B"), text("MB")],
        vec![int(3), text("Medicaid"), text("MC")],
        vec![int(6), text("BCBS"), text("BL")],
        vec![int(17), text("Commercial"), text("CI")],
        vec![int(19), text("HMO"), text("HM")],
    ];
    writer
        .insert(
            "insurance_type_codes",
            &["id", "type", "claim_type"],
            &type_codes,
        )
        .await?;
    let payers = vec![
        vec![int(1), text("Medicare"), text("00430"), int(2), int(0)],
        vec![int(2), text("MassHealth"), text("00431"), int(3), int(0)],
        vec![
            int(3),
            text("Blue Cross Blue Shield of Massachusetts"),
            text("00700"),
            int(6),
            int(0),
        ],
        vec![
            int(4),
            text("Acme Health Commercial"),
            text("62308"),
            int(17),
            int(0),
        ],
        vec![int(5), text("Harbor HMO"), text("04271"), int(19), int(1)],
    ];
    writer
        .insert(
            "insurance_companies",
            &[
                "id",
                "name",
                "cms_id",
                "ins_type_code",
                "inactive",
                "last_updated",
            ],
            &with_update_time(payers),
        )
        .await?;
    Ok(())
}

#[derive(Default)]
struct Block {
    patients: Vec<Vec<Value>>,
    encounters: Vec<Vec<Value>>,
    forms: Vec<Vec<Value>>,
    vitals: Vec<Vec<Value>>,
    events: Vec<Vec<Value>>,
    orders: Vec<Vec<Value>>,
    reports: Vec<Vec<Value>>,
    results: Vec<Vec<Value>>,
    insurance: Vec<Vec<Value>>,
    billing: Vec<Vec<Value>>,
    claims: Vec<Vec<Value>>,
}

/// Per-patient id spaces, so that every table's ids depend only on the pid.
const PER_PATIENT: i64 = 10;

async fn seed_patient_block(
    writer: &FixtureWriter,
    first: i64,
    last: i64,
    counts: &mut Counts,
) -> Result<(), DbError> {
    let mut block = Block::default();
    for pid in first..=last {
        generate_patient(pid, &mut block);
    }
    counts.patients += block.patients.len();
    counts.appointments += block.events.len();
    counts.vitals += block.vitals.len();
    counts.lab_results += block.results.len();
    counts.coverages += block.insurance.len();
    counts.claims += block.claims.len();
    writer
        .insert(
            "patient_data",
            &[
                "id",
                "pid",
                "pubpid",
                "title",
                "fname",
                "mname",
                "lname",
                "suffix",
                "DOB",
                "sex",
                "street",
                "street_line_2",
                "city",
                "state",
                "postal_code",
                "country_code",
                "phone_home",
                "phone_biz",
                "phone_cell",
                "email",
                "ss",
                "status",
                "race",
                "ethnicity",
                "providerID",
                "usertext1",
                "regdate",
                "deceased_date",
                "date",
                "last_updated",
            ],
            &block.patients,
        )
        .await?;
    writer
        .insert(
            "form_encounter",
            &[
                "id",
                "date",
                "reason",
                "facility_id",
                "pid",
                "encounter",
                "pc_catid",
                "provider_id",
                "billing_facility",
                "pos_code",
                "class_code",
                "date_end",
                "last_update",
            ],
            &block.encounters,
        )
        .await?;
    writer
        .insert(
            "forms",
            &[
                "id",
                "date",
                "encounter",
                "form_name",
                "form_id",
                "pid",
                "deleted",
                "formdir",
            ],
            &block.forms,
        )
        .await?;
    writer
        .insert(
            "form_vitals",
            &[
                "id",
                "date",
                "pid",
                "user",
                "activity",
                "bps",
                "bpd",
                "weight",
                "height",
                "temperature",
                "temp_method",
                "pulse",
                "respiration",
                "BMI",
                "head_circ",
                "oxygen_saturation",
                "last_updated",
            ],
            &block.vitals,
        )
        .await?;
    writer
        .insert(
            "openemr_postcalendar_events",
            &[
                "pc_eid",
                "pc_catid",
                "pc_aid",
                "pc_pid",
                "pc_title",
                "pc_time",
                "pc_hometext",
                "pc_eventDate",
                "pc_duration",
                "pc_recurrtype",
                "pc_startTime",
                "pc_endTime",
                "pc_eventstatus",
                "pc_apptstatus",
                "pc_facility",
            ],
            &block.events,
        )
        .await?;
    writer
        .insert(
            "procedure_order",
            &[
                "procedure_order_id",
                "provider_id",
                "patient_id",
                "encounter_id",
                "date_collected",
                "date_ordered",
                "order_priority",
                "order_status",
                "activity",
            ],
            &block.orders,
        )
        .await?;
    writer
        .insert(
            "procedure_report",
            &[
                "procedure_report_id",
                "procedure_order_id",
                "date_collected",
                "date_report",
                "report_status",
                "review_status",
            ],
            &block.reports,
        )
        .await?;
    writer
        .insert(
            "procedure_result",
            &[
                "procedure_result_id",
                "procedure_report_id",
                "result_data_type",
                "result_code",
                "result_text",
                "date",
                "units",
                "result",
                "range",
                "abnormal",
                "comments",
                "result_status",
            ],
            &block.results,
        )
        .await?;
    writer
        .insert(
            "insurance_data",
            &[
                "id",
                "type",
                "provider",
                "plan_name",
                "policy_number",
                "group_number",
                "subscriber_lname",
                "subscriber_fname",
                "subscriber_relationship",
                "subscriber_DOB",
                "copay",
                "date",
                "pid",
                "subscriber_sex",
                "policy_type",
                "date_end",
            ],
            &block.insurance,
        )
        .await?;
    writer
        .insert(
            "billing",
            &[
                "id",
                "date",
                "code_type",
                "code",
                "pid",
                "provider_id",
                "encounter",
                "code_text",
                "billed",
                "activity",
                "payer_id",
                "modifier",
                "units",
                "fee",
                "justify",
            ],
            &block.billing,
        )
        .await?;
    writer
        .insert(
            "claims",
            &[
                "patient_id",
                "encounter_id",
                "version",
                "payer_id",
                "status",
                "payer_type",
                "bill_process",
                "bill_time",
                "process_time",
                "target",
            ],
            &block.claims,
        )
        .await?;
    Ok(())
}

/// One patient in `QUIRK_PERIOD` has each quirk below, chosen by `pid % QUIRK_PERIOD`: what
/// `portico audit` must find (tests/api/quality.rs counts each in plain SQL).
pub const QUIRK_PERIOD: i64 = 101;

/// Data-quality quirks of real installs, planted in a `patient_data` row (columns in the order
/// `seed_openemr` inserts them): a patient without a name, a phone, an email and a postal code that
/// do not parse, a birth date in the future, and two patients with the same name and birth date.
fn plant_patient_quirks(pid: i64, row: &mut [Value]) {
    const FNAME: usize = 4;
    const MNAME: usize = 5;
    const LNAME: usize = 6;
    const DOB: usize = 8;
    const POSTAL_CODE: usize = 14;
    const PHONE_HOME: usize = 16;
    const EMAIL: usize = 19;
    match pid % QUIRK_PERIOD {
        13 => {
            for column in [FNAME, MNAME, LNAME] {
                row[column] = text("");
            }
        }
        29 => row[PHONE_HOME] = text("call mom"),
        41 => row[EMAIL] = text("none"),
        53 => row[POSTAL_CODE] = text("0"),
        67 => row[DOB] = Value::Date(NaiveDate::from_ymd_opt(2099, 3, 1).expect("valid")),
        // A pair registered twice: same name and birth date, one block of QUIRK_PERIOD apart.
        79 | 80 => {
            row[FNAME] = text("Avery");
            row[LNAME] = text("Duplicate");
            row[DOB] = Value::Date(
                NaiveDate::from_ymd_opt(1961, 1, 1).expect("valid")
                    + Duration::days(pid / QUIRK_PERIOD),
            );
        }
        _ => {}
    }
}

fn generate_patient(pid: i64, block: &mut Block) {
    let mut rng = Rng::new(0x5EED_0000 + pid as u64);
    let female = rng.chance(52);
    // Some sex values are unknown, and some blank, as in real installs.
    let sex = match rng.below(100) {
        0 | 1 => "UNK",
        2 => "",
        _ if female => "Female",
        _ => "Male",
    };
    let given = if female {
        rng.pick(GIVEN_FEMALE)
    } else {
        rng.pick(GIVEN_MALE)
    };
    let family = rng.pick(FAMILY);
    let middle = rng.pick(MIDDLE);
    let (city, state, zip) = CITIES[rng.below(CITIES.len() as u64) as usize];
    let birth = NaiveDate::from_ymd_opt(1930, 1, 1).expect("valid")
        + Duration::days(rng.below(33_000) as i64);
    // A few legacy quirks: missing, zero and partial birth dates (known only to the year or the
    // month, as MySQL keeps them under an empty sql_mode).
    let dob = match (rng.below(200), pid % 37) {
        (0, _) => Value::Null,
        (1, _) => text("0000-00-00"),
        (_, 11) => text(&format!("{}-00-00", birth.year())),
        (_, 23) => text(&format!("{}-{:02}-00", birth.year(), birth.month())),
        _ => Value::Date(birth),
    };
    let provider = 1 + rng.below(9) as i64; // 9 has no NPI: not a Practitioner
    let deceased = if rng.chance(2) {
        Value::DateTime(base_time() - Duration::days(rng.below(2000) as i64))
    } else {
        Value::Null
    };
    let updated = base_time() + Duration::minutes(pid * 7 % 500_000);
    block.patients.push(vec![
        int(pid),
        int(pid),
        text(&format!("MRN{pid:07}")),
        text(if rng.chance(20) {
            if female { "Ms." } else { "Mr." }
        } else {
            ""
        }),
        text(given),
        text(middle),
        text(family),
        if rng.chance(3) {
            text("Jr.")
        } else {
            Value::Null
        },
        dob,
        text(sex),
        text(&format!("{} {}", 1 + rng.below(999), rng.pick(STREETS))),
        if rng.chance(10) {
            text(&format!("Apt {}", 1 + rng.below(40)))
        } else {
            Value::Null
        },
        text(city),
        text(state),
        text(zip),
        text("US"),
        text(&format!(
            "555-{:03}-{:04}",
            rng.below(1000),
            rng.below(10_000)
        )),
        text(if rng.chance(30) { "555-010-2000" } else { "" }),
        text(&if rng.chance(70) {
            format!("555-{:03}-{:04}", rng.below(1000), rng.below(10_000))
        } else {
            String::new()
        }),
        text(&if rng.chance(60) {
            format!(
                "{}.{}{pid}@example.com",
                fold(given),
                fold(family).replace(['\'', ' '], "")
            )
        } else {
            String::new()
        }),
        text(&format!(
            "{:03}-{:02}-{:04}",
            100 + rng.below(800),
            rng.below(100),
            rng.below(10_000)
        )),
        text(rng.pick(MARITAL)),
        text(rng.pick(RACES)),
        text(rng.pick(ETHNICITIES)),
        int(provider),
        text(rng.pick(REFERRALS)),
        Value::DateTime(base_time() - Duration::days(rng.below(3000) as i64)),
        deceased,
        Value::DateTime(base_time() - Duration::days(rng.below(3000) as i64)),
        Value::DateTime(updated),
    ]);
    plant_patient_quirks(pid, block.patients.last_mut().expect("just pushed"));

    let payer_count = if rng.chance(85) {
        1 + rng.below(2) as i64
    } else {
        0
    };
    let mut payers = Vec::new();
    for order in 0..payer_count {
        let payer = 1 + ((pid + order * 2) % 5);
        payers.push((order + 1, payer));
        let start = NaiveDate::from_ymd_opt(2020, 1, 1).expect("valid")
            + Duration::days(rng.below(1500) as i64);
        let ended = rng.chance(10);
        block.insurance.push(vec![
            int(pid * PER_PATIENT + order),
            text(["primary", "secondary", "tertiary"][order as usize]),
            text(&payer.to_string()),
            text(["Gold PPO", "Silver HMO", "Medicare Part B", "Standard"][rng.below(4) as usize]),
            text(&format!("POL{pid:06}{order}")),
            text(if rng.chance(70) { "GRP-1001" } else { "" }),
            text(family),
            text(given),
            text(if rng.chance(80) {
                "self"
            } else {
                rng.pick(&["spouse", "child", "other"])
            }),
            Value::Date(birth),
            text(&if rng.chance(60) {
                format!("{}", 10 + 5 * rng.below(6))
            } else {
                String::new()
            }),
            Value::Date(start),
            int(pid),
            text(if female { "Female" } else { "Male" }),
            text(""),
            if ended {
                Value::Date(start + Duration::days(365))
            } else {
                Value::Null
            },
        ]);
    }

    let encounter_count = rng.below(4) as i64;
    for index in 0..encounter_count {
        let encounter = pid * PER_PATIENT + index;
        let facility = 1 + rng.below(2) as i64;
        let doctor = 1 + rng.below(8) as i64;
        let visit = base_time() - Duration::days(rng.below(700) as i64)
            + Duration::hours(8 + rng.below(9) as i64);
        block.encounters.push(vec![
            int(encounter),
            Value::DateTime(visit),
            text(rng.pick(&[
                "Follow-up",
                "Annual physical",
                "Cough and fever",
                "Diabetes check",
                "Blood pressure review",
            ])),
            int(facility),
            int(pid),
            int(encounter),
            int(rng.pick(&["5", "9", "10"]).parse().expect("number")),
            int(doctor),
            int(3),
            int(11),
            text("AMB"),
            Value::DateTime(visit + Duration::minutes(30)),
            Value::DateTime(visit + Duration::hours(2)),
        ]);
        if rng.chance(85) {
            let vitals_id = encounter;
            let recorded = |rng: &mut Rng, percent: u64, low: f64, high: f64, places: u32| {
                if rng.chance(percent) {
                    decimal(rng.between(low, high), places)
                } else {
                    decimal(0.0, places)
                }
            };
            let bp = rng.chance(90);
            let systolic = 100 + rng.below(60);
            let diastolic = 60 + rng.below(35);
            block.vitals.push(vec![
                int(vitals_id),
                Value::DateTime(visit + Duration::minutes(5)),
                int(pid),
                text(&format!("user{doctor}")),
                int(1),
                text(&if bp {
                    systolic.to_string()
                } else {
                    String::new()
                }),
                text(&if bp {
                    diastolic.to_string()
                } else {
                    String::new()
                }),
                recorded(&mut rng, 95, 90.0, 260.0, 6),
                recorded(&mut rng, 80, 55.0, 76.0, 6),
                recorded(&mut rng, 70, 97.0, 100.4, 6),
                text(rng.pick(&["Oral", "Tympanic Membrane", "Temporal Artery", ""])),
                recorded(&mut rng, 90, 55.0, 110.0, 6),
                recorded(&mut rng, 60, 12.0, 22.0, 6),
                recorded(&mut rng, 75, 18.0, 38.0, 6),
                recorded(&mut rng, 5, 13.0, 24.0, 6),
                recorded(&mut rng, 50, 92.0, 100.0, 2),
                Value::DateTime(visit + Duration::minutes(10)),
            ]);
            block.forms.push(vec![
                int(vitals_id),
                Value::DateTime(visit),
                int(encounter),
                text("Vitals"),
                int(vitals_id),
                int(pid),
                int(0),
                text("vitals"),
            ]);
        }
        if rng.chance(40) {
            let order_id = encounter;
            let collected = visit + Duration::minutes(20);
            let reported = collected + Duration::hours(20);
            block.orders.push(vec![
                int(order_id),
                int(doctor),
                int(pid),
                int(encounter),
                Value::DateTime(collected),
                Value::DateTime(visit),
                text("normal"),
                text("complete"),
                int(1),
            ]);
            block.reports.push(vec![
                int(order_id),
                int(order_id),
                Value::DateTime(collected),
                Value::DateTime(reported),
                text("complete"),
                text("reviewed"),
            ]);
            for (index, (code, name, unit, low, high, places)) in LABS.iter().enumerate() {
                let value = rng.between(*low, *high);
                let scale = 10f64.powi(*places);
                let value = (value * scale).round() / scale;
                let (reference_low, reference_high) = match *code {
                    "2345-7" => (70.0, 99.0),
                    "4548-4" => (4.0, 5.6),
                    "2093-3" => (125.0, 200.0),
                    _ => (135.0, 145.0),
                };
                let abnormal = if value > reference_high {
                    "high"
                } else if value < reference_low {
                    "low"
                } else {
                    "no"
                };
                block.results.push(vec![
                    int(order_id * 10 + index as i64),
                    int(order_id),
                    text("N"),
                    text(code),
                    text(name),
                    Value::DateTime(collected),
                    text(unit),
                    text(&value.to_string()),
                    text(&format!("{reference_low}-{reference_high}")),
                    text(abnormal),
                    Value::Null,
                    text(if rng.chance(95) { "final" } else { "prelim" }),
                ]);
            }
            // A textual result: urine culture. Now and then the interface sent neither code nor
            // name, which leaves the Observation without its required code; and now and then it
            // came weeks after the order (the adapter's lab-result-long-after-order rule).
            let uncoded = order_id % 97 == 0;
            let late = if order_id % 53 == 0 {
                Duration::days(45)
            } else {
                Duration::zero()
            };
            block.results.push(vec![
                int(order_id * 10 + 9),
                int(order_id),
                text("S"),
                text(if uncoded { "" } else { "630-4" }),
                text(if uncoded {
                    ""
                } else {
                    "Bacteria identified in Urine by Culture"
                }),
                Value::DateTime(collected + late),
                text(""),
                text(rng.pick(&["No growth", "Escherichia coli >100,000 CFU/mL"])),
                text(""),
                text(""),
                text("Specimen received refrigerated"),
                text("final"),
            ]);
        }
        if let Some((payer_type, payer)) = payers.first().copied() {
            let (procedure_type, procedure, name, fee) =
                PROCEDURES[rng.below(PROCEDURES.len() as u64) as usize];
            let (diagnosis, diagnosis_text) = DIAGNOSES[rng.below(DIAGNOSES.len() as u64) as usize];
            let billing_base = encounter * 10;
            block.billing.push(vec![
                int(billing_base),
                Value::DateTime(visit),
                text("ICD10"),
                text(diagnosis),
                int(pid),
                int(doctor),
                int(encounter),
                text(diagnosis_text),
                int(1),
                int(1),
                int(payer),
                text(""),
                int(1),
                decimal(0.0, 2),
                text(""),
            ]);
            block.billing.push(vec![
                int(billing_base + 1),
                Value::DateTime(visit),
                text(procedure_type),
                text(procedure),
                int(pid),
                int(doctor),
                int(encounter),
                text(name),
                int(1),
                int(1),
                int(payer),
                text(if rng.chance(20) { "25:59" } else { "" }),
                int(1),
                decimal(fee, 2),
                text(&format!("ICD10|{diagnosis}:")),
            ]);
            if rng.chance(30) {
                block.billing.push(vec![
                    int(billing_base + 2),
                    Value::DateTime(visit),
                    text("CPT4"),
                    text("36415"),
                    int(pid),
                    int(doctor),
                    int(encounter),
                    text("Routine venipuncture"),
                    int(1),
                    int(1),
                    int(payer),
                    text(""),
                    int(1),
                    decimal(12.0, 2),
                    text(&format!("ICD10|{diagnosis}:")),
                ]);
            }
            // A deleted line that must not appear on the claim.
            if rng.chance(10) {
                block.billing.push(vec![
                    int(billing_base + 3),
                    Value::DateTime(visit),
                    text("CPT4"),
                    text("99215"),
                    int(pid),
                    int(doctor),
                    int(encounter),
                    text("Deleted line"),
                    int(0),
                    int(0),
                    int(payer),
                    text(""),
                    int(1),
                    decimal(210.0, 2),
                    text(""),
                ]);
            }
            let versions = 1 + rng.below(2) as i64;
            for version in 1..=versions {
                let latest = version == versions;
                let status = if latest {
                    [1, 2, 2, 2, 4, 5, 6, 7][rng.below(8) as usize]
                } else {
                    2
                };
                block.claims.push(vec![
                    int(pid),
                    int(encounter),
                    int(version),
                    int(payer),
                    int(status),
                    int(payer_type),
                    int(if status == 1 { 0 } else { 2 }),
                    if status == 1 {
                        Value::Null
                    } else {
                        Value::DateTime(visit + Duration::days(version * 3))
                    },
                    Value::Null,
                    text("hcfa"),
                ]);
            }
        }
    }

    // 1 to 8, 4.5 on average: about 91,000 calendar rows for 20,000 patients, as in a long-running
    // install (issue 7).
    let appointment_count = 1 + rng.below(8) as i64;
    for index in 0..appointment_count {
        let event = pid * PER_PATIENT + index;
        let category = PATIENT_CATEGORIES[rng.below(PATIENT_CATEGORIES.len() as u64) as usize];
        let day = base_time().date() - Duration::days(400) + Duration::days(rng.below(800) as i64);
        let start = NaiveTime::from_hms_opt(
            8 + rng.below(9) as u32,
            [0, 15, 30, 45][rng.below(4) as usize],
            0,
        )
        .expect("valid");
        let duration = if category == 10 { 1800 } else { 900 };
        let doctor = 1 + rng.below(10) as i64; // 9 and 10 have no NPI
        block.events.push(vec![
            int(event),
            int(category),
            text(&doctor.to_string()),
            text(&pid.to_string()),
            text(rng.pick(&[
                "Office Visit",
                "Follow up",
                "New patient visit",
                "Annual physical",
            ])),
            Value::DateTime(day.and_time(NaiveTime::MIN) - Duration::days(10)),
            text(if rng.chance(30) {
                "Patient requests morning slot"
            } else {
                ""
            }),
            Value::Date(day),
            int(duration),
            int(if rng.chance(5) { 1 } else { 0 }),
            Value::Time(start),
            Value::Time(start + Duration::seconds(duration)),
            int(1),
            text(rng.pick(APPOINTMENT_STATUSES)),
            int(1 + rng.below(2) as i64),
        ]);
    }
    // An appointment left behind by a patient record removed by hand: its pc_pid names no one.
    if pid % QUIRK_PERIOD == 90 {
        let day = base_time().date() - Duration::days(pid % 60);
        block.events.push(vec![
            int(pid * PER_PATIENT + 8),
            int(PATIENT_CATEGORIES[0]),
            text("1"),
            text(&(pid + 9_000_000).to_string()),
            text("Office Visit"),
            Value::DateTime(day.and_time(NaiveTime::MIN) - Duration::days(10)),
            text(""),
            Value::Date(day),
            int(900),
            int(0),
            Value::Time(NaiveTime::from_hms_opt(9, 0, 0).expect("valid")),
            Value::Time(NaiveTime::from_hms_opt(9, 15, 0).expect("valid")),
            int(1),
            text(">"),
            int(1),
        ]);
    }
    // Provider and clinic events share the table; they are not Appointments.
    if pid % 50 == 0 {
        let day = base_time().date() + Duration::days(pid % 30);
        block.events.push(vec![
            int(pid * PER_PATIENT + 9),
            int(8),
            text("1"),
            text(if pid % 100 == 0 { "0" } else { "" }),
            text("Lunch"),
            Value::DateTime(day.and_time(NaiveTime::MIN)),
            text(""),
            Value::Date(day),
            int(3600),
            int(0),
            Value::Time(NaiveTime::from_hms_opt(12, 0, 0).expect("valid")),
            Value::Time(NaiveTime::from_hms_opt(13, 0, 0).expect("valid")),
            int(1),
            text("-"),
            int(1),
        ]);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn patient_blocks_cover_every_id_once() {
        let blocks: Vec<_> = super::patient_blocks(5, 2).collect();
        assert_eq!(blocks, vec![1..=2, 3..=4, 5..=5]);
        assert_eq!(super::patient_blocks(0, 2).count(), 0);
    }
}
