//! Adapter validation: every problem is reported at once, with file and key path.

use std::path::{Path, PathBuf};

use crate::adapter;

fn write_adapter(files: &[(&str, &str)]) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("portico-adapter-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    dir
}

const MANIFEST: &str = "version = 1\nname = \"t\"\ntitle = \"T\"\ntimezone = \"America/New_York\"\ndialects = [\"mysql\"]\n";

/// Asserts that loading the adapter in `dir` reports each of `expected` (among others).
fn assert_reports(dir: &Path, expected: &[&str]) {
    let found = issues(dir).join("\n");
    for expected in expected {
        assert!(
            found.contains(expected),
            "missing {expected:?} in:\n{found}"
        );
    }
}

fn issues(dir: &Path) -> Vec<String> {
    adapter::load(dir)
        .unwrap_err()
        .iter()
        .map(|i| i.to_string())
        .collect()
}

#[test]
fn the_shipped_openemr_adapter_is_valid() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("adapters/openemr");
    let adapter = adapter::load(&dir).unwrap_or_else(|issues| panic!("{issues:#?}"));
    let types: Vec<&str> = adapter.resources.keys().map(String::as_str).collect();
    assert_eq!(
        types,
        vec![
            "Appointment",
            "Claim",
            "Coverage",
            "Encounter",
            "Location",
            "Observation",
            "Organization",
            "Patient",
            "Practitioner"
        ]
    );
}

#[test]
fn unknown_keys_are_rejected_with_their_location() {
    let dir = write_adapter(&[
        ("adapter.toml", MANIFEST),
        (
            "Patient.toml",
            "version = 1\nresource = \"Patient\"\ncolour = \"red\"\n[source]\ntable = \"p\"\nid = { columns = [\"pid\"] }\n[elements]\n",
        ),
    ]);
    let found = issues(&dir);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("Patient.toml") && found[0].contains("colour"),
        "{found:?}"
    );
}

#[test]
fn every_problem_is_reported_in_one_pass() {
    let dir = write_adapter(&[
        (
            "adapter.toml",
            "version = 2\nname = \"t\"\ntitle = \"T\"\ntimezone = \"Mars/Olympus\"\ndialects = []\n",
        ),
        (
            "Patient.toml",
            r#"
version = 1
resource = "Patient"
[source]
table = "p; DROP TABLE x"
id = { columns = ["pid"] }
filter = [{ column = "x.active", equals = 1 }, { column = "active", equals = 1, not_equals = 2 }]
[elements]
id = "$pid"
gender = { fn = "map", map = "nope", column = "sex" }
birthDate = { fn = "dat", column = "dob" }
name = [{ family = "$l`name" }]
generalPractitioner = [{ reference = { fn = "reference", resource = "Practitioner", columns = ["gp"] } }]
[maps.sex]
values = { F = "female" }
[search.gender]
type = "token"
column = "sex"
map = "missing-map"
[search.birthdate]
type = "date"
[search.gender2]
type = "token"
column = "sex"
words = true
"#,
        ),
        (
            "Observation.vitals.toml",
            "version = 1\nresource = \"Patient\"\n[source]\ntable = \"v\"\nid = { columns = [\"id\"] }\n[elements]\n",
        ),
    ]);
    assert_reports(
        &dir,
        &[
            "adapter.toml: version: unsupported adapter format version 2",
            "adapter.toml: timezone: unknown IANA time zone",
            "adapter.toml: dialects: at least one dialect is required",
            "Patient.toml: source.table: \"p; DROP TABLE x\" is not a valid table name",
            "Patient.toml: source.filter[0].column: unknown table alias \"x\"",
            "Patient.toml: source.filter[1]: exactly one of",
            "Patient.toml: elements.id: set by Portico",
            "Patient.toml: elements.gender.map: no map named \"nope\"",
            "Patient.toml: elements.birthDate: invalid transform: unknown variant `dat`",
            "Patient.toml: elements.name[0].family: \"l`name\" is not a valid column name",
            "Patient.toml: elements.generalPractitioner[0].reference.resource: no mapping produces Practitioner",
            "Patient.toml: maps.sex: an explicit default is required",
            "Patient.toml: search.gender.map: no map named \"missing-map\"",
            "Patient.toml: search.birthdate: a date parameter needs column",
            "Patient.toml: search.gender2.words: words applies to string parameters only",
            "Observation.vitals.toml: resource: file name says Observation but resource = \"Patient\"",
        ],
    );
}

