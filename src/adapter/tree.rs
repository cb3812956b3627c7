//! The JSON a mapping builds for one resource: element names and constant parts are shared with
//! the loaded adapter, so a row costs neither copies of them nor a hashed map per object.
//!
//! A `serde_json::Value` made every object a hash map whose names were allocated and hashed for
//! every row, and rebuilt every literal part of the template (codings, systems, units) cell by
//! cell; profiles of the name search put a quarter of the mapping's time in those inserts and
//! another quarter in allocation (BENCHMARKS.md, session 20). A `Tree` keeps an object's fields
//! in a list of `(&'static str, Tree)` in template order, and a constant part as a reference to
//! its value and its JSON text, written out verbatim. Consumers that edit a resource (`_summary`,
//! `_elements`, change detection, export) take `into_json`.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value as Json};

/// A mapped value.
#[derive(Debug, Clone, PartialEq)]
pub enum Tree {
    Text(String),
    Number(Number),
    Bool(bool),
    /// A part of the template that holds no column: built once, when the adapter was loaded.
    Constant(&'static Constant),
    /// Fields in template order, each name at most once.
    Object(Vec<(&'static str, Tree)>),
    Array(Vec<Tree>),
    /// A value built as JSON (a code map's target, a subsetted resource).
    Json(Json),
}

/// A constant JSON value with its compact text, and what walks of every resource ask of it,
/// worked out once: its shape hash (`json_shape`) and whether any field in it is a `reference`.
#[derive(Debug)]
pub struct Constant {
    json: Json,
    text: Box<RawValue>,
    shape: u64,
    has_references: bool,
}

impl PartialEq for Constant {
    fn eq(&self, other: &Self) -> bool {
        self.json == other.json
    }
}

impl std::ops::Deref for Constant {
    type Target = Json;

    fn deref(&self) -> &Json {
        &self.json
    }
}

/// Interned values live as long as the process: adapters are loaded a few times at most, and
/// interning bounds the memory by the distinct names and constants, whatever the reloads.
fn intern<T: ?Sized + Sync + 'static>(
    table: &'static OnceLock<Mutex<HashMap<String, &'static T>>>,
    key: &str,
    make: impl FnOnce() -> &'static T,
) -> &'static T {
    let table = table.get_or_init(|| Mutex::new(HashMap::new()));
    let mut table = table
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(found) = table.get(key) {
        return found;
    }
    let made = make();
    table.insert(key.to_owned(), made);
    made
}

/// `text` as a name shared by every mapping that uses it.
pub fn name(text: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<HashMap<String, &'static str>>> = OnceLock::new();
    intern(&NAMES, text, || Box::leak(text.into()))
}

/// `json` as a constant shared by every mapping that uses it.
pub fn constant(json: Json) -> &'static Constant {
    static CONSTANTS: OnceLock<Mutex<HashMap<String, &'static Constant>>> = OnceLock::new();
    let text = json.to_string();
    intern(&CONSTANTS, &text, || {
        let text = RawValue::from_string(text.clone()).expect("serde_json writes valid JSON");
        let shape = json_shape(&json);
        let mut has_references = false;
        each_reference(&json, &mut |_| has_references = true);
        Box::leak(Box::new(Constant {
            json,
            text,
            shape,
            has_references,
        }))
    })
}

impl Tree {
    /// A JSON value as a tree: scalars become their own variants.
    pub fn from_json(json: Json) -> Tree {
        match json {
            Json::String(text) => Tree::Text(text),
            Json::Number(number) => Tree::Number(number),
            Json::Bool(flag) => Tree::Bool(flag),
            other => Tree::Json(other),
        }
    }

    pub fn into_json(self) -> Json {
        match self {
            Tree::Text(text) => Json::String(text),
            Tree::Number(number) => Json::Number(number),
            Tree::Bool(flag) => Json::Bool(flag),
            Tree::Constant(constant) => constant.json.clone(),
            Tree::Object(fields) => {
                let mut object = Map::with_capacity(fields.len());
                for (name, value) in fields {
                    object.insert(name.to_owned(), value.into_json());
                }
                Json::Object(object)
            }
            Tree::Array(items) => Json::Array(items.into_iter().map(Tree::into_json).collect()),
            Tree::Json(json) => json,
        }
    }

    pub fn to_json(&self) -> Json {
        self.clone().into_json()
    }

