//! [`Outbox`]: a bounded queue that implements [`Subscriber`], drained by a transport.

use smallvec::SmallVec;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use crate::lock::lock;
use crate::protocol::ServerMessage;
use crate::subscriber::{CloseReason, Delivery, Subscriber};

/// What [`Outbox::poll_recv`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Everything queued since the last call was appended, in order, to the caller's batch:
    /// write it as one frame.
    Messages,
    /// The outbox lagged and dropped diffs: call [`Session::resync`](crate::Session::resync);
    /// the fresh snapshot arrives as the first of the next messages.
    Resync,
    /// The engine stopped delivering (after everything queued was received).
    Closed(CloseReason),
    /// [`Outbox::notify`] was called since this was last returned: a tick of the transport's
    /// own (e.g. time to ping). Reported before queued messages, and once however many
    /// notifications came in between.
    Notified,
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
///
/// # Presence
/// A presence change that a later change of the same id superseded
/// ([`ServerMessage::is_superseded`]) is dropped when taken, and dropped from the queue before
/// it would make the outbox lag: a slow receiver gets the latest presence of each connection,
/// never a backlog of them (PROTOCOL.md section 11).
#[derive(Debug)]
pub struct Outbox {
    limit: usize,
    state: Mutex<OutboxState>,
}

#[derive(Debug, Default)]
struct OutboxState {
    /// Inline for the common case of one or two queued messages, so that a delivery touches
    /// no memory beyond the outbox itself.
    queue: SmallVec<[(ServerMessage, bool); 2]>,
    bytes: usize,
    waker: Option<Waker>,
    lagging: bool,
    resync_requested: bool,
    closed: Option<CloseReason>,
    /// Set by [`Outbox::notify`], cleared when [`Outbox::poll_recv`] or
    /// [`Outbox::poll_notified`] reports it.
    notified: bool,
}

impl Outbox {
    /// An outbox that holds at most `limit` bytes of serialized messages.
    pub fn new(limit: usize) -> Self {
        Outbox {
            limit,
            state: Mutex::new(OutboxState::default()),
        }
    }

