//! HL7 v2.5.1 messages for the MLLP channel, encoded from the FHIR R4 resources Portico serves:
//! ADT^A04/A08 (patients), SIU^S12/S13/S14/S15/S26 (appointments), ORU^R01 (results). Pure: JSON in,
//! message text out. The field-by-field layout: README, "Subscriptions: HL7 v2 over MLLP".

use chrono::{DateTime, FixedOffset};
use serde_json::Value as Json;

/// The HL7 v2 version every message declares (MSH-12).
pub const VERSION: &str = "2.5.1";

/// The longest MSH-10 accepted: ST's length from v2.7 on, which engines take in 2.5.1 messages too.
const MAX_CONTROL_ID: usize = 199;

/// What happened in the PMS; it decides the message type and trigger event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// ADT^A04 (register a patient).
    PatientRegistered,
    /// ADT^A08 (update patient information).
    PatientUpdated,
    /// SIU^S12 (new appointment booking).
    AppointmentBooked,
    /// SIU^S13 (appointment rescheduling).
    AppointmentRescheduled,
    /// SIU^S14 (appointment modification): any other change.
    AppointmentModified,
    /// SIU^S14 too: the patient arrived or was checked in (the status carries which).
    AppointmentCheckedIn,
    /// SIU^S15 (appointment cancellation).
    AppointmentCancelled,
    /// SIU^S26 (patient did not show up).
    AppointmentNoShow,
    /// ORU^R01 (unsolicited observation result).
    ResultAvailable,
}

impl EventKind {
    /// MSH-9: message code, trigger event, message structure.
    fn message_type(self) -> [&'static str; 3] {
        match self {
            EventKind::PatientRegistered => ["ADT", "A04", "ADT_A01"],
            EventKind::PatientUpdated => ["ADT", "A08", "ADT_A01"],
            EventKind::AppointmentBooked => ["SIU", "S12", "SIU_S12"],
            EventKind::AppointmentRescheduled => ["SIU", "S13", "SIU_S12"],
            EventKind::AppointmentModified | EventKind::AppointmentCheckedIn => {
                ["SIU", "S14", "SIU_S12"]
            }
            EventKind::AppointmentCancelled => ["SIU", "S15", "SIU_S12"],
            EventKind::AppointmentNoShow => ["SIU", "S26", "SIU_S12"],
            EventKind::ResultAvailable => ["ORU", "R01", "ORU_R01"],
        }
    }
}

/// The resources a message is made from, as Portico serves them (FHIR R4 JSON).
#[derive(Debug, Clone, Copy)]
pub enum Resources<'a> {
    Patient(&'a Json),
    Appointment {
        appointment: &'a Json,
        patient: &'a Json,
    },
    Result {
        observation: &'a Json,
        patient: &'a Json,
    },
}

/// MSH-11.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessingId {
    Production,
    Training,
}

/// The MSH fields that do not come from the resources.
#[derive(Debug, Clone)]
pub struct Header {
    pub sending_application: String,
    pub sending_facility: String,
    pub receiving_application: String,
    pub receiving_facility: String,
    /// MSH-10, which the receiver's ACK echoes in MSA-2; the same on every resend of a message.
    pub message_control_id: String,
    /// MSH-7 (and EVN-2).
    pub timestamp: DateTime<FixedOffset>,
    pub processing_id: ProcessingId,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("{kind:?} is made from {needs}")]
    ResourcesDoNotMatch {
        kind: EventKind,
        needs: &'static str,
    },
    #[error("expected a {expected} resource, got {found:?}")]
    WrongResourceType {
        expected: &'static str,
        found: String,
    },
    #[error(
        "the message control id (MSH-10) must be 1 to {MAX_CONTROL_ID} printable ASCII characters without HL7 delimiters"
    )]
    InvalidControlId,
}

