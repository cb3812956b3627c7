//! Turns parsed adapter files into a validated `model::Adapter`, reporting every problem at once.
//!
//! Pure: the caller reads the files. Each issue names its file and the key path inside it, so a
//! PMS integrator can fix a whole adapter in one pass.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono_tz::Tz;

use super::format::{
    ColumnType, CompartmentSpec, FilterSpec, JoinSpec, ManifestFile, MapSpec, MappingFile,
    ProfileSpec, SearchSpec, SearchType, TransformSpec,
};
use super::model::{
    Adapter, BASE_ALIAS, COLLECTION_ALIAS, CodeMap, Collection, ColumnRef, Compartment, IdDef,
    JoinDef, Latest, LookupKey, Mapping, Node, Predicate, PredicateOp, ProfileClaim,
    ReferenceTarget, ResourceDef, SearchKind, SearchParam, SearchParamInfo, TokenTarget, Transform,
    Variant,
};
use super::tree;
use crate::dialect::ast::Value;
use crate::fhir::resource_types::is_resource_type;

mod changes;
mod quality;
mod topics;

pub use self::quality::{select_only, validate_quality};
pub use self::topics::validate_topics;

/// The adapter format version this build reads.
pub const FORMAT_VERSION: u32 = 1;

/// One problem in an adapter, located by file and key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterIssue {
    pub file: PathBuf,
    pub path: String,
    pub message: String,
}

impl fmt::Display for AdapterIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}: {}: {}",
                self.file.display(),
                self.path,
                self.message
            )
        }
    }
}

/// A mapping file after parsing, before validation.
pub struct ParsedMapping {
    pub file: PathBuf,
    pub name: String,
    pub spec: MappingFile,
}

/// Validates a parsed adapter. Returns every issue found, or the usable adapter.
pub fn validate(
    dir: &Path,
    manifest_file: &Path,
    manifest: ManifestFile,
    mappings: Vec<ParsedMapping>,
) -> Result<Adapter, Vec<AdapterIssue>> {
    let mut issues = Vec::new();
    let mut report = |file: &Path, path: &str, message: String| {
        issues.push(AdapterIssue {
            file: file.to_owned(),
            path: path.to_owned(),
            message,
        })
    };
    if manifest.version != FORMAT_VERSION {
        report(
            manifest_file,
            "version",
            format!(
                "unsupported adapter format version {}, this build reads version {FORMAT_VERSION}",
                manifest.version
            ),
        );
    }
    let timezone: Option<Tz> = match manifest.timezone.parse() {
        Ok(zone) => Some(zone),
        Err(_) => {
            report(
                manifest_file,
                "timezone",
                format!("unknown IANA time zone {:?}", manifest.timezone),
            );
            None
        }
    };
    if manifest.dialects.is_empty() {
        report(
            manifest_file,
            "dialects",
            "at least one dialect is required".into(),
        );
    }

    // Id prefixes are needed before any mapping is compiled, because references point across files.
    let mut mappings_by_type: BTreeMap<String, Vec<&ParsedMapping>> = BTreeMap::new();
    for parsed in &mappings {
        mappings_by_type
            .entry(parsed.spec.resource.clone())
            .or_default()
            .push(parsed);
    }
    let mut prefixes: HashMap<String, (String, bool)> = HashMap::new();
    let mut single_mapping: HashMap<String, String> = HashMap::new();
    for (resource_type, group) in &mappings_by_type {
        for parsed in group {
            let id = &parsed.spec.source.id;
            prefixes.insert(parsed.name.clone(), (id.prefix.clone(), id.uuid));
        }
        if group.len() == 1 {
            single_mapping.insert(resource_type.clone(), group[0].name.clone());
        } else {
            let mut seen: Vec<&str> = Vec::new();
            for parsed in group {
                let prefix = parsed.spec.source.id.prefix.as_str();
                if prefix.is_empty() {
                    report(
                        &parsed.file,
                        "source.id.prefix",
                        format!(
                            "{resource_type} has several mappings, so each needs a distinct id prefix"
                        ),
                    );
                } else if seen
                    .iter()
                    .any(|other| other.starts_with(prefix) || prefix.starts_with(other))
                {
                    report(
                        &parsed.file,
                        "source.id.prefix",
                        format!(
                            "prefix {prefix:?} overlaps another {resource_type} mapping's prefix"
                        ),
                    );
                }
                seen.push(prefix);
            }
        }
    }
    let targets = TargetIndex {
        prefixes,
        single_mapping,
    };

    let mut resources: BTreeMap<String, ResourceDef> = BTreeMap::new();
    for parsed in mappings {
        let mut ctx = FileContext {
            file: parsed.file.clone(),
            issues: Vec::new(),
        };
        let compiled = compile_mapping(&mut ctx, &targets, parsed);
        issues.extend(ctx.issues);
        let Some(mapping) = compiled else { continue };
        let entry = resources
            .entry(mapping.resource_type.clone())
            .or_insert_with(|| ResourceDef {
                resource_type: mapping.resource_type.clone(),
                mappings: Vec::new(),
                search: BTreeMap::new(),
                profiles: Vec::new(),
                revincludes: Vec::new(),
            });
        for (name, param) in &mapping.search {
            let info = param_info(param);
            match entry.search.get(name) {
                Some(existing) if existing.kind != info.kind => issues.push(AdapterIssue {
                    file: mapping.file.clone(),
                    path: format!("search.{name}"),
                    message: format!(
                        "type differs from the same parameter in another {} mapping",
                        mapping.resource_type
                    ),
                }),
                Some(existing) => {
                    let sortable = existing.sortable && info.sortable;
                    entry.search.get_mut(name).expect("present").sortable = sortable;
                }
                None => {
                    entry.search.insert(name.clone(), info);
                }
            }
        }
        for profile in &mapping.profiles {
            if !entry.profiles.contains(&profile.url) {
                entry.profiles.push(profile.url.clone());
            }
        }
        entry.mappings.push(Arc::new(mapping));
    }
    // Sortable only where every mapping of the type declares the parameter sortable.
    for def in resources.values_mut() {
        let names: Vec<String> = def.search.keys().cloned().collect();
        for name in names {
            let everywhere = def.mappings.iter().all(|m| m.search.contains_key(&name));
            if !everywhere {
                def.search.get_mut(&name).expect("present").sortable = false;
            }
        }
    }
    let mut revincludes: Vec<(String, String, String)> = Vec::new();
    for def in resources.values() {
        for (name, info) in &def.search {
            for target in &info.targets {
                revincludes.push((target.clone(), def.resource_type.clone(), name.clone()));
            }
        }
    }
    for (target, source, name) in revincludes {
        if let Some(def) = resources.get_mut(&target) {
            def.revincludes.push((source, name));
        }
    }

    if !issues.is_empty() {
        return Err(issues);
    }
    Ok(Adapter {
        name: manifest.name,
        title: manifest.title,
        description: manifest.description,
        dir: dir.to_owned(),
        timezone: timezone.expect("checked above"),
        dialects: manifest.dialects,
        resources,
        // `topics.toml` is checked against the finished adapter (`validate_topics`).
        topics: Vec::new(),
        // So is `quality.toml` (`validate_quality`).
        quality: Default::default(),
    })
}

