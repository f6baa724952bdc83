//! A [`Session`]: one subscriber's attachment to one model, and its way to send.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::live::{LiveModel, Unapplied};
use super::transaction::{Sender, Write};
use super::Access;
use crate::config::Limits;
use crate::error::{ErrorCode, FrameError, SendError};
use crate::protocol::{
    parse_frame, parse_frame_text, scan_ids, ClientId, ClientKey, Frame, MessageId, MessageKind,
    Mode, ModelName,
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
    limits: Limits,
}

impl Session {
    pub(crate) fn new(
        live: Arc<LiveModel>,
        sender: Sender,
        access: Access,
        limits: Limits,
    ) -> Self {
        live.metrics.sessions(sender.mode).increment(1.0);
        Session {
            live,
            sender,
            access,
            limits,
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

    /// Parses, validates and applies one frame of JSON text (PROTOCOL.md section 2).
    pub fn send_text(&self, text: &str) -> Result<(), SendError> {
        // Already UTF-8: not checked again (the transport checked it once, as WebSocket asks).
        self.send_parsed(text.as_bytes(), || parse_frame_text(text, &self.limits))
    }

    /// Parses, validates and applies one frame given as bytes (UTF-8 JSON text). Everything is
    /// read and checked here, before the model's lock is taken.
    pub fn send_bytes(&self, bytes: &[u8]) -> Result<(), SendError> {
        self.send_parsed(bytes, || parse_frame(bytes, &self.limits))
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
        if let Err(error) = frame.validate(&self.limits) {
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

    fn apply(&self, frame: Frame) -> Result<(), SendError> {
        if self.access == Access::ReadOnly && !frame.messages.is_empty() {
            let error = FrameError::new(ErrorCode::Forbidden, "this session is read-only");
            let ids = frame.ids();
            return Err(self.refuse_ids(error, ids));
        }
        let updates = frame
            .messages
            .iter()
            .filter(|m| m.kind == MessageKind::Update)
            .count();
        let signals = frame.messages.len() - updates;
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
