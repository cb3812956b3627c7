//! Searchset Bundles: entries with absolute fullUrls and search modes, self and next links.

use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde_json::Value as Json;

use crate::adapter::tree::{Field, Tree};

/// A searchset Bundle, serialized straight from its parts: the resources are written where
/// they are, with no JSON tree built around them (a page's entries used to cost three maps
/// each before a byte was written).
pub struct Searchset<'a> {
    pub base_url: &'a str,
    pub self_url: String,
    pub next_url: Option<String>,
    pub total: Option<u64>,
    pub matches: Vec<Tree>,
    pub included: Vec<Tree>,
    pub outcome: Option<Json>,
    pub timestamp: String,
}

/// `Type/id` resolved against the base URL.
pub fn full_url(base_url: &str, resource: &Tree) -> String {
    let field = |name| {
        resource
            .get(name)
            .and_then(Field::as_str)
            .unwrap_or_default()
    };
    format!(
        "{}/{}/{}",
        base_url.trim_end_matches('/'),
        field("resourceType"),
        field("id")
    )
}

#[derive(Serialize)]
struct Link<'a> {
    relation: &'static str,
    url: &'a str,
}

#[derive(Serialize)]
struct Meta<'a> {
    #[serde(rename = "lastUpdated")]
    last_updated: &'a str,
}

#[derive(Serialize)]
struct SearchMode {
    mode: &'static str,
}

#[derive(Serialize)]
struct Entry<'a, R> {
    #[serde(rename = "fullUrl", skip_serializing_if = "Option::is_none")]
    full_url: Option<String>,
    resource: &'a R,
    search: SearchMode,
}

/// The entries in Bundle order: matches, then included resources, then the outcome.
struct Entries<'p, 'a>(&'p Searchset<'a>);

impl Serialize for Entries<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let parts = self.0;
        let mut seq = serializer.serialize_seq(Some(parts.entry_count()))?;
        let resources = parts
            .matches
            .iter()
            .map(|r| (r, "match"))
            .chain(parts.included.iter().map(|r| (r, "include")));
        for (resource, mode) in resources {
            seq.serialize_element(&Entry {
                full_url: Some(full_url(parts.base_url, resource)),
                resource,
                search: SearchMode { mode },
            })?;
        }
        if let Some(outcome) = &parts.outcome {
            seq.serialize_element(&Entry {
                full_url: None,
                resource: outcome,
                search: SearchMode { mode: "outcome" },
            })?;
        }
        seq.end()
    }
}

impl Searchset<'_> {
    fn entry_count(&self) -> usize {
        self.matches.len() + self.included.len() + usize::from(self.outcome.is_some())
    }
}

impl Serialize for Searchset<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("resourceType", "Bundle")?;
        map.serialize_entry(
            "meta",
            &Meta {
                last_updated: &self.timestamp,
            },
        )?;
        map.serialize_entry("type", "searchset")?;
        if let Some(total) = self.total {
            map.serialize_entry("total", &total)?;
        }
        let mut links = vec![Link {
            relation: "self",
            url: &self.self_url,
        }];
        if let Some(next) = &self.next_url {
            links.push(Link {
                relation: "next",
                url: next,
            });
        }
        map.serialize_entry("link", &links)?;
        if self.entry_count() > 0 {
            map.serialize_entry("entry", &Entries(self))?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn entries_keep_their_order_modes_and_full_urls() {
        let parts = Searchset {
            base_url: "https://example.org/fhir/",
            self_url: "https://example.org/fhir/Patient?family=Smi".into(),
            next_url: Some("https://example.org/fhir/Patient?_cursor=x".into()),
            total: Some(7),
            matches: vec![Tree::Json(json!({"resourceType": "Patient", "id": "1"}))],
            included: vec![Tree::Json(
                json!({"resourceType": "Practitioner", "id": "p"}),
            )],
            outcome: Some(json!({"resourceType": "OperationOutcome", "issue": []})),
            timestamp: "2026-12-06T00:00:00Z".into(),
        };
        let bundle = serde_json::to_value(&parts).unwrap();
        assert_eq!(
            bundle,
            json!({
                "resourceType": "Bundle",
                "meta": {"lastUpdated": "2026-12-06T00:00:00Z"},
                "type": "searchset",
                "total": 7,
                "link": [
                    {"relation": "self", "url": "https://example.org/fhir/Patient?family=Smi"},
                    {"relation": "next", "url": "https://example.org/fhir/Patient?_cursor=x"},
                ],
                "entry": [
                    {
                        "fullUrl": "https://example.org/fhir/Patient/1",
                        "resource": {"resourceType": "Patient", "id": "1"},
                        "search": {"mode": "match"},
                    },
                    {
                        "fullUrl": "https://example.org/fhir/Practitioner/p",
                        "resource": {"resourceType": "Practitioner", "id": "p"},
                        "search": {"mode": "include"},
                    },
                    {
                        "resource": {"resourceType": "OperationOutcome", "issue": []},
                        "search": {"mode": "outcome"},
                    },
                ],
            })
        );
        // Written in that order, resourceType first.
        let text = serde_json::to_string(&parts).unwrap();
        assert!(text.starts_with(r#"{"resourceType":"Bundle","meta":"#));
        let empty = Searchset {
            matches: Vec::new(),
            included: Vec::new(),
            outcome: None,
            total: None,
            next_url: None,
            ..parts
        };
        assert!(serde_json::to_value(&empty).unwrap().get("entry").is_none());
    }
}