fn param_info(param: &SearchParam) -> SearchParamInfo {
    let (kind, targets) = match &param.kind {
        SearchKind::String { .. } => (SearchType::String, Vec::new()),
        SearchKind::Token { .. } => (SearchType::Token, Vec::new()),
        SearchKind::Date { .. } => (SearchType::Date, Vec::new()),
        SearchKind::Reference { targets } => (
            SearchType::Reference,
            targets.iter().map(|t| t.target_type.clone()).collect(),
        ),
    };
    SearchParamInfo {
        kind,
        description: param.description.clone(),
        sortable: param.sortable,
        targets,
    }
}

struct TargetIndex {
    /// Mapping name -> (id prefix, keyed by a binary UUID).
    prefixes: HashMap<String, (String, bool)>,
    /// Resource type -> its mapping name, for types with exactly one mapping.
    single_mapping: HashMap<String, String>,
}

/// Where a reference points: the resource type and how its ids are formed.
struct Target {
    resource_type: String,
    prefix: String,
    uuid: bool,
}

impl TargetIndex {
    /// Resolves `Patient` or `Organization.insurer` (or `resource` + `mapping`).
    fn resolve(&self, target: &str) -> Result<Target, String> {
        if let Some((prefix, uuid)) = self.prefixes.get(target) {
            let resource_type = target.split('.').next().unwrap_or(target).to_owned();
            return Ok(Target {
                resource_type,
                prefix: prefix.clone(),
                uuid: *uuid,
            });
        }
        match self.single_mapping.get(target) {
            Some(name) => {
                let (prefix, uuid) = self.prefixes[name].clone();
                Ok(Target {
                    resource_type: target.to_owned(),
                    prefix,
                    uuid,
                })
            }
            None if self
                .prefixes
                .keys()
                .any(|n| n.starts_with(&format!("{target}."))) =>
            {
                Err(format!(
                    "{target} has several mappings; name one, e.g. {target}.<mapping>"
                ))
            }
            None => Err(format!("no mapping produces {target}")),
        }
    }
}

struct FileContext {
    file: PathBuf,
    issues: Vec<AdapterIssue>,
}

impl FileContext {
    fn issue(&mut self, path: &str, message: impl Into<String>) {
        self.issues.push(AdapterIssue {
            file: self.file.clone(),
            path: path.to_owned(),
            message: message.into(),
        });
    }
}

/// Column names an adapter may use: letters, digits, `_`, `$`, `#` and inner spaces.
pub fn is_safe_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(' ')
        && !name.ends_with(' ')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '#' | ' '))
}

/// The columns visible in one scope (a mapping's base table and joins, or a collection's table)
/// and the SELECT list being built for it.
struct Scope {
    aliases: Vec<String>,
    default_alias: String,
    columns: Vec<ColumnRef>,
}

impl Scope {
    fn resolve(&self, ctx: &mut FileContext, path: &str, text: &str) -> Option<ColumnRef> {
        let (alias, column) = match text.split_once('.') {
            Some((alias, column)) => (alias.to_owned(), column.to_owned()),
            None => (self.default_alias.clone(), text.to_owned()),
        };
        if !self.aliases.contains(&alias) {
            ctx.issue(
                path,
                format!("unknown table alias {alias:?} in column {text:?}"),
            );
            return None;
        }
        if !is_safe_identifier(&column) {
            ctx.issue(path, format!("{column:?} is not a valid column name"));
            return None;
        }
        Some(ColumnRef { alias, column })
    }

    fn intern(&mut self, ctx: &mut FileContext, path: &str, text: &str) -> Option<usize> {
        let column = self.resolve(ctx, path, text)?;
        Some(self.intern_ref(column))
    }

    fn intern_ref(&mut self, column: ColumnRef) -> usize {
        if let Some(index) = self.columns.iter().position(|c| *c == column) {
            return index;
        }
        self.columns.push(column);
        self.columns.len() - 1
    }
}

/// Makes the aliases of `joins` visible in `scope` (before any column is resolved against them).
fn register_join_aliases(ctx: &mut FileContext, scope: &mut Scope, path: &str, joins: &[JoinSpec]) {
    for (index, join) in joins.iter().enumerate() {
        let path = format!("{path}[{index}].alias");
        if !is_safe_identifier(&join.alias) || join.alias.contains(' ') {
            ctx.issue(&path, format!("{:?} is not a valid alias", join.alias));
        } else if scope.aliases.contains(&join.alias) {
            ctx.issue(&path, format!("alias {:?} is already taken", join.alias));
        } else {
            scope.aliases.push(join.alias.clone());
        }
    }
}

/// Compiles joins whose aliases `register_join_aliases` made visible in `scope`.
fn compile_joins(
    ctx: &mut FileContext,
    scope: &mut Scope,
    path: &str,
    joins: &[JoinSpec],
    lookups_allowed: bool,
) -> Vec<JoinDef> {
    joins
        .iter()
        .enumerate()
        .map(|(index, join)| {
            // A join condition sees the base table, earlier joins and its own table, as SQL does.
            for predicate in &join.on {
                let referenced =
                    std::iter::once(&predicate.column).chain(predicate.equals_column.as_ref());
                for column in referenced {
                    let Some((alias, _)) = column.split_once('.') else {
                        continue;
                    };
                    let position = joins.iter().position(|j| j.alias == alias);
                    if position.is_some_and(|p| p > index) {
                        ctx.issue(
                            &format!("{path}[{index}].on"),
                            format!("{column:?} refers to a table joined later; reorder the joins"),
                        );
                    }
                }
            }
            if !is_safe_identifier(&join.table) {
                ctx.issue(
                    &format!("{path}[{index}].table"),
                    format!("{:?} is not a valid table name", join.table),
                );
            }
            if join.on.is_empty() {
                ctx.issue(
                    &format!("{path}[{index}].on"),
                    "a join needs at least one condition",
                );
            }
            let on = predicates(ctx, scope, &format!("{path}[{index}].on"), &join.on, false);
            let lookup = match (join.lookup, lookups_allowed) {
                (false, _) => None,
                (true, false) => {
                    ctx.issue(
                        &format!("{path}[{index}].lookup"),
                        "only joins of [source] can be lookups",
                    );
                    None
                }
                (true, true) => {
                    // Earlier lookups: a lookup may be linked through one (a payer's plan type).
                    let earlier: Vec<&str> = joins[..index]
                        .iter()
                        .filter(|j| j.lookup)
                        .map(|j| j.alias.as_str())
                        .collect();
                    lookup_key(ctx, &format!("{path}[{index}]"), &join.alias, &on, &earlier)
                }
            };
            JoinDef {
                alias: join.alias.clone(),
                table: join.table.clone(),
                on,
                required: join.required,
                lookup,
            }
        })
        .collect()
}

