//! `topics.toml`: the subscription topics an adapter offers, checked against its validated
//! mappings (types served, `[changes]` declared, elements produced, search parameters).

use std::collections::BTreeSet;
use std::path::Path;

use super::{AdapterIssue, FORMAT_VERSION, FileContext};
use crate::adapter::format::{TopicSpec, TopicsFile};
use crate::adapter::model::{Adapter, Became, ChangeKind, Mapping, Node, TOPIC_URL_PREFIX, Topic};

/// Reports a `version` other than the one this build reads (`what`: the file's kind).
pub(super) fn check_version(ctx: &mut FileContext, version: u32, what: &str) {
    if version != FORMAT_VERSION {
        ctx.issue(
            "version",
            format!(
                "unsupported {what} format version {version}, this build reads version {FORMAT_VERSION}"
            ),
        );
    }
}

/// Reports `slug` unless it is made of lower-case letters, digits and '-' (topic slugs, rule ids).
pub(super) fn check_slug(ctx: &mut FileContext, path: &str, slug: &str, what: &str) {
    let ok = !slug.is_empty()
        && slug
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        ctx.issue(
            path,
            format!("{slug:?}: {what} uses lower-case letters, digits and '-'"),
        );
    }
}

/// Checks `topics.toml` against the validated adapter. Returns every issue found, or the topics
/// in file order.
pub fn validate_topics(
    adapter: &Adapter,
    file: &Path,
    spec: TopicsFile,
) -> Result<Vec<Topic>, Vec<AdapterIssue>> {
    let mut ctx = FileContext {
        file: file.to_owned(),
        issues: Vec::new(),
    };
    check_version(&mut ctx, spec.version, "topics");
    let mut topics = Vec::new();
    let mut slugs: Vec<String> = Vec::new();
    for (index, topic) in spec.topic.into_iter().enumerate() {
        let path = format!("topic[{index}]");
        if slugs.contains(&topic.slug) {
            ctx.issue(
                &format!("{path}.slug"),
                format!("{:?} is already the slug of another topic", topic.slug),
            );
        }
        slugs.push(topic.slug.clone());
        if let Some(topic) = compile_topic(&mut ctx, adapter, &path, topic) {
            topics.push(topic);
        }
    }
    if ctx.issues.is_empty() {
        Ok(topics)
    } else {
        Err(ctx.issues)
    }
}

