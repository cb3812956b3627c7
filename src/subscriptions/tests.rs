//! Tests of the Subscription resource (parse, refuse, render) and of notification Bundles and
//! status Parameters, against the backport IG's rules (SB-xx) and fhirbolt's strict R4 model.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value as Json, json};

use super::notification::{
    Focus, NotificationEvent, NotificationType, SubscriptionStatusInfo, notification_bundle,
    status_parameters, status_searchset,
};
use super::resource::*;
use crate::adapter::model::{ChangeKind, TOPIC_URL_PREFIX, Topic};
use crate::fhir::outcome::{Issue, IssueType};

const BASE: &str = "https://portico.example/fhir";

fn topic(slug: &str, resource_type: &str, filters: &[&str]) -> Topic {
    Topic {
        slug: slug.into(),
        url: format!("{TOPIC_URL_PREFIX}{slug}"),
        title: slug.into(),
        description: String::new(),
        resource_type: resource_type.into(),
        mappings: vec![resource_type.into()],
        on: vec![ChangeKind::Create, ChangeKind::Update],
        changed: Vec::new(),
        became: None,
        filters: filters.iter().map(|f| f.to_string()).collect(),
    }
}

fn topics() -> Vec<Topic> {
    vec![
        topic(
            "appointment-booked",
            "Appointment",
            &["patient", "practitioner", "status"],
        ),
        topic("patient-registered", "Patient", &[]),
    ]
}

fn search_params(resource_type: &str) -> Option<Vec<String>> {
    let names: &[&str] = match resource_type {
        "Appointment" => &["patient", "practitioner", "status", "date"],
        "Patient" => &["name", "identifier", "birthdate"],
        _ => return None,
    };
    Some(names.iter().map(|n| n.to_string()).collect())
}

fn booked_url() -> String {
    format!("{TOPIC_URL_PREFIX}appointment-booked")
}

fn backport(name: &str) -> String {
    format!("http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/{name}")
}

/// The IG's example subscription (subscription-zulip, an encounter-start topic filtered on one
/// patient), on one of Portico's topics: rest-hook, id-only, heartbeat, timeout and max-count.
fn ig_example() -> Json {
    json!({
        "resourceType": "Subscription",
        "id": "example-backport",
        "meta": {"profile": [BACKPORT_SUBSCRIPTION_PROFILE]},
        "status": "requested",
        "contact": [{"system": "email", "value": "integration@ehr.example"}],
        "end": "2026-12-31T12:00:00Z",
        "reason": "Booked appointments of one patient",
        "criteria": booked_url(),
        "_criteria": {"extension": [{
            "url": backport("backport-filter-criteria"),
            "valueString": "Appointment?patient=Patient/123"
        }]},
        "channel": {
            "extension": [
                {"url": backport("backport-heartbeat-period"), "valueUnsignedInt": 86400},
                {"url": backport("backport-timeout"), "valueUnsignedInt": 60},
                {"url": backport("backport-max-count"), "valuePositiveInt": 20}
            ],
            "type": "rest-hook",
            "endpoint": "https://ehr.example/fhir/r4/$subscription-hook",
            "payload": "application/fhir+json",
            "_payload": {"extension": [{
                "url": backport("backport-payload-content"),
                "valueCode": "id-only"
            }]},
            "header": ["Authorization: Bearer secret-token-123"]
        }
    })
}

/// Expected query pairs, as written in a table.
type Pairs = &'static [(&'static str, &'static str)];

fn owned(pairs: Pairs) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

fn parse(json: &Json) -> Result<SubscriptionSpec, Vec<Issue>> {
    parse_subscription(json, &topics(), &search_params)
}

fn parsed(json: &Json) -> SubscriptionSpec {
    parse(json).unwrap_or_else(|issues| panic!("refused: {issues:#?}\n{json:#}"))
}

fn refused(json: &Json) -> Vec<Issue> {
    match parse(json) {
        Ok(spec) => panic!("accepted: {spec:#?}\n{json:#}"),
        Err(issues) => issues,
    }
}

/// The IG example with one change: `path` (JSON pointer) set to `value`, or removed when null.
fn example_with(pointer: &str, value: Json) -> Json {
    let mut json = ig_example();
    let (parent, name) = pointer.rsplit_once('/').expect("a pointer");
    let parent = json
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("no {parent}"));
    match (parent, value) {
        (Json::Object(object), Json::Null) => {
            object.remove(name);
        }
        (Json::Object(object), value) => {
            object.insert(name.into(), value);
        }
        (Json::Array(items), value) => items[name.parse::<usize>().expect("an index")] = value,
        _ => panic!("{pointer} is not in an object or array"),
    }
    json
}

fn strict(json: &Json) {
    let bytes = serde_json::to_vec(json).expect("serializes");
    if let Err(error) = crate::fhir::xml::parse_strict(&bytes) {
        panic!("not valid R4 ({error}):\n{json:#}");
    }
}

fn at(day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, day, 9, 30, 0)
        .single()
        .expect("a valid date")
}

#[test]
fn the_ig_example_parses_into_every_field() {
    let spec = parsed(&ig_example());
    assert_eq!(
        spec,
        SubscriptionSpec {
            criteria: Criteria::Topic {
                url: booked_url(),
                filters: vec![TopicFilter {
                    parameter: "patient".into(),
                    value: "Patient/123".into(),
                }],
            },
            reason: "Booked appointments of one patient".into(),
            end: Some(Utc.with_ymd_and_hms(2026, 12, 31, 12, 0, 0).unwrap()),
            channel: ChannelSpec {
                kind: ChannelKind::RestHook,
                endpoint: Some("https://ehr.example/fhir/r4/$subscription-hook".into()),
                payload: Some("application/fhir+json".into()),
                content: PayloadContent::IdOnly,
                headers: vec!["Authorization: Bearer secret-token-123".into()],
                heartbeat_period: Some(86400),
                timeout: Some(60),
                max_count: Some(20),
                signing: None,
                oauth: None,
            },
            requested_status: SubscriptionStatus::Requested,
            contact: vec![json!({"system": "email", "value": "integration@ehr.example"})],
        }
    );
    assert_eq!(spec.criteria.resource_type(&topics()), Some("Appointment"));
    assert_eq!(
        spec.criteria.query_pairs(),
        vec![("patient".to_owned(), "Patient/123".to_owned())]
    );
}

