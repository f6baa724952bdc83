//! Many in-process clients write overlapping updates at the same time; every replica ends up
//! equal to the engine's state, and every subscriber sees the same versions, in order, once.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{recv, recv_until_version, settle, version};
use purly::serde_json::{json, Value};
use purly::{Engine, JoinOptions, Outbox, Received, ServerMessageKind};
use purly_channel::Client;

/// A small deterministic generator (xorshift), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }

    /// An update over a few shared keys: nested objects, removals, scalars and arrays.
    fn update(&mut self, writer: usize) -> Value {
        let key = ["a", "b", "c", "d"][self.next(4) as usize];
        let inner = ["x", "y", "z"][self.next(3) as usize];
        match self.next(5) {
            0 => json!({ key: null }),
            1 => json!({ key: { inner: null } }),
            2 => json!({ key: { inner: self.next(5) } }),
            3 => json!({ key: { inner: { "w": writer } }, "last": writer }),
            _ => json!({ key: [writer, self.next(3)] }),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_concurrent_writers_converge() {
    const CLIENTS: usize = 8;
    const UPDATES: usize = 300;
    let engine = Engine::default();
    let mut tasks = Vec::new();
    for writer in 0..CLIENTS {
        let mut client = Client::connect(&engine, "shared").unwrap();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (writer as u64 + 1));
            let mut seqs = Vec::new();
            for i in 0..UPDATES {
                client.update(rng.update(writer)).unwrap();
                if i % 7 == 0 {
                    tokio::task::yield_now().await;
                }
                while let Some(batch) = client.try_recv() {
                    seqs.extend(diff_seqs(&batch));
                }
            }
            while client.replica().pending() > 0 {
                seqs.extend(diff_seqs(&recv(&mut client).await));
            }
            (client, seqs)
        }));
    }
    let mut clients = Vec::new();
    for task in tasks {
        clients.push(task.await.unwrap());
    }
    let final_version = version(&engine, "shared");
    assert!(final_version > 0);
    let state = engine.state("shared").unwrap();
    for (client, seqs) in &mut clients {
        while client.replica().version() < Some(final_version) {
            seqs.extend(diff_seqs(&recv(client).await));
        }
        assert_eq!(client.replica().pending(), 0);
        assert_eq!(client.state(), &state, "replica of {:?}", client.id());
        let expected: Vec<u64> = (1..=final_version).collect();
        assert_eq!(seqs, &expected, "versions seen by {:?}", client.id());
    }
}

fn diff_seqs(batch: &[purly::ServerMessage]) -> Vec<u64> {
    batch
        .iter()
        .filter(|m| m.kind() == ServerMessageKind::Update && !m.is_snapshot())
        .filter_map(|m| m.seq())
        .collect()
}

/// Writers on OS threads hammer one model through bare sessions while observers record what
/// they receive: all observers see exactly 1..=V, in order.
#[test]
fn every_subscriber_sees_every_version_once_in_order() {
    const WRITERS: usize = 4;
    const UPDATES: usize = 2_000;
    let engine = Engine::default();
    let observers: Vec<Arc<Outbox>> = (0..6).map(|_| Arc::new(Outbox::new(64 << 20))).collect();
    let _sessions: Vec<_> = observers
        .iter()
        .map(|o| {
            engine
                .join("ordered", o.clone(), JoinOptions::stream())
                .unwrap()
        })
        .collect();
    std::thread::scope(|scope| {
        for writer in 0..WRITERS {
            let engine = engine.clone();
            scope.spawn(move || {
                let session = engine
                    .join(
                        "ordered",
                        Arc::new(Outbox::new(64 << 20)),
                        JoinOptions::stream(),
                    )
                    .unwrap();
                for i in 0..UPDATES {
                    let frame = json!([{"header": {"type": "update"},
                                        "content": {"k": {format!("w{writer}"): i}}}]);
                    session.send_text(&frame.to_string()).unwrap();
                }
            });
        }
    });
    let final_version = version(&engine, "ordered");
    assert_eq!(final_version, (WRITERS * UPDATES) as u64);
    for observer in &observers {
        // Writers have returned, so everything was fanned out before their last call ended.
        let mut batch = Vec::new();
        while let Some(Received::Messages) = observer.try_recv(&mut batch) {}
        let seqs = diff_seqs(&batch);
        let expected: Vec<u64> = (1..=final_version).collect();
        assert_eq!(seqs, expected);
    }
}

/// Clients on two models never see each other's messages.
#[tokio::test]
async fn two_models_are_isolated() {
    let engine = Engine::default();
    let mut red = Client::connect(&engine, "red").unwrap();
    let mut red_watcher = Client::connect(&engine, "red").unwrap();
    let mut blue = Client::connect(&engine, "blue").unwrap();
    red.update(json!({"color": "red"})).unwrap();
    red.signal(json!({"ping": "red"})).unwrap();
    blue.update(json!({"color": "blue"})).unwrap();
    settle(&mut red).await;
    settle(&mut blue).await;
    recv_until_version(&mut red_watcher, 1).await;
    assert_eq!(red_watcher.state(), &common::obj(json!({"color": "red"})));
    assert_eq!(blue.state(), &common::obj(json!({"color": "blue"})));
    assert_eq!(engine.state("red").unwrap()["color"], "red");
    assert_eq!(engine.state("blue").unwrap()["color"], "blue");
    // Blue saw its snapshot and its own echo, nothing from red.
    assert!(blue.try_recv().is_none());
    assert_eq!(blue.replica().version(), Some(1));
}
