//! `/fhir/Group`: Portico's own Groups (the cohorts of `/Group/[id]/$export`), read and searched
//! from the state store (`state::groups`, made into R4 by `crate::groups::resource`), routed
//! before the adapter's types. A group lists other patients, so a token limited to a patient never
//! reads one; the rest is decided like the audit trail's access (`may_read_groups`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{SecondsFormat, Utc};
use serde_json::Value as Json;

use super::AppState;
use super::audit::{AuditQuery, PatientsTouched, StateSearchParam, is_admin, listed};
use super::handlers::{encode_query, error_response, form_pairs, param, query_pairs};
use super::negotiate::{body, negotiate, respond};
use super::origin::PublicBase;
use crate::access::{Access, Interaction, PatientLimit};
use crate::adapter::tree::Tree;
use crate::auth::scope::{Context, Scope, parse_scopes_lenient};
use crate::auth::tokens::AccessClaims;
use crate::error::ApiError;
use crate::fhir::bundle::Searchset;
use crate::fhir::is_fhir_id;
use crate::fhir::outcome::{Issue, IssueType};
use crate::search::parse::{
    DEFAULT_COUNT, parse_count, split_escaped, token_values_pattern, unescape,
};
use crate::state::groups::{GROUP, GroupFilter, IdentifierMatch, SystemMatch};

/// Groups' search parameters; `_count` and `_cursor` come after them.
pub const SEARCH_PARAMS: [StateSearchParam; 3] = [
    StateSearchParam {
        name: "_id",
        kind: "token",
        documentation: "Logical id",
        pattern: id_pattern,
    },
    StateSearchParam {
        name: "identifier",
        kind: "token",
        documentation: "Group.identifier: value, system|value, |value (no system) or system|",
        pattern: token_values_pattern,
    },
    StateSearchParam {
        name: "name",
        kind: "string",
        documentation: "Group.name starts with it, without case or accents",
        pattern: name_pattern,
    },
];

/// `_id`: ids, comma-separated.
fn id_pattern() -> String {
    listed("[-.0-9A-Za-z]{1,64}")
}

/// `name`: any text (blank values are ignored).
fn name_pattern() -> String {
    "^[\\s\\S]*$".to_owned()
}

/// The values `_cursor` takes: the id of the last group of the page before, as `next` links
/// write it.
pub const CURSOR_PATTERN: &str = "^[-.0-9A-Za-z]{1,64}$";

/// Whether this request may read Groups: never under a patient limit (a group lists other
/// patients); with a token, a `system/` scope granting Group (`system/Group.rs`, `system/*.rs`),
/// or a `user/` one held by a clinician (a Practitioner `fhirUser`, who sees every patient, as
/// `auth::permissions` decides) or an admin user; without one (an access the server itself set),
/// its access.
pub(super) async fn may_read_groups(
    state: &AppState,
    access: &Access,
    claims: Option<&AccessClaims>,
    interaction: Interaction,
) -> Result<(), ApiError> {
    let forbidden = || {
        ApiError::Forbidden(format!(
            "this access does not grant {} on {GROUP}",
            match interaction {
                Interaction::Read => "read",
                Interaction::Search => "search",
            }
        ))
    };
    if *access.patients() != PatientLimit::Everyone {
        return Err(forbidden());
    }
    let Some(claims) = claims else {
        return if access.allows(GROUP, interaction) {
            Ok(())
        } else {
            Err(forbidden())
        };
    };
    let (scopes, _) = parse_scopes_lenient(&claims.scope);
    let mut user_scope = false;
    for scope in &scopes {
        let Scope::Resource(scope) = scope else {
            continue;
        };
        let covers = scope.resource_type.as_deref().is_none_or(|t| t == GROUP)
            && match interaction {
                Interaction::Read => scope.read,
                Interaction::Search => scope.search,
            }
            // A granular filter on Group is not applied here, so it grants nothing.
            && scope.filter.is_empty();
        match scope.context {
            Context::System if covers => return Ok(()),
            Context::User if covers => user_scope = true,
            _ => {}
        }
    }
    if !user_scope {
        return Err(forbidden());
    }
    let clinician = claims
        .fhir_user
        .as_deref()
        .and_then(|user| user.rsplit_once('/'))
        .is_some_and(|(before, id)| {
            (before == "Practitioner" || before.ends_with("/Practitioner")) && is_fhir_id(id)
        });
    if clinician || is_admin(state, claims).await? {
        Ok(())
    } else {
        Err(forbidden())
    }
}

