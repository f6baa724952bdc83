//! The wire protocol (PROTOCOL.md sections 2 to 5): what clients send, what the server sends,
//! the one encoder and decoder of both, and the identities they carry.
//!
//! Nothing here holds state: the engine and the clients build on these types.

mod client_key;
mod frame;
mod header;
mod identity;
mod message;
mod name;

pub use client_key::{ClientKey, MAX_CLIENT_KEY_LEN, MIN_CLIENT_KEY_LEN};
pub use frame::{parse_frame, Content, Frame, Message, MessageKind};
pub(crate) use frame::{parse_frame_text, scan_ids};
pub(crate) use header::Header;
pub use identity::{ClientId, MessageId, Mode, PROTOCOL_VERSION};
pub(crate) use message::object_json;
pub use message::{
    encode_frame, encode_frame_bytes, encode_named_frame, parse_server_frame, ServerMessage,
    ServerMessageKind,
};
pub use name::{ModelName, MAX_MODEL_NAME_LEN};
