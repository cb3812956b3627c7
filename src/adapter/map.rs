//! Maps one legacy row (plus its collection rows) to FHIR JSON by evaluating a mapping's template.
//!
//! Absent values are NULL, empty or blank text, and the sentinel dates `0000-00-00` and
//! `0001-01-01`; an absent leaf removes itself, and an object or array left without any row-derived
//! value removes itself too.

use chrono::{
    Datelike, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeDelta, TimeZone, Timelike,
};
use chrono_tz::Tz;
use rust_decimal::prelude::ToPrimitive;
use serde_json::Value as Json;

use super::format::{SplitKeep, TextCase};
use super::model::{CodeMap, Mapping, Node, Predicate, PredicateOp, Transform};
use super::tree::{self, Field, Tree};
use crate::dialect::ast::Value;

/// One resource produced from a row.
#[derive(Debug, Clone)]
pub struct MappedResource {
    pub id: String,
    /// Which unpivot variant produced it, for mappings that unpivot.
    pub variant: Option<usize>,
    pub resource: Tree,
}

/// A row (or one unpivot variant of it) that cannot become a valid R4 resource, and why. It is left
/// out of pages and reported; it never fails the page.
#[derive(Debug, Clone, PartialEq)]
pub struct LeftOut {
    /// The id the resource would have had, when its key could form one.
    pub id: Option<String>,
    pub variant: Option<usize>,
    pub reason: LeftOutReason,
}

/// Why a row was left out. Carries column and element names and driver or model messages, never a
/// cell's value.
#[derive(Debug, Clone, PartialEq)]
pub enum LeftOutReason {
    /// The driver refused a cell (`column X: why`).
    Undecodable(String),
    /// The key columns are absent or cannot form a FHIR id.
    InvalidKey,
    /// A required element is missing (R4 cardinality): its name.
    MissingRequired(&'static str),
    /// The R4 model refused the resource: its message.
    Rejected(String),
}

impl LeftOutReason {
    /// A stable name for the kind of failure, for counts and reports.
    pub fn kind(&self) -> &'static str {
        match self {
            LeftOutReason::Undecodable(_) => "undecodable-cell",
            LeftOutReason::InvalidKey => "invalid-key",
            LeftOutReason::MissingRequired(_) => "missing-required-element",
            LeftOutReason::Rejected(_) => "invalid-r4",
        }
    }

    /// What a client may read: the kind and the column or element it concerns, nothing from a
    /// row's data.
    pub fn summary(&self) -> String {
        match self {
            LeftOutReason::Undecodable(detail) => {
                let column = detail
                    .strip_prefix("column ")
                    .and_then(|rest| rest.split(':').next())
                    .unwrap_or("?");
                format!("a value the database driver cannot decode (column {column})")
            }
            LeftOutReason::InvalidKey => "a key that cannot form a FHIR id".to_owned(),
            LeftOutReason::MissingRequired(element) => {
                format!("the required element {element} is missing")
            }
            LeftOutReason::Rejected(_) => "not valid FHIR R4".to_owned(),
        }
    }
}

impl std::fmt::Display for LeftOutReason {
    /// The full reason, for the operator (logs, `portico check --data`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeftOutReason::Undecodable(detail) => write!(f, "undecodable {detail}"),
            LeftOutReason::InvalidKey => f.write_str("the key columns cannot form a FHIR id"),
            LeftOutReason::MissingRequired(element) => {
                write!(f, "required element {element} is missing")
            }
            LeftOutReason::Rejected(message) => write!(f, "not valid R4: {message}"),
        }
    }
}

/// What one row yields: a resource per admitted variant, or why each cannot be served.
pub type MapOutcome = Result<MappedResource, LeftOut>;

/// The rows a mapping reads for one parent row: its own cells and, per collection, its child rows.
pub struct RowData<'a> {
    pub row: &'a [Value],
    pub children: &'a [Vec<&'a [Value]>],
}

