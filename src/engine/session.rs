//! A [`Session`]: one subscriber's attachment to one model, and its way to send.

use std::fmt;
use std::sync::Arc;

use super::live::{LiveModel, Unapplied};
use super::transaction::{Sender, Write};
use super::Access;
use crate::config::Limits;
use crate::error::{ErrorCode, FrameError, SendError};
use crate::protocol::{parse_frame, ClientId, Frame, Mode, ModelName};

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
        id: ClientId,
        mode: Mode,
        access: Access,
        limits: Limits,
    ) -> Self {
        Session {
            live,
            sender: Sender { id, mode },
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
        self.send_bytes(text.as_bytes())
    }

    /// Parses, validates and applies one frame given as bytes (UTF-8 JSON text). Everything is
    /// read and checked here, before the model's lock is taken.
    pub fn send_bytes(&self, bytes: &[u8]) -> Result<(), SendError> {
        match parse_frame(bytes, &self.limits) {
            Ok(frame) => self.apply(frame),
            Err(error) => Err(self.live.refuse(self.sender.id, error, Vec::new())),
        }
    }

    /// Validates and applies a frame built in code (no JSON text involved).
    pub fn send(&self, mut frame: Frame) -> Result<(), SendError> {
        if let Err(error) = frame.validate(&self.limits) {
            return Err(self.live.refuse(self.sender.id, error, frame.ids()));
        }
        self.apply(frame)
    }

    /// Refuses something the transport received, as if it were a frame: e.g.
    /// `binary_not_supported` for a binary WebSocket frame.
    pub fn refuse(&self, error: FrameError) -> SendError {
        self.live.refuse(self.sender.id, error, Vec::new())
    }

    /// Refuses a whole frame of text that the transport will not apply (e.g. `rate_limited`),
    /// naming its messages' ids when the frame can be read, so that the client knows which of
    /// its updates were not applied.
    pub fn refuse_text(&self, text: &str, error: FrameError) -> SendError {
        let ids = parse_frame(text.as_bytes(), &self.limits)
            .map(|frame| frame.ids())
            .unwrap_or_default();
        self.live.refuse(self.sender.id, error, ids)
    }

    /// Asks for a fresh snapshot after the subscriber reported [`Delivery::Lagged`](crate::Delivery::Lagged).
    /// It is delivered to the subscriber in order: diffs after it follow it, none before it do.
    pub fn resync(&self) -> Result<(), SendError> {
        self.live.resync(self.sender.id)
    }

    fn apply(&self, frame: Frame) -> Result<(), SendError> {
        if self.access == Access::ReadOnly && !frame.messages.is_empty() {
            let error = FrameError::new(ErrorCode::Forbidden, "this session is read-only");
            return Err(self.live.refuse(self.sender.id, error, frame.ids()));
        }
        match self
            .live
            .write(self.sender, Write::Messages(frame.messages))
        {
            Ok(_) => Ok(()),
            Err(Unapplied::Closed(_)) => Err(SendError::Closed),
            Err(Unapplied::Refused(error)) => Err(error),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
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
