//! Portico's access tokens and client authentication against the real state store (SQLite and
//! PostgreSQL): the JWT negatives of security-reliability.md §2.3 (28-33) and the Backend Services
//! negatives (21-26), each asserted on the reason given.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portico::auth::client_auth::{self, JWT_BEARER_ASSERTION, JwksFetcher, PresentedCredentials};
use portico::auth::tokens::{Grant, TokenRejection, TokenService};
use portico::state::StateStore;
use portico::state::clients::{ClientKind, NewClient};
use serde_json::{Value as Json, json};

use crate::auth_keys::{ClientKey, jwks};
use crate::support::state_stores;

const BASE: &str = "http://127.0.0.1:8080/fhir";
const ISSUER: &str = "http://127.0.0.1:8080/auth";
const TOKEN_ENDPOINT: &str = "http://127.0.0.1:8080/auth/token";

fn grant() -> Grant {
    Grant {
        client_id: "backend".into(),
        subject: "backend".into(),
        scope: "system/*.rs".into(),
        ..Grant::default()
    }
}

/// Signs `claims` with the store's current key under `header` edits: a token Portico would
/// issue, except for what the test changed.
async fn forged(store: &StateStore, edit: impl FnOnce(&mut Header, &mut Json)) -> String {
    let key = store.current_signing_key().await.unwrap();
    let now = portico::state::now();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(key.kid.clone());
    header.typ = Some("at+jwt".into());
    let mut claims = json!({
        "iss": ISSUER, "sub": "backend", "aud": BASE, "exp": now + 300, "iat": now, "nbf": now,
        "jti": portico::state::random_token(8), "client_id": "backend", "scope": "system/*.rs",
    });
    edit(&mut header, &mut claims);
    jsonwebtoken::encode(&header, &claims, key.encoding_key()).unwrap()
}

