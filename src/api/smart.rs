//! `GET /.well-known/smart-configuration` (also under the FHIR base): the SMART discovery
//! document, JSON whatever the `Accept` header says, public, CORS open like every route (SM-01).

use axum::extract::Extension;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::origin::PublicBase;
use crate::auth::discovery;

pub async fn smart_configuration(Extension(base): Extension<PublicBase>) -> Response {
    let document = discovery::smart_configuration(base.fhir());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        document.to_string(),
    )
        .into_response()
}
