//! Opaque, tamper-evident paging cursors.
//!
//! A cursor carries the sort key of the last resource on a page, a hash of the query it belongs
//! to and the fingerprint of the access it was made under (`Access::fingerprint`), signed with
//! HMAC-SHA256. A cursor moved onto another query or another access, or edited, is rejected; a
//! cursor stays valid across restarts as long as the signing key does.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use hmac::{Hmac, Mac};
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};

use crate::dialect::ast::Value;

/// Where a page ends: the total order is (sort values, branch, key values, variant).
#[derive(Debug, Clone, PartialEq)]
pub struct CursorKey {
    pub sort: Vec<Value>,
    pub branch: usize,
    pub key: Vec<Value>,
    pub variant: Option<usize>,
}

/// Signs and opens cursors with one secret.
#[derive(Clone)]
pub struct CursorSigner {
    secret: Vec<u8>,
}

impl std::fmt::Debug for CursorSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorSigner { secret: <redacted> }")
    }
}

impl CursorSigner {
    pub fn new(secret: &[u8]) -> CursorSigner {
        CursorSigner {
            secret: secret.to_vec(),
        }
    }

    fn mac(&self, payload: &[u8]) -> Vec<u8> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC accepts any key length");
        mac.update(payload);
        mac.finalize().into_bytes()[..16].to_vec()
    }

    /// Encodes `key` for the query identified by `query`, under the access `access` fingerprints.
    pub fn seal(&self, query: &str, access: &[u8; 32], key: &CursorKey) -> String {
        let payload = json!({
            "q": query_hash(query),
            "a": access_hash(access),
            "s": key.sort.iter().map(encode_value).collect::<Vec<_>>(),
            "b": key.branch,
            "k": key.key.iter().map(encode_value).collect::<Vec<_>>(),
            "v": key.variant,
        })
        .to_string();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload.as_bytes()),
            URL_SAFE_NO_PAD.encode(self.mac(payload.as_bytes()))
        )
    }

    /// Opens a cursor for `query` under the access `access` fingerprints; errors say why it was
    /// refused.
    pub fn open(
        &self,
        query: &str,
        access: &[u8; 32],
        token: &str,
    ) -> Result<CursorKey, CursorError> {
        let malformed = |_: base64::DecodeError| CursorError::Malformed;
        let (payload, signature) = token.split_once('.').ok_or(CursorError::Malformed)?;
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(malformed)?;
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(malformed)?;
        let expected = self.mac(&payload);
        if !constant_time_eq(&expected, &signature) {
            return Err(CursorError::NotIssued(
                "the cursor signature does not match (edited, or from another server)",
            ));
        }
        let payload: Json = serde_json::from_slice(&payload).map_err(|_| CursorError::Malformed)?;
        if payload["q"].as_str() != Some(query_hash(query).as_str()) {
            return Err(CursorError::NotIssued(
                "the cursor belongs to a different query",
            ));
        }
        if payload["a"].as_str() != Some(access_hash(access).as_str()) {
            return Err(CursorError::NotIssued(
                "the cursor was issued under a different access",
            ));
        }
        let values = |field: &str| -> Result<Vec<Value>, &'static str> {
            payload[field]
                .as_array()
                .ok_or("malformed cursor")?
                .iter()
                .map(decode_value)
                .collect()
        };
        let key = (|| {
            Ok(CursorKey {
                sort: values("s")?,
                branch: payload["b"].as_u64().ok_or("malformed cursor")? as usize,
                key: values("k")?,
                variant: payload["v"].as_u64().map(|v| v as usize),
            })
        })();
        key.map_err(|_: &'static str| CursorError::Malformed)
    }
}

/// Why a cursor was refused. The two kinds answer differently: a token that is not a cursor at
/// all is a malformed request (400); a well-formed one that this server did not issue for this
/// query names a page that does not exist (404).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorError {
    /// Not `<base64url>.<base64url>` (the syntax `CURSOR_PATTERN` describes), or not a payload
    /// this server writes.
    Malformed,
    /// Well-formed, but signed with another key, edited, or issued for another query.
    NotIssued(&'static str),
}

impl std::fmt::Display for CursorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CursorError::Malformed => f.write_str("malformed cursor"),
            CursorError::NotIssued(why) => f.write_str(why),
        }
    }
}

/// The syntax of a cursor, as an ECMA-262 regular expression (the OpenAPI document publishes it):
/// two unpadded, canonical base64url segments joined by a dot. A remainder of two or three
/// characters must leave its unused low bits zero, as the decoder requires.
pub const CURSOR_PATTERN: &str = concat!(
    "^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048]|[A-Za-z0-9_-][AQgw])?",
    "\\.",
    "(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048]|[A-Za-z0-9_-][AQgw])?$",
);

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn query_hash(query: &str) -> String {
    let digest = Sha256::digest(query.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..12])
}

fn access_hash(fingerprint: &[u8; 32]) -> String {
    URL_SAFE_NO_PAD.encode(&fingerprint[..16])
}

