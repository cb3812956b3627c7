//! Parses a FHIR search query string into a `SearchRequest`. Pure; no adapter knowledge.
//!
//! Grammar (FHIR R4 search.html):
//!   query     = pair *( "&" pair )
//!   pair      = name [ ":" modifier ] "=" values        ; repeated names AND together (R4-42)
//!   values    = value *( "," value )                    ; a comma ORs values; `\,` escapes it
//!   name      = parameter name, case-sensitive; names starting with "_" are result or common params
//! Values stay escaped here; `split_escaped` and `unescape` finish the job per parameter type.

use super::SearchError;

/// The result-shaping parameters Portico understands. Everything else is a filter.
pub const RESULT_PARAMETERS: &[&str] = &[
    "_count",
    "_sort",
    "_include",
    "_revinclude",
    "_total",
    "_summary",
    "_elements",
    "_format",
    "_pretty",
    "_cursor",
];

/// Upper bound of `_count`; larger requests get this many.
pub const MAX_COUNT: usize = 1000;
/// Page size when `_count` is not given.
pub const DEFAULT_COUNT: usize = 50;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    pub name: String,
    pub modifier: Option<String>,
    /// OR-ed values, still escaped.
    pub values: Vec<String>,
    /// The value as sent, for the self link.
    pub raw_value: String,
}

