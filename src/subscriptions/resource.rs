//! The `Subscription` resource (Subscriptions R5 Backport IG for R4, and classic R4 criteria): a
//! client's JSON checked into a `SubscriptionSpec`, and the resource Portico serves back for it.
//! Pure: the adapter's topics and search parameters come in as arguments.

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Url;
use serde_json::{Map, Value as Json, json};

use crate::adapter::model::{TOPIC_URL_PREFIX, Topic};
use crate::auth::scope::parse_filter;
use crate::fhir::outcome::{Issue, IssueType};
use crate::subscriptions::channel_secrets::{self, OAuthSpec, SigningSpec};
use crate::subscriptions::rest_hook::channel_headers;

/// The backport profile a topic-based subscription conforms to (SB-04).
pub const BACKPORT_SUBSCRIPTION_PROFILE: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription";
/// On `Subscription.criteria`: one topic filter (SB-11).
pub const FILTER_CRITERIA_EXTENSION: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria";
/// On `Subscription.channel.type`: a channel type R4's code list lacks (SB-12).
pub const CHANNEL_TYPE_EXTENSION: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-channel-type";
/// On `Subscription.channel.payload`: how much of each focus a notification carries (SB-13).
pub const PAYLOAD_CONTENT_EXTENSION: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content";
/// On `Subscription.channel` (SB-14).
pub const HEARTBEAT_PERIOD_EXTENSION: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-heartbeat-period";
pub const TIMEOUT_EXTENSION: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-timeout";
pub const MAX_COUNT_EXTENSION: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-max-count";
/// Portico's own channel types, carried in `CHANNEL_TYPE_EXTENSION`.
pub const PORTICO_CHANNEL_TYPE_SYSTEM: &str = "https://portico.health/fhir/CodeSystem/channel-type";
/// HL7 v2 messages over MLLP, a custom channel whose R4 `channel.type` is `message`.
pub const MLLP_CHANNEL_CODE: &str = "hl7v2-mllp";
/// The payload of an MLLP channel: HL7 v2 in its pipe-delimited (ER7) encoding, under the media
/// type HL7's "HL7 over HTTP" names.
pub const HL7V2_PAYLOAD: &str = "x-application/hl7-v2+er7";
/// Payload media types of FHIR notifications (an XML payload is rendered through fhirbolt).
pub const FHIR_PAYLOADS: [&str; 3] = [
    "application/fhir+json",
    "application/json",
    "application/fhir+xml",
];
/// A receiver gets at most this long to answer a notification; longer asks are lowered to it.
pub const MAX_TIMEOUT_SECONDS: u32 = 60;

/// What a client asked for, checked: everything Portico keeps of a Subscription besides its
/// server-side state (status after activation, counters, errors).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SubscriptionSpec {
    pub criteria: Criteria,
    /// `Subscription.reason` (1..1 in R4).
    pub reason: String,
    pub end: Option<DateTime<Utc>>,
    pub channel: ChannelSpec,
    /// The status the client asked for: Requested, Active (treated as requested: Portico
    /// activates after the handshake) or Off. `error` is refused from clients.
    pub requested_status: SubscriptionStatus,
    /// `Subscription.contact`, kept verbatim (ContactPoint JSON) to echo back.
    pub contact: Vec<Json>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Criteria {
    /// Backport: criteria = a topic canonical URL, filters from backport-filter-criteria.
    Topic {
        url: String,
        filters: Vec<TopicFilter>,
    },
    /// Classic R4 (CS-01): `Appointment?status=booked&patient=Patient/123`; `query` is the part
    /// after `?`, as the client wrote it (empty: every resource of the type).
    Search {
        resource_type: String,
        query: String,
    },
}