fn store_unavailable(error: crate::state::StateError) -> ApiError {
    tracing::warn!(%error, "state store unavailable for Groups");
    ApiError::Unavailable("the state store is unavailable; retry shortly".into())
}

/// `GET /fhir/Group/{id}`.
pub async fn read(
    State(state): State<AppState>,
    Extension(access): Extension<Arc<Access>>,
    claims: Option<Extension<Arc<AccessClaims>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let pairs = query_pairs(raw.as_deref());
    let negotiated = match negotiate(&headers, param(&pairs, "_format"), param(&pairs, "_pretty")) {
        Ok(n) => n,
        Err(e) => return error_response(e, None),
    };
    let claims = claims.map(|Extension(claims)| claims);
    match read_group(&state, &access, claims.as_deref(), &id).await {
        Ok(group) => {
            let mut patients = PatientsTouched::default();
            patients.add(&group);
            let mut response = match body(&negotiated, &group) {
                Ok(bytes) => respond(&negotiated, bytes),
                Err(e) => error_response(e, Some(&negotiated)),
            };
            response.extensions_mut().insert(patients);
            response
        }
        Err(e) => error_response(e, Some(&negotiated)),
    }
}

async fn read_group(
    state: &AppState,
    access: &Access,
    claims: Option<&AccessClaims>,
    id: &str,
) -> Result<Json, ApiError> {
    may_read_groups(state, access, claims, Interaction::Read).await?;
    let not_found = || ApiError::NotFound(format!("{GROUP}/{id} is not known"));
    if !is_fhir_id(id) {
        return Err(not_found());
    }
    let group = state
        .auth
        .tokens
        .store()
        .group(id)
        .await
        .map_err(store_unavailable)?
        .ok_or_else(not_found)?;
    Ok(crate::groups::resource(&group))
}

/// A parsed Group search.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct GroupSearch {
    filter: GroupFilter,
    count: usize,
    after_id: Option<String>,
    /// The parameters as applied (for `self` and `next`), without `_cursor`.
    applied: Vec<(String, String)>,
}

/// Comma-separated values with search escapes (`\,`), unescaped; blank ones left out.
fn escaped_values(value: &str) -> Vec<String> {
    split_escaped(value, ',')
        .iter()
        .map(|piece| unescape(piece))
        .filter(|piece| !piece.is_empty())
        .collect()
}

/// An `identifier` value's alternatives; `None` when one has more than one unescaped `|`.
fn identifier_matches(value: &str) -> Option<Vec<IdentifierMatch>> {
    let mut matches = Vec::new();
    for piece in split_escaped(value, ',') {
        let parts: Vec<String> = split_escaped(&piece, '|')
            .iter()
            .map(|part| unescape(part))
            .collect();
        let (system, value) = match parts.as_slice() {
            [value] => (SystemMatch::Any, value.clone()),
            [system, value] if system.is_empty() => (SystemMatch::Absent, value.clone()),
            [system, value] => (SystemMatch::Is(system.clone()), value.clone()),
            _ => return None,
        };
        match (system, value) {
            // A blank value: nothing asked (`|` alone names neither a system nor a value).
            (SystemMatch::Any | SystemMatch::Absent, value) if value.is_empty() => {}
            (system, value) => matches.push(IdentifierMatch {
                system,
                value: (!value.is_empty()).then_some(value),
            }),
        }
    }
    Some(matches)
}

