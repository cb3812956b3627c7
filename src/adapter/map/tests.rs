//! Row-to-JSON mapping on hand-made rows: pruning, sentinel values, transforms, unpivot.

use std::path::PathBuf;

use chrono::{NaiveDate, NaiveTime};
use chrono_tz::Tz;
use serde_json::json;

use super::{LeftOut, LeftOutReason, MapOutcome, MappedResource, RowData, map_row};
use crate::adapter::format::ManifestFile;
use crate::adapter::format::MappingFile;
use crate::adapter::model::Mapping;
use crate::adapter::tree::{self, Tree};
use crate::adapter::validate::{ParsedMapping, validate};
use crate::dialect::ast::Value;

const MANIFEST: &str = "version = 1\nname = \"t\"\ntitle = \"T\"\ntimezone = \"America/New_York\"\ndialects = [\"sqlite\"]\n";

/// Builds a one-mapping adapter from TOML text.
fn mapping(name: &str, text: &str) -> std::sync::Arc<Mapping> {
    let manifest: ManifestFile = toml::from_str(MANIFEST).unwrap();
    let spec: MappingFile = toml::from_str(text).unwrap();
    let parsed = ParsedMapping {
        file: PathBuf::from(format!("{name}.toml")),
        name: name.to_owned(),
        spec,
    };
    let adapter = validate(
        &PathBuf::from("."),
        &PathBuf::from("adapter.toml"),
        manifest,
        vec![parsed],
    )
    .unwrap_or_else(|e| panic!("{e:#?}"));
    adapter.resources.values().next().unwrap().mappings[0].clone()
}

fn tz() -> Tz {
    "America/New_York".parse().unwrap()
}

/// A row in SELECT-list order, given as (column, value) pairs.
fn row(mapping: &Mapping, cells: &[(&str, Value)]) -> Vec<Value> {
    mapping
        .columns
        .iter()
        .map(|c| {
            cells
                .iter()
                .find(|(name, _)| *name == c.column)
                .map(|(_, v)| v.clone())
                .unwrap_or(Value::Null)
        })
        .collect()
}

/// A mapped resource with its JSON built, for assertions.
struct Mapped {
    id: String,
    resource: serde_json::Value,
}

/// Maps a row; every resource must be servable.
fn map_one(mapping: &Mapping, cells: &[(&str, Value)]) -> Vec<Mapped> {
    outcomes(mapping, cells)
        .into_iter()
        .map(|outcome| outcome.unwrap_or_else(|left_out| panic!("left out: {left_out:?}")))
        .map(|mapped| {
            // What is served is the tree's serialization: it must read back as its JSON.
            let served: serde_json::Value =
                serde_json::from_slice(&serde_json::to_vec(&mapped.resource).unwrap()).unwrap();
            let resource = mapped.resource.into_json();
            assert_eq!(served, resource);
            Mapped {
                id: mapped.id,
                resource,
            }
        })
        .collect()
}

fn outcomes(mapping: &Mapping, cells: &[(&str, Value)]) -> Vec<MapOutcome> {
    let row = row(mapping, cells);
    map_row(
        mapping,
        &RowData {
            row: &row,
            children: &[],
        },
        tz(),
        &|_| true,
    )
}

const PATIENT: &str = r#"
version = 1
resource = "Patient"
[source]
table = "p"
id = { columns = ["pid"] }
last_updated = "updated"
[elements]
identifier = [{ system = "urn:x", value = "$pid", type = { text = "MR" } }, { system = "urn:y", value = "$mrn" }]
name = [{ family = "$lname", given = ["$fname", "$mname"] }]
gender = { fn = "map", map = "sex", column = "sex" }
birthDate = { fn = "date", column = "dob" }
active = { fn = "boolean", column = "active" }
generalPractitioner = [{ reference = { fn = "reference", resource = "Patient", columns = ["gp"] } }]
note = { fn = "concat", parts = ["$lname", "$fname"], separator = ", " }
[maps.sex]
values = { F = "female", M = "male" }
default = "unknown"
"#;

