//! The CapabilityStatement: `capability-statement.json` (what Portico is) merged with what the
//! active adapter maps (resource types, search parameters, includes, profiles). The same adapter
//! data decides what requests may use, so what is advertised is what works. The security part
//! (SMART on FHIR, with the authorization endpoints) comes from `auth::discovery`.

use serde_json::{Value as Json, json};

use crate::adapter::Adapter;
use crate::adapter::format::SearchType;
use crate::adapter::model::{ResourceDef, Topic};
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

/// Groups' entry: Portico's own cohorts (for `/Group/[id]/$export`), served from its state store
/// (`api::groups`) whatever the adapter, with the search parameters that module parses.
fn group_resource() -> Json {
    let params: Vec<Json> = crate::api::groups::SEARCH_PARAMS
        .iter()
        .map(|param| json!({"name": param.name, "type": param.kind, "documentation": param.documentation}))
        .collect();
    json!({
        "type": crate::state::groups::GROUP,
        "documentation": "Portico's own groups of patients (type person): member lists (actual) or \
            one criterion (not actual: a general practitioner, an appointment location, an \
            appointment period), defined by the operator with `portico groups`; for \
            /Group/[id]/$export. Needs system/Group.rs (or system/*.rs), or user/Group.rs of a \
            clinician or an admin user; never a token limited to a patient.",
        "interaction": [{"code": "read"}, {"code": "search-type"}],
        "versioning": "no-version",
        "readHistory": false,
        "updateCreate": false,
        "searchParam": params,
        "operation": export_operation(GROUP_EXPORT_OPERATION),
    })
}

/// The Bulk Data Access IG's server statement and its three export operations (BD-01).
pub const BULK_DATA_STATEMENT: &str =
    "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data";
const EXPORT_OPERATION: &str = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export";
const PATIENT_EXPORT_OPERATION: &str =
    "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export";
const GROUP_EXPORT_OPERATION: &str =
    "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export";

/// The `operation` list of one export operation.
fn export_operation(definition: &str) -> Json {
    json!([{"name": "export", "definition": definition}])
}

/// The server statement of the Subscriptions Backport IG for R4, which Portico instantiates when
/// it offers topics (SB-04).
pub const BACKPORT_SERVER_STATEMENT: &str = "http://hl7.org/fhir/uv/subscriptions-backport/CapabilityStatement/backport-subscription-server-r4";
/// Lists one topic a server supports, on its Subscription entry (SB-05).
pub const TOPIC_CANONICAL_EXTENSION: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/capabilitystatement-subscriptiontopic-canonical";
const STATUS_OPERATION: &str = "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-status";
const EVENTS_OPERATION: &str = "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-events";
const WS_BINDING_TOKEN_OPERATION: &str = "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-get-ws-binding-token";

/// The subscriptions' entry (SB-01, SB-04, SB-05): kept in Portico's state store whatever the
/// adapter, offered when the adapter has topics, one topic-canonical extension per topic.
fn subscription_resource(topics: &[Topic]) -> Json {
    let topic_extensions: Vec<Json> = topics
        .iter()
        .map(|topic| json!({"url": TOPIC_CANONICAL_EXTENSION, "valueCanonical": topic.url}))
        .collect();
    json!({
        "extension": topic_extensions,
        "type": "Subscription",
        "supportedProfile": [crate::subscriptions::resource::BACKPORT_SUBSCRIPTION_PROFILE],
        "documentation": "Topic-based subscriptions (Subscriptions R5 Backport IG for R4) to the \
            topics listed in this entry's extensions, and classic criteria subscriptions; kept in \
            Portico's state store. Channels: rest-hook, websocket (a binding token from \
            $get-ws-binding-token) and HL7 v2 over MLLP.",
        "interaction": [
            {"code": "read"},
            {"code": "update"},
            {"code": "delete"},
            {"code": "create"},
            {"code": "search-type"},
        ],
        "versioning": "versioned",
        "readHistory": false,
        "updateCreate": false,
        "searchParam": [
            {"name": "_id", "type": "token", "documentation": "Logical id"},
            {"name": "url", "type": "uri", "documentation": "Subscription.channel.endpoint"},
            {"name": "status", "type": "token", "documentation": "Subscription.status"},
        ],
        "operation": [
            {"name": "status", "definition": STATUS_OPERATION},
            {"name": "events", "definition": EVENTS_OPERATION},
            {"name": "get-ws-binding-token", "definition": WS_BINDING_TOKEN_OPERATION},
        ],
    })
}

