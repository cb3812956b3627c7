//! What Portico advertises works, and everything it emits is valid R4.

use serde_json::Value as Json;

use crate::on_every_backend;
use crate::support::{PATIENTS, TestApp, assert_valid_r4};

/// A value of each search parameter type that parses, for probing advertised parameters.
fn probe_value(kind: &str, name: &str) -> &'static str {
    match (kind, name) {
        ("date", _) => "ge2000-01-01",
        ("reference", _) => "1",
        ("token", "_id") => "1",
        ("token", _) => "x",
        _ => "a",
    }
}

on_every_backend!(
    capability_statement_advertises_only_what_works,
    |app: TestApp| async move {
        let statement = app.get_fhir("metadata", 200).await;
        assert_eq!(statement["resourceType"], "CapabilityStatement");
        assert_eq!(statement["fhirVersion"], "4.0.1");
        assert_eq!(statement["kind"], "instance");
        assert_eq!(statement["format"], serde_json::json!(["json", "xml"]));
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
        for resource in &resources {
            let resource_type = resource["type"].as_str().unwrap();
            // Every advertised parameter is accepted under strict handling.
            for param in resource["searchParam"].as_array().unwrap() {
                let name = param["name"].as_str().unwrap();
                let kind = param["type"].as_str().unwrap();
                let path = format!("{resource_type}?{name}={}", probe_value(kind, name));
                let reply = app.get_strict(&path).await;
                assert_eq!(
                    reply.status,
                    200,
                    "advertised {path} fails: {}",
                    String::from_utf8_lossy(&reply.body)
                );
                assert_valid_r4(&reply.json());
            }
            for (listed, parameter) in [
                ("searchInclude", "_include"),
                ("searchRevInclude", "_revinclude"),
            ] {
                for include in resource[listed].as_array().cloned().unwrap_or_default() {
                    let path = format!(
                        "{resource_type}?_count=3&{parameter}={}",
                        include.as_str().unwrap()
                    );
                    assert_eq!(
                        app.get_strict(&path).await.status,
                        200,
                        "advertised {path} fails"
                    );
                }
            }
        }
        let patient = resources.iter().find(|r| r["type"] == "Patient").unwrap();
        assert_eq!(
            patient["supportedProfile"][0],
            "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"
        );
    }
);

on_every_backend!(
    every_emitted_resource_is_strict_r4,
    |app: TestApp| async move {
        let statement = app.get_fhir("metadata", 200).await;
        let mut seen = 0;
        for resource in statement["rest"][0]["resource"].as_array().unwrap() {
            let resource_type = resource["type"].as_str().unwrap();
            // all_pages validates every page strictly; here each resource is checked on its own too,
            // and read back by id to the same content.
            let all = app.all_pages(&format!("{resource_type}?_count=200")).await;
            assert!(
                !all.is_empty(),
                "{resource_type} has no data in the fixture"
            );
            for (index, item) in all.iter().enumerate() {
                assert_valid_r4(item);
                assert_eq!(item["resourceType"], resource_type);
                if index % 25 == 0 {
                    let read = app
                        .get_fhir(
                            &format!("{resource_type}/{}", item["id"].as_str().unwrap()),
                            200,
                        )
                        .await;
                    assert_eq!(
                        &read, item,
                        "read differs from search for {resource_type}/{}",
                        item["id"]
                    );
                }
            }
            seen += all.len();
        }
        assert!(seen > PATIENTS * 5, "only {seen} resources");
    }
);

on_every_backend!(
    references_resolve_to_served_resources,
    |app: TestApp| async move {
        // Every reference in the first page of each type points at a resource that reads back.
        for resource_type in [
            "Appointment",
            "Observation",
            "Claim",
            "Coverage",
            "Encounter",
            "Patient",
            "Location",
        ] {
            let bundle = app
                .get_fhir(&format!("{resource_type}?_count=40"), 200)
                .await;
            let mut references = Vec::new();
            collect_references(&bundle, &mut references);
            references.sort();
            references.dedup();
            for reference in references {
                app.get_fhir(&reference, 200).await;
            }
        }
    }
);

fn collect_references(value: &Json, out: &mut Vec<String>) {
    match value {
        Json::Object(map) => {
            for (key, child) in map {
                if key == "reference" {
                    if let Some(text) = child.as_str() {
                        out.push(text.to_owned());
                    }
                } else {
                    collect_references(child, out);
                }
            }
        }
        Json::Array(items) => items.iter().for_each(|i| collect_references(i, out)),
        _ => {}
    }
}

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
