//! Searchset Bundles: entries with absolute fullUrls and search modes, self and next links.

use serde_json::{Value as Json, json};

pub struct SearchsetParts<'a> {
    pub base_url: &'a str,
    pub self_url: String,
    pub next_url: Option<String>,
    pub total: Option<u64>,
    pub matches: Vec<Json>,
    pub included: Vec<Json>,
    pub outcome: Option<Json>,
    pub timestamp: String,
}

/// `Type/id` resolved against the base URL.
pub fn full_url(base_url: &str, resource: &Json) -> String {
    format!(
        "{}/{}/{}",
        base_url.trim_end_matches('/'),
        resource["resourceType"].as_str().unwrap_or_default(),
        resource["id"].as_str().unwrap_or_default()
    )
}

pub fn searchset(parts: SearchsetParts<'_>) -> Json {
    let mut links = vec![json!({"relation": "self", "url": parts.self_url})];
    if let Some(next) = parts.next_url {
        links.push(json!({"relation": "next", "url": next}));
    }
    let entry = |resource: Json, mode: &str| {
        json!({
            "fullUrl": full_url(parts.base_url, &resource),
            "resource": resource,
            "search": {"mode": mode},
        })
    };
    let mut entries: Vec<Json> = parts
        .matches
        .into_iter()
        .map(|r| entry(r, "match"))
        .collect();
    entries.extend(parts.included.into_iter().map(|r| entry(r, "include")));
    if let Some(outcome) = parts.outcome {
        entries.push(json!({"resource": outcome, "search": {"mode": "outcome"}}));
    }
    let mut bundle = json!({
        "resourceType": "Bundle",
        "meta": {"lastUpdated": parts.timestamp},
        "type": "searchset",
    });
    if let Some(total) = parts.total {
        bundle["total"] = json!(total);
    }
    bundle["link"] = Json::Array(links);
    if !entries.is_empty() {
        bundle["entry"] = Json::Array(entries);
    }
    bundle
}
