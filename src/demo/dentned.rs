//! Deterministic synthetic DentneD data, for the dentned adapter's tests and demos.
//!
//! The rows carry DentneD's habits on purpose: Italian names with accents and apostrophes,
//! `char(3)` treatment codes shorter than three characters stored blank-padded ("C1 ") as SQL
//! Server returns them, archived patients that still own appointments and invoices, invoices
//! without a doctor or made out to a printed name only (no patient), invoices of several lines,
//! lines typed by hand (no `patientstreatments_id`), VAT on cosmetic work and products only, the
//! 20% withholding on some invoices, invoice numbers that start again every year, one bit column
//! per tooth, and appointments on both sides of `base_time()` and of the daylight-saving changes.
//! Every value derives from the patient number, so two runs write the same rows.

use std::collections::BTreeMap;

use chrono::{Datelike, Duration, NaiveDate, NaiveTime, Weekday};
use rust_decimal::Decimal;

use super::{Counts, Rng, Rows, base_time, int, patient_blocks, text};
use crate::db::DbError;
use crate::db::fixture::FixtureWriter;
use crate::dialect::DialectKind;
use crate::dialect::ast::Value;

/// The DentneD tables the dentned adapter reads, in T-SQL with DentneD's column types.
pub const DENTNED_SCHEMA: &str = include_str!("../../adapters/dentned/fixture/schema.sql");

const SURNAMES: &[&str] = &[
    "Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "Romano", "Colombo", "Ricci", "Marino",
    "Greco", "Bruno", "Gallo", "Conti", "De Luca", "Mancini", "Costa", "Giordano", "Rizzo",
    "Lombardi", "Moretti", "D'Amico", "D'Angelo", "Lo Russo", "Sanna", "Piras", "Fontana",
    "Caruso", "Santoro", "Lucà", "Cimò",
];
const GIVEN_FEMALE: &[&str] = &[
    "Giulia",
    "Sofia",
    "Aurora",
    "Alice",
    "Ginevra",
    "Beatrice",
    "Francesca",
    "Chiara",
    "Lucia",
    "Noemi",
    "Maria Grazia",
    "Zoè",
];
const GIVEN_MALE: &[&str] = &[
    "Leonardo",
    "Francesco",
    "Alessandro",
    "Lorenzo",
    "Mattia",
    "Andrea",
    "Riccardo",
    "Tommaso",
    "Niccolò",
    "Giuseppe",
    "Gian Luca",
    "Nicolò",
];
/// City, province, postcode.
const CITIES: &[(&str, &str, &str)] = &[
    ("Bologna", "BO", "40121"),
    ("Milano", "MI", "20121"),
    ("Roma", "RM", "00184"),
    ("Forlì", "FC", "47121"),
    ("Cefalù", "PA", "90015"),
    ("Torino", "TO", "10121"),
    ("Napoli", "NA", "80132"),
];
const STREETS: &[&str] = &[
    "Via Roma",
    "Via Garibaldi",
    "Corso Vittorio Emanuele II",
    "Piazza Maggiore",
    "Viale dell'Università",
    "Via dei Mille",
    "Via Sant'Isaia",
];
const BIRTH_CITIES: &[&str] = &[
    "Bologna", "Milano", "Roma", "Forlì", "Cefalù", "Napoli", "Palermo", "L'Aquila",
];

/// doctors_id, name, surname, username.
const DOCTORS: &[(i64, &str, &str, &str)] = &[
    (1, "Marco", "Bianchi", "mbianchi"),
    (2, "Giulia", "Esposito", "gesposit"),
    (3, "Niccolò", "Ferraro", "nferraro"),
    (4, "Anna", "D'Amico", "adamico"),
];
/// rooms_id, name, calendar colour.
const ROOMS: &[(i64, &str, &str)] = &[
    (1, "Studio 1", "#4F81BD"),
    (2, "Studio 2", "#9BBB59"),
    (3, "Igiene", "#F79646"),
    (4, "Chirurgia", "#C0504D"),
];
/// contactstypes_id, name: the names a practice types in DentneD's settings ("Altro" is unmapped).
const CONTACT_TYPES: &[(i64, &str)] = &[
    (1, "Telefono"),
    (2, "Cellulare"),
    (3, "Email"),
    (4, "Fax"),
    (5, "PEC"),
    (6, "Altro"),
];
const ADDRESS_TYPES: &[(i64, &str)] = &[(1, "Residenza"), (2, "Domicilio")];