#[test]
fn absent_values_prune_their_parents() {
    let patient = mapping("Patient", PATIENT);
    let mapped = map_one(
        &patient,
        &[
            ("pid", Value::Int(7)),
            ("mrn", Value::Text("   ".into())),
            ("lname", Value::Text("Doe ".into())),
            ("fname", Value::Text("".into())),
            ("mname", Value::Null),
            ("sex", Value::Text("X".into())),
            ("dob", Value::Text("0000-00-00".into())),
            ("active", Value::Int(1)),
            ("gp", Value::Int(0)),
            ("updated", Value::Text("2024-07-01 09:30:00".into())),
        ],
    );
    assert_eq!(mapped.len(), 1);
    assert_eq!(
        mapped[0].resource,
        json!({
            "resourceType": "Patient",
            "id": "7",
            "meta": {"lastUpdated": "2024-07-01T09:30:00-04:00"},
            "identifier": [{"system": "urn:x", "value": "7", "type": {"text": "MR"}}],
            "name": [{"family": "Doe"}],
            "gender": "unknown",
            "active": true,
            "note": "Doe"
        })
    );
}

#[test]
fn dates_from_typed_and_text_cells_agree() {
    let patient = mapping("Patient", PATIENT);
    for dob in [
        Value::Date(NaiveDate::from_ymd_opt(1980, 2, 29).unwrap()),
        Value::Text("1980-02-29".into()),
        Value::DateTime(
            NaiveDate::from_ymd_opt(1980, 2, 29)
                .unwrap()
                .and_time(NaiveTime::MIN),
        ),
    ] {
        let mapped = map_one(&patient, &[("pid", Value::Int(1)), ("dob", dob.clone())]);
        assert_eq!(mapped[0].resource["birthDate"], "1980-02-29", "{dob:?}");
    }
    let sentinel = map_one(
        &patient,
        &[
            ("pid", Value::Int(1)),
            (
                "dob",
                Value::Date(NaiveDate::from_ymd_opt(1, 1, 1).unwrap()),
            ),
        ],
    );
    assert!(sentinel[0].resource.get("birthDate").is_none());
}

#[test]
fn rows_without_a_usable_key_are_left_out() {
    let patient = mapping("Patient", PATIENT);
    for key in [Value::Null, Value::Text("a b".into())] {
        let left = outcomes(&patient, &[("pid", key)]);
        assert_eq!(left.len(), 1);
        assert_eq!(
            left[0].as_ref().unwrap_err(),
            &LeftOut {
                id: None,
                variant: None,
                reason: LeftOutReason::InvalidKey
            }
        );
    }
}

#[test]
fn an_undecodable_cell_leaves_its_row_out_and_names_only_the_column() {
    let patient = mapping("Patient", PATIENT);
    let left = outcomes(
        &patient,
        &[
            ("pid", Value::Int(4)),
            (
                "lname",
                Value::Undecodable("column lname: invalid utf-8".into()),
            ),
        ],
    );
    let Err(left_out) = &left[0] else {
        panic!("served: {left:?}")
    };
    assert_eq!(left_out.id.as_deref(), Some("4"));
    assert_eq!(left_out.reason.kind(), "undecodable-cell");
    assert_eq!(
        left_out.reason.summary(),
        "a value the database driver cannot decode (column lname)"
    );
}

#[test]
fn partial_zero_dates_become_partial_fhir_dates() {
    let patient = mapping("Patient", PATIENT);
    for (dob, expected) in [
        ("1958-00-00", json!("1958")),
        ("2001-07-00", json!("2001-07")),
        ("2001-07-00 10:30:00", json!("2001-07")),
        ("0000-00-00", serde_json::Value::Null),
        ("1958-13-00", serde_json::Value::Null),
    ] {
        let mapped = map_one(
            &patient,
            &[("pid", Value::Int(1)), ("dob", Value::Text(dob.into()))],
        );
        assert_eq!(mapped[0].resource["birthDate"], expected, "{dob}");
    }
}

