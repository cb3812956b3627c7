//! Open Dental subscriptions end to end: a real Portico over a MariaDB database in Open Dental's
//! schema (the synthetic generator of tests/opendental.rs), a receiver on 127.0.0.1, and edits
//! made with the statements Open Dental issues (explicit keys, as under its random-primary-key
//! setting; every NOT NULL text column written). Each topic the adapter declares gets its
//! notifications with the right event numbers, focus, request method and content level; edits of
//! another patient, and edits that change nothing served, notify nobody. Hard deletes are found by
//! the adapter's reconcile, which the test makes due at once.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::StatusCode;
use portico::db::fixture::FixtureWriter;
use portico::demo::opendental::seed_opendental;
use serde_json::Value as Json;
use sqlx::{Connection, MySqlConnection};

use crate::notifications::{
    Receiver, TOPIC, carried_resources, event_numbers, eventually, focuses, status_part,
    topic_subscription,
};
use crate::subscriptions::{Running, start_on, subscribing_settings};
use crate::support::{self, Backend};

/// Patients the Open Dental database is seeded with.
const PATIENTS: usize = 40;

/// How long one change may take to reach the receiver (passes every 200 ms).
const WAIT: Duration = Duration::from_secs(20);

/// One event as the receiver got it: focus (`Type/id`) and the entry's request method (`None`
/// for `empty` content, which names no focus).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Heard {
    focus: Option<String>,
    method: Option<String>,
}

/// Checks every notification of `subscription` (strict R4, topic, content level) and returns its
/// events by number; a number sent twice (at-least-once) must carry the same event.
fn heard(
    receiver: &Receiver,
    subscription: &str,
    topic: &str,
    content: &str,
) -> BTreeMap<i64, Heard> {
    let mut events = BTreeMap::new();
    for notification in receiver.of(subscription, "event-notification") {
        let bundle = &notification.bundle;
        support::assert_valid_r4(bundle);
        assert_eq!(bundle["type"], "history");
        assert_eq!(
            status_part(bundle, "topic")["valueCanonical"],
            format!("{TOPIC}{topic}"),
            "{bundle}"
        );
        let numbers = event_numbers(bundle);
        let named = focuses(bundle);
        let entries: Vec<&Json> = bundle["entry"].as_array().unwrap().iter().skip(1).collect();
        let heard_now: Vec<Heard> = if content == "empty" {
            assert!(named.is_empty() && entries.is_empty(), "{bundle}");
            numbers
                .iter()
                .map(|_| Heard {
                    focus: None,
                    method: None,
                })
                .collect()
        } else {
            assert_eq!(named.len(), numbers.len(), "{bundle}");
            assert_eq!(entries.len(), numbers.len(), "{bundle}");
            named
                .into_iter()
                .zip(&entries)
                .map(|(focus, entry)| {
                    let method = entry["request"]["method"].as_str().unwrap().to_owned();
                    let carries = entry["resource"].is_object();
                    match content {
                        "id-only" => assert!(!carries, "id-only carries no resource: {entry}"),
                        _ => assert_eq!(carries, method != "DELETE", "{entry}"),
                    }
                    Heard {
                        focus: Some(focus),
                        method: Some(method),
                    }
                })
                .collect()
        };
        for (number, event) in numbers.into_iter().zip(heard_now) {
            if let Some(earlier) = events.insert(number, event.clone()) {
                assert_eq!(earlier, event, "event {number} resent differently");
            }
        }
    }
    events
}

/// What `heard` should return: events numbered from 1.
fn expect(events: &[(&str, &str)]) -> BTreeMap<i64, Heard> {
    events
        .iter()
        .enumerate()
        .map(|(index, (focus, method))| {
            (
                index as i64 + 1,
                Heard {
                    focus: Some((*focus).to_owned()),
                    method: Some((*method).to_owned()),
                },
            )
        })
        .collect()
}

/// A subscription of the test: its id, topic and content level.
struct Sub {
    id: String,
    topic: &'static str,
    content: &'static str,
}

impl Sub {
    fn heard(&self, receiver: &Receiver) -> BTreeMap<i64, Heard> {
        heard(receiver, &self.id, self.topic, self.content)
    }

    /// Waits until the receiver has `count` events of this subscription.
    async fn wait_for(&self, receiver: &Receiver, count: usize, what: &str) {
        eventually(what, WAIT, || {
            (self.heard(receiver).len() >= count).then_some(())
        })
        .await;
    }
}

