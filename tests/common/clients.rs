//! A public client registered in a Portico state store, with a token issued to it: how a test
//! acts as a second EHR or as a bulk client of a running server.

use portico::auth::tokens::{Grant, TokenService};
use portico::state::StateStore;
use portico::state::clients::{ClientKind, NewClient};

/// Registers the public client `client_id` (`name`) in `store` and returns a token `tokens`
/// issues to it for `base` with `scope`, valid an hour.
pub async fn register_public_client(
    store: &StateStore,
    tokens: &TokenService,
    base: &str,
    (client_id, name): (&str, &str),
    scope: &str,
) -> String {
    store
        .add_client(NewClient {
            client_id: Some(client_id.into()),
            name: name.into(),
            kind: Some(ClientKind::Public),
            ..NewClient::default()
        })
        .await
        .unwrap();
    let grant = Grant {
        client_id: client_id.into(),
        subject: client_id.into(),
        scope: scope.into(),
        ..Default::default()
    };
    tokens
        .issue_for(&grant, base, 3600)
        .await
        .expect("a token")
        .0
}
