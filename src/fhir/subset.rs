//! `_summary` and `_elements`: returning part of a resource, marked SUBSETTED (R4-07, R4-39, R4-40).

use serde_json::{Map, Value as Json, json};

/// Elements every subset keeps.
const ALWAYS_KEPT: &[&str] = &["resourceType", "id", "meta"];

/// Summary elements (`isSummary` in the R4 definitions) of the resource types adapters map.
fn summary_elements(resource_type: &str) -> &'static [&'static str] {
    match resource_type {
        "Patient" => &[
            "identifier",
            "active",
            "name",
            "telecom",
            "gender",
            "birthDate",
            "deceasedBoolean",
            "deceasedDateTime",
            "address",
            "managingOrganization",
            "link",
        ],
        "Practitioner" => &[
            "identifier",
            "active",
            "name",
            "telecom",
            "address",
            "gender",
            "birthDate",
        ],
        "Organization" => &[
            "identifier",
            "active",
            "type",
            "name",
            "alias",
            "address",
            "partOf",
            "endpoint",
        ],
        "Location" => &[
            "identifier",
            "status",
            "operationalStatus",
            "name",
            "alias",
            "mode",
            "type",
            "telecom",
            "address",
            "physicalType",
            "managingOrganization",
            "partOf",
            "endpoint",
        ],
        "Appointment" => &[
            "identifier",
            "status",
            "cancelationReason",
            "serviceCategory",
            "serviceType",
            "specialty",
            "appointmentType",
            "reasonCode",
            "reasonReference",
            "priority",
            "description",
            "start",
            "end",
            "minutesDuration",
            "slot",
            "created",
            "participant",
            "requestedPeriod",
        ],
        "Observation" => &[
            "identifier",
            "basedOn",
            "partOf",
            "status",
            "category",
            "code",
            "subject",
            "focus",
            "encounter",
            "effectiveDateTime",
            "effectivePeriod",
            "effectiveInstant",
            "issued",
            "performer",
            "valueQuantity",
            "valueCodeableConcept",
            "valueString",
            "valueBoolean",
            "valueInteger",
            "valueRange",
            "valueRatio",
            "valueSampledData",
            "valueTime",
            "valueDateTime",
            "valuePeriod",
            "hasMember",
            "derivedFrom",
        ],
        "Encounter" => &[
            "identifier",
            "status",
            "class",
            "type",
            "serviceType",
            "priority",
            "subject",
            "episodeOfCare",
            "basedOn",
            "participant",
            "appointment",
            "period",
            "length",
            "reasonCode",
            "reasonReference",
            "diagnosis",
            "account",
            "location",
            "serviceProvider",
            "partOf",
        ],
        "Coverage" => &[
            "identifier",
            "status",
            "type",
            "policyHolder",
            "subscriber",
            "subscriberId",
            "beneficiary",
            "dependent",
            "relationship",
            "period",
            "payor",
            "class",
            "order",
            "network",
            "subrogation",
            "contract",
        ],
        "Claim" => &[
            "identifier",
            "status",
            "type",
            "use",
            "patient",
            "billablePeriod",
            "created",
            "provider",
            "priority",
            "insurance",
            "total",
        ],
        _ => &[],
    }
}

/// Elements that are mandatory (min 1) or modifiers, which `_elements` keeps whatever is asked.
fn mandatory_elements(resource_type: &str) -> &'static [&'static str] {
    match resource_type {
        "Observation" => &["status", "code"],
        "Appointment" => &["status", "participant"],
        "Coverage" => &["status", "beneficiary", "payor"],
        "Claim" => &[
            "status",
            "type",
            "use",
            "patient",
            "created",
            "provider",
            "priority",
            "insurance",
        ],
        "Encounter" => &["status", "class"],
        "Patient" | "Practitioner" | "Organization" | "Location" => &["active", "status"],
        _ => &[],
    }
}

fn mark_subsetted(resource: &mut Map<String, Json>) {
    let meta = resource.entry("meta").or_insert_with(|| json!({}));
    if let Some(meta) = meta.as_object_mut() {
        let tags = meta.entry("tag").or_insert_with(|| json!([]));
        if let Some(tags) = tags.as_array_mut() {
            tags.push(json!({
                "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
                "code": "SUBSETTED",
                "display": "subsetted",
            }));
        }
    }
}

fn keep_only(resource: &mut Json, keep: &dyn Fn(&str) -> bool) {
    if let Some(object) = resource.as_object_mut() {
        object.retain(|key, _| ALWAYS_KEPT.contains(&key.as_str()) || keep(key));
        mark_subsetted(object);
    }
}

/// `_summary=true`: summary elements only.
pub fn summary(resource: &mut Json) {
    let resource_type = resource["resourceType"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let elements = summary_elements(&resource_type);
    keep_only(resource, &|key| elements.contains(&key));
}

/// `_summary=data`: everything but the narrative (Portico emits none, so nothing changes).
pub fn data(resource: &mut Json) {
    if let Some(object) = resource.as_object_mut()
        && object.remove("text").is_some()
    {
        mark_subsetted(object);
    }
}

/// `_elements=a,b`: the named top-level elements plus mandatory ones.
pub fn elements(resource: &mut Json, names: &[String]) {
    let resource_type = resource["resourceType"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mandatory = mandatory_elements(&resource_type);
    keep_only(resource, &|key| {
        mandatory.contains(&key)
            || names.iter().any(|name| {
                name == key || (key.starts_with(name.as_str()) && is_choice_of(key, name))
            })
    });
}

/// `valueQuantity` is the `value` choice element; `_elements=value` keeps it.
fn is_choice_of(key: &str, name: &str) -> bool {
    key.len() > name.len() && key[name.len()..].starts_with(|c: char| c.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_keep_named_mandatory_and_choice_elements() {
        let mut observation = json!({
            "resourceType": "Observation", "id": "1", "status": "final", "code": {"text": "x"},
            "valueQuantity": {"value": 1}, "subject": {"reference": "Patient/1"}, "note": [{"text": "n"}]
        });
        elements(&mut observation, &["value".into()]);
        let keys: Vec<&String> = observation.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            vec![
                "resourceType",
                "id",
                "status",
                "code",
                "valueQuantity",
                "meta"
            ]
        );
        assert_eq!(observation["meta"]["tag"][0]["code"], "SUBSETTED");
    }

    #[test]
    fn summary_drops_non_summary_elements() {
        let mut patient = json!({"resourceType": "Patient", "id": "1", "name": [{"family": "X"}], "maritalStatus": {"text": "M"}});
        summary(&mut patient);
        assert!(patient.get("maritalStatus").is_none());
        assert!(patient.get("name").is_some());
    }
}
