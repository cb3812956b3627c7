//! Deterministic synthetic Cerebello data (a Brazilian medical practice on SQL Server), for the
//! cerebello adapter's tests and demos.
//!
//! The rows carry Cerebello's habits: date-times in UTC (a birth date is the practice's local
//! midnight in UTC), whole names in one field (with particles such as "da", and the odd double
//! space), a CPF that belongs to a parent for children, persons linked to addresses through
//! PersonAddress, generic calendar entries without a patient, a private-pay "Particular" price list
//! beside the insurers, examination codes that may be missing.

use chrono::{Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};
use chrono_tz::Tz;

use super::{Counts, Rng, Rows, base_time, int, patient_blocks, text};
use crate::db::DbError;
use crate::db::fixture::FixtureWriter;
use crate::dialect::DialectKind;
use crate::dialect::ast::Value;

/// The Cerebello tables the cerebello adapter reads, with Cerebello's SQL Server column types.
pub const CEREBELLO_SCHEMA: &str = include_str!("../../adapters/cerebello/fixture/schema.sql");

const GIVEN_FEMALE: &[&str] = &[
    "Maria",
    "Ana",
    "Francisca",
    "Antônia",
    "Adriana",
    "Juliana",
    "Márcia",
    "Fernanda",
    "Patrícia",
    "Aline",
    "Luíza",
    "Conceição",
];
const GIVEN_MALE: &[&str] = &[
    "José",
    "João",
    "Antônio",
    "Francisco",
    "Carlos",
    "Paulo",
    "Pedro",
    "Lucas",
    "Luiz",
    "Marcos",
    "Raimundo",
    "Sebastião",
];
const MIDDLE: &[&str] = &[
    "Aparecida",
    "Cristina",
    "Eduardo",
    "Henrique",
    "Vitória",
    "Augusto",
];
const SURNAMES: &[&str] = &[
    "Silva",
    "Santos",
    "Oliveira",
    "Souza",
    "Rodrigues",
    "Ferreira",
    "Alves",
    "Pereira",
    "Lima",
    "Gomes",
    "Ribeiro",
    "Carvalho",
    "Araújo",
    "Conceição",
    "Sant'Anna",
    "Magalhães",
];
const PARTICLES: &[&str] = &["da", "de", "dos", "das", "do"];
const CITIES: &[(&str, &str)] = &[
    ("São Paulo", "SP"),
    ("Campinas", "SP"),
    ("Guarulhos", "SP"),
    ("Rio de Janeiro", "RJ"),
    ("Belo Horizonte", "MG"),
    ("Manaus", "AM"),
];
const STREETS: &[&str] = &[
    "Rua Augusta",
    "Avenida Paulista",
    "Rua da Consolação",
    "Rua Vergueiro",
    "Avenida Brasil",
    "Rua XV de Novembro",
];
const NEIGHBORHOODS: &[&str] = &["Centro", "Jardins", "Moema", "Pinheiros", "Vila Mariana"];
const PROFESSIONS: &[&str] = &[
    "Professora",
    "Engenheiro",
    "Comerciante",
    "Aposentado",
    "Estudante",
];

/// Examinations from the supplementary-health procedure table: code (absent for a few) and name.
const EXAMINATIONS: &[(Option<&str>, &str)] = &[
    (Some("40304361"), "Hemograma com contagem de plaquetas"),
    (Some("40302040"), "Glicose"),
    (Some("40301630"), "Colesterol total"),
    (Some("40316491"), "TSH - hormônio tireoestimulante"),
    (Some("40901122"), "US - abdome total"),
    (None, "Eletrocardiograma (laudo externo)"),
];

/// Practice id, name, url identifier, Windows zone, IANA zone of that Windows zone.
const PRACTICES: &[(i64, &str, &str, &str, Tz)] = &[
    (
        1,
        "Clínica Santa Luzia",
        "clinica-santa-luzia",
        "E. South America Standard Time",
        chrono_tz::America::Sao_Paulo,
    ),
    (
        2,
        "Consultório Dr. Ramos",
        "consultorio-dr-ramos",
        "SA Western Standard Time",
        chrono_tz::America::Manaus,
    ),
];

