//! SMART on FHIR scopes, v1 and v2 (SMART App Launch 2.x, scopes-and-launch-context): parsing,
//! printing back in the form requested, and narrowing a request to what a client may have.
//!
//! Pure. A scope is never re-interpreted: letters out of `cruds` order, unknown letters, resource
//! types outside R4 and unknown words are errors, which the token endpoint turns into
//! `invalid_scope` or leaves out of the grant.

use std::fmt;

use crate::fhir::resource_types::is_resource_type;

/// Whose data a resource scope reaches: the patient in context, what the user may see, or what a
/// backend system may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Context {
    Patient,
    User,
    System,
}

impl Context {
    fn name(self) -> &'static str {
        match self {
            Context::Patient => "patient",
            Context::User => "user",
            Context::System => "system",
        }
    }
}

/// `context/Type.permissions?filter`: `patient/Observation.rs?category=...|laboratory`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourceScope {
    pub context: Context,
    /// `None` is `*`: every type, current and future (SM-33).
    pub resource_type: Option<String>,
    pub create: bool,
    pub read: bool,
    pub update: bool,
    pub delete: bool,
    pub search: bool,
    /// Granular constraints (`?category=...`), percent-decoded, in request order; all must hold.
    pub filter: Vec<(String, String)>,
    /// Requested in v1 syntax (`.read`, `.write`, `.*`): printed back that way while the
    /// permissions are still exactly the v1 set (SM-31).
    pub v1: bool,
}

/// One scope of a request or a grant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    Resource(ResourceScope),
    Launch,
    LaunchPatient,
    LaunchEncounter,
    OpenId,
    FhirUser,
    Profile,
    OfflineAccess,
    OnlineAccess,
}

const WORDS: &[(&str, Scope)] = &[
    ("launch", Scope::Launch),
    ("launch/patient", Scope::LaunchPatient),
    ("launch/encounter", Scope::LaunchEncounter),
    ("openid", Scope::OpenId),
    ("fhirUser", Scope::FhirUser),
    ("profile", Scope::Profile),
    ("offline_access", Scope::OfflineAccess),
    ("online_access", Scope::OnlineAccess),
];

/// Why one scope word was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scope {scope:?}: {reason}")]
pub struct ScopeError {
    /// The word as requested.
    pub scope: String,
    pub reason: String,
}

impl ScopeError {
    fn new(scope: &str, reason: impl Into<String>) -> ScopeError {
        ScopeError {
            scope: scope.to_owned(),
            reason: reason.into(),
        }
    }

    /// The OAuth error code a token or authorization endpoint answers with (RFC 6749 §5.2).
    pub fn oauth_error(&self) -> &'static str {
        "invalid_scope"
    }
}

/// The permission letters in the only order v2 admits.
const LETTERS: [char; 5] = ['c', 'r', 'u', 'd', 's'];

/// The v1 permission words and the v2 letters each means (SM-31).
const V1_WORDS: &[(&str, &str)] = &[("read", "rs"), ("write", "cud"), ("*", "cruds")];

impl ResourceScope {
    fn letters(&self) -> String {
        [
            self.create,
            self.read,
            self.update,
            self.delete,
            self.search,
        ]
        .iter()
        .zip(LETTERS)
        .filter(|(on, _)| **on)
        .map(|(_, letter)| letter)
        .collect()
    }

    fn set_letters(&mut self, letters: &str) {
        self.create = letters.contains('c');
        self.read = letters.contains('r');
        self.update = letters.contains('u');
        self.delete = letters.contains('d');
        self.search = letters.contains('s');
    }

    fn any_permission(&self) -> bool {
        self.create || self.read || self.update || self.delete || self.search
    }

