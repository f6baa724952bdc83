//! The per-connection loops, written once over any `Sink + Stream` of WebSocket messages so
//! that tests drive them with channels as well as with sockets.

use std::future::{poll_fn, Future};
use std::sync::Arc;
use std::task::{Context, Poll};
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
use tokio::time::{sleep, sleep_until, timeout, timeout_at, Instant};

use crate::config::ServerConfig;
use crate::rate_limit::{FrameLimiter, Verdict};
use crate::telemetry::TransportMetrics;

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

/// Serves one connection until it ends. `session`'s subscriber is `outbox`.
pub(crate) async fn run<S>(
    ws: &mut S,
    session: &Session,
    outbox: &Arc<Outbox>,
    config: &ServerConfig,
    metrics: &TransportMetrics,
) -> Ending
where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
{
    let socket_loop = SocketLoop {
        ws,
        session,
        outbox,
        config,
        metrics,
        missed_pings: 0,
        batch: Vec::new(),
        limiter: config
            .rate_limit
            .as_ref()
            .map(|limit| FrameLimiter::new(limit, std::time::Instant::now())),
        writes: 0,
        holding: false,
    };
    // The loop and its state in one allocation, sized for its own mode: a stream connection
    // does not carry the compat loop's timers (idle connections are mostly this future).
    match session.mode() {
        Mode::Stream => Box::pin(socket_loop.stream()).await,
        Mode::Compat => Box::pin(socket_loop.compat()).await,
    }
}

/// A frame with a snapshot larger than this is written in fragments, not copied.
const FRAGMENT_ABOVE: usize = 64 << 10;

struct SocketLoop<'a, S> {
    ws: &'a mut S,
    session: &'a Session,
    outbox: &'a Arc<Outbox>,
    config: &'a ServerConfig,
    metrics: &'a TransportMetrics,
    missed_pings: u32,
    /// Reused for every write: the queued messages of one frame.
    batch: Vec<ServerMessage>,
    /// The connection's rate limit, if any.
    limiter: Option<FrameLimiter>,
    /// Frames written so far (one in 16 is sampled for the queued-bytes histogram).
    writes: u32,
    /// The model is over its bounds: the socket is not read until it drains (TCP then pushes
    /// back on the client), while the connection's own messages and pings keep flowing.
    holding: bool,
}

/// What one received WebSocket message asks of the loop.
enum Incoming {
    /// A frame was handed to the engine (applied or refused).
    Frame,
    /// Control traffic only.
    Control,
    /// The connection is over.
    End(Ending),
}