/// Maps `data` to resources; `keep_variant` selects which unpivot variants a search wants. A row
/// with an undecodable cell or a key that cannot form an id yields one `LeftOut`. Whether each
/// resource is valid R4 is `check_r4`'s question.
pub fn map_row(
    mapping: &Mapping,
    data: &RowData<'_>,
    timezone: Tz,
    keep_variant: &dyn Fn(usize) -> bool,
) -> Vec<MapOutcome> {
    let undecodable = data
        .row
        .iter()
        .chain(
            data.children
                .iter()
                .flatten()
                .flat_map(|child| child.iter()),
        )
        .find_map(|cell| match cell {
            Value::Undecodable(detail) => Some(detail.clone()),
            _ => None,
        });
    let row_id = row_id(mapping, data.row);
    let reason = match (undecodable, &row_id) {
        (Some(detail), _) => Some(LeftOutReason::Undecodable(detail)),
        (None, None) => Some(LeftOutReason::InvalidKey),
        (None, Some(_)) => None,
    };
    if let Some(reason) = reason {
        return left_out_row(mapping, data.row, row_id, reason, keep_variant);
    }
    let row_id = row_id.expect("checked above");
    let evaluator = Evaluator {
        timezone,
        row: data.row,
        children: data.children,
        item_row: None,
        split_item: None,
        sequence: None,
    };
    let last_updated = mapping
        .last_updated
        .and_then(|index| instant(&data.row[index], timezone));
    let finish = |elements: &Node, id: String, variant: Option<usize>| {
        // The elements go straight into the resource after its type and id; meta goes in before
        // them once the profile claims, which read the elements, are known.
        let mut fields = Vec::with_capacity(3 + elements.field_count());
        fields.push(("resourceType", Tree::Text(mapping.resource_type.clone())));
        fields.push(("id", Tree::Text(id.clone())));
        if !evaluator.fill(elements, &mut fields) {
            // Only literals were present: the resource has no elements (its type and id stay).
            fields.truncate(2);
        }
        let mut resource = Tree::Object(fields);
        let mut meta = Vec::new();
        if let Some(last_updated) = &last_updated {
            meta.push(("lastUpdated", Tree::Text(last_updated.clone())));
        }
        let profiles: Vec<Tree> = mapping
            .profiles
            .iter()
            .filter(|claim| {
                let root = Field::Tree(&resource);
                claim.requires.iter().all(|path| root.has_path(path))
            })
            .map(|claim| Tree::Text(claim.url.clone()))
            .collect();
        if !profiles.is_empty() {
            meta.push(("profile", Tree::Array(profiles)));
        }
        if !meta.is_empty()
            && let Tree::Object(fields) = &mut resource
        {
            fields.insert(2, ("meta", Tree::Object(meta)));
        }
        Ok(MappedResource {
            id,
            variant,
            resource,
        })
    };
    if mapping.variants.is_empty() {
        return vec![finish(&mapping.elements, row_id, None)];
    }
    mapping
        .variants
        .iter()
        .enumerate()
        .filter(|(index, variant)| keep_variant(*index) && evaluator.all_hold(&variant.when))
        .map(|(index, variant)| {
            finish(
                &variant.elements,
                format!("{row_id}-{}", variant.key),
                Some(index),
            )
        })
        .collect()
}

/// A row that cannot be mapped at all: one `LeftOut`, or for an unpivot one per variant the row
/// would have yielded (a condition on an undecodable cell counts as met), so reports count what a
/// SQL count of the same search counts.
fn left_out_row(
    mapping: &Mapping,
    row: &[Value],
    row_id: Option<String>,
    reason: LeftOutReason,
    keep_variant: &dyn Fn(usize) -> bool,
) -> Vec<MapOutcome> {
    if mapping.variants.is_empty() {
        return vec![Err(LeftOut {
            id: row_id,
            variant: None,
            reason,
        })];
    }
    let undecodable = |p: &Predicate| {
        p.index
            .is_some_and(|i| matches!(row[i], Value::Undecodable(_)))
    };
    mapping
        .variants
        .iter()
        .enumerate()
        .filter(|(index, variant)| {
            keep_variant(*index)
                && variant
                    .when
                    .iter()
                    .all(|p| undecodable(p) || predicate_holds(p, row))
        })
        .map(|(index, variant)| {
            Err(LeftOut {
                id: row_id.as_ref().map(|id| format!("{id}-{}", variant.key)),
                variant: Some(index),
                reason: reason.clone(),
            })
        })
        .collect()
}