#[test]
fn several_mappings_of_a_type_need_distinct_prefixes() {
    let mapping = |prefix: &str| {
        format!(
            "version = 1\nresource = \"Organization\"\n[source]\ntable = \"o\"\nid = {{ prefix = \"{prefix}\", columns = [\"id\"] }}\n[elements]\nname = \"$name\"\n"
        )
    };
    let dir = write_adapter(&[
        ("adapter.toml", MANIFEST),
        ("Organization.a.toml", &mapping("org-")),
        ("Organization.b.toml", &mapping("org-x")),
    ]);
    let found = issues(&dir).join("\n");
    assert!(
        found.contains("overlaps another Organization mapping's prefix"),
        "{found}"
    );
}

#[test]
fn collection_joins_are_checked_like_source_joins() {
    let dir = write_adapter(&[
        ("adapter.toml", MANIFEST),
        (
            "Claim.toml",
            r#"
version = 1
resource = "Claim"
[source]
table = "claim"
id = { columns = ["id"] }
[collections.lines]
table = "line"
match = [["proc.claim_id", "id"]]
join = [
  { alias = "proc", table = "procedure", on = [{ column = "proc.id", equals_column = "code.id" }] },
  { alias = "code", table = "code; x", on = [{ column = "code.id", equals_column = "proc.code_id" }] },
  { alias = "c", table = "other", on = [{ column = "c.id", equals = 1 }] },
]
order_by = ["nope.id"]
[elements]
status = "active"
"#,
        ),
    ]);
    assert_reports(
        &dir,
        &[
            "Claim.toml: collections.lines.match[0][0]: a collection matches its parent on its own table's columns",
            "Claim.toml: collections.lines.join[0].on: \"code.id\" refers to a table joined later",
            "Claim.toml: collections.lines.join[1].table: \"code; x\" is not a valid table name",
            "Claim.toml: collections.lines.join[2].alias: alias \"c\" is already taken",
            "Claim.toml: collections.lines.order_by[0]: unknown table alias \"nope\"",
        ],
    );
}

#[test]
fn parameters_over_collections_are_checked() {
    let dir = write_adapter(&[
        ("adapter.toml", MANIFEST),
        (
            "Patient.toml",
            r#"
version = 1
resource = "Patient"
[source]
table = "patient"
id = { columns = ["id"] }
join = [{ alias = "doc", table = "doctor", on = [{ column = "doc.id", equals_column = "doctor_id" }] }]
[collections.addresses]
table = "address"
match = [["patient_id", "id"]]
join = [{ alias = "doc", table = "city", on = [{ column = "doc.id", equals_column = "city_id" }] }]
[elements]
active = true
[search.address-city]
type = "string"
collection = "addresses"
column = "doc.name"
[search.moved]
type = "date"
collection = "addresses"
column = "moved_on"
[search.address-state]
type = "string"
collection = "homes"
column = "state"
[search.address-postalcode]
type = "string"
collection = "addresses"
column = "zip"
sortable = true
"#,
        ),
    ]);
    assert_reports(
        &dir,
        &[
            "Patient.toml: collections.addresses.join[0].alias: alias \"doc\" is already taken by the mapping",
            "Patient.toml: search.moved.collection: a parameter over a collection is a string or token parameter",
            "Patient.toml: search.address-state.collection: no collection named \"homes\"",
            "Patient.toml: search.address-postalcode.collection: a parameter over a collection is a string or token parameter",
        ],
    );
}