/// A treatment of the practice's list: code (char(3), some shorter), name, unit price in cents,
/// VAT rate (dental care is VAT-exempt in Italy; cosmetic whitening is not), per tooth.
struct Treatment {
    id: i64,
    code: &'static str,
    name: &'static str,
    cents: i64,
    vat: i64,
    per_tooth: bool,
}

const TREATMENTS: &[Treatment] = &[
    Treatment {
        id: 1,
        code: "VIS",
        name: "Visita odontoiatrica",
        cents: 5_000,
        vat: 0,
        per_tooth: false,
    },
    Treatment {
        id: 2,
        code: "IG",
        name: "Igiene orale professionale",
        cents: 8_000,
        vat: 0,
        per_tooth: false,
    },
    Treatment {
        id: 3,
        code: "OT",
        name: "Otturazione in composito",
        cents: 12_000,
        vat: 0,
        per_tooth: true,
    },
    Treatment {
        id: 4,
        code: "DEV",
        name: "Devitalizzazione monocanalare",
        cents: 25_000,
        vat: 0,
        per_tooth: true,
    },
    Treatment {
        id: 5,
        code: "EST",
        name: "Estrazione semplice",
        cents: 9_000,
        vat: 0,
        per_tooth: true,
    },
    Treatment {
        id: 6,
        code: "C1",
        name: "Corona in ceramica",
        cents: 65_000,
        vat: 0,
        per_tooth: true,
    },
    Treatment {
        id: 7,
        code: "RX",
        name: "Radiografia endorale",
        cents: 2_500,
        vat: 0,
        per_tooth: false,
    },
    Treatment {
        id: 8,
        code: "SBI",
        name: "Sbiancamento dentale",
        cents: 30_000,
        vat: 22,
        per_tooth: false,
    },
];

/// Lines typed by hand on an invoice (no patient treatment behind them): code, text, unit price in
/// cents, VAT rate, quantity. The brushes come by the dozen: more than the 10 units the adapter
/// can compute a net for.
const PRODUCTS: &[(&str, &str, i64, i64, i64)] = &[
    ("SP", "Spazzolino sonico", 4_990, 22, 1),
    ("SCO", "Scovolini interdentali", 150, 22, 12),
    ("M", "Marca da bollo", 200, 0, 1),
];

/// FDI tooth numbers, in the order of the patientstreatments_t11 .. _t48 columns.
const TEETH: [u32; 32] = [
    11, 12, 13, 14, 15, 16, 17, 18, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33, 34, 35, 36, 37, 38,
    41, 42, 43, 44, 45, 46, 47, 48,
];
const TOOTH_COLUMNS: [&str; 32] = [
    "patientstreatments_t11",
    "patientstreatments_t12",
    "patientstreatments_t13",
    "patientstreatments_t14",
    "patientstreatments_t15",
    "patientstreatments_t16",
    "patientstreatments_t17",
    "patientstreatments_t18",
    "patientstreatments_t21",
    "patientstreatments_t22",
    "patientstreatments_t23",
    "patientstreatments_t24",
    "patientstreatments_t25",
    "patientstreatments_t26",
    "patientstreatments_t27",
    "patientstreatments_t28",
    "patientstreatments_t31",
    "patientstreatments_t32",
    "patientstreatments_t33",
    "patientstreatments_t34",
    "patientstreatments_t35",
    "patientstreatments_t36",
    "patientstreatments_t37",
    "patientstreatments_t38",
    "patientstreatments_t41",
    "patientstreatments_t42",
    "patientstreatments_t43",
    "patientstreatments_t44",
    "patientstreatments_t45",
    "patientstreatments_t46",
    "patientstreatments_t47",
    "patientstreatments_t48",
];

