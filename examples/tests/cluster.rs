//! Three real server processes on one real Redis, and on a real Redis Cluster of three
//! masters (`--redis-cluster`): 20 writers spread over the nodes write
//! overlapping keys; every node's subscribers see the identical sequence of versions and end
//! equal to the replay of the committed diffs; a node killed with SIGKILL mid-load loses
//! nothing, and its client resumes on another node with the diffs it missed only.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "../../stores/redis/tests/common/mod.rs"]
mod redis_server;

use std::net::SocketAddr;

use common::{get, next_frame, send, stream_client, ServerProcess, TIMEOUT};
use purly::serde_json::{json, Map, Value};
use purly::{merge_diff, parse_server_frame, Mode, Replica};
use redis_server::cluster::RedisCluster;
use redis_server::RedisServer;

const WRITERS: usize = 20;
const UPDATES: usize = 60;

/// `nodes` server processes on the store `store` names (`--redis URL` or `--redis-cluster
/// URLS`).
async fn cluster(store: &[String], nodes: usize) -> Vec<ServerProcess> {
    let store: Vec<&str> = store.iter().map(String::as_str).collect();
    let mut servers = Vec::new();
    for _ in 0..nodes {
        servers.push(ServerProcess::start(&store).await);
    }
    servers
}

/// The server arguments of one redis-server.
fn one_redis(redis: &RedisServer) -> Vec<String> {
    vec!["--redis".to_owned(), redis.url()]
}

/// The server arguments of a Redis Cluster.
fn redis_cluster(cluster: &RedisCluster) -> Vec<String> {
    vec!["--redis-cluster".to_owned(), cluster.seeds().join(",")]
}

/// Sends `UPDATES` updates with ids, each waiting for its echo (or an error): the ids echoed.
async fn writer(addr: SocketAddr, k: usize) -> Vec<String> {
    let mut ws = stream_client(addr, "/shared/stream").await;
    next_frame(&mut ws).await.expect("a snapshot");
    let mut confirmed = Vec::new();
    for i in 0..UPDATES {
        let id = format!("{k}-{i}");
        let frame = json!([{"header": {"type": "update", "id": id},
                             "content": {"shared": id, format!("w{k}"): i, "n": {format!("k{}", i % 5): k}}}]);
        if !send(&mut ws, frame.to_string()).await {
            return confirmed;
        }
        loop {
            let Some(messages) = next_frame(&mut ws).await else {
                return confirmed;
            };
            if let Some(answer) = messages.iter().find(|m| m["header"]["id"] == id.as_str()) {
                if answer["header"]["type"] == "update" {
                    confirmed.push(id);
                }
                break;
            }
        }
    }
    confirmed
}

/// A follower's stream, resumed from `replica` when it has a version.
async fn open(addr: SocketAddr, replica: &Replica) -> common::Ws {
    let path = match (replica.version(), replica.epoch()) {
        (Some(v), Some(e)) => format!("/shared/stream?since={v}&epoch={e}"),
        _ => "/shared/stream".to_owned(),
    };
    stream_client(addr, &path).await
}

/// Applies the next frame to `replica`, recording every diff's (seq, content).
async fn step(
    ws: &mut common::Ws,
    replica: &mut Replica,
    diffs: &mut Vec<(u64, Map<String, Value>)>,
) {
    let messages = next_frame(ws).await.expect("the follower's stream ended");
    for message in parse_server_frame(&Value::Array(messages).to_string()).unwrap() {
        if let (Some(seq), false) = (message.seq(), message.is_snapshot()) {
            diffs.push((seq, message.content().unwrap().clone()));
        }
        replica.apply(&message).unwrap();
    }
}

/// Asserts that each of `confirmed` was applied in exactly one version of `diffs` (each write
/// sets `shared` to its id, so a second application would show as a second diff).
fn each_exactly_once(confirmed: &[String], diffs: &[(u64, Map<String, Value>)]) {
    for id in confirmed {
        let versions: Vec<u64> = diffs
            .iter()
            .filter(|(_, diff)| diff.get("shared").and_then(Value::as_str) == Some(id.as_str()))
            .map(|(seq, _)| *seq)
            .collect();
        assert_eq!(versions.len(), 1, "write {id} in versions {versions:?}");
    }
}

/// Follows the model until version `until`, recording every diff's (seq, content).
async fn follow(
    addr: SocketAddr,
    replica: &mut Replica,
    until: u64,
) -> Vec<(u64, Map<String, Value>)> {
    let mut ws = open(addr, replica).await;
    let mut diffs = Vec::new();
    while replica.version() < Some(until) {
        step(&mut ws, replica, &mut diffs).await;
    }
    diffs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    purly_no_redis,
    ignore = "no redis-server on this machine (apt-get install redis-server)"
)]
async fn three_nodes_one_order_on_one_redis() {
    let Some(redis) = RedisServer::start("everysec") else {
        return;
    };
    three_nodes_one_order(&one_redis(&redis)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    purly_no_redis,
    ignore = "no redis-server on this machine (apt-get install redis-server)"
)]
async fn three_nodes_one_order_on_a_redis_cluster() {
    let Some(cluster) = RedisCluster::start("everysec") else {
        return;
    };
    three_nodes_one_order(&redis_cluster(&cluster)).await;
}