/// One ANDed filter of a topic subscription, decoded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TopicFilter {
    /// With its modifier, if any: `patient`, `code:in`.
    pub parameter: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChannelSpec {
    pub kind: ChannelKind,
    /// An http(s) URL for rest-hook, `mllp://host:port` for MLLP; websocket needs none.
    pub endpoint: Option<String>,
    /// The MIME type notifications are sent as, verbatim (it is the rest-hook `Content-Type`).
    pub payload: Option<String>,
    pub content: PayloadContent,
    /// `channel.header`, verbatim: credentials, never rendered in full.
    pub headers: Vec<String>,
    pub heartbeat_period: Option<u32>,
    /// Seconds, at most `MAX_TIMEOUT_SECONDS`.
    pub timeout: Option<u32>,
    /// Events per notification, at least 1.
    pub max_count: Option<u32>,
    /// Standard Webhooks signing secrets (rest-hook; `channel_secrets`).
    #[serde(default)]
    pub signing: Option<SigningSpec>,
    /// OAuth2 client credentials for an endpoint that wants a bearer token (rest-hook).
    #[serde(default)]
    pub oauth: Option<OAuthSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ChannelKind {
    RestHook,
    Websocket,
    Hl7v2Mllp,
}

impl ChannelKind {
    /// The R4 `channel.type` code (MLLP travels as `message` plus the channel-type extension).
    pub fn r4_code(self) -> &'static str {
        match self {
            ChannelKind::RestHook => "rest-hook",
            ChannelKind::Websocket => "websocket",
            ChannelKind::Hl7v2Mllp => "message",
        }
    }
}

/// How much of each focus resource a notification carries (backport-content-code-system).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PayloadContent {
    Empty,
    IdOnly,
    FullResource,
}

impl PayloadContent {
    pub fn code(self) -> &'static str {
        match self {
            PayloadContent::Empty => "empty",
            PayloadContent::IdOnly => "id-only",
            PayloadContent::FullResource => "full-resource",
        }
    }

    pub fn from_code(code: &str) -> Option<PayloadContent> {
        [
            PayloadContent::Empty,
            PayloadContent::IdOnly,
            PayloadContent::FullResource,
        ]
        .into_iter()
        .find(|content| content.code() == code)
    }
}

/// R4 `Subscription.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SubscriptionStatus {
    Requested,
    Active,
    Error,
    Off,
}

impl SubscriptionStatus {
    pub fn code(self) -> &'static str {
        match self {
            SubscriptionStatus::Requested => "requested",
            SubscriptionStatus::Active => "active",
            SubscriptionStatus::Error => "error",
            SubscriptionStatus::Off => "off",
        }
    }

    pub fn from_code(code: &str) -> Option<SubscriptionStatus> {
        [
            SubscriptionStatus::Requested,
            SubscriptionStatus::Active,
            SubscriptionStatus::Error,
            SubscriptionStatus::Off,
        ]
        .into_iter()
        .find(|status| status.code() == code)
    }
}

impl Criteria {
    /// The type whose changes the subscription follows; `None` for a topic the adapter no longer
    /// offers.
    pub fn resource_type<'a>(&'a self, topics: &'a [Topic]) -> Option<&'a str> {
        match self {
            Criteria::Topic { url, .. } => topics
                .iter()
                .find(|topic| topic.url == *url)
                .map(|topic| topic.resource_type.as_str()),
            Criteria::Search { resource_type, .. } => Some(resource_type),
        }
    }

    /// The search the criteria stand for, as decoded query pairs (`[("patient", "Patient/123")]`).
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        match self {
            Criteria::Topic { filters, .. } => filters
                .iter()
                .map(|filter| (filter.parameter.clone(), filter.value.clone()))
                .collect(),
            Criteria::Search { query, .. } => form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect(),
        }
    }

    /// `Subscription.criteria` as rendered.
    fn text(&self) -> String {
        match self {
            Criteria::Topic { url, .. } => url.clone(),
            Criteria::Search {
                resource_type,
                query,
            } if query.is_empty() => resource_type.clone(),
            Criteria::Search {
                resource_type,
                query,
            } => format!("{resource_type}?{query}"),
        }
    }
}

pub(super) fn invalid(diagnostics: impl Into<String>, at: impl Into<String>) -> Issue {
    Issue::error(IssueType::Invalid, diagnostics).at(at)
}

fn not_supported(diagnostics: impl Into<String>, at: impl Into<String>) -> Issue {
    Issue::error(IssueType::NotSupported, diagnostics).at(at)
}

