//! What the authorization-code flow keeps between its steps: pending authorization requests (bound
//! to the browser that started them), sign-in sessions, failed sign-ins (rate limiting), single-use
//! codes, rotating refresh tokens and EHR launch contexts. Codes, refresh tokens, sessions and
//! launch values are kept as hashes (`state::hash_token`); every "use once" is one conditional
//! UPDATE, so two replicas racing on the same value cannot both win.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{StateError, StateStore, now};

/// An authorization request between `/auth/authorize` and the code: who is signing in, for which
/// client, with which scopes, and what the user chose so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingAuthorization {
    /// The transaction id the pages carry (random; not a secret on its own: `browser_hash` binds
    /// it to the browser's cookie and `csrf` to the forms Portico rendered).
    pub tx: String,
    pub browser_hash: String,
    pub csrf: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub state: String,
    pub code_challenge: String,
    pub nonce: Option<String>,
    pub username: Option<String>,
    pub patient: Option<String>,
    pub encounter: Option<String>,
    /// The patient came from an EHR launch context, not from the picker.
    pub from_launch: bool,
    pub expires_at: i64,
}

/// A code as issued (its hash is the key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizationCode {
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub code_challenge: String,
    pub username: String,
    pub patient: Option<String>,
    pub encounter: Option<String>,
    pub nonce: Option<String>,
    pub family_id: String,
    pub expires_at: i64,
}

/// The result of presenting a code or a refresh token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Redeemed<T> {
    /// First use: here is what it grants.
    Fresh(T),
    /// Already used (a code) or already rotated or revoked (a refresh token): a replay. The
    /// family is what the caller revokes.
    Replayed {
        family_id: String,
        client_id: String,
    },
    Unknown,
}

/// What a refresh token grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshGrant {
    pub family_id: String,
    pub client_id: String,
    pub scope: String,
    pub username: Option<String>,
    pub patient: Option<String>,
    pub encounter: Option<String>,
    pub expires_at: i64,
}

/// An EHR launch: the context a launching EHR chose for one client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchContext {
    pub client_id: String,
    pub patient: Option<String>,
    pub encounter: Option<String>,
}

const PENDING_COLUMNS: &str = "SELECT tx, browser_hash, csrf, client_id, redirect_uri, scope, state, \
     code_challenge, nonce, username, patient, encounter, from_launch, expires_at FROM authorization_request";

fn pending_from_row(row: &AnyRow) -> Result<PendingAuthorization, StateError> {
    Ok(PendingAuthorization {
        tx: row.try_get("tx")?,
        browser_hash: row.try_get("browser_hash")?,
        csrf: row.try_get("csrf")?,
        client_id: row.try_get("client_id")?,
        redirect_uri: row.try_get("redirect_uri")?,
        scope: row.try_get("scope")?,
        state: row.try_get("state")?,
        code_challenge: row.try_get("code_challenge")?,
        nonce: row.try_get("nonce")?,
        username: row.try_get("username")?,
        patient: row.try_get("patient")?,
        encounter: row.try_get("encounter")?,
        from_launch: row.try_get::<i64, _>("from_launch")? != 0,
        expires_at: row.try_get("expires_at")?,
    })
}

