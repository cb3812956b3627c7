//! The websocket channel (SB-31): the binding token `$get-ws-binding-token` hands out, and the
//! socket a client opens at `websocket_url`, sends `bind-with-token: <token>` on, and then
//! receives a `handshake` per bound subscription, `event-notification`s as events are numbered
//! and `heartbeat`s when nothing else was sent for a heartbeat period. Each bind and every poll
//! re-checks what the binding rests on (the subscription, its owner, the client, the access
//! token the binding token was asked with) and closes the socket with a reason when one is gone.
//! Events come from the state store's outbox, after `delivered_through`, each focus re-read under
//! the owner's access as for rest-hook; a sent notification advances `delivered_through`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use chrono::{DateTime, Utc};
use serde_json::{Value as Json, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::deliver::{DEFAULT_EVENTS_PER_NOTIFICATION, WEBSOCKET, notification_events, status_of};
use super::notification::{
    NotificationEvent, NotificationType, SubscriptionStatusInfo, notification_bundle,
};
use super::owner::{owner_access, owner_claims};
use super::resource::{PayloadContent, SubscriptionSpec, fhir_instant};
use crate::access::Access;
use crate::auth::endpoints;
use crate::fhir::outcome::{Issue, IssueType, operation_outcome};
use crate::repository::Repository;
use crate::state::subscriptions::{StoredSubscription, WebsocketBinding, now_ms};
use crate::state::{StateError, StateStore, hash_token};

/// Where sockets are opened, relative to the server root (outside `/fhir`: the binding token,
/// not a bearer token, authenticates it).
pub const WEBSOCKET_PATH: &str = "/subscriptions/ws";
/// How long a binding token binds (SB-31 wants it short-lived).
pub const BINDING_TOKEN_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// The longest message a client may send: a bind command is far shorter.
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 4 * 1024;
/// A socket that has bound nothing after this long is closed.
const BIND_DEADLINE: Duration = Duration::from_secs(60);
/// Subscriptions one socket may bind at most.
const MAX_BINDINGS_PER_SOCKET: usize = 64;
/// How often a socket re-checks its bindings and looks for events without being woken (events
/// numbered on another replica arrive this way).
const POLL_PERIOD: Duration = Duration::from_secs(2);
/// The resolution of heartbeats and of the bind deadline.
const TICK: Duration = Duration::from_millis(500);

/// Wakes every bound socket when detection numbered events: a counter on a watch channel, so a
/// socket busy sending when it moves still sees the change afterwards.
#[derive(Clone, Debug)]
pub struct EventSignal(Arc<watch::Sender<u64>>);

impl Default for EventSignal {
    fn default() -> EventSignal {
        EventSignal(Arc::new(watch::channel(0).0))
    }
}

impl EventSignal {
    /// New events were numbered.
    pub fn notify(&self) {
        self.0.send_modify(|count| *count = count.wrapping_add(1));
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}

/// The token of `bind-with-token: <token>` (or `bind-with-token <token>`); `None` for any other
/// message.
pub fn parse_bind_command(message: &str) -> Option<&str> {
    let rest = message.trim().strip_prefix("bind-with-token")?;
    let token = match rest.strip_prefix(':') {
        Some(after_colon) => after_colon,
        None if rest.starts_with(char::is_whitespace) => rest,
        None => return None,
    }
    .trim();
    (!token.is_empty() && !token.contains(char::is_whitespace)).then_some(token)
}

/// The socket's URL for a client that reached Portico at `fhir_base`: `ws://` under `http://`,
/// `wss://` under `https://`, beside `/fhir` as the `/auth` paths are.
pub fn websocket_url(fhir_base: &str) -> String {
    let url = endpoints::absolute(fhir_base, WEBSOCKET_PATH);
    if let Some(rest) = url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        url
    }
}

/// `$get-ws-binding-token`'s answer: the token, when it expires, the subscriptions it binds
/// (absolute URLs) and where to open the socket.
pub fn binding_parameters(
    token: &str,
    expires: DateTime<Utc>,
    subscription_urls: &[String],
    websocket_url: &str,
) -> Json {
    let mut parameters = vec![
        json!({"name": "token", "valueString": token}),
        json!({"name": "expiration", "valueDateTime": fhir_instant(expires)}),
    ];
    parameters.extend(
        subscription_urls
            .iter()
            .map(|url| json!({"name": "subscription", "valueString": url})),
    );
    parameters.push(json!({"name": "websocket-url", "valueUrl": websocket_url}));
    json!({"resourceType": "Parameters", "parameter": parameters})
}

/// What a socket needs; no handle on the HTTP side's state, so open sockets do not keep it alive.
#[derive(Clone)]
pub struct SocketContext {
    pub store: StateStore,
    pub repository: Repository,
    pub signal: EventSignal,
    /// The application's shutdown: sockets close with 1001 (going away).
    pub shutdown: CancellationToken,
}

/// Why a socket stops.
#[derive(Debug)]
enum Stop {
    /// Close with this code and reason (also sent first as an OperationOutcome text frame).
    Close { code: u16, reason: String },
    /// The client went away or the connection broke: nothing more can be sent.
    Gone,
}

impl Stop {
    fn refused(reason: impl Into<String>) -> Stop {
        Stop::Close {
            code: close_code::POLICY,
            reason: reason.into(),
        }
    }
}

impl From<StateError> for Stop {
    fn from(error: StateError) -> Stop {
        tracing::warn!(%error, "websocket: subscription store unavailable");
        Stop::Close {
            code: close_code::AGAIN,
            reason: "the subscription store is unavailable; reconnect shortly".into(),
        }
    }
}

/// One subscription bound on a socket.
struct Bound {
    binding: WebsocketBinding,
    /// The subscription as last read.
    subscription: StoredSubscription,
    spec: SubscriptionSpec,
    access: Access,
    /// The last event this socket sent.
    sent_through: i64,
    last_sent: Instant,
}

/// A subscription the binding still stands for: its row, request and the owner's access now.
struct Checked {
    subscription: StoredSubscription,
    spec: SubscriptionSpec,
    access: Access,
}

/// Whether `binding` still stands: the subscription exists on the websocket channel, is not off
/// or ended, belongs to the client and user the binding token was issued to, that client is
/// registered, and the access token the binding token was asked with is not revoked.
async fn check_binding(
    store: &StateStore,
    binding: &WebsocketBinding,
    now: i64,
) -> Result<Checked, Stop> {
    let id = &binding.subscription_id;
    let subscription = store
        .subscription(id)
        .await?
        .ok_or_else(|| Stop::refused(format!("Subscription/{id} was deleted")))?;
    let owner = owner_claims(&subscription.owner);
    if subscription.client_id != binding.client_id
        || owner.as_ref().is_none_or(|o| o.sub != binding.subject)
    {
        return Err(Stop::refused(format!(
            "Subscription/{id} is not the binding token holder's"
        )));
    }
    if subscription.channel != WEBSOCKET {
        return Err(Stop::refused(format!(
            "Subscription/{id} is no longer a websocket subscription"
        )));
    }
    if subscription.status == "off" || subscription.end_ms.is_some_and(|end| end <= now) {
        return Err(Stop::refused(format!("Subscription/{id} is off")));
    }
    if store.client(&binding.client_id).await?.is_none() {
        return Err(Stop::refused(
            "the client that owns the subscription was removed",
        ));
    }
    let revoked = store
        .access_token(&binding.access_jti)
        .await?
        .is_some_and(|token| token.revoked_at.is_some());
    if revoked {
        return Err(Stop::refused(
            "the access token the binding token was issued under was revoked",
        ));
    }
    let spec: SubscriptionSpec = serde_json::from_str(&subscription.spec)
        .map_err(|_| Stop::refused(format!("Subscription/{id} is unreadable")))?;
    let access = owner_access(&subscription.owner).ok_or_else(|| {
        Stop::refused(format!(
            "the owner's claims no longer grant access for Subscription/{id}"
        ))
    })?;
    Ok(Checked {
        subscription,
        spec,
        access,
    })
}

/// Serves one socket until the client leaves, a binding stops standing, or the server stops.
pub async fn serve_socket(mut socket: WebSocket, context: SocketContext) {
    let stop = run(&mut socket, &context).await;
    if let Stop::Close { code, reason } = stop {
        // The reason names a subscription at most, never a token.
        tracing::info!(code, reason = %reason, "closing a subscription websocket");
        let issue_type = match code {
            close_code::POLICY => IssueType::Forbidden,
            close_code::AGAIN => IssueType::Transient,
            _ => IssueType::Informational,
        };
        let outcome = operation_outcome(&[Issue::error(issue_type, reason.clone())]);
        let _ = socket.send(Message::Text(outcome.to_string().into())).await;
        // A close frame's reason is at most 123 bytes.
        let mut cut = reason.len().min(123);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        let _ = socket
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: reason[..cut].into(),
            })))
            .await;
    }
}

