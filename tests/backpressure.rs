//! A fan-out slower than its publishers slows them down instead of queueing without bound:
//! past the bound a session is not ready (a transport stops reading its socket), and a frame
//! sent anyway past twice the bound is refused. No publisher's thread ever waits.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use purly::serde_json::json;
use purly::{
    CloseReason, Config, Delivery, Engine, JoinOptions, Outbox, Received, ServerMessage,
    ServerMessageKind, Session, Subscriber,
};

const TIMEOUT: Duration = Duration::from_secs(20);

/// Blocks the thread delivering to it, once armed, until opened: a stand-in for a fan-out
/// that is slow (a subscriber doing heavy work, or tens of thousands of them).
struct Gate {
    armed: AtomicBool,
    open: Mutex<bool>,
    opened: Condvar,
    entered: Mutex<Option<mpsc::Sender<()>>>,
}

impl Gate {
    /// A closed, unarmed gate, and the receiver told when a delivery first waits at it.
    fn new() -> (Arc<Gate>, mpsc::Receiver<()>) {
        let (entered_tx, entered_rx) = mpsc::channel();
        let gate = Arc::new(Gate {
            armed: AtomicBool::new(false),
            open: Mutex::new(false),
            opened: Condvar::new(),
            entered: Mutex::new(Some(entered_tx)),
        });
        (gate, entered_rx)
    }

