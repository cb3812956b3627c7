//! Unit tests of the HL7 v2 encoder: exact segments per message type for fixed resources shaped
//! as Portico serves them, escaping, partial dates, and resources with nothing optional.

use chrono::DateTime;
use serde_json::{Value as Json, json};

use super::*;

fn header() -> Header {
    Header {
        sending_application: "PORTICO".into(),
        sending_facility: "Main St Clinic".into(),
        receiving_application: "MIRTH".into(),
        receiving_facility: "EHR".into(),
        message_control_id: "EVT-42".into(),
        timestamp: DateTime::parse_from_rfc3339("2026-01-14T10:31:05-05:00").unwrap(),
        processing_id: ProcessingId::Production,
    }
}

/// Patient/1 of the OpenEMR demo, as Portico serves it.
fn patient() -> Json {
    json!({
        "resourceType": "Patient",
        "id": "1",
        "identifier": [
            {"use": "usual", "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}, "system": "urn:portico:openemr:pid", "value": "1"},
            {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "PT"}]}, "system": "urn:portico:openemr:pubpid", "value": "MRN0000001"}
        ],
        "active": true,
        "name": [{"use": "official", "family": "Garcia", "given": ["Robert", "Marie"]}],
        "telecom": [
            {"system": "phone", "value": "555-029-9539", "use": "home"},
            {"system": "phone", "value": "555-033-3315", "use": "mobile"},
            {"system": "phone", "value": "555-010-2000", "use": "work"},
            {"system": "email", "value": "robert@example.com", "use": "home"}
        ],
        "gender": "male",
        "birthDate": "1963-02-22",
        "address": [{"line": ["482 Elm St", "Apt 29"], "city": "Madison", "state": "WI", "postalCode": "53703", "country": "US"}],
        "generalPractitioner": [{"reference": "Practitioner/8"}]
    })
}

fn segments(message: &str) -> Vec<&str> {
    assert!(message.ends_with('\r'), "every segment ends with CR");
    message.trim_end_matches('\r').split('\r').collect()
}

const PID: &str = "PID|1||1^^^&urn:portico:openemr:pid&URI^MR~MRN0000001^^^&urn:portico:openemr:pubpid&URI^PT||Garcia^Robert^Marie^^^^L||19630222|M|||482 Elm St^Apt 29^Madison^WI^53703^US||555-029-9539^PRN^PH~555-033-3315^PRN^CP~^NET^Internet^robert@example.com|555-010-2000^WPN^PH";

#[test]
fn a_registered_patient_is_an_adt_a04() {
    let message = encode(
        EventKind::PatientRegistered,
        Resources::Patient(&patient()),
        &header(),
    )
    .unwrap();
    assert_eq!(
        segments(&message),
        [
            "MSH|^~\\&|PORTICO|Main St Clinic|MIRTH|EHR|20260114103105-0500||ADT^A04^ADT_A01|EVT-42|P|2.5.1||||||UNICODE UTF-8",
            "EVN|A04|20260114103105-0500",
            PID,
            "PV1|1|N",
        ]
    );
}

#[test]
fn an_updated_patient_is_an_adt_a08_in_training_mode_when_asked() {
    let mut header = header();
    header.processing_id = ProcessingId::Training;
    let message = encode(
        EventKind::PatientUpdated,
        Resources::Patient(&patient()),
        &header,
    )
    .unwrap();
    let segments = segments(&message);
    assert!(segments[0].contains("|ADT^A08^ADT_A01|EVT-42|T|2.5.1|"));
    assert_eq!(segments[1], "EVN|A08|20260114103105-0500");
}

fn appointment(status: &str) -> Json {
    json!({
        "resourceType": "Appointment",
        "id": "10",
        "identifier": [{"system": "urn:portico:openemr:pc_eid", "value": "10"}],
        "status": status,
        "appointmentType": {"coding": [{"system": "urn:portico:openemr:appointment-category", "code": "established_patient", "display": "Established Patient"}], "text": "Established Patient"},
        "description": "Office Visit",
        "start": "2026-01-14T10:30:00-05:00",
        "end": "2026-01-14T10:45:00-05:00",
        "minutesDuration": 15,
        "comment": "Patient requests morning slot",
        "participant": [
            {"type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PART", "display": "Participation"}]}], "actor": {"reference": "Patient/1"}, "status": "accepted"},
            {"type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PPRF", "display": "primary performer"}]}], "actor": {"reference": "Practitioner/3"}, "status": "accepted"},
            {"type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "LOC", "display": "location"}]}], "actor": {"reference": "Location/2", "display": "Room 2"}, "status": "accepted"},
            {"actor": {"reference": "Device/7", "display": "Chair"}, "status": "accepted"}
        ]
    })
}

