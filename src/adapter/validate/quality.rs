//! `quality.toml`: the adapter's data-quality rules for `portico audit`, checked against the
//! validated adapter (types served, dialects supported) and for read-only SQL.

use std::collections::BTreeMap;
use std::path::Path;

use super::{AdapterIssue, FileContext};
use crate::adapter::format::{QualityFile, QualityRuleSpec, RuleSql};
use crate::adapter::model::{Adapter, QualityRules, Severity, SqlRule};

/// Checks `quality.toml` against the validated adapter. Returns every issue found, or the rules.
pub fn validate_quality(
    adapter: &Adapter,
    file: &Path,
    spec: QualityFile,
) -> Result<QualityRules, Vec<AdapterIssue>> {
    let mut ctx = FileContext {
        file: file.to_owned(),
        issues: Vec::new(),
    };
    super::topics::check_version(&mut ctx, spec.version, "quality");
    let mut severities = BTreeMap::new();
    for (id, text) in spec.severity {
        let path = format!("severity.{id}");
        if crate::quality::builtin_rule(&id).is_none() {
            let known: Vec<&str> = crate::quality::BUILTIN_RULES.iter().map(|r| r.id).collect();
            ctx.issue(
                &path,
                format!("no built-in rule {id:?}; they are {}", known.join(", ")),
            );
        }
        match Severity::parse(&text) {
            Some(severity) => {
                severities.insert(id, severity);
            }
            None => ctx.issue(&path, severity_issue(&text)),
        }
    }
    let mut rules: Vec<SqlRule> = Vec::new();
    for (index, rule) in spec.rule.into_iter().enumerate() {
        let path = format!("rule[{index}]");
        if rules.iter().any(|r| r.id == rule.id) || crate::quality::builtin_rule(&rule.id).is_some()
        {
            ctx.issue(
                &format!("{path}.id"),
                format!("{:?} is already the id of another rule", rule.id),
            );
        }
        if let Some(rule) = compile_rule(&mut ctx, adapter, &path, rule) {
            rules.push(rule);
        }
    }
    if ctx.issues.is_empty() {
        Ok(QualityRules { severities, rules })
    } else {
        Err(ctx.issues)
    }
}

fn severity_issue(text: &str) -> String {
    format!("{text:?}: a severity is info, warning or error")
}

fn compile_rule(
    ctx: &mut FileContext,
    adapter: &Adapter,
    path: &str,
    spec: QualityRuleSpec,
) -> Option<SqlRule> {
    let issues_before = ctx.issues.len();
    super::topics::check_slug(ctx, &format!("{path}.id"), &spec.id, "a rule id");
    if spec.title.trim().is_empty() {
        ctx.issue(&format!("{path}.title"), "a rule needs a title");
    }
    let severity = Severity::parse(&spec.severity);
    if severity.is_none() {
        ctx.issue(&format!("{path}.severity"), severity_issue(&spec.severity));
    }
    if !adapter.resources.contains_key(&spec.resource) {
        ctx.issue(
            &format!("{path}.resource"),
            format!("the adapter does not serve {:?}", spec.resource),
        );
    }
    if spec.table.trim().is_empty() {
        ctx.issue(
            &format!("{path}.table"),
            "name the PMS table the findings are rows of",
        );
    }
    if spec.key.trim().is_empty() {
        ctx.issue(
            &format!("{path}.key"),
            "name the table's key column (the SELECT's first column)",
        );
    }
    let mut sql = Vec::new();
    match spec.sql {
        RuleSql::Any(text) => {
            for &dialect in &adapter.dialects {
                sql.push((dialect, text.clone()));
            }
        }
        RuleSql::PerDialect(texts) => {
            for (name, text) in texts {
                match adapter.dialects.iter().find(|d| d.name() == name) {
                    Some(&dialect) => sql.push((dialect, text)),
                    None => ctx.issue(
                        &format!("{path}.sql.{name}"),
                        format!("the adapter does not list the dialect {name:?}"),
                    ),
                }
            }
            for dialect in &adapter.dialects {
                if !sql.iter().any(|(d, _)| d == dialect) {
                    ctx.issue(
                        &format!("{path}.sql"),
                        format!("no SQL for {}, which the adapter supports", dialect.name()),
                    );
                }
            }
        }
    }
    for (dialect, text) in &sql {
        if let Err(problem) = select_only(text) {
            ctx.issue(&format!("{path}.sql.{}", dialect.name()), problem);
        }
    }
    (ctx.issues.len() == issues_before).then(|| SqlRule {
        id: spec.id,
        title: spec.title,
        description: spec.description,
        severity: severity.expect("checked above"),
        resource_type: spec.resource,
        table: spec.table,
        key: spec.key,
        sql,
    })
}

/// One SELECT (or WITH ... SELECT), nothing after it: the first check that a rule only reads.
/// The second is the pool's: its sessions are read-only, with a statement time limit.
pub fn select_only(sql: &str) -> Result<(), String> {
    let text = strip_comments(sql);
    let text = text.trim().trim_end_matches(';').trim_end();
    let first = text
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    if first != "SELECT" && first != "WITH" {
        return Err("a rule's SQL is one SELECT (or WITH ... SELECT)".to_owned());
    }
    if text.contains(';') {
        return Err("a rule's SQL is one statement: no ';' inside it".to_owned());
    }
    let upper = text.to_ascii_uppercase();
    for word in upper.split(|c: char| !c.is_ascii_alphanumeric() && c != '_') {
        if matches!(
            word,
            "INSERT"
                | "UPDATE"
                | "DELETE"
                | "MERGE"
                | "DROP"
                | "ALTER"
                | "CREATE"
                | "TRUNCATE"
                | "GRANT"
                | "REVOKE"
                | "EXEC"
                | "EXECUTE"
                | "CALL"
                | "INTO"
                | "LOCK"
                | "HANDLER"
                | "LOAD"
                | "OUTFILE"
                | "DUMPFILE"
                | "ATTACH"
                | "PRAGMA"
                | "SET"
        ) {
            return Err(format!(
                "a rule's SQL only reads: {word} is not allowed in it"
            ));
        }
    }
    Ok(())
}

/// The text without `-- ...` and `/* ... */` comments (quotes are not parsed: a comment marker
/// inside a string literal is removed too, which only makes the check stricter).
fn strip_comments(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, tail)| tail);
            out.push('\n');
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, tail)| tail);
            out.push(' ');
        } else {
            let c = rest.chars().next().expect("not empty");
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::select_only;

    #[test]
    fn only_one_select_passes() {
        assert!(select_only("SELECT pid FROM patient_data WHERE DOB > NOW()").is_ok());
        assert!(select_only("-- a comment\n  with x as (select 1) select * from x;").is_ok());
        for bad in [
            "UPDATE patient_data SET fname = ''",
            "SELECT 1; DELETE FROM patient_data",
            "SELECT * INTO OUTFILE '/tmp/x' FROM patient_data",
            "/* SELECT */ DELETE FROM x",
            "SELECT 1 FROM x FOR UPDATE; LOCK TABLES x",
            "SET @a = 1",
        ] {
            assert!(select_only(bad).is_err(), "{bad}");
        }
    }
}