#[test]
fn defaults_when_optional_parts_are_absent() {
    let json = json!({
        "resourceType": "Subscription",
        "status": "active",
        "reason": "r",
        "criteria": booked_url(),
        "channel": {
            "type": "rest-hook",
            "endpoint": "http://ehr.example/hook",
            "payload": "application/fhir+json;fhirVersion=4.0"
        }
    });
    let spec = parsed(&json);
    // SB-13: content defaults to id-only when the extension is absent.
    assert_eq!(spec.channel.content, PayloadContent::IdOnly);
    assert_eq!(spec.requested_status, SubscriptionStatus::Active);
    assert_eq!(
        spec.criteria,
        Criteria::Topic {
            url: booked_url(),
            filters: Vec::new()
        }
    );
    assert_eq!(spec.channel.heartbeat_period, None);
    assert_eq!(spec.end, None);
    assert!(spec.contact.is_empty() && spec.channel.headers.is_empty());
}

#[test]
fn filter_forms_are_decoded_into_parameter_and_value() {
    // Columns: the filter strings, the pairs they stand for.
    let table: [(&[&str], Pairs); 6] = [
        (&["patient=Patient/123"], &[("patient", "Patient/123")]),
        (
            &["Appointment.patient=Patient/7"],
            &[("patient", "Patient/7")],
        ),
        (&["status:not=cancelled"], &[("status:not", "cancelled")]),
        (&["patient=Patient%2F9"], &[("patient", "Patient/9")]),
        (
            &["Appointment?patient=Patient/1&status=booked"],
            &[("patient", "Patient/1"), ("status", "booked")],
        ),
        (
            &["patient=Patient/1", "practitioner=Practitioner/2"],
            &[("patient", "Patient/1"), ("practitioner", "Practitioner/2")],
        ),
    ];
    for (texts, pairs) in table {
        let extensions: Vec<Json> = texts
            .iter()
            .map(|text| json!({"url": backport("backport-filter-criteria"), "valueString": text}))
            .collect();
        let spec = parsed(&example_with("/_criteria/extension", json!(extensions)));
        assert_eq!(spec.criteria.query_pairs(), owned(pairs), "{texts:?}");
    }
}

/// Asserts the refusal has an issue at `expression` of type `code` whose text mentions `words`.
fn assert_issue(issues: &[Issue], expression: &str, code: IssueType, words: &str, case: &str) {
    let found = issues.iter().any(|issue| {
        issue.expression.as_deref() == Some(expression)
            && issue.code == code
            && issue.diagnostics.contains(words)
    });
    assert!(
        found,
        "{case}: no {code:?} issue at {expression} mentioning {words:?} in {issues:#?}"
    );
}

