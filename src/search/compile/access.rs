//! What an `Access` admits of one mapping's rows, as SQL: the patient compartment through the
//! mapping's declared links, ANDed with the granular filters of the rules that grant the type.
//! Every SELECT over a mapping's rows takes the result (`base_select`), so no query reaches the
//! PMS without it.

use chrono::NaiveDateTime;
use chrono_tz::Tz;

use super::{ClauseCond, clause_cond, parse_id, predicates_cond, referencing_cond};
use crate::access::{Access, Grant, Interaction, PatientLimit};
use crate::adapter::model::{BASE_ALIAS, Compartment, Mapping, ResourceDef};
use crate::dialect::ast::Cond;
use crate::search::parse::parse;

/// The rows, and for unpivoting mappings the variants, of one mapping that an access admits.
#[derive(Debug, Clone, PartialEq)]
pub struct RowAccess {
    /// Holds on a row when the access admits it (or, unpivoting, one of its admitted variants).
    pub cond: Cond,
    /// For unpivoting mappings, which variants the access admits; `None`: all of them.
    pub variants: Option<Vec<bool>>,
}

impl RowAccess {
    /// Nothing of the mapping is admitted: it is not queried at all.
    pub fn denies_all(&self) -> bool {
        self.cond == Cond::False
            || self
                .variants
                .as_ref()
                .is_some_and(|mask| !mask.contains(&true))
    }

    pub fn variant_allowed(&self, variant: usize) -> bool {
        self.variants.as_ref().is_none_or(|mask| mask[variant])
    }
}

/// What `access` admits of `mapping` (one of `def`'s) for `interaction`. `timezone` and `now`
/// serve date parameters in granular filters, as in a search.
pub fn row_access(
    def: &ResourceDef,
    mapping: &Mapping,
    access: &Access,
    interaction: Interaction,
    timezone: Tz,
    now: NaiveDateTime,
) -> RowAccess {
    let denied = RowAccess {
        cond: Cond::False,
        variants: None,
    };
    let compartment = compartment_cond(mapping, access.patients());
    if compartment == Cond::False {
        return denied;
    }
    let granted = match access.grant(&def.resource_type, interaction) {
        Grant::Denied => return denied,
        Grant::Unfiltered => ClauseCond::sql(Cond::True),
        Grant::Filtered(filters) => {
            let per_rule: Vec<ClauseCond> = filters
                .iter()
                .map(|filter| filter_cond(def, mapping, filter, timezone, now))
                .collect();
            any_rule(mapping, per_rule)
        }
    };
    let mut conds = vec![compartment, granted.cond];
    if let Some(mask) = &granted.variants {
        conds.push(Cond::or(
            mapping
                .variants
                .iter()
                .zip(mask)
                .filter(|(_, admitted)| **admitted)
                .map(|(variant, _)| predicates_cond(&variant.when, BASE_ALIAS))
                .collect(),
        ));
    }
    RowAccess {
        cond: Cond::and(conds),
        variants: granted.variants,
    }
}

/// The rows of the compartments of the access's patients: any declared link referencing one of
/// them. Undeclared mappings are denied (deny by default); shared ones are not restricted.
fn compartment_cond(mapping: &Mapping, patients: &PatientLimit) -> Cond {
    let PatientLimit::Only(ids) = patients else {
        return Cond::True;
    };
    // Ids become bound key values; one that cannot be a FHIR id cannot be ours.
    let ids: Vec<String> = ids.iter().filter(|id| is_fhir_id(id)).cloned().collect();
    match &mapping.compartment {
        Compartment::Undeclared => Cond::False,
        Compartment::Shared => Cond::True,
        Compartment::Patient(links) => {
            let mut alternatives: Vec<Cond> = Vec::new();
            for link in links {
                let cond = match link.as_str() {
                    "_id" => Cond::or(
                        ids.iter()
                            .filter_map(|id| parse_id(mapping, id))
                            .map(|target| target.cond)
                            .collect(),
                    ),
                    param => referencing_cond(mapping, param, "Patient", &ids),
                };
                // Links often share their columns (`subject` and `patient`): test them once.
                let parts = match cond {
                    Cond::Or(parts) => parts,
                    other => vec![other],
                };
                for part in parts {
                    if !alternatives.contains(&part) {
                        alternatives.push(part);
                    }
                }
            }
            Cond::or(alternatives)
        }
    }
}

/// FHIR's id grammar: `[A-Za-z0-9\-\.]{1,64}`.
fn is_fhir_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

/// One rule's filter (`category=...|laboratory&status=final`) compiled as a search would compile
/// it. Anything a search would refuse or ignore (a parameter the type lacks, a malformed value, a
/// result parameter such as `_count`) denies instead: a filter never widens what a rule admits.
fn filter_cond(
    def: &ResourceDef,
    mapping: &Mapping,
    filter: &[(String, String)],
    timezone: Tz,
    now: NaiveDateTime,
) -> ClauseCond {
    let denied = ClauseCond::sql(Cond::False);
    let only_filters = filter.iter().all(|(name, _)| {
        let base = name.split(':').next().unwrap_or_default();
        !base.starts_with('_') || base == "_id" || base == "_lastUpdated"
    });
    if !only_filters {
        return denied;
    }
    let Ok(request) = parse(filter) else {
        return denied;
    };
    let mut cond = Cond::True;
    let mut variants: Option<Vec<bool>> = None;
    for clause in &request.clauses {
        let supported = match clause.name.as_str() {
            "_id" => true,
            "_lastUpdated" => def.mappings.iter().any(|m| m.last_updated.is_some()),
            name => def.search.contains_key(name),
        };
        if !supported || clause.values.iter().all(|v| v.is_empty()) {
            return denied;
        }
        let Ok(compiled) = clause_cond(mapping, clause, timezone, now) else {
            return denied;
        };
        cond = Cond::and(vec![cond, compiled.cond]);
        if let Some(admitted) = compiled.variants {
            let mask = variants.get_or_insert_with(|| vec![true; admitted.len()]);
            for (slot, ok) in mask.iter_mut().zip(admitted) {
                *slot &= ok;
            }
        }
    }
    ClauseCond { cond, variants }
}

/// Rules add up: a row (variant) is admitted when one rule's filter admits it. The SQL decides
/// rows; the mapper keeps a row's variants by one mask for all rows. That is exact when every
/// admitted variant is admitted under the same row condition (always so without unpivots, or
/// when filters differ only by variant-level parameters); otherwise only the variants sharing the
/// first admitted variant's condition are kept: under-serving, never leaking.
fn any_rule(mapping: &Mapping, rules: Vec<ClauseCond>) -> ClauseCond {
    if mapping.variants.is_empty() {
        return ClauseCond::sql(Cond::or(rules.into_iter().map(|rule| rule.cond).collect()));
    }
    let per_variant: Vec<Cond> = (0..mapping.variants.len())
        .map(|variant| {
            Cond::or(
                rules
                    .iter()
                    .filter(|rule| rule.variants.as_ref().is_none_or(|mask| mask[variant]))
                    .map(|rule| rule.cond.clone())
                    .collect(),
            )
        })
        .collect();
    let Some(common) = per_variant
        .iter()
        .find(|cond| **cond != Cond::False)
        .cloned()
    else {
        return ClauseCond::sql(Cond::False);
    };
    let mask: Vec<bool> = per_variant.iter().map(|cond| *cond == common).collect();
    let variants = (!mask.iter().all(|admitted| *admitted)).then_some(mask);
    ClauseCond {
        cond: common,
        variants,
    }
}
