//! The data dictionary of an adapter: for every FHIR element a mapping produces, the legacy columns
//! it comes from, the transform and code map applied and the search parameters bound to those
//! columns; the other columns each mapping reads (filters, joins, ...); and, per table, the columns
//! no mapping reads.
//!
//! Pure: `Dictionary::build` works from the validated `Adapter` and, optionally, the tables'
//! columns, which the caller reads from the live database or the adapter's fixture schema. The
//! renderers are deterministic (same adapter, same bytes), so a committed dictionary can be checked
//! for staleness.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::adapter::Adapter;
use crate::adapter::format::{ColumnType, SplitKeep, TextCase};
use crate::adapter::map::uuid_text;
use crate::adapter::model::{
    BASE_ALIAS, COLLECTION_ALIAS, ChangeDetection, ChangeStrategy, CodeMap, Collection, ColumnRef,
    Compartment, JoinDef, Mapping, Node, Predicate, PredicateOp, ProfileClaim, SearchKind,
    SearchParam, TokenTarget, Transform, joined_table,
};
use crate::auth::pages::escape;
use crate::dialect::ast::Value;

/// Where an adapter folder keeps the DDL of the tables it reads, if it has one.
pub const FIXTURE_SCHEMA: &str = "fixture/schema.sql";

/// The columns of legacy tables, and where they were read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableColumns {
    /// For readers: "the adapter's fixture schema `fixture/schema.sql`", a redacted database URL...
    pub source: String,
    /// Table name -> its column names, in the table's order.
    pub tables: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dictionary {
    pub adapter: String,
    pub title: String,
    pub timezone: String,
    /// In adapter order: resource types by name, then a type's mappings by file name.
    pub mappings: Vec<MappingEntry>,
    /// Every table the adapter reads, by name.
    pub tables: Vec<TableEntry>,
    /// Where the tables' columns came from; `None` when they were not available.
    pub columns_source: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingEntry {
    /// `Patient`, `Observation.vitals`.
    pub name: String,
    /// `Patient`, `Observation (vitals)`.
    pub label: String,
    /// The mapping file's name, without its folder.
    pub file: String,
    pub description: String,
    pub table: String,
    /// Which rows a patient-limited access sees: a sentence.
    pub compartment: String,
    /// The elements every resource of the mapping has, then those of each unpivot variant.
    pub groups: Vec<ElementGroup>,
    pub other_reads: Vec<OtherRead>,
    pub search: Vec<SearchEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementGroup {
    /// `Observation (vitals)`, or `Observation (vitals: weight)` for one variant's own elements.
    pub label: String,
    /// The variant's conditions (`form_vitals.weight > 0`); empty for shared elements.
    pub when: String,
    pub rows: Vec<ElementRow>,
}

/// One FHIR element (a leaf of the template) and where its value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementRow {
    /// `Patient.name[0].family`, `Claim.item[].net.value`.
    pub element: String,
    pub sources: Vec<SourceColumn>,
    /// How the value is made: `date`, `map gender: ...`, a literal such as `"final"`; empty when
    /// the column's text is used as it is.
    pub transform: String,
    /// Search parameters bound to any of the source columns.
    pub search: Vec<String>,
}

/// A legacy column as `table.column`, with the join alias when the table is read twice.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SourceColumn {
    pub table: String,
    pub column: String,
    pub alias: Option<String>,
}

impl fmt::Display for SourceColumn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.table, self.column)?;
        if let Some(alias) = &self.alias {
            write!(f, " ({alias})")?;
        }
        Ok(())
    }
}

/// A read that is not an element's value: a filter, a join, `latest`, a variant's or a
/// transform's condition, a collection's match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherRead {
    /// `row filter`, `left join`, `latest`, `variant`, `collection`, `condition of`, `change
    /// detection`.
    pub purpose: String,
    /// What the purpose is about: `list_options AS race`, `weight`, `Coverage.class[0]`; may be
    /// empty.
    pub subject: String,
    pub columns: Vec<SourceColumn>,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchEntry {
    pub name: String,
    pub kind: String,
    pub columns: Vec<SourceColumn>,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableEntry {
    pub table: String,
    /// Names of the mappings that read the table.
    pub read_by: Vec<String>,
    /// Its columns no mapping reads, sorted; `None` when the column source does not have the table
    /// (or there is no column source).
    pub unmapped: Option<Vec<String>>,
}

impl Dictionary {
    pub fn build(adapter: &Adapter, columns: Option<&TableColumns>) -> Dictionary {
        let mappings = adapter
            .resources
            .values()
            .flat_map(|def| &def.mappings)
            .map(|mapping| mapping_entry(adapter, mapping))
            .collect();
        Dictionary {
            adapter: adapter.name.clone(),
            title: adapter.title.clone(),
            timezone: adapter.timezone.name().to_owned(),
            mappings,
            tables: table_entries(adapter, columns),
            columns_source: columns.map(|c| c.source.clone()),
        }
    }
}

/// Every table the adapter reads, by name.
pub fn tables_read(adapter: &Adapter) -> Vec<String> {
    columns_read(adapter).into_keys().collect()
}

/// Table -> (mappings reading it, columns they read).
fn columns_read(adapter: &Adapter) -> BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> {
    let mut tables: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    for mapping in adapter.resources.values().flat_map(|def| &def.mappings) {
        for (table, column) in mapping.columns_read() {
            let entry = tables.entry(table.to_owned()).or_default();
            entry.0.insert(mapping.name.clone());
            entry.1.insert(column.to_owned());
        }
    }
    tables
}

fn table_entries(adapter: &Adapter, columns: Option<&TableColumns>) -> Vec<TableEntry> {
    columns_read(adapter)
        .into_iter()
        .map(|(table, (read_by, read))| {
            let unmapped = columns
                .and_then(|columns| find_table(columns, &table))
                .map(|all| unmapped_columns(all, &read));
            TableEntry {
                table,
                read_by: read_by.into_iter().collect(),
                unmapped,
            }
        })
        .collect()
}

/// A table's columns by exact name, else ignoring case (MySQL on Windows and macOS folds it).
fn find_table<'a>(columns: &'a TableColumns, table: &str) -> Option<&'a Vec<String>> {
    columns.tables.get(table).or_else(|| {
        columns
            .tables
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(table))
            .map(|(_, columns)| columns)
    })
}

/// The columns of `all` that are not in `read`, compared ignoring case as SQL identifiers are.
fn unmapped_columns(all: &[String], read: &BTreeSet<String>) -> Vec<String> {
    let mut unmapped: Vec<String> = all
        .iter()
        .filter(|column| !read.iter().any(|r| r.eq_ignore_ascii_case(column)))
        .cloned()
        .collect();
    unmapped.sort_by(|a, b| {
        a.to_ascii_lowercase()
            .cmp(&b.to_ascii_lowercase())
            .then(a.cmp(b))
    });
    unmapped.dedup();
    unmapped
}

