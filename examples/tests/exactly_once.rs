//! Client keys over real sockets (PROTOCOL.md section 9), against the real server binary with
//! plain tokio-tungstenite clients: the server's echo is lost (a relay the test controls drops
//! it, then cuts the connection) and the update is resent on a new connection, after a SIGKILL
//! and restart on the same data directory, and on another node of a Redis deployment. Each
//! time a separate reader's diffs show the update applied once, and another client's later
//! change stays the last. Malformed keys, and keys in compat mode, are refused with 400.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "../../stores/redis/tests/common/mod.rs"]
mod redis_server;
#[path = "common/relay.rs"]
mod relay;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use common::{next_frame, send, stream_client, ServerProcess, Ws, TIMEOUT};
use purly::serde_json::{json, Value};
use redis_server::RedisServer;
use relay::Relay;

const KEY: &str = "writer-key-0001";

fn update(id: u64, content: Value) -> String {
    json!([{"header": {"type": "update", "id": id}, "content": content}]).to_string()
}

/// A stream client of model `m` with the client key, its snapshot read.
async fn keyed(addr: SocketAddr) -> Ws {
    let mut ws = stream_client(addr, &format!("/m/stream?client={KEY}")).await;
    next_frame(&mut ws).await.expect("a snapshot");
    ws
}

/// A keyless reader of model `m`, its snapshot read: it sees every diff.
async fn open_reader(addr: SocketAddr) -> Ws {
    let mut reader = stream_client(addr, "/m/stream").await;
    next_frame(&mut reader).await.unwrap();
    reader
}

/// Reads until the answer to update `id` arrives (echo, ack, or an error naming it).
async fn answer(ws: &mut Ws, id: u64) -> Value {
    loop {
        let messages = next_frame(ws)
            .await
            .expect("the connection ended unanswered");
        for message in messages {
            let header = &message["header"];
            let ids = header["ids"].as_array().cloned().unwrap_or_default();
            if header["id"] == id || ids.contains(&json!(id)) {
                return message;
            }
        }
    }
}

/// Reads `reader` until it has seen a diff with `seq`; returns the diffs' seqs seen.
async fn diffs_until(reader: &mut Ws, seq: u64) -> Vec<u64> {
    let mut seen = Vec::new();
    while seen.last() < Some(&seq) {
        for message in next_frame(reader).await.expect("the reader's stream ended") {
            if let (Some(s), None) = (
                message["header"]["seq"].as_u64(),
                message["header"]["snapshot"].as_bool(),
            ) {
                if message["header"]["type"] == "update" {
                    seen.push(s);
                }
            }
        }
    }
    seen
}

/// Sends update `id` through `relay` with its reply muted, waits until `reader` saw the diff
/// it made, and cuts the connection: the writer never got its echo.
async fn apply_with_the_echo_lost(relay: &Relay, reader: &mut Ws, id: u64, content: Value) -> u64 {
    let mut writer = keyed(relay.addr).await;
    relay.mute_replies.store(true, Ordering::SeqCst);
    assert!(send(&mut writer, update(id, content)).await);
    let seen = diffs_until_any(reader).await;
    relay.cut_all();
    relay.mute_replies.store(false, Ordering::SeqCst);
    assert!(
        tokio::time::timeout(TIMEOUT, next_frame(&mut writer))
            .await
            .unwrap()
            .is_none(),
        "the writer's connection is cut, its echo never arrived"
    );
    seen
}

/// The seq of the next diff `reader` receives.
async fn diffs_until_any(reader: &mut Ws) -> u64 {
    loop {
        for message in next_frame(reader).await.expect("the reader's stream ended") {
            if message["header"]["type"] == "update" && message["header"]["snapshot"].is_null() {
                return message["header"]["seq"].as_u64().unwrap();
            }
        }
    }
}

/// Another client's change (under its own key), and the version it made.
async fn someone_else_writes(addr: SocketAddr, key: &str, content: Value) -> u64 {
    let mut other = stream_client(addr, &format!("/m/stream?client={key}")).await;
    next_frame(&mut other).await.unwrap();
    assert!(send(&mut other, update(1, content)).await);
    answer(&mut other, 1).await["header"]["seq"]
        .as_u64()
        .unwrap()
}

/// [`someone_else_writes`] `{"x": "theirs"}`: what a resend of `{"x": "mine"}` would undo.
async fn write_theirs(addr: SocketAddr) -> u64 {
    someone_else_writes(addr, "other-key-0001", json!({"x": "theirs"})).await
}