    /// The JSON value this tree is, when it is not an object or array of its own.
    fn as_json(&self) -> Option<&Json> {
        match self {
            Tree::Constant(constant) => Some(&constant.json),
            Tree::Json(json) => Some(json),
            _ => None,
        }
    }

    /// The field `name` of an object.
    pub fn get(&self, name: &str) -> Option<Field<'_>> {
        match self {
            Tree::Object(fields) => fields
                .iter()
                .find(|(field, _)| *field == name)
                .map(|(_, value)| Field::Tree(value)),
            other => other.as_json()?.get(name).map(Field::Json),
        }
    }

    /// The names of an object's fields (none for anything else).
    pub fn names(&self) -> Vec<&str> {
        match self {
            Tree::Object(fields) => fields.iter().map(|(name, _)| *name).collect(),
            other => match other.as_json() {
                Some(Json::Object(object)) => object.keys().map(String::as_str).collect(),
                _ => Vec::new(),
            },
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Tree::Text(text) => Some(text),
            other => other.as_json()?.as_str(),
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Tree::Number(number) => number.as_f64(),
            other => other.as_json()?.as_f64(),
        }
    }

    /// A text or a number as text (the parts `concat` and a joined `each` put together).
    pub fn into_text(self) -> Option<String> {
        match self {
            Tree::Text(text) => Some(text),
            Tree::Number(number) => Some(number.to_string()),
            other => match other.as_json()? {
                Json::String(text) => Some(text.clone()),
                Json::Number(number) => Some(number.to_string()),
                _ => None,
            },
        }
    }

    /// Calls `visit` with the text of every field named `reference`, at any depth.
    pub fn each_reference(&self, visit: &mut dyn FnMut(&str)) {
        match self {
            Tree::Object(fields) => {
                for (name, value) in fields {
                    match value {
                        Tree::Text(text) if *name == "reference" => visit(text),
                        Tree::Text(_) | Tree::Number(_) | Tree::Bool(_) => {}
                        other => other.each_reference(visit),
                    }
                }
            }
            Tree::Array(items) => items.iter().for_each(|item| item.each_reference(visit)),
            Tree::Constant(constant) if constant.has_references => {
                each_reference(&constant.json, visit)
            }
            Tree::Json(json) => each_reference(json, visit),
            Tree::Text(_) | Tree::Number(_) | Tree::Bool(_) | Tree::Constant(_) => {}
        }
    }

    /// `json_shape` of the JSON this tree stands for, without building it.
    pub fn shape(&self) -> u64 {
        match self {
            Tree::Text(_) => kind_shape(KIND_TEXT),
            Tree::Number(number) => kind_shape(number_kind(number)),
            Tree::Bool(_) => kind_shape(KIND_BOOL),
            Tree::Constant(constant) => constant.shape,
            Tree::Json(json) => json_shape(json),
            Tree::Array(items) => array_shape(items.iter().map(Tree::shape)),
            Tree::Object(fields) => {
                object_shape(fields.iter().map(|(name, value)| (*name, value.shape())))
            }
        }
    }
}

/// Calls `visit` with the text of every field named `reference` in `json`, at any depth.
fn each_reference(json: &Json, visit: &mut dyn FnMut(&str)) {
    match json {
        Json::Object(object) => {
            for (name, value) in object {
                match value {
                    Json::String(text) if name == "reference" => visit(text),
                    other => each_reference(other, visit),
                }
            }
        }
        Json::Array(items) => items.iter().for_each(|item| each_reference(item, visit)),
        _ => {}
    }
}

const KIND_NULL: u64 = 0;
const KIND_BOOL: u64 = 1;
const KIND_TEXT: u64 = 3;
const KIND_ARRAY: u64 = 4;
const KIND_OBJECT: u64 = 5;

/// A number's kind as the strict model tells them apart: integer-ness and sign, not the value.
fn number_kind(number: &Number) -> u64 {
    let negative = number.as_f64().is_some_and(|f| f < 0.0);
    8 | u64::from(number.is_u64()) | u64::from(number.is_i64()) << 1 | u64::from(negative) << 2
}

/// A hash of `json`'s names, nesting, array lengths and JSON kinds (with a number's integer-ness
/// and sign), not of its values: everything fhirbolt's strict model checks (`map::check_r4`).
/// Each array item and object field adds its own shape as one word, so a constant's shape is
/// worked out once, when the adapter loads, and a mapped resource's walk stops at it.
pub fn json_shape(json: &Json) -> u64 {
    match json {
        Json::Null => kind_shape(KIND_NULL),
        Json::Bool(_) => kind_shape(KIND_BOOL),
        Json::Number(number) => kind_shape(number_kind(number)),
        Json::String(_) => kind_shape(KIND_TEXT),
        Json::Array(items) => array_shape(items.iter().map(json_shape)),
        Json::Object(fields) => object_shape(
            fields
                .iter()
                .map(|(name, value)| (name.as_str(), json_shape(value))),
        ),
    }
}