/// Puts `entry` among `resources`, which are in type order.
fn insert_in_type_order(resources: &mut Vec<Json>, entry: Json) {
    let at = resources
        .iter()
        .position(|r| r["type"].as_str() > entry["type"].as_str())
        .unwrap_or(resources.len());
    resources.insert(at, entry);
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
        if def.resource_type == "Patient" {
            resource["operation"] = export_operation(PATIENT_EXPORT_OPERATION);
        }
        resources.push(resource);
    }
    insert_in_type_order(&mut resources, audit_event_resource());
    insert_in_type_order(&mut resources, group_resource());
    let mut instantiates = vec![json!(BULK_DATA_STATEMENT)];
    if !adapter.topics.is_empty() {
        insert_in_type_order(&mut resources, subscription_resource(&adapter.topics));
        instantiates.push(json!(BACKPORT_SERVER_STATEMENT));
    }
    statement["instantiates"] = Json::Array(instantiates);
    if let Some(rest) = statement["rest"].get_mut(0).and_then(Json::as_object_mut) {
        // R4 orders `security` before `resource`, and `operation` after `interaction`.
        rest.remove("resource");
        rest.insert("security".into(), capability_security(base_url, external));
        rest.insert("resource".into(), Json::Array(resources));
        rest.insert("operation".into(), export_operation(EXPORT_OPERATION));
    }
    statement
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::adapter::model::{ChangeKind, TOPIC_URL_PREFIX};

    fn openemr() -> Adapter {
        crate::adapter::load(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("adapters/openemr"))
            .unwrap_or_else(|issues| panic!("{issues:#?}"))
    }

    fn topic(slug: &str, resource_type: &str) -> Topic {
        Topic {
            slug: slug.into(),
            url: format!("{TOPIC_URL_PREFIX}{slug}"),
            title: slug.into(),
            description: String::new(),
            resource_type: resource_type.into(),
            mappings: vec![resource_type.into()],
            on: vec![ChangeKind::Create],
            changed: Vec::new(),
            became: None,
            filters: vec!["patient".into()],
        }
    }

    fn statement(adapter: &Adapter) -> Json {
        let base: Json = serde_json::from_str(BASE_STATEMENT).expect("the base statement");
        capability_statement(
            &base,
            adapter,
            "https://portico.example/fhir",
            "2026-12-02",
            None,
        )
    }

    fn subscription_entry(statement: &Json) -> Option<&Json> {
        statement["rest"][0]["resource"]
            .as_array()
            .expect("resources")
            .iter()
            .find(|r| r["type"] == "Subscription")
    }

    #[test]
    fn without_topics_no_subscription_is_offered() {
        let mut adapter = openemr();
        adapter.topics.clear();
        let statement = statement(&adapter);
        assert!(subscription_entry(&statement).is_none());
        assert_eq!(statement["instantiates"], json!([BULK_DATA_STATEMENT]));
    }

    #[test]
    fn topics_offer_backport_subscriptions() {
        let mut adapter = openemr();
        adapter.topics = vec![
            topic("appointment-booked", "Appointment"),
            topic("patient-registered", "Patient"),
        ];
        let statement = statement(&adapter);
        let bytes = serde_json::to_vec(&statement).expect("serializes");
        crate::fhir::xml::parse_strict(&bytes)
            .unwrap_or_else(|error| panic!("not valid R4 ({error}):\n{statement:#}"));
        // SB-04: the server statement it instantiates, and the profile.
        assert_eq!(
            statement["instantiates"],
            json!([BULK_DATA_STATEMENT, BACKPORT_SERVER_STATEMENT])
        );
        // BD-01: the three export operations, at the system, on Patient and on Group.
        assert_eq!(
            statement["rest"][0]["operation"],
            export_operation(EXPORT_OPERATION)
        );
        let on = |resource_type: &str| {
            statement["rest"][0]["resource"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["type"] == resource_type)
                .unwrap()["operation"]
                .clone()
        };
        assert_eq!(on("Patient"), export_operation(PATIENT_EXPORT_OPERATION));
        assert_eq!(on("Group"), export_operation(GROUP_EXPORT_OPERATION));
        let entry = subscription_entry(&statement).expect("a Subscription entry");
        assert_eq!(
            entry["supportedProfile"],
            json!([crate::subscriptions::resource::BACKPORT_SUBSCRIPTION_PROFILE])
        );
        // SB-05: one topic canonical per topic.
        let topics: Vec<&str> = entry["extension"]
            .as_array()
            .expect("extensions")
            .iter()
            .filter(|e| e["url"] == TOPIC_CANONICAL_EXTENSION)
            .filter_map(|e| e["valueCanonical"].as_str())
            .collect();
        assert_eq!(
            topics,
            [
                "https://portico.health/fhir/SubscriptionTopic/appointment-booked",
                "https://portico.health/fhir/SubscriptionTopic/patient-registered",
            ]
        );
        let interactions: Vec<&str> = entry["interaction"]
            .as_array()
            .expect("interactions")
            .iter()
            .filter_map(|i| i["code"].as_str())
            .collect();
        assert_eq!(
            interactions,
            ["read", "update", "delete", "create", "search-type"]
        );
        let params: Vec<&str> = entry["searchParam"]
            .as_array()
            .expect("parameters")
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(params, ["_id", "url", "status"]);
        // SB-02, SB-30 and SB-31.
        assert_eq!(entry["operation"][0]["definition"], STATUS_OPERATION);
        assert_eq!(entry["operation"][1]["definition"], EVENTS_OPERATION);
        assert_eq!(
            entry["operation"][2]["definition"],
            WS_BINDING_TOKEN_OPERATION
        );
        // Kept in type order, after the adapter's types and the audit trail.
        let types: Vec<&str> = statement["rest"][0]["resource"]
            .as_array()
            .expect("resources")
            .iter()
            .filter_map(|r| r["type"].as_str())
            .collect();
        let mut sorted = types.clone();
        sorted.sort_unstable();
        assert_eq!(types, sorted);
    }
}
