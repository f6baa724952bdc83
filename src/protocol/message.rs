//! ServerMessage messages: serialized once when they are created, shared by every subscriber.

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::header::Header;
use super::identity::{ClientId, MessageId, Mode};
use crate::error::{ErrorCode, FrameError};
use crate::json_text::write_object;

/// The `header.type` of a message the server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServerMessageKind {
    /// A diff, or (with [`ServerMessage::is_snapshot`]) the whole state.
    Update,
    /// A signal relayed from another client.
    Signal,
    /// The confirmation of an update with an `id` that changed nothing (stream mode).
    Ack,
    /// A refused frame (PROTOCOL.md section 5).
    Error,
    /// A connection's presence (PROTOCOL.md section 11): a change for one presence id (its
    /// content an object, or `null` once cleared or gone), or with
    /// [`ServerMessage::is_presence_snapshot`] every other connection's (an object of id to
    /// presence).
    Presence,
}

impl ServerMessageKind {
    /// The `header.type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerMessageKind::Update => "update",
            ServerMessageKind::Signal => "signal",
            ServerMessageKind::Ack => "ack",
            ServerMessageKind::Error => "error",
            ServerMessageKind::Presence => "presence",
        }
    }
}

/// One message from the server to its clients.
///
/// It is serialized once, when the engine creates it, and cloning it only bumps a reference
/// count: a diff fanned out to 10,000 subscribers is one allocation. [`ServerMessage::json`] is the
/// stream-mode text; [`ServerMessage::compat_json`] the compat-mode text (built once, on first use).
/// [`ServerMessage::content`] gives the content as an object without parsing whenever the engine
/// had it as one (diffs, acks, errors, signals sent in-process).
#[derive(Clone)]
pub struct ServerMessage(Arc<Inner>);

struct Inner {
    kind: ServerMessageKind,
    snapshot: bool,
    seq: Option<u64>,
    epoch: Option<Arc<str>>,
    origin: Option<ClientId>,
    id: Option<MessageId>,
    ids: Vec<MessageId>,
    duplicate: bool,
    presence_id: Option<Arc<str>>,
    /// A presence change that a later change of the same id replaced: whoever still holds it
    /// unsent drops it (the later one follows).
    superseded: AtomicBool,
    content: OnceLock<Map<String, Value>>,
    /// The stream-mode text inside `[` and `]`: the message is its own one-message frame, which
    /// a transport shares with every subscriber without copying it.
    frame: Bytes,
    /// Where the content starts in `frame`.
    content_start: usize,
    compat: OnceLock<String>,
}

impl ServerMessage {
    /// Builds a message from its header and its content's JSON text; `content` is the same
    /// content as an object when the caller has it.
    pub(crate) fn new(
        kind: ServerMessageKind,
        header: Header,
        content_json: &str,
        content: Option<Map<String, Value>>,
    ) -> Self {
        Self::written(kind, header, content_json.len(), content, |text| {
            text.push_str(content_json)
        })
    }

    /// Builds a message whose content `write_content` writes straight after the header (about
    /// `content_len` bytes): one allocation for the whole text, which the frame's `Bytes` then
    /// takes over without another when `content_len` was exact.
    fn written(
        kind: ServerMessageKind,
        header: Header,
        content_len: usize,
        content: Option<Map<String, Value>>,
        write_content: impl FnOnce(&mut String),
    ) -> Self {
        let mut text = String::with_capacity(header.prefix_len(kind.as_str()) + content_len + 3);
        text.push('[');
        header.write_prefix(kind.as_str(), &mut text);
        let content_start = text.len();
        write_content(&mut text);
        text.push_str("}]");
        let cell = OnceLock::new();
        if let Some(map) = content {
            let _ = cell.set(map);
        }
        ServerMessage(Arc::new(Inner {
            kind,
            snapshot: header.snapshot,
            seq: header.seq,
            epoch: header.epoch,
            origin: header.origin,
            id: header.id,
            ids: header.ids,
            duplicate: header.duplicate,
            presence_id: header.presence_id,
            superseded: AtomicBool::new(false),
            content: cell,
            frame: Bytes::from(text),
            content_start,
            compat: OnceLock::new(),
        }))
    }

    /// An update whose content is `content` (a diff, or with `snapshot` the whole state); the
    /// map is kept so that in-process receivers read it without parsing.
    #[cfg(test)]
    pub(crate) fn update(header: Header, content: Map<String, Value>) -> Self {
        Self::object(ServerMessageKind::Update, header, content)
    }

