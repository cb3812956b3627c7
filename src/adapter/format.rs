//! The on-disk adapter format, version 1: serde shapes that reject unknown keys.
//!
//! These types mirror adapters/README.md one to one. They carry no meaning beyond shape; all
//! checks that span keys or files live in `validate`, which turns them into `model` types.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::model::ChangeKind;
use crate::dialect::DialectKind;

/// `adapters/<name>/adapter.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    pub version: u32,
    pub name: String,
    pub title: String,
    #[serde(default)]
    pub description: String,
    /// IANA zone the legacy database writes its local date-times in.
    pub timezone: String,
    pub dialects: Vec<DialectKind>,
}

/// `adapters/<name>/<ResourceType>[.<mapping>].toml`: one source of one FHIR resource type.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingFile {
    pub version: u32,
    pub resource: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub profiles: Vec<ProfileSpec>,
    pub source: SourceSpec,
    pub elements: toml::Table,
    #[serde(default)]
    pub unpivot: Vec<VariantSpec>,
    #[serde(default)]
    pub collections: BTreeMap<String, CollectionSpec>,
    #[serde(default)]
    pub maps: BTreeMap<String, MapSpec>,
    #[serde(default)]
    pub search: BTreeMap<String, SearchSpec>,
    /// Which rows belong to a patient's compartment: `{ patient = ["subject"] }`, or `"shared"`.
    pub compartment: Option<CompartmentSpec>,
    /// How subscriptions notice changes of this mapping's resources.
    pub changes: Option<ChangesSpec>,
}

/// `[changes]`: the change-detection strategy of a mapping and its knobs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangesSpec {
    pub strategy: ChangeStrategyName,
    /// `timestamp`: the columns (base or joined) any of which moves when the resource may change.
    #[serde(default)]
    pub columns: Vec<String>,
    /// `rowversion`: the base table's rowversion column.
    pub column: Option<String>,
    /// `timestamp`: seconds re-read behind the watermark (coarse or late-committed timestamps).
    pub overlap_seconds: Option<u64>,
    /// `timestamp`/`rowversion`: a full keyset scan this often as well.
    pub reconcile_minutes: Option<u64>,
    /// Rows per pass of a keyset scan.
    pub scan_rows: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeStrategyName {
    Timestamp,
    Rowversion,
    Scan,
}

/// `adapters/<name>/quality.toml`: the data-quality rules an adapter declares for `portico audit`,
/// and the severities it gives the built-in rules.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualityFile {
    pub version: u32,
    /// Built-in rule id -> severity, where this PMS's data needs another than the default.
    #[serde(default)]
    pub severity: BTreeMap<String, String>,
    #[serde(default)]
    pub rule: Vec<QualityRuleSpec>,
}

/// One `[[rule]]`: a SELECT that returns the rows breaking the rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualityRuleSpec {
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub description: String,
    pub severity: String,
    /// The FHIR resource type the rows become.
    pub resource: String,
    /// The PMS table whose rows the findings name.
    pub table: String,
    /// The name of its key column: the SELECT's first column holds the key's value.
    pub key: String,
    pub sql: RuleSql,
}

/// A rule's SELECT: one text for every dialect, or one per dialect (`mysql`, `sqlite`, `mssql`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RuleSql {
    Any(String),
    PerDialect(BTreeMap<String, String>),
}

/// `adapters/<name>/topics.toml`: the subscription topics an adapter offers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicsFile {
    pub version: u32,
    #[serde(default)]
    pub topic: Vec<TopicSpec>,
}

/// One `[[topic]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    pub slug: String,
    pub title: String,
    #[serde(default)]
    pub description: String,
    pub resource: String,
    /// Absent: every mapping of `resource` that declares `[changes]`.
    pub mappings: Option<Vec<String>>,
    pub on: Vec<ChangeKind>,
    #[serde(default)]
    pub changed: Vec<String>,
    pub became: Option<BecameSpec>,
    #[serde(default)]
    pub filters: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BecameSpec {
    pub element: String,
    pub values: Vec<String>,
}