/// Parses a client's Subscription JSON. `topics`: the adapter's topics; `search_params(type)`:
/// the search parameter names a type has (None: the type is not served). Every problem in one go.
pub fn parse_subscription(
    json: &Json,
    topics: &[Topic],
    search_params: &dyn Fn(&str) -> Option<Vec<String>>,
) -> Result<SubscriptionSpec, Vec<Issue>> {
    let Some(subscription) = json.as_object() else {
        return Err(vec![invalid(
            "a Subscription is a JSON object",
            "Subscription",
        )]);
    };
    if subscription.get("resourceType").and_then(Json::as_str) != Some("Subscription") {
        return Err(vec![invalid(
            "resourceType must be Subscription",
            "Subscription.resourceType",
        )]);
    }
    let mut issues = Vec::new();
    refuse_modifier_extensions(subscription, "Subscription", &mut issues);
    let requested_status = parse_status(subscription.get("status"), &mut issues);
    let reason = match subscription.get("reason") {
        Some(Json::String(reason)) if !reason.trim().is_empty() => reason.clone(),
        _ => {
            issues.push(invalid(
                "reason is required (a non-empty string)",
                "Subscription.reason",
            ));
            String::new()
        }
    };
    let end = parse_end(subscription.get("end"), &mut issues);
    let contact = parse_contact(subscription.get("contact"), &mut issues);
    let criteria = parse_criteria(subscription, topics, search_params, &mut issues);
    let is_topic = matches!(criteria, Some(Criteria::Topic { .. }))
        || subscription
            .get("criteria")
            .and_then(Json::as_str)
            .is_some_and(names_a_topic);
    let channel = parse_channel(subscription.get("channel"), is_topic, &mut issues);
    match (criteria, channel) {
        (Some(criteria), Some(channel)) if issues.is_empty() => Ok(SubscriptionSpec {
            criteria,
            reason,
            end,
            channel,
            requested_status,
            contact,
        }),
        _ => Err(issues),
    }
}

/// A criteria naming a topic rather than a search: Portico's topic URLs, and any other http(s)
/// URL (some other server's topic, refused as unknown rather than as a malformed search).
fn names_a_topic(criteria: &str) -> bool {
    let criteria = criteria.trim();
    criteria.starts_with(TOPIC_URL_PREFIX)
        || criteria.starts_with("https://")
        || criteria.starts_with("http://")
}

/// A modifier extension changes the meaning of its element, so one Portico does not know cannot
/// be ignored (and Portico knows none).
fn refuse_modifier_extensions(element: &Map<String, Json>, at: &str, issues: &mut Vec<Issue>) {
    if element.contains_key("modifierExtension") {
        issues.push(not_supported(
            "modifier extensions are not supported",
            format!("{at}.modifierExtension"),
        ));
    }
}

fn parse_status(status: Option<&Json>, issues: &mut Vec<Issue>) -> SubscriptionStatus {
    let at = "Subscription.status";
    let code = status.and_then(Json::as_str);
    match code.and_then(SubscriptionStatus::from_code) {
        Some(SubscriptionStatus::Error) => {
            issues.push(invalid(
                "status error is set by the server; ask for requested, active or off",
                at,
            ));
        }
        Some(status) => return status,
        None if code.is_some() => {
            issues.push(invalid("status must be requested, active or off", at))
        }
        None => issues.push(invalid("status is required (requested, active or off)", at)),
    }
    SubscriptionStatus::Requested
}

fn parse_end(end: Option<&Json>, issues: &mut Vec<Issue>) -> Option<DateTime<Utc>> {
    let end = end?;
    let parsed = end
        .as_str()
        .and_then(|text| DateTime::parse_from_rfc3339(text).ok());
    if parsed.is_none() {
        issues.push(invalid(
            "end must be an instant with a time zone (2026-12-31T12:00:00Z)",
            "Subscription.end",
        ));
    }
    parsed.map(|end| end.with_timezone(&Utc))
}

fn parse_contact(contact: Option<&Json>, issues: &mut Vec<Issue>) -> Vec<Json> {
    match contact {
        None => Vec::new(),
        Some(Json::Array(points)) if !points.is_empty() && points.iter().all(Json::is_object) => {
            points.clone()
        }
        Some(_) => {
            issues.push(invalid(
                "contact must be a non-empty array of ContactPoint",
                "Subscription.contact",
            ));
            Vec::new()
        }
    }
}

/// The extensions of `holder` (an element, or the `_name` object of a primitive) with `url`,
/// with their positions in its `extension` array.
pub(super) fn extensions_with_url<'a>(
    holder: Option<&'a Json>,
    url: &'a str,
) -> impl Iterator<Item = (usize, &'a Json)> + 'a {
    holder
        .and_then(|holder| holder.get("extension"))
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .filter(move |(_, extension)| extension.get("url").and_then(Json::as_str) == Some(url))
}

/// The `value_key` of the one extension with `url` on `holder`, if present.
fn single_extension_value<'a>(
    holder: Option<&'a Json>,
    url: &'a str,
    value_key: &str,
    at: &str,
    issues: &mut Vec<Issue>,
) -> Option<&'a Json> {
    let found: Vec<(usize, &Json)> = extensions_with_url(holder, url).collect();
    let name = url.rsplit('/').next().unwrap_or(url);
    match found.as_slice() {
        [] => None,
        [(index, extension)] => {
            let value = extension.get(value_key);
            if value.is_none() {
                issues.push(invalid(
                    format!("extension {name} needs a {value_key}"),
                    format!("{at}.extension[{index}]"),
                ));
            }
            value
        }
        _ => {
            issues.push(invalid(
                format!("extension {name} may appear once"),
                format!("{at}.extension"),
            ));
            None
        }
    }
}