/// The column names of each `CREATE TABLE name (` block of a DDL script: the first word of every
/// line inside the block, except key and constraint lines. Tolerant: anything else is skipped.
pub fn parse_schema(sql: &str) -> BTreeMap<String, Vec<String>> {
    const NOT_COLUMNS: &[&str] = &[
        "PRIMARY",
        "KEY",
        "UNIQUE",
        "INDEX",
        "CONSTRAINT",
        "FOREIGN",
        "CHECK",
        "FULLTEXT",
        "SPATIAL",
    ];
    let mut tables = BTreeMap::new();
    let mut current: Option<(String, Vec<String>)> = None;
    for line in sql.lines().map(str::trim) {
        if let Some((_, columns)) = current.as_mut() {
            if line.starts_with(')') {
                if let Some((name, columns)) = current.take() {
                    tables.insert(name, columns);
                }
            } else if let Some(name) = first_identifier(line)
                && !line.starts_with("--")
                && !NOT_COLUMNS.iter().any(|w| name.eq_ignore_ascii_case(w))
            {
                columns.push(name);
            }
            continue;
        }
        let upper = line.to_ascii_uppercase();
        let Some(rest) = upper.strip_prefix("CREATE TABLE ") else {
            continue;
        };
        let rest = rest.strip_prefix("IF NOT EXISTS ").unwrap_or(rest);
        // The name in the original case: it starts where it starts in the upper-cased line.
        let name_text = &line[line.len() - rest.len()..];
        let name_text = name_text.split('(').next().unwrap_or_default();
        if let Some(name) = first_identifier(name_text) {
            current = Some((name, Vec::new()));
        }
    }
    tables
}

/// The first word of `text`, unquoted (`name`, `` `name` ``, `"name"`, `[name]`).
fn first_identifier(text: &str) -> Option<String> {
    let text = text.trim_start();
    let (open, close) = match text.chars().next()? {
        '`' => ('`', '`'),
        '"' => ('"', '"'),
        '[' => ('[', ']'),
        _ => {
            let word: String = text
                .chars()
                .take_while(|c| c.is_alphanumeric() || matches!(c, '_' | '$' | '#'))
                .collect();
            return (!word.is_empty()).then_some(word);
        }
    };
    let inner = text.strip_prefix(open)?;
    let end = inner.find(close)?;
    let name = &inner[..end];
    (!name.is_empty()).then(|| name.to_owned())
}

// ---------------------------------------------------------------------------------------------
// Building a mapping's entry.

fn mapping_entry(adapter: &Adapter, mapping: &Mapping) -> MappingEntry {
    let walker = Walker { adapter, mapping };
    let label = mapping_label(&mapping.name, None);
    let mut shared = ElementGroup {
        label: label.clone(),
        when: String::new(),
        rows: walker.meta_rows(),
    };
    let mut other_reads = walker.source_reads();
    let mut groups = Vec::new();
    if mapping.variants.is_empty() {
        let walked = walker.fields(&mapping.elements);
        for (_, field) in walked {
            shared.rows.extend(field.rows);
            other_reads.extend(field.conditions);
        }
        groups.push(shared);
    } else {
        // The model keeps each variant's merged template, not what it overrides: an element is
        // shared when every variant yields the same rows for it.
        let per_variant: Vec<Vec<(String, Walked)>> = mapping
            .variants
            .iter()
            .map(|variant| walker.fields(&variant.elements))
            .collect();
        let mut keys: Vec<&str> = Vec::new();
        for fields in &per_variant {
            for (key, _) in fields {
                if !keys.contains(&key.as_str()) {
                    keys.push(key);
                }
            }
        }
        let field = |fields: &'_ [(String, Walked)], key: &str| -> Option<Walked> {
            fields
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, w)| w.clone())
        };
        let mut own: Vec<Vec<Walked>> = vec![Vec::new(); per_variant.len()];
        for key in keys {
            let walked: Vec<Option<Walked>> = per_variant.iter().map(|f| field(f, key)).collect();
            let first = walked.first().cloned().flatten();
            if let Some(first) =
                first.filter(|first| walked.iter().all(|w| w.as_ref() == Some(first)))
            {
                shared.rows.extend(first.rows);
                other_reads.extend(first.conditions);
                continue;
            }
            for (index, walked) in walked.into_iter().enumerate() {
                own[index].extend(walked);
            }
        }
        groups.push(shared);
        for (variant, walked) in mapping.variants.iter().zip(own) {
            let mut rows = Vec::new();
            for field in walked {
                rows.extend(field.rows);
                other_reads.extend(field.conditions.into_iter().map(|mut read| {
                    read.subject = format!("{} (variant {})", read.subject, variant.key);
                    read
                }));
            }
            groups.push(ElementGroup {
                label: mapping_label(&mapping.name, Some(&variant.key)),
                when: walker.conditions(&variant.when, None),
                rows,
            });
        }
    }
    MappingEntry {
        name: mapping.name.clone(),
        label,
        file: mapping
            .file
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default(),
        description: mapping
            .description
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
        table: mapping.table.clone(),
        compartment: compartment_text(&mapping.compartment),
        groups,
        other_reads,
        search: walker.search_entries(),
    }
}

/// The `compartment` declaration in words, for readers deciding what patient apps may see.
fn compartment_text(compartment: &Compartment) -> String {
    match compartment {
        Compartment::Undeclared => "Patient compartment: not declared, so an access limited to \
                                    patients gets none of its rows."
            .into(),
        Compartment::Shared => "Patient compartment: shared (no patient's record), served to any \
                                access that grants the type."
            .into(),
        Compartment::Patient(links) => {
            let links: Vec<String> = links.iter().map(|l| format!("`{l}`")).collect();
            format!(
                "Patient compartment: a row belongs to the patient(s) that {} reference{}.",
                links.join(", "),
                if links.len() == 1 { "s" } else { "" }
            )
        }
    }
}

/// `Patient`; `Observation (vitals)` for a mapping named `Observation.vitals`; with a variant key,
/// `Observation (vitals: weight)`.
fn mapping_label(name: &str, variant: Option<&str>) -> String {
    match (name.split_once('.'), variant) {
        (Some((resource, mapping)), Some(key)) => format!("{resource} ({mapping}: {key})"),
        (Some((resource, mapping)), None) => format!("{resource} ({mapping})"),
        (None, Some(key)) => format!("{name} ({key})"),
        (None, None) => name.to_owned(),
    }
}

/// The rows and conditions one top-level element yields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Walked {
    rows: Vec<ElementRow>,
    conditions: Vec<OtherRead>,
}

/// A column as a node refers to it: in the mapping's row, or in a collection's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    Row(usize),
    Collection(usize, usize),
}

/// Where a node sits: which row its column indices point into, the enclosing `split`, and the
/// notes (`if` conditions, `coalesce` options) that qualify its value.
#[derive(Debug, Clone, Default)]
struct Context {
    collection: Option<usize>,
    split: Option<(usize, String)>,
    notes: Vec<String>,
}

impl Context {
    fn at(&self, index: usize) -> At {
        match self.collection {
            Some(collection) => At::Collection(collection, index),
            None => At::Row(index),
        }
    }

    fn with_note(&self, note: String) -> Context {
        let mut context = self.clone();
        context.notes.push(note);
        context
    }
}

struct Walker<'a> {
    adapter: &'a Adapter,
    mapping: &'a Mapping,
}

