//! Any sequence of join / leave / update / signal / raw frame / slow reader on an in-process
//! engine: every replica applies what it receives without a gap, and after draining, every
//! live stream-mode replica equals its model at the model's version.
#![no_main]

#[path = "json.rs"]
mod json;

use std::sync::Arc;

use arbitrary::Arbitrary;
use json::{object, Json, Key};
use libfuzzer_sys::fuzz_target;
use purly::serde_json::Value;
use purly::{Engine, Frame, JoinOptions, Message, Mode, Outbox, Received, Replica, Session};

const MODELS: [&str; 2] = ["m0", "m1"];

#[derive(Arbitrary, Debug)]
enum Op {
    Join { slot: u8, model: bool, compat: bool, small_queue: bool },
    Leave { slot: u8 },
    Update { slot: u8, content: Vec<(Key, Json)> },
    Signal { slot: u8, content: Vec<(Key, Json)> },
    Raw { slot: u8, bytes: Vec<u8> },
    Drain { slot: u8 },
}

struct Client {
    session: Session,
    outbox: Arc<Outbox>,
    replica: Replica,
    model: &'static str,
}

impl Client {
    /// Takes what is queued; returns false once the engine closed the client.
    fn drain(&mut self) -> bool {
        let mut batch = Vec::new();
        loop {
            match self.outbox.try_recv(&mut batch) {
                None => return true,
                Some(Received::Messages) => {
                    if self.session.mode() == Mode::Stream {
                        self.replica.receive(&batch).expect("a replica never sees a gap");
                    }
                    batch.clear();
                }
                Some(Received::Resync) => self.session.resync().expect("the model is open"),
                Some(Received::Closed(_)) => return false,
            }
        }
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let engine = Engine::default();
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
                let session = engine.join(model, outbox.clone(), options).unwrap();
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
        assert_eq!(client.replica.pending(), 0, "every update was confirmed");
        assert_eq!(Value::Object(client.replica.state().clone()), Value::Object(state));
    }
});