async fn run(socket: &mut WebSocket, context: &SocketContext) -> Stop {
    let mut bound: Vec<Bound> = Vec::new();
    let mut events = context.signal.subscribe();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let opened = Instant::now();
    let mut last_poll = Instant::now();
    loop {
        let step = tokio::select! {
            _ = context.shutdown.cancelled() => {
                return Stop::Close { code: close_code::AWAY, reason: "the server is stopping".into() };
            }
            message = socket.recv() => match message {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Stop::Gone,
                Some(Ok(Message::Text(text))) => match parse_bind_command(&text) {
                    Some(token) => bind(socket, context, &mut bound, token).await,
                    None => say(socket, "send bind-with-token: <token> (from $get-ws-binding-token)").await,
                },
                Some(Ok(Message::Binary(_))) => say(socket, "only text messages are understood here").await,
                Some(Ok(_)) => Ok(()),
            },
            changed = events.changed() => {
                if changed.is_ok() {
                    last_poll = Instant::now();
                    poll(socket, context, &mut bound).await
                } else {
                    Ok(())
                }
            }
            _ = tick.tick() => {
                if bound.is_empty() && opened.elapsed() >= BIND_DEADLINE {
                    return Stop::refused("no subscription was bound in time");
                }
                if last_poll.elapsed() >= POLL_PERIOD {
                    last_poll = Instant::now();
                    poll(socket, context, &mut bound).await
                } else {
                    heartbeats(socket, &mut bound).await
                }
            }
        };
        if let Err(stop) = step {
            return stop;
        }
    }
}

