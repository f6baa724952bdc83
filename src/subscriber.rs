//! The [`Subscriber`] trait: what a transport implements to receive a model's messages.

use std::fmt;

use crate::protocol::ServerMessage;

/// What a [`Subscriber`] did with a message it was offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The message was queued.
    Queued,
    /// The queue is over its bound: the subscriber dropped what it had queued (keeping replies
    /// to its own messages) and drops further diffs until it is resynchronized with
    /// [`Session::resync`](crate::Session::resync). A compat-mode subscriber that lags is
    /// disconnected by the engine instead.
    Lagged,
    /// The subscriber is gone; the engine forgets it.
    Closed,
}

/// Why the engine stopped delivering to a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// The subscriber's queue overflowed and it cannot be resynchronized (compat mode, or its
    /// own unread replies alone exceed the bound). A WebSocket transport closes with 1013.
    Overflow,
    /// The model was removed from the engine.
    ModelRemoved,
    /// The engine was shut down. A WebSocket transport closes with 1001.
    Shutdown,
    /// The store failed after a change was applied in memory: the model's state can no longer
    /// be trusted and is reloaded from the store on the next join. A WebSocket transport
    /// closes with 1011 (PROTOCOL.md section 8).
    StoreFailed,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CloseReason::Overflow => "the outbound queue overflowed",
            CloseReason::ModelRemoved => "the model was removed",
            CloseReason::Shutdown => "the server is shutting down",
            CloseReason::StoreFailed => "the store failed; reconnect to reload the model",
        })
    }
}

/// The receiving end of one session: the engine offers it every message the session should
/// see, in the model's total order.
///
/// # Contract
/// - [`deliver`](Subscriber::deliver) never blocks and never waits: it queues the message (a
///   cheap clone of shared, already serialized bytes) or reports that it is full or closed.
///   It is called from whichever thread is fanning out the model's messages, so it must not
///   join, resync or drop sessions of the same model (sending on a session is fine).
/// - `own` is true when the message answers this subscriber's own session: its echoed diffs,
///   its `ack`s and its `error`s. A lagging subscriber keeps those (so that every update with an
///   `id` is still confirmed exactly once) and may drop everything else.
/// - The engine applies one policy to [`Delivery::Lagged`]: a stream-mode subscriber stays
///   registered and is brought back by a snapshot when its owner calls
///   [`Session::resync`](crate::Session::resync) (the snapshot is delivered through `deliver`
///   with [`ServerMessage::is_snapshot`] set); a compat-mode subscriber is removed and told
///   [`CloseReason::Overflow`].
/// - [`Delivery::Closed`] removes the subscriber; the engine never calls it again.
///
/// [`Outbox`](crate::Outbox) is the ready-made implementation with a byte bound and an async
/// receiving side; most transports use it rather than implementing this trait.
pub trait Subscriber: Send + Sync + 'static {
    /// Offers one message. Never blocks.
    fn deliver(&self, message: &ServerMessage, own: bool) -> Delivery;

    /// The engine will not deliver anything more, for `reason`. Not called after the subscriber
    /// itself reported [`Delivery::Closed`] or its session was dropped.
    fn close(&self, reason: CloseReason);
}
