//! Hostile clients over real sockets: half-sent requests, idle keep-alive connections,
//! connection floods past the caps, and a client that sends faster than its rate limit.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::time::{Duration, Instant};

use common::{close_code, next_frame, send, stream_client, update_with_id, Server, TIMEOUT};
use purly_hyper::{Purly, RateLimit, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn server_with(config: ServerConfig) -> Purly {
    Purly::builder(common::engine()).config(config).build()
}

/// Reads until the server closes the socket (EOF or reset); returns what it sent and when
/// it closed. Fails if it is still open after [`TIMEOUT`].
async fn read_until_closed(socket: &mut TcpStream) -> (String, Instant) {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout(TIMEOUT, socket.read(&mut buffer))
            .await
            .expect("the server never closed the connection")
        {
            Ok(0) | Err(_) => return (String::from_utf8_lossy(&received).into(), Instant::now()),
            Ok(n) => received.extend_from_slice(&buffer[..n]),
        }
    }
}

/// Distinct timeouts, so that each test can tell which one closed its connection.
const HEADER_TIMEOUT: Duration = Duration::from_millis(800);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_millis(200);
/// How late a timer may fire on a busy machine.
const LATE: Duration = Duration::from_millis(500);

fn timeouts() -> ServerConfig {
    let mut config = ServerConfig::default();
    config.header_read_timeout = HEADER_TIMEOUT;
    config.keep_alive_timeout = KEEP_ALIVE_TIMEOUT;
    config
}

#[tokio::test]
async fn a_half_sent_request_is_closed_within_the_header_timeout() {
    let server = Server::start(server_with(timeouts())).await;
    let mut slow = Vec::new();
    for _ in 0..5 {
        let mut socket = TcpStream::connect(server.addr).await.unwrap();
        socket
            .write_all(b"GET /m/state HTTP/1.1\r\nhost: x\r\nx-slow: ")
            .await
            .unwrap();
        slow.push(socket);
    }
    let started = Instant::now();
    for socket in &mut slow {
        let (_, closed) = read_until_closed(socket).await;
        let after = closed - started;
        // Near its own timeout: not the keep-alive one, not much later.
        assert!(
            after >= HEADER_TIMEOUT - Duration::from_millis(100) && after < HEADER_TIMEOUT + LATE,
            "closed after {after:?}, not near the header timeout ({HEADER_TIMEOUT:?})"
        );
    }
    // The server serves complete requests meanwhile and after.
    let (status, _) = common::get(&server, "/m/state", &[]).await;
    assert!(status == 200 || status == 404, "{status}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_and_a_busy_one_is_not() {
    let server = Server::start(server_with(timeouts())).await;
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    let request = b"GET /m HTTP/1.1\r\nhost: x\r\n\r\n";
    // Three requests 100 ms apart: each within the keep-alive timeout of the last response.
    for _ in 0..3 {
        socket.write_all(request).await.unwrap();
        let mut head = [0u8; 12];
        tokio::time::timeout(TIMEOUT, socket.read_exact(&mut head))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        // Read the rest of this response (the page) before the next request.
        let mut rest = vec![0u8; 64 << 10];
        let _ = tokio::time::timeout(Duration::from_millis(100), socket.read(&mut rest)).await;
    }
    let idle_from = Instant::now();
    let (_, closed) = read_until_closed(&mut socket).await;
    let after = closed - idle_from;
    // By the keep-alive timeout, well before the header timeout would have closed it (the
    // 100 ms already spent reading the last response count toward it).
    assert!(
        after >= Duration::from_millis(50)
            && after < KEEP_ALIVE_TIMEOUT + Duration::from_millis(300) && after < HEADER_TIMEOUT - Duration::from_millis(100),
        "closed after {after:?} of idleness, not near the keep-alive timeout ({KEEP_ALIVE_TIMEOUT:?})"
    );
}

#[tokio::test]
async fn a_flood_past_the_cap_gets_503_while_the_connected_client_keeps_working() {
    let mut config = ServerConfig::default();
    config.max_connections = 20;
    // The admitted connections keep their places for the whole test, however slow it runs.
    config.keep_alive_timeout = Duration::from_secs(120);
    config.header_read_timeout = Duration::from_secs(120);
    let server = Server::start(server_with(config)).await;
    let mut client = stream_client(&server, "m").await;
    next_frame(&mut client).await;

    // 200 connections, each holding its place with a keep-alive request.
    let flood = async {
        let mut sockets = Vec::new();
        let (mut ok, mut refused) = (0, 0);
        for _ in 0..200 {
            let mut socket = TcpStream::connect(server.addr).await.unwrap();
            socket
                .write_all(b"GET /m HTTP/1.1\r\nhost: x\r\n\r\n")
                .await
                .unwrap();
            let mut head = [0u8; 12];
            tokio::time::timeout(TIMEOUT, socket.read_exact(&mut head))
                .await
                .unwrap()
                .unwrap();
            match &head {
                b"HTTP/1.1 200" => ok += 1,
                b"HTTP/1.1 503" => refused += 1,
                other => panic!("{}", String::from_utf8_lossy(other)),
            }
            sockets.push(socket);
        }
        (ok, refused, sockets)
    };
    // Meanwhile the connected client's updates are echoed as usual.
    let echoes = async {
        let mut slowest = Duration::ZERO;
        for i in 0..50 {
            let sent = Instant::now();
            send(
                &mut client,
                &update_with_id(&i.to_string(), &format!("{{\"n\":{i}}}")),
            )
            .await;
            let echo = next_frame(&mut client).await;
            assert_eq!(echo[0]["header"]["id"], i.to_string());
            slowest = slowest.max(sent.elapsed());
        }
        slowest
    };
    let ((ok, refused, _sockets), slowest) = tokio::join!(flood, echoes);
    // The client holds one place of 20: 19 were admitted, every other got 503.
    assert_eq!((ok, refused), (19, 181));
    assert_eq!(
        server.purly.connections(),
        1,
        "the client is still connected"
    );
    println!("slowest echo during the flood: {slowest:?}");
    assert!(slowest < Duration::from_secs(2), "{slowest:?}");
}

#[tokio::test]
async fn connections_past_the_per_peer_cap_get_503() {
    let mut config = ServerConfig::default();
    config.max_connections_per_peer = Some(3);
    let server = Server::start(server_with(config)).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(stream_client(&server, "m").await);
    }
    let (status, body) = common::get(&server, "/m/state", &[]).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("this address"), "{body}");
    // A place is freed when a connection ends.
    let mut first = held.remove(0);
    first.close(None).await.unwrap();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (status, _) = common::get(&server, "/m", &[]).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the place was never freed");
        tokio::task::yield_now().await;
    }
}

