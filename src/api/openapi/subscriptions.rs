//! The OpenAPI paths of `/fhir/Subscription` (`api::subscriptions`): create, read, update,
//! delete, search and form search, `$status` on the type and an instance, `$events`, and
//! `$get-ws-binding-token` (type and instance); each with the answers the handlers give. Served from the state store whatever the adapter.

use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Schema};
use utoipa::openapi::{RefOr, Required};

use super::{
    Answers, FORM_BODY_REFUSED, Param, Source, answer_media_types, component, enumerated,
    fhir_response, format_params, patterned, read_operation, resource_schema, search_operations,
    string, with_responses, with_responses_as,
};

const SUBSCRIPTION: &str = "Subscription";

/// A Subscription as a client sends it; the server checks the rest (400 names each problem).
fn request_schema() -> RefOr<Schema> {
    ObjectBuilder::new()
        .required("resourceType")
        .required("status")
        .required("reason")
        .required("criteria")
        .required("channel")
        .property("resourceType", enumerated(&[SUBSCRIPTION]))
        .property("status", enumerated(&["requested", "active", "off"]))
        .property("reason", string())
        .property("criteria", string().description(Some(
            "A topic's canonical URL (https://portico.health/fhir/SubscriptionTopic/<slug>, filters in _criteria's backport-filter-criteria extensions) or an R4 search (Appointment?status=booked)",
        )))
        .property("channel", ObjectBuilder::new().required("type").property("type", string()))
        .additional_properties(Some(AdditionalProperties::FreeForm(true)))
        .description(Some(
            "A FHIR R4 Subscription (Subscriptions R5 Backport IG, or classic criteria)",
        ))
        .into()
}

fn parameters_schema() -> RefOr<Schema> {
    ObjectBuilder::new()
        .required("resourceType")
        .required("parameter")
        .property("resourceType", enumerated(&["Parameters"]))
        .property(
            "parameter",
            utoipa::openapi::schema::ArrayBuilder::new().items(
                ObjectBuilder::new()
                    .required("name")
                    .property("name", string()),
            ),
        )
        .description(Some("A FHIR R4 Parameters"))
        .into()
}

fn id_parameter() -> ParameterBuilder {
    ParameterBuilder::new()
        .name("id")
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some("The subscription's id"))
        .schema(Some(string()))
}

/// What the search and type-level `$status` take: comma lists, ORed.
fn filter_params() -> Vec<Param> {
    let mut params = vec![
        Param::new("_id", string().into(), "Subscription ids, comma-separated"),
        Param::new(
            "status",
            string().into(),
            "Statuses (requested, active, error, off), comma-separated",
        ),
        Param::new(
            "url",
            string().into(),
            "Channel endpoints, comma-separated, as the subscriptions name them",
        ),
        Param::new(
            "_count",
            string().into(),
            "Accepted and ignored: every match is in the one page",
        ),
    ];
    params.extend(format_params());
    params
}

fn state_answers() -> Answers {
    Answers {
        not_modified: false,
        bad_request: None,
        not_found: None,
        unsupported_body: None,
        unservable: false,
        source: Source::State,
    }
}

