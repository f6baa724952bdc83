//! Who a message comes from and how a subscriber receives: the protocol's identities.

use std::fmt;

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