impl<'a, S> SocketLoop<'a, S>
where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
{
    /// Stream mode: push whatever is queued as soon as it is, one coalesced frame per write.
    // Not an async fn: see the comment in the body.
    #[allow(clippy::manual_async_fn)]
    fn stream(mut self) -> impl Future<Output = Ending> + use<'a, S> {
        // An async block, not an async fn: the loop's state is then stored once in it, not twice.
        async move {
            loop {
                tokio::select! {
                    received = poll_fn(|cx| self.outbox.poll_recv(cx, &mut self.batch)) => match received {
                        Received::Messages => {
                            if let Err(ending) = self.write_batch(Mode::Stream).await {
                                return ending;
                            }
                        }
                        Received::Resync => {
                            // Fails only once the model is closed; the outbox then reports it.
                            let _ = self.session.resync();
                        }
                        Received::Closed(reason) => return self.close_for(reason).await,
                        // The service's pinger (no timer of its own: see `crate::pinger`).
                        Received::Notified => {
                            if let Err(ending) = self.ping().await {
                                return ending;
                            }
                        }
                    },
                    () = poll_fn(|cx| self.session.poll_ready(cx)), if self.holding => {
                        self.holding = false;
                    }
                    incoming = self.ws.next(), if !self.holding => {
                        if let Incoming::End(ending) = self.receive(incoming).await {
                            return ending;
                        }
                    }
                }
            }
        }
    }

    /// Compat mode (PROTOCOL.md section 3): the first frame is the state; then each client
    /// frame is answered by one frame of everything queued, at most `refresh_per_second` turns
    /// a second.
    // Not an async fn: see the comment in the body.
    #[allow(clippy::manual_async_fn)]
    fn compat(mut self) -> impl Future<Output = Ending> + use<'a, S> {
        // An async block, not an async fn: the loop's state is then stored once in it, not twice.
        async move {
            let period =
                Duration::from_secs_f64(1.0 / f64::from(self.config.refresh_per_second.max(1)));
            // The first frame is the state.
            loop {
                match poll_fn(|cx| self.outbox.poll_recv(cx, &mut self.batch)).await {
                    Received::Messages => {
                        if let Err(ending) = self.write_batch(Mode::Compat).await {
                            return ending;
                        }
                        break;
                    }
                    Received::Closed(reason) => return self.close_for(reason).await,
                    Received::Resync => break,
                    // A ping due this early waits for the next one.
                    Received::Notified => {}
                }
            }
            let mut next_turn = Instant::now() + period;
            let idle_timeout = self.config.compat_idle_timeout;
            let idle = sleep(idle_timeout);
            tokio::pin!(idle);
            loop {
                tokio::select! {
                    () = poll_fn(|cx| self.session.poll_ready(cx)), if self.holding => {
                        self.holding = false;
                        continue;
                    }
                    incoming = self.ws.next(), if !self.holding => match self.receive(incoming).await {
                        Incoming::End(ending) => return ending,
                        Incoming::Control => continue,
                        Incoming::Frame => idle.as_mut().reset(Instant::now() + idle_timeout),
                    },
                    () = &mut idle => {
                        let why = format!("no frame for {} s", idle_timeout.as_secs_f64());
                        return self.close(CloseCode::Policy, &why).await;
                    }
                    reason = poll_fn(|cx| self.outbox.poll_closed(cx)) => {
                        return self.close_for(reason).await;
                    }
                    () = poll_fn(|cx| self.outbox.poll_notified(cx)) => {
                        if let Err(ending) = self.ping().await {
                            return ending;
                        }
                        continue;
                    }
                }
                sleep_until(next_turn).await;
                next_turn = Instant::now() + period;
                // Everything queued, possibly nothing (`[]`). The engine disconnects a compat
                // subscriber that lags, so no resync is ever asked for here.
                if let Some(Received::Closed(reason)) = self.outbox.try_recv(&mut self.batch) {
                    return self.close_for(reason).await;
                }
                if let Err(ending) = self.write_batch(Mode::Compat).await {
                    return ending;
                }
            }
        }
    }

    async fn receive(&mut self, incoming: Option<Result<Message, WsError>>) -> Incoming {
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
                    Verdict::Close => return Box::pin(self.rate_limit_close()).await,
                }
                self.holding = self.session.must_wait();
                Incoming::Frame
            }
            Some(Ok(Message::Binary(bytes))) => {
                if self.rate_verdict(bytes.len()) == Verdict::Close {
                    return Box::pin(self.rate_limit_close()).await;
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
                    return Box::pin(self.rate_limit_close()).await;
                }
                Incoming::Control
            }
            Some(Ok(_)) => Incoming::Control,
            Some(Err(WsError::Capacity(error))) => Incoming::End(
                self.close(CloseCode::Size, &format!("frame too large: {error}"))
                    .await,
            ),
            // RFC 6455 section 7.1.7: a peer that breaks the protocol is told why.
            Some(Err(WsError::Protocol(error)))
                if error != ProtocolError::ResetWithoutClosingHandshake =>
            {
                let why = format!("protocol error: {error}");
                Incoming::End(self.close(CloseCode::Protocol, &why).await)
            }
            Some(Err(WsError::Utf8(_))) => Incoming::End(
                self.close(CloseCode::Invalid, "a text frame is not UTF-8")
                    .await,
            ),
            Some(Err(WsError::Io(error))) if error.kind() == std::io::ErrorKind::TimedOut => {
                let why = error.to_string();
                Incoming::End(self.close(CloseCode::Policy, &why).await)
            }
            Some(Err(error)) => Incoming::End(Ending::PeerLost(error.to_string())),
        }
    }

    /// What the rate limit says of a frame of `len` bytes arriving now.
    fn rate_verdict(&mut self, len: usize) -> Verdict {
        match (&mut self.limiter, &self.config.rate_limit) {
            (Some(limiter), Some(limit)) => limiter.check(limit, len, std::time::Instant::now()),
            _ => Verdict::Admit,
        }
    }

    /// Sends what is queued (the refusals so far), then closes with 1008.
    async fn rate_limit_close(&mut self) -> Incoming {
        if let Some(Received::Closed(reason)) = self.outbox.try_recv(&mut self.batch) {
            return Incoming::End(self.close_for(reason).await);
        }
        if !self.batch.is_empty() {
            if let Err(ending) = self.write_batch(self.session.mode()).await {
                return Incoming::End(ending);
            }
        }
        let reason = "rate limit exceeded; frames kept coming after rate_limited";
        Incoming::End(self.close(CloseCode::Policy, reason).await)
    }

    async fn ping(&mut self) -> Result<(), Ending> {
        if self.missed_pings >= self.config.max_missed_pings {
            return Err(Ending::PeerLost(format!(
                "{} pings unanswered",
                self.missed_pings
            )));
        }
        if self.missed_pings > 0 {
            self.metrics.pings_missed.increment(1);
        }
        self.missed_pings += 1;
        self.send(|_| Message::Ping(Default::default())).await
    }

    /// Writes the batch as one frame and empties it (keeping its capacity).
    async fn write_batch(&mut self, mode: Mode) -> Result<(), Ending> {
        if mode == Mode::Stream && self.batch.iter().any(ServerMessage::is_snapshot) {
            return self.write_named().await;
        }
        self.send(|this| this.take_frame(mode)).await
    }

    /// Writes a batch with a model snapshot, which names this connection's presence id
    /// (PROTOCOL.md section 11). A large one goes out as one message in several frames: the
    /// snapshot's content, shared by every joiner of its version, is written as it is, never
    /// copied (200 joiners of a 4 MB model do not make 800 MB of copies). A small one is
    /// copied into one frame, as every other message is sent.
    async fn write_named(&mut self) -> Result<(), Ending> {
        let mut chunks = encode_named_frame(&self.batch, &self.session.presence_id());
        let len = chunks.iter().map(Bytes::len).sum();
        if len <= FRAGMENT_ABOVE && chunks.len() > 1 {
            chunks = vec![Bytes::from(chunks.concat())];
        }
        self.count_frame(len);
        self.batch.clear();
        let last = chunks.len().saturating_sub(1);
        for (i, chunk) in chunks.into_iter().enumerate() {
            let opcode = match i {
                0 => OpData::Text,
                _ => OpData::Continue,
            };
            let frame = Frame::message(chunk, OpCode::Data(opcode), i == last);
            self.send(|_| Message::Frame(frame)).await?;
        }
        Ok(())
    }

    /// The batch as one frame, counted; the batch is left empty.
    fn take_frame(&mut self, mode: Mode) -> Message {
        // A lone message is shared with every subscriber it goes to, not copied.
        let frame = encode_frame_bytes(&self.batch, mode);
        self.count_frame(frame.len());
        self.batch.clear();
        // A text frame of the bytes as they are. They were written as a string; going through
        // tungstenite's `Utf8Bytes` would check them for UTF-8 again on every write, i.e. once
        // per subscriber for a shared frame.
        Message::Frame(Frame::message(frame, OpCode::Data(OpData::Text), true))
    }

    /// Counts the batch about to be written as a frame of `len` bytes.
    fn count_frame(&mut self, len: usize) {
        self.metrics.frames_sent.increment(1);
        self.metrics
            .messages_sent
            .increment(self.batch.len() as u64);
        // Sampled: one write in 16 (recording a histogram sample on every write costs more
        // than counting it).
        self.writes = self.writes.wrapping_add(1);
        if self.writes % 16 == 1 {
            self.metrics.queued_bytes.record(len as f64);
        }
    }

    /// Writes one message and flushes it, within `write_timeout`.
    ///
    /// Usually the socket takes the frame at once: no timer is set then, and the loop carries
    /// neither a timer nor the message while it waits for work (idle connections are mostly
    /// this loop). Only a write that has to wait gets its deadline, on the heap.
    async fn send(&mut self, message: impl FnOnce(&mut Self) -> Message) -> Result<(), Ending> {
        let mut deadline = None;
        self.write_step(&mut deadline, |ws, cx| ws.poll_ready_unpin(cx))
            .await?;
        // Made only once the socket can take it, so that no await holds it.
        let message = message(self);
        self.ws
            .start_send_unpin(message)
            .map_err(|error| Ending::PeerLost(error.to_string()))?;
        self.write_step(&mut deadline, |ws, cx| ws.poll_flush_unpin(cx))
            .await
    }

    /// Drives one step of a write (readiness or flush) to its end, or until `deadline` (set
    /// the first time a step has to wait).
    async fn write_step(
        &mut self,
        deadline: &mut Option<Instant>,
        step: fn(&mut S, &mut Context<'_>) -> Poll<Result<(), WsError>>,
    ) -> Result<(), Ending> {
        let ws = &mut *self.ws;
        let done = match poll_fn(|cx| Poll::Ready(step(ws, cx))).await {
            Poll::Ready(done) => done,
            Poll::Pending => {
                let at =
                    *deadline.get_or_insert_with(|| Instant::now() + self.config.write_timeout);
                match Box::pin(timeout_at(at, poll_fn(|cx| step(ws, cx)))).await {
                    Ok(done) => done,
                    Err(_) => return Err(Ending::PeerLost("write timed out".to_owned())),
                }
            }
        };
        done.map_err(|error| Ending::PeerLost(error.to_string()))
    }

    async fn close_for(&mut self, reason: CloseReason) -> Ending {
        let code = match reason {
            CloseReason::Overflow => CloseCode::Again,
            CloseReason::StoreFailed => CloseCode::Error,
            _ => CloseCode::Away,
        };
        self.close(code, &reason.to_string()).await
    }

    /// Sends a close frame, then reads until the peer's reply (briefly) so that the peer sees
    /// a clean close with our code rather than a dropped connection. On the heap: a connection
    /// closes once, and its loop need not carry room for it all its life.
    async fn close(&mut self, code: CloseCode, reason: &str) -> Ending {
        Box::pin(self.close_now(code, reason)).await
    }

    async fn close_now(&mut self, code: CloseCode, reason: &str) -> Ending {
        let frame = CloseFrame {
            code,
            reason: reason.chars().take(100).collect::<String>().into(),
        };
        if self.send(|_| Message::Close(Some(frame))).await.is_ok() {
            let drain = async { while let Some(Ok(_)) = self.ws.next().await {} };
            let _ = timeout(Duration::from_secs(2), drain).await;
        }
        Ending::ClosedByServer(code.into())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::pin::Pin;
    use std::task::{Context, Poll};

    use futures_util::{Sink, Stream};
    use purly::{Engine, JoinOptions};
    use tokio::sync::mpsc;

    use super::*;

    /// A WebSocket made of two channels: what the test sends in, what the loop writes out.
    struct Pipe {
        incoming: mpsc::UnboundedReceiver<Result<Message, WsError>>,
        outgoing: mpsc::UnboundedSender<Message>,
    }

    impl Stream for Pipe {
        type Item = Result<Message, WsError>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.incoming.poll_recv(cx)
        }
    }

    impl Sink<Message> for Pipe {
        type Error = WsError;
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
            Poll::Ready(Ok(()))
        }
        fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), WsError> {
            self.outgoing
                .send(item)
                .map_err(|_| WsError::ConnectionClosed)
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A WebSocket whose writes are flushed only once the test opens the gate: a peer that
    /// stops reading, then maybe reads again (and closes once it has seen `"a":1`).
    struct GatedPipe {
        written: Vec<Message>,
        open: Arc<std::sync::atomic::AtomicBool>,
        flusher: Arc<std::sync::Mutex<Option<std::task::Waker>>>,
    }

    impl Stream for GatedPipe {
        type Item = Result<Message, WsError>;
        fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            // The loop polls this again after each of its writes: no waker is needed.
            let seen = |m: &Message| text_of(m).is_some_and(|t| t.contains(r#""a":1"#));
            if self.written.iter().any(seen) {
                Poll::Ready(Some(Ok(Message::Close(None))))
            } else {
                Poll::Pending
            }
        }
    }

    impl Sink<Message> for GatedPipe {
        type Error = WsError;
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
            Poll::Ready(Ok(()))
        }
        fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), WsError> {
            self.written.push(item);
            Ok(())
        }
        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
            if self.open.load(std::sync::atomic::Ordering::SeqCst) {
                return Poll::Ready(Ok(()));
            }
            *self.flusher.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
            Poll::Ready(Ok(()))
        }
    }

    fn gated_pipe() -> (
        GatedPipe,
        Arc<std::sync::atomic::AtomicBool>,
        Arc<std::sync::Mutex<Option<std::task::Waker>>>,
    ) {
        let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flusher = Arc::new(std::sync::Mutex::new(None));
        let pipe = GatedPipe {
            written: Vec::new(),
            open: open.clone(),
            flusher: flusher.clone(),
        };
        (pipe, open, flusher)
    }

    /// A stream-mode session on model `m`, with the outbox the loop drains.
    fn joined(engine: &Engine) -> (Arc<Outbox>, Session) {
        let outbox = Arc::new(Outbox::new(engine.config().max_queued_bytes));
        let session = engine
            .join("m", outbox.clone(), JoinOptions::stream())
            .wait()
            .unwrap();
        (outbox, session)
    }

    #[tokio::test]
    async fn a_write_the_peer_never_takes_ends_the_connection_at_the_write_timeout() {
        let engine = Engine::default();
        let (outbox, session) = joined(&engine);
        let (mut pipe, _open, _flusher) = gated_pipe();
        let config = ServerConfig {
            write_timeout: Duration::from_millis(200),
            ..ServerConfig::default()
        };
        let metrics = TransportMetrics::register();
        let started = Instant::now();
        let ending = tokio::time::timeout(
            Duration::from_secs(10),
            run(&mut pipe, &session, &outbox, &config, &metrics),
        )
        .await
        .expect("the loop gives up on the write");
        assert_eq!(ending, Ending::PeerLost("write timed out".to_owned()));
        assert!(started.elapsed() >= Duration::from_millis(200));
        // The snapshot was handed to the socket; it was its flush that never ended.
        assert!(matches!(&pipe.written[..], [m] if text_of(m).unwrap().contains("snapshot")));
    }

    #[tokio::test]
    async fn a_write_that_waits_then_goes_through_keeps_the_connection() {
        let engine = Engine::default();
        let (outbox, session) = joined(&engine);
        let writer = engine
            .join("m", Arc::new(Outbox::new(1 << 20)), JoinOptions::stream())
            .await
            .unwrap();
        let (mut pipe, open, flusher) = gated_pipe();
        let config = ServerConfig::default(); // a 10 s write timeout
        let metrics = TransportMetrics::register();
        let peer = async {
            // The snapshot's flush waits on the closed gate; a diff is made meanwhile; then the
            // gate opens. The diff must follow, and the peer closes once it has it.
            let waker = loop {
                if let Some(waker) = flusher.lock().unwrap().take() {
                    break waker;
                }
                tokio::task::yield_now().await;
            };
            writer
                .send_text(r#"[{"header":{"type":"update"},"content":{"a":1}}]"#)
                .unwrap();
            open.store(true, std::sync::atomic::Ordering::SeqCst);
            waker.wake();
        };
        let (ending, ()) = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(run(&mut pipe, &session, &outbox, &config, &metrics), peer)
        })
        .await
        .expect("the loop goes on once the write goes through");
        assert_eq!(ending, Ending::PeerClosed);
        let texts: Vec<String> = pipe.written.iter().filter_map(text_of).collect();
        assert_eq!(texts.len(), 2, "{texts:?}");
        assert!(
            texts[0].contains("snapshot") && texts[1].contains(r#""a":1"#),
            "{texts:?}"
        );
    }

    /// The next text message the loop wrote, its fragments joined (a snapshot goes out in
    /// several frames: PROTOCOL.md section 11).
    async fn next_text(out: &mut mpsc::UnboundedReceiver<Message>) -> String {
        let mut text = Vec::new();
        loop {
            let message = tokio::time::timeout(Duration::from_secs(5), out.recv())
                .await
                .expect("the loop writes within 5 s")
                .expect("the loop is running");
            match message {
                Message::Text(whole) if text.is_empty() => return whole.to_string(),
                Message::Frame(frame)
                    if matches!(
                        frame.header().opcode,
                        OpCode::Data(OpData::Text | OpData::Continue)
                    ) =>
                {
                    let last = frame.header().is_final;
                    text.extend_from_slice(frame.payload());
                    if last {
                        return String::from_utf8(text).expect("a text message is UTF-8");
                    }
                }
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The text of a text frame the loop wrote (as a message or as a raw frame), checked for
    /// UTF-8 here.
    fn text_of(message: &Message) -> Option<String> {
        match message {
            Message::Text(text) => Some(text.to_string()),
            Message::Frame(frame) if frame.header().opcode == OpCode::Data(OpData::Text) => {
                Some(String::from_utf8(frame.payload().to_vec()).expect("a text frame is UTF-8"))
            }
            _ => None,
        }
    }

    /// A loop's socket made of two channels: what the test sends it, what it writes.
    #[allow(clippy::type_complexity)]
    fn channels() -> (
        Pipe,
        mpsc::UnboundedSender<Result<Message, WsError>>,
        mpsc::UnboundedReceiver<Message>,
    ) {
        let (to_loop, incoming) = mpsc::unbounded_channel();
        let (outgoing, from_loop) = mpsc::unbounded_channel();
        (Pipe { incoming, outgoing }, to_loop, from_loop)
    }

    #[tokio::test]
    async fn a_large_snapshot_goes_out_in_fragments_that_name_the_connection() {
        let engine = Engine::default();
        let mut big = purly::serde_json::Map::new();
        big.insert("big".into(), "x".repeat(200 << 10).into());
        engine.update("m", big).wait().unwrap();
        let (outbox, session) = joined(&engine);
        let (mut pipe, to_loop, mut from_loop) = channels();
        let config = ServerConfig::default();
        let metrics = TransportMetrics::register();
        let task = async { run(&mut pipe, &session, &outbox, &config, &metrics).await };
        let test = async {
            let mut fragments = Vec::new();
            loop {
                let message = tokio::time::timeout(Duration::from_secs(5), from_loop.recv())
                    .await
                    .unwrap()
                    .unwrap();
                let Message::Frame(frame) = message else {
                    panic!("a raw frame: {message:?}");
                };
                let last = frame.header().is_final;
                fragments.push((frame.header().opcode, frame.into_payload()));
                if last {
                    break;
                }
            }
            // A text frame, then continuations: the 200 KiB content is one of them, as is.
            assert!(fragments.len() >= 3, "{} fragments", fragments.len());
            assert_eq!(fragments[0].0, OpCode::Data(OpData::Text));
            assert!(fragments[1..]
                .iter()
                .all(|(opcode, _)| *opcode == OpCode::Data(OpData::Continue)));
            assert!(fragments
                .iter()
                .any(|(_, payload)| payload.len() >= 200 << 10));
            let text: Vec<u8> = fragments
                .iter()
                .flat_map(|(_, p)| p.iter().copied())
                .collect();
            let frame = purly::parse_server_frame(std::str::from_utf8(&text).unwrap()).unwrap();
            assert!(frame[0].is_snapshot());
            assert_eq!(frame[0].presence_id(), Some(&*session.presence_id()));
            assert_eq!(
                frame[0].content().unwrap()["big"].as_str().map(str::len),
                Some(200 << 10)
            );
            to_loop.send(Ok(Message::Close(None))).unwrap();
        };
        let (ending, ()) = tokio::join!(task, test);
        assert_eq!(ending, Ending::PeerClosed);
    }

    #[tokio::test]
    async fn the_stream_loop_runs_over_channels() {
        let engine = Engine::default();
        let (outbox, session) = joined(&engine);
        let (mut pipe, to_loop, mut from_loop) = channels();
        let config = ServerConfig::default();
        let metrics = TransportMetrics::register();
        let task = async { run(&mut pipe, &session, &outbox, &config, &metrics).await };
        let test = async {
            let first = next_text(&mut from_loop).await;
            assert!(first.contains(r#""snapshot":true"#), "{first}");
            // The snapshot names the connection's presence id, as the presence snapshot does.
            let frame = purly::parse_server_frame(&first).unwrap();
            let id = session.presence_id();
            assert_eq!(frame[0].presence_id(), Some(&*id));
            assert_eq!(frame[1].presence_id(), Some(&*id));
            to_loop
                .send(Ok(Message::text(
                    r#"[{"header":{"type":"update","id":1},"content":{"a":1}}]"#,
                )))
                .unwrap();
            let echo = next_text(&mut from_loop).await;
            assert!(
                echo.contains(r#""seq":1"#) && echo.contains(r#""id":1"#),
                "{echo}"
            );
            to_loop.send(Ok(Message::Binary(vec![1].into()))).unwrap();
            assert!(next_text(&mut from_loop)
                .await
                .contains("binary_not_supported"));
            to_loop.send(Ok(Message::Close(None))).unwrap();
        };
        let (ending, ()) = tokio::join!(task, test);
        assert_eq!(ending, Ending::PeerClosed);
        assert_eq!(engine.state("m").unwrap()["a"], 1);
    }
}
