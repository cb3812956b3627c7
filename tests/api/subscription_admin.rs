//! `/admin/subscriptions` against a real Portico: only administrators (HTTP Basic of an admin
//! user, or a bearer token issued to one) see every subscription's health, its backlog and
//! latest events, and can make it due now or turn it off; anyone else gets a 401 or 403
//! OperationOutcome.

use axum::http::StatusCode;
use portico::auth::tokens::Grant;
use portico::state::subscriptions::now_ms;
use portico::state::users::Role;
use serde_json::Value as Json;

use crate::notifications::topic_subscription;
use crate::subscription_delivery::append_events;
use crate::subscriptions::start_with;
use crate::support::{self, Backend};

#[tokio::test]
async fn administrators_see_and_steer_subscription_health() {
    let db_url = support::seed(Backend::Sqlite, "subscription_admin").await;
    // No worker: the handshake stays pending, so the view shows exactly what the test did.
    let app = start_with(&db_url, None, false).await;
    let root = app.base.trim_end_matches("/fhir").to_owned();
    app.store
        .add_user("ops", "a long admin password", Role::Admin, None)
        .await
        .unwrap();
    app.store
        .add_user(
            "dr-who",
            "a long clinician password",
            Role::Clinician,
            Some("Practitioner/1"),
        )
        .await
        .unwrap();
    let (status, created) = app
        .create(&topic_subscription(
            "patient-demographics-changed",
            &[],
            "http://127.0.0.1:9/hook",
            "id-only",
        ))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    append_events(&app.store, &id, 3, now_ms()).await;

    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{root}{path}"));
    let outcome = |response: reqwest::Response| async move {
        let status = response.status();
        let body: Json = response.json().await.unwrap();
        assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
        support::assert_valid_r4(&body);
        status
    };

    // Who may look.
    let refused = [
        ("no credentials", get("/admin/subscriptions"), 401),
        (
            "a wrong password",
            get("/admin/subscriptions").basic_auth("ops", Some("not it")),
            401,
        ),
        (
            "a clinician",
            get("/admin/subscriptions").basic_auth("dr-who", Some("a long clinician password")),
            403,
        ),
        (
            "a client's system token",
            get("/admin/subscriptions").bearer_auth(&app.token),
            403,
        ),
        (
            "a token that is not one",
            get("/admin/subscriptions").bearer_auth("not-a-token"),
            401,
        ),
    ];
    for (case, request, expected) in refused {
        let status = outcome(request.send().await.unwrap()).await;
        assert_eq!(status.as_u16(), expected, "{case}");
    }

    let admin =
        |request: reqwest::RequestBuilder| request.basic_auth("ops", Some("a long admin password"));
    let listed: Json = admin(get("/admin/subscriptions"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mine = listed["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{listed:#}"))
        .clone();
    assert_eq!(mine["status"], "requested");
    assert_eq!(mine["client"], "portico-tests");
    assert_eq!(mine["channel"], "rest-hook");
    assert_eq!(mine["handshakePending"], true);
    assert_eq!(mine["eventsSinceStart"], 3);
    assert_eq!(mine["backlog"], 3);
    assert_eq!(mine["failedAttempts"], 0);
    assert!(mine["lastDelivered"].is_null());
    assert!(
        mine["topic"]
            .as_str()
            .unwrap()
            .ends_with("patient-demographics-changed")
    );
    assert!(listed["detection"].is_array());

    // A bearer token issued to the admin user is enough too.
    let admin_token = support::token_service(&app.base)
        .issue_for(
            &Grant {
                client_id: "portico-tests".into(),
                subject: "ops".into(),
                username: Some("ops".into()),
                scope: "openid fhirUser".into(),
                ..Grant::default()
            },
            &app.base,
            3600,
        )
        .await
        .unwrap()
        .0;
    let shown = get(&format!("/admin/subscriptions/{id}"))
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(shown.status(), 200);
    let shown: Json = shown.json().await.unwrap();
    let numbers: Vec<i64> = shown["recentEvents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["number"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, vec![1, 2, 3]);
    assert_eq!(shown["recentEvents"][0]["focus"], "Patient/1");
    assert_eq!(shown["recentEvents"][0]["delivered"], false);

    // The remedies, and what the owner then reads.
    let post = |path: String| admin(http.post(format!("{root}{path}")));
    let retried = post(format!("/admin/subscriptions/{id}/retry"))
        .send()
        .await
        .unwrap();
    assert_eq!(retried.status(), 200);
    let due = app.store.subscription(&id).await.unwrap().unwrap();
    assert!(due.next_attempt_ms <= now_ms() && !due.retries_stopped);
    let disabled = post(format!("/admin/subscriptions/{id}/disable"))
        .send()
        .await
        .unwrap();
    assert_eq!(disabled.status(), 200);
    let read = app.get(&format!("Subscription/{id}")).await;
    assert_eq!(read["status"], "off");
    assert_eq!(read["error"], "turned off by the operator");
    let unknown = post("/admin/subscriptions/no-such-id/disable".into())
        .send()
        .await
        .unwrap();
    assert_eq!(outcome(unknown).await, StatusCode::NOT_FOUND);
    let wrong_method = admin(http.delete(format!("{root}/admin/subscriptions/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);
}