#[test]
fn lookups_are_linked_by_one_key_and_filtered_by_constants() {
    let dir = write_adapter(&[
        ("adapter.toml", MANIFEST),
        (
            "Appointment.toml",
            r#"
version = 1
resource = "Appointment"
[source]
table = "event"
id = { columns = ["id"] }
filter = [
  { column = "cat.kind", equals = 0 },
  { column = "two.code", equals_column = "code" },
]
join = [
  { alias = "cat", table = "category", on = [{ column = "cat.id", equals_column = "cat_id" }], required = true, lookup = true },
  { alias = "two", table = "category", on = [{ column = "two.id", equals_column = "cat_id" }, { column = "two.code", equals_column = "code" }], lookup = true },
  { alias = "enc", table = "encounter", on = [{ column = "enc.id", equals_column = "enc_id" }] },
  { alias = "far", table = "category", on = [{ column = "far.id", equals_column = "enc.parent" }, { column = "cat.kind", equals = 1 }], lookup = true },
  { alias = "sub", table = "category", on = [{ column = "sub.id", equals_column = "cat.parent" }], lookup = true },
]
[collections.notes]
table = "note"
match = [["event_id", "id"]]
join = [{ alias = "k", table = "kind", on = [{ column = "k.id", equals_column = "kind_id" }], lookup = true }]
[elements]
status = "booked"
"#,
        ),
    ]);
    assert_reports(
        &dir,
        &[
            "source.join[1].on: a lookup is linked by exactly one equals_column",
            "source.join[3].on: a lookup's other conditions test its own columns; cat.kind is not one",
            "source.join[3].on: a lookup is linked by exactly one equals_column",
            "source.filter[1]: a filter on a lookup's column compares it with constants",
            "collections.notes.join[0].lookup: only joins of [source] can be lookups",
        ],
    );
    let found = issues(&dir).join("\n");
    assert!(!found.contains("source.join[0]"), "{found}");
    assert!(!found.contains("source.filter[0]"), "{found}");
    // Linked through an earlier lookup: accepted.
    assert!(!found.contains("source.join[4]"), "{found}");
}

#[test]
fn compartment_links_are_patient_references_of_the_mapping() {
    let dir = write_adapter(&[
        ("adapter.toml", MANIFEST),
        (
            "Patient.toml",
            "version = 1\nresource = \"Patient\"\ncompartment = { patient = [\"_id\"] }\n[source]\ntable = \"p\"\nid = { columns = [\"pid\"] }\n[elements]\n",
        ),
        (
            "Practitioner.toml",
            "version = 1\nresource = \"Practitioner\"\ncompartment = { patient = [\"_id\"] }\n[source]\ntable = \"u\"\nid = { columns = [\"id\"] }\n[elements]\n",
        ),
        (
            "Location.toml",
            "version = 1\nresource = \"Location\"\ncompartment = \"public\"\n[source]\ntable = \"f\"\nid = { columns = [\"id\"] }\n[elements]\n",
        ),
        (
            "Observation.toml",
            r#"
version = 1
resource = "Observation"
compartment = { patient = ["subject", "performer", "code", "nope"] }
[source]
table = "v"
id = { columns = ["id"] }
[elements]
[search.subject]
type = "reference"
target = "Patient"
column = "pid"
[search.performer]
type = "reference"
target = "Practitioner"
column = "uid"
[search.code]
type = "token"
column = "code"
"#,
        ),
        (
            "Encounter.toml",
            "version = 1\nresource = \"Encounter\"\ncompartment = \"shared\"\n[source]\ntable = \"e\"\nid = { columns = [\"id\"] }\n[elements]\n",
        ),
        (
            "Organization.toml",
            "version = 1\nresource = \"Organization\"\ncompartment = { patient = [] }\n[source]\ntable = \"o\"\nid = { columns = [\"id\"] }\n[elements]\n",
        ),
    ]);
    let found = issues(&dir).join("\n");
    for expected in [
        "Practitioner.toml: compartment.patient[0]: _id links only a Patient mapping",
        "Location.toml: compartment: \"public\": compartment is \"shared\"",
        "Observation.toml: compartment.patient[1]: search.performer is not a reference parameter to Patient",
        "Observation.toml: compartment.patient[2]: search.code is not a reference parameter to Patient",
        "Observation.toml: compartment.patient[3]: no search parameter \"nope\"",
        "Encounter.toml: compartment: Encounter is in FHIR's Patient compartment",
        "Organization.toml: compartment.patient: name at least one search parameter",
    ] {
        assert!(
            found.contains(expected),
            "missing {expected:?} in:\n{found}"
        );
    }
    assert!(!found.contains("Patient.toml: compartment"), "{found}");
    assert!(
        !found.contains("compartment.patient[0]: search.subject"),
        "{found}"
    );
}