    /// An update the engine keeps as text only (a snapshot of the state, or a stored diff
    /// restored into the history): the map is serialized here and not kept. Histories and
    /// queues then hold one string per message instead of a string and a tree of maps;
    /// in-process receivers parse the text once, on first use, and share the result. Diffs the
    /// merge wrote as text go through [`ServerMessage::update_json`] instead.
    pub(crate) fn update_text(header: Header, content: &Map<String, Value>) -> Self {
        // Room for a typical diff at once, instead of growing from a few bytes.
        Self::written(ServerMessageKind::Update, header, 160, None, |text| {
            write_object(content, text)
        })
    }

    /// An update whose content is already JSON text: a diff, as the merge wrote it.
    pub(crate) fn update_json(header: Header, content_json: &str) -> Self {
        Self::new(ServerMessageKind::Update, header, content_json, None)
    }

    /// A message whose content is `content`, serialized here and kept as the object too.
    pub(crate) fn object(
        kind: ServerMessageKind,
        header: Header,
        content: Map<String, Value>,
    ) -> Self {
        let json = object_json(&content);
        Self::new(kind, header, &json, Some(content))
    }

    /// An `error` answering a refused frame; `ids` are the ids of the frame's messages.
    pub(crate) fn error(error: &FrameError, ids: Vec<MessageId>) -> Self {
        let mut content = Map::new();
        content.insert("code".into(), error.code.as_str().into());
        content.insert("message".into(), error.message.clone().into());
        if let Some(index) = error.index {
            content.insert("index".into(), index.into());
        }
        let header = Header {
            ids,
            ..Header::default()
        };
        Self::object(ServerMessageKind::Error, header, content)
    }

    /// The `ack` of a resend under a client key (PROTOCOL.md section 9): the `seq` its first
    /// sending produced or was checked against, when the key's memory still holds it.
    pub(crate) fn duplicate_ack(id: MessageId, seq: Option<u64>, epoch: Arc<str>) -> Self {
        Self::new(
            ServerMessageKind::Ack,
            Header {
                id: Some(id),
                seq,
                epoch: Some(epoch),
                duplicate: true,
                ..Header::default()
            },
            "{}",
            Some(Map::new()),
        )
    }

    /// An `ack` for the no-op update `id`, at the model's current version.
    pub(crate) fn ack(id: MessageId, seq: u64, epoch: Arc<str>) -> Self {
        Self::new(
            ServerMessageKind::Ack,
            Header {
                id: Some(id),
                seq: Some(seq),
                epoch: Some(epoch),
                ..Header::default()
            },
            "{}",
            Some(Map::new()),
        )
    }

    /// The change of presence `id`: `content_json` is its presence (an object), or `null`
    /// once it is cleared or gone.
    pub(crate) fn presence(id: &str, content_json: &str) -> Self {
        let header = Header {
            id: Some(MessageId::string(id)),
            ..Header::default()
        };
        Self::new(ServerMessageKind::Presence, header, content_json, None)
    }

    /// The presence snapshot for the connection whose presence id is `own`: `content_json` is
    /// the object of every other connection's presence, by id.
    pub(crate) fn presence_snapshot(own: Arc<str>, content_json: &str) -> Self {
        let header = Header {
            snapshot: true,
            presence_id: Some(own),
            ..Header::default()
        };
        Self::new(ServerMessageKind::Presence, header, content_json, None)
    }

    /// This message with `header.presence_id` set to `id` (the model's snapshot for the
    /// connection whose presence id that is): the text is written again, content included.
    /// For in-process receivers ([`Session::name_snapshots`](crate::Session::name_snapshots));
    /// a transport that writes bytes names it with [`encode_named_frame`] instead, which
    /// copies nothing.
    pub fn with_presence_id(&self, id: &str) -> Self {
        let content = self.0.content.get().cloned();
        Self::new(
            self.0.kind,
            self.named_header(id),
            self.content_json(),
            content,
        )
    }

    /// This message's header with `presence_id` set to `id`.
    fn named_header(&self, id: &str) -> Header {
        Header {
            snapshot: self.0.snapshot,
            seq: self.0.seq,
            epoch: self.0.epoch.clone(),
            origin: self.0.origin,
            id: self.0.id.clone(),
            ids: self.0.ids.clone(),
            duplicate: self.0.duplicate,
            presence_id: Some(id.into()),
        }
    }

