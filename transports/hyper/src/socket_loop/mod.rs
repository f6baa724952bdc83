//! The per-connection loops, written once over any `Sink + Stream` of WebSocket messages so
//! that tests drive them with channels as well as with sockets.
//!
//! [`Link`] is what a connection works with in either mode, and what one received message or
//! one batch of queued messages asks of it; [`stream`] is stream mode's loop, a hand-written
//! future whose whole state is the link and a word (idle connections are mostly this future);
//! [`mod@compat`] is compat mode's, turns of its own timing written as `async` code.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use hyper_tungstenite::tungstenite::error::ProtocolError;
use hyper_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data as OpData, OpCode};
use hyper_tungstenite::tungstenite::protocol::frame::Frame;
use hyper_tungstenite::tungstenite::protocol::CloseFrame;
use hyper_tungstenite::tungstenite::{Error as WsError, Message};
use purly::{
    encode_frame_bytes, encode_named_frame, CloseReason, ErrorCode, FrameError, Mode, Outbox,
    Received, ServerMessage, Session,
};
use tokio::time::{sleep, Sleep};

use crate::batch::with_batch;
use crate::config::ServerConfig;
use crate::pinger::{Pinger, Registration};
use crate::rate_limit::{FrameLimiter, Verdict};
use crate::telemetry::TransportMetrics;

mod compat;
mod stream;

pub(crate) use stream::StreamLoop;

/// Serves one compat-mode connection until it ends, then counts and logs its end.
pub(crate) async fn run_compat<S: Socket>(link: Link<S>) {
    let mut link = link;
    let span = link.span();
    let ending = tracing::Instrument::instrument(compat::run(&mut link), span).await;
    link.ended(ending);
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The peer closed it, or its stream ended.
    PeerClosed,
    /// The peer stopped answering pings, a write timed out, or the socket failed.
    PeerLost(String),
    /// The server closed it with this close code.
    ClosedByServer(u16),
}

/// A WebSocket as the loops use it: messages in, messages out.
pub(crate) trait Socket:
    Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin
{
}

impl<S> Socket for S where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin
{
}

/// Serves `link`'s connection until it ends, in its session's mode (the tests' way in).
#[cfg(test)]
pub(crate) async fn run<S: Socket>(link: Link<S>) -> Ending {
    match link.session.mode() {
        Mode::Stream => StreamLoop::new(link).await,
        Mode::Compat => compat::run(&mut { link }).await,
    }
}

/// A frame with a snapshot larger than this is written in fragments, not copied.
const FRAGMENT_ABOVE: usize = 64 << 10;

/// How long a close waits for the peer's answer.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// What every WebSocket connection of a service shares: its configuration, its metrics, its
/// pinger (one pointer in each connection).
pub(crate) struct LinkContext {
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) metrics: Arc<TransportMetrics>,
    pinger: Pinger,
}

impl LinkContext {
    /// The context of a service's connections.
    pub(crate) fn new(config: Arc<ServerConfig>, metrics: Arc<TransportMetrics>) -> Arc<Self> {
        Arc::new(LinkContext {
            pinger: Pinger::new(config.ping_interval),
            config,
            metrics,
        })
    }
}

/// One connection's socket, session and counters: what its loop works with.
pub(crate) struct Link<S> {
    ws: S,
    session: Session,
    outbox: Arc<Outbox>,
    context: Arc<LinkContext>,
    /// The connection's place in the service's pinger, while the link lives.
    pings: Registration,
    missed_pings: u16,
    /// Frames written so far, wrapping (one in 16 is sampled for the queued-bytes histogram).
    writes: u8,
    /// The model is over its bounds: the socket is not read until it drains (TCP then pushes
    /// back on the client), while the connection's own messages and pings keep flowing.
    holding: bool,
    /// The connection's rate limit, if any.
    limiter: Option<FrameLimiter>,
}

/// What one received WebSocket message asks of the loop.
enum Incoming {
    /// A frame was handed to the engine (applied or refused).
    Frame,
    /// Control traffic only.
    Control,
    /// Past the rate limit: send what is queued (the refusals so far), then close with 1008.
    RateLimited,
    /// Close the connection with this code, telling the peer why.
    Close(CloseCode, String),
    /// The connection is over.
    End(Ending),
}