/// The message text: every segment ends with a carriage return, the HL7 segment terminator.
pub fn encode(
    kind: EventKind,
    resources: Resources<'_>,
    header: &Header,
) -> Result<String, EncodeError> {
    if !is_valid_control_id(&header.message_control_id) {
        return Err(EncodeError::InvalidControlId);
    }
    let mut segments = vec![msh(kind, header)];
    match (kind, resources) {
        (EventKind::PatientRegistered | EventKind::PatientUpdated, Resources::Patient(patient)) => {
            expect_type(patient, "Patient")?;
            segments.push(evn(kind, header));
            segments.push(pid(patient));
            // ADT_A01 requires a PV1; "N" (not applicable): registration is not a visit.
            segments.push(Segment::new("PV1").with(1, "1".into()).with(2, "N".into()));
        }
        (
            EventKind::AppointmentBooked
            | EventKind::AppointmentRescheduled
            | EventKind::AppointmentModified
            | EventKind::AppointmentCheckedIn
            | EventKind::AppointmentCancelled
            | EventKind::AppointmentNoShow,
            Resources::Appointment {
                appointment,
                patient,
            },
        ) => {
            expect_type(appointment, "Appointment")?;
            expect_type(patient, "Patient")?;
            schedule_segments(appointment, patient, &mut segments);
        }
        (
            EventKind::ResultAvailable,
            Resources::Result {
                observation,
                patient,
            },
        ) => {
            expect_type(observation, "Observation")?;
            expect_type(patient, "Patient")?;
            segments.push(pid(patient));
            segments.push(obr(observation));
            segments.push(obx(observation));
        }
        (kind, _) => {
            let needs = match kind {
                EventKind::PatientRegistered | EventKind::PatientUpdated => "a Patient",
                EventKind::ResultAvailable => "an Observation and its Patient",
                _ => "an Appointment and its Patient",
            };
            return Err(EncodeError::ResourcesDoNotMatch { kind, needs });
        }
    }
    Ok(segments.iter().map(|s| s.render() + "\r").collect())
}

fn is_valid_control_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CONTROL_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"|^~\\&".contains(&b))
}

fn expect_type(resource: &Json, expected: &'static str) -> Result<(), EncodeError> {
    let found = text(resource, "resourceType");
    if found == expected {
        Ok(())
    } else {
        Err(EncodeError::WrongResourceType {
            expected,
            found: found.to_owned(),
        })
    }
}

// ---- Segments ----

fn msh(kind: EventKind, header: &Header) -> Segment {
    let processing = match header.processing_id {
        ProcessingId::Production => "P",
        ProcessingId::Training => "T",
    };
    Segment::new("MSH")
        .with(3, escape(&header.sending_application))
        .with(4, escape(&header.sending_facility))
        .with(5, escape(&header.receiving_application))
        .with(6, escape(&header.receiving_facility))
        .with(7, header_time(header))
        .with(9, components(kind.message_type().map(String::from)))
        .with(10, header.message_control_id.clone())
        .with(11, processing.into())
        .with(12, VERSION.into())
        // Names and addresses are not ASCII everywhere; the bytes on the wire are UTF-8.
        .with(18, "UNICODE UTF-8".into())
}

fn header_time(header: &Header) -> String {
    header.timestamp.format("%Y%m%d%H%M%S%z").to_string()
}

fn evn(kind: EventKind, header: &Header) -> Segment {
    Segment::new("EVN")
        .with(1, kind.message_type()[1].into())
        .with(2, header_time(header))
}