    /// Lets every waiting and later delivery through.
    fn release(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

impl Subscriber for Gate {
    fn deliver(&self, _: &ServerMessage, _: bool) -> Delivery {
        if self.armed.load(Ordering::SeqCst) {
            if let Some(entered) = self.entered.lock().unwrap().take() {
                entered.send(()).unwrap();
            }
            let mut open = self.open.lock().unwrap();
            while !*open {
                open = self.opened.wait(open).unwrap();
            }
        }
        Delivery::Queued
    }

    fn close(&self, _: CloseReason) {}
}

/// An update whose diff is at least 200 bytes: every field is new each time.
fn update(i: usize) -> String {
    let pad = format!("{i:>200}");
    json!([{"header": {"type": "update"}, "content": {"k": i, "pad": pad}}]).to_string()
}

#[test]
fn the_fan_out_backlog_stays_bounded() {
    const BOUND: usize = 64 << 10;
    const UPDATES: usize = 10_000;
    let mut config = Config::default();
    config.max_fanout_backlog_bytes = BOUND;
    let engine = Engine::new(config);
    let (gate, entered_rx) = Gate::new();
    let _gated = engine
        .join("m", gate.clone(), JoinOptions::stream())
        .wait()
        .unwrap();
    let watcher = Arc::new(Outbox::new(64 << 20));
    let _watching = engine
        .join("m", watcher.clone(), JoinOptions::stream())
        .wait()
        .unwrap();
    gate.armed.store(true, Ordering::SeqCst);

    // Thread A publishes once and is caught delivering, inside the gate.
    let a = {
        let session = engine
            .join("m", Arc::new(Outbox::new(64 << 20)), JoinOptions::stream())
            .wait()
            .unwrap();
        std::thread::spawn(move || session.send_text(&update(0)).unwrap())
    };
    entered_rx
        .recv_timeout(TIMEOUT)
        .expect("the fan-out never reached the gate");

    // Thread B publishes 10,000 updates (~2.4 MB) meanwhile, as a transport does: it awaits
    // the session's readiness before each frame.
    let progress = Arc::new(AtomicUsize::new(0));
    let b = {
        let session = engine
            .join("m", Arc::new(Outbox::new(64 << 20)), JoinOptions::stream())
            .wait()
            .unwrap();
        let progress = progress.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            for i in 1..=UPDATES {
                runtime.block_on(session.ready());
                session.send_text(&update(i)).unwrap();
                progress.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    // Past the bound the session is not ready while delivery is stuck: no more sends.
    let crossed = std::time::Instant::now();
    while engine.fanout_backlog("m").unwrap() <= BOUND {
        assert!(
            crossed.elapsed() < TIMEOUT,
            "the backlog never reached its bound"
        );
        std::thread::yield_now();
    }
    // One message more than the bound at the most: the one that took it over.
    let message = update(UPDATES).len() + 200;
    let backlog = engine.fanout_backlog("m").unwrap();
    assert!(
        backlog <= BOUND + message,
        "backlog {backlog} > bound {BOUND} + one message"
    );
    let sent = progress.load(Ordering::SeqCst);
    assert!(
        sent * 200 <= BOUND + message,
        "{sent} sends returned past the bound"
    );

    // Delivery resumes: every update arrives, in order, and the backlog stays bounded.
    gate.release();
    let released = std::time::Instant::now();
    while progress.load(Ordering::SeqCst) < UPDATES {
        assert!(engine.fanout_backlog("m").unwrap() <= BOUND + message);
        // The very deadlock this test guards against would spin here forever.
        assert!(
            released.elapsed() < TIMEOUT,
            "publishing stalled after the gate opened: {} of {UPDATES} sent",
            progress.load(Ordering::SeqCst)
        );
        std::thread::yield_now();
    }
    a.join().unwrap();
    b.join().unwrap();
    let mut batch = Vec::new();
    while watcher.try_recv(&mut batch) == Some(Received::Messages) {}
    let seqs: Vec<u64> = batch
        .iter()
        .filter(|m| m.kind() == ServerMessageKind::Update && !m.is_snapshot())
        .filter_map(ServerMessage::seq)
        .collect();
    assert_eq!(seqs, (1..=(UPDATES as u64 + 1)).collect::<Vec<_>>());
}

/// Publishes an answer from inside `deliver` whenever someone else's diff arrives.
struct Responder {
    session: OnceLock<Session>,
    answered: AtomicUsize,
}

impl Subscriber for Responder {
    fn deliver(&self, message: &ServerMessage, own: bool) -> Delivery {
        if message.kind() == ServerMessageKind::Update && !message.is_snapshot() && !own {
            if let Some(session) = self.session.get() {
                let n = self.answered.fetch_add(1, Ordering::SeqCst);
                session
                    .send_text(
                        &json!([{"header": {"type": "update"}, "content": {"answer": n}}])
                            .to_string(),
                    )
                    .unwrap();
            }
        }
        Delivery::Queued
    }

    fn close(&self, _: CloseReason) {}
}

#[test]
fn publishing_from_inside_a_delivery_never_deadlocks_even_over_the_bound() {
    let mut config = Config::default();
    config.max_fanout_backlog_bytes = 1; // every publisher is asked to help
    let engine = Engine::new(config);
    let responder = Arc::new(Responder {
        session: OnceLock::new(),
        answered: AtomicUsize::new(0),
    });
    let session = engine
        .join("m", responder.clone(), JoinOptions::stream())
        .wait()
        .unwrap();
    assert!(responder.session.set(session).is_ok());
    let (done_tx, done_rx) = mpsc::channel();
    let engine2 = engine.clone();
    std::thread::spawn(move || {
        let writer = engine2
            .join("m", Arc::new(Outbox::new(64 << 20)), JoinOptions::stream())
            .wait()
            .unwrap();
        for i in 0..100 {
            writer.send_text(&update(i)).unwrap();
        }
        done_tx.send(()).unwrap();
    });
    done_rx
        .recv_timeout(TIMEOUT)
        .expect("deadlock: publishing from a delivery blocked");
    assert_eq!(responder.answered.load(Ordering::SeqCst), 100);
    assert_eq!(engine.state("m").unwrap()["answer"], 99);
}

/// A fan-out held inside a gate: a session's frame is being delivered by a thread that waits
/// in the gated subscriber until [`Stalled::release`].
struct Stalled {
    gate: Arc<Gate>,
    _gated: Session,
    stuck: std::thread::JoinHandle<()>,
}

impl Stalled {
    fn on(engine: &Engine) -> Stalled {
        let (gate, entered_rx) = Gate::new();
        let gated = engine
            .join("m", gate.clone(), JoinOptions::stream())
            .wait()
            .unwrap();
        gate.armed.store(true, Ordering::SeqCst);
        let session = joined(engine);
        let stuck = std::thread::spawn(move || session.send_text(&update(0)).unwrap());
        entered_rx
            .recv_timeout(TIMEOUT)
            .expect("the fan-out never reached the gate");
        Stalled {
            gate,
            _gated: gated,
            stuck,
        }
    }

    fn release(self) {
        self.gate.release();
        self.stuck.join().unwrap();
    }
}

/// A session of model `m` with a large outbox.
fn joined(engine: &Engine) -> Session {
    engine
        .join("m", Arc::new(Outbox::new(64 << 20)), JoinOptions::stream())
        .wait()
        .unwrap()
}

#[test]
fn acks_count_toward_the_fan_out_backlog() {
    let engine = Engine::default();
    let stalled = Stalled::on(&engine);
    let before = engine.fanout_backlog("m").unwrap();
    let acked = joined(&engine);
    let after_join = engine.fanout_backlog("m").unwrap();
    acked
        .send_text(r#"[{"header":{"type":"update","id":"a1"},"content":{"k":0}}]"#)
        .unwrap();
    assert!(
        engine.fanout_backlog("m").unwrap() > after_join,
        "an ack waiting for fan-out counts toward the bound (backlog {before} -> {after_join})"
    );
    stalled.release();
}

#[test]
fn a_publisher_that_does_not_wait_is_refused_past_twice_the_bound() {
    const BOUND: usize = 64 << 10;
    let mut config = Config::default();
    config.max_fanout_backlog_bytes = BOUND;
    let engine = Engine::new(config.clone());
    let stalled = Stalled::on(&engine);
    let flooder = joined(&engine);
    let hard = 2 * BOUND + config.limits.max_frame_bytes;
    let mut refused = None;
    for i in 1..=20_000 {
        match flooder.send_text(&update(i)) {
            Ok(()) => assert!(flooder.must_wait() || engine.fanout_backlog("m").unwrap() <= BOUND),
            Err(error) => {
                refused = Some(error);
                break;
            }
        }
        assert!(engine.fanout_backlog("m").unwrap() <= hard + update(i).len() + 200);
    }
    let refused = refused.expect("a publisher that never waits is refused past twice the bound");
    assert_eq!(refused.code(), Some(purly::ErrorCode::Unavailable));
    assert!(flooder.must_wait(), "the session says it must wait");
    stalled.release();
}
