//! A [`Session`]: one subscriber's attachment to one model, and its way to send.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use serde_json::value::RawValue;

use super::live::{LiveModel, Unapplied};
use super::transaction::{Sender, Write};
use super::Access;
use crate::error::{ErrorCode, FrameError, SendError};
use crate::lock::lock;
use crate::protocol::{
    parse_frame, parse_frame_text, scan_ids, ClientId, ClientKey, Content, Frame, Message,
    MessageId, MessageKind, Mode, ModelName, ServerMessage,
};

/// One subscriber attached to one model, returned by [`Engine::join`](crate::Engine::join).
///
/// Everything sent through a session is applied in the model's total order, and every refusal
/// is also queued to the session's own subscriber as an `error` message, in order with its
/// other messages. Dropping the session detaches the subscriber.
pub struct Session {
    live: Arc<LiveModel>,
    sender: Sender,
    access: Access,
    /// The presence messages this connection may still send now (PROTOCOL.md section 11), and
    /// when the bucket was last filled; on the heap from the first presence (most connections
    /// of an idle page never send one).
    presence_budget: Mutex<Option<Box<(f64, Instant)>>>,
}

impl Session {
    pub(crate) fn new(live: Arc<LiveModel>, sender: Sender, access: Access) -> Self {
        live.metrics.sessions(sender.mode).increment(1.0);
        Session {
            live,
            sender,
            access,
            presence_budget: Mutex::new(None),
        }
    }

    /// The session's id, the `origin` of what it causes.
    pub fn id(&self) -> ClientId {
        self.sender.id
    }

    /// The model the session is attached to.
    pub fn model(&self) -> &ModelName {
        &self.live.name
    }

    /// The epoch of the model's version counter.
    pub fn epoch(&self) -> &str {
        &self.live.epoch
    }

    /// The client key the session was joined with (stream mode), if any.
    pub fn client_key(&self) -> Option<&ClientKey> {
        self.sender.key.as_ref()
    }

    /// Stream or compat.
    pub fn mode(&self) -> Mode {
        self.sender.mode
    }

    /// Read-write or read-only.
    pub fn access(&self) -> Access {
        self.access
    }

    /// The connection's presence id (PROTOCOL.md section 11): unique across the nodes of a
    /// store; the id the other connections see this one's presence under.
    pub fn presence_id(&self) -> Arc<str> {
        self.live.presence_id(self.sender.id)
    }

    /// Names this connection in the model snapshots of `batch` (stream mode): each gets
    /// `header.presence_id` (PROTOCOL.md section 11), in a copy of its own. The engine shares
    /// one snapshot with every joiner; an in-process transport calls this on what it hands
    /// over, off the model's path. A transport that writes bytes uses
    /// [`encode_named_frame`](crate::encode_named_frame) instead, which copies nothing.
    pub fn name_snapshots(&self, batch: &mut [ServerMessage]) {
        let unnamed = |m: &ServerMessage| m.is_snapshot() && m.presence_id().is_none();
        if !batch.iter().any(unnamed) {
            return;
        }
        let id = self.presence_id();
        for message in batch.iter_mut().filter(|m| unnamed(m)) {
            *message = message.with_presence_id(&id);
        }
    }

    /// Parses, validates and applies one frame of JSON text (PROTOCOL.md section 2).
    pub fn send_text(&self, text: &str) -> Result<(), SendError> {
        // Already UTF-8: not checked again (the transport checked it once, as WebSocket asks).
        self.send_parsed(text.as_bytes(), || {
            parse_frame_text(text, &self.live.limits)
        })
    }

    /// Parses, validates and applies one frame given as bytes (UTF-8 JSON text). Everything is
    /// read and checked here, before the model's lock is taken.
    pub fn send_bytes(&self, bytes: &[u8]) -> Result<(), SendError> {
        self.send_parsed(bytes, || parse_frame(bytes, &self.live.limits))
    }