#[test]
fn a_booked_appointment_is_an_siu_s12_with_its_resources() {
    let appointment = appointment("booked");
    let message = encode(
        EventKind::AppointmentBooked,
        Resources::Appointment {
            appointment: &appointment,
            patient: &patient(),
        },
        &header(),
    )
    .unwrap();
    assert_eq!(
        segments(&message),
        [
            "MSH|^~\\&|PORTICO|Main St Clinic|MIRTH|EHR|20260114103105-0500||SIU^S12^SIU_S12|EVT-42|P|2.5.1||||||UNICODE UTF-8",
            "SCH||10^^urn:portico:openemr:pc_eid^URI|||||^Office Visit|established_patient^Established Patient^urn:portico:openemr:appointment-category|15|min^minutes^UCUM|^^^20260114103000-0500^20260114104500-0500||||||||||||||Booked^Booked^HL70278",
            "NTE|1||Patient requests morning slot",
            PID,
            "RGS|1",
            "AIS|1||established_patient^Established Patient^urn:portico:openemr:appointment-category|20260114103000-0500|||15|min^minutes^UCUM",
            "AIP|1||3|PPRF^primary performer^http://terminology.hl7.org/CodeSystem/v3-ParticipationType||20260114103000-0500|||15|min^minutes^UCUM",
            "AIL|1||2^^^^^^^^Room 2|LOC^location^http://terminology.hl7.org/CodeSystem/v3-ParticipationType||20260114103000-0500|||15|min^minutes^UCUM",
            "AIG|1||7^Chair|Device||||20260114103000-0500|||15|min^minutes^UCUM",
        ]
    );
}

#[test]
fn each_appointment_event_has_its_trigger_and_filler_status() {
    let cases = [
        (EventKind::AppointmentBooked, "booked", "S12", "Booked"),
        (EventKind::AppointmentRescheduled, "booked", "S13", "Booked"),
        (EventKind::AppointmentModified, "booked", "S14", "Booked"),
        (EventKind::AppointmentCheckedIn, "arrived", "S14", "Started"),
        (
            EventKind::AppointmentCheckedIn,
            "checked-in",
            "S14",
            "Started",
        ),
        (
            EventKind::AppointmentCancelled,
            "cancelled",
            "S15",
            "Cancelled",
        ),
        (EventKind::AppointmentNoShow, "noshow", "S26", "Noshow"),
    ];
    for (kind, status, trigger, filler) in cases {
        let appointment = appointment(status);
        let message = encode(
            kind,
            Resources::Appointment {
                appointment: &appointment,
                patient: &patient(),
            },
            &header(),
        )
        .unwrap();
        let segments = segments(&message);
        assert!(
            segments[0].contains(&format!("|SIU^{trigger}^SIU_S12|")),
            "{kind:?}"
        );
        assert!(
            segments[1].ends_with(&format!("|{filler}^{filler}^HL70278")),
            "{kind:?}: {}",
            segments[1]
        );
    }
}

#[test]
fn a_cancellation_carries_its_reason_and_a_reason_code_wins_over_the_description() {
    let mut appointment = appointment("cancelled");
    appointment["cancelationReason"] = json!({"text": "Broken appointment"});
    appointment["reasonCode"] = json!([{"coding": [{"system": "http://snomed.info/sct", "code": "185389009", "display": "Follow-up visit"}]}]);
    let message = encode(
        EventKind::AppointmentCancelled,
        Resources::Appointment {
            appointment: &appointment,
            patient: &patient(),
        },
        &header(),
    )
    .unwrap();
    let sch: Vec<&str> = segments(&message)[1].split('|').collect();
    assert_eq!(sch[6], "^Broken appointment");
    assert_eq!(sch[7], "185389009^Follow-up visit^SCT");
}