/// The key pair of a lookup join: exactly one `equals_column` between the lookup's column and a
/// column of the base table or of an `earlier` lookup; every other condition of `on` tests a
/// column of the lookup against constants.
fn lookup_key(
    ctx: &mut FileContext,
    path: &str,
    alias: &str,
    on: &[Predicate],
    earlier: &[&str],
) -> Option<LookupKey> {
    // Every equals_column of `on`, as (lookup side, other side) when one side is the lookup's.
    let mut links = Vec::new();
    for predicate in on {
        match &predicate.op {
            PredicateOp::EqualsColumn(other) if other.alias == alias => {
                links.push((other, &predicate.column))
            }
            PredicateOp::EqualsColumn(other) => links.push((&predicate.column, other)),
            _ if predicate.column.alias != alias => ctx.issue(
                &format!("{path}.on"),
                format!(
                    "a lookup's other conditions test its own columns; {} is not one",
                    predicate.column.display()
                ),
            ),
            _ => {}
        }
    }
    match links.as_slice() {
        [(key, foreign)]
            if key.alias == alias
                && (foreign.alias == BASE_ALIAS || earlier.contains(&foreign.alias.as_str())) =>
        {
            Some(LookupKey {
                key: (*key).clone(),
                foreign: (*foreign).clone(),
            })
        }
        _ => {
            ctx.issue(
                &format!("{path}.on"),
                "a lookup is linked by exactly one equals_column between its column and a column of the base table or of an earlier lookup",
            );
            None
        }
    }
}