fn pid(patient: &Json) -> Segment {
    let identifiers = items(patient, "identifier").filter_map(|identifier| {
        let value = text(identifier, "value");
        (!value.is_empty()).then(|| {
            components([
                escape(value),
                String::new(),
                String::new(),
                assigning_authority(text(identifier, "system")),
                escape(&v2_code(identifier.get("type"), V2_0203)),
            ])
        })
    });
    let names = items(patient, "name").map(|name| {
        let given: Vec<&str> = items(name, "given").filter_map(Json::as_str).collect();
        let joined = |list: Vec<&str>| list.join(" ");
        components([
            escape(text(name, "family")),
            escape(given.first().copied().unwrap_or("")),
            escape(
                &given
                    .get(1..)
                    .map(<[&str]>::to_vec)
                    .map(joined)
                    .unwrap_or_default(),
            ),
            escape(&joined(
                items(name, "suffix").filter_map(Json::as_str).collect(),
            )),
            escape(&joined(
                items(name, "prefix").filter_map(Json::as_str).collect(),
            )),
            String::new(),
            name_type(text(name, "use")).into(),
        ])
    });
    let addresses = items(patient, "address").map(|address| {
        let lines: Vec<&str> = items(address, "line").filter_map(Json::as_str).collect();
        components([
            escape(lines.first().copied().unwrap_or("")),
            escape(
                &lines
                    .get(1..)
                    .map(|rest| rest.join(", "))
                    .unwrap_or_default(),
            ),
            escape(text(address, "city")),
            escape(text(address, "state")),
            escape(text(address, "postalCode")),
            escape(text(address, "country")),
            address_type(text(address, "use")).into(),
        ])
    });
    let telecoms = |work: bool| {
        items(patient, "telecom")
            .filter(move |telecom| (text(telecom, "use") == "work") == work)
            .filter_map(telecom)
            .collect::<Vec<_>>()
    };
    Segment::new("PID")
        .with(1, "1".into())
        .with(3, repetitions(identifiers))
        .with(5, repetitions(names))
        .with(7, hl7_time(text(patient, "birthDate")))
        .with(8, sex(text(patient, "gender")).into())
        .with(11, repetitions(addresses))
        .with(13, repetitions(telecoms(false)))
        .with(14, repetitions(telecoms(true)))
}

/// An XTN: phones by their number (XTN-1), e-mail in XTN-4; other systems are left out.
fn telecom(telecom: &Json) -> Option<String> {
    let value = text(telecom, "value");
    if value.is_empty() {
        return None;
    }
    let usage = if text(telecom, "use") == "work" {
        "WPN"
    } else {
        "PRN"
    };
    let equipment = match (text(telecom, "system"), text(telecom, "use")) {
        ("email", _) => return Some(components(["", "NET", "Internet", &escape(value)])),
        ("phone", "mobile") => "CP",
        ("phone", _) => "PH",
        ("fax", _) => "FX",
        ("pager", _) => "BP",
        _ => return None,
    };
    Some(components([&escape(value), usage, equipment]))
}

