//! The SSRF guard: a subscriber's endpoint URL is checked before every delivery (and every
//! outbound token request), after DNS resolution, and the sender connects only to the addresses
//! it vetted, so a name cannot be re-pointed at an internal address between check and connect.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde::Deserialize;

/// The `[subscriptions]` settings the delivery code reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SubscriptionSettings {
    /// Admit `http` endpoints and addresses inside private, loopback and other non-public
    /// ranges: for tests on 127.0.0.1, the demo, and EHRs on the practice's own network. Off by
    /// default. Link-local (the cloud metadata service) and multicast stay refused.
    pub allow_private_endpoints: bool,
}

/// How long resolving an endpoint's name may take (the connect timeout).
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an endpoint is refused; the text names the rule and, for an address rule, the address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EndpointRefused(pub String);

/// An endpoint that passed the guard: the URL to send to and the only addresses to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VettedEndpoint {
    pub url: Url,
    pub addrs: Vec<SocketAddr>,
}

/// Checks `endpoint` against the rules: an absolute `https` URL (`http` only with
/// `allow_private_endpoints`), no user name or password in it, and a host whose every address
/// (a literal, or all the name resolves to) is public unless private endpoints are allowed.
pub async fn vet(
    endpoint: &str,
    settings: &SubscriptionSettings,
) -> Result<VettedEndpoint, EndpointRefused> {
    let refuse = |why: &str| Err(EndpointRefused(format!("the endpoint {why}")));
    let Ok(url) = Url::parse(endpoint) else {
        return refuse("is not an absolute URL");
    };
    match url.scheme() {
        "https" => {}
        "http" if settings.allow_private_endpoints => {}
        "http" => {
            return refuse("must use https (http only with subscriptions.allow_private_endpoints)");
        }
        _ => return refuse("must be an https URL"),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return refuse("must not carry a user name or password");
    }
    let Some(port) = url.port_or_known_default() else {
        return refuse("has no port");
    };
    let addrs = match (host_literal(&url), host_name(&url)) {
        (Some(ip), _) => vec![SocketAddr::new(ip, port)],
        (None, Some(name)) => resolve(name, port, settings).await?,
        (None, None) => return refuse("has no host"),
    };
    check_addresses(&addrs, settings)?;
    Ok(VettedEndpoint { url, addrs })
}

/// Checks an HL7 v2 peer, `mllp://host:port`: MLLP carries no encryption, so like `http` it is
/// admitted only with `allow_private_endpoints` (an engine on the practice's network), and the
/// host's addresses pass the same rules. Returns the `ip:port` to connect to, so the sender never
/// resolves the name again.
pub async fn vet_mllp_peer(
    endpoint: &str,
    settings: &SubscriptionSettings,
) -> Result<String, EndpointRefused> {
    let refuse = |why: &str| Err(EndpointRefused(format!("the MLLP peer {why}")));
    let Ok(url) = Url::parse(endpoint) else {
        return refuse("is not mllp://host:port");
    };
    if url.scheme() != "mllp" {
        return refuse("must be mllp://host:port");
    }
    if !settings.allow_private_endpoints {
        return refuse(
            "is refused: MLLP is unencrypted, so it is allowed only with \
             subscriptions.allow_private_endpoints (an engine on the practice's own network)",
        );
    }
    let Some(port) = url.port() else {
        return refuse("has no port");
    };
    let addrs = match (host_literal(&url), host_name(&url)) {
        (Some(ip), _) => vec![SocketAddr::new(ip, port)],
        (None, Some(name)) => resolve(name, port, settings).await?,
        (None, None) => return refuse("has no host"),
    };
    check_addresses(&addrs, settings)?;
    Ok(addrs[0].to_string())
}

/// The URL's host when it is an IP address (the URL parser has already turned the other spellings
/// of one, such as `2130706433` or `0x7f.1`, into the dotted form).
fn host_literal(url: &Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.parse().ok()
}

/// The URL's host when it is a name to resolve.
fn host_name(url: &Url) -> Option<&str> {
    url.host_str().filter(|_| host_literal(url).is_none())
}