async fn subscribe(
    app: &Running,
    receiver: &Receiver,
    topic: &'static str,
    filter: &str,
    content: &'static str,
) -> Sub {
    let filters: Vec<&str> = Some(filter).filter(|f| !f.is_empty()).into_iter().collect();
    let (status, created) = app
        .create(&topic_subscription(topic, &filters, &receiver.url, content))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{topic}: {created}");
    Sub {
        id: created["id"].as_str().unwrap().to_owned(),
        topic,
        content,
    }
}

/// The next free key of `table` (Open Dental's keys are bigint; the fixture has no
/// AUTO_INCREMENT, as under Open Dental's random primary keys).
async fn next_key(pms: &mut MySqlConnection, table: &str, key: &str) -> i64 {
    // Identifiers are the test's own constants, never input.
    sqlx::query_scalar(&format!(
        "SELECT CAST(COALESCE(MAX({key}), 0) + 1 AS SIGNED) FROM {table}"
    ))
    .fetch_one(pms)
    .await
    .unwrap()
}

async fn run(pms: &mut MySqlConnection, statement: &str, values: &[&str]) {
    let mut query = sqlx::query(statement);
    for value in values {
        query = query.bind(*value);
    }
    query.execute(pms).await.unwrap();
}

/// Makes the reconcile of `mapping` due now (it runs hourly by the adapter), so the next pass
/// scans the table and sees what is gone. A pass already under way may commit the old time
/// back, so callers repeat this while they wait.
async fn reconcile_now(state_url: &str, mapping: &str) {
    let mut state = sqlx::AnyConnection::connect(state_url).await.unwrap();
    if state_url.starts_with("sqlite:") {
        sqlx::query("PRAGMA busy_timeout = 5000")
            .execute(&mut state)
            .await
            .unwrap();
    }
    sqlx::query("UPDATE change_cursor SET last_reconcile_ms = 0 WHERE mapping = $1")
        .bind(mapping)
        .execute(&mut state)
        .await
        .unwrap();
    state.close().await.ok();
}

