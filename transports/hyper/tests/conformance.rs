//! RFC 6455 conformance of purly's WebSocket server over real sockets, in the categories of the
//! Autobahn test suite (whose runner does not run on this machine's Python): framing, pings and
//! pongs, reserved bits, opcodes, fragmentation, UTF-8 (also across fragments), close codes and
//! size limits. Frames are written by hand, masked as a client's must be.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Server, TIMEOUT};
use purly::serde_json::Value;
use purly_hyper::Purly;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TEXT: u8 = 0x1;
const CONTINUATION: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const FIN: u8 = 0x80;

/// What the server sent.
#[derive(Debug, PartialEq)]
enum Got {
    Frame(Vec<Value>),
    Pong(Vec<u8>),
    Close(u16),
}

struct Client {
    socket: TcpStream,
    input: Vec<u8>,
}

impl Client {
    /// A stream-mode connection to `/m/stream`, its snapshot read.
    async fn connect(server: &Server) -> Client {
        let mut socket = TcpStream::connect(server.addr).await.unwrap();
        let request = format!(
            "GET /m/stream HTTP/1.1\r\nhost: {}\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
             sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             sec-websocket-protocol: purly.stream\r\n\r\n",
            server.addr
        );
        socket.write_all(request.as_bytes()).await.unwrap();
        let mut client = Client {
            socket,
            input: Vec::new(),
        };
        while !client.input.windows(4).any(|w| w == b"\r\n\r\n") {
            client.read_more().await;
        }
        let end = client
            .input
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap()
            + 4;
        assert!(client.input.starts_with(b"HTTP/1.1 101"));
        client.input.drain(..end);
        match client.next().await {
            Got::Frame(snapshot) => assert_eq!(snapshot[0]["header"]["snapshot"], true),
            other => panic!("{other:?}"),
        }
        client
    }

    async fn read_more(&mut self) {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(TIMEOUT, self.socket.read(&mut chunk))
            .await
            .expect("the server said nothing")
            .unwrap_or(0);
        assert!(n > 0, "the connection ended without a close frame");
        self.input.extend_from_slice(&chunk[..n]);
    }

