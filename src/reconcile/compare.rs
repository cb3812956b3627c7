//! Reconciliation's comparison, pure: the resources of one type Portico serves against those the
//! EHR holds, matched by identifier, counted per day, their key statuses compared. Findings name
//! identifiers and ids, never other content.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::Value as Json;

/// The elements, in order, whose date places a resource on a day: the first one present counts
/// (`start` for Appointment, `created` for Claim, `effective[x]` for Observation, ...).
const DAY_ELEMENTS: &[&[&str]] = &[
    &["start"],
    &["created"],
    &["effectiveDateTime"],
    &["effectivePeriod", "start"],
    &["period", "start"],
    &["issued"],
    &["authoredOn"],
    &["date"],
];

/// What reconciliation keeps of one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Keyed {
    /// Its first identifier with a system (`system|value`), else `id:` and its id: the key both
    /// sides are matched on.
    pub key: String,
    pub id: String,
    /// `YYYY-MM-DD` of its first day element, as written (no time zone conversion).
    pub day: Option<String>,
    /// Its `status`, for the types that have one.
    pub status: Option<String>,
}

impl Keyed {
    pub fn of(resource: &Json) -> Keyed {
        let id = resource["id"].as_str().unwrap_or_default().to_owned();
        let key = resource["identifier"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|identifier| {
                let system = identifier["system"].as_str()?;
                let value = identifier["value"].as_str()?;
                Some(format!("{system}|{value}"))
            })
            .unwrap_or_else(|| format!("id:{id}"));
        let day = DAY_ELEMENTS.iter().find_map(|path| {
            let value = path.iter().fold(resource, |value, step| &value[step]);
            value
                .as_str()
                .and_then(|text| text.get(..10))
                .map(str::to_owned)
        });
        let status = resource["status"].as_str().map(str::to_owned);
        Keyed {
            key,
            id,
            day,
            status,
        }
    }
}

/// A record both sides hold whose key status differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Differing {
    pub key: String,
    pub portico_id: String,
    pub ehr_id: String,
    pub portico_status: Option<String>,
    pub ehr_status: Option<String>,
}

/// One type's comparison.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TypeReport {
    pub resource_type: String,
    pub portico: u64,
    pub ehr: u64,
    /// Days whose counts differ: day -> (Portico, EHR). `-` holds the resources without a day.
    pub days: BTreeMap<String, (u64, u64)>,
    /// Served by Portico, absent from the EHR.
    pub missing: Vec<Keyed>,
    /// Held by the EHR, not served by Portico.
    pub extra: Vec<Keyed>,
    pub differing: Vec<Differing>,
}

impl TypeReport {
    /// Missing, extra and differing records together.
    pub fn drift(&self) -> u64 {
        (self.missing.len() + self.extra.len() + self.differing.len()) as u64
    }
}

/// Compares what Portico serves with what the EHR holds, for one type.
pub fn compare(resource_type: &str, portico: Vec<Keyed>, ehr: Vec<Keyed>) -> TypeReport {
    let mut days: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for record in &portico {
        days.entry(day_label(record)).or_default().0 += 1;
    }
    for record in &ehr {
        days.entry(day_label(record)).or_default().1 += 1;
    }
    days.retain(|_, (ours, theirs)| ours != theirs);
    let portico_count = portico.len() as u64;
    let ehr_count = ehr.len() as u64;
    let mut theirs: HashMap<String, Keyed> = ehr.into_iter().map(|r| (r.key.clone(), r)).collect();
    let mut missing = Vec::new();
    let mut differing = Vec::new();
    for ours in portico {
        match theirs.remove(&ours.key) {
            None => missing.push(ours),
            Some(held) if held.status != ours.status => differing.push(Differing {
                key: ours.key,
                portico_id: ours.id,
                ehr_id: held.id,
                portico_status: ours.status,
                ehr_status: held.status,
            }),
            Some(_) => {}
        }
    }
    let mut extra: Vec<Keyed> = theirs.into_values().collect();
    extra.sort_by(|a, b| a.key.cmp(&b.key));
    missing.sort_by(|a, b| a.key.cmp(&b.key));
    differing.sort_by(|a, b| a.key.cmp(&b.key));
    TypeReport {
        resource_type: resource_type.to_owned(),
        portico: portico_count,
        ehr: ehr_count,
        days,
        missing,
        extra,
        differing,
    }
}

fn day_label(record: &Keyed) -> String {
    record.day.clone().unwrap_or_else(|| "-".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn appointment(id: &str, start: &str, status: &str) -> Json {
        json!({
            "resourceType": "Appointment",
            "id": id,
            "identifier": [{ "system": "urn:pms:apt", "value": id }],
            "status": status,
            "start": start,
        })
    }

    #[test]
    fn records_match_by_identifier_whatever_their_ids() {
        let ours = Keyed::of(&appointment("7", "2026-11-02T09:00:00-05:00", "booked"));
        let mut copy = appointment("7", "2026-11-02T09:00:00-05:00", "booked");
        copy["id"] = json!("ehr-123");
        let theirs = Keyed::of(&copy);
        assert_eq!(ours.key, "urn:pms:apt|7");
        assert_eq!(ours.day.as_deref(), Some("2026-11-02"));
        let report = compare("Appointment", vec![ours], vec![theirs]);
        assert_eq!(report.drift(), 0);
        assert!(report.days.is_empty());
    }

    #[test]
    fn missing_extra_and_differing_records_are_named_with_the_days_they_shift() {
        let ours = vec![
            Keyed::of(&appointment("1", "2026-11-02T09:00:00Z", "booked")),
            Keyed::of(&appointment("2", "2026-11-02T10:00:00Z", "cancelled")),
            Keyed::of(&appointment("3", "2026-11-03T10:00:00Z", "booked")),
        ];
        let theirs = vec![
            Keyed::of(&appointment("2", "2026-11-02T10:00:00Z", "booked")),
            Keyed::of(&appointment("3", "2026-11-03T10:00:00Z", "booked")),
            Keyed::of(&appointment("9", "2026-11-04T10:00:00Z", "booked")),
        ];
        let report = compare("Appointment", ours, theirs);
        assert_eq!((report.portico, report.ehr), (3, 3));
        assert_eq!(
            report
                .missing
                .iter()
                .map(|r| r.id.as_str())
                .collect::<Vec<_>>(),
            ["1"]
        );
        assert_eq!(
            report
                .extra
                .iter()
                .map(|r| r.id.as_str())
                .collect::<Vec<_>>(),
            ["9"]
        );
        assert_eq!(
            report.differing,
            vec![Differing {
                key: "urn:pms:apt|2".into(),
                portico_id: "2".into(),
                ehr_id: "2".into(),
                portico_status: Some("cancelled".into()),
                ehr_status: Some("booked".into()),
            }]
        );
        assert_eq!(report.drift(), 3);
        assert_eq!(
            report.days,
            BTreeMap::from([
                ("2026-11-02".to_owned(), (2, 1)),
                ("2026-11-04".to_owned(), (0, 1)),
            ])
        );
    }

    #[test]
    fn resources_without_identifiers_or_days_are_keyed_by_id_and_counted_apart() {
        let patient = Keyed::of(&json!({ "resourceType": "Patient", "id": "5" }));
        assert_eq!(patient.key, "id:5");
        assert_eq!(patient.day, None);
        assert_eq!(patient.status, None);
        let report = compare("Patient", vec![patient], Vec::new());
        assert_eq!(report.days, BTreeMap::from([("-".to_owned(), (1, 0))]));
    }
}