/// The parameters of a Group search: `SEARCH_PARAMS`, `_count`, `_cursor` (from a `next` link),
/// `_format` and `_pretty`. Anything else is a 400. A parameter whose values are all blank is
/// ignored (R4).
pub(super) fn parse_search(pairs: &[(String, String)]) -> Result<GroupSearch, ApiError> {
    let mut search = GroupSearch {
        count: DEFAULT_COUNT,
        ..GroupSearch::default()
    };
    let mut issues = Vec::new();
    let invalid = |name: &str, message: String| Issue::error(IssueType::Invalid, message).at(name);
    for (name, value) in pairs {
        match name.as_str() {
            "_format" | "_pretty" => {}
            "_id" => {
                let ids: Vec<String> = value
                    .split(',')
                    .map(|v| v.trim().to_owned())
                    .filter(|v| !v.is_empty())
                    .collect();
                if ids.is_empty() || !ids.iter().all(|id| is_fhir_id(id)) {
                    issues.push(invalid(name, format!("{value:?} is not a list of ids")));
                } else {
                    search.filter.ids.push(ids);
                }
            }
            "identifier" => match identifier_matches(value) {
                None => issues.push(invalid(
                    name,
                    format!("{value:?}: an identifier is [system|]value"),
                )),
                Some(matches) if matches.is_empty() => continue,
                Some(matches) => search.filter.identifiers.push(matches),
            },
            "name" => match escaped_values(value) {
                names if names.is_empty() => continue,
                names => search.filter.names.push(names),
            },
            "_count" => match parse_count(value) {
                Some(count) => search.count = count,
                None => issues.push(invalid(name, format!("{value:?} is not a count"))),
            },
            "_cursor" => {
                if is_fhir_id(value) {
                    search.after_id = Some(value.clone());
                } else {
                    issues.push(invalid(name, "invalid paging cursor".into()));
                }
                continue;
            }
            _ => {
                issues.push(
                    Issue::error(
                        IssueType::NotSupported,
                        format!(
                            "{name} is not a search parameter of {GROUP} ({}, _count)",
                            SEARCH_PARAMS.map(|param| param.name).join(", ")
                        ),
                    )
                    .at(name.as_str()),
                );
                continue;
            }
        }
        search.applied.push((name.clone(), value.clone()));
    }
    if issues.is_empty() {
        Ok(search)
    } else {
        Err(ApiError::BadRequest(issues))
    }
}

/// `GET /fhir/Group`: by id, `next` links page on.
pub async fn search_get(
    State(state): State<AppState>,
    Extension(access): Extension<Arc<Access>>,
    Extension(base): Extension<PublicBase>,
    claims: Option<Extension<Arc<AccessClaims>>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let pairs = query_pairs(raw.as_deref());
    search(&state, &access, &base, claims, &headers, pairs).await
}

/// `POST /fhir/Group/_search` (form body).
pub async fn search_post(
    State(state): State<AppState>,
    Extension(access): Extension<Arc<Access>>,
    Extension(base): Extension<PublicBase>,
    claims: Option<Extension<Arc<AccessClaims>>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    form: Bytes,
) -> Response {
    match form_pairs(&headers, raw.as_deref(), &form) {
        Ok(pairs) => search(&state, &access, &base, claims, &headers, pairs).await,
        Err(e) => error_response(e, None),
    }
}

async fn search(
    state: &AppState,
    access: &Access,
    base: &PublicBase,
    claims: Option<Extension<Arc<AccessClaims>>>,
    headers: &HeaderMap,
    pairs: Vec<(String, String)>,
) -> Response {
    let negotiated = match negotiate(headers, param(&pairs, "_format"), param(&pairs, "_pretty")) {
        Ok(n) => n,
        Err(e) => return error_response(e, None),
    };
    let claims = claims.map(|Extension(claims)| claims);
    let mut response =
        match search_groups(state, access, claims.as_deref(), base.fhir(), &pairs).await {
            Ok(bundle) => {
                let mut patients = PatientsTouched::default();
                for group in &bundle.matches {
                    patients.add_mapped(group);
                }
                let mut response = match body(&negotiated, &bundle) {
                    Ok(bytes) => respond(&negotiated, bytes),
                    Err(e) => error_response(e, Some(&negotiated)),
                };
                response.extensions_mut().insert(patients);
                response
            }
            Err(e) => error_response(e, Some(&negotiated)),
        };
    response
        .extensions_mut()
        .insert(AuditQuery(encode_query(&pairs)));
    response
}

