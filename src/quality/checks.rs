//! The built-in rules that judge a mapped resource: telecom and postal codes that do not parse,
//! patients without a name or with an impossible birth date, and what the cross-row rules need
//! (a person's name and birth date, the patients a resource refers to).

use std::collections::BTreeSet;

use chrono::{Datelike, NaiveDate};
use serde_json::Value as Json;

use super::{BAD_EMAIL, BAD_PHONE, BAD_POSTAL_CODE, BIRTH_DATE_RANGE, PATIENT_WITHOUT_NAME};
use crate::dialect::fold::fold;

/// The oldest a living record's birth date may plausibly be.
const MAX_AGE_YEARS: i32 = 120;

/// The findings a resource makes on its own: (rule, detail). Details name elements, not values.
pub fn resource_findings(resource: &Json, today: NaiveDate) -> Vec<(&'static str, String)> {
    let mut found = Vec::new();
    for (index, telecom) in list(resource, "telecom").enumerate() {
        let Some(value) = telecom["value"].as_str() else {
            continue;
        };
        match telecom["system"].as_str() {
            Some("phone" | "fax" | "sms" | "pager") if !is_phone(value) => found.push((
                BAD_PHONE,
                format!(
                    "telecom[{index}] ({}) is not a phone number",
                    telecom["system"].as_str().unwrap_or_default()
                ),
            )),
            Some("email") if !is_email(value) => found.push((
                BAD_EMAIL,
                format!("telecom[{index}] is not an email address"),
            )),
            _ => {}
        }
    }
    for (index, address) in list(resource, "address")
        .chain(single(resource, "address"))
        .enumerate()
    {
        let Some(code) = address["postalCode"].as_str() else {
            continue;
        };
        if !is_postal_code(code, address["country"].as_str()) {
            found.push((
                BAD_POSTAL_CODE,
                format!("address[{index}].postalCode does not parse"),
            ));
        }
    }
    if resource["resourceType"] == "Patient" {
        if !has_name(resource) {
            found.push((
                PATIENT_WITHOUT_NAME,
                "no family name, given name or text".to_owned(),
            ));
        }
        if let Some(birth) = resource["birthDate"].as_str()
            && let Some(problem) = birth_date_problem(birth, today)
        {
            found.push((BIRTH_DATE_RANGE, problem.to_owned()));
        }
    }
    found
}

/// A Patient's family and first given name (case and accents folded) and full birth date: two
/// patients with the same key are likely the same person. `None` without all three.
pub fn person_key(patient: &Json) -> Option<String> {
    let birth = patient["birthDate"].as_str().filter(|b| b.len() == 10)?;
    let name = list(patient, "name").find(|n| n["family"].is_string())?;
    let family = fold(name["family"].as_str()?.trim());
    let given = fold(name["given"][0].as_str()?.trim());
    (!family.is_empty() && !given.is_empty()).then(|| format!("{family}|{given}|{birth}"))
}

/// The ids of the Patients a resource refers to, anywhere in it.
pub fn patient_references(resource: &Json) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    collect_patient_references(resource, &mut ids);
    ids
}

fn collect_patient_references(value: &Json, ids: &mut BTreeSet<String>) {
    match value {
        Json::Object(object) => {
            if let Some(id) = object
                .get("reference")
                .and_then(Json::as_str)
                .and_then(|r| r.strip_prefix("Patient/"))
            {
                ids.insert(id.to_owned());
            }
            object
                .values()
                .for_each(|v| collect_patient_references(v, ids));
        }
        Json::Array(items) => items
            .iter()
            .for_each(|v| collect_patient_references(v, ids)),
        _ => {}
    }
}

fn list<'a>(resource: &'a Json, element: &str) -> impl Iterator<Item = &'a Json> {
    resource[element].as_array().into_iter().flatten()
}

/// Elements that are a single object (`Location.address`).
fn single<'a>(resource: &'a Json, element: &str) -> impl Iterator<Item = &'a Json> {
    resource[element]
        .as_object()
        .map(|_| &resource[element])
        .into_iter()
}

/// Seven to fifteen digits (E.164 allows fifteen), written with the usual separators, and an
/// optional extension (`x12`, `ext. 12`).
pub fn is_phone(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    let number = lower
        .split_once("ext")
        .or_else(|| lower.split_once('x'))
        .map_or(lower.as_str(), |(number, _)| number);
    let digits = number.chars().filter(char::is_ascii_digit).count();
    (7..=15).contains(&digits)
        && number
            .chars()
            .all(|c| c.is_ascii_digit() || " +-().//".contains(c))
}

/// One `@` between a local part and a dotted domain, no spaces.
pub fn is_email(value: &str) -> bool {
    let Some((local, domain)) = value.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && !value.chars().any(char::is_whitespace)
        && domain.split('.').count() >= 2
        && domain.split('.').all(|label| !label.is_empty())
}

