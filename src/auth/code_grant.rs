//! The token endpoint's user-facing grants: `authorization_code` (a code from the sign-in, with
//! its PKCE verifier) and `refresh_token` (rotated on every use). Tokens issued from one sign-in
//! share a family: a code presented twice, or a rotated refresh token presented again, revokes
//! the whole family (RFC 6749 §4.1.2, RFC 9700 §2.2.2), since one of the two presenters is not
//! the app.

use std::collections::BTreeMap;

use serde_json::{Value as Json, json};

use crate::auth::authorization::verifier_matches;
use crate::auth::endpoints;
use crate::auth::scope::{self, Scope};
use crate::auth::token_endpoint::{AuthServer, OAuthError, unavailable};
use crate::auth::tokens::{Grant, IdTokenClaims};
use crate::state::authorizations::{Redeemed, RefreshGrant};
use crate::state::clients::Client;
use crate::state::{hash_token, now, random_token};

/// Refresh tokens for `offline_access` last this long (ONC attests at least three months).
pub const OFFLINE_REFRESH_SECONDS: i64 = 90 * 24 * 3600;
/// Refresh tokens for `online_access` last about a working day.
pub const ONLINE_REFRESH_SECONDS: i64 = 12 * 3600;

fn invalid_grant(description: &str) -> OAuthError {
    OAuthError::new("invalid_grant", description)
}

/// A code or refresh token presented again: one of the two presenters is not the app, so every
/// token of that sign-in is revoked (RFC 6749 §4.1.2, RFC 9700 §2.2.2).
async fn replayed(server: &AuthServer, client: &Client, family_id: &str, what: &str) -> OAuthError {
    if let Err(error) = server.tokens.revoke_family(family_id).await {
        return unavailable(error);
    }
    tracing::warn!(
        client_id = %client.client_id,
        "{what} was presented again; every token of its sign-in is revoked"
    );
    invalid_grant(&format!(
        "{what} was presented again; the tokens of this authorization are revoked"
    ))
}

/// `grant_type=authorization_code` for an authenticated (or, if public, self-named) `client`.
pub async fn exchange_code(
    server: &AuthServer,
    fhir_base: &str,
    client: &Client,
    form: &BTreeMap<String, String>,
) -> Result<Json, OAuthError> {
    let store = server.tokens.store();
    let code = form
        .get("code")
        .ok_or_else(|| OAuthError::new("invalid_request", "code is missing"))?;
    let code = match store
        .redeem_code(&hash_token(code))
        .await
        .map_err(unavailable)?
    {
        Redeemed::Fresh(code) => code,
        Redeemed::Unknown => return Err(invalid_grant("the code is not valid")),
        Redeemed::Replayed { family_id, .. } => {
            return Err(replayed(server, client, &family_id, "an authorization code").await);
        }
    };
    if code.client_id != client.client_id {
        return Err(invalid_grant("the code was issued to another client"));
    }
    if code.expires_at < now() {
        return Err(invalid_grant("the code has expired"));
    }
    if form.get("redirect_uri") != Some(&code.redirect_uri) {
        return Err(invalid_grant(
            "redirect_uri differs from the authorization request's",
        ));
    }
    let verifier = form
        .get("code_verifier")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| OAuthError::new("invalid_request", "code_verifier is missing"))?;
    if !verifier_matches(verifier, &code.code_challenge) {
        return Err(invalid_grant("code_verifier does not match the challenge"));
    }
    let session = Session {
        family_id: code.family_id,
        scope: code.scope,
        username: code.username,
        patient: code.patient,
        encounter: code.encounter,
        nonce: code.nonce,
        refresh_expires_at: None,
    };
    answer(server, fhir_base, client, session).await
}

/// `grant_type=refresh_token`: a new access token and a new refresh token for the same (or a
/// narrower) scope; the presented refresh token is spent.
pub async fn refresh(
    server: &AuthServer,
    fhir_base: &str,
    client: &Client,
    form: &BTreeMap<String, String>,
) -> Result<Json, OAuthError> {
    let presented = form
        .get("refresh_token")
        .ok_or_else(|| OAuthError::new("invalid_request", "refresh_token is missing"))?;
    let store = server.tokens.store();
    let presented = hash_token(presented);
    // A wider scope is refused before the token is spent, so the app can retry with its own.
    let requested = form.get("scope").filter(|s| !s.trim().is_empty());
    let narrowed = match (requested, store.refresh_token_issue(&presented).await) {
        (Some(requested), Ok(Some((_, original)))) => Some(narrower_scope(&original, requested)?),
        (_, Err(e)) => return Err(unavailable(e)),
        _ => None,
    };
    let grant = match store
        .rotate_refresh_token(&presented)
        .await
        .map_err(unavailable)?
    {
        Redeemed::Fresh(grant) => grant,
        Redeemed::Unknown => return Err(invalid_grant("the refresh token is not valid")),
        Redeemed::Replayed { family_id, .. } => {
            return Err(replayed(server, client, &family_id, "a spent refresh token").await);
        }
    };
    if grant.client_id != client.client_id {
        // Another client holds this client's token: it leaked. End the authorization.
        server
            .tokens
            .revoke_family(&grant.family_id)
            .await
            .map_err(unavailable)?;
        return Err(invalid_grant(
            "the refresh token was issued to another client",
        ));
    }
    if grant.expires_at < now() {
        return Err(invalid_grant("the refresh token has expired"));
    }
    let scope = narrowed.unwrap_or_else(|| grant.scope.clone());
    let username = grant
        .username
        .clone()
        .ok_or_else(|| invalid_grant("the refresh token has no user"))?;
    let session = Session {
        family_id: grant.family_id,
        scope,
        username,
        patient: grant.patient,
        encounter: grant.encounter,
        nonce: None,
        refresh_expires_at: Some(grant.expires_at),
    };
    answer(server, fhir_base, client, session).await
}