/// `GET`/`POST` of an operation taking `params` in the query or a form body and answering
/// `ok_schema`; on one subscription (an `{id}` path) when `on_instance`.
fn query_or_form(
    on_instance: bool,
    operation_id: &str,
    summary: &str,
    params: &[Param],
    (ok, ok_schema): (&str, RefOr<Schema>),
    answers: Answers,
) -> PathItem {
    let with_id = |operation: OperationBuilder| {
        if on_instance {
            operation.parameter(id_parameter())
        } else {
            operation
        }
    };
    let get = with_id(
        OperationBuilder::new()
            .operation_id(Some(operation_id))
            .tag(SUBSCRIPTION)
            .summary(Some(summary))
            .parameters(Some(params.iter().map(Param::query))),
    );
    let mut form = ObjectBuilder::new();
    for param in params {
        form = form.property(&param.name, param.value_schema_described());
        if param.required {
            form = form.required(&param.name);
        }
    }
    let body_required = params.iter().any(|p| p.required);
    let post = with_id(
        OperationBuilder::new()
            .operation_id(Some(format!("{operation_id}Form")))
            .tag(SUBSCRIPTION)
            .summary(Some(format!("{summary}, with a form body")))
            .request_body(Some(
                RequestBodyBuilder::new()
                    .content(
                        "application/x-www-form-urlencoded",
                        ContentBuilder::new().schema(Some(form)).build(),
                    )
                    .required(Some(if body_required {
                        Required::True
                    } else {
                        Required::False
                    }))
                    .build(),
            )),
    );
    let response = || fhir_response(ok, &answer_media_types(), &ok_schema);
    let mut item = PathItem::new(HttpMethod::Get, with_responses(get, response(), answers));
    item.merge_operations(PathItem::new(
        HttpMethod::Post,
        with_responses(
            post,
            response(),
            Answers {
                unsupported_body: Some(FORM_BODY_REFUSED),
                ..answers
            },
        ),
    ));
    item
}