/// A doctor: a Doctor row, and the User and Person rows that give the doctor a name.
struct DoctorRow {
    id: i64,
    practice: i64,
    full_name: &'static str,
    gender: i64,
    crm: &'static str,
    /// MedicalEntityJurisdiction: the ordinal of TypeEstadoBrasileiro, as text.
    state: &'static str,
    /// CBO occupation code and name.
    specialty: (&'static str, &'static str),
}

const DOCTORS: &[DoctorRow] = &[
    DoctorRow {
        id: 1,
        practice: 1,
        full_name: "Helena Vasconcelos Prado",
        gender: 1,
        crm: "123456",
        state: "24",
        specialty: ("225125", "Médico clínico"),
    },
    DoctorRow {
        id: 2,
        practice: 1,
        full_name: "Ricardo  de Almeida",
        gender: 0,
        crm: "98765",
        state: "24",
        specialty: ("225124", "Médico pediatra"),
    },
    DoctorRow {
        id: 3,
        practice: 1,
        full_name: "Beatriz Nogueira",
        gender: 1,
        crm: "55443",
        state: "18",
        specialty: ("225250", "Médico ginecologista e obstetra"),
    },
    DoctorRow {
        id: 4,
        practice: 2,
        full_name: "Otávio Ramos",
        gender: 0,
        crm: "7788",
        state: "3",
        specialty: ("225125", "Médico clínico"),
    },
];

/// Plans each doctor accepts: name, private pay, still accepted, new and return consultation fees.
const PLANS: &[(&str, bool, bool, f64, f64)] = &[
    ("Particular", true, true, 350.0, 0.0),
    ("Unimed", false, true, 120.0, 60.0),
    ("Bradesco Saúde", false, true, 135.5, 0.0),
    ("SulAmérica", false, false, 110.0, 55.0),
];

/// The person id of a doctor's user account (patients' persons use their patient id).
fn doctor_person(doctor: i64) -> i64 {
    1_000_000 + doctor
}

fn health_insurance_id(doctor: i64, plan: usize) -> i64 {
    doctor * 10 + plan as i64
}

fn optional(value: Option<String>) -> Value {
    value.map_or(Value::Null, Value::Text)
}

/// `local` in `zone`, as the UTC date-time Cerebello stores.
fn to_utc(zone: Tz, local: NaiveDateTime) -> NaiveDateTime {
    match zone.from_local_datetime(&local).earliest() {
        Some(at) => at.naive_utc(),
        // Brazil's daylight saving started at local midnight: that hour did not exist.
        None => to_utc(zone, local + Duration::hours(1)),
    }
}

struct Block {
    persons: Rows,
    addresses: Rows,
    person_addresses: Rows,
    patients: Rows,
    appointments: Rows,
    exams: Rows,
    results: Rows,
}

impl Block {
    fn new() -> Block {
        Block {
            persons: Rows::new("Person"),
            addresses: Rows::new("Address"),
            person_addresses: Rows::new("PersonAddress"),
            patients: Rows::new("Patient"),
            appointments: Rows::new("Appointment"),
            exams: Rows::new("PhysicalExamination"),
            results: Rows::new("ExaminationResult"),
        }
    }

    async fn write(&self, writer: &FixtureWriter) -> Result<(), DbError> {
        for rows in [
            &self.persons,
            &self.addresses,
            &self.person_addresses,
            &self.patients,
            &self.appointments,
            &self.exams,
            &self.results,
        ] {
            rows.write(writer).await?;
        }
        Ok(())
    }
}

struct PersonRow<'a> {
    id: i64,
    full_name: &'a str,
    created: NaiveDateTime,
    birth_utc: NaiveDateTime,
    gender: i64,
    marital: Option<i64>,
    birth_place: Option<&'a str>,
    cpf: Option<String>,
    cpf_owner: Option<i64>,
    profession: Option<&'a str>,
    phone_land: Option<String>,
    phone_cell: Option<String>,
    email: Option<String>,
    practice: i64,
}

