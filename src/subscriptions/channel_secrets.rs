//! The credentials a rest-hook channel carries besides its headers: a Standard Webhooks signing
//! secret and the OAuth2 client credentials of an endpoint that wants a bearer token, each a
//! Portico extension on `Subscription.channel`. Served back redacted (`***`); an update that sends
//! `***` keeps what is stored, and a new signing secret leaves the old one signing too for a day,
//! so a receiver can roll over without losing a notification. Pure, apart from generating secrets.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value as Json, json};

use super::resource::{ChannelKind, ChannelSpec, extensions_with_url, invalid};
use super::rest_hook::{OutboundOAuth, SigningSecret};
use crate::config::Secret;
use crate::fhir::outcome::Issue;

/// On `Subscription.channel`: `whsec_…` (the subscriber's secret), `generate` (Portico makes one
/// and shows it once, in the answer to that create or update) or `***` (keep the stored one).
pub const SIGNING_SECRET_EXTENSION: &str =
    "https://portico.health/fhir/StructureDefinition/subscription-signing-secret";
/// On `Subscription.channel`: a complex extension with `tokenUrl` (valueUrl), `clientId`,
/// `clientSecret` and optional `scope` (valueString each); `clientSecret` may be `***` to keep
/// the stored one while the token URL and client id stay the same.
pub const OUTBOUND_OAUTH_EXTENSION: &str =
    "https://portico.health/fhir/StructureDefinition/subscription-oauth-client-credentials";
/// What a credential is served as, and what an update sends to keep the stored one.
pub const REDACTED: &str = "***";
/// The signing secret value that asks Portico to generate one.
pub const GENERATE: &str = "generate";
/// How long a replaced signing secret keeps signing next to its successor.
pub const ROTATION_OVERLAP: Duration = Duration::from_secs(24 * 3600);

/// The channel's signing secrets, as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SigningSpec {
    /// `whsec_…` once settled (before `settle`, possibly `generate` or `***`).
    pub secret: Secret,
    /// The secret this one replaced, signing too until `previous_until`.
    #[serde(default)]
    pub previous: Option<Secret>,
    #[serde(default)]
    pub previous_until: Option<DateTime<Utc>>,
}

/// The endpoint's OAuth2 client-credentials settings, as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OAuthSpec {
    pub token_url: String,
    pub client_id: String,
    /// Before `settle`, possibly `***`.
    pub client_secret: Secret,
    pub scope: Option<String>,
}

impl SigningSpec {
    /// The secrets a notification sent at `now` is signed with: the current one, and the one it
    /// replaced while the rotation lasts.
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> Vec<SigningSecret> {
        let previous = self
            .previous
            .as_ref()
            .filter(|_| self.previous_until.is_some_and(|until| until > now));
        std::iter::once(&self.secret)
            .chain(previous)
            .filter_map(|secret| SigningSecret::parse(secret.expose()).ok())
            .collect()
    }
}

impl OAuthSpec {
    pub fn outbound(&self) -> OutboundOAuth {
        OutboundOAuth {
            token_url: self.token_url.clone(),
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.expose().to_owned(),
            scope: self.scope.clone(),
        }
    }
}

/// The signing secret extension of `channel`, checked (`generate` and `***` pass as written).
pub fn parse_signing(channel: Option<&Json>, issues: &mut Vec<Issue>) -> Option<SigningSpec> {
    let at = "Subscription.channel.extension";
    let text = single_string(channel, SIGNING_SECRET_EXTENSION, "valueString", at, issues)?;
    let usable = text == GENERATE || text == REDACTED || SigningSecret::parse(&text).is_ok();
    if !usable {
        issues.push(invalid(
            format!(
                "subscription-signing-secret must be whsec_ followed by the base64 of 32 to 64 \
                 bytes, {GENERATE:?} for Portico to make one, or {REDACTED:?} to keep the stored one"
            ),
            at,
        ));
        return None;
    }
    Some(SigningSpec {
        secret: Secret::new(text),
        previous: None,
        previous_until: None,
    })
}

/// The outbound OAuth extension of `channel`, checked.
pub fn parse_oauth(channel: Option<&Json>, issues: &mut Vec<Issue>) -> Option<OAuthSpec> {
    let at = "Subscription.channel.extension";
    let found: Vec<(usize, &Json)> =
        extensions_with_url(channel, OUTBOUND_OAUTH_EXTENSION).collect();
    let extension = match found.as_slice() {
        [] => return None,
        [(_, extension)] => *extension,
        _ => {
            issues.push(invalid(
                "extension subscription-oauth-client-credentials may appear once",
                at,
            ));
            return None;
        }
    };
    let before = issues.len();
    let part = |name: &str, value_key: &str, issues: &mut Vec<Issue>| {
        single_string(Some(extension), name, value_key, at, issues)
    };
    let token_url = part("tokenUrl", "valueUrl", issues);
    let client_id = part("clientId", "valueString", issues);
    let client_secret = part("clientSecret", "valueString", issues);
    let scope = part("scope", "valueString", issues);
    let absolute = token_url.as_deref().is_some_and(|url| {
        reqwest::Url::parse(url)
            .is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.host_str().is_some())
    });
    if !absolute {
        issues.push(invalid(
            "subscription-oauth-client-credentials needs tokenUrl, an absolute http(s) URL",
            at,
        ));
    }
    if client_id.is_none() || client_secret.is_none() {
        issues.push(invalid(
            "subscription-oauth-client-credentials needs clientId and clientSecret",
            at,
        ));
    }
    if issues.len() > before {
        return None;
    }
    Some(OAuthSpec {
        token_url: token_url?,
        client_id: client_id?,
        client_secret: Secret::new(client_secret?),
        scope,
    })
}

