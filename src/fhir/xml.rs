//! JSON to XML through fhirbolt's R4 model, which also orders elements as the XML schema demands.

use fhirbolt::model::r4::Resource;
use fhirbolt::serde::{DeserializationConfig, DeserializationMode};

/// Parses FHIR JSON strictly into the R4 model: unknown elements and wrong types are errors.
/// fhirbolt 0.4 panics on some invalid input (an empty array, for one); that is an error here too.
pub fn parse_strict(json: &[u8]) -> Result<Resource, String> {
    let config = DeserializationConfig {
        mode: DeserializationMode::Strict,
    };
    std::panic::catch_unwind(|| fhirbolt::json::from_slice::<Resource>(json, Some(config)))
        .map_err(|_| "the FHIR model rejected the resource (fhirbolt panicked)".to_owned())?
        .map_err(|e| e.to_string())
}

/// Renders a JSON resource as FHIR XML.
pub fn to_xml(json: &[u8]) -> Result<Vec<u8>, String> {
    let resource = parse_strict(json)?;
    fhirbolt::xml::to_vec(&resource, None).map_err(|e| e.to_string())
}
