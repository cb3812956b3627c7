//! SMART discovery: `/.well-known/smart-configuration` at the root and under the FHIR base
//! (SM-01..07), and the CapabilityStatement's security part (R4-23).

use portico::auth::discovery::{CAPABILITIES, SCOPES_SUPPORTED};
use portico::auth::scope::parse_scopes;
use serde_json::Value as Json;

use crate::support::{Backend, TestApp, fresh_database, settings, start};

/// Portico over an OpenEMR database that is never read: discovery and metadata need none.
async fn portico() -> TestApp {
    let db_url = fresh_database(Backend::Sqlite, "smart_discovery").await;
    let base = start(&settings(&db_url, 5000)).await;
    TestApp::at(base, db_url)
}

fn strings(value: &Json) -> Vec<&str> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_str().expect("a string"))
        .collect()
}

#[tokio::test]
async fn smart_configuration_is_public_json_with_absolute_urls() {
    let app = portico().await;
    let root = app.base.trim_end_matches("/fhir").to_owned();
    let locations = [
        format!("{root}/.well-known/smart-configuration"),
        format!("{}/.well-known/smart-configuration", app.base),
    ];
    let mut documents = Vec::new();
    for url in &locations {
        // JSON whatever Accept says, CORS open, no token (SM-01).
        for accept in [
            None,
            Some("application/fhir+xml"),
            Some("text/html"),
            Some("*/*"),
        ] {
            let mut request = app.client.get(url).header("Origin", "https://app.example");
            if let Some(accept) = accept {
                request = request.header("Accept", accept);
            }
            let reply = app.send(request).await;
            assert_eq!(reply.status, 200, "{url} with Accept {accept:?}");
            assert_eq!(
                reply.header("content-type").as_deref(),
                Some("application/json"),
                "{url} with Accept {accept:?}"
            );
            assert_eq!(
                reply.header("access-control-allow-origin").as_deref(),
                Some("*")
            );
            documents.push(reply.json());
        }
    }
    assert!(documents.windows(2).all(|pair| pair[0] == pair[1]));
    let document = &documents[0];

    let endpoints = [
        ("issuer", "/auth"),
        ("jwks_uri", "/auth/jwks"),
        ("authorization_endpoint", "/auth/authorize"),
        ("token_endpoint", "/auth/token"),
        ("introspection_endpoint", "/auth/introspect"),
        ("revocation_endpoint", "/auth/revoke"),
    ];
    for (field, path) in endpoints {
        // Absolute, on the server the client reached (SM-05).
        assert_eq!(document[field], format!("{root}{path}"), "{field}");
    }
    assert!(root.starts_with("http://127.0.0.1:"));
    assert_eq!(
        strings(&document["grant_types_supported"]),
        ["authorization_code", "client_credentials", "refresh_token"]
    );
    assert_eq!(
        strings(&document["token_endpoint_auth_methods_supported"]),
        [
            "private_key_jwt",
            "client_secret_basic",
            "client_secret_post"
        ]
    );
    assert_eq!(
        strings(&document["token_endpoint_auth_signing_alg_values_supported"]),
        ["RS384", "ES384"]
    );
    assert_eq!(strings(&document["response_types_supported"]), ["code"]);
    // S256 only, never plain (SM-02).
    assert_eq!(
        strings(&document["code_challenge_methods_supported"]),
        ["S256"]
    );
    let capabilities = strings(&document["capabilities"]);
    assert_eq!(capabilities, CAPABILITIES);
    // The two capability sets US Core asks for (SM-06, SM-07), less context-ehr-encounter.
    for needed in [
        "launch-standalone",
        "client-public",
        "context-standalone-patient",
        "permission-patient",
        "launch-ehr",
        "context-ehr-patient",
        "permission-user",
        "client-confidential-asymmetric",
        "sso-openid-connect",
        "permission-v1",
        "permission-v2",
    ] {
        assert!(capabilities.contains(&needed), "{needed}");
    }
    // Every advertised scope is one the scope parser takes (SM-04).
    let scopes = strings(&document["scopes_supported"]);
    assert_eq!(scopes, SCOPES_SUPPORTED);
    assert_eq!(parse_scopes(&scopes.join(" ")).unwrap().len(), scopes.len());

    // Other methods: 405 like every path.
    let post = app.send(app.client.post(&locations[0]).body("{}")).await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow").as_deref(), Some("GET, HEAD"));
}

#[tokio::test]
async fn capability_statement_names_smart_and_its_endpoints() {
    let app = portico().await;
    let root = app.base.trim_end_matches("/fhir").to_owned();
    // get_fhir parses the statement strictly as R4.
    let statement = app.get_fhir("metadata", 200).await;
    let rest = &statement["rest"][0];
    let keys: Vec<&String> = rest.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["mode", "documentation", "security", "resource", "operation"]
    );
    // Bulk Data's system-level kick-off is the one server-wide operation.
    let operations: Vec<&str> = rest["operation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(operations, ["export"]);
    let security = &rest["security"];
    assert_eq!(security["cors"], true);
    assert_eq!(
        security["service"][0]["coding"][0]["system"],
        "http://terminology.hl7.org/CodeSystem/restful-security-service"
    );
    assert_eq!(security["service"][0]["coding"][0]["code"], "SMART-on-FHIR");
    let oauth = &security["extension"][0];
    assert_eq!(
        oauth["url"],
        "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    );
    let uris: Vec<(&str, &str)> = oauth["extension"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["url"].as_str().unwrap(), e["valueUri"].as_str().unwrap()))
        .collect();
    let expected = [
        ("authorize", format!("{root}/auth/authorize")),
        ("token", format!("{root}/auth/token")),
        ("introspect", format!("{root}/auth/introspect")),
        ("revoke", format!("{root}/auth/revoke")),
    ];
    let expected: Vec<(&str, &str)> = expected.iter().map(|(n, u)| (*n, u.as_str())).collect();
    assert_eq!(uris, expected);

    // The same endpoints as the discovery document.
    let discovery = app
        .get(&format!("{root}/.well-known/smart-configuration"))
        .await
        .json();
    assert_eq!(discovery["authorization_endpoint"], uris[0].1);
    assert_eq!(discovery["token_endpoint"], uris[1].1);

    // Valid R4 in XML too (fhirbolt orders and renders the security part).
    let xml = app.get("metadata?_format=xml").await;
    assert_eq!(xml.status, 200);
    let text = String::from_utf8(xml.body).unwrap();
    assert!(text.contains("<code value=\"SMART-on-FHIR\"/>"), "{text}");
    assert!(text.contains("oauth-uris"));
}
