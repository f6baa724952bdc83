//! The event-stream transport (PROTOCOL.md section 10): a stream-mode session over plain
//! HTTP/1.1, for networks whose proxies refuse or kill WebSockets. `GET {prefix}{model}/events`
//! answers with the session's frames as server-sent events; `POST
//! {prefix}{model}/send?session=S` hands the session a frame, whose answers arrive on the
//! stream.
//!
//! A session lives as long as its event stream: the stream's body holds it, and the registry
//! of open sessions ([`Sessions`]) lets a POST find it by its token. The body is pulled by
//! hyper as the socket takes it (no task of its own); a closed stream is noticed at the next
//! write, at the latest its next ping, and drops the session.

mod encoder;
mod open;
mod send;
mod sessions;

pub(crate) use open::open;
pub(crate) use send::{send, serve_forwarded};
pub(crate) use sessions::Sessions;