#[tokio::test]
async fn access_tokens_validate_strictly() {
    for store in state_stores("tokens_validate").await {
        let backend = store.backend();
        let tokens = TokenService::new(store.clone());
        let (token, issued) = tokens.issue(&grant(), ISSUER, BASE, 300).await.unwrap();
        let claims = tokens.validate(&token, ISSUER, BASE).await.unwrap();
        assert_eq!(claims, issued);
        assert_eq!(claims.scope, "system/*.rs");

        let key = store.current_signing_key().await.unwrap();
        let public_jwk = key.public_jwk();
        let (header_part, rest) = token.split_once('.').unwrap();
        let (payload_part, _signature) = rest.split_once('.').unwrap();
        let unsigned_header = URL_SAFE_NO_PAD
            .encode(json!({"alg": "none", "typ": "at+jwt", "kid": key.kid}).to_string());
        let hs256 = {
            // HS/RS confusion: an HMAC keyed with the public key's own bytes.
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some(key.kid.clone());
            header.typ = Some("at+jwt".into());
            let claims: Json =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload_part).unwrap()).unwrap();
            jsonwebtoken::encode(
                &header,
                &claims,
                &EncodingKey::from_secret(public_jwk.to_string().as_bytes()),
            )
            .unwrap()
        };
        let tampered = {
            let mut claims: Json =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload_part).unwrap()).unwrap();
            claims["scope"] = json!("system/*.cruds");
            format!(
                "{header_part}.{}.{}",
                URL_SAFE_NO_PAD.encode(claims.to_string()),
                rest.split_once('.').unwrap().1
            )
        };
        let cases: Vec<(&str, String, TokenRejection)> = vec![
            // jsonwebtoken has no `none` algorithm: such a header does not even parse.
            (
                "alg none",
                format!("{unsigned_header}.{payload_part}."),
                TokenRejection::Invalid("the token is not a signed JWT"),
            ),
            (
                "signature stripped",
                format!("{header_part}.{payload_part}."),
                TokenRejection::Invalid("the token's signature does not verify"),
            ),
            (
                "HS256 with the public key",
                hs256,
                TokenRejection::Invalid("the token's algorithm is not accepted"),
            ),
            (
                "tampered payload",
                tampered,
                TokenRejection::Invalid("the token's signature does not verify"),
            ),
            (
                "unknown kid",
                forged(&store, |h, _| h.kid = Some("not-a-key".into())).await,
                TokenRejection::Invalid("the token's key is unknown"),
            ),
            (
                "path in kid",
                forged(&store, |h, _| h.kid = Some("../../../../dev/null".into())).await,
                TokenRejection::Invalid("the token's key is unknown"),
            ),
            (
                "SQL in kid",
                forged(&store, |h, _| h.kid = Some("x' OR '1'='1".into())).await,
                TokenRejection::Invalid("the token's key is unknown"),
            ),
            (
                "URL in kid",
                forged(&store, |h, _| {
                    h.kid = Some("http://169.254.169.254/".into())
                })
                .await,
                TokenRejection::Invalid("the token's key is unknown"),
            ),
            (
                "no kid",
                forged(&store, |h, _| h.kid = None).await,
                TokenRejection::Invalid("the token names no key"),
            ),
            (
                "wrong audience",
                forged(&store, |_, c| {
                    c["aud"] = json!("https://other.example/fhir")
                })
                .await,
                TokenRejection::Invalid("the token is for another server"),
            ),
            (
                "wrong issuer",
                forged(&store, |_, c| c["iss"] = json!("https://idp.example")).await,
                TokenRejection::Invalid("the token's issuer is not trusted"),
            ),
            (
                "expired",
                forged(&store, |_, c| c["exp"] = json!(portico::state::now() - 120)).await,
                TokenRejection::Expired,
            ),
            (
                "not yet valid",
                forged(&store, |_, c| c["nbf"] = json!(portico::state::now() + 600)).await,
                TokenRejection::Invalid("the token is not valid yet"),
            ),
            (
                "issued in the future",
                forged(&store, |_, c| c["iat"] = json!(portico::state::now() + 600)).await,
                TokenRejection::Invalid("the token was issued in the future"),
            ),
            (
                "an id_token (typ JWT)",
                forged(&store, |h, _| h.typ = Some("JWT".into())).await,
                TokenRejection::Invalid("the token is not an access token"),
            ),
            (
                "no typ",
                forged(&store, |h, _| h.typ = None).await,
                TokenRejection::Invalid("the token is not an access token"),
            ),
            (
                "no exp",
                forged(&store, |_, c| {
                    c.as_object_mut().unwrap().remove("exp");
                })
                .await,
                TokenRejection::Invalid("the token is malformed"),
            ),
            (
                "garbage",
                "not.a.jwt".into(),
                TokenRejection::Invalid("the token is not a signed JWT"),
            ),
            (
                "oversized",
                "a".repeat(9000),
                TokenRejection::Invalid("the token is too long"),
            ),
        ];
        for (name, token, expected) in cases {
            assert_eq!(
                tokens.validate(&token, ISSUER, BASE).await.err(),
                Some(expected),
                "{backend:?}: {name}"
            );
        }

        // Revocation takes effect at once on this replica, and on another one within its refresh.
        let other_replica = TokenService::new(store.clone());
        assert!(other_replica.validate(&token, ISSUER, BASE).await.is_ok());
        assert!(tokens.revoke(&issued.jti).await.unwrap());
        assert_eq!(
            tokens.validate(&token, ISSUER, BASE).await.err(),
            Some(TokenRejection::Revoked)
        );
        let fresh_replica = TokenService::new(store.clone());
        assert_eq!(
            fresh_replica.validate(&token, ISSUER, BASE).await.err(),
            Some(TokenRejection::Revoked)
        );

        // A rotated key still verifies the tokens it signed; new tokens use the new key.
        let (before, _) = tokens.issue(&grant(), ISSUER, BASE, 300).await.unwrap();
        store.rotate_signing_key().await.unwrap();
        let (after, _) = tokens.issue(&grant(), ISSUER, BASE, 300).await.unwrap();
        let rotated = TokenService::new(store.clone());
        assert!(
            rotated.validate(&before, ISSUER, BASE).await.is_ok(),
            "{backend:?}"
        );
        assert!(
            rotated.validate(&after, ISSUER, BASE).await.is_ok(),
            "{backend:?}"
        );
    }
}

/// A JWKS server on loopback that counts its requests.
async fn jwks_server(body: Json) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let body = body.clone();
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                ([("cache-control", "max-age=300")], axum::Json(body))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://127.0.0.1:{}/jwks.json",
        listener.local_addr().unwrap().port()
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, hits)
}

fn by_assertion(assertion: String) -> PresentedCredentials {
    PresentedCredentials {
        assertion_type: Some(JWT_BEARER_ASSERTION.into()),
        assertion: Some(assertion),
        ..PresentedCredentials::default()
    }
}