/// Why fhirbolt's strict R4 model refuses `resource`, if it does. The model checks names, nesting,
/// JSON types and cardinality, not primitive values, so its answer depends only on the resource's
/// shape: it is asked once per shape and remembered (a mapping yields few shapes), which keeps the
/// per-resource cost to one walk of the tree, which stops at its constants (`Tree::shape`).
fn model_refusal(resource_type: &str, resource: &Tree) -> Option<String> {
    use std::collections::HashMap;
    use std::sync::{OnceLock, RwLock};
    /// Past this many shapes the memory is cleared rather than grown.
    const MAX_SHAPES: usize = 20_000;
    /// Read by every mapping thread for every resource, written once per new shape.
    static VERDICTS: OnceLock<RwLock<HashMap<u64, Option<String>, ShapeKeys>>> = OnceLock::new();

    let shape = tree::resource_shape(resource_type, resource);
    let verdicts = VERDICTS.get_or_init(|| RwLock::new(HashMap::default()));
    if let Some(verdict) = verdicts.read().ok().and_then(|v| v.get(&shape).cloned()) {
        return verdict;
    }
    let verdict = serde_json::to_vec(resource)
        .map_err(|e| e.to_string())
        .and_then(|bytes| crate::fhir::xml::parse_strict(&bytes).map(|_| ()))
        .err();
    if let Ok(mut verdicts) = verdicts.write() {
        if verdicts.len() >= MAX_SHAPES {
            verdicts.clear();
        }
        verdicts.insert(shape, verdict.clone());
    }
    verdict
}

/// Shapes are hashes already: the verdicts' map uses them as they are.
type ShapeKeys = std::hash::BuildHasherDefault<ShapeKey>;

#[derive(Default)]
struct ShapeKey(u64);

impl std::hash::Hasher for ShapeKey {
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is called for a u64 key; this keeps any other use correct.
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = word;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Passes a mapped resource that is valid R4 (its required elements present, accepted by the
/// strict model) and leaves out one that is not.
pub fn check_r4(mapped: MappedResource) -> MapOutcome {
    let resource_type = mapped
        .resource
        .get("resourceType")
        .and_then(Field::as_str)
        .unwrap_or_default();
    let reason =
        match crate::fhir::required::missing_element(resource_type, &mapped.resource.names()) {
            Some(element) => Some(LeftOutReason::MissingRequired(element)),
            None => model_refusal(resource_type, &mapped.resource).map(LeftOutReason::Rejected),
        };
    match reason {
        None => Ok(mapped),
        Some(reason) => Err(LeftOut {
            id: Some(mapped.id),
            variant: mapped.variant,
            reason,
        }),
    }
}

/// The logical id of a row: prefix plus key parts joined by `-`. `None` when a key part is absent
/// or cannot appear in a FHIR id.
pub fn row_id(mapping: &Mapping, row: &[Value]) -> Option<String> {
    let mut id = mapping.id.prefix.clone();
    for (position, &index) in mapping.id.columns.iter().enumerate() {
        let part = key_text(&row[index])?;
        if position > 0 {
            id.push('-');
        }
        id.push_str(&part);
    }
    (id.len() <= 64).then_some(id)
}

/// A 16-byte binary UUID as 8-4-4-4-12 lowercase hex.
pub fn uuid_text(bytes: &[u8]) -> Option<String> {
    if bytes.len() != 16 {
        return None;
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

/// The 16 bytes of an 8-4-4-4-12 hex UUID.
pub fn uuid_bytes(text: &str) -> Option<Vec<u8>> {
    let groups: Vec<&str> = text.split('-').collect();
    let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    if lengths != [8, 4, 4, 4, 12] {
        return None;
    }
    let hex: String = groups.concat();
    (0..16)
        .map(|i| u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok())
        .collect()
}

/// A key cell as id text: integers, text of letters, digits and '.', or a binary UUID.
pub fn key_text(value: &Value) -> Option<String> {
    let text = match value {
        Value::Bytes(bytes) => return uuid_text(bytes),
        Value::Uuid(uuid) => return uuid_text(uuid),
        Value::Int(i) => i.to_string(),
        Value::Decimal(d) if d.fract().is_zero() => d.trunc().to_string(),
        Value::Text(s) => s.trim().to_owned(),
        _ => return None,
    };
    let valid = !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '.');
    valid.then_some(text)
}

/// A cell as text, or `None` when it counts as absent.
pub fn cell_text(value: &Value) -> Option<String> {
    let text = match value {
        Value::Null | Value::Undecodable(_) => return None,
        Value::Bytes(bytes) => return uuid_text(bytes),
        Value::Uuid(uuid) => return uuid_text(uuid),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => format_number(*f),
        Value::Decimal(d) => d.normalize().to_string(),
        Value::Text(s) => {
            let trimmed = s.trim();
            if trimmed.is_empty() || is_sentinel_date_text(trimmed) {
                return None;
            }
            trimmed.to_owned()
        }
        Value::Date(d) => {
            if is_sentinel_date(*d) {
                return None;
            }
            date_text(*d)
        }
        Value::DateTime(dt) => {
            if is_sentinel_date(dt.date()) {
                return None;
            }
            date_time_text(*dt)
        }
        Value::Time(t) => time_text(*t),
    };
    Some(text)
}

fn format_number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        value.to_string()
    }
}

/// A code cell looked up in `map`: `None` when the cell is absent, `Some(None)` when its code is
/// not listed (the map's default, if any, applies).
pub fn map_cell<'m>(map: &'m CodeMap, cell: &Value) -> Option<Option<&'m Json>> {
    let legacy = cell_text(cell)?;
    // A bit column reads as a boolean from SQL Server and as 0/1 from MySQL: maps written with
    // "0"/"1" keys serve both.
    let as_digit = match cell {
        Value::Bool(b) => Some(if *b { "1" } else { "0" }),
        _ => None,
    };
    Some(
        map.listed(&legacy)
            .or_else(|| as_digit.and_then(|digit| map.listed(digit))),
    )
}

