//! Presence over real sockets (PROTOCOL.md section 11), with tokio-tungstenite clients and
//! hyper's HTTP client for the event stream: the presence snapshot and `presence_id` on join,
//! changes to the others only, `null` on clear and on close (within a second), the latest
//! presence only for a slow reader, the size and rate limits with their codes, compat clients
//! untouched, read-only sessions allowed.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::events::{open, post};
use common::{compat_client, next_frame, send, stream_client, within, Raw, Server};
use purly::serde_json::{json, Value};
use purly_hyper::{Decision, Purly};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn presence(content: Value) -> String {
    json!([{"header": {"type": "presence"}, "content": content}]).to_string()
}

/// The connection's first frame: the model's snapshot, then the presence snapshot; both carry
/// the connection's presence id. Returns the id and the presence snapshot's content.
async fn joined(ws: &mut Raw) -> (String, Value) {
    let first = next_frame(ws).await;
    assert_eq!(first.len(), 2, "snapshot and presence snapshot: {first:?}");
    assert_eq!(first[0]["header"]["snapshot"], true);
    assert_eq!(first[1]["header"]["type"], "presence");
    assert_eq!(first[1]["header"]["snapshot"], true);
    let id = first[1]["header"]["presence_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(first[0]["header"]["presence_id"], id.as_str());
    (id, first[1]["content"].clone())
}

/// The next presence message, skipping anything else.
async fn next_presence(ws: &mut Raw) -> Value {
    loop {
        let frame = next_frame(ws).await;
        if let Some(p) = frame
            .into_iter()
            .find(|m| m["header"]["type"] == "presence")
        {
            return p;
        }
    }
}

/// Waits (at most a second) for the `null` of presence `id`: its connection closed.
async fn announced_gone(ws: &mut Raw, id: &str) {
    let gone = tokio::time::timeout(Duration::from_secs(1), next_presence(ws))
        .await
        .expect("a close is announced within 1 s");
    assert_eq!(
        (&gone["header"]["id"], &gone["content"]),
        (&json!(id), &Value::Null)
    );
}

/// The next error message's code, skipping anything else.
async fn next_error(ws: &mut Raw) -> (String, Value) {
    loop {
        for m in next_frame(ws).await {
            if m["header"]["type"] == "error" {
                let code = m["content"]["code"].as_str().unwrap().to_owned();
                return (code, m["content"]["index"].clone());
            }
        }
    }
}

#[tokio::test]
async fn joiners_see_who_is_here_and_every_change_until_they_leave() {
    let server = Server::start(Purly::new(common::engine())).await;
    let mut alice = stream_client(&server, "m").await;
    let (alice_id, nobody) = joined(&mut alice).await;
    assert_eq!(nobody, json!({}));
    send(
        &mut alice,
        &presence(json!({"name": "alice", "cursor": [1, 2]})),
    )
    .await;

    let mut bob = stream_client(&server, "m").await;
    let (bob_id, here) = joined(&mut bob).await;
    assert_ne!(alice_id, bob_id);
    assert_eq!(
        here,
        json!({ alice_id.clone(): {"name": "alice", "cursor": [1, 2]} })
    );
    let engine = server.purly.engine();
    assert_eq!(
        engine.presence("m").unwrap()[&alice_id],
        json!({"name": "alice", "cursor": [1, 2]})
    );

    // A change goes to the others, never back to its sender.
    send(&mut bob, &presence(json!({"name": "bob"}))).await;
    let change = next_presence(&mut alice).await;
    assert_eq!(change["header"]["id"], bob_id.as_str());
    assert_eq!(change["content"], json!({"name": "bob"}));
    send(
        &mut alice,
        &presence(json!({"name": "alice", "cursor": [3, 4]})),
    )
    .await;
    let change = next_presence(&mut bob).await;
    assert_eq!(change["header"]["id"], alice_id.as_str());
    assert_eq!(change["content"]["cursor"], json!([3, 4]));
    // Bob set one presence and got none of his own back: the next thing he gets is alice's.
    send(&mut alice, &presence(Value::Null)).await;
    let cleared = next_presence(&mut bob).await;
    assert_eq!(
        (&cleared["header"]["id"], &cleared["content"]),
        (&json!(alice_id), &Value::Null)
    );
    assert!(engine.presence("m").unwrap().get(&alice_id).is_none());

    // A connection that closes is announced within a second.
    send(&mut alice, &presence(json!({"name": "alice again"}))).await;
    assert_eq!(
        next_presence(&mut bob).await["content"]["name"],
        "alice again"
    );
    let closed = Instant::now();
    drop(alice);
    announced_gone(&mut bob, &alice_id).await;
    assert!(closed.elapsed() < Duration::from_secs(1));
    // Bob's own presence is what is left.
    assert_eq!(
        engine.presence("m").unwrap(),
        *json!({ bob_id: {"name": "bob"} }).as_object().unwrap()
    );
}

#[tokio::test]
async fn limits_compat_clients_and_read_only_sessions() {
    let purly = Purly::builder(common::engine())
        .authorize(|info| match info.headers.get("authorization") {
            Some(v) if v == "reader" => Decision::ReadOnly,
            _ => Decision::ReadWrite,
        })
        .build();
    let server = Server::start(purly).await;
    let mut alice = stream_client(&server, "m").await;
    joined(&mut alice).await;
    let mut compat = compat_client(&server, "m").await;
    next_frame(&mut compat).await;

    // 4 KiB of compact JSON is allowed (spaces do not count); one byte more is refused.
    let fits = json!({"p": "x".repeat(4096 - r#"{"p":""}"#.len())});
    let spaced = format!(
        r#"[{{"header": {{"type": "presence"}}, "content": {{ "p" :  "{}" }}}}]"#,
        "x".repeat(4096 - r#"{"p":""}"#.len())
    );
    let too_large = json!({"p": "x".repeat(4097 - r#"{"p":""}"#.len())});
    send(&mut alice, &presence(fits.clone())).await;
    send(&mut alice, &spaced).await;
    let refused = json!([
        {"header": {"type": "update"}, "content": {"applied": true}},
        {"header": {"type": "presence"}, "content": too_large}
    ]);
    send(&mut alice, &refused.to_string()).await;
    assert_eq!(
        next_error(&mut alice).await,
        ("presence_too_large".to_owned(), json!(1))
    );
    // The compat client is sent no presence; its own is an unknown type.
    send(&mut compat, "[]").await;
    let turn = next_frame(&mut compat).await;
    assert!(
        turn.iter().all(|m| m["header"]["type"] != "presence"),
        "{turn:?}"
    );
    send(&mut compat, &presence(json!({"name": "old client"}))).await;
    let answer = next_frame(&mut compat).await;
    assert_eq!(answer[0]["content"]["code"], "unknown_type");

    // A read-only session publishes its presence; its updates stay forbidden.
    let mut request = server.url("/m/stream").into_client_request().unwrap();
    let headers = request.headers_mut();
    headers.insert("sec-websocket-protocol", "purly.stream".parse().unwrap());
    headers.insert("authorization", "reader".parse().unwrap());
    let (mut reader, _) = within(tokio_tungstenite::connect_async(request))
        .await
        .unwrap();
    let (reader_id, _) = joined(&mut reader).await;
    send(&mut reader, &presence(json!({"name": "reader"}))).await;
    let seen = next_presence(&mut alice).await;
    assert_eq!(seen["header"]["id"], reader_id.as_str());
    send(&mut reader, &common::update(r#"{"by_reader": 1}"#)).await;
    assert_eq!(next_error(&mut reader).await.0, "forbidden");

    // 20 a second with a burst of 20: the frames past it are refused whole.
    let mut refusals = 0;
    for n in 0..25 {
        let frame = json!([
            {"header": {"type": "update"}, "content": {"n": n}},
            {"header": {"type": "presence"}, "content": {"n": n}}
        ]);
        send(&mut alice, &frame.to_string()).await;
    }
    // The echoes of the accepted updates, and an error for each refused frame.
    let mut applied = Vec::new();
    while applied.len() + refusals < 25 {
        for m in next_frame(&mut alice).await {
            match m["header"]["type"].as_str() {
                Some("update") if m["content"].get("n").is_some() => {
                    applied.push(m["content"]["n"].as_u64().unwrap())
                }
                Some("error") => {
                    assert_eq!(m["content"]["code"], "rate_limited");
                    refusals += 1;
                }
                _ => {}
            }
        }
    }
    assert!(
        (1..=5).contains(&refusals),
        "{refusals} refused of 25 sent at once (20 allowed, plus what refilled meanwhile)"
    );
    let state = server.purly.engine().state("m").unwrap();
    assert_eq!(
        state.get("applied"),
        None,
        "a refused frame applies nothing"
    );
    assert_eq!(state["n"], json!(applied.last().unwrap()));
}

#[tokio::test]
async fn a_slow_reader_gets_the_latest_presence_of_each_connection() {
    let mut config = purly::Config::default();
    // Room in the reader's queue for everything below, so that it never lags (a lag would
    // replace the queue with a snapshot): coalescing alone must keep the presences down.
    config.max_queued_bytes = 256 << 20;
    config.max_fanout_backlog_bytes = 256 << 20;
    let server = Server::start(Purly::new(common::engine_with(config))).await;
    // The reader's socket takes little (a small receive buffer, no autotuning): what the
    // server cannot write waits in the reader's queue on the server.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = within(socket.connect(server.addr)).await.unwrap();
    let mut request = server.url("/m/stream").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "purly.stream".parse().unwrap());
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    let (mut reader, _) = within(tokio_tungstenite::client_async(request, stream))
        .await
        .unwrap();
    joined(&mut reader).await;
    let mut writer = stream_client(&server, "m").await;
    let (writer_id, _) = joined(&mut writer).await;
    // 7 MB of diffs the reader does not read: more than its socket and the server's send
    // buffer hold (at most 4 MB here), less than the connection's byte burst (8 MiB).
    let blob = "b".repeat(512 << 10);
    for n in 0..14 {
        send(&mut writer, &json!([{"header": {"type": "update", "id": n}, "content": {"blob": format!("{n}{blob}")}}]).to_string()).await;
        // Each echo means the diff was handed to every queue, the reader's included.
        let echo = next_frame(&mut writer).await;
        assert_eq!(echo[0]["header"]["id"], n);
    }
    for n in 0..15 {
        send(&mut writer, &presence(json!({"n": n}))).await;
    }
    // A marker after them, in the same order: once the reader has it, it has everything.
    send(&mut writer, &common::update(r#"{"done": true}"#)).await;
    let mut presences = Vec::new();
    loop {
        let frame = next_frame(&mut reader).await;
        presences.extend(
            frame
                .iter()
                .filter(|m| m["header"]["type"] == "presence")
                .map(|m| (m["header"]["id"].clone(), m["content"]["n"].clone())),
        );
        if frame.iter().any(|m| m["content"]["done"] == true) {
            break;
        }
    }
    // The latest, and at most one before it: the one the connection's writer had already
    // taken (with the diffs before it) when the socket stopped taking more.
    assert_eq!(presences.last(), Some(&(json!(writer_id), json!(14))));
    assert!(
        presences.len() <= 2,
        "a backlog instead of the latest: {presences:?}"
    );
}

#[tokio::test]
async fn the_event_stream_carries_presence_both_ways() {
    let server = Server::start(Purly::new(common::engine())).await;
    let mut ws = stream_client(&server, "m").await;
    let (ws_id, _) = joined(&mut ws).await;
    send(&mut ws, &presence(json!({"via": "websocket"}))).await;
    // Sent before the event stream opens: in its presence snapshot.
    while server.purly.engine().presence("m").unwrap().is_empty() {
        tokio::task::yield_now().await;
    }
    let mut events = open(server.addr, "/m/events", &[]).await;
    let session = events.session().await;
    let first = events.message().await.json();
    assert_eq!(first[0]["header"]["snapshot"], true);
    assert_eq!(first[1]["header"]["type"], "presence");
    assert_eq!(
        first[1]["content"],
        json!({ ws_id.clone(): {"via": "websocket"} })
    );
    let events_id = first[1]["header"]["presence_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(first[0]["header"]["presence_id"], events_id.as_str());
    let (status, _) = post(
        server.addr,
        &format!("/m/send?session={session}"),
        presence(json!({"via": "events"})),
    )
    .await;
    assert_eq!(status, 202);
    let change = next_presence(&mut ws).await;
    assert_eq!(change["header"]["id"], events_id.as_str());
    assert_eq!(change["content"], json!({"via": "events"}));
    send(&mut ws, &presence(Value::Null)).await;
    loop {
        let frame = events.message().await.json();
        if let Some(p) = frame
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["header"]["type"] == "presence")
        {
            assert_eq!(
                (&p["header"]["id"], &p["content"]),
                (&json!(ws_id), &Value::Null)
            );
            break;
        }
    }
    // The event stream's connection closes: its presence is gone for the others within a
    // second (not at the next ping, 15 s later).
    drop(events);
    announced_gone(&mut ws, &events_id).await;
}
