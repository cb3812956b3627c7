//! Portico's own state store on SQLite and PostgreSQL: the same suite on both backends.

use portico::state::clients::{ClientKind, NewClient};
use portico::state::users::Role;
use portico::state::{Backend, StateError};

use crate::support::state_stores;

#[tokio::test]
async fn clients_are_registered_checked_and_removed() {
    for store in state_stores("state_clients").await {
        let backend = store.backend();
        let (public, secret) = store
            .add_client(NewClient {
                client_id: Some("app".into()),
                name: "Patient app".into(),
                redirect_uris: vec!["http://127.0.0.1:9999/callback".into()],
                allowed_scopes: "launch/patient  patient/*.rs openid fhirUser".into(),
                ..NewClient::default()
            })
            .await
            .unwrap();
        assert_eq!(public.kind, ClientKind::Public);
        assert!(secret.is_none());
        assert_eq!(
            public.allowed_scopes,
            "launch/patient patient/*.rs openid fhirUser"
        );

        let (symmetric, secret) = store
            .add_client(NewClient {
                name: "Billing service".into(),
                kind: Some(ClientKind::Symmetric),
                allowed_scopes: "system/Claim.rs".into(),
                ..NewClient::default()
            })
            .await
            .unwrap();
        let secret = secret.expect("a generated secret is shown once");
        assert!(secret.len() >= 32, "{backend:?}");
        let stored = store.client(&symmetric.client_id).await.unwrap().unwrap();
        assert!(stored.secret_matches(&secret));
        assert!(!stored.secret_matches(&format!("{secret}x")));
        assert!(!stored.secret_matches(""));

        let jwks = serde_json::json!({ "keys": [{ "kty": "EC", "kid": "k1", "crv": "P-384", "x": "AA", "y": "AA" }] });
        let (backend_client, _) = store
            .add_client(NewClient {
                client_id: Some("backend".into()),
                name: "EHR backend".into(),
                kind: Some(ClientKind::Asymmetric),
                jwks: Some(jwks.clone()),
                allowed_scopes: "system/*.rs".into(),
                ..NewClient::default()
            })
            .await
            .unwrap();
        assert_eq!(
            backend_client.jwks.as_deref(),
            Some(jwks.to_string().as_str())
        );

        let refusals = [
            NewClient {
                client_id: Some("app".into()),
                name: "again".into(),
                ..NewClient::default()
            },
            NewClient {
                name: "short".into(),
                kind: Some(ClientKind::Symmetric),
                secret: Some("too short".into()),
                ..NewClient::default()
            },
            NewClient {
                name: "no keys".into(),
                kind: Some(ClientKind::Asymmetric),
                ..NewClient::default()
            },
            NewClient {
                name: "secret on public".into(),
                secret: Some("x".repeat(40)),
                ..NewClient::default()
            },
            NewClient {
                name: "http".into(),
                redirect_uris: vec!["http://app.example.org/cb".into()],
                ..NewClient::default()
            },
            NewClient {
                name: "fragment".into(),
                redirect_uris: vec!["https://app.example.org/cb#x".into()],
                ..NewClient::default()
            },
            NewClient {
                name: "lookalike loopback".into(),
                redirect_uris: vec!["http://127.0.0.1.evil.example/cb".into()],
                ..NewClient::default()
            },
            NewClient {
                name: "jwks not a set".into(),
                kind: Some(ClientKind::Asymmetric),
                jwks: Some(serde_json::json!({"kty": "RSA"})),
                ..NewClient::default()
            },
        ];
        for refused in refusals {
            let name = refused.name.clone();
            assert!(
                matches!(store.add_client(refused).await, Err(StateError::Invalid(_))),
                "{backend:?}: {name} should be refused"
            );
        }

        let ids: Vec<String> = store
            .clients()
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.client_id)
            .collect();
        assert_eq!(ids.len(), 3, "{backend:?}: {ids:?}");
        assert!(store.remove_client("app").await.unwrap());
        assert!(!store.remove_client("app").await.unwrap());
        assert!(store.client("app").await.unwrap().is_none());
    }
}