fn parse_criteria(
    subscription: &Map<String, Json>,
    topics: &[Topic],
    search_params: &dyn Fn(&str) -> Option<Vec<String>>,
    issues: &mut Vec<Issue>,
) -> Option<Criteria> {
    let at = "Subscription.criteria";
    let text = match subscription.get("criteria") {
        Some(Json::String(text)) if !text.trim().is_empty() => text.trim(),
        _ => {
            issues.push(invalid(
                "criteria is required: a topic URL or a search (Type?parameter=value)",
                at,
            ));
            return None;
        }
    };
    let filter_texts = filter_criteria(subscription.get("_criteria"), issues);
    if !names_a_topic(text) {
        if !filter_texts.is_empty() {
            issues.push(invalid(
                "filter criteria apply to topic subscriptions; a search criteria carries its \
                 parameters itself",
                format!("{at}.extension"),
            ));
        }
        return parse_search_criteria(text, search_params, issues);
    }
    let Some(topic) = topics.iter().find(|topic| topic.url == text) else {
        issues.push(not_supported(
            format!(
                "unknown topic {text}; this server offers {} topic(s), listed in its \
                 CapabilityStatement (Subscription extension \
                 capabilitystatement-subscriptiontopic-canonical)",
                topics.len()
            ),
            at,
        ));
        return None;
    };
    let mut filters = Vec::new();
    for (index, filter) in filter_texts {
        let at = format!("{at}.extension[{index}]");
        filters.extend(parse_topic_filter(filter, topic, &at, issues));
    }
    Some(Criteria::Topic {
        url: topic.url.clone(),
        filters,
    })
}

/// The backport-filter-criteria strings on `criteria`, with their extension positions.
fn filter_criteria<'a>(
    criteria_extensions: Option<&'a Json>,
    issues: &mut Vec<Issue>,
) -> Vec<(usize, &'a str)> {
    let mut texts = Vec::new();
    for (index, extension) in extensions_with_url(criteria_extensions, FILTER_CRITERIA_EXTENSION) {
        match extension.get("valueString").and_then(Json::as_str) {
            Some(text) if !text.trim().is_empty() => texts.push((index, text.trim())),
            _ => issues.push(invalid(
                "a filter criteria needs a non-empty valueString (parameter=value)",
                format!("Subscription.criteria.extension[{index}]"),
            )),
        }
    }
    texts
}

/// One filter string: `param=value`, `param:modifier=value`, `Type?param=value` or
/// `Type.param=value`, where Type is the topic's resource type and param one of its filters.
fn parse_topic_filter(
    text: &str,
    topic: &Topic,
    at: &str,
    issues: &mut Vec<Issue>,
) -> Vec<TopicFilter> {
    let name_end = text.find('=').unwrap_or(text.len());
    let type_end = text[..name_end].find(['?', '.']);
    let query = match type_end {
        Some(end) if text[..end] != topic.resource_type => {
            issues.push(invalid(
                format!(
                    "filter {text:?} names type {}, but topic {} is about {}",
                    &text[..end],
                    topic.slug,
                    topic.resource_type
                ),
                at,
            ));
            return Vec::new();
        }
        Some(end) => &text[end + 1..],
        None => text,
    };
    let pairs = match parse_filter(query) {
        Ok(pairs) => pairs,
        Err(why) => {
            issues.push(invalid(format!("filter {text:?}: {why}"), at));
            return Vec::new();
        }
    };
    let mut filters = Vec::new();
    for (parameter, value) in pairs {
        let name = parameter.split(':').next().unwrap_or(&parameter);
        if topic.filters.iter().any(|allowed| allowed == name) {
            filters.push(TopicFilter { parameter, value });
        } else {
            let allowed = if topic.filters.is_empty() {
                "it allows no filters".to_owned()
            } else {
                format!("it allows {}", topic.filters.join(", "))
            };
            issues.push(not_supported(
                format!(
                    "topic {} cannot be filtered on {name:?}; {allowed}",
                    topic.slug
                ),
                at,
            ));
        }
    }
    filters
}