fn schedule_segments(appointment: &Json, patient: &Json, segments: &mut Vec<Segment>) {
    let start = hl7_time(text(appointment, "start"));
    let end = hl7_time(text(appointment, "end"));
    let duration = appointment
        .get("minutesDuration")
        .map(number)
        .unwrap_or_default();
    let minutes = if duration.is_empty() {
        String::new()
    } else {
        components(["min", "minutes", "UCUM"])
    };
    let status = filler_status(text(appointment, "status"));
    let reason = match appointment.pointer("/reasonCode/0") {
        Some(concept) => coded(concept),
        None => components(["", &escape(text(appointment, "description"))]),
    };
    let mut sch = Segment::new("SCH")
        .with(2, entity_id(appointment))
        .with(7, reason)
        .with(
            8,
            appointment
                .get("appointmentType")
                .map(coded)
                .unwrap_or_default(),
        )
        .with(9, duration.clone())
        .with(10, minutes.clone())
        .with(11, components(["", "", "", &start, &end]))
        .with(25, components([status, status, "HL70278"]));
    if let Some(reason) = appointment.get("cancelationReason") {
        sch = sch.with(6, coded(reason));
    }
    segments.push(sch);
    let comment = text(appointment, "comment");
    if !comment.is_empty() {
        segments.push(
            Segment::new("NTE")
                .with(1, "1".into())
                .with(3, escape(comment)),
        );
    }
    segments.push(pid(patient));
    segments.push(Segment::new("RGS").with(1, "1".into()));
    let service = appointment
        .pointer("/serviceType/0")
        .or_else(|| appointment.get("appointmentType"));
    if let Some(service) = service {
        segments.push(
            Segment::new("AIS")
                .with(1, "1".into())
                .with(3, coded(service))
                .with(4, start.clone())
                .with(7, duration.clone())
                .with(8, minutes.clone()),
        );
    }
    let (mut general, mut locations, mut personnel) = (0, 0, 0);
    for participant in items(appointment, "participant") {
        let reference = participant
            .pointer("/actor/reference")
            .and_then(Json::as_str);
        let Some((resource_type, id)) = reference.and_then(split_reference) else {
            continue;
        };
        let display = participant
            .pointer("/actor/display")
            .and_then(Json::as_str)
            .unwrap_or("");
        let role = participant
            .pointer("/type/0")
            .map(coded)
            .unwrap_or_default();
        let segment = match resource_type {
            // The patient is the PID.
            "Patient" => continue,
            "Practitioner" | "PractitionerRole" => {
                personnel += 1;
                Segment::new("AIP")
                    .with(1, personnel.to_string())
                    .with(3, components([escape(id)]))
                    .with(4, role)
                    .with(6, start.clone())
                    .with(9, duration.clone())
                    .with(10, minutes.clone())
            }
            "Location" => {
                locations += 1;
                let mut place = vec![String::new(); 9];
                place[0] = escape(id);
                place[8] = escape(display);
                Segment::new("AIL")
                    .with(1, locations.to_string())
                    .with(3, components(place))
                    .with(4, role)
                    .with(6, start.clone())
                    .with(9, duration.clone())
                    .with(10, minutes.clone())
            }
            _ => {
                general += 1;
                Segment::new("AIG")
                    .with(1, general.to_string())
                    .with(3, components([escape(id), escape(display)]))
                    .with(4, components([escape(resource_type)]))
                    .with(8, start.clone())
                    .with(11, duration.clone())
                    .with(12, minutes.clone())
            }
        };
        segments.push(segment);
    }
}

/// `Type/id`, also at the end of an absolute URL; contained (`#`) references have no id here.
fn split_reference(reference: &str) -> Option<(&str, &str)> {
    let mut parts = reference.rsplit('/');
    let id = parts.next()?;
    let resource_type = parts.next()?;
    (!id.is_empty() && resource_type.starts_with(|c: char| c.is_ascii_uppercase()))
        .then_some((resource_type, id))
}

fn obr(observation: &Json) -> Segment {
    Segment::new("OBR")
        .with(1, "1".into())
        .with(3, entity_id(observation))
        .with(4, observation.get("code").map(coded).unwrap_or_default())
        .with(7, hl7_time(effective(observation)))
        .with(22, hl7_time(text(observation, "issued")))
        .with(25, result_status(text(observation, "status")).into())
}

fn obx(observation: &Json) -> Segment {
    let (value_type, value, units) = observation_value(observation);
    let interpretations = items(observation, "interpretation").map(|concept| {
        escape(
            concept
                .pointer("/coding/0/code")
                .and_then(Json::as_str)
                .unwrap_or(""),
        )
    });
    Segment::new("OBX")
        .with(1, "1".into())
        .with(2, value_type.into())
        .with(3, observation.get("code").map(coded).unwrap_or_default())
        .with(5, value)
        .with(6, units)
        .with(
            7,
            observation
                .pointer("/referenceRange/0")
                .map(reference_range)
                .unwrap_or_default(),
        )
        .with(8, repetitions(interpretations))
        .with(11, result_status(text(observation, "status")).into())
        .with(14, hl7_time(effective(observation)))
}