#[test]
fn every_shipped_mapping_declares_its_compartment() {
    use crate::adapter::model::Compartment;
    for name in ["openemr", "opendental", "cerebello", "dentned"] {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("adapters")
            .join(name);
        let adapter = adapter::load(&dir).unwrap_or_else(|issues| panic!("{issues:#?}"));
        for def in adapter.resources.values() {
            for mapping in &def.mappings {
                let shared = matches!(
                    def.resource_type.as_str(),
                    "Practitioner" | "Organization" | "Location"
                );
                match &mapping.compartment {
                    Compartment::Shared => assert!(shared, "{name} {}", mapping.name),
                    Compartment::Patient(links) => {
                        assert!(!shared && !links.is_empty(), "{name} {}", mapping.name)
                    }
                    Compartment::Undeclared => panic!("{name} {} declares none", mapping.name),
                }
            }
        }
    }
}

/// An Appointment mapping with `changes` as its `[changes]` table (empty: none).
fn appointment_mapping(changes: &str) -> String {
    format!(
        r#"
version = 1
resource = "Appointment"
compartment = {{ patient = ["patient"] }}
[source]
table = "appt"
id = {{ columns = ["id"] }}
last_updated = "edited"
[[source.join]]
alias = "room"
table = "room"
on = [{{ column = "room.id", equals_column = "room_id" }}]
{changes}
[elements]
status = {{ fn = "map", map = "status", column = "state" }}
start = {{ fn = "datetime", column = "starts", instant = true }}
participant = [{{ actor = {{ display = "$room.name" }} }}]
[maps.status]
values = {{ "1" = "booked", "2" = "cancelled" }}
default_absent = true
[search.patient]
type = "reference"
target = "Patient"
column = "patient_id"
[search.status]
type = "token"
column = "state"
map = "status"
"#
    )
}

const PATIENT_MAPPING: &str = "version = 1\nresource = \"Patient\"\ncompartment = { patient = [\"_id\"] }\n[source]\ntable = \"p\"\nid = { columns = [\"id\"] }\n[elements]\ngender = \"unknown\"\n";

fn load_ok(dir: &Path) -> adapter::Adapter {
    adapter::load(dir).unwrap_or_else(|issues| panic!("{issues:#?}"))
}

#[test]
fn changes_compile_to_strategies_with_interned_columns_and_defaults() {
    use crate::adapter::model::ChangeStrategy;
    use std::time::Duration;
    let dir = write_adapter(&[
        ("adapter.toml", MANIFEST),
        ("Patient.toml", PATIENT_MAPPING),
        (
            "Appointment.toml",
            &appointment_mapping(
                "[changes]\nstrategy = \"timestamp\"\ncolumns = [\"edited\", \"room.edited\"]\nreconcile_minutes = 60\n",
            ),
        ),
    ]);
    let adapter = load_ok(&dir);
    let mapping = &adapter.resources["Appointment"].mappings[0];
    let changes = mapping.changes.as_ref().expect("declared");
    assert_eq!(changes.scan_rows, 5000);
    assert_eq!(changes.reconcile, Some(Duration::from_secs(3600)));
    let ChangeStrategy::Timestamp { columns, overlap } = &changes.strategy else {
        panic!("{:?}", changes.strategy)
    };
    assert_eq!(*overlap, Duration::from_secs(5));
    let named: Vec<String> = columns
        .iter()
        .map(|&i| mapping.columns[i].display())
        .collect();
    assert_eq!(named, vec!["t.edited", "room.edited"]);
    // The base column was already in the SELECT list as last_updated: interned once.
    assert_eq!(Some(columns[0]), mapping.last_updated);
    assert!(adapter.resources["Patient"].mappings[0].changes.is_none());

    let dir = write_adapter(&[
        ("adapter.toml", MANIFEST),
        ("Patient.toml", PATIENT_MAPPING),
        (
            "Appointment.toml",
            &appointment_mapping(
                "[changes]\nstrategy = \"rowversion\"\ncolumn = \"RowVer\"\nscan_rows = 100\nreconcile_minutes = 1440\n",
            ),
        ),
    ]);
    let adapter = load_ok(&dir);
    let mapping = &adapter.resources["Appointment"].mappings[0];
    let changes = mapping.changes.as_ref().expect("declared");
    let ChangeStrategy::RowVersion { column } = changes.strategy else {
        panic!("{:?}", changes.strategy)
    };
    assert_eq!(mapping.columns[column].display(), "t.RowVer");
    assert_eq!(changes.scan_rows, 100);

    let dir = write_adapter(&[
        ("adapter.toml", MANIFEST),
        ("Patient.toml", PATIENT_MAPPING),
        (
            "Appointment.toml",
            &appointment_mapping("[changes]\nstrategy = \"scan\"\nscan_rows = 100000\n"),
        ),
    ]);
    let adapter = load_ok(&dir);
    let changes = adapter.resources["Appointment"].mappings[0]
        .changes
        .as_ref()
        .expect("declared");
    assert!(matches!(changes.strategy, ChangeStrategy::Scan));
    assert_eq!((changes.scan_rows, changes.reconcile), (100_000, None));
}

