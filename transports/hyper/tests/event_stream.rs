//! The event-stream transport over real sockets (PROTOCOL.md section 10), with hyper's own
//! HTTP/1.1 client and a tokio-tungstenite WebSocket client of the same model: the session
//! event, snapshot, echo, acks, errors, signals both ways, resume by `Last-Event-ID`, 413,
//! 404 and 400, gzip, ping comments that keep an idle stream open past the keep-alive
//! timeout, the end of a session with its stream, and a graceful shutdown.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::events::{open, post, Event};
use common::{next_frame, send, stream_client, within, Server};
use purly::serde_json::{json, Value};
use purly_hyper::{Purly, ServerConfig};

fn update(id: u64, content: Value) -> String {
    json!([{"header": {"type": "update", "id": id}, "content": content}]).to_string()
}

async fn server_with(config: ServerConfig) -> Server {
    Server::start(Purly::builder(common::engine()).config(config).build()).await
}

/// The messages of the next message event, with its `id:`.
async fn frame(stream: &mut common::events::EventStream) -> (Option<String>, Vec<Value>) {
    match stream.message().await {
        Event::Message { id, data, event } => {
            assert_eq!(event, "", "frames are default events");
            let messages = purly::serde_json::from_str::<Value>(&data).unwrap();
            (id, messages.as_array().unwrap().clone())
        }
        Event::Comment(_) => unreachable!(),
    }
}

#[tokio::test]
async fn a_session_over_the_event_stream_talks_with_a_websocket_client() {
    let server = Server::start(Purly::new(common::engine())).await;
    let addr = server.addr;
    let mut ws = stream_client(&server, "m").await;
    next_frame(&mut ws).await;
    let mut events = open(addr, "/m/events?client=events-key-1", &[]).await;
    assert_eq!(events.status, 200);
    assert_eq!(events.headers["content-type"], "text/event-stream");
    let session = events.session().await;
    let (id, snapshot) = frame(&mut events).await;
    assert_eq!(id.as_deref(), Some("0"));
    assert_eq!(snapshot[0]["header"]["snapshot"], true);
    let to = format!("/m/send?session={session}");

    // An update: 202, its echo on the stream with `id:` its seq, the diff on the WebSocket.
    assert_eq!(post(addr, &to, update(1, json!({"a": 1}))).await.0, 202);
    let (id, echo) = frame(&mut events).await;
    assert_eq!(id.as_deref(), Some("1"));
    assert_eq!(echo[0]["header"]["id"], 1);
    assert_eq!(next_frame(&mut ws).await[0]["content"], json!({"a": 1}));
    // A no-op: an ack, no `id:` line.
    assert_eq!(post(addr, &to, update(2, json!({"a": 1}))).await.0, 202);
    let (id, ack) = frame(&mut events).await;
    assert_eq!((id, ack[0]["header"]["type"].clone()), (None, json!("ack")));
    // A resend under the client key: a duplicate ack.
    assert_eq!(post(addr, &to, update(1, json!({"a": 1}))).await.0, 202);
    let (_, duplicate) = frame(&mut events).await;
    assert_eq!(duplicate[0]["header"]["duplicate"], true);
    // A refused frame: 202 (accepted for judgement), its error on the stream.
    assert_eq!(post(addr, &to, "[1]").await.0, 202);
    let (id, error) = frame(&mut events).await;
    assert_eq!(
        (id, error[0]["header"]["type"].clone()),
        (None, json!("error"))
    );
    // Signals both ways.
    let signal = json!([{"header": {"type": "signal"}, "content": {"from": "events"}}]);
    assert_eq!(post(addr, &to, signal.to_string()).await.0, 202);
    assert_eq!(
        next_frame(&mut ws).await[0]["content"],
        json!({"from": "events"})
    );
    send(
        &mut ws,
        r#"[{"header":{"type":"signal"},"content":{"from":"ws"}}]"#,
    )
    .await;
    let (_, relayed) = frame(&mut events).await;
    assert_eq!(relayed[0]["content"], json!({"from": "ws"}));
}