/// OBX-2, OBX-5 and OBX-6 from `value[x]`; a type not listed leaves all three empty.
fn observation_value(observation: &Json) -> (&'static str, String, String) {
    let units = |quantity: &Json| {
        let unit = text(quantity, "unit");
        let code = text(quantity, "code");
        let code = if code.is_empty() { unit } else { code };
        if code.is_empty() {
            return String::new();
        }
        components([
            escape(code),
            escape(unit),
            escape(&coding_system_name(text(quantity, "system"))),
        ])
    };
    if let Some(quantity) = observation.get("valueQuantity") {
        let value = quantity.get("value").map(number).unwrap_or_default();
        let comparator = text(quantity, "comparator");
        return if comparator.is_empty() {
            ("NM", value, units(quantity))
        } else {
            (
                "SN",
                components([escape(comparator), value]),
                units(quantity),
            )
        };
    }
    if let Some(range) = observation.get("valueRange") {
        let bound = |name: &str| range.pointer(name).map(number).unwrap_or_default();
        let low = range.get("low").unwrap_or(&Json::Null);
        let unit_source = if low.is_object() {
            low
        } else {
            range.get("high").unwrap_or(&Json::Null)
        };
        let value = components([
            String::new(),
            bound("/low/value"),
            "-".into(),
            bound("/high/value"),
        ]);
        return ("SN", value, units(unit_source));
    }
    if let Some(integer) = observation.get("valueInteger") {
        return ("NM", number(integer), String::new());
    }
    if let Some(Json::String(value)) = observation.get("valueString") {
        return ("ST", escape(value), String::new());
    }
    if let Some(concept) = observation.get("valueCodeableConcept") {
        return ("CE", coded(concept), String::new());
    }
    ("", String::new(), String::new())
}

/// OBX-7: the range's text, else `low-high`, `>low` or `<high`.
fn reference_range(range: &Json) -> String {
    let given = text(range, "text");
    if !given.is_empty() {
        return escape(given);
    }
    let bound = |name: &str| range.pointer(name).map(number).unwrap_or_default();
    let (low, high) = (bound("/low/value"), bound("/high/value"));
    match (low.is_empty(), high.is_empty()) {
        (false, false) => format!("{low}-{high}"),
        (false, true) => format!(">{low}"),
        (true, false) => format!("<{high}"),
        (true, true) => String::new(),
    }
}

fn effective(observation: &Json) -> &str {
    ["effectiveDateTime", "effectiveInstant"]
        .iter()
        .map(|name| text(observation, name))
        .find(|value| !value.is_empty())
        .or_else(|| {
            observation
                .pointer("/effectivePeriod/start")
                .and_then(Json::as_str)
        })
        .unwrap_or("")
}

// ---- Data types ----

const V2_0203: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";

/// An EI: the resource's first identifier (value and system), else its id.
fn entity_id(resource: &Json) -> String {
    match resource.pointer("/identifier/0") {
        Some(identifier) if !text(identifier, "value").is_empty() => {
            let system = text(identifier, "system");
            let (universal, kind) = universal_id(system);
            components([
                escape(text(identifier, "value")),
                String::new(),
                escape(universal),
                kind.into(),
            ])
        }
        _ => escape(text(resource, "id")),
    }
}

/// CX-4: an HD with the identifier system as its universal id (an OID as ISO, else a URI).
fn assigning_authority(system: &str) -> String {
    if system.is_empty() {
        return String::new();
    }
    let (universal, kind) = universal_id(system);
    subcomponents([String::new(), escape(universal), kind.into()])
}

fn universal_id(system: &str) -> (&str, &'static str) {
    match system.strip_prefix("urn:oid:") {
        Some(oid) => (oid, "ISO"),
        None if system.is_empty() => ("", ""),
        None => (system, "URI"),
    }
}

/// A CE from a CodeableConcept: the first coding (code, display or else the text, system name),
/// or only the text.
fn coded(concept: &Json) -> String {
    let concept_text = text(concept, "text");
    match concept.pointer("/coding/0") {
        Some(coding) => {
            let display = text(coding, "display");
            components([
                escape(text(coding, "code")),
                escape(if display.is_empty() {
                    concept_text
                } else {
                    display
                }),
                escape(&coding_system_name(text(coding, "system"))),
            ])
        }
        None => components(["", &escape(concept_text)]),
    }
}

