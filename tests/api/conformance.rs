//! The CapabilityStatement, output formats, OpenAPI and CORS (the adapter kit in kit.rs checks
//! that everything advertised works and that every emitted resource is strict R4).

use crate::on_every_backend;
use crate::support::TestApp;

on_every_backend!(
    capability_statement_describes_the_server,
    |app: TestApp| async move {
        let statement = app.get_fhir("metadata", 200).await;
        assert_eq!(statement["resourceType"], "CapabilityStatement");
        assert_eq!(statement["fhirVersion"], "4.0.1");
        assert_eq!(statement["kind"], "instance");
        assert_eq!(statement["format"], serde_json::json!(["json", "xml"]));
        assert_eq!(statement["rest"][0]["mode"], "server");
        let resources = statement["rest"][0]["resource"].as_array().unwrap().clone();
        let types: Vec<&str> = resources
            .iter()
            .map(|r| r["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            vec![
                "Appointment",
                "Claim",
                "Coverage",
                "Encounter",
                "Location",
                "Observation",
                "Organization",
                "Patient",
                "Practitioner"
            ]
        );
        let patient = resources.iter().find(|r| r["type"] == "Patient").unwrap();
        assert_eq!(
            patient["supportedProfile"][0],
            "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"
        );
        assert_eq!(patient["versioning"], "no-version");
        assert!(
            patient["searchRevInclude"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!("Observation:patient"))
        );
        // What the kit checks per adapter (every advertised parameter works) starts from this list.
        let names: Vec<&str> = patient["searchParam"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        for required in [
            "_id",
            "identifier",
            "name",
            "family",
            "given",
            "birthdate",
            "gender",
        ] {
            assert!(
                names.contains(&required),
                "US Core requires Patient?{required}"
            );
        }
    }
);

on_every_backend!(xml_output_is_r4_xml, |app: TestApp| async move {
    for path in [
        "Patient/1?_format=xml",
        "Observation?patient=1&_format=application/fhir%2Bxml",
        "metadata?_format=xml",
    ] {
        let reply = app.get(path).await;
        assert_eq!(reply.status, 200, "{path}");
        assert!(
            reply
                .header("content-type")
                .unwrap()
                .starts_with("application/fhir+xml"),
            "{path}"
        );
        let text = String::from_utf8(reply.body.clone()).unwrap();
        assert!(
            text.contains("xmlns=\"http://hl7.org/fhir\""),
            "{path}: {text}"
        );
        fhirbolt::xml::from_str::<fhirbolt::model::r4::Resource>(&text, None)
            .unwrap_or_else(|e| panic!("{path}: invalid R4 XML: {e}"));
    }
    let reply = app
        .send(
            app.client
                .get(app.url("Patient/2"))
                .header("Accept", "application/xml"),
        )
        .await;
    assert_eq!(
        reply.header("content-type").unwrap(),
        "application/xml; charset=utf-8"
    );
    let reply = app
        .send(
            app.client
                .get(app.url("Patient/2"))
                .header("Accept", "application/json"),
        )
        .await;
    assert_eq!(
        reply.header("content-type").unwrap(),
        "application/json; charset=utf-8"
    );
    let bundle = app.get("Patient?_count=2&_format=xml").await;
    let text = String::from_utf8(bundle.body).unwrap();
    assert_eq!(
        text.matches("_format=xml\"/>").count(),
        2,
        "self and next links keep the format"
    );
    let pretty = app.get("Patient/2?_pretty=true").await;
    assert!(
        String::from_utf8(pretty.body)
            .unwrap()
            .contains("\n  \"resourceType\"")
    );
});

on_every_backend!(
    openapi_and_cors_serve_browser_apps,
    |app: TestApp| async move {
        let root = app.base.trim_end_matches("/fhir");
        let openapi = app.get(&format!("{root}/openapi.json")).await.json();
        assert!(openapi["paths"]["/fhir/{resource_type}"]["get"].is_object());
        assert!(openapi["openapi"].as_str().unwrap().starts_with("3."));
        let preflight = app
            .send(
                app.client
                    .request(reqwest::Method::OPTIONS, app.url("Patient"))
                    .header("Origin", "https://app.example")
                    .header("Access-Control-Request-Method", "GET"),
            )
            .await;
        assert!(preflight.status < 300, "{}", preflight.status);
        assert_eq!(
            preflight.header("access-control-allow-origin").as_deref(),
            Some("*")
        );
        let health = app.get(&format!("{root}/health")).await;
        assert_eq!(health.status, 200);
    }
);
