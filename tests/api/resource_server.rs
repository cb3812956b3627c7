//! The resource server as a SMART client meets it: which requests need a token, the 401s of
//! security-reliability.md §2.3 (28, 31-33, 35, 39) over HTTP, 403 for scopes narrower than the
//! request (no existence oracle), patient and granular scopes through real tokens, and cursors
//! bound to the token's access.

use portico::auth::endpoints::{ISSUER, absolute};
use portico::auth::tokens::{Grant, TokenService};
use serde_json::Value as Json;

use crate::support;

struct Secured {
    base: String,
    tokens: TokenService,
}

impl Secured {
    /// Runs `body` against a server on each state store backend (SQLite, PostgreSQL).
    async fn each(test: &str, body: impl AsyncFn(Secured)) {
        support::on_each_state_store(test, async |base: String| {
            let tokens = support::token_service(&base);
            body(Secured { base, tokens }).await
        })
        .await;
    }

    async fn token(
        &self,
        scope: &str,
        patient: Option<&str>,
        fhir_user: Option<&str>,
        lifetime: i64,
    ) -> String {
        let grant = Grant {
            client_id: "app".into(),
            subject: "someone".into(),
            scope: scope.into(),
            patient: patient.map(str::to_owned),
            fhir_user: fhir_user.map(str::to_owned),
            ..Grant::default()
        };
        self.tokens
            .issue_for(&grant, &self.base, lifetime)
            .await
            .unwrap()
            .0
    }

    async fn get(
        &self,
        path: &str,
        token: Option<&str>,
    ) -> (u16, reqwest::header::HeaderMap, Json) {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}/{path}", self.base)
        };
        let mut request = reqwest::Client::new().get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.json().await.unwrap_or(Json::Null))
    }
}

