//! Where the authorization server answers: its fixed paths, and their absolute URLs derived from
//! the public FHIR base URL (`api::PublicBase`). The discovery document, the CapabilityStatement
//! and the router all take them from here.

/// The FHIR base path on Portico itself.
pub const FHIR: &str = "/fhir";
/// The issuer of Portico's tokens, relative to the server root.
pub const ISSUER: &str = "/auth";
pub const AUTHORIZE: &str = "/auth/authorize";
/// The sign-in, patient picker and consent pages of a pending authorization.
pub const LOGIN: &str = "/auth/login";
pub const PICK: &str = "/auth/pick";
pub const CONSENT: &str = "/auth/consent";
/// OpenID Connect discovery for the issuer (`{issuer}/.well-known/openid-configuration`).
pub const OPENID_CONFIGURATION: &str = "/auth/.well-known/openid-configuration";
pub const TOKEN: &str = "/auth/token";
pub const INTROSPECT: &str = "/auth/introspect";
pub const REVOKE: &str = "/auth/revoke";
pub const JWKS: &str = "/auth/jwks";
/// EHR launch: creates a launch context and returns the opaque `launch` value.
pub const LAUNCH: &str = "/auth/launch";
/// SMART discovery, at the server root and under the FHIR base (SM-01).
pub const SMART_CONFIGURATION: &str = "/.well-known/smart-configuration";

/// The public root Portico is reached at: the FHIR base without its final `/fhir` (a proxy that
/// serves Portico under `/pms/fhir` serves its `/auth` under `/pms/auth`), else the base's origin.
pub fn server_root(fhir_base: &str) -> &str {
    let base = fhir_base.trim_end_matches('/');
    if let Some(root) = base.strip_suffix(FHIR) {
        return root;
    }
    let after_scheme = base.find("://").map(|at| at + 3).unwrap_or(0);
    match base[after_scheme..].find('/') {
        Some(path) => &base[..after_scheme + path],
        None => base,
    }
}

/// The absolute URL of one of the paths above, for the server whose FHIR base is `fhir_base`.
pub fn absolute(fhir_base: &str, path: &str) -> String {
    format!("{}{path}", server_root(fhir_base))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_made_from_the_fhir_base() {
        let cases = [
            ("http://127.0.0.1:8080/fhir", "http://127.0.0.1:8080"),
            ("https://fhir.example.org/fhir/", "https://fhir.example.org"),
            ("https://example.org/pms/fhir", "https://example.org/pms"),
            ("https://example.org/r4", "https://example.org"),
            ("https://example.org", "https://example.org"),
        ];
        for (base, root) in cases {
            assert_eq!(server_root(base), root, "{base}");
            assert_eq!(absolute(base, TOKEN), format!("{root}/auth/token"));
        }
    }
}
