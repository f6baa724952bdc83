//! The engine never waits for its store, and never shows what the store does not hold yet:
//! driven by a store whose completions the test holds and releases (`GateStore`).
#![allow(clippy::unwrap_used)]

#[path = "common/gate_store.rs"]
mod gate_store;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gate_store::{GateStore, STORE_THREAD};
use purly::serde_json::{json, Map, Value};
use purly::{
    CloseReason, Delivery, Engine, ErrorCode, JoinOptions, Model, Outbox, Received, ServerMessage,
    ServerMessageKind, Subscriber,
};

const TIMEOUT: Duration = Duration::from_secs(20);

fn obj(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

/// Everything queued in `outbox` now, or a close.
fn drain(outbox: &Outbox) -> (Vec<ServerMessage>, Option<CloseReason>) {
    let mut batch = Vec::new();
    let mut closed = None;
    loop {
        match outbox.try_recv(&mut batch) {
            Some(Received::Closed(reason)) => {
                closed = Some(reason);
                break;
            }
            Some(_) => {}
            None => break,
        }
    }
    // Presence has no version and waits for no store: not what these tests are about.
    batch.retain(|m| !m.is_presence_snapshot());
    (batch, closed)
}

/// Records the versions the engine reports as committed.
struct Recording(Arc<Mutex<Vec<u64>>>);

impl Model for Recording {
    fn committed(&mut self, version: u64, _diff_json: &str) {
        self.0.lock().unwrap().push(version);
    }
}

fn gated_engine(store: &GateStore, committed: Arc<Mutex<Vec<u64>>>) -> Engine {
    Engine::builder()
        .store(store.clone())
        .model_factory(move |_| Ok(Box::new(Recording(committed.clone()))))
        .build()
}

#[test]
fn nothing_is_shown_before_it_is_durable_and_a_failed_commit_shows_nothing() {
    let store = GateStore::default();
    let committed = Arc::new(Mutex::new(Vec::new()));
    let engine = gated_engine(&store, committed.clone());
    let alice_box = Arc::new(Outbox::new(1 << 20));
    let bob_box = Arc::new(Outbox::new(1 << 20));
    let alice = engine
        .join("m", alice_box.clone(), JoinOptions::stream())
        .wait()
        .unwrap();
    let _bob = engine
        .join("m", bob_box.clone(), JoinOptions::stream())
        .wait()
        .unwrap();
    for outbox in [&alice_box, &bob_box] {
        let (first, _) = drain(outbox);
        assert!(
            first.len() == 1 && first[0].is_snapshot(),
            "each starts from a snapshot"
        );
    }

    store.hold_appends(true);
    alice
        .send_text(r#"[{"header":{"type":"update","id":"a1"},"content":{"x":1}}]"#)
        .unwrap();
    alice
        .send_text(r#"[{"header":{"type":"signal"},"content":{"after":"a1"}}]"#)
        .unwrap();
    // Applied in memory, at once: the next frame is checked against it.
    assert_eq!(engine.state("m").unwrap()["x"], 1);
    assert_eq!(store.held(), (0, 1), "one batch in flight");
    // Queued while the first batch is in flight: the next batch.
    alice
        .send_text(r#"[{"header":{"type":"update","id":"a2"},"content":{"x":2}}]"#)
        .unwrap();
    for outbox in [&alice_box, &bob_box] {
        let (shown, closed) = drain(outbox);
        assert!(
            shown.is_empty() && closed.is_none(),
            "nothing is shown before it is durable, nor anything queued after it: {:?}",
            shown.iter().map(ServerMessage::json).collect::<Vec<_>>()
        );
    }
    assert!(
        committed.lock().unwrap().is_empty(),
        "not committed before it is durable"
    );
    assert_eq!(engine.durable_version("m"), Some(0));

    // The first batch commits: its diff and the signal queued after it are shown, not a2.
    store.release_appends(true);
    let (alice_sees, _) = drain(&alice_box);
    let (bob_sees, _) = drain(&bob_box);
    assert_eq!(
        alice_sees.len(),
        1,
        "alice: her echo of a1 (not her own signal)"
    );
    assert_eq!(alice_sees[0].seq(), Some(1));
    assert_eq!(bob_sees.len(), 2, "bob: diff 1, then the signal");
    assert_eq!(bob_sees[0].content_json(), r#"{"x":1}"#);
    assert_eq!(bob_sees[1].kind(), ServerMessageKind::Signal);
    assert_eq!(*committed.lock().unwrap(), vec![1]);
    assert_eq!(
        store.held(),
        (0, 1),
        "a2's batch went out after the first committed"
    );

    // The second batch fails: `unavailable` to everyone, the connections close, and a2's
    // diff is never shown.
    store.release_appends(false);
    for outbox in [&alice_box, &bob_box] {
        let (shown, closed) = drain(outbox);
        assert!(
            shown.iter().all(|m| m.seq() != Some(2)),
            "version 2 is never shown"
        );
        let error = shown
            .iter()
            .find(|m| m.kind() == ServerMessageKind::Error)
            .expect("an error");
        assert_eq!(
            error.content().unwrap()["code"],
            ErrorCode::Unavailable.as_str()
        );
        assert_eq!(closed, Some(CloseReason::StoreFailed));
    }
    assert_eq!(
        *committed.lock().unwrap(),
        vec![1],
        "version 2 never committed"
    );
    assert_eq!(store.stored_version("m"), Some(1));
}

#[tokio::test]
async fn a_server_write_resolves_once_durable_with_its_version() {
    let store = GateStore::default();
    let engine = gated_engine(&store, Arc::default());
    engine.update("m", obj(json!({"a": 0}))).await.unwrap();
    store.hold_appends(true);
    let write = tokio::spawn(engine.update("m", obj(json!({"a": 1}))));
    // Held: the write stays pending (its change is applied in memory only).
    while store.held().1 == 0 {
        tokio::time::timeout(TIMEOUT, tokio::task::yield_now())
            .await
            .unwrap();
    }
    assert!(!write.is_finished());
    assert_eq!(engine.state("m").unwrap()["a"], 1);
    store.release_appends(true);
    let version = tokio::time::timeout(TIMEOUT, write).await.unwrap().unwrap();
    assert_eq!(version.unwrap(), 2);

    // A failed commit: the write says nothing was kept.
    let write = tokio::spawn(engine.update("m", obj(json!({"a": 2}))));
    while store.held().1 == 0 {
        tokio::task::yield_now().await;
    }
    store.release_appends(false);
    let error = tokio::time::timeout(TIMEOUT, write).await.unwrap().unwrap();
    let error = error.expect_err("a failed commit fails the write");
    assert!(error.to_string().contains("unavailable"), "{error}");
}

/// Fails the test (instead of hanging it) if it is not done in time: on a current-thread
/// runtime a blocked thread would stop every timer of the runtime too.
struct Watchdog(Arc<AtomicBool>);

impl Watchdog {
    #[allow(clippy::print_stderr)] // the only way left to say why the test is aborted
    fn start(what: &'static str) -> Watchdog {
        let done = Arc::new(AtomicBool::new(false));
        let seen = done.clone();
        std::thread::spawn(move || {
            let started = std::time::Instant::now();
            while started.elapsed() < TIMEOUT {
                if seen.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            eprintln!(
                "{what}: still running after {TIMEOUT:?}: a call blocked the runtime's only thread"
            );
            std::process::abort();
        });
        Watchdog(done)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_held_load_stalls_only_the_joins_of_that_model() {
    let _watchdog = Watchdog::start("a_held_load_stalls_only_the_joins_of_that_model");
    let store = GateStore::default();
    let engine = gated_engine(&store, Arc::default());
    let mut alice = purly_channel::Client::connect(&engine, "loaded")
        .await
        .unwrap();
    let mut bob = purly_channel::Client::connect(&engine, "loaded")
        .await
        .unwrap();
    alice.recv().await.unwrap();
    bob.recv().await.unwrap();

    store.hold_loads(true);
    // Two joins of a model that is not in memory: one load, both wait for it.
    let first = tokio::spawn({
        let engine = engine.clone();
        async move { purly_channel::Client::connect(&engine, "cold").await }
    });
    let second = tokio::spawn({
        let engine = engine.clone();
        async move { purly_channel::Client::connect(&engine, "cold").await }
    });
    while store.held().0 == 0 {
        tokio::task::yield_now().await;
    }
    // Meanwhile the loaded model goes on: signals, updates, and new joins of it.
    for i in 0..10 {
        alice.signal(json!({"ping": i})).await.unwrap();
        let batch = tokio::time::timeout(TIMEOUT, bob.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(batch[0].content().unwrap()["ping"], i);
    }
    alice.update(json!({"n": 1})).await.unwrap();
    alice.settle().await.unwrap();
    let mut carol = purly_channel::Client::connect(&engine, "loaded")
        .await
        .unwrap();
    assert_eq!(carol.recv().await.unwrap()[0].content().unwrap()["n"], 1);
    assert!(
        !first.is_finished() && !second.is_finished(),
        "the cold joins wait"
    );
    assert_eq!(store.held().0, 1, "one load for both joins");

    store.release_loads();
    for join in [first, second] {
        let mut client = tokio::time::timeout(TIMEOUT, join)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(client.recv().await.unwrap()[0].is_snapshot());
    }
}

/// Records the name of every thread that delivers to it.
#[derive(Default)]
struct ThreadNames(Mutex<Vec<String>>);

impl Subscriber for ThreadNames {
    fn deliver(&self, _: &ServerMessage, _: bool) -> Delivery {
        let name = std::thread::current().name().unwrap_or("").to_owned();
        self.0.lock().unwrap().push(name);
        Delivery::Queued
    }

    fn close(&self, _: CloseReason) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_thread_only_reports_the_fan_out_runs_on_the_executor() {
    let store = GateStore::default();
    let runtime = tokio::runtime::Handle::current();
    let engine = Engine::builder()
        .store(store.clone())
        .executor(move |task| {
            runtime.spawn(async move { task.run() });
        })
        .build();
    let names = Arc::new(ThreadNames::default());
    let session = engine
        .join("m", names.clone(), JoinOptions::stream())
        .await
        .unwrap();
    store.hold_appends(true);
    for i in 0..20 {
        session
            .send_text(&json!([{"header": {"type": "update"}, "content": {"i": i}}]).to_string())
            .unwrap();
    }
    let deadline = std::time::Instant::now() + TIMEOUT;
    while names.0.lock().unwrap().len() < 21 {
        if store.held().1 > 0 {
            store.release_appends(true);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not every diff arrived"
        );
        tokio::task::yield_now().await;
    }
    let names = names.0.lock().unwrap();
    assert!(
        names.iter().all(|name| name != STORE_THREAD),
        "the store's thread ran a fan-out: {names:?}"
    );
}