fn ids(bundle: &Json) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter(|e| e["search"]["mode"] != "outcome")
                .map(|e| {
                    format!(
                        "{}/{}",
                        e["resource"]["resourceType"].as_str().unwrap(),
                        e["resource"]["id"].as_str().unwrap()
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn tokens_are_required_and_checked_over_http() {
    Secured::each("rs_tokens", async |app: Secured| {
        // Public without a token: the CapabilityStatement and SMART discovery.
        for path in ["metadata", ".well-known/smart-configuration"] {
            assert_eq!(app.get(path, None).await.0, 200, "{path}");
        }
        // No token: 401 with a bare challenge and an OperationOutcome.
        let (status, headers, body) = app.get("Patient/1", None).await;
        assert_eq!(status, 401);
        assert_eq!(headers["www-authenticate"], "Bearer realm=\"portico\"");
        assert_eq!(body["resourceType"], "OperationOutcome");
        assert_eq!(body["issue"][0]["code"], "login");
        assert_eq!(app.get("Observation?patient=1", None).await.0, 401);

        let good = app.token("system/*.rs", None, None, 300).await;
        assert_eq!(app.get("Patient/1", Some(&good)).await.0, 200);
        let expired = app.token("system/*.rs", None, None, -120).await;
        let other_base = {
            let grant = Grant {
                client_id: "app".into(),
                subject: "x".into(),
                scope: "system/*.rs".into(),
                ..Grant::default()
            };
            let elsewhere = "https://other.example/fhir";
            app.tokens
                .issue(&grant, &absolute(&app.base, ISSUER), elsewhere, 300)
                .await
                .unwrap()
                .0
        };
        let other_issuer = {
            let grant = Grant {
                client_id: "app".into(),
                subject: "x".into(),
                scope: "system/*.rs".into(),
                ..Grant::default()
            };
            app.tokens
                .issue(&grant, "https://idp.example", &app.base, 300)
                .await
                .unwrap()
                .0
        };
        for (name, token, reason) in [
            ("expired", expired.as_str(), "expired"),
            ("for another server", other_base.as_str(), "another server"),
            (
                "from another issuer",
                other_issuer.as_str(),
                "issuer is not trusted",
            ),
            ("garbage", "abc.def.ghi", "not a signed JWT"),
        ] {
            let (status, headers, body) = app.get("Patient/1", Some(token)).await;
            assert_eq!(status, 401, "{name}");
            let challenge = headers["www-authenticate"].to_str().unwrap();
            assert!(
                challenge.contains("error=\"invalid_token\"") && challenge.contains(reason),
                "{name}: {challenge}"
            );
            assert!(
                !body.to_string().contains(token),
                "{name}: the token is echoed"
            );
        }
        // Malformed Authorization headers.
        let client = reqwest::Client::new();
        let url = format!("{}/Patient/1", app.base);
        for value in [
            "Basic dXNlcjpwYXNz".to_owned(),
            "Bearer".to_owned(),
            "Bearer    ".to_owned(),
            format!("Bearer {}", "a".repeat(9000)),
        ] {
            let status = client
                .get(&url)
                .header("authorization", &value)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            assert_eq!(status, 401, "{:.40}", value);
        }
        let twice = client
            .get(&url)
            .header("authorization", format!("Bearer {good}"))
            .header("authorization", format!("Bearer {good}"))
            .send()
            .await
            .unwrap();
        assert_eq!(twice.status().as_u16(), 401);

        // Revoked: refused at once.
        let revoked = app.token("system/*.rs", None, None, 300).await;
        assert_eq!(app.get("Patient/1", Some(&revoked)).await.0, 200);
        let claims = app.tokens.validate_for(&revoked, &app.base).await.unwrap();
        app.tokens.revoke(&claims.jti).await.unwrap();
        let (status, headers, _) = app.get("Patient/1", Some(&revoked)).await;
        assert_eq!(status, 401);
        assert!(
            headers["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("revoked")
        );

        // Context a scope needs but the token lacks: refused, never widened (item 39).
        let no_patient = app.token("patient/*.rs", None, None, 300).await;
        assert_eq!(app.get("Patient?_count=5", Some(&no_patient)).await.0, 401);
        let no_user = app.token("user/*.rs", None, None, 300).await;
        assert_eq!(app.get("Patient?_count=5", Some(&no_user)).await.0, 401);
    })
    .await;
}

#[tokio::test]
async fn scopes_narrow_what_a_token_sees() {
    Secured::each("rs_scopes", async |app: Secured| {
    // A type the token does not cover: 403 whether or not the resource exists (item 35).
    let patients_only = app.token("system/Patient.rs", None, None, 300).await;
    assert_eq!(app.get("Patient/1", Some(&patients_only)).await.0, 200);
    for path in [
        "Observation?patient=1",
        "Observation/vitals-1-weight",
        "Observation/no-such-id",
        "Claim?patient=1",
    ] {
        let (status, headers, body) = app.get(path, Some(&patients_only)).await;
        assert_eq!(status, 403, "{path}");
        assert_eq!(body["issue"][0]["code"], "forbidden", "{path}");
        assert!(
            headers["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("insufficient_scope")
        );
    }
    // Read without search.
    let read_only = app.token("system/Patient.r", None, None, 300).await;
    assert_eq!(app.get("Patient/1", Some(&read_only)).await.0, 200);
    assert_eq!(app.get("Patient?_count=1", Some(&read_only)).await.0, 403);

    // A patient's token: that patient only, through reads, searches and includes.
    let patient_one = app
        .token("patient/*.rs launch/patient", Some("1"), None, 300)
        .await;
    assert_eq!(app.get("Patient/1", Some(&patient_one)).await.0, 200);
    assert_eq!(app.get("Patient/2", Some(&patient_one)).await.0, 404);
    let (_, _, everyone) = app.get("Patient?_count=50", Some(&patient_one)).await;
    assert_eq!(ids(&everyone), ["Patient/1"]);
    let (_, _, other) = app.get("Observation?patient=2", Some(&patient_one)).await;
    assert!(ids(&other).is_empty(), "{other}");
    let (_, _, own) = app
        .get("Observation?patient=1&_count=100", Some(&patient_one))
        .await;
    assert!(!ids(&own).is_empty());
    let (_, _, included) = app
        .get(
            "Appointment?_include=Appointment:patient&_count=100",
            Some(&patient_one),
        )
        .await;
    for id in ids(&included)
        .iter()
        .filter(|id| id.starts_with("Patient/"))
    {
        assert_eq!(id, "Patient/1");
    }
    // A patient-portal user's user/ scopes behave like patient/ ones.
    let portal = app
        .token("user/*.rs openid fhirUser", None, Some("Patient/2"), 300)
        .await;
    let (_, _, seen) = app.get("Patient?_count=50", Some(&portal)).await;
    assert_eq!(ids(&seen), ["Patient/2"]);
    // A clinician's user/ scopes see every patient.
    let clinician = app
        .token("user/Patient.rs", None, Some("Practitioner/1"), 300)
        .await;
    let (_, _, seen) = app.get("Patient?_count=3", Some(&clinician)).await;
    assert_eq!(ids(&seen).len(), 3);

    // Granular: laboratory results only, for reads and searches alike.
    let labs = app
        .token("patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory", Some("1"), None, 300)
        .await;
    let (status, _, bundle) = app
        .get("Observation?patient=1&_count=200", Some(&labs))
        .await;
    assert_eq!(status, 200);
    for entry in bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["search"]["mode"] == "match")
    {
        assert_eq!(
            entry["resource"]["category"][0]["coding"][0]["code"], "laboratory",
            "{entry}"
        );
    }
    let (_, _, vitals) = app
        .get(
            "Observation?patient=1&category=vital-signs",
            Some(&patient_one),
        )
        .await;
    let vital = ids(&vitals)
        .into_iter()
        .next()
        .expect("patient 1 has vital signs in the fixture");
    assert_eq!(app.get(&vital, Some(&patient_one)).await.0, 200);
    assert_eq!(
        app.get(&vital, Some(&labs)).await.0,
        404,
        "{vital} read under a labs-only scope"
    );
    let (_, _, hidden) = app
        .get("Observation?patient=1&category=vital-signs", Some(&labs))
        .await;
    assert!(
        ids(&hidden).is_empty(),
        "vitals searched under a labs-only scope: {hidden}"
    );

    // A next link made under one token does not open under another.
    let system = app.token("system/*.rs", None, None, 300).await;
    let (_, _, first) = app.get("Patient?_count=2", Some(&system)).await;
    let next = first["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "next")
        .unwrap()["url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.get(&next, Some(&system)).await.0, 200);
    assert_eq!(app.get(&next, Some(&patient_one)).await.0, 404);
    })
    .await;
}
