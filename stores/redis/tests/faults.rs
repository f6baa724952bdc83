//! Several nodes on a real redis-server, with the faults caused: a proxy the test controls
//! between a node and Redis drops the reply of appends after Redis ran them (and cuts the
//! connection), or delays a node's feed; Redis is restarted. Signals cross nodes.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/proxy.rs"]
mod proxy;
#[path = "common/writes.rs"]
mod writes;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::{RedisServer, TIMEOUT};
use proxy::Proxy;
use purly::serde_json::{json, Map, Value};
use purly::{merge_diff, Engine, MessageId, ServerMessage, ServerMessageKind};
use purly_channel::Client;
use purly_redis::{RedisOptions, RedisStore};
use writes::{follow, recv, write_through};

async fn node_at(url: &str) -> (Engine, Arc<RedisStore>) {
    let mut options = RedisOptions::default();
    options.timeout = Duration::from_millis(500);
    let store = Arc::new(RedisStore::connect(url, options).await.unwrap());
    let runtime = tokio::runtime::Handle::current();
    let engine = Engine::builder()
        .store(store.clone())
        .executor(move |task| {
            runtime.spawn(async move { task.run() });
        })
        .build();
    (engine, store)
}

/// Node `a` on Redis, node `b` through a proxy the test controls, and a client of model `m`
/// on `b` (its snapshot read).
struct Pair {
    a: Engine,
    b: Engine,
    proxy: Proxy,
    on_b: Client,
    _stores: [Arc<RedisStore>; 2],
}