fn person_row(person: PersonRow<'_>) -> Vec<(&'static str, Value)> {
    vec![
        ("Id", int(person.id)),
        ("FullName", text(person.full_name)),
        ("CreatedOn", Value::DateTime(person.created)),
        ("DateOfBirth", Value::DateTime(person.birth_utc)),
        ("Gender", int(person.gender)),
        ("MaritalStatus", person.marital.map_or(Value::Null, int)),
        ("BirthPlace", person.birth_place.map_or(Value::Null, text)),
        ("CPF", optional(person.cpf)),
        ("CPFOwner", person.cpf_owner.map_or(Value::Null, int)),
        ("Observations", Value::Null),
        ("Profession", person.profession.map_or(Value::Null, text)),
        ("PhoneLand", optional(person.phone_land)),
        ("PhoneCell", optional(person.phone_cell)),
        ("Email", optional(person.email)),
        ("EmailGravatarHash", Value::Null),
        ("PracticeId", int(person.practice)),
        ("PictureBlobName", Value::Null),
    ]
}

fn address_row(
    id: i64,
    practice: i64,
    rng: &mut Rng,
    city: (&str, &str),
) -> Vec<(&'static str, Value)> {
    vec![
        ("Id", int(id)),
        (
            "CEP",
            text(&format!(
                "{:05}-{:03}",
                1_000 + rng.below(98_000),
                rng.below(1_000)
            )),
        ),
        ("City", text(city.0)),
        ("StateProvince", text(city.1)),
        ("Neighborhood", text(rng.pick(NEIGHBORHOODS))),
        (
            "Complement",
            if rng.chance(40) {
                text(&format!("Apto {}", 11 + rng.below(180)))
            } else {
                Value::Null
            },
        ),
        (
            "Street",
            text(&format!("{}, {}", rng.pick(STREETS), 1 + rng.below(3_000))),
        ),
        ("PracticeId", int(practice)),
    ]
}

fn phone(rng: &mut Rng, area: &str, mobile: bool) -> String {
    if mobile {
        format!(
            "({area}) 9{:04}-{:04}",
            rng.below(10_000),
            rng.below(10_000)
        )
    } else {
        format!("({area}) 3{:03}-{:04}", rng.below(1_000), rng.below(10_000))
    }
}

fn cpf(rng: &mut Rng) -> String {
    format!("{:011}", rng.below(100_000_000_000))
}

/// Creates the Cerebello tables and fills them with `patients` synthetic patients.
pub async fn seed_cerebello(writer: &FixtureWriter, patients: usize) -> Result<Counts, DbError> {
    writer
        .execute_script(CEREBELLO_SCHEMA, DialectKind::Mssql)
        .await?;
    seed_practices(writer).await?;
    let mut counts = Counts::default();
    for pids in patient_blocks(patients, 2_000) {
        let mut block = Block::new();
        for pid in pids {
            generate_patient(pid, &mut block, &mut counts);
        }
        counts.patients += block.patients.len();
        counts.appointments += block.appointments.len();
        counts.lab_results += block.results.len();
        block.write(writer).await?;
    }
    Ok(counts)
}

