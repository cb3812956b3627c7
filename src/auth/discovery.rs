//! The SMART configuration document (`/.well-known/smart-configuration`, SMART App Launch 2.x
//! conformance; SM-01..07) and the CapabilityStatement's security part that points SMART 1.0
//! clients at the same endpoints (R4-23): Portico's own authorization server, or in external
//! identity provider mode the IdP's.

use serde_json::{Value as Json, json};

use super::endpoints::{self, absolute};
use super::external::ExternalIdp;

/// What Portico's authorization server does (SM-06): standalone and EHR launch with a patient
/// in context, public and confidential clients (secrets and signed JWT assertions), v1 and v2
/// scopes, offline access, OpenID Connect sign-on, and authorize by POST.
pub const CAPABILITIES: &[&str] = &[
    "launch-ehr",
    "launch-standalone",
    "client-public",
    "client-confidential-symmetric",
    "client-confidential-asymmetric",
    "context-ehr-patient",
    "context-standalone-patient",
    "permission-v1",
    "permission-v2",
    "permission-patient",
    "permission-user",
    "permission-offline",
    "sso-openid-connect",
    "authorize-post",
];

/// The scopes a client may ask for, every one of them honoured (SM-04): Portico is read-only, so
/// resource scopes are read and search, in v2 and in v1 form.
pub const SCOPES_SUPPORTED: &[&str] = &[
    "openid",
    "fhirUser",
    "profile",
    "launch",
    "launch/patient",
    "launch/encounter",
    "offline_access",
    "online_access",
    "patient/*.rs",
    "user/*.rs",
    "system/*.rs",
    "patient/*.read",
    "user/*.read",
    "system/*.read",
];

/// What the resource server itself honours when an external IdP issues the tokens: the
/// authorization server's capabilities (launch, client types, sign-on) are the IdP's to declare.
pub const EXTERNAL_CAPABILITIES: &[&str] = &[
    "permission-v1",
    "permission-v2",
    "permission-patient",
    "permission-user",
];

/// The document for the server whose public FHIR base URL is `fhir_base`, whose tokens come from
/// `external` when set; every URL absolute (SM-05).
pub fn smart_configuration(fhir_base: &str, external: Option<&ExternalIdp>) -> Json {
    if let Some(idp) = external {
        return external_configuration(idp);
    }
    json!({
        "issuer": absolute(fhir_base, endpoints::ISSUER),
        "jwks_uri": absolute(fhir_base, endpoints::JWKS),
        "authorization_endpoint": absolute(fhir_base, endpoints::AUTHORIZE),
        "token_endpoint": absolute(fhir_base, endpoints::TOKEN),
        "introspection_endpoint": absolute(fhir_base, endpoints::INTROSPECT),
        "revocation_endpoint": absolute(fhir_base, endpoints::REVOKE),
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
        "token_endpoint_auth_methods_supported": [
            "private_key_jwt",
            "client_secret_basic",
            "client_secret_post"
        ],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "scopes_supported": SCOPES_SUPPORTED,
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "capabilities": CAPABILITIES,
    })
}

/// The document in external identity provider mode: the IdP's issuer, keys and configured
/// endpoints, the resource scopes Portico enforces, and `EXTERNAL_CAPABILITIES`. What only the IdP
/// knows (grant types, client authentication, PKCE) is not claimed here.
fn external_configuration(idp: &ExternalIdp) -> Json {
    let resource_scopes: Vec<&str> = SCOPES_SUPPORTED
        .iter()
        .copied()
        .filter(|scope| scope.contains('/') && !scope.starts_with("launch"))
        .collect();
    let mut document = json!({
        "issuer": idp.issuer,
        "jwks_uri": idp.jwks_url,
        "scopes_supported": resource_scopes,
        "capabilities": EXTERNAL_CAPABILITIES,
    });
    if let Some(url) = &idp.authorization_endpoint {
        document["authorization_endpoint"] = json!(url);
    }
    if let Some(url) = &idp.token_endpoint {
        document["token_endpoint"] = json!(url);
    }
    document
}

/// The `oauth-uris` extension SMART 1.0 clients read the endpoints from.
pub const OAUTH_URIS: &str =
    "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris";

/// `CapabilityStatement.rest.security` for the server at `fhir_base` (tokens from `external`
/// when set): SMART-on-FHIR, CORS, and the endpoints in the `oauth-uris` extension (R4-23).
pub fn capability_security(fhir_base: &str, external: Option<&ExternalIdp>) -> Json {
    let uri = |name: &str, url: &str| json!({"url": name, "valueUri": url});
    let (uris, description) = match external {
        None => (
            vec![
                uri("authorize", &absolute(fhir_base, endpoints::AUTHORIZE)),
                uri("token", &absolute(fhir_base, endpoints::TOKEN)),
                uri("introspect", &absolute(fhir_base, endpoints::INTROSPECT)),
                uri("revoke", &absolute(fhir_base, endpoints::REVOKE)),
            ],
            "SMART App Launch 2.x and Backend Services: bearer tokens from this server's authorization server; endpoints at .well-known/smart-configuration under the FHIR base.".to_owned(),
        ),
        Some(idp) => (
            [
                ("authorize", &idp.authorization_endpoint),
                ("token", &idp.token_endpoint),
            ]
            .into_iter()
            .filter_map(|(name, url)| url.as_deref().map(|url| uri(name, url)))
            .collect(),
            format!(
                "SMART on FHIR: bearer tokens from the identity provider {}; its endpoints at .well-known/smart-configuration under the FHIR base.",
                idp.issuer
            ),
        ),
    };
    let no_endpoints = uris.is_empty();
    let mut security = json!({
        "extension": [{ "url": OAUTH_URIS, "extension": uris }],
        "cors": true,
        "service": [{
            "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                "code": "SMART-on-FHIR",
                "display": "SMART-on-FHIR"
            }],
            "text": "OAuth2 using the SMART-on-FHIR profile"
        }],
        "description": description,
    });
    // FHIR forbids an extension without a value or sub-extensions (and empty arrays).
    if no_endpoints && let Some(fields) = security.as_object_mut() {
        fields.shift_remove("extension");
    }
    security
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::scope::parse_scopes;

    #[test]
    fn advertised_scopes_are_scopes_the_parser_accepts() {
        let all = SCOPES_SUPPORTED.join(" ");
        let parsed = parse_scopes(&all).expect("every advertised scope parses");
        assert_eq!(parsed.len(), SCOPES_SUPPORTED.len());
    }
}
