//! Table tests of the scope parser, its printing and narrowing.

use super::*;

fn resource(word: &str) -> ResourceScope {
    match parse_scope(word) {
        Ok(Scope::Resource(scope)) => scope,
        other => panic!("{word}: not a resource scope: {other:?}"),
    }
}

/// `(scope, context, type, cruds letters, v1)` for every well-formed resource scope shape.
#[test]
fn resource_scopes_parse_to_their_permissions() {
    let cases: &[(&str, Context, Option<&str>, &str, bool)] = &[
        (
            "patient/Patient.rs",
            Context::Patient,
            Some("Patient"),
            "rs",
            false,
        ),
        (
            "user/Observation.r",
            Context::User,
            Some("Observation"),
            "r",
            false,
        ),
        ("system/*.cruds", Context::System, None, "cruds", false),
        ("patient/*.s", Context::Patient, None, "s", false),
        (
            "user/Encounter.cud",
            Context::User,
            Some("Encounter"),
            "cud",
            false,
        ),
        ("system/Claim.d", Context::System, Some("Claim"), "d", false),
        (
            "patient/Coverage.crs",
            Context::Patient,
            Some("Coverage"),
            "crs",
            false,
        ),
        // v1 words map to v2 letters and remember they were v1 (SM-31).
        ("patient/*.read", Context::Patient, None, "rs", true),
        (
            "user/Patient.write",
            Context::User,
            Some("Patient"),
            "cud",
            true,
        ),
        ("system/*.*", Context::System, None, "cruds", true),
        (
            "patient/Observation.*",
            Context::Patient,
            Some("Observation"),
            "cruds",
            true,
        ),
    ];
    for (word, context, resource_type, letters, v1) in cases {
        let scope = resource(word);
        assert_eq!(scope.context, *context, "{word}");
        assert_eq!(scope.resource_type.as_deref(), *resource_type, "{word}");
        assert_eq!(scope.letters(), *letters, "{word}");
        assert_eq!(scope.v1, *v1, "{word}");
        assert!(scope.filter.is_empty(), "{word}");
        assert_eq!(scope.to_string(), *word, "printed back as requested");
    }
}

#[test]
fn granular_scopes_decode_their_parameters_and_print_back() {
    /// `(scope, decoded filter, printed back)`.
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (
            "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
            &[(
                "category",
                "http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
            )],
            "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
        ),
        (
            "user/Observation.rs?category=vital-signs&status=final",
            &[("category", "vital-signs"), ("status", "final")],
            "user/Observation.rs?category=vital-signs&status=final",
        ),
        // Percent-decoded like a query string; printed encoded only where it must be.
        (
            "patient/Observation.s?code=http%3A%2F%2Floinc.org%7C8867-4",
            &[("code", "http://loinc.org|8867-4")],
            "patient/Observation.s?code=http://loinc.org|8867-4",
        ),
        (
            "patient/Condition.rs?category=a%26b%3Dc",
            &[("category", "a&b=c")],
            "patient/Condition.rs?category=a%26b%3Dc",
        ),
        (
            "patient/Condition.rs?code=x+y",
            &[("code", "x y")],
            "patient/Condition.rs?code=x%20y",
        ),
    ];
    for (word, filter, printed) in cases {
        let scope = resource(word);
        let expected: Vec<(String, String)> = filter
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(scope.filter, expected, "{word}");
        assert_eq!(scope.to_string(), *printed, "{word}");
        assert_eq!(
            resource(printed),
            scope,
            "{printed} parses to the same scope"
        );
    }
}

#[test]
fn launch_and_identity_words_parse_and_print() {
    let cases = [
        ("launch", Scope::Launch),
        ("launch/patient", Scope::LaunchPatient),
        ("launch/encounter", Scope::LaunchEncounter),
        ("openid", Scope::OpenId),
        ("fhirUser", Scope::FhirUser),
        ("profile", Scope::Profile),
        ("offline_access", Scope::OfflineAccess),
        ("online_access", Scope::OnlineAccess),
    ];
    for (word, scope) in cases {
        assert_eq!(parse_scope(word), Ok(scope.clone()), "{word}");
        assert_eq!(scope.to_string(), word);
    }
}