/// Tells the client something without closing (an OperationOutcome text frame).
async fn say(socket: &mut WebSocket, text: &str) -> Result<(), Stop> {
    let outcome = operation_outcome(&[Issue::error(IssueType::Invalid, text)]);
    send(socket, &outcome).await
}

async fn send(socket: &mut WebSocket, json: &Json) -> Result<(), Stop> {
    socket
        .send(Message::Text(json.to_string().into()))
        .await
        .map_err(|_| Stop::Gone)
}

/// `bind-with-token`: checks the token and each subscription it binds, then sends each a
/// handshake (which makes a `requested` subscription `active`) and whatever events wait.
async fn bind(
    socket: &mut WebSocket,
    context: &SocketContext,
    bound: &mut Vec<Bound>,
    token: &str,
) -> Result<(), Stop> {
    let now = now_ms();
    let bindings = context.store.websocket_bindings(&hash_token(token)).await?;
    if bindings.is_empty() {
        return Err(Stop::refused("the binding token is not known"));
    }
    if bindings.iter().all(|b| b.expires_ms <= now) {
        return Err(Stop::refused(
            "the binding token has expired; ask $get-ws-binding-token for another",
        ));
    }
    let mut checked = Vec::with_capacity(bindings.len());
    for binding in bindings.into_iter().filter(|b| b.expires_ms > now) {
        let live = check_binding(&context.store, &binding, now).await?;
        checked.push((binding, live));
    }
    for (binding, live) in checked {
        bound.retain(|b| b.binding.subscription_id != binding.subscription_id);
        if bound.len() >= MAX_BINDINGS_PER_SOCKET {
            return Err(Stop::refused(format!(
                "a socket binds at most {MAX_BINDINGS_PER_SOCKET} subscriptions"
            )));
        }
        let mut entry = Bound {
            sent_through: live.subscription.delivered_through,
            subscription: live.subscription,
            spec: live.spec,
            access: live.access,
            binding,
            last_sent: Instant::now(),
        };
        handshake(socket, context, &mut entry, now).await?;
        send_events(socket, context, &mut entry).await?;
        bound.push(entry);
    }
    Ok(())
}