impl Walker<'_> {
    /// `id`, `meta.lastUpdated` and `meta.profile`: elements Portico sets from the source keys.
    fn meta_rows(&self) -> Vec<ElementRow> {
        let mapping = self.mapping;
        let resource = &mapping.resource_type;
        let id = &mapping.id;
        let mut template = id.prefix.clone();
        for (position, &index) in id.columns.iter().enumerate() {
            if position > 0 {
                template.push('-');
            }
            template.push_str(&format!("{{{}}}", mapping.columns[index].column));
        }
        if !mapping.variants.is_empty() {
            template.push_str("-{variant key}");
        }
        if id.text {
            template.push_str(" (text keys)");
        }
        if id.uuid {
            template.push_str(" (binary UUID as hex)");
        }
        let mut rows = vec![ElementRow {
            element: format!("{resource}.id"),
            sources: id
                .columns
                .iter()
                .map(|&i| self.source(At::Row(i)))
                .collect(),
            transform: format!("id {template}"),
            search: vec!["_id".into()],
        }];
        if let Some(index) = mapping.last_updated {
            rows.push(ElementRow {
                element: format!("{resource}.meta.lastUpdated"),
                sources: vec![self.source(At::Row(index))],
                transform: "instant".into(),
                search: vec!["_lastUpdated".into()],
            });
        }
        for (position, profile) in mapping.profiles.iter().enumerate() {
            rows.push(ElementRow {
                element: format!("{resource}.meta.profile[{position}]"),
                sources: Vec::new(),
                transform: profile_transform(profile),
                search: Vec::new(),
            });
        }
        rows
    }

    /// The template's top-level elements, each walked on its own.
    fn fields(&self, elements: &Node) -> Vec<(String, Walked)> {
        let resource = &self.mapping.resource_type;
        match elements {
            Node::Object { fields, .. } => fields
                .iter()
                .map(|(key, node)| {
                    let mut walked = Walked::default();
                    let path = format!("{resource}.{key}");
                    self.walk(node, &path, &Context::default(), &mut walked);
                    ((*key).to_owned(), walked)
                })
                .collect(),
            other => {
                let mut walked = Walked::default();
                self.walk(other, resource, &Context::default(), &mut walked);
                vec![(String::new(), walked)]
            }
        }
    }

    fn walk(&self, node: &Node, path: &str, context: &Context, out: &mut Walked) {
        match node {
            // Validation leaves a null literal only where it reported a problem.
            Node::Literal(value) if value.is_null() => {}
            Node::Literal(value) => self.leaf(path, context, Vec::new(), json_text(value), out),
            Node::Column(index) => {
                self.leaf(path, context, vec![context.at(*index)], String::new(), out)
            }
            Node::SplitItem => {
                let (columns, transform) = match &context.split {
                    Some((index, separator)) => {
                        (vec![context.at(*index)], format!("split on {separator:?}"))
                    }
                    None => (Vec::new(), "split piece".into()),
                };
                self.leaf(path, context, columns, transform, out);
            }
            Node::Object { fields, .. } => {
                for (key, node) in fields {
                    self.walk(node, &format!("{path}.{key}"), context, out);
                }
            }
            Node::Array(items) => {
                for (position, item) in items.iter().enumerate() {
                    // A split or each item contributes its items directly: no position of its own.
                    let item_path = if flattens(item) {
                        path.to_owned()
                    } else {
                        format!("{path}[{position}]")
                    };
                    self.walk(item, &item_path, context, out);
                }
            }
            Node::Transform(transform) => match transform.as_ref() {
                Transform::Each {
                    collection,
                    element,
                    separator,
                } => {
                    let inner = Context {
                        collection: Some(*collection),
                        ..context.clone()
                    };
                    let path = if separator.is_none() {
                        format!("{path}[]")
                    } else {
                        path.to_owned()
                    };
                    self.walk(element, &path, &inner, out);
                }
                Transform::Split {
                    column,
                    separator,
                    item,
                    keep,
                } => {
                    let inner = Context {
                        split: Some((*column, separator.clone())),
                        ..context.clone()
                    };
                    let path = if keep.is_array() {
                        format!("{path}[]")
                    } else {
                        path.to_owned()
                    };
                    self.walk(item, &path, &inner, out);
                }
                Transform::If { when, then } => {
                    let condition = self.conditions(when, context.collection);
                    out.conditions.push(OtherRead {
                        purpose: "condition of".into(),
                        subject: path.to_owned(),
                        columns: self.predicate_columns(when, context.collection),
                        detail: condition.clone(),
                    });
                    self.walk(
                        then,
                        path,
                        &context.with_note(format!("if {condition}")),
                        out,
                    );
                }
                Transform::Coalesce(options) if !options.iter().all(is_scalar) => {
                    let count = options.len();
                    for (position, option) in options.iter().enumerate() {
                        let note = format!("first present, option {}/{count}", position + 1);
                        self.walk(option, path, &context.with_note(note), out);
                    }
                }
                other => {
                    let mut columns = Vec::new();
                    self.gather(node, context, &mut columns);
                    let description = self.describe(other, context, false);
                    self.leaf(path, context, columns, description, out);
                }
            },
        }
    }

    fn leaf(
        &self,
        path: &str,
        context: &Context,
        columns: Vec<At>,
        transform: String,
        out: &mut Walked,
    ) {
        let notes = context.notes.join(", ");
        let transform = match (notes.is_empty(), transform.is_empty()) {
            (true, _) => transform,
            (false, true) => notes,
            (false, false) => format!("{notes}: {transform}"),
        };
        let row_columns: Vec<&ColumnRef> = columns
            .iter()
            .filter_map(|at| match at {
                At::Row(index) => Some(&self.mapping.columns[*index]),
                At::Collection(..) => None,
            })
            .collect();
        let child_columns: Vec<(usize, &ColumnRef)> = columns
            .iter()
            .filter_map(|at| match at {
                At::Collection(collection, index) => Some((
                    *collection,
                    &self.mapping.collections[*collection].columns[*index],
                )),
                At::Row(_) => None,
            })
            .collect();
        let search = self
            .mapping
            .search
            .iter()
            .filter(|(_, param)| {
                param_columns(param)
                    .iter()
                    .any(|column| match param.collection {
                        None => row_columns.contains(column),
                        Some(collection) => child_columns.contains(&(collection, *column)),
                    })
            })
            .map(|(name, _)| name.clone())
            .collect();
        out.rows.push(ElementRow {
            element: path.to_owned(),
            sources: columns.into_iter().map(|at| self.source(at)).collect(),
            transform,
            search,
        });
    }

    /// The columns a value reads, in order, once each (conditions excluded: they are listed as
    /// other reads).
    fn gather(&self, node: &Node, context: &Context, out: &mut Vec<At>) {
        match node {
            Node::Literal(_) => {}
            Node::Column(index) => push_at(out, context.at(*index)),
            Node::SplitItem => {
                if let Some((index, _)) = &context.split {
                    push_at(out, context.at(*index));
                }
            }
            Node::Object { fields, .. } => {
                for (_, node) in fields {
                    self.gather(node, context, out);
                }
            }
            Node::Array(items) => {
                for item in items {
                    self.gather(item, context, out);
                }
            }
            Node::Transform(transform) => self.gather_transform(transform, context, out),
        }
    }

    fn gather_transform(&self, transform: &Transform, context: &Context, out: &mut Vec<At>) {
        match transform {
            Transform::Date { column, .. }
            | Transform::Map { column, .. }
            | Transform::Integer { column }
            | Transform::Length { column, .. }
            | Transform::Boolean { column }
            | Transform::Text { column, .. } => push_at(out, context.at(*column)),
            Transform::Number { column, times, .. } => {
                push_at(out, context.at(*column));
                if let Some(times) = times {
                    push_at(out, context.at(*times));
                }
            }
            Transform::DateTime {
                column,
                time,
                add_minutes,
                ..
            } => {
                push_at(out, context.at(*column));
                if let Some(time) = time {
                    push_at(out, context.at(*time));
                }
                if let Some(minutes) = add_minutes {
                    self.gather(minutes, context, out);
                }
            }
            Transform::Reference { columns, .. } => {
                for column in columns {
                    push_at(out, context.at(*column));
                }
            }
            Transform::Sum { collection, column } => {
                push_at(out, At::Collection(*collection, *column))
            }
            Transform::Sequence => {}
            Transform::Concat { parts: nodes, .. } | Transform::Coalesce(nodes) => {
                for node in nodes {
                    self.gather(node, context, out);
                }
            }
            Transform::If { then, .. } => self.gather(then, context, out),
            Transform::Split { column, item, .. } => {
                push_at(out, context.at(*column));
                let inner = Context {
                    split: Some((*column, String::new())),
                    ..context.clone()
                };
                self.gather(item, &inner, out);
            }
            Transform::Each {
                collection,
                element,
                ..
            } => {
                let inner = Context {
                    collection: Some(*collection),
                    ..context.clone()
                };
                self.gather(element, &inner, out);
            }
        }
    }

    /// A transform in words. `inline` (inside `coalesce` or `concat`) names its columns too,
    /// since the row's sources then do not say which column goes with which part.
    fn describe(&self, transform: &Transform, context: &Context, inline: bool) -> String {
        let (head, tail) = match transform {
            Transform::Date { format, .. } => (
                "date".to_owned(),
                format
                    .as_ref()
                    .map(|f| format!(" (format {f:?})"))
                    .unwrap_or_default(),
            ),
            Transform::DateTime {
                time,
                format,
                instant,
                zone,
                add_minutes,
                ..
            } => {
                let mut options = Vec::new();
                if time.is_some() {
                    options.push("date + time".to_owned());
                }
                if let Some(format) = format {
                    options.push(format!("format {format:?}"));
                }
                if let Some(zone) = zone {
                    options.push(format!("zone {}", zone.name()));
                }
                if *instant {
                    options.push("instant".to_owned());
                }
                if add_minutes.is_some() {
                    options.push("plus minutes".to_owned());
                }
                let tail = if options.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", options.join(", "))
                };
                ("datetime".to_owned(), tail)
            }
            Transform::Map { map, .. } => {
                (format!("map {}", map.name), format!(" {}", map_text(map)))
            }
            Transform::Number {
                multiply,
                times,
                decimals,
                positive,
                ..
            } => {
                let mut tail = String::new();
                if let Some(multiply) = multiply {
                    tail.push_str(&format!(" ×{multiply}"));
                }
                if let Some(times) = times {
                    tail.push_str(&format!(" ×{}", self.source(context.at(*times))));
                }
                if let Some(decimals) = decimals {
                    tail.push_str(&format!(" {decimals}dp"));
                }
                if *positive {
                    tail.push_str(" >0");
                }
                ("number".to_owned(), tail)
            }
            Transform::Integer { .. } => ("integer".to_owned(), String::new()),
            Transform::Length { multiply, .. } => (
                "length".to_owned(),
                multiply.map(|m| format!(" ×{m}")).unwrap_or_default(),
            ),
            Transform::Boolean { .. } => ("boolean".to_owned(), String::new()),
            Transform::Text { case, .. } => (
                "text".to_owned(),
                match case {
                    Some(TextCase::Lower) => " lower".to_owned(),
                    Some(TextCase::Upper) => " upper".to_owned(),
                    None => String::new(),
                },
            ),
            Transform::Reference {
                resource_type,
                prefix,
                ..
            } => (
                format!("reference {}", self.target_name(resource_type, prefix)),
                String::new(),
            ),
            Transform::Sum { collection, .. } => (
                "sum".to_owned(),
                format!(
                    " over collection {}, 2dp",
                    self.mapping.collections[*collection].name
                ),
            ),
            Transform::Sequence => {
                let collection = context
                    .collection
                    .map(|index| self.mapping.collections[index].name.as_str())
                    .unwrap_or_default();
                return format!("sequence (position in collection {collection})");
            }
            Transform::Concat { parts, separator } => {
                let parts: Vec<String> = parts.iter().map(|p| self.inline(p, context)).collect();
                return format!("concat with {separator:?}: {}", parts.join(", "));
            }
            Transform::Coalesce(options) => {
                let options: Vec<String> =
                    options.iter().map(|o| self.inline(o, context)).collect();
                return format!("first present of: {}", options.join("; "));
            }
            Transform::If { when, then } => {
                return format!(
                    "if {}: {}",
                    self.conditions(when, context.collection),
                    self.inline(then, context)
                );
            }
            Transform::Split {
                separator, keep, ..
            } => {
                let which = match keep {
                    SplitKeep::All => "",
                    SplitKeep::AllButLast => ", all pieces but the last",
                    SplitKeep::First => ", first piece",
                    SplitKeep::Last => ", last piece",
                };
                return format!("split on {separator:?}{which}");
            }
            Transform::Each {
                collection,
                separator,
                ..
            } => {
                let name = &self.mapping.collections[*collection].name;
                return match separator {
                    None => format!("each row of collection {name}"),
                    Some(separator) => {
                        format!("each row of collection {name}, joined with {separator:?}")
                    }
                };
            }
        };
        if !inline {
            return format!("{head}{tail}");
        }
        let mut columns = Vec::new();
        self.gather_transform(transform, context, &mut columns);
        let names: Vec<String> = columns
            .iter()
            .map(|at| self.source(*at).to_string())
            .collect();
        format!("{head}({}){tail}", names.join(", "))
    }

    /// A value inside `coalesce` or `concat`, in words.
    fn inline(&self, node: &Node, context: &Context) -> String {
        match node {
            Node::Literal(value) => json_text(value),
            Node::Column(index) => self.source(context.at(*index)).to_string(),
            Node::SplitItem => "split piece".to_owned(),
            Node::Transform(transform) => self.describe(transform, context, true),
            Node::Object { .. } | Node::Array(_) => "(object)".to_owned(),
        }
    }

    /// `Practitioner`, or `Organization.facility` when the type has several mappings.
    fn target_name(&self, resource_type: &str, prefix: &str) -> String {
        let mappings = self
            .adapter
            .resources
            .get(resource_type)
            .map(|def| def.mappings.as_slice())
            .unwrap_or_default();
        match mappings {
            [_, _, ..] => mappings
                .iter()
                .find(|m| m.id.prefix == prefix)
                .map(|m| m.name.clone())
                .unwrap_or_else(|| format!("{resource_type} (prefix {prefix})")),
            _ => resource_type.to_owned(),
        }
    }

    fn source(&self, at: At) -> SourceColumn {
        match at {
            At::Row(index) => row_source(self.mapping, &self.mapping.columns[index]),
            At::Collection(collection, index) => {
                let collection = &self.mapping.collections[collection];
                collection_source(collection, &collection.columns[index])
            }
        }
    }

    /// A column of a predicate, which names its column rather than indexing a SELECT list.
    fn scoped_source(&self, column: &ColumnRef, collection: Option<usize>) -> SourceColumn {
        match collection {
            Some(index) => collection_source(&self.mapping.collections[index], column),
            None => row_source(self.mapping, column),
        }
    }

    fn predicate_columns(
        &self,
        predicates: &[Predicate],
        collection: Option<usize>,
    ) -> Vec<SourceColumn> {
        let mut columns = Vec::new();
        for column in predicates.iter().flat_map(Predicate::columns) {
            push_unique(&mut columns, self.scoped_source(column, collection));
        }
        columns
    }

    /// Conditions in words, ANDed: `form_vitals.activity = 1 and forms.formdir = "vitals"`.
    fn conditions(&self, predicates: &[Predicate], collection: Option<usize>) -> String {
        let texts: Vec<String> = predicates
            .iter()
            .map(|predicate| {
                let column = self.scoped_source(&predicate.column, collection);
                let op = match &predicate.op {
                    PredicateOp::Equals(value) => format!("= {}", value_text(value)),
                    PredicateOp::NotEquals(value) => format!("<> {}", value_text(value)),
                    PredicateOp::In(values) => format!("in ({})", values_text(values)),
                    PredicateOp::NotIn(values) => format!("not in ({})", values_text(values)),
                    PredicateOp::Null(true) => "is null".to_owned(),
                    PredicateOp::Null(false) => "is not null".to_owned(),
                    PredicateOp::Empty(true) => "is empty".to_owned(),
                    PredicateOp::Empty(false) => "is not empty".to_owned(),
                    PredicateOp::Positive => "> 0".to_owned(),
                    PredicateOp::EqualsColumn(other) => {
                        format!("= {}", self.scoped_source(other, collection))
                    }
                };
                format!("{column} {op}")
            })
            .collect();
        texts.join(" and ")
    }

    /// Every read that is not an element's value: filters, joins, `latest`, variants' conditions
    /// and collections. (Conditions of `if` transforms are collected while walking elements.)
    fn source_reads(&self) -> Vec<OtherRead> {
        let mapping = self.mapping;
        let mut reads = Vec::new();
        if !mapping.filter.is_empty() {
            reads.push(OtherRead {
                purpose: "row filter".into(),
                subject: String::new(),
                columns: self.predicate_columns(&mapping.filter, None),
                detail: self.conditions(&mapping.filter, None),
            });
        }
        for join in &mapping.joins {
            let kind = if join.required { "inner" } else { "left" };
            reads.push(OtherRead {
                purpose: format!("{kind} join"),
                subject: format!("{} AS {}", join.table, join.alias),
                columns: self.predicate_columns(&join.on, None),
                detail: self.conditions(&join.on, None),
            });
        }
        if let Some(latest) = &mapping.latest {
            let column = row_source(mapping, &latest.column);
            let partition: Vec<SourceColumn> = latest
                .partition
                .iter()
                .map(|c| row_source(mapping, c))
                .collect();
            let partition_text: Vec<String> = partition.iter().map(ToString::to_string).collect();
            reads.push(OtherRead {
                purpose: "latest".into(),
                subject: String::new(),
                detail: format!(
                    "only rows with the greatest {column} per {}",
                    partition_text.join(", ")
                ),
                columns: std::iter::once(column).chain(partition).collect(),
            });
        }
        for variant in &mapping.variants {
            reads.push(OtherRead {
                purpose: "variant".into(),
                subject: variant.key.clone(),
                columns: self.predicate_columns(&variant.when, None),
                detail: if variant.when.is_empty() {
                    "every row".into()
                } else {
                    self.conditions(&variant.when, None)
                },
            });
        }
        for (index, collection) in mapping.collections.iter().enumerate() {
            let mut columns = Vec::new();
            let mut matches = Vec::new();
            for (child, &parent) in collection.columns.iter().zip(&collection.match_parent) {
                let child = collection_source(collection, child);
                let parent = self.source(At::Row(parent));
                matches.push(format!("{child} = {parent}"));
                push_unique(&mut columns, child);
                push_unique(&mut columns, parent);
            }
            let mut detail = format!("match {}", matches.join(" and "));
            for join in &collection.joins {
                let kind = if join.required { "inner" } else { "left" };
                for column in self.predicate_columns(&join.on, Some(index)) {
                    push_unique(&mut columns, column);
                }
                detail.push_str(&format!(
                    "; {kind} join {} AS {} on {}",
                    join.table,
                    join.alias,
                    self.conditions(&join.on, Some(index))
                ));
            }
            if !collection.filter.is_empty() {
                for column in self.predicate_columns(&collection.filter, Some(index)) {
                    push_unique(&mut columns, column);
                }
                detail.push_str(&format!(
                    "; filter {}",
                    self.conditions(&collection.filter, Some(index))
                ));
            }
            if !collection.order_by.is_empty() {
                let order: Vec<SourceColumn> = collection
                    .order_by
                    .iter()
                    .map(|column| collection_source(collection, column))
                    .collect();
                let order_text: Vec<String> = order.iter().map(ToString::to_string).collect();
                detail.push_str(&format!("; order by {}", order_text.join(", ")));
                for column in order {
                    push_unique(&mut columns, column);
                }
            }
            reads.push(OtherRead {
                purpose: "collection".into(),
                subject: format!("{} from {}", collection.name, collection.table),
                columns,
                detail,
            });
        }
        if let Some(changes) = &mapping.changes {
            reads.push(self.change_detection(changes));
        }
        reads
    }

    /// `[changes]`: which columns change detection compares with its watermark, and how often a
    /// keyset scan reads the whole table.
    fn change_detection(&self, changes: &ChangeDetection) -> OtherRead {
        let scan = format!("keyset scan of {} rows per pass", changes.scan_rows);
        let reconcile = changes
            .reconcile
            .map(|every| format!("; every {} min a full {scan}", every.as_secs() / 60));
        let (subject, columns, detail) = match &changes.strategy {
            ChangeStrategy::Timestamp { columns, overlap } => (
                "timestamp",
                columns.iter().map(|&i| self.source(At::Row(i))).collect(),
                format!(
                    "any column >= the last watermark - {} s{}",
                    overlap.as_secs(),
                    reconcile.unwrap_or_default()
                ),
            ),
            ChangeStrategy::RowVersion { column } => (
                "rowversion",
                vec![self.source(At::Row(*column))],
                format!(
                    "> the last one seen and < MIN_ACTIVE_ROWVERSION(){}",
                    reconcile.unwrap_or_default()
                ),
            ),
            ChangeStrategy::Scan => ("scan", Vec::new(), scan),
        };
        OtherRead {
            purpose: "change detection".into(),
            subject: subject.into(),
            columns,
            detail,
        }
    }

    fn search_entries(&self) -> Vec<SearchEntry> {
        self.mapping
            .search
            .iter()
            .map(|(name, param)| {
                let columns: Vec<SourceColumn> = param_columns(param)
                    .into_iter()
                    .map(|column| match param.collection {
                        None => row_source(self.mapping, column),
                        Some(index) => collection_source(&self.mapping.collections[index], column),
                    })
                    .collect();
                let (kind, mut details) = match &param.kind {
                    SearchKind::String { words, .. } => (
                        "string",
                        if *words {
                            vec!["matches the start of any word".to_owned()]
                        } else {
                            Vec::new()
                        },
                    ),
                    SearchKind::Token { targets } => ("token", self.token_details(name, targets)),
                    SearchKind::Date {
                        time,
                        column_type,
                        zone,
                        ..
                    } => {
                        let mut details = vec![match (time, column_type) {
                            (Some(_), _) => "date + time columns".to_owned(),
                            (None, ColumnType::Date) => "date column".to_owned(),
                            (None, ColumnType::Datetime) => "date-time column".to_owned(),
                        }];
                        details.extend(zone.map(|zone| format!("zone {}", zone.name())));
                        ("date", details)
                    }
                    SearchKind::Reference { targets } => {
                        let details = targets
                            .iter()
                            .map(|target| {
                                let keys: Vec<String> = target
                                    .columns
                                    .iter()
                                    .map(|c| row_source(self.mapping, c).to_string())
                                    .collect();
                                let text = if target.text_key { ", text key" } else { "" };
                                format!(
                                    "{} ({}{text})",
                                    self.target_name(&target.target_type, &target.target_prefix),
                                    keys.join(", ")
                                )
                            })
                            .collect();
                        ("reference", details)
                    }
                };
                if param.sortable {
                    details.push("sortable".to_owned());
                }
                if !param.description.is_empty() {
                    details.push(param.description.clone());
                }
                SearchEntry {
                    name: name.clone(),
                    kind: kind.to_owned(),
                    columns,
                    detail: details.join("; "),
                }
            })
            .collect()
    }

    fn token_details(&self, name: &str, targets: &[TokenTarget]) -> Vec<String> {
        targets
            .iter()
            .map(|target| match target {
                TokenTarget::Column {
                    system,
                    column,
                    map,
                } => {
                    let mut text = row_source(self.mapping, column).to_string();
                    if let Some(system) = system {
                        text.push_str(&format!(" system {system}"));
                    }
                    if let Some(map) = map {
                        text.push_str(&format!(" through map {}", map.name));
                    }
                    text
                }
                TokenTarget::Constant { system, code } => {
                    format!("constant {}", token_text(system.as_deref(), code))
                }
                TokenTarget::PerVariant => {
                    let variants: Vec<String> = self
                        .mapping
                        .variants
                        .iter()
                        .map(|variant| {
                            let tokens: Vec<String> = variant
                                .search
                                .get(name)
                                .map(|tokens| {
                                    tokens
                                        .iter()
                                        .map(|(system, code)| token_text(system.as_deref(), code))
                                        .collect()
                                })
                                .unwrap_or_default();
                            let tokens = if tokens.is_empty() {
                                "none".to_owned()
                            } else {
                                tokens.join(", ")
                            };
                            format!("{}: {tokens}", variant.key)
                        })
                        .collect();
                    format!("per variant: {}", variants.join(", "))
                }
            })
            .collect()
    }
}

