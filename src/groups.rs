//! Portico's own Groups as FHIR and as patients: `resource` turns a stored group
//! (`state::groups`) into an R4 Group, and `members` resolves the Patient ids a group stands for
//! (what `/Group/[id]/$export` exports): a member list as stored, a criterion through the
//! adapter's searches, paged to the end, never through SQL of its own.
//!
//! Architecture invariant: like every PMS read, member resolution goes through `Repository`;
//! a criterion needs only search parameters the adapter declares, and says which one it lacks.

use std::collections::BTreeSet;

use chrono::{DateTime, SecondsFormat};
use serde_json::{Value as Json, json};

use crate::access::Access;
use crate::db::DbError;
use crate::repository::Repository;
use crate::search::compile::plan;
use crate::search::parse::{MAX_COUNT, parse};
use crate::state::groups::{GROUP, GroupCriterion, GroupDefinition, StoredGroup};

/// The code system of `Group.characteristic.code`: how Portico's criteria groups are defined.
pub const CRITERION_SYSTEM: &str = "https://portico.health/fhir/CodeSystem/group-criterion";

/// Why a group's members could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum MembersError {
    #[error(
        "the adapter {adapter} does not serve {resource_type}, which this group's criterion searches"
    )]
    TypeNotServed {
        adapter: String,
        resource_type: &'static str,
    },
    #[error(
        "the adapter {adapter} does not support the {resource_type} search parameter \
         {parameter}, which this group's criterion needs"
    )]
    ParameterNotSupported {
        adapter: String,
        resource_type: &'static str,
        parameter: &'static str,
    },
    #[error("this group's criterion does not make a valid {resource_type} search: {reason}")]
    Invalid {
        resource_type: &'static str,
        reason: String,
    },
    #[error("the practice database: {0}")]
    Database(#[from] DbError),
}

/// The FHIR Patient ids of `group`'s members. A member list comes back as stored (patients the
/// PMS no longer has stay listed: an export finds no data for them); a criterion is resolved now,
/// through the adapter's searches, as the operator sees the PMS (every patient; whoever exports
/// applies their own access to what they read of each member), each id once, sorted:
/// - general practitioner: `Patient?general-practitioner=Practitioner/<id>`;
/// - appointment location: `Appointment?location=Location/<id>`, each appointment's Patient
///   participants;
/// - appointment period: `Appointment?date=ge<start>&date=le<end>`, the same.
///
/// Rows the adapter leaves out (not valid R4) are not searched into members.
pub async fn members(
    repository: &Repository,
    group: &StoredGroup,
) -> Result<Vec<String>, MembersError> {
    let criterion = match &group.definition {
        GroupDefinition::Members(patients) => return Ok(patients.clone()),
        GroupDefinition::Criterion(criterion) => criterion,
    };
    let (resource_type, filter): (&'static str, Vec<(&'static str, String)>) = match criterion {
        GroupCriterion::GeneralPractitioner(practitioner) => (
            "Patient",
            vec![(
                "general-practitioner",
                format!("Practitioner/{practitioner}"),
            )],
        ),
        GroupCriterion::AppointmentLocation(location) => (
            "Appointment",
            vec![("location", format!("Location/{location}"))],
        ),
        GroupCriterion::AppointmentPeriod { start, end } => (
            "Appointment",
            vec![
                ("date", format!("ge{}", start.format("%Y-%m-%d"))),
                ("date", format!("le{}", end.format("%Y-%m-%d"))),
            ],
        ),
    };
    let resources = search_all(repository, resource_type, &filter).await?;
    let ids: BTreeSet<String> = if resource_type == "Patient" {
        resources
            .iter()
            .filter_map(|patient| patient["id"].as_str().map(str::to_owned))
            .collect()
    } else {
        resources
            .iter()
            .flat_map(|appointment| appointment["participant"].as_array().into_iter().flatten())
            .filter_map(|participant| participant["actor"]["reference"].as_str())
            .filter_map(patient_id)
            .map(str::to_owned)
            .collect()
    };
    Ok(ids.into_iter().collect())
}