/// The shape of a scalar of `kind`.
fn kind_shape(kind: u64) -> u64 {
    let mut hasher = ShapeHasher::default();
    hasher.add(kind);
    hasher.0
}

/// The shape of an array whose items have the shapes `items`: one way for trees and JSON.
fn array_shape(items: impl ExactSizeIterator<Item = u64>) -> u64 {
    let mut hasher = ShapeHasher::default();
    hasher.add(KIND_ARRAY);
    hasher.add(items.len() as u64);
    items.for_each(|item| hasher.add(item));
    hasher.0
}

/// The shape of an object whose fields have the names and shapes `fields`.
fn object_shape<'a>(fields: impl ExactSizeIterator<Item = (&'a str, u64)>) -> u64 {
    let mut hasher = ShapeHasher::default();
    hasher.add(KIND_OBJECT);
    hasher.add(fields.len() as u64);
    for (name, shape) in fields {
        hasher.write(name.as_bytes());
        hasher.add(shape);
    }
    hasher.0
}

/// The shape of a resource of `resource_type` (`json_shape`), as `map::check_r4` remembers
/// fhirbolt's verdicts by it: the type's name counts, as its value is no part of a shape.
pub fn resource_shape(resource_type: &str, resource: &Tree) -> u64 {
    let mut hasher = ShapeHasher::default();
    hasher.write(resource_type.as_bytes());
    hasher.add(resource.shape());
    hasher.0
}

/// A multiply-rotate hash over 64 bits, eight bytes at a time (the rustc compiler's "Fx" hash):
/// every resource's shape is hashed, element names included, and SipHash (std's default) cost
/// several per cent of an export's CPU. Shapes come from adapters' mappings, not from requests,
/// so nothing needs a keyed hash here; a few thousand shapes in 2^64 values make a collision (one
/// shape taking another's verdict) negligible.
#[derive(Default)]
struct ShapeHasher(u64);

impl ShapeHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            self.add(u64::from_le_bytes(word.try_into().expect("eight bytes")));
        }
        let mut rest = [0u8; 8];
        let tail = words.remainder();
        rest[..tail.len()].copy_from_slice(tail);
        // The length keeps "ab" + "c" apart from "a" + "bc" within one name's bytes.
        self.add(u64::from_le_bytes(rest) ^ ((tail.len() as u64) << 56));
    }
}

/// A field of a tree: part of the tree, or of a JSON value inside it.
#[derive(Debug, Clone, Copy)]
pub enum Field<'a> {
    Tree(&'a Tree),
    Json(&'a Json),
}

impl<'a> Field<'a> {
    pub fn as_str(self) -> Option<&'a str> {
        match self {
            Field::Tree(tree) => tree.as_str(),
            Field::Json(json) => json.as_str(),
        }
    }

    pub fn get(self, name: &str) -> Option<Field<'a>> {
        match self {
            Field::Tree(tree) => tree.get(name),
            Field::Json(json) => json.get(name).map(Field::Json),
        }
    }

    /// Calls `visit` with the text of every field named `reference` below this field.
    pub fn each_reference(self, visit: &mut dyn FnMut(&str)) {
        match self {
            Field::Tree(tree) => tree.each_reference(visit),
            Field::Json(json) => each_reference(json, visit),
        }
    }

    /// Whether the element at `path` below this field is present: for a list, on every item.
    pub fn has_path(self, path: &[String]) -> bool {
        let Some((first, rest)) = path.split_first() else {
            return true;
        };
        self.get(first).is_some_and(|value| value.all_items(rest))
    }

    /// `path` holds on this value, or on every item of it when it is a non-empty list.
    fn all_items(self, path: &[String]) -> bool {
        match self {
            Field::Tree(Tree::Array(items)) => {
                !items.is_empty() && items.iter().all(|item| Field::Tree(item).has_path(path))
            }
            Field::Tree(tree) => match tree.as_json() {
                Some(json) => Field::Json(json).all_items(path),
                None => Field::Tree(tree).has_path(path),
            },
            Field::Json(Json::Array(items)) => {
                !items.is_empty() && items.iter().all(|item| Field::Json(item).has_path(path))
            }
            Field::Json(_) => self.has_path(path),
        }
    }
}