#[test]
fn required_elements_and_the_r4_model_decide_what_is_served() {
    let served = MappedResource {
        id: "1".into(),
        variant: None,
        resource: Tree::Json(
            json!({"resourceType": "Observation", "id": "1", "status": "final",
            "code": {"text": "x"}}),
        ),
    };
    assert!(super::check_r4(served).is_ok());
    let missing = MappedResource {
        id: "2".into(),
        variant: Some(1),
        resource: Tree::Json(
            json!({"resourceType": "Observation", "id": "2", "code": {"text": "x"}}),
        ),
    };
    assert_eq!(
        super::check_r4(missing).unwrap_err(),
        LeftOut {
            id: Some("2".into()),
            variant: Some(1),
            reason: LeftOutReason::MissingRequired("status")
        }
    );
    let refused = MappedResource {
        id: "3".into(),
        variant: None,
        resource: Tree::Json(json!({"resourceType": "Patient", "id": "3", "gender": 7})),
    };
    let reason = super::check_r4(refused).unwrap_err().reason;
    assert_eq!(reason.kind(), "invalid-r4", "{reason}");
    assert_eq!(reason.summary(), "not valid FHIR R4");
    // The model's verdict is remembered per shape: the same shape with other values gets the same
    // answer, a different shape (a string where a number was) gets its own.
    let again = MappedResource {
        id: "4".into(),
        variant: None,
        resource: Tree::Json(json!({"resourceType": "Patient", "id": "4", "gender": 9})),
    };
    assert_eq!(
        super::check_r4(again).unwrap_err().reason.kind(),
        "invalid-r4"
    );
    let fixed = MappedResource {
        id: "5".into(),
        variant: None,
        resource: Tree::Json(json!({"resourceType": "Patient", "id": "5", "gender": "female"})),
    };
    assert!(super::check_r4(fixed).is_ok());
    // The same keys under another resource type are that type's question.
    let observation = MappedResource {
        id: "6".into(),
        variant: None,
        resource: Tree::Json(
            json!({"resourceType": "Observation", "id": "6", "gender": "female",
            "status": "final", "code": {}}),
        ),
    };
    assert!(super::check_r4(observation).is_err());
}

#[test]
fn a_profile_is_claimed_only_by_resources_with_its_required_elements() {
    let practitioner = mapping(
        "Practitioner",
        r#"
version = 1
resource = "Practitioner"
profiles = [
  { url = "http://example.org/strict", requires = ["name", "name.family"] },
  "http://example.org/always",
]
[source]
table = "users"
id = { columns = ["id"] }
[elements]
name = [{ family = "$lname", given = ["$fname"] }]
"#,
    );
    let named = map_one(
        &practitioner,
        &[("id", Value::Int(1)), ("lname", Value::Text("Ng".into()))],
    );
    assert_eq!(
        named[0].resource["meta"]["profile"],
        json!(["http://example.org/strict", "http://example.org/always"])
    );
    let given_only = map_one(
        &practitioner,
        &[("id", Value::Int(2)), ("fname", Value::Text("Ana".into()))],
    );
    assert_eq!(
        given_only[0].resource["meta"]["profile"],
        json!(["http://example.org/always"])
    );
    let blank = map_one(&practitioner, &[("id", Value::Int(3))]);
    assert_eq!(
        blank[0].resource["meta"]["profile"],
        json!(["http://example.org/always"])
    );
    assert!(blank[0].resource.get("name").is_none());
}