/// A message on its way out, frame by frame. Each frame gets `write_timeout` from the first
/// time the socket makes it wait; a frame the socket takes at once sets no timer.
pub(crate) struct Write {
    next: Option<Message>,
    rest: std::vec::IntoIter<Message>,
    /// `next` was handed to the socket: its flush is under way.
    flushing: bool,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl Write {
    fn one(message: Message) -> Write {
        Write::frames(message, Vec::new())
    }

    fn frames(first: Message, rest: Vec<Message>) -> Write {
        Write {
            next: Some(first),
            rest: rest.into_iter(),
            flushing: false,
            deadline: None,
        }
    }
}

/// What the outbox has for a connection.
enum Queued {
    /// What was queued, as one message.
    Write(Write),
    /// The subscriber lagged: ask the session for a resync.
    Resync,
    /// The engine stopped serving the connection.
    Closed(CloseReason),
    /// The service's pinger asks for a ping.
    Notified,
}

/// The rate limit's reason for closing.
const RATE_LIMIT_CLOSE: &str = "rate limit exceeded; frames kept coming after rate_limited";

impl<S: Socket> Link<S> {
    /// A link serving `session` (whose subscriber is `outbox`) over `ws`; the service's
    /// pinger pings it from now on. Must run inside a Tokio runtime.
    pub(crate) fn new(
        ws: S,
        session: Session,
        outbox: Arc<Outbox>,
        context: Arc<LinkContext>,
    ) -> Self {
        let limiter = context
            .config
            .rate_limit
            .as_ref()
            .map(|limit| FrameLimiter::new(limit, std::time::Instant::now()));
        Link {
            ws,
            pings: context.pinger.register(&outbox),
            session,
            outbox,
            context,
            missed_pings: 0,
            writes: 0,
            holding: false,
            limiter,
        }
    }

    /// Counts and logs the connection's start.
    pub(crate) fn started(&self, peer: Option<std::net::SocketAddr>) {
        let (model, id, mode) = (self.session.model(), self.session.id(), self.session.mode());
        tracing::info!(%model, client = %id, ?mode, ?peer, "connected");
        self.context.metrics.connections(mode).increment(1.0);
    }

    /// The connection's span for debug logging: its model, client and mode.
    pub(crate) fn span(&self) -> tracing::Span {
        let (model, id, mode) = (self.session.model(), self.session.id(), self.session.mode());
        tracing::debug_span!("connection", %model, client = %id, ?mode)
    }

    /// Counts and logs how the connection ended.
    pub(crate) fn ended(&self, ending: Ending) {
        let (model, id) = (self.session.model(), self.session.id());
        let metrics = &self.context.metrics;
        metrics.connections(self.session.mode()).decrement(1.0);
        match ending {
            Ending::PeerClosed => {
                metrics.closed_by_peer();
                tracing::info!(%model, client = %id, "disconnected");
            }
            Ending::PeerLost(why) => {
                metrics.lost();
                tracing::info!(%model, client = %id, %why, "disconnected: peer lost");
            }
            Ending::ClosedByServer(code) => {
                metrics.closed_by_server(code);
                tracing::info!(%model, client = %id, code, "disconnected: closed by server");
            }
        }
    }

    /// Hands a received message to the session; says what it asks of the loop.
    fn receive(&mut self, incoming: Option<Result<Message, WsError>>) -> Incoming {
        self.missed_pings = 0;
        match incoming {
            Some(Ok(Message::Text(text))) => {
                match self.rate_verdict(text.len()) {
                    // A refusal is queued to this session as an error message; nothing else.
                    Verdict::Admit => drop(self.session.send_text(&text)),
                    Verdict::Refuse => {
                        let error = FrameError::new(
                            ErrorCode::RateLimited,
                            "frames arrive faster than this connection may send; slow down",
                        );
                        self.session.refuse_text(&text, error);
                    }
                    Verdict::Close => return Incoming::RateLimited,
                }
                self.holding = self.session.must_wait();
                Incoming::Frame
            }
            Some(Ok(Message::Binary(bytes))) => {
                if self.rate_verdict(bytes.len()) == Verdict::Close {
                    return Incoming::RateLimited;
                }
                self.session.refuse(FrameError::new(
                    ErrorCode::BinaryNotSupported,
                    "purly frames are JSON text; binary frames are not supported",
                ));
                Incoming::Frame
            }
            Some(Ok(Message::Close(_))) | None => Incoming::End(Ending::PeerClosed),
            // Control frames count toward the rate limit: a ping flood is closed like a
            // frame flood (a ping past the limit is still answered: one pong for all).
            Some(Ok(Message::Ping(payload) | Message::Pong(payload))) => {
                if self.rate_verdict(payload.len()) == Verdict::Close {
                    return Incoming::RateLimited;
                }
                Incoming::Control
            }
            Some(Ok(_)) => Incoming::Control,
            Some(Err(WsError::Capacity(error))) => {
                Incoming::Close(CloseCode::Size, format!("frame too large: {error}"))
            }
            // RFC 6455 section 7.1.7: a peer that breaks the protocol is told why.
            Some(Err(WsError::Protocol(error)))
                if error != ProtocolError::ResetWithoutClosingHandshake =>
            {
                Incoming::Close(CloseCode::Protocol, format!("protocol error: {error}"))
            }
            Some(Err(WsError::Utf8(_))) => {
                Incoming::Close(CloseCode::Invalid, "a text frame is not UTF-8".to_owned())
            }
            Some(Err(WsError::Io(error))) if error.kind() == std::io::ErrorKind::TimedOut => {
                Incoming::Close(CloseCode::Policy, error.to_string())
            }
            Some(Err(error)) => Incoming::End(Ending::PeerLost(error.to_string())),
        }
    }

