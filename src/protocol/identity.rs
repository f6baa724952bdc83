//! Who a message comes from and how a subscriber receives: the protocol's identities.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

/// The protocol version this crate speaks; `header.version`, when present, must equal it.
pub const PROTOCOL_VERSION: &str = "0.1";

/// The server's id of one session (a connection), unique within an [`Engine`](crate::Engine).
///
/// It is the `header.origin` of the diffs and signals the session causes (stream mode).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub(crate) u64);

impl ClientId {
    /// The id as the number that goes on the wire.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientId({})", self.0)
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How a subscriber receives a model's messages (PROTOCOL.md sections 3 and 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// Push delivery: every update carries `seq` and `epoch`; diffs are echoed to their sender
    /// with `origin` and `id`; a no-op update with an `id` is answered with an `ack`; resume is
    /// possible; an overflowing queue is replaced by a fresh snapshot.
    #[default]
    Stream,
    /// The original purly behaviour: no `seq`, no echo of the subscriber's own updates, no
    /// `ack`; an overflowing queue disconnects the subscriber.
    Compat,
}

/// The `id` a client put in a message header: a JSON string or number, kept as its exact JSON
/// text so that it is echoed back byte for byte.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct MessageId(Arc<str>);

impl MessageId {
    /// An id that is a JSON string.
    pub fn string(id: &str) -> Self {
        MessageId(Value::from(id).to_string().into())
    }

    /// An id that is a JSON number.
    pub fn number(id: u64) -> Self {
        MessageId(id.to_string().into())
    }

    /// Accepts the JSON text of a string or a number.
    pub fn from_json(raw: &str) -> Option<Self> {
        match serde_json::from_str::<Value>(raw) {
            Ok(Value::String(_)) | Ok(Value::Number(_)) => Some(MessageId(raw.trim().into())),
            _ => None,
        }
    }

    /// The id as an integer, when it is a JSON number that is a non-negative integer (as a
    /// client key's ids are, PROTOCOL.md section 9).
    pub fn as_u64(&self) -> Option<u64> {
        self.0.parse().ok()
    }

    /// The exact JSON text of the id (a string id keeps its quotes).
    pub fn as_json(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