async fn seed_practices(writer: &FixtureWriter) -> Result<(), DbError> {
    let mut rng = Rng::new(0xCE7E_B311);
    let opened = NaiveDate::from_ymd_opt(2012, 3, 5)
        .expect("valid")
        .and_hms_opt(14, 20, 0)
        .expect("valid");
    let mut practices = Rows::new("Practice");
    let mut addresses = Rows::new("Address");
    for &(id, name, url, windows_zone, _) in PRACTICES {
        let city = if id == 1 { CITIES[0] } else { CITIES[5] };
        let area = if id == 1 { "11" } else { "92" };
        addresses.push(address_row(900_000 + id, id, &mut rng, city));
        practices.push(vec![
            ("Id", int(id)),
            ("Name", text(name)),
            ("UrlIdentifier", text(url)),
            ("CreatedOn", Value::DateTime(opened)),
            ("OwnerId", int(id)),
            ("WindowsTimeZoneId", text(windows_zone)),
            ("VerificationDate", Value::DateTime(opened)),
            ("ActiveAccountContractId", int(id)),
            ("PhoneMain", text(&phone(&mut rng, area, false))),
            ("PhoneAlt", Value::Null),
            ("PABX", Value::Null),
            ("Email", text(&format!("contato@{url}.com.br"))),
            ("SiteUrl", text(&format!("https://www.{url}.com.br"))),
            ("AddressId", int(900_000 + id)),
            ("AccountDisabled", Value::Bool(false)),
            ("AccountCancelRequest", Value::Bool(false)),
            ("Province", Value::Null),
            ("VerificationMethod", text("EMAIL")),
            ("AccountExpiryDate", Value::Null),
        ]);
    }
    let mut persons = Rows::new("Person");
    let mut doctors = Rows::new("Doctor");
    let mut users = Rows::new("User");
    let mut plans = Rows::new("HealthInsurance");
    for doctor in DOCTORS {
        let DoctorRow {
            id,
            practice,
            full_name: name,
            gender,
            crm,
            state,
            specialty: (specialty_code, specialty),
        } = *doctor;
        let area = if practice == 1 { "11" } else { "92" };
        persons.push(person_row(PersonRow {
            id: doctor_person(id),
            full_name: name,
            created: opened,
            birth_utc: to_utc(
                chrono_tz::America::Sao_Paulo,
                NaiveDate::from_ymd_opt(1965 + id as i32 * 4, 4, 2)
                    .expect("valid")
                    .and_time(NaiveTime::MIN),
            ),
            gender,
            marital: None,
            birth_place: None,
            cpf: Some(cpf(&mut rng)),
            cpf_owner: Some(0),
            profession: Some("Médico"),
            phone_land: Some(phone(&mut rng, area, false)),
            phone_cell: Some(phone(&mut rng, area, true)),
            email: Some(format!("dr{id}@example.com.br")),
            practice,
        }));
        doctors.push(vec![
            ("Id", int(id)),
            ("CRM", text(crm)),
            ("MedicalEntityJurisdiction", text(state)),
            ("UrlIdentifier", text(&format!("dr-{id}"))),
            ("MedicalEntityCode", text("CRM")),
            ("MedicalEntityName", text("Conselho Regional de Medicina")),
            ("MedicalSpecialtyCode", text(specialty_code)),
            ("MedicalSpecialtyName", text(specialty)),
            ("PracticeId", int(practice)),
        ]);
        users.push(user_row(id, doctor_person(id), Some(id), practice));
        for (index, &(plan, particular, active, new_fee, return_fee)) in PLANS.iter().enumerate() {
            plans.push(vec![
                ("Id", int(health_insurance_id(id, index))),
                ("Name", text(plan)),
                ("PracticeId", int(practice)),
                ("NewAppointmentValue", Value::Float(new_fee)),
                (
                    "ReturnAppointmentValue",
                    if return_fee > 0.0 {
                        Value::Float(return_fee)
                    } else {
                        Value::Null
                    },
                ),
                ("DoctorId", int(id)),
                ("ReturnTimeInterval", int(30)),
                ("IsActive", Value::Bool(active)),
                ("IsParticular", Value::Bool(particular)),
            ]);
        }
    }
    // A secretary: a user and a person, but no doctor.
    persons.push(person_row(PersonRow {
        id: doctor_person(99),
        full_name: "Sueli Batista",
        created: opened,
        birth_utc: to_utc(
            chrono_tz::America::Sao_Paulo,
            NaiveDate::from_ymd_opt(1980, 1, 15)
                .expect("valid")
                .and_time(NaiveTime::MIN),
        ),
        gender: 1,
        marital: Some(1),
        birth_place: None,
        cpf: None,
        cpf_owner: None,
        profession: Some("Secretária"),
        phone_land: None,
        phone_cell: None,
        email: None,
        practice: 1,
    }));
    users.push(user_row(99, doctor_person(99), None, 1));
    for rows in [&addresses, &practices, &persons, &doctors, &users, &plans] {
        rows.write(writer).await?;
    }
    Ok(())
}

fn user_row(
    id: i64,
    person: i64,
    doctor: Option<i64>,
    practice: i64,
) -> Vec<(&'static str, Value)> {
    vec![
        ("Id", int(id)),
        ("Password", text("not-a-real-hash")),
        ("PasswordSalt", text("salt")),
        ("LastActiveOn", Value::Null),
        (
            "SecretaryId",
            if doctor.is_none() {
                int(1)
            } else {
                Value::Null
            },
        ),
        ("PersonId", int(person)),
        ("DoctorId", doctor.map_or(Value::Null, int)),
        ("PracticeId", int(practice)),
        ("AdministratorId", Value::Null),
        ("UserName", text(&format!("user{id}"))),
        ("UserNameNormalized", text(&format!("user{id}"))),
        ("IsOwner", Value::Bool(id == 1)),
        ("SYS_PasswordAlt", Value::Null),
    ]
}