pub fn is_sentinel_date(date: NaiveDate) -> bool {
    date == NaiveDate::from_ymd_opt(1, 1, 1).expect("valid date")
}

pub fn is_sentinel_date_text(text: &str) -> bool {
    text.starts_with("0000-00-00") || text.starts_with("0001-01-01")
}

/// A cell as a number, or `None` when absent or not numeric.
pub fn cell_number(value: &Value) -> Option<f64> {
    match value {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        Value::Decimal(d) => d.to_f64(),
        Value::Text(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => None,
    }
}

/// A cell as a local date-time, for date-time columns and text in common layouts.
pub fn cell_datetime(value: &Value, format: Option<&str>) -> Option<LocalDateTime> {
    match value {
        Value::DateTime(dt) if !is_sentinel_date(dt.date()) => Some(LocalDateTime::DateTime(*dt)),
        Value::Date(d) if !is_sentinel_date(*d) => Some(LocalDateTime::Date(*d)),
        Value::Text(text) => {
            let text = text.trim();
            if text.is_empty() || is_sentinel_date_text(text) {
                return None;
            }
            if let Some(format) = format {
                return NaiveDateTime::parse_from_str(text, format)
                    .map(LocalDateTime::DateTime)
                    .or_else(|_| NaiveDate::parse_from_str(text, format).map(LocalDateTime::Date))
                    .ok();
            }
            for layout in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
                if let Ok(dt) = NaiveDateTime::parse_from_str(text, layout) {
                    return Some(LocalDateTime::DateTime(dt));
                }
            }
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .map(LocalDateTime::Date)
                .or_else(|| partial_date(text))
        }
        _ => None,
    }
}