#[test]
fn bad_changes_are_reported_with_file_and_key() {
    let cases = [
        (
            "strategy = \"timestamp\"\n",
            "Appointment.toml: changes.columns: timestamp needs at least one column",
        ),
        (
            "strategy = \"timestamp\"\ncolumns = [\"edited\", \"edited\"]\n",
            "Appointment.toml: changes.columns[1]: \"edited\" is listed twice",
        ),
        (
            "strategy = \"timestamp\"\ncolumns = [\"nope.edited\"]\n",
            "Appointment.toml: changes.columns[0]: unknown table alias \"nope\"",
        ),
        (
            "strategy = \"timestamp\"\ncolumns = [\"edited\"]\noverlap_seconds = 301\n",
            "Appointment.toml: changes.overlap_seconds: 301 is outside 0..=300",
        ),
        (
            "strategy = \"timestamp\"\ncolumns = [\"edited\"]\ncolumn = \"edited\"\n",
            "Appointment.toml: changes.column: not a key of strategy = \"timestamp\"",
        ),
        (
            "strategy = \"rowversion\"\n",
            "Appointment.toml: changes.column: rowversion needs the base table's rowversion column",
        ),
        (
            "strategy = \"rowversion\"\ncolumn = \"room.RowVer\"\n",
            "Appointment.toml: changes.column: \"room.RowVer\": a rowversion column is one of the base table's",
        ),
        (
            "strategy = \"rowversion\"\ncolumn = \"RowVer\"\noverlap_seconds = 5\n",
            "Appointment.toml: changes.overlap_seconds: not a key of strategy = \"rowversion\"",
        ),
        (
            "strategy = \"scan\"\nreconcile_minutes = 60\n",
            "Appointment.toml: changes.reconcile_minutes: a scan already reads every row",
        ),
        (
            "strategy = \"scan\"\ncolumns = [\"edited\"]\n",
            "Appointment.toml: changes.columns: not a key of strategy = \"scan\"",
        ),
        (
            "strategy = \"scan\"\nscan_rows = 99\n",
            "Appointment.toml: changes.scan_rows: 99 is outside 100..=100000",
        ),
        (
            "strategy = \"timestamp\"\ncolumns = [\"edited\"]\nreconcile_minutes = 0\n",
            "Appointment.toml: changes.reconcile_minutes: 0 is outside 1..=43200",
        ),
        ("strategy = \"cdc\"\n", "Appointment.toml: line "),
        (
            "strategy = \"scan\"\nwatermark = 1\n",
            "unknown field `watermark`",
        ),
    ];
    for (changes, expected) in cases {
        let dir = write_adapter(&[
            ("adapter.toml", MANIFEST),
            (
                "Appointment.toml",
                &appointment_mapping(&format!("[changes]\n{changes}")),
            ),
        ]);
        let found = issues(&dir).join("\n");
        assert!(
            found.contains(expected),
            "{changes}: missing {expected:?} in:\n{found}"
        );
    }
}

/// The adapter of `appointment_mapping` with timestamp changes, a Patient without, and `topics`.
fn adapter_with_topics(topics: &str) -> PathBuf {
    write_adapter(&[
        ("adapter.toml", MANIFEST),
        ("Patient.toml", PATIENT_MAPPING),
        (
            "Appointment.toml",
            &appointment_mapping("[changes]\nstrategy = \"timestamp\"\ncolumns = [\"edited\"]\n"),
        ),
        ("topics.toml", topics),
    ])
}