/// US ZIP codes (`12345`, `12345-6789`) where the country is the US or not stated; elsewhere
/// three to ten letters and digits, with spaces or hyphens between.
pub fn is_postal_code(code: &str, country: Option<&str>) -> bool {
    let code = code.trim();
    let us = country.is_none_or(|c| {
        matches!(
            c.trim().to_ascii_uppercase().as_str(),
            "US" | "USA" | "UNITED STATES"
        )
    });
    if us {
        let bytes = code.as_bytes();
        let digits = |range: std::ops::Range<usize>| bytes[range].iter().all(u8::is_ascii_digit);
        match bytes.len() {
            5 => digits(0..5),
            10 => digits(0..5) && bytes[5] == b'-' && digits(6..10),
            _ => false,
        }
    } else {
        let significant = code.chars().filter(char::is_ascii_alphanumeric).count();
        (3..=10).contains(&significant)
            && code
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '-')
    }
}

fn has_name(patient: &Json) -> bool {
    list(patient, "name").any(|name| {
        let text = |v: &Json| v.as_str().is_some_and(|s| !s.trim().is_empty());
        text(&name["family"]) || text(&name["text"]) || list(name, "given").any(text)
    })
}

/// Why a FHIR birth date (`YYYY`, `YYYY-MM` or `YYYY-MM-DD`) is impossible, if it is.
fn birth_date_problem(birth: &str, today: NaiveDate) -> Option<&'static str> {
    let year: i32 = birth.get(..4)?.parse().ok()?;
    let month: u32 = birth.get(5..7).and_then(|m| m.parse().ok()).unwrap_or(1);
    let day: u32 = birth.get(8..10).and_then(|d| d.parse().ok()).unwrap_or(1);
    let date = NaiveDate::from_ymd_opt(year, month, day)?;
    if date > today {
        Some("birth date in the future")
    } else if year < today.year() - MAX_AGE_YEARS {
        Some("birth date more than 120 years ago")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, 3).unwrap()
    }

    #[test]
    fn phones_emails_and_postal_codes_parse_as_people_write_them() {
        for phone in [
            "555-010-2000",
            "(555) 010-2000",
            "+1 555 010 2000 x12",
            "5550102000",
        ] {
            assert!(is_phone(phone), "{phone}");
        }
        for phone in ["call mom", "555", "none", "555-010-2000-1234-5678-9"] {
            assert!(!is_phone(phone), "{phone}");
        }
        assert!(is_email("a.b@example.com"));
        for email in ["none", "a@b", "a @b.com", "@b.com", "a@b..com", "a@@b.com"] {
            assert!(!is_email(email), "{email}");
        }
        assert!(is_postal_code("02134", None));
        assert!(is_postal_code("02134-1234", Some("US")));
        assert!(!is_postal_code("2134", Some("US")));
        assert!(!is_postal_code("ABCDE", None));
        assert!(is_postal_code("SW1A 1AA", Some("GB")));
        assert!(is_postal_code("00187", Some("IT")));
        assert!(!is_postal_code("?", Some("IT")));
    }

    #[test]
    fn a_patient_without_a_name_and_with_an_impossible_birth_date_is_reported() {
        let patient = json!({
            "resourceType": "Patient",
            "name": [{ "use": "official" }],
            "birthDate": "2150-01-01",
            "telecom": [{ "system": "phone", "value": "call mom" }, { "system": "email", "value": "x@example.org" }],
            "address": [{ "postalCode": "1", "country": "US" }]
        });
        let rules: Vec<&str> = resource_findings(&patient, today())
            .into_iter()
            .map(|(rule, _)| rule)
            .collect();
        assert_eq!(
            rules,
            vec![
                BAD_PHONE,
                BAD_POSTAL_CODE,
                PATIENT_WITHOUT_NAME,
                BIRTH_DATE_RANGE
            ]
        );
        let old =
            json!({ "resourceType": "Patient", "name": [{ "family": "Ng" }], "birthDate": "1890" });
        assert_eq!(
            resource_findings(&old, today()),
            vec![(
                BIRTH_DATE_RANGE,
                "birth date more than 120 years ago".to_owned()
            )]
        );
        let fine = json!({ "resourceType": "Patient", "name": [{ "given": ["Ana"] }], "birthDate": "1958-07" });
        assert!(resource_findings(&fine, today()).is_empty());
    }

    #[test]
    fn people_match_ignoring_case_and_accents_and_references_are_collected() {
        let a = json!({ "name": [{ "family": "Müller", "given": ["José"] }], "birthDate": "1970-01-02" });
        let b = json!({ "name": [{ "family": "MULLER", "given": ["jose", "M"] }], "birthDate": "1970-01-02" });
        assert_eq!(person_key(&a), person_key(&b));
        assert!(person_key(&a).is_some());
        assert_eq!(
            person_key(
                &json!({ "name": [{ "family": "X", "given": ["Y"] }], "birthDate": "1970" })
            ),
            None
        );
        let appointment = json!({
            "participant": [
                { "actor": { "reference": "Patient/7" } },
                { "actor": { "reference": "Practitioner/2" } }
            ],
            "subject": { "reference": "Patient/7" }
        });
        assert_eq!(
            patient_references(&appointment),
            BTreeSet::from(["7".to_owned()])
        );
    }
}