fn cell_time(value: &Value) -> Option<NaiveTime> {
    match value {
        Value::Time(t) => Some(*t),
        Value::Text(text) => {
            let text = text.trim();
            NaiveTime::parse_from_str(text, "%H:%M:%S%.f")
                .or_else(|_| NaiveTime::parse_from_str(text, "%H:%M"))
                .ok()
        }
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LocalDateTime {
    Date(NaiveDate),
    DateTime(NaiveDateTime),
    /// A MySQL partial date: `1958-00-00` is the year 1958, `2001-07-00` (with or without a time,
    /// which then means nothing) the month. FHIR dates and dateTimes take these precisions.
    Partial {
        year: i32,
        month: Option<u32>,
    },
}

impl LocalDateTime {
    /// The value as a FHIR `date`: `YYYY-MM-DD`, or `YYYY`/`YYYY-MM` for a partial date.
    fn fhir_date(self) -> String {
        match self {
            LocalDateTime::Date(d) => date_text(d),
            LocalDateTime::DateTime(dt) => date_text(dt.date()),
            LocalDateTime::Partial { year, month: None } => format!("{year:04}"),
            LocalDateTime::Partial {
                year,
                month: Some(month),
            } => format!("{year:04}-{month:02}"),
        }
    }
}

/// `YYYY-00-00` or `YYYY-MM-00`, optionally followed by a time: the date part it has.
fn partial_date(text: &str) -> Option<LocalDateTime> {
    let date = text.get(..10)?;
    let rest = &text[10..];
    if !(rest.is_empty() || rest.starts_with([' ', 'T'])) {
        return None;
    }
    let bytes = date.as_bytes();
    let digits = |range: std::ops::Range<usize>| bytes[range].iter().all(u8::is_ascii_digit);
    if !(digits(0..4) && bytes[4] == b'-' && digits(5..7) && bytes[7] == b'-' && digits(8..10)) {
        return None;
    }
    let year: i32 = date[..4].parse().ok()?;
    let month: u32 = date[5..7].parse().ok()?;
    let day: u32 = date[8..10].parse().ok()?;
    // FHIR years run from 0001; a day without a month is no precision FHIR has.
    if year == 0 || day != 0 || month > 12 {
        return None;
    }
    Some(LocalDateTime::Partial {
        year,
        month: (month != 0).then_some(month),
    })
}

/// A legacy local date-time as a FHIR instant (with the zone's offset). Dates become midnight.
pub fn instant(value: &Value, timezone: Tz) -> Option<String> {
    let local = match cell_datetime(value, None)? {
        LocalDateTime::DateTime(dt) => dt,
        LocalDateTime::Date(d) => d.and_time(NaiveTime::MIN),
        LocalDateTime::Partial { .. } => return None,
    };
    Some(format_instant(local, timezone))
}

/// Formats a local time with the zone's offset. In a daylight-saving gap the wall clock time does
/// not exist; it is read as the instant an hour later, as clocks that skipped ahead would show.
pub fn format_instant(local: NaiveDateTime, timezone: Tz) -> String {
    let zoned = timezone.from_local_datetime(&local).earliest().or_else(|| {
        timezone
            .from_local_datetime(&(local + TimeDelta::hours(1)))
            .earliest()
    });
    let mut text = String::with_capacity(25);
    match zoned {
        Some(zoned) => {
            push_date_time(&mut text, zoned.naive_local());
            let offset = zoned.offset().fix().local_minus_utc();
            text.push(if offset < 0 { '-' } else { '+' });
            // Rounded to the minute, as `%:z` rounds a local mean time's seconds.
            let minutes = (offset.unsigned_abs() + 30) / 60;
            push_digits(&mut text, minutes / 60, 2);
            text.push(':');
            push_digits(&mut text, minutes % 60, 2);
        }
        None => {
            push_date_time(&mut text, local);
            text.push('Z');
        }
    }
    text
}

/// `YYYY-MM-DD`, as chrono's `%Y-%m-%d` writes it, without parsing a format string for every
/// cell (that parsing was 3 % of an export's CPU).
fn date_text(date: NaiveDate) -> String {
    let mut text = String::with_capacity(10);
    push_date(&mut text, date);
    text
}

/// `hh:mm:ss`, as chrono's `%H:%M:%S` writes it (a leap second's 60 included).
fn time_text(time: NaiveTime) -> String {
    let mut text = String::with_capacity(8);
    push_time(&mut text, time);
    text
}

/// `YYYY-MM-DDThh:mm:ss`.
fn date_time_text(at: NaiveDateTime) -> String {
    let mut text = String::with_capacity(19);
    push_date_time(&mut text, at);
    text
}

// The pushes below write dates digit by digit into one buffer: formatting machinery with padding,
// and a String per part, was most of the cost of every date a mapping writes.

fn push_date_time(text: &mut String, at: NaiveDateTime) {
    push_date(text, at.date());
    text.push('T');
    push_time(text, at.time());
}

fn push_date(text: &mut String, date: NaiveDate) {
    match u32::try_from(date.year()) {
        Ok(year) if year <= 9999 => {
            push_digits(text, year, 4);
            text.push('-');
            push_digits(text, date.month(), 2);
            text.push('-');
            push_digits(text, date.day(), 2);
        }
        _ => {
            use std::fmt::Write;
            let _ = write!(text, "{}", date.format("%Y-%m-%d"));
        }
    }
}

fn push_time(text: &mut String, time: NaiveTime) {
    let leap = u32::from(time.nanosecond() >= 1_000_000_000);
    push_digits(text, time.hour(), 2);
    text.push(':');
    push_digits(text, time.minute(), 2);
    text.push(':');
    push_digits(text, time.second() + leap, 2);
}

/// `value`'s last `width` decimal digits, zero-padded (callers keep `value` below 10^width).
fn push_digits(text: &mut String, value: u32, width: u32) {
    for place in (0..width).rev() {
        let digit = (value / 10u32.pow(place)) % 10;
        text.push(char::from(b'0' + digit as u8));
    }
}

/// Loose equality as SQL engines apply it: numbers compare numerically, text case-sensitively.
pub fn loose_eq(cell: &Value, literal: &Value) -> bool {
    if let (Some(a), Some(b)) = (strict_number(cell), strict_number(literal)) {
        return (a - b).abs() < 1e-9;
    }
    match (cell, literal) {
        (Value::Null, _) | (_, Value::Null) => false,
        (Value::Text(a), Value::Text(b)) => a.trim_end() == b.trim_end(),
        (a, b) => raw_text(a) == raw_text(b),
    }
}

fn strict_number(value: &Value) -> Option<f64> {
    match value {
        Value::Int(_) | Value::Float(_) | Value::Decimal(_) | Value::Bool(_) => cell_number(value),
        _ => None,
    }
}

/// Text of a value without the absent-value rules (so '' stays '').
fn raw_text(value: &Value) -> String {
    match value {
        Value::Text(s) => s.clone(),
        other => cell_text(other).unwrap_or_default(),
    }
}

/// Evaluates a predicate on a fetched row, with the same meaning the SQL form has.
pub fn predicate_holds(predicate: &Predicate, row: &[Value]) -> bool {
    let Some(index) = predicate.index else {
        return true;
    };
    let cell = &row[index];
    let is_null = matches!(cell, Value::Null);
    match &predicate.op {
        PredicateOp::Equals(v) => loose_eq(cell, v),
        PredicateOp::NotEquals(v) => !is_null && !loose_eq(cell, v),
        PredicateOp::In(values) => values.iter().any(|v| loose_eq(cell, v)),
        PredicateOp::NotIn(values) => !is_null && !values.iter().any(|v| loose_eq(cell, v)),
        PredicateOp::Null(expected) => is_null == *expected,
        PredicateOp::Empty(expected) => {
            let empty = match cell {
                Value::Null => true,
                Value::Text(s) => s.trim().is_empty(),
                _ => false,
            };
            empty == *expected
        }
        PredicateOp::Positive => cell_number(cell).is_some_and(|n| n > 0.0),
        PredicateOp::EqualsColumn(_) => true,
    }
}

struct Evaluator<'a> {
    timezone: Tz,
    row: &'a [Value],
    children: &'a [Vec<&'a [Value]>],
    item_row: Option<&'a [Value]>,
    split_item: Option<&'a str>,
    sequence: Option<usize>,
}