/// Search parameters every served type answers, whatever the adapter maps.
const COMMON_SEARCH_PARAMS: [&str; 2] = ["_id", "_lastUpdated"];

/// A classic criteria (CS-01): `Type` or `Type?name=value&...` over a served type's parameters.
fn parse_search_criteria(
    text: &str,
    search_params: &dyn Fn(&str) -> Option<Vec<String>>,
    issues: &mut Vec<Issue>,
) -> Option<Criteria> {
    let at = "Subscription.criteria";
    let (resource_type, query) = text.split_once('?').unwrap_or((text, ""));
    let is_type_name = resource_type
        .chars()
        .next()
        .is_some_and(|first| first.is_ascii_uppercase())
        && resource_type.chars().all(|c| c.is_ascii_alphanumeric());
    if !is_type_name {
        issues.push(invalid(
            format!("criteria {text:?} is neither a topic URL nor a search (Type?parameter=value)"),
            at,
        ));
        return None;
    }
    let Some(params) = search_params(resource_type) else {
        issues.push(not_supported(
            format!("this server does not serve {resource_type}"),
            at,
        ));
        return None;
    };
    let mut valid = true;
    if !query.is_empty() {
        match parse_filter(query) {
            Ok(pairs) => {
                for (parameter, _) in pairs {
                    let name = parameter.split(':').next().unwrap_or(&parameter);
                    let known = COMMON_SEARCH_PARAMS.contains(&name)
                        || params.iter().any(|param| param == name);
                    if !known {
                        valid = false;
                        issues.push(not_supported(
                            format!("{resource_type} has no search parameter {name:?}"),
                            at,
                        ));
                    }
                }
            }
            Err(why) => {
                valid = false;
                issues.push(invalid(format!("criteria {text:?}: {why}"), at));
            }
        }
    }
    valid.then(|| Criteria::Search {
        resource_type: resource_type.to_owned(),
        query: query.to_owned(),
    })
}

fn parse_channel(
    channel: Option<&Json>,
    is_topic: bool,
    issues: &mut Vec<Issue>,
) -> Option<ChannelSpec> {
    let at = "Subscription.channel";
    let Some(element) = channel.and_then(Json::as_object) else {
        issues.push(invalid("channel is required", at));
        return None;
    };
    refuse_modifier_extensions(element, at, issues);
    let kind = parse_channel_kind(element, issues);
    let endpoint = optional_string(element, "endpoint", issues);
    if let Some(kind) = kind {
        check_endpoint(kind, endpoint.as_deref(), issues);
    }
    let payload = optional_string(element, "payload", issues);
    match (&payload, kind) {
        (Some(payload), Some(kind)) => check_payload(kind, payload, issues),
        (Some(_), None) => {}
        // The backport profile makes payload 1..1 (SB-13); a classic subscription without one
        // asks for a bodiless ping (CS-03).
        (None, _) if is_topic => issues.push(invalid(
            "payload is required: the MIME type of notifications (application/fhir+json)",
            "Subscription.channel.payload",
        )),
        (None, _) => {}
    }
    let content = parse_content(element.get("_payload"), issues);
    let headers = parse_headers(element.get("header"), issues);
    let heartbeat_period = positive_number(
        channel,
        HEARTBEAT_PERIOD_EXTENSION,
        "valueUnsignedInt",
        issues,
    );
    let timeout = positive_number(channel, TIMEOUT_EXTENSION, "valueUnsignedInt", issues)
        .map(|timeout| timeout.min(MAX_TIMEOUT_SECONDS));
    let max_count = positive_number(channel, MAX_COUNT_EXTENSION, "valuePositiveInt", issues);
    let signing = channel_secrets::parse_signing(channel, issues);
    let oauth = channel_secrets::parse_oauth(channel, issues);
    let spec = ChannelSpec {
        kind: kind?,
        endpoint,
        payload,
        content,
        headers,
        heartbeat_period,
        timeout,
        max_count,
        signing,
        oauth,
    };
    channel_secrets::check_channel_kind(&spec, issues);
    Some(spec)
}