#[test]
fn each_refusal_names_the_element() {
    use IssueType::{Invalid, NotSupported};
    let filter = |text: &str| json!({"extension": [{"url": backport("backport-filter-criteria"), "valueString": text}]});
    let content = |code: &str| json!({"extension": [{"url": backport("backport-payload-content"), "valueCode": code}]});
    let channel_extension =
        |name: &str, key: &str, value: Json| json!([{"url": backport(name), key: value}]);
    // Columns: what the case is, the change to the IG example, where the issue is, its type, a
    // word of its text.
    let cases = [
        (
            "SB-10 unknown topic",
            "/criteria",
            json!(format!("{TOPIC_URL_PREFIX}lab-result")),
            "Subscription.criteria",
            NotSupported,
            "2 topic(s)",
        ),
        (
            "SB-10 another server's topic",
            "/criteria",
            json!("http://hl7.org/SubscriptionTopic/encounter-start"),
            "Subscription.criteria",
            NotSupported,
            "unknown topic",
        ),
        (
            "criteria missing",
            "/criteria",
            Json::Null,
            "Subscription.criteria",
            Invalid,
            "required",
        ),
        (
            "SB-11 filter parameter not allowed",
            "/_criteria",
            filter("date=2026-12-01"),
            "Subscription.criteria.extension[0]",
            NotSupported,
            "it allows patient, practitioner, status",
        ),
        (
            "SB-11 wrong type prefix",
            "/_criteria",
            filter("Patient?patient=Patient/123"),
            "Subscription.criteria.extension[0]",
            Invalid,
            "names type Patient",
        ),
        (
            "SB-11 empty value",
            "/_criteria",
            filter("patient="),
            "Subscription.criteria.extension[0]",
            Invalid,
            "a name and a value",
        ),
        (
            "SB-11 no value string",
            "/_criteria",
            json!({"extension": [{"url": backport("backport-filter-criteria"), "valueCode": "x"}]}),
            "Subscription.criteria.extension[0]",
            Invalid,
            "valueString",
        ),
        (
            "SB-12 unknown channel",
            "/channel/type",
            json!("carrier-pigeon"),
            "Subscription.channel.type",
            Invalid,
            "not an R4 channel type",
        ),
        (
            "SB-12 email",
            "/channel/type",
            json!("email"),
            "Subscription.channel.type",
            NotSupported,
            "email",
        ),
        (
            "SB-12 sms",
            "/channel/type",
            json!("sms"),
            "Subscription.channel.type",
            NotSupported,
            "sms",
        ),
        (
            "SB-12 message without a custom type",
            "/channel/type",
            json!("message"),
            "Subscription.channel.type",
            NotSupported,
            "message",
        ),
        (
            "SB-13 missing payload",
            "/channel/payload",
            Json::Null,
            "Subscription.channel.payload",
            Invalid,
            "required",
        ),
        (
            "SB-13 another FHIR version",
            "/channel/payload",
            json!("application/fhir+json; fhirVersion=3.0"),
            "Subscription.channel.payload",
            NotSupported,
            "fhirVersion 3.0",
        ),
        (
            "SB-13 unknown media type",
            "/channel/payload",
            json!("text/plain"),
            "Subscription.channel.payload",
            NotSupported,
            "text/plain",
        ),
        (
            "SB-13 bad content code",
            "/channel/_payload",
            content("everything"),
            "Subscription.channel.payload.extension",
            Invalid,
            "id-only",
        ),
        (
            "SB-14 heartbeat of zero",
            "/channel/extension",
            channel_extension("backport-heartbeat-period", "valueUnsignedInt", json!(0)),
            "Subscription.channel.extension",
            Invalid,
            "backport-heartbeat-period",
        ),
        (
            "SB-14 negative timeout",
            "/channel/extension",
            channel_extension("backport-timeout", "valueUnsignedInt", json!(-5)),
            "Subscription.channel.extension",
            Invalid,
            "backport-timeout",
        ),
        (
            "SB-14 max-count as text",
            "/channel/extension",
            channel_extension("backport-max-count", "valuePositiveInt", json!("20")),
            "Subscription.channel.extension",
            Invalid,
            "backport-max-count",
        ),
        (
            "SB-15 endpoint not http",
            "/channel/endpoint",
            json!("ftp://ehr.example/hook"),
            "Subscription.channel.endpoint",
            Invalid,
            "http or https",
        ),
        (
            "SB-15 relative endpoint",
            "/channel/endpoint",
            json!("/hook"),
            "Subscription.channel.endpoint",
            Invalid,
            "absolute",
        ),
        (
            "SB-15 rest-hook without endpoint",
            "/channel/endpoint",
            Json::Null,
            "Subscription.channel.endpoint",
            Invalid,
            "needs an endpoint",
        ),
        (
            "header without a colon",
            "/channel/header",
            json!(["Bearer abc"]),
            "Subscription.channel.header",
            Invalid,
            "channel header 1",
        ),
        (
            "header Portico sets",
            "/channel/header",
            json!(["X-Tenant: 1", "Content-Type: text/plain"]),
            "Subscription.channel.header",
            Invalid,
            "channel header 2",
        ),
        (
            "header not a string",
            "/channel/header",
            json!([42]),
            "Subscription.channel.header",
            Invalid,
            "string",
        ),
        (
            "SB-16 status error from a client",
            "/status",
            json!("error"),
            "Subscription.status",
            Invalid,
            "set by the server",
        ),
        (
            "status unknown",
            "/status",
            json!("paused"),
            "Subscription.status",
            Invalid,
            "requested, active or off",
        ),
        (
            "status missing",
            "/status",
            Json::Null,
            "Subscription.status",
            Invalid,
            "required",
        ),
        (
            "end without a zone",
            "/end",
            json!("2026-12-31T12:00:00"),
            "Subscription.end",
            Invalid,
            "time zone",
        ),
        (
            "reason missing",
            "/reason",
            Json::Null,
            "Subscription.reason",
            Invalid,
            "required",
        ),
        (
            "contact not an array",
            "/contact",
            json!({"system": "email", "value": "a@b.example"}),
            "Subscription.contact",
            Invalid,
            "ContactPoint",
        ),
        (
            "modifier extension",
            "/modifierExtension",
            json!([{"url": "https://other.example/x", "valueBoolean": true}]),
            "Subscription.modifierExtension",
            NotSupported,
            "modifier",
        ),
        (
            "wrong resource type",
            "/resourceType",
            json!("Patient"),
            "Subscription.resourceType",
            Invalid,
            "Subscription",
        ),
    ];
    for (case, pointer, value, expression, code, words) in cases {
        let issues = refused(&example_with(pointer, value));
        assert_issue(&issues, expression, code, words, case);
    }
}

#[test]
fn every_problem_is_reported_in_one_answer() {
    let mut json = example_with("/status", json!("error"));
    json["criteria"] = json!(format!("{TOPIC_URL_PREFIX}nope"));
    json["channel"]["endpoint"] = json!("mailto:a@b.example");
    json["channel"]["header"] = json!(["broken"]);
    let issues = refused(&json);
    let mut places: Vec<&str> = issues
        .iter()
        .filter_map(|issue| issue.expression.as_deref())
        .collect();
    places.sort();
    assert_eq!(
        places,
        [
            "Subscription.channel.endpoint",
            "Subscription.channel.header",
            "Subscription.criteria",
            "Subscription.status",
        ]
    );
}

#[test]
fn a_long_timeout_is_lowered_to_the_cap() {
    let json = example_with(
        "/channel/extension",
        json!([{"url": backport("backport-timeout"), "valueUnsignedInt": 3600}]),
    );
    assert_eq!(parsed(&json).channel.timeout, Some(MAX_TIMEOUT_SECONDS));
}

fn mllp_channel() -> Json {
    json!({
        "type": "message",
        "_type": {"extension": [{
            "url": backport("backport-channel-type"),
            "valueCoding": {"system": PORTICO_CHANNEL_TYPE_SYSTEM, "code": "hl7v2-mllp"}
        }]},
        "endpoint": "mllp://interface.ehr.example:2575",
        "payload": "x-application/hl7-v2+er7",
        "_payload": {"extension": [{
            "url": backport("backport-payload-content"),
            "valueCode": "full-resource"
        }]}
    })
}

