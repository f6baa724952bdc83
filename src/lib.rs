//! # purly: keep many clients in sync with shared JSON models
//!
//! This crate is the transport-agnostic core of purly. It validates incoming frames, merges
//! updates into named JSON models, computes exactly what changed, and fans that difference out
//! to every subscriber of the model, in one total order per model. It does no I/O and starts no
//! runtime: transports (the WebSocket adapter `purly-hyper`, the in-process `purly-channel`)
//! feed it frames and drain what it queues.
//!
//! ```text
//!   client ──frame──▶ transport ──Session::send_text──▶ Engine ─┐ validate, merge, diff
//!                                                               │ (one total order per model)
//!                                              Store ◀── append ┤ batches; released once
//!                                                               │ durable (memory: at once)
//!   client ◀─frame─── transport ◀──Outbox::poll_recv──── Outbox ◀┘ fan-out: one serialized
//!                      (coalesces everything queued             message shared by every
//!                       into one frame per write)               subscriber
//! ```
//!
//! The wire protocol and model semantics are those of purly's `PROTOCOL.md`: frames are JSON
//! arrays of `update` and `signal` messages; an update is nested-merged (RFC 7386) into the
//! model and only the difference goes out; a signal is relayed unmodified.
//!
//! ## Example
//!
//! ```
//! use std::sync::Arc;
//! use purly::{Engine, JoinOptions, Outbox, Received};
//!
//! let engine = Engine::default();
//! let alice_box = Arc::new(Outbox::new(engine.config().max_queued_bytes));
//! let bob_box = Arc::new(Outbox::new(engine.config().max_queued_bytes));
//! // In memory, a join never waits; `wait()` is the blocking form of `.await`.
//! let alice = engine.join("model", alice_box.clone(), JoinOptions::stream()).wait().unwrap();
//! let _bob = engine.join("model", bob_box.clone(), JoinOptions::stream()).wait().unwrap();
//!
//! alice
//!     .send_text(r#"[{"header":{"type":"update"},"content":{"div":{"color":"coral"}}}]"#)
//!     .unwrap();
//! // Resending the same update changes nothing, so nothing more is fanned out.
//! alice
//!     .send_text(r#"[{"header":{"type":"update"},"content":{"div":{"color":"coral"}}}]"#)
//!     .unwrap();
//!
//! let mut messages = Vec::new();
//! assert_eq!(bob_box.try_recv(&mut messages), Some(Received::Messages));
//! // The snapshot, who else is here (nobody has set a presence), then one diff.
//! assert_eq!(messages.len(), 3);
//! assert!(messages[0].is_snapshot());
//! assert!(messages[1].is_presence_snapshot());
//! assert_eq!(messages[2].seq(), Some(1));
//! assert_eq!(messages[2].content_json(), r#"{"div":{"color":"coral"}}"#);
//! assert_eq!(engine.state("model").unwrap()["div"]["color"], "coral");
//! ```
//!
//! ## Modules (what each is for)
//! - `protocol`: the wire format of PROTOCOL.md: [`parse_frame`] and the client's [`Frame`]s,
//!   the [`ServerMessage`]s a server sends (serialized once, shared), [`encode_frame`] /
//!   [`parse_server_frame`], and the identities they carry ([`ClientId`], [`Mode`],
//!   [`ModelName`]). One header writer serves every message.
//! - `merge`: [`merge_diff`], RFC 7386 merge that writes the exact difference as JSON text while
//!   it merges, and keeps its undo.
//! - `json_text`: compact JSON text written straight into a string (diffs, headers), byte for
//!   byte what serde_json writes.
//! - `engine`: the [`Engine`] handle and its [`Session`]s; inside, the pure transaction step
//!   (a frame and a state in, diffs or a refusal out), the live model (one lock orders every
//!   change; commands wait until the store holds what they show), the fan-out with its lag
//!   policy, the history for resume, shared [`Snapshot`]s, and (with a shared store) the
//!   replay of frames not yet durable.
//! - `store`: the [`Store`] seam (load, append in batches, remove; a shared store's feed of
//!   other nodes' commits) and [`MemoryStore`], the default. `purly-sqlite` and `purly-redis`
//!   implement it.
//! - `model`: [`Model`], the embedder's policy for a model ([`DefaultModel`] accepts all).
//! - `subscriber` and `outbox`: what receives a model's messages ([`Subscriber`]) and the
//!   standard bounded implementation ([`Outbox`]) that transports drain.
//! - `client`: the client side, which imports nothing of the server: [`Replica`] (the server's
//!   state with my pending changes on top), [`ClientConnection`] (what every client transport
//!   offers) and [`Layout`] (build and drive a live page from Rust).
//!
//! ## Guarantees
//! - A frame is validated whole and applied atomically: every update in it or none.
//! - Every subscriber of a model sees its diffs in the order they were applied, with no gap and
//!   no repeat; joining takes the snapshot and registers in one step.
//! - Nothing is shown before the store holds it: a diff, echo, ack, snapshot or state read
//!   leaves the engine only once its version is durable, and what was queued after it waits.
//! - A diff costs in proportion to the update, not the model, and is serialized once whatever
//!   the number of subscribers; a snapshot is serialized once per version, outside the lock.
//!   Publishers do not wait for a fan-out, and subscribers are never called under a model's
//!   lock; different models share no lock on the hot path.
//! - Everything that grows is bounded ([`Config`]): frame size, depth and message count, model
//!   size, model count, queued bytes per subscriber, resume history, the messages waiting for
//!   fan-out and the diffs waiting for the store (past those bounds [`Session::ready`] is
//!   pending and the transports stop reading their clients until the model drains; a frame
//!   sent anyway past twice the bound is refused).
//! - No call blocks a thread: the store reports through [`Completion`]s; a join of a model
//!   being loaded, a server write waiting to be durable and backpressure are futures
//!   ([`EngineFuture`], [`Ready`]), runtime-agnostic, with `wait()` as the named blocking form
//!   for sync code. The store's thread only reports; what follows (the next batch, the
//!   fan-out) runs on the embedder's [`Executor`].
//!
//! ## What this crate does not do
//! - No networking, no async runtime, no timers, no clock: pings, the compat mode's refresh
//!   throttle, join timeouts and HTTP belong to the transports; a store does its own I/O on
//!   its own threads and reports back (the engine's futures are plain `std`: a stored
//!   [`Waker`](std::task::Waker), woken); idle eviction runs when the embedder calls [`Engine::evict_idle`];
//!   epochs come from an injectable source ([`EngineBuilder::epochs`], random by default).
//! - No authorization: the transport decides the [`Access`] of each session.
//! - Numbers are JSON numbers as `serde_json` reads them (64-bit integers or `f64`); signals are
//!   relayed byte for byte, updates are re-serialized.

