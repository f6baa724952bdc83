//! Messages that never arrive whole: the bytes all connections hold in them are bounded in
//! total (a connection that would take the server past the budget is closed with 1009), and
//! a message not finished in time is closed with 1008. Over real sockets, with frames written
//! by hand so that they can stop half-way.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Server, TIMEOUT};
use purly_hyper::{Purly, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A WebSocket connection to `/m/stream` with the handshake done by hand.
async fn connect(server: &Server) -> TcpStream {
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "GET /m/stream HTTP/1.1\r\nhost: {}\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
         sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        server.addr
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(TIMEOUT, socket.read_exact(&mut byte))
            .await
            .unwrap()
            .unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    socket
}

/// The header of a masked text frame of `len` bytes (FIN set), mask of zeros.
fn text_head(len: usize) -> Vec<u8> {
    let mut head = vec![0x81, 0x80 | 127];
    head.extend_from_slice(&(len as u64).to_be_bytes());
    head.extend_from_slice(&[0, 0, 0, 0]);
    head
}

/// Reads server frames until a close frame: its code, and when it came. Fails if the
/// connection stays open past [`TIMEOUT`].
async fn close_code(socket: &mut TcpStream) -> (u16, Instant) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 64 << 10];
    loop {
        // Server frames are unmasked: 2 bytes, then 2 or 8 of length.
        while buffer.len() >= 2 {
            let (len, at) = match buffer[1] & 0x7F {
                126 if buffer.len() >= 4 => {
                    (u16::from_be_bytes([buffer[2], buffer[3]]) as usize, 4)
                }
                127 if buffer.len() >= 10 => (
                    u64::from_be_bytes(buffer[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                126 | 127 => break,
                short => (short as usize, 2),
            };
            if buffer.len() < at + len {
                break;
            }
            if buffer[0] & 0x0F == 0x8 {
                let code = u16::from_be_bytes([buffer[at], buffer[at + 1]]);
                return (code, Instant::now());
            }
            buffer.drain(..at + len);
        }
        let n = tokio::time::timeout(TIMEOUT, socket.read(&mut chunk))
            .await
            .expect("the server kept the connection open")
            .unwrap_or(0);
        assert!(n > 0, "closed without a close frame");
        buffer.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn unfinished_messages_are_bounded_in_total() {
    let mut config = ServerConfig::default();
    config.max_unfinished_bytes = 1 << 20;
    let server = Server::start(Purly::builder(common::engine()).config(config).build()).await;
    // The first connection holds 600 KB of a 900 KB message: within the budget.
    let mut first = connect(&server).await;
    first.write_all(&text_head(900_000)).await.unwrap();
    first.write_all(&vec![b' '; 600_000]).await.unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while server.purly.unfinished_bytes() < 600_000 {
        assert!(
            Instant::now() < deadline,
            "the server never held the first 600 KB"
        );
        tokio::task::yield_now().await;
    }
    // A second one would take the server past 1 MiB: it is closed with 1009.
    let mut second = connect(&server).await;
    second.write_all(&text_head(900_000)).await.unwrap();
    let _ = second.write_all(&vec![b' '; 600_000]).await;
    let (code, _) = close_code(&mut second).await;
    assert_eq!(code, 1009);
    assert!(
        server.purly.unfinished_bytes() <= 1 << 20,
        "held {} bytes",
        server.purly.unfinished_bytes()
    );
    // The first one finishes its message: the server holds nothing any more, and it is open.
    first.write_all(&vec![b' '; 300_000]).await.unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while server.purly.unfinished_bytes() > 0 {
        assert!(Instant::now() < deadline, "held bytes did not come back");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_message_not_finished_in_time_is_closed_with_1008() {
    let timeout = Duration::from_millis(500);
    let mut config = ServerConfig::default();
    config.message_timeout = timeout;
    let server = Server::start(Purly::builder(common::engine()).config(config).build()).await;
    let mut slow = connect(&server).await;
    // A whole message first: no clock runs for it.
    let whole = br#"[]"#;
    slow.write_all(&text_head(whole.len())).await.unwrap();
    slow.write_all(whole).await.unwrap();
    // Then half of one.
    slow.write_all(&text_head(1000)).await.unwrap();
    let started = Instant::now();
    slow.write_all(&[b' '; 500]).await.unwrap();
    let (code, closed) = close_code(&mut slow).await;
    assert_eq!(code, 1008);
    let took = closed - started;
    assert!(
        took >= timeout && took < timeout + Duration::from_millis(1500),
        "closed after {took:?}, not near its {timeout:?}"
    );
    assert_eq!(server.purly.unfinished_bytes(), 0);
}