#[tokio::test]
async fn users_sign_in_with_argon2_hashed_passwords() {
    for store in state_stores("state_users").await {
        let backend = store.backend();
        let user = store
            .add_user(
                "pat",
                "correct horse battery",
                Role::Patient,
                Some("Patient/7"),
            )
            .await
            .unwrap();
        assert_eq!(user.patient_id(), Some("7"));
        store
            .add_user(
                "dr",
                "another long password",
                Role::Clinician,
                Some("Practitioner/2"),
            )
            .await
            .unwrap();
        store
            .add_user("admin", "administrator pw", Role::Admin, None)
            .await
            .unwrap();

        let signed_in = store
            .verify_password("pat", "correct horse battery")
            .await
            .unwrap();
        assert_eq!(
            signed_in.map(|u| u.role),
            Some(Role::Patient),
            "{backend:?}"
        );
        assert!(
            store
                .verify_password("pat", "wrong password!")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .verify_password("nobody", "correct horse battery")
                .await
                .unwrap()
                .is_none()
        );

        for (name, password, role, fhir_user) in [
            (
                "pat",
                "correct horse battery",
                Role::Patient,
                Some("Patient/7"),
            ),
            ("short", "short", Role::Admin, None),
            ("nolink", "long enough password", Role::Patient, None),
            (
                "wronglink",
                "long enough password",
                Role::Clinician,
                Some("Patient/7"),
            ),
            ("has space", "long enough password", Role::Admin, None),
        ] {
            assert!(
                store
                    .add_user(name, password, role, fhir_user)
                    .await
                    .is_err(),
                "{backend:?}: {name} should be refused"
            );
        }

        assert!(
            store
                .set_password("pat", "a brand new password")
                .await
                .unwrap()
        );
        assert!(
            store
                .verify_password("pat", "correct horse battery")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .verify_password("pat", "a brand new password")
                .await
                .unwrap()
                .is_some()
        );
        let names: Vec<String> = store
            .users()
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.username)
            .collect();
        assert_eq!(names, ["admin", "dr", "pat"]);
        assert!(store.remove_user("dr").await.unwrap());
        assert!(
            store
                .verify_password("dr", "another long password")
                .await
                .unwrap()
                .is_none()
        );
    }
}

/// Removing a user turns off the subscriptions made under their tokens, and no one else's.
#[tokio::test]
async fn a_removed_users_subscriptions_are_off_at_once() {
    use portico::state::subscriptions::SubscriptionWrite;
    use portico::state::users::REMOVED_USER_REASON;
    for store in state_stores("state_removed_user").await {
        let backend = store.backend();
        store
            .add_user(
                "dr-gone",
                "a long enough password",
                Role::Clinician,
                Some("Practitioner/1"),
            )
            .await
            .unwrap();
        let owned_by = |id: &str, sub: &str| SubscriptionWrite {
            id: id.into(),
            client_id: "ehr-app".into(),
            owner: serde_json::json!({
                "iss": "x", "sub": sub, "aud": "x", "exp": 0, "iat": 0, "nbf": 0,
                "jti": id, "client_id": "ehr-app", "scope": "user/Subscription.cruds",
            })
            .to_string(),
            spec: "{}".into(),
            topic: None,
            resource_type: "Patient".into(),
            channel: "rest-hook".into(),
            base_url: "http://127.0.0.1/fhir".into(),
            status: "requested".into(),
            end_ms: None,
            heartbeat_ms: None,
        };
        for write in [
            owned_by("theirs", "dr-gone"),
            owned_by("others", "dr-stays"),
        ] {
            store.insert_subscription(&write).await.unwrap();
        }
        assert!(store.remove_user("dr-gone").await.unwrap());
        let theirs = store.subscription("theirs").await.unwrap().unwrap();
        assert_eq!(theirs.status, "off", "{backend:?}");
        assert_eq!(theirs.error.as_deref(), Some(REMOVED_USER_REASON));
        let others = store.subscription("others").await.unwrap().unwrap();
        assert_eq!(others.status, "requested", "{backend:?}");
    }
}

#[tokio::test]
async fn signing_keys_are_made_once_and_rotate() {
    for store in state_stores("state_keys").await {
        let first = store.current_signing_key().await.unwrap();
        assert_eq!(store.current_signing_key().await.unwrap().kid, first.kid);
        let jwk = first.public_jwk();
        assert_eq!(jwk["kty"], "RSA");
        assert_eq!(jwk["alg"], "RS256");
        assert!(jwk.get("d").is_none(), "the JWK is public only");

        let second = store.rotate_signing_key().await.unwrap();
        assert_ne!(second.kid, first.kid);
        assert_eq!(store.current_signing_key().await.unwrap().kid, second.kid);
        let kids: Vec<String> = store
            .verification_keys()
            .await
            .unwrap()
            .into_iter()
            .map(|k| k.kid)
            .collect();
        assert!(
            kids.contains(&first.kid) && kids.contains(&second.kid),
            "{kids:?}"
        );
    }
}

