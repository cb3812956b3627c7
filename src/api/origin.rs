//! How clients reach Portico: the peer's address, the proxies trusted to say how the client
//! reached them, the public FHIR base URL derived per request (`PublicBase`, in the request's
//! extensions), and HSTS when Portico serves HTTPS itself.
//!
//! The base URL is `server.base_url` when set. Otherwise it is made from the request: the scheme
//! Portico serves (https under `server.tls_cert`) and the `Host` header; `Forwarded` (RFC 7239)
//! or `X-Forwarded-Proto`/`X-Forwarded-Host` replace them only when the peer is one of
//! `server.trusted_proxies`, since anyone else could send them to make Portico print links and
//! token audiences of their choosing.

use std::net::{IpAddr, SocketAddr};

use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::serve::IncomingStream;
use tokio::net::TcpListener;

use super::AppState;
use crate::auth::endpoints;

/// The address of the connection's peer (the client, or the proxy in front of it), put in every
/// request's extensions as `ConnectInfo<PeerAddr>` by `app::Application::run`, over TCP and TLS
/// (`app::tls` says how for its listener).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, TcpListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> PeerAddr {
        PeerAddr(*stream.remote_addr())
    }
}

/// The public FHIR base URL of this request (no trailing slash), e.g.
/// `https://fhir.example.org/fhir`; `auth::endpoints::absolute` makes the other URLs from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicBase(String);

impl PublicBase {
    pub fn fhir(&self) -> &str {
        &self.0
    }

    #[cfg(test)]
    pub fn for_tests(base: &str) -> PublicBase {
        PublicBase(base.to_owned())
    }
}

/// An IP address or a CIDR range of them (`10.0.0.0/8`, `fd00::/8`, `192.0.2.7`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyRange {
    network: IpAddr,
    prefix: u8,
}

impl ProxyRange {
    pub fn parse(text: &str) -> Result<ProxyRange, String> {
        let refuse =
            || format!("{text:?} is not an IP address or CIDR range (10.0.0.0/8, fd00::/8)");
        let (address, prefix) = match text.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text.trim(), None),
        };
        let network: IpAddr = address.parse().map_err(|_| refuse())?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(prefix) => match prefix.parse::<u8>() {
                Ok(n) if n <= bits && prefix.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(refuse()),
            },
        };
        Ok(ProxyRange { network, prefix })
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.network, address.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(network) & mask == u32::from(address) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(network) & mask == u128::from(address) & mask
            }
            _ => false,
        }
    }
}

/// The settings that decide the public base URL.
#[derive(Debug, Clone)]
pub struct Origin {
    configured: Option<String>,
    https: bool,
    trusted_proxies: Vec<ProxyRange>,
}

/// What a forwarding header may say about the client's view of the server.
#[derive(Debug, Default, PartialEq, Eq)]
struct Forwarded {
    proto: Option<String>,
    host: Option<String>,
    client: Option<IpAddr>,
}

/// An address as a forwarding header writes it: `192.0.2.7`, `192.0.2.7:4711`, `[2001:db8::1]`,
/// `[2001:db8::1]:4711` or a bare IPv6 address; `unknown` and obfuscated names are no address.
fn forwarded_address(text: &str) -> Option<IpAddr> {
    if let Ok(address) = text.parse::<IpAddr>() {
        return Some(address);
    }
    if let Some(rest) = text.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    text.rsplit_once(':')?.0.parse().ok()
}

/// A `Host` value that can stand in a URL: name or address and port, nothing else.
fn usable_host(host: &str) -> Option<&str> {
    let fine = !host.is_empty()
        && host.len() <= 255
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    fine.then_some(host)
}

fn usable_proto(proto: &str) -> Option<String> {
    let proto = proto.to_ascii_lowercase();
    matches!(proto.as_str(), "http" | "https").then_some(proto)
}

/// The first value of a comma-separated header: the one the proxy nearest the client wrote.
fn first_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let value = headers.get(name)?.to_str().ok()?;
    value.split(',').next().map(str::trim)
}

/// `proto` and `host` of the first element of an RFC 7239 `Forwarded` header.
fn rfc7239(headers: &HeaderMap) -> Option<Forwarded> {
    let element = first_value(headers, "forwarded")?;
    let mut forwarded = Forwarded::default();
    for pair in element.split(';') {
        let Some((name, value)) = pair.trim().split_once('=') else {
            continue;
        };
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        match name.trim().to_ascii_lowercase().as_str() {
            "proto" => forwarded.proto = usable_proto(value),
            "host" => forwarded.host = usable_host(value).map(str::to_owned),
            "for" => forwarded.client = forwarded_address(value),
            _ => {}
        }
    }
    Some(forwarded)
}

