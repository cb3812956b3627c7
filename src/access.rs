//! What a request may see: the patients whose records it may reach and, per resource type, whether
//! it may read and search and under which granular filters. Built from a token's scopes by the
//! authorization layer; `search::compile` turns it into SQL per mapping, so nothing outside the
//! access is ever fetched.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Whose records a request may see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PatientLimit {
    /// No patient restriction (`user/` scopes of a clinician, `system/` scopes, operator tools).
    Everyone,
    /// Only the compartments of these FHIR Patient ids; an empty list sees no patient data.
    Only(Vec<String>),
}

/// What a request does with a resource type (SMART v2 `r` and `s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interaction {
    Read,
    Search,
}

/// One grant, from one SMART scope: a type (`None` = every type, `*`), what it allows, and an
/// optional granular filter: FHIR search parameters ANDed (`category=...|laboratory`); empty = none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeRule {
    pub resource_type: Option<String>,
    pub read: bool,
    pub search: bool,
    pub filter: Vec<(String, String)>,
}

impl TypeRule {
    fn covers(&self, resource_type: &str, interaction: Interaction) -> bool {
        let type_matches = self
            .resource_type
            .as_deref()
            .is_none_or(|t| t == resource_type);
        let allowed = match interaction {
            Interaction::Read => self.read,
            Interaction::Search => self.search,
        };
        type_matches && allowed
    }
}

/// The rows of one type an access admits for one interaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant<'a> {
    /// No rule covers the type: it is never queried.
    Denied,
    /// A rule without filter covers it: every row (within the patient limit).
    Unfiltered,
    /// Only rows that match one of these filters (each a list of parameters ANDed).
    Filtered(Vec<&'a [(String, String)]>),
}

/// Whose records and which types a request may see. Rules add up (SMART scopes are a union).
/// Serialized with an export job, which runs under the access of the token that started it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    patients: PatientLimit,
    rules: Vec<TypeRule>,
}

impl Access {
    /// Everything: operator tools (`check --data`), the placeholder before authentication, tests.
    pub fn everything() -> Access {
        Access::new(
            PatientLimit::Everyone,
            vec![TypeRule {
                resource_type: None,
                read: true,
                search: true,
                filter: Vec::new(),
            }],
        )
    }

    pub fn new(patients: PatientLimit, rules: Vec<TypeRule>) -> Access {
        Access { patients, rules }
    }

    pub fn patients(&self) -> &PatientLimit {
        &self.patients
    }

    /// This access limited to the compartments of `ids` (and still within its own limit): a
    /// Patient or Group export of some patients.
    pub fn narrowed_to_patients(&self, ids: &[String]) -> Access {
        let patients = match &self.patients {
            PatientLimit::Everyone => PatientLimit::Only(ids.to_vec()),
            PatientLimit::Only(own) => {
                PatientLimit::Only(ids.iter().filter(|id| own.contains(id)).cloned().collect())
            }
        };
        Access::new(patients, self.rules.clone())
    }

    pub fn rules(&self) -> &[TypeRule] {
        &self.rules
    }

    pub fn allows(&self, resource_type: &str, interaction: Interaction) -> bool {
        self.grant(resource_type, interaction) != Grant::Denied
    }

    /// The rows of `resource_type` this access admits for `interaction`: any covering rule
    /// without a filter admits all of them; otherwise a row must match one rule's filter.
    pub fn grant(&self, resource_type: &str, interaction: Interaction) -> Grant<'_> {
        let covering: Vec<&TypeRule> = self
            .rules
            .iter()
            .filter(|rule| rule.covers(resource_type, interaction))
            .collect();
        if covering.is_empty() {
            Grant::Denied
        } else if covering.iter().any(|rule| rule.filter.is_empty()) {
            Grant::Unfiltered
        } else {
            Grant::Filtered(covering.iter().map(|rule| rule.filter.as_slice()).collect())
        }
    }

    /// A stable fingerprint of what this access admits, for binding paging cursors to it: equal
    /// for accesses that differ only in the order or repetition of patients and rules.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        // Length-prefixed fields: no two different accesses serialize to the same bytes.
        let mut field = |bytes: &[u8]| {
            hasher.update((bytes.len() as u64).to_be_bytes());
            hasher.update(bytes);
        };
        match &self.patients {
            PatientLimit::Everyone => field(b"everyone"),
            PatientLimit::Only(ids) => {
                field(b"only");
                let mut ids: Vec<&String> = ids.iter().collect();
                ids.sort();
                ids.dedup();
                field(&(ids.len() as u64).to_be_bytes());
                for id in ids {
                    field(id.as_bytes());
                }
            }
        }
        let mut rules: Vec<Vec<u8>> = self.rules.iter().map(rule_bytes).collect();
        rules.sort();
        rules.dedup();
        field(&(rules.len() as u64).to_be_bytes());
        for rule in rules {
            field(&rule);
        }
        hasher.finalize().into()
    }
}