fn compile_mapping(
    ctx: &mut FileContext,
    targets: &TargetIndex,
    parsed: ParsedMapping,
) -> Option<Mapping> {
    let spec = parsed.spec;
    if spec.version != FORMAT_VERSION {
        ctx.issue(
            "version",
            format!(
                "unsupported mapping format version {}, this build reads version {FORMAT_VERSION}",
                spec.version
            ),
        );
    }
    if !is_resource_type(&spec.resource) {
        ctx.issue(
            "resource",
            format!("{:?} is not an R4 resource type", spec.resource),
        );
    }
    let stem_type = parsed.name.split('.').next().unwrap_or_default();
    if stem_type != spec.resource {
        ctx.issue(
            "resource",
            format!(
                "file name says {stem_type} but resource = {:?}",
                spec.resource
            ),
        );
    }
    let source = &spec.source;
    if !is_safe_identifier(&source.table) {
        ctx.issue(
            "source.table",
            format!("{:?} is not a valid table name", source.table),
        );
    }
    let mut scope = Scope {
        aliases: vec![BASE_ALIAS.to_owned()],
        default_alias: BASE_ALIAS.to_owned(),
        columns: Vec::new(),
    };
    register_join_aliases(ctx, &mut scope, "source.join", &source.join);

    // Id first so that key columns lead the SELECT list.
    let mut id_columns = Vec::new();
    if source.id.columns.is_empty() {
        ctx.issue("source.id.columns", "at least one key column is required");
    }
    for (index, column) in source.id.columns.iter().enumerate() {
        if let Some(i) = scope.intern(ctx, &format!("source.id.columns[{index}]"), column) {
            id_columns.push(i);
        }
    }
    if !source
        .id
        .prefix
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        ctx.issue(
            "source.id.prefix",
            "an id prefix may only use letters, digits, '-' and '.'",
        );
    }
    if source.id.uuid && (source.id.columns.len() != 1 || source.id.text) {
        ctx.issue(
            "source.id.uuid",
            "a UUID id has exactly one key column, and is not text",
        );
    }
    let page_key = if source.page_key.is_empty() {
        id_columns.clone()
    } else {
        source
            .page_key
            .iter()
            .enumerate()
            .filter_map(|(index, column)| {
                let path = format!("source.page_key[{index}]");
                let interned = scope.intern(ctx, &path, column)?;
                if scope.columns[interned].alias != BASE_ALIAS {
                    ctx.issue(&path, "a page key is made of the base table's columns");
                }
                Some(interned)
            })
            .collect()
    };
    let last_updated = source
        .last_updated
        .as_ref()
        .and_then(|column| scope.intern(ctx, "source.last_updated", column));

    let joins = compile_joins(ctx, &mut scope, "source.join", &source.join, true);
    let filter = predicates(ctx, &mut scope, "source.filter", &source.filter, false);
    // A filter on a lookup is resolved with the lookup's own conditions, so it tests constants.
    for (index, predicate) in filter.iter().enumerate() {
        let on_lookup = |column: &ColumnRef| {
            source
                .join
                .iter()
                .any(|j| j.lookup && j.alias == column.alias)
        };
        if matches!(predicate.op, PredicateOp::EqualsColumn(_))
            && predicate.columns().any(on_lookup)
        {
            ctx.issue(
                &format!("source.filter[{index}]"),
                "a filter on a lookup's column compares it with constants, not with another column",
            );
        }
    }
    let latest = source.latest.as_ref().and_then(|latest| {
        let column = scope.resolve(ctx, "source.latest.column", &latest.column)?;
        let partition: Vec<ColumnRef> = latest
            .partition
            .iter()
            .enumerate()
            .filter_map(|(i, c)| scope.resolve(ctx, &format!("source.latest.partition[{i}]"), c))
            .collect();
        if column.alias != BASE_ALIAS || partition.iter().any(|c| c.alias != BASE_ALIAS) {
            ctx.issue(
                "source.latest",
                "latest compares columns of the base table only",
            );
        }
        Some(Latest { column, partition })
    });

    let maps: BTreeMap<String, Arc<CodeMap>> = spec
        .maps
        .iter()
        .filter_map(|(name, map)| code_map(ctx, name, map).map(|m| (name.clone(), Arc::new(m))))
        .collect();

    // Collections are compiled before elements, which refer to them by position.
    let mut collections = Vec::new();
    let mut collection_scopes = Vec::new();
    for (name, collection) in &spec.collections {
        let path = format!("collections.{name}");
        if !is_safe_identifier(&collection.table) {
            ctx.issue(
                &format!("{path}.table"),
                format!("{:?} is not a valid table name", collection.table),
            );
        }
        if collection.match_columns.is_empty() {
            ctx.issue(
                &format!("{path}.match"),
                "at least one [child, parent] column pair is required",
            );
        }
        let mut child_scope = Scope {
            aliases: vec![COLLECTION_ALIAS.to_owned()],
            default_alias: COLLECTION_ALIAS.to_owned(),
            columns: Vec::new(),
        };
        register_join_aliases(
            ctx,
            &mut child_scope,
            &format!("{path}.join"),
            &collection.join,
        );
        // A collection's rows may be read inside the mapping's query (a search over them), where
        // an alias of the mapping's would be shadowed.
        for (index, join) in collection.join.iter().enumerate() {
            if scope.aliases.contains(&join.alias) {
                ctx.issue(
                    &format!("{path}.join[{index}].alias"),
                    format!("alias {:?} is already taken by the mapping", join.alias),
                );
            }
        }
        let mut match_parent = Vec::new();
        for (i, [child, parent]) in collection.match_columns.iter().enumerate() {
            let child_ref = child_scope.resolve(ctx, &format!("{path}.match[{i}][0]"), child);
            let parent_index = scope.intern(ctx, &format!("{path}.match[{i}][1]"), parent);
            if let (Some(child_ref), Some(parent_index)) = (child_ref, parent_index) {
                if child_ref.alias != COLLECTION_ALIAS {
                    ctx.issue(
                        &format!("{path}.match[{i}][0]"),
                        "a collection matches its parent on its own table's columns",
                    );
                }
                child_scope.columns.push(child_ref);
                match_parent.push(parent_index);
            }
        }
        let joins = compile_joins(
            ctx,
            &mut child_scope,
            &format!("{path}.join"),
            &collection.join,
            false,
        );
        let filter = predicates(
            ctx,
            &mut child_scope,
            &format!("{path}.filter"),
            &collection.filter,
            false,
        );
        let order_by = collection
            .order_by
            .iter()
            .enumerate()
            .filter_map(|(i, column)| {
                child_scope.resolve(ctx, &format!("{path}.order_by[{i}]"), column)
            })
            .collect();
        collections.push(Collection {
            name: name.clone(),
            table: collection.table.clone(),
            joins,
            match_parent,
            filter,
            order_by,
            columns: Vec::new(),
        });
        collection_scopes.push(child_scope);
    }
    let collection_names: Vec<String> = collections.iter().map(|c| c.name.clone()).collect();

    for reserved in ["resourceType", "id", "meta"] {
        if spec.elements.contains_key(reserved) {
            ctx.issue(
                &format!("elements.{reserved}"),
                "set by Portico; remove it from the mapping",
            );
        }
    }
    let mut builder = NodeBuilder {
        maps: &maps,
        targets,
        collection_names: &collection_names,
        collection_scopes: &mut collection_scopes,
    };
    let elements = builder.table(ctx, &mut scope, "elements", &spec.elements, NodeScope::Row);

    let mut variants = Vec::new();
    for (index, variant) in spec.unpivot.iter().enumerate() {
        let path = format!("unpivot[{index}]");
        if variant.key.is_empty()
            || !variant
                .key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.')
        {
            ctx.issue(
                &format!("{path}.key"),
                "a variant key may only use letters, digits and '.'",
            );
        }
        let when = predicates(
            ctx,
            &mut scope,
            &format!("{path}.when"),
            &variant.when,
            true,
        );
        let mut merged = spec.elements.clone();
        for (key, value) in &variant.elements {
            merged.insert(key.clone(), value.clone());
        }
        let elements = builder.table(
            ctx,
            &mut scope,
            &format!("{path}.elements"),
            &merged,
            NodeScope::Row,
        );
        let mut search = BTreeMap::new();
        for (param, values) in &variant.search {
            let parsed = values.iter().map(|v| split_token_literal(v)).collect();
            search.insert(param.clone(), parsed);
        }
        variants.push(Variant {
            key: variant.key.clone(),
            when,
            elements,
            search,
        });
    }
    if variants
        .iter()
        .enumerate()
        .any(|(i, v)| variants[..i].iter().any(|w| w.key == v.key))
    {
        ctx.issue("unpivot", "variant keys must be unique");
    }

    let mut search = BTreeMap::new();
    for (name, param) in &spec.search {
        let path = format!("search.{name}");
        if name.starts_with('_') {
            ctx.issue(
                &path,
                "parameters starting with '_' are built in (_id, _lastUpdated)",
            );
            continue;
        }
        let collection = match &param.collection {
            None => None,
            Some(collection) => {
                let index = collections.iter().position(|c| &c.name == collection);
                if index.is_none() {
                    ctx.issue(
                        &format!("{path}.collection"),
                        format!("no collection named {collection:?} in [collections]"),
                    );
                    continue;
                }
                if !matches!(param.kind, SearchType::String | SearchType::Token)
                    || param.sortable
                    || param.per_variant
                {
                    ctx.issue(
                        &format!("{path}.collection"),
                        "a parameter over a collection is a string or token parameter, not \
                         sortable and not per_variant",
                    );
                    continue;
                }
                index
            }
        };
        let param_scope = match collection {
            Some(index) => &mut collection_scopes[index],
            None => &mut scope,
        };
        if let Some(mut compiled) = search_param(
            ctx,
            param_scope,
            targets,
            &maps,
            &path,
            param,
            !variants.is_empty(),
        ) {
            compiled.collection = collection;
            search.insert(name.clone(), compiled);
        }
    }
    for (index, variant) in variants.iter().enumerate() {
        for param in variant.search.keys() {
            let per_variant = spec.search.get(param).is_some_and(|p| p.per_variant);
            if !per_variant {
                ctx.issue(
                    &format!("unpivot[{index}].search.{param}"),
                    format!("search.{param} must exist and set per_variant = true"),
                );
            }
        }
    }
    for (collection, child_scope) in collections.iter_mut().zip(collection_scopes) {
        collection.columns = child_scope.columns;
    }

    let profiles = profile_claims(ctx, &spec.profiles);
    let compartment = compartment(ctx, &spec.resource, spec.compartment.as_ref(), &search);
    let changes = spec
        .changes
        .as_ref()
        .and_then(|changes| changes::change_detection(ctx, &mut scope, changes));
    Some(Mapping {
        resource_type: spec.resource,
        name: parsed.name,
        file: parsed.file,
        description: spec.description,
        profiles,
        table: source.table.clone(),
        joins,
        filter,
        latest,
        id: IdDef {
            prefix: source.id.prefix.clone(),
            columns: id_columns,
            text: source.id.text,
            uuid: source.id.uuid,
        },
        page_key,
        last_updated,
        columns: scope.columns,
        elements,
        variants,
        collections,
        search,
        compartment,
        changes,
    })
}

/// Clinical types of FHIR R4's Patient compartment (a subset): their rows are always someone's
/// record, so they cannot be declared shared.
const PATIENT_COMPARTMENT_TYPES: &[&str] = &[
    "AllergyIntolerance",
    "Appointment",
    "CarePlan",
    "Claim",
    "Condition",
    "Coverage",
    "DiagnosticReport",
    "DocumentReference",
    "Encounter",
    "ExplanationOfBenefit",
    "Goal",
    "Immunization",
    "MedicationRequest",
    "Observation",
    "Patient",
    "Procedure",
    "ServiceRequest",
];