#[test]
fn topics_are_read_with_urls_and_default_mappings() {
    use crate::adapter::model::{ChangeKind, TOPIC_URL_PREFIX};
    let dir = adapter_with_topics(
        r#"
version = 1

[[topic]]
slug = "appointment-cancelled"
title = "Appointment cancelled"
description = "Its status became cancelled, or it was deleted."
resource = "Appointment"
on = ["update", "delete"]
became = { element = "status", values = ["cancelled"] }
filters = ["patient", "status", "_id"]

[[topic]]
slug = "appointment-rescheduled"
title = "Appointment rescheduled"
resource = "Appointment"
mappings = ["Appointment"]
on = ["update"]
changed = ["start"]
"#,
    );
    let adapter = load_ok(&dir);
    assert_eq!(adapter.topics.len(), 2);
    let cancelled = &adapter.topics[0];
    assert_eq!(
        cancelled.url,
        format!("{TOPIC_URL_PREFIX}appointment-cancelled")
    );
    assert_eq!(cancelled.mappings, vec!["Appointment"]);
    assert_eq!(cancelled.on, vec![ChangeKind::Update, ChangeKind::Delete]);
    let became = cancelled.became.as_ref().expect("declared");
    assert_eq!(
        (became.element.as_str(), became.values.clone()),
        ("status", vec!["cancelled".to_owned()])
    );
    assert_eq!(cancelled.filters, vec!["patient", "status", "_id"]);
    assert_eq!(adapter.topics[1].changed, vec!["start"]);
    assert!(adapter.topics[1].description.is_empty());
}

#[test]
fn an_adapter_without_topics_file_offers_none() {
    let dir = write_adapter(&[
        ("adapter.toml", MANIFEST),
        ("Patient.toml", PATIENT_MAPPING),
    ]);
    assert!(load_ok(&dir).topics.is_empty());
}

#[test]
fn bad_topics_are_reported_with_file_and_key() {
    let dir = adapter_with_topics(
        r#"
version = 2

[[topic]]
slug = "Appointment_Cancelled"
title = " "
resource = "Appointment"
mappings = ["Appointment.other"]
on = []
changed = ["start"]
became = { element = "participant", values = [] }
filters = ["practitioner", "patient", "patient"]

[[topic]]
slug = "registered"
title = "Registered"
resource = "Patient"
on = ["create", "create"]

[[topic]]
slug = "registered"
title = "Again"
resource = "Encounter"
on = ["create"]

[[topic]]
slug = "moved"
title = "Moved"
resource = "Appointment"
on = ["create"]
changed = ["end", "status"]
became = { element = "status", values = ["booked"] }

[[topic]]
slug = "gone"
title = "Gone"
resource = "Appointment"
on = ["delete"]
became = { element = "status", values = ["cancelled"] }
"#,
    );
    assert_reports(
        &dir,
        &[
            "topics.toml: version: unsupported topics format version 2",
            "topics.toml: topic[0].slug: \"Appointment_Cancelled\": a slug uses lower-case letters, digits and '-'",
            "topics.toml: topic[0].title: a topic needs a title",
            "topics.toml: topic[0].mappings[0]: no Appointment mapping named \"Appointment.other\" (there are: Appointment)",
            "topics.toml: topic[0].on: name at least one of",
            "topics.toml: topic[0].changed: changed applies to updates only",
            "topics.toml: topic[0].became.values: name at least one value",
            "topics.toml: topic[0].filters[0]: \"practitioner\" is not a search parameter of Appointment in this adapter (it has _id, patient, status)",
            "topics.toml: topic[0].filters[2]: \"patient\" is listed twice",
            "topics.toml: topic[1].resource: no Patient mapping declares [changes]",
            "topics.toml: topic[1].on[1]: listed twice",
            "topics.toml: topic[2].slug: \"registered\" is already the slug of another topic",
            "topics.toml: topic[2].resource: the adapter does not serve \"Encounter\"",
            "topics.toml: topic[3].changed[0]: \"end\" is not a top-level element of Appointment",
            "topics.toml: topic[4].became: became is tested on create and update",
        ],
    );
}