/// The one non-empty string `value_key` of the extension `url` on `holder`.
fn single_string(
    holder: Option<&Json>,
    url: &str,
    value_key: &str,
    at: &str,
    issues: &mut Vec<Issue>,
) -> Option<String> {
    let found: Vec<(usize, &Json)> = extensions_with_url(holder, url).collect();
    let name = url.rsplit('/').next().unwrap_or(url);
    match found.as_slice() {
        [] => None,
        [(_, extension)] => {
            let value = extension
                .get(value_key)
                .and_then(Json::as_str)
                .map(str::trim)
                .filter(|value| !value.is_empty());
            if value.is_none() {
                issues.push(invalid(
                    format!("extension {name} needs a non-empty {value_key}"),
                    at,
                ));
            }
            value.map(str::to_owned)
        }
        _ => {
            issues.push(invalid(format!("extension {name} may appear once"), at));
            None
        }
    }
}

/// Only a rest-hook sends HTTP requests these credentials could go with.
pub fn check_channel_kind(channel: &ChannelSpec, issues: &mut Vec<Issue>) {
    if channel.kind != ChannelKind::RestHook
        && (channel.signing.is_some() || channel.oauth.is_some())
    {
        issues.push(invalid(
            "a signing secret and OAuth client credentials apply to rest-hook channels only",
            "Subscription.channel.extension",
        ));
    }
}

/// Replaces what a client sent as `***` or `generate` with what is stored or generated: the
/// stored channel (an update's) supplies kept values and the secret a new one rotates out.
/// Whether a secret was generated (the answer then shows it, once).
pub fn settle(
    channel: &mut ChannelSpec,
    stored: Option<&ChannelSpec>,
    now: DateTime<Utc>,
) -> Result<bool, Vec<Issue>> {
    let mut issues = Vec::new();
    let mut generated = false;
    let stored_signing = stored.and_then(|s| s.signing.as_ref());
    if let Some(signing) = &mut channel.signing {
        let asked = signing.secret.expose().to_owned();
        let secret = match asked.as_str() {
            REDACTED => match stored_signing {
                Some(kept) => kept.secret.clone(),
                None => {
                    issues.push(invalid(
                        "subscription-signing-secret is \"***\" (keep the stored one) but this \
                         subscription has none",
                        "Subscription.channel.extension",
                    ));
                    signing.secret.clone()
                }
            },
            GENERATE => {
                generated = true;
                Secret::new(SigningSecret::generate().to_whsec())
            }
            _ => signing.secret.clone(),
        };
        *signing = match stored_signing {
            // The same secret: the rotation in progress, if any, goes on.
            Some(kept) if kept.secret == secret => kept.clone(),
            Some(replaced) => SigningSpec {
                secret,
                previous: Some(replaced.secret.clone()),
                previous_until: Some(now + ROTATION_OVERLAP),
            },
            None => SigningSpec {
                secret,
                previous: None,
                previous_until: None,
            },
        };
    }
    if let Some(oauth) = &mut channel.oauth
        && oauth.client_secret.expose() == REDACTED
    {
        match stored.and_then(|s| s.oauth.as_ref()) {
            Some(kept)
                if kept.token_url == oauth.token_url && kept.client_id == oauth.client_id =>
            {
                oauth.client_secret = kept.client_secret.clone();
            }
            _ => issues.push(invalid(
                "clientSecret \"***\" keeps the stored secret only for the same tokenUrl and \
                 clientId; send the secret",
                "Subscription.channel.extension",
            )),
        }
    }
    let stored_headers = stored.map_or(&[][..], |s| s.headers.as_slice());
    for line in &mut channel.headers {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if value.trim() != REDACTED {
            continue;
        }
        let name = name.trim();
        let kept = stored_headers.iter().find(|stored| {
            stored
                .split_once(':')
                .is_some_and(|(stored_name, _)| stored_name.trim().eq_ignore_ascii_case(name))
        });
        match kept {
            Some(kept) => *line = kept.clone(),
            None => issues.push(invalid(
                format!("header {name} is \"***\" (keep the stored value) but none is stored"),
                "Subscription.channel.header",
            )),
        }
    }
    if issues.is_empty() {
        Ok(generated)
    } else {
        Err(issues)
    }
}

/// The channel's credential extensions as served: secrets as `***`, except a just-generated
/// signing secret when `reveal_signing_secret`.
pub fn render(channel: &ChannelSpec, reveal_signing_secret: bool) -> Vec<Json> {
    let mut extensions = Vec::new();
    if let Some(signing) = &channel.signing {
        let shown = if reveal_signing_secret {
            signing.secret.expose()
        } else {
            REDACTED
        };
        extensions.push(json!({"url": SIGNING_SECRET_EXTENSION, "valueString": shown}));
    }
    if let Some(oauth) = &channel.oauth {
        let mut parts = vec![
            json!({"url": "tokenUrl", "valueUrl": oauth.token_url}),
            json!({"url": "clientId", "valueString": oauth.client_id}),
            json!({"url": "clientSecret", "valueString": REDACTED}),
        ];
        if let Some(scope) = &oauth.scope {
            parts.push(json!({"url": "scope", "valueString": scope}));
        }
        let mut extension = Map::new();
        extension.insert("url".into(), json!(OUTBOUND_OAUTH_EXTENSION));
        extension.insert("extension".into(), Json::Array(parts));
        extensions.push(Json::Object(extension));
    }
    extensions
}
