//! Which subscription topics a detected change fires: pure evaluation of a topic's `on`,
//! `changed` and `became` against the served resource and the values kept from before.

use serde_json::{Map, Value};

use crate::adapter::model::{ChangeKind, Topic};

/// The top-level elements whose previous values change detection must keep for `mapping`:
/// the union of `changed` and `became.element` over the topics fed by it, sorted, deduplicated.
pub fn compared_elements(topics: &[Topic], mapping: &str) -> Vec<String> {
    let mut elements: Vec<String> = topics
        .iter()
        .filter(|topic| topic.mappings.iter().any(|m| m == mapping))
        .flat_map(|topic| {
            let became = topic.became.iter().map(|b| &b.element);
            topic.changed.iter().chain(became).cloned()
        })
        .collect();
    elements.sort();
    elements.dedup();
    elements
}

/// Those elements' values in `resource` (absent ones left out): what is stored as "before".
pub fn compared_values(elements: &[String], resource: &Value) -> Map<String, Value> {
    elements
        .iter()
        .filter_map(|name| Some((name.clone(), resource.get(name)?.clone())))
        .collect()
}

/// The topics a change of a resource served by `mapping` fires. `previous`: the stored compared
/// values (None on create); `current`: the served resource (None on delete).
pub fn fired_topics<'a>(
    topics: &'a [Topic],
    mapping: &str,
    kind: ChangeKind,
    previous: Option<&Map<String, Value>>,
    current: Option<&Value>,
) -> Vec<&'a Topic> {
    topics
        .iter()
        .filter(|topic| topic.on.contains(&kind) && topic.mappings.iter().any(|m| m == mapping))
        .filter(|topic| match kind {
            ChangeKind::Delete => true,
            ChangeKind::Create => became_now(topic, current),
            ChangeKind::Update => {
                let before = |element: &str| previous.and_then(|p| p.get(element));
                let now = |element: &str| current.and_then(|c| c.get(element));
                let changed = topic.changed.is_empty()
                    || topic
                        .changed
                        .iter()
                        .any(|element| before(element) != now(element));
                let became = topic.became.as_ref().is_none_or(|became| {
                    let was = before(became.element.as_str())
                        .is_some_and(|v| is_one_of(v, &became.values));
                    !was && became_now(topic, current)
                });
                changed && became
            }
        })
        .collect()
}

/// True when the topic has no `became`, or `current` holds one of its values.
fn became_now(topic: &Topic, current: Option<&Value>) -> bool {
    topic.became.as_ref().is_none_or(|became| {
        current
            .and_then(|resource| resource.get(&became.element))
            .is_some_and(|value| is_one_of(value, &became.values))
    })
}

