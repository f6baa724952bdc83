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
    // Every client joins before any writes, so that each sees every version as a diff (one
    // that joined after the first writes would get them in its snapshot instead).
    let mut clients: Vec<Client> = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(Client::connect(&engine, "shared").await.unwrap());
    }
    let mut tasks = Vec::new();
    for (writer, mut client) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (writer as u64 + 1));
            let mut seqs = Vec::new();
            // What this client sent, and (from its echoes) the version each one made.
            let mut sent = std::collections::HashMap::new();
            let mut placed = Vec::new();
            for i in 0..UPDATES {
                let update = rng.update(writer);
                client.update(update.clone()).await.unwrap();
                let id = client.replica().pending_updates().last().and_then(|m| m.id);
                sent.insert(id.unwrap().as_json().to_owned(), update);
                if i % 7 == 0 {
                    tokio::task::yield_now().await;
                }
                while let Some(batch) = client.try_recv() {
                    seqs.extend(diff_seqs(&batch));
                    placed.extend(own_versions(&batch, client.id()));
                }
            }
            while client.replica().pending() > 0 {
                let batch = recv(&mut client).await;
                seqs.extend(diff_seqs(&batch));
                placed.extend(own_versions(&batch, client.id()));
            }
            let made: Vec<(u64, Value)> = placed
                .into_iter()
                .map(|(seq, id)| (seq, sent[&id].clone()))
                .collect();
            (client, seqs, made)
        }));
    }
    let mut clients = Vec::new();
    let mut made = std::collections::BTreeMap::new();
    for task in tasks {
        let (client, seqs, versions) = common::within(task).await.unwrap();
        for (seq, update) in versions {
            assert!(
                made.insert(seq, update).is_none(),
                "two updates made version {seq}"
            );
        }
        clients.push((client, seqs));
    }
    let final_version = version(&engine, "shared");
    // An independent reference: the updates the clients sent, in the order the engine gave
    // them (their echoes' `seq`), merged with json_patch's RFC 7386 merge from the empty model.
    assert_eq!(
        made.keys().copied().collect::<Vec<_>>(),
        (1..=final_version).collect::<Vec<_>>(),
        "every version was made by exactly one update a client sent"
    );
    // Most updates change something (an engine that applied nothing would answer them all
    // with acks and pass the rest of this test).
    assert!(
        made.len() >= CLIENTS * UPDATES / 2,
        "only {} of {} updates made a version",
        made.len(),
        CLIENTS * UPDATES
    );
    let mut reference = json!({});
    for update in made.values() {
        json_patch::merge(&mut reference, update);
    }
    let state = engine.state("shared").unwrap();
    assert_eq!(
        Value::Object(state.clone()),
        reference,
        "the engine's state is the replay"
    );
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