/// Records a handshake (which makes a `requested` subscription `active`) and sends it, stating
/// the subscription as it then stands.
async fn handshake(
    socket: &mut WebSocket,
    context: &SocketContext,
    entry: &mut Bound,
    now: i64,
) -> Result<(), Stop> {
    let id = entry.subscription.id.clone();
    context
        .store
        .record_websocket_delivery(&id, entry.subscription.delivered_through, true, now)
        .await?;
    if let Some(current) = context.store.subscription(&id).await? {
        entry.subscription = current;
    }
    let bundle = notification(
        &entry.subscription,
        NotificationType::Handshake,
        &[],
        entry.spec.channel.content,
    );
    send(socket, &bundle).await?;
    entry.last_sent = Instant::now();
    Ok(())
}

/// Re-checks every binding (closing the socket when one no longer stands), sends the events
/// numbered since, then any heartbeat due.
async fn poll(
    socket: &mut WebSocket,
    context: &SocketContext,
    bound: &mut [Bound],
) -> Result<(), Stop> {
    let now = now_ms();
    for entry in bound.iter_mut() {
        let live = match check_binding(&context.store, &entry.binding, now).await {
            Ok(live) => live,
            // The store being briefly down does not end a socket; the next poll checks again.
            Err(Stop::Close { code, .. }) if code == close_code::AGAIN => continue,
            Err(stop) => return Err(stop),
        };
        entry.subscription = live.subscription;
        entry.spec = live.spec;
        entry.access = live.access;
        if entry.subscription.handshake_pending {
            // Reactivated by its owner (an update with status requested) while bound: the new
            // request gets its handshake on this socket.
            handshake(socket, context, entry, now).await?;
        }
        send_events(socket, context, entry).await?;
    }
    heartbeats(socket, bound).await
}

/// Sends the subscription's events after `sent_through`, `max-count` per notification, and
/// records each notification as delivered.
async fn send_events(
    socket: &mut WebSocket,
    context: &SocketContext,
    entry: &mut Bound,
) -> Result<(), Stop> {
    let limit = i64::from(
        entry
            .spec
            .channel
            .max_count
            .unwrap_or(DEFAULT_EVENTS_PER_NOTIFICATION)
            .max(1),
    );
    while entry.sent_through < entry.subscription.events_since_start {
        let events = context
            .store
            .subscription_events(
                &entry.subscription.id,
                entry.sent_through + 1,
                entry.subscription.events_since_start,
                limit,
            )
            .await?;
        let Some(last) = events.last().map(|e| e.number) else {
            // Purged meanwhile ($events answers what is kept): nothing left to send.
            entry.sent_through = entry.subscription.events_since_start;
            break;
        };
        let listed = notification_events(
            &context.repository,
            &entry.subscription.base_url,
            entry.spec.channel.content,
            &entry.access,
            &events,
        )
        .await;
        let bundle = notification(
            &entry.subscription,
            NotificationType::EventNotification,
            &listed,
            entry.spec.channel.content,
        );
        send(socket, &bundle).await?;
        crate::metrics::metrics()
            .deliveries
            .inc(&["websocket", "delivered"]);
        entry.sent_through = last;
        entry.last_sent = Instant::now();
        context
            .store
            .record_websocket_delivery(&entry.subscription.id, last, false, now_ms())
            .await?;
    }
    Ok(())
}

