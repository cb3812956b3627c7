//! Deterministic synthetic Open Dental 24.x data, for the opendental adapter's tests.
//!
//! The rows carry Open Dental's habits on purpose: `0001-01-01` for every empty date (never NULL),
//! enums as tinyint ordinals, 0 for "no foreign key", `''` for "no text", appointment lengths as
//! `Pattern` text (5 minutes per character), `DateTStamp`/`SecDateTEdit` timestamps, claim status
//! letters, claimproc rows that are not claim lines (estimates, supplemental payments, payments by
//! total), CDT codes with tooth numbers and surfaces, vital signs where 0 means "not recorded", HL7
//! lab results with text dates, soft-deleted patients (PatStatus 4) that still own rows, planned
//! appointments and patient notes on the schedule, and a non-person billing provider. Every date is
//! fixed, so two runs write the same rows.

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime};

use super::{
    Counts, FAMILY, GIVEN_FEMALE, GIVEN_MALE, QUIRK_PERIOD, Rng, Rows, STREETS, base_time, int,
    patient_blocks, text,
};
use crate::db::DbError;
use crate::db::fixture::FixtureWriter;
use crate::dialect::DialectKind;
use crate::dialect::ast::Value;
use crate::dialect::fold::fold;

/// The Open Dental tables the opendental adapter reads, with Open Dental's column types.
pub const OPENDENTAL_SCHEMA: &str = include_str!("../../adapters/opendental/fixture/schema.sql");

/// Open Dental's empty date (C# `DateTime.MinValue`).
fn min_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(1, 1, 1).expect("valid")
}

fn date(d: NaiveDate) -> Value {
    Value::Date(d)
}

fn no_date() -> Value {
    Value::Date(min_date())
}

fn datetime(dt: NaiveDateTime) -> Value {
    Value::DateTime(dt)
}

fn no_datetime() -> Value {
    Value::DateTime(min_date().and_time(NaiveTime::MIN))
}

fn float(f: f64) -> Value {
    Value::Float((f * 100.0).round() / 100.0)
}

fn day(offset_days: i64) -> NaiveDate {
    base_time().date() + Duration::days(offset_days)
}

/// HL7 v2 timestamp text, as ehrlab* stores it.
fn hl7(dt: NaiveDateTime, digits: usize) -> String {
    dt.format("%Y%m%d%H%M%S").to_string()[..digits].to_owned()
}

/// A 10-digit NPI with a valid check digit (Luhn over the `80840` prefix plus the 9 digits).
fn npi(base: u64) -> String {
    let digits = format!("{:09}", base % 1_000_000_000);
    let mut sum = 24; // the 80840 prefix's contribution
    for (position, c) in digits.chars().rev().enumerate() {
        let d = c.to_digit(10).expect("digit");
        sum += if position % 2 == 0 {
            let doubled = d * 2;
            doubled / 10 + doubled % 10
        } else {
            d
        };
    }
    format!("{digits}{}", (10 - sum % 10) % 10)
}

// definition.Category values (DefCat).
const DEF_APPT_CONFIRMED: i64 = 2;
const DEF_BILLING_TYPES: i64 = 4;
const DEF_PROC_CODE_CATS: i64 = 11;
const DEF_RECALL_UNSCHED: i64 = 13;
const DEF_PROVIDER_SPECIALTIES: i64 = 35;

/// Dentists and hygienists who see patients (ProvNum).
const DENTISTS: &[i64] = &[1, 2, 3];
const HYGIENISTS: &[i64] = &[5, 6];
/// The non-person provider ("Lakeside Dental Group LLC") some offices bill under.
const GROUP_PROVIDER: i64 = 7;

/// A procedure code: CodeNum, ProcCode, description, abbreviation, category def, TreatArea
/// (1 Surf, 2 Tooth, 3 Mouth, 4 Quad), fee, medical code, hygiene, diagnosis (ICD-10).
struct Code {
    num: i64,
    code: &'static str,
    descript: &'static str,
    abbr: &'static str,
    category: i64,
    area: i64,
    fee: f64,
    medical: &'static str,
    hygiene: bool,
    icd10: &'static str,
}

const CODES: &[Code] = &[
    Code {
        num: 1,
        code: "D0120",
        descript: "periodic oral evaluation - established patient",
        abbr: "PerEx",
        category: 30,
        area: 3,
        fee: 58.0,
        medical: "",
        hygiene: false,
        icd10: "",
    },
    Code {
        num: 2,
        code: "D0150",
        descript: "comprehensive oral evaluation - new or established patient",
        abbr: "CompEx",
        category: 30,
        area: 3,
        fee: 95.0,
        medical: "",
        hygiene: false,
        icd10: "",
    },
    Code {
        num: 3,
        code: "D0210",
        descript: "intraoral - comprehensive series of radiographic images",
        abbr: "FMX",
        category: 30,
        area: 3,
        fee: 135.0,
        medical: "",
        hygiene: false,
        icd10: "",
    },
    Code {
        num: 4,
        code: "D0274",
        descript: "bitewings - four radiographic images",
        abbr: "4BWX",
        category: 30,
        area: 3,
        fee: 68.0,
        medical: "",
        hygiene: false,
        icd10: "",
    },
    Code {
        num: 5,
        code: "D0330",
        descript: "panoramic radiographic image",
        abbr: "Pano",
        category: 30,
        area: 3,
        fee: 120.0,
        medical: "70355",
        hygiene: false,
        icd10: "",
    },
    Code {
        num: 6,
        code: "D1110",
        descript: "prophylaxis - adult",
        abbr: "Pro",
        category: 31,
        area: 3,
        fee: 105.0,
        medical: "",
        hygiene: true,
        icd10: "",
    },
    Code {
        num: 7,
        code: "D1120",
        descript: "prophylaxis - child",
        abbr: "ChPro",
        category: 31,
        area: 3,
        fee: 75.0,
        medical: "",
        hygiene: true,
        icd10: "",
    },
    Code {
        num: 8,
        code: "D1206",
        descript: "topical application of fluoride varnish",
        abbr: "FlVarn",
        category: 31,
        area: 3,
        fee: 40.0,
        medical: "",
        hygiene: true,
        icd10: "",
    },
    Code {
        num: 9,
        code: "D2140",
        descript: "amalgam - one surface, primary or permanent",
        abbr: "A1",
        category: 32,
        area: 1,
        fee: 135.0,
        medical: "",
        hygiene: false,
        icd10: "K02.52",
    },
    Code {
        num: 10,
        code: "D2150",
        descript: "amalgam - two surfaces, primary or permanent",
        abbr: "A2",
        category: 32,
        area: 1,
        fee: 170.0,
        medical: "",
        hygiene: false,
        icd10: "K02.52",
    },
    Code {
        num: 11,
        code: "D2330",
        descript: "resin-based composite - one surface, anterior",
        abbr: "C1A",
        category: 32,
        area: 1,
        fee: 150.0,
        medical: "",
        hygiene: false,
        icd10: "K02.51",
    },
    Code {
        num: 12,
        code: "D2391",
        descript: "resin-based composite - one surface, posterior",
        abbr: "C1P",
        category: 32,
        area: 1,
        fee: 165.0,
        medical: "",
        hygiene: false,
        icd10: "K02.52",
    },
    Code {
        num: 13,
        code: "D2392",
        descript: "resin-based composite - two surfaces, posterior",
        abbr: "C2P",
        category: 32,
        area: 1,
        fee: 210.0,
        medical: "",
        hygiene: false,
        icd10: "K02.52",
    },
    Code {
        num: 14,
        code: "D2740",
        descript: "crown - porcelain/ceramic",
        abbr: "CrnPorc",
        category: 33,
        area: 2,
        fee: 1250.0,
        medical: "",
        hygiene: false,
        icd10: "K03.81",
    },
    Code {
        num: 15,
        code: "D2950",
        descript: "core buildup, including any pins when required",
        abbr: "BU",
        category: 33,
        area: 2,
        fee: 285.0,
        medical: "",
        hygiene: false,
        icd10: "K03.81",
    },
    Code {
        num: 16,
        code: "D3330",
        descript: "endodontic therapy, molar tooth (excluding final restoration)",
        abbr: "RCTMol",
        category: 34,
        area: 2,
        fee: 1150.0,
        medical: "",
        hygiene: false,
        icd10: "K04.01",
    },
    Code {
        num: 17,
        code: "D4341",
        descript: "periodontal scaling and root planing - four or more teeth per quadrant",
        abbr: "SRP4+",
        category: 35,
        area: 4,
        fee: 260.0,
        medical: "",
        hygiene: true,
        icd10: "K05.321",
    },
    Code {
        num: 18,
        code: "D4910",
        descript: "periodontal maintenance",
        abbr: "PMaint",
        category: 35,
        area: 3,
        fee: 155.0,
        medical: "",
        hygiene: true,
        icd10: "K05.321",
    },
    Code {
        num: 19,
        code: "D7140",
        descript: "extraction, erupted tooth or exposed root (elevation and/or forceps removal)",
        abbr: "Ext",
        category: 36,
        area: 2,
        fee: 210.0,
        medical: "",
        hygiene: false,
        icd10: "K04.7",
    },
    Code {
        num: 20,
        code: "D7210",
        descript: "extraction, erupted tooth requiring removal of bone and/or sectioning of tooth",
        abbr: "SurgExt",
        category: 36,
        area: 2,
        fee: 375.0,
        medical: "",
        hygiene: false,
        icd10: "K04.7",
    },
];

fn code(num: i64) -> &'static Code {
    CODES.iter().find(|c| c.num == num).expect("known code")
}

/// Visit templates: procedure codes and a Pattern (X provider time, / assistant time).
const VISITS: &[(&[i64], &str, bool)] = &[
    (&[1, 4, 6], "//XXXX//", true),
    (&[1, 6], "/XXXX//", true),
    (&[18, 1], "//XXXXXX//", true),
    (&[2, 3, 6], "//XXXXXXXX//", true),
    (&[2, 5, 6], "//XXXXXX//", true),
    (&[12], "/XXXX/", false),
    (&[13, 9], "/XXXXXX/", false),
    (&[10], "/XXXX/", false),
    (&[11], "/XXX/", false),
    (&[15, 14], "//XXXXXXXXXX//", false),
    (&[16], "/XXXXXXXXXXXX/", false),
    (&[17, 17], "//XXXXXXXXXX//", true),
    (&[19], "/XXXX/", false),
    (&[20], "//XXXXXX//", false),
];
const CHILD_VISIT: (&[i64], &str, bool) = (&[1, 7, 8], "/XXXX/", true);