/// The versions made by `me`'s own updates in `batch`, each with the number of the update
/// (its id is `<replica tag>-<n>`, n counting from 1 in the order sent).
/// The versions this client's updates made, with the ids of those updates.
fn own_versions(batch: &[purly::ServerMessage], me: purly::ClientId) -> Vec<(u64, String)> {
    batch
        .iter()
        .filter(|m| m.kind() == ServerMessageKind::Update && m.origin() == Some(me))
        .filter_map(|m| Some((m.seq()?, m.id()?.as_json().to_owned())))
        .collect()
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
                .wait()
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
                    .wait()
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
    let mut red = Client::connect(&engine, "red").await.unwrap();
    let mut red_watcher = Client::connect(&engine, "red").await.unwrap();
    let mut blue = Client::connect(&engine, "blue").await.unwrap();
    red.update(json!({"color": "red"})).await.unwrap();
    red.signal(json!({"ping": "red"})).await.unwrap();
    blue.update(json!({"color": "blue"})).await.unwrap();
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

mod property {
    //! The concurrent workload as a property: random writers sending frames of several
    //! updates and signals (some refused while applying), slow readers that fall behind and
    //! are resynchronized, and an independent reference: the updates the writers sent that
    //! made a version (found by their ids), replayed in `seq` order with `json_patch::merge`
    //! from the empty model, must equal the engine's state and every client's replica (and so
    //! must the committed diffs themselves).

    use std::collections::HashMap;
    use std::sync::Arc;
    use std::time::Duration;

    use proptest::prelude::*;
    use purly::serde_json::{json, Map, Value};
    use purly::{
        Config, Engine, JoinOptions, Model, Outbox, Received, Rejection, ServerMessageKind,
    };
    use purly_channel::Client;

    use super::common::{recv, within};

    /// Keys that need escaping somewhere (JSON pointers, JSON strings), and plain ones.
    const KEYS: [&str; 6] = ["a", "b", "a/b", "~c", "q\"uote", ""];

    /// Refuses an update that sets `refuse` (`rejected`, found while applying a frame).
    struct Refusing;

    impl Model for Refusing {
        fn check(
            &self,
            _: &Map<String, Value>,
            update: &Map<String, Value>,
        ) -> Result<(), Rejection> {
            match update.contains_key("refuse") {
                true => Err(Rejection::new("refused by the model")),
                false => Ok(()),
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Msg {
        Update(Value),
        Signal(u8),
        /// Refused by the model: the whole frame is undone.
        Refused,
        /// Larger than the model size limit: `model_too_large`, the whole frame is undone.
        TooLarge,
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<u8>().prop_map(|n| json!(n)),
            (0usize..KEYS.len(), any::<u8>()).prop_map(|(k, n)| json!({ KEYS[k]: n })),
            (0usize..KEYS.len()).prop_map(|k| json!({ KEYS[k]: null })),
            any::<u8>().prop_map(|n| json!([n, "x"])),
            Just(json!({})),
        ]
    }

    fn message() -> impl Strategy<Value = Msg> {
        prop_oneof![
            6 => proptest::collection::btree_map(0usize..KEYS.len(), value(), 1..3).prop_map(|m| {
                Msg::Update(Value::Object(m.into_iter().map(|(k, v)| (KEYS[k].to_owned(), v)).collect()))
            }),
            2 => any::<u8>().prop_map(Msg::Signal),
            1 => Just(Msg::Refused),
            1 => Just(Msg::TooLarge),
        ]
    }

    /// A frame's text; each update carries the id `{writer}-{frame}-{index}`, under which
    /// `sent` records what it merges.
    fn frame_text(
        writer: usize,
        frame: usize,
        messages: &[Msg],
        sent: &mut HashMap<String, Value>,
    ) -> String {
        let messages: Vec<Value> = messages
            .iter()
            .enumerate()
            .map(|(index, m)| match m {
                Msg::Update(content) => {
                    let id = format!("{writer}-{frame}-{index}");
                    sent.insert(id.clone(), content.clone());
                    json!({"header": {"type": "update", "id": id}, "content": content})
                }
                Msg::Signal(n) => json!({"header": {"type": "signal"}, "content": {"s": n}}),
                Msg::Refused => json!({"header": {"type": "update"}, "content": {"refuse": 1}}),
                Msg::TooLarge => {
                    json!({"header": {"type": "update"}, "content": {"big": "x".repeat(4096)}})
                }
            })
            .collect();
        Value::Array(messages).to_string()
    }

    /// Replayed from the empty model in the order of the diffs an observer received: the
    /// diffs themselves, and (independent of what the engine computed) the updates the writers
    /// sent that made them, found by their ids. Also the diffs' versions.
    fn replay(
        batch: &[purly::ServerMessage],
        sent: &HashMap<String, Value>,
    ) -> (Value, Value, Vec<u64>) {
        let (mut diffs, mut updates) = (json!({}), json!({}));
        let mut seqs = Vec::new();
        for message in batch {
            if message.kind() != ServerMessageKind::Update || message.is_snapshot() {
                continue;
            }
            seqs.push(message.seq().unwrap());
            let diff = Value::Object(message.content().unwrap().clone());
            json_patch::merge(&mut diffs, &diff);
            let id: String = purly::serde_json::from_str(message.id().unwrap().as_json()).unwrap();
            json_patch::merge(&mut updates, &sent[&id]);
        }
        (diffs, updates, seqs)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        #[test]
        fn concurrent_workloads_converge_to_the_replayed_reference(
            writers in proptest::collection::vec(
                proptest::collection::vec(proptest::collection::vec(message(), 1..4), 1..25),
                2..5,
            ),
            slow_readers in 0usize..3,
        ) {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(3)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mut config = Config::default();
                config.max_model_bytes = 2048;
                config.max_queued_bytes = 8 << 10; // slow readers overflow and resync
                let engine = Engine::builder()
                    .config(config)
                    .model_factory(|_| Ok(Box::new(Refusing)))
                    .build();
                // The reference observer: a queue large enough never to lag.
                let recorder = Arc::new(Outbox::new(64 << 20));
                let _recording = engine.join("m", recorder.clone(), JoinOptions::stream()).await.unwrap();
                let mut readers = Vec::new();
                for r in 0..slow_readers {
                    let mut reader = Client::connect(&engine, "m").await.unwrap();
                    readers.push(tokio::spawn(async move {
                        // Reads now and then, falling behind the writers.
                        let mut reads = 0u64;
                        while reader.replica().version().is_none() || reads < 50 {
                            tokio::time::sleep(Duration::from_millis(1 + r as u64)).await;
                            reader.try_recv();
                            reads += 1;
                        }
                        reader
                    }));
                }
                let mut tasks = Vec::new();
                let mut sent = HashMap::new();
                for (w, frames) in writers.into_iter().enumerate() {
                    let texts: Vec<String> = frames
                        .iter()
                        .enumerate()
                        .map(|(f, frame)| frame_text(w, f, frame, &mut sent))
                        .collect();
                    let mut client = super::common::keyless(&engine, "m").await;
                    tasks.push(tokio::spawn(async move {
                        for (i, text) in texts.iter().enumerate() {
                            // A refusal is answered to the writer; the frame changes nothing.
                            let _ = client.session().send_text(text);
                            if i % 3 == 0 {
                                tokio::task::yield_now().await;
                            }
                            client.try_recv();
                        }
                        client
                    }));
                }
                let mut clients = Vec::new();
                for task in tasks {
                    clients.push(within(task).await.unwrap());
                }
                for reader in readers {
                    clients.push(within(reader).await.unwrap());
                }

                let truth = Value::Object(engine.state("m").unwrap());
                let version = engine.read("m", |_, v| v).unwrap();
                let mut batch = Vec::new();
                while let Some(Received::Messages) = recorder.try_recv(&mut batch) {}
                let (diffs, updates, seqs) = replay(&batch, &sent);
                assert_eq!(seqs, (1..=version).collect::<Vec<_>>(), "every version once, in order");
                assert_eq!(diffs, truth, "replayed diffs vs the engine's state");
                assert_eq!(updates, truth, "the updates sent, replayed in the engine's order");
                for client in &mut clients {
                    while client.replica().version() < Some(version) {
                        assert!(!within(recv(client)).await.is_empty());
                    }
                    assert_eq!(&Value::Object(client.state().clone()), &truth);
                }
            });
        }
    }
}
