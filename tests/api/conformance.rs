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
                "AuditEvent",
                "Claim",
                "Coverage",
                "Encounter",
                "Group",
                "Location",
                "Observation",
                "Organization",
                "Patient",
                "Practitioner",
                "Subscription"
            ]
        );
        // Backport subscriptions (SB-04, SB-05): the profile, one canonical per topic, $status.
        let subscription = resources
            .iter()
            .find(|r| r["type"] == "Subscription")
            .unwrap();
        assert_eq!(
            subscription["supportedProfile"][0],
            "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription"
        );
        let topics: Vec<&str> = subscription["extension"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["valueCanonical"].as_str())
            .collect();
        assert!(
            topics.contains(&"https://portico.health/fhir/SubscriptionTopic/appointment-cancelled"),
            "{topics:?}"
        );
        assert!(
            subscription["operation"]
                .as_array()
                .unwrap()
                .iter()
                .any(|o| o["name"] == "status")
        );
        // The audit trail, from the state store (tests/api/audit.rs checks each parameter).
        let audit = resources
            .iter()
            .find(|r| r["type"] == "AuditEvent")
            .unwrap();
        let audit_params: Vec<&str> = audit["searchParam"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(audit_params, ["date", "patient", "agent", "outcome"]);
        assert_eq!(
            audit["interaction"],
            serde_json::json!([{"code": "read"}, {"code": "search-type"}])
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
        let openapi = app.get(&format!("{root}/openapi.json")).await;
        assert_eq!(openapi.header("content-type").unwrap(), "application/json");
        assert!(
            openapi.json()["openapi"]
                .as_str()
                .unwrap()
                .starts_with("3.")
        );
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
        for path in ["health", "health/ready", "health/live"] {
            let health = app.get(&format!("{root}/{path}")).await;
            assert_eq!(health.status, 200, "{path}");
        }
    }
);

/// The names of an OpenAPI operation's parameters.
fn parameter_names(operation: &serde_json::Value) -> Vec<String> {
    operation["parameters"]
        .as_array()
        .unwrap_or_else(|| panic!("no parameters: {operation}"))
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect()
}

