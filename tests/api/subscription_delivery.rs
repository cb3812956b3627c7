//! Rest-hook delivery when the receiver misbehaves, on both state stores: a receiver that answers
//! a scripted sequence (500, 429 with Retry-After, a redirect, 410, too slow, or is down), and the
//! delivery worker driven by a test clock, so each recorded retry is checked against the schedule.
//! Subscriptions are made and read through a real Portico (its own worker off); the test numbers
//! events as detection would.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use portico::repository::{LookupCache, Repository};
use portico::state::StateStore;
use portico::state::clients::REMOVED_CLIENT_REASON;
use portico::state::subscriptions::{NewEvent, PassCommit, StoredSubscription, now_ms};
use portico::subscriptions::deliver::{Clock, DeliveryWorker};
use portico::subscriptions::resource::{HEARTBEAT_PERIOD_EXTENSION, TIMEOUT_EXTENSION};
use portico::subscriptions::rest_hook::RestHookSender;
use portico::subscriptions::schedule::{DISABLE_AFTER, JITTER, SCHEDULE};
use serde_json::{Value as Json, json};
use tokio::sync::Notify;

use crate::notifications::{status_part, topic_subscription};
use crate::subscriptions::{Running, start_with};
use crate::support::{self, Backend};

/// The jitter draw the test clock hands the worker: every delay is 0.9 of its schedule step.
const DRAW: f64 = 0.25;

/// The delay the worker must record after the `failures`-th failure in a row, in milliseconds.
fn scheduled_delay_ms(failures: usize) -> i64 {
    let step = SCHEDULE[failures.min(SCHEDULE.len() - 1)];
    let delay = step.mul_f64(1.0 - JITTER + 2.0 * JITTER * DRAW);
    assert!(delay >= step.mul_f64(1.0 - JITTER) && delay <= step.mul_f64(1.0 + JITTER));
    delay.as_millis() as i64
}

/// What the receiver answers to one POST.
#[derive(Clone, Debug)]
enum Answer {
    Status(u16),
    TooManyRequests {
        retry_after_seconds: u64,
    },
    /// 302 to another path of the receiver, which counts any request that follows it.
    Redirect,
    /// 200, after this long.
    Slow(Duration),
}

#[derive(Default)]
struct Script {
    answers: Mutex<VecDeque<Answer>>,
    received: Mutex<Vec<Json>>,
    redirects_followed: AtomicUsize,
}

/// A receiver on 127.0.0.1 that answers its script in order, then 200; every answer closes the
/// connection, so taking it down refuses the next notification.
struct ScriptedReceiver {
    port: u16,
    script: Arc<Script>,
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

async fn hook(State(script): State<Arc<Script>>, body: Bytes) -> Response {
    script
        .received
        .lock()
        .unwrap()
        .push(serde_json::from_slice(&body).unwrap_or(Json::Null));
    let answer = script.answers.lock().unwrap().pop_front();
    let mut response = match answer {
        None => StatusCode::OK.into_response(),
        Some(Answer::Status(code)) => StatusCode::from_u16(code).unwrap().into_response(),
        Some(Answer::TooManyRequests {
            retry_after_seconds,
        }) => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, retry_after_seconds.to_string())],
        )
            .into_response(),
        Some(Answer::Redirect) => {
            (StatusCode::FOUND, [(header::LOCATION, "/elsewhere")]).into_response()
        }
        Some(Answer::Slow(wait)) => {
            tokio::time::sleep(wait).await;
            StatusCode::OK.into_response()
        }
    };
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

async fn elsewhere(State(script): State<Arc<Script>>) -> StatusCode {
    script.redirects_followed.fetch_add(1, Ordering::SeqCst);
    StatusCode::OK
}

