//! Error types: the wire error codes of PROTOCOL.md section 5 and one error enum per operation.

use std::fmt;

use thiserror::Error;

/// The code of an `error` message on the wire (PROTOCOL.md section 5).
///
/// [`ErrorCode::as_str`] is exactly the string that goes into `content.code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame is not valid UTF-8 JSON.
    InvalidJson,
    /// The frame is JSON but not an array of messages.
    NotAnArray,
    /// A message lacks a header or content, or one of them has the wrong type.
    InvalidMessage,
    /// `header.type` names no message type a client may send.
    UnknownType,
    /// `header.version` is present and is not `"0.1"`.
    UnsupportedVersion,
    /// The frame nests deeper than the configured limit.
    TooDeep,
    /// The frame holds more messages than the configured limit.
    TooManyMessages,
    /// The frame is larger than the configured limit (a WebSocket transport closes with 1009).
    FrameTooLarge,
    /// Applying the update would make the model larger than the configured limit.
    ModelTooLarge,
    /// The session is read-only.
    Forbidden,
    /// The WebSocket frame was binary; purly frames are text.
    BinaryNotSupported,
    /// The embedder's [`Model`](crate::Model) refused the update.
    Rejected,
    /// The store could not make the frame durable, or failed after it was applied in memory
    /// (PROTOCOL.md section 8): nothing of it was kept; reconnect and retry.
    Unavailable,
    /// The connection sent frames faster than its transport allows; the frame was not applied.
    /// Slow down: a client that keeps going is disconnected (purly-hyper closes with 1008).
    RateLimited,
    /// A presence is larger than the configured limit (4 KiB of compact JSON by default,
    /// PROTOCOL.md section 11); the frame was not applied.
    PresenceTooLarge,
}

impl ErrorCode {
    /// Every code, in declaration order.
    pub const ALL: [ErrorCode; 15] = [
        ErrorCode::InvalidJson,
        ErrorCode::NotAnArray,
        ErrorCode::InvalidMessage,
        ErrorCode::UnknownType,
        ErrorCode::UnsupportedVersion,
        ErrorCode::TooDeep,
        ErrorCode::TooManyMessages,
        ErrorCode::FrameTooLarge,
        ErrorCode::ModelTooLarge,
        ErrorCode::Forbidden,
        ErrorCode::BinaryNotSupported,
        ErrorCode::Rejected,
        ErrorCode::Unavailable,
        ErrorCode::RateLimited,
        ErrorCode::PresenceTooLarge,
    ];

    /// The code's position in [`ErrorCode::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The code that appears on the wire as `text`.
    pub fn from_wire(text: &str) -> Option<Self> {
        ErrorCode::ALL
            .iter()
            .copied()
            .find(|code| code.as_str() == text)
    }

    /// Whether the code is a decision about the updates it refuses (PROTOCOL.md section 9): a
    /// resend under a client key of an update refused so while its frame was applied gets the
    /// same answer. The others (`unavailable`, `rate_limited`, `frame_too_large`) say nothing
    /// about the update: a resend is judged anew.
    pub fn is_decision(self) -> bool {
        matches!(
            self,
            ErrorCode::Rejected
                | ErrorCode::ModelTooLarge
                | ErrorCode::TooDeep
                | ErrorCode::Forbidden
                | ErrorCode::InvalidMessage
        )
    }

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::NotAnArray => "not_an_array",
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::TooDeep => "too_deep",
            ErrorCode::TooManyMessages => "too_many_messages",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::ModelTooLarge => "model_too_large",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::BinaryNotSupported => "binary_not_supported",
            ErrorCode::Rejected => "rejected",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::PresenceTooLarge => "presence_too_large",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an incoming frame was refused before anything in it was applied.
///
/// Produced by [`parse_frame`](crate::parse_frame) and by [`Frame::validate`](crate::Frame::validate).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{code}: {message}")]
pub struct FrameError {
    /// The wire code.
    pub code: ErrorCode,
    /// A human-readable explanation.
    pub message: String,
    /// The position of the offending message in the frame, when one message is at fault.
    pub index: Option<usize>,
}

impl FrameError {
    /// An error about the frame as a whole.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        FrameError {
            code,
            message: message.into(),
            index: None,
        }
    }

    /// An error about the message at `index`.
    pub fn at(code: ErrorCode, index: usize, message: impl Into<String>) -> Self {
        FrameError {
            code,
            message: message.into(),
            index: Some(index),
        }
    }
}

/// Why [`Session::send`](crate::Session::send) (or one of its variants) applied nothing.
///
/// Except for [`SendError::Closed`], the same error was also queued to the session's own
/// subscriber as an `error` message, in order with its other messages.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SendError {
    /// The frame was refused; its code is the wire code.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The session has left the model, or the engine was shut down.
    #[error("the session is closed")]
    Closed,
}

impl SendError {
    /// The wire code, or `None` for [`SendError::Closed`].
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            SendError::Frame(e) => Some(e.code),
            SendError::Closed => None,
        }
    }
}

/// Why [`Engine::join`](crate::Engine::join) did not attach a subscriber to a model.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The model name breaks the rules of PROTOCOL.md section 1 (HTTP 400).
    #[error("invalid model name: {0}")]
    InvalidName(#[from] InvalidModelName),
    /// The engine already holds its maximum number of models (HTTP 503).
    #[error("the server holds its maximum of {limit} models")]
    TooManyModels {
        /// The configured limit.
        limit: usize,
    },
    /// The embedder's model factory refused to create the model.
    #[error("model refused: {0}")]
    Refused(String),
    /// The store could not load the model (HTTP 503).
    #[error("the store could not load the model: {0}")]
    Store(#[from] StoreError),
    /// The engine was shut down.
    #[error("the engine is shut down")]
    ShutDown,
    /// The model closed (its store failed, or it was removed) before the request was served;
    /// a new try loads it again (HTTP 503).
    #[error("the model closed before the request was served; try again")]
    ModelClosed,
}

/// A model name that breaks the rules of PROTOCOL.md section 1.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{reason}")]
pub struct InvalidModelName {
    pub(crate) reason: &'static str,
}

/// A client key that breaks the rules of PROTOCOL.md section 9 (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{reason}")]
pub struct InvalidClientKey {
    pub(crate) reason: &'static str,
}

/// Why a store could not do what the engine asked.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store's I/O failed (disk full, permissions, connection lost, ...).
    #[error("store I/O failed: {0}")]
    Io(String),
    /// The store holds something it cannot read (a corrupt row, a diff that is not JSON, a
    /// gap in the log).
    #[error("the store holds unreadable data: {0}")]
    Corrupt(String),
    /// The store is closed or its worker is gone.
    #[error("the store is closed")]
    Closed,
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn every_code_is_listed_once_at_its_index() {
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(code.index(), i, "{code}");
        }
        let mut names: Vec<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
    }
}