on_every_backend!(
    openapi_documents_what_the_server_answers,
    |app: TestApp| async move {
        let root = app.base.trim_end_matches("/fhir");
        let openapi = app.get(&format!("{root}/openapi.json")).await.json();
        let statement = app.get_fhir("metadata", 200).await;
        // The result parameters the parser knows are documented on every search.
        let common = portico::search::parse::RESULT_PARAMETERS;
        let resources = crate::support::adapter_resources(&statement);
        // metadata, health (and its ready and live paths), openapi.json, SMART discovery at the
        // root and under the base
        let mut documented_paths = 7;
        for resource in &resources {
            let resource_type = resource["type"].as_str().unwrap();
            let capability: Vec<String> = resource["searchParam"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap().to_owned())
                .collect();
            let search = &openapi["paths"][format!("/fhir/{resource_type}")]["get"];
            let names = parameter_names(search);
            // The search parameters are exactly the CapabilityStatement's, then the common ones.
            assert_eq!(names[..capability.len()], capability[..], "{resource_type}");
            assert_eq!(names[capability.len()..], common[..], "{resource_type}");
            let form = &openapi["paths"][format!("/fhir/{resource_type}/_search")]["post"];
            // Form fields are the same parameters (an object's properties, in name order).
            let mut fields: Vec<&String> = form["requestBody"]["content"]
                ["application/x-www-form-urlencoded"]["schema"]["properties"]
                .as_object()
                .unwrap()
                .keys()
                .collect();
            fields.sort();
            let mut sorted_names: Vec<&String> = names.iter().collect();
            sorted_names.sort();
            assert_eq!(fields, sorted_names, "{resource_type}");
            let read = &openapi["paths"][format!("/fhir/{resource_type}/{{id}}")]["get"];
            assert!(parameter_names(read).contains(&"id".to_owned()));
            documented_paths += 3;
            let statuses = |operation: &serde_json::Value| -> Vec<String> {
                operation["responses"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .cloned()
                    .collect()
            };
            assert_eq!(
                statuses(search),
                [
                    "200", "400", "401", "403", "404", "406", "500", "503", "504"
                ],
                "{resource_type}"
            );
            assert_eq!(
                statuses(form),
                [
                    "200", "400", "401", "403", "404", "406", "415", "500", "503", "504"
                ],
                "{resource_type}"
            );
            assert_eq!(
                statuses(read),
                [
                    "200", "304", "401", "403", "404", "406", "500", "502", "503", "504"
                ],
                "{resource_type}"
            );
            let ok: Vec<&String> = search["responses"]["200"]["content"]
                .as_object()
                .unwrap()
                .keys()
                .collect();
            assert_eq!(
                ok,
                [
                    "application/fhir+json",
                    "application/json",
                    "application/fhir+xml",
                    "application/xml",
                    "text/xml"
                ],
                "every type negotiation can answer"
            );
            for operation in [search, form, read] {
                for code in ["503", "504"] {
                    assert!(
                        operation["responses"][code]["headers"]["Retry-After"].is_object(),
                        "{resource_type} {code}"
                    );
                }
                assert_eq!(
                    operation["responses"]["400"]["content"]["application/fhir+json"]["schema"]
                        ["$ref"]
                        .as_str()
                        .unwrap_or("#/components/schemas/OperationOutcome"),
                    "#/components/schemas/OperationOutcome"
                );
            }
        }
        // The audit trail and Portico's Groups, whatever the adapter: the CapabilityStatement's
        // parameters, then their own result parameters.
        for state_type in ["AuditEvent", "Group"] {
            let entry = statement["rest"][0]["resource"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["type"] == state_type)
                .unwrap_or_else(|| panic!("{state_type} is listed"));
            let capability: Vec<&str> = entry["searchParam"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            let names = parameter_names(&openapi["paths"][format!("/fhir/{state_type}")]["get"]);
            assert_eq!(
                names,
                [
                    &capability[..],
                    &["_count", "_cursor", "_format", "_pretty"]
                ]
                .concat(),
                "{state_type}"
            );
            for path in [
                format!("/fhir/{state_type}/_search"),
                format!("/fhir/{state_type}/{{id}}"),
            ] {
                assert!(openapi["paths"][&path].is_object(), "{path}");
            }
            documented_paths += 3;
        }
        // Subscriptions, from the state store too (src/api/openapi/subscriptions.rs).
        for path in [
            "/fhir/Subscription",
            "/fhir/Subscription/_search",
            "/fhir/Subscription/$status",
            "/fhir/Subscription/$get-ws-binding-token",
            "/fhir/Subscription/{id}",
            "/fhir/Subscription/{id}/$status",
            "/fhir/Subscription/{id}/$events",
            "/fhir/Subscription/{id}/$get-ws-binding-token",
        ] {
            assert!(openapi["paths"][path].is_object(), "{path}");
            documented_paths += 1;
        }
        // Bulk Data export: the kick-offs by GET and POST, the status and the files
        // (src/api/openapi/export.rs).
        for (path, methods) in [
            ("/fhir/$export", &["get", "post"][..]),
            ("/fhir/Patient/$export", &["get", "post"]),
            ("/fhir/Group/{id}/$export", &["get", "post"]),
            ("/fhir/$export-status/{id}", &["get", "delete"]),
            ("/fhir/$export-file/{id}/{name}", &["get"]),
        ] {
            for method in methods {
                assert!(
                    openapi["paths"][path][method].is_object(),
                    "{method} {path}"
                );
            }
            documented_paths += 1;
        }
        assert_eq!(
            openapi["paths"].as_object().unwrap().len(),
            documented_paths,
            "no generic or unserved paths"
        );
        for path in [
            "/fhir/metadata",
            "/health",
            "/health/ready",
            "/health/live",
            "/openapi.json",
            "/.well-known/smart-configuration",
            "/fhir/.well-known/smart-configuration",
        ] {
            assert!(openapi["paths"][path]["get"].is_object(), "{path}");
        }
        assert_eq!(
            openapi["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        assert!(openapi["components"]["responses"]["MethodNotAllowed"].is_object());

        // What the document says about 405 and 404 holds.
        for (method, path, allow) in [
            (reqwest::Method::PUT, "Patient/1", "GET, HEAD"),
            (reqwest::Method::DELETE, "Patient/1", "GET, HEAD"),
            (reqwest::Method::POST, "Patient", "GET, HEAD"),
            (reqwest::Method::GET, "Patient/_search", "POST"),
            (reqwest::Method::PATCH, "metadata", "GET, HEAD"),
            (reqwest::Method::PUT, "$export", "GET, HEAD, POST"),
            (
                reqwest::Method::DELETE,
                "Patient/$export",
                "GET, HEAD, POST",
            ),
            (
                reqwest::Method::POST,
                "$export-status/x",
                "GET, HEAD, DELETE",
            ),
            (
                reqwest::Method::PATCH,
                "Subscription/x",
                "GET, HEAD, PUT, DELETE",
            ),
            (
                reqwest::Method::DELETE,
                "Subscription/$status",
                "GET, HEAD, POST",
            ),
        ] {
            let reply = app
                .send(app.client.request(method.clone(), app.url(path)))
                .await;
            assert_eq!(reply.status, 405, "{method} {path}");
            assert_eq!(
                reply.header("allow").as_deref(),
                Some(allow),
                "{method} {path}"
            );
            assert_eq!(reply.json()["resourceType"], "OperationOutcome");
        }
        let foreign = app.get("Patient?_cursor=AAAA.AAAA").await;
        assert_eq!(
            foreign.status, 404,
            "a well-formed cursor this server did not issue"
        );
        let malformed = app.get("Patient?_cursor=AAAAA").await;
        assert_eq!(malformed.status, 400);
    }
);