impl Clause {
    /// The parameter as written in a query string: `name[:modifier]`.
    pub fn key(&self) -> String {
        match &self.modifier {
            Some(modifier) => format!("{}:{modifier}", self.name),
            None => self.name.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    pub name: String,
    pub descending: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Include {
    pub source_type: String,
    pub param: String,
    pub target_type: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotalMode {
    None,
    Estimate,
    Accurate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SummaryMode {
    True,
    Data,
    Count,
    False,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SearchRequest {
    pub clauses: Vec<Clause>,
    pub count: usize,
    /// Whether `_count` was given (it then appears in the self link).
    pub count_given: bool,
    pub sort: Vec<SortKey>,
    pub includes: Vec<Include>,
    pub revincludes: Vec<Include>,
    pub total: TotalMode,
    pub summary: SummaryMode,
    pub elements: Option<Vec<String>>,
    pub cursor: Option<String>,
}

impl SearchRequest {
    /// The summary the answer takes: `_count=0` asks for the total only, as `_summary=count` does
    /// (R4 search.html, "_count"), whatever `_summary` says; `summary` stays as sent, for the self
    /// link.
    pub fn effective_summary(&self) -> SummaryMode {
        if self.count_given && self.count == 0 {
            SummaryMode::Count
        } else {
            self.summary
        }
    }
}

/// Parses decoded `(name, value)` pairs. Malformed result parameters are errors; filter
/// parameters are checked later, against the adapter.
pub fn parse(pairs: &[(String, String)]) -> Result<SearchRequest, Vec<SearchError>> {
    let mut errors = Vec::new();
    let mut request = SearchRequest {
        clauses: Vec::new(),
        count: DEFAULT_COUNT,
        count_given: false,
        sort: Vec::new(),
        includes: Vec::new(),
        revincludes: Vec::new(),
        total: TotalMode::None,
        summary: SummaryMode::False,
        elements: None,
        cursor: None,
    };
    for (key, value) in pairs {
        let (name, modifier) = match key.split_once(':') {
            Some((name, modifier)) => (name, Some(modifier.to_owned())),
            None => (key.as_str(), None),
        };
        let bad = |message: String| SearchError::new(key, message);
        match name {
            "_count" => match parse_count(value) {
                Some(count) => {
                    request.count = count;
                    request.count_given = true;
                }
                None => errors.push(bad(format!(
                    "_count must be a non-negative integer, got {value:?}"
                ))),
            },
            "_sort" => {
                for item in value.split(',').filter(|s| !s.is_empty()) {
                    let (name, descending) = match item.strip_prefix('-') {
                        Some(name) => (name, true),
                        None => (item, false),
                    };
                    request.sort.push(SortKey {
                        name: name.to_owned(),
                        descending,
                    });
                }
            }
            "_include" | "_revinclude" => {
                if modifier.as_deref().is_some_and(|m| m != "iterate") {
                    errors.push(bad(format!("unknown modifier on {name}")));
                    continue;
                }
                let parts: Vec<&str> = value.split(':').collect();
                let include = match parts.as_slice() {
                    [source, param] => Include {
                        source_type: (*source).to_owned(),
                        param: (*param).to_owned(),
                        target_type: None,
                    },
                    [source, param, target] => Include {
                        source_type: (*source).to_owned(),
                        param: (*param).to_owned(),
                        target_type: Some((*target).to_owned()),
                    },
                    _ => {
                        errors.push(bad(format!(
                            "{name} must be SourceType:parameter[:TargetType], got {value:?}"
                        )));
                        continue;
                    }
                };
                if name == "_include" {
                    request.includes.push(include);
                } else {
                    request.revincludes.push(include);
                }
            }
            "_total" => {
                request.total = match value.as_str() {
                    "none" => TotalMode::None,
                    "estimate" => TotalMode::Estimate,
                    "accurate" => TotalMode::Accurate,
                    _ => {
                        errors.push(bad(format!(
                            "_total must be none, estimate or accurate, got {value:?}"
                        )));
                        continue;
                    }
                }
            }
            "_summary" => {
                request.summary = match value.as_str() {
                    "true" => SummaryMode::True,
                    "data" => SummaryMode::Data,
                    "count" => SummaryMode::Count,
                    "false" => SummaryMode::False,
                    "text" => {
                        errors.push(bad(
                            "_summary=text is not supported: Portico emits no narrative".into(),
                        ));
                        continue;
                    }
                    _ => {
                        errors.push(bad(format!(
                            "_summary must be true, data, count or false, got {value:?}"
                        )));
                        continue;
                    }
                }
            }
            "_elements" => {
                let elements: Vec<String> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                request.elements = Some(elements);
            }
            "_cursor" => request.cursor = Some(value.clone()),
            "_format" | "_pretty" => {}
            _ => request.clauses.push(Clause {
                name: name.to_owned(),
                modifier,
                values: split_escaped(value, ','),
                raw_value: value.clone(),
            }),
        }
    }
    if errors.is_empty() {
        Ok(request)
    } else {
        Err(errors)
    }
}

/// A `_count` value (every search's, the audit trail's too): digits only (no sign), any length;
/// larger counts than `MAX_COUNT` get `MAX_COUNT`.
pub fn parse_count(value: &str) -> Option<usize> {
    (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit())).then(|| {
        value
            .parse::<usize>()
            .map_or(MAX_COUNT, |c| c.min(MAX_COUNT))
    })
}

/// The values a token parameter accepts, as an ECMA-262 regular expression (the OpenAPI document
/// publishes it): comma-separated `[system|]code` values, each with at most one unescaped `|`; a
/// backslash escapes the next character, and a lone one may end the text.
pub fn token_values_pattern() -> String {
    // Text without unescaped separators; a backslash takes the next character with it.
    const TEXT: &str = "(?:[^\\\\|,]|\\\\[\\s\\S])*";
    format!("^{TEXT}(?:\\|{TEXT})?(?:,{TEXT}(?:\\|{TEXT})?)*(?:\\\\)?$")
}

/// The values `_include` and `_revinclude` accept: `SourceType:parameter[:TargetType]`.
pub const INCLUDE_PATTERN: &str = "^[^:]*:[^:]*(?::[^:]*)?$";

/// Splits on `separator` where it is not escaped by a backslash. Pieces keep their escapes.
pub fn split_escaped(text: &str, separator: char) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars();
    while let Some(ch) = chars.next() {
        if ch == '\\' {
            current.push(ch);
            if let Some(next) = chars.next() {
                current.push(next);
            }
        } else if ch == separator {
            pieces.push(std::mem::take(&mut current));
        } else {
            current.push(ch);
        }
    }
    pieces.push(current);
    pieces
}

/// Removes search escapes: `\,` `\|` `\$` `\\`.
pub fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(ch) = chars.next() {
        if ch == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(ch);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(query: &str) -> Vec<(String, String)> {
        form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect()
    }

    #[test]
    fn commas_or_and_repeats_and() {
        let request = parse(&pairs("family=Smith,Jones&family=Sm&gender:not=male")).unwrap();
        assert_eq!(request.clauses.len(), 3);
        assert_eq!(request.clauses[0].values, vec!["Smith", "Jones"]);
        assert_eq!(request.clauses[2].modifier.as_deref(), Some("not"));
    }

    #[test]
    fn escaped_commas_stay_in_one_value() {
        let request = parse(&pairs("name=a\\,b,c")).unwrap();
        assert_eq!(request.clauses[0].values, vec!["a\\,b", "c"]);
        assert_eq!(unescape(&request.clauses[0].values[0]), "a,b");
        assert_eq!(split_escaped("sys\\|x|code", '|'), vec!["sys\\|x", "code"]);
    }

    #[test]
    fn result_parameters_are_typed() {
        let request = parse(&pairs(
            "_count=5000&_sort=-birthdate,family&_include=Appointment:patient&_total=accurate&_summary=count&_elements=name,gender",
        ))
        .unwrap();
        assert_eq!(request.count, MAX_COUNT);
        let huge = parse(&pairs("_count=99999999999999999999999999")).unwrap();
        assert_eq!(huge.count, MAX_COUNT);
        assert_eq!(
            request.sort[0],
            SortKey {
                name: "birthdate".into(),
                descending: true
            }
        );
        assert_eq!(request.includes[0].param, "patient");
        assert_eq!(request.total, TotalMode::Accurate);
        assert_eq!(request.summary, SummaryMode::Count);
        assert_eq!(
            request.elements.as_deref(),
            Some(&["name".to_owned(), "gender".to_owned()][..])
        );
    }

    #[test]
    fn count_zero_asks_for_the_total_only() {
        for query in [
            "_count=0",
            "_count=0&_summary=data",
            "_summary=true&_count=0",
        ] {
            let request = parse(&pairs(query)).unwrap();
            assert_eq!(request.effective_summary(), SummaryMode::Count, "{query}");
            assert_eq!((request.count, request.count_given), (0, true), "{query}");
        }
        let as_sent = parse(&pairs("_count=0&_summary=data")).unwrap();
        assert_eq!(as_sent.summary, SummaryMode::Data, "kept for the self link");
        assert_eq!(
            parse(&pairs("_count=1")).unwrap().effective_summary(),
            SummaryMode::False
        );
        assert_eq!(
            parse(&pairs("_summary=count")).unwrap().effective_summary(),
            SummaryMode::Count
        );
    }

    #[test]
    fn malformed_result_parameters_are_all_reported() {
        let errors = parse(&pairs(
            "_count=ten&_total=maybe&_summary=text&_include=Patient&_count=+5&_count=-1",
        ))
        .unwrap_err();
        let names: Vec<&str> = errors.iter().map(|e| e.parameter.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "_count", "_total", "_summary", "_include", "_count", "_count"
            ]
        );
    }
}