    /// Appends everything queued to `batch`, or registers the task to be woken when there is
    /// something. Reusing one `batch` per connection keeps the hot path free of allocations.
    pub fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        batch: &mut Vec<ServerMessage>,
    ) -> Poll<Received> {
        let mut state = lock(&self.state);
        if state.notified && state.closed.is_none() {
            state.notified = false;
            return Poll::Ready(Received::Notified);
        }
        match state.take(batch) {
            Some(received) => Poll::Ready(received),
            None => {
                state.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Resolves once [`notify`](Outbox::notify) was called (since it last resolved), without
    /// taking anything queued: the notification of a transport that does not wait in
    /// [`poll_recv`](Outbox::poll_recv) (like compat mode between its turns).
    pub fn poll_notified(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = lock(&self.state);
        if state.notified {
            state.notified = false;
            Poll::Ready(())
        } else {
            state.waker = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    /// Wakes the receiver with [`Received::Notified`]. A transport's periodic work (pings)
    /// then needs no timer per connection: one task notifies every outbox in turn, and the
    /// connection wakes through the waker it already left here.
    pub fn notify(&self) {
        let mut state = lock(&self.state);
        state.notified = true;
        let waker = state.waker.take();
        drop(state);
        Outbox::wake(waker);
    }

    /// Resolves once the engine stopped delivering, without taking anything queued (for a
    /// transport that sends only at times of its own choosing, like compat mode's turns).
    pub fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<CloseReason> {
        let mut state = lock(&self.state);
        match state.closed {
            Some(reason) => Poll::Ready(reason),
            None => {
                state.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Appends everything queued to `batch`, without waiting.
    pub fn try_recv(&self, batch: &mut Vec<ServerMessage>) -> Option<Received> {
        lock(&self.state).take(batch)
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
    fn take(&mut self, batch: &mut Vec<ServerMessage>) -> Option<Received> {
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
        let before = batch.len();
        batch.extend(
            self.queue
                .drain(..)
                .filter(|(message, _)| !message.is_superseded())
                .map(|(message, _)| message),
        );
        if batch.len() > before {
            return Some(Received::Messages);
        }
        // Only superseded presences were queued: nothing to send (and, if the engine is done,
        // nothing will come to wake the receiver again).
        self.closed.map(Received::Closed)
    }

    fn push(&mut self, message: &ServerMessage, own: bool) {
        self.bytes += message.queued_len();
        self.queue.push((message.clone(), own));
    }

    /// Drops the superseded presence changes from a full queue: whether that made room for
    /// `len` more bytes under `limit` by freeing at least a quarter of it (a queue that barely
    /// shrinks lags instead, so that it is not scanned again for every message).
    fn room_without_superseded(&mut self, len: usize, limit: usize) -> bool {
        let before = self.bytes;
        self.queue.retain(|(message, _)| !message.is_superseded());
        self.bytes = self.queue.iter().map(|(m, _)| m.queued_len()).sum();
        before - self.bytes >= limit / 4 && self.bytes + len <= limit
    }

    /// While lagging, only replies to the session are kept; if they alone exceed `limit`, the
    /// outbox closes. Otherwise answers `status`.
    fn keep_if_own(
        &mut self,
        message: &ServerMessage,
        own: bool,
        limit: usize,
        status: Delivery,
    ) -> Delivery {
        if own {
            self.push(message, own);
        }
        if self.bytes > limit {
            self.overflow()
        } else {
            status
        }
    }

    fn overflow(&mut self) -> Delivery {
        self.queue.clear();
        self.bytes = 0;
        self.closed = Some(CloseReason::Overflow);
        Delivery::Closed
    }
}

impl Subscriber for Outbox {
    fn deliver(&self, message: &ServerMessage, own: bool) -> Delivery {
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
                state.queue.insert(0, (message.clone(), own));
            } else {
                state.push(message, own);
            }
            Delivery::Queued
        } else if message.is_presence_snapshot() && !state.lagging {
            // It comes with a snapshot (a join's, a resync's) and is bounded by the model's
            // connections: never the message that makes a receiver lag.
            state.push(message, own);
            Delivery::Queued
        } else if state.lagging {
            state.keep_if_own(message, own, self.limit, Delivery::Queued)
        } else if state.bytes + message.queued_len() > self.limit
            && !state.queue.is_empty()
            && !state.room_without_superseded(message.queued_len(), self.limit)
        {
            // Replies to the session survive; a snapshot still queued is superseded by the one
            // the coming resync brings.
            state
                .queue
                .retain(|(message, own)| *own && !message.is_snapshot());
            state.bytes = state.queue.iter().map(|(m, _)| m.queued_len()).sum();
            state.lagging = true;
            state.resync_requested = false;
            state.keep_if_own(message, own, self.limit, Delivery::Lagged)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Header;
    use serde_json::Map;
    use std::sync::Arc;

    fn diff(seq: u64) -> ServerMessage {
        let mut content = Map::new();
        content.insert("k".into(), "x".repeat(100).into());
        ServerMessage::update(
            Header {
                seq: Some(seq),
                ..Header::default()
            },
            content,
        )
    }

    fn snapshot(seq: u64) -> ServerMessage {
        ServerMessage::new(
            crate::ServerMessageKind::Update,
            Header {
                seq: Some(seq),
                snapshot: true,
                ..Header::default()
            },
            "{}",
            None,
        )
    }

    #[test]
    fn superseded_presences_are_dropped_before_the_outbox_would_lag() {
        let outbox = Outbox::new(2000);
        let cursor = |x: usize| ServerMessage::presence("n-1", &format!(r#"{{"x":{x}}}"#));
        // 40 cursor moves of one connection (about 60 bytes each: more than the bound in
        // all), each superseded by the next, as the model marks them.
        let mut last = cursor(0);
        for x in 1..=40 {
            assert_eq!(outbox.deliver(&last, false), Delivery::Queued, "move {x}");
            let next = cursor(x);
            last.supersede();
            last = next;
        }
        assert_eq!(outbox.deliver(&diff(1), false), Delivery::Queued);
        assert!(outbox.queued_bytes() <= 2000);
        let mut batch = Vec::new();
        assert_eq!(outbox.try_recv(&mut batch), Some(Received::Messages));
        // Every move delivered was superseded (the latest is still to come): only the diff.
        assert_eq!(batch.len(), 1, "{batch:?}");
        assert_eq!(batch[0].seq(), Some(1));
        // Nothing but superseded moves queued: nothing to take; and once closed, the close.
        assert_eq!(outbox.deliver(&last, false), Delivery::Queued);
        last.supersede();
        assert_eq!(outbox.try_recv(&mut batch), None);
        assert_eq!(outbox.deliver(&last, false), Delivery::Queued);
        outbox.close(CloseReason::Shutdown);
        assert_eq!(
            outbox.try_recv(&mut batch),
            Some(Received::Closed(CloseReason::Shutdown))
        );
    }

    #[test]
    fn a_second_lag_replaces_the_first_snapshot() {
        let outbox = Outbox::new(500);
        let mut seq = 0;
        while outbox.deliver(&diff(seq + 1), false) != Delivery::Lagged {
            seq += 1;
        }
        let mut batch = Vec::new();
        assert_eq!(outbox.try_recv(&mut batch), Some(Received::Resync));
        // The engine answers the resync with a snapshot, delivered as a reply to this session.
        assert_eq!(outbox.deliver(&snapshot(10), true), Delivery::Queued);
        // It lags again before its reader drained that snapshot.
        let mut seq = 10;
        while outbox.deliver(&diff(seq + 1), false) != Delivery::Lagged {
            seq += 1;
        }
        assert_eq!(outbox.try_recv(&mut batch), Some(Received::Resync));
        assert_eq!(outbox.deliver(&snapshot(20), true), Delivery::Queued);
        assert_eq!(outbox.try_recv(&mut batch), Some(Received::Messages));
        let snapshots: Vec<_> = batch
            .iter()
            .filter(|m| m.is_snapshot())
            .map(|m| m.seq())
            .collect();
        assert_eq!(snapshots, vec![Some(20)], "only the fresh snapshot");
        assert_eq!(batch[0].seq(), Some(20));
    }

    /// Polls `outbox` once with a waker that records whether it was woken.
    fn poll_once(outbox: &Outbox, batch: &mut Vec<ServerMessage>) -> (Poll<Received>, Arc<Woken>) {
        let woken = Arc::new(Woken::default());
        let waker = Waker::from(woken.clone());
        let poll = outbox.poll_recv(&mut Context::from_waker(&waker), batch);
        (poll, woken)
    }

    #[derive(Default)]
    struct Woken(std::sync::atomic::AtomicBool);

    impl std::task::Wake for Woken {
        fn wake(self: Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn a_notification_wakes_the_receiver_once_and_comes_before_messages() {
        let outbox = Outbox::new(1000);
        let mut batch = Vec::new();
        let (poll, woken) = poll_once(&outbox, &mut batch);
        assert_eq!(poll, Poll::Pending);
        outbox.notify();
        outbox.notify();
        assert!(woken.0.load(std::sync::atomic::Ordering::SeqCst));
        outbox.deliver(&diff(1), false);
        // Two notifications before the receiver looked are reported once, ahead of the diff.
        assert_eq!(
            poll_once(&outbox, &mut batch).0,
            Poll::Ready(Received::Notified)
        );
        assert_eq!(
            poll_once(&outbox, &mut batch).0,
            Poll::Ready(Received::Messages)
        );
        assert_eq!(poll_once(&outbox, &mut batch).0, Poll::Pending);
        // Taking messages without waiting leaves a notification for the next poll.
        outbox.notify();
        assert_eq!(outbox.try_recv(&mut batch), None);
        let waker = Waker::from(Arc::new(Woken::default()));
        let mut cx = Context::from_waker(&waker);
        assert_eq!(outbox.poll_notified(&mut cx), Poll::Ready(()));
        assert_eq!(outbox.poll_notified(&mut cx), Poll::Pending);
        // Once closed, the close is what the receiver learns.
        outbox.notify();
        outbox.close(CloseReason::Shutdown);
        assert_eq!(
            poll_once(&outbox, &mut batch).0,
            Poll::Ready(Received::Closed(CloseReason::Shutdown))
        );
    }

    #[test]
    fn the_bound_holds_and_own_replies_survive_a_lag() {
        let outbox = Outbox::new(1000);
        for seq in 1..=100 {
            outbox.deliver(&diff(seq), seq % 25 == 0);
            assert!(outbox.queued_bytes() <= 1000);
        }
        let mut batch = Vec::new();
        assert_eq!(outbox.try_recv(&mut batch), Some(Received::Resync));
        outbox.deliver(&snapshot(100), true);
        assert_eq!(outbox.try_recv(&mut batch), Some(Received::Messages));
        assert!(batch[0].is_snapshot());
        let own: Vec<_> = batch[1..].iter().filter_map(|m| m.seq()).collect();
        assert!(
            own.iter().all(|seq| seq % 25 == 0),
            "only own replies were kept: {own:?}"
        );
    }
}
