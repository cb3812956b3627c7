//! The validated adapter: what the search compiler and the row mapper work from.
//!
//! Every column a mapping mentions is interned once into `Mapping::columns`, the mapping's SELECT
//! list, so mapping a row is indexing a slice, never a name lookup.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use chrono_tz::Tz;

use super::format::{ColumnType, SearchType, SplitKeep, TextCase};
use super::tree::{self, Constant};
use crate::dialect::DialectKind;
use crate::dialect::ast::Value;

/// Alias of a mapping's base table in every query it compiles to.
pub const BASE_ALIAS: &str = "t";
/// Alias of a collection's table in its queries.
pub const COLLECTION_ALIAS: &str = "c";

#[derive(Debug)]
pub struct Adapter {
    pub name: String,
    pub title: String,
    pub description: String,
    pub dir: PathBuf,
    pub timezone: Tz,
    pub dialects: Vec<DialectKind>,
    /// Keyed by FHIR resource type.
    pub resources: BTreeMap<String, ResourceDef>,
    /// The subscription topics the adapter offers (`topics.toml`), in file order.
    pub topics: Vec<Topic>,
    /// What `portico audit` checks beyond its built-in rules (`quality.toml`).
    pub quality: QualityRules,
}

/// `quality.toml`: the adapter's data-quality rules, and the severities it gives built-in ones.
#[derive(Debug, Clone, Default)]
pub struct QualityRules {
    /// Built-in rule id -> the severity this PMS's data calls for.
    pub severities: BTreeMap<String, Severity>,
    /// In file order.
    pub rules: Vec<SqlRule>,
}

/// How much a data-quality finding matters. `portico audit` exits non-zero when a rule of
/// severity `Error` has findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    pub fn parse(text: &str) -> Option<Severity> {
        match text {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "error" => Some(Severity::Error),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// A `[[rule]]` of `quality.toml`: a read-only SELECT whose rows break the rule. Its columns, by
/// position: the value of the PMS row's key column `key`, then optionally the FHIR id, then
/// optionally a detail.
#[derive(Debug, Clone)]
pub struct SqlRule {
    pub id: String,
    pub title: String,
    pub description: String,
    pub severity: Severity,
    pub resource_type: String,
    pub table: String,
    pub key: String,
    /// The SELECT per dialect the adapter supports.
    pub sql: Vec<(DialectKind, String)>,
}

/// Canonical URLs of Portico's subscription topics: this prefix and the topic's slug. Stable
/// whatever the server's address, so a subscription names the same topic on every install.
pub const TOPIC_URL_PREFIX: &str = "https://portico.health/fhir/SubscriptionTopic/";

/// A subscription topic (`[[topic]]` in `topics.toml`): which served changes of which mappings
/// notify its subscribers, and which search parameters they may filter on.
#[derive(Debug, Clone)]
pub struct Topic {
    /// `appointment-cancelled`.
    pub slug: String,
    /// `TOPIC_URL_PREFIX` + slug: the value of `Subscription.criteria`.
    pub url: String,
    pub title: String,
    pub description: String,
    pub resource_type: String,
    /// Names of the mappings whose changes fire it (`Observation.labs`); each declares `[changes]`.
    pub mappings: Vec<String>,
    /// Which kinds of change fire it.
    pub on: Vec<ChangeKind>,
    /// For updates: fires only when one of these top-level elements of the served resource
    /// differs from before. Empty: any served change.
    pub changed: Vec<String>,
    /// Fires only when this element's value is now one of these and was not before (on create:
    /// is one of these).
    pub became: Option<Became>,
    /// Search parameters of `resource_type` a subscriber may filter on.
    pub filters: Vec<String>,
}

/// `became = { element = "status", values = ["cancelled"] }`.
#[derive(Debug, Clone)]
pub struct Became {
    /// A top-level element holding a primitive (a code).
    pub element: String,
    pub values: Vec<String>,
}

/// A change of a served resource, as change detection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Create,
    Update,
    Delete,
}

/// How Portico notices changes of a mapping's served resources (`[changes]`).
#[derive(Debug, Clone)]
pub struct ChangeDetection {
    pub strategy: ChangeStrategy,
    /// Rows read per pass by a keyset scan (`Scan`, and reconcile scans).
    pub scan_rows: usize,
    /// For `Timestamp` and `RowVersion`: a full keyset scan every so often as well, which finds
    /// hard deletes and edits that do not move the change columns.
    pub reconcile: Option<std::time::Duration>,
}