/// All addresses `name` resolves to, each admitted by the rules (one refused refuses the name:
/// a name that also points inside is not an endpoint to trust).
async fn resolve(
    name: &str,
    port: u16,
    settings: &SubscriptionSettings,
) -> Result<Vec<SocketAddr>, EndpointRefused> {
    let lookup = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, port)));
    let addrs: Vec<SocketAddr> = match lookup.await {
        Ok(Ok(addrs)) => addrs.collect(),
        Ok(Err(_)) => Vec::new(),
        Err(_) => {
            return Err(EndpointRefused(format!(
                "the endpoint's host {name} did not resolve in time"
            )));
        }
    };
    if addrs.is_empty() {
        return Err(EndpointRefused(format!(
            "the endpoint's host {name} does not resolve"
        )));
    }
    check_addresses(&addrs, settings)?;
    Ok(addrs)
}

fn check_addresses(
    addrs: &[SocketAddr],
    settings: &SubscriptionSettings,
) -> Result<(), EndpointRefused> {
    for addr in addrs {
        let Some(kind) = non_public(addr.ip()) else {
            continue;
        };
        // Link-local holds the cloud metadata service (169.254.169.254) and multicast reaches
        // everyone on the segment: no practice network needs a subscriber there.
        if matches!(kind, LINK_LOCAL | MULTICAST) {
            return Err(EndpointRefused(format!(
                "the endpoint's address {} is {kind}, never a subscriber",
                addr.ip()
            )));
        }
        if !settings.allow_private_endpoints {
            return Err(EndpointRefused(format!(
                "the endpoint's address {} is {kind} (allowed only with \
                 subscriptions.allow_private_endpoints)",
                addr.ip()
            )));
        }
    }
    Ok(())
}

const LINK_LOCAL: &str = "link-local";
const MULTICAST: &str = "multicast";

/// What kind of non-public address `ip` is, or `None` for a public one. IPv6 forms that embed an
/// IPv4 address (mapped, compatible, NAT64, 6to4) are judged by the address they carry.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => non_public_v6(v6),
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "unspecified (0.0.0.0/8)",
        (127, _, _) => "loopback",
        (10, _, _) => "private (RFC 1918)",
        (172, 16..=31, _) => "private (RFC 1918)",
        (192, 168, _) => "private (RFC 1918)",
        (100, 64..=127, _) => "shared address space (CGNAT, 100.64.0.0/10)",
        (169, 254, _) => LINK_LOCAL,
        (192, 0, 0) => "IETF protocol assignments (192.0.0.0/24)",
        (198, 18..=19, _) => "benchmarking (198.18.0.0/15)",
        (224..=239, _, _) => MULTICAST,
        (240..=255, _, _) => "reserved or broadcast (240.0.0.0/4)",
        _ => return None,
    })
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    let embedded_v4 = |high: u16, low: u16| {
        let [a, b] = high.to_be_bytes();
        let [c, d] = low.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    match segments {
        // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (the deprecated compatible form).
        [0, 0, 0, 0, 0, 0xffff, high, low] | [0, 0, 0, 0, 0, 0, high, low] => {
            return non_public_v4(embedded_v4(high, low));
        }
        // 64:ff9b::a.b.c.d, the well-known NAT64 prefix.
        [0x64, 0xff9b, 0, 0, 0, 0, high, low] => return non_public_v4(embedded_v4(high, low)),
        // 2002:aabb:ccdd::/48, 6to4.
        [0x2002, high, low, ..] => return non_public_v4(embedded_v4(high, low)),
        _ => {}
    }
    let first = segments[0];
    if first & 0xfe00 == 0xfc00 {
        return Some("unique local (fc00::/7)");
    }
    if first & 0xffc0 == 0xfe80 {
        return Some(LINK_LOCAL);
    }
    if first & 0xffc0 == 0xfec0 {
        return Some("site-local (fec0::/10)");
    }
    if first & 0xff00 == 0xff00 {
        return Some(MULTICAST);
    }
    None
}

