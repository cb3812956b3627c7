//! `portico check`: validate the adapter files (every problem at once), then check them against
//! the live database: tables and columns exist, key and date columns have fitting types, and (a
//! warning, not a failure) MySQL/MariaDB string search columns have collations that ignore case
//! and accents, as FHIR string search does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::access::Access;
use crate::adapter::Adapter;
use crate::adapter::format::ColumnType;
use crate::adapter::model::{ChangeStrategy, ColumnRef, SearchKind};
use crate::app::load_adapter;
use crate::config;
use crate::db::{Database, redact_url};
use crate::dialect::ast::Value;
use crate::dialect::{DialectKind, RenderedQuery};
use crate::repository::{LeftOutRow, LookupCache, Repository};
use crate::search::compile::plan;
use crate::search::parse::{MAX_COUNT, parse};

pub mod explain;

/// What a column must hold for the way a mapping uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    Any,
    IntegerKey,
    /// `uuid = true` keys: `uniqueidentifier` (SQL Server), `binary(16)` or UUID text.
    UuidKey,
    DateOrTime,
    /// `[changes]` timestamp columns: compared with a watermark in SQL, so a real date-time type.
    ChangeTimestamp,
    /// `[changes]` rowversion column: SQL Server reports `timestamp` (its old name) for it.
    RowVersion,
}