/// `compartment`: `"shared"`, or links that are reference parameters of this mapping with a
/// Patient target (or `_id` on Patient).
fn compartment(
    ctx: &mut FileContext,
    resource_type: &str,
    spec: Option<&CompartmentSpec>,
    search: &BTreeMap<String, SearchParam>,
) -> Compartment {
    match spec {
        None => Compartment::Undeclared,
        Some(CompartmentSpec::Keyword(word)) if word == "shared" => {
            if PATIENT_COMPARTMENT_TYPES.contains(&resource_type) {
                ctx.issue(
                    "compartment",
                    format!(
                        "{resource_type} is in FHIR's Patient compartment: declare the parameters \
                         that link its rows to patients, e.g. {{ patient = [\"patient\"] }}"
                    ),
                );
            }
            Compartment::Shared
        }
        Some(CompartmentSpec::Keyword(word)) => {
            ctx.issue(
                "compartment",
                format!("{word:?}: compartment is \"shared\" or {{ patient = [parameters] }}"),
            );
            Compartment::Undeclared
        }
        Some(CompartmentSpec::Links(links)) => {
            if links.patient.is_empty() {
                ctx.issue("compartment.patient", "name at least one search parameter");
            }
            for (index, name) in links.patient.iter().enumerate() {
                let path = format!("compartment.patient[{index}]");
                if name == "_id" {
                    if resource_type != "Patient" {
                        ctx.issue(
                            &path,
                            "_id links only a Patient mapping to its own compartment",
                        );
                    }
                    continue;
                }
                match search.get(name).map(|param| &param.kind) {
                    Some(SearchKind::Reference { targets })
                        if targets.iter().any(|t| t.target_type == "Patient") => {}
                    Some(_) => ctx.issue(
                        &path,
                        format!("search.{name} is not a reference parameter to Patient"),
                    ),
                    None => ctx.issue(&path, format!("no search parameter {name:?} in [search]")),
                }
            }
            Compartment::Patient(links.patient.clone())
        }
    }
}

/// The text layout of a date parameter, checked: formatting with a broken layout would fail at
/// search time, so it must fail here.
fn text_date_format(ctx: &mut FileContext, path: &str, spec: &SearchSpec) -> Option<String> {
    let layout = spec.format.as_ref()?;
    let broken = chrono::format::StrftimeItems::new(layout)
        .any(|item| matches!(item, chrono::format::Item::Error));
    if broken || layout.is_empty() {
        ctx.issue(
            &format!("{path}.format"),
            format!("{layout:?} is not a strftime layout"),
        );
        return None;
    }
    if spec.time_column.is_some() {
        ctx.issue(
            &format!("{path}.format"),
            "a text date-time cannot also take a time_column",
        );
        return None;
    }
    Some(layout.clone())
}

fn parse_zone(ctx: &mut FileContext, path: &str, zone: &str) -> Option<Tz> {
    let parsed = zone.parse().ok();
    if parsed.is_none() {
        ctx.issue(path, format!("unknown IANA time zone {zone:?}"));
    }
    parsed
}

/// `system|code` or `code` as written in an adapter.
fn split_token_literal(text: &str) -> (Option<String>, String) {
    match text.split_once('|') {
        Some((system, code)) => (Some(system.to_owned()), code.to_owned()),
        None => (None, text.to_owned()),
    }
}

fn code_map(ctx: &mut FileContext, name: &str, map: &MapSpec) -> Option<CodeMap> {
    let path = format!("maps.{name}");
    match (&map.default, map.default_absent) {
        (Some(_), true) => {
            ctx.issue(&path, "set either default or default_absent, not both");
            return None;
        }
        (None, false) => {
            ctx.issue(
                &path,
                "an explicit default is required: default = \"<code>\" or default_absent = true",
            );
            return None;
        }
        _ => {}
    }
    let mut values = std::collections::HashMap::new();
    for (legacy, fhir) in &map.values {
        match toml_to_json(fhir) {
            Some(json) => {
                values.insert(legacy.clone(), json);
            }
            None => ctx.issue(
                &format!("{path}.values.{legacy}"),
                "a mapped value is a string, number or boolean",
            ),
        }
    }
    let default = match &map.default {
        Some(fhir) => match toml_to_json(fhir) {
            Some(json) => Some(json),
            None => {
                ctx.issue(
                    &format!("{path}.default"),
                    "a default is a string, number or boolean",
                );
                None
            }
        },
        None => None,
    };
    if !map.default_codes.is_empty() && map.default.is_none() {
        ctx.issue(
            &format!("{path}.default_codes"),
            "default_codes name codes that take the default: set default",
        );
    }
    Some(CodeMap {
        name: name.to_owned(),
        values,
        default,
        default_codes: map.default_codes.clone(),
    })
}

fn toml_to_json(value: &toml::Value) -> Option<serde_json::Value> {
    match value {
        toml::Value::String(s) => Some(serde_json::Value::String(s.clone())),
        toml::Value::Integer(i) => Some(serde_json::Value::from(*i)),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f).map(serde_json::Value::Number),
        toml::Value::Boolean(b) => Some(serde_json::Value::Bool(*b)),
        _ => None,
    }
}

fn toml_to_value(value: &toml::Value) -> Option<Value> {
    match value {
        toml::Value::String(s) => Some(Value::Text(s.clone())),
        toml::Value::Integer(i) => Some(Value::Int(*i)),
        toml::Value::Float(f) => Some(Value::Float(*f)),
        toml::Value::Boolean(b) => Some(Value::Bool(*b)),
        _ => None,
    }
}

fn predicates(
    ctx: &mut FileContext,
    scope: &mut Scope,
    path: &str,
    specs: &[FilterSpec],
    evaluated_on_rows: bool,
) -> Vec<Predicate> {
    specs
        .iter()
        .enumerate()
        .filter_map(|(index, spec)| {
            predicate(
                ctx,
                scope,
                &format!("{path}[{index}]"),
                spec,
                evaluated_on_rows,
            )
        })
        .collect()
}