const VITALS: &str = r#"
version = 1
resource = "Observation"
[source]
table = "v"
id = { prefix = "vs-", columns = ["id"] }
[elements]
status = "final"
effectiveDateTime = { fn = "datetime", column = "day", time = "clock" }
[[unpivot]]
key = "weight"
when = [{ column = "weight", positive = true }]
[unpivot.elements]
code = { text = "weight" }
valueQuantity = { value = { fn = "number", column = "weight", multiply = 0.45359237, decimals = 1 }, unit = "kg" }
[[unpivot]]
key = "bp"
when = [{ column = "bps", not_in = ["", "0"] }]
[unpivot.elements]
code = { text = "bp" }
component = [{ code = { text = "sys" }, valueQuantity = { value = { fn = "number", column = "bps" } } }, { code = { text = "dia" }, valueQuantity = { value = { fn = "number", column = "bpd" } } }]
"#;

#[test]
fn unpivot_yields_one_resource_per_recorded_measurement() {
    let vitals = mapping("Observation", VITALS);
    let cells = [
        ("id", Value::Int(3)),
        (
            "day",
            Value::Date(NaiveDate::from_ymd_opt(2024, 1, 15).unwrap()),
        ),
        ("clock", Value::Text("08:05:00".into())),
        ("weight", Value::Decimal("150.000000".parse().unwrap())),
        ("bps", Value::Text("120".into())),
        ("bpd", Value::Text("".into())),
    ];
    let mapped = map_one(&vitals, &cells);
    let ids: Vec<&str> = mapped.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, vec!["vs-3-weight", "vs-3-bp"]);
    assert_eq!(
        mapped[0].resource["valueQuantity"],
        json!({"value": 68, "unit": "kg"})
    );
    assert_eq!(
        mapped[0].resource["effectiveDateTime"],
        "2024-01-15T08:05:00-05:00"
    );
    assert_eq!(
        mapped[1].resource["component"],
        json!([{"code": {"text": "sys"}, "valueQuantity": {"value": 120}}])
    );
    let zero = map_one(
        &vitals,
        &[
            ("id", Value::Int(4)),
            ("weight", Value::Decimal("0.000000".parse().unwrap())),
            ("bps", Value::Text("0".into())),
        ],
    );
    assert!(zero.is_empty(), "0 means not recorded");
}

