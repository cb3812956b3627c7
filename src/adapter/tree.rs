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

/// A constant JSON value with its compact text.
#[derive(Debug)]
pub struct Constant {
    json: Json,
    text: Box<RawValue>,
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
        Box::leak(Box::new(Constant { json, text }))
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

    /// Calls `visit` with every text field's name and value, at any depth.
    pub fn each_text_field(&self, visit: &mut dyn FnMut(&str, &str)) {
        match self {
            Tree::Object(fields) => {
                for (name, value) in fields {
                    match value {
                        Tree::Text(text) => visit(name, text),
                        other => other.each_text_field(visit),
                    }
                }
            }
            Tree::Array(items) => items.iter().for_each(|item| item.each_text_field(visit)),
            other => {
                if let Some(json) = other.as_json() {
                    each_text_field(json, visit);
                }
            }
        }
    }
}

/// Calls `visit` with every text field's name and value in `json`, at any depth.
fn each_text_field(json: &Json, visit: &mut dyn FnMut(&str, &str)) {
    match json {
        Json::Object(object) => {
            for (name, value) in object {
                match value {
                    Json::String(text) => visit(name, text),
                    other => each_text_field(other, visit),
                }
            }
        }
        Json::Array(items) => items.iter().for_each(|item| each_text_field(item, visit)),
        _ => {}
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

    /// Calls `visit` with every text field's name and value below this field, at any depth.
    pub fn each_text_field(self, visit: &mut dyn FnMut(&str, &str)) {
        match self {
            Field::Tree(tree) => tree.each_text_field(visit),
            Field::Json(json) => each_text_field(json, visit),
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
        let mut texts = Vec::new();
        tree.each_text_field(&mut |name, text| texts.push(format!("{name}={text}")));
        assert_eq!(
            texts,
            [
                "resourceType=Observation",
                "id=7",
                "system=http://loinc.org",
                "code=8867-4",
                "text=a \"quoted\" note"
            ]
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