/// A code element compares as its text; numbers and booleans as they print.
fn is_one_of(value: &Value, values: &[String]) -> bool {
    let text = match value {
        Value::String(text) => text.clone(),
        Value::Number(_) | Value::Bool(_) => value.to_string(),
        _ => return false,
    };
    values.contains(&text)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::adapter::model::{Became, TOPIC_URL_PREFIX};

    fn topic(
        slug: &str,
        mappings: &[&str],
        on: &[ChangeKind],
        changed: &[&str],
        became: Option<(&str, &[&str])>,
    ) -> Topic {
        Topic {
            slug: slug.to_owned(),
            url: format!("{TOPIC_URL_PREFIX}{slug}"),
            title: slug.to_owned(),
            description: String::new(),
            resource_type: "Appointment".to_owned(),
            mappings: mappings.iter().map(|m| (*m).to_owned()).collect(),
            on: on.to_vec(),
            changed: changed.iter().map(|c| (*c).to_owned()).collect(),
            became: became.map(|(element, values)| Became {
                element: element.to_owned(),
                values: values.iter().map(|v| (*v).to_owned()).collect(),
            }),
            filters: Vec::new(),
        }
    }

    fn appointment_topics() -> Vec<Topic> {
        use ChangeKind::{Create, Delete, Update};
        vec![
            topic(
                "appointment-booked",
                &["Appointment"],
                &[Create, Update],
                &[],
                Some(("status", &["booked", "pending"])),
            ),
            topic(
                "appointment-rescheduled",
                &["Appointment"],
                &[Update],
                &["start", "end"],
                None,
            ),
            topic(
                "appointment-cancelled",
                &["Appointment"],
                &[Update, Delete],
                &[],
                Some(("status", &["cancelled"])),
            ),
            topic(
                "any-appointment-change",
                &["Appointment"],
                &[Update],
                &[],
                None,
            ),
            topic(
                "other-mapping",
                &["Appointment.other"],
                &[Create, Update, Delete],
                &[],
                None,
            ),
        ]
    }

    fn slugs(fired: &[&Topic]) -> Vec<String> {
        fired.iter().map(|t| t.slug.clone()).collect()
    }

    #[test]
    fn compared_elements_are_the_sorted_union_for_the_mapping() {
        let topics = appointment_topics();
        assert_eq!(
            compared_elements(&topics, "Appointment"),
            vec!["end", "start", "status"]
        );
        assert!(compared_elements(&topics, "Appointment.other").is_empty());
        assert!(compared_elements(&topics, "Patient").is_empty());
    }

    #[test]
    fn compared_values_keep_present_elements_only() {
        let elements = vec!["end".to_owned(), "start".to_owned(), "status".to_owned()];
        let resource = json!({
            "resourceType": "Appointment",
            "status": "booked",
            "start": "2026-01-05T09:00:00-05:00",
            "participant": [{ "status": "accepted" }],
        });
        let values = compared_values(&elements, &resource);
        assert_eq!(
            Value::Object(values),
            json!({ "status": "booked", "start": "2026-01-05T09:00:00-05:00" })
        );
    }

    #[test]
    fn each_kind_of_change_fires_the_right_topics() {
        let topics = appointment_topics();
        let booked_at_nine = json!({ "status": "booked", "start": "09:00", "end": "09:30" });
        let booked_at_ten = json!({ "status": "booked", "start": "10:00", "end": "10:30" });
        let cancelled_at_nine = json!({ "status": "cancelled", "start": "09:00", "end": "09:30" });
        let proposed = json!({ "status": "proposed" });
        let before = |resource: &Value| {
            compared_values(&compared_elements(&topics, "Appointment"), resource)
        };
        let cases = vec![
            (
                "create booked",
                ChangeKind::Create,
                None,
                Some(&booked_at_nine),
                vec!["appointment-booked"],
            ),
            (
                "create proposed",
                ChangeKind::Create,
                None,
                Some(&proposed),
                vec![],
            ),
            (
                "moved",
                ChangeKind::Update,
                Some(before(&booked_at_nine)),
                Some(&booked_at_ten),
                vec!["appointment-rescheduled", "any-appointment-change"],
            ),
            (
                "cancelled",
                ChangeKind::Update,
                Some(before(&booked_at_nine)),
                Some(&cancelled_at_nine),
                vec!["appointment-cancelled", "any-appointment-change"],
            ),
            (
                "still cancelled (another element changed)",
                ChangeKind::Update,
                Some(before(&cancelled_at_nine)),
                Some(&cancelled_at_nine),
                vec!["any-appointment-change"],
            ),
            (
                "proposed then booked",
                ChangeKind::Update,
                Some(before(&proposed)),
                Some(&booked_at_nine),
                vec![
                    "appointment-booked",
                    "appointment-rescheduled",
                    "any-appointment-change",
                ],
            ),
            (
                "deleted",
                ChangeKind::Delete,
                Some(before(&booked_at_nine)),
                None,
                vec!["appointment-cancelled"],
            ),
        ];
        for (case, kind, previous, current, expected) in cases {
            let fired = fired_topics(&topics, "Appointment", kind, previous.as_ref(), current);
            assert_eq!(slugs(&fired), expected, "{case}");
        }
    }

    #[test]
    fn only_topics_fed_by_the_mapping_fire() {
        let topics = appointment_topics();
        let fired = fired_topics(&topics, "Appointment.other", ChangeKind::Delete, None, None);
        assert_eq!(slugs(&fired), vec!["other-mapping"]);
        assert!(
            fired_topics(
                &topics,
                "Patient",
                ChangeKind::Create,
                None,
                Some(&json!({}))
            )
            .is_empty()
        );
    }

    #[test]
    fn became_compares_numbers_and_booleans_as_text_and_ignores_structures() {
        let flag = topic(
            "flagged",
            &["M"],
            &[ChangeKind::Create],
            &[],
            Some(("active", &["true", "3"])),
        );
        let topics = [flag];
        for (resource, fires) in [
            (json!({ "active": true }), true),
            (json!({ "active": 3 }), true),
            (json!({ "active": false }), false),
            (json!({ "active": ["true"] }), false),
            (json!({}), false),
        ] {
            let fired = fired_topics(&topics, "M", ChangeKind::Create, None, Some(&resource));
            assert_eq!(fired.len() == 1, fires, "{resource}");
        }
    }
}