/// A string element of the channel, trimmed; anything else there is an issue.
fn optional_string(
    channel: &Map<String, Json>,
    name: &str,
    issues: &mut Vec<Issue>,
) -> Option<String> {
    match channel.get(name)? {
        Json::String(text) => Some(text.trim().to_owned()),
        _ => {
            issues.push(invalid(
                format!("{name} must be a string"),
                format!("Subscription.channel.{name}"),
            ));
            None
        }
    }
}

/// A channel extension's whole number, which must be at least 1 (a heartbeat or timeout of zero
/// seconds means nothing).
fn positive_number(
    channel: Option<&Json>,
    url: &str,
    value_key: &str,
    issues: &mut Vec<Issue>,
) -> Option<u32> {
    let at = "Subscription.channel";
    let value = single_extension_value(channel, url, value_key, at, issues)?;
    let number = value
        .as_u64()
        .and_then(|number| u32::try_from(number).ok())
        .filter(|number| *number >= 1);
    if number.is_none() {
        let name = url.rsplit('/').next().unwrap_or(url);
        issues.push(invalid(
            format!("{name} must be a whole number from 1 to {}", u32::MAX),
            format!("{at}.extension"),
        ));
    }
    number
}

fn parse_channel_kind(channel: &Map<String, Json>, issues: &mut Vec<Issue>) -> Option<ChannelKind> {
    let at = "Subscription.channel.type";
    let custom = single_extension_value(
        channel.get("_type"),
        CHANNEL_TYPE_EXTENSION,
        "valueCoding",
        at,
        issues,
    );
    let custom_code = custom.map(|coding| {
        let system = coding.get("system").and_then(Json::as_str);
        let code = coding.get("code").and_then(Json::as_str);
        (system, code)
    });
    let is_mllp = matches!(
        custom_code,
        Some((
            None | Some(PORTICO_CHANNEL_TYPE_SYSTEM),
            Some(MLLP_CHANNEL_CODE)
        ))
    );
    let supported = "supported: rest-hook, websocket, and message with the backport-channel-type \
                     extension hl7v2-mllp";
    match channel.get("type").and_then(Json::as_str) {
        Some("rest-hook") if custom.is_none() => Some(ChannelKind::RestHook),
        Some("websocket") if custom.is_none() => Some(ChannelKind::Websocket),
        Some("message") if is_mllp => Some(ChannelKind::Hl7v2Mllp),
        Some(code @ ("rest-hook" | "websocket" | "message" | "email" | "sms")) => {
            let what = match custom_code {
                Some((_, Some(custom))) => format!("channel type {code} ({custom})"),
                _ => format!("channel type {code}"),
            };
            issues.push(not_supported(
                format!("{what} is not supported; {supported}"),
                at,
            ));
            None
        }
        Some(code) => {
            issues.push(invalid(format!("{code:?} is not an R4 channel type"), at));
            None
        }
        None => {
            issues.push(invalid(
                format!("channel.type is required; {supported}"),
                at,
            ));
            None
        }
    }
}

fn check_endpoint(kind: ChannelKind, endpoint: Option<&str>, issues: &mut Vec<Issue>) {
    let at = "Subscription.channel.endpoint";
    match (kind, endpoint) {
        (ChannelKind::Websocket, _) => {}
        (ChannelKind::RestHook, None) => {
            issues.push(invalid("a rest-hook channel needs an endpoint URL", at));
        }
        (ChannelKind::RestHook, Some(endpoint)) => {
            let usable = Url::parse(endpoint).ok().is_some_and(|url| {
                matches!(url.scheme(), "http" | "https") && url.host_str().is_some()
            });
            if !usable {
                issues.push(invalid(
                    "a rest-hook endpoint must be an absolute http or https URL",
                    at,
                ));
            }
        }
        (ChannelKind::Hl7v2Mllp, endpoint) => {
            let usable = endpoint
                .and_then(|e| Url::parse(e).ok())
                .is_some_and(|url| {
                    url.scheme() == "mllp"
                        && url.host_str().is_some_and(|host| !host.is_empty())
                        && url.port().is_some()
                        && url.username().is_empty()
                        && url.password().is_none()
                        && matches!(url.path(), "" | "/")
                        && url.query().is_none()
                        && url.fragment().is_none()
                });
            if !usable {
                issues.push(invalid(
                    "an hl7v2-mllp endpoint must be mllp://host:port",
                    at,
                ));
            }
        }
    }
}

