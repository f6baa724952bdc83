//! A [`Session`]: one subscriber's attachment to one model, and its way to send.

use std::fmt;
use std::sync::Arc;

use crate::engine::slot::ModelSlot;
use crate::engine::{Access, EngineInner};
use crate::error::{ErrorCode, FrameError, SendError};
use crate::frame::{parse_frame, Frame};
use crate::name::ModelName;
use crate::subscriber::{ClientId, Mode};

/// One subscriber attached to one model, returned by [`Engine::join`](crate::Engine::join).
///
/// Everything sent through a session is applied in the model's total order, and every refusal
/// is also queued to the session's own subscriber as an `error` message, in order with its
/// other messages. Dropping the session detaches the subscriber.
pub struct Session {
    engine: Arc<EngineInner>,
    slot: Arc<ModelSlot>,
    id: ClientId,
    mode: Mode,
    access: Access,
}

impl Session {
    pub(crate) fn new(
        engine: Arc<EngineInner>,
        slot: Arc<ModelSlot>,
        id: ClientId,
        mode: Mode,
        access: Access,
    ) -> Self {
        Session {
            engine,
            slot,
            id,
            mode,
            access,
        }
    }

    /// The session's id, the `origin` of what it causes.
    pub fn id(&self) -> ClientId {
        self.id
    }

    /// The model the session is attached to.
    pub fn model(&self) -> &ModelName {
        &self.slot.name
    }

    /// The epoch of the model's version counter.
    pub fn epoch(&self) -> &str {
        &self.slot.epoch
    }

    /// Stream or compat.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Read-write or read-only.
    pub fn access(&self) -> Access {
        self.access
    }

    /// Parses, validates and applies one frame of JSON text (PROTOCOL.md section 2).
    pub fn send_text(&self, text: &str) -> Result<(), SendError> {
        self.send_bytes(text.as_bytes())
    }

    /// Parses, validates and applies one frame given as bytes (UTF-8 JSON text).
    pub fn send_bytes(&self, bytes: &[u8]) -> Result<(), SendError> {
        match parse_frame(bytes, &self.engine.config.limits) {
            Ok(frame) => self.apply(frame),
            Err(error) => Err(self.slot.refuse(self.id, error, Vec::new())),
        }
    }

    /// Validates and applies a frame built in code (no JSON text involved).
    pub fn send(&self, frame: Frame) -> Result<(), SendError> {
        if let Err(error) = frame.validate(&self.engine.config.limits) {
            return Err(self.slot.refuse(self.id, error, frame.ids()));
        }
        self.apply(frame)
    }

    /// Refuses something the transport received, as if it were a frame: e.g.
    /// `binary_not_supported` for a binary WebSocket frame.
    pub fn refuse(&self, error: FrameError) -> SendError {
        self.slot.refuse(self.id, error, Vec::new())
    }

    /// Asks for a fresh snapshot after the subscriber reported [`Delivery::Lagged`](crate::Delivery::Lagged).
    /// It is delivered to the subscriber in order: diffs after it follow it, none before it do.
    pub fn resync(&self) -> Result<(), SendError> {
        self.slot.resync(self.id)
    }

    fn apply(&self, frame: Frame) -> Result<(), SendError> {
        if self.access == Access::ReadOnly && !frame.messages.is_empty() {
            let error = FrameError::new(ErrorCode::Forbidden, "this session is read-only");
            return Err(self.slot.refuse(self.id, error, frame.ids()));
        }
        self.slot.apply(
            self.id,
            self.mode,
            frame,
            self.engine.config.max_model_bytes,
        )
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.slot.leave(self.id);
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("model", &self.slot.name)
            .field("mode", &self.mode)
            .field("access", &self.access)
            .finish()
    }
}
