//! [`Outbox`]: a bounded queue that implements [`Subscriber`], drained by a transport.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use crate::lock::lock;
use crate::outbound::Outbound;
use crate::subscriber::{CloseReason, Delivery, Subscriber};

/// What [`Outbox::poll_recv`] hands the transport.
#[derive(Debug)]
pub enum Received {
    /// Everything queued since the last call, in order: write it as one frame.
    Messages(Vec<Outbound>),
    /// The outbox lagged and dropped diffs: call [`Session::resync`](crate::Session::resync);
    /// the fresh snapshot arrives as the first of the next messages.
    Resync,
    /// The engine stopped delivering (after everything queued was received).
    Closed(CloseReason),
}

/// The standard [`Subscriber`]: a queue bounded in bytes, with a runtime-agnostic async
/// receiving side ([`poll_recv`](Outbox::poll_recv) works with any executor's [`Waker`]).
///
/// # Lagging
/// When a message would take the queue over its bound, the outbox drops everything queued
/// except the replies to its own session (its echoed diffs, `ack`s and `error`s, which a client
/// needs to confirm its pending updates), reports [`Delivery::Lagged`], and from then on drops
/// every diff and signal that is not its own. The receiver gets [`Received::Resync`], asks the
/// session for a snapshot, and continues from it: memory stays bounded whatever the sender
/// rate, and the snapshot is built once per recovery, not once per dropped diff. In compat
/// mode the engine closes a lagging subscriber instead ([`CloseReason::Overflow`]).
///
/// A message larger than the whole bound is accepted into an empty queue (a big snapshot must
/// get through); the bound caps what piles up behind it. If the replies a lagging outbox keeps
/// exceed the bound by themselves, it closes with [`CloseReason::Overflow`].
#[derive(Debug)]
pub struct Outbox {
    limit: usize,
    state: Mutex<OutboxState>,
}

#[derive(Debug, Default)]
struct OutboxState {
    queue: VecDeque<(Outbound, bool)>,
    bytes: usize,
    waker: Option<Waker>,
    lagging: bool,
    resync_requested: bool,
    closed: Option<CloseReason>,
}

impl Outbox {
    /// An outbox that holds at most `limit` bytes of serialized messages.
    pub fn new(limit: usize) -> Self {
        Outbox {
            limit,
            state: Mutex::new(OutboxState::default()),
        }
    }

    /// Takes everything queued, or registers the task to be woken when there is something.
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Received> {
        let mut state = lock(&self.state);
        match state.take() {
            Some(received) => Poll::Ready(received),
            None => {
                state.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Takes everything queued, without waiting.
    pub fn try_recv(&self) -> Option<Received> {
        lock(&self.state).take()
    }

    /// How many bytes are queued.
    pub fn queued_bytes(&self) -> usize {
        lock(&self.state).bytes
    }

    /// The bound this outbox was made with.
    pub fn limit(&self) -> usize {
        self.limit
    }

    fn wake(waker: Option<Waker>) {
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl OutboxState {
    fn take(&mut self) -> Option<Received> {
        if let Some(reason) = self.closed {
            if self.queue.is_empty() || self.lagging {
                return Some(Received::Closed(reason));
            }
        }
        if self.lagging {
            if self.resync_requested {
                return None;
            }
            self.resync_requested = true;
            return Some(Received::Resync);
        }
        if self.queue.is_empty() {
            return None;
        }
        self.bytes = 0;
        Some(Received::Messages(
            self.queue.drain(..).map(|(m, _)| m).collect(),
        ))
    }

    fn push(&mut self, message: &Outbound, own: bool) {
        self.bytes += message.queued_len();
        self.queue.push_back((message.clone(), own));
    }

    fn overflow(&mut self) -> Delivery {
        self.queue.clear();
        self.bytes = 0;
        self.closed = Some(CloseReason::Overflow);
        Delivery::Closed
    }
}

impl Subscriber for Outbox {
    fn deliver(&self, message: &Outbound, own: bool) -> Delivery {
        let mut state = lock(&self.state);
        if state.closed.is_some() {
            return Delivery::Closed;
        }
        let status = if message.is_snapshot() {
            let len = message.queued_len();
            if state.lagging {
                // The snapshot supersedes every diff dropped while lagging; the kept replies
                // follow it.
                state.lagging = false;
                state.resync_requested = false;
                state.bytes += len;
                state.queue.push_front((message.clone(), own));
            } else {
                state.push(message, own);
            }
            Delivery::Queued
        } else if state.lagging {
            if own {
                state.push(message, own);
            }
            if state.bytes > self.limit {
                state.overflow()
            } else {
                Delivery::Queued
            }
        } else if state.bytes + message.queued_len() > self.limit && !state.queue.is_empty() {
            state.queue.retain(|(_, own)| *own);
            state.bytes = state.queue.iter().map(|(m, _)| m.queued_len()).sum();
            state.lagging = true;
            state.resync_requested = false;
            if own {
                state.push(message, own);
            }
            if state.bytes > self.limit {
                state.overflow()
            } else {
                Delivery::Lagged
            }
        } else {
            state.push(message, own);
            Delivery::Queued
        };
        let waker = state.waker.take();
        drop(state);
        Outbox::wake(waker);
        status
    }

    fn close(&self, reason: CloseReason) {
        let mut state = lock(&self.state);
        state.closed.get_or_insert(reason);
        let waker = state.waker.take();
        drop(state);
        Outbox::wake(waker);
    }
}
