//! The CapabilityStatement: `capability-statement.json` (what Portico is) merged with what the
//! active adapter maps (resource types, search parameters, includes, profiles). The same adapter
//! data decides what requests may use, so what is advertised is what works. The security part
//! (SMART on FHIR, with the authorization endpoints) comes from `auth::discovery`.

use serde_json::{Value as Json, json};

use crate::adapter::Adapter;
use crate::adapter::format::SearchType;
use crate::adapter::model::ResourceDef;
use crate::auth::discovery::capability_security;
use crate::auth::external::ExternalIdp;

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

/// A search parameter the server answers for one type, as advertised: the CapabilityStatement's
/// `searchParam` and the OpenAPI document's query parameters both come from here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvertisedParam {
    pub name: String,
    /// The FHIR search parameter type: string, token, date or reference.
    pub kind: &'static str,
    pub documentation: Option<String>,
}

/// The search parameters of `def`: `_id`, `_lastUpdated` where a mapping has an update time, then
/// the adapter's parameters by name.
pub fn search_params(def: &ResourceDef) -> Vec<AdvertisedParam> {
    let mut params = vec![AdvertisedParam {
        name: "_id".into(),
        kind: "token",
        documentation: Some("Logical id".into()),
    }];
    if def.mappings.iter().any(|m| m.last_updated.is_some()) {
        params.push(AdvertisedParam {
            name: "_lastUpdated".into(),
            kind: "date",
            documentation: Some("meta.lastUpdated, from the legacy row's update time".into()),
        });
    }
    for (name, info) in &def.search {
        params.push(AdvertisedParam {
            name: name.clone(),
            kind: type_code(info.kind),
            documentation: (!info.description.is_empty()).then(|| info.description.clone()),
        });
    }
    params
}

/// `_include` values of `def` (`Type:param:Target`) for reference parameters to served types.
pub fn search_includes(adapter: &Adapter, def: &ResourceDef) -> Vec<String> {
    def.search
        .iter()
        .filter(|(_, info)| info.kind == SearchType::Reference)
        .flat_map(|(name, info)| {
            info.targets
                .iter()
                .filter(|t| adapter.resources.contains_key(*t))
                .map(move |t| format!("{}:{}:{}", def.resource_type, name, t))
        })
        .collect()
}

/// `_revinclude` values of `def` (`SourceType:param`).
pub fn search_revincludes(def: &ResourceDef) -> Vec<String> {
    def.revincludes
        .iter()
        .map(|(source, param)| format!("{source}:{param}"))
        .collect()
}

/// The audit trail's entry: served from Portico's state store (`api::audit`) whatever the adapter,
/// with the search parameters that module parses (the OpenAPI document lists the same).
fn audit_event_resource() -> Json {
    let params: Vec<Json> = crate::api::audit::SEARCH_PARAMS
        .iter()
        .map(|param| json!({"name": param.name, "type": param.kind, "documentation": param.documentation}))
        .collect();
    json!({
        "type": crate::state::audit::AUDIT_EVENT,
        "documentation": "Portico's audit trail: one event per FHIR data request or refusal, newest \
            first. Needs system/AuditEvent.rs (or system/*.rs), or user/AuditEvent.rs of an admin user.",
        "interaction": [{"code": "read"}, {"code": "search-type"}],
        "versioning": "no-version",
        "readHistory": false,
        "updateCreate": false,
        "searchParam": params,
    })
}

/// Builds the statement for `adapter`. `base` is the parsed base statement; `external` is the
/// identity provider whose tokens the server accepts, if not its own.
pub fn capability_statement(
    base: &Json,
    adapter: &Adapter,
    base_url: &str,
    date: &str,
    external: Option<&ExternalIdp>,
) -> Json {
    let mut statement = base.clone();
    statement["date"] = json!(date);
    statement["implementation"] = json!({
        "description": format!("Portico over {} ({})", adapter.title, adapter.name),
        "url": base_url,
    });
    let mut resources = Vec::new();
    for def in adapter.resources.values() {
        let params: Vec<Json> = search_params(def)
            .into_iter()
            .map(|param| {
                let mut entry = json!({"name": param.name, "type": param.kind});
                if let Some(documentation) = param.documentation {
                    entry["documentation"] = json!(documentation);
                }
                entry
            })
            .collect();
        let includes = search_includes(adapter, def);
        let revincludes = search_revincludes(def);
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
            resource["searchInclude"] = json!(includes);
        }
        if !revincludes.is_empty() {
            resource["searchRevInclude"] = json!(revincludes);
        }
        resource["searchParam"] = Json::Array(params);
        if !def.profiles.is_empty() {
            resource["supportedProfile"] = json!(def.profiles);
        }
        resources.push(resource);
    }
    let audit = audit_event_resource();
    let at = resources
        .iter()
        .position(|r| r["type"].as_str() > audit["type"].as_str())
        .unwrap_or(resources.len());
    resources.insert(at, audit);
    if let Some(rest) = statement["rest"].get_mut(0).and_then(Json::as_object_mut) {
        // R4 orders `security` before `resource`.
        rest.remove("resource");
        rest.insert("security".into(), capability_security(base_url, external));
        rest.insert("resource".into(), Json::Array(resources));
    }
    statement
}