/// The header a practice without a named doctor prints on its invoices.
const PRACTICE_DOCTEXT: &str =
    "Studio Dentistico Associato\nVia Garibaldi 8, 40121 Bologna (BO)\nP.IVA 02345678901";

/// Child rows per patient are keyed `patients_id * PER_PATIENT + n`.
const PER_PATIENT: i64 = 10;

fn euros(cents: i64) -> Value {
    Value::Decimal(Decimal::new(cents, 2))
}

/// A `char(3)` value as SQL Server returns it: blank-padded to three characters.
fn char3(code: &str) -> Value {
    text(&format!("{code:<3}"))
}

fn bit(flag: bool) -> Value {
    int(i64::from(flag))
}

fn date(d: NaiveDate) -> Value {
    Value::Date(d)
}

fn doctor_doctext(name: &str, surname: &str, id: i64) -> String {
    format!(
        "Dott. {name} {surname}\nVia Garibaldi 8, 40121 Bologna (BO)\nP.IVA 0{:010}",
        1_234_567_890 + id
    )
}

/// Creates the DentneD tables and fills them with `patients` synthetic patients.
pub async fn seed_dentned(writer: &FixtureWriter, patients: usize) -> Result<Counts, DbError> {
    writer
        .execute_script(DENTNED_SCHEMA, DialectKind::Mssql)
        .await?;
    seed_reference_tables(writer).await?;
    let mut counts = Counts::default();
    let mut numbers = InvoiceNumbers::default();
    for pids in patient_blocks(patients, 2_000) {
        seed_patient_block(
            writer,
            *pids.start(),
            *pids.end(),
            &mut numbers,
            &mut counts,
        )
        .await?;
    }
    Ok(counts)
}

async fn seed_reference_tables(writer: &FixtureWriter) -> Result<(), DbError> {
    let mut doctors = Rows::new("doctors");
    for (id, name, surname, username) in DOCTORS {
        doctors.push(vec![
            ("doctors_id", int(*id)),
            ("doctors_name", text(name)),
            ("doctors_surname", text(surname)),
            ("doctors_doctext", text(&doctor_doctext(name, surname, *id))),
            ("doctors_username", text(username)),
            (
                "doctors_password",
                text(&format!("{:06}", 314_159 * id % 1_000_000)),
            ),
            ("doctors_token", Value::Null),
            (
                "doctors_lastlogin",
                Value::DateTime(base_time() - Duration::hours(20 + id)),
            ),
        ]);
    }
    doctors.write(writer).await?;

    let mut rooms = Rows::new("rooms");
    for (id, name, colour) in ROOMS {
        rooms.push(vec![
            ("rooms_id", int(*id)),
            ("rooms_name", text(name)),
            ("rooms_color", text(colour)),
        ]);
    }
    rooms.write(writer).await?;

    let mut contact_types = Rows::new("contactstypes");
    for (id, name) in CONTACT_TYPES {
        contact_types.push(vec![
            ("contactstypes_id", int(*id)),
            ("contactstypes_name", text(name)),
        ]);
    }
    contact_types.write(writer).await?;

    let mut address_types = Rows::new("addressestypes");
    for (id, name) in ADDRESS_TYPES {
        address_types.push(vec![
            ("addressestypes_id", int(*id)),
            ("addressestypes_name", text(name)),
        ]);
    }
    address_types.write(writer).await
}

/// DentneD numbers invoices from 1 again every calendar year.
#[derive(Default)]
struct InvoiceNumbers(BTreeMap<i32, i64>);

impl InvoiceNumbers {
    fn next(&mut self, day: NaiveDate) -> String {
        let counter = self.0.entry(day.year()).or_insert(0);
        *counter += 1;
        counter.to_string()
    }
}

struct Block {
    patients: Rows,
    addresses: Rows,
    contacts: Rows,
    appointments: Rows,
    treatments: Rows,
    invoices: Rows,
    lines: Rows,
}