#[test]
fn daylight_saving_gaps_and_folds_have_one_answer() {
    let vitals = mapping("Observation", VITALS);
    let at = |day: &str, clock: &str| {
        let mapped = map_one(
            &vitals,
            &[
                ("id", Value::Int(1)),
                ("day", Value::Text(day.into())),
                ("clock", Value::Text(clock.into())),
                ("weight", Value::Int(1)),
            ],
        );
        mapped[0].resource["effectiveDateTime"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        at("2024-03-10", "02:30:00"),
        "2024-03-10T03:30:00-04:00",
        "spring-forward gap"
    );
    assert_eq!(
        at("2024-11-03", "01:30:00"),
        "2024-11-03T01:30:00-04:00",
        "fall-back fold: the earlier instant"
    );
}

#[test]
fn split_and_typed_maps() {
    let claim = mapping(
        "Claim",
        r#"
version = 1
resource = "Claim"
[source]
table = "c"
id = { columns = ["a", "b"] }
[elements]
modifier = { fn = "split", column = "mods", separator = ":", item = { coding = [{ code = "$_" }] } }
order = { fn = "map", map = "order", column = "kind" }
[maps.order]
values = { primary = 1, secondary = 2 }
default_absent = true
"#,
    );
    let mapped = map_one(
        &claim,
        &[
            ("a", Value::Int(1)),
            ("b", Value::Int(20)),
            ("mods", Value::Text("25: 59:".into())),
            ("kind", Value::Text("secondary".into())),
        ],
    );
    assert_eq!(mapped[0].id, "1-20");
    assert_eq!(
        mapped[0].resource["modifier"],
        json!([{"coding": [{"code": "25"}]}, {"coding": [{"code": "59"}]}])
    );
    assert_eq!(mapped[0].resource["order"], json!(2));
}

#[test]
fn binary_uuid_keys_and_column_zones() {
    let mapping = mapping(
        "Patient",
        r#"
version = 1
resource = "Patient"
[source]
table = "people"
id = { prefix = "p-", columns = ["uuid"], uuid = true }
[elements]
deceasedDateTime = { fn = "datetime", column = "died_utc", zone = "UTC" }
"#,
    );
    let uuid: Vec<u8> = (0u8..16).map(|i| i * 17).collect();
    let mapped = map_one(
        &mapping,
        &[
            ("uuid", Value::Bytes(uuid.clone())),
            ("died_utc", Value::Text("2024-07-01 12:00:00".into())),
        ],
    );
    assert_eq!(mapped[0].id, "p-00112233-4455-6677-8899-aabbccddeeff");
    assert_eq!(
        mapped[0].resource["deceasedDateTime"],
        "2024-07-01T12:00:00+00:00"
    );
    assert_eq!(
        super::uuid_bytes("00112233-4455-6677-8899-aabbccddeeff"),
        Some(uuid)
    );
    assert_eq!(
        super::uuid_bytes("00112233-4455-6677-8899-aabbccddeef"),
        None
    );
    assert_eq!(
        super::uuid_bytes("0011223x-4455-6677-8899-aabbccddeeff"),
        None
    );
}

#[test]
fn lengths_and_minutes_added_to_a_start() {
    let appointment = mapping(
        "Appointment",
        r#"
version = 1
resource = "Appointment"
[source]
table = "appointment"
id = { columns = ["AptNum"] }
[elements]
start = { fn = "datetime", column = "AptDateTime", instant = true }
end = { fn = "datetime", column = "AptDateTime", instant = true, add_minutes = { fn = "length", column = "Pattern", multiply = 5 } }
minutesDuration = { fn = "length", column = "Pattern", multiply = 5 }
"#,
    );
    let mapped = map_one(
        &appointment,
        &[
            ("AptNum", Value::Int(1)),
            ("AptDateTime", Value::Text("2024-03-10 01:30:00".into())),
            ("Pattern", Value::Text("XXXX//".into())),
        ],
    );
    let resource = &mapped[0].resource;
    assert_eq!(resource["minutesDuration"], 30);
    assert_eq!(resource["start"], "2024-03-10T01:30:00-05:00");
    assert_eq!(
        resource["end"], "2024-03-10T03:00:00-04:00",
        "the end crosses the clock change"
    );
    let without_pattern = map_one(
        &appointment,
        &[
            ("AptNum", Value::Int(2)),
            ("AptDateTime", Value::Text("2024-03-11 09:00:00".into())),
        ],
    );
    assert!(without_pattern[0].resource.get("end").is_none());
    assert!(without_pattern[0].resource.get("minutesDuration").is_none());
    let endless = "X".repeat(1 << 20);
    let absurd = map_one(
        &appointment,
        &[
            ("AptNum", Value::Int(3)),
            ("AptDateTime", Value::Text("9999-12-31 23:00:00".into())),
            ("Pattern", Value::Text(endless)),
        ],
    );
    assert!(
        absurd[0].resource.get("end").is_none(),
        "an end past year 9999 is left out"
    );
}

#[test]
fn bit_columns_map_alike_from_sql_server_and_mysql() {
    // SQL Server returns a bit as a boolean, MySQL and SQLite as 0/1: "0"/"1" map keys and
    // equals = 0/1 conditions serve both.
    let organization = mapping(
        "Organization",
        r#"
version = 1
resource = "Organization"
[source]
table = "o"
id = { columns = ["id"] }
[elements]
active = { fn = "map", map = "active", column = "disabled" }
name = { fn = "if", when = [{ column = "disabled", equals = 1 }], then = "closed" }
[maps.active]
values = { "0" = true, "1" = false }
default_absent = true
"#,
    );
    for (disabled, active, name) in [
        (Value::Bool(true), json!(false), json!("closed")),
        (Value::Int(1), json!(false), json!("closed")),
        (Value::Bool(false), json!(true), serde_json::Value::Null),
        (Value::Int(0), json!(true), serde_json::Value::Null),
    ] {
        let mapped = map_one(
            &organization,
            &[("id", Value::Int(1)), ("disabled", disabled.clone())],
        );
        let resource = &mapped[0].resource;
        assert_eq!(resource["active"], active, "{disabled:?}");
        assert_eq!(resource["name"], name, "{disabled:?}");
    }
}

#[test]
fn dates_times_and_instants_are_written_as_chrono_formats_them() {
    use chrono::{TimeDelta, TimeZone};
    let zones: [Tz; 4] = [
        chrono_tz::UTC,
        chrono_tz::America::New_York,
        chrono_tz::Asia::Kolkata,
        chrono_tz::America::St_Johns,
    ];
    let moments = [
        (1, 1, 1, 0, 0, 0),
        (1958, 7, 9, 23, 59, 59),
        // New York's spring gap (02:30 does not exist) and autumn overlap (01:30 twice).
        (2024, 3, 10, 2, 30, 0),
        (2024, 11, 3, 1, 30, 0),
        (2024, 3, 9, 23, 30, 0),
        (9999, 12, 31, 12, 0, 5),
        // Past four digits chrono writes the year with its sign; so does the fallback.
        (12000, 1, 2, 3, 4, 5),
    ];
    for (year, month, day, hour, minute, second) in moments {
        let local = NaiveDate::from_ymd_opt(year, month, day)
            .unwrap()
            .and_hms_opt(hour, minute, second)
            .unwrap();
        assert_eq!(
            super::date_text(local.date()),
            local.format("%Y-%m-%d").to_string()
        );
        assert_eq!(
            super::time_text(local.time()),
            local.format("%H:%M:%S").to_string()
        );
        for zone in zones {
            let zoned = zone.from_local_datetime(&local).earliest().or_else(|| {
                zone.from_local_datetime(&(local + TimeDelta::hours(1)))
                    .earliest()
            });
            let expected = match zoned {
                Some(zoned) => zoned.format("%Y-%m-%dT%H:%M:%S%:z").to_string(),
                None => local.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            };
            assert_eq!(
                super::format_instant(local, zone),
                expected,
                "{local} in {zone}"
            );
        }
    }
    let leap = NaiveTime::from_hms_milli_opt(23, 59, 59, 1_500).unwrap();
    assert_eq!(super::time_text(leap), leap.format("%H:%M:%S").to_string());
}

#[test]
fn a_shape_hash_sees_names_nesting_and_kinds_not_values() {
    let shape = |value: serde_json::Value| tree::json_shape(&value);
    let base = shape(json!({"name": [{"family": "Ng"}], "birthDate": "1970-01-01"}));
    // A mapped tree hashes as the JSON it stands for.
    let tree = Tree::Object(vec![
        (
            "name",
            Tree::Array(vec![Tree::Object(vec![(
                "family",
                Tree::Text("Ng".into()),
            )])]),
        ),
        (
            "birthDate",
            Tree::Constant(tree::constant(json!("1970-01-01"))),
        ),
    ]);
    assert_eq!(tree.shape(), base);
    assert_eq!(
        base,
        shape(json!({"name": [{"family": "Okonkwo-Smith"}], "birthDate": "2001-12-31"}))
    );
    for other in [
        json!({"name": [{"given": "Ng"}], "birthDate": "1970-01-01"}),
        json!({"name": [{"family": "Ng"}, {"family": "Ng"}], "birthDate": "1970-01-01"}),
        json!({"name": {"family": "Ng"}, "birthDate": "1970-01-01"}),
        json!({"name": [{"family": 7}], "birthDate": "1970-01-01"}),
        json!({"name": [{"family": "Ng"}], "birthdate": "1970-01-01"}),
    ] {
        assert_ne!(base, shape(other.clone()), "{other}");
    }
}