/// One rule as unambiguous bytes (length-prefixed fields, filter in a canonical order).
fn rule_bytes(rule: &TypeRule) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut field = |data: &[u8]| {
        bytes.extend((data.len() as u64).to_be_bytes());
        bytes.extend(data);
    };
    match &rule.resource_type {
        None => field(b"*"),
        Some(name) => field(format!("type:{name}").as_bytes()),
    }
    field(&[u8::from(rule.read), u8::from(rule.search)]);
    let mut filter: Vec<&(String, String)> = rule.filter.iter().collect();
    filter.sort();
    for (name, value) in filter {
        field(name.as_bytes());
        field(value.as_bytes());
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        resource_type: Option<&str>,
        read: bool,
        search: bool,
        filter: &[(&str, &str)],
    ) -> TypeRule {
        TypeRule {
            resource_type: resource_type.map(str::to_owned),
            read,
            search,
            filter: filter
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    const LABS: (&str, &str) = (
        "category",
        "http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
    );
    const VITALS: (&str, &str) = (
        "category",
        "http://terminology.hl7.org/CodeSystem/observation-category|vital-signs",
    );

    #[test]
    fn everything_grants_every_type_and_interaction_unfiltered() {
        let access = Access::everything();
        assert_eq!(access.patients(), &PatientLimit::Everyone);
        for interaction in [Interaction::Read, Interaction::Search] {
            assert_eq!(access.grant("Observation", interaction), Grant::Unfiltered);
            assert!(access.allows("Anything", interaction));
        }
    }

    #[test]
    fn a_type_no_rule_covers_is_denied() {
        let access = Access::new(
            PatientLimit::Only(vec!["1".into()]),
            vec![rule(Some("Patient"), true, true, &[])],
        );
        assert!(access.allows("Patient", Interaction::Read));
        assert!(!access.allows("Observation", Interaction::Read));
        assert!(!access.allows("Observation", Interaction::Search));
        let none = Access::new(PatientLimit::Everyone, Vec::new());
        assert_eq!(none.grant("Patient", Interaction::Read), Grant::Denied);
    }

    #[test]
    fn read_and_search_are_granted_separately() {
        let access = Access::new(
            PatientLimit::Everyone,
            vec![
                rule(Some("Patient"), true, false, &[]),
                rule(Some("Observation"), false, true, &[]),
            ],
        );
        assert!(access.allows("Patient", Interaction::Read));
        assert!(!access.allows("Patient", Interaction::Search));
        assert!(!access.allows("Observation", Interaction::Read));
        assert!(access.allows("Observation", Interaction::Search));
    }

    #[test]
    fn an_unfiltered_rule_outweighs_filtered_ones() {
        let access = Access::new(
            PatientLimit::Everyone,
            vec![
                rule(Some("Observation"), true, true, &[LABS]),
                rule(None, true, false, &[]),
            ],
        );
        assert_eq!(
            access.grant("Observation", Interaction::Read),
            Grant::Unfiltered
        );
        // The wildcard does not search, so searches stay filtered to labs.
        assert_eq!(
            access.grant("Observation", Interaction::Search),
            Grant::Filtered(vec![access.rules()[0].filter.as_slice()])
        );
    }

    #[test]
    fn filtered_rules_add_up() {
        let access = Access::new(
            PatientLimit::Everyone,
            vec![
                rule(Some("Observation"), true, true, &[LABS]),
                rule(Some("Observation"), true, true, &[VITALS]),
                rule(Some("Condition"), true, true, &[]),
            ],
        );
        let Grant::Filtered(filters) = access.grant("Observation", Interaction::Search) else {
            panic!("two filtered rules give a filtered grant");
        };
        assert_eq!(filters.len(), 2);
        assert_eq!(filters[0], access.rules()[0].filter.as_slice());
        assert_eq!(filters[1], access.rules()[1].filter.as_slice());
    }

    #[test]
    fn the_fingerprint_ignores_order_and_repetition_only() {
        let a = Access::new(
            PatientLimit::Only(vec!["1".into(), "2".into()]),
            vec![
                rule(Some("Patient"), true, true, &[]),
                rule(
                    Some("Observation"),
                    true,
                    true,
                    &[LABS, ("status", "final")],
                ),
            ],
        );
        let reordered = Access::new(
            PatientLimit::Only(vec!["2".into(), "1".into(), "2".into()]),
            vec![
                rule(
                    Some("Observation"),
                    true,
                    true,
                    &[("status", "final"), LABS],
                ),
                rule(Some("Patient"), true, true, &[]),
            ],
        );
        assert_eq!(a.fingerprint(), reordered.fingerprint());
        let others = [
            Access::everything(),
            Access::new(PatientLimit::Only(vec!["1".into()]), a.rules().to_vec()),
            Access::new(PatientLimit::Only(vec!["12".into()]), a.rules().to_vec()),
            Access::new(PatientLimit::Everyone, a.rules().to_vec()),
            Access::new(
                PatientLimit::Only(vec!["1".into(), "2".into()]),
                vec![rule(Some("Patient"), true, true, &[])],
            ),
            Access::new(
                PatientLimit::Only(vec!["1".into(), "2".into()]),
                vec![
                    rule(Some("Patient"), true, false, &[]),
                    rule(
                        Some("Observation"),
                        true,
                        true,
                        &[LABS, ("status", "final")],
                    ),
                ],
            ),
        ];
        for other in &others {
            assert_ne!(a.fingerprint(), other.fingerprint(), "{other:?}");
        }
        // Field boundaries count: ids "1","2" differ from the id "12".
        let joined = Access::new(PatientLimit::Only(vec!["12".into()]), Vec::new());
        let split = Access::new(PatientLimit::Only(vec!["1".into(), "2".into()]), Vec::new());
        assert_ne!(joined.fingerprint(), split.fingerprint());
    }
}