    /// The message type.
    pub fn kind(&self) -> ServerMessageKind {
        self.0.kind
    }

    /// Whether this update is a snapshot (its content is the whole state; it replaces).
    pub fn is_snapshot(&self) -> bool {
        self.0.snapshot && self.0.kind == ServerMessageKind::Update
    }

    /// Whether this is a presence snapshot: every other connection's presence, by id, as the
    /// server had them when this connection joined (or resynchronized).
    pub fn is_presence_snapshot(&self) -> bool {
        self.0.snapshot && self.0.kind == ServerMessageKind::Presence
    }

    /// The receiving connection's own presence id, on the snapshots it gets when it joins.
    pub fn presence_id(&self) -> Option<&str> {
        self.0.presence_id.as_deref()
    }

    /// For a presence change: the id whose presence changed.
    pub fn presence_of(&self) -> Option<String> {
        if self.0.kind != ServerMessageKind::Presence || self.0.snapshot {
            return None;
        }
        serde_json::from_str(self.0.id.as_ref()?.as_json()).ok()
    }

    /// Marks this presence change as replaced by a later change of the same id: every queue
    /// that still holds it unsent drops it (one store, however many subscribers share it).
    pub(crate) fn supersede(&self) {
        self.0.superseded.store(true, Ordering::Relaxed);
    }

    /// Whether a later change of the same presence id replaced this one before it was sent:
    /// sending it would only show a presence that is no longer true.
    pub fn is_superseded(&self) -> bool {
        self.0.superseded.load(Ordering::Relaxed)
    }

    /// Whether the content is `null` (a presence cleared, or gone with its connection).
    pub fn is_null(&self) -> bool {
        self.content_json() == "null"
    }

    /// Whether this message answers the client's update `id`: its echo, its `ack`, or an
    /// `error` that names it (PROTOCOL.md section 4: each is answered exactly once per
    /// connection).
    pub fn answers(&self, id: &MessageId) -> bool {
        match self.kind() {
            ServerMessageKind::Update | ServerMessageKind::Ack => self.id() == Some(id),
            ServerMessageKind::Error => self.ids().contains(id),
            ServerMessageKind::Signal | ServerMessageKind::Presence => false,
        }
    }

    /// Whether this `ack` answers a resend the server had already decided (a client key's
    /// duplicate, PROTOCOL.md section 9).
    pub fn is_duplicate(&self) -> bool {
        self.0.duplicate
    }

    /// The model's version after this update, or the version an `ack` confirms at.
    pub fn seq(&self) -> Option<u64> {
        self.0.seq
    }

    /// The epoch of the model's version counter (stream-mode updates and acks).
    pub fn epoch(&self) -> Option<&str> {
        self.0.epoch.as_deref()
    }

    /// The session whose message caused this one (diffs and signals).
    pub fn origin(&self) -> Option<ClientId> {
        self.0.origin
    }

    /// The `id` of the client message this answers or echoes.
    pub fn id(&self) -> Option<&MessageId> {
        self.0.id.as_ref()
    }

    /// For an `error`: the ids of the refused frame's messages (none of them was applied).
    pub fn ids(&self) -> &[MessageId] {
        &self.0.ids
    }

    /// The content as an object (parsed on first use if the engine only had its text, as for
    /// a relayed signal). Content that `serde_json` cannot read as an object (a number beyond
    /// its range, say) is an `invalid_message` error, never an empty object.
    pub fn content(&self) -> Result<&Map<String, Value>, FrameError> {
        if let Some(map) = self.0.content.get() {
            return Ok(map);
        }
        let map = serde_json::from_str(self.content_json()).map_err(|e| {
            FrameError::new(
                ErrorCode::InvalidMessage,
                format!("unreadable content: {e}"),
            )
        })?;
        Ok(self.0.content.get_or_init(|| map))
    }

    /// The content's JSON text.
    pub fn content_json(&self) -> &str {
        self.text(self.0.content_start, 2)
    }

    /// The length of [`ServerMessage::content_json`], in bytes (without reading the text).
    pub fn content_len(&self) -> usize {
        self.0.frame.len().saturating_sub(self.0.content_start + 2)
    }

    /// The whole message as stream-mode JSON text.
    pub fn json(&self) -> &str {
        self.text(1, 1)
    }