/// Compiles one filter entry. Predicates also evaluated on fetched rows get their column selected.
fn predicate(
    ctx: &mut FileContext,
    scope: &mut Scope,
    path: &str,
    spec: &FilterSpec,
    evaluated_on_rows: bool,
) -> Option<Predicate> {
    let column = scope.resolve(ctx, &format!("{path}.column"), &spec.column)?;
    let mut ops = Vec::new();
    let scalar = |ctx: &mut FileContext, key: &str, value: &toml::Value| {
        let converted = toml_to_value(value);
        if converted.is_none() {
            ctx.issue(
                &format!("{path}.{key}"),
                "expected a string, number or boolean",
            );
        }
        converted
    };
    if let Some(v) = &spec.equals {
        ops.push(PredicateOp::Equals(scalar(ctx, "equals", v)?));
    }
    if let Some(v) = &spec.not_equals {
        ops.push(PredicateOp::NotEquals(scalar(ctx, "not_equals", v)?));
    }
    if let Some(values) = &spec.in_values {
        let converted: Option<Vec<Value>> = values.iter().map(|v| scalar(ctx, "in", v)).collect();
        ops.push(PredicateOp::In(converted?));
    }
    if let Some(values) = &spec.not_in {
        let converted: Option<Vec<Value>> =
            values.iter().map(|v| scalar(ctx, "not_in", v)).collect();
        ops.push(PredicateOp::NotIn(converted?));
    }
    if let Some(null) = spec.null {
        ops.push(PredicateOp::Null(null));
    }
    if let Some(empty) = spec.empty {
        ops.push(PredicateOp::Empty(empty));
    }
    if let Some(positive) = spec.positive {
        if !positive {
            ctx.issue(
                &format!("{path}.positive"),
                "only positive = true is meaningful",
            );
        }
        ops.push(PredicateOp::Positive);
    }
    if let Some(other) = &spec.equals_column {
        let other = scope.resolve(ctx, &format!("{path}.equals_column"), other)?;
        if evaluated_on_rows {
            ctx.issue(
                &format!("{path}.equals_column"),
                "column comparisons are only allowed in source filters and joins",
            );
        }
        ops.push(PredicateOp::EqualsColumn(other));
    }
    if ops.len() != 1 {
        ctx.issue(path, "exactly one of equals, not_equals, in, not_in, null, empty, positive, equals_column is required");
        return None;
    }
    let index = evaluated_on_rows.then(|| scope.intern_ref(column.clone()));
    Some(Predicate {
        column,
        index,
        op: ops.pop().expect("one op"),
    })
}