fn encode_value(value: &Value) -> Json {
    match value {
        Value::Null => json!({"n": null}),
        Value::Bool(b) => json!({"b": b}),
        Value::Int(i) => json!({"i": i}),
        Value::Float(f) => json!({"f": f}),
        Value::Decimal(d) => json!({"m": d.to_string()}),
        Value::Text(s) => json!({"t": s}),
        Value::Bytes(b) => json!({"x": URL_SAFE_NO_PAD.encode(b)}),
        Value::Uuid(u) => json!({"u": URL_SAFE_NO_PAD.encode(u)}),
        Value::Date(d) => json!({"d": d.to_string()}),
        Value::DateTime(dt) => json!({"dt": dt.format("%Y-%m-%dT%H:%M:%S%.f").to_string()}),
        Value::Time(t) => json!({"tm": t.format("%H:%M:%S%.f").to_string()}),
        // Only a skipped row's sort cell can be one; NULL keeps the cursor well-formed.
        Value::Undecodable(_) => json!({"n": null}),
    }
}

fn decode_value(json: &Json) -> Result<Value, &'static str> {
    let object = json.as_object().ok_or("malformed cursor")?;
    let (tag, value) = object.iter().next().ok_or("malformed cursor")?;
    let text = || value.as_str().ok_or("malformed cursor");
    Ok(match tag.as_str() {
        "n" => Value::Null,
        "b" => Value::Bool(value.as_bool().ok_or("malformed cursor")?),
        "i" => Value::Int(value.as_i64().ok_or("malformed cursor")?),
        "f" => Value::Float(value.as_f64().ok_or("malformed cursor")?),
        "m" => Value::Decimal(text()?.parse().map_err(|_| "malformed cursor")?),
        "t" => Value::Text(text()?.to_owned()),
        "x" => Value::Bytes(
            URL_SAFE_NO_PAD
                .decode(text()?)
                .map_err(|_| "malformed cursor")?,
        ),
        "u" => Value::Uuid(
            URL_SAFE_NO_PAD
                .decode(text()?)
                .ok()
                .and_then(|bytes| <[u8; 16]>::try_from(bytes).ok())
                .ok_or("malformed cursor")?,
        ),
        "d" => Value::Date(
            NaiveDate::parse_from_str(text()?, "%Y-%m-%d").map_err(|_| "malformed cursor")?,
        ),
        "dt" => Value::DateTime(
            NaiveDateTime::parse_from_str(text()?, "%Y-%m-%dT%H:%M:%S%.f")
                .map_err(|_| "malformed cursor")?,
        ),
        "tm" => Value::Time(
            NaiveTime::parse_from_str(text()?, "%H:%M:%S%.f").map_err(|_| "malformed cursor")?,
        ),
        _ => return Err("malformed cursor"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCESS: [u8; 32] = [7; 32];

    fn key() -> CursorKey {
        CursorKey {
            sort: vec![
                Value::Text("Smith".into()),
                Value::Null,
                Value::DateTime(
                    NaiveDateTime::parse_from_str("2024-01-02T03:04:05", "%Y-%m-%dT%H:%M:%S")
                        .unwrap(),
                ),
            ],
            branch: 1,
            key: vec![Value::Int(42)],
            variant: Some(3),
        }
    }

    #[test]
    fn round_trips_for_the_same_query() {
        let signer = CursorSigner::new(b"secret");
        let token = signer.seal("family=Sm", &ACCESS, &key());
        assert_eq!(signer.open("family=Sm", &ACCESS, &token).unwrap(), key());
    }

    #[test]
    fn refuses_other_queries_edits_and_other_keys() {
        let signer = CursorSigner::new(b"secret");
        let token = signer.seal("family=Sm", &ACCESS, &key());
        assert_eq!(
            signer.open("family=Jo", &ACCESS, &token).unwrap_err(),
            CursorError::NotIssued("the cursor belongs to a different query")
        );
        let mut edited = token.clone().into_bytes();
        edited[3] = if edited[3] == b'A' { b'B' } else { b'A' };
        assert!(
            signer
                .open("family=Sm", &ACCESS, &String::from_utf8(edited).unwrap())
                .is_err()
        );
        assert!(
            CursorSigner::new(b"other")
                .open("family=Sm", &ACCESS, &token)
                .is_err()
        );
        assert_eq!(
            signer.open("family=Sm", &ACCESS, "garbage").unwrap_err(),
            CursorError::Malformed
        );
    }

    #[test]
    fn refuses_a_cursor_made_under_another_access() {
        let signer = CursorSigner::new(b"secret");
        let token = signer.seal("family=Sm", &ACCESS, &key());
        let mut other = ACCESS;
        other[0] ^= 1;
        assert_eq!(
            signer.open("family=Sm", &other, &token).unwrap_err(),
            CursorError::NotIssued("the cursor was issued under a different access")
        );
    }
}