    /// The message as a stream-mode frame of its own (`[` message `]`), shared: cloning it
    /// copies nothing.
    pub fn frame(&self) -> Bytes {
        self.0.frame.clone()
    }

    /// `frame` without its first `start` bytes and its last `end` bytes.
    fn bytes(&self, start: usize, end: usize) -> &[u8] {
        let frame = &self.0.frame[..];
        frame
            .get(start..frame.len().saturating_sub(end))
            .unwrap_or_default()
    }

    /// [`bytes`](Self::bytes) as text. The frame was built from a string and is cut at ASCII
    /// bytes, so this always succeeds; checking it costs a pass over the bytes and no unsafe
    /// code.
    fn text(&self, start: usize, end: usize) -> &str {
        std::str::from_utf8(self.bytes(start, end)).unwrap_or_default()
    }

    /// The whole message as compat-mode JSON text: the header has only `type` and `version`.
    pub fn compat_json(&self) -> &str {
        self.0.compat.get_or_init(|| {
            let mut text = String::with_capacity(self.0.frame.len());
            Header::default().write_prefix(self.0.kind.as_str(), &mut text);
            text.push_str(self.text(self.0.content_start, 1));
            text
        })
    }

    /// The text of this message for a subscriber in `mode`.
    pub fn json_for(&self, mode: Mode) -> &str {
        match mode {
            Mode::Stream => self.json(),
            Mode::Compat => self.compat_json(),
        }
    }

    /// The size this message counts for in a queue's byte bound.
    pub fn queued_len(&self) -> usize {
        self.0.frame.len().saturating_sub(2)
    }
}

impl fmt::Debug for ServerMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.json())
    }
}

#[derive(Deserialize)]
struct WireMessage<'a> {
    #[serde(borrow)]
    header: WireHeader<'a>,
    #[serde(borrow)]
    content: &'a RawValue,
}

#[derive(Deserialize)]
struct WireHeader<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    seq: Option<u64>,
    epoch: Option<String>,
    origin: Option<u64>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    ids: Vec<&'a RawValue>,
    #[serde(default)]
    snapshot: bool,
    #[serde(default)]
    duplicate: bool,
    presence_id: Option<String>,
}

/// Parses a frame a server sent (for clients); every message's content is read into its
/// object here, so a message whose content cannot be read refuses the whole frame: the same [`ServerMessage`] messages the engine
/// produced, so a [`Replica`](crate::Replica) applies them alike over any transport.
pub fn parse_server_frame(text: &str) -> Result<Vec<ServerMessage>, FrameError> {
    let messages: Vec<WireMessage<'_>> = serde_json::from_str(text)
        .map_err(|e| FrameError::new(ErrorCode::InvalidJson, e.to_string()))?;
    messages
        .into_iter()
        .enumerate()
        .map(|(index, message)| {
            let kind = match &*message.header.kind {
                "update" => ServerMessageKind::Update,
                "signal" => ServerMessageKind::Signal,
                "ack" => ServerMessageKind::Ack,
                "error" => ServerMessageKind::Error,
                "presence" => ServerMessageKind::Presence,
                other => {
                    return Err(FrameError::at(
                        ErrorCode::UnknownType,
                        index,
                        format!("unknown message type {other:?}"),
                    ))
                }
            };
            let id = |raw: &RawValue| {
                MessageId::from_json(raw.get()).ok_or_else(|| {
                    FrameError::at(
                        ErrorCode::InvalidMessage,
                        index,
                        "an id is a string or a number",
                    )
                })
            };
            let header = Header {
                snapshot: message.header.snapshot,
                seq: message.header.seq,
                epoch: message.header.epoch.map(Arc::from),
                origin: message.header.origin.map(ClientId),
                id: message.header.id.map(id).transpose()?,
                ids: message
                    .header
                    .ids
                    .into_iter()
                    .map(id)
                    .collect::<Result<_, _>>()?,
                duplicate: message.header.duplicate,
                presence_id: message.header.presence_id.map(Arc::from),
            };
            let raw = message.content.get();
            if kind == ServerMessageKind::Presence && raw == "null" {
                return Ok(ServerMessage::new(kind, header, raw, None));
            }
            if !raw.starts_with('{') {
                return Err(FrameError::at(
                    ErrorCode::InvalidMessage,
                    index,
                    "content is an object",
                ));
            }
            let content = serde_json::from_str(message.content.get()).map_err(|e| {
                FrameError::at(
                    ErrorCode::InvalidMessage,
                    index,
                    format!("unreadable content: {e}"),
                )
            })?;
            Ok(ServerMessage::new(
                kind,
                header,
                message.content.get(),
                Some(content),
            ))
        })
        .collect()
}