fn lab() -> Json {
    json!({
        "resourceType": "Observation",
        "id": "lab-300",
        "status": "preliminary",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7", "display": "Glucose [Mass/volume] in Serum or Plasma"}]},
        "subject": {"reference": "Patient/1"},
        "effectiveDateTime": "2023-04-28T15:20:00-04:00",
        "issued": "2023-04-29T11:20:00-04:00",
        "valueQuantity": {"value": 138, "unit": "mg/dL", "system": "http://unitsofmeasure.org", "code": "mg/dL"},
        "interpretation": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": "H"}]}],
        "referenceRange": [{"text": "70-99"}]
    })
}

#[test]
fn a_result_is_an_oru_r01_with_obr_and_obx() {
    let message = encode(
        EventKind::ResultAvailable,
        Resources::Result {
            observation: &lab(),
            patient: &patient(),
        },
        &header(),
    )
    .unwrap();
    assert_eq!(
        segments(&message),
        [
            "MSH|^~\\&|PORTICO|Main St Clinic|MIRTH|EHR|20260114103105-0500||ORU^R01^ORU_R01|EVT-42|P|2.5.1||||||UNICODE UTF-8",
            PID,
            "OBR|1||lab-300|2345-7^Glucose [Mass/volume] in Serum or Plasma^LN|||20230428152000-0400|||||||||||||||20230429112000-0400|||P",
            "OBX|1|NM|2345-7^Glucose [Mass/volume] in Serum or Plasma^LN||138|mg/dL^mg/dL^UCUM|70-99|H|||P|||20230428152000-0400",
        ]
    );
}

fn obx_for(value: (&str, Json), status: &str) -> Vec<String> {
    let mut observation = lab();
    observation.as_object_mut().unwrap().remove("valueQuantity");
    observation["status"] = json!(status);
    observation[value.0] = value.1;
    let message = encode(
        EventKind::ResultAvailable,
        Resources::Result {
            observation: &observation,
            patient: &patient(),
        },
        &header(),
    )
    .unwrap();
    segments(&message)[3]
        .split('|')
        .map(str::to_owned)
        .collect()
}

#[test]
fn obx_value_types_follow_value_x_and_status_maps_to_f_p_c() {
    let obx = obx_for(("valueString", json!("Positive | see note")), "final");
    assert_eq!(
        (&*obx[2], &*obx[5], &*obx[11]),
        ("ST", "Positive \\F\\ see note", "F")
    );
    let obx = obx_for(
        (
            "valueCodeableConcept",
            json!({"coding": [{"system": "http://snomed.info/sct", "code": "260385009", "display": "Negative"}]}),
        ),
        "corrected",
    );
    assert_eq!(
        (&*obx[2], &*obx[5], &*obx[11]),
        ("CE", "260385009^Negative^SCT", "C")
    );
    let obx = obx_for(
        (
            "valueQuantity",
            json!({"value": 0.5, "comparator": "<", "unit": "mg/L"}),
        ),
        "amended",
    );
    assert_eq!((&*obx[2], &*obx[5], &*obx[6]), ("SN", "<^0.5", "mg/L^mg/L"));
    let obx = obx_for(
        (
            "valueRange",
            json!({"low": {"value": 10}, "high": {"value": 20}}),
        ),
        "final",
    );
    assert_eq!((&*obx[2], &*obx[5]), ("SN", "^10^-^20"));
    // A value type the channel does not carry leaves OBX-2 and OBX-5 empty.
    let obx = obx_for(("valueBoolean", json!(true)), "final");
    assert_eq!((&*obx[2], &*obx[5]), ("", ""));
}

#[test]
fn a_reference_range_without_text_is_written_from_its_bounds() {
    for (range, expected) in [
        (
            json!({"low": {"value": 4}, "high": {"value": 5.6}}),
            "4-5.6",
        ),
        (json!({"low": {"value": 4}}), ">4"),
        (json!({"high": {"value": 200}}), "<200"),
    ] {
        assert_eq!(reference_range(&range), expected);
    }
}

