//! Portico's own Group resources in the state store (`fhir_group`, `fhir_group_member`): cohorts
//! an operator defines for Bulk Data's `/Group/[id]/$export`, either as a list of Patient ids or
//! by one criterion (a general practitioner, an appointment location, an appointment period)
//! that `crate::groups::members` resolves through the adapter's searches. Added, listed, read,
//! searched (`_id`, `identifier`, `name`, keyset-paged on the id) and removed here.
//!
//! Criteria are typed columns rather than JSON: one criterion per group, each with a reference
//! or two dates, so a column per value keeps them checkable by the database (`kind`'s CHECK) and
//! readable in a plain SELECT.

use std::collections::HashMap;

use chrono::NaiveDate;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::subscriptions::now_ms;
use super::{Bind, StateError, StateStore, bind_all, placeholders, value_rows};
use crate::dialect::ast::LikeMode;
use crate::dialect::fold::fold;
use crate::dialect::{LIKE_ESCAPE, like_pattern};
use crate::fhir::is_fhir_id;

/// The resource type of Portico's own groups (served from this store, never from the PMS).
pub const GROUP: &str = "Group";

/// What puts a patient in a criteria group. One per group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupCriterion {
    /// Patients whose general practitioner is this Practitioner id.
    GeneralPractitioner(String),
    /// Patients with an appointment at this Location id.
    AppointmentLocation(String),
    /// Patients with an appointment from `start` through `end` (both days included).
    AppointmentPeriod { start: NaiveDate, end: NaiveDate },
}

impl GroupCriterion {
    /// The `kind` column's value.
    pub fn kind(&self) -> &'static str {
        match self {
            GroupCriterion::GeneralPractitioner(_) => "general-practitioner",
            GroupCriterion::AppointmentLocation(_) => "appointment-location",
            GroupCriterion::AppointmentPeriod { .. } => "appointment-period",
        }
    }
}

/// How a group is defined: the patients themselves, or a criterion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupDefinition {
    /// FHIR Patient ids, in the order given, each once.
    Members(Vec<String>),
    Criterion(GroupCriterion),
}

/// `Group.identifier`: a value, with the system it belongs to when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupIdentifier {
    pub system: Option<String>,
    pub value: String,
}

/// A group to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewGroup {
    pub id: String,
    pub name: String,
    pub identifier: Option<GroupIdentifier>,
    pub definition: GroupDefinition,
}

/// A group as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredGroup {
    pub id: String,
    pub name: String,
    pub identifier: Option<GroupIdentifier>,
    pub definition: GroupDefinition,
    /// Milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// Milliseconds since the Unix epoch (`meta.lastUpdated`).
    pub updated_ms: i64,
}

/// Which systems an `identifier` search value admits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemMatch {
    /// `value`: any system, or none.
    Any,
    /// `|value`: no system.
    Absent,
    /// `system|value` or `system|`.
    Is(String),
}

/// One `identifier` search value: a system condition and, unless `system|`, the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifierMatch {
    pub system: SystemMatch,
    pub value: Option<String>,
}

/// What a Group search asks for: every list is ANDed; the values inside one inner list (one
/// search parameter's comma-separated values) are ORed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupFilter {
    pub ids: Vec<Vec<String>>,
    pub identifiers: Vec<Vec<IdentifierMatch>>,
    /// Name prefixes, compared without case or accents.
    pub names: Vec<Vec<String>>,
}

/// Every problem with `group`, at once.
fn problems(group: &NewGroup) -> Vec<String> {
    let mut problems = Vec::new();
    if !is_fhir_id(&group.id) {
        problems.push(format!(
            "{:?} is not a FHIR id (1 to 64 of A-Z a-z 0-9 - .)",
            group.id
        ));
    }
    if group.name.trim().is_empty() {
        problems.push("a group needs a name".into());
    }
    if let Some(identifier) = &group.identifier {
        if identifier.value.trim().is_empty() {
            problems.push("the identifier needs a value".into());
        }
        if identifier
            .system
            .as_deref()
            .is_some_and(|s| s.trim().is_empty())
        {
            problems.push("the identifier's system is blank".into());
        }
    }
    let not_an_id =
        |what: &str, id: &str| (!is_fhir_id(id)).then(|| format!("{what} {id:?} is not a FHIR id"));
    match &group.definition {
        GroupDefinition::Members(patients) => {
            if patients.is_empty() {
                problems.push("a member list names at least one patient".into());
            }
            problems.extend(
                patients
                    .iter()
                    .filter_map(|patient| not_an_id("Patient", patient)),
            );
        }
        GroupDefinition::Criterion(GroupCriterion::GeneralPractitioner(practitioner)) => {
            problems.extend(not_an_id("Practitioner", practitioner))
        }
        GroupDefinition::Criterion(GroupCriterion::AppointmentLocation(location)) => {
            problems.extend(not_an_id("Location", location))
        }
        GroupDefinition::Criterion(GroupCriterion::AppointmentPeriod { start, end }) => {
            if start > end {
                problems.push(format!("the period starts ({start}) after it ends ({end})"));
            }
        }
    }
    problems
}