#[tokio::test]
async fn a_reconnect_with_last_event_id_gets_only_the_missed_diffs() {
    let server = Server::start(Purly::new(common::engine())).await;
    let addr = server.addr;
    let mut events = open(addr, "/m/events", &[]).await;
    let session = events.session().await;
    let (_, snapshot) = frame(&mut events).await;
    let epoch = snapshot[0]["header"]["epoch"].as_str().unwrap().to_owned();
    let to = format!("/m/send?session={session}");
    for n in 1..=3 {
        post(addr, &to, update(n, json!({ "n": n }))).await;
        frame(&mut events).await;
    }
    drop(events);
    let mut ws = stream_client(&server, "m").await;
    next_frame(&mut ws).await;
    send(&mut ws, &update(9, json!({"n": 4}))).await;
    next_frame(&mut ws).await;
    // `Last-Event-ID: 2` with the epoch: diffs 3 and 4, no snapshot.
    let path = format!("/m/events?epoch={epoch}");
    let mut events = open(addr, &path, &[("last-event-id", "2")]).await;
    events.session().await;
    let mut seqs = Vec::new();
    while seqs.last() != Some(&4) {
        let (_, messages) = frame(&mut events).await;
        // Who is here comes first: a presence snapshot, not a model snapshot.
        for m in messages
            .iter()
            .filter(|m| m["header"]["type"] != "presence")
        {
            assert!(m["header"]["snapshot"].is_null(), "no snapshot: {m}");
            seqs.push(m["header"]["seq"].as_u64().unwrap());
        }
    }
    assert_eq!(seqs, vec![3, 4]);
    // Without an epoch, `Last-Event-ID` does not resume: a snapshot.
    let mut bare = open(addr, "/m/events", &[("last-event-id", "2")]).await;
    bare.session().await;
    let (_, first) = frame(&mut bare).await;
    assert_eq!(first[0]["header"]["snapshot"], true);
    assert_eq!(first[0]["header"]["seq"], 4);
}

#[tokio::test]
async fn posts_are_refused_when_too_large_unknown_or_not_utf8() {
    let server = Server::start(Purly::new(common::engine())).await;
    let addr = server.addr;
    let mut events = open(addr, "/m/events", &[]).await;
    let session = events.session().await;
    let to = format!("/m/send?session={session}");
    let big = format!("[{}]", " ".repeat(1 << 20));
    assert_eq!(post(addr, &to, big).await.0, 413);
    let (status, body) = post(addr, "/m/send?session=nothing", "[]").await;
    assert_eq!(status, 404);
    assert!(purly::serde_json::from_str::<Value>(&body).unwrap()["error"].is_string());
    // A session belongs to its model.
    assert_eq!(
        post(addr, &format!("/other/send?session={session}"), "[]")
            .await
            .0,
        404
    );
    assert_eq!(post(addr, &to, vec![b'[', 0xff, b']']).await.0, 400);
    assert_eq!(post(addr, &to, "[]").await.0, 202);
    // A malformed client key on the stream: 400.
    assert_eq!(open(addr, "/m/events?client=bad", &[]).await.status, 400);
}

#[tokio::test]
async fn the_stream_is_gzipped_when_accepted_and_each_event_arrives_at_once() {
    let server = Server::start(Purly::new(common::engine())).await;
    let addr = server.addr;
    let mut events = open(addr, "/m/events", &[("accept-encoding", "gzip, br")]).await;
    assert_eq!(events.headers["content-encoding"], "gzip");
    let session = events.session().await;
    frame(&mut events).await;
    // Each event decodes as soon as it is sent, the stream still open.
    post(
        addr,
        &format!("/m/send?session={session}"),
        update(1, json!({"z": "zip"})),
    )
    .await;
    let (id, echo) = frame(&mut events).await;
    assert_eq!(id.as_deref(), Some("1"));
    assert_eq!(echo[0]["content"], json!({"z": "zip"}));
    let plain = open(addr, "/m/events", &[("accept-encoding", "gzip;q=0")]).await;
    assert!(plain.headers.get("content-encoding").is_none());
}