/// Resends update `id` on a new keyed connection to `addr`: it must be answered with a
/// duplicate `ack` carrying `seq`, and the state must keep the other client's change.
async fn resend_is_a_duplicate(
    addr: SocketAddr,
    id: u64,
    content: Value,
    seq: u64,
    reader: &mut Ws,
) {
    let mut again = keyed(addr).await;
    assert!(send(&mut again, update(id, content)).await);
    let ack = answer(&mut again, id).await;
    assert_eq!(ack["header"]["type"], "ack", "{ack}");
    assert_eq!(ack["header"]["duplicate"], true, "{ack}");
    assert_eq!(ack["header"]["seq"], seq, "{ack}");
    // A round trip after it: the reader's next diff is that one, none came from the resend.
    let last = someone_else_writes(addr, "other-key-0002", json!({"y": "after"})).await;
    assert_eq!(
        diffs_until(reader, last).await,
        vec![last],
        "the resend made no version"
    );
}

#[tokio::test]
async fn a_lost_echo_then_a_resend_on_a_new_connection_applies_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let server = ServerProcess::start(&["--data", &data]).await;
    let relay = Relay::start(server.addr).await;
    let mut reader = open_reader(server.addr).await;
    let seq = apply_with_the_echo_lost(&relay, &mut reader, 7, json!({"x": "mine"})).await;
    assert_eq!(seq, 1);
    assert_eq!(
        diffs_until(&mut reader, write_theirs(server.addr).await).await,
        vec![2]
    );
    resend_is_a_duplicate(server.addr, 7, json!({"x": "mine"}), 1, &mut reader).await;
    let (status, body) = common::get(server.addr, "/m/state").await;
    assert_eq!(status, 200);
    assert_eq!(
        purly::serde_json::from_str::<Value>(&body).unwrap()["x"],
        "theirs"
    );
}

#[tokio::test]
async fn a_resend_after_a_kill_and_restart_applies_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let server = ServerProcess::start(&["--data", &data]).await;
    let relay = Relay::start(server.addr).await;
    let mut reader = open_reader(server.addr).await;
    let seq = apply_with_the_echo_lost(&relay, &mut reader, 5, json!({"x": "mine"})).await;
    server.kill().await;
    let server = ServerProcess::start(&["--data", &data]).await;
    let mut reader = open_reader(server.addr).await;
    let theirs = write_theirs(server.addr).await;
    assert_eq!(diffs_until(&mut reader, theirs).await, vec![theirs]);
    resend_is_a_duplicate(server.addr, 5, json!({"x": "mine"}), seq, &mut reader).await;
    // A refused update is refused again, never applied: too deep for the frame limit.
    let mut deep = json!(1);
    for _ in 0..70 {
        deep = json!({ "d": deep });
    }
    let mut writer = keyed(server.addr).await;
    assert!(send(&mut writer, update(9, deep.clone())).await);
    let error = answer(&mut writer, 9).await;
    assert_eq!(error["content"]["code"], "too_deep", "{error}");
    assert!(send(&mut writer, update(9, deep)).await);
    assert_eq!(answer(&mut writer, 9).await["content"]["code"], "too_deep");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_on_another_node_applies_once() {
    let Some(redis) = RedisServer::start("everysec") else {
        return;
    };
    let one = ServerProcess::start(&["--redis", &redis.url()]).await;
    let two = ServerProcess::start(&["--redis", &redis.url()]).await;
    let relay = Relay::start(one.addr).await;
    let mut reader = open_reader(two.addr).await;
    let seq = apply_with_the_echo_lost(&relay, &mut reader, 3, json!({"x": "mine"})).await;
    let theirs = write_theirs(one.addr).await;
    assert_eq!(diffs_until(&mut reader, theirs).await, vec![theirs]);
    resend_is_a_duplicate(two.addr, 3, json!({"x": "mine"}), seq, &mut reader).await;
}

/// The status of a WebSocket upgrade request for `path`, with `protocol` offered if any.
async fn upgrade_status(addr: SocketAddr, path: &str, protocol: Option<&str>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let offer = protocol.map_or(String::new(), |p| {
        format!("Sec-WebSocket-Protocol: {p}\r\n")
    });
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{offer}\r\n"
    );
    tokio::time::timeout(TIMEOUT, async {
        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        socket.write_all(request.as_bytes()).await.unwrap();
        let mut head = [0u8; 12];
        socket.read_exact(&mut head).await.unwrap();
        std::str::from_utf8(&head[9..12]).unwrap().parse().unwrap()
    })
    .await
    .expect("no answer to the upgrade")
}

#[tokio::test]
async fn malformed_keys_and_keys_in_compat_mode_are_refused_with_400() {
    let server = ServerProcess::start(&["--memory"]).await;
    let stream = Some("purly.stream");
    assert_eq!(
        upgrade_status(server.addr, "/m/stream?client=short", stream).await,
        400
    );
    assert_eq!(
        upgrade_status(server.addr, "/m/stream?client=", stream).await,
        400
    );
    assert_eq!(
        upgrade_status(server.addr, "/m/stream?client=has%20space1", stream).await,
        400
    );
    assert_eq!(
        upgrade_status(server.addr, &format!("/m/stream?client={KEY}"), None).await,
        400
    );
    assert_eq!(
        upgrade_status(server.addr, &format!("/m/stream?client={KEY}"), stream).await,
        101
    );
}
