//! The entry point of the `websocket` fuzz target (`fuzz/`): compiled only under
//! `cfg(fuzzing)`, which cargo-fuzz sets; not part of the crate's API.

use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};

use futures_util::StreamExt;
use hyper_tungstenite::tungstenite;
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Error as WsError, Message};

use crate::websocket::wire::Wire;
use crate::websocket::WebSocket;

/// The largest message the fuzzed WebSocket accepts: small, so that the fuzzer reaches it.
const MAX_MESSAGE: usize = 4096;

/// Reads `data` as the bytes a client sends to the server side of a WebSocket, until the
/// stream ends, fails or waits for more, and returns how many messages it yielded. The first
/// three bytes set the scene: the most one write of the server's answers (pongs, closes) may
/// take (0: all), flags (bit 0: the client's stream ends after the data; bit 1: vectored
/// writes), and the size of the reads the rest arrives in (0: one read).
///
/// # Panics
/// If the WebSocket yields more messages than its input can hold (a frame takes at least two
/// bytes): a loop that reads nothing. Anything else wrong panics inside it.
pub fn read_websocket(data: &[u8]) -> usize {
    let (scene, input) = data.split_at(data.len().min(3));
    let [write_limit, flags, cut] = [0, 1, 2].map(|i| scene.get(i).copied().unwrap_or(0));
    let cut = match usize::from(cut) {
        0 => input.len().max(1),
        n => n,
    };
    let wire = Wire {
        chunks: input
            .chunks(cut)
            .map(<[u8]>::to_vec)
            .collect::<VecDeque<_>>(),
        eof: flags & 1 != 0,
        write_limit: (write_limit > 0).then_some(usize::from(write_limit)),
        vectored: flags & 2 != 0,
        ..Wire::default()
    };
    let mut ws = WebSocket::new(wire, MAX_MESSAGE);
    let mut cx = Context::from_waker(Waker::noop());
    let mut messages = 0;
    while messages <= input.len() / 2 {
        match ws.poll_next_unpin(&mut cx) {
            Poll::Ready(Some(Ok(_))) => messages += 1,
            Poll::Ready(Some(Err(_)) | None) | Poll::Pending => return messages,
        }
    }
    panic!("{messages} messages from {} bytes", input.len());
}

/// What a WebSocket yielded, in a form both implementations share.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// A text message.
    Text(Vec<u8>),
    /// A binary message.
    Binary(Vec<u8>),
    /// A ping.
    Ping(Vec<u8>),
    /// A pong.
    Pong(Vec<u8>),
    /// A close, with the code the server answers with (1002 for one a peer may not send).
    Close(Option<u16>),
}

/// How a WebSocket's stream ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// It waits for more bytes.
    Waiting,
    /// It ended after a close (or the peer's end of stream).
    Closed,
    /// A protocol violation (RFC 6455).
    Protocol,
    /// A frame or message over the size limit.
    Capacity,
    /// A text message that is not UTF-8.
    Utf8,
}

fn seen(message: Message) -> Seen {
    match message {
        Message::Text(text) => Seen::Text(text.as_bytes().to_vec()),
        Message::Binary(bytes) => Seen::Binary(bytes.to_vec()),
        Message::Ping(bytes) => Seen::Ping(bytes.to_vec()),
        Message::Pong(bytes) => Seen::Pong(bytes.to_vec()),
        Message::Close(frame) => Seen::Close(frame.map(|f| {
            if f.code.is_allowed() {
                u16::from(f.code)
            } else {
                1002
            }
        })),
        Message::Frame(_) => Seen::Binary(Vec::new()),
    }
}

fn ending(error: &WsError) -> Option<Ending> {
    match error {
        WsError::ConnectionClosed | WsError::AlreadyClosed => Some(Ending::Closed),
        WsError::Protocol(_) => Some(Ending::Protocol),
        WsError::Capacity(_) => Some(Ending::Capacity),
        WsError::Utf8(_) => Some(Ending::Utf8),
        WsError::Io(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
            Some(Ending::Waiting)
        }
        _ => None,
    }
}

/// Feeds `data` (all at once, then the end of the stream if `eof`) to purly's WebSocket: the
/// messages and how the stream ended.
pub fn purly_reads(data: &[u8], eof: bool) -> (Vec<Seen>, Ending) {
    let wire = Wire {
        // An empty read is the end of the stream: no empty chunk.
        chunks: [data.to_vec()]
            .into_iter()
            .filter(|c| !c.is_empty())
            .collect(),
        eof,
        ..Wire::default()
    };
    let mut ws = WebSocket::new(wire, MAX_MESSAGE);
    let mut cx = Context::from_waker(Waker::noop());
    let mut messages = Vec::new();
    loop {
        match ws.poll_next_unpin(&mut cx) {
            Poll::Ready(Some(Ok(message))) => messages.push(seen(message)),
            Poll::Ready(Some(Err(error))) => {
                return (messages, ending(&error).unwrap_or(Ending::Closed))
            }
            Poll::Ready(None) => return (messages, Ending::Closed),
            Poll::Pending => return (messages, Ending::Waiting),
        }
    }
}

