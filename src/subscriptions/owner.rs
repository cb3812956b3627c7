//! Whose subscription it is: the token claims a subscription was created under, kept with it and
//! turned back into an `Access` whenever it is matched or notified, so what a subscriber learns
//! never exceeds what its token could read, now.

use crate::access::Access;
use crate::auth::permissions::access_for;
use crate::auth::tokens::AccessClaims;

/// The claims as stored (JSON).
pub fn owner_json(claims: &AccessClaims) -> String {
    serde_json::to_string(claims).expect("access claims serialize")
}

/// The stored claims, parsed.
pub fn owner_claims(owner: &str) -> Option<AccessClaims> {
    serde_json::from_str(owner).ok()
}

/// What the owner may read, or `None` when the stored claims no longer make an access (then the
/// subscription is matched against nothing and notifies nothing).
pub fn owner_access(owner: &str) -> Option<Access> {
    access_for(&owner_claims(owner)?).ok()
}
