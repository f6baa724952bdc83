//! Presence across two real server processes on one real Redis (PROTOCOL.md section 11): a
//! presence set on one node is in the presence snapshot of a client that joins the other (which
//! loads the model afterwards), changes cross both ways, a close crosses as `null`, and a node
//! killed with SIGKILL (no close, no goodbye) has its presences removed from the other node
//! within the configured time, with no ghost left for later joiners.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "../../stores/redis/tests/common/mod.rs"]
mod redis_server;

use std::time::{Duration, Instant};

use common::{next_frame, send, stream_client, ServerProcess, Ws, TIMEOUT};
use purly::serde_json::{json, Value};
use redis_server::RedisServer;

/// The presence timeout the nodes run with, in seconds.
const PRESENCE_TIMEOUT: u64 = 3;

fn presence(content: Value) -> String {
    json!([{"header": {"type": "presence"}, "content": content}]).to_string()
}

/// Joins `/room` on `node`: the socket, its presence id and its presence snapshot.
async fn join(node: &ServerProcess) -> (Ws, String, Value) {
    let mut ws = stream_client(node.addr, "/room/stream").await;
    let first = next_frame(&mut ws).await.expect("a snapshot");
    let snapshot = first
        .iter()
        .find(|m| m["header"]["type"] == "presence" && m["header"]["snapshot"] == true)
        .expect("a presence snapshot after the model's")
        .clone();
    let id = snapshot["header"]["presence_id"]
        .as_str()
        .unwrap()
        .to_owned();
    (ws, id, snapshot["content"].clone())
}

/// The next presence change `ws` receives.
async fn next_presence(ws: &mut Ws) -> Value {
    loop {
        let frame = next_frame(ws).await.expect("the connection is open");
        if let Some(p) = frame
            .into_iter()
            .find(|m| m["header"]["type"] == "presence")
        {
            return p;
        }
    }
}

/// Two server processes on `redis`, with the presence timeout of these tests.
async fn two_nodes(redis: &RedisServer) -> (ServerProcess, ServerProcess) {
    let url = redis.url();
    let timeout = PRESENCE_TIMEOUT.to_string();
    let args = [
        "--redis",
        url.as_str(),
        "--presence-timeout",
        timeout.as_str(),
    ];
    (
        ServerProcess::start(&args).await,
        ServerProcess::start(&args).await,
    )
}

/// Joins `/room` on `node` until the joiner's presence snapshot holds `presence` for `id`
/// (a presence published on another node may take a moment to reach Redis): the socket and
/// its presence id.
async fn join_seeing(node: &ServerProcess, id: &str, presence: &Value) -> (Ws, String) {
    tokio::time::timeout(TIMEOUT, async {
        loop {
            let (ws, own, here) = join(node).await;
            if here.get(id) == Some(presence) {
                return (ws, own);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the joiner sees the other node's presence")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    purly_no_redis,
    ignore = "no redis-server on this machine (apt-get install redis-server)"
)]
async fn presence_crosses_nodes_and_a_killed_nodes_presences_go() {
    let Some(redis) = RedisServer::start("everysec") else {
        return;
    };
    let (a, b) = two_nodes(&redis).await;
    let (mut on_a, a_id, _) = join(&a).await;
    send(&mut on_a, presence(json!({"who": "a"}))).await;
    // Node b loads the model once its first client joins: the presence node a published (and
    // recorded) is in that client's snapshot.
    let (mut on_b, b_id) = join_seeing(&b, &a_id, &json!({"who": "a"})).await;
    assert_ne!(a_id, b_id, "presence ids are unique across nodes");

    // Changes cross both ways.
    send(&mut on_b, presence(json!({"who": "b"}))).await;
    let seen = tokio::time::timeout(TIMEOUT, next_presence(&mut on_a))
        .await
        .unwrap();
    assert_eq!(
        (&seen["header"]["id"], &seen["content"]),
        (&json!(b_id), &json!({"who": "b"}))
    );
    send(&mut on_a, presence(json!({"who": "a", "at": 2}))).await;
    let seen = tokio::time::timeout(TIMEOUT, next_presence(&mut on_b))
        .await
        .unwrap();
    assert_eq!(
        (&seen["header"]["id"], &seen["content"]["at"]),
        (&json!(a_id), &json!(2))
    );

    // A close crosses as null.
    let (mut second_on_a, second_id, _) = join(&a).await;
    send(&mut second_on_a, presence(json!({"who": "a2"}))).await;
    let seen = tokio::time::timeout(TIMEOUT, next_presence(&mut on_b))
        .await
        .unwrap();
    assert_eq!(seen["header"]["id"], second_id.as_str());
    drop(second_on_a);
    let gone = tokio::time::timeout(TIMEOUT, next_presence(&mut on_b))
        .await
        .unwrap();
    assert_eq!(
        (&gone["header"]["id"], &gone["content"]),
        (&json!(second_id), &Value::Null)
    );

    // Node a dies without closing anything: its presence goes from node b's clients within the
    // presence timeout (a second of slack for a loaded machine).
    let killed = Instant::now();
    a.kill().await;
    let gone = tokio::time::timeout(TIMEOUT, next_presence(&mut on_b))
        .await
        .expect("a dead node's presence is removed");
    let took = killed.elapsed();
    assert_eq!(
        (&gone["header"]["id"], &gone["content"]),
        (&json!(a_id), &Value::Null)
    );
    assert!(
        took < Duration::from_secs(PRESENCE_TIMEOUT + 1),
        "removed after {took:?}, the timeout is {PRESENCE_TIMEOUT} s"
    );
    // No ghost for a later joiner either (its own and b's presence only: b set one).
    let (_late, _, here) = join(&b).await;
    assert_eq!(here, json!({ b_id: {"who": "b"} }));
    drop(on_b);
    b.kill().await;
}

/// Stops (SIGSTOP) or resumes (SIGCONT) a server process.
fn signal(node: &ServerProcess, signal: &str) {
    redis_server::send_signal(node.child.id().expect("the server runs"), signal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    purly_no_redis,
    ignore = "no redis-server on this machine (apt-get install redis-server)"
)]
async fn a_node_taken_for_dead_announces_its_presences_again() {
    let Some(redis) = RedisServer::start("everysec") else {
        return;
    };
    let (a, b) = two_nodes(&redis).await;
    let (mut on_a, a_id, _) = join(&a).await;
    send(&mut on_a, presence(json!({"who": "a"}))).await;
    let (mut on_b, _) = join_seeing(&b, &a_id, &json!({"who": "a"})).await;
    // Stopped for longer than the timeout: taken for dead, its presence removed on node b.
    signal(&a, "-STOP");
    let gone = tokio::time::timeout(TIMEOUT, async {
        loop {
            let p = next_presence(&mut on_b).await;
            if p["header"]["id"] == a_id.as_str() && p["content"].is_null() {
                return p;
            }
        }
    })
    .await;
    signal(&a, "-CONT");
    gone.expect("a stopped node's presence is removed");
    // Back: it finds its heartbeat lapsed and sends its presence again.
    let back = tokio::time::timeout(TIMEOUT, next_presence(&mut on_b))
        .await
        .expect("the node's presence comes back");
    assert_eq!(
        (&back["header"]["id"], &back["content"]),
        (&json!(a_id), &json!({"who": "a"}))
    );
    drop(on_a);
    a.kill().await;
    b.kill().await;
}