/// `system|code`, or `code` without a system.
fn token_text(system: Option<&str>, code: &str) -> String {
    match system {
        Some(system) => format!("{system}|{code}"),
        None => code.to_owned(),
    }
}

fn push_at(out: &mut Vec<At>, at: At) {
    if !out.contains(&at) {
        out.push(at);
    }
}

fn push_unique(columns: &mut Vec<SourceColumn>, column: SourceColumn) {
    if !columns.contains(&column) {
        columns.push(column);
    }
}

/// The columns a search parameter compares, in the mapping's row scope.
fn param_columns(param: &SearchParam) -> Vec<&ColumnRef> {
    match &param.kind {
        SearchKind::String { columns, .. } => columns.iter().collect(),
        SearchKind::Token { targets } => targets
            .iter()
            .filter_map(|target| match target {
                TokenTarget::Column { column, .. } => Some(column),
                TokenTarget::Constant { .. } | TokenTarget::PerVariant => None,
            })
            .collect(),
        SearchKind::Date { column, time, .. } => std::iter::once(column).chain(time).collect(),
        SearchKind::Reference { targets } => targets.iter().flat_map(|t| &t.columns).collect(),
    }
}

/// A row-scope column as `table.column`; the join alias is kept when the mapping reads the table
/// under several names (Patient joins `list_options` as race, ethnicity, language...).
fn row_source(mapping: &Mapping, column: &ColumnRef) -> SourceColumn {
    source_in(&mapping.table, BASE_ALIAS, &mapping.joins, column)
}