/// The sender's DNS resolver: a name resolves to the addresses the last `vet` of it returned
/// (`pin`), or, if there is none, through the guard itself. Either way the client connects only
/// to vetted addresses; IP literals never reach a resolver and are vetted by `vet`.
pub(crate) struct GuardedResolver {
    settings: SubscriptionSettings,
    pins: Mutex<HashMap<String, Vec<SocketAddr>>>,
}

impl GuardedResolver {
    pub(crate) fn new(settings: SubscriptionSettings) -> Arc<GuardedResolver> {
        Arc::new(GuardedResolver {
            settings,
            pins: Mutex::new(HashMap::new()),
        })
    }

    /// Records `endpoint`'s vetted addresses as the ones its name connects to. They are kept
    /// with port 0, which the connector replaces with each request's own port: the same name may
    /// be another subscription's endpoint on another port.
    pub(crate) fn pin(&self, endpoint: &VettedEndpoint) {
        if let Some(name) = host_name(&endpoint.url) {
            let addrs = endpoint
                .addrs
                .iter()
                .map(|addr| SocketAddr::new(addr.ip(), 0))
                .collect();
            self.pins
                .lock()
                .expect("the pin map is never poisoned")
                .insert(name.to_owned(), addrs);
        }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let name = name.as_str().to_owned();
        let pinned = self
            .pins
            .lock()
            .expect("the pin map is never poisoned")
            .get(&name)
            .cloned();
        let settings = self.settings.clone();
        Box::pin(async move {
            let addrs = match pinned {
                Some(addrs) => addrs,
                // Port 0: the connector puts the URL's port in.
                None => resolve(&name, 0, &settings).await?,
            };
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_kinds() {
        let table = [
            ("8.8.8.8", None),
            ("93.184.215.14", None),
            ("0.0.0.0", Some("unspecified (0.0.0.0/8)")),
            ("127.0.0.1", Some("loopback")),
            ("127.255.0.9", Some("loopback")),
            ("10.0.0.1", Some("private (RFC 1918)")),
            ("172.16.0.1", Some("private (RFC 1918)")),
            ("172.31.255.255", Some("private (RFC 1918)")),
            ("172.32.0.1", None),
            ("192.168.1.1", Some("private (RFC 1918)")),
            (
                "100.64.0.1",
                Some("shared address space (CGNAT, 100.64.0.0/10)"),
            ),
            (
                "100.127.255.255",
                Some("shared address space (CGNAT, 100.64.0.0/10)"),
            ),
            ("100.128.0.1", None),
            ("169.254.169.254", Some("link-local")),
            (
                "192.0.0.8",
                Some("IETF protocol assignments (192.0.0.0/24)"),
            ),
            ("198.18.0.1", Some("benchmarking (198.18.0.0/15)")),
            ("224.0.0.1", Some("multicast")),
            (
                "255.255.255.255",
                Some("reserved or broadcast (240.0.0.0/4)"),
            ),
            ("2606:4700::1111", None),
            ("::", Some("unspecified")),
            ("::1", Some("loopback")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("::ffff:10.1.2.3", Some("private (RFC 1918)")),
            ("::ffff:169.254.169.254", Some("link-local")),
            ("::ffff:8.8.8.8", None),
            ("::127.0.0.1", Some("loopback")),
            ("64:ff9b::a9fe:a9fe", Some("link-local")),
            ("64:ff9b::808:808", None),
            ("2002:7f00:1::", Some("loopback")),
            ("2002:c0a8:101::1", Some("private (RFC 1918)")),
            ("fc00::1", Some("unique local (fc00::/7)")),
            ("fd12:3456::1", Some("unique local (fc00::/7)")),
            ("fe80::1", Some("link-local")),
            ("febf::1", Some("link-local")),
            ("fec0::1", Some("site-local (fec0::/10)")),
            ("ff02::1", Some("multicast")),
        ];
        for (ip, kind) in table {
            assert_eq!(non_public(ip.parse().unwrap()), kind, "{ip}");
        }
    }

    #[tokio::test]
    async fn url_rules() {
        let strict = SubscriptionSettings::default();
        let open = SubscriptionSettings {
            allow_private_endpoints: true,
        };
        // Columns: URL, refused under the defaults because, refused with private endpoints allowed
        // because (None: admitted).
        let table = [
            (
                "not a url",
                Some("not an absolute URL"),
                Some("not an absolute URL"),
            ),
            (
                "/relative/hook",
                Some("not an absolute URL"),
                Some("not an absolute URL"),
            ),
            (
                "ftp://1.1.1.1/hook",
                Some("must be an https URL"),
                Some("must be an https URL"),
            ),
            (
                "file:///etc/passwd",
                Some("must be an https URL"),
                Some("must be an https URL"),
            ),
            ("http://1.1.1.1/hook", Some("must use https"), None),
            (
                "https://user:pw@1.1.1.1/hook",
                Some("user name or password"),
                Some("user name"),
            ),
            (
                "https://user@1.1.1.1/hook",
                Some("user name or password"),
                Some("user name"),
            ),
            ("https://1.1.1.1/hook", None, None),
            ("https://1.1.1.1:8443/hook?x=1", None, None),
            // The URL parser's canonical forms of loopback spellings.
            (
                "https://2130706433/hook",
                Some("127.0.0.1 is loopback"),
                None,
            ),
            ("https://0x7f.1/hook", Some("127.0.0.1 is loopback"), None),
            ("https://[::ffff:7f00:1]/hook", Some("is loopback"), None),
        ];
        for (url, strict_refusal, open_refusal) in table {
            for (settings, refusal) in [(&strict, strict_refusal), (&open, open_refusal)] {
                match (vet(url, settings).await, refusal) {
                    (Ok(_), None) => {}
                    (Err(EndpointRefused(why)), Some(expected)) => {
                        assert!(why.contains(expected), "{url}: {why}")
                    }
                    (outcome, _) => panic!("{url} under {settings:?}: {outcome:?}"),
                }
            }
        }
        let vetted = vet("https://1.1.1.1:8443/hook", &strict).await.unwrap();
        assert_eq!(vetted.addrs, ["1.1.1.1:8443".parse().unwrap()]);
        let vetted = vet("http://[::1]/hook", &open).await.unwrap();
        assert_eq!(vetted.addrs, ["[::1]:80".parse().unwrap()]);
    }

    #[tokio::test]
    async fn the_resolver_answers_with_pinned_or_vetted_addresses() {
        let open = SubscriptionSettings {
            allow_private_endpoints: true,
        };
        let resolver = GuardedResolver::new(open.clone());
        let vetted = vet("http://localhost:8443/hook", &open).await.unwrap();
        assert!(vetted.addrs.iter().all(|a| a.port() == 8443));
        resolver.pin(&vetted);
        let addrs: Vec<SocketAddr> = resolver
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        // Port 0: the connector uses the port of the URL being requested, which may differ.
        let expected: Vec<SocketAddr> = vetted
            .addrs
            .iter()
            .map(|a| SocketAddr::new(a.ip(), 0))
            .collect();
        assert_eq!(addrs, expected);

        // Without a pin the resolver is the guard: a name resolving to loopback is refused.
        let strict = GuardedResolver::new(SubscriptionSettings::default());
        let refused = strict
            .resolve("localhost".parse().unwrap())
            .await
            .err()
            .expect("loopback refused at connect time");
        let refused = refused.downcast_ref::<EndpointRefused>().unwrap();
        assert!(refused.0.contains("is loopback"), "{refused}");
    }

    #[test]
    fn settings_read_from_toml() {
        let settings: SubscriptionSettings =
            toml::from_str("allow_private_endpoints = true").unwrap();
        assert!(settings.allow_private_endpoints);
        let settings: SubscriptionSettings = toml::from_str("").unwrap();
        assert!(!settings.allow_private_endpoints);
        assert!(toml::from_str::<SubscriptionSettings>("allow_private = true").is_err());
    }
}
