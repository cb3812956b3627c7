//! The token endpoint over HTTP: client_credentials driven by the `oauth2` crate (shared secret)
//! and by raw form posts (signed assertions), the no-store headers, and the OAuth errors of
//! security-reliability.md §2.3 (8, 9, 15, 21, 27) as a client sees them.

use oauth2::basic::BasicClient;
use oauth2::{AuthUrl, ClientId, ClientSecret, Scope as OAuthScope, TokenResponse, TokenUrl};
use portico::state::StateStore;
use portico::state::clients::{ClientKind, NewClient};
use serde_json::Value as Json;

use crate::auth_keys::{ClientKey, jwks};
use crate::support;

struct AuthApp {
    base: String,
    store: StateStore,
}

impl AuthApp {
    /// Runs `body` against a server on each state store backend (SQLite, PostgreSQL).
    async fn each(test: &str, body: impl AsyncFn(AuthApp)) {
        support::on_each_state_store(test, async |base: String| {
            let store = support::token_service(&base).store().clone();
            body(AuthApp { base, store }).await
        })
        .await;
    }

    fn root(&self) -> String {
        self.base.trim_end_matches("/fhir").to_owned()
    }

    fn token_url(&self) -> String {
        format!("{}/auth/token", self.root())
    }

    async fn post_form(
        &self,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> (u16, reqwest::header::HeaderMap, Json) {
        let mut request = reqwest::Client::new().post(self.token_url()).form(form);
        if let Some((id, secret)) = basic {
            request = request.basic_auth(id, Some(secret));
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.json().await.unwrap_or(Json::Null);
        (status, headers, body)
    }
}

#[tokio::test]
async fn client_credentials_with_a_shared_secret_through_the_oauth2_crate() {
    AuthApp::each("token_secret", async |app: AuthApp| {
        let (client, secret) = app
            .store
            .add_client(NewClient {
                client_id: Some("billing".into()),
                name: "Billing".into(),
                kind: Some(ClientKind::Symmetric),
                allowed_scopes: "system/Claim.rs system/Coverage.rs".into(),
                ..NewClient::default()
            })
            .await
            .unwrap();
        let oauth = BasicClient::new(ClientId::new(client.client_id.clone()))
            .set_client_secret(ClientSecret::new(secret.clone().unwrap()))
            .set_auth_uri(AuthUrl::new(format!("{}/auth/authorize", app.root())).unwrap())
            .set_token_uri(TokenUrl::new(app.token_url()).unwrap());
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let token = oauth
            .exchange_client_credentials()
            .add_scope(OAuthScope::new("system/Claim.rs".into()))
            .add_scope(OAuthScope::new("system/Patient.rs".into()))
            .request_async(&http)
            .await
            .expect("a token for a registered secret");
        // Patient.rs is not the client's to have: the grant is narrower than the request (SM-33).
        let granted: Vec<String> = token
            .scopes()
            .unwrap()
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(granted, ["system/Claim.rs"]);
        assert!(token.expires_in().unwrap().as_secs() <= 300);
        assert!(
            token.refresh_token().is_none(),
            "Backend Services get no refresh token"
        );

        // The same through a raw post: the headers SMART requires.
        let (status, headers, body) = app
            .post_form(
                &[
                    ("grant_type", "client_credentials"),
                    ("scope", "system/Coverage.rs"),
                ],
                Some(("billing", secret.as_deref().unwrap())),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(headers["cache-control"], "no-store");
        assert_eq!(headers["pragma"], "no-cache");
        assert_eq!(body["token_type"], "bearer");
        assert_eq!(body["scope"], "system/Coverage.rs");

        // The JWKS verifies what was issued.
        let jwks: Json = reqwest::get(format!("{}/auth/jwks", app.root()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let kid = jsonwebtoken::decode_header(token.access_token().secret())
            .unwrap()
            .kid
            .unwrap();
        assert!(
            jwks["keys"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kid"] == kid.as_str() && k.get("d").is_none())
        );
    })
    .await;
}

#[tokio::test]
async fn backend_services_assertions_and_token_errors() {
    AuthApp::each("token_backend", async |app: AuthApp| {
        let rs = ClientKey::rs384("rs");
        let es = ClientKey::es384("es");
        app.store
            .add_client(NewClient {
                client_id: Some("ehr".into()),
                name: "EHR backend".into(),
                kind: Some(ClientKind::Asymmetric),
                jwks: Some(jwks(&[&rs, &es])),
                allowed_scopes: "system/*.rs".into(),
                ..NewClient::default()
            })
            .await
            .unwrap();
        app.store
            .add_client(NewClient {
                client_id: Some("spa".into()),
                name: "Browser app".into(),
                ..NewClient::default()
            })
            .await
            .unwrap();
        let endpoint = app.token_url();
        for key in [&rs, &es] {
            let assertion = key.assertion("ehr", &endpoint, |_, _| {});
            let (status, headers, body) = app
                .post_form(
                    &[
                        ("grant_type", "client_credentials"),
                        ("scope", "system/Patient.rs system/Observation.rs"),
                        (
                            "client_assertion_type",
                            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                        ),
                        ("client_assertion", &assertion),
                    ],
                    None,
                )
                .await;
            assert_eq!(status, 200, "{:?}: {body}", key.alg);
            assert_eq!(headers["cache-control"], "no-store");
            assert_eq!(body["scope"], "system/Patient.rs system/Observation.rs");
            assert!(body["expires_in"].as_i64().unwrap() <= 300);
            assert!(body.get("refresh_token").is_none());
            // Replayed: the same assertion a second time.
            let (status, _, body) = app
                .post_form(
                    &[
                        ("grant_type", "client_credentials"),
                        ("scope", "system/Patient.rs"),
                        (
                            "client_assertion_type",
                            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                        ),
                        ("client_assertion", &assertion),
                    ],
                    None,
                )
                .await;
            assert_eq!(
                (status, body["error"].as_str()),
                (400, Some("invalid_client")),
                "{body}"
            );
        }

        let fresh = || rs.assertion("ehr", &endpoint, |_, _| {});
        let assertion_form = |grant_type: &'static str,
                              scope: &'static str,
                              assertion_type: &'static str,
                              assertion: String| {
            vec![
                ("grant_type", grant_type.to_owned()),
                ("scope", scope.to_owned()),
                ("client_assertion_type", assertion_type.to_owned()),
                ("client_assertion", assertion),
            ]
        };
        let bearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
        /// A refused request: name, form, Basic credentials, status, OAuth error.
        type Case<'a> = (
            &'a str,
            Vec<(&'a str, String)>,
            Option<(&'a str, &'a str)>,
            u16,
            &'a str,
        );
        let cases: Vec<Case> = vec![
            (
                "password grant",
                vec![
                    ("grant_type", "password".into()),
                    ("username", "u".into()),
                    ("password", "p".into()),
                ],
                None,
                400,
                "unsupported_grant_type",
            ),
            (
                "implicit-style grant",
                vec![("grant_type", "token".into())],
                None,
                400,
                "unsupported_grant_type",
            ),
            (
                "no grant_type",
                vec![("scope", "system/*.rs".into())],
                None,
                400,
                "invalid_request",
            ),
            (
                "wrong assertion type",
                assertion_form(
                    "client_credentials",
                    "system/*.rs",
                    "not_an_assertion_type",
                    fresh(),
                ),
                None,
                400,
                "invalid_client",
            ),
            (
                "scope wholly outside the client's",
                assertion_form("client_credentials", "system/Patient.cud", bearer, fresh()),
                None,
                400,
                "invalid_scope",
            ),
            (
                "patient scope without a patient",
                assertion_form("client_credentials", "patient/*.rs", bearer, fresh()),
                None,
                400,
                "invalid_scope",
            ),
            (
                "malformed scope",
                assertion_form("client_credentials", "system/Patient.sr", bearer, fresh()),
                None,
                400,
                "invalid_scope",
            ),
            (
                "no scope",
                assertion_form("client_credentials", "", bearer, fresh()),
                None,
                400,
                "invalid_scope",
            ),
            (
                "unknown client",
                vec![
                    ("grant_type", "client_credentials".into()),
                    ("scope", "system/*.rs".into()),
                ],
                Some(("nobody", "secret-secret-secret-secret-secret")),
                401,
                "invalid_client",
            ),
            (
                "public client",
                vec![
                    ("grant_type", "client_credentials".into()),
                    ("scope", "system/*.rs".into()),
                    ("client_id", "spa".into()),
                ],
                None,
                400,
                "unauthorized_client",
            ),
            (
                "repeated parameter",
                vec![
                    ("grant_type", "client_credentials".into()),
                    ("grant_type", "client_credentials".into()),
                ],
                None,
                400,
                "invalid_request",
            ),
        ];
        for (name, form, basic, status, error) in cases {
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (got, headers, body) = app.post_form(&form, basic).await;
            assert_eq!(
                (got, body["error"].as_str()),
                (status, Some(error)),
                "{name}: {body}"
            );
            assert_eq!(headers["cache-control"], "no-store", "{name}");
            if got == 401 {
                assert!(headers.get("www-authenticate").is_some(), "{name}");
            }
        }

        // Not a form at all.
        let response = reqwest::Client::new()
            .post(&endpoint)
            .json(&serde_json::json!({"grant_type": "client_credentials"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400);
        let body: Json = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request");
    })
    .await;
}

#[tokio::test]
async fn introspection_and_revocation() {
    AuthApp::each("token_introspect", async |app: AuthApp| {
        let mut secrets = Vec::new();
        for id in ["owner", "other"] {
            let (_, secret) = app
                .store
                .add_client(NewClient {
                    client_id: Some(id.into()),
                    name: id.into(),
                    kind: Some(ClientKind::Symmetric),
                    allowed_scopes: "system/*.rs".into(),
                    ..NewClient::default()
                })
                .await
                .unwrap();
            secrets.push(secret.unwrap());
        }
        let (owner_secret, other_secret) = (secrets[0].as_str(), secrets[1].as_str());
        let issue = || async {
            let (status, _, body) = app
                .post_form(
                    &[
                        ("grant_type", "client_credentials"),
                        ("scope", "system/Patient.rs"),
                    ],
                    Some(("owner", owner_secret)),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            body["access_token"].as_str().unwrap().to_owned()
        };
        let token = issue().await;
        let introspect =
            |token: String, basic: Option<(&'static str, String)>, bearer: Option<String>| {
                let url = format!("{}/auth/introspect", app.root());
                async move {
                    let mut request = reqwest::Client::new().post(url).form(&[("token", token)]);
                    if let Some((id, secret)) = basic {
                        request = request.basic_auth(id, Some(secret));
                    }
                    if let Some(bearer) = bearer {
                        request = request.bearer_auth(bearer);
                    }
                    let response = request.send().await.unwrap();
                    let status = response.status().as_u16();
                    assert_eq!(response.headers()["cache-control"], "no-store");
                    (status, response.json::<Json>().await.unwrap())
                }
            };
        // Active, with what SMART requires (SM-40), asked by a client or by a bearer token.
        let (status, body) = introspect(
            token.clone(),
            Some(("other", other_secret.to_owned())),
            None,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(body["active"], true);
        assert_eq!(body["scope"], "system/Patient.rs");
        assert_eq!(body["client_id"], "owner");
        assert!(body["exp"].as_i64().unwrap() > portico::state::now());
        let (_, by_bearer) = introspect(token.clone(), None, Some(token.clone())).await;
        assert_eq!(by_bearer["active"], true);
        // Garbage is inactive, not an error; an unauthenticated caller is refused.
        let (status, body) = introspect(
            "not-a-token".into(),
            Some(("other", other_secret.to_owned())),
            None,
        )
        .await;
        assert_eq!((status, body), (200, serde_json::json!({"active": false})));
        let (status, body) = introspect(token.clone(), None, None).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_client"))
        );
        let (status, _) = introspect(token.clone(), Some(("other", "wrong".repeat(8))), None).await;
        assert_eq!(status, 401);

        // Revocation: another client's attempt changes nothing; the owner's revokes at once.
        let revoke = |basic: (&'static str, &'static str)| {
            let url = format!("{}/auth/revoke", app.root());
            let token = token.clone();
            let (id, secret) = (
                basic.0,
                if basic.0 == "owner" {
                    owner_secret.to_owned()
                } else {
                    other_secret.to_owned()
                },
            );
            async move {
                reqwest::Client::new()
                    .post(url)
                    .basic_auth(id, Some(secret))
                    .form(&[("token", token), ("token_type_hint", "access_token".into())])
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        };
        let fhir = |token: String| {
            let url = format!("{}/Patient?_count=1", app.base);
            async move {
                reqwest::Client::new()
                    .get(url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        };
        assert_eq!(fhir(token.clone()).await, 200);
        assert_eq!(revoke(("other", "")).await, 200);
        assert_eq!(
            fhir(token.clone()).await,
            200,
            "another client revoked the token"
        );
        assert_eq!(revoke(("owner", "")).await, 200);
        assert_eq!(fhir(token.clone()).await, 401);
        let (_, body) = introspect(
            token.clone(),
            Some(("other", other_secret.to_owned())),
            None,
        )
        .await;
        assert_eq!(body["active"], false);
        // Revoking again, or revoking garbage, still answers 200.
        assert_eq!(revoke(("owner", "")).await, 200);
        let fresh = issue().await;
        assert_eq!(fhir(fresh).await, 200, "revocation reached only that token");
    })
    .await;
}
