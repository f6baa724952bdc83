//! A real server process on a real redis-server that is stopped (SIGSTOP) while clients join
//! models it must load: the joins wait (and get a clear answer), nothing else does. Signal and
//! ping round trips on a model already in memory and a GET of a static route stay fast; once
//! Redis goes on, every update is echoed and nothing is lost.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "../../stores/redis/tests/common/mod.rs"]
mod redis_server;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{get, next_frame, send, stream_client, ServerProcess, Ws, TIMEOUT};
use futures_util::{SinkExt, StreamExt};
use purly::serde_json::json;
use redis_server::RedisServer;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// What a round trip may take while Redis is stopped (the issue's bound).
const FAST: Duration = Duration::from_millis(200);

/// Joins `/{model}/stream`: the HTTP status of the upgrade (101, or the refusal's) and when
/// it came.
async fn join(addr: SocketAddr, model: String) -> (u16, Duration) {
    let started = Instant::now();
    let mut request = format!("ws://{addr}/{model}/stream")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "purly.stream".parse().unwrap());
    let status = match tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(request))
        .await
        .expect("a join is answered in time, Redis stopped or not")
    {
        Ok((_, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                .into_owned();
            assert!(body.starts_with(r#"{"error":"#), "a JSON error: {body}");
            response.status().as_u16()
        }
        Err(error) => panic!("the join failed without an answer: {error}"),
    };
    (status, started.elapsed())
}

/// A signal from `from` until `to` has it.
async fn signal_round_trip(from: &mut Ws, to: &mut Ws, i: usize) -> Duration {
    let started = Instant::now();
    let frame = json!([{"header": {"type": "signal"}, "content": {"i": i}}]);
    assert!(send(from, frame.to_string()).await);
    let messages = next_frame(to).await.expect("the signal arrives");
    assert_eq!(messages[0]["content"]["i"], i);
    started.elapsed()
}

/// A WebSocket ping until its pong.
async fn ping_round_trip(ws: &mut Ws) -> Duration {
    let started = Instant::now();
    ws.send(Message::Ping(vec![7].into())).await.unwrap();
    loop {
        match tokio::time::timeout(TIMEOUT, ws.next()).await.unwrap() {
            Some(Ok(Message::Pong(payload))) => {
                assert_eq!(&payload[..], [7]);
                return started.elapsed();
            }
            Some(Ok(_)) => continue,
            other => panic!("no pong: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_redis_stalls_only_the_joins_of_models_being_loaded() {
    let Some(redis) = RedisServer::start("everysec") else {
        return;
    };
    let server = ServerProcess::start(&["--redis", &redis.url()]).await;
    let addr = server.addr;
    let mut alice = stream_client(addr, "/warm/stream").await;
    let mut bob = stream_client(addr, "/warm/stream").await;
    next_frame(&mut alice).await.expect("alice's snapshot");
    next_frame(&mut bob).await.expect("bob's snapshot");

    redis.pause();
    let joins: Vec<_> = (0..4)
        .map(|i| tokio::spawn(join(addr, format!("cold-{i}"))))
        .collect();
    let mut measured_while_joins_waited = 0;
    for i in 0..20 {
        let waiting = joins.iter().all(|j| !j.is_finished());
        let signal = signal_round_trip(&mut alice, &mut bob, i).await;
        let ping = ping_round_trip(&mut alice).await;
        let started = Instant::now();
        let (status, _) = get(addr, "/purly-client.js").await;
        let static_get = started.elapsed();
        assert_eq!(status, 200);
        assert!(
            signal < FAST && ping < FAST && static_get < FAST,
            "round {i} with Redis stopped: signal {signal:?}, ping {ping:?}, GET {static_get:?}"
        );
        // Only what ran while every join still waited counts as shown.
        if waiting && joins.iter().all(|j| !j.is_finished()) {
            measured_while_joins_waited += 1;
        }
    }
    assert!(
        measured_while_joins_waited > 0,
        "no round ran while the joins waited for Redis"
    );

    // An update sent while Redis is stopped waits for it (its append is retried), and is
    // echoed once Redis goes on.
    let during =
        json!([{"header": {"type": "update", "id": "u0"}, "content": {"during": "stall"}}]);
    assert!(send(&mut alice, during.to_string()).await);
    // The joins end with a clear answer: the store's failure (503), or the model once Redis
    // answers again.
    redis.resume();
    for joined in joins {
        let (status, took) = joined.await.unwrap();
        assert!(
            status == 503 || status == 101,
            "a join of a model Redis could not load: {status} after {took:?}"
        );
    }

    // Redis is back: an update is echoed to its sender and reaches the other client; new
    // models join.
    let frame = json!([{"header": {"type": "update", "id": "u1"}, "content": {"after": "stall"}}]);
    assert!(send(&mut alice, frame.to_string()).await);
    for ws in [&mut alice, &mut bob] {
        let mut seqs = Vec::new();
        while seqs.len() < 2 {
            let messages = next_frame(ws).await.expect("the updates are shown");
            for diff in messages.iter().filter(|m| m["header"]["type"] == "update") {
                assert!(
                    diff["header"]["id"] == "u0" || diff["header"]["id"] == "u1",
                    "{diff}"
                );
                seqs.push(diff["header"]["seq"].as_u64().unwrap());
            }
        }
        assert_eq!(seqs, vec![1, 2], "both updates, in order, once");
    }
    let (status, _) = join(addr, "cold-after".to_owned()).await;
    assert_eq!(status, 101);
    let (status, body) = get(addr, "/warm/state").await;
    assert_eq!(status, 200);
    let state: purly::serde_json::Value = purly::serde_json::from_str(&body).unwrap();
    assert_eq!(state, json!({"during": "stall", "after": "stall"}));
}

#[tokio::test]
async fn an_unreachable_redis_is_a_clear_error_at_start_not_a_panic() {
    // A port nothing listens on.
    let port = redis_server::free_port();
    let output = tokio::time::timeout(
        TIMEOUT,
        tokio::process::Command::new(common::server_binary())
            .args(["--addr", "127.0.0.1:0", "--redis"])
            .arg(format!("redis://127.0.0.1:{port}"))
            .output(),
    )
    .await
    .expect("the server gives up in time")
    .unwrap();
    let log = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "exit code 1: {log}");
    assert!(log.contains("cannot use Redis"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}
