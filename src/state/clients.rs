//! Registered OAuth clients: public apps, confidential apps with a shared secret, and confidential
//! clients that sign assertions with their own keys (a JWKS URL or an inline JWKS).

use std::fmt;

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::subscriptions::now_ms;
use super::{StateError, StateStore, hash_token, now, random_token};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    /// A browser or native app that cannot keep a secret: PKCE is its only proof.
    Public,
    /// Authenticates with a shared secret (client_secret_basic or client_secret_post).
    Symmetric,
    /// Authenticates with a JWT signed by its own key (private_key_jwt; SMART Backend Services).
    Asymmetric,
}

impl ClientKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientKind::Public => "public",
            ClientKind::Symmetric => "symmetric",
            ClientKind::Asymmetric => "asymmetric",
        }
    }

    fn parse(text: &str) -> Result<ClientKind, StateError> {
        match text {
            "public" => Ok(ClientKind::Public),
            "symmetric" => Ok(ClientKind::Symmetric),
            "asymmetric" => Ok(ClientKind::Asymmetric),
            other => Err(StateError::Invalid(format!(
                "unknown client kind {other:?}"
            ))),
        }
    }
}

impl fmt::Display for ClientKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A client as registered. The secret itself is never kept, only its hash.
#[derive(Clone, Debug)]
pub struct Client {
    pub client_id: String,
    pub name: String,
    pub kind: ClientKind,
    secret_hash: Option<String>,
    pub jwks_url: Option<String>,
    /// Inline JWKS (JSON text).
    pub jwks: Option<String>,
    pub redirect_uris: Vec<String>,
    /// The scopes the client may be granted (space separated; wildcards allowed).
    pub allowed_scopes: String,
    pub created_at: i64,
}

impl Client {
    /// Compares a presented secret with the registered one (by hash, in constant time).
    pub fn secret_matches(&self, presented: &str) -> bool {
        match &self.secret_hash {
            Some(expected) => {
                constant_time_eq(expected.as_bytes(), hash_token(presented).as_bytes())
            }
            None => false,
        }
    }
}

/// Byte comparison whose time does not depend on where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What `portico clients add` (or a clients file) registers.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewClient {
    /// Chosen by the operator, or generated when absent.
    pub client_id: Option<String>,
    pub name: String,
    pub kind: Option<ClientKind>,
    /// For symmetric clients: at least 32 characters, or generated when absent.
    pub secret: Option<String>,
    pub jwks_url: Option<String>,
    pub jwks: Option<serde_json::Value>,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub allowed_scopes: String,
}

/// The error a removed client's subscriptions carry once `remove_client` has turned them off.
pub const REMOVED_CLIENT_REASON: &str = "the client that owns this subscription was removed";

/// The shortest secret an operator may choose: shorter ones could be guessed against a hash.
const MIN_SECRET_CHARS: usize = 32;

