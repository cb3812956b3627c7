//! The data dictionary on hand-made adapters: element paths, column names, conditions, unmapped
//! columns, and the three renderings' escaping.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::*;
use crate::adapter::format::{ManifestFile, MappingFile};
use crate::adapter::validate::{ParsedMapping, validate};

const MANIFEST: &str = "version = 1\nname = \"t\"\ntitle = \"T\"\ntimezone = \"America/New_York\"\ndialects = [\"sqlite\"]\n";

/// Builds an adapter from `(mapping name, TOML text)` pairs.
fn adapter(mappings: &[(&str, &str)]) -> Adapter {
    let manifest: ManifestFile = toml::from_str(MANIFEST).unwrap();
    let parsed = mappings
        .iter()
        .map(|(name, text)| ParsedMapping {
            file: PathBuf::from(format!("/somewhere/{name}.toml")),
            name: (*name).to_owned(),
            spec: toml::from_str::<MappingFile>(text).unwrap(),
        })
        .collect();
    validate(
        &PathBuf::from("."),
        &PathBuf::from("adapter.toml"),
        manifest,
        parsed,
    )
    .unwrap_or_else(|e| panic!("{e:#?}"))
}

fn rows(dictionary: &Dictionary) -> Vec<(String, String, String, String, String)> {
    dictionary
        .mappings
        .iter()
        .flat_map(|m| &m.groups)
        .flat_map(|g| g.rows.iter().map(move |r| (g, r)))
        .map(|(group, row)| {
            let sources: Vec<String> = row.sources.iter().map(ToString::to_string).collect();
            (
                group.label.clone(),
                row.element.clone(),
                sources.join(", "),
                row.transform.clone(),
                row.search.join(", "),
            )
        })
        .collect()
}

fn row<'a>(
    rows: &'a [(String, String, String, String, String)],
    element: &str,
) -> &'a (String, String, String, String, String) {
    rows.iter()
        .find(|r| r.1 == element)
        .unwrap_or_else(|| panic!("no row {element} in {rows:#?}"))
}

const PATIENT: &str = r#"
version = 1
resource = "Patient"
[source]
table = "patients"
id = { columns = ["pid"] }
last_updated = "changed"
filter = [{ column = "deleted", equals = 0 }]

[[source.join]]
alias = "race"
table = "options"
on = [{ column = "race.list", equals = "race" }, { column = "race.id", equals_column = "race" }]

[[source.join]]
alias = "lang"
table = "options"
on = [{ column = "lang.list", equals = "language" }, { column = "lang.id", equals_column = "language" }]

[[source.join]]
alias = "doc"
table = "users"
on = [{ column = "doc.id", equals_column = "doctor" }]

[elements]
active = true
name = [{ family = "$lname", given = ["$fname", { fn = "split", column = "middle", separator = " ", item = "$_" }] }]
gender = { fn = "coalesce", values = [{ fn = "map", map = "sex", column = "sex" }, "unknown"] }
birthDate = { fn = "date", column = "dob" }
communication = [{ language = { text = "$lang.title" } }]
extension = [{ url = "urn:race", valueString = "$race.title" }]
generalPractitioner = [{ reference = { fn = "reference", resource = "Patient", columns = ["doc.id"] } }]
contact = [{ fn = "if", when = [{ column = "kin", empty = false }], then = { name = { text = "$kin" } } }]

[maps.sex]
values = { F = "female", M = "male", "" = "unknown" }
default = "other"

[search.family]
type = "string"
column = "lname"

[search.gender]
type = "token"
column = "sex"
map = "sex"

[search.doctor]
type = "reference"
target = "Patient"
column = "doc.id"
"#;

#[test]
fn objects_and_arrays_become_paths_with_template_positions() {
    let dictionary = Dictionary::build(&adapter(&[("Patient", PATIENT)]), None);
    let rows = rows(&dictionary);
    let elements: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(
        elements,
        [
            "Patient.id",
            "Patient.meta.lastUpdated",
            "Patient.active",
            "Patient.name[0].family",
            "Patient.name[0].given[0]",
            "Patient.name[0].given[]",
            "Patient.gender",
            "Patient.birthDate",
            "Patient.communication[0].language.text",
            "Patient.extension[0].url",
            "Patient.extension[0].valueString",
            "Patient.generalPractitioner[0].reference",
            "Patient.contact[0].name.text",
        ]
    );
    assert_eq!(
        row(&rows, "Patient.id"),
        &(
            "Patient".into(),
            "Patient.id".into(),
            "patients.pid".into(),
            "id {pid}".into(),
            "_id".into()
        )
    );
    assert_eq!(row(&rows, "Patient.meta.lastUpdated").4, "_lastUpdated");
    assert_eq!(row(&rows, "Patient.active").3, "true");
    assert_eq!(row(&rows, "Patient.name[0].family").4, "family");
    let split = row(&rows, "Patient.name[0].given[]");
    assert_eq!(
        (split.2.as_str(), split.3.as_str()),
        ("patients.middle", "split on \" \"")
    );
    let gender = row(&rows, "Patient.gender");
    assert_eq!(gender.2, "patients.sex");
    assert_eq!(
        gender.3,
        r#"first present of: map sex(patients.sex) {"" → "unknown", "F" → "female", "M" → "male"; otherwise "other"}; "unknown""#
    );
    assert_eq!(gender.4, "gender");
    assert_eq!(row(&rows, "Patient.birthDate").3, "date");
    let contact = row(&rows, "Patient.contact[0].name.text");
    assert_eq!(contact.2, "patients.kin");
    assert_eq!(contact.3, "if patients.kin is not empty");
}