fn compile_topic(
    ctx: &mut FileContext,
    adapter: &Adapter,
    path: &str,
    spec: TopicSpec,
) -> Option<Topic> {
    let issues_before = ctx.issues.len();
    check_slug(ctx, &format!("{path}.slug"), &spec.slug, "a slug");
    if spec.title.trim().is_empty() {
        ctx.issue(&format!("{path}.title"), "a topic needs a title");
    }
    let Some(def) = adapter.resources.get(&spec.resource) else {
        ctx.issue(
            &format!("{path}.resource"),
            format!("the adapter does not serve {:?}", spec.resource),
        );
        return None;
    };
    let mappings: Vec<&Mapping> = match &spec.mappings {
        Some(names) => {
            if names.is_empty() {
                ctx.issue(
                    &format!("{path}.mappings"),
                    "name at least one mapping, or leave the key out for every mapping of the type \
                     that declares [changes]",
                );
            }
            names
                .iter()
                .enumerate()
                .filter_map(|(index, name)| {
                    let key = format!("{path}.mappings[{index}]");
                    let found = def.mappings.iter().find(|m| &m.name == name);
                    match found {
                        None => {
                            let known: Vec<&str> =
                                def.mappings.iter().map(|m| m.name.as_str()).collect();
                            ctx.issue(
                                &key,
                                format!(
                                    "no {} mapping named {name:?} (there are: {})",
                                    spec.resource,
                                    known.join(", ")
                                ),
                            );
                            None
                        }
                        Some(mapping) if mapping.changes.is_none() => {
                            ctx.issue(
                                &key,
                                format!("{name} declares no [changes], so it cannot fire a topic"),
                            );
                            None
                        }
                        Some(mapping) => Some(mapping.as_ref()),
                    }
                })
                .collect()
        }
        None => {
            let detected: Vec<&Mapping> = def
                .mappings
                .iter()
                .filter(|m| m.changes.is_some())
                .map(|m| m.as_ref())
                .collect();
            if detected.is_empty() {
                ctx.issue(
                    &format!("{path}.resource"),
                    format!(
                        "no {} mapping declares [changes], so nothing can fire this topic",
                        spec.resource
                    ),
                );
            }
            detected
        }
    };
    if spec.on.is_empty() {
        ctx.issue(
            &format!("{path}.on"),
            "name at least one of \"create\", \"update\", \"delete\"",
        );
    }
    for (index, kind) in spec.on.iter().enumerate() {
        if spec.on[..index].contains(kind) {
            ctx.issue(&format!("{path}.on[{index}]"), "listed twice");
        }
    }
    let updates = spec.on.contains(&ChangeKind::Update);
    if !spec.changed.is_empty() && !updates {
        ctx.issue(
            &format!("{path}.changed"),
            "changed applies to updates only; add \"update\" to on",
        );
    }
    for (index, element) in spec.changed.iter().enumerate() {
        let key = format!("{path}.changed[{index}]");
        check_element(ctx, &key, element, &mappings, false);
        if spec.changed[..index].contains(element) {
            ctx.issue(&key, format!("{element:?} is listed twice"));
        }
    }
    if let Some(became) = &spec.became {
        check_element(
            ctx,
            &format!("{path}.became.element"),
            &became.element,
            &mappings,
            true,
        );
        if became.values.is_empty() || became.values.iter().any(String::is_empty) {
            ctx.issue(
                &format!("{path}.became.values"),
                "name at least one value, none of them empty",
            );
        }
        if spec.on.iter().all(|kind| *kind == ChangeKind::Delete) {
            ctx.issue(
                &format!("{path}.became"),
                "became is tested on create and update; on names neither",
            );
        }
    }
    for (index, filter) in spec.filters.iter().enumerate() {
        let key = format!("{path}.filters[{index}]");
        if filter != "_id" && !def.search.contains_key(filter) {
            let known: Vec<&str> = def.search.keys().map(String::as_str).collect();
            ctx.issue(
                &key,
                format!(
                    "{filter:?} is not a search parameter of {} in this adapter (it has _id, {})",
                    spec.resource,
                    known.join(", ")
                ),
            );
        }
        if spec.filters[..index].contains(filter) {
            ctx.issue(&key, format!("{filter:?} is listed twice"));
        }
    }
    if ctx.issues.len() > issues_before {
        return None;
    }
    Some(Topic {
        url: format!("{TOPIC_URL_PREFIX}{}", spec.slug),
        slug: spec.slug,
        title: spec.title,
        description: spec.description,
        resource_type: spec.resource,
        mappings: mappings.iter().map(|m| m.name.clone()).collect(),
        on: spec.on,
        changed: spec.changed,
        became: spec.became.map(|b| Became {
            element: b.element,
            values: b.values,
        }),
        filters: spec.filters,
    })
}

/// Refuses an element none of `mappings` produces at the top level (or, for `became`, one that
/// holds an object or array rather than a code in one of them).
fn check_element(
    ctx: &mut FileContext,
    key: &str,
    element: &str,
    mappings: &[&Mapping],
    primitive: bool,
) {
    let mut missing = Vec::new();
    for mapping in mappings {
        let fields = top_level_fields(mapping);
        match fields.iter().find(|(name, _)| *name == element) {
            None => missing.push(mapping.name.as_str()),
            Some((_, structured)) if primitive && *structured => ctx.issue(
                key,
                format!(
                    "{element:?} holds an object or array in {}; became compares a code",
                    mapping.name
                ),
            ),
            Some(_) => {}
        }
    }
    if !missing.is_empty() {
        ctx.issue(
            key,
            format!(
                "{element:?} is not a top-level element of {}",
                missing.join(", ")
            ),
        );
    }
}

/// The top-level element names a mapping's templates (and its variants') produce, each with
/// whether it holds an object or array.
fn top_level_fields(mapping: &Mapping) -> BTreeSet<(&str, bool)> {
    let templates =
        std::iter::once(&mapping.elements).chain(mapping.variants.iter().map(|v| &v.elements));
    let mut fields = BTreeSet::new();
    for template in templates {
        if let Node::Object { fields: named, .. } = template {
            for (name, node) in named {
                let structured = matches!(node, Node::Object { .. } | Node::Array(_));
                fields.insert((*name, structured));
            }
        }
    }
    fields
}