fn search_param(
    ctx: &mut FileContext,
    scope: &mut Scope,
    targets: &TargetIndex,
    maps: &BTreeMap<String, Arc<CodeMap>>,
    path: &str,
    spec: &SearchSpec,
    has_variants: bool,
) -> Option<SearchParam> {
    let mut columns: Vec<ColumnRef> = Vec::new();
    if let Some(column) = &spec.column {
        columns.extend(scope.resolve(ctx, &format!("{path}.column"), column));
    }
    for (i, column) in spec.columns.iter().enumerate() {
        columns.extend(scope.resolve(ctx, &format!("{path}.columns[{i}]"), column));
    }
    // Search columns are selected too: sort values feed paging cursors, references feed _include.
    for column in &columns {
        scope.intern_ref(column.clone());
    }
    let lookup_map =
        |ctx: &mut FileContext, name: &Option<String>, key: &str| -> Option<Option<Arc<CodeMap>>> {
            match name {
                None => Some(None),
                Some(name) => match maps.get(name) {
                    Some(map) => Some(Some(map.clone())),
                    None => {
                        ctx.issue(
                            &format!("{path}.{key}"),
                            format!("no map named {name:?} in [maps]"),
                        );
                        None
                    }
                },
            }
        };
    if spec.words && spec.kind != SearchType::String {
        ctx.issue(
            &format!("{path}.words"),
            "words applies to string parameters only",
        );
    }
    if spec.sortable
        && !matches!(
            spec.kind,
            SearchType::String | SearchType::Date | SearchType::Token
        )
    {
        ctx.issue(
            &format!("{path}.sortable"),
            "only string, token and date parameters can sort",
        );
    }
    let kind = match spec.kind {
        SearchType::String => {
            if columns.is_empty() {
                ctx.issue(path, "a string parameter needs column or columns");
                return None;
            }
            if spec.sortable && columns.len() != 1 {
                ctx.issue(
                    &format!("{path}.sortable"),
                    "a parameter over several columns cannot sort",
                );
            }
            SearchKind::String {
                columns,
                words: spec.words,
            }
        }
        SearchType::Token => {
            let mut token_targets = Vec::new();
            if columns.len() > 1 {
                ctx.issue(
                    path,
                    "a token parameter takes one column; use targets for several",
                );
            }
            if let Some(column) = columns.into_iter().next() {
                let map = lookup_map(ctx, &spec.map, "map")?;
                token_targets.push(TokenTarget::Column {
                    system: spec.system.clone(),
                    column,
                    map,
                });
            }
            for (i, target) in spec.targets.iter().enumerate() {
                let Some(column) = &target.column else {
                    ctx.issue(
                        &format!("{path}.targets[{i}].column"),
                        "a token target needs column",
                    );
                    continue;
                };
                if target.target.is_some() || !target.columns.is_empty() || target.text_key {
                    ctx.issue(
                        &format!("{path}.targets[{i}]"),
                        "target, columns and text_key belong to reference parameters",
                    );
                }
                let column = scope.resolve(ctx, &format!("{path}.targets[{i}].column"), column)?;
                scope.intern_ref(column.clone());
                let map = lookup_map(ctx, &target.map, &format!("targets[{i}].map"))?;
                token_targets.push(TokenTarget::Column {
                    system: target.system.clone(),
                    column,
                    map,
                });
            }
            for constant in &spec.constant {
                let (system, code) = split_token_literal(constant);
                token_targets.push(TokenTarget::Constant { system, code });
            }
            if spec.per_variant {
                if !has_variants {
                    ctx.issue(
                        &format!("{path}.per_variant"),
                        "per_variant needs [[unpivot]] variants",
                    );
                }
                if !token_targets.is_empty() {
                    ctx.issue(
                        &format!("{path}.per_variant"),
                        "per_variant takes its values from the variants alone; remove column, targets and constant",
                    );
                }
                token_targets.push(TokenTarget::PerVariant);
            }
            if token_targets.is_empty() {
                ctx.issue(
                    path,
                    "a token parameter needs column, targets, constant or per_variant",
                );
                return None;
            }
            if spec.sortable && !matches!(token_targets.as_slice(), [TokenTarget::Column { .. }]) {
                ctx.issue(
                    &format!("{path}.sortable"),
                    "only a token over one column can sort",
                );
            }
            SearchKind::Token {
                targets: token_targets,
            }
        }
        SearchType::Date => {
            let Some(column) = columns.into_iter().next() else {
                ctx.issue(path, "a date parameter needs column");
                return None;
            };
            let time = match &spec.time_column {
                Some(time) => {
                    let time = scope.resolve(ctx, &format!("{path}.time_column"), time)?;
                    scope.intern_ref(time.clone());
                    Some(time)
                }
                None => None,
            };
            let column_type = spec.column_type.unwrap_or(if time.is_some() {
                ColumnType::Date
            } else {
                ColumnType::Datetime
            });
            if time.is_some() && column_type != ColumnType::Date {
                ctx.issue(
                    &format!("{path}.column_type"),
                    "with time_column, column holds the date part: column_type = \"date\"",
                );
            }
            SearchKind::Date {
                column,
                time,
                column_type,
                zone: spec
                    .zone
                    .as_ref()
                    .and_then(|z| parse_zone(ctx, &format!("{path}.zone"), z)),
                format: text_date_format(ctx, path, spec),
            }
        }
        SearchType::Reference => {
            let mut reference_targets = Vec::new();
            let mut add = |ctx: &mut FileContext,
                           key: &str,
                           target: &str,
                           columns: Vec<ColumnRef>,
                           text_key: bool| {
                match targets.resolve(target) {
                    Ok(resolved) if !columns.is_empty() => {
                        reference_targets.push(ReferenceTarget {
                            target_type: resolved.resource_type,
                            target_prefix: resolved.prefix,
                            columns,
                            text_key,
                            uuid: resolved.uuid,
                        })
                    }
                    Ok(_) => ctx.issue(
                        key,
                        "a reference needs column or columns (the target's key)",
                    ),
                    Err(message) => ctx.issue(key, message),
                }
            };
            if let Some(target) = &spec.target {
                add(
                    ctx,
                    &format!("{path}.target"),
                    target,
                    columns,
                    spec.text_key,
                );
            }
            for (i, target) in spec.targets.iter().enumerate() {
                let key = format!("{path}.targets[{i}]");
                let Some(resource) = &target.target else {
                    ctx.issue(&key, "a reference target needs target");
                    continue;
                };
                if target.system.is_some() || target.map.is_some() {
                    ctx.issue(&key, "system and map belong to token parameters");
                }
                let mut target_columns: Vec<ColumnRef> = Vec::new();
                for (j, column) in target.column.iter().chain(&target.columns).enumerate() {
                    if let Some(column) = scope.resolve(ctx, &format!("{key}.columns[{j}]"), column)
                    {
                        scope.intern_ref(column.clone());
                        target_columns.push(column);
                    }
                }
                add(ctx, &key, resource, target_columns, target.text_key);
            }
            if reference_targets.is_empty() {
                ctx.issue(
                    path,
                    "a reference parameter needs target (with column) or targets",
                );
                return None;
            }
            SearchKind::Reference {
                targets: reference_targets,
            }
        }
    };
    Some(SearchParam {
        description: spec.description.clone(),
        sortable: spec.sortable,
        kind,
        collection: None,
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum NodeScope {
    Row,
    Split,
    CollectionItem(usize),
    /// A split inside a collection item: columns are the item's, and `$_` is the piece.
    CollectionSplit(usize),
}

impl NodeScope {
    fn collection(self) -> Option<usize> {
        match self {
            NodeScope::CollectionItem(index) | NodeScope::CollectionSplit(index) => Some(index),
            NodeScope::Row | NodeScope::Split => None,
        }
    }
}

struct NodeBuilder<'a> {
    maps: &'a BTreeMap<String, Arc<CodeMap>>,
    targets: &'a TargetIndex,
    collection_names: &'a [String],
    collection_scopes: &'a mut Vec<Scope>,
}

impl NodeBuilder<'_> {
    fn table(
        &mut self,
        ctx: &mut FileContext,
        scope: &mut Scope,
        path: &str,
        table: &toml::Table,
        node_scope: NodeScope,
    ) -> Node {
        let fields: Vec<(&'static str, Node)> = table
            .iter()
            .map(|(key, value)| {
                if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    ctx.issue(&format!("{path}.{key}"), "not a FHIR element name");
                }
                (
                    tree::name(key),
                    self.node(ctx, scope, &format!("{path}.{key}"), value, node_scope),
                )
            })
            .collect();
        Node::object(fields)
    }

    fn node(
        &mut self,
        ctx: &mut FileContext,
        scope: &mut Scope,
        path: &str,
        value: &toml::Value,
        node_scope: NodeScope,
    ) -> Node {
        match value {
            toml::Value::String(text) => {
                if let Some(literal) = text.strip_prefix("$$") {
                    Node::literal(serde_json::Value::String(format!("${literal}")))
                } else if text == "$_" {
                    if !matches!(node_scope, NodeScope::Split | NodeScope::CollectionSplit(_)) {
                        ctx.issue(path, "$_ is only meaningful inside a split item");
                    }
                    Node::SplitItem
                } else if let Some(column) = text.strip_prefix('$') {
                    self.column(ctx, scope, path, column, node_scope)
                        .map(Node::Column)
                        .unwrap_or_else(|| Node::literal(serde_json::Value::Null))
                } else {
                    Node::literal(serde_json::Value::String(text.clone()))
                }
            }
            toml::Value::Integer(i) => Node::literal(serde_json::Value::from(*i)),
            toml::Value::Float(f) => Node::literal(serde_json::Value::from(*f)),
            toml::Value::Boolean(b) => Node::literal(serde_json::Value::Bool(*b)),
            toml::Value::Datetime(d) => Node::literal(serde_json::Value::String(d.to_string())),
            toml::Value::Array(items) => Node::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        self.node(ctx, scope, &format!("{path}[{i}]"), item, node_scope)
                    })
                    .collect(),
            ),
            toml::Value::Table(table) if table.contains_key("fn") => {
                match value.clone().try_into::<TransformSpec>() {
                    Ok(spec) => self.transform(ctx, scope, path, spec, node_scope),
                    Err(error) => {
                        ctx.issue(
                            path,
                            format!("invalid transform: {}", error.message().trim()),
                        );
                        Node::literal(serde_json::Value::Null)
                    }
                }
            }
            toml::Value::Table(table) => self.table(ctx, scope, path, table, node_scope),
        }
    }

    /// Resolves a column in the scope the node sits in (the row, or a collection item).
    fn column(
        &mut self,
        ctx: &mut FileContext,
        scope: &mut Scope,
        path: &str,
        column: &str,
        node_scope: NodeScope,
    ) -> Option<usize> {
        match node_scope.collection() {
            Some(index) => self.collection_scopes[index].intern(ctx, path, column),
            None => scope.intern(ctx, path, column),
        }
    }

    fn transform(
        &mut self,
        ctx: &mut FileContext,
        scope: &mut Scope,
        path: &str,
        spec: TransformSpec,
        node_scope: NodeScope,
    ) -> Node {
        let mut col = |this: &mut Self, ctx: &mut FileContext, key: &str, column: &str| {
            this.column(ctx, scope, &format!("{path}.{key}"), column, node_scope)
                .unwrap_or(0)
        };
        let transform = match spec {
            TransformSpec::Date { column, format } => Transform::Date {
                column: col(self, ctx, "column", &column),
                format,
            },
            TransformSpec::Datetime {
                column,
                time,
                format,
                instant,
                zone,
                add_minutes,
            } => {
                let column = col(self, ctx, "column", &column);
                let time = time.map(|t| col(self, ctx, "time", &t));
                let add_minutes = add_minutes.map(|minutes| {
                    self.node(
                        ctx,
                        scope,
                        &format!("{path}.add_minutes"),
                        &minutes,
                        node_scope,
                    )
                });
                Transform::DateTime {
                    column,
                    time,
                    format,
                    instant,
                    zone: zone.and_then(|z| parse_zone(ctx, &format!("{path}.zone"), &z)),
                    add_minutes,
                }
            }
            TransformSpec::Map { column, map } => {
                let Some(code_map) = self.maps.get(&map).cloned() else {
                    ctx.issue(
                        &format!("{path}.map"),
                        format!("no map named {map:?} in [maps]"),
                    );
                    return Node::literal(serde_json::Value::Null);
                };
                Transform::Map {
                    column: col(self, ctx, "column", &column),
                    map: code_map,
                }
            }
            TransformSpec::Number {
                column,
                multiply,
                times,
                decimals,
                positive,
            } => Transform::Number {
                column: col(self, ctx, "column", &column),
                multiply,
                times: times.map(|times| col(self, ctx, "times", &times)),
                decimals,
                positive,
            },
            TransformSpec::Integer { column } => Transform::Integer {
                column: col(self, ctx, "column", &column),
            },
            TransformSpec::Length { column, multiply } => Transform::Length {
                column: col(self, ctx, "column", &column),
                multiply,
            },
            TransformSpec::Boolean { column } => Transform::Boolean {
                column: col(self, ctx, "column", &column),
            },
            TransformSpec::Text { column, case } => Transform::Text {
                column: col(self, ctx, "column", &column),
                case,
            },
            TransformSpec::Concat { parts, separator } => Transform::Concat {
                parts: parts
                    .iter()
                    .enumerate()
                    .map(|(i, part)| {
                        self.node(ctx, scope, &format!("{path}.parts[{i}]"), part, node_scope)
                    })
                    .collect(),
                separator,
            },
            TransformSpec::Split {
                column,
                separator,
                item,
                keep,
            } => {
                if separator.is_empty() {
                    ctx.issue(
                        &format!("{path}.separator"),
                        "the separator cannot be empty",
                    );
                }
                let column = col(self, ctx, "column", &column);
                let item_scope = match node_scope.collection() {
                    Some(index) => NodeScope::CollectionSplit(index),
                    None => NodeScope::Split,
                };
                Transform::Split {
                    column,
                    separator,
                    item: self.node(ctx, scope, &format!("{path}.item"), &item, item_scope),
                    keep,
                }
            }
            TransformSpec::Reference {
                resource,
                mapping,
                columns,
            } => {
                let target = match &mapping {
                    Some(mapping) => format!("{resource}.{mapping}"),
                    None => resource.clone(),
                };
                let (resource_type, prefix) = match self.targets.resolve(&target) {
                    Ok(resolved) => (resolved.resource_type, resolved.prefix),
                    Err(message) => {
                        ctx.issue(&format!("{path}.resource"), message);
                        return Node::literal(serde_json::Value::Null);
                    }
                };
                if columns.is_empty() {
                    ctx.issue(
                        &format!("{path}.columns"),
                        "a reference needs the target's key columns",
                    );
                }
                Transform::Reference {
                    resource_type,
                    prefix,
                    columns: columns
                        .iter()
                        .enumerate()
                        .map(|(i, c)| col(self, ctx, &format!("columns[{i}]"), c))
                        .collect(),
                }
            }
            TransformSpec::Coalesce { values } => Transform::Coalesce(
                values
                    .iter()
                    .enumerate()
                    .map(|(i, value)| {
                        self.node(
                            ctx,
                            scope,
                            &format!("{path}.values[{i}]"),
                            value,
                            node_scope,
                        )
                    })
                    .collect(),
            ),
            TransformSpec::If { when, then } => {
                let when = match node_scope.collection() {
                    Some(index) => predicates(
                        ctx,
                        &mut self.collection_scopes[index],
                        &format!("{path}.when"),
                        &when,
                        true,
                    ),
                    None => predicates(ctx, scope, &format!("{path}.when"), &when, true),
                };
                Transform::If {
                    when,
                    then: self.node(ctx, scope, &format!("{path}.then"), &then, node_scope),
                }
            }
            TransformSpec::Each {
                collection,
                element,
                separator,
            } => {
                let Some(index) = self.collection_index(ctx, path, &collection, node_scope) else {
                    return Node::literal(serde_json::Value::Null);
                };
                Transform::Each {
                    collection: index,
                    element: self.node(
                        ctx,
                        scope,
                        &format!("{path}.element"),
                        &element,
                        NodeScope::CollectionItem(index),
                    ),
                    separator,
                }
            }
            TransformSpec::Sum { collection, column } => {
                let Some(index) = self.collection_index(ctx, path, &collection, node_scope) else {
                    return Node::literal(serde_json::Value::Null);
                };
                let column = self.collection_scopes[index]
                    .intern(ctx, &format!("{path}.column"), &column)
                    .unwrap_or(0);
                Transform::Sum {
                    collection: index,
                    column,
                }
            }
            TransformSpec::Sequence {} => {
                if node_scope.collection().is_none() {
                    ctx.issue(path, "sequence is only meaningful inside an each element");
                }
                Transform::Sequence
            }
        };
        Node::Transform(Box::new(transform))
    }

    fn collection_index(
        &self,
        ctx: &mut FileContext,
        path: &str,
        name: &str,
        node_scope: NodeScope,
    ) -> Option<usize> {
        if node_scope.collection().is_some() {
            ctx.issue(path, "collections cannot nest");
            return None;
        }
        let index = self.collection_names.iter().position(|n| n == name);
        if index.is_none() {
            ctx.issue(
                &format!("{path}.collection"),
                format!("no collection named {name:?} in [collections]"),
            );
        }
        index
    }
}