const POSTERIOR_TEETH: &[&str] = &[
    "2", "3", "4", "5", "12", "13", "14", "15", "18", "19", "20", "29", "30", "31",
];
const ANTERIOR_TEETH: &[&str] = &[
    "6", "7", "8", "9", "10", "11", "22", "23", "24", "25", "26", "27",
];
const PRIMARY_TEETH: &[&str] = &["A", "B", "I", "J", "K", "L", "S", "T"];
const POSTERIOR_SURFACES: &[&str] = &["O", "MO", "DO", "MOD", "B", "L", "OL"];
const ANTERIOR_SURFACES: &[&str] = &["M", "D", "F", "L", "I", "MF"];
const QUADRANTS: &[&str] = &["UR", "UL", "LR", "LL"];

const NICKNAMES: &[(&str, &str)] = &[
    ("Elizabeth", "Liz"),
    ("Patricia", "Pat"),
    ("Jennifer", "Jen"),
    ("Barbara", "Barb"),
    ("Susan", "Sue"),
    ("Robert", "Bob"),
    ("William", "Bill"),
    ("James", "Jim"),
    ("Michael", "Mike"),
    ("Christopher", "Chris"),
    ("Richard", "Rick"),
    ("Joseph", "Joe"),
    ("Daniel", "Dan"),
    ("Anthony", "Tony"),
];
/// City, state, ZIP, county.
const PLACES: &[(&str, &str, &str, &str)] = &[
    ("Portland", "OR", "97202", "Multnomah"),
    ("Portland", "OR", "97214", "Multnomah"),
    ("Portland", "OR", "97217", "Multnomah"),
    ("Beaverton", "OR", "97005", "Washington"),
    ("Gresham", "OR", "97030", "Multnomah"),
    ("Vancouver", "WA", "98661", "Clark"),
    ("Lake Oswego", "OR", "97034", "Clackamas"),
];
const LANGUAGES: &[&str] = &[
    "eng", "eng", "eng", "eng", "eng", "eng", "eng", "eng", "eng", "eng", "eng", "eng", "", "", "",
    "spa", "spa", "vie", "rus", "Tahitian",
];

/// Dental plans a subscriber may hold: PlanNum, SubscriberID prefix.
const DENTAL_PLANS: &[(i64, &str)] = &[
    (1, "DDO"),
    (1, "DDO"),
    (2, "DDO"),
    (3, "MET"),
    (3, "MET"),
    (4, "CIG"),
    (5, "GRD"),
    (6, "OHP"),
];
/// Estimate claimprocs get their own key range, away from claim lines (ClaimNum * 10 + line).
const ESTIMATE_BASE: i64 = 1_000_000_000_000;
/// The medical plan some dental patients also carry (oral appliances, pano for sleep studies).
const MEDICAL_PLAN: i64 = 7;

/// A subscription (inssub) a patient holds as subscriber.
#[derive(Clone, Copy)]
struct Subscription {
    ins_sub: i64,
    plan: i64,
    subscriber_id: u64,
    prefix: &'static str,
    effective: Option<NaiveDate>,
    term: Option<NaiveDate>,
}

/// The primary dental subscription `pid` holds, if any. Its own generator, so that a dependent can
/// know the subscriber's plan without generating the subscriber.
fn own_subscription(pid: i64) -> Option<Subscription> {
    let mut rng = Rng::new(0x0D5B_0000 + pid as u64);
    if !rng.chance(70) {
        return None;
    }
    let (plan, prefix) = DENTAL_PLANS[rng.below(DENTAL_PLANS.len() as u64) as usize];
    let effective = match rng.below(10) {
        0 => None,
        _ => Some(day(-2500 + rng.below(2000) as i64)),
    };
    // A few ended subscriptions the patient still lists (DateTerm in the past).
    let term = effective
        .filter(|_| rng.chance(8))
        .map(|start| start + Duration::days(365 + rng.below(700) as i64));
    Some(Subscription {
        ins_sub: pid * 10 + 1,
        plan,
        subscriber_id: rng.below(100_000_000),
        prefix,
        effective,
        term,
    })
}

/// One of a patient's insurances (a patplan row), in ordinal order: the subscription, its plan,
/// the Relat of the patient to the subscriber, and whether the plan is medical.
#[derive(Clone, Copy)]
struct Coverage {
    ins_sub: i64,
    plan: i64,
    relationship: i64,
    medical: bool,
}

/// Creates the Open Dental tables and fills them with `patients` synthetic patients.
pub async fn seed_opendental(writer: &FixtureWriter, patients: usize) -> Result<Counts, DbError> {
    writer
        .execute_script(OPENDENTAL_SCHEMA, DialectKind::Mysql)
        .await?;
    seed_reference_tables(writer).await?;
    let mut counts = Counts::default();
    for pids in patient_blocks(patients, 2_000) {
        seed_patient_block(writer, *pids.start(), *pids.end(), &mut counts).await?;
    }
    Ok(counts)
}

/// One provider row.
struct Provider {
    num: i64,
    abbr: &'static str,
    last: &'static str,
    first: &'static str,
    middle: &'static str,
    suffix: &'static str,
    /// definition.DefNum of category 35 (ProviderSpecialties), 0 for none.
    specialty: i64,
    hygienist: bool,
    hidden: bool,
    /// IsNotPerson: a billing entity.
    group: bool,
    /// ProvStatus 1 (Deleted).
    deleted: bool,
    npi: bool,
    taxonomy: &'static str,
    preferred: &'static str,
}

const fn provider(
    num: i64,
    abbr: &'static str,
    last: &'static str,
    first: &'static str,
) -> Provider {
    Provider {
        num,
        abbr,
        last,
        first,
        middle: "",
        suffix: "DDS",
        specialty: 20,
        hygienist: false,
        hidden: false,
        group: false,
        deleted: false,
        npi: true,
        taxonomy: "",
        preferred: "",
    }
}

const PROVIDERS: &[Provider] = &[
    Provider {
        middle: "A",
        ..provider(1, "DOC1", "Okafor", "Sarah")
    },
    Provider {
        suffix: "DMD",
        preferred: "Marty",
        ..provider(2, "DOC2", "Reyes", "Martin")
    },
    Provider {
        middle: "J",
        specialty: 22,
        taxonomy: "1223P0221X",
        ..provider(3, "PEDO", "Lindqvist", "Hannah")
    },
    // A retired oral surgeon: hidden, with a termination date.
    Provider {
        suffix: "DDS, MD",
        specialty: 24,
        hidden: true,
        taxonomy: "1223S0112X",
        ..provider(4, "OS", "Vance", "Peter")
    },
    Provider {
        suffix: "RDH",
        specialty: 21,
        hygienist: true,
        taxonomy: "124Q00000X",
        ..provider(5, "HYG1", "Morales", "Jenna")
    },
    // Hygienists often have no NPI in Open Dental.
    Provider {
        suffix: "RDH",
        specialty: 21,
        hygienist: true,
        npi: false,
        ..provider(6, "HYG2", "Becker", "Tom")
    },
    // The group the practice bills under: a provider row that is not a person.
    Provider {
        suffix: "",
        specialty: 0,
        group: true,
        ..provider(GROUP_PROVIDER, "LDG", "Lakeside Dental Group LLC", "")
    },
    // A deleted provider (ProvStatus 1), still the primary provider of a few charts.
    Provider {
        hidden: true,
        deleted: true,
        ..provider(8, "DOC0", "Adeyemi", "Ruth")
    },
    // A placeholder a data conversion left behind: a person row with blank names.
    Provider {
        hidden: true,
        npi: false,
        ..provider(9, "CONV", "", " ")
    },
];

/// A fixed edit time for reference rows, so that their timestamps do not take the seeding time.
fn reference_stamp() -> Value {
    datetime(base_time() - Duration::days(120) + Duration::hours(9))
}