    /// The v1 word these permissions print as, when there is one.
    fn v1_word(&self) -> Option<&'static str> {
        let letters = self.letters();
        V1_WORDS
            .iter()
            .find(|(_, meaning)| *meaning == letters)
            .map(|(word, _)| *word)
    }

    /// What both `self` and `other` permit, or `None` when they share nothing. Printed in v1 form
    /// only while the requested (`self`) v1 permissions survive whole.
    fn intersect(&self, other: &ResourceScope) -> Option<ResourceScope> {
        if self.context != other.context {
            return None;
        }
        let resource_type = match (&self.resource_type, &other.resource_type) {
            (None, theirs) => theirs.clone(),
            (ours, None) => ours.clone(),
            (Some(ours), Some(theirs)) if ours == theirs => Some(ours.clone()),
            _ => return None,
        };
        let mut filter = self.filter.clone();
        for condition in &other.filter {
            if !filter.contains(condition) {
                filter.push(condition.clone());
            }
        }
        let granted = ResourceScope {
            context: self.context,
            resource_type,
            create: self.create && other.create,
            read: self.read && other.read,
            update: self.update && other.update,
            delete: self.delete && other.delete,
            search: self.search && other.search,
            filter,
            v1: false,
        };
        if !granted.any_permission() {
            return None;
        }
        let v1 = self.v1 && granted.letters() == self.letters() && granted.filter.is_empty();
        Some(ResourceScope { v1, ..granted })
    }
}

/// Characters RFC 6749 §3.3 admits in a scope token.
fn is_scope_char(c: char) -> bool {
    matches!(c, '\x21' | '\x23'..='\x5b' | '\x5d'..='\x7e')
}

/// Parses one scope word.
pub fn parse_scope(word: &str) -> Result<Scope, ScopeError> {
    if word.is_empty() || !word.chars().all(is_scope_char) {
        return Err(ScopeError::new(
            word,
            "a scope is printable ASCII without spaces, quotes or backslashes",
        ));
    }
    if let Some((_, scope)) = WORDS.iter().find(|(name, _)| *name == word) {
        return Ok(scope.clone());
    }
    parse_resource_scope(word).map(Scope::Resource)
}

fn parse_resource_scope(word: &str) -> Result<ResourceScope, ScopeError> {
    let error = |reason: &str| ScopeError::new(word, reason);
    let (context, rest) = word.split_once('/').ok_or_else(|| error("unknown scope"))?;
    let context = match context {
        "patient" => Context::Patient,
        "user" => Context::User,
        "system" => Context::System,
        _ => return Err(error("unknown scope")),
    };
    let (head, query) = match rest.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (rest, None),
    };
    let (resource_type, permissions) = head
        .split_once('.')
        .ok_or_else(|| error("expected Type.permissions after the context"))?;
    let resource_type = match resource_type {
        "*" => None,
        name if is_resource_type(name) => Some(name.to_owned()),
        _ => return Err(error("not an R4 resource type (nor *)")),
    };
    let mut scope = ResourceScope {
        context,
        resource_type,
        create: false,
        read: false,
        update: false,
        delete: false,
        search: false,
        filter: Vec::new(),
        v1: false,
    };
    if let Some((_, letters)) = V1_WORDS.iter().find(|(name, _)| *name == permissions) {
        if query.is_some() {
            return Err(error("v1 scopes (.read, .write, .*) take no ?parameters"));
        }
        scope.set_letters(letters);
        scope.v1 = true;
        return Ok(scope);
    }
    check_letters(permissions).map_err(|reason| error(&reason))?;
    scope.set_letters(permissions);
    if let Some(query) = query {
        scope.filter = parse_filter(query).map_err(|reason| error(&reason))?;
    }
    Ok(scope)
}

/// v2 permissions: one or more of `cruds`, each at most once, in that order (SM-30).
fn check_letters(permissions: &str) -> Result<(), String> {
    if permissions.is_empty() {
        return Err("no permissions after the '.'".into());
    }
    let mut next = 0;
    for letter in permissions.chars() {
        match LETTERS.iter().position(|l| *l == letter) {
            None => {
                return Err(format!(
                    "{letter:?} is not a permission (c, r, u, d, s; or v1 read, write, *)"
                ));
            }
            Some(at) if at < next => {
                return Err(format!(
                    "permissions {permissions:?} are not in cruds order (or repeat a letter)"
                ));
            }
            Some(at) => next = at + 1,
        }
    }
    Ok(())
}