/// CE-3: HL7 table 0396 names for the systems Portico's adapters use, else the system URI itself.
fn coding_system_name(system: &str) -> String {
    if let Some(table) = system.strip_prefix("http://terminology.hl7.org/CodeSystem/v2-") {
        return format!("HL7{table}");
    }
    match system {
        "http://loinc.org" => "LN",
        "http://snomed.info/sct" => "SCT",
        "http://unitsofmeasure.org" => "UCUM",
        "http://hl7.org/fhir/sid/icd-10-cm" => "I10",
        "http://www.ama-assn.org/go/cpt" => "C4",
        "http://www.nlm.nih.gov/research/umls/rxnorm" => "RXNORM",
        "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation" => "HL70078",
        other => other,
    }
    .to_owned()
}

/// The code of the concept's first coding in `system`.
fn v2_code(concept: Option<&Json>, system: &str) -> String {
    concept
        .map(|concept| items(concept, "coding"))
        .into_iter()
        .flatten()
        .find(|coding| text(coding, "system") == system)
        .map(|coding| text(coding, "code").to_owned())
        .unwrap_or_default()
}

/// A FHIR date, dateTime or instant as an HL7 DTM (`1958`, `200107`, `20260114103000-0500`);
/// anything that is not one is left out rather than sent garbled.
pub fn hl7_time(value: &str) -> String {
    let (date, time) = match value.split_once('T') {
        Some((date, time)) => (date, Some(time)),
        None => (value, None),
    };
    let date_parts: Vec<&str> = date.split('-').collect();
    // Width and range of year, month and day.
    let limits = [(4, 0, 9999), (2, 1, 12), (2, 1, 31)];
    let date_ok = date_parts.len() <= 3
        && date_parts
            .iter()
            .zip(limits)
            .all(|(part, limits)| within(part, limits));
    if !date_ok || (time.is_some() && date_parts.len() != 3) {
        return String::new();
    }
    let mut out = date_parts.concat();
    let Some(time) = time else {
        return out;
    };
    let zone_start = time.find(['Z', '+', '-']).unwrap_or(time.len());
    let (clock, zone) = time.split_at(zone_start);
    let clock_parts: Vec<&str> = clock.split(':').collect();
    let (whole_seconds, fraction) = match clock_parts.get(2) {
        Some(seconds) => seconds.split_once('.').unwrap_or((seconds, "")),
        None => ("", ""),
    };
    let clock_ok = (2..=3).contains(&clock_parts.len())
        && within(clock_parts[0], (2, 0, 23))
        && within(clock_parts[1], (2, 0, 59))
        && (clock_parts.len() == 2 || within(whole_seconds, (2, 0, 60)))
        && (fraction.is_empty() || digits(fraction));
    let zone = match zone {
        "" => Some(String::new()),
        "Z" => Some("+0000".to_owned()),
        offset => {
            let (hours, minutes) = offset[1..].split_once(':').unwrap_or(("", ""));
            (hours.len() == 2 && minutes.len() == 2 && digits(hours) && digits(minutes))
                .then(|| format!("{}{hours}{minutes}", &offset[..1]))
        }
    };
    let (true, Some(zone)) = (clock_ok, zone) else {
        return String::new();
    };
    out.push_str(clock_parts[0]);
    out.push_str(clock_parts[1]);
    out.push_str(whole_seconds);
    if !fraction.is_empty() {
        out.push('.');
        // DTM carries at most four decimal places.
        out.push_str(&fraction[..fraction.len().min(4)]);
    }
    out + &zone
}

/// `text` is `width` digits with a value from `low` to `high`.
fn within(text: &str, (width, low, high): (usize, u32, u32)) -> bool {
    text.len() == width
        && digits(text)
        && text.parse().is_ok_and(|n: u32| (low..=high).contains(&n))
}

fn digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

fn number(value: &Json) -> String {
    match value {
        Json::Number(number) => number.to_string(),
        _ => String::new(),
    }
}

fn sex(gender: &str) -> &'static str {
    match gender {
        "male" => "M",
        "female" => "F",
        "other" => "O",
        "unknown" => "U",
        _ => "",
    }
}

/// HL7 table 0200 from HumanName.use (the v2-to-FHIR mapping's pairs).
fn name_type(name_use: &str) -> &'static str {
    match name_use {
        "official" => "L",
        "usual" => "D",
        "nickname" => "N",
        "maiden" => "M",
        "anonymous" => "S",
        "temp" => "TEMP",
        _ => "",
    }
}