mod client;
mod config;
mod engine;
mod error;
mod json_text;
mod lock;
mod merge;
mod model;
mod oneshot;
mod outbox;
mod protocol;
mod store;
mod subscriber;
pub mod telemetry;
mod token;
mod wait;

pub use client::{
    Child, ClientConnection, Element, Event, Layout, LayoutError, Replica, ReplicaError,
};
pub use config::{Config, Limits};
pub use engine::{
    presence_node, Access, Engine, EngineBuilder, EngineFuture, EpochSource, Executor, JoinOptions,
    Ready, Resume, Session, Snapshot, Task, WriteError, SERVER_ORIGIN,
};
pub use error::{
    ErrorCode, FrameError, InvalidClientKey, InvalidModelName, JoinError, SendError, StoreError,
};
pub use merge::{merge_diff, Change};
pub use model::{DefaultModel, Model, ModelFactory, Rejection};
pub use outbox::{Outbox, Received};
pub use protocol::{
    encode_frame, encode_frame_bytes, encode_named_frame, parse_frame, parse_server_frame,
    ClientId, ClientKey, Content, Frame, Message, MessageId, MessageKind, Mode, ModelName,
    ServerMessage, ServerMessageKind, MAX_CLIENT_KEY_LEN, MAX_MODEL_NAME_LEN, MIN_CLIENT_KEY_LEN,
    PROTOCOL_VERSION,
};
pub use store::{
    AppendDone, Appended, AskDone, Batch, Checkpoint, CheckpointPolicy, Completion, KeyWrite,
    LoadDone, MemoryStore, NewModel, NodeHandler, RemoteFeed, RemotePresence, RemoveDone, Store,
    StoredDiff, StoredKey, StoredModel,
};
pub use subscriber::{CloseReason, Delivery, Subscriber};
pub use token::random_hex;

/// Re-exported because its types ([`serde_json::Map`], [`serde_json::Value`]) are in the API.
pub use serde_json;
