//! The top-level elements R4 requires (min 1) on the resource types adapters serve, and the check
//! that a mapped resource has them.
//!
//! fhirbolt's strict model already refuses a missing required single element at any depth; lists
//! that must hold at least one item (`Appointment.participant`, `Claim.insurance`) it does not
//! check. This table covers both at the top level, so a mapped resource that misses one is named
//! precisely ("required element participant is missing") before the model sees it.

/// Required top-level elements per resource type (R4 4.0.1, min = 1). A name ending in `[x]` is a
/// choice: any of its typed forms satisfies it.
const REQUIRED: &[(&str, &[&str])] = &[
    ("AllergyIntolerance", &["patient"]),
    ("Appointment", &["status", "participant"]),
    (
        "Claim",
        &[
            "status",
            "type",
            "use",
            "patient",
            "created",
            "provider",
            "priority",
            "insurance",
        ],
    ),
    ("Condition", &["subject"]),
    ("Coverage", &["status", "beneficiary", "payor"]),
    ("DiagnosticReport", &["status", "code"]),
    ("Encounter", &["status", "class"]),
    (
        "ExplanationOfBenefit",
        &[
            "status",
            "type",
            "use",
            "patient",
            "created",
            "insurer",
            "provider",
            "outcome",
            "insurance",
        ],
    ),
    (
        "Immunization",
        &["status", "vaccineCode", "patient", "occurrence[x]"],
    ),
    (
        "MedicationRequest",
        &["status", "intent", "medication[x]", "subject"],
    ),
    ("Observation", &["status", "code"]),
    ("Procedure", &["status", "subject"]),
    ("RelatedPerson", &["patient"]),
    ("Schedule", &["actor"]),
    ("ServiceRequest", &["status", "intent", "subject"]),
    ("Slot", &["schedule", "status", "start", "end"]),
];

/// The first required top-level element a resource of `names` (its top-level element names)
/// lacks, if any.
pub fn missing_element(resource_type: &str, names: &[&str]) -> Option<&'static str> {
    let (_, required) = REQUIRED.iter().find(|(name, _)| *name == resource_type)?;
    required
        .iter()
        .copied()
        .find(|element| match element.strip_suffix("[x]") {
            Some(stem) => !names.iter().any(|name| {
                name.strip_prefix(stem)
                    .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_uppercase()))
            }),
            None => !names.contains(element),
        })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value as Json, json};

    use super::missing_element;

    fn names(resource: &Json) -> Vec<&str> {
        resource
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect()
    }

    #[test]
    fn names_the_first_missing_element() {
        let appointment = json!({"resourceType": "Appointment", "status": "booked"});
        assert_eq!(
            missing_element("Appointment", &names(&appointment)),
            Some("participant")
        );
        let observation = json!({"resourceType": "Observation", "status": "final", "code": {}});
        assert_eq!(missing_element("Observation", &names(&observation)), None);
        assert_eq!(missing_element("Patient", &names(&json!({}))), None);
    }

    #[test]
    fn a_choice_is_met_by_any_typed_form() {
        let given = json!({"status": "completed", "vaccineCode": {}, "patient": {},
            "occurrenceDateTime": "2024-01-01"});
        assert_eq!(missing_element("Immunization", &names(&given)), None);
        let bare = json!({"status": "completed", "vaccineCode": {}, "patient": {},
            "occurrence": "2024"});
        assert_eq!(
            missing_element("Immunization", &names(&bare)),
            Some("occurrence[x]")
        );
    }
}
