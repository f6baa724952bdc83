//! # purly-hyper: purly over WebSockets, inside any hyper 1.x or axum service
//!
//! [`Purly`] serves the routes of purly's protocol for an [`Engine`](purly::Engine), under a
//! prefix of your choosing (default `/`):
//!
//! | route | what |
//! | --- | --- |
//! | `GET {prefix}{model}/stream` + WebSocket upgrade | the model's message stream |
//! | `GET {prefix}{model}/state` | the model's state as JSON (404 if it does not exist) |
//! | `GET {prefix}{model}` | the live page that renders the model (plain JavaScript, no build step) |
//!
//! A client that offers the subprotocol `purly.stream` gets **stream mode**: push delivery of
//! coalesced frames, `seq`/`epoch`/`origin`/`id` on updates, acks, resume with
//! `?since=N&epoch=E`. A client that offers none gets **compat mode**, the original purly
//! server's behaviour, so that purly 0.1/0.2 clients work unchanged.
//!
//! ## A complete server
//!
//! ```no_run
//! use purly::Engine;
//! use purly_hyper::Purly;
//!
//! # async fn run() -> std::io::Result<()> {
//! let purly = Purly::new(Engine::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! // Each connection on its own task (HTTP/1.1 with upgrades, TCP_NODELAY, timeouts and
//! // caps), backing off when out of file descriptors, until Ctrl-C.
//! purly
//!     .serve(listener, async {
//!         let _ = tokio::signal::ctrl_c().await;
//!     })
//!     .await;
//! purly.shutdown().await; // every client gets a close frame with 1001
//! # Ok(())
//! # }
//! ```
//!
//! For an accept loop of your own, its body is [`Purly::serve_tcp`] (or
//! [`Purly::serve_connection`] on any byte stream, e.g. TLS).
//!
//! To combine purly with your own hyper service instead, serve `Purly` itself (it is a
//! `hyper::service::Service`) with `.with_upgrades()` on the connection, or call
//! [`Purly::try_handle`] from your service.
//!
//! In axum, mount it beside your own routes: `Router::new().route("/api/hello", get(hello))
//! .nest_service("/sync", purly)` serves `/sync/{model}/stream` (axum strips `/sync`, so keep
//! the prefix `/`). From a hand-written hyper service, [`Purly::try_handle`] hands back the
//! requests that are not purly's.
//!
//! ## Limits and liveness
//! - Frames above [`Limits::max_frame_bytes`](purly::Limits::max_frame_bytes) (1 MiB) close the
//!   connection with 1009; binary frames are answered `binary_not_supported`. A client breaking
//!   RFC 6455 is closed with 1002, a text frame that is not UTF-8 with 1007.
//! - Each connection's outbound queue is bounded (8 MiB): a stream-mode client that falls
//!   behind gets a fresh snapshot instead of the diffs it missed; a compat-mode one is closed
//!   with 1013.
//! - Idle connections are pinged every 30 s and closed after 2 unanswered pings; a write that
//!   takes over 60 s drops the peer.
//! - An idle connection holds no read or write buffer: the framing is purly's own (tungstenite
//!   supplies the message and error types). Reads take up to 16 KiB per system call into a
//!   buffer on the stack, and only a frame still arriving is kept; a frame goes out from the
//!   bytes shared by every subscriber, its header beside it in one vectored write.
//! - Hostile clients ([`ServerConfig`]): a request head must arrive within 10 s, an idle
//!   plain-HTTP connection is closed after 5 s, a silent compat client after 60 s (1008);
//!   past 100,000 connections (or an optional cap per address) new ones get HTTP 503; a
//!   connection sending over 1,000 frames a second (a token bucket, [`RateLimit`]) gets
//!   `rate_limited` errors, then a close with 1008.
//!
//! ## Authorization
//! [`PurlyBuilder::authorize`] sees each request ([`RequestInfo`]: route, model, path,
//! headers, peer) and answers [`Decision::Deny`] (403), [`Decision::ReadOnly`] (updates and
//! signals answered `forbidden`) or [`Decision::ReadWrite`]. Cross-site WebSocket requests
//! (an `Origin` naming another host) are refused with 403 unless
//! [`PurlyBuilder::allow_origin`] allows that origin.
//!
//! ## What this crate does not do
//! - No TLS: terminate it in front (a proxy) or in your own accept loop.
//! - It does not bind the listener: you own it, and may run your own accept loop (see above).
//! - It does not check `Sec-WebSocket-Extensions` (no compression is negotiated).

mod accept;
mod access;
mod admission;
mod batch;
mod body;
mod builder;
#[cfg(feature = "client")]
mod client;
mod client_files;
mod config;
mod event_stream;
#[cfg(feature = "client")]
mod events_client;
mod extra_route;
#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub mod fuzzing;
mod handshake;
mod http;
mod join_request;
mod keep_alive;
mod page;
mod pinger;
mod rate_limit;
mod route;
mod service;
mod socket_loop;
pub mod telemetry;
mod upgrade;
mod upgraded_io;
mod websocket;

pub use access::{Authorize, Decision, PeerAddr, RequestInfo};
pub use body::Body;
pub use builder::PurlyBuilder;
#[cfg(feature = "client")]
pub use client::{Ended, WsClient, WsClientError, CLOSE_TIMEOUT};
pub use client_files::{CLIENT_MODULE_SOURCE, CLIENT_TYPES_SOURCE};
pub use config::{RateLimit, ServerConfig};
#[cfg(feature = "client")]
pub use events_client::{EventsClient, EventsClientError, EventsEnded};
pub use route::RouteKind;
pub use service::{Handled, Purly, RequestBody, ResponseFuture};
pub use upgrade::STREAM_SUBPROTOCOL;

pub use hyper;
pub use hyper_tungstenite;
pub use hyper_util;
pub use purly;