async fn seed_reference_tables(writer: &FixtureWriter) -> Result<(), DbError> {
    let mut definitions = Rows::new("definition");
    let defs: &[(i64, i64, &str, i64)] = &[
        (1, DEF_APPT_CONFIRMED, "Not Called", 0),
        (2, DEF_APPT_CONFIRMED, "Unconfirmed", 0),
        (3, DEF_APPT_CONFIRMED, "Confirmed", 0),
        (4, DEF_APPT_CONFIRMED, "Left Msg", 0),
        (5, DEF_APPT_CONFIRMED, "Arrived", 0),
        (10, DEF_BILLING_TYPES, "Standard Account", 0),
        (11, DEF_BILLING_TYPES, "Insurance Only", 0),
        (20, DEF_PROVIDER_SPECIALTIES, "General", 0),
        (21, DEF_PROVIDER_SPECIALTIES, "Hygienist", 0),
        (22, DEF_PROVIDER_SPECIALTIES, "Pediatric Dentistry", 0),
        (23, DEF_PROVIDER_SPECIALTIES, "Orthodontics", 1),
        (24, DEF_PROVIDER_SPECIALTIES, "Oral Surgery", 0),
        (30, DEF_PROC_CODE_CATS, "Exams & Xrays", 0),
        (31, DEF_PROC_CODE_CATS, "Cleanings", 0),
        (32, DEF_PROC_CODE_CATS, "Fillings", 0),
        (33, DEF_PROC_CODE_CATS, "Crowns", 0),
        (34, DEF_PROC_CODE_CATS, "Endo", 0),
        (35, DEF_PROC_CODE_CATS, "Perio", 0),
        (36, DEF_PROC_CODE_CATS, "Oral Surgery", 0),
        (40, DEF_RECALL_UNSCHED, "Patient will call", 0),
        (41, DEF_RECALL_UNSCHED, "Left message", 0),
    ];
    for (order, (num, category, name, hidden)) in defs.iter().enumerate() {
        definitions.push(vec![
            ("DefNum", int(*num)),
            ("Category", int(*category)),
            ("ItemOrder", int(order as i64)),
            ("ItemName", text(name)),
            ("ItemValue", text("")),
            ("ItemColor", int(-16_777_216)),
            ("IsHidden", int(*hidden)),
        ]);
    }
    definitions.write(writer).await?;

    let mut clinics = Rows::new("clinic");
    #[allow(clippy::type_complexity)]
    let clinic_rows: &[(
        i64,
        &str,
        &str,
        &str,
        &str,
        &str,
        &str,
        &str,
        i64,
        i64,
        i64,
        i64,
    )] = &[
        (
            1,
            "Lakeside Dental - Main Street",
            "MAIN",
            "412 SW Main St",
            "Suite 200",
            "97204",
            "5035550140",
            "5035550141",
            0,
            1,
            0,
            0,
        ),
        (
            2,
            "Lakeside Dental - Hawthorne",
            "HAWT",
            "3120 SE Hawthorne Blvd",
            "",
            "97214",
            "5035550180",
            "",
            0,
            2,
            7201,
            0,
        ),
        (
            3,
            "Lakeside Mobile Unit",
            "MOBL",
            "1 N Center Ct",
            "",
            "97227",
            "5035550190",
            "",
            7,
            3,
            0,
            1,
        ),
    ];
    for (num, name, abbr, address, address2, zip, phone, fax, pos, prov, external, hidden) in
        clinic_rows
    {
        let billing = *num == 2;
        clinics.push(vec![
            ("ClinicNum", int(*num)),
            ("Description", text(name)),
            ("Address", text(address)),
            ("Address2", text(address2)),
            ("City", text("Portland")),
            ("State", text("OR")),
            ("Zip", text(zip)),
            (
                "BillingAddress",
                text(if billing { "PO Box 4410" } else { "" }),
            ),
            ("BillingAddress2", text("")),
            ("BillingCity", text(if billing { "Portland" } else { "" })),
            ("BillingState", text(if billing { "OR" } else { "" })),
            ("BillingZip", text(if billing { "97208" } else { "" })),
            ("Phone", text(phone)),
            ("DefaultPlaceService", int(*pos)),
            ("InsBillingProv", int(GROUP_PROVIDER)),
            ("Fax", text(fax)),
            ("DefaultProv", int(*prov)),
            ("ItemOrder", int(*num - 1)),
            ("Abbr", text(abbr)),
            ("IsHidden", int(*hidden)),
            ("ExternalID", int(*external)),
        ]);
    }
    clinics.write(writer).await?;

    // The practice itself (Open Dental's Setup > Practice), as preference rows; the PrefNums are
    // spread out as in a real database, where hundreds of other preferences sit between them.
    let mut preferences = Rows::new("preference");
    let practice: &[(i64, &str, &str)] = &[
        (87, "PracticeTitle", "Willamette Family Dental"),
        (88, "PracticeAddress", "1450 NE Broadway St"),
        (89, "PracticeAddress2", "Suite 210"),
        (90, "PracticeCity", "Portland"),
        (91, "PracticeST", "OR"),
        (92, "PracticeZip", "97232"),
        (93, "PracticePhone", "5035550142"),
        (94, "PracticeFax", ""),
        (311, "PracticeDefaultProv", "1"),
        (412, "TimeCardOvertimeFirstDayOfWeek", "0"),
    ];
    for (num, name, value) in practice {
        preferences.push(vec![
            ("PrefNum", int(*num)),
            ("PrefName", text(name)),
            ("ValueString", text(value)),
            ("Comments", Value::Null),
        ]);
    }
    preferences.write(writer).await?;

    let mut operatories = Rows::new("operatory");
    let ops: &[(i64, &str, &str, i64, i64, i64, i64)] = &[
        (1, "Op 1", "M-OP1", 1, 0, 1, 0),
        (2, "Op 2", "M-OP2", 1, 0, 2, 0),
        (3, "Hyg 1", "M-HYG", 1, 1, 0, 0),
        (4, "Op 1", "H-OP1", 2, 0, 3, 0),
        (5, "Hyg 1", "H-HYG", 2, 1, 0, 0),
        (6, "Op 3 (old)", "M-OP3", 1, 0, 0, 1),
        (7, "Mobile chair", "MOB1", 3, 0, 0, 1),
    ];
    for (num, name, abbrev, clinic, hygiene, dentist, hidden) in ops {
        operatories.push(vec![
            ("OperatoryNum", int(*num)),
            ("OpName", text(name)),
            ("Abbrev", text(abbrev)),
            ("ItemOrder", int(*num - 1)),
            ("IsHidden", int(*hidden)),
            ("ProvDentist", int(*dentist)),
            ("ProvHygienist", int(if *hygiene == 1 { 5 } else { 0 })),
            ("IsHygiene", int(*hygiene)),
            ("ClinicNum", int(*clinic)),
            ("DateTStamp", reference_stamp()),
        ]);
    }
    operatories.write(writer).await?;

    let mut providers = Rows::new("provider");
    for prov in PROVIDERS {
        let person = !prov.group;
        let licensed = person && !prov.hygienist;
        providers.push(vec![
            ("ProvNum", int(prov.num)),
            ("Abbr", text(prov.abbr)),
            ("ItemOrder", int(prov.num - 1)),
            ("LName", text(prov.last)),
            ("FName", text(prov.first)),
            ("MI", text(prov.middle)),
            ("Suffix", text(prov.suffix)),
            ("FeeSched", int(1)),
            ("Specialty", int(prov.specialty)),
            (
                "SSN",
                text(&if person {
                    format!("{:09}", 540_000_000 + prov.num * 1_234_567)
                } else {
                    "931234567".to_owned() // the group's TIN (UsingTIN)
                }),
            ),
            (
                "StateLicense",
                text(&if licensed {
                    format!("D{}", 7000 + prov.num * 13)
                } else {
                    String::new()
                }),
            ),
            ("IsSecondary", int(i64::from(prov.hygienist))),
            ("ProvColor", int(-16_711_936 + prov.num)),
            ("IsHidden", int(i64::from(prov.hidden))),
            ("UsingTIN", int(i64::from(prov.group))),
            ("SigOnFile", int(1)),
            (
                "NationalProvID",
                text(&if !prov.npi {
                    String::new()
                } else if prov.group {
                    npi(234_567_890)
                } else {
                    npi(123_450_000 + prov.num as u64 * 7_919)
                }),
            ),
            ("DateTStamp", reference_stamp()),
            ("TaxonomyCodeOverride", text(prov.taxonomy)),
            ("IsNotPerson", int(i64::from(prov.group))),
            ("StateWhereLicensed", text(if licensed { "OR" } else { "" })),
            ("ProvStatus", int(i64::from(prov.deleted))),
            (
                "Birthdate",
                if person && prov.npi {
                    date(
                        NaiveDate::from_ymd_opt(1960 + prov.num as i32 * 3, 3, 1 + prov.num as u32)
                            .expect("valid"),
                    )
                } else {
                    no_date()
                },
            ),
            (
                "DateTerm",
                if prov.hidden {
                    date(day(-400))
                } else {
                    no_date()
                },
            ),
            ("PreferredName", text(prov.preferred)),
        ]);
    }
    providers.write(writer).await?;

    let mut codes = Rows::new("procedurecode");
    for c in CODES {
        codes.push(vec![
            ("CodeNum", int(c.num)),
            ("ProcCode", text(c.code)),
            ("Descript", text(c.descript)),
            ("AbbrDesc", text(c.abbr)),
            ("ProcTime", text("/X/")),
            ("ProcCat", int(c.category)),
            ("TreatArea", int(c.area)),
            ("IsProsth", int(i64::from(c.num == 14))),
            ("DefaultNote", text("")),
            ("IsHygiene", int(i64::from(c.hygiene))),
            ("MedicalCode", text(c.medical)),
            ("DateTStamp", reference_stamp()),
            ("DiagnosticCodes", text(c.icd10)),
        ]);
    }
    codes.write(writer).await?;

    let mut carriers = Rows::new("carrier");
    #[allow(clippy::type_complexity)]
    let carrier_rows: &[(i64, &str, &str, &str, &str, &str, &str, &str, i64)] = &[
        (
            1,
            "Delta Dental of Oregon",
            "601 SW 2nd Ave",
            "Portland",
            "OR",
            "97204",
            "CDOR1",
            "93-0438755",
            0,
        ),
        (
            2,
            "MetLife Dental",
            "PO Box 981282",
            "El Paso",
            "TX",
            "79998",
            "65978",
            "",
            0,
        ),
        (
            3,
            "Cigna Dental",
            "PO Box 188037",
            "Chattanooga",
            "TN",
            "37422",
            "62308",
            "",
            0,
        ),
        (
            4,
            "Guardian Life",
            "PO Box 981587",
            "El Paso",
            "TX",
            "79998",
            "64246",
            "",
            0,
        ),
        (
            5,
            "Oregon Health Plan Dental",
            "500 Summer St NE",
            "Salem",
            "OR",
            "97301",
            "ORDHS",
            "",
            0,
        ),
        (6, "Old Union Dental Trust", "", "", "", "", "", "", 1),
    ];
    for (num, name, address, city, state, zip, elect, tin, hidden) in carrier_rows {
        carriers.push(vec![
            ("CarrierNum", int(*num)),
            ("CarrierName", text(name)),
            ("Address", text(address)),
            ("Address2", text("")),
            ("City", text(city)),
            ("State", text(state)),
            ("Zip", text(zip)),
            (
                "Phone",
                text(&if address.is_empty() {
                    String::new()
                } else {
                    format!("(800)555-01{num:02}")
                }),
            ),
            ("ElectID", text(elect)),
            ("NoSendElect", int(*hidden)),
            ("IsHidden", int(*hidden)),
            ("SecDateEntry", date(day(-3000))),
            ("SecDateTEdit", reference_stamp()),
            ("TIN", text(tin)),
        ]);
    }
    carriers.write(writer).await?;

    let mut plans = Rows::new("insplan");
    // PlanNum, carrier, group name, group number, plan type, SOP code, medical, hidden.
    #[allow(clippy::type_complexity)]
    let plan_rows: &[(i64, i64, &str, &str, &str, &str, i64, i64)] = &[
        (1, 1, "Acme Manufacturing", "100234", "p", "561", 0, 0),
        (2, 1, "Portland Public Schools", "PPS-9001", "", "", 0, 0),
        (3, 2, "Riverbend Tech", "5502211", "p", "561", 0, 0),
        (4, 3, "", "", "c", "511", 0, 0),
        (5, 4, "Columbia Foods", "G-77810", "f", "", 0, 0),
        (6, 5, "", "", "", "2", 0, 0),
        (7, 3, "Cascade Health Partners", "CHP-440", "", "512", 1, 0),
        (8, 6, "Defunct Corp", "X-1", "", "", 0, 1),
    ];
    for (num, carrier, group, group_num, plan_type, sop, medical, hidden) in plan_rows {
        plans.push(vec![
            ("PlanNum", int(*num)),
            ("GroupName", text(group)),
            ("GroupNum", text(group_num)),
            ("PlanNote", text("")),
            ("FeeSched", int(1)),
            ("PlanType", text(plan_type)),
            ("ClaimFormNum", int(1)),
            ("CarrierNum", int(*carrier)),
            ("IsMedical", int(*medical)),
            ("IsHidden", int(*hidden)),
            ("MonthRenew", int(if *num == 2 { 7 } else { 0 })),
            ("SopCode", text(sop)),
            ("SecDateEntry", date(day(-2800))),
            ("SecDateTEdit", reference_stamp()),
        ]);
    }
    plans.write(writer).await?;
    Ok(())
}