    /// Parses the frame `bytes` with `parse` and applies it, or refuses it naming the ids its
    /// messages carry, whenever its headers can be read (even when the frame as a whole cannot,
    /// e.g. nested too deep), so that every update with an id is answered.
    fn send_parsed(
        &self,
        bytes: &[u8],
        parse: impl FnOnce() -> Result<Frame, FrameError>,
    ) -> Result<(), SendError> {
        let _span = tracing::trace_span!("frame", model = %self.live.name, client = %self.sender.id, bytes = bytes.len()).entered();
        self.live.metrics.frames_received.increment(1);
        match parse() {
            Ok(frame) => self.apply(frame),
            Err(error) => {
                let ids = std::str::from_utf8(bytes).map(scan_ids).unwrap_or_default();
                Err(self.refuse_ids(error, ids))
            }
        }
    }

    /// Validates and applies a frame built in code (no JSON text involved).
    pub fn send(&self, mut frame: Frame) -> Result<(), SendError> {
        let _span =
            tracing::trace_span!("frame", model = %self.live.name, client = %self.sender.id)
                .entered();
        self.live.metrics.frames_received.increment(1);
        if let Err(error) = frame.validate(&self.live.limits) {
            let ids = frame.ids();
            return Err(self.refuse_ids(error, ids));
        }
        self.apply(frame)
    }

    /// Refuses something the transport received, as if it were a frame: e.g.
    /// `binary_not_supported` for a binary WebSocket frame.
    pub fn refuse(&self, error: FrameError) -> SendError {
        self.refuse_ids(error, Vec::new())
    }

    /// Refuses a whole frame of text that the transport will not apply (e.g. `rate_limited`),
    /// naming its messages' ids when the frame can be read, so that the client knows which of
    /// its updates were not applied. The ids are found by one scan of the text that reads
    /// nothing else: a refusal costs no more than that.
    pub fn refuse_text(&self, text: &str, error: FrameError) -> SendError {
        self.refuse_ids(error, scan_ids(text))
    }

    /// Ready once the model is under its bounds again (its fan-out backlog and the diffs its
    /// store has not confirmed; PROTOCOL.md section 5), or closed. Sending never waits: a
    /// transport polls this before it reads the client's next frame, so that a fan-out or a
    /// store slower than the publishers slows them down (TCP pushes back on the client)
    /// instead of queueing without bound. A frame sent anyway while the model is past twice
    /// its bound is refused with `unavailable`.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.live.poll_ready(cx)
    }

    /// [`poll_ready`](Session::poll_ready) as a future.
    pub fn ready(&self) -> Ready<'_> {
        Ready(self)
    }

    /// Whether the model is over its bounds now: a transport then awaits
    /// [`ready`](Session::ready) before reading more. A cheap check (no lock).
    pub fn must_wait(&self) -> bool {
        self.live.is_over_bound()
    }

    /// Asks for a fresh snapshot after the subscriber reported [`Delivery::Lagged`](crate::Delivery::Lagged).
    /// It is delivered to the subscriber in order: diffs after it follow it, none before it do.
    pub fn resync(&self) -> Result<(), SendError> {
        let _span =
            tracing::debug_span!("resync", model = %self.live.name, client = %self.sender.id)
                .entered();
        self.live.metrics.resyncs.increment(1);
        self.live.resync(self.sender.id)
    }

    /// Queues the error answering a refused frame whose messages had `ids`, and counts it.
    fn refuse_ids(&self, error: FrameError, ids: Vec<MessageId>) -> SendError {
        self.live.metrics.refused(error.code);
        self.live.refuse(self.sender.id, error, ids)
    }

    fn apply(&self, mut frame: Frame) -> Result<(), SendError> {
        let presences = frame
            .messages
            .iter()
            .filter(|m| m.kind == MessageKind::Presence)
            .count();
        if presences > 0 {
            if let Err(error) = self.check_presences(&mut frame.messages, presences) {
                let ids = frame.ids();
                return Err(self.refuse_ids(error, ids));
            }
        }
        if self.access == Access::ReadOnly
            && frame
                .messages
                .iter()
                .any(|m| m.kind != MessageKind::Presence)
        {
            let error = FrameError::new(ErrorCode::Forbidden, "this session is read-only");
            let ids = frame.ids();
            return Err(self.refuse_ids(error, ids));
        }
        let updates = frame
            .messages
            .iter()
            .filter(|m| m.kind == MessageKind::Update)
            .count();
        let signals = frame.messages.len() - updates - presences;
        match self
            .live
            .write(self.sender.clone(), Write::Messages(frame.messages), None)
        {
            Ok(_) => {
                let metrics = &self.live.metrics;
                if updates > 0 {
                    metrics.updates_received.increment(updates as u64);
                }
                if signals > 0 {
                    metrics.signals_received.increment(signals as u64);
                }
                Ok(())
            }
            Err(Unapplied::Closed(_)) => Err(SendError::Closed),
            Err(Unapplied::Refused(error)) => {
                if let SendError::Frame(refusal) = &error {
                    self.live.metrics.refused(refusal.code);
                }
                Err(error)
            }
        }
    }
}

