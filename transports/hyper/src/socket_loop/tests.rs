//! The socket loops driven over channels.

#![allow(clippy::unwrap_used)]

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::{Sink, Stream};
use purly::{Engine, JoinOptions};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::stream::READ_STREAK;
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

/// A link over `ws` for `session`, with `config` and metrics of its own.
fn link<S: Socket>(ws: S, session: Session, outbox: Arc<Outbox>, config: ServerConfig) -> Link<S> {
    let metrics = TransportMetrics::register();
    Link::new(
        ws,
        session,
        outbox,
        LinkContext::new(Arc::new(config), Arc::new(metrics)),
    )
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
    let started = Instant::now();
    let ending = tokio::time::timeout(
        Duration::from_secs(10),
        run(link(&mut pipe, session, outbox, config)),
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
        tokio::join!(run(link(&mut pipe, session, outbox, config)), peer)
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
    let presence_id = session.presence_id();
    let (mut pipe, to_loop, mut from_loop) = channels();
    let task = run(link(&mut pipe, session, outbox, ServerConfig::default()));
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
        assert_eq!(frame[0].presence_id(), Some(&*presence_id));
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
    let presence_id = session.presence_id();
    let (mut pipe, to_loop, mut from_loop) = channels();
    let task = run(link(&mut pipe, session, outbox, ServerConfig::default()));
    let test = async {
        let first = next_text(&mut from_loop).await;
        assert!(first.contains(r#""snapshot":true"#), "{first}");
        // The snapshot names the connection's presence id, as the presence snapshot does.
        let frame = purly::parse_server_frame(&first).unwrap();
        let id = &presence_id;
        assert_eq!(frame[0].presence_id(), Some(&**id));
        assert_eq!(frame[1].presence_id(), Some(&**id));
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

#[tokio::test]
async fn a_burst_of_frames_is_answered_in_batches_and_never_starves_the_outbox() {
    let engine = Engine::default();
    let (outbox, session) = joined(&engine);
    let (mut pipe, to_loop, mut from_loop) = channels();
    let sent = 3 * usize::from(READ_STREAK) + 4;
    for id in 1..=sent {
        let frame =
            format!(r#"[{{"header":{{"type":"update","id":{id}}},"content":{{"n":{id}}}}}]"#);
        to_loop.send(Ok(Message::text(frame))).unwrap();
    }
    let task = run(link(&mut pipe, session, outbox, ServerConfig::default()));
    let test = async {
        // The echoes of each frame written, until all of them came.
        let mut per_frame = Vec::new();
        while per_frame.iter().sum::<usize>() < sent {
            let text = next_text(&mut from_loop).await;
            let echoes = purly::parse_server_frame(&text)
                .unwrap()
                .iter()
                .filter(|m| m.id().is_some())
                .count();
            if echoes > 0 {
                per_frame.push(echoes);
            }
        }
        to_loop.send(Ok(Message::Close(None))).unwrap();
        per_frame
    };
    let (ending, per_frame) = tokio::join!(task, test);
    assert_eq!(ending, Ending::PeerClosed);
    // Read first, so that the echoes go out together; but never more than a streak of frames
    // before the outbox is served.
    assert!(
        per_frame.iter().all(|&n| n <= usize::from(READ_STREAK)),
        "{per_frame:?}"
    );
    assert!(per_frame.len() <= 8, "{per_frame:?}");
}
