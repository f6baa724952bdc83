//! Several engines ("nodes") on one real Redis: one total order per model, resumes on any
//! node, removal everywhere, only interested nodes follow a model, and Redis going away.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{RedisServer, TIMEOUT};
use purly::serde_json::{json, Value};
use purly::{CloseReason, Engine, ServerMessage};
use purly_channel::Client;
use purly_redis::{RedisOptions, RedisStore};

async fn node(redis: &RedisServer) -> (Engine, Arc<RedisStore>) {
    let mut options = RedisOptions::default();
    options.timeout = Duration::from_millis(500);
    let store = Arc::new(RedisStore::connect(&redis.url(), options).await.unwrap());
    (Engine::builder().store(store.clone()).build(), store)
}

async fn recv(client: &mut Client) -> Vec<ServerMessage> {
    tokio::time::timeout(TIMEOUT, client.recv())
        .await
        .expect("timed out waiting for a batch")
        .expect("the client closed")
}

async fn until_version(client: &mut Client, version: u64) -> Vec<u64> {
    let mut seqs = Vec::new();
    while client.replica().version() < Some(version) {
        for message in recv(client).await {
            if let (Some(seq), false) = (message.seq(), message.is_snapshot()) {
                seqs.push(seq);
            }
        }
    }
    seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    purly_no_redis,
    ignore = "no redis-server on this machine (apt-get install redis-server)"
)]
async fn two_nodes_see_one_order_under_concurrent_writes() {
    let Some(redis) = RedisServer::start("everysec") else {
        return;
    };
    let (a, _sa) = node(&redis).await;
    let (b, _sb) = node(&redis).await;
    let mut watch_a = Client::connect(&a, "m").await.unwrap();
    let mut watch_b = Client::connect(&b, "m").await.unwrap();
    recv(&mut watch_a).await;
    recv(&mut watch_b).await;
    const EACH: u64 = 300;
    let writers: Vec<_> = [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .enumerate()
        .map(|(w, engine)| {
            tokio::spawn(async move {
                let mut client = Client::connect(&engine, "m").await.unwrap();
                for i in 0..EACH {
                    // Overlapping keys: every writer writes `shared` and its own counter.
                    client
                        .update(json!({"shared": format!("{w}-{i}"), format!("w{w}"): i}))
                        .await
                        .unwrap();
                    if i % 20 == 0 {
                        tokio::time::timeout(TIMEOUT, client.settle())
                            .await
                            .unwrap()
                            .unwrap();
                    }
                }
                tokio::time::timeout(TIMEOUT, client.settle())
                    .await
                    .unwrap()
                    .unwrap();
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let total = 4 * EACH;
    // Every update changed `w<k>`, so each one is a diff: versions 1..=total.
    let seqs_a = until_version(&mut watch_a, total).await;
    let seqs_b = until_version(&mut watch_b, total).await;
    assert_eq!(seqs_a, (1..=total).collect::<Vec<_>>());
    assert_eq!(seqs_b, seqs_a);
    assert_eq!(watch_a.state(), watch_b.state());
    for w in 0..4 {
        assert_eq!(watch_a.state()[&format!("w{w}")], EACH - 1);
    }
    // A third node loading the model from Redis agrees.
    let (c, _sc) = node(&redis).await;
    let mut fresh = Client::connect(&c, "m").await.unwrap();
    recv(&mut fresh).await;
    assert_eq!(fresh.state(), watch_a.state());
    assert_eq!(fresh.replica().version(), Some(total));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    purly_no_redis,
    ignore = "no redis-server on this machine (apt-get install redis-server)"
)]
async fn a_client_resumes_on_another_node_with_only_the_missed_diffs() {
    let Some(redis) = RedisServer::start("everysec") else {
        return;
    };
    let (a, _sa) = node(&redis).await;
    let (b, _sb) = node(&redis).await;
    let mut writer = Client::connect(&a, "m").await.unwrap();
    let mut reader = Client::connect(&a, "m").await.unwrap();
    recv(&mut reader).await;
    for i in 0..5 {
        writer.update(json!({ "n": i })).await.unwrap();
    }
    tokio::time::timeout(TIMEOUT, writer.settle())
        .await
        .unwrap()
        .unwrap();
    until_version(&mut reader, 5).await;
    let replica = reader.into_replica();
    for i in 5..9 {
        writer.update(json!({ "n": i })).await.unwrap();
    }
    tokio::time::timeout(TIMEOUT, writer.settle())
        .await
        .unwrap()
        .unwrap();
    let mut resumed = Client::resume(&b, "m", replica).await.unwrap();
    let missed = recv(&mut resumed).await;
    // Who is here (nobody) comes before the missed diffs.
    assert!(missed[0].is_presence_snapshot());
    let seqs: Vec<_> = missed[1..]
        .iter()
        .map(|m| (m.is_snapshot(), m.seq()))
        .collect();
    assert_eq!(seqs, (6..=9).map(|v| (false, Some(v))).collect::<Vec<_>>());
    assert_eq!(resumed.state()["n"], 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    purly_no_redis,
    ignore = "no redis-server on this machine (apt-get install redis-server)"
)]
async fn only_nodes_holding_a_model_follow_it_and_removal_reaches_all() {
    let Some(redis) = RedisServer::start("everysec") else {
        return;
    };
    let (a, sa) = node(&redis).await;
    let (b, sb) = node(&redis).await;
    let mut on_a = Client::connect(&a, "only-a").await.unwrap();
    recv(&mut on_a).await;
    for i in 0..50 {
        on_a.update(json!({ "i": i })).await.unwrap();
    }
    tokio::time::timeout(TIMEOUT, on_a.settle())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sa.followed(), 1);
    assert_eq!(sb.followed(), 0);
    assert_eq!(
        sb.received(),
        0,
        "node b got traffic for a model it does not hold"
    );
    let numsub = redis.command("PUBSUB NUMSUB purly:{only-a}:ch");
    assert!(
        numsub.ends_with(":1\r\n"),
        "one node follows the channel: {numsub:?}"
    );

    // Both hold `shared`; removing it on one node closes it on the other.
    let mut on_b = Client::connect(&b, "shared").await.unwrap();
    recv(&mut on_b).await;
    b.update("shared", json!({"x": 1}).as_object().cloned().unwrap())
        .await
        .unwrap();
    until_version(&mut on_b, 1).await;
    // Whether `a` held it or not, Redis forgets it and `b` hears of it.
    a.remove_model("shared")
        .await
        .expect("Redis removes the model");
    while tokio::time::timeout(TIMEOUT, on_b.recv())
        .await
        .unwrap()
        .is_some()
    {}
    assert_eq!(on_b.close_reason(), Some(CloseReason::ModelRemoved));
    let mut again = Client::connect(&b, "shared").await.unwrap();
    let snapshot = recv(&mut again).await;
    assert_eq!(snapshot[0].seq(), Some(0));
    assert_eq!(again.state(), &purly::serde_json::Map::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    purly_no_redis,
    ignore = "no redis-server on this machine (apt-get install redis-server)"
)]
async fn redis_away_refuses_writes_and_everything_converges_after() {
    let Some(mut redis) = RedisServer::start("always") else {
        return;
    };
    let (a, _sa) = node(&redis).await;
    let (b, _sb) = node(&redis).await;
    let mut on_a = Client::connect(&a, "m").await.unwrap();
    let mut on_b = Client::connect(&b, "m").await.unwrap();
    recv(&mut on_a).await;
    recv(&mut on_b).await;
    on_a.update(json!({"before": 1})).await.unwrap();
    tokio::time::timeout(TIMEOUT, on_a.settle())
        .await
        .unwrap()
        .unwrap();
    until_version(&mut on_b, 1).await;

    redis.kill();
    on_a.update(json!({"during": 1})).await.unwrap();
    let mut seen: Vec<ServerMessage> = Vec::new();
    while let Some(batch) = tokio::time::timeout(TIMEOUT, on_a.recv()).await.unwrap() {
        seen.extend(batch);
    }
    assert_eq!(on_a.close_reason(), Some(CloseReason::StoreFailed));
    assert!(seen
        .iter()
        .any(|m| m.content().is_ok_and(|c| c["code"] == "unavailable")));
    assert!(!on_a.state().contains_key("during") || on_a.replica().pending() > 0);
    assert!(
        Client::connect(&a, "m").await.is_err(),
        "joins fail while Redis is away"
    );

    redis.restart();
    // Both nodes come back to one state: the acknowledged change survived the restart (AOF).
    let deadline = std::time::Instant::now() + TIMEOUT;
    let (mut again_a, mut again_b) = loop {
        match (
            Client::connect(&a, "m").await,
            Client::connect(&b, "m").await,
        ) {
            (Ok(x), Ok(y)) => break (x, y),
            _ => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the nodes never reconnected"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    recv(&mut again_a).await;
    recv(&mut again_b).await;
    assert_eq!(again_a.state()["before"], 1);
    assert!(
        !again_a.state().contains_key("during"),
        "a refused write was never applied"
    );
    again_b.update(json!({"after": 2})).await.unwrap();
    tokio::time::timeout(TIMEOUT, again_b.settle())
        .await
        .unwrap()
        .unwrap();
    until_version(&mut again_a, 2).await;
    assert_eq!(again_a.state(), again_b.state());
    let _ = Value::Null;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    purly_no_redis,
    ignore = "no redis-server on this machine (apt-get install redis-server)"
)]
async fn frames_larger_than_a_batch_stay_whole_across_conflicts() {
    let Some(redis) = RedisServer::start("everysec") else {
        return;
    };
    let mut config = purly::Config::default();
    config.max_batch_diffs = 2;
    let mut options = RedisOptions::default();
    options.timeout = Duration::from_millis(500);
    let mut engines = Vec::new();
    for _ in 0..2 {
        let store = RedisStore::connect(&redis.url(), options.clone())
            .await
            .unwrap();
        engines.push(
            Engine::builder()
                .config(config.clone())
                .store(store)
                .build(),
        );
    }
    let mut watch = Client::connect(&engines[1], "m").await.unwrap();
    recv(&mut watch).await;
    const FRAMES: u64 = 150;
    let writers: Vec<_> = engines
        .iter()
        .enumerate()
        .map(|(w, engine)| {
            let engine = engine.clone();
            tokio::spawn(async move {
                // Without a client key: its frames are built here, with no ids.
                let options = purly::JoinOptions::stream();
                let mut client = Client::connect_with(&engine, "m", options).await.unwrap();
                for i in 0..FRAMES {
                    // Three updates in one frame, each a diff: more than a batch holds.
                    let frame = purly::Frame::new(
                        (0..3)
                            .map(|k| {
                                let content = json!({ format!("w{w}k{k}"): i, "last": format!("{w}-{i}-{k}") });
                                purly::Message::update(content.as_object().cloned().unwrap())
                            })
                            .collect(),
                    );
                    client.send(frame).await.unwrap();
                }
                // Settles on the last frame's diffs: wait until this client saw its own last value.
                let deadline = std::time::Instant::now() + TIMEOUT;
                while client.state().get(&format!("w{w}k2")) != Some(&json!(FRAMES - 1))
                    || client.replica().version() < engine.durable_version("m")
                {
                    assert!(std::time::Instant::now() < deadline, "writer {w} never saw its writes");
                    recv(&mut client).await;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let total = 2 * FRAMES * 3;
    let seqs = until_version(&mut watch, total).await;
    assert_eq!(seqs.len() as u64, total, "every diff once, in order");
    let mut fresh = Client::connect(&engines[0], "m").await.unwrap();
    recv(&mut fresh).await;
    until_version(&mut fresh, total).await;
    assert_eq!(fresh.state(), watch.state());
    for w in 0..2 {
        for k in 0..3 {
            assert_eq!(watch.state()[&format!("w{w}k{k}")], FRAMES - 1);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    purly_no_redis,
    ignore = "no redis-server on this machine (apt-get install redis-server)"
)]
async fn modify_stays_atomic_across_nodes() {
    let Some(redis) = RedisServer::start("everysec") else {
        return;
    };
    let (a, _sa) = node(&redis).await;
    let (b, _sb) = node(&redis).await;
    a.update("counter", json!({"n": 0}).as_object().cloned().unwrap())
        .await
        .unwrap();
    // The start is durable before anyone counts: else an increment of the other node could
    // come first in the model's order, and the start would then, correctly, reset it.
    let deadline = std::time::Instant::now() + TIMEOUT;
    while a.durable_version("counter") != Some(1) {
        assert!(
            std::time::Instant::now() < deadline,
            "the start never became durable"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    const EACH: u64 = 200;
    let tasks: Vec<_> = [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .map(|engine| {
            tokio::task::spawn_blocking(move || {
                for _ in 0..EACH {
                    engine
                        .modify("counter", |state| {
                            let n = state.get("n").and_then(Value::as_u64).unwrap_or(0);
                            Some(
                                json!({ "n": n + 1 })
                                    .as_object()
                                    .cloned()
                                    .unwrap_or_default(),
                            )
                        })
                        .wait()
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        tokio::time::timeout(TIMEOUT, task).await.unwrap().unwrap();
    }
    // Every increment is applied once, in the one order, whichever node made it: both nodes
    // reach version 1 + 800 (each modify made a diff) with the counter at 800.
    let deadline = std::time::Instant::now() + TIMEOUT;
    while a.durable_version("counter") != Some(1 + 4 * EACH)
        || b.durable_version("counter") != Some(1 + 4 * EACH)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the nodes never reached version {}: {:?} and {:?}",
            1 + 4 * EACH,
            a.durable_version("counter"),
            b.durable_version("counter")
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        (
            a.state("counter").unwrap()["n"].clone(),
            a.read("counter", |_, v| v)
        ),
        (json!(4 * EACH), Some(1 + 4 * EACH)),
        "node a; node b: {:?} at {:?}",
        b.state("counter").map(|s| s["n"].clone()),
        b.read("counter", |_, v| v)
    );
    let mut watch = Client::connect(&b, "counter").await.unwrap();
    recv(&mut watch).await;
    let deadline = std::time::Instant::now() + TIMEOUT;
    while watch.state().get("n") != Some(&json!(4 * EACH)) {
        assert!(
            std::time::Instant::now() < deadline,
            "the counter ended at {:?}, not {}",
            watch.state().get("n"),
            4 * EACH
        );
        recv(&mut watch).await;
    }
}