struct Block {
    patients: Rows,
    races: Rows,
    appointments: Rows,
    procedures: Rows,
    claims: Rows,
    claimprocs: Rows,
    vitals: Rows,
    labs: Rows,
    lab_results: Rows,
    lab_notes: Rows,
    subscriptions: Rows,
    patplans: Rows,
}

impl Block {
    fn new() -> Block {
        Block {
            patients: Rows::new("patient"),
            races: Rows::new("patientrace"),
            appointments: Rows::new("appointment"),
            procedures: Rows::new("procedurelog"),
            claims: Rows::new("claim"),
            claimprocs: Rows::new("claimproc"),
            vitals: Rows::new("vitalsign"),
            labs: Rows::new("ehrlab"),
            lab_results: Rows::new("ehrlabresult"),
            lab_notes: Rows::new("ehrlabnote"),
            subscriptions: Rows::new("inssub"),
            patplans: Rows::new("patplan"),
        }
    }
}

async fn seed_patient_block(
    writer: &FixtureWriter,
    first: i64,
    last: i64,
    counts: &mut Counts,
) -> Result<(), DbError> {
    let mut block = Block::new();
    for pid in first..=last {
        generate_patient(pid, &mut block);
    }
    counts.patients += block.patients.len();
    counts.appointments += block.appointments.len();
    counts.vitals += block.vitals.len();
    counts.lab_results += block.lab_results.len();
    counts.coverages += block.patplans.len();
    counts.claims += block.claims.len();
    for rows in [
        &block.patients,
        &block.subscriptions,
        &block.patplans,
        &block.races,
        &block.appointments,
        &block.procedures,
        &block.claims,
        &block.claimprocs,
        &block.vitals,
        &block.labs,
        &block.lab_results,
        &block.lab_notes,
    ] {
        rows.write(writer).await?;
    }
    Ok(())
}

fn phone(rng: &mut Rng) -> String {
    format!(
        "({}){:03}-{:04}",
        ["503", "971", "360"][rng.below(3) as usize],
        555,
        100 + rng.below(9_900)
    )
}