const GROUP_COLUMNS: &str = "SELECT id, name, identifier_system, identifier_value, kind, \
     criterion_ref, period_start, period_end, created_ms, updated_ms FROM fhir_group";

/// The WHERE clause for `filter` and the values to bind, in order, after `already_bound` others.
fn where_clause(filter: &GroupFilter, already_bound: usize) -> (String, Vec<Bind>) {
    let mut conds: Vec<String> = Vec::new();
    let mut binds: Vec<Bind> = Vec::new();
    let next = |binds: &Vec<Bind>| already_bound + binds.len() + 1;
    for ids in &filter.ids {
        conds.push(format!("id IN ({})", placeholders(next(&binds), ids.len())));
        binds.extend(ids.iter().cloned().map(Bind::Text));
    }
    for identifiers in &filter.identifiers {
        let alternatives: Vec<String> = identifiers
            .iter()
            .map(|wanted| {
                let mut parts = Vec::new();
                match &wanted.system {
                    SystemMatch::Any => {}
                    SystemMatch::Absent => parts.push("identifier_system IS NULL".to_owned()),
                    SystemMatch::Is(system) => {
                        parts.push(format!("identifier_system = ${}", next(&binds)));
                        binds.push(Bind::Text(system.clone()));
                    }
                }
                match &wanted.value {
                    Some(value) => {
                        parts.push(format!("identifier_value = ${}", next(&binds)));
                        binds.push(Bind::Text(value.clone()));
                    }
                    // `system|` alone: a group whose identifier has that system.
                    None => parts.push("identifier_value IS NOT NULL".to_owned()),
                }
                format!("({})", parts.join(" AND "))
            })
            .collect();
        conds.push(format!("({})", alternatives.join(" OR ")));
    }
    for names in &filter.names {
        let alternatives: Vec<String> = names
            .iter()
            .map(|name| {
                let condition =
                    format!("name_folded LIKE ${} ESCAPE '{LIKE_ESCAPE}'", next(&binds));
                binds.push(Bind::Text(like_pattern(&fold(name), LikeMode::StartsWith)));
                condition
            })
            .collect();
        conds.push(format!("({})", alternatives.join(" OR ")));
    }
    let clause = if conds.is_empty() {
        "1 = 1".to_owned()
    } else {
        conds.join(" AND ")
    };
    (clause, binds)
}

/// A `fhir_group` row as a group; member lists come from `members`, by group id.
fn group_from_row(
    row: &AnyRow,
    members: &mut HashMap<String, Vec<String>>,
) -> Result<StoredGroup, StateError> {
    let id: String = row.try_get("id")?;
    let kind: String = row.try_get("kind")?;
    let reference = || -> Result<String, StateError> {
        let value: Option<String> = row.try_get("criterion_ref")?;
        value.ok_or_else(|| StateError::Invalid(format!("group {id}: {kind} without its id")))
    };
    let date = |column: &str| -> Result<NaiveDate, StateError> {
        let text: Option<String> = row.try_get(column)?;
        text.as_deref()
            .and_then(|t| NaiveDate::parse_from_str(t, "%Y-%m-%d").ok())
            .ok_or_else(|| StateError::Invalid(format!("group {id}: {column} is not a date")))
    };
    let definition = match kind.as_str() {
        "members" => GroupDefinition::Members(members.remove(&id).unwrap_or_default()),
        "general-practitioner" => {
            GroupDefinition::Criterion(GroupCriterion::GeneralPractitioner(reference()?))
        }
        "appointment-location" => {
            GroupDefinition::Criterion(GroupCriterion::AppointmentLocation(reference()?))
        }
        "appointment-period" => GroupDefinition::Criterion(GroupCriterion::AppointmentPeriod {
            start: date("period_start")?,
            end: date("period_end")?,
        }),
        other => {
            return Err(StateError::Invalid(format!(
                "group {id}: unknown kind {other:?}"
            )));
        }
    };
    let system: Option<String> = row.try_get("identifier_system")?;
    let value: Option<String> = row.try_get("identifier_value")?;
    Ok(StoredGroup {
        name: row.try_get("name")?,
        identifier: value.map(|value| GroupIdentifier { system, value }),
        definition,
        created_ms: row.try_get("created_ms")?,
        updated_ms: row.try_get("updated_ms")?,
        id,
    })
}

