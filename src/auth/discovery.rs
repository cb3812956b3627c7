//! The SMART configuration document (`/.well-known/smart-configuration`, SMART App Launch 2.x
//! conformance; SM-01..07) and the CapabilityStatement's security part that points SMART 1.0
//! clients at the same endpoints (R4-23).

use serde_json::{Value as Json, json};

use super::endpoints::{self, absolute};

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

/// The document for the server whose public FHIR base URL is `fhir_base`; every URL absolute
/// (SM-05).
pub fn smart_configuration(fhir_base: &str) -> Json {
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

/// The `oauth-uris` extension SMART 1.0 clients read the endpoints from.
pub const OAUTH_URIS: &str =
    "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris";

/// `CapabilityStatement.rest.security` for the server at `fhir_base`: SMART-on-FHIR, CORS, and
/// the endpoints in the `oauth-uris` extension (R4-23).
pub fn capability_security(fhir_base: &str) -> Json {
    let uri = |name: &str, path: &str| json!({"url": name, "valueUri": absolute(fhir_base, path)});
    json!({
        "extension": [{
            "url": OAUTH_URIS,
            "extension": [
                uri("authorize", endpoints::AUTHORIZE),
                uri("token", endpoints::TOKEN),
                uri("introspect", endpoints::INTROSPECT),
                uri("revoke", endpoints::REVOKE),
            ]
        }],
        "cors": true,
        "service": [{
            "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                "code": "SMART-on-FHIR",
                "display": "SMART-on-FHIR"
            }],
            "text": "OAuth2 using the SMART-on-FHIR profile"
        }],
        "description": "SMART App Launch 2.x and Backend Services: bearer tokens from this server's authorization server; endpoints at .well-known/smart-configuration under the FHIR base."
    })
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