/// Words that are refused, never re-interpreted (SM-30), with a piece of the reason.
#[test]
fn malformed_scopes_are_refused() {
    let cases = [
        ("patient/Observation.dus", "cruds order"),
        ("patient/Observation.sr", "cruds order"),
        ("patient/Observation.rr", "cruds order"),
        ("patient/Observation.rx", "'x' is not a permission"),
        ("patient/Observation.R", "'R' is not a permission"),
        ("patient/Observation.", "no permissions"),
        ("patient/Observation", "Type.permissions"),
        ("patient/Observations.rs", "not an R4 resource type"),
        ("patient/observation.rs", "not an R4 resource type"),
        ("patient/.rs", "not an R4 resource type"),
        ("patient/**.rs", "not an R4 resource type"),
        ("admin/Patient.rs", "unknown scope"),
        ("Patient/Patient.rs", "unknown scope"),
        ("patient", "unknown scope"),
        ("launch/practitioner", "unknown scope"),
        ("OpenId", "unknown scope"),
        ("email", "unknown scope"),
        ("patient/*.read?category=laboratory", "v1 scopes"),
        ("patient/Observation.rs?", "empty ?parameters"),
        ("patient/Observation.rs?category", "name and a value"),
        ("patient/Observation.rs?category=", "name and a value"),
        ("patient/Observation.rs?=laboratory", "name and a value"),
        ("patient/Observation.rs?a=1&&b=2", "name and a value"),
        ("patient/Patient.r\"s", "printable ASCII"),
        ("patient/Patient.rs\\", "printable ASCII"),
        ("patient/Patient.rsé", "printable ASCII"),
        ("patient/Patient.rs\t", "printable ASCII"),
    ];
    for (word, reason) in cases {
        match parse_scope(word) {
            Err(error) => {
                assert_eq!(error.scope, word);
                assert!(
                    error.reason.contains(reason),
                    "{word}: {:?} does not say {reason:?}",
                    error.reason
                );
                assert_eq!(error.oauth_error(), "invalid_scope");
            }
            Ok(scope) => panic!("{word} was accepted as {scope:?}"),
        }
    }
}

#[test]
fn scope_lists_split_on_spaces() {
    let scopes = parse_scopes("  openid fhirUser   patient/*.read launch/patient ").unwrap();
    assert_eq!(
        format_scopes(&scopes),
        "openid fhirUser patient/*.read launch/patient"
    );
    assert_eq!(parse_scopes(""), Ok(Vec::new()));
    let error = parse_scopes("openid patient/Patient.sr launch").unwrap_err();
    assert_eq!(error.scope, "patient/Patient.sr");

    let (scopes, errors) = parse_scopes_lenient("openid email patient/Patient.rs user/Foo.r");
    assert_eq!(format_scopes(&scopes), "openid patient/Patient.rs");
    let refused: Vec<&str> = errors.iter().map(|e| e.scope.as_str()).collect();
    assert_eq!(refused, ["email", "user/Foo.r"]);
}

/// `(requested, allowed, granted)`, all as scope strings.
#[test]
fn narrowing_grants_what_both_sides_permit() {
    let cases = [
        // Exactly what is allowed.
        (
            "patient/Patient.rs",
            "patient/Patient.rs",
            "patient/Patient.rs",
        ),
        // A wildcard allowance covers any type.
        (
            "patient/Observation.rs",
            "patient/*.rs",
            "patient/Observation.rs",
        ),
        // A requested wildcard becomes the allowed types.
        (
            "patient/*.rs",
            "patient/Patient.rs patient/Observation.r",
            "patient/Patient.rs patient/Observation.r",
        ),
        // Permissions intersect; writes are dropped for a read-only client.
        ("user/*.cruds", "user/*.rs", "user/*.rs"),
        ("user/Patient.cud", "user/*.rs", ""),
        // The context must match.
        ("user/Patient.rs", "patient/*.rs", ""),
        ("system/*.rs", "patient/*.rs user/*.rs", ""),
        // v1 stays v1 while granted whole, and turns v2 when narrowed (SM-31).
        ("patient/*.read", "patient/*.rs", "patient/*.read"),
        ("patient/*.read", "patient/*.cruds", "patient/*.read"),
        ("patient/*.*", "patient/*.rs", "patient/*.rs"),
        ("patient/*.read", "patient/*.r", "patient/*.r"),
        (
            "patient/*.read",
            "patient/Patient.rs",
            "patient/Patient.read",
        ),
        // Granular filters are kept, and an allowed filter narrows a plain request.
        (
            "patient/Observation.rs?category=laboratory",
            "patient/*.rs",
            "patient/Observation.rs?category=laboratory",
        ),
        (
            "patient/Observation.rs",
            "patient/Observation.rs?category=vital-signs",
            "patient/Observation.rs?category=vital-signs",
        ),
        (
            "patient/*.read",
            "patient/Observation.rs?category=vital-signs",
            "patient/Observation.rs?category=vital-signs",
        ),
        (
            "patient/Observation.rs?category=laboratory",
            "patient/Observation.rs?category=vital-signs",
            "patient/Observation.rs?category=laboratory&category=vital-signs",
        ),
        // Words are granted only when allowed; duplicates collapse.
        (
            "openid fhirUser launch/patient offline_access",
            "openid fhirUser launch/patient",
            "openid fhirUser launch/patient",
        ),
        (
            "patient/Patient.rs patient/Patient.rs openid openid",
            "patient/*.rs openid",
            "patient/Patient.rs openid",
        ),
        ("launch", "patient/*.rs", ""),
    ];
    for (requested, allowed, granted) in cases {
        let requested_scopes = parse_scopes(requested).unwrap();
        let allowed_scopes = parse_scopes(allowed).unwrap();
        assert_eq!(
            format_scopes(&narrow(&requested_scopes, &allowed_scopes)),
            granted,
            "{requested} within {allowed}"
        );
    }
}