    /// What the rate limit says of a frame of `len` bytes arriving now.
    fn rate_verdict(&mut self, len: usize) -> Verdict {
        match (&mut self.limiter, &self.context.config.rate_limit) {
            (Some(limiter), Some(limit)) => limiter.check(limit, len, std::time::Instant::now()),
            _ => Verdict::Admit,
        }
    }

    /// The ping the service's pinger asks for, or the end of a peer that stopped answering.
    fn ping(&mut self) -> Result<Write, Ending> {
        if u32::from(self.missed_pings) >= self.context.config.max_missed_pings {
            return Err(Ending::PeerLost(format!(
                "{} pings unanswered",
                self.missed_pings
            )));
        }
        if self.missed_pings > 0 {
            self.context.metrics.pings_missed.increment(1);
        }
        self.missed_pings = self.missed_pings.saturating_add(1);
        Ok(Write::one(Message::Ping(Bytes::new())))
    }

    /// Waits for what the outbox has for this connection: what is queued as one message to
    /// write, or what else the outbox asks.
    fn poll_queued(&mut self, cx: &mut Context<'_>, mode: Mode) -> Poll<Queued> {
        with_batch(|batch| {
            Poll::Ready(match ready!(self.outbox.poll_recv(cx, batch)) {
                Received::Messages => Queued::Write(self.take_batch(batch, mode)),
                Received::Resync => Queued::Resync,
                Received::Closed(reason) => Queued::Closed(reason),
                Received::Notified => Queued::Notified,
            })
        })
    }

    /// What is queued now, as one message to write (`None` if nothing is queued, unless
    /// `even_empty`: compat mode's turns answer `[]`), or the engine's reason for closing.
    fn try_queued(&mut self, mode: Mode, even_empty: bool) -> Result<Option<Write>, CloseReason> {
        with_batch(|batch| {
            if let Some(Received::Closed(reason)) = self.outbox.try_recv(batch) {
                return Err(reason);
            }
            Ok((even_empty || !batch.is_empty()).then(|| self.take_batch(batch, mode)))
        })
    }

    /// `batch` as one message, counted.
    ///
    /// In stream mode, a batch with a model snapshot names this connection's presence id
    /// (PROTOCOL.md section 11). A large one goes out as one message in several frames: the
    /// snapshot's content, shared by every joiner of its version, is written as it is, never
    /// copied (200 joiners of a 4 MB model do not make 800 MB of copies). Everything else is
    /// one frame; a lone message is shared with every subscriber it goes to, not copied.
    fn take_batch(&mut self, batch: &[ServerMessage], mode: Mode) -> Write {
        if mode == Mode::Stream && batch.iter().any(ServerMessage::is_snapshot) {
            let mut chunks = encode_named_frame(batch, &self.session.presence_id());
            let len = chunks.iter().map(Bytes::len).sum();
            if len <= FRAGMENT_ABOVE && chunks.len() > 1 {
                chunks = vec![Bytes::from(chunks.concat())];
            }
            self.count_frame(batch.len(), len);
            let last = chunks.len().saturating_sub(1);
            let mut frames = chunks.into_iter().enumerate().map(|(i, chunk)| {
                let opcode = match i {
                    0 => OpData::Text,
                    _ => OpData::Continue,
                };
                Message::Frame(Frame::message(chunk, OpCode::Data(opcode), i == last))
            });
            let first = frames.next().unwrap_or_else(|| text_frame(Bytes::new()));
            return Write::frames(first, frames.collect());
        }
        let frame = encode_frame_bytes(batch, mode);
        self.count_frame(batch.len(), frame.len());
        Write::one(text_frame(frame))
    }