#[tokio::test]
async fn an_assertion_jti_is_accepted_once_even_when_raced() {
    for store in state_stores("state_jti").await {
        let expires = portico::state::now() + 300;
        assert!(
            store
                .claim_assertion_jti("backend", "jti-1", expires)
                .await
                .unwrap()
        );
        assert!(
            !store
                .claim_assertion_jti("backend", "jti-1", expires)
                .await
                .unwrap()
        );
        assert!(
            store
                .claim_assertion_jti("other", "jti-1", expires)
                .await
                .unwrap()
        );

        // Two requests carrying the same assertion at once: exactly one wins.
        let attempts = (0..8).map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .claim_assertion_jti("backend", "jti-race", expires)
                    .await
                    .unwrap()
            })
        });
        let mut winners = 0;
        for attempt in attempts {
            winners += usize::from(attempt.await.unwrap());
        }
        assert_eq!(winners, 1, "{:?}", store.backend());
        // An expired entry is forgotten: its assertion would fail on exp anyway.
        assert!(
            store
                .claim_assertion_jti("backend", "old", portico::state::now() - 10)
                .await
                .unwrap()
        );
        assert!(
            store
                .claim_assertion_jti("backend", "old", expires)
                .await
                .unwrap()
        );
    }
}

#[tokio::test]
async fn both_backends_are_exercised() {
    let backends: Vec<Backend> = state_stores("state_backends")
        .await
        .iter()
        .map(|s| s.backend())
        .collect();
    assert_eq!(backends, [Backend::Sqlite, Backend::Postgres]);
}

#[tokio::test]
async fn a_detection_lease_passes_on_only_when_released_or_run_out() {
    use portico::state::subscriptions::{ChangeLease, LeaseLost, PassCommit, now_ms};
    for store in state_stores("state_change_leases").await {
        let backend = store.backend();
        let until = now_ms() + 60_000;
        assert!(
            store
                .claim_change_cursor("Patient", "a", until)
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            store
                .claim_change_cursor("Patient", "b", until)
                .await
                .unwrap()
                .is_none(),
            "{backend:?}: a held lease is not taken"
        );
        assert!(
            store
                .claim_change_cursor("Patient", "a", until)
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(
            store.change_leases().await.unwrap(),
            vec![ChangeLease {
                mapping: "Patient".into(),
                owner: Some("a".into()),
                until_ms: until,
            }]
        );
        let commit_by = |owner: &str| PassCommit {
            mapping: "Patient".into(),
            lease_owner: owner.into(),
            ..PassCommit::default()
        };

        // "a" dies without giving it back: its lease runs out and "b" takes the mapping over;
        // a pass "a" had under way can no longer commit.
        assert!(
            store
                .claim_change_cursor("Patient", "a", now_ms() - 1)
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            store
                .claim_change_cursor("Patient", "b", until)
                .await
                .unwrap()
                .is_some(),
            "{backend:?}"
        );
        assert_eq!(
            store.commit_detection_pass(&commit_by("a")).await.unwrap(),
            Err(LeaseLost),
            "{backend:?}"
        );
        assert!(
            store
                .commit_detection_pass(&commit_by("b"))
                .await
                .unwrap()
                .is_ok()
        );

        // A pass that outlived its lease may still renew and commit while no rival has claimed
        // the mapping; once one has, it may not.
        assert!(
            store
                .claim_change_cursor("Patient", "b", now_ms() - 1)
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            store
                .renew_change_cursor("Patient", "b", until)
                .await
                .unwrap(),
            "{backend:?}"
        );
        assert!(
            store
                .commit_detection_pass(&commit_by("b"))
                .await
                .unwrap()
                .is_ok()
        );
        assert!(
            !store
                .renew_change_cursor("Patient", "a", until)
                .await
                .unwrap(),
            "{backend:?}"
        );

        // Given back at shutdown: taken at once.
        store.release_change_cursor("Patient", "b").await.unwrap();
        assert!(
            store
                .claim_change_cursor("Patient", "a", until)
                .await
                .unwrap()
                .is_some(),
            "{backend:?}"
        );
    }
}