    /// Writes one frame: FIN or not, `opcode`, `payload` (masked unless `unmasked`), and extra
    /// header bits (`rsv`).
    async fn frame(&mut self, fin: bool, opcode: u8, payload: &[u8], rsv: u8, unmasked: bool) {
        let mut out = vec![(if fin { FIN } else { 0 }) | rsv | opcode];
        let mask_bit = if unmasked { 0 } else { 0x80 };
        match payload.len() {
            n if n < 126 => out.push(mask_bit | n as u8),
            n if n <= 0xFFFF => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [0x12, 0x34, 0x56, 0x78];
        if unmasked {
            out.extend_from_slice(payload);
        } else {
            out.extend_from_slice(&mask);
            out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        }
        // The server may close before reading it all; that is an answer too.
        let _ = self.socket.write_all(&out).await;
    }

    async fn send(&mut self, opcode: u8, payload: &[u8]) {
        self.frame(true, opcode, payload, 0, false).await;
    }

    /// The next thing the server sent (server frames are unmasked and whole).
    async fn next(&mut self) -> Got {
        loop {
            if self.input.len() >= 2 {
                let (len, at) = match self.input[1] & 0x7F {
                    126 if self.input.len() >= 4 => (
                        u16::from_be_bytes([self.input[2], self.input[3]]) as usize,
                        4,
                    ),
                    127 if self.input.len() >= 10 => (
                        u64::from_be_bytes(self.input[2..10].try_into().unwrap()) as usize,
                        10,
                    ),
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if len != usize::MAX && self.input.len() >= at + len {
                    let opcode = self.input[0] & 0x0F;
                    let payload: Vec<u8> = self.input[at..at + len].to_vec();
                    self.input.drain(..at + len);
                    return match opcode {
                        TEXT => Got::Frame(purly::serde_json::from_slice(&payload).unwrap()),
                        0xA => Got::Pong(payload),
                        CLOSE => Got::Close(u16::from_be_bytes([payload[0], payload[1]])),
                        other => panic!("opcode {other}"),
                    };
                }
            }
            self.read_more().await;
        }
    }

    /// Reads until the echo of update `id` (skipping pongs, failing on a close).
    async fn echo(&mut self, id: &str) {
        loop {
            match self.next().await {
                Got::Frame(messages) if messages.iter().any(|m| m["header"]["id"] == id) => return,
                Got::Frame(_) | Got::Pong(_) => continue,
                Got::Close(code) => panic!("closed with {code} instead of echoing {id}"),
            }
        }
    }

    /// Reads until a close frame, and returns its code.
    async fn closed(&mut self) -> u16 {
        loop {
            if let Got::Close(code) = self.next().await {
                return code;
            }
        }
    }
}

fn update(id: &str) -> Vec<u8> {
    format!(r#"[{{"header":{{"type":"update","id":"{id}"}},"content":{{"{id}":"é"}}}}]"#)
        .into_bytes()
}

async fn server() -> Server {
    Server::start(Purly::new(common::engine())).await
}

#[tokio::test]
async fn framing_and_fragmentation() {
    let server = server().await;
    let mut client = Client::connect(&server).await;
    // One frame; then the same message in three frames; then with a ping in between.
    client.send(TEXT, &update("one")).await;
    client.echo("one").await;
    let message = update("three");
    let (a, rest) = message.split_at(5);
    let (b, c) = rest.split_at(rest.len() / 2);
    client.frame(false, TEXT, a, 0, false).await;
    client.frame(false, CONTINUATION, b, 0, false).await;
    client.frame(true, CONTINUATION, c, 0, false).await;
    client.echo("three").await;
    let message = update("pinged");
    let (a, b) = message.split_at(7);
    client.frame(false, TEXT, a, 0, false).await;
    client.send(PING, b"between").await;
    client.frame(true, CONTINUATION, b, 0, false).await;
    assert_eq!(client.next().await, Got::Pong(b"between".to_vec()));
    client.echo("pinged").await;
    // UTF-8 split inside a character across fragments is whole once joined.
    let message = update("split");
    let at = message.iter().position(|&b| b == 0xC3).unwrap() + 1;
    client.frame(false, TEXT, &message[..at], 0, false).await;
    client
        .frame(true, CONTINUATION, &message[at..], 0, false)
        .await;
    client.echo("split").await;
    // The largest ping payload (125 bytes) comes back whole; empty frames are fine.
    client.send(PING, &[7; 125]).await;
    assert_eq!(client.next().await, Got::Pong(vec![7; 125]));
    client.send(TEXT, b"[]").await;
    client.send(PING, b"").await;
    assert_eq!(client.next().await, Got::Pong(Vec::new()));
    // A clean close is answered with the same code.
    client.send(CLOSE, &1000u16.to_be_bytes()).await;
    assert_eq!(client.closed().await, 1000);
}

#[tokio::test]
async fn protocol_violations_are_closed_with_1002() {
    let server = server().await;
    // Each frame: FIN, opcode, payload, reserved bits, unmasked.
    type RawFrame = (bool, u8, Vec<u8>, u8, bool);
    let cases: Vec<(&str, Vec<RawFrame>)> = vec![
        (
            "a ping of 126 bytes",
            vec![(true, PING, vec![0; 126], 0, false)],
        ),
        (
            "a fragmented ping",
            vec![(false, PING, b"p".to_vec(), 0, false)],
        ),
        (
            "RSV1 without an extension",
            vec![(true, TEXT, b"[]".to_vec(), 0x40, false)],
        ),
        ("RSV3", vec![(true, TEXT, b"[]".to_vec(), 0x10, false)]),
        (
            "opcode 3 (reserved)",
            vec![(true, 0x3, b"[]".to_vec(), 0, false)],
        ),
        (
            "opcode 0xB (reserved control)",
            vec![(true, 0xB, Vec::new(), 0, false)],
        ),
        (
            "a continuation with nothing to continue",
            vec![(true, CONTINUATION, b"[]".to_vec(), 0, false)],
        ),
        (
            "a new message inside a fragmented one",
            vec![
                (false, TEXT, b"[".to_vec(), 0, false),
                (true, TEXT, b"[]".to_vec(), 0, false),
            ],
        ),
        (
            "an unmasked frame",
            vec![(true, TEXT, b"[]".to_vec(), 0, true)],
        ),
        (
            "a close code that may not be sent (1005)",
            vec![(true, CLOSE, 1005u16.to_be_bytes().to_vec(), 0, false)],
        ),
        (
            "a close code out of range (999)",
            vec![(true, CLOSE, 999u16.to_be_bytes().to_vec(), 0, false)],
        ),
        (
            "a close with a 1-byte payload",
            vec![(true, CLOSE, vec![3], 0, false)],
        ),
    ];
    for (what, frames) in cases {
        let mut client = Client::connect(&server).await;
        for (fin, opcode, payload, rsv, unmasked) in frames {
            client.frame(fin, opcode, &payload, rsv, unmasked).await;
        }
        assert_eq!(client.closed().await, 1002, "{what}");
    }
}

#[tokio::test]
async fn text_that_is_not_utf8_is_closed_with_1007_and_sizes_with_1009() {
    let server = server().await;
    let mut client = Client::connect(&server).await;
    client.send(TEXT, &[b'[', 0xFF, b']']).await;
    assert_eq!(client.closed().await, 1007, "invalid UTF-8");
    let mut client = Client::connect(&server).await;
    client.frame(false, TEXT, &[b'[', 0xC3], 0, false).await;
    client.frame(true, CONTINUATION, b"]", 0, false).await;
    assert_eq!(
        client.closed().await,
        1007,
        "a character cut and never finished"
    );
    // Failing fast: a first fragment that no continuation can make UTF-8 is closed at once,
    // before the message ends (its continuation never comes).
    let mut client = Client::connect(&server).await;
    client.frame(false, TEXT, &[b'[', 0xFF], 0, false).await;
    assert_eq!(
        client.closed().await,
        1007,
        "invalid UTF-8 in a first fragment"
    );
    let mut client = Client::connect(&server).await;
    // Only the header of a 2 MiB frame: refused from its header, past the 1 MiB limit.
    let mut head = vec![FIN | TEXT, 0x80 | 127];
    head.extend_from_slice(&(2u64 << 20).to_be_bytes());
    head.extend_from_slice(&[0, 0, 0, 0]);
    client.socket.write_all(&head).await.unwrap();
    assert_eq!(client.closed().await, 1009, "a frame past the size limit");
    // A message past the limit in fragments that are each small.
    let mut client = Client::connect(&server).await;
    let piece = vec![b' '; 600 << 10];
    client.frame(false, TEXT, &piece, 0, false).await;
    client.frame(true, CONTINUATION, &piece, 0, false).await;
    assert_eq!(client.closed().await, 1009, "a message past the size limit");
}