#[test]
fn mllp_is_a_custom_message_channel() {
    let spec = parsed(&example_with("/channel", mllp_channel()));
    assert_eq!(spec.channel.kind, ChannelKind::Hl7v2Mllp);
    assert_eq!(
        spec.channel.endpoint.as_deref(),
        Some("mllp://interface.ehr.example:2575")
    );
    assert_eq!(spec.channel.content, PayloadContent::FullResource);

    // Columns: the change to the MLLP channel, where the issue is.
    let refusals = [
        (
            "/endpoint",
            json!("mllp://interface.ehr.example"),
            "endpoint",
        ),
        (
            "/endpoint",
            json!("https://interface.ehr.example:2575"),
            "endpoint",
        ),
        (
            "/endpoint",
            json!("mllp://u:p@interface.ehr.example:2575"),
            "endpoint",
        ),
        ("/endpoint", Json::Null, "endpoint"),
        ("/payload", json!("application/fhir+json"), "payload"),
        (
            "/payload",
            json!("x-application/hl7-v2+er7; fhirVersion=4.0"),
            "payload",
        ),
        (
            "/_type/extension/0/valueCoding/code",
            json!("zulip"),
            "type",
        ),
        (
            "/_type/extension/0/valueCoding/system",
            json!("https://other.example/channels"),
            "type",
        ),
    ];
    for (pointer, value, element) in refusals {
        let mut channel = mllp_channel();
        let (parent, name) = pointer.rsplit_once('/').expect("a pointer");
        let parent = channel.pointer_mut(parent).expect("present");
        match value {
            Json::Null => parent.as_object_mut().expect("an object").remove(name),
            value => parent
                .as_object_mut()
                .expect("an object")
                .insert(name.into(), value),
        };
        let issues = refused(&example_with("/channel", channel));
        let expression = format!("Subscription.channel.{element}");
        assert!(
            issues
                .iter()
                .any(|i| i.expression.as_deref() == Some(&expression)),
            "{pointer}: {issues:#?}"
        );
    }
}

#[test]
fn the_mllp_extension_on_another_channel_type_is_refused() {
    let mut json = ig_example();
    json["channel"]["_type"] = mllp_channel()["_type"].clone();
    let issues = refused(&json);
    assert_issue(
        &issues,
        "Subscription.channel.type",
        IssueType::NotSupported,
        "rest-hook (hl7v2-mllp)",
        "rest-hook with the mllp extension",
    );
}

#[test]
fn websocket_needs_no_endpoint() {
    let mut json = example_with("/channel/endpoint", Json::Null);
    json["channel"]["type"] = json!("websocket");
    json["channel"]["header"] = json!([]);
    let spec = parsed(&json);
    assert_eq!(spec.channel.kind, ChannelKind::Websocket);
    assert_eq!(spec.channel.endpoint, None);
}

fn classic(criteria: &str) -> Json {
    json!({
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "classic",
        "criteria": criteria,
        "channel": {"type": "rest-hook", "endpoint": "https://ehr.example/hook"}
    })
}

#[test]
fn classic_search_criteria_over_served_parameters_are_accepted() {
    // Columns: criteria, type, the decoded query pairs.
    let table: [(&str, &str, Pairs); 4] = [
        (
            "Appointment?status=booked&patient=Patient/123",
            "Appointment",
            &[("status", "booked"), ("patient", "Patient/123")],
        ),
        ("Appointment", "Appointment", &[]),
        (
            "Patient?_lastUpdated=gt2026-01-01&name:contains=sm%C3%AFth",
            "Patient",
            &[("_lastUpdated", "gt2026-01-01"), ("name:contains", "smïth")],
        ),
        ("Patient?_id=7", "Patient", &[("_id", "7")]),
    ];
    for (criteria, resource_type, pairs) in table {
        // CS-03: without a payload the channel is a bodiless ping.
        let spec = parsed(&classic(criteria));
        assert_eq!(
            spec.criteria.resource_type(&[]),
            Some(resource_type),
            "{criteria}"
        );
        assert_eq!(spec.criteria.query_pairs(), owned(pairs), "{criteria}");
        assert_eq!(spec.channel.payload, None);
    }
}

#[test]
fn classic_criteria_outside_what_is_served_are_refused() {
    use IssueType::{Invalid, NotSupported};
    // Columns: criteria, issue type, a word of its text.
    let table = [
        (
            "Claim?patient=Patient/1",
            NotSupported,
            "does not serve Claim",
        ),
        ("Appointment?color=red", NotSupported, "\"color\""),
        ("Appointment?_count=5", NotSupported, "\"_count\""),
        ("Appointment?status", Invalid, "a name and a value"),
        ("appointment?status=booked", Invalid, "neither a topic URL"),
        ("Appointment?status=booked&", Invalid, "a name and a value"),
    ];
    for (criteria, code, words) in table {
        let issues = refused(&classic(criteria));
        assert_issue(&issues, "Subscription.criteria", code, words, criteria);
    }
    let mut with_filter = classic("Appointment?status=booked");
    with_filter["_criteria"] = ig_example()["_criteria"].clone();
    let issues = refused(&with_filter);
    assert_issue(
        &issues,
        "Subscription.criteria.extension",
        IssueType::Invalid,
        "topic subscriptions",
        "filter on a classic criteria",
    );
    let mut bad_payload = classic("Appointment");
    bad_payload["channel"]["payload"] = json!("application/fhir+json;fhirVersion=5.0");
    assert_issue(
        &refused(&bad_payload),
        "Subscription.channel.payload",
        IssueType::NotSupported,
        "fhirVersion 5.0",
        "classic with an R5 payload",
    );
}