impl StateStore {
    /// Records a new authorization request, dropping the expired ones on the way.
    pub async fn begin_authorization(
        &self,
        pending: &PendingAuthorization,
    ) -> Result<(), StateError> {
        let at = now();
        sqlx::query("DELETE FROM authorization_request WHERE expires_at < $1")
            .bind(at)
            .execute(self.pool())
            .await?;
        sqlx::query("DELETE FROM authorization_code WHERE expires_at < $1")
            .bind(at - 24 * 3600)
            .execute(self.pool())
            .await?;
        sqlx::query(
            "INSERT INTO authorization_request (tx, browser_hash, csrf, client_id, redirect_uri, scope, \
             state, code_challenge, nonce, username, patient, encounter, from_launch, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(&pending.tx)
        .bind(&pending.browser_hash)
        .bind(&pending.csrf)
        .bind(&pending.client_id)
        .bind(&pending.redirect_uri)
        .bind(&pending.scope)
        .bind(&pending.state)
        .bind(&pending.code_challenge)
        .bind(&pending.nonce)
        .bind(&pending.username)
        .bind(&pending.patient)
        .bind(&pending.encounter)
        .bind(i64::from(pending.from_launch))
        .bind(pending.expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The pending request `tx`, unless it expired.
    pub async fn pending_authorization(
        &self,
        tx: &str,
    ) -> Result<Option<PendingAuthorization>, StateError> {
        let row = sqlx::query(&format!(
            "{PENDING_COLUMNS} WHERE tx = $1 AND expires_at >= $2"
        ))
        .bind(tx)
        .bind(now())
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(pending_from_row).transpose()
    }

    /// Records who signed in for `tx`.
    pub async fn set_authorization_user(&self, tx: &str, username: &str) -> Result<(), StateError> {
        sqlx::query("UPDATE authorization_request SET username = $1 WHERE tx = $2")
            .bind(username)
            .bind(tx)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Records the patient the user chose (or is) for `tx`.
    pub async fn set_authorization_patient(
        &self,
        tx: &str,
        patient: &str,
    ) -> Result<(), StateError> {
        sqlx::query("UPDATE authorization_request SET patient = $1 WHERE tx = $2")
            .bind(patient)
            .bind(tx)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Ends `tx`. True for exactly one caller: a double-submitted consent form yields one code.
    pub async fn finish_authorization(&self, tx: &str) -> Result<bool, StateError> {
        let removed = sqlx::query("DELETE FROM authorization_request WHERE tx = $1")
            .bind(tx)
            .execute(self.pool())
            .await?
            .rows_affected();
        Ok(removed == 1)
    }

    pub async fn store_code(
        &self,
        code_hash: &str,
        code: &AuthorizationCode,
    ) -> Result<(), StateError> {
        sqlx::query(
            "INSERT INTO authorization_code (code_hash, client_id, redirect_uri, scope, code_challenge, \
             username, patient, encounter, nonce, family_id, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(code_hash)
        .bind(&code.client_id)
        .bind(&code.redirect_uri)
        .bind(&code.scope)
        .bind(&code.code_challenge)
        .bind(&code.username)
        .bind(&code.patient)
        .bind(&code.encounter)
        .bind(&code.nonce)
        .bind(&code.family_id)
        .bind(code.expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Marks the code used and returns what it grants; a second presentation is `Replayed`.
    /// Expiry is the caller's check (an expired code is still "used" by being presented).
    pub async fn redeem_code(
        &self,
        code_hash: &str,
    ) -> Result<Redeemed<AuthorizationCode>, StateError> {
        let first = sqlx::query(
            "UPDATE authorization_code SET used_at = $1 WHERE code_hash = $2 AND used_at IS NULL",
        )
        .bind(now())
        .bind(code_hash)
        .execute(self.pool())
        .await?
        .rows_affected()
            == 1;
        let row = sqlx::query(
            "SELECT client_id, redirect_uri, scope, code_challenge, username, patient, encounter, \
             nonce, family_id, expires_at FROM authorization_code WHERE code_hash = $1",
        )
        .bind(code_hash)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else {
            return Ok(Redeemed::Unknown);
        };
        let code = AuthorizationCode {
            client_id: row.try_get("client_id")?,
            redirect_uri: row.try_get("redirect_uri")?,
            scope: row.try_get("scope")?,
            code_challenge: row.try_get("code_challenge")?,
            username: row.try_get("username")?,
            patient: row.try_get("patient")?,
            encounter: row.try_get("encounter")?,
            nonce: row.try_get("nonce")?,
            family_id: row.try_get("family_id")?,
            expires_at: row.try_get("expires_at")?,
        };
        Ok(if first {
            Redeemed::Fresh(code)
        } else {
            Redeemed::Replayed {
                family_id: code.family_id,
                client_id: code.client_id,
            }
        })
    }

    pub async fn store_refresh_token(
        &self,
        token_hash: &str,
        grant: &RefreshGrant,
    ) -> Result<(), StateError> {
        sqlx::query(
            "INSERT INTO refresh_token (token_hash, family_id, client_id, scope, username, patient, \
             encounter, expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(token_hash)
        .bind(&grant.family_id)
        .bind(&grant.client_id)
        .bind(&grant.scope)
        .bind(&grant.username)
        .bind(&grant.patient)
        .bind(&grant.encounter)
        .bind(grant.expires_at)
        .bind(now())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Retires a refresh token (it is exchanged once) and returns what it granted; a rotated or
    /// revoked one is `Replayed`. Expiry and the client binding are the caller's checks.
    pub async fn rotate_refresh_token(
        &self,
        token_hash: &str,
    ) -> Result<Redeemed<RefreshGrant>, StateError> {
        let first = sqlx::query(
            "UPDATE refresh_token SET rotated_at = $1 \
             WHERE token_hash = $2 AND rotated_at IS NULL AND revoked_at IS NULL",
        )
        .bind(now())
        .bind(token_hash)
        .execute(self.pool())
        .await?
        .rows_affected()
            == 1;
        let row = sqlx::query(
            "SELECT family_id, client_id, scope, username, patient, encounter, expires_at \
             FROM refresh_token WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else {
            return Ok(Redeemed::Unknown);
        };
        let grant = RefreshGrant {
            family_id: row.try_get("family_id")?,
            client_id: row.try_get("client_id")?,
            scope: row.try_get("scope")?,
            username: row.try_get("username")?,
            patient: row.try_get("patient")?,
            encounter: row.try_get("encounter")?,
            expires_at: row.try_get("expires_at")?,
        };
        Ok(if first {
            Redeemed::Fresh(grant)
        } else {
            Redeemed::Replayed {
                family_id: grant.family_id,
                client_id: grant.client_id,
            }
        })
    }

    /// The client and scope a refresh token was issued with, whatever its state: to check a
    /// narrowing before the token is spent, and to know which public client presents it.
    pub async fn refresh_token_issue(
        &self,
        token_hash: &str,
    ) -> Result<Option<(String, String)>, StateError> {
        let row = sqlx::query("SELECT client_id, scope FROM refresh_token WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| Ok((r.try_get("client_id")?, r.try_get("scope")?)))
            .transpose()
    }

    /// The refresh token's family and client when it is live (for revocation by its holder).
    pub async fn live_refresh_token(
        &self,
        token_hash: &str,
    ) -> Result<Option<(String, String)>, StateError> {
        let row = sqlx::query(
            "SELECT family_id, client_id FROM refresh_token \
             WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > $2",
        )
        .bind(token_hash)
        .bind(now())
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| Ok((row.try_get("family_id")?, row.try_get("client_id")?)))
            .transpose()
    }

    /// Revokes every refresh and access token of one authorization (a code and its refresh
    /// chain). Returns how many access tokens were revoked.
    pub async fn revoke_family(&self, family_id: &str) -> Result<u64, StateError> {
        let at = now();
        sqlx::query(
            "UPDATE refresh_token SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(family_id)
        .execute(self.pool())
        .await?;
        let revoked = sqlx::query(
            "UPDATE access_token SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(family_id)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(revoked)
    }

    pub async fn start_session(
        &self,
        session_hash: &str,
        username: &str,
        expires_at: i64,
    ) -> Result<(), StateError> {
        sqlx::query("DELETE FROM login_session WHERE expires_at < $1")
            .bind(now())
            .execute(self.pool())
            .await?;
        sqlx::query(
            "INSERT INTO login_session (session_hash, username, expires_at) VALUES ($1, $2, $3)",
        )
        .bind(session_hash)
        .bind(username)
        .bind(expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The user signed in with this session, while it lasts.
    pub async fn session_user(&self, session_hash: &str) -> Result<Option<String>, StateError> {
        let row = sqlx::query(
            "SELECT username FROM login_session WHERE session_hash = $1 AND expires_at >= $2",
        )
        .bind(session_hash)
        .bind(now())
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| Ok(r.try_get("username")?)).transpose()
    }

    /// Ends one session (signing out).
    pub async fn end_session(&self, session_hash: &str) -> Result<(), StateError> {
        sqlx::query("DELETE FROM login_session WHERE session_hash = $1")
            .bind(session_hash)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Ends every session of a user (password change, removal).
    pub async fn end_sessions(&self, username: &str) -> Result<(), StateError> {
        sqlx::query("DELETE FROM login_session WHERE username = $1")
            .bind(username)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Counts a failed sign-in against each subject (`user:<name>`, `addr:<ip>`).
    pub async fn record_login_failure(&self, subjects: &[String]) -> Result<(), StateError> {
        let at = now();
        sqlx::query("DELETE FROM login_failure WHERE at < $1")
            .bind(at - 24 * 3600)
            .execute(self.pool())
            .await?;
        for subject in subjects {
            sqlx::query("INSERT INTO login_failure (subject, at) VALUES ($1, $2)")
                .bind(subject)
                .bind(at)
                .execute(self.pool())
                .await?;
        }
        Ok(())
    }

    /// Failed sign-ins of `subject` since `since`.
    pub async fn login_failures_since(&self, subject: &str, since: i64) -> Result<i64, StateError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS failures FROM login_failure WHERE subject = $1 AND at >= $2",
        )
        .bind(subject)
        .bind(since)
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get("failures")?)
    }

    pub async fn create_launch(
        &self,
        launch_hash: &str,
        context: &LaunchContext,
        created_by: &str,
        expires_at: i64,
    ) -> Result<(), StateError> {
        sqlx::query(
            "INSERT INTO launch_context (launch_hash, client_id, patient, encounter, created_by, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(launch_hash)
        .bind(&context.client_id)
        .bind(&context.patient)
        .bind(&context.encounter)
        .bind(created_by)
        .bind(expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Uses a launch value once, for the client it was made for, before it expires.
    pub async fn take_launch(
        &self,
        launch_hash: &str,
        client_id: &str,
    ) -> Result<Option<LaunchContext>, StateError> {
        let at = now();
        let taken = sqlx::query(
            "UPDATE launch_context SET used_at = $1 WHERE launch_hash = $2 AND client_id = $3 \
             AND used_at IS NULL AND expires_at >= $1",
        )
        .bind(at)
        .bind(launch_hash)
        .bind(client_id)
        .execute(self.pool())
        .await?
        .rows_affected()
            == 1;
        if !taken {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT client_id, patient, encounter FROM launch_context WHERE launch_hash = $1",
        )
        .bind(launch_hash)
        .fetch_one(self.pool())
        .await?;
        Ok(Some(LaunchContext {
            client_id: row.try_get("client_id")?,
            patient: row.try_get("patient")?,
            encounter: row.try_get("encounter")?,
        }))
    }
}
