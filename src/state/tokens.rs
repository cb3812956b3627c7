//! What the store remembers of issued tokens: every access token by its `jti` (so it can be
//! revoked and introspected) and the `jti`s of client assertions already used (replay refusal,
//! shared by every replica through the primary key).

use sqlx::Row;

use super::{StateError, StateStore, now};

/// An access token as issued (never the token itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedToken {
    pub jti: String,
    /// Tokens issued from one authorization (a code and its refresh chain) share a family, so
    /// reuse of a code or of a rotated refresh token revokes them together.
    pub family_id: Option<String>,
    pub client_id: String,
    pub scope: String,
    pub patient: Option<String>,
    pub username: Option<String>,
    pub issued_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

impl StateStore {
    pub async fn record_access_token(&self, token: &IssuedToken) -> Result<(), StateError> {
        sqlx::query(
            "INSERT INTO access_token (jti, family_id, client_id, scope, patient, username, issued_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&token.jti)
        .bind(&token.family_id)
        .bind(&token.client_id)
        .bind(&token.scope)
        .bind(&token.patient)
        .bind(&token.username)
        .bind(token.issued_at)
        .bind(token.expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn access_token(&self, jti: &str) -> Result<Option<IssuedToken>, StateError> {
        let row = sqlx::query(
            "SELECT jti, family_id, client_id, scope, patient, username, issued_at, expires_at, revoked_at \
             FROM access_token WHERE jti = $1",
        )
        .bind(jti)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            Ok(IssuedToken {
                jti: row.try_get("jti")?,
                family_id: row.try_get("family_id")?,
                client_id: row.try_get("client_id")?,
                scope: row.try_get("scope")?,
                patient: row.try_get("patient")?,
                username: row.try_get("username")?,
                issued_at: row.try_get("issued_at")?,
                expires_at: row.try_get("expires_at")?,
                revoked_at: row.try_get("revoked_at")?,
            })
        })
        .transpose()
    }

    /// Revokes one access token, or (by family) every token of one authorization.
    pub async fn revoke_access_token(&self, jti: &str) -> Result<bool, StateError> {
        let changed = sqlx::query(
            "UPDATE access_token SET revoked_at = $1 WHERE jti = $2 AND revoked_at IS NULL",
        )
        .bind(now())
        .bind(jti)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(changed > 0)
    }

    /// The `jti`s of revoked access tokens that have not expired yet: what a resource server
    /// must refuse even though their signatures are good.
    pub async fn revoked_access_tokens(&self) -> Result<Vec<String>, StateError> {
        let rows = sqlx::query(
            "SELECT jti FROM access_token WHERE revoked_at IS NOT NULL AND expires_at > $1",
        )
        .bind(now())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|r| Ok(r.try_get("jti")?)).collect()
    }

    /// Records a client assertion's `jti` for its issuer until `expires_at`. False when it was
    /// already used: a replay (SMART Backend Services SHALL refuse it).
    pub async fn claim_assertion_jti(
        &self,
        issuer: &str,
        jti: &str,
        expires_at: i64,
    ) -> Result<bool, StateError> {
        let at = now();
        sqlx::query("DELETE FROM assertion_jti WHERE expires_at < $1")
            .bind(at)
            .execute(self.pool())
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO assertion_jti (issuer, jti, expires_at) VALUES ($1, $2, $3) ON CONFLICT (issuer, jti) DO NOTHING",
        )
        .bind(issuer)
        .bind(jti)
        .bind(expires_at)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }
}