/// HL7 table 0190 from Address.use.
fn address_type(address_use: &str) -> &'static str {
    match address_use {
        "home" => "H",
        "work" => "B",
        "temp" => "C",
        "old" => "BA",
        _ => "",
    }
}

/// HL7 table 0278 from Appointment.status (arrived and checked-in have begun: Started).
fn filler_status(status: &str) -> &'static str {
    match status {
        "proposed" | "pending" => "Pending",
        "booked" => "Booked",
        "arrived" | "checked-in" => "Started",
        "fulfilled" => "Complete",
        "cancelled" => "Cancelled",
        "noshow" => "Noshow",
        "entered-in-error" => "Deleted",
        "waitlist" => "Waitlist",
        _ => "",
    }
}

/// HL7 table 0085 (OBR-25, OBX-11) from Observation.status.
fn result_status(status: &str) -> &'static str {
    match status {
        "final" => "F",
        "preliminary" => "P",
        "amended" | "corrected" => "C",
        "registered" => "I",
        "cancelled" => "X",
        "entered-in-error" => "W",
        _ => "",
    }
}

// ---- Encoding ----

/// Escapes a value for any position in a message: the five delimiters become `\F\ \S\ \T\ \R\ \E\`
/// and ASCII control characters (CR and LF, but also MLLP's 0x0B and 0x1C) become `\Xhh\`, so a
/// value can neither end a segment nor a frame.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\E\\"),
            '|' => out.push_str("\\F\\"),
            '^' => out.push_str("\\S\\"),
            '&' => out.push_str("\\T\\"),
            '~' => out.push_str("\\R\\"),
            c if c.is_ascii_control() => out.push_str(&format!("\\X{:02X}\\", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Joins already-escaped parts with `separator`, dropping trailing empty ones.
fn join<S: Into<String>>(separator: char, parts: impl IntoIterator<Item = S>) -> String {
    let mut parts: Vec<String> = parts.into_iter().map(Into::into).collect();
    while parts.last().is_some_and(String::is_empty) {
        parts.pop();
    }
    parts.join(&separator.to_string())
}

fn components<S: Into<String>>(parts: impl IntoIterator<Item = S>) -> String {
    join('^', parts)
}

fn subcomponents<S: Into<String>>(parts: impl IntoIterator<Item = S>) -> String {
    join('&', parts)
}

/// Repetitions of a field; empty ones are dropped.
fn repetitions(items: impl IntoIterator<Item = String>) -> String {
    items
        .into_iter()
        .filter(|item| !item.is_empty())
        .collect::<Vec<_>>()
        .join("~")
}

fn text<'a>(value: &'a Json, key: &str) -> &'a str {
    value.get(key).and_then(Json::as_str).unwrap_or("")
}

fn items<'a>(value: &'a Json, key: &str) -> impl Iterator<Item = &'a Json> + use<'a> {
    value
        .get(key)
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
}

/// One segment: fields by their HL7 number (1-based), already encoded.
struct Segment {
    id: &'static str,
    fields: Vec<String>,
}

impl Segment {
    fn new(id: &'static str) -> Segment {
        Segment {
            id,
            fields: Vec::new(),
        }
    }

    fn with(mut self, number: usize, value: String) -> Segment {
        if self.fields.len() < number {
            self.fields.resize(number, String::new());
        }
        self.fields[number - 1] = value;
        self
    }

    fn render(&self) -> String {
        if self.id == "MSH" {
            // MSH-1 is the field separator itself and MSH-2 the other delimiters, unescaped.
            let rest = join('|', self.fields.iter().skip(2).cloned());
            return format!("MSH|^~\\&|{rest}");
        }
        let fields = join('|', self.fields.iter().cloned());
        if fields.is_empty() {
            self.id.to_owned()
        } else {
            format!("{}|{fields}", self.id)
        }
    }
}

#[cfg(test)]
mod tests;