/// A line about to be invoiced: its treatment row (if any), code, text, quantity, unit price in
/// cents, VAT rate, whether the withholding applies.
struct Line {
    treatment_row: Option<i64>,
    code: &'static str,
    description: String,
    quantity: i64,
    cents: i64,
    vat: i64,
    withholding: bool,
}

async fn seed_patient_block(
    writer: &FixtureWriter,
    first: i64,
    last: i64,
    numbers: &mut InvoiceNumbers,
    counts: &mut Counts,
) -> Result<(), DbError> {
    let mut block = Block {
        patients: Rows::new("patients"),
        addresses: Rows::new("patientsaddresses"),
        contacts: Rows::new("patientscontacts"),
        appointments: Rows::new("appointments"),
        treatments: Rows::new("patientstreatments"),
        invoices: Rows::new("invoices"),
        lines: Rows::new("invoiceslines"),
    };
    for id in first..=last {
        seed_patient(&mut block, id, numbers, counts);
    }
    block.patients.write(writer).await?;
    block.addresses.write(writer).await?;
    block.contacts.write(writer).await?;
    block.appointments.write(writer).await?;
    block.treatments.write(writer).await?;
    block.invoices.write(writer).await?;
    block.lines.write(writer).await?;
    counts.patients += block.patients.len();
    counts.coverages += block.patients.len();
    counts.appointments += block.appointments.len();
    Ok(())
}

/// Lower-case ASCII for e-mail addresses: accents dropped, apostrophes and blanks removed.
fn mailbox(text: &str) -> String {
    text.to_lowercase()
        .chars()
        .filter_map(|c| match c {
            'à' | 'á' => Some('a'),
            'è' | 'é' => Some('e'),
            'ì' | 'í' => Some('i'),
            'ò' | 'ó' => Some('o'),
            'ù' | 'ú' => Some('u'),
            '\'' | ' ' => None,
            other => Some(other),
        })
        .collect()
}