fn collection_source(collection: &Collection, column: &ColumnRef) -> SourceColumn {
    source_in(
        &collection.table,
        COLLECTION_ALIAS,
        &collection.joins,
        column,
    )
}

/// A column of a FROM of `table` (as `alias`) plus `joins`, as `table.column`; the join alias is
/// kept when the FROM reads that table under several names.
fn source_in(table: &str, alias: &str, joins: &[JoinDef], column: &ColumnRef) -> SourceColumn {
    let read = joined_table(table, joins, column);
    let readings = usize::from(table == read) + joins.iter().filter(|j| j.table == read).count();
    SourceColumn {
        table: read.to_owned(),
        column: column.column.clone(),
        alias: (column.alias != alias && readings > 1).then(|| column.alias.clone()),
    }
}

/// Split and each items are spread into the array that holds them.
fn flattens(node: &Node) -> bool {
    matches!(node, Node::Transform(t) if match t.as_ref() {
        Transform::Split { keep, .. } => keep.is_array(),
        Transform::Each { separator, .. } => separator.is_none(),
        _ => false,
    })
}

/// A value that is one leaf (not objects or arrays), so that `coalesce` over such values is one
/// element row.
fn is_scalar(node: &Node) -> bool {
    match node {
        Node::Literal(_) | Node::Column(_) | Node::SplitItem => true,
        Node::Object { .. } | Node::Array(_) => false,
        Node::Transform(transform) => match transform.as_ref() {
            Transform::Split { keep, .. } => !keep.is_array(),
            Transform::Each { separator, .. } => separator.is_some(),
            Transform::If { then, .. } => is_scalar(then),
            Transform::Coalesce(options) => options.iter().all(is_scalar),
            _ => true,
        },
    }
}