/// The patient's patientrace rows: CDC race codes (sometimes two), an ethnicity, "declined to
/// specify" for a few, nothing for others. A generator of its own, so that the other columns keep
/// their values.
fn generate_races(pid: i64, block: &mut Block) {
    const RACES: &[&str] = &[
        "2106-3", "2106-3", "2106-3", "2054-5", "2028-9", "1002-5", "2076-8",
    ];
    let mut rng = Rng::new(0x0D5A_CE00 ^ (pid as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut codes: Vec<&str> = Vec::new();
    match rng.below(20) {
        0 | 1 => {}
        2 => codes.extend(["ASKU-RACE", "ASKU-ETHNICITY"]),
        _ => {
            codes.push(rng.pick(RACES));
            if rng.chance(10) {
                let second = rng.pick(RACES);
                if !codes.contains(&second) {
                    codes.push(second);
                }
            }
            if rng.chance(85) {
                codes.push(if rng.chance(18) { "2135-2" } else { "2186-5" });
            }
        }
    }
    for (k, code) in codes.into_iter().enumerate() {
        block.races.push(vec![
            ("PatientRaceNum", int(pid * 10 + k as i64)),
            ("PatNum", int(pid)),
            ("Race", int(0)),
            ("CdcrecCode", text(code)),
        ]);
    }
}

fn set(row: &mut [(&str, Value)], column: &str, value: Value) {
    row.iter_mut()
        .find(|(name, _)| *name == column)
        .unwrap_or_else(|| panic!("no column {column}"))
        .1 = value;
}

/// The data-quality quirks `portico audit` must find, one patient in `QUIRK_PERIOD` each, as the
/// OpenEMR generator plants them (`super::plant_patient_quirks`).
fn plant_patient_quirks(pid: i64, row: &mut [(&str, Value)]) {
    match pid % QUIRK_PERIOD {
        13 => {
            for column in ["LName", "FName", "MiddleI", "Preferred"] {
                set(row, column, text(""));
            }
        }
        29 => set(row, "HmPhone", text("call mom")),
        41 => set(row, "Email", text("none")),
        53 => set(row, "Zip", text("0")),
        67 => set(
            row,
            "Birthdate",
            date(NaiveDate::from_ymd_opt(2099, 3, 1).expect("valid")),
        ),
        79 | 80 => {
            set(row, "FName", text("Avery"));
            set(row, "LName", text("Duplicate"));
            set(
                row,
                "Birthdate",
                date(
                    NaiveDate::from_ymd_opt(1961, 1, 1).expect("valid")
                        + Duration::days(pid / QUIRK_PERIOD),
                ),
            );
        }
        _ => {}
    }
}

fn generate_patient(pid: i64, block: &mut Block) {
    generate_races(pid, block);
    let mut rng = Rng::new(0x0DE7_0000 + pid as u64);
    // PatientStatus: 0 Patient, 1 NonPatient, 2 Inactive, 3 Archived, 4 Deleted, 5 Deceased,
    // 6 Prospective.
    let status = match rng.below(100) {
        0..=77 => 0,
        78..=80 => 1,
        81..=86 => 2,
        87..=89 => 3,
        90..=94 => 4,
        95..=96 => 5,
        _ => 6,
    };
    // PatientGender: 0 Male, 1 Female, 2 Unknown, 3 Other.
    let gender = match rng.below(100) {
        0..=1 => 2,
        2 => 3,
        3..=51 => 1,
        _ => 0,
    };
    let female = gender == 1 || (gender > 1 && rng.chance(50));
    let given = if female {
        rng.pick(GIVEN_FEMALE)
    } else {
        rng.pick(GIVEN_MALE)
    };
    let family = rng.pick(FAMILY);
    let middle = rng.pick(&["", "", "", "A", "J", "M", "R", "L"]);
    let preferred = match NICKNAMES.iter().find(|(name, _)| *name == given) {
        Some((_, nick)) if rng.chance(60) => *nick,
        _ if rng.chance(4) => "Sunny",
        _ => "",
    };
    let birth = NaiveDate::from_ymd_opt(1935, 1, 1).expect("valid")
        + Duration::days(rng.below(31_500) as i64);
    let age = (base_time().date() - birth).num_days() / 365;
    let unknown_birthdate = rng.chance(2);
    let (city, state, zip, county) = PLACES[rng.below(PLACES.len() as u64) as usize];
    let clinic = match rng.below(10) {
        0 => 0,
        1..=6 => 1,
        _ => 2,
    };
    let dentist = if age < 14 && rng.chance(70) {
        3
    } else if rng.chance(4) {
        8 // a deleted provider, still the primary provider of a few old charts
    } else {
        DENTISTS[rng.below(2) as usize]
    };
    let hygienist = if rng.chance(60) {
        HYGIENISTS[rng.below(2) as usize]
    } else {
        0
    };
    let first_visit = day(-2800 + rng.below(2700) as i64);
    let deceased = if status == 5 && rng.chance(60) {
        datetime(
            day(-(rng.below(900) as i64) - 30).and_time(
                NaiveTime::from_hms_opt(3 + rng.below(18) as u32, 5 * rng.below(12) as u32, 0)
                    .expect("valid"),
            ),
        )
    } else {
        no_datetime()
    };
    let email = if rng.chance(65) {
        format!(
            "{}.{}{pid}@example.com",
            fold(given),
            fold(family).replace(['\'', ' '], "")
        )
    } else {
        String::new()
    };
    let ssn = if rng.chance(70) {
        format!(
            "{:03}{:02}{:04}",
            100 + rng.below(650),
            1 + rng.below(98),
            1 + rng.below(9_998)
        )
    } else {
        String::new()
    };
    let stamp = base_time() + Duration::minutes((pid * 37) % 200_000);
    let mut row = vec![
        ("PatNum", int(pid)),
        ("LName", text(family)),
        ("FName", text(given)),
        ("MiddleI", text(middle)),
        ("Preferred", text(preferred)),
        ("PatStatus", int(status)),
        ("Gender", int(gender)),
        (
            "Position",
            int(if age < 18 { 2 } else { rng.below(5) as i64 }),
        ),
        (
            "Birthdate",
            // Besides Open Dental's own 0001-01-01, rows imported from older systems carry
            // MySQL partial dates: the year only, or the year and month.
            match pid % 61 {
                _ if unknown_birthdate => no_date(),
                7 => text(&format!("{}-00-00", birth.year())),
                19 => text(&format!("{}-{:02}-00", birth.year(), birth.month())),
                _ => date(birth),
            },
        ),
        ("SSN", text(&ssn)),
        (
            "Address",
            text(&format!("{} {}", 100 + rng.below(9_800), rng.pick(STREETS))),
        ),
        (
            "Address2",
            text(&if rng.chance(12) {
                format!("Apt {}", 1 + rng.below(300))
            } else {
                String::new()
            }),
        ),
        ("City", text(city)),
        ("State", text(state)),
        ("Zip", text(zip)),
        (
            "HmPhone",
            text(&if rng.chance(55) {
                phone(&mut rng)
            } else {
                String::new()
            }),
        ),
        (
            "WkPhone",
            text(&if rng.chance(20) {
                phone(&mut rng)
            } else {
                String::new()
            }),
        ),
        (
            "WirelessPhone",
            text(&if rng.chance(75) {
                phone(&mut rng)
            } else {
                String::new()
            }),
        ),
        ("Guarantor", int(pid)),
        ("CreditType", text(rng.pick(&["", "", "A", "B"]))),
        ("Email", text(&email)),
        (
            "Salutation",
            text(if preferred.is_empty() { "" } else { preferred }),
        ),
        ("EstBalance", float(rng.between(0.0, 300.0).floor())),
        ("PriProv", int(dentist)),
        ("SecProv", int(hygienist)),
        ("BillingType", int(10)),
        ("ImageFolder", text(&format!("{family}{given}{pid}"))),
        ("AddrNote", text("")),
        ("FamFinUrgNote", text("")),
        (
            "MedUrgNote",
            text(if rng.chance(5) { "Latex allergy" } else { "" }),
        ),
        (
            "ChartNumber",
            text(&if rng.chance(40) {
                format!("C{pid:05}")
            } else {
                String::new()
            }),
        ),
        (
            "MedicaidID",
            text(&if rng.chance(6) {
                format!("OR{:08}", rng.below(100_000_000))
            } else {
                String::new()
            }),
        ),
        ("County", text(county)),
        ("DateFirstVisit", date(first_visit)),
        ("ClinicNum", int(clinic)),
        ("Premed", int(i64::from(rng.chance(4)))),
        (
            "PreferConfirmMethod",
            int(rng.pick(&["0", "4", "5", "8"]).parse().expect("number")),
        ),
        (
            "PreferContactMethod",
            int(rng.pick(&["0", "2", "4", "5"]).parse().expect("number")),
        ),
        (
            "PreferRecallMethod",
            int(rng.pick(&["0", "2", "5", "7"]).parse().expect("number")),
        ),
        ("Language", text(rng.pick(LANGUAGES))),
        (
            "Title",
            text(if rng.chance(15) {
                if female { "Ms." } else { "Mr." }
            } else if rng.chance(2) {
                "Dr."
            } else {
                ""
            }),
        ),
        ("DateTStamp", datetime(stamp)),
        ("TxtMsgOk", int(rng.below(3) as i64)),
        (
            "SmokingSnoMed",
            text(rng.pick(&["", "", "266919005", "8517006", "449868002"])),
        ),
        ("Country", text(if rng.chance(3) { "USA" } else { "" })),
        ("DateTimeDeceased", deceased),
        ("SecUserNumEntry", int(1 + rng.below(4) as i64)),
        (
            "SecDateEntry",
            if rng.chance(5) {
                no_date() // rows older than the column
            } else {
                date(first_visit)
            },
        ),
    ];
    plant_patient_quirks(pid, &mut row);
    block.patients.push(row);

    let coverages = generate_coverage(pid, age, &mut rng, block);
    let visits = generate_appointments(pid, age, clinic, dentist, &coverages, &mut rng, block);
    // An appointment left behind by a patient record removed by hand: its PatNum names no one.
    if pid % QUIRK_PERIOD == 90 {
        block.appointments.push_copy(
            ("PatNum", &int(pid)),
            &[
                ("AptNum", int(pid * 20 + 19)),
                ("PatNum", int(pid + 9_000_000)),
                ("AptStatus", int(2)),
            ],
        );
    }
    generate_vitals(pid, age, &visits, &mut rng, block);
    generate_labs(pid, dentist, &mut rng, block);
}

fn subscription_row(pid: i64, sub: &Subscription, block: &mut Block) {
    block.subscriptions.push(vec![
        ("InsSubNum", int(sub.ins_sub)),
        ("PlanNum", int(sub.plan)),
        ("Subscriber", int(pid)),
        ("DateEffective", sub.effective.map_or_else(no_date, date)),
        ("DateTerm", sub.term.map_or_else(no_date, date)),
        ("ReleaseInfo", int(1)),
        ("AssignBen", int(1)),
        (
            "SubscriberID",
            text(&format!("{}{:08}", sub.prefix, sub.subscriber_id)),
        ),
        ("BenefitNotes", text("")),
        ("SubscNote", text("")),
        (
            "SecDateEntry",
            sub.effective.map_or_else(|| date(day(-3000)), date),
        ),
        (
            "SecDateTEdit",
            datetime(base_time() - Duration::days(30) + Duration::minutes(pid * 3)),
        ),
    ]);
}

/// Writes the patient's subscriptions and patplan rows; returns the coverages in ordinal order.
fn generate_coverage(pid: i64, age: i64, rng: &mut Rng, block: &mut Block) -> Vec<Coverage> {
    let mut coverages = Vec::new();
    // Every subscription a patient holds exists as an inssub row, used or not by the patient.
    let own = own_subscription(pid);
    if let Some(sub) = &own {
        subscription_row(pid, sub, block);
        coverages.push(Coverage {
            ins_sub: sub.ins_sub,
            plan: sub.plan,
            relationship: 0,
            medical: false,
        });
    }
    // Family members covered by the previous patient's subscription (child or spouse).
    if pid > 1
        && rng.chance(20)
        && let Some(head) = own_subscription(pid - 1)
    {
        coverages.push(Coverage {
            ins_sub: head.ins_sub,
            plan: head.plan,
            relationship: if age < 26 {
                2
            } else {
                rng.pick(&["1", "1", "7", "8"]).parse().expect("number")
            },
            medical: false,
        });
    }
    if own.is_some() && rng.chance(10) {
        let sub = Subscription {
            ins_sub: pid * 10 + 2,
            plan: [3, 5, 2][rng.below(3) as usize],
            subscriber_id: rng.below(100_000_000),
            prefix: "SEC",
            effective: Some(day(-1500 + rng.below(1000) as i64)),
            term: None,
        };
        subscription_row(pid, &sub, block);
        coverages.push(Coverage {
            ins_sub: sub.ins_sub,
            plan: sub.plan,
            relationship: 0,
            medical: false,
        });
    }
    if rng.chance(8) {
        let sub = Subscription {
            ins_sub: pid * 10 + 3,
            plan: MEDICAL_PLAN,
            subscriber_id: rng.below(100_000_000),
            prefix: "CHP",
            effective: Some(day(-900)),
            term: None,
        };
        subscription_row(pid, &sub, block);
        coverages.push(Coverage {
            ins_sub: sub.ins_sub,
            plan: sub.plan,
            relationship: 0,
            medical: true,
        });
    }
    for (index, coverage) in coverages.iter().enumerate() {
        let dependent = coverage.relationship != 0;
        block.patplans.push(vec![
            ("PatPlanNum", int(pid * 10 + index as i64)),
            ("PatNum", int(pid)),
            ("Ordinal", int(index as i64 + 1)),
            ("IsPending", int(i64::from(rng.chance(5)))),
            ("Relationship", int(coverage.relationship)),
            (
                "PatID",
                text(&if dependent && rng.chance(30) {
                    format!("D{pid:06}02")
                } else {
                    String::new()
                }),
            ),
            ("InsSubNum", int(coverage.ins_sub)),
            ("OrthoAutoFeeBilledOverride", float(-1.0)),
            ("OrthoAutoNextClaimDate", no_date()),
            (
                "SecDateTEntry",
                datetime(
                    day(-2000 + (pid % 900))
                        .and_hms_opt(10, 15, 0)
                        .expect("valid"),
                ),
            ),
            (
                "SecDateTEdit",
                datetime(
                    base_time() - Duration::days(20) + Duration::minutes(pid * 5 + index as i64),
                ),
            ),
        ]);
    }
    coverages
}

/// One visit's outcome, for the vitals that follow it.
struct Visit {
    date: NaiveDate,
    complete: bool,
}

#[allow(clippy::too_many_arguments)]
fn generate_appointments(
    pid: i64,
    age: i64,
    clinic: i64,
    dentist: i64,
    coverages: &[Coverage],
    rng: &mut Rng,
    block: &mut Block,
) -> Vec<Visit> {
    let mut visits = Vec::new();
    let count = 1 + rng.below(5) as i64;
    let dental: Vec<&Coverage> = coverages.iter().filter(|c| !c.medical).collect();
    let medical = coverages.iter().find(|c| c.medical);
    for index in 0..count + 1 {
        let apt = pid * 20 + index;
        let planned = index == count;
        if planned && !rng.chance(25) {
            continue;
        }
        let offset = -540 + rng.below(630) as i64;
        let when = day(offset).and_time(
            NaiveTime::from_hms_opt(7 + rng.below(10) as u32, 10 * rng.below(6) as u32, 0)
                .expect("valid"),
        );
        let future = offset > 0;
        // ApptStatus: 1 Scheduled, 2 Complete, 3 UnschedList, 4 ASAP (deprecated), 5 Broken,
        // 6 Planned, 7 PtNote, 8 PtNoteCompleted.
        let status = if planned {
            6
        } else if future {
            match rng.below(100) {
                0..=4 => 3,
                5..=6 => 7,
                _ => 1,
            }
        } else {
            match rng.below(100) {
                0..=9 => 5,
                10..=14 => 3,
                15..=16 => 1,
                17..=18 => 7,
                19 => 8,
                20 if pid % 7 == 0 => 4,
                _ => 2,
            }
        };
        let note_only = status == 7 || status == 8;
        let (codes, pattern, hygiene) = if note_only {
            (&[][..], "XX", false)
        } else if medical.is_some() && index == 0 {
            // A sleep-apnea work-up: the panoramic image goes to the medical plan.
            (&[2, 5, 6][..], "//XXXXXX//", true)
        } else if age < 13 && rng.chance(70) {
            CHILD_VISIT
        } else {
            VISITS[rng.below(VISITS.len() as u64) as usize]
        };
        let (op, hygienist) = match (clinic, hygiene) {
            (2, true) => (5, HYGIENISTS[rng.below(2) as usize]),
            (2, false) => (4, 0),
            (_, true) => (3, HYGIENISTS[rng.below(2) as usize]),
            (_, false) => (1 + rng.below(2) as i64, 0),
        };
        let provider = if hygiene && rng.chance(50) || dentist == 8 {
            DENTISTS[rng.below(2) as usize]
        } else {
            dentist
        };
        let complete = status == 2;
        let minutes = 5 * pattern.len() as i64;
        let seated = complete && rng.chance(70);
        let entered = when - Duration::days(14 + rng.below(45) as i64) + Duration::hours(2);
        let descript: Vec<&str> = codes.iter().map(|n| code(*n).abbr).collect();
        block.appointments.push(vec![
            ("AptNum", int(apt)),
            ("PatNum", int(pid)),
            ("AptStatus", int(status)),
            ("Pattern", text(pattern)),
            (
                "Confirmed",
                int(if complete { 5 } else { 1 + rng.below(4) as i64 }),
            ),
            ("TimeLocked", int(0)),
            ("Op", int(if planned { 0 } else { op })),
            (
                "Note",
                text(match rng.below(12) {
                    0 => "Pt prefers morning appointments.",
                    1 => "Premedicate: amoxicillin 2 g one hour before.",
                    2 if note_only => "Call pt about insurance card.",
                    _ => "",
                }),
            ),
            ("ProvNum", int(provider)),
            ("ProvHyg", int(hygienist)),
            (
                "AptDateTime",
                if planned {
                    no_datetime()
                } else {
                    datetime(when)
                },
            ),
            ("NextAptNum", int(0)),
            (
                "UnschedStatus",
                int(if status == 3 || planned { 40 } else { 0 }),
            ),
            ("IsNewPatient", int(i64::from(codes.contains(&2)))),
            ("ProcDescript", text(&descript.join(", "))),
            ("Assistant", int(0)),
            ("ClinicNum", int(clinic)),
            ("IsHygiene", int(i64::from(hygiene))),
            (
                "DateTStamp",
                datetime(if future {
                    entered
                } else {
                    when + Duration::hours(3)
                }),
            ),
            (
                "DateTimeArrived",
                if seated {
                    datetime(when - Duration::minutes(6))
                } else {
                    no_datetime()
                },
            ),
            (
                "DateTimeSeated",
                if seated {
                    datetime(when + Duration::minutes(4))
                } else {
                    no_datetime()
                },
            ),
            (
                "DateTimeDismissed",
                if seated {
                    datetime(when + Duration::minutes(minutes))
                } else {
                    no_datetime()
                },
            ),
            (
                "InsPlan1",
                int(if complete {
                    dental.first().map_or(0, |c| c.plan)
                } else {
                    0
                }),
            ),
            (
                "InsPlan2",
                int(if complete {
                    dental.get(1).map_or(0, |c| c.plan)
                } else {
                    0
                }),
            ),
            ("SecUserNumEntry", int(1 + rng.below(4) as i64)),
            ("SecDateTEntry", datetime(entered)),
            ("Priority", int(i64::from(status == 1 && rng.chance(6)))),
            ("ItemOrderPlanned", int(i64::from(planned))),
        ]);
        if !future && !planned && !note_only {
            visits.push(Visit {
                date: when.date(),
                complete,
            });
        }

        // Procedures: complete with a completed visit, treatment-planned otherwise.
        let mut lines = Vec::new();
        for (k, num) in codes.iter().enumerate() {
            let c = code(*num);
            let proc_num = apt * 10 + k as i64;
            let deleted = rng.chance(3);
            let (tooth, surface) = match c.area {
                1 if age < 12 => (
                    rng.pick(PRIMARY_TEETH).to_owned(),
                    rng.pick(POSTERIOR_SURFACES).to_owned(),
                ),
                1 if c.code == "D2330" => (
                    rng.pick(ANTERIOR_TEETH).to_owned(),
                    rng.pick(ANTERIOR_SURFACES).to_owned(),
                ),
                1 => (
                    rng.pick(POSTERIOR_TEETH).to_owned(),
                    rng.pick(POSTERIOR_SURFACES).to_owned(),
                ),
                2 => (rng.pick(POSTERIOR_TEETH).to_owned(), String::new()),
                4 => (String::new(), QUADRANTS[k % 4].to_owned()),
                _ => (String::new(), String::new()),
            };
            let proc_status = if deleted {
                6
            } else if complete {
                2
            } else {
                1
            };
            let fee = c.fee;
            let proc_date = if planned { day(-30) } else { when.date() };
            block.procedures.push(vec![
                ("ProcNum", int(proc_num)),
                ("PatNum", int(pid)),
                ("AptNum", int(if planned { 0 } else { apt })),
                ("ProcDate", date(proc_date)),
                ("ProcFee", float(fee)),
                ("Surf", text(&surface)),
                ("ToothNum", text(&tooth)),
                ("ProcStatus", int(proc_status)),
                (
                    "ProvNum",
                    int(if c.hygiene && hygienist > 0 {
                        hygienist
                    } else {
                        provider
                    }),
                ),
                ("PlannedAptNum", int(if planned { apt } else { 0 })),
                ("ClinicNum", int(clinic)),
                ("DiagnosticCode", text(c.icd10)),
                ("IsPrincDiag", int(i64::from(!c.icd10.is_empty()))),
                ("CodeNum", int(c.num)),
                ("UnitQty", int(1)),
                ("DateTP", date(proc_date - Duration::days(20))),
                (
                    "ProcTime",
                    Value::Time(if complete {
                        when.time()
                    } else {
                        NaiveTime::MIN
                    }),
                ),
                ("DateTStamp", datetime(when + Duration::hours(4))),
                ("IcdVersion", int(if c.icd10.is_empty() { 9 } else { 10 })),
                ("SecUserNumEntry", int(1)),
                ("SecDateEntry", datetime(entered)),
                (
                    "DateComplete",
                    if complete && !deleted {
                        date(when.date())
                    } else {
                        no_date()
                    },
                ),
            ]);
            if !deleted {
                lines.push((proc_num, c, fee, proc_date));
            }
        }
        if lines.is_empty() {
            continue;
        }
        let claim_base = apt * 4;
        let age_days = -offset;
        if complete && let Some(primary) = dental.first() {
            let secondary = dental.get(1).copied();
            let status = claim_status(age_days, rng);
            let claim = ClaimSpec {
                claim_num: claim_base,
                kind: "P",
                status,
                coverage: **primary,
                other: secondary.copied(),
                medical: false,
            };
            write_claim(pid, &claim, &lines, when, clinic, provider, rng, block);
            // The secondary claim waits for the primary's payment.
            if let Some(secondary) = secondary
                && status == "R"
            {
                let claim = ClaimSpec {
                    claim_num: claim_base + 1,
                    kind: "S",
                    status: if rng.chance(50) { "H" } else { "S" },
                    coverage: *secondary,
                    other: Some(**primary),
                    medical: false,
                };
                write_claim(pid, &claim, &lines, when, clinic, provider, rng, block);
            }
        }
        // Medical claims for panoramic images (sleep-apnea work-ups billed to medical insurance).
        if complete
            && let Some(medical) = medical
            && lines.iter().any(|(_, c, _, _)| !c.medical.is_empty())
        {
            let medical_lines: Vec<_> = lines
                .iter()
                .copied()
                .filter(|(_, c, _, _)| !c.medical.is_empty())
                .collect();
            let claim = ClaimSpec {
                claim_num: claim_base + 2,
                kind: "P",
                status: claim_status(age_days, rng),
                coverage: *medical,
                other: None,
                medical: true,
            };
            write_claim(
                pid,
                &claim,
                &medical_lines,
                when,
                clinic,
                provider,
                rng,
                block,
            );
        }
        // Preauthorizations for large treatment-planned work.
        if status == 1
            && lines.iter().any(|(_, c, _, _)| c.fee >= 1000.0)
            && let Some(primary) = dental.first()
        {
            let claim = ClaimSpec {
                claim_num: claim_base + 3,
                kind: "PreAuth",
                status: if rng.chance(50) { "R" } else { "S" },
                coverage: **primary,
                other: None,
                medical: false,
            };
            write_claim(pid, &claim, &lines, entered, clinic, provider, rng, block);
        }
        // Insurance estimates for treatment-planned procedures: claimproc rows that are not claims.
        if status == 1
            && let Some(primary) = dental.first()
        {
            for (k, (proc_num, c, fee, proc_date)) in lines.iter().enumerate() {
                block.claimprocs.push(claimproc_row(ClaimProcRow {
                    num: ESTIMATE_BASE + apt * 10 + k as i64,
                    proc_num: *proc_num,
                    claim_num: 0,
                    pid,
                    provider,
                    fee: *fee,
                    status: 6,
                    paid: 0.0,
                    estimate: fee * 0.8,
                    code: c.code,
                    date: *proc_date,
                    line: 0,
                    coverage: primary,
                    clinic,
                }));
            }
        }
    }
    visits
}

fn claim_status(age_days: i64, rng: &mut Rng) -> &'static str {
    match age_days {
        61.. => ["R", "R", "R", "R", "R", "R", "R", "S", "I", "W"][rng.below(10) as usize],
        15..=60 => ["S", "S", "S", "R", "R", "W", "I"][rng.below(7) as usize],
        _ => ["U", "U", "W", "S", "S"][rng.below(5) as usize],
    }
}

struct ClaimSpec {
    claim_num: i64,
    /// ClaimType: P, S, PreAuth.
    kind: &'static str,
    status: &'static str,
    coverage: Coverage,
    other: Option<Coverage>,
    medical: bool,
}

struct ClaimProcRow<'a> {
    num: i64,
    proc_num: i64,
    claim_num: i64,
    pid: i64,
    provider: i64,
    fee: f64,
    status: i64,
    paid: f64,
    estimate: f64,
    code: &'a str,
    date: NaiveDate,
    line: i64,
    coverage: &'a Coverage,
    clinic: i64,
}