fn view(spec: &SubscriptionSpec) -> SubscriptionView<'_> {
    SubscriptionView {
        id: "sub-1",
        spec,
        status: SubscriptionStatus::Active,
        error: None,
        events_since_start: 12,
        version: 3,
        last_updated: at(2),
        reveal_signing_secret: false,
    }
}

#[test]
fn the_rendered_subscription_is_strict_r4_with_the_backport_profile() {
    let spec = parsed(&ig_example());
    let rendered = render_subscription(&view(&spec));
    strict(&rendered);
    assert_eq!(rendered["id"], "sub-1");
    assert_eq!(rendered["meta"]["versionId"], "3");
    assert_eq!(rendered["meta"]["lastUpdated"], "2026-12-02T09:30:00Z");
    assert_eq!(
        rendered["meta"]["profile"][0],
        BACKPORT_SUBSCRIPTION_PROFILE
    );
    assert_eq!(rendered["status"], "active");
    assert_eq!(rendered["end"], "2026-12-31T12:00:00Z");
    assert_eq!(rendered["criteria"], booked_url().as_str());
    assert_eq!(
        rendered["_criteria"]["extension"][0]["valueString"],
        "patient=Patient/123"
    );
    assert_eq!(
        rendered["channel"]["_payload"]["extension"][0]["valueCode"],
        "id-only"
    );
    assert_eq!(
        rendered["channel"]["extension"].as_array().map(Vec::len),
        Some(3)
    );
    assert!(rendered.get("error").is_none());
}

#[test]
fn rendered_headers_keep_their_names_and_hide_their_values() {
    let mut json = ig_example();
    json["channel"]["header"] = json!(["Authorization: Bearer secret-token-123", "X-Api-Key:k1"]);
    let spec = parsed(&json);
    let rendered = render_subscription(&view(&spec));
    assert_eq!(
        rendered["channel"]["header"],
        json!(["Authorization: ***", "X-Api-Key: ***"])
    );
    let text = rendered.to_string();
    assert!(
        !text.contains("secret-token-123") && !text.contains("k1\""),
        "{text}"
    );
}

#[test]
fn parsing_the_rendered_subscription_keeps_everything_but_header_values() {
    let mut odd_filter = ig_example();
    odd_filter["_criteria"]["extension"][0]["valueString"] =
        json!("status=a%26b%2Bc%25 d%C3%AF=e&status:not=x&practitioner=Practitioner/1");
    let mut classic_full = classic("Appointment?status=booked&patient=Patient%2F1");
    classic_full["channel"]["payload"] = json!("application/fhir+json");
    classic_full["channel"]["header"] = json!(["X-Tenant: 9"]);
    let mut websocket = example_with("/channel/endpoint", Json::Null);
    websocket["channel"]["type"] = json!("websocket");
    let cases = [
        ("IG example", ig_example()),
        ("escaped filter values", odd_filter),
        ("MLLP", example_with("/channel", mllp_channel())),
        ("websocket", websocket),
        ("classic ping", classic("Patient")),
        ("classic with payload", classic_full),
    ];
    for (case, json) in cases {
        let spec = parsed(&json);
        let rendered = render_subscription(&SubscriptionView {
            error: Some("the endpoint answered 500"),
            ..view(&spec)
        });
        strict(&rendered);
        assert_eq!(rendered["error"], "the endpoint answered 500", "{case}");
        let is_topic = matches!(spec.criteria, Criteria::Topic { .. });
        assert_eq!(
            rendered["meta"].get("profile").is_some(),
            is_topic,
            "{case}"
        );
        let mut again = parsed(&rendered);
        assert_eq!(again.requested_status, SubscriptionStatus::Active, "{case}");
        let redacted: Vec<String> = spec
            .channel
            .headers
            .iter()
            .map(|h| format!("{}: ***", h.split_once(':').map_or("", |(n, _)| n.trim())))
            .collect();
        assert_eq!(again.channel.headers, redacted, "{case}");
        again.channel.headers = spec.channel.headers.clone();
        again.requested_status = spec.requested_status;
        assert_eq!(again, spec, "{case}: {rendered:#}");
    }
}

#[test]
fn the_spec_survives_serde_for_the_state_store() {
    let spec = parsed(&ig_example());
    let stored = serde_json::to_string(&spec).expect("serializes");
    let back: SubscriptionSpec = serde_json::from_str(&stored).expect("deserializes");
    assert_eq!(back, spec);
}

fn status_info(kind: NotificationType, events_since_start: u64) -> SubscriptionStatusInfo<'static> {
    SubscriptionStatusInfo {
        subscription_url: "https://portico.example/fhir/Subscription/sub-1",
        topic: Some("https://portico.health/fhir/SubscriptionTopic/appointment-booked"),
        status: SubscriptionStatus::Active,
        kind,
        events_since_start,
        errors: Vec::new(),
    }
}

fn appointment(id: &str) -> Json {
    json!({
        "resourceType": "Appointment",
        "id": id,
        "status": "booked",
        "participant": [{"actor": {"reference": "Patient/123"}, "status": "accepted"}]
    })
}

/// Three events: a create and an update that could be read, and a delete.
fn events() -> Vec<NotificationEvent> {
    let focus = |id: &str, change: ChangeKind, resource: Option<Json>| Focus {
        reference: format!("Appointment/{id}"),
        full_url: format!("{BASE}/Appointment/{id}"),
        change,
        resource,
    };
    vec![
        NotificationEvent {
            number: 10,
            timestamp: at(1),
            focus: Some(focus("a1", ChangeKind::Create, Some(appointment("a1")))),
        },
        NotificationEvent {
            number: 11,
            timestamp: at(2),
            focus: Some(focus("a2", ChangeKind::Update, Some(appointment("a2")))),
        },
        NotificationEvent {
            number: 12,
            timestamp: at(3),
            focus: Some(focus("a3", ChangeKind::Delete, None)),
        },
    ]
}

