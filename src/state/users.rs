//! People who sign in to Portico's authorization server: clinicians (linked to a Practitioner),
//! patient-portal users (linked to a Patient) and administrators. Passwords are kept as Argon2id
//! hashes.

use std::fmt;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{StateError, StateStore, now};

/// The error a removed user's subscriptions carry once `remove_user` has turned them off.
pub const REMOVED_USER_REASON: &str = "the user who owns this subscription was removed";

/// Whether a subscription's stored owner claims are a token of `username`: a user-facing token's
/// subject is the user's name (a Backend Services token's is its client's id).
fn owned_by_user(owner: &str, username: &str) -> bool {
    let Ok(claims) = serde_json::from_str::<serde_json::Value>(owner) else {
        return false;
    };
    claims["sub"] == username && claims["client_id"] != username
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Sees what the app's user/ scopes allow; `fhir_user` names a Practitioner.
    Clinician,
    /// Sees only their own record: user/ scopes behave like patient/ ones; `fhir_user` names a Patient.
    Patient,
    /// Operates Portico: launches, audit, status. No PHI through user/ scopes of its own.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Clinician => "clinician",
            Role::Patient => "patient",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Result<Role, StateError> {
        match text {
            "clinician" => Ok(Role::Clinician),
            "patient" => Ok(Role::Patient),
            "admin" => Ok(Role::Admin),
            other => Err(StateError::Invalid(format!(
                "unknown role {other:?} (clinician, patient or admin)"
            ))),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug)]
pub struct User {
    pub username: String,
    pub role: Role,
    /// `Practitioner/<id>` or `Patient/<id>`: the FHIR resource this person is.
    pub fhir_user: Option<String>,
    pub created_at: i64,
}

impl User {
    /// The Patient id a patient-portal user is limited to.
    pub fn patient_id(&self) -> Option<&str> {
        match self.role {
            Role::Patient => self.fhir_user.as_deref()?.strip_prefix("Patient/"),
            _ => None,
        }
    }
}

/// Passwords shorter than this are refused: the login page is rate-limited, a copy of the store is not.
const MIN_PASSWORD_CHARS: usize = 10;

fn hash_password(password: &str) -> Result<String, StateError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(StateError::Invalid(format!(
            "a password needs at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).expect("the system random generator failed");
    let salt = SaltString::encode_b64(&salt).map_err(|e| StateError::Invalid(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| StateError::Invalid(format!("cannot hash the password: {e}")))
}

fn check_fhir_user(role: Role, fhir_user: Option<&str>) -> Result<(), StateError> {
    let wanted = match role {
        Role::Clinician => "Practitioner/",
        Role::Patient => "Patient/",
        Role::Admin => return Ok(()),
    };
    match fhir_user.and_then(|r| r.strip_prefix(wanted)) {
        Some(id) if !id.is_empty() && !id.contains('/') => Ok(()),
        _ => Err(StateError::Invalid(format!(
            "a {role} user needs --fhir-user {wanted}<id>"
        ))),
    }
}

impl StateStore {
    pub async fn add_user(
        &self,
        username: &str,
        password: &str,
        role: Role,
        fhir_user: Option<&str>,
    ) -> Result<User, StateError> {
        if username.is_empty()
            || username.len() > 200
            || username
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(StateError::Invalid(
                "a username is 1-200 printable characters without spaces".into(),
            ));
        }
        check_fhir_user(role, fhir_user)?;
        let user = User {
            username: username.to_owned(),
            role,
            fhir_user: fhir_user.map(str::to_owned),
            created_at: now(),
        };
        let inserted = sqlx::query(
            "INSERT INTO portico_user (username, password_hash, role, fhir_user, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (username) DO NOTHING",
        )
        .bind(&user.username)
        .bind(hash_password(password)?)
        .bind(role.as_str())
        .bind(&user.fhir_user)
        .bind(user.created_at)
        .execute(self.pool())
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(StateError::Invalid(format!(
                "user {username} already exists"
            )));
        }
        Ok(user)
    }

    pub async fn user(&self, username: &str) -> Result<Option<User>, StateError> {
        let row = sqlx::query(&format!("{USER_COLUMNS} WHERE username = $1"))
            .bind(username)
            .fetch_optional(self.pool())
            .await?;
        row.map(|row| user_from_row(&row)).transpose()
    }

    pub async fn users(&self) -> Result<Vec<User>, StateError> {
        let rows = sqlx::query(&format!("{USER_COLUMNS} ORDER BY username"))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(user_from_row).collect()
    }

    /// Removes a user, ends their sign-in sessions and revokes the refresh and access tokens
    /// issued on their behalf.
    pub async fn remove_user(&self, username: &str) -> Result<bool, StateError> {
        let mut tx = self.pool().begin().await?;
        let removed = sqlx::query("DELETE FROM portico_user WHERE username = $1")
            .bind(username)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM login_session WHERE username = $1")
            .bind(username)
            .execute(&mut *tx)
            .await?;
        let at = now();
        for table in ["refresh_token", "access_token"] {
            sqlx::query(&format!(
                "UPDATE {table} SET revoked_at = $1 WHERE username = $2 AND revoked_at IS NULL"
            ))
            .bind(at)
            .bind(username)
            .execute(&mut *tx)
            .await?;
        }
        // The user's subscriptions stop with them: those made under one of their tokens (the
        // stored claims' subject). Ones already off keep their own reason.
        let live = sqlx::query("SELECT id, owner FROM subscription WHERE status <> $1")
            .bind("off")
            .fetch_all(&mut *tx)
            .await?;
        for row in &live {
            let owner: String = row.try_get("owner")?;
            if !owned_by_user(&owner, username) {
                continue;
            }
            sqlx::query(
                "UPDATE subscription SET status = $1, error = $2, version = version + 1, \
                 updated_ms = $3 WHERE id = $4",
            )
            .bind("off")
            .bind(REMOVED_USER_REASON)
            .bind(super::subscriptions::now_ms())
            .bind(row.try_get::<String, _>("id")?)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(removed > 0)
    }

    /// Sets a new password and ends the user's sign-in sessions (a browser signed in with the
    /// old password signs in again).
    pub async fn set_password(&self, username: &str, password: &str) -> Result<bool, StateError> {
        let changed = sqlx::query("UPDATE portico_user SET password_hash = $1 WHERE username = $2")
            .bind(hash_password(password)?)
            .bind(username)
            .execute(self.pool())
            .await?
            .rows_affected();
        self.end_sessions(username).await?;
        Ok(changed > 0)
    }

    /// The user when `password` is theirs. An unknown user costs the same hashing time as a wrong
    /// password, so timing does not tell which usernames exist.
    pub async fn verify_password(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Option<User>, StateError> {
        let row = sqlx::query("SELECT password_hash FROM portico_user WHERE username = $1")
            .bind(username)
            .fetch_optional(self.pool())
            .await?;
        let stored: Option<String> = row.map(|r| r.try_get("password_hash")).transpose()?;
        let password = password.to_owned();
        let matches = tokio::task::spawn_blocking(move || {
            let decoy;
            let hash = match &stored {
                Some(hash) => hash.as_str(),
                None => {
                    decoy = decoy_hash();
                    decoy.as_str()
                }
            };
            let parsed = PasswordHash::new(hash).ok();
            let ok = parsed.is_some_and(|p| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &p)
                    .is_ok()
            });
            ok && stored.is_some()
        })
        .await
        .map_err(|e| StateError::Invalid(format!("password check failed: {e}")))?;
        if !matches {
            return Ok(None);
        }
        self.user(username).await
    }
}

/// A hash of a random password, made once, checked against when the username is unknown.
fn decoy_hash() -> String {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY
        .get_or_init(|| hash_password(&super::random_token(24)).expect("a random password hashes"))
        .clone()
}

const USER_COLUMNS: &str = "SELECT username, role, fhir_user, created_at FROM portico_user";

fn user_from_row(row: &AnyRow) -> Result<User, StateError> {
    Ok(User {
        username: row.try_get("username")?,
        role: Role::parse(&row.try_get::<String, _>("role")?)?,
        fhir_user: row.try_get("fhir_user")?,
        created_at: row.try_get("created_at")?,
    })
}