#[tokio::test]
async fn clients_authenticate_with_secrets_and_signed_assertions() {
    let rs = ClientKey::rs384("rs-1");
    let es = ClientKey::es384("es-1");
    let unregistered = ClientKey::rs384("rs-1");
    let (jwks_url, hits) = jwks_server(jwks(&[&rs, &es])).await;
    for store in state_stores("tokens_client_auth").await {
        let backend = store.backend();
        let fetcher = JwksFetcher::default();
        store
            .add_client(NewClient {
                client_id: Some("inline".into()),
                name: "Inline keys".into(),
                kind: Some(ClientKind::Asymmetric),
                jwks: Some(jwks(&[&rs, &es])),
                allowed_scopes: "system/*.rs".into(),
                ..NewClient::default()
            })
            .await
            .unwrap();
        store
            .add_client(NewClient {
                client_id: Some("by-url".into()),
                name: "Keys by URL".into(),
                kind: Some(ClientKind::Asymmetric),
                jwks_url: Some(jwks_url.clone()),
                allowed_scopes: "system/*.rs".into(),
                ..NewClient::default()
            })
            .await
            .unwrap();
        let twin = ClientKey::rs384("twin");
        let mut twins = jwks(&[&twin]);
        twins["keys"]
            .as_array_mut()
            .unwrap()
            .push(twin.public_jwk.clone());
        store
            .add_client(NewClient {
                client_id: Some("twins".into()),
                name: "Two keys, one kid".into(),
                kind: Some(ClientKind::Asymmetric),
                jwks: Some(twins),
                ..NewClient::default()
            })
            .await
            .unwrap();
        let (_, secret) = store
            .add_client(NewClient {
                client_id: Some("shared".into()),
                name: "Shared secret".into(),
                kind: Some(ClientKind::Symmetric),
                ..NewClient::default()
            })
            .await
            .unwrap();
        let secret = secret.unwrap();
        let authenticate = |presented: PresentedCredentials| {
            let store = store.clone();
            let fetcher = fetcher.clone();
            async move {
                client_auth::authenticate(&store, &fetcher, &presented, TOKEN_ENDPOINT)
                    .await
                    .map(|c| c.client_id)
                    .map_err(|e| e.0)
            }
        };

        // What works: RS384 and ES384, inline and by URL; a shared secret in Basic or in the form.
        for (client, key) in [
            ("inline", &rs),
            ("inline", &es),
            ("by-url", &rs),
            ("by-url", &es),
        ] {
            let assertion = key.assertion(client, TOKEN_ENDPOINT, |_, _| {});
            assert_eq!(
                authenticate(by_assertion(assertion)).await,
                Ok(client.to_owned()),
                "{backend:?} {client} {:?}",
                key.alg
            );
        }
        assert_eq!(
            authenticate(PresentedCredentials {
                basic: Some(("shared".into(), secret.clone())),
                ..Default::default()
            })
            .await,
            Ok("shared".into())
        );
        assert_eq!(
            authenticate(PresentedCredentials {
                client_id: Some("shared".into()),
                client_secret: Some(secret.clone()),
                ..Default::default()
            })
            .await,
            Ok("shared".into())
        );

        // Replay: the same assertion twice.
        let once = rs.assertion("inline", TOKEN_ENDPOINT, |_, _| {});
        assert!(authenticate(by_assertion(once.clone())).await.is_ok());
        assert_eq!(
            authenticate(by_assertion(once)).await,
            Err("client_assertion jti was already used")
        );

        let now = portico::state::now();
        let refused: Vec<(&str, PresentedCredentials, &str)> = vec![
            (
                "wrong assertion type",
                PresentedCredentials {
                    assertion_type: Some("not_an_assertion_type".into()),
                    assertion: Some(rs.assertion("inline", TOKEN_ENDPOINT, |_, _| {})),
                    ..Default::default()
                },
                "client_assertion_type is not jwt-bearer",
            ),
            (
                "exp more than five minutes ahead",
                by_assertion(
                    rs.assertion("inline", TOKEN_ENDPOINT, |_, c| c["exp"] = json!(now + 900)),
                ),
                "client_assertion exp is more than five minutes ahead",
            ),
            (
                "expired beyond the skew",
                by_assertion(
                    rs.assertion("inline", TOKEN_ENDPOINT, |_, c| c["exp"] = json!(now - 120)),
                ),
                "client_assertion has expired",
            ),
            (
                "aud not the token endpoint",
                by_assertion(rs.assertion("inline", "https://elsewhere/token", |_, _| {})),
                "client_assertion aud is not the token endpoint",
            ),
            (
                "iss differs from sub",
                by_assertion(
                    rs.assertion("inline", TOKEN_ENDPOINT, |_, c| c["sub"] = json!("by-url")),
                ),
                "client_assertion sub differs from iss",
            ),
            (
                "iss not registered",
                by_assertion(rs.assertion("stranger", TOKEN_ENDPOINT, |_, _| {})),
                "unknown client or bad credentials",
            ),
            (
                "client_id differs from iss",
                PresentedCredentials {
                    client_id: Some("by-url".into()),
                    ..by_assertion(rs.assertion("inline", TOKEN_ENDPOINT, |_, _| {}))
                },
                "client_id differs from the assertion's issuer",
            ),
            (
                "no jti",
                by_assertion(rs.assertion("inline", TOKEN_ENDPOINT, |_, c| {
                    c.as_object_mut().unwrap().remove("jti");
                })),
                "client_assertion has no jti",
            ),
            (
                "signed by a key not registered",
                by_assertion(unregistered.assertion("inline", TOKEN_ENDPOINT, |_, _| {})),
                "client_assertion signature does not verify",
            ),
            (
                "kid matching no key",
                by_assertion(
                    rs.assertion("inline", TOKEN_ENDPOINT, |h, _| h.kid = Some("nope".into())),
                ),
                "no registered key matches the assertion's kid and alg",
            ),
            (
                "kid matching two keys",
                by_assertion(twin.assertion("twins", TOKEN_ENDPOINT, |_, _| {})),
                "several registered keys match the assertion's kid",
            ),
            (
                "kty not fitting alg",
                by_assertion(
                    rs.assertion("inline", TOKEN_ENDPOINT, |h, _| h.kid = Some("es-1".into())),
                ),
                "no registered key matches the assertion's kid and alg",
            ),
            (
                "RS256 instead of RS384",
                by_assertion({
                    let mut header = Header::new(Algorithm::RS256);
                    header.kid = Some("rs-1".into());
                    jsonwebtoken::encode(&header, &json!({"iss": "inline"}), &rs.encoding).unwrap()
                }),
                "client_assertion must be signed with RS384 or ES384",
            ),
            (
                "wrong secret",
                PresentedCredentials {
                    basic: Some(("shared".into(), "x".repeat(43))),
                    ..Default::default()
                },
                "unknown client or bad credentials",
            ),
            (
                "secret for an asymmetric client",
                PresentedCredentials {
                    client_id: Some("inline".into()),
                    client_secret: Some("x".repeat(43)),
                    ..Default::default()
                },
                "this client must authenticate with a signed assertion",
            ),
            (
                "two methods at once",
                PresentedCredentials {
                    client_secret: Some(secret.clone()),
                    ..by_assertion(rs.assertion("inline", TOKEN_ENDPOINT, |_, _| {}))
                },
                "more than one client authentication method",
            ),
        ];
        for (name, presented, reason) in refused {
            assert_eq!(
                authenticate(presented).await,
                Err(reason),
                "{backend:?}: {name}"
            );
        }

        // A jku the client did not register is refused without being fetched.
        let before = hits.load(Ordering::SeqCst);
        let (evil_url, evil_hits) = jwks_server(jwks(&[&unregistered])).await;
        let assertion = unregistered.assertion("by-url", TOKEN_ENDPOINT, |h, _| {
            h.jku = Some(evil_url.clone())
        });
        assert_eq!(
            authenticate(by_assertion(assertion)).await,
            Err("jku is not the client's registered JWKS URL")
        );
        assert_eq!(
            evil_hits.load(Ordering::SeqCst),
            0,
            "the unregistered jku was fetched"
        );
        // A flood of unknown kids costs at most one refetch per interval.
        for n in 0..20 {
            let assertion = rs.assertion("by-url", TOKEN_ENDPOINT, |h, _| {
                h.kid = Some(format!("unknown-{n}"))
            });
            assert!(authenticate(by_assertion(assertion)).await.is_err());
        }
        assert!(
            hits.load(Ordering::SeqCst) - before <= 1,
            "{backend:?}: {} fetches",
            hits.load(Ordering::SeqCst) - before
        );
    }
}