/// `compartment`: the search parameters whose Patient reference puts a row in that patient's
/// compartment (`_id` for the Patient mapping itself), or `"shared"` for data that is no patient's
/// record (a practice's staff and sites).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum CompartmentSpec {
    Keyword(String),
    Links(CompartmentLinks),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompartmentLinks {
    pub patient: Vec<String>,
}

/// A profile a mapping claims: its canonical URL alone (claimed by every resource), or with the
/// elements the profile requires, each a dotted path (`name.family`: at least one `name`, and every
/// `name` has a `family`). A resource claims the profile in `meta.profile` only when it has them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ProfileSpec {
    Url(String),
    Claim(ProfileClaimSpec),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileClaimSpec {
    pub url: String,
    #[serde(default)]
    pub requires: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    pub table: String,
    pub id: IdSpec,
    pub last_updated: Option<String>,
    #[serde(default)]
    pub filter: Vec<FilterSpec>,
    #[serde(default)]
    pub join: Vec<JoinSpec>,
    pub latest: Option<LatestSpec>,
    /// Base-table columns that order keyset pages instead of the id's: unique among the served
    /// rows, in the order of an index the table has (a `latest` table's primary key).
    #[serde(default)]
    pub page_key: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdSpec {
    #[serde(default)]
    pub prefix: String,
    pub columns: Vec<String>,
    /// Key columns hold text rather than integers.
    #[serde(default)]
    pub text: bool,
    /// The single key column is a UUID: `binary(16)` on MySQL and SQLite, `uniqueidentifier` on
    /// SQL Server; ids are its 8-4-4-4-12 lowercase hex text.
    #[serde(default)]
    pub uuid: bool,
}

/// One condition on a column; exactly one operator key is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    pub column: String,
    pub equals: Option<toml::Value>,
    pub not_equals: Option<toml::Value>,
    #[serde(rename = "in")]
    pub in_values: Option<Vec<toml::Value>>,
    pub not_in: Option<Vec<toml::Value>>,
    pub null: Option<bool>,
    pub empty: Option<bool>,
    pub positive: Option<bool>,
    pub equals_column: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinSpec {
    pub alias: String,
    pub table: String,
    pub on: Vec<FilterSpec>,
    #[serde(default)]
    pub required: bool,
    /// The joined table is a small lookup table (categories, list options, statuses): its
    /// conditions become a list of its keys on the base table's column (see adapters/README.md).
    #[serde(default)]
    pub lookup: bool,
}

/// Keep only the row with the greatest `column` among rows sharing `partition`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatestSpec {
    pub column: String,
    pub partition: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantSpec {
    pub key: String,
    #[serde(default)]
    pub when: Vec<FilterSpec>,
    pub elements: toml::Table,
    /// Token values this variant matches, per search parameter declared with `per_variant`.
    #[serde(default)]
    pub search: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionSpec {
    pub table: String,
    /// Pairs of `[child column, parent column]`.
    #[serde(rename = "match")]
    pub match_columns: Vec<[String; 2]>,
    /// Tables joined to each child row (e.g. the procedure behind a claim line).
    #[serde(default)]
    pub join: Vec<JoinSpec>,
    #[serde(default)]
    pub filter: Vec<FilterSpec>,
    #[serde(default)]
    pub order_by: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapSpec {
    /// Legacy value -> FHIR value (a code string, or a number or boolean for typed elements).
    pub values: BTreeMap<String, toml::Value>,
    pub default: Option<toml::Value>,
    #[serde(default)]
    pub default_absent: bool,
    /// Legacy codes known to take the default: not reported by `portico audit` as unmapped.
    #[serde(default)]
    pub default_codes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchType {
    String,
    Token,
    Date,
    Reference,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    Date,
    Datetime,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSpec {
    #[serde(rename = "type")]
    pub kind: SearchType,
    #[serde(default)]
    pub description: String,
    pub column: Option<String>,
    #[serde(default)]
    pub columns: Vec<String>,
    pub time_column: Option<String>,
    pub column_type: Option<ColumnType>,
    /// IANA zone of a date column when it differs from the adapter's.
    pub zone: Option<String>,
    /// The column holds date-times as text in this strftime layout (e.g. "%Y%m%d%H%M%S"), which
    /// must sort in time order; search bounds are bound as text in the same layout.
    pub format: Option<String>,
    pub map: Option<String>,
    pub system: Option<String>,
    #[serde(default)]
    pub targets: Vec<TargetSpec>,
    #[serde(default)]
    pub constant: Vec<String>,
    #[serde(default)]
    pub per_variant: bool,
    pub target: Option<String>,
    /// Reference key columns hold text (e.g. OpenEMR `pc_pid` varchar).
    #[serde(default)]
    pub text_key: bool,
    #[serde(default)]
    pub sortable: bool,
    /// The parameter reads the rows of this collection (e.g. a patient's addresses): a resource
    /// matches when one of its rows does. String and token parameters only.
    pub collection: Option<String>,
    /// String parameters: the column holds several words (e.g. a whole name in one field), and a
    /// value matches the start of any word, not only of the column.
    #[serde(default)]
    pub words: bool,
}

/// One of several places a token or reference parameter looks: a token column with its system
/// (and map), or a reference target with its key column(s).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    pub column: Option<String>,
    #[serde(default)]
    pub columns: Vec<String>,
    pub system: Option<String>,
    pub map: Option<String>,
    pub target: Option<String>,
    #[serde(default)]
    pub text_key: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitKeep {
    #[default]
    All,
    AllButLast,
    First,
    Last,
}

impl SplitKeep {
    /// Whether the split yields an array (rather than one value).
    pub fn is_array(self) -> bool {
        matches!(self, SplitKeep::All | SplitKeep::AllButLast)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextCase {
    Lower,
    Upper,
}

/// The closed set of value transforms, written `{ fn = "<name>", ... }` in `elements`.
#[derive(Debug, Deserialize)]
#[serde(tag = "fn", rename_all = "lowercase", deny_unknown_fields)]
pub enum TransformSpec {
    Date {
        column: String,
        format: Option<String>,
    },
    Datetime {
        column: String,
        time: Option<String>,
        format: Option<String>,
        /// The element is an `instant`: a date without a time becomes local midnight.
        #[serde(default)]
        instant: bool,
        /// IANA zone of this column when it differs from the adapter's (e.g. "UTC").
        zone: Option<String>,
        /// Minutes to add (a number leaf or transform), e.g. an appointment's length for its end.
        add_minutes: Option<toml::Value>,
    },
    Map {
        column: String,
        map: String,
    },
    Number {
        column: String,
        multiply: Option<f64>,
        /// Another column to multiply by (e.g. a line's quantity for its net amount).
        times: Option<String>,
        decimals: Option<u32>,
        #[serde(default)]
        positive: bool,
    },
    Integer {
        column: String,
    },
    /// The number of characters of a text column, times `multiply` (Open Dental's `Pattern`
    /// holds an appointment's length as one character per 5 minutes).
    Length {
        column: String,
        multiply: Option<f64>,
    },
    Boolean {
        column: String,
    },
    Text {
        column: String,
        case: Option<TextCase>,
    },
    Concat {
        parts: Vec<toml::Value>,
        #[serde(default)]
        separator: String,
    },
    Split {
        column: String,
        separator: String,
        item: toml::Value,
        /// Which pieces: all of them (an array, the default), all but the last (an array), or
        /// only the first or the last (a single value).
        #[serde(default)]
        keep: SplitKeep,
    },
    Reference {
        resource: String,
        mapping: Option<String>,
        columns: Vec<String>,
    },
    Coalesce {
        values: Vec<toml::Value>,
    },
    If {
        when: Vec<FilterSpec>,
        then: toml::Value,
    },
    Each {
        collection: String,
        element: toml::Value,
        /// Join the items' text with this separator into one string, instead of an array (e.g.
        /// the combined text of several race codes).
        separator: Option<String>,
    },
    Sum {
        collection: String,
        column: String,
    },
    Sequence {},
}