async fn three_nodes_one_order(store: &[String]) {
    let nodes = cluster(store, 3).await;
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    // Every write changes `w<k>`, so the model ends at exactly this version.
    let total = (WRITERS * UPDATES) as u64;
    // Every follower has its snapshot (version 0) before the first write.
    let mut opened = Vec::new();
    for &addr in &addrs {
        let mut replica = Replica::new(Mode::Stream);
        let mut ws = open(addr, &replica).await;
        let mut diffs = Vec::new();
        step(&mut ws, &mut replica, &mut diffs).await;
        assert_eq!(replica.version(), Some(0));
        opened.push((ws, replica));
    }
    let followers: Vec<_> = opened
        .into_iter()
        .map(|(mut ws, mut replica)| {
            tokio::spawn(async move {
                let mut diffs = Vec::new();
                while replica.version() < Some(total) {
                    step(&mut ws, &mut replica, &mut diffs).await;
                }
                (diffs, replica)
            })
        })
        .collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|k| tokio::spawn(writer(addrs[k % addrs.len()], k)))
        .collect();
    let mut all_confirmed = Vec::new();
    for w in writers {
        let confirmed = tokio::time::timeout(TIMEOUT * 3, w)
            .await
            .expect("a writer hung")
            .unwrap();
        assert_eq!(confirmed.len(), UPDATES, "every write is confirmed");
        all_confirmed.extend(confirmed);
    }
    let mut results = Vec::new();
    for f in followers {
        results.push(
            tokio::time::timeout(TIMEOUT, f)
                .await
                .expect("a follower hung")
                .unwrap(),
        );
    }
    let (reference, _) = &results[0];
    let seqs: Vec<u64> = reference.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>(), "no gap, no repeat");
    each_exactly_once(&all_confirmed, reference);
    let mut replayed = Map::new();
    for (_, diff) in reference {
        merge_diff(&mut replayed, diff.clone());
    }
    for (i, (diffs, replica)) in results.iter().enumerate() {
        assert_eq!(diffs, reference, "node {i} saw another sequence");
        assert_eq!(replica.state(), &replayed, "node {i}'s subscriber diverged");
        let (status, body) = get(addrs[i], "/shared/state").await;
        assert_eq!(status, 200);
        let state: Map<String, Value> = purly::serde_json::from_str(&body).unwrap();
        assert_eq!(state, replayed, "node {i}'s state differs");
    }
    for k in 0..WRITERS {
        assert_eq!(replayed[&format!("w{k}")], UPDATES - 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    purly_no_redis,
    ignore = "no redis-server on this machine (apt-get install redis-server)"
)]
async fn a_killed_node_loses_nothing_and_its_client_resumes_elsewhere_on_one_redis() {
    let Some(redis) = RedisServer::start("everysec") else {
        return;
    };
    a_killed_node_loses_nothing_and_its_client_resumes_elsewhere(&one_redis(&redis)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    purly_no_redis,
    ignore = "no redis-server on this machine (apt-get install redis-server)"
)]
async fn a_killed_node_loses_nothing_and_its_client_resumes_elsewhere_on_a_redis_cluster() {
    let Some(cluster) = RedisCluster::start("everysec") else {
        return;
    };
    a_killed_node_loses_nothing_and_its_client_resumes_elsewhere(&redis_cluster(&cluster)).await;
}

async fn a_killed_node_loses_nothing_and_its_client_resumes_elsewhere(store: &[String]) {
    let mut nodes = cluster(store, 2).await;
    let doomed = nodes.pop().unwrap();
    let survivor = nodes.pop().unwrap();
    let (doomed_addr, survivor_addr) = (doomed.addr, survivor.addr);
    // A follower on the doomed node (from version 0, before any write), writers on both.
    let mut replica = Replica::new(Mode::Stream);
    let mut seen = Vec::new();
    let mut follower = open(doomed_addr, &replica).await;
    step(&mut follower, &mut replica, &mut seen).await;
    assert_eq!(replica.version(), Some(0));
    let warmup = 20;
    let writers: Vec<_> = (0..4)
        .map(|k| {
            tokio::spawn(writer(
                if k % 2 == 0 {
                    survivor_addr
                } else {
                    doomed_addr
                },
                k,
            ))
        })
        .collect();
    while replica.version() < Some(warmup) {
        step(&mut follower, &mut replica, &mut seen).await;
    }
    drop(follower);
    doomed.kill().await;
    let mut confirmed = Vec::new();
    for w in writers {
        confirmed.extend(
            tokio::time::timeout(TIMEOUT * 3, w)
                .await
                .expect("a writer hung")
                .unwrap(),
        );
    }
    // The writers on the survivor finished; those on the dead node stopped with it. What was
    // confirmed is in the state, and the follower resumes on the survivor with diffs only.
    let (status, body) = get(survivor_addr, "/shared/state").await;
    assert_eq!(status, 200);
    let state: Map<String, Value> = purly::serde_json::from_str(&body).unwrap();
    let version: u64 = {
        let mut ws = stream_client(survivor_addr, "/shared/stream").await;
        let snapshot = next_frame(&mut ws).await.unwrap();
        snapshot[0]["header"]["seq"].as_u64().unwrap()
    };
    let before = replica.version().unwrap();
    let diffs = follow(survivor_addr, &mut replica, version).await;
    assert_eq!(
        diffs.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        (before + 1..=version).collect::<Vec<_>>(),
        "the resume replays exactly the missed diffs"
    );
    assert_eq!(replica.state(), &state);
    // Every confirmed write, on either node, is in the one history exactly once.
    seen.extend(diffs);
    assert_eq!(
        seen.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        (1..=version).collect::<Vec<_>>()
    );
    each_exactly_once(&confirmed, &seen);
}