impl StateStore {
    /// Registers a client. Returns it and, for a symmetric client whose secret was generated,
    /// that secret (shown once; only its hash is kept).
    pub async fn add_client(&self, new: NewClient) -> Result<(Client, Option<String>), StateError> {
        let kind = new.kind.unwrap_or(ClientKind::Public);
        let client_id = new.client_id.clone().unwrap_or_else(|| random_token(16));
        if client_id.is_empty()
            || client_id.len() > 200
            || client_id
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(StateError::Invalid(
                "client id must be 1-200 printable characters without spaces".into(),
            ));
        }
        for uri in &new.redirect_uris {
            check_redirect_uri(uri)?;
        }
        let mut shown_secret = None;
        let secret_hash = match kind {
            ClientKind::Symmetric => {
                let secret = match new.secret {
                    Some(secret) if secret.chars().count() >= MIN_SECRET_CHARS => secret,
                    Some(_) => {
                        return Err(StateError::Invalid(format!(
                            "a client secret needs at least {MIN_SECRET_CHARS} characters (leave it out to have one generated)"
                        )));
                    }
                    None => {
                        let secret = random_token(32);
                        shown_secret = Some(secret.clone());
                        secret
                    }
                };
                Some(hash_token(&secret))
            }
            _ if new.secret.is_some() => {
                return Err(StateError::Invalid(format!(
                    "a {kind} client has no secret"
                )));
            }
            _ => None,
        };
        let jwks = match (&new.jwks, kind) {
            (Some(jwks), ClientKind::Asymmetric) => {
                if jwks.get("keys").and_then(|k| k.as_array()).is_none() {
                    return Err(StateError::Invalid(
                        "jwks must be a JSON Web Key Set: {\"keys\": [...]}".into(),
                    ));
                }
                Some(jwks.to_string())
            }
            (Some(_), _) => {
                return Err(StateError::Invalid(format!("a {kind} client has no keys")));
            }
            (None, _) => None,
        };
        if new.jwks_url.is_some() && kind != ClientKind::Asymmetric {
            return Err(StateError::Invalid(format!("a {kind} client has no keys")));
        }
        if kind == ClientKind::Asymmetric && jwks.is_none() && new.jwks_url.is_none() {
            return Err(StateError::Invalid(
                "an asymmetric client needs a jwks_url or an inline jwks".into(),
            ));
        }
        if let Some(url) = &new.jwks_url
            && !(url.starts_with("https://")
                || url.starts_with("http://127.0.0.1")
                || url.starts_with("http://localhost"))
        {
            return Err(StateError::Invalid(
                "jwks_url must be an https:// URL (http only on loopback)".into(),
            ));
        }
        let client = Client {
            client_id,
            name: new.name,
            kind,
            secret_hash,
            jwks_url: new.jwks_url,
            jwks,
            redirect_uris: new.redirect_uris,
            allowed_scopes: new
                .allowed_scopes
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
            created_at: now(),
        };
        let inserted = sqlx::query(
            "INSERT INTO oauth_client (client_id, name, kind, secret_hash, jwks_url, jwks, redirect_uris, allowed_scopes, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (client_id) DO NOTHING",
        )
        .bind(&client.client_id)
        .bind(&client.name)
        .bind(client.kind.as_str())
        .bind(&client.secret_hash)
        .bind(&client.jwks_url)
        .bind(&client.jwks)
        .bind(serde_json::to_string(&client.redirect_uris).expect("strings serialize"))
        .bind(&client.allowed_scopes)
        .bind(client.created_at)
        .execute(self.pool())
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(StateError::Invalid(format!(
                "client {} already exists",
                client.client_id
            )));
        }
        Ok((client, shown_secret))
    }

    pub async fn client(&self, client_id: &str) -> Result<Option<Client>, StateError> {
        let row = sqlx::query(&format!("{CLIENT_COLUMNS} WHERE client_id = $1"))
            .bind(client_id)
            .fetch_optional(self.pool())
            .await?;
        row.map(|row| client_from_row(&row)).transpose()
    }

    pub async fn clients(&self) -> Result<Vec<Client>, StateError> {
        let rows = sqlx::query(&format!("{CLIENT_COLUMNS} ORDER BY client_id"))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(client_from_row).collect()
    }

    /// Removes a client and everything issued to it (codes, refresh and access tokens stop working),
    /// and turns its subscriptions off in the same transaction: `$status` and `portico
    /// subscriptions list` say so at once, and the delivery worker claims none of them again.
    pub async fn remove_client(&self, client_id: &str) -> Result<bool, StateError> {
        let mut tx = self.pool().begin().await?;
        let removed = sqlx::query("DELETE FROM oauth_client WHERE client_id = $1")
            .bind(client_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let at = now();
        sqlx::query(
            "UPDATE access_token SET revoked_at = $1 WHERE client_id = $2 AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(client_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE refresh_token SET revoked_at = $1 WHERE client_id = $2 AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(client_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM authorization_code WHERE client_id = $1")
            .bind(client_id)
            .execute(&mut *tx)
            .await?;
        // Subscriptions already off keep their own reason (410, end reached, an operator).
        sqlx::query(
            "UPDATE subscription SET status = $1, error = $2, version = version + 1, updated_ms = $3 \
             WHERE client_id = $4 AND status <> $1",
        )
        .bind("off")
        .bind(REMOVED_CLIENT_REASON)
        .bind(now_ms())
        .bind(client_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(removed > 0)
    }
}

const CLIENT_COLUMNS: &str = "SELECT client_id, name, kind, secret_hash, jwks_url, jwks, redirect_uris, allowed_scopes, created_at FROM oauth_client";

fn client_from_row(row: &AnyRow) -> Result<Client, StateError> {
    let redirect_uris: String = row.try_get("redirect_uris")?;
    Ok(Client {
        client_id: row.try_get("client_id")?,
        name: row.try_get("name")?,
        kind: ClientKind::parse(&row.try_get::<String, _>("kind")?)?,
        secret_hash: row.try_get("secret_hash")?,
        jwks_url: row.try_get("jwks_url")?,
        jwks: row.try_get("jwks")?,
        redirect_uris: serde_json::from_str(&redirect_uris)
            .map_err(|e| StateError::Invalid(format!("stored redirect_uris: {e}")))?,
        allowed_scopes: row.try_get("allowed_scopes")?,
        created_at: row.try_get("created_at")?,
    })
}

/// Redirect URIs are compared byte for byte later (RFC 9700); here they must be absolute, carry no
/// fragment, and use https except on loopback (native and development apps).
fn check_redirect_uri(uri: &str) -> Result<(), StateError> {
    let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
        .iter()
        .any(|prefix| {
            uri.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '/']))
        });
    if !(uri.starts_with("https://") || loopback)
        || uri.contains('#')
        || uri.chars().any(char::is_whitespace)
    {
        return Err(StateError::Invalid(format!(
            "redirect URI {uri:?} must be an absolute https:// URL without fragment (http only on loopback)"
        )));
    }
    Ok(())
}