#[test]
fn every_delimiter_and_line_break_in_a_value_is_escaped() {
    assert_eq!(
        escape("a|b^c&d~e\\f\rg\nh\u{0b}i\u{1c}j"),
        "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f\\X0D\\g\\X0A\\h\\X0B\\i\\X1C\\j"
    );
    let mut patient = patient();
    patient["name"] = json!([{"family": "O'Brien|Smith", "given": ["Ann^Marie", "Lou & Co"]}]);
    patient["address"] = json!([{"line": ["1 Main St\r\nBuilding ~2"], "city": "Back\\slash"}]);
    let message = encode(
        EventKind::PatientUpdated,
        Resources::Patient(&patient),
        &header(),
    )
    .unwrap();
    let pid: Vec<&str> = segments(&message)[2].split('|').collect();
    assert_eq!(pid[5], "O'Brien\\F\\Smith^Ann\\S\\Marie^Lou \\T\\ Co");
    assert_eq!(
        pid[11],
        "1 Main St\\X0D\\\\X0A\\Building \\R\\2^^Back\\E\\slash"
    );
    assert_eq!(segments(&message).len(), 4, "no raw CR inside a field");
    assert!(!message.contains('\n'));
}

#[test]
fn partial_dates_and_instants_become_dtm_of_their_precision() {
    for (fhir, hl7) in [
        ("1958", "1958"),
        ("2001-07", "200107"),
        ("1963-02-22", "19630222"),
        ("2026-01-14T10:30:00-05:00", "20260114103000-0500"),
        ("2026-01-14T15:30:00Z", "20260114153000+0000"),
        (
            "2026-01-14T15:30:00.123456+01:00",
            "20260114153000.1234+0100",
        ),
        ("2026-01-14T15:30", "202601141530"),
        ("1958-00-00", ""),
        ("not a date", ""),
        ("2026-01-14T25:00", ""),
        ("2026-13-01", ""),
        ("", ""),
    ] {
        assert_eq!(hl7_time(fhir), hl7, "{fhir}");
    }
    let mut patient = patient();
    patient["birthDate"] = json!("200107");
    assert_eq!(pid(&patient).fields[6], "", "a malformed date is left out");
    patient["birthDate"] = json!("2001-07");
    assert_eq!(pid(&patient).fields[6], "200107");
    patient["birthDate"] = json!("1958");
    assert_eq!(pid(&patient).fields[6], "1958");
}

#[test]
fn missing_optional_data_leaves_fields_empty() {
    let patient = json!({"resourceType": "Patient", "id": "9"});
    let appointment = json!({"resourceType": "Appointment", "id": "5", "status": "booked", "participant": [{"status": "accepted"}]});
    let observation = json!({"resourceType": "Observation", "id": "o1", "status": "unknown", "code": {"text": "Note"}});
    let adt = encode(
        EventKind::PatientRegistered,
        Resources::Patient(&patient),
        &header(),
    )
    .unwrap();
    assert_eq!(segments(&adt)[2], "PID|1");
    let siu = encode(
        EventKind::AppointmentBooked,
        Resources::Appointment {
            appointment: &appointment,
            patient: &patient,
        },
        &header(),
    )
    .unwrap();
    assert_eq!(
        segments(&siu)[1..],
        [
            "SCH||5|||||||||||||||||||||||Booked^Booked^HL70278",
            "PID|1",
            "RGS|1"
        ]
    );
    let oru = encode(
        EventKind::ResultAvailable,
        Resources::Result {
            observation: &observation,
            patient: &patient,
        },
        &header(),
    )
    .unwrap();
    assert_eq!(
        segments(&oru)[1..],
        ["PID|1", "OBR|1||o1|^Note", "OBX|1||^Note"]
    );
}

#[test]
fn resources_that_do_not_fit_the_event_are_refused() {
    let patient = patient();
    assert_eq!(
        encode(
            EventKind::AppointmentBooked,
            Resources::Patient(&patient),
            &header()
        ),
        Err(EncodeError::ResourcesDoNotMatch {
            kind: EventKind::AppointmentBooked,
            needs: "an Appointment and its Patient"
        })
    );
    assert_eq!(
        encode(
            EventKind::ResultAvailable,
            Resources::Result {
                observation: &patient,
                patient: &patient
            },
            &header()
        ),
        Err(EncodeError::WrongResourceType {
            expected: "Observation",
            found: "Patient".into()
        })
    );
    for id in ["", "a|b", "line\rbreak", &"x".repeat(200)] {
        let mut header = header();
        header.message_control_id = id.to_owned();
        assert_eq!(
            encode(
                EventKind::PatientUpdated,
                Resources::Patient(&patient),
                &header
            ),
            Err(EncodeError::InvalidControlId),
            "{id:?}"
        );
    }
}