#[test]
fn join_aliases_resolve_to_tables_and_stay_when_a_table_is_read_twice() {
    let dictionary = Dictionary::build(&adapter(&[("Patient", PATIENT)]), None);
    let rows = rows(&dictionary);
    assert_eq!(
        row(&rows, "Patient.communication[0].language.text").2,
        "options.title (lang)"
    );
    assert_eq!(
        row(&rows, "Patient.extension[0].valueString").2,
        "options.title (race)"
    );
    let reference = row(&rows, "Patient.generalPractitioner[0].reference");
    assert_eq!(
        (
            reference.2.as_str(),
            reference.3.as_str(),
            reference.4.as_str()
        ),
        ("users.id", "reference Patient", "doctor")
    );
    let reads = &dictionary.mappings[0].other_reads;
    let uses: Vec<(&str, &str, &str)> = reads
        .iter()
        .map(|r| (r.purpose.as_str(), r.subject.as_str(), r.detail.as_str()))
        .collect();
    assert_eq!(
        uses,
        [
            ("row filter", "", "patients.deleted = 0"),
            (
                "left join",
                "options AS race",
                "options.list (race) = \"race\" and options.id (race) = patients.race"
            ),
            (
                "left join",
                "options AS lang",
                "options.list (lang) = \"language\" and options.id (lang) = patients.language"
            ),
            ("left join", "users AS doc", "users.id = patients.doctor"),
            (
                "condition of",
                "Patient.contact[0]",
                "patients.kin is not empty"
            ),
        ]
    );
    assert_eq!(
        dictionary.mappings[0].file, "Patient.toml",
        "no folder in the output"
    );
}

const CLAIM: &str = r#"
version = 1
resource = "Claim"
[source]
table = "claims"
id = { prefix = "c-", columns = ["patient_id", "encounter_id"] }
latest = { column = "version", partition = ["patient_id", "encounter_id"] }

[collections.lines]
table = "billing"
match = [["pid", "patient_id"], ["encounter", "encounter_id"]]
filter = [{ column = "code_type", in = ["CPT4", "HCPCS"] }]
order_by = ["id"]

[elements]
item = { fn = "each", collection = "lines", element = { sequence = { fn = "sequence" }, net = { value = { fn = "number", column = "fee", decimals = 2 } }, code = { fn = "if", when = [{ column = "code", empty = false }], then = "$code" } } }
total = { value = { fn = "sum", collection = "lines", column = "fee" } }
"#;

#[test]
fn collection_items_read_the_collection_table() {
    let dictionary = Dictionary::build(&adapter(&[("Claim", CLAIM)]), None);
    let rows = rows(&dictionary);
    assert_eq!(row(&rows, "Claim.id").3, "id c-{patient_id}-{encounter_id}");
    assert_eq!(
        row(&rows, "Claim.item[].sequence").3,
        "sequence (position in collection lines)"
    );
    let net = row(&rows, "Claim.item[].net.value");
    assert_eq!(
        (net.2.as_str(), net.3.as_str()),
        ("billing.fee", "number 2dp")
    );
    assert_eq!(
        row(&rows, "Claim.item[].code").3,
        "if billing.code is not empty"
    );
    let total = row(&rows, "Claim.total.value");
    assert_eq!(
        (total.2.as_str(), total.3.as_str()),
        ("billing.fee", "sum over collection lines, 2dp")
    );
    let reads: Vec<(String, String)> = dictionary.mappings[0]
        .other_reads
        .iter()
        .map(|r| (format!("{} {}", r.purpose, r.subject), r.detail.clone()))
        .collect();
    assert_eq!(
        reads,
        [
            (
                "latest ".to_owned(),
                "only rows with the greatest claims.version per claims.patient_id, claims.encounter_id"
                    .to_owned()
            ),
            (
                "collection lines from billing".to_owned(),
                "match billing.pid = claims.patient_id and billing.encounter = claims.encounter_id; \
                 filter billing.code_type in (\"CPT4\", \"HCPCS\"); order by billing.id"
                    .to_owned()
            ),
            (
                "condition of Claim.item[].code".to_owned(),
                "billing.code is not empty".to_owned()
            ),
        ]
    );
}

