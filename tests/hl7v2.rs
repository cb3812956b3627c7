//! The HL7 v2 channel against a real peer: tests/python/mllp_receiver.py, an MLLP server made with
//! PyPI `hl7` (pinned in tests/python/requirements.txt, in the venv tests/python/venv.sh builds)
//! that parses every message with `hl7.parse` and reports its fields. Messages are encoded from
//! the resources a running Portico serves (OpenEMR demo data on SQLite) and from resources made to
//! carry delimiters, line breaks and partial dates; every ACK the peer can give is classified.

mod common;

use std::process::Stdio;
use std::time::Duration;

use chrono::DateTime;
use common::{Fhir, python_dir, venv};
use portico::demo::seed_openemr;
use portico::subscriptions::hl7v2::{EventKind, Header, ProcessingId, Resources, encode};
use portico::subscriptions::mllp::{
    AckCode, DeliveryOutcome, MllpSender, MllpTimeouts, OutgoingMessage, RetryCause,
};
use serde_json::{Value as Json, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

/// A running mllp_receiver.py.
struct Peer {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    port: u16,
}

impl Peer {
    /// Starts the receiver on `port` (0: any free one) and waits until it listens.
    async fn start(port: u16) -> Peer {
        let venv = tokio::task::spawn_blocking(venv).await.expect("venv");
        let mut child = tokio::process::Command::new(venv.join("bin/python"))
            .arg(python_dir().join("mllp_receiver.py"))
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("mllp_receiver.py runs");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut peer = Peer {
            child,
            lines,
            port: 0,
        };
        let listening = peer.line().await;
        peer.port = listening["listening"].as_u64().expect("a port") as u16;
        peer
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn line(&mut self) -> Json {
        let line = tokio::time::timeout(Duration::from_secs(30), self.lines.next_line())
            .await
            .expect("the peer reports within 30 s")
            .expect("the peer's stdout")
            .expect("the peer is running");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// How the following messages are answered (see mllp_receiver.py).
    async fn answer(&mut self, mode: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin
            .write_all(format!("{mode}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
        assert_eq!(self.line().await["mode"], mode);
    }

    /// The next message the peer parsed.
    async fn received(&mut self) -> Received {
        Received(self.line().await)
    }

    async fn stop(mut self) {
        self.child.kill().await.expect("the peer stops");
    }
}

/// One parsed message: `values` keyed `SEG#occurrence.field.repetition.component.subcomponent`.
struct Received(Json);

impl Received {
    /// A leaf, unescaped by the peer; "" when it is empty or absent.
    fn at(&self, key: &str) -> &str {
        self.0["values"][key].as_str().unwrap_or("")
    }

    /// Component `component` of the first repetition of field `field` of the first `segment`.
    fn field(&self, segment: &str, field: usize, component: usize) -> &str {
        self.at(&format!("{segment}#1.{field}.1.{component}.1"))
    }

    fn control_id(&self) -> &str {
        self.0["control_id"].as_str().expect("a control id")
    }
}

fn header(control_id: &str) -> Header {
    Header {
        sending_application: "PORTICO".into(),
        sending_facility: "Main St Clinic".into(),
        receiving_application: "MIRTH".into(),
        receiving_facility: "EHR".into(),
        message_control_id: control_id.into(),
        timestamp: DateTime::parse_from_rfc3339("2026-01-14T10:31:05-05:00").unwrap(),
        processing_id: ProcessingId::Production,
    }
}

fn message(kind: EventKind, resources: Resources<'_>, control_id: &str) -> OutgoingMessage {
    OutgoingMessage::new(encode(kind, resources, &header(control_id)).expect("encodes"))
        .expect("a sendable message")
}

fn timeouts() -> MllpTimeouts {
    MllpTimeouts {
        connect: Duration::from_secs(5),
        ack: Duration::from_secs(2),
    }
}

fn accepted(delivery: DeliveryOutcome) {
    match delivery {
        DeliveryOutcome::Accepted(ack) => assert_eq!(ack.code, AckCode::ApplicationAccept),
        other => panic!("not accepted: {other:?}"),
    }
}

/// FHIR date-times as the peer should read them back (HL7 DTM).
fn dtm(fhir: &str) -> String {
    let time = DateTime::parse_from_rfc3339(fhir).expect("an instant");
    time.format("%Y%m%d%H%M%S%z").to_string()
}

/// Portico serving the OpenEMR demo data: the resources the channel is fed in production.
async fn served() -> Fhir {
    let seeded = common::seed_sqlite("openemr", "hl7v2", async |writer| {
        seed_openemr(writer, 20).await
    })
    .await;
    seeded.serve().await.fhir
}

#[tokio::test]
async fn every_message_type_made_from_served_resources_is_parsed_by_the_peer() {
    let fhir = served().await;
    let mut peer = Peer::start(0).await;
    let mut sender = MllpSender::new(peer.address(), timeouts());

    let patient = fhir.json("Patient/1").await;
    for (kind, trigger) in [
        (EventKind::PatientRegistered, "A04"),
        (EventKind::PatientUpdated, "A08"),
    ] {
        let control_id = format!("ADT-{trigger}");
        accepted(
            sender
                .deliver(&message(kind, Resources::Patient(&patient), &control_id))
                .await,
        );
        let received = peer.received().await;
        assert_eq!(received.control_id(), control_id);
        assert_eq!(received.0["type"], format!("ADT^{trigger}^ADT_A01"));
        assert_eq!(received.field("EVN", 1, 1), trigger);
        assert_eq!(received.field("PID", 5, 1), patient["name"][0]["family"]);
        assert_eq!(received.field("PID", 5, 2), patient["name"][0]["given"][0]);
        assert_eq!(
            received.field("PID", 7, 1),
            patient["birthDate"].as_str().unwrap().replace('-', "")
        );
        assert_eq!(received.field("PID", 8, 1), "M");
        for (n, identifier) in patient["identifier"].as_array().unwrap().iter().enumerate() {
            let repetition = n + 1;
            assert_eq!(
                received.at(&format!("PID#1.3.{repetition}.1.1")),
                identifier["value"]
            );
            assert_eq!(
                received.at(&format!("PID#1.3.{repetition}.4.2")),
                identifier["system"]
            );
        }
        assert_eq!(received.field("PID", 11, 3), patient["address"][0]["city"]);
        assert_eq!(received.field("PID", 13, 1), patient["telecom"][0]["value"]);
        assert_eq!(received.field("PV1", 2, 1), "N");
    }

    let appointments = fhir.all("Appointment?patient=1").await;
    let appointment = &appointments[0];
    for (kind, trigger) in [
        (EventKind::AppointmentBooked, "S12"),
        (EventKind::AppointmentRescheduled, "S13"),
        (EventKind::AppointmentModified, "S14"),
        (EventKind::AppointmentCheckedIn, "S14"),
        (EventKind::AppointmentCancelled, "S15"),
        (EventKind::AppointmentNoShow, "S26"),
    ] {
        let control_id = format!("SIU-{kind:?}");
        let resources = Resources::Appointment {
            appointment,
            patient: &patient,
        };
        accepted(sender.deliver(&message(kind, resources, &control_id)).await);
        let received = peer.received().await;
        assert_eq!(received.control_id(), control_id);
        assert_eq!(received.0["type"], format!("SIU^{trigger}^SIU_S12"));
        assert_eq!(
            received.field("SCH", 2, 1),
            appointment["identifier"][0]["value"]
        );
        let start = dtm(appointment["start"].as_str().unwrap());
        assert_eq!(received.field("SCH", 11, 4), start);
        assert_eq!(
            received.field("SCH", 11, 5),
            dtm(appointment["end"].as_str().unwrap())
        );
        assert_eq!(
            received.field("SCH", 9, 1),
            appointment["minutesDuration"].to_string()
        );
        assert_eq!(received.field("PID", 5, 1), patient["name"][0]["family"]);
        let actor = |type_: &str| -> String {
            appointment["participant"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| p["actor"]["reference"].as_str())
                .find_map(|r| r.strip_prefix(type_))
                .expect("the demo's appointments name a practitioner and a location")
                .to_owned()
        };
        assert_eq!(received.field("AIP", 3, 1), actor("Practitioner/"));
        assert_eq!(received.field("AIP", 6, 1), start);
        assert_eq!(received.field("AIL", 3, 1), actor("Location/"));
        assert_eq!(
            received.field("AIS", 3, 1),
            appointment["appointmentType"]["coding"][0]["code"]
        );
        assert_eq!(received.field("RGS", 1, 1), "1");
    }

    let labs = fhir.all("Observation?category=laboratory&_count=50").await;
    let lab = labs
        .iter()
        .find(|o| o["valueQuantity"].is_object())
        .expect("a numeric lab result");
    let subject = lab["subject"]["reference"].as_str().unwrap();
    let lab_patient = fhir.json(subject).await;
    let resources = Resources::Result {
        observation: lab,
        patient: &lab_patient,
    };
    accepted(
        sender
            .deliver(&message(EventKind::ResultAvailable, resources, "ORU-1"))
            .await,
    );
    let received = peer.received().await;
    assert_eq!(received.0["type"], "ORU^R01^ORU_R01");
    assert_eq!(
        received.field("PID", 5, 1),
        lab_patient["name"][0]["family"]
    );
    assert_eq!(
        received.field("OBR", 4, 1),
        lab["code"]["coding"][0]["code"]
    );
    assert_eq!(received.field("OBX", 2, 1), "NM");
    assert_eq!(
        received.field("OBX", 3, 1),
        lab["code"]["coding"][0]["code"]
    );
    assert_eq!(received.field("OBX", 3, 3), "LN");
    assert_eq!(
        received.field("OBX", 5, 1),
        lab["valueQuantity"]["value"].to_string()
    );
    assert_eq!(received.field("OBX", 6, 1), lab["valueQuantity"]["code"]);
    assert_eq!(
        received.field("OBX", 7, 1),
        lab["referenceRange"][0]["text"]
    );
    assert_eq!(
        received.field("OBX", 8, 1),
        lab["interpretation"][0]["coding"][0]["code"]
    );
    let status = match lab["status"].as_str().unwrap() {
        "final" => "F",
        "preliminary" => "P",
        other => panic!("the demo's lab status {other}"),
    };
    assert_eq!(received.field("OBX", 11, 1), status);
    assert_eq!(received.field("OBR", 25, 1), status);
    assert_eq!(
        received.field("OBX", 14, 1),
        dtm(lab["effectiveDateTime"].as_str().unwrap())
    );
    peer.stop().await;
}

#[tokio::test]
async fn delimiters_line_breaks_and_partial_dates_reach_the_peer_intact() {
    let mut peer = Peer::start(0).await;
    let mut sender = MllpSender::new(peer.address(), timeouts());
    let patient = json!({
        "resourceType": "Patient",
        "id": "7",
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.3.72", "value": "A&B~7"}],
        "name": [{"family": "O'Brien|Núñez", "given": ["Zoë^Ann", "Lou\\Co"]}],
        "gender": "female",
        "birthDate": "1958",
        "address": [{"line": ["1 Main St\r\nBuilding 2"], "city": "Köln"}]
    });
    accepted(
        sender
            .deliver(&message(
                EventKind::PatientUpdated,
                Resources::Patient(&patient),
                "ESC-1",
            ))
            .await,
    );
    let received = peer.received().await;
    assert_eq!(received.field("PID", 3, 1), "A&B~7");
    assert_eq!(received.field("PID", 3, 4), "");
    assert_eq!(received.at("PID#1.3.1.4.2"), "2.16.840.1.113883.3.72");
    assert_eq!(received.at("PID#1.3.1.4.3"), "ISO");
    assert_eq!(received.field("PID", 5, 1), "O'Brien|Núñez");
    assert_eq!(received.field("PID", 5, 2), "Zoë^Ann");
    assert_eq!(received.field("PID", 5, 3), "Lou\\Co");
    assert_eq!(received.field("PID", 7, 1), "1958");
    assert_eq!(received.field("PID", 8, 1), "F");
    assert_eq!(received.field("PID", 11, 1), "1 Main St\r\nBuilding 2");
    assert_eq!(received.field("PID", 11, 3), "Köln");
    assert_eq!(
        received.field("PV1", 2, 1),
        "N",
        "the line break ended no segment"
    );

    let partial = json!({"resourceType": "Patient", "id": "8", "birthDate": "2001-07"});
    for (name, value, value_type, expected) in [
        (
            "valueString",
            json!("Positive ^ see note\nrepeat"),
            "ST",
            "Positive ^ see note\nrepeat",
        ),
        (
            "valueCodeableConcept",
            json!({"coding": [{"system": "http://snomed.info/sct", "code": "260385009", "display": "Negative"}]}),
            "CE",
            "260385009",
        ),
    ] {
        let mut observation = json!({
            "resourceType": "Observation",
            "id": "x1",
            "status": "corrected",
            "code": {"text": "Culture"},
            "effectiveDateTime": "2025-03-01"
        });
        observation[name] = value;
        let resources = Resources::Result {
            observation: &observation,
            patient: &partial,
        };
        accepted(
            sender
                .deliver(&message(EventKind::ResultAvailable, resources, "ESC-2"))
                .await,
        );
        let received = peer.received().await;
        assert_eq!(received.field("PID", 7, 1), "200107");
        assert_eq!(received.field("OBX", 2, 1), value_type);
        assert_eq!(received.field("OBX", 5, 1), expected);
        assert_eq!(received.field("OBX", 3, 2), "Culture");
        assert_eq!(received.field("OBX", 11, 1), "C");
        assert_eq!(received.field("OBX", 14, 1), "20250301");
    }
    peer.stop().await;
}

#[tokio::test]
async fn every_acknowledgement_is_classified() {
    let mut peer = Peer::start(0).await;
    let mut sender = MllpSender::new(peer.address(), timeouts());
    let patient = json!({"resourceType": "Patient", "id": "1", "name": [{"family": "Ack"}]});
    let outgoing = message(
        EventKind::PatientUpdated,
        Resources::Patient(&patient),
        "ACK-1",
    );
    for (mode, expected) in [
        ("ack AA", "accepted AA"),
        ("ack CA", "accepted CA"),
        ("ack AE", "error AE"),
        ("ack CE", "error CE"),
        ("ack AR", "rejected AR"),
        ("ack CR", "rejected CR"),
    ] {
        peer.answer(mode).await;
        let class = match sender.deliver(&outgoing).await {
            DeliveryOutcome::Accepted(ack) => format!("accepted {}", ack.code.as_str()),
            DeliveryOutcome::Error(ack) => format!("error {}", ack.code.as_str()),
            DeliveryOutcome::Rejected(ack) => format!("rejected {}", ack.code.as_str()),
            DeliveryOutcome::Retry(cause) => format!("retry {cause}"),
        };
        assert_eq!(class, expected);
        assert_eq!(peer.received().await.control_id(), "ACK-1");
    }

    peer.answer("wrong-id").await;
    assert_eq!(
        sender.deliver(&outgoing).await,
        DeliveryOutcome::Retry(RetryCause::WrongControlId {
            sent: "ACK-1".into(),
            received: "NOT-ACK-1".into()
        })
    );
    peer.received().await;
    peer.answer("garbled").await;
    let delivery = sender.deliver(&outgoing).await;
    assert!(
        matches!(delivery, DeliveryOutcome::Retry(RetryCause::Garbled(_))),
        "{delivery:?}"
    );
    peer.received().await;
    peer.answer("silent").await;
    assert_eq!(
        sender.deliver(&outgoing).await,
        DeliveryOutcome::Retry(RetryCause::AckTimeout(timeouts().ack))
    );
    peer.received().await;
    // Each failure dropped the connection; the next message goes on a new one.
    peer.answer("ack AA").await;
    accepted(sender.deliver(&outgoing).await);
    assert_eq!(peer.received().await.control_id(), "ACK-1");
    peer.stop().await;
}

#[tokio::test]
async fn a_peer_that_goes_down_and_comes_back_gets_the_same_message_again() {
    let peer = Peer::start(0).await;
    let port = peer.port;
    let mut sender = MllpSender::new(peer.address(), timeouts());
    let patient = json!({"resourceType": "Patient", "id": "1", "name": [{"family": "Down"}]});
    let first = message(
        EventKind::PatientRegistered,
        Resources::Patient(&patient),
        "DOWN-1",
    );
    let mut peer = peer;
    accepted(sender.deliver(&first).await);
    assert_eq!(peer.received().await.control_id(), "DOWN-1");
    peer.stop().await;

    let second = message(
        EventKind::PatientUpdated,
        Resources::Patient(&patient),
        "DOWN-2",
    );
    let delivery = sender.deliver(&second).await;
    assert!(
        matches!(delivery, DeliveryOutcome::Retry(RetryCause::Connect(_))),
        "the kept connection is dead and nobody listens: {delivery:?}"
    );

    let mut peer = Peer::start(port).await;
    accepted(sender.deliver(&second).await);
    let received = peer.received().await;
    assert_eq!(
        received.control_id(),
        "DOWN-2",
        "MSH-10 unchanged on the resend"
    );
    assert_eq!(received.field("MSH", 10, 1), "DOWN-2");
    peer.stop().await;
}
