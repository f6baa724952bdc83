//! The entry point of the `websocket` fuzz target (`fuzz/`): compiled only under
//! `cfg(fuzzing)`, which cargo-fuzz sets; not part of the crate's API.

use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};

use futures_util::StreamExt;

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

#[cfg(test)]
mod tests {
    use super::*;

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