fn x_forwarded(headers: &HeaderMap) -> Forwarded {
    Forwarded {
        proto: first_value(headers, "x-forwarded-proto").and_then(usable_proto),
        host: first_value(headers, "x-forwarded-host")
            .and_then(usable_host)
            .map(str::to_owned),
        client: first_value(headers, "x-forwarded-for").and_then(forwarded_address),
    }
}

/// The address of the client a request came from: the peer, or, when the peer is a trusted
/// proxy, the client its forwarding header names. Rate limits and the audit trail use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress(pub Option<IpAddr>);

impl Origin {
    /// `base_url` wins when set; `https` is whether Portico itself serves TLS; the proxies are
    /// `server.trusted_proxies` entries, each checked.
    pub fn new(
        base_url: Option<String>,
        https: bool,
        trusted_proxies: &[String],
    ) -> Result<Origin, String> {
        let trusted_proxies = trusted_proxies
            .iter()
            .map(|text| ProxyRange::parse(text).map_err(|e| format!("server.trusted_proxies: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(Origin {
            configured: base_url.map(|base| base.trim_end_matches('/').to_owned()),
            https,
            trusted_proxies,
        })
    }

    /// Whether Portico serves HTTPS itself.
    pub fn https(&self) -> bool {
        self.https
    }

    fn trusts(&self, peer: Option<IpAddr>) -> bool {
        peer.is_some_and(|peer| {
            self.trusted_proxies
                .iter()
                .any(|range| range.contains(peer))
        })
    }

    /// The client's address for a request with these headers from `peer`.
    pub fn client_address(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> ClientAddress {
        if !self.trusts(peer) {
            return ClientAddress(peer);
        }
        let forwarded = rfc7239(headers).unwrap_or_else(|| x_forwarded(headers));
        ClientAddress(forwarded.client.or(peer))
    }

    /// The public FHIR base URL for a request with these headers and URI from `peer`.
    pub fn public_base(&self, headers: &HeaderMap, uri: &Uri, peer: Option<IpAddr>) -> PublicBase {
        if let Some(base) = &self.configured {
            return PublicBase(base.clone());
        }
        let forwarded = if self.trusts(peer) {
            rfc7239(headers).unwrap_or_else(|| x_forwarded(headers))
        } else {
            Forwarded::default()
        };
        let scheme = forwarded
            .proto
            .unwrap_or_else(|| if self.https { "https" } else { "http" }.to_owned());
        let host = forwarded
            .host
            .or_else(|| {
                headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .or_else(|| uri.authority().map(|a| a.as_str()))
                    .and_then(usable_host)
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "localhost".to_owned());
        PublicBase(format!("{scheme}://{host}{}", endpoints::FHIR))
    }
}

/// Middleware: puts the request's `PublicBase` and `ClientAddress` in its extensions.
pub async fn public_base(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<PeerAddr>>()
        .map(|ConnectInfo(PeerAddr(address))| address.ip());
    let base = state
        .origin
        .public_base(request.headers(), request.uri(), peer);
    let client = state.origin.client_address(request.headers(), peer);
    request.extensions_mut().insert(base);
    request.extensions_mut().insert(client);
    next.run(request).await
}

/// Middleware under TLS: tells browsers to use HTTPS only, for a year.
pub async fn strict_transport_security(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    response.headers_mut().insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_address_comes_from_a_forwarding_header_only_through_a_trusted_proxy() {
        let origin = Origin::new(None, false, &["10.0.0.0/8".to_owned()]).unwrap();
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let stranger: IpAddr = "203.0.113.9".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "198.51.100.7, 10.1.2.3".parse().unwrap());
        assert_eq!(
            origin.client_address(&headers, Some(proxy)),
            ClientAddress(Some("198.51.100.7".parse().unwrap()))
        );
        assert_eq!(
            origin.client_address(&headers, Some(stranger)),
            ClientAddress(Some(stranger))
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            "forwarded",
            "for=\"[2001:db8::7]:4711\";proto=https".parse().unwrap(),
        );
        assert_eq!(
            origin.client_address(&headers, Some(proxy)),
            ClientAddress(Some("2001:db8::7".parse().unwrap()))
        );
        headers.insert("forwarded", "for=unknown".parse().unwrap());
        assert_eq!(
            origin.client_address(&headers, Some(proxy)),
            ClientAddress(Some(proxy))
        );
    }

    #[test]
    fn proxy_ranges_parse_and_match() {
        let cases: &[(&str, &str, bool)] = &[
            ("10.0.0.0/8", "10.200.3.4", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("192.0.2.7", "192.0.2.7", true),
            ("192.0.2.7", "192.0.2.8", false),
            ("192.0.2.7/32", "192.0.2.7", true),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("0.0.0.0/0", "::1", false),
            ("fd00::/8", "fd12::1", true),
            ("fd00::/8", "fe80::1", false),
            ("::1", "::1", true),
            // A v4 peer on a dual-stack socket arrives v4-mapped.
            ("127.0.0.1", "::ffff:127.0.0.1", true),
            ("::/0", "2001:db8::1", true),
        ];
        for (range, address, inside) in cases {
            let parsed = ProxyRange::parse(range).unwrap();
            assert_eq!(
                parsed.contains(address.parse().unwrap()),
                *inside,
                "{address} in {range}"
            );
        }
        for bad in [
            "",
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0/8",
            "example.org",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "1.2.3.4/8/8",
        ] {
            assert!(ProxyRange::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    /// `(headers, peer, expected base)` for a plain-HTTP server that trusts 10.0.0.0/8.
    #[test]
    fn forwarding_headers_count_only_from_trusted_proxies() {
        let origin = Origin::new(None, false, &["10.0.0.0/8".into()]).unwrap();
        let uri = Uri::from_static("/fhir/metadata");
        let proxy = Some("10.1.2.3".parse().unwrap());
        let stranger = Some("203.0.113.5".parse().unwrap());
        type Case<'a> = (&'a [(&'static str, &'a str)], Option<IpAddr>, &'a str);
        let cases: &[Case] = &[
            (
                &[("host", "portico:8080")],
                stranger,
                "http://portico:8080/fhir",
            ),
            (
                &[("host", "portico:8080")],
                proxy,
                "http://portico:8080/fhir",
            ),
            (
                &[
                    ("host", "portico:8080"),
                    ("x-forwarded-proto", "https"),
                    ("x-forwarded-host", "fhir.example.org"),
                ],
                proxy,
                "https://fhir.example.org/fhir",
            ),
            (
                &[
                    ("host", "portico:8080"),
                    ("x-forwarded-proto", "https"),
                    ("x-forwarded-host", "fhir.example.org"),
                ],
                stranger,
                "http://portico:8080/fhir",
            ),
            (
                &[
                    ("host", "portico:8080"),
                    ("x-forwarded-proto", "https"),
                    ("x-forwarded-host", "evil.example"),
                ],
                None,
                "http://portico:8080/fhir",
            ),
            // The nearest proxy's value comes first.
            (
                &[
                    ("host", "p"),
                    ("x-forwarded-proto", "https, http"),
                    ("x-forwarded-host", "a.example, b.example"),
                ],
                proxy,
                "https://a.example/fhir",
            ),
            (
                &[
                    ("host", "p"),
                    (
                        "forwarded",
                        "for=198.51.100.1;proto=https;host=\"fhir.example.org:8443\", for=10.0.0.2",
                    ),
                ],
                proxy,
                "https://fhir.example.org:8443/fhir",
            ),
            // RFC 7239 wins over the X- headers when both are present.
            (
                &[
                    ("host", "p"),
                    ("forwarded", "proto=https;host=a.example"),
                    ("x-forwarded-host", "b.example"),
                ],
                proxy,
                "https://a.example/fhir",
            ),
            (
                &[("host", "p"), ("forwarded", "proto=https;host=a.example")],
                stranger,
                "http://p/fhir",
            ),
            // Values that cannot stand in a URL are ignored.
            (
                &[
                    ("host", "p"),
                    ("x-forwarded-proto", "javascript"),
                    ("x-forwarded-host", "a.example/evil"),
                ],
                proxy,
                "http://p/fhir",
            ),
            (&[("host", "bad host")], stranger, "http://localhost/fhir"),
            (&[], stranger, "http://localhost/fhir"),
        ];
        for (pairs, peer, expected) in cases {
            let base = origin.public_base(&headers(pairs), &uri, *peer);
            assert_eq!(base.fhir(), *expected, "{pairs:?} from {peer:?}");
        }
    }

    #[test]
    fn configured_base_wins_and_tls_makes_https() {
        let trusting = ["0.0.0.0/0".to_owned()];
        let forwarded = headers(&[
            ("host", "p"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "x.example"),
        ]);
        let uri = Uri::from_static("/fhir/metadata");
        let peer = Some("10.0.0.1".parse().unwrap());
        let configured = Origin::new(
            Some("https://fhir.example.org/fhir/".into()),
            false,
            &trusting,
        )
        .unwrap();
        assert_eq!(
            configured.public_base(&forwarded, &uri, peer).fhir(),
            "https://fhir.example.org/fhir"
        );
        let tls = Origin::new(None, true, &[]).unwrap();
        assert_eq!(
            tls.public_base(&headers(&[("host", "portico:8443")]), &uri, peer)
                .fhir(),
            "https://portico:8443/fhir"
        );
        // HTTP/2 carries the host in the URI's authority.
        assert_eq!(
            tls.public_base(
                &HeaderMap::new(),
                &Uri::from_static("https://h2.example/fhir"),
                peer
            )
            .fhir(),
            "https://h2.example/fhir"
        );
        assert!(Origin::new(None, false, &["10.0.0.0/40".into()]).is_err());
    }
}