fn claimproc_row(row: ClaimProcRow<'_>) -> Vec<(&'static str, Value)> {
    let received = row.status == 1 || row.status == 4;
    vec![
        ("ClaimProcNum", int(row.num)),
        ("ProcNum", int(row.proc_num)),
        ("ClaimNum", int(row.claim_num)),
        ("PatNum", int(row.pid)),
        ("ProvNum", int(row.provider)),
        ("FeeBilled", float(row.fee)),
        ("InsPayEst", float(row.estimate)),
        ("DedApplied", float(0.0)),
        ("Status", int(row.status)),
        ("InsPayAmt", float(row.paid)),
        (
            "Remarks",
            text(if received && row.paid == 0.0 {
                "Frequency limitation"
            } else {
                ""
            }),
        ),
        ("PlanNum", int(row.coverage.plan)),
        (
            "DateCP",
            if received {
                date(row.date + Duration::days(28))
            } else {
                no_date()
            },
        ),
        (
            "WriteOff",
            float(if received {
                (row.fee * 0.1).round()
            } else {
                0.0
            }),
        ),
        ("CodeSent", text(row.code)),
        ("AllowedOverride", float(-1.0)),
        ("Percentage", int(if row.status == 6 { 80 } else { -1 })),
        ("PercentOverride", int(-1)),
        ("CopayAmt", float(-1.0)),
        ("PaidOtherIns", float(-1.0)),
        ("BaseEst", float(row.estimate)),
        ("CopayOverride", float(-1.0)),
        ("ProcDate", date(row.date)),
        (
            "DateEntry",
            if received {
                date(row.date + Duration::days(28))
            } else {
                no_date()
            },
        ),
        ("LineNumber", int(row.line)),
        ("DedEst", float(-1.0)),
        ("DedEstOverride", float(-1.0)),
        ("InsEstTotal", float(row.estimate)),
        ("InsEstTotalOverride", float(-1.0)),
        ("PaidOtherInsOverride", float(-1.0)),
        ("WriteOffEst", float(-1.0)),
        ("WriteOffEstOverride", float(-1.0)),
        ("ClinicNum", int(row.clinic)),
        ("InsSubNum", int(row.coverage.ins_sub)),
        ("SecUserNumEntry", int(1)),
        ("SecDateEntry", date(row.date)),
        (
            "SecDateTEdit",
            datetime(row.date.and_hms_opt(17, 0, 0).expect("valid") + Duration::days(30)),
        ),
    ]
}