/// The compact JSON text of an object.
pub(crate) fn object_json(map: &Map<String, Value>) -> String {
    // Room for a typical diff at once, instead of growing from a few bytes.
    let mut text = String::with_capacity(256);
    write_object(map, &mut text);
    text
}

/// [`encode_frame`] as shared bytes: a lone stream-mode message is already its own frame and
/// is shared as it is (no allocation, no copy: the usual write to a subscriber that keeps up).
pub fn encode_frame_bytes(messages: &[ServerMessage], mode: Mode) -> Bytes {
    match (messages, mode) {
        ([message], Mode::Stream) => message.frame(),
        (_, Mode::Stream) => Bytes::from(join_stream_frames(messages)),
        (_, Mode::Compat) => Bytes::from(encode_frame(messages, mode)),
    }
}

/// The stream-mode frame of `messages` for the connection whose presence id is `presence_id`:
/// each model snapshot's header names it (PROTOCOL.md section 11). Returned as chunks whose
/// concatenation is the frame, so that a snapshot's content (the whole model, shared by every
/// joiner of its version) is never copied: a WebSocket transport writes the chunks as the
/// fragments of one message. One chunk when there is no snapshot to name.
pub fn encode_named_frame(messages: &[ServerMessage], presence_id: &str) -> Vec<Bytes> {
    let named = |m: &ServerMessage| m.is_snapshot() && m.presence_id().is_none();
    if !messages.iter().any(named) {
        return vec![encode_frame_bytes(messages, Mode::Stream)];
    }
    let mut chunks = Vec::new();
    let mut text: Vec<u8> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        text.push(if i == 0 { b'[' } else { b',' });
        if named(message) {
            let mut prefix = String::new();
            message
                .named_header(presence_id)
                .write_prefix(message.0.kind.as_str(), &mut prefix);
            text.extend_from_slice(prefix.as_bytes());
            chunks.push(Bytes::from(std::mem::take(&mut text)));
            let end = message.0.frame.len().saturating_sub(2);
            chunks.push(message.0.frame.slice(message.0.content_start.min(end)..end));
            text.push(b'}');
        } else {
            text.extend_from_slice(message.bytes(1, 1));
        }
    }
    text.push(b']');
    chunks.push(Bytes::from(text));
    chunks
}

/// Several messages as one stream-mode frame: the bytes of each one's own frame without its
/// brackets, joined by commas, in one allocation of the exact size. The bytes are not read as
/// text again (each subscriber's batch would be checked for UTF-8 once per subscriber).
fn join_stream_frames(messages: &[ServerMessage]) -> Vec<u8> {
    // Each message's frame is `[` message `]`: its length is the message's and a comma's.
    let len = messages
        .iter()
        .map(|m| m.0.frame.len().saturating_sub(1))
        .sum::<usize>()
        + 1;
    let mut frame = Vec::with_capacity(len.max(2));
    for (i, message) in messages.iter().enumerate() {
        frame.push(if i == 0 { b'[' } else { b',' });
        frame.extend_from_slice(message.bytes(1, 1));
    }
    if messages.is_empty() {
        frame.push(b'[');
    }
    frame.push(b']');
    frame
}