/// Every Subscription path, with its item.
pub(super) fn paths() -> Vec<(String, PathItem)> {
    let base = format!("/fhir/{SUBSCRIPTION}");
    let refused_body =
        Some("OperationOutcome: the body is not application/fhir+json (or application/json)");
    let invalid = Some(
        "OperationOutcome naming each problem: the topic, a filter, the channel type, payload, endpoint (the SSRF guard), a header, a credential extension",
    );
    let body = || {
        RequestBodyBuilder::new()
            .content(
                "application/fhir+json",
                ContentBuilder::new().schema(Some(request_schema())).build(),
            )
            .content(
                "application/json",
                ContentBuilder::new().schema(Some(request_schema())).build(),
            )
            .required(Some(Required::True))
            .build()
    };
    let served = || {
        fhir_response(
            "The Subscription as served (credentials as ***; a signing secret Portico generated is shown in this answer only)",
            &answer_media_types(),
            &resource_schema(SUBSCRIPTION),
        )
    };

    let (search, form) = search_operations(
        SUBSCRIPTION,
        &filter_params(),
        "The token's own subscriptions (its client and user). Needs a Subscription search scope (system/, user/ or patient/Subscription.s). Any parameter not listed here answers 400.",
        Answers {
            bad_request: Some("OperationOutcome naming each parameter not listed here"),
            ..state_answers()
        },
        true,
    );
    let create = OperationBuilder::new()
        .operation_id(Some("createSubscription"))
        .tag(SUBSCRIPTION)
        .summary(Some(
            "Create a subscription (status requested; a handshake follows)",
        ))
        .parameters(Some(format_params().iter().map(Param::query)))
        .request_body(Some(body()));
    let mut collection = search;
    collection.merge_operations(PathItem::new(
        HttpMethod::Post,
        with_responses_as(
            create,
            "201",
            served(),
            Answers {
                bad_request: invalid,
                unsupported_body: refused_body,
                ..state_answers()
            },
        ),
    ));

    let owned = Answers {
        not_found: Some(
            "OperationOutcome: no subscription of this token's client and user has this id",
        ),
        ..state_answers()
    };
    let mut instance = read_operation(SUBSCRIPTION, &format_params(), owned);
    let update = OperationBuilder::new()
        .operation_id(Some("updateSubscription"))
        .tag(SUBSCRIPTION)
        .summary(Some(
            "Replace a subscription; status requested reactivates it (a new handshake, event numbers carry on). *** keeps a stored credential",
        ))
        .parameter(id_parameter())
        .parameters(Some(format_params().iter().map(Param::query)))
        .request_body(Some(body()));
    instance.merge_operations(PathItem::new(
        HttpMethod::Put,
        with_responses(
            update,
            served(),
            Answers {
                bad_request: Some(
                    "OperationOutcome: the body's id differs from the URL's, or as for a create",
                ),
                unsupported_body: refused_body,
                ..owned
            },
        ),
    ));
    let delete = OperationBuilder::new()
        .operation_id(Some("deleteSubscription"))
        .tag(SUBSCRIPTION)
        .summary(Some("Delete a subscription: nothing more is sent"))
        .parameter(id_parameter());
    instance.merge_operations(PathItem::new(
        HttpMethod::Delete,
        with_responses_as(
            delete,
            "204",
            utoipa::openapi::response::ResponseBuilder::new().description("Deleted"),
            owned,
        ),
    ));

    let type_status = query_or_form(
        false,
        "statusSubscriptions",
        "$status of the token's subscriptions",
        &filter_params(),
        (
            "A searchset of backport-subscription-status Parameters",
            component("Bundle"),
        ),
        Answers {
            bad_request: Some("OperationOutcome naming each parameter not listed here"),
            ..state_answers()
        },
    );
    let instance_status = query_or_form(
        true,
        "statusSubscription",
        "$status of one subscription",
        &format_params(),
        (
            "A searchset with its backport-subscription-status Parameters",
            component("Bundle"),
        ),
        owned,
    );
    let mut events_params = vec![
        Param::new(
            "eventsSinceNumber",
            patterned("^[1-9][0-9]{0,17}$"),
            "The first event number (default: 100 before eventsUntilNumber)",
        ),
        Param::new(
            "eventsUntilNumber",
            patterned("^[1-9][0-9]{0,17}$"),
            "The last event number (default: the latest)",
        ),
        Param::new(
            "content",
            enumerated(&["empty", "id-only", "full-resource"]),
            "A content level no higher than the subscription's own (default: its own)",
        ),
    ];
    events_params.extend(format_params());
    let events = query_or_form(
        true,
        "eventsSubscription",
        "$events: replay kept events (at most 100 per call; kept 7 days, and until delivered)",
        &events_params,
        (
            "A history Bundle whose status Parameters have type query-event",
            component("Bundle"),
        ),
        Answers {
            bad_request: Some(
                "OperationOutcome: a number that is not a positive whole number, or a content level above the subscription's",
            ),
            ..owned
        },
    );
    let binding = || {
        (
            "Parameters: token (send `bind-with-token <token>` on the socket), expiration (5 minutes), subscription (each one it binds), websocket-url",
            parameters_schema(),
        )
    };
    let mut binding_params = vec![Param {
        required: true,
        ..Param::new(
            "id",
            // At least one id once split at commas and trimmed.
            patterned("[^,\\s]"),
            "The subscriptions to bind (comma-separated, or the parameter repeated)",
        )
    }];
    binding_params.extend(format_params());
    let type_binding = query_or_form(
        false,
        "wsBindingTokenSubscriptions",
        "$get-ws-binding-token: one token binding several websocket subscriptions on a socket",
        &binding_params,
        binding(),
        Answers {
            bad_request: Some(
                "OperationOutcome: no id, or a subscription that is not on the websocket channel",
            ),
            not_found: Some(
                "OperationOutcome: no subscription of this token's client and user has one of the ids",
            ),
            ..state_answers()
        },
    );
    let instance_binding = query_or_form(
        true,
        "wsBindingTokenSubscription",
        "$get-ws-binding-token: a token binding this websocket subscription on a socket",
        &format_params(),
        binding(),
        Answers {
            bad_request: Some("OperationOutcome: the subscription is not on the websocket channel"),
            ..owned
        },
    );
    vec![
        (base.clone(), collection),
        (format!("{base}/$get-ws-binding-token"), type_binding),
        (
            format!("{base}/{{id}}/$get-ws-binding-token"),
            instance_binding,
        ),
        (format!("{base}/_search"), form),
        (format!("{base}/$status"), type_status),
        (format!("{base}/{{id}}"), instance),
        (format!("{base}/{{id}}/$status"), instance_status),
        (format!("{base}/{{id}}/$events"), events),
    ]
}
