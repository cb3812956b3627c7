//! `[changes]` of a mapping file: the declared change-detection strategy, checked and compiled.

use std::time::Duration;

use super::{FileContext, Scope};
use crate::adapter::format::{ChangeStrategyName, ChangesSpec};
use crate::adapter::model::{BASE_ALIAS, ChangeDetection, ChangeStrategy};

/// Rows per keyset-scan pass when `scan_rows` is not given.
pub const DEFAULT_SCAN_ROWS: usize = 5000;
/// Bounds of `scan_rows`: fewer rows make a full cycle over a large table take too many passes,
/// more make one pass hold a large result in memory.
pub const SCAN_ROWS_RANGE: std::ops::RangeInclusive<usize> = 100..=100_000;
/// Seconds re-read behind a timestamp watermark when `overlap_seconds` is not given: legacy
/// timestamps have one-second resolution and a transaction may commit after later ones.
pub const DEFAULT_OVERLAP_SECONDS: u64 = 5;
/// Beyond five minutes the overlap re-reads more than it protects.
pub const MAX_OVERLAP_SECONDS: u64 = 300;
/// `reconcile_minutes` at most thirty days: a rarer reconcile leaves deletes unseen for too long.
pub const MAX_RECONCILE_MINUTES: u64 = 30 * 24 * 60;

/// Compiles `[changes]`, interning its columns into the mapping's SELECT list.
pub(super) fn change_detection(
    ctx: &mut FileContext,
    scope: &mut Scope,
    spec: &ChangesSpec,
) -> Option<ChangeDetection> {
    let issues_before = ctx.issues.len();
    let scan_rows = spec.scan_rows.unwrap_or(DEFAULT_SCAN_ROWS);
    if !SCAN_ROWS_RANGE.contains(&scan_rows) {
        ctx.issue(
            "changes.scan_rows",
            format!(
                "{scan_rows} is outside {}..={}",
                SCAN_ROWS_RANGE.start(),
                SCAN_ROWS_RANGE.end()
            ),
        );
    }
    let reconcile = spec.reconcile_minutes.and_then(|minutes| {
        if minutes == 0 || minutes > MAX_RECONCILE_MINUTES {
            ctx.issue(
                "changes.reconcile_minutes",
                format!("{minutes} is outside 1..={MAX_RECONCILE_MINUTES}"),
            );
            return None;
        }
        Some(Duration::from_secs(minutes * 60))
    });
    let strategy = match spec.strategy {
        ChangeStrategyName::Timestamp => timestamp(ctx, scope, spec),
        ChangeStrategyName::Rowversion => rowversion(ctx, scope, spec),
        ChangeStrategyName::Scan => {
            refuse_key(ctx, spec.column.is_some(), "column", "scan");
            refuse_key(ctx, !spec.columns.is_empty(), "columns", "scan");
            refuse_key(
                ctx,
                spec.overlap_seconds.is_some(),
                "overlap_seconds",
                "scan",
            );
            if spec.reconcile_minutes.is_some() {
                ctx.issue(
                    "changes.reconcile_minutes",
                    "a scan already reads every row each cycle; reconcile is for timestamp and \
                     rowversion",
                );
            }
            Some(ChangeStrategy::Scan)
        }
    };
    if ctx.issues.len() > issues_before {
        return None;
    }
    Some(ChangeDetection {
        strategy: strategy?,
        scan_rows,
        reconcile,
    })
}

fn timestamp(
    ctx: &mut FileContext,
    scope: &mut Scope,
    spec: &ChangesSpec,
) -> Option<ChangeStrategy> {
    refuse_key(ctx, spec.column.is_some(), "column", "timestamp");
    if spec.columns.is_empty() {
        ctx.issue(
            "changes.columns",
            "timestamp needs at least one column that moves when the resource may change",
        );
    }
    let mut columns = Vec::new();
    for (index, text) in spec.columns.iter().enumerate() {
        let path = format!("changes.columns[{index}]");
        let Some(column) = scope.intern(ctx, &path, text) else {
            continue;
        };
        if columns.contains(&column) {
            ctx.issue(&path, format!("{text:?} is listed twice"));
        }
        columns.push(column);
    }
    let overlap = spec.overlap_seconds.unwrap_or(DEFAULT_OVERLAP_SECONDS);
    if overlap > MAX_OVERLAP_SECONDS {
        ctx.issue(
            "changes.overlap_seconds",
            format!("{overlap} is outside 0..={MAX_OVERLAP_SECONDS}"),
        );
    }
    Some(ChangeStrategy::Timestamp {
        columns,
        overlap: Duration::from_secs(overlap),
    })
}

fn rowversion(
    ctx: &mut FileContext,
    scope: &mut Scope,
    spec: &ChangesSpec,
) -> Option<ChangeStrategy> {
    refuse_key(ctx, !spec.columns.is_empty(), "columns", "rowversion");
    refuse_key(
        ctx,
        spec.overlap_seconds.is_some(),
        "overlap_seconds",
        "rowversion",
    );
    let Some(text) = &spec.column else {
        ctx.issue(
            "changes.column",
            "rowversion needs the base table's rowversion column: column = \"...\"",
        );
        return None;
    };
    let column = scope.resolve(ctx, "changes.column", text)?;
    if column.alias != BASE_ALIAS {
        ctx.issue(
            "changes.column",
            format!("{text:?}: a rowversion column is one of the base table's"),
        );
        return None;
    }
    Some(ChangeStrategy::RowVersion {
        column: scope.intern_ref(column),
    })
}

fn refuse_key(ctx: &mut FileContext, present: bool, key: &str, strategy: &str) {
    if present {
        ctx.issue(
            &format!("changes.{key}"),
            format!("not a key of strategy = \"{strategy}\""),
        );
    }
}