/// Waits for `sub`'s `count`-th event, which only `mapping`'s reconcile can find.
async fn wait_for_reconcile(
    state_url: &str,
    mapping: &str,
    sub: &Sub,
    receiver: &Receiver,
    count: usize,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while sub.heard(receiver).len() < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for the reconcile of {mapping}"
        );
        reconcile_now(state_url, mapping).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn open_dental_edits_reach_the_receiver_per_topic_and_filter() {
    let db_url = support::fresh_database(Backend::MariaDb, "subscriptions_opendental").await;
    let writer = FixtureWriter::open(&db_url)
        .await
        .unwrap_or_else(|e| panic!("{}", e.message));
    seed_opendental(&writer, PATIENTS)
        .await
        .unwrap_or_else(|e| panic!("{}", e.message));
    writer.close().await;
    let mut settings = subscribing_settings(&db_url);
    settings.legacy.adapter = "opendental".into();
    let app = start_on(settings).await;
    let state_url = app
        .settings
        .state
        .url(&app.settings.server.state_dir)
        .unwrap();
    let adapter =
        portico::adapter::load(&app.settings.legacy.adapters_dir.join("opendental")).unwrap();
    let mapping_of = |resource: &str| adapter.resources[resource].mappings[0].name.clone();
    let mut pms = MySqlConnection::connect(&db_url).await.unwrap();

    // Another patient, with a booked appointment and a claim; the provider, chair and insurance
    // this patient's rows use.
    let (other, other_appointment, op, provider, clinic): (i64, i64, i64, i64, i64) =
        sqlx::query_as(
            "SELECT a.PatNum, a.AptNum, a.Op, a.ProvNum, a.ClinicNum FROM appointment a \
             JOIN patient p ON p.PatNum = a.PatNum \
             WHERE a.AptStatus = 1 AND p.PatStatus = 0 AND EXISTS (SELECT 1 FROM claim c \
             WHERE c.PatNum = a.PatNum AND c.PlanNum > 0 AND c.InsSubNum > 0) \
             ORDER BY a.AptNum LIMIT 1",
        )
        .fetch_one(&mut pms)
        .await
        .unwrap();
    let (other_claim, other_claim_status, plan, ins_sub, bill_provider): (
        i64,
        String,
        i64,
        i64,
        i64,
    ) = sqlx::query_as(
        "SELECT ClaimNum, ClaimStatus, PlanNum, InsSubNum, ProvBill FROM claim \
         WHERE PatNum = ? AND PlanNum > 0 AND InsSubNum > 0 ORDER BY ClaimNum LIMIT 1",
    )
    .bind(other)
    .fetch_one(&mut pms)
    .await
    .unwrap();
    let patient = next_key(&mut pms, "patient", "PatNum").await;
    let (patient_text, other_text) = (patient.to_string(), other.to_string());
    let mine = format!("Patient/{patient}");
    let theirs = format!("Patient/{other}");

    let receiver = Receiver::start().await;
    let registered = subscribe(&app, &receiver, "patient-registered", "", "id-only").await;
    let demographics = subscribe(
        &app,
        &receiver,
        "patient-demographics-changed",
        &format!("_id={patient}"),
        "full-resource",
    )
    .await;
    // The other patient's own subscriptions: they show that the other patient's edits were
    // detected, so that silence elsewhere means something.
    let their_demographics = subscribe(
        &app,
        &receiver,
        "patient-demographics-changed",
        &format!("_id={other}"),
        "id-only",
    )
    .await;
    let patient_filter = format!("Appointment?patient={mine}");
    let booked = subscribe(
        &app,
        &receiver,
        "appointment-booked",
        &patient_filter,
        "id-only",
    )
    .await;
    let rescheduled = subscribe(
        &app,
        &receiver,
        "appointment-rescheduled",
        &format!("patient={mine}"),
        "full-resource",
    )
    .await;
    let cancelled = subscribe(
        &app,
        &receiver,
        "appointment-cancelled",
        &format!("patient={mine}"),
        "id-only",
    )
    .await;
    let their_cancelled = subscribe(
        &app,
        &receiver,
        "appointment-cancelled",
        &format!("patient={theirs}"),
        "empty",
    )
    .await;
    let vitals = subscribe(
        &app,
        &receiver,
        "vital-signs-recorded",
        &format!("patient={mine}"),
        "id-only",
    )
    .await;
    let labs = subscribe(
        &app,
        &receiver,
        "lab-result-available",
        &format!("patient={mine}"),
        "full-resource",
    )
    .await;
    let claims = subscribe(
        &app,
        &receiver,
        "claim-status-changed",
        &format!("patient={mine}"),
        "id-only",
    )
    .await;
    let their_claims = subscribe(
        &app,
        &receiver,
        "claim-status-changed",
        &format!("patient={theirs}"),
        "id-only",
    )
    .await;
    let all = [
        &registered,
        &demographics,
        &their_demographics,
        &booked,
        &rescheduled,
        &cancelled,
        &their_cancelled,
        &vitals,
        &labs,
        &claims,
        &their_claims,
    ];
    let ids: Vec<String> = all.iter().map(|s| s.id.clone()).collect();
    app.await_handshakes(&receiver, &ids).await;

    // Registration, as the Add Patient window saves it: the row, then Guarantor set to the new
    // PatNum (a column Portico does not serve).
    run(
        &mut pms,
        "INSERT INTO patient (PatNum, LName, FName, MiddleI, Preferred, PatStatus, Gender, \
         Position, Birthdate, Address, City, State, Zip, HmPhone, WirelessPhone, Email, PriProv, \
         ClinicNum, AddrNote, FamFinUrgNote, Language, SecDateEntry) \
         VALUES (?, 'Adeyemi', 'Folake', 'T', '', 0, 1, 1, '1984-07-02', '40 Pier St', \
         'Portland', 'OR', '97201', '5035550101', '5035550102', 'folake@example.org', ?, ?, '', \
         '', 'eng', CURDATE())",
        &[&patient_text, &provider.to_string(), &clinic.to_string()],
    )
    .await;
    run(
        &mut pms,
        "UPDATE patient SET Guarantor = ? WHERE PatNum = ?",
        &[&patient_text, &patient_text],
    )
    .await;
    registered.wait_for(&receiver, 1, "the registration").await;
    assert_eq!(registered.heard(&receiver), expect(&[(&mine, "POST")]));

    // A demographics edit of this patient, an aging run that rewrites balances only (nothing
    // served), and a rename of the other patient.
    run(
        &mut pms,
        "UPDATE patient SET LName = 'Adeyemi-Cole', Address = '12 Harbor Rd' WHERE PatNum = ?",
        &[&patient_text],
    )
    .await;
    demographics
        .wait_for(&receiver, 1, "the demographics edit")
        .await;
    run(
        &mut pms,
        "UPDATE patient SET Bal_0_30 = 120, BalTotal = 120, EstBalance = 120 WHERE PatNum = ?",
        &[&patient_text],
    )
    .await;
    run(
        &mut pms,
        "UPDATE patient SET FName = 'Renamed' WHERE PatNum = ?",
        &[&other_text],
    )
    .await;
    their_demographics
        .wait_for(&receiver, 1, "the other patient's rename")
        .await;
    assert_eq!(
        their_demographics.heard(&receiver),
        expect(&[(&theirs, "PUT")])
    );
    assert_eq!(demographics.heard(&receiver), expect(&[(&mine, "PUT")]));
    let edited = receiver.of(&demographics.id, "event-notification");
    let patient_resource = carried_resources(&edited[0].bundle)[0].clone();
    assert_eq!(patient_resource["name"][0]["family"], "Adeyemi-Cole");
    assert_eq!(patient_resource["address"][0]["line"][0], "12 Harbor Rd");
    assert_eq!(
        registered.heard(&receiver).len(),
        1,
        "updates register nobody"
    );

    // Two appointments booked (AptStatus 1 Scheduled); Pattern is 5 minutes a character.
    let first = next_key(&mut pms, "appointment", "AptNum").await;
    let second = first + 1;
    for (appointment, at) in [
        (first, "2031-03-14 10:00:00"),
        (second, "2031-04-02 09:00:00"),
    ] {
        run(
            &mut pms,
            "INSERT INTO appointment (AptNum, PatNum, AptStatus, Pattern, Confirmed, Op, Note, \
             ProvNum, ProvHyg, AptDateTime, IsNewPatient, ProcDescript, ClinicNum, SecDateTEntry) \
             VALUES (?, ?, 1, '/XXXX/', 0, ?, '', ?, 0, ?, 1, 'CompEx, 4BWX', ?, NOW())",
            &[
                &appointment.to_string(),
                &patient_text,
                &op.to_string(),
                &provider.to_string(),
                at,
                &clinic.to_string(),
            ],
        )
        .await;
        booked
            .wait_for(&receiver, (appointment - first + 1) as usize, "a booking")
            .await;
    }
    let (first_ref, second_ref) = (
        format!("Appointment/{first}"),
        format!("Appointment/{second}"),
    );
    assert_eq!(
        booked.heard(&receiver),
        expect(&[(&first_ref, "POST"), (&second_ref, "POST")])
    );

    // Rescheduled: dragged to another day in the Appointments module.
    run(
        &mut pms,
        "UPDATE appointment SET AptDateTime = '2031-03-21 14:00:00' WHERE AptNum = ?",
        &[&first.to_string()],
    )
    .await;
    rescheduled.wait_for(&receiver, 1, "the reschedule").await;
    let moved = receiver.of(&rescheduled.id, "event-notification");
    let appointment_resource = carried_resources(&moved[0].bundle)[0].clone();
    assert!(
        appointment_resource["start"]
            .as_str()
            .unwrap()
            .starts_with("2031-03-21T"),
        "{appointment_resource}"
    );

    // Confirmation status (not served), then status-only edits: the first appointment broken,
    // the second completed; and the other patient's appointment broken.
    for statement in [
        "UPDATE appointment SET Confirmed = 19 WHERE AptNum = ?",
        "UPDATE appointment SET AptStatus = 5 WHERE AptNum = ?",
    ] {
        run(&mut pms, statement, &[&first.to_string()]).await;
    }
    run(
        &mut pms,
        "UPDATE appointment SET AptStatus = 2 WHERE AptNum = ?",
        &[&second.to_string()],
    )
    .await;
    cancelled
        .wait_for(&receiver, 1, "the broken appointment")
        .await;
    run(
        &mut pms,
        "UPDATE appointment SET AptStatus = 5 WHERE AptNum = ?",
        &[&other_appointment.to_string()],
    )
    .await;
    their_cancelled
        .wait_for(&receiver, 1, "the other patient's broken appointment")
        .await;
    let their_cancellation = &receiver.of(&their_cancelled.id, "event-notification")[0];
    assert_eq!(
        their_cancellation.bundle["entry"].as_array().unwrap().len(),
        1,
        "empty content: the status only"
    );

    // A hard delete (Appointments.Delete), which only the reconcile finds.
    run(
        &mut pms,
        "DELETE FROM appointment WHERE AptNum = ?",
        &[&second.to_string()],
    )
    .await;
    wait_for_reconcile(
        &state_url,
        &mapping_of("Appointment"),
        &cancelled,
        &receiver,
        2,
    )
    .await;
    assert_eq!(
        cancelled.heard(&receiver),
        expect(&[(&first_ref, "PUT"), (&second_ref, "DELETE")]),
        "broken, then deleted; the completion and the other patient's cancellation are not ours"
    );
    assert_eq!(booked.heard(&receiver).len(), 2, "no status became booked");
    assert_eq!(
        rescheduled.heard(&receiver),
        expect(&[(&first_ref, "PUT")]),
        "status edits move nothing"
    );
    assert_eq!(their_cancelled.heard(&receiver).len(), 1);

    // Vital signs taken at a visit: height, weight and blood pressure (pulse 0: not recorded).
    let vitals_row = next_key(&mut pms, "vitalsign", "VitalsignNum").await;
    run(
        &mut pms,
        "INSERT INTO vitalsign (VitalsignNum, PatNum, Height, Weight, BpSystolic, BpDiastolic, \
         DateTaken, Documentation, Pulse) VALUES (?, ?, 66, 150, 118, 76, CURDATE(), '', 0)",
        &[&vitals_row.to_string(), &patient_text],
    )
    .await;
    vitals.wait_for(&receiver, 3, "the vital signs").await;
    let served = app
        .get(&format!(
            "Observation?patient={patient}&category=vital-signs"
        ))
        .await;
    let mut served_vitals: Vec<String> = support::matches(&served)
        .iter()
        .map(|o| format!("Observation/{}", o["id"].as_str().unwrap()))
        .collect();
    served_vitals.sort();
    let heard_vitals = vitals.heard(&receiver);
    let mut named: Vec<String> = heard_vitals
        .values()
        .map(|h| {
            assert_eq!(h.method.as_deref(), Some("POST"));
            h.focus.clone().unwrap()
        })
        .collect();
    named.sort();
    assert_eq!(named, served_vitals, "one event per measurement served");
    assert_eq!(named.len(), 3);

    // A lab result through the EHR lab import: the order (OBR) and one result (OBX).
    let lab = next_key(&mut pms, "ehrlab", "EhrLabNum").await;
    let result = next_key(&mut pms, "ehrlabresult", "EhrLabResultNum").await;
    run(
        &mut pms,
        "INSERT INTO ehrlab (EhrLabNum, PatNum, OrderControlCode, PlacerOrderNum, \
         FillerOrderNum, SetIdOBR, UsiID, UsiText, UsiCodeSystemName, ObservationDateTimeStart, \
         ResultDateTime, ResultStatus, OriginalPIDSegment) \
         VALUES (?, ?, 'RE', 'ODE2E1', 'LCE2E1', 1, '2345-7', 'Glucose', 'LN', \
         '20310314083000', '20310315100000', 'F', '')",
        &[&lab.to_string(), &patient_text],
    )
    .await;
    run(
        &mut pms,
        "INSERT INTO ehrlabresult (EhrLabResultNum, EhrLabNum, SetIdOBX, ValueType, \
         ObservationIdentifierID, ObservationIdentifierText, ObservationIdentifierCodeSystemName, \
         ObservationValueNumeric, UnitsID, UnitsText, UnitsCodeSystemName, referenceRange, \
         AbnormalFlags, ObservationResultStatus, ObservationDateTime) \
         VALUES (?, ?, 1, 'NM', '2345-7', 'Glucose [Mass/volume] in Serum or Plasma', 'LN', 92, \
         'mg/dL', 'mg/dL', 'UCUM', '70-99', 'N', 'F', '20310314083000')",
        &[&result.to_string(), &lab.to_string()],
    )
    .await;
    labs.wait_for(&receiver, 1, "the lab result").await;
    let lab_ref = format!("Observation/lab-{result}");
    assert_eq!(labs.heard(&receiver), expect(&[(&lab_ref, "POST")]));
    let reported = receiver.of(&labs.id, "event-notification");
    let observation = carried_resources(&reported[0].bundle)[0].clone();
    assert_eq!(observation["code"]["coding"][0]["code"], "2345-7");
    assert_eq!(observation["valueQuantity"]["value"].as_f64(), Some(92.0));

    // A claim: created unsent (U, draft), queued for sending (W, active), sent (S, still
    // active: nothing a subscriber is told), then deleted.
    let claim = next_key(&mut pms, "claim", "ClaimNum").await;
    let patient_plan = next_key(&mut pms, "patplan", "PatPlanNum").await;
    run(
        &mut pms,
        "INSERT INTO patplan (PatPlanNum, PatNum, Ordinal, Relationship, InsSubNum, SecDateTEntry) \
         VALUES (?, ?, 1, 2, ?, NOW())",
        &[
            &patient_plan.to_string(),
            &patient_text,
            &ins_sub.to_string(),
        ],
    )
    .await;
    run(
        &mut pms,
        "INSERT INTO claim (ClaimNum, PatNum, DateService, ClaimStatus, PlanNum, ProvTreat, \
         ClaimFee, ClaimType, ProvBill, PlaceService, PatRelat, ClinicNum, InsSubNum, MedType, \
         ClaimIdentifier, SecDateEntry, Narrative) \
         VALUES (?, ?, CURDATE(), 'U', ?, ?, 145, 'P', ?, 0, 2, ?, ?, 0, ?, CURDATE(), '')",
        &[
            &claim.to_string(),
            &patient_text,
            &plan.to_string(),
            &provider.to_string(),
            &bill_provider.to_string(),
            &clinic.to_string(),
            &ins_sub.to_string(),
            &format!("{patient}/{claim}"),
        ],
    )
    .await;
    claims.wait_for(&receiver, 1, "the new claim").await;
    run(
        &mut pms,
        "UPDATE claim SET ClaimStatus = 'W' WHERE ClaimNum = ?",
        &[&claim.to_string()],
    )
    .await;
    claims.wait_for(&receiver, 2, "the queued claim").await;
    run(
        &mut pms,
        "UPDATE claim SET ClaimStatus = 'S', DateSent = CURDATE(), DateSentOrig = CURDATE() \
         WHERE ClaimNum = ?",
        &[&claim.to_string()],
    )
    .await;
    // The other patient's claim changes status (draft to queued, or back to unsent): heard by
    // that patient's subscription only, and after the sending above was compared.
    let flipped = if ["U", "H"].contains(&other_claim_status.as_str()) {
        "W"
    } else {
        "U"
    };
    run(
        &mut pms,
        "UPDATE claim SET ClaimStatus = ? WHERE ClaimNum = ?",
        &[flipped, &other_claim.to_string()],
    )
    .await;
    their_claims
        .wait_for(&receiver, 1, "the other patient's claim")
        .await;
    assert_eq!(
        their_claims.heard(&receiver),
        expect(&[(&format!("Claim/{other_claim}"), "PUT")])
    );
    assert_eq!(
        claims.heard(&receiver).len(),
        2,
        "sending changed no status"
    );
    run(
        &mut pms,
        "DELETE FROM claim WHERE ClaimNum = ?",
        &[&claim.to_string()],
    )
    .await;
    wait_for_reconcile(&state_url, &mapping_of("Claim"), &claims, &receiver, 3).await;
    let claim_ref = format!("Claim/{claim}");
    assert_eq!(
        claims.heard(&receiver),
        expect(&[
            (&claim_ref, "POST"),
            (&claim_ref, "PUT"),
            (&claim_ref, "DELETE")
        ]),
        "created, status changed, deleted"
    );

    // Nothing else reached anyone: the aging run and the confirmation were not events, and no
    // subscription heard another patient. $status agrees with what arrived.
    assert_eq!(demographics.heard(&receiver).len(), 1);
    assert_eq!(their_demographics.heard(&receiver).len(), 1);
    assert_eq!(registered.heard(&receiver).len(), 1);
    assert_eq!(their_claims.heard(&receiver).len(), 1);
    for sub in all {
        let status = app.get(&format!("Subscription/{}/$status", sub.id)).await;
        support::assert_valid_r4(&status);
        let parameters = status["entry"][0]["resource"]["parameter"]
            .as_array()
            .unwrap();
        let since = parameters
            .iter()
            .find(|p| p["name"] == "events-since-subscription-start")
            .unwrap();
        assert_eq!(
            since["valueString"],
            sub.heard(&receiver).len().to_string(),
            "{}: {status}",
            sub.topic
        );
    }
    for received in receiver.received.lock().unwrap().iter() {
        portico::fhir::xml::parse_strict(&received.body)
            .unwrap_or_else(|e| panic!("a notification is not strict R4 ({e})"));
    }
}
