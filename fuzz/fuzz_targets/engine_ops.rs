//! Any sequence of join / leave / update / signal / multi-message frame / raw frame / slow
//! reader / transport notification (`Outbox::notify`) / bursts from other threads, on an
//! in-process engine whose model refuses some
//! updates (`rejected`) and whose size limit is small (`model_too_large`), in stream and compat
//! mode, with keys that need escaping. Every replica applies what it receives without a gap;
//! after draining, every live stream-mode replica equals its model at the model's version,
//! and so does an independent reference: every diff a recorder received, replayed with
//! `json_patch::merge` from the empty model.
#![no_main]

#[path = "json.rs"]
mod json;

use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use arbitrary::Arbitrary;
use json::{object, Json, Key};
use libfuzzer_sys::fuzz_target;
use purly::serde_json::{Map, Value};
use purly::{
    Config, Engine, Frame, JoinOptions, Message, Mode, Model, Outbox, Received, Rejection,
    Replica, ServerMessageKind, Session,
};

const MODELS: [&str; 2] = ["m0", "m1"];

#[derive(Arbitrary, Debug)]
enum Op {
    Join { slot: u8, model: bool, compat: bool, small_queue: bool },
    Leave { slot: u8 },
    Update { slot: u8, content: Vec<(Key, Json)> },
    Signal { slot: u8, content: Vec<(Key, Json)> },
    /// Several messages in one frame: applied whole, or refused whole.
    Frame { slot: u8, messages: Vec<(bool, Vec<(Key, Json)>)> },
    Raw { slot: u8, bytes: Vec<u8> },
    Drain { slot: u8 },
    /// A transport's tick (what purly-hyper's pinger does): it must not take or lose anything.
    Notify { slot: u8 },
    /// Two threads, each with a session of its own, send these updates at the same time.
    Threads { model: bool, updates: Vec<Vec<(Key, Json)>> },
}

/// Refuses an update that sets `reject`: a refusal found while applying a frame.
struct Refusing;

impl Model for Refusing {
    fn check(&self, _: &Map<String, Value>, update: &Map<String, Value>) -> Result<(), Rejection> {
        match update.contains_key(Key::Reject.name()) {
            true => Err(Rejection::new("refused")),
            false => Ok(()),
        }
    }
}

struct Client {
    session: Session,
    outbox: Arc<Outbox>,
    replica: Replica,
    model: &'static str,
}