#[allow(clippy::too_many_arguments)]
fn write_claim(
    pid: i64,
    claim: &ClaimSpec,
    lines: &[(i64, &Code, f64, NaiveDate)],
    when: NaiveDateTime,
    clinic: i64,
    provider: i64,
    rng: &mut Rng,
    block: &mut Block,
) {
    let received = claim.status == "R";
    let preauth = claim.kind == "PreAuth";
    let service = when.date();
    let fee: f64 = lines.iter().map(|(_, _, fee, _)| fee).sum();
    let share = if claim.kind == "S" { 0.2 } else { 0.8 };
    let estimate = (fee * share * 100.0).round() / 100.0;
    let paid = if received && !preauth { estimate } else { 0.0 };
    // Some offices bill under the group's non-person provider.
    let billing = if rng.chance(20) {
        GROUP_PROVIDER
    } else {
        provider
    };
    let correction = match rng.below(50) {
        0 => 1,
        1 => 2,
        _ => 0,
    };
    let sent = service + Duration::days(rng.below(3) as i64);
    block.claims.push(vec![
        ("ClaimNum", int(claim.claim_num)),
        ("PatNum", int(pid)),
        ("DateService", date(service)),
        // Open Dental fills DateSent when the claim is created; it is "usually the date it was
        // created".
        ("DateSent", date(sent)),
        ("ClaimStatus", text(claim.status)),
        (
            "DateReceived",
            if received {
                date(service + Duration::days(28))
            } else {
                no_date()
            },
        ),
        ("PlanNum", int(claim.coverage.plan)),
        ("ProvTreat", int(provider)),
        ("ClaimFee", float(fee)),
        ("InsPayEst", float(estimate)),
        ("InsPayAmt", float(paid)),
        (
            "DedApplied",
            float(if received && rng.chance(20) {
                50.0
            } else {
                0.0
            }),
        ),
        (
            "PreAuthString",
            text(&if preauth && received {
                format!("PD{:07}", rng.below(10_000_000))
            } else {
                String::new()
            }),
        ),
        (
            "IsProsthesis",
            text(if lines.iter().any(|(_, c, _, _)| c.num == 14) {
                "I"
            } else {
                ""
            }),
        ),
        ("PriorDate", no_date()),
        (
            "ClaimNote",
            text(if rng.chance(5) {
                "Narrative and x-rays attached."
            } else {
                ""
            }),
        ),
        ("ClaimType", text(claim.kind)),
        ("ProvBill", int(billing)),
        ("PlaceService", int(0)),
        ("AccidentDate", no_date()),
        ("EmployRelated", int(0)),
        ("OrthoDate", no_date()),
        ("PatRelat", int(claim.coverage.relationship)),
        ("PlanNum2", int(claim.other.map_or(0, |c| c.plan))),
        ("PatRelat2", int(claim.other.map_or(0, |c| c.relationship))),
        (
            "WriteOff",
            float(if received { (fee * 0.1).round() } else { 0.0 }),
        ),
        ("Radiographs", int(0)),
        ("ClinicNum", int(clinic)),
        ("ClaimForm", int(1)),
        ("InsSubNum", int(claim.coverage.ins_sub)),
        ("InsSubNum2", int(claim.other.map_or(0, |c| c.ins_sub))),
        (
            "PriorAuthorizationNumber",
            text(&if !preauth && rng.chance(3) {
                format!("PA{:06}", rng.below(1_000_000))
            } else {
                String::new()
            }),
        ),
        ("MedType", int(i64::from(claim.medical))),
        ("DateResent", no_date()),
        ("CorrectionType", int(correction)),
        (
            "ClaimIdentifier",
            text(&format!("{pid}/{}", claim.claim_num % 1000)),
        ),
        (
            "OrigRefNum",
            text(&if correction > 0 {
                format!("{:012}", 100_000_000_000 + claim.claim_num)
            } else {
                String::new()
            }),
        ),
        ("SecUserNumEntry", int(1)),
        (
            "SecDateEntry",
            if rng.chance(3) {
                no_date() // claims older than the column
            } else {
                date(when.date())
            },
        ),
        (
            "SecDateTEdit",
            datetime(when + Duration::days(if received { 28 } else { 2 })),
        ),
        ("DateSentOrig", date(sent)),
        ("Narrative", text("")),
    ]);
    for (k, (proc_num, c, line_fee, proc_date)) in lines.iter().enumerate() {
        let code_sent = if claim.medical { c.medical } else { c.code };
        let line_estimate = (line_fee * share * 100.0).round() / 100.0;
        block.claimprocs.push(claimproc_row(ClaimProcRow {
            num: claim.claim_num * 10 + k as i64,
            proc_num: *proc_num,
            claim_num: claim.claim_num,
            pid,
            provider,
            fee: *line_fee,
            status: if preauth {
                2
            } else if received {
                1
            } else {
                0
            },
            paid: if received && !preauth {
                line_estimate
            } else {
                0.0
            },
            estimate: line_estimate,
            code: code_sent,
            date: *proc_date,
            line: k as i64 + 1,
            coverage: &claim.coverage,
            clinic,
        }));
    }
    // Rows that share the claim but are not lines: a supplemental payment on the first line, and
    // an insurance payment by total (ProcNum 0).
    if received && !preauth {
        let (proc_num, c, _, proc_date) = lines[0];
        if rng.chance(12) {
            block.claimprocs.push(claimproc_row(ClaimProcRow {
                num: claim.claim_num * 10 + 8,
                proc_num,
                claim_num: claim.claim_num,
                pid,
                provider,
                fee: 0.0,
                status: 4,
                paid: 12.5,
                estimate: 0.0,
                code: c.code,
                date: proc_date,
                line: 0,
                coverage: &claim.coverage,
                clinic,
            }));
        }
        if rng.chance(6) {
            block.claimprocs.push(claimproc_row(ClaimProcRow {
                num: claim.claim_num * 10 + 9,
                proc_num: 0,
                claim_num: claim.claim_num,
                pid,
                provider,
                fee: 0.0,
                status: 1,
                paid: 25.0,
                estimate: 0.0,
                code: "",
                date: proc_date,
                line: 0,
                coverage: &claim.coverage,
                clinic,
            }));
        }
    }
}

fn generate_vitals(pid: i64, age: i64, visits: &[Visit], rng: &mut Rng, block: &mut Block) {
    if !rng.chance(40) {
        return;
    }
    let child = age < 18;
    let count = 1 + rng.below(3) as i64;
    for index in 0..count {
        let taken = match visits.get(index as usize) {
            Some(visit) if visit.complete || rng.chance(50) => visit.date,
            _ => day(-(rng.below(700) as i64)),
        };
        let nothing = rng.chance(5);
        let recorded = |rng: &mut Rng, percent: u64| !nothing && rng.chance(percent);
        let bp = recorded(rng, 85);
        let measured = recorded(rng, if child { 80 } else { 35 });
        let (height, weight) = if measured {
            if child {
                (rng.between(40.0, 66.0), rng.between(40.0, 150.0))
            } else {
                (rng.between(58.0, 76.0), rng.between(100.0, 260.0))
            }
        } else {
            (0.0, 0.0)
        };
        block.vitals.push(vec![
            ("VitalsignNum", int(pid * 10 + index)),
            ("PatNum", int(pid)),
            ("Height", float((height * 10.0).round() / 10.0)),
            ("Weight", float((weight * 10.0).round() / 10.0)),
            (
                "BpSystolic",
                int(if bp { 100 + rng.below(60) as i64 } else { 0 }),
            ),
            (
                "BpDiastolic",
                int(if bp { 60 + rng.below(35) as i64 } else { 0 }),
            ),
            (
                "DateTaken",
                if rng.chance(3) {
                    no_date()
                } else {
                    date(taken)
                },
            ),
            ("HasFollowupPlan", int(0)),
            ("IsIneligible", int(i64::from(nothing))),
            (
                "Documentation",
                text(if nothing {
                    "Patient declined measurement."
                } else {
                    ""
                }),
            ),
            ("WeightCode", text("")),
            ("HeightExamCode", text(if measured { "8302-2" } else { "" })),
            (
                "WeightExamCode",
                text(if measured { "29463-7" } else { "" }),
            ),
            (
                "BMIExamCode",
                text(if measured && child { "59576-9" } else { "" }),
            ),
            (
                "BMIPercentile",
                int(if measured && child {
                    3 + rng.below(96) as i64
                } else {
                    0
                }),
            ),
            (
                "Pulse",
                int(if recorded(rng, 70) {
                    55 + rng.below(50) as i64
                } else {
                    0
                }),
            ),
        ]);
    }
}