/// A map's entries, sorted by legacy value, and what unlisted values become, in braces so that the
/// text ends visibly inside `coalesce` options.
fn map_text(map: &CodeMap) -> String {
    let mut entries: Vec<(&String, &serde_json::Value)> = map.values.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let entries: Vec<String> = entries
        .into_iter()
        .map(|(legacy, fhir)| {
            format!(
                "{} → {}",
                json_text(&serde_json::Value::String(legacy.clone())),
                json_text(fhir)
            )
        })
        .collect();
    let otherwise = match &map.default {
        Some(default) => json_text(default),
        None => "absent".to_owned(),
    };
    format!("{{{}; otherwise {otherwise}}}", entries.join(", "))
}

/// A literal as JSON: strings quoted, numbers and booleans bare.
fn json_text(value: &serde_json::Value) -> String {
    value.to_string()
}

/// A claimed profile in the dictionary: its URL, and when it is claimed if not always.
fn profile_transform(profile: &ProfileClaim) -> String {
    let url = json_text(&serde_json::Value::String(profile.url.clone()));
    if profile.requires.is_empty() {
        return url;
    }
    let paths: Vec<String> = profile.requires.iter().map(|path| path.join(".")).collect();
    format!("{url} when the resource has {}", paths.join(", "))
}

fn value_text(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Decimal(d) => d.to_string(),
        Value::Text(text) => json_text(&serde_json::Value::String(text.clone())),
        Value::Bytes(bytes) => {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            format!("0x{hex}")
        }
        Value::Uuid(uuid) => uuid_text(uuid).unwrap_or_default(),
        Value::Date(d) => json_text(&serde_json::Value::String(d.to_string())),
        Value::DateTime(dt) => json_text(&serde_json::Value::String(dt.to_string())),
        Value::Time(t) => json_text(&serde_json::Value::String(t.to_string())),
        Value::Undecodable(reason) => format!("undecodable ({reason})"),
    }
}