/// The same bytes through tungstenite's server side, configured alike (no unmasked frames,
/// the same message and frame limit): the reference.
pub fn tungstenite_reads(data: &[u8], eof: bool) -> (Vec<Seen>, Ending) {
    struct Input {
        data: std::io::Cursor<Vec<u8>>,
        eof: bool,
    }
    impl std::io::Read for Input {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.data.read(buf)?;
            if n == 0 && !buf.is_empty() && !self.eof {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        }
    }
    impl std::io::Write for Input {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let input = Input {
        data: std::io::Cursor::new(data.to_vec()),
        eof,
    };
    let mut ws =
        tungstenite::protocol::WebSocket::from_raw_socket(input, Role::Server, Some(config));
    let mut messages = Vec::new();
    loop {
        match ws.read() {
            Ok(message) => messages.push(seen(message)),
            Err(error) => return (messages, ending(&error).unwrap_or(Ending::Closed)),
        }
    }
}

/// Feeds `data` to both: the first byte says whether the stream ends after it (bit 0).
///
/// # Panics
/// If purly's WebSocket yields other messages than tungstenite's, or ends in another way.
pub fn compare_with_tungstenite(data: &[u8]) {
    let (flags, input) = data.split_first().unwrap_or((&0, &[]));
    let eof = flags & 1 != 0;
    let ours = purly_reads(input, eof);
    let mut theirs = tungstenite_reads(input, eof);
    if theirs.1 == Ending::Waiting && !matches!(ours.1, Ending::Waiting | Ending::Closed) {
        // purly refuses a frame from its header; tungstenite waits for its payload first.
        // Given the rest of the frame (zeros, enough for any frame under the size limit),
        // tungstenite must refuse it the same way.
        let mut padded = input.to_vec();
        padded.resize(input.len() + MAX_MESSAGE + 16, 0);
        let (messages, end) = tungstenite_reads(&padded, eof);
        theirs = (messages.into_iter().take(ours.0.len()).collect(), end);
    }
    // A frame can break the protocol and the size limit at once (a reserved opcode with a
    // length past the limit): which of the two is reported first (1002 or 1009) is the
    // implementation's choice; both refuse the connection from the same frame.
    let class = |end: Ending| match end {
        Ending::Capacity => Ending::Protocol,
        end => end,
    };
    let (ours, theirs) = ((ours.0, class(ours.1)), (theirs.0, class(theirs.1)));
    assert_eq!(
        ours, theirs,
        "purly's WebSocket and tungstenite's read {input:02x?} apart"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Bytes that look like client frames more often than random ones do.
    fn frames() -> impl Strategy<Value = Vec<u8>> {
        let frame = (
            any::<u8>(),
            0u8..140,
            any::<[u8; 4]>(),
            proptest::collection::vec(any::<u8>(), 0..140),
        )
            .prop_map(|(first, len, mask, payload)| {
                let mut out = vec![first, 0x80 | len.min(125)];
                out.extend_from_slice(&mask);
                out.extend(payload.into_iter().take(usize::from(len.min(125))));
                out
            });
        proptest::collection::vec(frame, 0..6).prop_map(|frames| frames.concat())
    }

    proptest! {
        #[test]
        fn purly_reads_what_tungstenite_reads(eof in any::<bool>(), input in frames()) {
            let mut data = vec![u8::from(eof)];
            data.extend(input);
            compare_with_tungstenite(&data);
        }
    }

    /// A masked client frame: FIN and `opcode`, `payload` masked with a fixed key.
    fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut out = vec![0x80 | opcode, 0x80 | payload.len() as u8];
        out.extend_from_slice(&mask);
        out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        out
    }

    #[test]
    fn reads_what_a_client_sends_in_any_cut() {
        let mut input = frame(0x1, b"[]");
        input.extend(frame(0x9, b"p"));
        input.extend(frame(0x1, b"{}"));
        for cut in [0u8, 1, 3, 7] {
            for write_limit in [0u8, 1] {
                let mut data = vec![write_limit, 1, cut];
                data.extend_from_slice(&input);
                assert_eq!(
                    read_websocket(&data),
                    3,
                    "cut {cut}, write limit {write_limit}"
                );
            }
        }
        // An unmasked client frame ends the stream at once; no input yields nothing.
        assert_eq!(read_websocket(&[0, 0, 0, 0x81, 0x00]), 0);
        assert_eq!(read_websocket(&[]), 0);
    }
}