/// One lab result template: LOINC, name, HL7 value type, unit, reference range, low, high.
const LAB_TESTS: &[(&str, &str, &str, &str, &str, f64, f64)] = &[
    (
        "4548-4",
        "Hemoglobin A1c/Hemoglobin.total in Blood",
        "NM",
        "%",
        "4.0-5.6",
        4.8,
        9.4,
    ),
    (
        "2345-7",
        "Glucose [Mass/volume] in Serum or Plasma",
        "NM",
        "mg/dL",
        "70-99",
        68.0,
        190.0,
    ),
    (
        "6301-6",
        "INR in Platelet poor plasma by Coagulation assay",
        "NM",
        "{INR}",
        "0.8-1.1",
        0.8,
        3.2,
    ),
    (
        "6463-4",
        "Bacteria identified in Specimen by Culture",
        "ST",
        "",
        "",
        0.0,
        0.0,
    ),
    (
        "78012-2",
        "Streptococcus pyogenes Ag [Presence] in Throat by Rapid immunoassay",
        "CWE",
        "",
        "",
        0.0,
        0.0,
    ),
    (
        "1988-5",
        "C reactive protein [Mass/volume] in Serum or Plasma",
        "SN",
        "mg/dL",
        "<0.5",
        0.0,
        0.0,
    ),
    (
        "5821-4",
        "Leukocytes [#/area] in Urine sediment by Microscopy high power field",
        "SN",
        "/[HPF]",
        "0-5",
        0.0,
        0.0,
    ),
];

fn generate_labs(pid: i64, dentist: i64, rng: &mut Rng, block: &mut Block) {
    if !rng.chance(10) {
        return;
    }
    let count = 1 + rng.below(2) as i64;
    for index in 0..count {
        let lab = pid * 10 + index;
        let collected = day(-(rng.below(600) as i64)).and_time(
            NaiveTime::from_hms_opt(8 + rng.below(8) as u32, 5 * rng.below(12) as u32, 0)
                .expect("valid"),
        );
        let reported = collected + Duration::hours(20 + rng.below(30) as i64);
        let provider_npi = npi(123_450_000 + dentist as u64 * 7_919);
        block.labs.push(vec![
            ("EhrLabNum", int(lab)),
            ("PatNum", int(pid)),
            ("OrderControlCode", text("RE")),
            ("PlacerOrderNum", text(&format!("OD{lab:08}"))),
            (
                "PlacerOrderUniversalID",
                text("2.16.840.1.113883.3.4337.1486"),
            ),
            ("PlacerOrderUniversalIDType", text("ISO")),
            (
                "FillerOrderNum",
                text(&if rng.chance(90) {
                    format!("LC{lab:09}")
                } else {
                    String::new()
                }),
            ),
            ("FillerOrderUniversalID", text("2.16.840.1.113883.19.5")),
            ("FillerOrderUniversalIDType", text("ISO")),
            ("OrderingProviderID", text(&provider_npi)),
            ("OrderingProviderLName", text("Okafor")),
            ("OrderingProviderFName", text("Sarah")),
            ("SetIdOBR", int(1)),
            ("UsiID", text("24331-1")),
            ("UsiText", text("Lipid panel with direct LDL")),
            ("UsiCodeSystemName", text("LN")),
            ("ObservationDateTimeStart", text(&hl7(collected, 14))),
            ("ResultDateTime", text(&hl7(reported, 14))),
            ("ResultStatus", text("F")),
            ("OriginalPIDSegment", text(&format!("PID|1||{pid}^^^OD^PI"))),
        ]);
        let tests = 1 + rng.below(3) as usize;
        for set in 0..tests {
            let result = lab * 10 + set as i64;
            let (loinc, name, value_type, unit, range, low, high) =
                LAB_TESTS[rng.below(LAB_TESTS.len() as u64) as usize];
            // Some fasting glucose results arrive under the lab's local code, with LOINC as the
            // alternate.
            let local = loinc == "2345-7" && rng.chance(40);
            let (alt_code, alt_name) = if local {
                ("1558-6", "Fasting glucose [Mass/volume] in Serum or Plasma")
            } else {
                ("", "")
            };
            // Semi-quantitative results: "<0.5" (comparator) or "2-5" (a range).
            let (comparator, number1, separator, number2) = match loinc {
                "1988-5" => ("<", 0.5, "", 0.0),
                "5821-4" => ("", 2.0, "-", 5.0),
                _ => ("", 0.0, "", 0.0),
            };
            let status = match rng.below(40) {
                0 => "P",
                1 => "C",
                2 => "X",
                3 => "D",
                _ => "F",
            };
            let cancelled = status == "X";
            let numeric = if value_type == "NM" && !cancelled {
                let v = rng.between(low, high);
                if unit == "mg/dL" {
                    v.round()
                } else {
                    (v * 10.0).round() / 10.0
                }
            } else {
                0.0
            };
            let flags = match (value_type, range.split_once('-')) {
                ("NM", Some((lo, hi))) if !cancelled => {
                    let (lo, hi): (f64, f64) =
                        (lo.parse().expect("range"), hi.parse().expect("range"));
                    if numeric > hi {
                        "H"
                    } else if numeric < lo {
                        "L"
                    } else {
                        "N"
                    }
                }
                ("CWE", _) => "N",
                _ => "",
            };
            let positive_strep = rng.chance(15);
            let when_digits = match rng.below(10) {
                0 => 0, // blank: falls back to the order's observation start
                1 => 8,
                2 | 3 => 12,
                _ => 14,
            };
            // One kind of value Portico does not read: encapsulated data (a PDF report).
            let value_type = if rng.chance(3) { "ED" } else { value_type };
            block.lab_results.push(vec![
                ("EhrLabResultNum", int(result)),
                ("EhrLabNum", int(lab)),
                ("SetIdOBX", int(set as i64 + 1)),
                ("ValueType", text(if cancelled { "ST" } else { value_type })),
                (
                    "ObservationIdentifierID",
                    text(if local { "GLU-F" } else { loinc }),
                ),
                (
                    "ObservationIdentifierText",
                    text(if local { "Glucose, fasting" } else { name }),
                ),
                (
                    "ObservationIdentifierCodeSystemName",
                    text(if local { "L" } else { "LN" }),
                ),
                ("ObservationIdentifierIDAlt", text(alt_code)),
                ("ObservationIdentifierTextAlt", text(alt_name)),
                (
                    "ObservationIdentifierCodeSystemNameAlt",
                    text(if local { "LN" } else { "" }),
                ),
                (
                    "ObservationValueCodedElementID",
                    text(match (value_type, positive_strep) {
                        ("CWE", true) => "10828004",
                        ("CWE", false) => "260385009",
                        _ => "",
                    }),
                ),
                (
                    "ObservationValueCodedElementText",
                    text(match (value_type, positive_strep) {
                        ("CWE", true) => "Positive",
                        ("CWE", false) => "Negative",
                        _ => "",
                    }),
                ),
                (
                    "ObservationValueCodedElementCodeSystemName",
                    text(if value_type == "CWE" { "SCT" } else { "" }),
                ),
                ("ObservationValueComparator", text(comparator)),
                ("ObservationValueNumber1", float(number1)),
                ("ObservationValueSeparatorOrSuffix", text(separator)),
                ("ObservationValueNumber2", float(number2)),
                ("ObservationValueNumeric", float(numeric)),
                (
                    "ObservationValueText",
                    text(if value_type == "ST" && !cancelled {
                        rng.pick(&[
                            "No growth at 48 hours",
                            "Streptococcus mutans >100,000 CFU/mL",
                        ])
                    } else {
                        ""
                    }),
                ),
                ("UnitsID", text(unit)),
                (
                    "UnitsText",
                    text(if unit == "{INR}" { "INR" } else { unit }),
                ),
                (
                    "UnitsCodeSystemName",
                    text(if unit.is_empty() {
                        ""
                    } else if local {
                        "L"
                    } else {
                        "UCUM"
                    }),
                ),
                ("referenceRange", text(range)),
                ("AbnormalFlags", text(flags)),
                ("ObservationResultStatus", text(status)),
                (
                    "ObservationDateTime",
                    text(&if when_digits == 0 {
                        String::new()
                    } else {
                        hl7(collected + Duration::minutes(20), when_digits)
                    }),
                ),
                (
                    "AnalysisDateTime",
                    text(&hl7(reported - Duration::hours(2), 12)),
                ),
                (
                    "PerformingOrganizationName",
                    text("Cascade Reference Laboratory"),
                ),
            ]);
            if rng.chance(20) {
                block.lab_notes.push(vec![
                    ("EhrLabNoteNum", int(result)),
                    ("EhrLabNum", int(lab)),
                    ("EhrLabResultNum", int(result)),
                    (
                        "Comments",
                        text(rng.pick(&[
                            "Specimen slightly hemolyzed.",
                            "Result verified by repeat analysis.",
                            "Fasting status not provided.",
                        ])),
                    ),
                ]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npis_carry_a_valid_check_digit() {
        // The CMS example: 123456789 has check digit 3.
        assert_eq!(npi(123_456_789), "1234567893");
    }

    #[test]
    fn hl7_timestamps_keep_their_precision() {
        let dt = day(0).and_hms_opt(9, 30, 15).expect("valid");
        assert_eq!(hl7(dt, 14), "20250106093015");
        assert_eq!(hl7(dt, 8), "20250106");
    }
}