/// FHIR channels take a FHIR media type, with at most `fhirVersion=4.0` and `charset=utf-8`
/// (SB-13: another FHIR version is refused); MLLP carries HL7 v2 text.
fn check_payload(kind: ChannelKind, payload: &str, issues: &mut Vec<Issue>) {
    let at = "Subscription.channel.payload";
    let mut parts = payload.split(';');
    let media_type = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    for parameter in parts {
        let (name, value) = parameter.split_once('=').unwrap_or((parameter, ""));
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim().trim_matches('"');
        let accepted = match name.as_str() {
            "fhirversion" => kind != ChannelKind::Hl7v2Mllp && matches!(value, "4.0" | "4.0.1"),
            "charset" => value.eq_ignore_ascii_case("utf-8"),
            _ => false,
        };
        if !accepted {
            let why = if name == "fhirversion" {
                format!("fhirVersion {value} is not served: this is an R4 (4.0) server")
            } else {
                format!("payload parameter {:?} is not supported", parameter.trim())
            };
            issues.push(not_supported(why, at));
        }
    }
    let known = match kind {
        ChannelKind::Hl7v2Mllp => media_type == HL7V2_PAYLOAD,
        ChannelKind::RestHook | ChannelKind::Websocket => {
            FHIR_PAYLOADS.contains(&media_type.as_str())
        }
    };
    if !known {
        let expected = match kind {
            ChannelKind::Hl7v2Mllp => HL7V2_PAYLOAD.to_owned(),
            ChannelKind::RestHook | ChannelKind::Websocket => FHIR_PAYLOADS.join(", "),
        };
        issues.push(not_supported(
            format!("payload {media_type:?} is not supported; use {expected}"),
            at,
        ));
    }
}

/// `channel.payload`'s content extension; id-only when absent.
fn parse_content(payload_extensions: Option<&Json>, issues: &mut Vec<Issue>) -> PayloadContent {
    let at = "Subscription.channel.payload";
    let Some(value) = single_extension_value(
        payload_extensions,
        PAYLOAD_CONTENT_EXTENSION,
        "valueCode",
        at,
        issues,
    ) else {
        return PayloadContent::IdOnly;
    };
    match value.as_str().and_then(PayloadContent::from_code) {
        Some(content) => content,
        None => {
            issues.push(invalid(
                "payload content must be empty, id-only or full-resource",
                format!("{at}.extension"),
            ));
            PayloadContent::IdOnly
        }
    }
}

fn parse_headers(headers: Option<&Json>, issues: &mut Vec<Issue>) -> Vec<String> {
    let at = "Subscription.channel.header";
    let lines: Vec<String> = match headers {
        None => return Vec::new(),
        Some(Json::Array(lines)) => {
            let texts: Vec<String> = lines
                .iter()
                .filter_map(|line| line.as_str().map(str::to_owned))
                .collect();
            if texts.len() != lines.len() {
                issues.push(invalid("each channel header is a string", at));
                return Vec::new();
            }
            texts
        }
        Some(_) => {
            issues.push(invalid("header must be an array of strings", at));
            return Vec::new();
        }
    };
    // Whether Portico adds its own Authorization (an OAuth client for the endpoint) is settled
    // when the subscription is delivered; here only the form of each line is checked.
    if let Err(refused) = channel_headers(&lines, false) {
        issues.push(invalid(refused.0, at));
    }
    lines
}

/// What the server says about a subscription: the resource it serves for read/search.
#[derive(Debug, Clone, Copy)]
pub struct SubscriptionView<'a> {
    pub id: &'a str,
    pub spec: &'a SubscriptionSpec,
    pub status: SubscriptionStatus,
    pub error: Option<&'a str>,
    pub events_since_start: u64,
    pub version: u64,
    pub last_updated: DateTime<Utc>,
    /// Show the signing secret Portico just generated (the answer to that create or update).
    pub reveal_signing_secret: bool,
}