impl<'a> Evaluator<'a> {
    fn current(&self) -> &'a [Value] {
        self.item_row.unwrap_or(self.row)
    }

    fn cell(&self, index: usize) -> &'a Value {
        &self.current()[index]
    }

    fn all_hold(&self, predicates: &[Predicate]) -> bool {
        predicates
            .iter()
            .all(|p| predicate_holds(p, self.current()))
    }

    fn node(&self, node: &Node) -> Option<Tree> {
        match node {
            Node::Literal(constant) if constant.is_null() => None,
            Node::Literal(constant) => Some(Tree::Constant(constant)),
            Node::Column(index) => cell_text(self.cell(*index)).map(Tree::Text),
            Node::SplitItem => self.split_item.map(|s| Tree::Text(s.to_owned())),
            Node::Object {
                dynamic: false,
                constant,
                ..
            } => constant.map(Tree::Constant),
            Node::Object { fields, .. } => {
                let mut object = Vec::with_capacity(fields.len());
                self.fill(node, &mut object).then_some(Tree::Object(object))
            }
            Node::Array(items) => {
                let mut array = Vec::with_capacity(items.len());
                for item in items {
                    match self.node(item) {
                        // Splits and collections yield arrays; inside an array they contribute items.
                        Some(Tree::Array(inner)) if is_expanding(item) => array.extend(inner),
                        Some(value) => array.push(value),
                        None => {}
                    }
                }
                (!array.is_empty()).then_some(Tree::Array(array))
            }
            Node::Transform(transform) => self.transform(transform),
        }
    }

    /// Adds the present fields of `node` (an object; anything else adds nothing) to `object`,
    /// and says whether the object stands: some field present, and when the object reads the
    /// row, one of those that do. A field already in `object` takes the new value in place.
    fn fill(&self, node: &Node, object: &mut Vec<(&'static str, Tree)>) -> bool {
        let Node::Object {
            fields, dynamic, ..
        } = node
        else {
            return false;
        };
        // A template's names are distinct; only what `object` held before can repeat one.
        let held = object.len();
        let mut any_present = false;
        let mut any_dynamic_present = false;
        for (name, child) in fields {
            if let Some(value) = self.node(child) {
                any_present = true;
                any_dynamic_present |= child.is_dynamic();
                match object[..held].iter_mut().find(|(held, _)| held == name) {
                    Some(field) => field.1 = value,
                    None => object.push((name, value)),
                }
            }
        }
        any_present && (any_dynamic_present || !dynamic)
    }

    fn transform(&self, transform: &Transform) -> Option<Tree> {
        match transform {
            Transform::Date { column, format } => {
                let date = cell_datetime(self.cell(*column), format.as_deref())?;
                Some(Tree::Text(date.fhir_date()))
            }
            Transform::DateTime {
                column,
                time,
                format,
                instant,
                zone,
                add_minutes,
            } => {
                let timezone = zone.unwrap_or(self.timezone);
                let local = cell_datetime(self.cell(*column), format.as_deref())?;
                let time = time.and_then(|t| cell_time(self.cell(t)));
                let moment = match (local, time) {
                    (LocalDateTime::DateTime(dt), _) => Some(dt),
                    (LocalDateTime::Date(d), Some(t)) => Some(d.and_time(t)),
                    (LocalDateTime::Date(d), None) if *instant => Some(d.and_time(NaiveTime::MIN)),
                    (LocalDateTime::Date(_) | LocalDateTime::Partial { .. }, _) => None,
                };
                let shift = match add_minutes {
                    // A declared offset that is absent on this row makes the value absent too.
                    Some(minutes) => Some(self.node(minutes)?.as_f64()?),
                    None => None,
                };
                let text = match (moment, local) {
                    (Some(moment), _) => {
                        // Legacy data can hold anything: an impossible shift is absent, not a panic.
                        let seconds = (shift.unwrap_or(0.0) * 60.0).round() as i64;
                        let shifted =
                            moment.checked_add_signed(TimeDelta::try_seconds(seconds)?)?;
                        // FHIR date-times have four-digit years.
                        if !(1..=9999).contains(&chrono::Datelike::year(&shifted)) {
                            return None;
                        }
                        format_instant(shifted, timezone)
                    }
                    // A day, or the year or month of a partial date, is a FHIR dateTime; an
                    // instant needs a time of day.
                    (None, LocalDateTime::Date(_) | LocalDateTime::Partial { .. })
                        if shift.is_none() && !*instant =>
                    {
                        local.fhir_date()
                    }
                    (None, _) => return None,
                };
                Some(Tree::Text(text))
            }
            Transform::Map { column, map } => match map_cell(map, self.cell(*column))? {
                Some(value) => Some(Tree::from_json(value.clone())),
                None => map.default.clone().map(Tree::from_json),
            },
            Transform::Number {
                column,
                multiply,
                times,
                decimals,
                positive,
            } => {
                let mut number = cell_number(self.cell(*column))?;
                if *positive && number <= 0.0 {
                    return None;
                }
                if let Some(factor) = multiply {
                    number *= factor;
                }
                if let Some(times) = times {
                    number *= cell_number(self.cell(*times))?;
                }
                if let Some(places) = decimals {
                    let scale = 10f64.powi(*places as i32);
                    number = (number * scale).round() / scale;
                }
                json_number(number)
            }
            Transform::Length { column, multiply } => {
                let text = cell_text(self.cell(*column))?;
                json_number(text.chars().count() as f64 * multiply.unwrap_or(1.0))
            }
            Transform::Integer { column } => {
                let number = cell_number(self.cell(*column))?;
                (number.fract() == 0.0).then(|| Tree::Number((number as i64).into()))
            }
            Transform::Boolean { column } => {
                let flag = match self.cell(*column) {
                    Value::Bool(b) => *b,
                    other => match cell_text(other)?.to_ascii_lowercase().as_str() {
                        "1" | "true" | "yes" | "y" => true,
                        "0" | "false" | "no" | "n" => false,
                        _ => return None,
                    },
                };
                Some(Tree::Bool(flag))
            }
            Transform::Text { column, case } => {
                let text = cell_text(self.cell(*column))?;
                Some(Tree::Text(match case {
                    Some(TextCase::Lower) => text.to_lowercase(),
                    Some(TextCase::Upper) => text.to_uppercase(),
                    None => text,
                }))
            }
            Transform::Concat { parts, separator } => {
                let pieces: Vec<String> = parts
                    .iter()
                    .filter_map(|part| self.node(part)?.into_text())
                    .collect();
                // A separator-only or literal-only result means every column part was absent.
                let has_dynamic = parts.iter().any(Node::is_dynamic);
                let any_dynamic = parts
                    .iter()
                    .any(|part| part.is_dynamic() && self.node(part).is_some());
                if pieces.is_empty() || (has_dynamic && !any_dynamic) {
                    return None;
                }
                Some(Tree::Text(pieces.join(separator)))
            }
            Transform::Split {
                column,
                separator,
                item,
                keep,
            } => {
                let text = cell_text(self.cell(*column))?;
                let pieces: Vec<&str> = text
                    .split(separator.as_str())
                    .map(str::trim)
                    .filter(|piece| !piece.is_empty())
                    .collect();
                let kept = match keep {
                    SplitKeep::All => &pieces[..],
                    SplitKeep::AllButLast => &pieces[..pieces.len().saturating_sub(1)],
                    SplitKeep::First => &pieces[..pieces.len().min(1)],
                    SplitKeep::Last => &pieces[pieces.len().saturating_sub(1)..],
                };
                let mut values: Vec<Tree> = kept
                    .iter()
                    .filter_map(|piece| {
                        let scoped = Evaluator {
                            split_item: Some(piece),
                            ..self.clone_ref()
                        };
                        scoped.node(item)
                    })
                    .collect();
                if keep.is_array() {
                    (!values.is_empty()).then_some(Tree::Array(values))
                } else {
                    values.pop()
                }
            }
            Transform::Reference {
                resource_type,
                prefix,
                columns,
            } => {
                let mut id = prefix.clone();
                for (position, &index) in columns.iter().enumerate() {
                    let part = key_text(self.cell(index)).filter(|p| p != "0")?;
                    if position > 0 {
                        id.push('-');
                    }
                    id.push_str(&part);
                }
                Some(Tree::Text(format!("{resource_type}/{id}")))
            }
            Transform::Coalesce(values) => values.iter().find_map(|value| self.node(value)),
            Transform::If { when, then } => {
                if self.all_hold(when) {
                    self.node(then)
                } else {
                    None
                }
            }
            Transform::Each {
                collection,
                element,
                separator,
            } => {
                let items: Vec<Tree> = self.children[*collection]
                    .iter()
                    .enumerate()
                    .filter_map(|(position, child)| {
                        let scoped = Evaluator {
                            item_row: Some(child),
                            sequence: Some(position + 1),
                            ..self.clone_ref()
                        };
                        scoped.node(element)
                    })
                    .collect();
                if items.is_empty() {
                    return None;
                }
                match separator {
                    None => Some(Tree::Array(items)),
                    Some(separator) => {
                        let texts: Vec<String> =
                            items.into_iter().filter_map(Tree::into_text).collect();
                        (!texts.is_empty()).then(|| Tree::Text(texts.join(separator)))
                    }
                }
            }
            Transform::Sum { collection, column } => {
                let rows = &self.children[*collection];
                if rows.is_empty() {
                    return None;
                }
                let total: f64 = rows
                    .iter()
                    .filter_map(|child| cell_number(&child[*column]))
                    .sum();
                json_number((total * 100.0).round() / 100.0)
            }
            Transform::Sequence => self.sequence.map(|s| Tree::Number((s as u64).into())),
        }
    }

    fn clone_ref(&self) -> Evaluator<'a> {
        Evaluator {
            timezone: self.timezone,
            row: self.row,
            children: self.children,
            item_row: self.item_row,
            split_item: self.split_item,
            sequence: self.sequence,
        }
    }
}

fn is_expanding(node: &Node) -> bool {
    matches!(node, Node::Transform(t) if match &**t {
        Transform::Split { keep, .. } => keep.is_array(),
        Transform::Each { separator, .. } => separator.is_none(),
        _ => false,
    })
}

fn json_number(number: f64) -> Option<Tree> {
    if number.fract() == 0.0 && number.abs() < 9.0e15 {
        return Some(Tree::Number((number as i64).into()));
    }
    serde_json::Number::from_f64(number).map(Tree::Number)
}

#[cfg(test)]
mod tests;