/// The profiles a mapping claims; each required path is dotted FHIR element names.
fn profile_claims(ctx: &mut FileContext, specs: &[ProfileSpec]) -> Vec<ProfileClaim> {
    let mut claims = Vec::with_capacity(specs.len());
    for (index, spec) in specs.iter().enumerate() {
        let (url, requires) = match spec {
            ProfileSpec::Url(url) => (url, &[][..]),
            ProfileSpec::Claim(claim) => (&claim.url, &claim.requires[..]),
        };
        if !url.starts_with("http://") && !url.starts_with("https://") {
            ctx.issue(
                &format!("profiles[{index}]"),
                format!("{url:?} is not a canonical profile URL"),
            );
        }
        let mut paths = Vec::with_capacity(requires.len());
        for (position, path) in requires.iter().enumerate() {
            let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
            let valid = segments.iter().all(|segment| {
                segment.starts_with(|c: char| c.is_ascii_lowercase())
                    && segment.chars().all(|c| c.is_ascii_alphanumeric())
            });
            if !valid {
                ctx.issue(
                    &format!("profiles[{index}].requires[{position}]"),
                    format!(
                        "{path:?} is not a dotted path of FHIR element names (e.g. name.family)"
                    ),
                );
            }
            paths.push(segments);
        }
        claims.push(ProfileClaim {
            url: url.clone(),
            requires: paths,
        });
    }
    claims
}

#[cfg(test)]
mod tests;