impl Client {
    /// Takes what is queued, as a transport's receiving side does; returns false once the
    /// engine closed the client.
    fn drain(&mut self) -> bool {
        let mut batch = Vec::new();
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            match self.outbox.poll_recv(&mut cx, &mut batch) {
                Poll::Pending => return true,
                Poll::Ready(Received::Messages) => {
                    if self.session.mode() == Mode::Stream {
                        self.replica.receive(&batch).expect("a replica never sees a gap");
                    }
                    batch.clear();
                }
                Poll::Ready(Received::Resync) => self.session.resync().expect("the model is open"),
                Poll::Ready(Received::Closed(_)) => return false,
                Poll::Ready(Received::Notified) => {}
            }
        }
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mut config = Config::default();
    config.max_model_bytes = 400;
    let engine = Engine::builder()
        .config(config)
        .model_factory(|_| Ok(Box::new(Refusing)))
        .build();
    // One recorder per model, never lagging: every committed diff, in order.
    let recorders: Vec<(Arc<Outbox>, Session)> = MODELS
        .iter()
        .map(|model| {
            let outbox = Arc::new(Outbox::new(64 << 20));
            let session = engine.join(model, outbox.clone(), JoinOptions::stream()).wait().unwrap();
            (outbox, session)
        })
        .collect();
    let mut clients: Vec<Option<Client>> = (0..4).map(|_| None).collect();
    for op in ops.into_iter().take(200) {
        match op {
            Op::Join { slot, model, compat, small_queue } => {
                let outbox = Arc::new(Outbox::new(if small_queue { 600 } else { 1 << 20 }));
                let (options, mode) = match compat {
                    true => (JoinOptions::compat(), Mode::Compat),
                    false => (JoinOptions::stream(), Mode::Stream),
                };
                let model = MODELS[usize::from(model)];
                let session = engine.join(model, outbox.clone(), options).wait().unwrap();
                clients[usize::from(slot % 4)] =
                    Some(Client { session, outbox, replica: Replica::new(mode), model });
            }
            Op::Leave { slot } => clients[usize::from(slot % 4)] = None,
            Op::Update { slot, content } => {
                if let Some(client) = &mut clients[usize::from(slot % 4)] {
                    let message = client.replica.update(object(&content, 5));
                    let _ = client.session.send(Frame::new(vec![message]));
                }
            }
            Op::Signal { slot, content } => {
                if let Some(client) = &clients[usize::from(slot % 4)] {
                    let _ = client.session.send(Frame::new(vec![Message::signal(object(&content, 5))]));
                }
            }
            Op::Frame { slot, messages } => {
                if let Some(client) = &mut clients[usize::from(slot % 4)] {
                    let frame = messages
                        .iter()
                        .take(6)
                        .map(|(signal, content)| match signal {
                            true => Message::signal(object(content, 4)),
                            false => client.replica.update(object(content, 4)),
                        })
                        .collect();
                    let _ = client.session.send(Frame::new(frame));
                }
            }
            Op::Raw { slot, bytes } => {
                if let Some(client) = &clients[usize::from(slot % 4)] {
                    let _ = client.session.send_bytes(&bytes);
                }
            }
            Op::Drain { slot } => {
                let slot = &mut clients[usize::from(slot % 4)];
                if slot.as_mut().is_some_and(|c| !c.drain()) {
                    *slot = None;
                }
            }
            Op::Notify { slot } => {
                if let Some(client) = &clients[usize::from(slot % 4)] {
                    client.outbox.notify();
                }
            }
            Op::Threads { model, updates } => {
                let model = MODELS[usize::from(model)];
                std::thread::scope(|scope| {
                    for _ in 0..2 {
                        let (engine, updates) = (&engine, &updates);
                        scope.spawn(move || {
                            let outbox = Arc::new(Outbox::new(1 << 20));
                            let session =
                                engine.join(model, outbox, JoinOptions::stream()).wait().unwrap();
                            for content in updates.iter().take(20) {
                                let message = Message::update(object(content, 4));
                                let _ = session.send(Frame::new(vec![message]));
                            }
                        });
                    }
                });
            }
        }
    }
    for client in clients.iter_mut().flatten() {
        if !client.drain() || client.session.mode() == Mode::Compat {
            continue;
        }
        // A resync answered while draining may still be queued: drain once more.
        client.drain();
        let (state, version) = engine.read(client.model, |s, v| (s.clone(), v)).unwrap();
        assert_eq!(client.replica.version(), Some(version));
        assert_eq!(client.replica.pending(), 0, "every update was confirmed or refused");
        assert_eq!(Value::Object(client.replica.state().clone()), Value::Object(state));
    }
    for ((outbox, _), model) in recorders.iter().zip(MODELS) {
        let mut batch = Vec::new();
        while let Some(Received::Messages) = outbox.try_recv(&mut batch) {}
        let mut reference = Value::Object(Map::new());
        let mut seqs = Vec::new();
        for message in &batch {
            if message.kind() == ServerMessageKind::Update && !message.is_snapshot() {
                seqs.push(message.seq().unwrap());
                json_patch::merge(&mut reference, &Value::Object(message.content().unwrap().clone()));
            }
        }
        let (state, version) = engine.read(model, |s, v| (s.clone(), v)).unwrap();
        assert_eq!(seqs, (1..=version).collect::<Vec<_>>(), "every version once, in order");
        assert_eq!(reference, Value::Object(state), "replayed diffs vs the model");
    }
});