/// A server whose connections may send a burst of 10 frames, then one every 10 s (nothing
/// refills during a test), closed after 20 refusals in a row; and two stream clients of one
/// model, their snapshots read: one to flood, one to show the others are unaffected.
async fn rate_limited_pair() -> (Server, common::Raw, common::Raw) {
    let mut config = ServerConfig::default();
    let mut limit = RateLimit::default();
    limit.frames_per_second = 0.1;
    limit.frame_burst = 10.0;
    limit.max_refused = 20;
    config.rate_limit = Some(limit);
    let server = Server::start(server_with(config)).await;
    let mut flooder = stream_client(&server, "m").await;
    let mut other = stream_client(&server, "m").await;
    next_frame(&mut flooder).await;
    next_frame(&mut other).await;
    (server, flooder, other)
}

#[tokio::test]
async fn a_client_over_the_rate_limit_is_refused_then_closed_and_others_are_unaffected() {
    let (_server, mut flooder, mut other) = rate_limited_pair().await;

    // 40 frames at once: 10 fit the burst, the next 20 are refused, and the 21st refusal in
    // a row closes the connection with 1008.
    for i in 0..40 {
        send(
            &mut flooder,
            &update_with_id(&format!("f{i}"), &format!("{{\"f\":{i}}}")),
        )
        .await;
    }
    let mut applied = 0;
    let mut refused_ids = Vec::new();
    let code = loop {
        match tokio::time::timeout(TIMEOUT, futures_util::StreamExt::next(&mut flooder))
            .await
            .expect("the flooder was never closed")
        {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) => {
                let frame: Vec<purly::serde_json::Value> =
                    purly::serde_json::from_str(&text).unwrap();
                for message in frame {
                    match message["header"]["type"].as_str() {
                        Some("update") => applied += 1,
                        Some("error") => {
                            assert_eq!(message["content"]["code"], "rate_limited", "{message}");
                            refused_ids.push(message["header"]["ids"][0].clone());
                        }
                        other => panic!("{other:?}"),
                    }
                }
            }
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => {
                break frame.map(|f| u16::from(f.code));
            }
            Some(Ok(_)) => continue,
            Some(Err(error)) => panic!("{error}"),
            None => break None,
        }
    };
    assert_eq!(code, Some(1008));
    // What was queued for the flooder when it was closed reached it first: its echoes and
    // errors in order (echoes wait for the store, so some may have been cut off).
    assert!(applied <= 10, "{applied} applied");
    assert!(refused_ids.len() <= 20, "{refused_ids:?}");
    let expected: Vec<_> = (10..10 + refused_ids.len())
        .map(|i| format!("f{i}"))
        .collect();
    assert_eq!(
        refused_ids, expected,
        "refusals start after the burst, in order"
    );

    // The other client sees exactly the burst's 10 updates, and its own go through.
    let mut seen = Vec::new();
    while seen.len() < 10 {
        for message in next_frame(&mut other).await {
            seen.push(message["content"]["f"].as_u64().unwrap());
        }
    }
    assert_eq!(seen, (0..10).collect::<Vec<_>>());
    for i in 0..5 {
        send(&mut other, &update_with_id(&format!("o{i}"), "{\"o\":1}")).await;
        let echo = next_frame(&mut other).await;
        assert_eq!(echo[0]["header"]["id"], format!("o{i}"), "{echo:?}");
    }
}

#[tokio::test]
async fn a_ping_flood_counts_against_the_rate_limit_and_is_closed() {
    let (_server, mut flooder, mut other) = rate_limited_pair().await;
    for _ in 0..40 {
        futures_util::SinkExt::send(
            &mut flooder,
            tokio_tungstenite::tungstenite::Message::Ping(vec![1].into()),
        )
        .await
        .unwrap();
    }
    assert_eq!(close_code(&mut flooder).await, Some(1008));
    // The other client is unaffected.
    send(&mut other, &update_with_id("o1", "{\"o\":1}")).await;
    assert_eq!(next_frame(&mut other).await[0]["header"]["id"], "o1");
}

#[tokio::test]
async fn a_compat_client_that_never_sends_is_closed_with_1008() {
    let mut config = ServerConfig::default();
    config.compat_idle_timeout = Duration::from_millis(300);
    let server = Server::start(server_with(config)).await;
    let mut silent = common::compat_client(&server, "m").await;
    next_frame(&mut silent).await;
    let started = Instant::now();
    assert_eq!(close_code(&mut silent).await, Some(1008));
    assert!(started.elapsed() >= Duration::from_millis(250));
}