fn full_name(rng: &mut Rng, female: bool) -> String {
    let mut words = vec![
        rng.pick(if female { GIVEN_FEMALE } else { GIVEN_MALE })
            .to_owned(),
    ];
    if rng.chance(40) {
        words.push(rng.pick(MIDDLE).to_owned());
    }
    if rng.chance(30) {
        words.push(rng.pick(PARTICLES).to_owned());
    }
    words.push(rng.pick(SURNAMES).to_owned());
    if rng.chance(60) {
        words.push(rng.pick(SURNAMES).to_owned());
    }
    // Typed by hand: now and then a double space between two words.
    let separator = if rng.chance(5) { "  " } else { " " };
    words.join(separator)
}

fn generate_patient(pid: i64, block: &mut Block, counts: &mut Counts) {
    let mut rng = Rng::new(0xCE7E_0000 ^ (pid as u64).wrapping_mul(0x9E37_79B9));
    let practice = if pid % 5 == 0 { 2 } else { 1 };
    let (_, _, _, _, zone) = PRACTICES[practice as usize - 1];
    let doctors: Vec<i64> = DOCTORS
        .iter()
        .filter(|d| d.practice == practice)
        .map(|d| d.id)
        .collect();
    let doctor = doctors[rng.below(doctors.len() as u64) as usize];
    let female = rng.chance(55);
    let name = full_name(&mut rng, female);
    let age_days = 200 + rng.below(85 * 365) as i64;
    let birth = base_time().date() - Duration::days(age_days);
    let child = age_days < 18 * 365;
    let created = to_utc(
        zone,
        base_time() - Duration::days(rng.below(2_000) as i64) + Duration::hours(9),
    );
    let area = if practice == 1 { "11" } else { "92" };
    let has_cpf = !child || rng.chance(80);
    block.persons.push(person_row(PersonRow {
        id: pid,
        full_name: &name,
        created,
        birth_utc: to_utc(zone, birth.and_time(NaiveTime::MIN)),
        gender: i64::from(female),
        marital: (!child && rng.chance(70)).then(|| rng.below(4) as i64),
        birth_place: rng
            .chance(60)
            .then(|| CITIES[rng.below(CITIES.len() as u64) as usize].0),
        cpf: has_cpf.then(|| cpf(&mut rng)),
        // A child's CPF field usually holds a parent's (1 father, 2 mother) or a guardian's (3).
        cpf_owner: has_cpf.then(|| if child { 1 + rng.below(3) as i64 } else { 0 }),
        profession: (!child && rng.chance(50)).then(|| rng.pick(PROFESSIONS)),
        phone_land: rng.chance(50).then(|| phone(&mut rng, area, false)),
        phone_cell: rng.chance(85).then(|| phone(&mut rng, area, true)),
        email: rng
            .chance(60)
            .then(|| format!("paciente{pid}@example.com.br")),
        practice,
    }));
    let address_count = match rng.below(20) {
        0 => 0,
        1 => 2,
        _ => 1,
    };
    for k in 0..address_count {
        let address = pid * 2 + k;
        let city = if practice == 1 {
            CITIES[rng.below(5) as usize]
        } else {
            CITIES[5]
        };
        block
            .addresses
            .push(address_row(address, practice, &mut rng, city));
        block
            .person_addresses
            .push(vec![("PersonId", int(pid)), ("AddressId", int(address))]);
    }
    let plan = (!rng.chance(20))
        .then(|| health_insurance_id(doctor, rng.below(PLANS.len() as u64) as usize));
    if plan.is_some() {
        counts.coverages += 1;
    }
    block.patients.push(vec![
        ("Id", int(pid)),
        (
            "Registration",
            if rng.chance(50) {
                text(&format!("{practice}-{pid:06}"))
            } else {
                Value::Null
            },
        ),
        ("DoctorId", int(doctor)),
        ("PersonId", int(pid)),
        ("PracticeId", int(practice)),
        ("LastUsedHealthInsuranceId", plan.map_or(Value::Null, int)),
        ("IsBackedUp", Value::Bool(rng.chance(30))),
    ]);
    generate_visits(pid, practice, doctor, zone, plan, &mut rng, block);
}

