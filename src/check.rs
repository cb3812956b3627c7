//! `portico check`: validate the adapter files (every problem at once), then check them against
//! the live database: tables and columns exist, and key and date columns have fitting types.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::adapter::Adapter;
use crate::adapter::format::ColumnType;
use crate::adapter::model::{ColumnRef, SearchKind};
use crate::app::load_adapter;
use crate::config;
use crate::db::{Database, redact_url};
use crate::dialect::ast::Cond;
use crate::repository::{LeftOutRow, Repository};
use crate::search::compile::plan;
use crate::search::parse::{MAX_COUNT, parse};

/// What a column must hold for the way a mapping uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    Any,
    IntegerKey,
    /// `uuid = true` keys: `uniqueidentifier` (SQL Server), `binary(16)` or UUID text.
    UuidKey,
    DateOrTime,
}

pub async fn run(
    config_file: Option<PathBuf>,
    offline: bool,
    data: bool,
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
    for problem in &problems {
        println!("FAIL {problem}");
    }
    if !problems.is_empty() {
        println!("{} problem(s)", problems.len());
        return Ok(ExitCode::FAILURE);
    }
    println!("ok   every table and column the adapter reads exists with a fitting type");
    if !data {
        return Ok(ExitCode::SUCCESS);
    }
    let repository = Repository {
        adapter: std::sync::Arc::new(adapter),
        db: database,
    };
    let left_out = scan_data(&repository).await?;
    Ok(if left_out == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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
                .search(&plan, after.as_ref(), &Cond::True, false)
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
                        Use::Any => "a value",
                    }
                )),
                _ => {}
            }
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::{Use, fits};

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
        for (declared, kind) in [
            ("uniqueidentifier", Use::IntegerKey),
            ("int", Use::UuidKey),
            ("bit", Use::DateOrTime),
            ("double", Use::DateOrTime),
        ] {
            assert!(!fits(declared, kind), "{declared}");
        }
    }
}
