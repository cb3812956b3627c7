//! A removed client's subscriptions stop at once, on both state stores: `remove_client` turns
//! them off with the reason in the transaction that revokes the client's tokens, no notification
//! follows later PMS changes (while another client's subscription still hears them), and the
//! removed client's token is refused with 401.

use std::time::Duration;

use axum::http::StatusCode;
use portico::state::clients::REMOVED_CLIENT_REASON;
use sqlx::Connection;

use crate::notifications::{Receiver, eventually, topic_subscription};
use crate::subscriptions::{Running, start_with};
use crate::support::{self, Backend};

/// A second client, registered and with its own token, on the same server as `app`.
async fn another_client(app: &Running) -> Running {
    let token = crate::clients::register_public_client(
        &app.store,
        &support::token_service(&app.base),
        &app.base,
        ("another-ehr", "another EHR subscribing"),
        "system/Subscription.cruds system/*.rs",
    )
    .await;
    Running {
        base: app.base.clone(),
        token,
        store: app.store.clone(),
        client: app.client.clone(),
        settings: app.settings.clone(),
    }
}

/// Renames `patient` as OpenEMR does.
async fn rename(pms: &mut sqlx::MySqlConnection, patient: i64, given: &str) {
    sqlx::query("UPDATE patient_data SET fname = ? WHERE pid = ?")
        .bind(given)
        .bind(patient)
        .execute(&mut *pms)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_removed_clients_subscriptions_are_off_at_once_and_hear_nothing_more() {
    let test = "subscriptions_revoked";
    let db_url = support::seed(Backend::MariaDb, test).await;
    let mut pms = sqlx::MySqlConnection::connect(&db_url).await.unwrap();
    let patient: i64 = sqlx::query_scalar("SELECT MIN(pid) FROM patient_data")
        .fetch_one(&mut pms)
        .await
        .unwrap();
    for state_url in support::state_urls(test).await {
        let backend = state_url.split(':').next().unwrap_or_default().to_owned();
        eprintln!("{test}: on the {backend} state store");
        let receiver = Receiver::start().await;
        let removed = start_with(&db_url, Some(state_url), true).await;
        let kept = another_client(&removed).await;
        let subscription = topic_subscription(
            "patient-demographics-changed",
            &[],
            &receiver.url,
            "id-only",
        );
        let mut ids = Vec::new();
        for owner in [&removed, &kept] {
            let (status, created) = owner.create(&subscription).await;
            assert_eq!(status, StatusCode::CREATED, "{created}");
            let id = created["id"].as_str().unwrap().to_owned();
            owner
                .await_handshakes(&receiver, std::slice::from_ref(&id))
                .await;
            ids.push(id);
        }
        let (removed_id, kept_id) = (ids[0].clone(), ids[1].clone());

        // Both hear a first change.
        rename(&mut pms, patient, &format!("Before{backend}")).await;
        for id in &ids {
            eventually("the first rename", Duration::from_secs(15), || {
                receiver.of(id, "event-notification").first().cloned()
            })
            .await;
        }

        // Removing the client turns its subscription off at once, with the reason; the other
        // client's subscription is untouched.
        assert!(removed.store.remove_client("portico-tests").await.unwrap());
        let off = removed
            .store
            .subscription(&removed_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(off.status, "off", "{off:?}");
        assert_eq!(off.error.as_deref(), Some(REMOVED_CLIENT_REASON));
        let live = kept.store.subscription(&kept_id).await.unwrap().unwrap();
        assert_eq!(live.status, "active", "{live:?}");
        // What the operator's `portico subscriptions list` reads says so too.
        let listed = removed.store.subscriptions(None).await.unwrap();
        assert!(
            listed
                .iter()
                .any(|s| s.id == removed_id && s.status == "off"),
            "{listed:?}"
        );

        // The removed client's token is refused (revocations reach the resource server within
        // its refresh interval).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let response = removed
                .client
                .get(format!("{}/Subscription/{removed_id}", removed.base))
                .bearer_auth(&removed.token)
                .send()
                .await
                .unwrap();
            if response.status() == StatusCode::UNAUTHORIZED {
                let challenge = response.headers()["www-authenticate"].to_str().unwrap();
                assert!(challenge.contains("invalid_token"), "{challenge}");
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the removed client's token still answers {}",
                response.status()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // A later change reaches the other client only; the removed one gets no event at all.
        rename(&mut pms, patient, &format!("After{backend}")).await;
        eventually("the second rename", Duration::from_secs(15), || {
            receiver.of(&kept_id, "event-notification").get(1).cloned()
        })
        .await;
        assert_eq!(
            receiver.of(&removed_id, "event-notification").len(),
            1,
            "nothing more was sent to the removed client"
        );
        let off = removed
            .store
            .subscription(&removed_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (off.events_since_start, off.delivered_through),
            (1, 1),
            "no event was numbered for the removed client: {off:?}"
        );
        assert_eq!(off.status, "off");
    }
}
