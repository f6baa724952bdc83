//! Client keys (PROTOCOL.md section 9) in the engine: a resend is answered with its first
//! answer and never applied again, across sessions; refusals are remembered; frames are judged
//! update by update; other keys are unaffected; the memory is bounded. And a seeded property
//! test: random frames, lost answers, dropped connections and resends, every update applied
//! exactly once, in each client's own order, the state the replay of what was applied.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap};

use common::{obj, recv, settle, within};
use purly::serde_json::{json, Value};
use purly::{
    ClientKey, Config, Engine, ErrorCode, JoinOptions, MessageId, ServerMessage, ServerMessageKind,
};
use purly_channel::Client;

async fn keyed(engine: &Engine, model: &str, key: &str) -> Client {
    let options = JoinOptions::stream().client_key(ClientKey::new(key).unwrap());
    let mut client = Client::connect_with(engine, model, options).await.unwrap();
    recv(&mut client).await;
    client
}

fn update(id: u64, content: Value) -> Value {
    json!({"header": {"type": "update", "id": id}, "content": content})
}

/// Sends `messages` as one frame (a refusal arrives as an error message, like any answer).
async fn send(client: &Client, messages: &[Value]) {
    let _ = client
        .send_text(&Value::from(messages.to_vec()).to_string())
        .await;
}

/// Receives until the answer (echo, ack or error) of each id in `ids` arrived: the answers,
/// by id.
async fn answers(client: &mut Client, ids: &[u64]) -> HashMap<u64, ServerMessage> {
    let mut found = HashMap::new();
    while ids.iter().any(|id| !found.contains_key(id)) {
        for message in recv(client).await {
            for &id in ids {
                if message.answers(&MessageId::number(id)) {
                    found.entry(id).or_insert_with(|| message.clone());
                }
            }
        }
    }
    found
}

async fn answer(client: &mut Client, id: u64) -> ServerMessage {
    answers(client, &[id]).await.remove(&id).unwrap()
}

fn version(engine: &Engine) -> u64 {
    common::version(engine, "m")
}

#[tokio::test]
async fn a_resend_in_a_new_session_is_answered_and_not_applied_again() {
    let engine = Engine::default();
    let mut first = keyed(&engine, "m", "writer-key-1").await;
    send(&first, &[update(1, json!({"x": "mine"}))]).await;
    assert_eq!(answer(&mut first, 1).await.seq(), Some(1));
    drop(first);
    // Someone else changes the same key: applying the resend again would undo their change.
    let mut other = keyed(&engine, "m", "other-key-1").await;
    send(&other, &[update(1, json!({"x": "theirs"}))]).await;
    assert_eq!(
        answer(&mut other, 1).await.seq(),
        Some(2),
        "another key's id 1 is its own"
    );
    let mut again = keyed(&engine, "m", "writer-key-1").await;
    send(&again, &[update(1, json!({"x": "mine"}))]).await;
    let ack = answer(&mut again, 1).await;
    assert_eq!(ack.kind(), ServerMessageKind::Ack);
    assert!(ack.is_duplicate());
    assert_eq!(ack.seq(), Some(1), "the seq the update made the first time");
    assert!(ack.json().contains(r#""duplicate":true"#));
    assert_eq!(version(&engine), 2);
    assert_eq!(engine.state("m").unwrap(), obj(json!({"x": "theirs"})));
}

#[tokio::test]
async fn a_refused_update_resent_gets_the_same_error_and_is_not_applied() {
    let mut config = Config::default();
    config.max_model_bytes = 64;
    let engine = Engine::new(config);
    let mut client = keyed(&engine, "m", "writer-key-1").await;
    send(
        &client,
        &[update(
            1,
            json!({"pad": "0123456789012345678901234567890123456789"}),
        )],
    )
    .await;
    answer(&mut client, 1).await;
    send(
        &client,
        &[update(
            2,
            json!({"big": "01234567890123456789012345678901234567890"}),
        )],
    )
    .await;
    let refused = answer(&mut client, 2).await;
    assert_eq!(refused.kind(), ServerMessageKind::Error);
    assert_eq!(refused.content().unwrap()["code"], "model_too_large");
    // Room is made: a fresh judgement would now apply it.
    send(&client, &[update(3, json!({"pad": null}))]).await;
    answer(&mut client, 3).await;
    drop(client);
    let mut again = keyed(&engine, "m", "writer-key-1").await;
    send(
        &again,
        &[update(
            2,
            json!({"big": "01234567890123456789012345678901234567890"}),
        )],
    )
    .await;
    let resent = answer(&mut again, 2).await;
    assert_eq!(resent.kind(), ServerMessageKind::Error);
    assert_eq!(resent.content().unwrap()["code"], "model_too_large");
    assert_eq!(engine.state("m").unwrap(), obj(json!({})));
}

#[tokio::test]
async fn a_frame_is_judged_update_by_update() {
    let engine = Engine::default();
    let mut client = keyed(&engine, "m", "writer-key-1").await;
    send(&client, &[update(5, json!({"a": 1}))]).await;
    answer(&mut client, 5).await;
    // 5 again (decided), 6 (new), 6 again in the same frame (not above an earlier id), 4 (below
    // the highest decided, never seen: a duplicate without a seq), and a signal.
    send(
        &client,
        &[
            update(5, json!({"a": 2})),
            update(6, json!({"b": 1})),
            update(6, json!({"b": 2})),
            update(4, json!({"c": 1})),
            json!({"header": {"type": "signal"}, "content": {"s": 1}}),
        ],
    )
    .await;
    let mut messages = Vec::new();
    // (The signal goes to the others only.)
    while version(&engine) < 2 || messages.len() < 4 {
        messages.extend(recv(&mut client).await);
    }
    let describe: Vec<String> = messages
        .iter()
        .map(|m| {
            format!(
                "{} {} seq={:?} dup={}",
                m.kind().as_str(),
                m.id().map_or("-", |i| i.as_json()),
                m.seq(),
                m.is_duplicate()
            )
        })
        .collect();
    assert_eq!(
        describe,
        vec![
            "ack 5 seq=Some(1) dup=true",
            "ack 6 seq=None dup=true",
            "ack 4 seq=None dup=true",
            "update 6 seq=Some(2) dup=false",
        ]
    );
    assert_eq!(engine.state("m").unwrap(), obj(json!({"a": 1, "b": 1})));
}

#[tokio::test]
async fn with_a_key_every_update_needs_an_integer_id() {
    let engine = Engine::default();
    let mut client = keyed(&engine, "m", "writer-key-1").await;
    for text in [
        r#"[{"header":{"type":"update"},"content":{"a":1}}]"#,
        r#"[{"header":{"type":"update","id":"x"},"content":{"a":1}}]"#,
        r#"[{"header":{"type":"update","id":-1},"content":{"a":1}}]"#,
    ] {
        let error = client.send_text(text).await.unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::InvalidMessage), "{text}");
        recv(&mut client).await;
    }
    assert_eq!(version(&engine), 0);
}