#[test]
fn became_needs_a_code_element_and_named_mappings_need_changes() {
    let dir = write_adapter(&[
        ("adapter.toml", MANIFEST),
        ("Patient.toml", PATIENT_MAPPING),
        ("Appointment.toml", &appointment_mapping("")),
        (
            "topics.toml",
            r#"
version = 1
[[topic]]
slug = "x"
title = "X"
resource = "Appointment"
mappings = ["Appointment"]
on = ["update"]
became = { element = "participant", values = ["a"] }
"#,
        ),
    ]);
    assert_reports(
        &dir,
        &[
            "topics.toml: topic[0].mappings[0]: Appointment declares no [changes], so it cannot fire a topic",
        ],
    );
    let dir = adapter_with_topics(
        "version = 1\n[[topic]]\nslug = \"x\"\ntitle = \"X\"\nresource = \"Appointment\"\non = [\"update\"]\nbecame = { element = \"participant\", values = [\"a\"] }\n",
    );
    assert_reports(
        &dir,
        &[
            "topics.toml: topic[0].became.element: \"participant\" holds an object or array in Appointment; became compares a code",
        ],
    );
    let dir = adapter_with_topics(
        "version = 1\n[[topic]]\nslug = \"x\"\ntitle = \"X\"\nresource = \"Appointment\"\non = [\"update\"]\ncolour = \"red\"\n",
    );
    assert_reports(&dir, &["topics.toml: line ", "colour"]);
}

#[test]
fn every_shipped_adapter_offers_topics_on_mappings_with_changes() {
    for name in ["openemr", "opendental", "cerebello", "dentned"] {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("adapters")
            .join(name);
        let adapter = load_ok(&dir);
        for def in adapter.resources.values() {
            for mapping in &def.mappings {
                assert!(mapping.changes.is_some(), "{name} {}", mapping.name);
            }
        }
        let slugs: Vec<&str> = adapter.topics.iter().map(|t| t.slug.as_str()).collect();
        for expected in [
            "patient-registered",
            "patient-demographics-changed",
            "appointment-booked",
            "appointment-rescheduled",
            "appointment-cancelled",
        ] {
            assert!(slugs.contains(&expected), "{name}: {slugs:?}");
        }
    }
}

#[test]
fn quality_rules_are_read_per_dialect_and_checked() {
    use crate::adapter::model::Severity;
    let dir = write_adapter(&[
        ("adapter.toml", MANIFEST),
        ("Patient.toml", PATIENT_MAPPING),
        (
            "quality.toml",
            r#"
version = 1
[severity]
unmapped-code = "error"

[[rule]]
id = "nameless"
title = "Patients without a last name"
severity = "warning"
resource = "Patient"
table = "patients"
key = "id"
sql = "SELECT id, id, 'no last name' FROM patients WHERE last_name = ''"
"#,
        ),
    ]);
    let adapter = crate::adapter::load(&dir).unwrap();
    assert_eq!(
        adapter.quality.severities.get("unmapped-code"),
        Some(&Severity::Error)
    );
    let rule = &adapter.quality.rules[0];
    assert_eq!(rule.severity, Severity::Warning);
    assert_eq!(rule.key, "id");
    // One text serves every dialect the manifest lists.
    assert_eq!(rule.sql.len(), adapter.dialects.len());
}

#[test]
fn quality_rules_that_could_write_or_name_nothing_are_refused() {
    let dir = write_adapter(&[
        ("adapter.toml", MANIFEST),
        ("Patient.toml", PATIENT_MAPPING),
        (
            "quality.toml",
            r#"
version = 1
[severity]
no-such-rule = "warning"
left-out = "fatal"

[[rule]]
id = "Bad_Id"
title = ""
severity = "loud"
resource = "Encounter"
table = "patients"
key = ""
sql = "DELETE FROM patients"

[[rule]]
id = "left-out"
title = "Two statements"
severity = "info"
resource = "Patient"
table = "patients"
key = "id"
sql = { mysql = "SELECT 1; DROP TABLE patients", oracle = "SELECT 1" }
"#,
        ),
    ]);
    assert_reports(
        &dir,
        &[
            "quality.toml: severity.no-such-rule: no built-in rule \"no-such-rule\"",
            "quality.toml: severity.left-out: \"fatal\": a severity is info, warning or error",
            "quality.toml: rule[0].id: \"Bad_Id\": a rule id uses lower-case letters, digits and '-'",
            "quality.toml: rule[0].title: a rule needs a title",
            "quality.toml: rule[0].severity: \"loud\": a severity is info, warning or error",
            "quality.toml: rule[0].resource: the adapter does not serve \"Encounter\"",
            "quality.toml: rule[0].key: name the table's key column",
            "quality.toml: rule[0].sql.",
            "a rule's SQL is one SELECT",
            "quality.toml: rule[1].id: \"left-out\" is already the id of another rule",
            "quality.toml: rule[1].sql.oracle: the adapter does not list the dialect \"oracle\"",
            "a rule's SQL is one statement: no ';' inside it",
        ],
    );
}