/// Joins messages into one frame (a JSON array) for `mode`, without re-encoding any of them.
pub fn encode_frame<'a>(
    messages: impl IntoIterator<Item = &'a ServerMessage>,
    mode: Mode,
) -> String {
    let messages = messages.into_iter();
    let mut frame = String::new();
    for (i, message) in messages.enumerate() {
        let json = message.json_for(mode);
        if i == 0 {
            // Usually the only message: one allocation of the right size.
            frame.reserve_exact(json.len() + 2);
            frame.push('[');
        } else {
            frame.push(',');
        }
        frame.push_str(json);
    }
    if frame.is_empty() {
        frame.push('[');
    }
    frame.push(']');
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diff(seq: u64, content: Value) -> ServerMessage {
        let Value::Object(map) = content else {
            unreachable!("test content is an object")
        };
        let header = Header {
            seq: Some(seq),
            epoch: Some("e".into()),
            origin: Some(ClientId(3)),
            ..Header::default()
        };
        ServerMessage::update_text(header, &map)
    }

    #[test]
    fn a_lone_stream_message_is_shared_as_its_own_frame() {
        let one = diff(1, serde_json::json!({"a": "é\"", "b": [1, {"c": null}]}));
        let two = diff(2, serde_json::json!({"b": 2}));
        let shared = encode_frame_bytes(std::slice::from_ref(&one), Mode::Stream);
        assert_eq!(shared.as_ptr(), one.frame().as_ptr(), "no copy was made");
        for (messages, mode) in [
            (vec![one.clone()], Mode::Stream),
            (vec![one.clone()], Mode::Compat),
            (vec![one.clone(), two.clone()], Mode::Stream),
            (vec![two.clone(), one.clone(), two.clone()], Mode::Stream),
            (vec![one.clone(), two.clone()], Mode::Compat),
            (vec![], Mode::Stream),
        ] {
            let bytes = encode_frame_bytes(&messages, mode);
            assert_eq!(bytes, encode_frame(&messages, mode).as_bytes());
            let parsed = parse_server_frame(std::str::from_utf8(&bytes).unwrap()).unwrap();
            assert_eq!(parsed.len(), messages.len());
        }
        assert_eq!(one.queued_len(), one.json().len());
        assert_eq!(one.content_len(), one.content_json().len());
        assert_eq!(one.content_json(), r#"{"a":"é\"","b":[1,{"c":null}]}"#);
        assert!(one
            .compat_json()
            .ends_with(r#""content":{"a":"é\"","b":[1,{"c":null}]}}"#));
        let parsed = parse_server_frame(std::str::from_utf8(&one.frame()).unwrap()).unwrap();
        assert_eq!(parsed[0].seq(), Some(1));
    }

    #[test]
    fn a_named_frame_shares_the_snapshots_content_and_reads_as_the_named_copy() {
        let snapshot = ServerMessage::new(
            ServerMessageKind::Update,
            Header {
                seq: Some(7),
                epoch: Some("e".into()),
                snapshot: true,
                ..Header::default()
            },
            r#"{"big":"state"}"#,
            None,
        );
        let presence = ServerMessage::presence_snapshot("n-2".into(), "{}");
        let after = diff(8, serde_json::json!({"b": 1}));
        for messages in [
            vec![snapshot.clone()],
            vec![snapshot.clone(), presence.clone(), after.clone()],
            vec![after.clone(), snapshot.clone(), snapshot.clone()],
        ] {
            let chunks = encode_named_frame(&messages, "n-2");
            let joined: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
            let named: Vec<ServerMessage> = messages
                .iter()
                .map(|m| match m.is_snapshot() {
                    true => m.with_presence_id("n-2"),
                    false => m.clone(),
                })
                .collect();
            assert_eq!(joined, encode_frame(&named, Mode::Stream).as_bytes());
            let content = &snapshot.0.frame[snapshot.0.content_start..];
            assert!(
                chunks.iter().any(|c| c.as_ptr() == content.as_ptr()),
                "the snapshot's content is shared, not copied"
            );
            let parsed = parse_server_frame(std::str::from_utf8(&joined).unwrap()).unwrap();
            assert_eq!(parsed[0].presence_id().is_some(), messages[0].is_snapshot());
        }
        // Nothing to name: the usual single shared frame.
        let plain = encode_named_frame(std::slice::from_ref(&after), "n-2");
        assert_eq!(plain.len(), 1);
        assert_eq!(plain[0].as_ptr(), after.frame().as_ptr());
    }

    #[test]
    fn an_update_is_answered_by_its_echo_its_ack_or_an_error_naming_it() {
        let frame = r#"[{"header":{"type":"update","seq":1,"id":3},"content":{}},
            {"header":{"type":"ack","seq":1,"id":4},"content":{}},
            {"header":{"type":"error","ids":[5,"x"]},"content":{}},
            {"header":{"type":"signal","id":6},"content":{}}]"#;
        let messages = parse_server_frame(frame).unwrap();
        let answered = |id: MessageId| messages.iter().filter(|m| m.answers(&id)).count();
        assert_eq!(answered(MessageId::number(3)), 1);
        assert_eq!(answered(MessageId::number(4)), 1);
        assert_eq!(answered(MessageId::number(5)), 1);
        assert_eq!(answered(MessageId::string("x")), 1);
        assert_eq!(
            answered(MessageId::number(6)),
            0,
            "a signal answers nothing"
        );
    }
}