/// Every `resource_type` the adapter serves matching `filter`, page after page, under an access
/// that sees everything. An unsupported parameter is an error naming it, never left out (which
/// would widen the group to every patient).
async fn search_all(
    repository: &Repository,
    resource_type: &'static str,
    filter: &[(&'static str, String)],
) -> Result<Vec<Json>, MembersError> {
    let adapter = &repository.adapter;
    let def = adapter
        .resources
        .get(resource_type)
        .ok_or_else(|| MembersError::TypeNotServed {
            adapter: adapter.name.clone(),
            resource_type,
        })?;
    if let Some((parameter, _)) = filter
        .iter()
        .find(|(parameter, _)| !def.search.contains_key(*parameter))
    {
        return Err(MembersError::ParameterNotSupported {
            adapter: adapter.name.clone(),
            resource_type,
            parameter,
        });
    }
    let invalid = |errors: Vec<crate::search::SearchError>| MembersError::Invalid {
        resource_type,
        reason: errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "),
    };
    let mut pairs: Vec<(String, String)> = filter
        .iter()
        .map(|(name, value)| ((*name).to_owned(), value.clone()))
        .collect();
    pairs.push(("_count".to_owned(), MAX_COUNT.to_string()));
    let request = parse(&pairs).map_err(invalid)?;
    let now = chrono::Utc::now()
        .with_timezone(&adapter.timezone)
        .naive_local();
    // Strict: a parameter the compiler would ignore must stop the resolution instead.
    let plan = plan(
        def,
        &adapter.resources,
        request,
        true,
        adapter.timezone,
        now,
    )
    .map_err(invalid)?;
    let access = Access::everything();
    let mut found = Vec::new();
    let mut after = None;
    loop {
        let page = repository
            .search(&plan, after.as_ref(), &access, false)
            .await?;
        found.extend(
            page.matches
                .into_iter()
                .map(|loaded| loaded.resource.resource.into_json()),
        );
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(found),
        }
    }
}

/// The id in `Patient/<id>` or `<base>/Patient/<id>`.
fn patient_id(reference: &str) -> Option<&str> {
    let (before, id) = reference.rsplit_once('/')?;
    let is_patient = before == "Patient" || before.ends_with("/Patient");
    (is_patient && crate::fhir::is_fhir_id(id)).then_some(id)
}

/// `group` as an R4 Group: a `person` group, `actual` with `member` and `quantity` for a member
/// list, or not `actual` with one `characteristic` describing its criterion.
pub fn resource(group: &StoredGroup) -> Json {
    let mut resource = json!({
        "resourceType": GROUP,
        "id": group.id,
        "meta": {"lastUpdated": instant(group.updated_ms)},
    });
    if let Some(identifier) = &group.identifier {
        let mut entry = json!({"value": identifier.value});
        if let Some(system) = &identifier.system {
            entry["system"] = json!(system);
        }
        resource["identifier"] = json!([entry]);
    }
    resource["type"] = json!("person");
    resource["actual"] = json!(matches!(group.definition, GroupDefinition::Members(_)));
    resource["name"] = json!(group.name);
    match &group.definition {
        GroupDefinition::Members(patients) => {
            resource["quantity"] = json!(patients.len());
            let members: Vec<Json> = patients
                .iter()
                .map(|patient| json!({"entity": {"reference": format!("Patient/{patient}")}}))
                .collect();
            // FHIR JSON has no empty arrays.
            if !members.is_empty() {
                resource["member"] = Json::Array(members);
            }
        }
        GroupDefinition::Criterion(criterion) => {
            resource["characteristic"] = json!([characteristic(criterion)]);
        }
    }
    resource
}

/// One `Group.characteristic` for `criterion`. R4's `value[x]` has no Period, so a period is
/// `valueBoolean: true` over `period` (the characteristic holds within it).
fn characteristic(criterion: &GroupCriterion) -> Json {
    let code = |display: &str, text: &str| {
        json!({
            "coding": [{"system": CRITERION_SYSTEM, "code": criterion.kind(), "display": display}],
            "text": text,
        })
    };
    match criterion {
        GroupCriterion::GeneralPractitioner(practitioner) => json!({
            "code": code(
                "General practitioner",
                "Patients whose general practitioner is this Practitioner",
            ),
            "valueReference": {"reference": format!("Practitioner/{practitioner}")},
            "exclude": false,
        }),
        GroupCriterion::AppointmentLocation(location) => json!({
            "code": code(
                "Appointment location",
                "Patients with an appointment at this Location",
            ),
            "valueReference": {"reference": format!("Location/{location}")},
            "exclude": false,
        }),
        GroupCriterion::AppointmentPeriod { start, end } => json!({
            "code": code(
                "Appointment in period",
                "Patients with an appointment in this period (both days included)",
            ),
            "valueBoolean": true,
            "exclude": false,
            "period": {
                "start": start.format("%Y-%m-%d").to_string(),
                "end": end.format("%Y-%m-%d").to_string(),
            },
        }),
    }
}

/// Milliseconds since the Unix epoch as a FHIR instant (UTC).
fn instant(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;
    use crate::state::groups::GroupIdentifier;

    fn stored(definition: GroupDefinition, identifier: Option<GroupIdentifier>) -> StoredGroup {
        StoredGroup {
            id: "diabetes-2024".into(),
            name: "Diabetes follow-up".into(),
            identifier,
            definition,
            created_ms: 1_767_225_600_000,
            updated_ms: 1_767_225_600_123,
        }
    }

    fn assert_valid_r4(resource: &Json) {
        let bytes = serde_json::to_vec(resource).unwrap();
        crate::fhir::xml::parse_strict(&bytes)
            .unwrap_or_else(|error| panic!("not valid R4 ({error}):\n{resource:#}"));
    }

    #[test]
    fn a_member_list_is_an_actual_group_of_its_patients() {
        let group = stored(
            GroupDefinition::Members(vec!["7".into(), "12".into()]),
            Some(GroupIdentifier {
                system: Some("urn:example:cohorts".into()),
                value: "D-24".into(),
            }),
        );
        let resource = resource(&group);
        assert_valid_r4(&resource);
        assert_eq!(
            resource,
            json!({
                "resourceType": "Group",
                "id": "diabetes-2024",
                "meta": {"lastUpdated": "2026-01-01T00:00:00.123Z"},
                "identifier": [{"system": "urn:example:cohorts", "value": "D-24"}],
                "type": "person",
                "actual": true,
                "name": "Diabetes follow-up",
                "quantity": 2,
                "member": [
                    {"entity": {"reference": "Patient/7"}},
                    {"entity": {"reference": "Patient/12"}},
                ],
            })
        );
    }

    #[test]
    fn each_criterion_is_one_characteristic_of_a_group_that_is_not_actual() {
        let day = |text: &str| NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap();
        let cases = [
            (
                GroupCriterion::GeneralPractitioner("4".into()),
                json!({"valueReference": {"reference": "Practitioner/4"}}),
            ),
            (
                GroupCriterion::AppointmentLocation("3".into()),
                json!({"valueReference": {"reference": "Location/3"}}),
            ),
            (
                GroupCriterion::AppointmentPeriod {
                    start: day("2024-01-01"),
                    end: day("2024-03-31"),
                },
                json!({"valueBoolean": true, "period": {"start": "2024-01-01", "end": "2024-03-31"}}),
            ),
        ];
        for (criterion, expected) in cases {
            let kind = criterion.kind();
            let resource = resource(&stored(
                GroupDefinition::Criterion(criterion),
                Some(GroupIdentifier {
                    system: None,
                    value: "no-system".into(),
                }),
            ));
            assert_valid_r4(&resource);
            assert_eq!(resource["actual"], false, "{kind}");
            assert_eq!(resource["type"], "person");
            assert_eq!(resource["identifier"], json!([{"value": "no-system"}]));
            assert!(resource.get("member").is_none() && resource.get("quantity").is_none());
            let characteristics = resource["characteristic"].as_array().unwrap();
            assert_eq!(characteristics.len(), 1, "{kind}");
            let characteristic = &characteristics[0];
            assert_eq!(
                characteristic["code"]["coding"][0]["system"],
                CRITERION_SYSTEM
            );
            assert_eq!(characteristic["code"]["coding"][0]["code"], kind);
            assert!(characteristic["code"]["text"].as_str().unwrap().len() > 10);
            assert_eq!(characteristic["exclude"], false);
            for (key, value) in expected.as_object().unwrap() {
                assert_eq!(&characteristic[key], value, "{kind}: {key}");
            }
        }
    }

    #[test]
    fn appointment_participants_name_patients_by_reference() {
        assert_eq!(patient_id("Patient/12"), Some("12"));
        assert_eq!(patient_id("https://h/fhir/Patient/a.1"), Some("a.1"));
        assert_eq!(patient_id("Practitioner/12"), None);
        assert_eq!(patient_id("Patient/"), None);
        assert_eq!(patient_id("Patient/a b"), None);
    }
}