/// `name=value&...`, decoded as a query string is (also a Subscription's search criteria).
pub(crate) fn parse_filter(query: &str) -> Result<Vec<(String, String)>, String> {
    if query.is_empty() {
        return Err("empty ?parameters".into());
    }
    let malformed = || "every ?parameter needs a name and a value".to_owned();
    // Decoding would skip empty pieces (`a=1&&b=2`) silently.
    if query.split('&').any(|piece| !piece.contains('=')) {
        return Err(malformed());
    }
    let mut filter = Vec::new();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if name.is_empty() || value.is_empty() {
            return Err(malformed());
        }
        filter.push((name.into_owned(), value.into_owned()));
    }
    Ok(filter)
}

/// Parses a space-separated scope list (the OAuth `scope` parameter); the first bad word fails
/// the whole list.
pub fn parse_scopes(space_separated: &str) -> Result<Vec<Scope>, ScopeError> {
    space_separated
        .split(' ')
        .filter(|w| !w.is_empty())
        .map(parse_scope)
        .collect()
}

/// Parses what it can: the scopes understood, and an error for each word that is not one (for an
/// authorization server that grants less rather than refusing).
pub fn parse_scopes_lenient(space_separated: &str) -> (Vec<Scope>, Vec<ScopeError>) {
    let mut scopes = Vec::new();
    let mut errors = Vec::new();
    for word in space_separated.split(' ').filter(|w| !w.is_empty()) {
        match parse_scope(word) {
            Ok(scope) => scopes.push(scope),
            Err(error) => errors.push(error),
        }
    }
    (scopes, errors)
}

/// The grant: each requested scope narrowed to what the `allowed` scopes (a client's registered
/// scopes, wildcards included) permit, without duplicates. A requested wildcard meets allowed
/// types as those types; permissions and granular filters intersect (SM-33).
pub fn narrow(requested: &[Scope], allowed: &[Scope]) -> Vec<Scope> {
    let mut granted: Vec<Scope> = Vec::new();
    let mut grant = |scope: Scope| {
        if !granted.contains(&scope) {
            granted.push(scope);
        }
    };
    for scope in requested {
        match scope {
            Scope::Resource(wanted) => {
                for permitted in allowed {
                    if let Scope::Resource(permitted) = permitted
                        && let Some(both) = wanted.intersect(permitted)
                    {
                        grant(Scope::Resource(both));
                    }
                }
            }
            word if allowed.contains(word) => grant(word.clone()),
            _ => {}
        }
    }
    granted
}

/// Scopes as the OAuth `scope` parameter: space-separated.
pub fn format_scopes(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(Scope::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A filter name or value as it can stand in a scope: percent-encoded only where it would
/// otherwise end the scope, split the query, or fall outside RFC 6749's scope characters, so that
/// `category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory` prints as it
/// was requested.
fn encode_filter_part(text: &str, out: &mut String) {
    for byte in text.bytes() {
        let c = byte as char;
        if is_scope_char(c) && !matches!(c, '%' | '&' | '=' | '+' | '#') {
            out.push(c);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
}

impl fmt::Display for ResourceScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let resource_type = self.resource_type.as_deref().unwrap_or("*");
        let permissions = match self.v1_word().filter(|_| self.v1 && self.filter.is_empty()) {
            Some(word) => word.to_owned(),
            None => self.letters(),
        };
        write!(f, "{}/{resource_type}.{permissions}", self.context.name())?;
        for (at, (name, value)) in self.filter.iter().enumerate() {
            let mut part = String::from(if at == 0 { "?" } else { "&" });
            encode_filter_part(name, &mut part);
            part.push('=');
            encode_filter_part(value, &mut part);
            f.write_str(&part)?;
        }
        Ok(())
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Resource(scope) => scope.fmt(f),
            word => {
                let name = WORDS
                    .iter()
                    .find(|(_, scope)| scope == word)
                    .map(|(name, _)| *name)
                    .unwrap_or_default();
                f.write_str(name)
            }
        }
    }
}

#[cfg(test)]
mod tests;