fn seed_patient(block: &mut Block, id: i64, numbers: &mut InvoiceNumbers, counts: &mut Counts) {
    let mut rng = Rng::new(0xD3A7_0000 ^ (id as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let female = rng.chance(52);
    let given = rng.pick(if female { GIVEN_FEMALE } else { GIVEN_MALE });
    let surname = rng.pick(SURNAMES);
    let birth = NaiveDate::from_ymd_opt(1940, 1, 1).expect("valid")
        + Duration::days(rng.below(365 * 78) as i64);
    let (city, province, postcode) = CITIES[rng.below(CITIES.len() as u64) as usize];
    let street = format!("{} {}", rng.pick(STREETS), 1 + rng.below(120));
    let tax_code = format!(
        "{}{}{:02}A{:02}H{:03}X",
        mailbox(surname)
            .to_uppercase()
            .chars()
            .take(3)
            .collect::<String>(),
        mailbox(given)
            .to_uppercase()
            .chars()
            .take(3)
            .collect::<String>(),
        birth.year() % 100,
        birth.day(),
        rng.below(1000)
    );
    let doctext =
        format!("{given} {surname}\n{street}\n{postcode} {city} ({province})\nC.F. {tax_code}");
    let archived = rng.chance(8);
    block.patients.push(vec![
        ("patients_id", int(id)),
        ("treatmentspriceslists_id", Value::Null),
        ("patients_name", text(given)),
        ("patients_surname", text(surname)),
        ("patients_sex", text(if female { "F" } else { "M" })),
        ("patients_birthdate", date(birth)),
        ("patients_birthcity", text(rng.pick(BIRTH_CITIES))),
        ("patients_doctext", text(&doctext)),
        (
            "patients_notes",
            if rng.chance(20) {
                text("Allergia alla penicillina")
            } else {
                Value::Null
            },
        ),
        ("patients_isarchived", bit(archived)),
        ("patients_username", text(&format!("p{id:07}"))),
        (
            "patients_password",
            text(&format!("{:06}", rng.below(1_000_000))),
        ),
        ("patients_token", Value::Null),
        ("patients_lastlogin", Value::Null),
    ]);

    // Addresses: a residence for most, a separate domicile for some.
    let mut address_row = 0;
    let mut address = |block: &mut Block, kind: i64, street: &str, place: (&str, &str, &str)| {
        block.addresses.push(vec![
            ("patientsaddresses_id", int(id * PER_PATIENT + address_row)),
            ("patients_id", int(id)),
            ("addressestypes_id", int(kind)),
            ("patientsaddresses_state", text(place.1)),
            ("patientsaddresses_city", text(place.0)),
            ("patientsaddresses_zipcode", text(place.2)),
            ("patientsaddresses_street", text(street)),
        ]);
        address_row += 1;
    };
    if rng.chance(95) {
        address(block, 1, &street, (city, province, postcode));
    }
    if rng.chance(15) {
        let place = CITIES[rng.below(CITIES.len() as u64) as usize];
        let other = format!("{} {}", rng.pick(STREETS), 1 + rng.below(120));
        address(block, 2, &other, place);
    }

    // Contacts: a mobile for most; landline, e-mail, PEC and an untyped note for some.
    let mut contact_row = 0;
    let mut contact = |block: &mut Block, kind: i64, value: String, note: Option<&str>| {
        block.contacts.push(vec![
            ("patientscontacts_id", int(id * PER_PATIENT + contact_row)),
            ("patients_id", int(id)),
            ("contactstypes_id", int(kind)),
            ("patientscontacts_value", text(&value)),
            ("patientscontacts_note", note.map_or(Value::Null, text)),
        ]);
        contact_row += 1;
    };
    if rng.chance(90) {
        let value = format!("+39 3{:02} {:07}", rng.below(50), rng.below(10_000_000));
        contact(block, 2, value, None);
    }
    if rng.chance(40) {
        let value = format!("051 {:06}", rng.below(1_000_000));
        contact(block, 1, value, Some("ore pasti"));
    }
    if rng.chance(50) {
        let value = format!("{}.{}{id}@example.it", mailbox(given), mailbox(surname));
        contact(block, 3, value, None);
    }
    if rng.chance(5) {
        let value = format!("{}{id}@pec.example.it", mailbox(surname));
        contact(block, 5, value, None);
    }
    if rng.chance(5) {
        contact(block, 6, "chiedere della figlia".to_owned(), None);
    }

    seed_appointments(block, id, &mut rng);
    let done = seed_treatments(block, id, &mut rng);
    seed_invoices(block, id, doctext, done, &mut rng, numbers, counts);
}

fn seed_appointments(block: &mut Block, patient: i64, rng: &mut Rng) {
    // From about 14 months before base_time() to 2 months after: both daylight-saving changes of
    // Europe/Rome fall inside, so starts carry +01:00 and +02:00.
    for index in 0..rng.below(5) as i64 {
        let mut day =
            base_time().date() - Duration::days(420) + Duration::days(rng.below(480) as i64);
        if day.weekday() == Weekday::Sun {
            day += Duration::days(1);
        }
        let start = day.and_time(
            NaiveTime::from_hms_opt(
                8 + rng.below(10) as u32,
                [0, 15, 30, 45][rng.below(4) as usize],
                0,
            )
            .expect("valid"),
        );
        let minutes = [30, 45, 60, 90][rng.below(4) as usize];
        let (title, room) = match rng.below(4) {
            0 => ("Igiene", 3),
            1 => ("Estrazione", 4),
            2 => ("Controllo", 1 + rng.below(2) as i64),
            _ => ("Prima visita", 1),
        };
        block.appointments.push(vec![
            ("appointments_id", int(patient * PER_PATIENT + index)),
            (
                "doctors_id",
                int(DOCTORS[rng.below(DOCTORS.len() as u64) as usize].0),
            ),
            ("patients_id", int(patient)),
            ("rooms_id", int(room)),
            ("appointments_from", Value::DateTime(start)),
            (
                "appointments_to",
                Value::DateTime(start + Duration::minutes(minutes)),
            ),
            ("appointments_title", text(title)),
            (
                "appointments_notes",
                if rng.chance(30) {
                    text("Portare l'ortopantomografia")
                } else {
                    Value::Null
                },
            ),
            ("appointments_color", text(ROOMS[(room - 1) as usize].2)),
        ]);
    }
}

/// Writes the patient's treatments and returns the fulfilled ones as invoice lines, with the day
/// each was done.
fn seed_treatments(block: &mut Block, patient: i64, rng: &mut Rng) -> Vec<(NaiveDate, Line)> {
    let mut done = Vec::new();
    for index in 0..rng.below(6) as i64 {
        let row = patient * PER_PATIENT + index;
        let treatment = &TREATMENTS[rng.below(TREATMENTS.len() as u64) as usize];
        let created = base_time().date() - Duration::days(60 + rng.below(640) as i64);
        let fulfilled = rng
            .chance(80)
            .then(|| created + Duration::days(rng.below(45) as i64));
        let teeth: Vec<usize> = if treatment.per_tooth {
            let count = 1 + rng.below(3) as usize;
            let mut picked: Vec<usize> = (0..count).map(|_| rng.below(32) as usize).collect();
            picked.sort_unstable();
            picked.dedup();
            picked
        } else {
            Vec::new()
        };
        let quantity = if treatment.per_tooth {
            teeth.len() as i64
        } else {
            1
        };
        let mut columns = vec![
            ("patientstreatments_id", int(row)),
            (
                "doctors_id",
                int(DOCTORS[rng.below(DOCTORS.len() as u64) as usize].0),
            ),
            ("patients_id", int(patient)),
            ("treatments_id", int(treatment.id)),
            ("patientstreatments_creationdate", date(created)),
            (
                "patientstreatments_fulfilldate",
                fulfilled.map_or(Value::Null, date),
            ),
            (
                "patientstreatments_ispaid",
                bit(fulfilled.is_some() && rng.chance(70)),
            ),
            ("patientstreatments_price", euros(treatment.cents)),
            ("patientstreatments_isunitprice", bit(true)),
            ("patientstreatments_taxrate", euros(treatment.vat * 100)),
            ("patientstreatments_description", Value::Null),
            ("patientstreatments_notes", Value::Null),
            ("patientstreatments_expirationdate", Value::Null),
        ];
        for (position, column) in TOOTH_COLUMNS.iter().enumerate() {
            columns.push((*column, bit(teeth.contains(&position))));
        }
        block.treatments.push(columns);
        if let Some(day) = fulfilled {
            let description = if teeth.is_empty() {
                treatment.name.to_owned()
            } else {
                let list: Vec<String> = teeth.iter().map(|t| TEETH[*t].to_string()).collect();
                format!("{} ({})", treatment.name, list.join(", "))
            };
            done.push((
                day,
                Line {
                    treatment_row: Some(row),
                    code: treatment.code,
                    description,
                    quantity,
                    cents: treatment.cents,
                    vat: treatment.vat,
                    withholding: true,
                },
            ));
        }
    }
    done
}

fn seed_invoices(
    block: &mut Block,
    patient: i64,
    doctext: String,
    done: Vec<(NaiveDate, Line)>,
    rng: &mut Rng,
    numbers: &mut InvoiceNumbers,
    counts: &mut Counts,
) {
    // Most fulfilled treatments are invoiced, up to three per invoice; some invoices add a product.
    let mut pending: Vec<(NaiveDate, Line)> = done.into_iter().filter(|_| rng.chance(85)).collect();
    pending.sort_by_key(|(day, _)| *day);
    let mut index = 0;
    while !pending.is_empty() {
        let take = (1 + rng.below(3) as usize).min(pending.len());
        let group: Vec<(NaiveDate, Line)> = pending.drain(..take).collect();
        let day = group.last().expect("non-empty").0 + Duration::days(rng.below(10) as i64);
        let mut lines: Vec<Line> = group.into_iter().map(|(_, line)| line).collect();
        if rng.chance(25) {
            let (code, description, cents, vat, quantity) =
                PRODUCTS[rng.below(PRODUCTS.len() as u64) as usize];
            lines.push(Line {
                treatment_row: None,
                code,
                description: description.to_owned(),
                quantity,
                cents,
                vat,
                withholding: false,
            });
        }
        let doctor = (!rng.chance(12)).then(|| DOCTORS[rng.below(DOCTORS.len() as u64) as usize]);
        let invoice = patient * PER_PATIENT + index;
        write_invoice(
            block,
            invoice,
            Some(patient),
            &doctext,
            doctor,
            day,
            lines,
            rng,
            numbers,
        );
        counts.claims += 1;
        index += 1;
    }
    // Now and then an invoice made out to a name only (a relative paying, a walk-in): no patient.
    if patient % 20 == 0 {
        let day = base_time().date() - Duration::days(patient % 300);
        let lines = vec![Line {
            treatment_row: None,
            code: "VIS",
            description: "Visita odontoiatrica".to_owned(),
            quantity: 1,
            cents: 5_000,
            vat: 0,
            withholding: true,
        }];
        let printed = "Mario Verdi\nVia dei Mille 4\n40121 Bologna (BO)";
        let doctor = Some(DOCTORS[0]);
        let invoice = patient * PER_PATIENT + 9;
        write_invoice(
            block, invoice, None, printed, doctor, day, lines, rng, numbers,
        );
    }
}

/// Writes one invoice and its lines, with the totals DentneD stores: net = the lines' quantity x
/// unit price, gross = net + VAT, due = gross - the withholding on the lines subject to it; each
/// line's amounts rounded to the cent before adding.
#[allow(clippy::too_many_arguments)]
fn write_invoice(
    block: &mut Block,
    invoice: i64,
    patient: Option<i64>,
    printed_patient: &str,
    doctor: Option<(i64, &str, &str, &str)>,
    day: NaiveDate,
    lines: Vec<Line>,
    rng: &mut Rng,
    numbers: &mut InvoiceNumbers,
) {
    let withholding_rate = if rng.chance(15) { 20 } else { 0 };
    let (mut net, mut vat, mut withheld) = (0, 0, 0);
    for (position, line) in lines.iter().enumerate() {
        let amount = line.quantity * line.cents;
        net += amount;
        vat += (amount * line.vat + 50) / 100;
        if line.withholding {
            withheld += (amount * withholding_rate + 50) / 100;
        }
        block.lines.push(vec![
            (
                "invoiceslines_id",
                int(invoice * PER_PATIENT + position as i64),
            ),
            ("invoices_id", int(invoice)),
            (
                "patientstreatments_id",
                line.treatment_row.map_or(Value::Null, int),
            ),
            ("invoiceslines_code", char3(line.code)),
            ("invoiceslines_description", text(&line.description)),
            ("invoiceslines_quantity", int(line.quantity)),
            ("invoiceslines_unitprice", euros(line.cents)),
            ("invoiceslines_taxrate", euros(line.vat * 100)),
            ("invoiceslines_istaxesdeductionsable", bit(line.withholding)),
        ]);
    }
    let printed_doctor = match doctor {
        Some((id, name, surname, _)) => doctor_doctext(name, surname, id),
        None => PRACTICE_DOCTEXT.to_owned(),
    };
    block.invoices.push(vec![
        ("invoices_id", int(invoice)),
        ("doctors_id", doctor.map_or(Value::Null, |d| int(d.0))),
        ("patients_id", patient.map_or(Value::Null, int)),
        ("invoices_number", text(&numbers.next(day))),
        ("invoices_date", date(day)),
        ("invoices_doctor", text(&printed_doctor)),
        ("invoices_patient", text(printed_patient)),
        (
            "invoices_payment",
            text(rng.pick(&["Contanti", "Bancomat", "Bonifico bancario"])),
        ),
        (
            "invoices_footer",
            if vat == 0 {
                text("Operazione esente IVA ai sensi dell'art. 10 DPR 633/72")
            } else {
                Value::Null
            },
        ),
        ("invoices_totalnet", euros(net)),
        ("invoices_totalgross", euros(net + vat)),
        ("invoices_totaldue", euros(net + vat - withheld)),
        ("invoices_deductiontaxrate", euros(withholding_rate * 100)),
        ("invoices_ispaid", bit(rng.chance(70))),
    ]);
}