const VITALS: &str = r#"
version = 1
resource = "Observation"
[source]
table = "vitals"
id = { prefix = "vs-", columns = ["id"] }

[elements]
status = "final"
effectiveDateTime = { fn = "datetime", column = "taken", zone = "UTC", instant = true }

[[unpivot]]
key = "weight"
when = [{ column = "weight", positive = true }]
search = { code = ["http://loinc.org|29463-7"] }
[unpivot.elements]
code = { text = "Body weight" }
valueQuantity = { value = { fn = "number", column = "weight", multiply = 0.45, decimals = 2, positive = true } }

[[unpivot]]
key = "height"
when = [{ column = "height", positive = true }]
[unpivot.elements]
code = { text = "Body height" }
status = "final"

[search.code]
type = "token"
per_variant = true
"#;

#[test]
fn variants_share_common_elements_and_label_their_own() {
    let dictionary = Dictionary::build(&adapter(&[("Observation.vitals", VITALS)]), None);
    let mapping = &dictionary.mappings[0];
    assert_eq!(mapping.label, "Observation (vitals)");
    let groups: Vec<(&str, &str)> = mapping
        .groups
        .iter()
        .map(|g| (g.label.as_str(), g.when.as_str()))
        .collect();
    assert_eq!(
        groups,
        [
            ("Observation (vitals)", ""),
            ("Observation (vitals: weight)", "vitals.weight > 0"),
            ("Observation (vitals: height)", "vitals.height > 0"),
        ]
    );
    let rows = rows(&dictionary);
    let shared: Vec<&str> = rows
        .iter()
        .filter(|r| r.0 == "Observation (vitals)")
        .map(|r| r.1.as_str())
        .collect();
    // A variant restating a shared element unchanged does not make it its own.
    assert_eq!(
        shared,
        [
            "Observation.id",
            "Observation.status",
            "Observation.effectiveDateTime"
        ]
    );
    assert_eq!(row(&rows, "Observation.id").3, "id vs-{id}-{variant key}");
    assert_eq!(
        row(&rows, "Observation.effectiveDateTime").3,
        "datetime (zone UTC, instant)"
    );
    let weight: Vec<(&str, &str)> = rows
        .iter()
        .filter(|r| r.0 == "Observation (vitals: weight)")
        .map(|r| (r.1.as_str(), r.3.as_str()))
        .collect();
    assert_eq!(
        weight,
        [
            ("Observation.code.text", "\"Body weight\""),
            ("Observation.valueQuantity.value", "number ×0.45 2dp >0"),
        ]
    );
    let code = &mapping.search[0];
    assert_eq!(
        code.detail,
        "per variant: weight: http://loinc.org|29463-7, height: none"
    );
}

#[test]
fn unmapped_columns_are_those_no_mapping_reads_ignoring_case() {
    let adapter = adapter(&[("Patient", PATIENT), ("Claim", CLAIM)]);
    let mut tables = BTreeMap::new();
    tables.insert(
        "patients".to_owned(),
        ["PID", "lname", "ssn", "Deleted", "zeta", "Alpha"]
            .map(String::from)
            .to_vec(),
    );
    tables.insert(
        "BILLING".to_owned(),
        ["pid", "fee", "note"].map(String::from).to_vec(),
    );
    let columns = TableColumns {
        source: "a test".into(),
        tables,
    };
    let dictionary = Dictionary::build(&adapter, Some(&columns));
    let unmapped: Vec<(&str, Option<Vec<String>>)> = dictionary
        .tables
        .iter()
        .map(|t| (t.table.as_str(), t.unmapped.clone()))
        .collect();
    assert_eq!(
        unmapped,
        [
            ("billing", Some(vec!["note".to_owned()])),
            ("claims", None),
            ("options", None),
            (
                "patients",
                Some(vec!["Alpha".to_owned(), "ssn".into(), "zeta".into()])
            ),
            ("users", None),
        ]
    );
    assert_eq!(dictionary.tables[0].read_by, ["Claim"]);
    let page = markdown(&dictionary);
    assert!(
        page.contains("| `claims` | Claim | table not found |"),
        "{page}"
    );
    assert!(page.contains("as listed in a test."), "{page}");
    let without = markdown(&Dictionary::build(&adapter, None));
    assert!(
        without.contains("so unmapped columns are not listed"),
        "{without}"
    );
}