impl Serialize for Tree {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Tree::Text(text) => serializer.serialize_str(text),
            Tree::Number(number) => number.serialize(serializer),
            Tree::Bool(flag) => serializer.serialize_bool(*flag),
            // Written as its text: serde_json copies it, other serializers read it back.
            Tree::Constant(constant) => constant.text.serialize(serializer),
            Tree::Object(fields) => {
                let mut map = serializer.serialize_map(Some(fields.len()))?;
                for (name, value) in fields {
                    map.serialize_entry(name, value)?;
                }
                map.end()
            }
            Tree::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Tree::Json(json) => json.serialize(serializer),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sample() -> Tree {
        Tree::Object(vec![
            ("resourceType", Tree::Text("Observation".into())),
            ("id", Tree::Text("7".into())),
            (
                "code",
                Tree::Constant(constant(json!({"coding": [{"system": "http://loinc.org",
                    "code": "8867-4"}]}))),
            ),
            (
                "valueQuantity",
                Tree::Object(vec![("value", Tree::Number(72.into()))]),
            ),
            (
                "note",
                Tree::Array(vec![Tree::Json(json!({"text": "a \"quoted\" note"}))]),
            ),
            ("active", Tree::Bool(true)),
        ])
    }

    #[test]
    fn serializes_as_its_json_does_in_template_order() {
        let tree = sample();
        let text = serde_json::to_string(&tree).unwrap();
        assert_eq!(text, tree.to_json().to_string());
        assert!(text.starts_with(r#"{"resourceType":"Observation","id":"7","code":{"coding""#));
        assert_eq!(
            serde_json::from_str::<Json>(&serde_json::to_string_pretty(&tree).unwrap()).unwrap(),
            tree.to_json()
        );
        assert_eq!(serde_json::to_value(&tree).unwrap(), tree.to_json());
    }

    #[test]
    fn names_and_constants_are_shared() {
        assert!(std::ptr::eq(name("valueQuantity"), name("valueQuantity")));
        let first = constant(json!({"system": "http://loinc.org"}));
        assert!(std::ptr::eq(
            first,
            constant(json!({"system": "http://loinc.org"}))
        ));
        assert_eq!(**first, json!({"system": "http://loinc.org"}));
    }

    #[test]
    fn fields_paths_and_texts_read_through_constants() {
        let tree = sample();
        assert_eq!(tree.get("id").and_then(Field::as_str), Some("7"));
        assert_eq!(
            tree.get("code")
                .and_then(|code| code.get("coding"))
                .map(|coding| matches!(coding, Field::Json(Json::Array(_)))),
            Some(true)
        );
        let path = |p: &str| p.split('.').map(str::to_owned).collect::<Vec<_>>();
        let root = Field::Tree(&tree);
        assert!(root.has_path(&path("code.coding.system")));
        assert!(root.has_path(&path("valueQuantity.value")));
        assert!(root.has_path(&path("note.text")));
        assert!(!root.has_path(&path("code.coding.display")));
        assert!(!root.has_path(&path("subject")));
        let references = |tree: &Tree| {
            let mut found = Vec::new();
            tree.each_reference(&mut |text| found.push(text.to_owned()));
            found
        };
        assert!(references(&tree).is_empty());
        let referring = Tree::Object(vec![
            (
                "subject",
                Tree::Object(vec![("reference", Tree::Text("Patient/7".into()))]),
            ),
            // A text named otherwise is no reference, even one that reads like it.
            ("note", Tree::Text("Patient/8".into())),
            (
                "performer",
                Tree::Array(vec![Tree::Constant(constant(
                    json!({"reference": "Practitioner/1"}),
                ))]),
            ),
            (
                "basedOn",
                Tree::Json(json!([{"display": "x"}, {"reference": "ServiceRequest/2"}])),
            ),
        ]);
        assert_eq!(
            references(&referring),
            ["Patient/7", "Practitioner/1", "ServiceRequest/2"]
        );
        assert_eq!(
            tree.names(),
            [
                "resourceType",
                "id",
                "code",
                "valueQuantity",
                "note",
                "active"
            ]
        );
        assert_eq!(Tree::Number(72.into()).into_text().as_deref(), Some("72"));
        assert_eq!(
            Tree::Constant(constant(json!("x"))).into_text().as_deref(),
            Some("x")
        );
    }
}