/// A heartbeat for each binding whose subscription asked for them and that sent nothing for
/// its period.
async fn heartbeats(socket: &mut WebSocket, bound: &mut [Bound]) -> Result<(), Stop> {
    for entry in bound.iter_mut() {
        let Some(period) = entry.spec.channel.heartbeat_period else {
            continue;
        };
        if entry.last_sent.elapsed() < Duration::from_secs(u64::from(period)) {
            continue;
        }
        let bundle = notification(
            &entry.subscription,
            NotificationType::Heartbeat,
            &[],
            entry.spec.channel.content,
        );
        send(socket, &bundle).await?;
        entry.last_sent = Instant::now();
    }
    Ok(())
}

/// A notification of `kind` for `subscription` as it was last read, carrying `events`.
fn notification(
    subscription: &StoredSubscription,
    kind: NotificationType,
    events: &[NotificationEvent],
    content: PayloadContent,
) -> Json {
    let url = format!("{}/Subscription/{}", subscription.base_url, subscription.id);
    let info = SubscriptionStatusInfo {
        subscription_url: &url,
        topic: subscription.topic.as_deref(),
        status: status_of(subscription),
        kind,
        events_since_start: subscription.events_since_start.max(0) as u64,
        errors: Vec::new(),
    };
    notification_bundle(&info, events, content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_commands_are_read_with_or_without_the_colon() {
        let cases = [
            ("bind-with-token: abc123", Some("abc123")),
            ("bind-with-token abc123", Some("abc123")),
            ("bind-with-token:abc123", Some("abc123")),
            ("  bind-with-token:   abc-_123  \n", Some("abc-_123")),
            ("bind-with-token:", None),
            ("bind-with-token", None),
            ("bind-with-token: two words", None),
            ("bind-with-tokenabc", None),
            ("unbind-with-token: abc", None),
            ("BIND-WITH-TOKEN: abc", None),
            ("", None),
        ];
        for (message, token) in cases {
            assert_eq!(parse_bind_command(message), token, "{message:?}");
        }
    }

    #[test]
    fn the_socket_url_follows_the_scheme_and_prefix_the_client_used() {
        let cases = [
            (
                "http://127.0.0.1:8080/fhir",
                "ws://127.0.0.1:8080/subscriptions/ws",
            ),
            (
                "https://fhir.example.org/fhir",
                "wss://fhir.example.org/subscriptions/ws",
            ),
            (
                "https://example.org/pms/fhir",
                "wss://example.org/pms/subscriptions/ws",
            ),
        ];
        for (base, url) in cases {
            assert_eq!(websocket_url(base), url, "{base}");
        }
    }

    #[test]
    fn binding_parameters_name_token_expiration_subscriptions_and_url() {
        let expires = DateTime::parse_from_rfc3339("2026-01-14T10:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let parameters = binding_parameters(
            "t0k3n",
            expires,
            &["https://x.example/fhir/Subscription/a".to_owned()],
            "wss://x.example/subscriptions/ws",
        );
        assert_eq!(
            parameters,
            json!({"resourceType": "Parameters", "parameter": [
                {"name": "token", "valueString": "t0k3n"},
                {"name": "expiration", "valueDateTime": fhir_instant(expires)},
                {"name": "subscription", "valueString": "https://x.example/fhir/Subscription/a"},
                {"name": "websocket-url", "valueUrl": "wss://x.example/subscriptions/ws"},
            ]})
        );
        let bytes = serde_json::to_vec(&parameters).unwrap();
        crate::fhir::xml::parse_strict(&bytes).expect("strict R4 Parameters");
    }
}