impl StateStore {
    /// Adds a group; refused (every problem named) when it is not valid or its id is taken.
    /// A patient listed twice is kept once, at its first place.
    pub async fn add_group(&self, group: &NewGroup) -> Result<StoredGroup, StateError> {
        let problems = problems(group);
        if !problems.is_empty() {
            return Err(StateError::Invalid(problems.join("; ")));
        }
        let mut definition = group.definition.clone();
        if let GroupDefinition::Members(patients) = &mut definition {
            let mut seen = std::collections::HashSet::new();
            patients.retain(|patient| seen.insert(patient.clone()));
        }
        let now = now_ms();
        let stored = StoredGroup {
            id: group.id.clone(),
            name: group.name.trim().to_owned(),
            identifier: group.identifier.clone(),
            definition,
            created_ms: now,
            updated_ms: now,
        };
        let (kind, reference, start, end) = match &stored.definition {
            GroupDefinition::Members(_) => ("members", None, None, None),
            GroupDefinition::Criterion(criterion) => match criterion {
                GroupCriterion::GeneralPractitioner(id)
                | GroupCriterion::AppointmentLocation(id) => {
                    (criterion.kind(), Some(id.clone()), None, None)
                }
                GroupCriterion::AppointmentPeriod { start, end } => (
                    criterion.kind(),
                    None,
                    Some(start.format("%Y-%m-%d").to_string()),
                    Some(end.format("%Y-%m-%d").to_string()),
                ),
            },
        };
        let mut tx = self.pool().begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO fhir_group (id, name, name_folded, identifier_system, identifier_value, \
             kind, criterion_ref, period_start, period_end, created_ms, updated_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&stored.id)
        .bind(&stored.name)
        .bind(fold(&stored.name))
        .bind(stored.identifier.as_ref().and_then(|i| i.system.clone()))
        .bind(stored.identifier.as_ref().map(|i| i.value.clone()))
        .bind(kind)
        .bind(reference)
        .bind(start)
        .bind(end)
        .bind(stored.created_ms)
        .bind(stored.updated_ms)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(StateError::Invalid(format!(
                "group {} already exists",
                stored.id
            )));
        }
        if let GroupDefinition::Members(patients) = &stored.definition {
            let rows: Vec<(i64, &String)> = (0i64..).zip(patients).collect();
            // At most 500 rows (1,500 parameters) per statement, within every backend's limit.
            for chunk in rows.chunks(500) {
                let sql = format!(
                    "INSERT INTO fhir_group_member (group_id, ordinal, patient) VALUES {}",
                    value_rows(self.backend(), chunk.len(), 3)
                );
                let mut query = sqlx::query(&sql);
                for (ordinal, patient) in chunk {
                    query = query.bind(&stored.id).bind(*ordinal).bind(*patient);
                }
                query.execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(stored)
    }

    /// The group with this id.
    pub async fn group(&self, id: &str) -> Result<Option<StoredGroup>, StateError> {
        let Some(row) = sqlx::query(&format!("{GROUP_COLUMNS} WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
        else {
            return Ok(None);
        };
        let mut members = self.members_of(std::slice::from_ref(&row)).await?;
        group_from_row(&row, &mut members).map(Some)
    }

    /// Every group, by id.
    pub async fn groups(&self) -> Result<Vec<StoredGroup>, StateError> {
        let rows = sqlx::query(&format!("{GROUP_COLUMNS} ORDER BY id"))
            .fetch_all(self.pool())
            .await?;
        let mut members = HashMap::new();
        for row in sqlx::query("SELECT group_id, patient FROM fhir_group_member ORDER BY ordinal")
            .fetch_all(self.pool())
            .await?
        {
            members
                .entry(row.try_get("group_id")?)
                .or_insert_with(Vec::new)
                .push(row.try_get("patient")?);
        }
        rows.iter()
            .map(|row| group_from_row(row, &mut members))
            .collect()
    }

    /// Up to `count` groups matching `filter`, by id, after `after_id`.
    pub async fn search_groups(
        &self,
        filter: &GroupFilter,
        count: usize,
        after_id: Option<&str>,
    ) -> Result<Vec<StoredGroup>, StateError> {
        let (cursor, cursor_binds) = match after_id {
            Some(_) => ("id > $1 AND ", 1),
            None => ("", 0),
        };
        let (clause, binds) = where_clause(filter, cursor_binds);
        let sql = format!(
            "{GROUP_COLUMNS} WHERE {cursor}{clause} ORDER BY id LIMIT {}",
            count.max(1)
        );
        let mut query = sqlx::query(&sql);
        if let Some(after) = after_id {
            query = query.bind(after);
        }
        let rows = bind_all(query, &binds).fetch_all(self.pool()).await?;
        let mut members = self.members_of(&rows).await?;
        rows.iter()
            .map(|row| group_from_row(row, &mut members))
            .collect()
    }

    /// How many groups match `filter`.
    pub async fn count_groups(&self, filter: &GroupFilter) -> Result<u64, StateError> {
        let (clause, binds) = where_clause(filter, 0);
        let sql = format!("SELECT COUNT(*) AS n FROM fhir_group WHERE {clause}");
        let row = bind_all(sqlx::query(&sql), &binds)
            .fetch_one(self.pool())
            .await?;
        let n: i64 = row.try_get("n")?;
        Ok(n.max(0) as u64)
    }

    /// Removes a group and its member list; `false` when there was none.
    pub async fn remove_group(&self, id: &str) -> Result<bool, StateError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM fhir_group_member WHERE group_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let removed = sqlx::query("DELETE FROM fhir_group WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(removed.rows_affected() > 0)
    }

    /// The member lists of the member-list groups among `rows`, by group id, in their order.
    async fn members_of(
        &self,
        rows: &[AnyRow],
    ) -> Result<HashMap<String, Vec<String>>, StateError> {
        let mut ids = Vec::new();
        for row in rows {
            if row.try_get::<String, _>("kind")? == "members" {
                ids.push(row.try_get::<String, _>("id")?);
            }
        }
        let mut members: HashMap<String, Vec<String>> = HashMap::new();
        if ids.is_empty() {
            return Ok(members);
        }
        let sql = format!(
            "SELECT group_id, patient FROM fhir_group_member WHERE group_id IN ({}) \
             ORDER BY ordinal",
            placeholders(1, ids.len())
        );
        let mut query = sqlx::query(&sql);
        for id in &ids {
            query = query.bind(id);
        }
        for row in query.fetch_all(self.pool()).await? {
            members
                .entry(row.try_get("group_id")?)
                .or_default()
                .push(row.try_get("patient")?);
        }
        Ok(members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(ids: &[&str]) -> GroupDefinition {
        GroupDefinition::Members(ids.iter().map(|id| (*id).to_owned()).collect())
    }

    fn group(id: &str, definition: GroupDefinition) -> NewGroup {
        NewGroup {
            id: id.into(),
            name: "Diabetes follow-up".into(),
            identifier: None,
            definition,
        }
    }

    #[test]
    fn every_problem_of_a_group_is_named() {
        assert!(problems(&group("g-1.a", members(&["1", "2"]))).is_empty());
        let day = |text: &str| NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap();
        let bad = NewGroup {
            id: "has space".into(),
            name: "  ".into(),
            identifier: Some(GroupIdentifier {
                system: Some(" ".into()),
                value: String::new(),
            }),
            definition: members(&["1", "Patient/2"]),
        };
        assert_eq!(problems(&bad).len(), 5, "{:?}", problems(&bad));
        assert_eq!(problems(&group("g", members(&[]))).len(), 1);
        let backwards = GroupCriterion::AppointmentPeriod {
            start: day("2024-02-01"),
            end: day("2024-01-31"),
        };
        assert_eq!(
            problems(&group("g", GroupDefinition::Criterion(backwards))),
            ["the period starts (2024-02-01) after it ends (2024-01-31)"]
        );
        let one_day = GroupCriterion::AppointmentPeriod {
            start: day("2024-02-01"),
            end: day("2024-02-01"),
        };
        assert!(problems(&group("g", GroupDefinition::Criterion(one_day))).is_empty());
        let practitioner = GroupCriterion::GeneralPractitioner("a/b".into());
        assert_eq!(
            problems(&group("g", GroupDefinition::Criterion(practitioner))).len(),
            1
        );
    }

    #[test]
    fn filters_bind_every_value_in_placeholder_order() {
        let filter = GroupFilter {
            ids: vec![vec!["a".into(), "b".into()]],
            identifiers: vec![vec![
                IdentifierMatch {
                    system: SystemMatch::Is("urn:s".into()),
                    value: Some("1".into()),
                },
                IdentifierMatch {
                    system: SystemMatch::Absent,
                    value: Some("2".into()),
                },
                IdentifierMatch {
                    system: SystemMatch::Any,
                    value: Some("3".into()),
                },
                IdentifierMatch {
                    system: SystemMatch::Is("urn:t".into()),
                    value: None,
                },
            ]],
            names: vec![vec!["Dïa_".into()]],
        };
        let (clause, binds) = where_clause(&filter, 1);
        assert_eq!(
            clause,
            "id IN ($2, $3) AND ((identifier_system = $4 AND identifier_value = $5) OR \
             (identifier_system IS NULL AND identifier_value = $6) OR (identifier_value = $7) OR \
             (identifier_system = $8 AND identifier_value IS NOT NULL)) AND \
             (name_folded LIKE $9 ESCAPE '!')"
        );
        assert_eq!(binds.len(), 8);
        // The name is folded and its LIKE wildcards escaped.
        assert!(matches!(&binds[7], Bind::Text(pattern) if pattern == "dia!_%"));
        assert_eq!(where_clause(&GroupFilter::default(), 0).0, "1 = 1");
    }
}