fn values_text(values: &[Value]) -> String {
    values.iter().map(value_text).collect::<Vec<_>>().join(", ")
}

// ---------------------------------------------------------------------------------------------
// Rendering. The page layout is decided once (`document`); Markdown and HTML only spell it.

/// A piece of running text.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Inline {
    Text(String),
    Code(String),
    /// A link to a heading of the same page.
    Link {
        text: String,
        anchor: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Block {
    Heading {
        level: usize,
        text: String,
        anchor: String,
    },
    Paragraph(Vec<Inline>),
    List(Vec<Vec<Inline>>),
    Table {
        headers: &'static [&'static str],
        rows: Vec<Vec<Vec<Inline>>>,
    },
}

fn text(text: impl Into<String>) -> Inline {
    Inline::Text(text.into())
}

fn code(text: impl Into<String>) -> Inline {
    Inline::Code(text.into())
}

/// One code span per item, separated by commas.
fn codes<T: ToString>(items: &[T]) -> Vec<Inline> {
    let mut inlines = Vec::new();
    for (position, item) in items.iter().enumerate() {
        if position > 0 {
            inlines.push(text(", "));
        }
        inlines.push(code(item.to_string()));
    }
    inlines
}

/// Prose with `code` spans written Markdown-style (adapter descriptions use them).
fn prose(source: &str) -> Vec<Inline> {
    let pieces: Vec<&str> = source.split('`').collect();
    if pieces.len().is_multiple_of(2) {
        // An unmatched backtick: no code spans at all rather than a guess.
        return vec![text(source)];
    }
    pieces
        .iter()
        .enumerate()
        .filter(|(_, piece)| !piece.is_empty())
        .map(|(position, piece)| {
            if position % 2 == 1 {
                code(*piece)
            } else {
                text(*piece)
            }
        })
        .collect()
}

/// The anchor GitHub gives a heading: lower case, spaces to `-`, other punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn heading(level: usize, title: &str) -> Block {
    Block::Heading {
        level,
        text: title.to_owned(),
        anchor: anchor(title),
    }
}

const UNMAPPED_HEADING: &str = "Unmapped columns";
const ELEMENT_HEADERS: &[&str] = &["Element", "Source", "Transform", "Search"];

fn document(dictionary: &Dictionary) -> Vec<Block> {
    let mut blocks = vec![heading(
        1,
        &format!("Data dictionary: {}", dictionary.adapter),
    )];
    blocks.push(Block::Paragraph(vec![
        text(format!("{}. Generated by ", dictionary.title)),
        code(format!("portico dictionary --adapter {}", dictionary.adapter)),
        text(" from the adapter's files: change those and regenerate, rather than editing this page."),
    ]));
    blocks.push(Block::List(vec![
        vec![text(
            "Each mapping lists the FHIR elements it produces with the legacy columns they come from, \
             the transform applied (code maps with every entry and what unlisted values become) and \
             the search parameters bound to those columns; then the other columns it reads and its \
             search parameters.",
        )],
        vec![
            text("Local date-times are read in the "),
            code(dictionary.timezone.clone()),
            text(" time zone unless a transform names another."),
        ],
        vec![
            code("[0]"),
            text(", "),
            code("[1]"),
            text(
                "… are positions in the adapter's template: absent values are left out, so later \
                 items move up. ",
            ),
            code("[]"),
            text(" is one item per collection row or per piece of a split column."),
        ],
    ]));
    let mut contents: Vec<Inline> = vec![text("Contents: ")];
    let labels = dictionary
        .mappings
        .iter()
        .map(|m| m.label.as_str())
        .chain([UNMAPPED_HEADING]);
    for (position, label) in labels.enumerate() {
        if position > 0 {
            contents.push(text(" · "));
        }
        contents.push(Inline::Link {
            text: label.to_owned(),
            anchor: anchor(label),
        });
    }
    blocks.push(Block::Paragraph(contents));
    for mapping in &dictionary.mappings {
        mapping_blocks(mapping, &mut blocks);
    }
    blocks.push(heading(2, UNMAPPED_HEADING));
    let source = match &dictionary.columns_source {
        Some(source) => {
            let mut inlines = vec![text(
                "Columns of the tables the adapter reads that no mapping reads, as listed in ",
            )];
            inlines.extend(prose(source));
            inlines.push(text("."));
            inlines
        }
        None => vec![
            text("The tables' columns were not available (no database configured, and no "),
            code(FIXTURE_SCHEMA),
            text(" in the adapter), so unmapped columns are not listed."),
        ],
    };
    blocks.push(Block::Paragraph(source));
    let rows = dictionary
        .tables
        .iter()
        .map(|table| {
            let unmapped = match (&dictionary.columns_source, &table.unmapped) {
                (None, _) => vec![text("not available")],
                (Some(_), None) => vec![text("table not found")],
                (Some(_), Some(columns)) if columns.is_empty() => vec![text("none")],
                (Some(_), Some(columns)) => codes(columns),
            };
            vec![
                vec![code(table.table.clone())],
                vec![text(table.read_by.join(", "))],
                unmapped,
            ]
        })
        .collect();
    blocks.push(Block::Table {
        headers: &["Table", "Read by", "Unmapped columns"],
        rows,
    });
    blocks
}

fn mapping_blocks(mapping: &MappingEntry, blocks: &mut Vec<Block>) {
    blocks.push(heading(2, &mapping.label));
    if !mapping.description.is_empty() {
        blocks.push(Block::Paragraph(prose(&mapping.description)));
    }
    blocks.push(Block::Paragraph(vec![
        text("Mapping file "),
        code(mapping.file.clone()),
        text(", base table "),
        code(mapping.table.clone()),
        text("."),
    ]));
    blocks.push(Block::Paragraph(prose(&mapping.compartment)));
    for (position, group) in mapping.groups.iter().enumerate() {
        if position > 0 {
            blocks.push(heading(3, &group.label));
            let when = if group.when.is_empty() {
                vec![text("For every row.")]
            } else {
                vec![text("When "), code(group.when.clone()), text(".")]
            };
            blocks.push(Block::Paragraph(when));
        }
        if group.rows.is_empty() {
            blocks.push(Block::Paragraph(vec![text("No elements of its own.")]));
            continue;
        }
        let rows = group
            .rows
            .iter()
            .map(|row| {
                vec![
                    vec![code(row.element.clone())],
                    codes(&row.sources),
                    if row.transform.is_empty() {
                        Vec::new()
                    } else {
                        vec![code(row.transform.clone())]
                    },
                    codes(&row.search),
                ]
            })
            .collect();
        blocks.push(Block::Table {
            headers: ELEMENT_HEADERS,
            rows,
        });
    }
    if !mapping.other_reads.is_empty() {
        blocks.push(heading(3, "Columns read but not emitted"));
        blocks.push(Block::Paragraph(vec![text(
            "Reads that decide which rows become resources, or whether an element appears, and \
             the columns change detection compares; the same columns may also be emitted above.",
        )]));
        let rows = mapping
            .other_reads
            .iter()
            .map(|read| {
                let mut purpose = vec![text(read.purpose.clone())];
                if !read.subject.is_empty() {
                    purpose.extend([text(" "), code(read.subject.clone())]);
                }
                vec![
                    purpose,
                    codes(&read.columns),
                    vec![code(read.detail.clone())],
                ]
            })
            .collect();
        blocks.push(Block::Table {
            headers: &["Use", "Columns", "Condition"],
            rows,
        });
    }
    if !mapping.search.is_empty() {
        blocks.push(heading(3, "Search parameters"));
        let rows = mapping
            .search
            .iter()
            .map(|param| {
                vec![
                    vec![code(param.name.clone())],
                    vec![text(param.kind.clone())],
                    codes(&param.columns),
                    if param.detail.is_empty() {
                        Vec::new()
                    } else {
                        vec![code(param.detail.clone())]
                    },
                ]
            })
            .collect();
        blocks.push(Block::Table {
            headers: &["Parameter", "Type", "Columns", "Detail"],
            rows,
        });
    }
}