    /// Counts `messages` about to be written as a frame of `len` bytes.
    fn count_frame(&mut self, messages: usize, len: usize) {
        let metrics = &self.context.metrics;
        metrics.frames_sent.increment(1);
        metrics.messages_sent.increment(messages as u64);
        // Sampled: one write in 16 (recording a histogram sample on every write costs more
        // than counting it).
        self.writes = self.writes.wrapping_add(1);
        if self.writes % 16 == 1 {
            metrics.queued_bytes.record(len as f64);
        }
    }

    /// Drives `write` until the socket has flushed all of it, a frame's deadline passes, or
    /// the socket fails.
    fn poll_write(&mut self, cx: &mut Context<'_>, write: &mut Write) -> Poll<Result<(), Ending>> {
        loop {
            let step = if write.flushing {
                self.ws.poll_flush_unpin(cx)
            } else if write.next.is_some() {
                self.ws.poll_ready_unpin(cx)
            } else {
                return Poll::Ready(Ok(()));
            };
            match step {
                Poll::Ready(Ok(())) if write.flushing => {
                    write.flushing = false;
                    write.deadline = None;
                    write.next = write.rest.next();
                }
                Poll::Ready(Ok(())) => {
                    if let Some(message) = write.next.take() {
                        self.ws.start_send_unpin(message).map_err(lost)?;
                    }
                    write.flushing = true;
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(lost(error))),
                Poll::Pending => {
                    let timeout = self.context.config.write_timeout;
                    let deadline = write
                        .deadline
                        .get_or_insert_with(|| Box::pin(sleep(timeout)));
                    return match deadline.as_mut().poll(cx) {
                        Poll::Ready(()) => {
                            Poll::Ready(Err(Ending::PeerLost("write timed out".to_owned())))
                        }
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
    }

    /// Reads and drops what the peer sends until its stream ends or `deadline` passes: the
    /// wait for the answer to our close.
    fn poll_drain(&mut self, cx: &mut Context<'_>, deadline: &mut Pin<Box<Sleep>>) -> Poll<()> {
        loop {
            match self.ws.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(_) => return Poll::Ready(()),
                Poll::Pending => return deadline.as_mut().poll(cx),
            }
        }
    }

    /// Writes `write` to its end, then `Ok`.
    async fn send(&mut self, mut write: Write) -> Result<(), Ending> {
        poll_fn(|cx| self.poll_write(cx, &mut write)).await
    }

    /// Sends a close frame, then reads until the peer's reply (briefly) so that the peer sees
    /// a clean close with our code rather than a dropped connection.
    async fn close(&mut self, code: CloseCode, reason: &str) -> Ending {
        if self.send(close_message(code, reason)).await.is_ok() {
            let mut deadline = Box::pin(sleep(CLOSE_WAIT));
            poll_fn(|cx| self.poll_drain(cx, &mut deadline)).await;
        }
        Ending::ClosedByServer(code.into())
    }
}

impl<S> Drop for Link<S> {
    fn drop(&mut self) {
        self.context.pinger.unregister(self.pings);
    }
}

/// A text frame of `bytes` as they are. They were written as a string; going through
/// tungstenite's `Utf8Bytes` would check them for UTF-8 again on every write, i.e. once per
/// subscriber for a shared frame.
fn text_frame(bytes: Bytes) -> Message {
    Message::Frame(Frame::message(bytes, OpCode::Data(OpData::Text), true))
}

/// A close frame with `code` and (the first 100 characters of) `reason`.
fn close_message(code: CloseCode, reason: &str) -> Write {
    Write::one(Message::Close(Some(CloseFrame {
        code,
        reason: reason.chars().take(100).collect::<String>().into(),
    })))
}

/// The close code that tells a client why the engine stopped serving it.
fn close_code(reason: &CloseReason) -> CloseCode {
    match reason {
        CloseReason::Overflow => CloseCode::Again,
        CloseReason::StoreFailed => CloseCode::Error,
        _ => CloseCode::Away,
    }
}

/// A socket's failure as the connection's end.
fn lost(error: WsError) -> Ending {
    Ending::PeerLost(error.to_string())
}

#[cfg(test)]
mod tests;
