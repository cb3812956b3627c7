//! Test keys, made fresh in each run, with their public halves as JWKs: clients that sign
//! assertions (RS384 and ES384) and a test identity provider that signs access tokens (RSA and
//! ES256).

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value as Json, json};

pub struct ClientKey {
    pub kid: String,
    pub alg: Algorithm,
    pub encoding: EncodingKey,
    pub public_jwk: Json,
    /// The private key as PKCS#1 PEM (RSA keys), for code that reads a key file.
    pub private_pem: Option<String>,
}

impl ClientKey {
    pub fn rs384(kid: &str) -> ClientKey {
        ClientKey::rsa(kid, Algorithm::RS384)
    }

    /// An RSA key that signs with `alg` (RS* or PS*), which its JWK declares.
    pub fn rsa(kid: &str, alg: Algorithm) -> ClientKey {
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let pkcs8 = pair.as_der().unwrap();
        let key = rsa::RsaPrivateKey::from_pkcs8_der(pkcs8.as_ref()).unwrap();
        ClientKey {
            kid: kid.into(),
            alg,
            encoding: EncodingKey::from_rsa_der(key.to_pkcs1_der().unwrap().as_bytes()),
            public_jwk: json!({
                "kty": "RSA", "kid": kid, "alg": format!("{alg:?}"), "use": "sig",
                "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
                "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
            }),
            private_pem: Some(
                key.to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
                    .unwrap()
                    .to_string(),
            ),
        }
    }

    pub fn es384(kid: &str) -> ClientKey {
        let pair = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).unwrap();
        let pkcs8 = pair.to_pkcs8v1().unwrap();
        let point = pair.public_key().as_ref().to_vec();
        assert_eq!(point.len(), 97, "an uncompressed P-384 point");
        ClientKey {
            kid: kid.into(),
            alg: Algorithm::ES384,
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            public_jwk: json!({
                "kty": "EC", "kid": kid, "alg": "ES384", "use": "sig", "crv": "P-384",
                "x": URL_SAFE_NO_PAD.encode(&point[1..49]),
                "y": URL_SAFE_NO_PAD.encode(&point[49..]),
            }),
            private_pem: None,
        }
    }

    pub fn es256(kid: &str) -> ClientKey {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let pkcs8 = pair.to_pkcs8v1().unwrap();
        let point = pair.public_key().as_ref().to_vec();
        assert_eq!(point.len(), 65, "an uncompressed P-256 point");
        ClientKey {
            kid: kid.into(),
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            public_jwk: json!({
                "kty": "EC", "kid": kid, "alg": "ES256", "use": "sig", "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&point[33..]),
            }),
            private_pem: None,
        }
    }

    /// A client assertion for `client_id` at `token_endpoint`; `edit` changes header or claims
    /// before signing (the negative tests).
    pub fn assertion(
        &self,
        client_id: &str,
        token_endpoint: &str,
        edit: impl FnOnce(&mut Header, &mut Json),
    ) -> String {
        let now = portico::state::now();
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        let mut claims = json!({
            "iss": client_id, "sub": client_id, "aud": token_endpoint,
            "exp": now + 240, "iat": now, "jti": portico::state::random_token(16),
        });
        edit(&mut header, &mut claims);
        jsonwebtoken::encode(&header, &claims, &self.encoding).unwrap()
    }
}

pub fn jwks(keys: &[&ClientKey]) -> Json {
    json!({ "keys": keys.iter().map(|k| k.public_jwk.clone()).collect::<Vec<_>>() })
}