/// The dictionary as GitHub-flavoured Markdown.
pub fn markdown(dictionary: &Dictionary) -> String {
    let blocks: Vec<String> = document(dictionary)
        .iter()
        .map(|block| match block {
            Block::Heading { level, text, .. } => {
                format!("{} {}", "#".repeat(*level), md_text(text))
            }
            Block::Paragraph(inlines) => md_inlines(inlines, false),
            Block::List(items) => items
                .iter()
                .map(|item| format!("- {}", md_inlines(item, false)))
                .collect::<Vec<_>>()
                .join("\n"),
            Block::Table { headers, rows } => {
                let mut lines = vec![
                    format!("| {} |", headers.join(" | ")),
                    format!("|{}", "---|".repeat(headers.len())),
                ];
                for row in rows {
                    let cells: Vec<String> = row.iter().map(|c| md_inlines(c, true)).collect();
                    lines.push(format!("| {} |", cells.join(" | ")));
                }
                lines.join("\n")
            }
        })
        .collect();
    let mut page = blocks.join("\n\n");
    page.push('\n');
    page
}

fn md_inlines(inlines: &[Inline], in_table: bool) -> String {
    inlines
        .iter()
        .map(|inline| match inline {
            Inline::Text(text) => md_text(text),
            Inline::Code(text) => md_code(text, in_table),
            Inline::Link { text, anchor } => format!("[{}](#{anchor})", md_text(text)),
        })
        .collect()
}

/// Text with Markdown's syntax escaped. An underscore inside a word is left alone: it cannot start
/// emphasis there, and `patient_data` stays readable in the raw file.
fn md_text(text: &str) -> String {
    let chars = one_line(text);
    let mut escaped = String::with_capacity(chars.len());
    for (position, &c) in chars.iter().enumerate() {
        let inside_word = |c: Option<&char>| c.is_some_and(|c| c.is_alphanumeric());
        let escape = match c {
            '\\' | '`' | '*' | '[' | ']' | '<' | '|' => true,
            // A heading or a quote only where a line starts.
            '#' | '>' => position == 0,
            '_' => {
                let within_word = position > 0
                    && inside_word(chars.get(position - 1))
                    && inside_word(chars.get(position + 1));
                !within_word
            }
            _ => false,
        };
        if escape {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Runs of white space (line breaks included) as one space, so that text stays on its line; the
/// spaces around a piece of text are kept, they separate it from its neighbours.
fn one_line(text: &str) -> Vec<char> {
    let mut chars: Vec<char> = Vec::with_capacity(text.len());
    for c in text.chars() {
        if !c.is_whitespace() {
            chars.push(c);
        } else if chars.last() != Some(&' ') {
            chars.push(' ');
        }
    }
    chars
}

/// A code span whose fence is longer than any run of backticks inside. In a table cell `|` is
/// escaped, which GitHub's table parser undoes before it reads the span.
fn md_code(text: &str, in_table: bool) -> String {
    let text: String = one_line(text).into_iter().collect();
    let text = if in_table {
        text.replace('|', "\\|")
    } else {
        text
    };
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat(longest + 1);
    let pad = if text.starts_with('`') || text.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{text}{pad}{fence}")
}

/// The dictionary as one self-contained HTML page.
pub fn html(dictionary: &Dictionary) -> String {
    let mut page =
        String::from("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    page.push_str(&format!(
        "<title>Data dictionary: {}</title>\n",
        escape(&dictionary.adapter)
    ));
    page.push_str(
        "<style>\n\
         body { font-family: system-ui, sans-serif; margin: 2em; line-height: 1.4; }\n\
         table { border-collapse: collapse; margin: 1em 0; }\n\
         th, td { border: 1px solid #ccc; padding: .3em .5em; text-align: left; vertical-align: top; }\n\
         th { background: #f3f3f3; }\n\
         code { font-family: ui-monospace, monospace; font-size: .9em; }\n\
         </style>\n</head>\n<body>\n",
    );
    for block in document(dictionary) {
        match block {
            Block::Heading {
                level,
                text,
                anchor,
            } => page.push_str(&format!(
                "<h{level} id=\"{}\">{}</h{level}>\n",
                escape(&anchor),
                escape(&text)
            )),
            Block::Paragraph(inlines) => {
                page.push_str(&format!("<p>{}</p>\n", html_inlines(&inlines)))
            }
            Block::List(items) => {
                page.push_str("<ul>\n");
                for item in items {
                    page.push_str(&format!("<li>{}</li>\n", html_inlines(&item)));
                }
                page.push_str("</ul>\n");
            }
            Block::Table { headers, rows } => {
                page.push_str("<table>\n<tr>");
                for header in headers {
                    page.push_str(&format!("<th>{}</th>", escape(header)));
                }
                page.push_str("</tr>\n");
                for row in rows {
                    page.push_str("<tr>");
                    for cell in row {
                        page.push_str(&format!("<td>{}</td>", html_inlines(&cell)));
                    }
                    page.push_str("</tr>\n");
                }
                page.push_str("</table>\n");
            }
        }
    }
    page.push_str("</body>\n</html>\n");
    page
}

fn html_inlines(inlines: &[Inline]) -> String {
    inlines
        .iter()
        .map(|inline| match inline {
            Inline::Text(text) => escape(text),
            Inline::Code(text) => format!("<code>{}</code>", escape(text)),
            Inline::Link { text, anchor } => {
                format!("<a href=\"#{}\">{}</a>", escape(anchor), escape(text))
            }
        })
        .collect()
}

/// One CSV row (RFC 4180) per element: mapping (with the variant), element, source, transform,
/// search.
pub fn csv(dictionary: &Dictionary) -> String {
    let mut lines = vec![csv_row(&[
        "mapping",
        "element",
        "source",
        "transform",
        "search",
    ])];
    for mapping in &dictionary.mappings {
        for group in &mapping.groups {
            for row in &group.rows {
                let sources: Vec<String> = row.sources.iter().map(ToString::to_string).collect();
                lines.push(csv_row(&[
                    &group.label,
                    &row.element,
                    &sources.join(", "),
                    &row.transform,
                    &row.search.join(", "),
                ]));
            }
        }
    }
    lines.concat()
}

/// One CSV line (RFC 4180), CRLF-terminated.
pub fn csv_row(fields: &[&str]) -> String {
    let fields: Vec<String> = fields.iter().map(|field| csv_field(field)).collect();
    format!("{}\r\n", fields.join(","))
}

/// A field quoted when it holds a comma, a quote or a line break, with quotes doubled.
fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

#[cfg(test)]
mod tests;