pub async fn run(
    config_file: Option<PathBuf>,
    offline: bool,
    data: bool,
    explain_min_rows: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let settings = config::load(config_file.as_deref())?;
    let adapter = match load_adapter(&settings) {
        Ok(adapter) => adapter,
        Err(error) => {
            println!("FAIL adapter validation\n{error}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let mapping_count: usize = adapter.resources.values().map(|r| r.mappings.len()).sum();
    println!(
        "ok   adapter {} ({}): {} resource types, {mapping_count} mappings",
        adapter.name,
        adapter.dir.display(),
        adapter.resources.len()
    );
    if offline {
        return Ok(ExitCode::SUCCESS);
    }
    settings.legacy.require_url()?;
    let database = Database::connect_lazy(&settings.legacy.db_settings())
        .map_err(|e| anyhow::anyhow!(e.message))?;
    if let Err(error) = database.ping().await {
        println!(
            "FAIL cannot reach {}: {}",
            redact_url(settings.legacy.url.expose()),
            error.message
        );
        return Ok(ExitCode::FAILURE);
    }
    println!(
        "ok   connected to {} ({})",
        redact_url(settings.legacy.url.expose()),
        database.dialect().name()
    );
    let problems = check_live(&adapter, &database).await?;
    for warning in collation_warnings(&adapter, &database).await? {
        println!("warn {warning}");
    }
    for problem in &problems {
        println!("FAIL {problem}");
    }
    if !problems.is_empty() {
        println!("{} problem(s)", problems.len());
        return Ok(ExitCode::FAILURE);
    }
    println!("ok   every table and column the adapter reads exists with a fitting type");
    let repository = Repository {
        adapter: std::sync::Arc::new(adapter),
        db: database,
        lookups: std::sync::Arc::new(LookupCache::new(settings.legacy.lookup_refresh())),
    };
    if let Some(min_rows) = explain_min_rows {
        print_plan_advice(&repository, min_rows).await?;
    }
    if !data {
        return Ok(ExitCode::SUCCESS);
    }
    let left_out = scan_data(&repository).await?;
    Ok(if left_out == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `--explain`: the query-plan advisor's findings (from MySQL/MariaDB's `EXPLAIN FORMAT=JSON`,
/// SQLite's `EXPLAIN QUERY PLAN` or SQL Server's SHOWPLAN XML), largest table first. Advice, not
/// failure: the exit code stays as the other checks leave it.
async fn print_plan_advice(repository: &Repository, min_rows: u64) -> anyhow::Result<()> {
    let findings = explain::advise(repository, min_rows).await?;
    if findings.is_empty() {
        println!(
            "ok   plans: no statement reads or sorts a table of {min_rows} rows or more whole"
        );
        return Ok(());
    }
    for finding in &findings {
        println!("warn plan: {}", finding.summary());
        match &finding.advice {
            explain::Advice::Create(statement) => {
                println!("       an index would serve it (not created): {statement}")
            }
            explain::Advice::Unused { index } => println!(
                "       index {index} has the columns, but the database chose not to use it"
            ),
            explain::Advice::Nothing => println!("       no single index serves it"),
        }
    }
    println!(
        "{} plan finding(s); a DBA may add the indexes above (Portico never writes to the PMS)",
        findings.len()
    );
    Ok(())
}

/// `--data`: pages through every resource of every mapping, as a client would, and lists the rows
/// that cannot be served as valid R4 (table, key, reason), per mapping. Read-only. Returns their
/// number.
async fn scan_data(repository: &Repository) -> anyhow::Result<usize> {
    let adapter = &repository.adapter;
    let now = chrono::Utc::now()
        .with_timezone(&adapter.timezone)
        .naive_local();
    let mut left_out_total = 0;
    for (resource_type, def) in &adapter.resources {
        let request = parse(&[("_count".to_owned(), MAX_COUNT.to_string())])
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let plan = plan(
            def,
            &adapter.resources,
            request,
            false,
            adapter.timezone,
            now,
        )
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let mut served = 0usize;
        let mut per_mapping: BTreeMap<String, Vec<LeftOutRow>> = BTreeMap::new();
        let mut after = None;
        loop {
            let page = repository
                .search(&plan, after.as_ref(), &Access::everything(), false)
                .await
                .map_err(|e| anyhow::anyhow!("{resource_type}: {}", e.message))?;
            served += page.matches.len();
            for row in page.left_out {
                per_mapping
                    .entry(row.mapping.clone())
                    .or_default()
                    .push(row);
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let left_out: usize = per_mapping.values().map(Vec::len).sum();
        left_out_total += left_out;
        let status = if left_out == 0 { "ok  " } else { "FAIL" };
        println!("{status} data {resource_type}: {served} served, {left_out} left out");
        for (mapping, rows) in per_mapping {
            for row in rows {
                println!(
                    "       {mapping}: {} {} ({}): {}",
                    row.table,
                    row.key,
                    row.left_out.reason.kind(),
                    row.left_out.reason
                );
            }
        }
    }
    Ok(left_out_total)
}

/// Every table the adapter reads, with the columns it reads there and how it uses them.
fn requirements(adapter: &Adapter) -> BTreeMap<String, BTreeMap<String, (Use, String)>> {
    let mut tables: BTreeMap<String, BTreeMap<String, (Use, String)>> = BTreeMap::new();
    for def in adapter.resources.values() {
        for mapping in &def.mappings {
            let file = mapping.file.display().to_string();
            tables.entry(mapping.table.clone()).or_default();
            for join in &mapping.joins {
                tables.entry(join.table.clone()).or_default();
            }
            let mut need = |table: &str, column: &str, kind: Use| {
                let entry = tables
                    .entry(table.to_owned())
                    .or_default()
                    .entry(column.to_owned())
                    .or_insert((Use::Any, file.clone()));
                if kind != Use::Any {
                    entry.0 = kind;
                }
            };
            for (table, column) in mapping.columns_read() {
                need(table, column, Use::Any);
            }
            let mut need_ref = |column: &ColumnRef, kind: Use| {
                need(mapping.table_of(column), &column.column, kind)
            };
            let key_use = if mapping.id.uuid {
                Some(Use::UuidKey)
            } else if mapping.id.text {
                None
            } else {
                Some(Use::IntegerKey)
            };
            if let Some(key_use) = key_use {
                for &index in &mapping.id.columns {
                    need_ref(&mapping.columns[index], key_use);
                }
            }
            if let Some(index) = mapping.last_updated {
                need_ref(&mapping.columns[index], Use::DateOrTime);
            }
            match mapping.changes.as_ref().map(|changes| &changes.strategy) {
                Some(ChangeStrategy::Timestamp { columns, .. }) => {
                    for &index in columns {
                        need_ref(&mapping.columns[index], Use::ChangeTimestamp);
                    }
                }
                Some(ChangeStrategy::RowVersion { column }) => {
                    need_ref(&mapping.columns[*column], Use::RowVersion);
                }
                Some(ChangeStrategy::Scan) | None => {}
            }
            for param in mapping.search.values() {
                if let SearchKind::Date {
                    column,
                    time,
                    column_type,
                    ..
                } = &param.kind
                {
                    if *column_type == ColumnType::Date || *column_type == ColumnType::Datetime {
                        need_ref(column, Use::DateOrTime);
                    }
                    if let Some(time) = time {
                        need_ref(time, Use::DateOrTime);
                    }
                }
            }
        }
    }
    tables
}

fn fits(declared: &str, kind: Use) -> bool {
    let declared = declared.to_ascii_lowercase();
    match kind {
        Use::Any => true,
        // Whole numbers, whatever the type: numeric(10,0) keys are common in older PMS schemas.
        Use::IntegerKey => ["int", "numeric", "decimal", "char", "text"]
            .iter()
            .any(|t| declared.contains(t)),
        Use::UuidKey => ["uniqueidentifier", "binary", "blob", "char"]
            .iter()
            .any(|t| declared.contains(t)),
        Use::DateOrTime => ["date", "time", "char", "text"]
            .iter()
            .any(|t| declared.contains(t)),
        Use::ChangeTimestamp => ["date", "time"].iter().any(|t| declared.contains(t)),
        Use::RowVersion => ["rowversion", "timestamp", "binary(8)"]
            .iter()
            .any(|t| declared.contains(t)),
    }
}

async fn check_live(adapter: &Adapter, database: &Database) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    for (table, columns) in requirements(adapter) {
        let existing = database
            .table_columns(&table)
            .await
            .map_err(|e| anyhow::anyhow!(e.message))?;
        if existing.is_empty() {
            problems.push(format!(
                "table {table} does not exist (needed by {})",
                columns
                    .values()
                    .next()
                    .map(|c| c.1.as_str())
                    .unwrap_or("the adapter")
            ));
            continue;
        }
        let names: BTreeSet<String> = existing
            .iter()
            .map(|(n, _)| n.to_ascii_lowercase())
            .collect();
        for (column, (kind, file)) in columns {
            match existing
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(&column))
            {
                None if !names.contains(&column.to_ascii_lowercase()) => {
                    problems.push(format!("{table}.{column} does not exist (used in {file})"));
                }
                Some((_, declared)) if !fits(declared, kind) => problems.push(format!(
                    "{table}.{column} is {declared}, which does not fit its use as {} (in {file})",
                    match kind {
                        Use::IntegerKey => "an integer key",
                        Use::UuidKey => "a UUID key",
                        Use::DateOrTime => "a date or time",
                        Use::ChangeTimestamp => "a change timestamp (a date-time type)",
                        Use::RowVersion => "a rowversion",
                        Use::Any => "a value",
                    }
                )),
                _ => {}
            }
        }
    }
    Ok(problems)
}

/// Every string search parameter's columns: (mapping, parameter, table, column).
fn string_search_columns(adapter: &Adapter) -> Vec<(&str, &str, &str, &str)> {
    let mut columns = Vec::new();
    for def in adapter.resources.values() {
        for mapping in &def.mappings {
            for (name, param) in &mapping.search {
                let SearchKind::String { columns: refs, .. } = &param.kind else {
                    continue;
                };
                for column in refs {
                    let table = match param.collection {
                        Some(index) => mapping.collections[index].table_of(column),
                        None => mapping.table_of(column),
                    };
                    columns.push((
                        mapping.name.as_str(),
                        name.as_str(),
                        table,
                        column.column.as_str(),
                    ));
                }
            }
        }
    }
    columns
}

/// On MySQL/MariaDB the column collation decides string matching; one line per string search
/// column whose collation counts case or accents. SQLite folds both sides itself and SQL Server
/// names a `_CI_AI` collation in the compiled SQL, so neither depends on the column.
async fn collation_warnings(adapter: &Adapter, database: &Database) -> anyhow::Result<Vec<String>> {
    if database.dialect() != DialectKind::Mysql {
        return Ok(Vec::new());
    }
    let rows = database
        .fetch(&RenderedQuery {
            sql: "SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, COLLATION_NAME \
                  FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE()"
                .into(),
            params: Vec::new(),
        })
        .await
        .map_err(|e| anyhow::anyhow!(e.message))?;
    let text = |value: &Value| match value {
        Value::Text(text) => Some(text.clone()),
        Value::Bytes(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        _ => None,
    };
    let catalogue: BTreeMap<(String, String), (String, Option<String>)> = rows
        .iter()
        .filter_map(|row| {
            let table = text(&row[0])?.to_ascii_lowercase();
            let column = text(&row[1])?.to_ascii_lowercase();
            Some(((table, column), (text(&row[2])?, text(&row[3]))))
        })
        .collect();
    let mut warnings = Vec::new();
    for (mapping, param, table, column) in string_search_columns(adapter) {
        let key = (table.to_ascii_lowercase(), column.to_ascii_lowercase());
        let Some((data_type, collation)) = catalogue.get(&key) else {
            continue; // a missing column is already a failure
        };
        if let Some(why) = string_match_problem(data_type, collation.as_deref()) {
            warnings.push(format!(
                "{mapping} {param}: {table}.{column} is {} ({why}); FHIR string search ignores case and accents, `{param}=` on this column may not",
                collation.as_deref().unwrap_or(data_type),
            ));
        }
    }
    Ok(warnings)
}

/// Collations known to ignore case and accents for MySQL/MariaDB text (`latin1_general_ci` is
/// not one: it is accent-sensitive; language collations keep some accented letters apart, as
/// `latin1_swedish_ci` does ü, å, ä and ö).
const INSENSITIVE_COLLATIONS: &[&str] = &[
    "general_ci",
    "general_nopad_ci",
    "general_mysql500_ci",
    "unicode_ci",
    "unicode_nopad_ci",
    "unicode_520_ci",
    "unicode_520_nopad_ci",
    "0900_ai_ci",
    "uca1400_ai_ci",
    "uca1400_nopad_ai_ci",
];

/// Why a MySQL/MariaDB column does not match strings as FHIR does, or `None` when it does (or
/// holds no text: no collation).
fn string_match_problem(data_type: &str, collation: Option<&str>) -> Option<&'static str> {
    let data_type = data_type.to_ascii_lowercase();
    let binary_types = [
        "binary",
        "varbinary",
        "tinyblob",
        "blob",
        "mediumblob",
        "longblob",
    ];
    if binary_types.contains(&data_type.as_str()) {
        return Some("binary: bytes compare, so case and accents count");
    }
    let collation = collation?.to_ascii_lowercase();
    let (charset, name) = collation
        .split_once('_')
        .unwrap_or(("", collation.as_str()));
    if name == "bin" || name.ends_with("_bin") || collation == "binary" {
        Some("a binary collation: case and accents count")
    } else if name.ends_with("_cs") {
        Some("case-sensitive")
    } else if name.ends_with("_as_ci") {
        Some("accent-sensitive")
    } else if charset == "latin1" || !INSENSITIVE_COLLATIONS.contains(&name) {
        Some("not known to ignore accents (a latin1 or language-specific collation)")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::{Use, fits, string_match_problem};

    #[test]
    fn collations_that_ignore_case_and_accents_pass_and_others_are_named() {
        for collation in [
            "utf8mb4_general_ci",
            "utf8mb4_unicode_ci",
            "utf8mb4_unicode_520_ci",
            "utf8mb4_0900_ai_ci",
            "utf8mb4_uca1400_ai_ci",
            "utf8mb3_general_ci",
            "utf8_unicode_ci",
        ] {
            assert_eq!(
                string_match_problem("varchar", Some(collation)),
                None,
                "{collation}"
            );
        }
        assert_eq!(
            string_match_problem("int", None),
            None,
            "no text, no collation"
        );
        for (data_type, collation, why) in [
            ("varchar", Some("utf8mb4_bin"), "binary collation"),
            ("varchar", Some("utf8mb4_nopad_bin"), "binary collation"),
            ("varchar", Some("utf8mb4_0900_bin"), "binary collation"),
            ("varbinary", None, "bytes compare"),
            ("blob", None, "bytes compare"),
            ("varchar", Some("latin1_general_cs"), "case-sensitive"),
            ("varchar", Some("utf8mb4_0900_as_cs"), "case-sensitive"),
            ("varchar", Some("utf8mb4_0900_as_ci"), "accent-sensitive"),
            ("varchar", Some("utf8mb4_uca1400_as_ci"), "accent-sensitive"),
            ("varchar", Some("latin1_swedish_ci"), "not known"),
            ("varchar", Some("latin1_general_ci"), "not known"),
            ("varchar", Some("utf8mb4_spanish_ci"), "not known"),
            (
                "varchar",
                Some("utf8mb4_uca1400_swedish_ai_ci"),
                "not known",
            ),
        ] {
            let why_found = string_match_problem(data_type, collation)
                .unwrap_or_else(|| panic!("{data_type} {collation:?} passes"));
            assert!(why_found.contains(why), "{collation:?}: {why_found}");
        }
    }

    #[test]
    fn declared_types_of_every_dialect_fit_their_use() {
        // As MySQL (COLUMN_TYPE), SQLite (declared type) and SQL Server (DATA_TYPE) report them.
        for declared in [
            "int(11)",
            "bigint",
            "INTEGER",
            "int",
            "numeric",
            "varchar(11)",
        ] {
            assert!(fits(declared, Use::IntegerKey), "{declared}");
        }
        for declared in ["uniqueidentifier", "binary(16)", "BLOB", "char(36)"] {
            assert!(fits(declared, Use::UuidKey), "{declared}");
        }
        for declared in [
            "datetime",
            "datetime2",
            "smalldatetime",
            "datetimeoffset",
            "date",
            "timestamp",
            "varchar(14)",
        ] {
            assert!(fits(declared, Use::DateOrTime), "{declared}");
        }
        for declared in ["datetime", "timestamp", "datetime2", "DATETIME"] {
            assert!(fits(declared, Use::ChangeTimestamp), "{declared}");
        }
        for declared in ["timestamp", "rowversion", "binary(8)"] {
            assert!(fits(declared, Use::RowVersion), "{declared}");
        }
        for (declared, kind) in [
            ("varchar(14)", Use::ChangeTimestamp),
            ("int", Use::ChangeTimestamp),
            ("datetime", Use::RowVersion),
            ("binary(16)", Use::RowVersion),
            ("uniqueidentifier", Use::IntegerKey),
            ("int", Use::UuidKey),
            ("bit", Use::DateOrTime),
            ("double", Use::DateOrTime),
        ] {
            assert!(!fits(declared, kind), "{declared}");
        }
    }
}
