//! The text of server-sent events (the event-stream format of the HTML standard), gzipped when
//! the client accepts it, each event flushed through the compressor so that it arrives at once.

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;
use hyper::body::Bytes;
use purly::{encode_named_frame, ServerMessage, ServerMessageKind};

/// Turns events into the bytes of the response body.
pub(crate) struct Encoder {
    gzip: Option<GzEncoder<Vec<u8>>>,
}

impl Encoder {
    /// Plain text, or gzip.
    pub(crate) fn new(gzip: bool) -> Self {
        Encoder {
            gzip: gzip.then(|| GzEncoder::new(Vec::new(), Compression::fast())),
        }
    }

    /// The first event: `event: session` with the session's token.
    pub(crate) fn session(&mut self, token: &str) -> Bytes {
        let data = purly::serde_json::json!({ "session": token }).to_string();
        self.encode(format!("event: session\ndata: {data}\n\n").into_bytes())
    }

    /// One frame of `messages` as one event: `id:` the highest `seq` of its updates (none
    /// without one), `data:` the frame's JSON on one line. A signal is relayed as its sender
    /// wrote it, which may have line breaks between tokens: they become spaces (a JSON string
    /// holds no raw line break, so nothing else changes).
    /// A model snapshot in it names `presence_id` (PROTOCOL.md section 11), written straight
    /// into the event.
    pub(crate) fn frame(&mut self, messages: &[ServerMessage], presence_id: &str) -> Bytes {
        let chunks = encode_named_frame(messages, presence_id);
        let last_seq = messages
            .iter()
            .filter(|m| m.kind() == ServerMessageKind::Update)
            .filter_map(ServerMessage::seq)
            .max();
        let len: usize = chunks.iter().map(Bytes::len).sum();
        let mut event = Vec::with_capacity(len + 32);
        if let Some(seq) = last_seq {
            event.extend_from_slice(format!("id: {seq}\n").as_bytes());
        }
        event.extend_from_slice(b"data: ");
        let start = event.len();
        for chunk in &chunks {
            event.extend_from_slice(chunk);
        }
        for byte in &mut event[start..] {
            if matches!(*byte, b'\n' | b'\r') {
                *byte = b' ';
            }
        }
        event.extend_from_slice(b"\n\n");
        self.encode(event)
    }

    /// A comment that keeps proxies from closing an idle stream.
    pub(crate) fn ping(&mut self) -> Bytes {
        self.encode(b": ping\n\n".to_vec())
    }

    /// The end of the body: gzip's trailer (nothing for plain text).
    pub(crate) fn finish(&mut self) -> Option<Bytes> {
        let gzip = self.gzip.take()?;
        gzip.finish().ok().map(Bytes::from)
    }

    fn encode(&mut self, text: Vec<u8>) -> Bytes {
        let Some(gzip) = &mut self.gzip else {
            return Bytes::from(text);
        };
        // Writing to a Vec does not fail; a sync flush emits everything written so far.
        let _ = gzip.write_all(&text);
        let _ = gzip.flush();
        Bytes::from(std::mem::take(gzip.get_mut()))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn each_gzipped_event_decodes_on_its_own_as_it_comes() {
        let mut encoder = Encoder::new(true);
        let mut received = Vec::new();
        let mut decoded = String::new();
        for chunk in [encoder.session("abc"), encoder.ping()] {
            received.extend_from_slice(&chunk);
            // Everything sent so far decodes to whole events, before the stream ends.
            let mut partial = String::new();
            let _ = flate2::read::GzDecoder::new(&received[..]).read_to_string(&mut partial);
            decoded = partial;
        }
        assert_eq!(
            decoded,
            "event: session\ndata: {\"session\":\"abc\"}\n\n: ping\n\n"
        );
        received.extend_from_slice(&encoder.finish().unwrap_or_default());
        let mut whole = String::new();
        flate2::read::GzDecoder::new(&received[..])
            .read_to_string(&mut whole)
            .unwrap_or_default();
        assert_eq!(whole, decoded);
    }

    #[test]
    fn a_relayed_text_with_line_breaks_stays_on_one_data_line() {
        // A signal is relayed as its sender wrote it: here with line breaks between tokens.
        let frame = "[{\"header\":{\"type\":\"signal\"},\"content\":{\r\n\"a\":\n1}}]";
        let messages = purly::parse_server_frame(frame).unwrap_or_default();
        assert_eq!(messages.len(), 1);
        let event = Encoder::new(false).frame(&messages, "n-1");
        let text = std::str::from_utf8(&event).unwrap_or_default();
        let data = text
            .strip_prefix("data: ")
            .and_then(|rest| rest.strip_suffix("\n\n"))
            .unwrap_or_default();
        assert!(!data.is_empty() && !data.contains(['\n', '\r']), "{text:?}");
        let parsed: purly::serde_json::Value =
            purly::serde_json::from_str(data).unwrap_or_default();
        assert_eq!(parsed[0]["content"]["a"], 1);
    }

    #[test]
    fn plain_events() {
        let mut encoder = Encoder::new(false);
        assert_eq!(&encoder.ping()[..], b": ping\n\n");
        assert!(encoder.finish().is_none());
    }
}