/// A refresh may ask for the same scopes or fewer, never more (SMART; RFC 6749 §6).
fn narrower_scope(original: &str, requested: &str) -> Result<String, OAuthError> {
    let requested = scope::parse_scopes(requested)
        .map_err(|e| OAuthError::new("invalid_scope", e.to_string()))?;
    let original = scope::parse_scopes_lenient(original).0;
    let narrowed = scope::narrow(&requested, &original);
    if narrowed.len() != requested.len() || narrowed.iter().zip(&requested).any(|(a, b)| a != b) {
        return Err(OAuthError::new(
            "invalid_scope",
            "a refresh may not ask for more than the original grant",
        ));
    }
    Ok(scope::format_scopes(&narrowed))
}

/// What one sign-in grants, as the token answer needs it.
struct Session {
    family_id: String,
    scope: String,
    username: String,
    patient: Option<String>,
    encounter: Option<String>,
    nonce: Option<String>,
    /// For a refresh of `online_access`: the family's refresh tokens end when the first did.
    refresh_expires_at: Option<i64>,
}

async fn answer(
    server: &AuthServer,
    fhir_base: &str,
    client: &Client,
    session: Session,
) -> Result<Json, OAuthError> {
    let store = server.tokens.store();
    let user = store
        .user(&session.username)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| invalid_grant("the user of this grant no longer exists"))?;
    let fhir_user = user
        .fhir_user
        .as_deref()
        .map(|resource| format!("{}/{resource}", fhir_base.trim_end_matches('/')));
    let scopes = scope::parse_scopes_lenient(&session.scope).0;
    let lifetime = server.settings.access_token_seconds;
    let grant = Grant {
        client_id: client.client_id.clone(),
        subject: user.username.clone(),
        scope: session.scope.clone(),
        patient: session.patient.clone(),
        encounter: session.encounter.clone(),
        fhir_user: fhir_user.clone(),
        username: Some(user.username.clone()),
        family_id: Some(session.family_id.clone()),
    };
    let (access_token, _) = server
        .tokens
        .issue_for(&grant, fhir_base, lifetime)
        .await
        .map_err(unavailable)?;
    let mut body = json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": lifetime,
        "scope": session.scope,
    });
    if let Some(patient) = &session.patient {
        body["patient"] = json!(patient);
        body["need_patient_banner"] = json!(user.patient_id().is_none());
    }
    if let Some(encounter) = &session.encounter {
        body["encounter"] = json!(encounter);
    }
    let offline = scopes.contains(&Scope::OfflineAccess);
    if offline || scopes.contains(&Scope::OnlineAccess) {
        let refresh_token = random_token(32);
        let expires_at = match (offline, session.refresh_expires_at) {
            (true, _) | (false, None) => {
                now()
                    + if offline {
                        OFFLINE_REFRESH_SECONDS
                    } else {
                        ONLINE_REFRESH_SECONDS
                    }
            }
            (false, Some(until)) => until,
        };
        store
            .store_refresh_token(
                &hash_token(&refresh_token),
                &RefreshGrant {
                    family_id: session.family_id.clone(),
                    client_id: client.client_id.clone(),
                    scope: session.scope.clone(),
                    username: Some(user.username.clone()),
                    patient: session.patient.clone(),
                    encounter: session.encounter.clone(),
                    expires_at,
                },
            )
            .await
            .map_err(unavailable)?;
        body["refresh_token"] = json!(refresh_token);
    }
    let identity = scopes.contains(&Scope::FhirUser) || scopes.contains(&Scope::Profile);
    if scopes.contains(&Scope::OpenId) && identity {
        let issued_at = now();
        let id_token = server
            .tokens
            .id_token(&IdTokenClaims {
                iss: endpoints::absolute(fhir_base, endpoints::ISSUER),
                sub: user.username.clone(),
                aud: client.client_id.clone(),
                exp: issued_at + lifetime,
                iat: issued_at,
                nonce: session.nonce,
                fhir_user: fhir_user.filter(|_| scopes.contains(&Scope::FhirUser)),
            })
            .await
            .map_err(unavailable)?;
        body["id_token"] = json!(id_token);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::narrower_scope;

    #[test]
    fn a_refresh_may_narrow_but_never_widen() {
        let original = "launch/patient patient/*.rs offline_access";
        assert_eq!(
            narrower_scope(original, "patient/Observation.rs offline_access").unwrap(),
            "patient/Observation.rs offline_access"
        );
        assert!(narrower_scope(original, "patient/*.cruds").is_err());
        assert!(narrower_scope(original, "user/*.rs").is_err());
        assert!(narrower_scope(original, "openid").is_err());
    }
}