async fn search_groups<'a>(
    state: &AppState,
    access: &Access,
    claims: Option<&AccessClaims>,
    base: &'a str,
    pairs: &[(String, String)],
) -> Result<Searchset<'a>, ApiError> {
    may_read_groups(state, access, claims, Interaction::Search).await?;
    let search = parse_search(pairs)?;
    let store = state.auth.tokens.store();
    let total = store
        .count_groups(&search.filter)
        .await
        .map_err(store_unavailable)?;
    let mut groups = if search.count == 0 {
        Vec::new()
    } else {
        store
            .search_groups(&search.filter, search.count + 1, search.after_id.as_deref())
            .await
            .map_err(store_unavailable)?
    };
    let more = groups.len() > search.count;
    groups.truncate(search.count);
    let link = |after: Option<&str>| {
        let mut query = search.applied.clone();
        if let Some(id) = after {
            query.push(("_cursor".into(), id.to_owned()));
        }
        match encode_query(&query) {
            query if query.is_empty() => format!("{base}/{GROUP}"),
            query => format!("{base}/{GROUP}?{query}"),
        }
    };
    let next_url = (more && search.count > 0)
        .then(|| groups.last().map(|last| link(Some(&last.id))))
        .flatten();
    Ok(Searchset {
        base_url: base,
        self_url: link(search.after_id.as_deref()),
        next_url,
        total: Some(total),
        matches: groups
            .iter()
            .map(|group| Tree::Json(crate::groups::resource(group)))
            .collect(),
        included: Vec::new(),
        outcome: None,
        timestamp: Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::parse::MAX_COUNT;

    #[test]
    fn search_parameters_are_parsed_or_refused() {
        let pairs = |text: &str| query_pairs(Some(text));
        let search = parse_search(&pairs(
            "_id=a, b.1&identifier=urn:s|1,|2,3,urn:t|,|&name=Dia\\,b,,&_count=5000&_cursor=g-7",
        ))
        .unwrap();
        assert_eq!(
            search.filter.ids,
            vec![vec!["a".to_owned(), "b.1".to_owned()]]
        );
        let matched = |system: SystemMatch, value: Option<&str>| IdentifierMatch {
            system,
            value: value.map(str::to_owned),
        };
        assert_eq!(
            search.filter.identifiers,
            vec![vec![
                matched(SystemMatch::Is("urn:s".into()), Some("1")),
                matched(SystemMatch::Absent, Some("2")),
                matched(SystemMatch::Any, Some("3")),
                matched(SystemMatch::Is("urn:t".into()), None),
            ]]
        );
        assert_eq!(search.filter.names, vec![vec!["Dia,b".to_owned()]]);
        assert_eq!(search.count, MAX_COUNT);
        assert_eq!(search.after_id.as_deref(), Some("g-7"));
        assert!(search.applied.iter().all(|(name, _)| name != "_cursor"));
        // Blank values are ignored, not applied.
        let blank = parse_search(&pairs("name=&identifier=|")).unwrap();
        assert_eq!(blank.filter, GroupFilter::default());
        assert!(blank.applied.is_empty());
        for bad in [
            "type=person",
            "name:exact=x",
            "_id=a b",
            "_id=,",
            "identifier=a|b|c",
            "_count=-1",
            "_cursor=a b",
            "_cursor=",
        ] {
            let Err(ApiError::BadRequest(issues)) = parse_search(&pairs(bad)) else {
                panic!("{bad} is refused");
            };
            assert_eq!(issues.len(), 1, "{bad}");
        }
    }
}