#[tokio::test]
async fn an_old_id_beyond_the_kept_answers_is_a_duplicate_without_a_seq() {
    let engine = Engine::default();
    let mut client = keyed(&engine, "m", "writer-key-1").await;
    for id in 1..=80 {
        send(&client, &[update(id, json!({"n": id}))]).await;
        answer(&mut client, id).await;
    }
    send(
        &client,
        &[update(3, json!({"n": 3})), update(79, json!({"n": 79}))],
    )
    .await;
    let found = answers(&mut client, &[3, 79]).await;
    assert!(found[&3].is_duplicate() && found[&3].seq().is_none());
    assert!(found[&79].is_duplicate());
    assert_eq!(found[&79].seq(), Some(79));
    assert_eq!(version(&engine), 80);
}

#[tokio::test]
async fn past_the_cap_the_least_recently_used_key_is_forgotten() {
    let mut config = Config::default();
    config.max_client_keys = 2;
    let engine = Engine::new(config);
    for (n, key) in ["key-aaaa", "key-bbbb", "key-cccc"].into_iter().enumerate() {
        let mut client = keyed(&engine, "m", key).await;
        send(&client, &[update(1, json!({"n": n}))]).await;
        answer(&mut client, 1).await;
    }
    // The most recent two are remembered; the first is forgotten (at least once past it).
    let mut b = keyed(&engine, "m", "key-bbbb").await;
    send(&b, &[update(1, json!({"n": 1}))]).await;
    assert!(answer(&mut b, 1).await.is_duplicate());
    let mut a = keyed(&engine, "m", "key-aaaa").await;
    send(&a, &[update(1, json!({"n": 0}))]).await;
    let fresh = answer(&mut a, 1).await;
    assert!(!fresh.is_duplicate());
    assert_eq!(fresh.kind(), ServerMessageKind::Update);
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One seed of the property: two keyed writers on one model, each sending frames of one to
/// three updates; the connection is lost at random (answers unread), the client resumes and
/// resends what is unconfirmed, and now and then resends an update it already saw confirmed.
/// A reader records every diff. Every update is applied exactly once, each writer's in its own
/// order, and the state is the RFC 7386 replay of the applied updates in version order.
async fn run_seed(seed: u64) {
    let engine = Engine::default();
    let mut reader = common::keyless(&engine, "m").await;
    recv(&mut reader).await;
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut writers: Vec<Client> = Vec::new();
    for _ in 0..2 {
        let mut client = Client::connect(&engine, "m").await.unwrap();
        recv(&mut client).await;
        writers.push(client);
    }
    // What each writer sent, by id, and the ids in the order sent.
    let mut sent: Vec<BTreeMap<u64, Value>> = vec![BTreeMap::new(), BTreeMap::new()];
    let mut messages: Vec<Vec<purly::Message>> = vec![Vec::new(), Vec::new()];
    let mut unique = 0;
    let mut content = |rng: &mut Rng, w: usize| {
        unique += 1;
        let key = ["a", "b", "c"][rng.below(3) as usize];
        json!({ key: { "w": w, "u": unique }, "last": w })
    };
    for _ in 0..120 {
        let w = rng.below(2) as usize;
        match rng.below(10) {
            0 => {
                // The connection drops with its answers unread, and maybe with updates made
                // meanwhile that never left; the client resumes and resends what is pending.
                let client = writers.remove(w);
                let mut replica = client.into_replica();
                for _ in 0..rng.below(3) {
                    let content = content(&mut rng, w);
                    let message = replica.update(content.as_object().unwrap().clone());
                    let id = message.id.as_ref().and_then(|i| i.as_u64()).unwrap();
                    sent[w].insert(id, content);
                    messages[w].push(message);
                }
                let resumed = Client::resume(&engine, "m", replica).await.unwrap();
                writers.insert(w, resumed);
            }
            1 if !messages[w].is_empty() => {
                // A resend of an update sent before (its answer was lost, say).
                let at = rng.below(messages[w].len() as u64) as usize;
                let frame = purly::Frame::new(vec![messages[w][at].clone()]);
                let _ = writers[w].send(frame).await;
            }
            _ => {
                for _ in 0..=rng.below(3) {
                    let content = content(&mut rng, w);
                    writers[w].update(content.clone()).await.unwrap();
                    let message = writers[w].replica().pending_updates().last().unwrap();
                    let id = message.id.as_ref().and_then(|i| i.as_u64()).unwrap();
                    sent[w].insert(id, content);
                    messages[w].push(message);
                }
            }
        }
        for client in &mut writers {
            while client.try_recv().is_some() {}
        }
    }
    for client in &mut writers {
        settle(client).await;
    }
    let final_version = version(&engine);
    // Every diff, with the id that made it and its origin key's writer.
    let mut applied: BTreeMap<u64, (usize, u64)> = BTreeMap::new();
    let mut seen_ids: HashMap<(usize, u64), u64> = HashMap::new();
    while reader.replica().version() < Some(final_version) {
        for message in within(reader.recv()).await.unwrap() {
            let (Some(seq), Some(id)) = (message.seq(), message.id().and_then(|i| i.as_u64()))
            else {
                continue;
            };
            let w = (0..2).find(|&w| sent[w].contains_key(&id)).unwrap();
            assert!(
                seen_ids.insert((w, id), seq).is_none(),
                "seed {seed}: update {id} of writer {w} applied twice"
            );
            applied.insert(seq, (w, id));
        }
    }
    for w in 0..2 {
        for id in sent[w].keys() {
            assert!(
                seen_ids.contains_key(&(w, *id)),
                "seed {seed}: update {id} of writer {w} never applied"
            );
        }
        let order: Vec<u64> = sent[w].keys().map(|id| seen_ids[&(w, *id)]).collect();
        assert!(
            order.windows(2).all(|p| p[0] < p[1]),
            "seed {seed}: writer {w}'s updates applied out of its order"
        );
    }
    let mut reference = json!({});
    for (w, id) in applied.values() {
        json_patch::merge(&mut reference, &sent[*w][id]);
    }
    assert_eq!(
        Value::Object(engine.state("m").unwrap()),
        reference,
        "seed {seed}: the state is the replay"
    );
}

#[tokio::test]
async fn random_losses_and_resends_apply_every_update_exactly_once() {
    let seeds: u64 = std::env::var("PURLY_KEY_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    for seed in 1..=seeds {
        run_seed(seed).await;
    }
}

#[tokio::test]
async fn the_ids_of_signals_in_a_refused_frame_are_not_remembered_as_updates() {
    let mut config = Config::default();
    config.max_model_bytes = 32;
    let engine = Engine::new(config);
    let mut client = keyed(&engine, "m", "writer-key-1").await;
    let signal = json!({"header": {"type": "signal", "id": 1000}, "content": {"s": 1}});
    let big = update(
        1,
        json!({"big": "0123456789012345678901234567890123456789"}),
    );
    send(&client, &[signal, big]).await;
    assert_eq!(
        answer(&mut client, 1).await.kind(),
        ServerMessageKind::Error
    );
    send(&client, &[update(2, json!({"small": 1}))]).await;
    let applied = answer(&mut client, 2).await;
    assert_eq!(
        applied.kind(),
        ServerMessageKind::Update,
        "{}",
        applied.json()
    );
}