#[tokio::test]
async fn an_idle_stream_gets_pings_and_outlives_the_keep_alive_timeout() {
    let mut config = ServerConfig::default();
    config.event_ping_interval = Duration::from_millis(100);
    config.keep_alive_timeout = Duration::from_millis(200);
    let server = server_with(config).await;
    let addr = server.addr;
    let mut events = open(addr, "/m/events", &[]).await;
    let session = events.session().await;
    frame(&mut events).await;
    let started = std::time::Instant::now();
    let mut pings = 0;
    while pings < 5 {
        match events.next().await.expect("the stream ended") {
            Event::Comment(text) => {
                assert_eq!(text, "ping");
                pings += 1;
            }
            other => panic!("nothing but pings: {other:?}"),
        }
    }
    // Five pings a ping interval apart: the stream outlived the keep-alive timeout twice over.
    assert!(started.elapsed() >= Duration::from_millis(400));
    // Still open.
    post(
        addr,
        &format!("/m/send?session={session}"),
        update(1, json!({"late": 1})),
    )
    .await;
    assert_eq!(frame(&mut events).await.0.as_deref(), Some("1"));
}

#[tokio::test]
async fn a_closed_stream_ends_its_session_within_a_ping_interval() {
    let mut config = ServerConfig::default();
    config.event_ping_interval = Duration::from_millis(100);
    let server = server_with(config).await;
    let addr = server.addr;
    let mut events = open(addr, "/m/events", &[]).await;
    let session = events.session().await;
    assert_eq!(server.purly.event_streams(), 1);
    drop(events);
    within(async {
        while server.purly.event_streams() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let (status, _) = post(addr, &format!("/m/send?session={session}"), "[]").await;
    assert_eq!(status, 404, "a later POST finds no session");
}

#[tokio::test]
async fn a_graceful_shutdown_ends_the_streams() {
    let server = Server::start(Purly::new(common::engine())).await;
    let mut events = open(server.addr, "/m/events", &[]).await;
    events.session().await;
    frame(&mut events).await;
    assert_eq!(
        server.purly.connections(),
        1,
        "the stream counts as a connection"
    );
    within(server.purly.shutdown()).await;
    assert_eq!(events.next().await, None, "the stream ended");
}

#[tokio::test]
async fn a_shutdown_closes_keep_alive_connections() {
    use http_body_util::{BodyExt, Empty};
    let mut config = ServerConfig::default();
    // Longer than the test's patience: only the shutdown can close the connection in time.
    config.keep_alive_timeout = Duration::from_secs(60);
    config.header_read_timeout = Duration::from_secs(60);
    let server = server_with(config).await;
    let stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let request = hyper::Request::get("/m")
        .header("host", server.addr.to_string())
        .body(Empty::<hyper::body::Bytes>::new())
        .unwrap();
    let response = within(sender.send_request(request)).await.unwrap();
    assert_eq!(response.status(), 200);
    within(response.into_body().collect()).await.unwrap();
    // Idle, kept alive; a shut-down server must not keep answering on it.
    within(server.purly.shutdown()).await;
    within(connection).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_layout_runs_over_the_rust_events_client_and_it_resumes() {
    use purly_hyper::EventsClient;
    let server = Server::start(Purly::new(common::engine())).await;
    let url = format!("http://{}/m/events", server.addr);
    let mut layout = purly::Layout::new(within(EventsClient::connect(&url)).await.unwrap());
    let p = layout.html("p");
    p.set_text("over the event stream");
    layout.root().append(&p);
    within(layout.sync()).await.unwrap();
    let mut ws = stream_client(&server, "m").await;
    let snapshot = next_frame(&mut ws).await;
    assert!(snapshot[0]["content"]
        .to_string()
        .contains("over the event stream"));

    // A client that resumes gets the missed diffs, not a snapshot; its update still pending
    // (sent, its echo unread) is resent under its key and applied once.
    let mut client = within(EventsClient::connect(&url)).await.unwrap();
    within(client.recv()).await.unwrap();
    let at = client.replica().version().unwrap();
    send(
        &mut ws,
        r#"[{"header":{"type":"update"},"content":{"missed":1}}]"#,
    )
    .await;
    within(client.recv()).await.unwrap();
    client.update(json!({"mine": 1})).await.unwrap();
    send(
        &mut ws,
        r#"[{"header":{"type":"update"},"content":{"missed":2}}]"#,
    )
    .await;
    while !next_frame(&mut ws)
        .await
        .iter()
        .any(|m| m["content"] == json!({"missed": 2}))
    {}
    within(client.reconnect()).await.unwrap();
    let batch = within(client.recv()).await.unwrap();
    assert!(batch.iter().all(|m| !m.is_snapshot()), "resumed");
    assert!(
        batch[0].is_presence_snapshot(),
        "who is here, before the missed diffs"
    );
    assert_eq!(batch[1].seq(), Some(at + 2));
    within(client.settle()).await.unwrap();
    while client.replica().version() < Some(at + 3) {
        within(client.recv()).await.unwrap();
    }
    assert_eq!(client.state()["missed"], 2);
    assert_eq!(
        server.purly.engine().durable_version("m"),
        Some(at + 3),
        "mine applied once"
    );
    assert_eq!(
        Value::Object(client.state().clone()),
        Value::Object(server.purly.engine().state("m").unwrap())
    );
}

#[tokio::test]
async fn authorization_rate_limits_and_caps_hold_as_for_websockets() {
    use purly_hyper::{Decision, RateLimit, RouteKind};
    let mut config = ServerConfig::default();
    let mut limit = RateLimit::default();
    limit.frames_per_second = 0.001;
    limit.frame_burst = 1.0;
    limit.max_refused = 2;
    config.rate_limit = Some(limit);
    config.max_connections = 3;
    let purly = Purly::builder(common::engine())
        .config(config)
        .authorize(|request| {
            assert_eq!(
                request.route,
                RouteKind::Events,
                "the hook decides on the GET"
            );
            match request.model.as_str() {
                "secret" => Decision::Deny,
                "shown" => Decision::ReadOnly,
                _ => Decision::ReadWrite,
            }
        })
        .build();
    let server = Server::start(purly).await;
    let addr = server.addr;
    assert_eq!(open(addr, "/secret/events", &[]).await.status, 403);
    // Read-only: a POSTed update is refused with `forbidden`, on the stream.
    let mut shown = open(addr, "/shown/events", &[]).await;
    let token = shown.session().await;
    frame(&mut shown).await;
    assert_eq!(
        post(
            addr,
            &format!("/shown/send?session={token}"),
            update(1, json!({"a": 1}))
        )
        .await
        .0,
        202
    );
    let (_, refused) = frame(&mut shown).await;
    assert_eq!(refused[0]["content"]["code"], "forbidden");
    drop(shown);
    // The rate limit: one frame, then refusals, then the session is ended.
    let mut events = open(addr, "/m/events", &[]).await;
    let token = events.session().await;
    frame(&mut events).await;
    let to = format!("/m/send?session={token}");
    assert_eq!(post(addr, &to, update(1, json!({"a": 1}))).await.0, 202);
    frame(&mut events).await;
    for _ in 0..2 {
        assert_eq!(post(addr, &to, update(2, json!({"a": 2}))).await.0, 202);
        let (_, error) = frame(&mut events).await;
        assert_eq!(error[0]["content"]["code"], "rate_limited");
    }
    assert_eq!(post(addr, &to, update(3, json!({"a": 3}))).await.0, 429);
    assert_eq!(
        events.next().await,
        None,
        "the ended session's stream finishes"
    );
    assert_eq!(post(addr, &to, "[]").await.0, 404);
    // The connection cap counts the streams: three open, the fourth connection is refused.
    let mut open_streams = Vec::new();
    for _ in 0..3 {
        let mut stream = open(addr, "/m/events", &[]).await;
        stream.session().await;
        open_streams.push(stream);
    }
    assert_eq!(open(addr, "/m/events", &[]).await.status, 503);
}
