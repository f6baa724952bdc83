//! Graceful shutdown and liveness: clients get 1001 on shutdown, dead peers are dropped.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{close_code, compat_client, get, next_frame, stream_client, Server, TIMEOUT};
use purly_hyper::{Purly, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn shutdown_closes_every_connection_with_1001() {
    let server = Server::start(Purly::new(common::engine())).await;
    let mut stream = stream_client(&server, "a").await;
    let mut compat = compat_client(&server, "b").await;
    next_frame(&mut stream).await;
    next_frame(&mut compat).await;
    assert_eq!(server.purly.connections(), 2);

    tokio::time::timeout(TIMEOUT, server.purly.shutdown())
        .await
        .expect("shutdown hung");
    assert_eq!(close_code(&mut stream).await, Some(1001));
    assert_eq!(close_code(&mut compat).await, Some(1001));
    assert_eq!(server.purly.connections(), 0);
    let (status, _) = get(
        &server,
        "/a/stream",
        &[
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
        ],
    )
    .await;
    assert_eq!(status, 503);
}

#[tokio::test]
async fn a_peer_that_never_answers_pings_is_dropped() {
    let mut config = ServerConfig::default();
    config.ping_interval = Duration::from_millis(100);
    let server = Server::start(Purly::builder(common::engine()).config(config).build()).await;
    // A hand-made handshake, then silence: nothing on this socket ever answers a ping.
    let mut socket = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let handshake = format!(
        "GET /m/stream HTTP/1.1\r\nhost: {}\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
         sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n",
        server.addr
    );
    socket.write_all(handshake.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout(TIMEOUT, socket.read(&mut buffer))
            .await
            .expect("never dropped")
        {
            Ok(0) | Err(_) => break,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
        }
    }
    let elapsed = started.elapsed();
    assert!(String::from_utf8_lossy(&received).starts_with("HTTP/1.1 101"));
    // Two pings go unanswered (the first within 100 ms: the server's ping clock has its own
    // phase); the third tick, 200 ms after the first ping, drops the peer.
    assert!(
        elapsed >= Duration::from_millis(190),
        "dropped too early: {elapsed:?}"
    );
    let pings = received.windows(2).filter(|w| w == &[0x89, 0x00]).count();
    assert_eq!(pings, 2, "two pings before giving up");
    // The task ends just after the socket drops.
    let ended = async {
        while server.purly.connections() > 0 {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(TIMEOUT, ended)
        .await
        .expect("the connection task lingers");
}

#[tokio::test]
async fn a_peer_that_answers_pings_stays() {
    let mut config = ServerConfig::default();
    config.ping_interval = Duration::from_millis(50);
    let server = Server::start(Purly::builder(common::engine()).config(config).build()).await;
    let mut client = stream_client(&server, "m").await;
    next_frame(&mut client).await;
    // Reading lets tungstenite answer each ping; ten intervals later the connection is alive.
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        let _ = tokio::time::timeout(
            Duration::from_millis(50),
            futures_util::StreamExt::next(&mut client),
        )
        .await;
    }
    common::send(&mut client, &common::update(r#"{"alive":true}"#)).await;
    assert_eq!(next_frame(&mut client).await[0]["content"]["alive"], true);
}

#[tokio::test]
#[allow(clippy::result_large_err)] // the shape tungstenite's accept callback requires
async fn a_client_disconnect_does_not_wait_forever_for_a_silent_server() {
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    use tokio_tungstenite::tungstenite::http::HeaderValue;

    // A server that accepts the stream subprotocol, then never reads or answers anything.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let accept = |_: &Request, mut response: Response| {
            response.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_static("purly.stream"),
            );
            Ok(response)
        };
        let ws = tokio_tungstenite::accept_hdr_async(socket, accept)
            .await
            .unwrap();
        // Hold the socket open without reading from it.
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(ws);
    });
    let mut client = purly_hyper::WsClient::connect(&format!("ws://{addr}/m/stream"))
        .await
        .unwrap();
    tokio::time::timeout(
        purly_hyper::CLOSE_TIMEOUT + Duration::from_secs(10),
        client.disconnect(),
    )
    .await
    .expect("disconnect gave up on the silent server");
    silent.abort();
}