#[allow(clippy::too_many_arguments)]
fn generate_visits(
    pid: i64,
    practice: i64,
    doctor: i64,
    zone: Tz,
    plan: Option<i64>,
    rng: &mut Rng,
    block: &mut Block,
) {
    let visits = rng.below(6) as i64;
    for k in 0..visits {
        let offset_days = rng.below(700) as i64 - 500;
        let local_start = (base_time().date() + Duration::days(offset_days))
            .and_hms_opt(
                8 + rng.below(10) as u32,
                [0, 20, 30, 40][rng.below(4) as usize],
                0,
            )
            .expect("valid");
        let start = to_utc(zone, local_start);
        let minutes = [15, 20, 30, 60][rng.below(4) as usize];
        let past = offset_days < 0;
        let status = if !past {
            0
        } else if rng.chance(15) {
            1
        } else {
            10
        };
        let id = pid * 10 + k;
        block.appointments.push(appointment_row(AppointmentRow {
            id,
            created: start - Duration::days(1 + rng.below(30) as i64),
            start,
            minutes,
            doctor,
            patient: Some(pid),
            kind: 1,
            description: rng.chance(50).then_some("Retorno para mostrar exames"),
            practice,
            status,
            plan,
        }));
        if status == 10 && rng.chance(60) {
            block.exams.push(vec![
                ("Id", int(id)),
                ("PatientId", int(pid)),
                ("PracticeId", int(practice)),
                ("CreatedOn", Value::DateTime(start + Duration::minutes(minutes))),
                (
                    "Notes",
                    text(&format!(
                        "PA {}x{} mmHg. Ausculta cardíaca e pulmonar sem alterações. Abdome flácido, indolor.",
                        100 + rng.below(50),
                        60 + rng.below(30)
                    )),
                ),
                ("MedicalRecordDate", Value::DateTime(start)),
            ]);
        }
        if status == 10 && rng.chance(40) {
            let (code, name) = EXAMINATIONS[rng.below(EXAMINATIONS.len() as u64) as usize];
            let done = start + Duration::days(2 + rng.below(5) as i64);
            block.results.push(vec![
                ("Id", int(id)),
                (
                    "Text",
                    text(&format!(
                        "{name}: resultado dentro dos valores de referência (laudo {id})."
                    )),
                ),
                ("PatientId", int(pid)),
                ("CreatedOn", Value::DateTime(done + Duration::days(3))),
                ("MedicalProcedureCode", code.map_or(Value::Null, text)),
                ("MedicalProcedureName", text(name)),
                ("PracticeId", int(practice)),
                ("ExaminationDate", Value::DateTime(done)),
                ("ReceiveDate", Value::DateTime(done + Duration::days(3))),
            ]);
        }
    }
    // The doctor's own calendar entries ("compromissos"): no patient, never served.
    if pid % 7 == 0 {
        let start = to_utc(
            zone,
            (base_time().date() + Duration::days(pid % 30))
                .and_hms_opt(12, 0, 0)
                .expect("valid"),
        );
        block.appointments.push(appointment_row(AppointmentRow {
            id: pid * 10 + 9,
            created: start - Duration::days(2),
            start,
            minutes: 60,
            doctor,
            patient: None,
            kind: 0,
            description: Some("Reunião com representante"),
            practice,
            status: if pid % 2 == 0 { 50 } else { 0 },
            plan: None,
        }));
    }
}

struct AppointmentRow {
    id: i64,
    created: NaiveDateTime,
    start: NaiveDateTime,
    minutes: i64,
    doctor: i64,
    patient: Option<i64>,
    kind: i64,
    description: Option<&'static str>,
    practice: i64,
    status: i64,
    plan: Option<i64>,
}

fn appointment_row(row: AppointmentRow) -> Vec<(&'static str, Value)> {
    vec![
        ("Id", int(row.id)),
        ("CreatedOn", Value::DateTime(row.created)),
        ("CreatedById", int(1)),
        ("Start", Value::DateTime(row.start)),
        (
            "End",
            Value::DateTime(row.start + Duration::minutes(row.minutes)),
        ),
        ("DoctorId", int(row.doctor)),
        ("PatientId", row.patient.map_or(Value::Null, int)),
        ("Type", int(row.kind)),
        ("Description", row.description.map_or(Value::Null, text)),
        ("PracticeId", int(row.practice)),
        ("Status", int(row.status)),
        ("Notified", Value::Bool(row.status == 10)),
        ("HealthInsuranceId", row.plan.map_or(Value::Null, int)),
        ("ReminderEmailSent", Value::Bool(false)),
    ]
}