fn parameter<'a>(parameters: &'a Json, name: &str) -> Vec<&'a Json> {
    parameters["parameter"]
        .as_array()
        .expect("parameters")
        .iter()
        .filter(|p| p["name"] == name)
        .collect()
}

#[test]
fn status_parameters_have_the_backport_r4_slices() {
    let mut status = status_info(NotificationType::EventNotification, 12);
    status.errors = vec!["timeout".into()];
    let parameters = status_parameters(&status, &events(), PayloadContent::IdOnly);
    strict(&parameters);
    assert_eq!(
        parameter(&parameters, "subscription")[0]["valueReference"]["reference"],
        "https://portico.example/fhir/Subscription/sub-1"
    );
    assert_eq!(
        parameter(&parameters, "topic")[0]["valueCanonical"],
        "https://portico.health/fhir/SubscriptionTopic/appointment-booked"
    );
    assert_eq!(parameter(&parameters, "status")[0]["valueCode"], "active");
    assert_eq!(
        parameter(&parameters, "type")[0]["valueCode"],
        "event-notification"
    );
    assert_eq!(
        parameter(&parameters, "events-since-subscription-start")[0]["valueString"],
        "12"
    );
    assert_eq!(
        parameter(&parameters, "error")[0]["valueCodeableConcept"]["text"],
        "timeout"
    );
    let events = parameter(&parameters, "notification-event");
    assert_eq!(events.len(), 3);
    assert_eq!(
        events[0]["part"],
        json!([
            {"name": "event-number", "valueString": "10"},
            {"name": "timestamp", "valueInstant": "2026-12-01T09:30:00Z"},
            {"name": "focus", "valueReference": {"reference": format!("{BASE}/Appointment/a1")}}
        ])
    );
}

#[test]
fn a_classic_subscription_status_has_no_topic() {
    let status = SubscriptionStatusInfo {
        topic: None,
        ..status_info(NotificationType::Handshake, 0)
    };
    let parameters = status_parameters(&status, &[], PayloadContent::Empty);
    strict(&parameters);
    assert!(parameter(&parameters, "topic").is_empty());
    assert_eq!(parameter(&parameters, "type")[0]["valueCode"], "handshake");
}

#[test]
fn notification_bundles_for_every_type_and_content_level() {
    let kinds = [
        NotificationType::Handshake,
        NotificationType::Heartbeat,
        NotificationType::EventNotification,
        NotificationType::QueryStatus,
        NotificationType::QueryEvent,
    ];
    let contents = [
        PayloadContent::Empty,
        PayloadContent::IdOnly,
        PayloadContent::FullResource,
    ];
    for kind in kinds {
        // Handshakes, heartbeats and status queries carry no events.
        let carries_events = matches!(
            kind,
            NotificationType::EventNotification | NotificationType::QueryEvent
        );
        let events = if carries_events { events() } else { Vec::new() };
        for content in contents {
            let case = format!("{} {}", kind.code(), content.code());
            let bundle = notification_bundle(&status_info(kind, 12), &events, content);
            strict(&bundle);
            assert_eq!(bundle["type"], "history", "{case}");
            assert!(
                bundle["id"].as_str().is_some_and(|id| id.len() == 36),
                "{case}"
            );
            let entries = bundle["entry"].as_array().expect("entries");
            // SB-20: entry[0] is the status; SB-22: every entry has request and response.
            assert_eq!(
                entries[0]["resource"]["resourceType"], "Parameters",
                "{case}"
            );
            assert_eq!(
                entries[0]["request"],
                json!({"method": "GET", "url": "https://portico.example/fhir/Subscription/sub-1/$status"}),
                "{case}"
            );
            assert_eq!(
                entries[0]["resource"]["parameter"][3]["valueCode"],
                kind.code(),
                "{case}"
            );
            for entry in entries {
                assert!(entry["request"]["method"].is_string(), "{case}: {entry}");
                assert!(entry["response"]["status"].is_string(), "{case}: {entry}");
            }
            let focus_parts = entries[0]["resource"]["parameter"]
                .as_array()
                .expect("parameters")
                .iter()
                .filter(|p| p["name"] == "notification-event")
                .flat_map(|p| p["part"].as_array().expect("parts"))
                .filter(|part| part["name"] == "focus")
                .count();
            let focus_entries = &entries[1..];
            match content {
                // SB-23: no focus, no entry besides the status.
                PayloadContent::Empty => {
                    assert_eq!(focus_parts, 0, "{case}");
                    assert!(focus_entries.is_empty(), "{case}");
                }
                // SB-24: focus populated; entries without resources.
                PayloadContent::IdOnly => {
                    assert_eq!(focus_parts, events.len(), "{case}");
                    assert_eq!(focus_entries.len(), events.len(), "{case}");
                    assert!(focus_entries.iter().all(|e| e.get("resource").is_none()));
                }
                // SB-25: the readable ones with their resource, the deleted one without.
                PayloadContent::FullResource => {
                    assert_eq!(focus_parts, events.len(), "{case}");
                    assert_eq!(focus_entries.len(), events.len(), "{case}");
                    let with_resource = focus_entries
                        .iter()
                        .filter(|e| e.get("resource").is_some())
                        .count();
                    assert_eq!(with_resource, events.len().saturating_sub(1), "{case}");
                }
            }
        }
    }
}

