//! A data-quality audit as Markdown, CSV (one line per finding), a self-contained HTML page, or
//! JSON.

use std::fmt::Write;

use super::{AuditReport, RuleResult};
use crate::auth::pages::escape;
use crate::dictionary::csv_row;

/// The report's headline: how many findings, and whether the audit fails.
pub fn verdict(report: &AuditReport) -> String {
    let failing: Vec<&str> = report
        .rules
        .iter()
        .filter(|r| r.fails())
        .map(|r| r.id.as_str())
        .collect();
    if failing.is_empty() {
        format!(
            "ok: {} finding(s), none of severity error",
            report.findings()
        )
    } else {
        format!(
            "FAIL: {} finding(s); failing rules: {}",
            report.findings(),
            failing.join(", ")
        )
    }
}

fn took_seconds(report: &AuditReport) -> f64 {
    (report.finished_ms - report.started_ms) as f64 / 1000.0
}

fn started(report: &AuditReport) -> String {
    chrono::DateTime::from_timestamp_millis(report.started_ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// Code cells in Markdown tables: backticks and pipes would break the table.
fn md_cell(text: &str) -> String {
    text.replace('|', "\\|").replace('`', "'")
}

fn counted_values(rule: &RuleResult) -> String {
    rule.tally
        .iter()
        .map(|(value, rows)| format!("{value} ({rows})"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn markdown(report: &AuditReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Data-quality audit: {}\n", report.adapter);
    let _ = writeln!(
        out,
        "{}. Started {}, took {:.1} s, {} rows read.\n",
        verdict(report),
        started(report),
        took_seconds(report),
        report.rows_read
    );
    out.push_str("| severity | rule | findings | what it finds |\n|---|---|---:|---|\n");
    for rule in &report.rules {
        let _ = writeln!(
            out,
            "| {} | `{}` | {}{} | {} |",
            rule.severity.name(),
            rule.id,
            rule.count,
            if rule.error.is_some() {
                " (did not finish)"
            } else {
                ""
            },
            md_cell(&rule.title)
        );
    }
    for rule in report
        .rules
        .iter()
        .filter(|r| r.count > 0 || r.error.is_some())
    {
        let _ = writeln!(
            out,
            "\n## `{}` ({}): {}\n\n{}\n",
            rule.id,
            rule.severity.name(),
            rule.count,
            rule.title
        );
        if let Some(error) = &rule.error {
            let _ = writeln!(out, "The rule did not finish: {}\n", md_cell(error));
        }
        if !rule.tally.is_empty() {
            let _ = writeln!(
                out,
                "By code or column (findings): {}\n",
                md_cell(&counted_values(rule))
            );
        }
        if rule.findings.is_empty() {
            continue;
        }
        out.push_str("| resource | PMS row | detail |\n|---|---|---|\n");
        for finding in &rule.findings {
            let resource = match &finding.resource_id {
                Some(id) => format!("{}/{id}", finding.resource_type),
                None => finding.resource_type.clone(),
            };
            let _ = writeln!(
                out,
                "| {} | {} {} | {} |",
                md_cell(&resource),
                md_cell(&finding.table),
                md_cell(&finding.key),
                md_cell(&finding.detail)
            );
        }
        if (rule.findings.len() as u64) < rule.count {
            let _ = writeln!(
                out,
                "\n(the first {} of {}; `--format csv` or `json` list as many)",
                rule.findings.len(),
                rule.count
            );
        }
    }
    out
}

/// One line per listed finding: rule, severity, resource type and id, table, key, detail.
pub fn csv(report: &AuditReport) -> String {
    let mut lines = vec![csv_row(&[
        "rule",
        "severity",
        "resource_type",
        "resource_id",
        "table",
        "key",
        "detail",
    ])];
    for rule in &report.rules {
        for finding in &rule.findings {
            lines.push(csv_row(&[
                &rule.id,
                rule.severity.name(),
                &finding.resource_type,
                finding.resource_id.as_deref().unwrap_or_default(),
                &finding.table,
                &finding.key,
                &finding.detail,
            ]));
        }
    }
    lines.concat()
}

pub fn json(report: &AuditReport) -> String {
    serde_json::to_string_pretty(report).expect("the report serializes")
}

pub fn html(report: &AuditReport) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Data-quality audit: {adapter}</title><style>{STYLE}</style></head><body>\
         <h1>Data-quality audit: {adapter}</h1><p class=\"{class}\">{verdict}</p>\
         <p>Started {started}, took {took:.1} s, {rows} rows read.</p>\
         <table><thead><tr><th>severity</th><th>rule</th><th>findings</th><th>what it finds</th></tr></thead><tbody>",
        adapter = escape(&report.adapter),
        class = if report.fails() { "fail" } else { "ok" },
        verdict = escape(&verdict(report)),
        started = started(report),
        took = took_seconds(report),
        rows = report.rows_read,
    );
    for rule in &report.rules {
        let _ = write!(
            out,
            "<tr><td class=\"{severity}\">{severity}</td><td><a href=\"#{id}\">{id}</a></td>\
             <td class=\"n\">{count}</td><td>{title}</td></tr>",
            severity = rule.severity.name(),
            id = escape(&rule.id),
            count = rule.count,
            title = escape(&rule.title),
        );
    }
    out.push_str("</tbody></table>");
    for rule in report
        .rules
        .iter()
        .filter(|r| r.count > 0 || r.error.is_some())
    {
        let _ = write!(
            out,
            "<h2 id=\"{id}\">{id} ({severity}): {count}</h2><p>{title}</p>",
            id = escape(&rule.id),
            severity = rule.severity.name(),
            count = rule.count,
            title = escape(&rule.title),
        );
        if let Some(error) = &rule.error {
            let _ = write!(
                out,
                "<p class=\"fail\">The rule did not finish: {}</p>",
                escape(error)
            );
        }
        if !rule.tally.is_empty() {
            let _ = write!(
                out,
                "<p>By code or column (findings): {}</p>",
                escape(&counted_values(rule))
            );
        }
        if rule.findings.is_empty() {
            continue;
        }
        out.push_str(
            "<table><thead><tr><th>resource</th><th>PMS row</th><th>detail</th></tr></thead><tbody>",
        );
        for finding in &rule.findings {
            let _ = write!(
                out,
                "<tr><td>{}{}</td><td>{} {}</td><td>{}</td></tr>",
                escape(&finding.resource_type),
                finding
                    .resource_id
                    .as_deref()
                    .map(|id| format!("/{}", escape(id)))
                    .unwrap_or_default(),
                escape(&finding.table),
                escape(&finding.key),
                escape(&finding.detail),
            );
        }
        out.push_str("</tbody></table>");
        if (rule.findings.len() as u64) < rule.count {
            let _ = write!(
                out,
                "<p>The first {} of {}.</p>",
                rule.findings.len(),
                rule.count
            );
        }
    }
    out.push_str("</body></html>\n");
    out
}

const STYLE: &str = "body{font:15px/1.4 system-ui,sans-serif;margin:1rem auto;max-width:70rem;padding:0 1rem}\
table{border-collapse:collapse;width:100%;margin:.5rem 0 1rem}th,td{border-bottom:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top}\
td.n{text-align:right}.error,.fail{color:#a00;font-weight:600}.warning{color:#850}.ok{color:#060;font-weight:600}";