impl Session {
    /// Checks a frame's `count` presences (PROTOCOL.md section 11): stream mode only (compat
    /// mode knows no such type), each at most the configured size as compact JSON (each is
    /// made compact here: it goes out on one line, as every message does), and the
    /// connection's rate (a read-only session may send presence too; its other messages are
    /// refused after this).
    fn check_presences(&self, messages: &mut [Message], count: usize) -> Result<(), FrameError> {
        let max = self.live.limits.max_presence_bytes;
        for (index, message) in messages.iter_mut().enumerate() {
            if message.kind != MessageKind::Presence {
                continue;
            }
            if self.sender.mode == Mode::Compat {
                return Err(FrameError::at(
                    ErrorCode::UnknownType,
                    index,
                    "unknown message type \"presence\": compat mode has no presence (connect with the `purly.stream` subprotocol)",
                ));
            }
            let compact = match &message.content {
                Content::Raw(raw) if raw.get() == "null" => continue,
                Content::Raw(raw) => serde_json::from_str::<serde_json::Value>(raw.get())
                    .map(|value| value.to_string()),
                Content::Object(map) => serde_json::to_string(map),
            }
            .map_err(|e| {
                FrameError::at(
                    ErrorCode::InvalidMessage,
                    index,
                    format!("unreadable presence: {e}"),
                )
            })?;
            if compact.len() > max {
                return Err(FrameError::at(
                    ErrorCode::PresenceTooLarge,
                    index,
                    format!(
                        "the presence is {} bytes of compact JSON, more than the limit of {max}",
                        compact.len()
                    ),
                ));
            }
            let raw = RawValue::from_string(compact).map_err(|e| {
                FrameError::at(
                    ErrorCode::InvalidMessage,
                    index,
                    format!("unreadable presence: {e}"),
                )
            })?;
            message.content = Content::Raw(raw);
        }
        if self.access == Access::ReadOnly
            && messages.iter().any(|m| m.kind != MessageKind::Presence)
        {
            // Refused as read-only by the caller, without spending the presence budget.
            return Ok(());
        }
        self.spend_presence_budget(count)
    }

    /// Takes `count` from the connection's presence bucket (refilled at the configured rate,
    /// up to as many), or refuses the frame with `rate_limited`.
    fn spend_presence_budget(&self, count: usize) -> Result<(), FrameError> {
        let rate = f64::from(self.live.limits.presence_per_second);
        let now = Instant::now();
        let mut budget = lock(&self.presence_budget);
        // A full bucket the first time.
        let (tokens, filled) = &mut **budget.get_or_insert_with(|| Box::new((rate, now)));
        let elapsed = now.saturating_duration_since(*filled).as_secs_f64();
        *tokens = (*tokens + elapsed * rate).min(rate);
        *filled = now;
        let wanted = count as f64;
        if *tokens < wanted {
            return Err(FrameError::new(
                ErrorCode::RateLimited,
                format!(
                    "more than {} presence messages a second from this connection; the frame was not applied",
                    self.live.limits.presence_per_second
                ),
            ));
        }
        *tokens -= wanted;
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.live.metrics.sessions(self.sender.mode).decrement(1.0);
        self.live.leave(self.sender.id);
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.sender.id)
            .field("model", &self.live.name)
            .field("mode", &self.sender.mode)
            .field("access", &self.access)
            .finish()
    }
}

/// The future of [`Session::ready`].
#[derive(Debug)]
pub struct Ready<'a>(&'a Session);

impl Future for Ready<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.poll_ready(cx)
    }
}