/// Every column the adapter's queries read is shown somewhere in its dictionary.
#[test]
fn the_openemr_dictionary_shows_every_column_read() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("adapters/openemr");
    let adapter = crate::adapter::load(&dir).unwrap();
    let dictionary = Dictionary::build(&adapter, None);
    for (mapping, entry) in adapter
        .resources
        .values()
        .flat_map(|d| &d.mappings)
        .zip(&dictionary.mappings)
    {
        let shown: BTreeSet<(String, String)> = entry
            .groups
            .iter()
            .flat_map(|g| g.rows.iter().flat_map(|r| &r.sources))
            .chain(entry.other_reads.iter().flat_map(|r| &r.columns))
            .chain(entry.search.iter().flat_map(|s| &s.columns))
            .map(|c| (c.table.clone(), c.column.clone()))
            .collect();
        for (table, column) in mapping.columns_read() {
            assert!(
                shown.contains(&(table.to_owned(), column.to_owned())),
                "{}: {table}.{column} is read but not shown",
                mapping.name
            );
        }
    }
}

#[test]
fn schemas_are_read_tolerantly() {
    let sql = "-- a comment\n\
        CREATE TABLE patients (\n  id bigint NOT NULL,\n  `first name` varchar(20),\n  \"DOB\" date,\n  \
        -- a note\n  PRIMARY KEY (id),\n  KEY idx (id),\n  UNIQUE KEY u (id)\n);\n\
        CREATE INDEX x ON patients (id);\n\
        create table if not exists `Billing` (\n fee decimal(12,2),\n  CONSTRAINT c CHECK (fee > 0)\n) ENGINE=InnoDB;\n\
        CREATE TABLE broken (\n";
    let tables = parse_schema(sql);
    let expected: BTreeMap<String, Vec<String>> = [
        ("Billing", vec!["fee"]),
        ("patients", vec!["id", "first name", "DOB"]),
    ]
    .into_iter()
    .map(|(t, c)| (t.to_owned(), c.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(tables, expected);
}

#[test]
fn csv_fields_are_quoted_as_rfc_4180_says() {
    assert_eq!(csv_field("plain"), "plain");
    assert_eq!(csv_field("a, b"), "\"a, b\"");
    assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    let dictionary = Dictionary::build(&adapter(&[("Patient", PATIENT)]), None);
    let table = csv(&dictionary);
    let lines: Vec<&str> = table.split("\r\n").collect();
    assert_eq!(lines[0], "mapping,element,source,transform,search");
    assert_eq!(lines[1], "Patient,Patient.id,patients.pid,id {pid},_id");
    assert!(
        lines.contains(
            &"Patient,Patient.gender,patients.sex,\"first present of: map sex(patients.sex) {\"\"\"\" → \"\"unknown\"\", \"\"F\"\" → \"\"female\"\", \"\"M\"\" → \"\"male\"\"; otherwise \"\"other\"\"}; \"\"unknown\"\"\",gender"
        ),
        "{table}"
    );
    assert_eq!(lines.last(), Some(&""), "every row ends with CRLF");
}

#[test]
fn html_is_escaped_and_self_contained() {
    assert_eq!(
        escape(r#"<a href="x">&'</a>"#),
        "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
    );
    let text = PATIENT.replacen(
        "resource = \"Patient\"",
        "resource = \"Patient\"\ndescription = \"<script>alert('x')</script> & `code`\"",
        1,
    );
    let page = html(&Dictionary::build(&adapter(&[("Patient", &text)]), None));
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(!page.contains("<script"), "{page}");
    assert!(
        page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; <code>code</code>"),
        "{page}"
    );
    assert!(
        page.contains("<td><code>patients.sex</code></td>"),
        "{page}"
    );
    for external in ["<link", "src=", "@import", "url("] {
        assert!(!page.contains(external), "{external} in {page}");
    }
}

#[test]
fn markdown_cells_keep_pipes_and_backticks_inside_code() {
    assert_eq!(md_code("a|b", true), "`a\\|b`");
    assert_eq!(md_code("a|b", false), "`a|b`");
    assert_eq!(md_code("x `y` z", false), "``x `y` z``");
    assert_eq!(md_code("`y`", false), "`` `y` ``");
    assert_eq!(
        md_text("patient_data *and* _x_ [a]|b"),
        "patient_data \\*and\\* \\_x\\_ \\[a\\]\\|b"
    );
    assert_eq!(md_text(" two\n lines "), " two lines ");
    assert_eq!(
        anchor("Observation (vitals: weight)"),
        "observation-vitals-weight"
    );
    assert_eq!(
        prose("uses `a|b` here"),
        [text("uses "), code("a|b"), text(" here")]
    );
    assert_eq!(prose("odd ` tick"), [text("odd ` tick")]);
}
