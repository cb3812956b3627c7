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
  { alias = "far", table = "category", on = [{ column = "far.id", equals_column = "cat.parent" }, { column = "cat.kind", equals = 1 }], lookup = true },
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
            "source.join[2].on: a lookup's other conditions test its own columns; cat.kind is not one",
            "source.join[2].on: a lookup is linked by exactly one equals_column",
            "source.filter[1]: a filter on a lookup's column compares it with constants",
            "collections.notes.join[0].lookup: only joins of [source] can be lookups",
        ],
    );
    let found = issues(&dir).join("\n");
    assert!(!found.contains("source.join[0]"), "{found}");
    assert!(!found.contains("source.filter[0]"), "{found}");
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
