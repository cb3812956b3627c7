//! Content negotiation: `_format` over `Accept` (R4-11, R4-12), `_pretty`, and writing a resource
//! in the chosen format.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::fhir::xml::to_xml;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Xml,
}

/// The output format, the media type to answer with, and pretty-printing.
#[derive(Debug, Clone, Copy)]
pub struct Negotiated {
    pub format: Format,
    pub content_type: &'static str,
    pub pretty: bool,
}

const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";
const FHIR_XML: &str = "application/fhir+xml; charset=utf-8";

/// Every name `_format` and `Accept` may use, with the format and the media type answered for it.
pub const MEDIA_TYPES: &[(&str, Format, &str)] = &[
    ("application/fhir+json", Format::Json, FHIR_JSON),
    ("application/json+fhir", Format::Json, FHIR_JSON),
    ("json", Format::Json, FHIR_JSON),
    ("*/*", Format::Json, FHIR_JSON),
    ("application/*", Format::Json, FHIR_JSON),
    (
        "application/json",
        Format::Json,
        "application/json; charset=utf-8",
    ),
    ("application/fhir+xml", Format::Xml, FHIR_XML),
    ("application/xml+fhir", Format::Xml, FHIR_XML),
    ("xml", Format::Xml, FHIR_XML),
    (
        "application/xml",
        Format::Xml,
        "application/xml; charset=utf-8",
    ),
    ("text/xml", Format::Xml, "text/xml; charset=utf-8"),
];

fn media_type(name: &str) -> Option<(Format, &'static str)> {
    MEDIA_TYPES
        .iter()
        .find(|(known, _, _)| *known == name)
        .map(|(_, format, content_type)| (*format, *content_type))
}

/// Decides the format from `_format` (wins) or `Accept` (by q order).
pub fn negotiate(
    headers: &HeaderMap,
    format_param: Option<&str>,
    pretty_param: Option<&str>,
) -> Result<Negotiated, ApiError> {
    let pretty = pretty_param == Some("true");
    if let Some(requested) = format_param {
        // Parameters after `;` (charset, fhirVersion) are allowed; space is HTTP's (blank, tab).
        let name = requested
            .split(';')
            .next()
            .unwrap_or_default()
            .trim_matches([' ', '\t']);
        let (format, content_type) = media_type(name).ok_or_else(|| {
            ApiError::NotAcceptable(format!(
                "_format {requested:?} is not supported: use json or xml"
            ))
        })?;
        return Ok(Negotiated {
            format,
            content_type,
            pretty,
        });
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim();
    if accept.is_empty() {
        return Ok(Negotiated {
            format: Format::Json,
            content_type: FHIR_JSON,
            pretty,
        });
    }
    let mut offers: Vec<(f32, usize, &str)> = accept
        .split(',')
        .enumerate()
        .map(|(position, item)| {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or_default().trim();
            let quality = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            (quality, position, name)
        })
        .filter(|(quality, _, _)| *quality > 0.0)
        .collect();
    offers.sort_by(|a, b| {
        b.0.partial_cmp(&a.0)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.1.cmp(&b.1))
    });
    offers
        .iter()
        .find_map(|(_, _, name)| media_type(&name.to_ascii_lowercase()))
        .map(|(format, content_type)| Negotiated {
            format,
            content_type,
            pretty,
        })
        .ok_or_else(|| ApiError::NotAcceptable(format!("cannot answer in {accept:?}: Portico serves application/fhir+json and application/fhir+xml")))
}

/// Serializes `resource` as negotiated.
pub fn body(
    negotiated: &Negotiated,
    resource: &impl serde::Serialize,
) -> Result<Vec<u8>, ApiError> {
    let json = if negotiated.pretty {
        serde_json::to_vec_pretty(resource)
    } else {
        serde_json::to_vec(resource)
    }
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    match negotiated.format {
        Format::Json => Ok(json),
        Format::Xml => {
            to_xml(&json).map_err(|e| ApiError::Internal(format!("XML rendering failed: {e}")))
        }
    }
}

/// A 200 response with `bytes` in the negotiated media type.
pub fn respond(negotiated: &Negotiated, bytes: Vec<u8>) -> Response {
    let mut response = bytes.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(negotiated.content_type),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn format_parameter_overrides_accept() {
        let chosen = negotiate(&accept("application/fhir+json"), Some("xml"), None).unwrap();
        assert_eq!(chosen.format, Format::Xml);
    }

    #[test]
    fn accept_picks_the_best_quality_and_echoes_generic_types() {
        let chosen = negotiate(
            &accept("text/html;q=0.9, application/xml;q=0.95, application/json;q=0.5"),
            None,
            None,
        )
        .unwrap();
        assert_eq!(chosen.content_type, "application/xml; charset=utf-8");
        let browser = negotiate(
            &accept("text/html,application/xhtml+xml,*/*;q=0.8"),
            None,
            None,
        )
        .unwrap();
        assert_eq!(browser.format, Format::Json);
    }

    #[test]
    fn unsupported_formats_are_406() {
        assert!(matches!(
            negotiate(&accept("text/html"), None, None),
            Err(ApiError::NotAcceptable(_))
        ));
        assert!(matches!(
            negotiate(&HeaderMap::new(), Some("turtle"), None),
            Err(ApiError::NotAcceptable(_))
        ));
    }
}
