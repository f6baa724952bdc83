//! Nodes on a real Redis Cluster of three masters started by the tests: models spread over
//! every master keep one gapless order on every node, each node follows (shard-subscribes
//! to) only the models it holds, signals cross nodes; masters killed and restarted on their
//! config files lose nothing and leave no node stale; a master stopped (SIGSTOP) stalls only
//! its own models and applies nothing twice.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/writes.rs"]
mod writes;

use std::sync::Arc;
use std::time::Duration;

use common::cluster::RedisCluster;
use common::TIMEOUT;
use purly::serde_json::json;
use purly::{Engine, ServerMessageKind};
use purly_channel::Client;
use purly_redis::{RedisOptions, RedisStore};
use writes::{follow, recv, write_through};

async fn node(cluster: &RedisCluster) -> (Engine, Arc<RedisStore>) {
    let mut options = RedisOptions::default();
    options.timeout = Duration::from_millis(500);
    let store = Arc::new(
        RedisStore::connect_cluster(&cluster.seeds(), options)
            .await
            .unwrap(),
    );
    (Engine::builder().store(store.clone()).build(), store)
}

/// `per_master` model names for each master (in master order), as the cluster places them.
fn models_on_every_master(cluster: &RedisCluster, per_master: usize) -> Vec<Vec<String>> {
    let mut placed = vec![Vec::new(); cluster.masters.len()];
    for i in 0.. {
        if placed
            .iter()
            .all(|models: &Vec<String>| models.len() >= per_master)
        {
            break;
        }
        let name = format!("page-{i}");
        let master = cluster.master_of(&format!("purly:{{{name}}}:log"));
        if placed[master].len() < per_master {
            placed[master].push(name);
        }
    }
    placed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_on_every_master_keep_one_order_on_every_node() {
    let Some(cluster) = RedisCluster::start("everysec") else {
        return;
    };
    let nodes = [
        node(&cluster).await,
        node(&cluster).await,
        node(&cluster).await,
    ];
    let placed = models_on_every_master(&cluster, 2);
    let models: Vec<(usize, String)> = placed
        .iter()
        .enumerate()
        .flat_map(|(master, names)| names.iter().map(move |n| (master, n.clone())))
        .collect();
    const EACH: u64 = 40;
    // Model k: a writer on node k % 3, a reader on node (k + 1) % 3; node (k + 2) % 3 does
    // not hold it.
    let mut tasks = Vec::new();
    for (k, (_, model)) in models.iter().enumerate() {
        let writer_node = nodes[k % 3].0.clone();
        let reader_node = nodes[(k + 1) % 3].0.clone();
        let model = model.clone();
        let mut reader = Client::connect(&reader_node, &model).await.unwrap();
        recv(&mut reader).await;
        tasks.push(tokio::spawn(async move {
            let mut writer = Client::connect(&writer_node, &model).await.unwrap();
            recv(&mut writer).await;
            for i in 1..=EACH {
                writer
                    .update(json!({ "i": i, "model": &model }))
                    .await
                    .unwrap();
            }
            // A signal after the last update: the reader gets it once it has that update.
            writer.signal(json!({ "last": EACH })).await.unwrap();
            tokio::time::timeout(TIMEOUT, writer.settle())
                .await
                .unwrap()
                .unwrap();
            let mut diffs = Vec::new();
            let mut signal_at = None;
            while signal_at.is_none() {
                for message in recv(&mut reader).await {
                    if message.kind() == ServerMessageKind::Signal {
                        signal_at = reader.replica().version();
                    } else if let (Some(seq), false) = (message.seq(), message.is_snapshot()) {
                        diffs.push(seq);
                    }
                }
            }
            assert_eq!(
                signal_at,
                Some(EACH),
                "{model}: the signal after its update"
            );
            assert_eq!(
                diffs,
                (1..=EACH).collect::<Vec<_>>(),
                "{model}: no gap, no repeat"
            );
            assert_eq!(reader.state(), writer.state());
            writer.state().clone()
        }));
    }
    let mut states = Vec::new();
    for task in tasks {
        states.push(
            tokio::time::timeout(TIMEOUT * 2, task)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    for (k, (master, model)) in models.iter().enumerate() {
        // The model's log is on its master, whole.
        let length = cluster.masters[*master].command(&format!("XLEN purly:{{{model}}}:log"));
        assert_eq!(
            length,
            format!(":{EACH}\r\n"),
            "{model}'s log on master {master}"
        );
        // Its sharded channel has two subscribers on that master: the nodes holding it.
        let numsub =
            cluster.masters[*master].command(&format!("PUBSUB SHARDNUMSUB purly:{{{model}}}:ch"));
        assert!(
            numsub.ends_with(":2\r\n"),
            "{model} is followed by the two nodes holding it: {numsub:?}"
        );
        let outsider = &nodes[(k + 2) % 3].0;
        assert_eq!(
            outsider.read(model, |_, v| v),
            None,
            "{model} is not held there"
        );
    }
    // Each node received the publishes of the four models it holds only (EACH batches at most
    // each, fewer when batched).
    for (_, store) in &nodes {
        assert_eq!(store.followed(), 4);
        assert!(store.received() <= 4 * EACH, "{}", store.received());
    }
    // A fresh node loads every model from its master.
    let (fresh, _store) = node(&cluster).await;
    for ((_, model), state) in models.iter().zip(&states) {
        let mut client = Client::connect(&fresh, model).await.unwrap();
        recv(&mut client).await;
        assert_eq!(client.state(), state);
        assert_eq!(client.replica().version(), Some(EACH));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masters_killed_and_restarted_lose_nothing_and_leave_no_node_stale() {
    let Some(mut cluster) = RedisCluster::start("always") else {
        return;
    };
    let (a, _sa) = node(&cluster).await;
    let (b, _sb) = node(&cluster).await;
    let models = models_on_every_master(&cluster, 1).concat();
    let mut followers = Vec::new();
    for model in &models {
        let mut writer = Client::connect(&a, model).await.unwrap();
        let mut on_b = Client::connect(&b, model).await.unwrap();
        recv(&mut writer).await;
        recv(&mut on_b).await;
        for i in 1..=5 {
            writer.update(json!({ "before": i })).await.unwrap();
        }
        tokio::time::timeout(TIMEOUT, writer.settle())
            .await
            .unwrap()
            .unwrap();
        follow(&mut on_b, 5, &mut Vec::new()).await;
        followers.push(on_b);
    }

    // Every master killed (SIGKILL) and started again on its config file and AOF.
    for master in &mut cluster.masters {
        master.kill();
    }
    for master in &mut cluster.masters {
        master.restart();
    }
    cluster.wait_ok();
    for (model, on_b) in models.iter().zip(&mut followers) {
        // Writes after the restart, on node a (its first tries may meet broken connections).
        let deadline = std::time::Instant::now() + TIMEOUT;
        let mut writer = loop {
            match Client::connect(&a, model).await {
                Ok(client) => break client,
                Err(error) => {
                    assert!(std::time::Instant::now() < deadline, "{model}: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        recv(&mut writer).await;
        assert_eq!(
            writer.state()["before"],
            5,
            "{model}: an acknowledged write was lost"
        );
        let mut version = None;
        for i in 1..=5 {
            writer.update(json!({ "after": i })).await.unwrap();
            if tokio::time::timeout(TIMEOUT, writer.settle())
                .await
                .is_ok_and(|r| r.is_ok())
            {
                version = writer.replica().version();
            }
        }
        let version = version.expect("writes succeed after the restart");
        assert!(version >= 6, "{model}: version {version}");
        // Node b's subscriber (still connected, or reconnecting if node b closed the model)
        // and node b's own copy catch up: nothing stale.
        while on_b.replica().version() < Some(version) {
            let batch = tokio::time::timeout(TIMEOUT, on_b.recv()).await;
            if batch.expect("node b's subscriber waited in vain").is_none() {
                // Node b closed the model (an append of it failed): its clients join again.
                *on_b = Client::connect(&b, model).await.unwrap();
            }
        }
        assert_eq!(on_b.state()["after"], 5);
        let deadline = std::time::Instant::now() + TIMEOUT;
        while b.read(model, |_, v| v) < Some(version) {
            assert!(
                std::time::Instant::now() < deadline,
                "node b stayed stale on {model}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(b.state(model), a.state(model));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_master_stalls_only_its_models_and_applies_nothing_twice() {
    let Some(cluster) = RedisCluster::start("everysec") else {
        return;
    };
    let (a, _sa) = node(&cluster).await;
    let (b, _sb) = node(&cluster).await;
    let placed = models_on_every_master(&cluster, 1);
    let (stalled, other) = (placed[0][0].clone(), placed[1][0].clone());
    let mut reader = Client::connect(&b, &stalled).await.unwrap();
    recv(&mut reader).await;
    let mut other_writer = Client::connect(&a, &other).await.unwrap();
    let mut other_reader = Client::connect(&b, &other).await.unwrap();
    recv(&mut other_writer).await;
    recv(&mut other_reader).await;
    let cluster = Arc::new(cluster);
    let stopped = cluster.clone();
    let writing = a.clone();
    let watched = stalled.clone();
    let stop = async move {
        // Once the writers are under way, the stalled model's master stops answering
        // (SIGSTOP) for 1.5 s.
        while writing.read(&watched, |_, v| v).unwrap_or(0) < 20 {
            tokio::task::yield_now().await;
        }
        stopped.masters[0].pause();
        let paused = std::time::Instant::now();
        // Meanwhile a model of another master goes on from node a to node b.
        for i in 1..=3 {
            other_writer.update(json!({ "during": i })).await.unwrap();
            tokio::time::timeout(TIMEOUT, other_writer.settle())
                .await
                .unwrap()
                .unwrap();
            follow(&mut other_reader, i, &mut Vec::new()).await;
        }
        tokio::time::sleep(Duration::from_millis(1500).saturating_sub(paused.elapsed())).await;
        stopped.masters[0].resume();
    };
    let echoed = write_through([&a, &b], &stalled, &mut reader, stop).await;
    assert!(echoed > 100, "only {echoed} updates got through");
}
