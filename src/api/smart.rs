//! `GET /.well-known/smart-configuration` (also under the FHIR base): the SMART discovery
//! document, JSON whatever the `Accept` header says, public, CORS open like every route (SM-01).

use axum::extract::{Extension, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::origin::PublicBase;
use crate::auth::discovery;

pub async fn smart_configuration(
    State(state): State<AppState>,
    Extension(base): Extension<PublicBase>,
) -> Response {
    let external = state.auth.external.as_ref().map(|external| external.idp());
    let document = discovery::smart_configuration(base.fhir(), external);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        document.to_string(),
    )
        .into_response()
}