/// An instant as FHIR writes it (UTC, `Z`).
pub(crate) fn fhir_instant(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Escapes what a query-string decoder would change (`%`, `&`, `+`, `#`, spaces, controls and
/// non-ASCII) and `=`, and nothing else: a reference stays readable (`patient=Patient/123`).
fn query_value_text(value: &str) -> String {
    let mut text = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_graphic() && !matches!(byte, b'%' | b'&' | b'+' | b'#' | b'=') {
            text.push(char::from(byte));
        } else {
            text.push_str(&format!("%{byte:02X}"));
        }
    }
    text
}

/// `channel.header` without its secrets: each header's name, its value replaced by `***`.
fn redacted_headers(headers: &[String]) -> Vec<String> {
    headers
        .iter()
        .map(|line| match line.split_once(':') {
            Some((name, _)) => format!("{}: ***", name.trim()),
            None => "***".to_owned(),
        })
        .collect()
}

fn extension(url: &str, value_key: &str, value: Json) -> Json {
    let mut extension = Map::new();
    extension.insert("url".into(), json!(url));
    extension.insert(value_key.into(), value);
    Json::Object(extension)
}

/// The Subscription Portico serves: valid R4 in the backport profile for topic subscriptions,
/// channel headers redacted.
pub fn render_subscription(view: &SubscriptionView) -> Json {
    let spec = view.spec;
    let mut meta = Map::new();
    meta.insert("versionId".into(), json!(view.version.to_string()));
    meta.insert("lastUpdated".into(), json!(fhir_instant(view.last_updated)));
    if let Criteria::Topic { .. } = spec.criteria {
        meta.insert("profile".into(), json!([BACKPORT_SUBSCRIPTION_PROFILE]));
    }
    let mut resource = Map::new();
    resource.insert("resourceType".into(), json!("Subscription"));
    resource.insert("id".into(), json!(view.id));
    resource.insert("meta".into(), Json::Object(meta));
    // R4's element order: status, contact, end, reason, criteria, error, channel.
    resource.insert("status".into(), json!(view.status.code()));
    if !spec.contact.is_empty() {
        resource.insert("contact".into(), json!(spec.contact));
    }
    if let Some(end) = spec.end {
        resource.insert("end".into(), json!(fhir_instant(end)));
    }
    resource.insert("reason".into(), json!(spec.reason));
    resource.insert("criteria".into(), json!(spec.criteria.text()));
    if let Criteria::Topic { filters, .. } = &spec.criteria {
        let filters: Vec<Json> = filters
            .iter()
            .map(|filter| {
                let text = format!(
                    "{}={}",
                    query_value_text(&filter.parameter),
                    query_value_text(&filter.value)
                );
                extension(FILTER_CRITERIA_EXTENSION, "valueString", json!(text))
            })
            .collect();
        if !filters.is_empty() {
            resource.insert("_criteria".into(), json!({ "extension": filters }));
        }
    }
    if let Some(error) = view.error {
        resource.insert("error".into(), json!(error));
    }
    resource.insert(
        "channel".into(),
        render_channel(&spec.channel, view.reveal_signing_secret),
    );
    Json::Object(resource)
}

fn render_channel(channel: &ChannelSpec, reveal_signing_secret: bool) -> Json {
    let mut element = Map::new();
    let numbers = [
        (
            HEARTBEAT_PERIOD_EXTENSION,
            "valueUnsignedInt",
            channel.heartbeat_period,
        ),
        (TIMEOUT_EXTENSION, "valueUnsignedInt", channel.timeout),
        (MAX_COUNT_EXTENSION, "valuePositiveInt", channel.max_count),
    ];
    let extensions: Vec<Json> = numbers
        .into_iter()
        .filter_map(|(url, key, value)| value.map(|value| extension(url, key, json!(value))))
        .chain(channel_secrets::render(channel, reveal_signing_secret))
        .collect();
    if !extensions.is_empty() {
        element.insert("extension".into(), Json::Array(extensions));
    }
    element.insert("type".into(), json!(channel.kind.r4_code()));
    if channel.kind == ChannelKind::Hl7v2Mllp {
        let coding = json!({
            "system": PORTICO_CHANNEL_TYPE_SYSTEM,
            "code": MLLP_CHANNEL_CODE,
            "display": "HL7 v2 over MLLP",
        });
        let custom = extension(CHANNEL_TYPE_EXTENSION, "valueCoding", coding);
        element.insert("_type".into(), json!({ "extension": [custom] }));
    }
    if let Some(endpoint) = &channel.endpoint {
        element.insert("endpoint".into(), json!(endpoint));
    }
    if let Some(payload) = &channel.payload {
        element.insert("payload".into(), json!(payload));
    }
    let content = extension(
        PAYLOAD_CONTENT_EXTENSION,
        "valueCode",
        json!(channel.content.code()),
    );
    element.insert("_payload".into(), json!({ "extension": [content] }));
    if !channel.headers.is_empty() {
        element.insert("header".into(), json!(redacted_headers(&channel.headers)));
    }
    Json::Object(element)
}