#[derive(Debug, Clone)]
pub enum ChangeStrategy {
    /// Columns (indexes into `Mapping::columns`, base or joined tables) that move forward when
    /// the served resource may have changed: each pass re-reads the rows at or after the
    /// watermark minus `overlap` and compares their content hashes.
    Timestamp {
        columns: Vec<usize>,
        overlap: std::time::Duration,
    },
    /// A SQL Server rowversion column of the base table: rows above the watermark and below
    /// `MIN_ACTIVE_ROWVERSION()`.
    RowVersion { column: usize },
    /// No usable change column: a keyset scan of `scan_rows` rows per pass, continuing where the
    /// last pass stopped; a full cycle finds creates, updates and deletes.
    Scan,
}

/// Everything an adapter serves for one FHIR resource type: one or more mappings (branches).
#[derive(Debug)]
pub struct ResourceDef {
    pub resource_type: String,
    pub mappings: Vec<Arc<Mapping>>,
    /// Union of the mappings' search parameters (same type in each).
    pub search: BTreeMap<String, SearchParamInfo>,
    pub profiles: Vec<String>,
    /// Mapped reference search parameters of other types that point here (for `_revinclude`).
    pub revincludes: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct SearchParamInfo {
    pub kind: SearchType,
    pub description: String,
    pub sortable: bool,
    /// Resource types a reference parameter points at.
    pub targets: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ColumnRef {
    pub alias: String,
    pub column: String,
}

impl ColumnRef {
    pub fn display(&self) -> String {
        format!("{}.{}", self.alias, self.column)
    }
}

#[derive(Debug)]
pub struct Mapping {
    pub resource_type: String,
    /// `Patient`, or `Observation.vitals` when a type has several mappings.
    pub name: String,
    pub file: PathBuf,
    pub description: String,
    pub profiles: Vec<ProfileClaim>,
    pub table: String,
    pub joins: Vec<JoinDef>,
    pub filter: Vec<Predicate>,
    pub latest: Option<Latest>,
    pub id: IdDef,
    /// The columns that order keyset pages and cursors (then the variant): unique among the
    /// served rows. The id's columns unless `source.page_key` names an indexed key, for tables
    /// whose id order no index has (a `latest` table's id lacks the version its key holds).
    pub page_key: Vec<usize>,
    pub last_updated: Option<usize>,
    /// The SELECT list; every `usize` column index in this mapping points in here.
    pub columns: Vec<ColumnRef>,
    pub elements: Node,
    /// Empty unless the mapping unpivots; then each row yields one resource per matching variant.
    pub variants: Vec<Variant>,
    pub collections: Vec<Collection>,
    pub search: BTreeMap<String, SearchParam>,
    pub compartment: Compartment,
    /// `[changes]`: how subscriptions notice this mapping's changes; `None`: they do not.
    pub changes: Option<ChangeDetection>,
}

/// How a mapping's rows belong to patients, for accesses limited to some patients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compartment {
    /// Not declared: under a patient-limited access no row is served (deny by default).
    Undeclared,
    /// No patient's record (a practice's staff, sites, payers): served under any access that
    /// grants the type.
    Shared,
    /// A row belongs to the compartment of each Patient these search parameters reference (`_id`:
    /// the Patient row itself).
    Patient(Vec<String>),
}

/// A profile a mapping claims, and the elements a resource must have to claim it.
#[derive(Debug, Clone)]
pub struct ProfileClaim {
    pub url: String,
    /// Dotted element paths, split: `[["name"], ["name", "family"]]`.
    pub requires: Vec<Vec<String>>,
}

#[derive(Debug)]
pub struct JoinDef {
    pub alias: String,
    pub table: String,
    pub on: Vec<Predicate>,
    pub required: bool,
    /// Set when the join is declared a lookup (`lookup = true`).
    pub lookup: Option<LookupKey>,
}

/// The one column pair that links a lookup table to the base table: `key` (the lookup's column)
/// equals `foreign` (the base table's). Every other condition on the lookup tests constants.
#[derive(Debug, Clone)]
pub struct LookupKey {
    pub key: ColumnRef,
    pub foreign: ColumnRef,
}

#[derive(Debug)]
pub struct Latest {
    pub column: ColumnRef,
    pub partition: Vec<ColumnRef>,
}

#[derive(Debug)]
pub struct IdDef {
    pub prefix: String,
    pub columns: Vec<usize>,
    pub text: bool,
    pub uuid: bool,
}

#[derive(Debug)]
pub struct Predicate {
    pub column: ColumnRef,
    /// Where the column sits in the SELECT list, when the predicate is also evaluated on rows.
    pub index: Option<usize>,
    pub op: PredicateOp,
}

#[derive(Debug)]
pub enum PredicateOp {
    Equals(Value),
    NotEquals(Value),
    In(Vec<Value>),
    NotIn(Vec<Value>),
    Null(bool),
    Empty(bool),
    Positive,
    EqualsColumn(ColumnRef),
}

#[derive(Debug)]
pub struct Variant {
    pub key: String,
    pub when: Vec<Predicate>,
    /// The mapping's elements with this variant's elements laid over them.
    pub elements: Node,
    pub search: BTreeMap<String, Vec<(Option<String>, String)>>,
}

#[derive(Debug)]
pub struct Collection {
    pub name: String,
    pub table: String,
    pub joins: Vec<JoinDef>,
    /// The first `match_parent.len()` entries of `columns` are the child match columns.
    pub match_parent: Vec<usize>,
    pub filter: Vec<Predicate>,
    pub order_by: Vec<ColumnRef>,
    pub columns: Vec<ColumnRef>,
}

impl Collection {
    /// The table behind a column of this collection's rows: its own table or a joined one.
    pub fn table_of(&self, column: &ColumnRef) -> &str {
        joined_table(&self.table, &self.joins, column)
    }
}

/// The table a column reads in a FROM of `table` plus `joins`: the join its alias names, else `table`.
pub fn joined_table<'a>(table: &'a str, joins: &'a [JoinDef], column: &ColumnRef) -> &'a str {
    joins
        .iter()
        .find(|join| join.alias == column.alias)
        .map_or(table, |join| &join.table)
}

impl Predicate {
    /// The columns the condition compares: its column, and the other one of `equals_column`.
    pub fn columns(&self) -> impl Iterator<Item = &ColumnRef> {
        let other = match &self.op {
            PredicateOp::EqualsColumn(other) => Some(other),
            _ => None,
        };
        std::iter::once(&self.column).chain(other)
    }
}

/// A FHIR-shaped template. Absent leaves prune the objects and arrays that hold them.
#[derive(Debug)]
pub enum Node {
    Literal(&'static Constant),
    Column(usize),
    /// `$_`: the current piece inside a `split`.
    SplitItem,
    Object {
        fields: Vec<(&'static str, Node)>,
        /// True when some descendant reads the row; such an object disappears when all of them are absent.
        dynamic: bool,
        /// What an object that reads nothing of the row always is (`None` when it is absent).
        constant: Option<&'static Constant>,
    },
    Array(Vec<Node>),
    Transform(Box<Transform>),
}

impl Node {
    /// A literal value (`null` is the absent value).
    pub fn literal(value: serde_json::Value) -> Node {
        Node::Literal(tree::constant(value))
    }

    /// An object of `fields`, its constant value worked out when it reads nothing of the row.
    pub fn object(fields: Vec<(&'static str, Node)>) -> Node {
        let dynamic = fields.iter().any(|(_, node)| node.is_dynamic());
        let constant = if dynamic {
            None
        } else {
            let object: serde_json::Map<String, serde_json::Value> = fields
                .iter()
                .filter_map(|(name, node)| Some(((*name).to_owned(), node.constant_value()?)))
                .collect();
            (!object.is_empty()).then(|| tree::constant(serde_json::Value::Object(object)))
        };
        Node::Object {
            fields,
            dynamic,
            constant,
        }
    }

    /// The value of a node that reads nothing of the row, as the evaluator would build it.
    fn constant_value(&self) -> Option<serde_json::Value> {
        match self {
            Node::Literal(constant) if constant.is_null() => None,
            Node::Literal(constant) => Some((**constant).clone()),
            Node::Object { constant, .. } => constant.map(|c| (*c).clone()),
            Node::Array(items) => {
                let items: Vec<serde_json::Value> =
                    items.iter().filter_map(Node::constant_value).collect();
                (!items.is_empty()).then_some(serde_json::Value::Array(items))
            }
            Node::Column(_) | Node::SplitItem | Node::Transform(_) => None,
        }
    }

    /// Calls `visit` on each transform that reads the row itself, outermost first; transforms
    /// inside an `each` or `sum` read a collection's rows and are not visited.
    pub fn visit_row_transforms(&self, visit: &mut dyn FnMut(&Transform)) {
        match self {
            Node::Literal(_) | Node::Column(_) | Node::SplitItem => {}
            Node::Object { fields, .. } => fields
                .iter()
                .for_each(|(_, node)| node.visit_row_transforms(visit)),
            Node::Array(items) => items.iter().for_each(|n| n.visit_row_transforms(visit)),
            Node::Transform(transform) => {
                visit(transform);
                let children: Vec<&Node> = match transform.as_ref() {
                    Transform::DateTime { add_minutes, .. } => add_minutes.iter().collect(),
                    Transform::Concat { parts, .. } | Transform::Coalesce(parts) => {
                        parts.iter().collect()
                    }
                    Transform::Split { item, .. } => vec![item],
                    Transform::If { then, .. } => vec![then],
                    _ => Vec::new(),
                };
                children
                    .into_iter()
                    .for_each(|n| n.visit_row_transforms(visit));
            }
        }
    }

    /// How many fields an object node has (0 for any other node): the most its map holds.
    pub fn field_count(&self) -> usize {
        match self {
            Node::Object { fields, .. } => fields.len(),
            _ => 0,
        }
    }

    pub fn is_dynamic(&self) -> bool {
        match self {
            Node::Literal(_) => false,
            Node::Object { dynamic, .. } => *dynamic,
            Node::Array(items) => items.iter().any(Node::is_dynamic),
            Node::Column(_) | Node::SplitItem | Node::Transform(_) => true,
        }
    }
}

#[derive(Debug)]
pub enum Transform {
    Date {
        column: usize,
        format: Option<String>,
    },
    DateTime {
        column: usize,
        time: Option<usize>,
        format: Option<String>,
        instant: bool,
        zone: Option<Tz>,
        add_minutes: Option<Node>,
    },
    Map {
        column: usize,
        map: Arc<CodeMap>,
    },
    Number {
        column: usize,
        multiply: Option<f64>,
        times: Option<usize>,
        decimals: Option<u32>,
        positive: bool,
    },
    Integer {
        column: usize,
    },
    Length {
        column: usize,
        multiply: Option<f64>,
    },
    Boolean {
        column: usize,
    },
    Text {
        column: usize,
        case: Option<TextCase>,
    },
    Concat {
        parts: Vec<Node>,
        separator: String,
    },
    Split {
        column: usize,
        separator: String,
        item: Node,
        keep: SplitKeep,
    },
    Reference {
        resource_type: String,
        prefix: String,
        columns: Vec<usize>,
    },
    Coalesce(Vec<Node>),
    If {
        when: Vec<Predicate>,
        then: Node,
    },
    Each {
        collection: usize,
        element: Node,
        /// `Some`: the items' text joined into one string.
        separator: Option<String>,
    },
    Sum {
        collection: usize,
        column: usize,
    },
    Sequence,
}

#[derive(Debug)]
pub struct CodeMap {
    pub name: String,
    pub values: HashMap<String, serde_json::Value>,
    /// `None`: unmapped values are absent.
    pub default: Option<serde_json::Value>,
    /// Codes known to take the default (`default_codes`): the audit does not report them.
    pub default_codes: Vec<String>,
}

/// A mapped value as the text a search token compares with.
fn json_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl CodeMap {
    /// The FHIR value of `legacy`. An exact key wins; otherwise keys match ignoring case, as the
    /// case-insensitive collations of legacy databases compare them in SQL.
    pub fn apply(&self, legacy: &str) -> Option<&serde_json::Value> {
        self.listed(legacy).or(self.default.as_ref())
    }

    /// Whether `legacy` is a code the map knows: listed, or known to take the default. The
    /// data-quality audit reports the others.
    pub fn knows(&self, legacy: &str) -> bool {
        self.listed(legacy).is_some()
            || self
                .default_codes
                .iter()
                .any(|code| code.eq_ignore_ascii_case(legacy))
    }

    /// The FHIR value `legacy` is listed with, without falling back to the default.
    pub fn listed(&self, legacy: &str) -> Option<&serde_json::Value> {
        self.values.get(legacy).or_else(|| {
            self.values
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(legacy))
                .map(|(_, value)| value)
        })
    }

    /// The legacy values that map to `code`, and whether unlisted values do too (the default).
    pub fn reverse(&self, code: &str) -> (Vec<String>, bool) {
        let mut legacy: Vec<String> = self
            .values
            .iter()
            .filter(|(_, fhir)| json_text(fhir) == code)
            .map(|(from, _)| from.clone())
            .collect();
        legacy.sort();
        (
            legacy,
            self.default.as_ref().is_some_and(|d| json_text(d) == code),
        )
    }

    pub fn listed_values(&self) -> Vec<String> {
        let mut all: Vec<String> = self.values.keys().cloned().collect();
        all.sort();
        all
    }
}

#[derive(Debug)]
pub struct SearchParam {
    pub description: String,
    pub sortable: bool,
    pub kind: SearchKind,
    /// The collection whose rows the parameter reads (its columns are in that collection's scope).
    pub collection: Option<usize>,
}

#[derive(Debug)]
pub enum SearchKind {
    String {
        columns: Vec<ColumnRef>,
        /// A value may match the start of any word of a column.
        words: bool,
    },
    Token {
        targets: Vec<TokenTarget>,
    },
    Date {
        column: ColumnRef,
        time: Option<ColumnRef>,
        column_type: ColumnType,
        zone: Option<Tz>,
        /// Text layout of a date-time kept as text (see `SearchSpec::format`).
        format: Option<String>,
    },
    Reference {
        targets: Vec<ReferenceTarget>,
    },
}

/// A resource a reference parameter can point at, and the key columns holding its id.
#[derive(Debug, Clone)]
pub struct ReferenceTarget {
    pub target_type: String,
    pub target_prefix: String,
    pub columns: Vec<ColumnRef>,
    /// The key columns hold text (e.g. OpenEMR `pc_pid` varchar), so ids bind as text.
    pub text_key: bool,
    /// The target is keyed by a binary UUID.
    pub uuid: bool,
}

#[derive(Debug)]
pub enum TokenTarget {
    Column {
        system: Option<String>,
        column: ColumnRef,
        map: Option<Arc<CodeMap>>,
    },
    Constant {
        system: Option<String>,
        code: String,
    },
    PerVariant,
}

impl Mapping {
    pub fn column_index(&self, column: &ColumnRef) -> Option<usize> {
        self.columns.iter().position(|c| c == column)
    }

    /// The table a column of the row scope reads: the table of the join its alias names, else the
    /// base table.
    pub fn table_of(&self, column: &ColumnRef) -> &str {
        joined_table(&self.table, &self.joins, column)
    }

    /// Every `(table, column)` this mapping's queries read: the SELECT list (elements, keys, search
    /// columns, row conditions), source filters, join conditions, `latest`, and its collections.
    pub fn columns_read(&self) -> BTreeSet<(&str, &str)> {
        let mut read = BTreeSet::new();
        let predicates = self
            .filter
            .iter()
            .chain(self.joins.iter().flat_map(|j| &j.on));
        let compared = predicates.flat_map(Predicate::columns);
        let latest = self
            .latest
            .iter()
            .flat_map(|latest| std::iter::once(&latest.column).chain(&latest.partition));
        for column in self.columns.iter().chain(compared).chain(latest) {
            read.insert((self.table_of(column), column.column.as_str()));
        }
        for collection in &self.collections {
            let compared = collection
                .filter
                .iter()
                .chain(collection.joins.iter().flat_map(|j| &j.on))
                .flat_map(Predicate::columns);
            let columns = collection.columns.iter().chain(compared);
            for column in columns.chain(&collection.order_by) {
                read.insert((collection.table_of(column), column.column.as_str()));
            }
        }
        read
    }
}
