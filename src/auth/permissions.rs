//! What a validated token may see: its scopes and context turned into an `Access`. Pure.
//!
//! - `system/` scopes see every patient's records (Backend Services).
//! - `patient/` scopes see the token's `patient` only; a token with patient/ scopes and no
//!   patient is refused, never widened (the microsoft/fhir-server MSRC-128308 class).
//! - `user/` scopes see what the user may: a patient-portal user (`fhirUser` a Patient) only that
//!   patient, a clinician (`fhirUser` a Practitioner) every patient. A user/ scope without a
//!   `fhirUser` is refused.
//! - One token has one patient limit: when any scope limits it to a patient, every scope of the
//!   token is limited to that patient (fail closed); two different patients are refused.

use crate::access::{Access, PatientLimit, TypeRule};
use crate::auth::scope::{self, Context, Scope};
use crate::auth::tokens::{AccessClaims, TokenRejection};

/// The access the token's claims grant.
pub fn access_for(claims: &AccessClaims) -> Result<Access, TokenRejection> {
    let (scopes, _ignored) = scope::parse_scopes_lenient(&claims.scope);
    let mut rules = Vec::new();
    let mut limited_to: Option<String> = None;
    let mut limit = |patient: &str| -> Result<(), TokenRejection> {
        match &limited_to {
            Some(existing) if existing != patient => Err(TokenRejection::Invalid(
                "the token's scopes name two different patients",
            )),
            _ => {
                limited_to = Some(patient.to_owned());
                Ok(())
            }
        }
    };
    let patient_user = claims
        .fhir_user
        .as_deref()
        .and_then(|user| user.rsplit_once("Patient/").map(|(_, id)| id))
        .filter(|id| !id.is_empty() && !id.contains('/'));
    for scope in &scopes {
        let Scope::Resource(resource) = scope else {
            continue;
        };
        if !(resource.read || resource.search)
            || decided_by_their_endpoints(resource.resource_type.as_deref())
        {
            continue;
        }
        match resource.context {
            Context::System => {}
            Context::Patient => {
                let patient = claims.patient.as_deref().filter(|p| !p.is_empty()).ok_or(
                    TokenRejection::Invalid("patient/ scopes without a patient in context"),
                )?;
                limit(patient)?;
            }
            Context::User => {
                let user = claims
                    .fhir_user
                    .as_deref()
                    .ok_or(TokenRejection::Invalid("user/ scopes without a fhirUser"))?;
                if let Some(patient) = patient_user {
                    limit(patient)?;
                } else if !user.contains("Practitioner/") {
                    return Err(TokenRejection::Invalid(
                        "user/ scopes for a fhirUser that is neither a Patient nor a Practitioner",
                    ));
                }
            }
        }
        rules.push(TypeRule {
            resource_type: resource.resource_type.clone(),
            read: resource.read,
            search: resource.search,
            filter: resource.filter.clone(),
        });
    }
    let patients = match limited_to {
        Some(patient) => PatientLimit::Only(vec![patient]),
        None => PatientLimit::Everyone,
    };
    Ok(Access::new(patients, rules))
}

/// Whether scopes for `resource_type` are Portico's own resources, decided by their endpoints:
/// the audit trail (`api::audit`) and Groups (`api::groups`) are kept in the state store, not the
/// PMS. Their scopes grant no PMS rows, so they need no patient or fhirUser (an admin user has
/// neither) and add no patient limit; the endpoints refuse tokens limited to a patient.
pub fn decided_by_their_endpoints(resource_type: Option<&str>) -> bool {
    matches!(
        resource_type,
        Some(crate::state::audit::AUDIT_EVENT | crate::state::groups::GROUP)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Interaction;

    fn claims(scope: &str, patient: Option<&str>, fhir_user: Option<&str>) -> AccessClaims {
        AccessClaims {
            iss: "i".into(),
            sub: "s".into(),
            aud: "a".into(),
            exp: 0,
            iat: 0,
            nbf: 0,
            jti: "j".into(),
            client_id: "c".into(),
            scope: scope.into(),
            patient: patient.map(str::to_owned),
            encounter: None,
            fhir_user: fhir_user.map(str::to_owned),
        }
    }

    fn only(id: &str) -> PatientLimit {
        PatientLimit::Only(vec![id.to_owned()])
    }

    #[test]
    fn scopes_and_context_become_an_access() {
        let table: Vec<(&str, Option<&str>, Option<&str>, PatientLimit)> = vec![
            ("system/*.rs", None, None, PatientLimit::Everyone),
            ("patient/*.rs", Some("7"), None, only("7")),
            (
                "patient/Observation.read launch/patient",
                Some("7"),
                None,
                only("7"),
            ),
            (
                "user/*.rs",
                None,
                Some("Practitioner/2"),
                PatientLimit::Everyone,
            ),
            (
                "user/*.rs",
                None,
                Some("https://h/fhir/Patient/9"),
                only("9"),
            ),
            (
                "user/Observation.rs patient/Patient.r",
                Some("9"),
                Some("Patient/9"),
                only("9"),
            ),
            // A patient scope limits the token's user scopes too.
            (
                "user/Practitioner.rs patient/*.rs",
                Some("7"),
                Some("Practitioner/2"),
                only("7"),
            ),
        ];
        for (scope, patient, user, expected) in table {
            let access = access_for(&claims(scope, patient, user)).unwrap();
            assert_eq!(access.patients(), &expected, "{scope}");
        }
        let access = access_for(&claims(
            "patient/Observation.rs?category=laboratory patient/Patient.r",
            Some("7"),
            None,
        ))
        .unwrap();
        assert!(access.allows("Observation", Interaction::Search));
        assert!(access.allows("Patient", Interaction::Read));
        assert!(!access.allows("Patient", Interaction::Search));
        assert!(!access.allows("Claim", Interaction::Read));
        // Write-only and context-only scopes grant nothing to read.
        let access = access_for(&claims(
            "system/Patient.cud launch openid fhirUser",
            None,
            None,
        ))
        .unwrap();
        assert!(!access.allows("Patient", Interaction::Read));
    }

    #[test]
    fn missing_context_is_refused_not_widened() {
        let refused = [
            ("patient/*.rs", None, None),
            ("patient/*.rs", Some(""), None),
            ("user/*.rs", None, None),
            ("user/*.rs", None, Some("RelatedPerson/3")),
            ("patient/*.rs user/*.rs", Some("7"), Some("Patient/8")),
        ];
        for (scope, patient, user) in refused {
            assert!(
                access_for(&claims(scope, patient, user)).is_err(),
                "{scope} {patient:?} {user:?}"
            );
        }
    }
}