#[test]
fn focus_entries_replay_the_change() {
    let bundle = notification_bundle(
        &status_info(NotificationType::EventNotification, 12),
        &events(),
        PayloadContent::FullResource,
    );
    let entries = bundle["entry"].as_array().expect("entries");
    // Columns: fullUrl, request, response status, has the resource.
    let expected = [
        (
            "a1",
            json!({"method": "POST", "url": "Appointment"}),
            "201 Created",
            true,
        ),
        (
            "a2",
            json!({"method": "PUT", "url": "Appointment/a2"}),
            "200 OK",
            true,
        ),
        (
            "a3",
            json!({"method": "DELETE", "url": "Appointment/a3"}),
            "204 No Content",
            false,
        ),
    ];
    for (entry, (id, request, status, has_resource)) in entries[1..].iter().zip(expected) {
        assert_eq!(entry["fullUrl"], format!("{BASE}/Appointment/{id}"));
        assert_eq!(entry["request"], request);
        assert_eq!(entry["response"]["status"], status);
        assert_eq!(entry.get("resource").is_some(), has_resource, "{id}");
    }
    assert_eq!(entries[1]["resource"], appointment("a1"));
}

#[test]
fn each_notification_gets_its_own_bundle_id() {
    let status = status_info(NotificationType::Heartbeat, 0);
    let first = notification_bundle(&status, &[], PayloadContent::IdOnly);
    let second = notification_bundle(&status, &[], PayloadContent::IdOnly);
    assert_ne!(first["id"], second["id"]);
}

#[test]
fn the_status_operation_answers_a_searchset_of_parameters() {
    let mut failing = status_info(NotificationType::QueryStatus, 40);
    failing.status = SubscriptionStatus::Error;
    failing.errors = vec!["the endpoint answered 503 for 5 days".into()];
    let statuses = [status_info(NotificationType::QueryStatus, 3), failing];
    let bundle = status_searchset(&statuses);
    strict(&bundle);
    assert_eq!(bundle["type"], "searchset");
    assert_eq!(bundle["total"], 2);
    let entries = bundle["entry"].as_array().expect("entries");
    assert_eq!(entries.len(), 2);
    for entry in entries {
        assert_eq!(entry["resource"]["resourceType"], "Parameters");
        assert_eq!(entry["search"]["mode"], "match");
        assert!(parameter(&entry["resource"], "notification-event").is_empty());
    }
    assert_eq!(
        parameter(&entries[1]["resource"], "status")[0]["valueCode"],
        "error"
    );
    assert_eq!(parameter(&entries[1]["resource"], "error").len(), 1);
    let none = status_searchset(&[]);
    strict(&none);
    assert_eq!(none["total"], 0);
    assert!(none.get("entry").is_none());
}

#[test]
fn fhir_payload_types_of_r4_are_accepted_and_others_refused() {
    // Columns: channel.payload, accepted.
    let table = [
        ("application/fhir+json", true),
        ("application/json", true),
        ("application/fhir+xml", true),
        ("Application/FHIR+JSON; fhirVersion=4.0.1", true),
        (
            "application/fhir+json;charset=UTF-8;fhirVersion=\"4.0\"",
            true,
        ),
        ("application/fhir+json; fhirVersion=4.3", false),
        ("application/fhir+json; profile=x", false),
        ("application/fhir+ndjson", false),
        ("x-application/hl7-v2+er7", false),
    ];
    for (payload, accepted) in table {
        let result = parse(&example_with("/channel/payload", json!(payload)));
        assert_eq!(result.is_ok(), accepted, "{payload}: {result:#?}");
        if let Ok(spec) = result {
            // Sent verbatim as the rest-hook Content-Type (SB-26).
            assert_eq!(spec.channel.payload.as_deref(), Some(payload));
        }
    }
}

/// A valid `whsec_` secret of 32 bytes, all `byte`.
fn whsec(byte: u8) -> String {
    use base64::Engine;
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode([byte; 32])
    )
}

/// The IG example with a signing secret and outbound OAuth credentials on its channel.
fn with_credentials(signing: &str, client_secret: &str, token_url: &str) -> Json {
    use super::channel_secrets::{OUTBOUND_OAUTH_EXTENSION, SIGNING_SECRET_EXTENSION};
    let mut json = ig_example();
    let extensions = json["channel"]["extension"]
        .as_array_mut()
        .expect("extensions");
    extensions.push(json!({"url": SIGNING_SECRET_EXTENSION, "valueString": signing}));
    extensions.push(json!({
        "url": OUTBOUND_OAUTH_EXTENSION,
        "extension": [
            {"url": "tokenUrl", "valueUrl": token_url},
            {"url": "clientId", "valueString": "portico-at-ehr"},
            {"url": "clientSecret", "valueString": client_secret},
            {"url": "scope", "valueString": "system/Bundle.c"},
        ],
    }));
    json
}

#[test]
fn channel_credentials_are_stored_and_served_redacted() {
    use super::channel_secrets::{REDACTED, settle};
    let secret = whsec(7);
    let json = with_credentials(&secret, "oauth-secret-1", "https://ehr.example/oauth/token");
    let mut spec = parsed(&json);
    assert!(!settle(&mut spec.channel, None, at(2)).expect("settles"));
    let signing = spec.channel.signing.clone().expect("signing");
    assert_eq!(signing.secret.expose(), secret);
    assert_eq!(signing.signing_secrets(at(2)).len(), 1);
    let oauth = spec.channel.oauth.clone().expect("oauth").outbound();
    assert_eq!(oauth.client_secret, "oauth-secret-1");
    assert_eq!(oauth.scope.as_deref(), Some("system/Bundle.c"));

    let rendered = render_subscription(&view(&spec));
    strict(&rendered);
    let text = rendered.to_string();
    assert!(
        !text.contains(&secret) && !text.contains("oauth-secret-1"),
        "{text}"
    );
    assert!(
        !format!("{spec:?}").contains(&secret),
        "Debug hides the secret"
    );
    assert!(!format!("{spec:?}").contains("oauth-secret-1"));

    // A client that reads the subscription and writes it back keeps both secrets.
    let mut again = parsed(&rendered);
    assert_eq!(
        again.channel.signing.as_ref().map(|s| s.secret.expose()),
        Some(REDACTED)
    );
    assert!(!settle(&mut again.channel, Some(&spec.channel), at(3)).expect("settles"));
    assert_eq!(again.channel.signing, spec.channel.signing, "no rotation");
    assert_eq!(again.channel.oauth, spec.channel.oauth);
}

