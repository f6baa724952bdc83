//! The WebSocket opening handshake is checked whole (RFC 6455 section 4.2.1) before anything
//! touches the engine: a refused upgrade is answered with its status and creates no model, not
//! even in the store.
#![allow(clippy::unwrap_used)]

mod common;

use common::{get, Server, TIMEOUT};
use purly_hyper::Purly;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Sends a handshake for `/fresh/stream` over a fresh connection, with `version` as the HTTP
/// version and the given key and WebSocket version: the response's head and body.
async fn handshake(server: &Server, http: &str, key: Option<&str>, version: &str) -> String {
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    let mut request = format!(
        "GET /fresh/stream {http}\r\nhost: {}\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: {version}\r\n",
        server.addr
    );
    if let Some(key) = key {
        request.push_str(&format!("sec-websocket-key: {key}\r\n"));
    }
    request.push_str("\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut response = vec![0u8; 4096];
    let mut read = 0;
    // A 101 ends with its head; a refusal with its JSON body.
    let complete =
        |text: &str| text.contains("\r\n\r\n") && (text.contains(" 101 ") || text.ends_with('}'));
    while !complete(&String::from_utf8_lossy(&response[..read])) {
        let n = tokio::time::timeout(TIMEOUT, socket.read(&mut response[read..]))
            .await
            .unwrap()
            .unwrap();
        if n == 0 {
            break;
        }
        read += n;
    }
    String::from_utf8_lossy(&response[..read]).into_owned()
}

#[tokio::test]
async fn a_refused_handshake_is_answered_and_creates_no_model() {
    let engine = common::engine();
    let server = Server::start(Purly::new(engine.clone())).await;
    let cases: &[(&str, Option<&str>, &str, &str)] = &[
        // Another WebSocket version: 426 naming the one the server speaks (section 4.4).
        ("HTTP/1.1", Some(KEY), "12", "426"),
        ("HTTP/1.1", Some(KEY), "8", "426"),
        // Keys that are not the base64 of 16 bytes, or none.
        ("HTTP/1.1", Some("AAAAAAAAAAA="), "13", "400"),
        (
            "HTTP/1.1",
            Some("not a key at all, not base64"),
            "13",
            "400",
        ),
        ("HTTP/1.1", Some("dGhlIHNhbXBsZSBub25jZR=="), "13", "400"),
        ("HTTP/1.1", None, "13", "400"),
        // HTTP/1.0 cannot upgrade.
        ("HTTP/1.0", Some(KEY), "13", "400"),
    ];
    for (http, key, version, status) in cases {
        let response = handshake(&server, http, *key, version).await;
        let status_line = response.lines().next().unwrap_or_default();
        assert!(
            status_line.contains(status),
            "{http} key {key:?} version {version}: {status_line}"
        );
        assert!(response.contains(r#"{"error":"#), "{response}");
        if *status == "426" {
            assert!(
                response
                    .to_ascii_lowercase()
                    .contains("sec-websocket-version: 13"),
                "{response}"
            );
        }
    }
    assert_eq!(
        engine.model_count(),
        0,
        "no refused handshake touched the engine"
    );
    let (status, _) = get(&server, "/fresh/state", &[]).await;
    assert_eq!(status, 404, "nor the store");
    // A good handshake still works.
    let response = handshake(&server, "HTTP/1.1", Some(KEY), "13").await;
    assert!(response.starts_with("HTTP/1.1 101"), "{response}");
    assert!(
        response.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{response}"
    );
    assert_eq!(engine.model_count(), 1);
}

#[tokio::test]
async fn frames_sent_with_the_upgrade_request_are_read() {
    // A client may send its first frames without waiting for the 101 (they arrive with the
    // request, and the server's HTTP layer reads them with it): they are the WebSocket's first
    // input, not lost.
    let engine = common::engine();
    let server = Server::start(Purly::new(engine.clone())).await;
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    let mut bytes = format!(
        "GET /early/stream HTTP/1.1\r\nhost: {}\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
         sec-websocket-version: 13\r\nsec-websocket-key: {KEY}\r\n\
         sec-websocket-protocol: purly.stream\r\n\r\n",
        server.addr
    )
    .into_bytes();
    let frame = r#"[{"header":{"type":"update"},"content":{"early":1}}]"#;
    // A masked text frame (a mask of zeros leaves the payload as it is).
    bytes.extend_from_slice(&[0x81, 0x80 | frame.len() as u8, 0, 0, 0, 0]);
    bytes.extend_from_slice(frame.as_bytes());
    socket.write_all(&bytes).await.unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(TIMEOUT, socket.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    let applied = async {
        while engine
            .state("early")
            .is_none_or(|state| state.get("early").is_none())
        {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(TIMEOUT, applied)
        .await
        .expect("the frame sent with the request is applied");
    assert_eq!(engine.state("early").unwrap()["early"], 1);
}