async fn pair(redis: &RedisServer) -> Pair {
    let (a, store_a) = node_at(&redis.url()).await;
    let proxy = Proxy::start(redis.port).await;
    let (b, store_b) = node_at(&proxy.url()).await;
    let mut on_b = Client::connect(&b, "m").await.unwrap();
    recv(&mut on_b).await;
    Pair {
        a,
        b,
        proxy,
        on_b,
        _stores: [store_a, store_b],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_cross_nodes_once_in_order_after_their_updates() {
    let Some(redis) = RedisServer::start("everysec") else {
        return;
    };
    let (a, _sa) = node_at(&redis.url()).await;
    let (b, _sb) = node_at(&redis.url()).await;
    let (c, _sc) = node_at(&redis.url()).await;
    let mut sender = Client::connect(&a, "m").await.unwrap();
    let mut on_b = Client::connect(&b, "m").await.unwrap();
    let mut on_c = Client::connect(&c, "m").await.unwrap();
    let mut also_on_a = Client::connect(&a, "m").await.unwrap();
    for client in [&mut sender, &mut on_b, &mut on_c, &mut also_on_a] {
        recv(client).await;
    }
    // Each signal follows an update of its sender: whoever gets the signal has that version.
    const SIGNALS: u64 = 20;
    for i in 1..=SIGNALS {
        sender.update(json!({ "n": i })).await.unwrap();
        sender.signal(json!({ "i": i })).await.unwrap();
    }
    for receiver in [&mut on_b, &mut on_c, &mut also_on_a] {
        let mut seen = Vec::new();
        while seen.len() < SIGNALS as usize {
            for message in recv(receiver).await {
                if message.kind() == ServerMessageKind::Signal {
                    let i = message.content().unwrap()["i"].as_u64().unwrap();
                    // The update sent before signal i is version i (one update each).
                    assert!(
                        receiver.replica().version() >= Some(i),
                        "signal {i} arrived before the update that preceded it"
                    );
                    seen.push(i);
                }
            }
        }
        assert_eq!(
            seen,
            (1..=SIGNALS).collect::<Vec<_>>(),
            "each once, in order"
        );
    }
    // Nothing more: no duplicate arrives once the sender's last update is everywhere.
    sender.update(json!({ "n": "done" })).await.unwrap();
    for receiver in [&mut on_b, &mut on_c] {
        let mut more = Vec::new();
        follow(receiver, SIGNALS + 1, &mut more).await;
        assert!(receiver
            .try_recv()
            .is_none_or(|batch| batch.iter().all(|m| m.kind() != ServerMessageKind::Signal)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_append_reply_never_applies_an_update_twice() {
    let Some(redis) = RedisServer::start("everysec") else {
        return;
    };
    let proxy = Proxy::start(redis.port).await;
    proxy
        .faults
        .drop_every_nth_append
        .store(10, Ordering::SeqCst);
    let (a, _sa) = node_at(&proxy.url()).await;
    let (b, _sb) = node_at(&proxy.url()).await;
    // The reader is on a node of its own, straight to Redis.
    let (c, _sc) = node_at(&redis.url()).await;
    let mut reader = Client::connect(&c, "m").await.unwrap();
    recv(&mut reader).await;
    const WRITERS: usize = 4;
    const EACH: usize = 100;
    let writers: Vec<_> = (0..WRITERS)
        .map(|k| {
            let node = if k % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let mut client = Client::connect(&node, "m").await.unwrap();
                let mut confirmed = 0;
                for i in 0..EACH {
                    let tag = format!("{k}-{i}");
                    client
                        .update(json!({ "last": tag, "log": { tag.clone(): true } }))
                        .await
                        .unwrap();
                    if tokio::time::timeout(TIMEOUT, client.settle())
                        .await
                        .unwrap()
                        .is_ok()
                    {
                        confirmed += 1;
                    }
                }
                confirmed
            })
        })
        .collect();
    let mut confirmed = 0;
    for writer in writers {
        confirmed += tokio::time::timeout(TIMEOUT * 3, writer)
            .await
            .unwrap()
            .unwrap();
    }
    assert!(
        proxy.faults.dropped.load(Ordering::SeqCst) >= 5,
        "the proxy dropped replies ({} of {} appends)",
        proxy.faults.dropped.load(Ordering::SeqCst),
        proxy.faults.appends.load(Ordering::SeqCst)
    );
    assert_eq!(confirmed, WRITERS * EACH, "every update echoed");

    // Every update, once: each tag is set as `last` by exactly one version (a second
    // application after another writer's update would set it again) and logged by one.
    // The last version any node has made (the reader's node may still be catching up).
    let version = [&a, &b, &c]
        .iter()
        .filter_map(|node| node.read("m", |_, version| version))
        .max()
        .unwrap();
    let mut diffs = Vec::new();
    follow(&mut reader, version, &mut diffs).await;
    let mut last_set: HashMap<String, usize> = HashMap::new();
    let mut logged: HashMap<String, usize> = HashMap::new();
    for (_, diff) in &diffs {
        if let Some(tag) = diff.get("last").and_then(Value::as_str) {
            *last_set.entry(tag.to_owned()).or_default() += 1;
        }
        for tag in diff
            .get("log")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            *logged.entry(tag.0.clone()).or_default() += 1;
        }
    }
    assert_eq!(logged.len(), WRITERS * EACH, "every update applied");
    let twice: Vec<_> = last_set.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "applied in two versions: {twice:?}");
    assert!(logged.values().all(|n| *n == 1));
    let seqs: Vec<u64> = diffs.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(
        seqs,
        (1..=version).collect::<Vec<_>>(),
        "one gapless sequence"
    );
    // The reader's replica, the replay of the diffs, and every node's state are equal.
    let mut replay = Map::new();
    for (_, diff) in diffs {
        merge_diff(&mut replay, diff);
    }
    assert_eq!(reader.state(), &replay);
    for node in [&a, &b] {
        let deadline = std::time::Instant::now() + TIMEOUT;
        while node.read("m", |_, v| v) < Some(version) {
            assert!(std::time::Instant::now() < deadline, "a node stayed behind");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(node.state("m").unwrap(), replay);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_ahead_of_a_lagging_node_gets_the_missed_diffs_not_an_older_state() {
    let Some(redis) = RedisServer::start("everysec") else {
        return;
    };
    // Node b's feed arrives late: it is behind what clients of node a have seen.
    let Pair {
        a,
        b,
        proxy,
        on_b: _on_b,
        ..
    } = pair(&redis).await;
    proxy.faults.feed_delay_ms.store(3_000, Ordering::SeqCst);
    let mut writer = Client::connect(&a, "m").await.unwrap();
    let mut reader = Client::connect(&a, "m").await.unwrap();
    recv(&mut reader).await;
    for i in 1..=10 {
        writer
            .update(json!({ "n": i, format!("k{i}"): i }))
            .await
            .unwrap();
    }
    writer.settle().await.unwrap();
    follow(&mut reader, 10, &mut Vec::new()).await;
    let at = reader.replica().version().unwrap();
    assert_eq!(at, 10);
    let replica = reader.into_replica();
    for i in 11..=30 {
        writer
            .update(json!({ "n": i, format!("k{i}"): i }))
            .await
            .unwrap();
    }
    writer.settle().await.unwrap();
    assert!(
        b.read("m", |_, v| v).unwrap() < at,
        "node b is behind the client (its feed is delayed)"
    );
    let mut resumed = Client::resume(&b, "m", replica).await.unwrap();
    let mut diffs = Vec::new();
    let mut first = recv(&mut resumed).await;
    assert!(
        first.iter().all(|m| !m.is_snapshot()),
        "no snapshot: the missed diffs"
    );
    // Who is here comes before the missed diffs.
    assert!(first.remove(0).is_presence_snapshot());
    assert_eq!(
        first[0].seq(),
        Some(at + 1),
        "nothing older than what it had"
    );
    for message in first {
        diffs.push(message.seq().unwrap());
    }
    while resumed.replica().version() < Some(30) {
        diffs.extend(recv(&mut resumed).await.iter().filter_map(|m| m.seq()));
    }
    assert_eq!(diffs, (at + 1..=30).collect::<Vec<_>>());
    assert_eq!(resumed.state(), writer.state());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_restarts_no_node_stays_stale() {
    let Some(mut redis) = RedisServer::start("always") else {
        return;
    };
    let (a, _sa) = node_at(&redis.url()).await;
    let (b, _sb) = node_at(&redis.url()).await;
    let mut on_a = Client::connect(&a, "m").await.unwrap();
    let mut on_b = Client::connect(&b, "m").await.unwrap();
    recv(&mut on_a).await;
    recv(&mut on_b).await;
    for i in 1..=5 {
        on_a.update(json!({ "before": i })).await.unwrap();
    }
    on_a.settle().await.unwrap();
    follow(&mut on_b, 5, &mut Vec::new()).await;

    redis.restart();
    // Writes after the restart, on node a (its first tries may meet the broken connection).
    let mut writer = loop {
        match Client::connect(&a, "m").await {
            Ok(client) => break client,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    recv(&mut writer).await;
    let mut written = BTreeMap::new();
    for i in 1..=5 {
        writer.update(json!({ "after": i })).await.unwrap();
        if writer.settle().await.is_ok() {
            written.insert(i, writer.replica().version().unwrap());
        }
    }
    let version = *written
        .values()
        .last()
        .expect("writes succeed after the restart");
    // Node b's subscribers (reconnecting if their model was closed) get every write.
    let mut fresh_on_b = Client::connect(&b, "m").await.unwrap();
    follow(&mut fresh_on_b, version, &mut Vec::new()).await;
    assert_eq!(fresh_on_b.state()["after"], 5);
    let deadline = std::time::Instant::now() + TIMEOUT;
    while b.read("m", |_, v| v) < Some(version) {
        assert!(std::time::Instant::now() < deadline, "node b stayed stale");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(b.state("m"), a.state("m"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_connection_to_redis_is_followed_by_a_catch_up_never_a_stale_node() {
    let Some(redis) = RedisServer::start("everysec") else {
        return;
    };
    let Pair {
        a,
        b,
        proxy,
        mut on_b,
        ..
    } = pair(&redis).await;
    let mut writer = Client::connect(&a, "m").await.unwrap();
    recv(&mut writer).await;
    for round in 1..=5u64 {
        // Node b's connections (its feed and its commands) break; writes go on on node a.
        proxy.cut_all();
        for i in 0..4 {
            writer
                .update(json!({ "round": round, "i": i }))
                .await
                .unwrap();
        }
        writer.settle().await.unwrap();
        let version = writer.replica().version().unwrap();
        // b's subscriber gets every write, in order, once b's feed is back and caught up.
        let mut diffs = Vec::new();
        let from = on_b.replica().version().unwrap();
        follow(&mut on_b, version, &mut diffs).await;
        let seqs: Vec<u64> = diffs.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(
            seqs,
            (from + 1..=version).collect::<Vec<_>>(),
            "round {round}"
        );
        assert_eq!(on_b.state(), writer.state());
    }
    assert!(b.read("m", |_, v| v) == a.read("m", |_, v| v));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_that_time_out_and_go_through_later_are_applied_once() {
    let Some(redis) = RedisServer::start("everysec") else {
        return;
    };
    let proxy = Proxy::start(redis.port).await;
    let (a, _sa) = node_at(&proxy.url()).await;
    let (b, _sb) = node_at(&proxy.url()).await;
    let (c, _sc) = node_at(&redis.url()).await;
    let mut reader = Client::connect(&c, "m").await.unwrap();
    recv(&mut reader).await;
    let faults = proxy.faults.clone();
    // Twice, the network between the writers' nodes and Redis passes nothing for 1.5 s (three
    // times the nodes' command timeout), then delivers what it held.
    let blackholes = async move {
        for _ in 0..2 {
            while faults.appends.load(Ordering::SeqCst) < 20 {
                tokio::task::yield_now().await;
            }
            faults.blackhole.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(1500)).await;
            faults.blackhole.store(false, Ordering::SeqCst);
            faults.appends.store(0, Ordering::SeqCst);
        }
    };
    let echoed = write_through([&a, &b], "m", &mut reader, blackholes).await;
    assert!(echoed > 100, "only {echoed} updates got through");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_redis_loses_nothing_and_applies_nothing_twice() {
    let Some(redis) = RedisServer::start("everysec") else {
        return;
    };
    let (a, _sa) = node_at(&redis.url()).await;
    let (b, _sb) = node_at(&redis.url()).await;
    let mut reader = Client::connect(&b, "m").await.unwrap();
    recv(&mut reader).await;
    let redis = std::sync::Arc::new(redis);
    let stopped = redis.clone();
    let writing = a.clone();
    let stop = async move {
        // Once the writers are under way, Redis stops answering (SIGSTOP) for 1.5 s.
        while writing.read("m", |_, v| v).unwrap_or(0) < 20 {
            tokio::task::yield_now().await;
        }
        stopped.pause();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stopped.resume();
    };
    let echoed = write_through([&a, &b], "m", &mut reader, stop).await;
    assert!(echoed > 100, "only {echoed} updates got through");
}

/// A keyed client on `engine` sending one update `id`, and its answer.
async fn keyed_send(engine: &Engine, key: &str, id: u64, content: Value) -> ServerMessage {
    let key = purly::ClientKey::new(key).unwrap();
    let options = purly::JoinOptions::stream().client_key(key);
    let mut client = Client::connect_with(engine, "m", options).await.unwrap();
    recv(&mut client).await;
    let frame = json!([{"header": {"type": "update", "id": id}, "content": content}]);
    let _ = client.send_text(&frame.to_string()).await;
    loop {
        for message in recv(&mut client).await {
            if message.answers(&MessageId::number(id)) {
                return message;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_on_another_node_is_answered_not_applied_again() {
    let Some(redis) = RedisServer::start("everysec") else {
        return;
    };
    let Pair {
        a,
        b,
        proxy,
        mut on_b,
        ..
    } = pair(&redis).await;
    let mut diffs = Vec::new();
    // Node b has the first commit from its feed when the resend reaches it.
    let first = keyed_send(&a, "writer-key-1", 1, json!({"x": "first"})).await;
    assert_eq!(first.seq(), Some(1));
    follow(&mut on_b, 1, &mut diffs).await;
    let again = keyed_send(&b, "writer-key-1", 1, json!({"x": "first"})).await;
    assert!(again.is_duplicate(), "{}", again.json());
    assert_eq!(again.seq(), Some(1));
    // Node b's feed is late: it applies the resend before it hears of the commit, and its
    // append conflicts; the commit's client key records then make the rerun a duplicate.
    // (Long enough that a loaded machine does not see the feed arrive first.)
    proxy.faults.feed_delay_ms.store(5_000, Ordering::SeqCst);
    let second = keyed_send(&a, "writer-key-1", 2, json!({"x": "second"})).await;
    assert_eq!(second.seq(), Some(2));
    assert!(b.read("m", |_, v| v).unwrap() < 2, "node b is behind");
    let again = keyed_send(&b, "writer-key-1", 2, json!({"x": "second"})).await;
    assert!(again.is_duplicate(), "{}", again.json());
    assert_eq!(again.seq(), Some(2));
    proxy.faults.feed_delay_ms.store(0, Ordering::SeqCst);
    // Nothing was applied twice: a third writer's change stays the last.
    let other = keyed_send(&b, "other-key-1", 1, json!({"x": "other"})).await;
    assert_eq!(other.seq(), Some(3));
    follow(&mut on_b, 3, &mut diffs).await;
    assert_eq!(
        diffs.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(b.state("m").unwrap()["x"], "other");
    // Node a hears of version 3 through its feed, maybe after this join: in the snapshot, or
    // right after it.
    let mut on_a = Client::connect(&a, "m").await.unwrap();
    while on_a.replica().version() < Some(3) {
        recv(&mut on_a).await;
    }
    assert_eq!(on_a.replica().version(), Some(3));
    assert_eq!(on_a.state()["x"], "other");
    // A node that loads the model now reads the key's records from Redis.
    let (c, _sc) = node_at(&redis.url()).await;
    let again = keyed_send(&c, "writer-key-1", 1, json!({"x": "first"})).await;
    assert!(again.is_duplicate(), "{}", again.json());
    assert_eq!(again.seq(), Some(1));
    assert_eq!(c.state("m").unwrap()["x"], "other");
}

/// A client that joins a model its node did not hold gets every signal sent after its join,
/// even when the node's subscription to the model's channel takes effect late: the join waits
/// until the node follows the model (signals are not stored; one published before the
/// subscription would be lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_where_the_model_is_new_misses_no_signal() {
    let Some(redis) = RedisServer::start("everysec") else {
        return;
    };
    let (a, _sa) = node_at(&redis.url()).await;
    let proxy = Proxy::start(redis.port).await;
    let (b, _sb) = node_at(&proxy.url()).await;
    let mut sender = Client::connect(&a, "m").await.unwrap();
    recv(&mut sender).await;
    // Node b's subscription to the model's channel reaches Redis half a second late.
    proxy.faults.subscribe_delay_ms.store(500, Ordering::SeqCst);
    let mut on_b = Client::connect(&b, "m").await.unwrap();
    recv(&mut on_b).await;
    // The join is done: this signal is for on_b.
    sender.signal(json!({ "hello": "b" })).await.unwrap();
    loop {
        let batch = recv(&mut on_b).await;
        if let Some(signal) = batch.iter().find(|m| m.kind() == ServerMessageKind::Signal) {
            assert_eq!(signal.content().unwrap()["hello"], "b");
            break;
        }
    }
}
