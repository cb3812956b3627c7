//! The CapabilityStatement: `capability-statement.json` (what Portico is) merged with what the
//! active adapter maps (resource types, search parameters, includes, profiles). The same adapter
//! data decides what requests may use, so what is advertised is what works.

use serde_json::{Value as Json, json};

use crate::adapter::Adapter;
use crate::adapter::format::SearchType;

/// The base statement shipped with Portico.
pub const BASE_STATEMENT: &str = include_str!("../../capability-statement.json");

fn type_code(kind: SearchType) -> &'static str {
    match kind {
        SearchType::String => "string",
        SearchType::Token => "token",
        SearchType::Date => "date",
        SearchType::Reference => "reference",
    }
}

/// Builds the statement for `adapter`. `base` is the parsed base statement.
pub fn capability_statement(base: &Json, adapter: &Adapter, base_url: &str, date: &str) -> Json {
    let mut statement = base.clone();
    statement["date"] = json!(date);
    statement["implementation"] = json!({
        "description": format!("Portico over {} ({})", adapter.title, adapter.name),
        "url": base_url,
    });
    let mut resources = Vec::new();
    for def in adapter.resources.values() {
        let mut params =
            vec![json!({"name": "_id", "type": "token", "documentation": "Logical id"})];
        if def.mappings.iter().any(|m| m.last_updated.is_some()) {
            params.push(json!({"name": "_lastUpdated", "type": "date", "documentation": "meta.lastUpdated, from the legacy row's update time"}));
        }
        for (name, info) in &def.search {
            let mut param = json!({"name": name, "type": type_code(info.kind)});
            if !info.description.is_empty() {
                param["documentation"] = json!(info.description);
            }
            params.push(param);
        }
        let includes: Vec<Json> = def
            .search
            .iter()
            .filter(|(_, info)| info.kind == SearchType::Reference)
            .flat_map(|(name, info)| {
                info.targets
                    .iter()
                    .filter(|t| adapter.resources.contains_key(*t))
                    .map(move |t| json!(format!("{}:{}:{}", def.resource_type, name, t)))
            })
            .collect();
        let revincludes: Vec<Json> = def
            .revincludes
            .iter()
            .map(|(source, param)| json!(format!("{source}:{param}")))
            .collect();
        let mut resource = json!({
            "type": def.resource_type,
            "interaction": [{"code": "read"}, {"code": "search-type"}],
            "versioning": "no-version",
            "readHistory": false,
            "updateCreate": false,
            "conditionalRead": "full-support",
        });
        // FHIR JSON forbids empty arrays.
        if !includes.is_empty() {
            resource["searchInclude"] = Json::Array(includes);
        }
        if !revincludes.is_empty() {
            resource["searchRevInclude"] = Json::Array(revincludes);
        }
        resource["searchParam"] = Json::Array(params);
        if !def.profiles.is_empty() {
            resource["supportedProfile"] = json!(def.profiles);
        }
        resources.push(resource);
    }
    if let Some(rest) = statement["rest"].get_mut(0) {
        rest["resource"] = Json::Array(resources);
    }
    statement
}
