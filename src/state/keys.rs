//! The keys Portico signs its tokens with (RS256, RSA 2048): made on first use, kept in the state
//! store so every replica signs and verifies with the same set, rotatable. A retired key no longer
//! signs but still verifies until the tokens it signed have expired; the JWKS publishes both.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::traits::PublicKeyParts;
use sqlx::Row;

use super::{StateError, StateStore, now, random_token};

/// How long a retired key keeps verifying: longer than any token Portico issues lives.
pub const RETIRED_KEY_VERIFIES_FOR_SECONDS: i64 = 24 * 3600;

#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    pub created_at: i64,
    pub retired_at: Option<i64>,
    encoding: EncodingKey,
    decoding: DecodingKey,
    modulus: Vec<u8>,
    exponent: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    pub const ALGORITHM: Algorithm = Algorithm::RS256;

    fn from_pkcs8(
        kid: String,
        pkcs8: &[u8],
        created_at: i64,
        retired_at: Option<i64>,
    ) -> Result<SigningKey, StateError> {
        let key = rsa::RsaPrivateKey::from_pkcs8_der(pkcs8)
            .map_err(|e| StateError::Invalid(format!("signing key {kid} is unreadable: {e}")))?;
        let pkcs1 = key
            .to_pkcs1_der()
            .map_err(|e| StateError::Invalid(format!("signing key {kid}: {e}")))?;
        let modulus = key.n().to_bytes_be();
        let exponent = key.e().to_bytes_be();
        let decoding = DecodingKey::from_rsa_components(
            &URL_SAFE_NO_PAD.encode(&modulus),
            &URL_SAFE_NO_PAD.encode(&exponent),
        )
        .map_err(|e| StateError::Invalid(format!("signing key {kid}: {e}")))?;
        Ok(SigningKey {
            kid,
            created_at,
            retired_at,
            encoding: EncodingKey::from_rsa_der(pkcs1.as_bytes()),
            decoding,
            modulus,
            exponent,
        })
    }

    pub fn encoding_key(&self) -> &EncodingKey {
        &self.encoding
    }

    pub fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }

    /// The public half as a JWK (what `/auth/jwks` publishes).
    pub fn public_jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "RSA",
            "kid": self.kid,
            "use": "sig",
            "alg": "RS256",
            "n": URL_SAFE_NO_PAD.encode(&self.modulus),
            "e": URL_SAFE_NO_PAD.encode(&self.exponent),
        })
    }
}

fn generate_pkcs8() -> Result<Vec<u8>, StateError> {
    use aws_lc_rs::encoding::AsDer;
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
        .map_err(|_| StateError::Invalid("cannot generate an RSA key".into()))?;
    let der = pair
        .as_der()
        .map_err(|_| StateError::Invalid("cannot encode the RSA key".into()))?;
    Ok(der.as_ref().to_vec())
}

impl StateStore {
    /// Every key that may verify a token today: the current ones and those retired less than
    /// `RETIRED_KEY_VERIFIES_FOR_SECONDS` ago. Newest first.
    pub async fn verification_keys(&self) -> Result<Vec<SigningKey>, StateError> {
        let rows = sqlx::query(
            "SELECT kid, private_pkcs8, created_at, retired_at FROM signing_key \
             WHERE retired_at IS NULL OR retired_at > $1 ORDER BY created_at DESC, kid",
        )
        .bind(now() - RETIRED_KEY_VERIFIES_FOR_SECONDS)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let kid: String = row.try_get("kid")?;
                let pkcs8 = STANDARD
                    .decode(row.try_get::<String, _>("private_pkcs8")?)
                    .map_err(|e| StateError::Invalid(format!("signing key {kid}: {e}")))?;
                SigningKey::from_pkcs8(
                    kid,
                    &pkcs8,
                    row.try_get("created_at")?,
                    row.try_get("retired_at")?,
                )
            })
            .collect()
    }

    /// The key that signs now: the newest one not retired, made when there is none.
    pub async fn current_signing_key(&self) -> Result<SigningKey, StateError> {
        let keys = self.verification_keys().await?;
        if let Some(key) = keys.into_iter().find(|k| k.retired_at.is_none()) {
            return Ok(key);
        }
        self.add_signing_key().await
    }

    /// Makes a new signing key and retires the others (they go on verifying for a day).
    pub async fn rotate_signing_key(&self) -> Result<SigningKey, StateError> {
        let key = self.add_signing_key().await?;
        sqlx::query(
            "UPDATE signing_key SET retired_at = $1 WHERE retired_at IS NULL AND kid <> $2",
        )
        .bind(now())
        .bind(&key.kid)
        .execute(self.pool())
        .await?;
        Ok(key)
    }

    async fn add_signing_key(&self) -> Result<SigningKey, StateError> {
        let pkcs8 = tokio::task::spawn_blocking(generate_pkcs8)
            .await
            .map_err(|e| StateError::Invalid(format!("key generation failed: {e}")))??;
        let kid = random_token(12);
        let created_at = now();
        sqlx::query("INSERT INTO signing_key (kid, alg, private_pkcs8, created_at) VALUES ($1, 'RS256', $2, $3)")
            .bind(&kid)
            .bind(STANDARD.encode(&pkcs8))
            .bind(created_at)
            .execute(self.pool())
            .await?;
        SigningKey::from_pkcs8(kid, &pkcs8, created_at, None)
    }
}