impl ScriptedReceiver {
    async fn start() -> ScriptedReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let receiver = ScriptedReceiver {
            port: listener.local_addr().unwrap().port(),
            script: Arc::default(),
            server: Mutex::new(None),
        };
        receiver.serve(listener);
        receiver
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let app = Router::new()
            .route("/hook", post(hook))
            .route("/elsewhere", any(elsewhere))
            .with_state(self.script.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        *self.server.lock().unwrap() = Some(server);
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn answer(&self, answers: impl IntoIterator<Item = Answer>) {
        self.script.answers.lock().unwrap().extend(answers);
    }

    fn received(&self) -> Vec<Json> {
        self.script.received.lock().unwrap().clone()
    }

    /// Stops listening: connecting is refused until `come_up`.
    async fn go_down(&self) {
        let server = self.server.lock().unwrap().take();
        if let Some(server) = server {
            server.abort();
            let _ = server.await;
        }
    }

    async fn come_up(&self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        self.serve(listener);
    }
}

/// The event numbers a notification carries, in order.
fn event_numbers(bundle: &Json) -> Vec<i64> {
    bundle["entry"][0]["resource"]["parameter"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"] == "notification-event")
        .flat_map(|p| p["part"].as_array().into_iter().flatten())
        .filter(|part| part["name"] == "event-number")
        .filter_map(|part| part["valueString"].as_str()?.parse().ok())
        .collect()
}

/// A Portico on one state store (its own worker off), the delivery worker on a test clock, and a
/// scripted receiver.
struct Bench {
    app: Running,
    worker: DeliveryWorker,
    now: Arc<AtomicI64>,
    receiver: ScriptedReceiver,
}

impl Bench {
    async fn start(db_url: &str, state_url: String) -> Bench {
        let backend = state_url.split(':').next().unwrap_or_default().to_owned();
        eprintln!("on the {backend} state store");
        let app = start_with(db_url, Some(state_url), false).await;
        let now = Arc::new(AtomicI64::new(now_ms()));
        let read_now = now.clone();
        let legacy = &app.settings.legacy;
        let worker = DeliveryWorker {
            repository: Repository {
                adapter: Arc::new(
                    portico::adapter::load(&legacy.adapters_dir.join(&legacy.adapter)).unwrap(),
                ),
                db: support::legacy_database(db_url, Duration::from_secs(5)),
                lookups: Arc::new(LookupCache::new(legacy.lookup_refresh())),
            },
            store: app.store.clone(),
            sender: Arc::new(RestHookSender::new(
                app.settings.subscriptions.endpoint_policy(),
            )),
            sender_policy: app.settings.subscriptions.endpoint_policy(),
            replica: "delivery-tests".into(),
            wake: Arc::new(Notify::new()),
            mllp: Default::default(),
            clock: Clock::new(move || read_now.load(Ordering::SeqCst), || DRAW),
        };
        Bench {
            app,
            worker,
            now,
            receiver: ScriptedReceiver::start().await,
        }
    }

    fn now(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }

    fn set_clock(&self, at_ms: i64) {
        self.now.store(at_ms, Ordering::SeqCst);
    }

    fn advance(&self, by: Duration) {
        self.now.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }

    /// Creates a subscription to the receiver through the API, with these channel extensions.
    async fn create(&self, extensions: Json, end: Option<String>) -> String {
        let mut subscription = topic_subscription(
            "patient-demographics-changed",
            &[],
            &self.receiver.url(),
            "empty",
        );
        subscription["channel"]["extension"] = extensions;
        if let Some(end) = end {
            subscription["end"] = json!(end);
        }
        let (status, created) = self.app.create(&subscription).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        created["id"].as_str().unwrap().to_owned()
    }

    /// One round of the worker: how many subscriptions it served.
    async fn round(&self) -> usize {
        self.worker.round().await.unwrap()
    }

    async fn stored(&self, id: &str) -> StoredSubscription {
        self.app.store.subscription(id).await.unwrap().unwrap()
    }

    /// Creates a subscription and lets its handshake through: it is active.
    async fn active(&self, extensions: Json, end: Option<String>) -> String {
        let id = self.create(extensions, end).await;
        assert_eq!(self.round().await, 1, "the handshake");
        assert_eq!(self.stored(&id).await.status, "active");
        id
    }

    /// Numbers `count` events for the subscription, as a detection pass commits them.
    async fn append(&self, id: &str, count: usize) {
        append_events(&self.app.store, id, count, self.now()).await;
    }

    /// After a failed attempt at the clock's time: `failures` in a row are recorded, the reason
    /// holds `reason`, the next attempt is `delay_ms` later, and the worker leaves the
    /// subscription alone until then. Moves the clock to that attempt.
    async fn expect_retry(&self, id: &str, failures: i64, reason: &str, delay_ms: i64) {
        let stored = self.stored(id).await;
        assert_eq!(stored.status, "error", "{stored:?}");
        assert_eq!(stored.failed_attempts, failures, "{stored:?}");
        assert!(!stored.retries_stopped, "{stored:?}");
        let failure = stored.last_failure.clone().unwrap_or_default();
        assert!(
            failure.contains(reason),
            "{failure:?} should say {reason:?}"
        );
        assert_eq!(stored.next_attempt_ms, self.now() + delay_ms, "{stored:?}");
        self.set_clock(stored.next_attempt_ms - 1);
        assert_eq!(
            self.round().await,
            0,
            "nothing is sent before the next attempt"
        );
        self.set_clock(stored.next_attempt_ms);
    }
}

/// The test's own detection mapping, whose lease numbers events for any subscription.
const TEST_MAPPING: &str = "delivery-tests";

pub(crate) async fn append_events(store: &StateStore, id: &str, count: usize, occurred_ms: i64) {
    let owner = "delivery-tests";
    // Leases are reckoned in real time by the store, whatever the test clock says.
    store
        .claim_change_cursor(TEST_MAPPING, owner, now_ms() + 60_000)
        .await
        .unwrap()
        .expect("nobody else holds the test mapping");
    let events = (1..=count)
        .map(|n| NewEvent {
            subscription_id: id.to_owned(),
            topic: None,
            resource_type: "Patient".into(),
            resource_id: n.to_string(),
            change_kind: "update".into(),
            occurred_ms,
        })
        .collect();
    store
        .commit_detection_pass(&PassCommit {
            mapping: TEST_MAPPING.into(),
            lease_owner: owner.into(),
            events,
            ..PassCommit::default()
        })
        .await
        .unwrap()
        .expect("the lease was just taken");
}

fn timeout_seconds(seconds: u32) -> Json {
    json!({"url": TIMEOUT_EXTENSION, "valueUnsignedInt": seconds})
}

#[tokio::test]
async fn receiver_faults_follow_the_schedule_and_the_backlog_arrives_in_order() {
    let test = "delivery_faults";
    let db_url = support::seed(Backend::Sqlite, test).await;
    for state_url in support::state_urls(test).await {
        let bench = Bench::start(&db_url, state_url).await;
        // The subscription's own timeout (SB-25) stands in for the sender's 15 s.
        let id = bench.active(json!([timeout_seconds(1)]), None).await;
        bench.append(&id, 2).await;
        bench.receiver.answer([
            Answer::Status(500),
            Answer::TooManyRequests {
                retry_after_seconds: 600,
            },
            Answer::Redirect,
            Answer::Slow(Duration::from_secs(3)),
        ]);

        assert_eq!(bench.round().await, 1);
        let first_failure = bench.now();
        bench
            .expect_retry(&id, 1, "answered 500", scheduled_delay_ms(1))
            .await;

        // Retry-After longer than the step is honoured exactly.
        assert!(scheduled_delay_ms(2) < 600_000);
        assert_eq!(bench.round().await, 1);
        bench.expect_retry(&id, 2, "answered 429", 600_000).await;

        // A redirect is a failure, and nobody follows it.
        assert_eq!(bench.round().await, 1);
        bench
            .expect_retry(&id, 3, "redirects are not followed", scheduled_delay_ms(3))
            .await;
        assert_eq!(
            bench
                .receiver
                .script
                .redirects_followed
                .load(Ordering::SeqCst),
            0
        );

        // The receiver is down: the connection is refused.
        bench.receiver.go_down().await;
        assert_eq!(bench.round().await, 1);
        bench
            .expect_retry(&id, 4, "could not connect", scheduled_delay_ms(4))
            .await;
        bench.receiver.come_up().await;

        // Slower than the subscription's 1 s timeout.
        bench.append(&id, 23).await;
        let started = Instant::now();
        assert_eq!(bench.round().await, 1);
        assert!(
            started.elapsed() < Duration::from_millis(2500),
            "{:?}",
            started.elapsed()
        );
        bench
            .expect_retry(&id, 5, "did not answer in time", scheduled_delay_ms(5))
            .await;
        let stored = bench.stored(&id).await;
        assert_eq!(stored.failing_since_ms, Some(first_failure));
        assert_eq!(stored.delivered_through, 0);

        // Meanwhile the subscriber sees the error and recovers every missed event itself.
        let status = bench.app.get(&format!("Subscription/{id}/$status")).await;
        assert_eq!(
            status_part(&status, "status")["valueCode"],
            "error",
            "{status}"
        );
        let missed = bench
            .app
            .get(&format!(
                "Subscription/{id}/$events?eventsSinceNumber=1&eventsUntilNumber=25"
            ))
            .await;
        assert_eq!(
            event_numbers(&missed),
            (1..=25).collect::<Vec<_>>(),
            "{missed}"
        );

        // The receiver answers again: the backlog goes in order, 20 events a notification.
        let before = bench.receiver.received().len();
        assert_eq!(bench.round().await, 1);
        let stored = bench.stored(&id).await;
        assert_eq!(stored.status, "active", "{stored:?}");
        assert_eq!(
            (
                stored.failed_attempts,
                stored.failing_since_ms,
                stored.next_attempt_ms
            ),
            (0, None, 0)
        );
        assert_eq!(stored.delivered_through, 20);
        assert_eq!(bench.round().await, 1);
        assert_eq!(bench.round().await, 0, "nothing left to send");
        assert_eq!(bench.stored(&id).await.delivered_through, 25);
        let delivered: Vec<Json> = bench.receiver.received()[before..].to_vec();
        assert_eq!(delivered.len(), 2);
        assert_eq!(event_numbers(&delivered[0]), (1..=20).collect::<Vec<_>>());
        assert_eq!(event_numbers(&delivered[1]), (21..=25).collect::<Vec<_>>());
        assert_eq!(status_part(&delivered[1], "status")["valueCode"], "active");

        // Each failed attempt carried the events from the first undelivered one.
        let attempts = bench.receiver.received();
        let failed = &attempts[1..before];
        assert_eq!(
            failed.len(),
            4,
            "500, 429, 302 and the slow one reached the receiver"
        );
        for attempt in failed {
            assert_eq!(event_numbers(attempt)[0], 1);
            assert_eq!(
                status_part(attempt, "type")["valueCode"],
                "event-notification"
            );
        }
    }
}

#[tokio::test]
async fn five_days_of_failures_stop_retries_until_an_operator_retry() {
    let test = "delivery_disable";
    let db_url = support::seed(Backend::Sqlite, test).await;
    for state_url in support::state_urls(test).await {
        let bench = Bench::start(&db_url, state_url).await;
        let id = bench.active(json!([]), None).await;
        bench.append(&id, 1).await;
        bench.receiver.answer(vec![Answer::Status(503); 40]);

        let first_failure = bench.now();
        let mut previous_attempt = first_failure;
        let mut failures = 0usize;
        let stopped = loop {
            assert_eq!(bench.round().await, 1);
            failures += 1;
            let stored = bench.stored(&id).await;
            if stored.retries_stopped {
                break stored;
            }
            assert!(failures < 40, "retries never stopped: {stored:?}");
            assert_eq!(
                stored.next_attempt_ms,
                bench.now() + scheduled_delay_ms(failures),
                "after {failures} failures"
            );
            previous_attempt = bench.now();
            bench.set_clock(stored.next_attempt_ms);
        };
        let disable_after = DISABLE_AFTER.as_millis() as i64;
        assert!(previous_attempt - first_failure < disable_after);
        assert!(bench.now() - first_failure >= disable_after);
        // 4.5 s, 270 s, 27 min, 1.8 h, 4.5 h, then 9 h steps: the 19th failure is the first
        // five days or more into the run.
        assert_eq!(failures, 19);
        assert_eq!(stopped.status, "error");
        assert_eq!(stopped.failed_attempts, 19);
        assert!(
            stopped
                .error
                .as_deref()
                .unwrap_or_default()
                .contains("retries stopped"),
            "{stopped:?}"
        );

        // Nothing more is tried, whatever the time or new events.
        let sent = bench.receiver.received().len();
        bench.append(&id, 1).await;
        bench.advance(Duration::from_secs(3 * 24 * 3600));
        assert_eq!(bench.round().await, 0);
        assert_eq!(bench.receiver.received().len(), sent);

        // The operator's retry (`portico subscriptions retry`) makes it due now; the receiver
        // has recovered, so both events arrive and the subscription is active again.
        assert!(bench.app.store.retry_subscription_now(&id).await.unwrap());
        assert!(
            !bench
                .app
                .store
                .retry_subscription_now("no-such")
                .await
                .unwrap()
        );
        bench.receiver.script.answers.lock().unwrap().clear();
        assert_eq!(bench.round().await, 1);
        let stored = bench.stored(&id).await;
        assert_eq!(stored.status, "active", "{stored:?}");
        assert_eq!(stored.delivered_through, 2);
        assert!(!stored.retries_stopped);
        let last = bench.receiver.received().pop().unwrap();
        assert_eq!(event_numbers(&last), vec![1, 2]);
    }
}

#[tokio::test]
async fn gone_turns_the_subscription_off() {
    let test = "delivery_gone";
    let db_url = support::seed(Backend::Sqlite, test).await;
    for state_url in support::state_urls(test).await {
        let bench = Bench::start(&db_url, state_url).await;
        let id = bench.active(json!([]), None).await;
        bench.append(&id, 1).await;
        bench.receiver.answer([Answer::Status(410)]);
        assert_eq!(bench.round().await, 1);
        let stored = bench.stored(&id).await;
        assert_eq!(stored.status, "off", "{stored:?}");
        assert!(stored.retries_stopped);
        assert!(stored.error.as_deref().unwrap_or_default().contains("410"));

        bench.append(&id, 1).await;
        bench.advance(Duration::from_secs(24 * 3600));
        assert_eq!(bench.round().await, 0);
        assert_eq!(
            bench.receiver.received().len(),
            2,
            "the handshake and the one refused"
        );
        let read = bench.app.get(&format!("Subscription/{id}")).await;
        assert_eq!(read["status"], "off");
    }
}

/// A reactivation that lands while a notification is in flight: the send under way records
/// nothing, and the new request gets its own handshake.
#[tokio::test]
async fn a_reactivation_during_a_send_gets_its_own_handshake() {
    let test = "delivery_reactivated_in_flight";
    let db_url = support::seed(Backend::Sqlite, test).await;
    for state_url in support::state_urls(test).await {
        let bench = Arc::new(Bench::start(&db_url, state_url).await);
        let id = bench.active(json!([]), None).await;
        bench.append(&id, 2).await;
        bench
            .receiver
            .answer([Answer::Slow(Duration::from_millis(1500))]);
        let sending = {
            let bench = bench.clone();
            tokio::spawn(async move { bench.round().await })
        };
        // The events are on their way (the receiver has them, and has not answered yet).
        let deadline = Instant::now() + Duration::from_secs(10);
        while bench.receiver.received().len() < 2 {
            assert!(Instant::now() < deadline, "the events were not sent");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut read = bench.app.get(&format!("Subscription/{id}")).await;
        read["status"] = json!("requested");
        let (status, updated) = bench.app.put(&read).await;
        assert_eq!(status, StatusCode::OK, "{updated}");
        assert_eq!(sending.await.unwrap(), 1);

        let stored = bench.stored(&id).await;
        assert!(stored.handshake_pending, "{stored:?}");
        assert_eq!(stored.status, "requested", "{stored:?}");
        assert_eq!(
            stored.delivered_through, 0,
            "the interrupted send counts for nothing"
        );
        assert_eq!(bench.round().await, 1, "the new handshake");
        let received = bench.receiver.received();
        assert_eq!(
            status_part(received.last().unwrap(), "type")["valueCode"],
            "handshake"
        );
        assert_eq!(bench.stored(&id).await.status, "active");
        assert_eq!(bench.round().await, 1, "the events again");
        assert_eq!(
            event_numbers(bench.receiver.received().last().unwrap()),
            vec![1, 2]
        );
    }
}

#[tokio::test]
async fn heartbeats_fill_silence_and_the_end_turns_a_subscription_off() {
    let test = "delivery_heartbeat";
    let db_url = support::seed(Backend::Sqlite, test).await;
    for state_url in support::state_urls(test).await {
        let bench = Bench::start(&db_url, state_url).await;
        let end = chrono::DateTime::from_timestamp_millis(bench.now() + 3_600_000)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let heartbeat = json!({"url": HEARTBEAT_PERIOD_EXTENSION, "valueUnsignedInt": 1});
        let id = bench.active(json!([heartbeat]), Some(end)).await;

        bench.advance(Duration::from_millis(500));
        assert_eq!(bench.round().await, 0, "half a period after the handshake");
        bench.advance(Duration::from_millis(500));
        assert_eq!(bench.round().await, 1);
        let beat = bench.receiver.received().pop().unwrap();
        assert_eq!(
            status_part(&beat, "type")["valueCode"],
            "heartbeat",
            "{beat}"
        );
        assert!(event_numbers(&beat).is_empty());
        assert_eq!(bench.round().await, 0, "one heartbeat a period");

        // An event is sent as a notification, which is no heartbeat.
        bench.append(&id, 1).await;
        assert_eq!(bench.round().await, 1);
        let notification = bench.receiver.received().pop().unwrap();
        assert_eq!(
            status_part(&notification, "type")["valueCode"],
            "event-notification"
        );
        bench.advance(Duration::from_secs(1));
        assert_eq!(bench.round().await, 1);
        let beat = bench.receiver.received().pop().unwrap();
        assert_eq!(status_part(&beat, "type")["valueCode"], "heartbeat");

        // Past its end nothing is sent, and housekeeping turns it off.
        bench.advance(Duration::from_secs(2 * 3600));
        let sent = bench.receiver.received().len();
        assert_eq!(bench.round().await, 0);
        bench.worker.housekeeping().await;
        let stored = bench.stored(&id).await;
        assert_eq!(stored.status, "off", "{stored:?}");
        assert!(stored.error.as_deref().unwrap_or_default().contains("end"));
        assert_eq!(bench.receiver.received().len(), sent);
    }
}

#[tokio::test]
async fn a_removed_clients_subscriptions_stop() {
    let test = "delivery_revoked";
    let db_url = support::seed(Backend::Sqlite, test).await;
    for state_url in support::state_urls(test).await {
        let bench = Bench::start(&db_url, state_url).await;
        let id = bench.active(json!([]), None).await;
        bench.append(&id, 1).await;
        assert!(
            bench
                .app
                .store
                .remove_client("portico-tests")
                .await
                .unwrap()
        );
        // Off at once, with the reason: the worker claims nothing and sends nothing.
        let stored = bench.stored(&id).await;
        assert_eq!(stored.status, "off", "{stored:?}");
        assert_eq!(stored.error.as_deref(), Some(REMOVED_CLIENT_REASON));
        assert_eq!(bench.round().await, 0, "nothing to claim");
        assert_eq!(bench.stored(&id).await.delivered_through, 0);
        assert_eq!(
            bench.receiver.received().len(),
            1,
            "only the handshake was sent"
        );
        bench.append(&id, 1).await;
        bench.advance(Duration::from_secs(60));
        assert_eq!(bench.round().await, 0);
        assert_eq!(bench.receiver.received().len(), 1);
    }
}