#[test]
fn a_new_signing_secret_rotates_the_old_one_out_over_a_day() {
    use super::channel_secrets::{GENERATE, ROTATION_OVERLAP, settle};
    let first = whsec(1);
    let mut stored = parsed(&with_credentials(&first, "s", "https://ehr.example/token"));
    settle(&mut stored.channel, None, at(2)).expect("settles");

    let mut rotated = parsed(&with_credentials(
        GENERATE,
        "s",
        "https://ehr.example/token",
    ));
    assert!(settle(&mut rotated.channel, Some(&stored.channel), at(2)).expect("settles"));
    let signing = rotated.channel.signing.clone().expect("signing");
    assert_ne!(signing.secret.expose(), first);
    assert!(super::rest_hook::SigningSecret::parse(signing.secret.expose()).is_ok());
    assert_eq!(
        signing.previous.as_ref().map(|s| s.expose()),
        Some(first.as_str())
    );
    let overlap = chrono::Duration::from_std(ROTATION_OVERLAP).expect("fits");
    assert_eq!(
        signing.signing_secrets(at(2)).len(),
        2,
        "both sign meanwhile"
    );
    assert_eq!(
        signing.signing_secrets(at(2) + overlap).len(),
        1,
        "the old one stops after the overlap"
    );
    // The generated secret is shown in the answer that made it, and only there.
    let revealed = render_subscription(&SubscriptionView {
        reveal_signing_secret: true,
        ..view(&rotated)
    });
    strict(&revealed);
    assert!(revealed.to_string().contains(signing.secret.expose()));
    assert!(
        !render_subscription(&view(&rotated))
            .to_string()
            .contains(signing.secret.expose())
    );
}

#[test]
fn bad_channel_credentials_are_refused() {
    use super::channel_secrets::{REDACTED, settle};
    let short = with_credentials("whsec_c2hvcnQ=", "s", "https://ehr.example/token");
    let not_whsec = with_credentials("hunter2", "s", "https://ehr.example/token");
    let relative_token_url = with_credentials(&whsec(2), "s", "/token");
    let mut no_client_secret = with_credentials(&whsec(2), "s", "https://ehr.example/token");
    let oauth = no_client_secret["channel"]["extension"]
        .as_array_mut()
        .expect("extensions")
        .last_mut()
        .expect("oauth");
    oauth["extension"].as_array_mut().expect("parts").remove(2);
    let mut on_mllp = with_credentials(&whsec(2), "s", "https://ehr.example/token");
    on_mllp["channel"]["type"] = json!("message");
    on_mllp["channel"]["_type"] = mllp_channel()["_type"].clone();
    on_mllp["channel"]["endpoint"] = json!("mllp://engine.example:6661");
    on_mllp["channel"]["payload"] = json!(HL7V2_PAYLOAD);
    for (case, json, says) in [
        ("too short", short, "32 to 64"),
        ("not whsec", not_whsec, "32 to 64"),
        ("relative token URL", relative_token_url, "tokenUrl"),
        ("no client secret", no_client_secret, "clientSecret"),
        ("on MLLP", on_mllp, "rest-hook channels only"),
    ] {
        let issues = refused(&json);
        assert!(
            issues.iter().any(|i| i.diagnostics.contains(says)),
            "{case}: {issues:#?}"
        );
    }

    // `***` keeps only what is stored, and an OAuth secret only for the same client.
    let mut kept_nothing = parsed(&with_credentials(
        REDACTED,
        "s",
        "https://ehr.example/token",
    ));
    assert!(settle(&mut kept_nothing.channel, None, at(2)).is_err());
    let mut stored = parsed(&with_credentials(
        &whsec(3),
        "s1",
        "https://ehr.example/token",
    ));
    settle(&mut stored.channel, None, at(2)).expect("settles");
    let mut moved = parsed(&with_credentials(
        REDACTED,
        REDACTED,
        "https://elsewhere.example/token",
    ));
    let issues = settle(&mut moved.channel, Some(&stored.channel), at(2)).expect_err("refused");
    assert!(
        issues
            .iter()
            .any(|i| i.diagnostics.contains("same tokenUrl")),
        "{issues:#?}"
    );
}

#[test]
fn a_redacted_header_keeps_the_stored_value() {
    use super::channel_secrets::settle;
    let mut json = ig_example();
    json["channel"]["header"] = json!(["Authorization: Bearer t-1", "X-Tenant: 9"]);
    let stored = parsed(&json);
    json["channel"]["header"] = json!(["authorization: ***", "X-Tenant: 10"]);
    let mut update = parsed(&json);
    settle(&mut update.channel, Some(&stored.channel), at(2)).expect("settles");
    assert_eq!(
        update.channel.headers,
        vec![
            "Authorization: Bearer t-1".to_owned(),
            "X-Tenant: 10".to_owned()
        ]
    );
    json["channel"]["header"] = json!(["X-Other: ***"]);
    let mut unknown = parsed(&json);
    assert!(settle(&mut unknown.channel, Some(&stored.channel), at(2)).is_err());
}
