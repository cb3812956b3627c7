//! Bad input gets a clear OperationOutcome with the right status, and nothing gets through to SQL.

use crate::on_every_backend;
use crate::support::{PATIENTS, TestApp, assert_valid_r4, outcome_code};

on_every_backend!(
    malformed_parameters_are_400_naming_the_parameter,
    |app: TestApp| async move {
        for (path, parameter) in [
            ("Patient?birthdate=1980-13", "birthdate"),
            ("Patient?birthdate=yesterday", "birthdate"),
            ("Patient?_count=ten", "_count"),
            ("Patient?gender=a|b|c", "gender"),
            ("Patient?family:fuzzy=x", "family:fuzzy"),
            ("Observation?date=2024-01-01T25:00", "date"),
            ("Patient?_total=maybe", "_total"),
            ("Patient?_cursor=forged.token", "_cursor"),
        ] {
            let reply = app.get(path).await;
            assert_eq!(reply.status, 400, "{path}");
            assert_eq!(outcome_code(&reply), "invalid", "{path}");
            assert_eq!(
                reply.json()["issue"][0]["expression"][0],
                parameter,
                "{path}"
            );
        }
    }
);

on_every_backend!(
    strict_handling_rejects_what_lenient_ignores,
    |app: TestApp| async move {
        let lenient = app.get("Patient?shoe-size=9").await;
        assert_eq!(lenient.status, 200);
        let strict = app.get_strict("Patient?shoe-size=9&_sort=shoe-size").await;
        assert_eq!(strict.status, 400);
        assert_eq!(outcome_code(&strict), "not-supported");
        let issues = strict.json()["issue"].as_array().unwrap().len();
        assert_eq!(issues, 2, "every problem is reported at once");
    }
);

on_every_backend!(media_types_and_methods, |app: TestApp| async move {
    let html = app
        .send(
            app.client
                .get(app.url("Patient/1"))
                .header("Accept", "text/html"),
        )
        .await;
    assert_eq!(html.status, 406);
    assert_eq!(outcome_code(&html), "not-supported");
    assert_eq!(app.get("Patient?_format=turtle").await.status, 406);
    let json_body = app
        .send(
            app.client
                .post(app.url("Patient/_search"))
                .header("Content-Type", "application/json")
                .body("{}"),
        )
        .await;
    assert_eq!(json_body.status, 415);
    let create = app
        .send(
            app.client
                .post(app.url("Patient"))
                .header("Content-Type", "application/fhir+json")
                .body("{}"),
        )
        .await;
    assert_eq!(create.status, 405);
    assert_eq!(outcome_code(&create), "not-supported");
    let nowhere = app
        .get(&format!(
            "{}/nothing/here",
            app.base.trim_end_matches("/fhir")
        ))
        .await;
    assert_eq!(nowhere.status, 404);
    assert_eq!(outcome_code(&nowhere), "not-found");
    let xml_error = app.get("Patient/999999?_format=xml").await;
    assert_eq!(xml_error.status, 404);
    assert!(String::from_utf8_lossy(&xml_error.body).contains("<OperationOutcome"));
});

on_every_backend!(
    cursors_cannot_be_moved_or_edited,
    |app: TestApp| async move {
        let first = app.get_fhir("Patient?gender=female&_count=2", 200).await;
        let next = first["link"][1]["url"].as_str().unwrap().to_owned();
        let cursor = next.split("_cursor=").nth(1).unwrap();
        let moved = app
            .get(&format!("Patient?gender=male&_count=2&_cursor={cursor}"))
            .await;
        // A well-formed cursor this server did not issue for the query names no page: 404.
        assert_eq!(moved.status, 404);
        assert!(String::from_utf8_lossy(&moved.body).contains("different query"));
        let mut edited = cursor.to_owned().into_bytes();
        edited[2] = if edited[2] == b'A' { b'B' } else { b'A' };
        let edited = app
            .get(&format!(
                "Patient?gender=female&_count=2&_cursor={}",
                String::from_utf8(edited).unwrap()
            ))
            .await;
        assert_eq!(edited.status, 404);
        // A restarted server with the same key still honours the link.
        let restarted = crate::support::start(&crate::support::settings(&app.db_url, 5000)).await;
        let path = next.replace(&app.base, &restarted);
        let client_of_restarted = crate::support::TestApp::at(restarted, app.db_url.clone());
        assert_eq!(client_of_restarted.get(&path).await.status, 200);
    }
);

// Hostile values for every parameter type: each answers 400 or correct results, never a 500,
// and the database is unchanged afterwards.
on_every_backend!(
    injection_corpus_never_reaches_sql,
    |app: TestApp| async move {
        let payloads = [
            "' OR '1'='1",
            "1' OR 1=1 --",
            "\"; DROP TABLE patient_data; --",
            "1; DELETE FROM patient_data",
            "%",
            "_",
            "%25",
            "\\",
            "\\'",
            "`",
            "' UNION SELECT password FROM users --",
            "0x27",
            "\u{0}",
            "ﾟ･✿ヾ╲(｡◕‿◕｡)╱✿･ﾟ",
            "Robert'); DROP TABLE claims;--",
            "1 AND SLEEP(5)",
            "le' OR 'a'='a",
            "http://x|' OR 1=1 --",
            "Patient/1' OR '1'='1",
        ];
        let long = "A".repeat(5000);
        let parameters = [
            "Patient?family=",
            "Patient?name:contains=",
            "Patient?family:exact=",
            "Patient?gender=",
            "Patient?identifier=",
            "Patient?birthdate=",
            "Patient?_id=",
            "Patient?general-practitioner=",
            "Observation?code=",
            "Observation?patient=",
            "Observation?date=",
            "Appointment?status=",
            "Appointment?actor=",
            "Claim?created=",
            "Patient?_sort=",
            "Patient?_include=",
            "Patient?_elements=",
        ];
        for parameter in parameters {
            for payload in payloads.iter().copied().chain([long.as_str()]) {
                let path = format!("{parameter}{}", urlencode(payload));
                let reply = app.get(&path).await;
                assert!(
                    reply.status == 200 || reply.status == 400,
                    "{path} -> {}: {}",
                    reply.status,
                    String::from_utf8_lossy(&reply.body)
                );
                let body = reply.json();
                assert_valid_r4(&body);
                if reply.status == 200 {
                    // A payload that is a plain value can only match literally; '%' and '_' are not wildcards.
                    let hits = crate::support::matches(&body).len();
                    assert!(
                        hits < PATIENTS
                            || parameter.contains("_sort")
                            || parameter.contains("_include")
                            || parameter.contains("_elements"),
                        "{path} matched {hits}"
                    );
                }
            }
        }
        assert_eq!(
            app.all_pages("Patient?_count=500").await.len(),
            PATIENTS,
            "patients intact"
        );
        assert!(
            !app.all_pages("Claim?_count=500").await.is_empty(),
            "claims intact"
        );
    }
);

fn urlencode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
