//! Reads by id: identity, conditional reads, subsetting.

use crate::on_every_backend;
use crate::support::{TestApp, outcome_code};

on_every_backend!(
    reads_return_the_resource_with_its_validators,
    |app: TestApp| async move {
        let patient = app.get_fhir("Patient/7", 200).await;
        assert_eq!(patient["id"], "7");
        assert_eq!(patient["identifier"][0]["value"], "7");
        let reply = app.get("Patient/7").await;
        let etag = reply.header("etag").expect("ETag");
        assert!(etag.starts_with("W/\""));
        let modified = reply.header("last-modified").expect("Last-Modified");
        assert_eq!(
            reply.header("content-type").unwrap(),
            "application/fhir+json; charset=utf-8"
        );

        let same = app
            .send(
                app.client
                    .get(app.url("Patient/7"))
                    .header("If-None-Match", &etag),
            )
            .await;
        assert_eq!(same.status, 304);
        assert!(same.body.is_empty());
        let other = app
            .send(
                app.client
                    .get(app.url("Patient/7"))
                    .header("If-None-Match", "W/\"nope\""),
            )
            .await;
        assert_eq!(other.status, 200);
        let unchanged = app
            .send(
                app.client
                    .get(app.url("Patient/7"))
                    .header("If-Modified-Since", &modified),
            )
            .await;
        assert_eq!(unchanged.status, 304);
        let older = app
            .send(
                app.client
                    .get(app.url("Patient/7"))
                    .header("If-Modified-Since", "Mon, 01 Jan 2001 00:00:00 GMT"),
            )
            .await;
        assert_eq!(older.status, 200);
    }
);

on_every_backend!(
    unknown_ids_and_types_are_404_outcomes,
    |app: TestApp| async move {
        for path in [
            "Patient/999999",
            "Patient/abc",
            "Patient/07",
            "Observation/vs-1-nope",
            "Observation/lab-0",
            "Claim/1-2",
            "Organization/9",
        ] {
            let reply = app.get(path).await;
            assert_eq!(reply.status, 404, "{path}");
            assert_eq!(outcome_code(&reply), "not-found", "{path}");
        }
        let reply = app.get("Medication/1").await;
        assert_eq!(reply.status, 404);
        assert!(String::from_utf8_lossy(&reply.body).contains("not served by this server"));
        let reply = app.get("Pateint/1").await;
        assert_eq!(reply.status, 404);
        assert!(String::from_utf8_lossy(&reply.body).contains("unknown resource type"));
        let reply = app.get("Patient/1/_history/1").await;
        assert_eq!(reply.status, 404);
        assert!(String::from_utf8_lossy(&reply.body).contains("history is not supported"));
    }
);

on_every_backend!(every_id_form_reads_back, |app: TestApp| async move {
    for path in [
        "Organization/ins-3",
        "Organization/fac-1",
        "Location/1",
        "Practitioner/1",
    ] {
        let body = app.get_fhir(path, 200).await;
        assert_eq!(
            body["id"].as_str().unwrap(),
            path.split('/').nth(1).unwrap()
        );
    }
    for search in [
        "Observation?category=laboratory&_count=1",
        "Encounter?_count=1",
        "Coverage?_count=1",
        "Appointment?_count=1",
    ] {
        let bundle = app.get_fhir(search, 200).await;
        let first = &bundle["entry"][0]["resource"];
        let read = app
            .get_fhir(
                &format!(
                    "{}/{}",
                    first["resourceType"].as_str().unwrap(),
                    first["id"].as_str().unwrap()
                ),
                200,
            )
            .await;
        assert_eq!(&read, first);
    }
    let vitals = app
        .get_fhir("Observation?category=vital-signs&_count=3", 200)
        .await;
    for entry in vitals["entry"].as_array().unwrap() {
        let id = entry["resource"]["id"].as_str().unwrap();
        let read = app.get_fhir(&format!("Observation/{id}"), 200).await;
        assert_eq!(read, entry["resource"]);
    }
    let claims = app.get_fhir("Claim?_count=1", 200).await;
    let id = claims["entry"][0]["resource"]["id"].as_str().unwrap();
    assert_eq!(
        id.split('-').count(),
        3,
        "claims are keyed by patient, encounter and payer"
    );
    app.get_fhir(&format!("Claim/{id}"), 200).await;
});

on_every_backend!(reads_can_be_subsetted, |app: TestApp| async move {
    let summary = app.get_fhir("Patient/3?_summary=true", 200).await;
    assert!(summary.get("maritalStatus").is_none() && summary.get("extension").is_none());
    assert!(summary.get("name").is_some());
    assert_eq!(summary["meta"]["tag"][0]["code"], "SUBSETTED");
    let elements = app.get_fhir("Patient/3?_elements=gender", 200).await;
    let mut keys: Vec<&String> = elements.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, vec!["active", "gender", "id", "meta", "resourceType"]);
});
