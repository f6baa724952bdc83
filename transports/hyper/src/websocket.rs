//! [`WebSocket`]: the server's side of RFC 6455 framing over an upgraded connection, holding
//! no buffer between frames.
//!
//! tungstenite's stream keeps a read buffer, a write buffer and a copy of its configuration
//! for each connection for all of its life: about a kilobyte per idle connection, however small
//! its buffers are set, and a small read buffer costs a system call per few hundred bytes of a
//! burst. Here reads go to a 16 KiB buffer on the stack; only the bytes of a frame that has not
//! fully arrived are kept, on the heap, until it has (freed once the connection waits again).
//! A frame is written from the bytes the engine encoded — shared by every subscriber it goes
//! to — with its header beside it in one vectored write, never copied into a buffer of the
//! connection's.
//!
//! It speaks tungstenite's [`Message`] and [`WsError`], so the socket loop is written once for
//! it and for the channels its tests use. The upgrade offers no extension: a frame with a
//! reserved bit set is a protocol error, as are unmasked client frames, fragmented or oversized
//! control frames, unknown opcodes and stray continuations. A ping is answered with a pong as
//! soon as the socket takes it (only the last unanswered ping, as RFC 6455 allows); a close is
//! answered with the same code, and ends the stream.

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Sink, Stream};
use hyper_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use hyper_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data};
use hyper_tungstenite::tungstenite::protocol::frame::Frame;
use hyper_tungstenite::tungstenite::protocol::CloseFrame;
use hyper_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most read from the socket at once (on the stack).
const CHUNK: usize = 16 << 10;

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;
const FIN: u8 = 0x80;

/// The most bytes written for one connection in one poll. A large frame (the snapshot of a
/// big model, to each of its joiners) goes out in slices, the task yielding between them: a
/// loopback socket takes megabytes in one write, and 200 joiners each copying 4 MB at once
/// would keep the runtime's threads from everyone else (a publisher's echo) for that long.
const WRITE_SLICE: usize = 256 << 10;

/// Frames up to this size (header included) are copied into one buffer and written with one
/// plain write; larger ones go out as header and payload in one vectored write.
const SMALL_FRAME: usize = 1024;

/// A server-side WebSocket over `io` (see the module docs).
#[derive(Debug)]
pub(crate) struct WebSocket<S> {
    io: S,
    /// Bytes read that are not a whole frame yet. Empty, and unallocated, while the
    /// connection waits.
    input: BytesMut,
    /// The frames so far of a message sent in several.
    fragments: Option<Box<Fragments>>,
    /// The frame being written: on the heap while it is (a connection that waits holds none).
    output: Option<Box<Output>>,
    /// A control frame of ours (a pong, or the answer to a close) to write after `output`.
    control: Option<Box<Output>>,
    /// The largest message accepted, in bytes.
    max_message: u32,
    /// This connection's share of the server's budget for unfinished messages, and their
    /// deadline (none: unbounded, as in the crate's own tests).
    unfinished: Option<Unfinished>,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// We sent a close: the peer's answer ends the stream.
    CloseSent,
    /// The stream is over (closed by either side, or failed).
    Ended,
}

#[derive(Debug)]
struct Fragments {
    text: bool,
    bytes: Vec<u8>,
    /// Text: how much of `bytes` is known to be UTF-8 (a character may be cut at the end).
    checked: usize,
}

impl Fragments {
    /// Text: fails as soon as the bytes so far cannot become UTF-8, whatever follows (RFC
    /// 6455 section 8.1, failing fast as Autobahn's strict cases expect); each byte is checked
    /// once.
    fn check_utf8(&mut self) -> Result<(), WsError> {
        if !self.text {
            return Ok(());
        }
        match std::str::from_utf8(&self.bytes[self.checked..]) {
            Ok(_) => self.checked = self.bytes.len(),
            Err(error) if error.error_len().is_none() => self.checked += error.valid_up_to(),
            Err(error) => return Err(WsError::Utf8(error.to_string())),
        }
        Ok(())
    }
}

/// A frame on its way out: its header, then its payload.
#[derive(Debug)]
struct Output {
    head: [u8; 10],
    head_len: u8,
    /// Bytes of header and payload written so far.
    written: usize,
    payload: Bytes,
}

impl Output {
    /// A frame whose first byte is `first` (FIN and opcode), unmasked as a server's are.
    fn new(first: u8, payload: Bytes) -> Output {
        let mut head = [0; 10];
        head[0] = first;
        let len = payload.len();
        let head_len = if let Some(short) = u8::try_from(len).ok().filter(|&n| n < 126) {
            head[1] = short;
            2
        } else if let Ok(medium) = u16::try_from(len) {
            head[1] = 126;
            head[2..4].copy_from_slice(&medium.to_be_bytes());
            4
        } else {
            head[1] = 127;
            head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        };
        Output {
            head,
            head_len,
            written: 0,
            payload,
        }
    }
}

/// A client frame's header.
#[derive(Debug)]
struct Head {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    /// The header's length, mask included.
    len: usize,
    payload_len: usize,
}

mod unfinished;
#[cfg(any(test, fuzzing))]
pub(crate) mod wire;

pub(crate) use unfinished::{Unfinished, UnfinishedBudget};

impl<S> WebSocket<S> {
    /// A WebSocket over `io`, once the upgrade is done, taking messages of up to
    /// `max_message` bytes.
    pub(crate) fn new(io: S, max_message: usize) -> WebSocket<S> {
        WebSocket {
            io,
            input: BytesMut::new(),
            fragments: None,
            output: None,
            control: None,
            // Past 4 GiB: as good as no bound.
            max_message: u32::try_from(max_message).unwrap_or(u32::MAX),
            unfinished: None,
            state: State::Open,
        }
    }

    /// The largest message accepted, in bytes.
    fn max_message(&self) -> usize {
        self.max_message as usize
    }

    /// Starts with `read` as input: bytes that arrived with the upgrade request, before
    /// there was a WebSocket to read them.
    pub(crate) fn with_input(mut self, read: &[u8]) -> Self {
        self.input.extend_from_slice(read);
        self
    }

    /// Holds unfinished messages to `unfinished`'s share and deadline.
    pub(crate) fn with_unfinished(mut self, unfinished: Unfinished) -> Self {
        self.unfinished = Some(unfinished);
        self
    }

    /// Takes the bytes held in unfinished messages (a frame still arriving, the earlier frames
    /// of a fragmented message) into account: fails past the server's budget.
    fn account(&mut self) -> Result<(), WsError> {
        let held = self.input.len() + self.fragments.as_ref().map_or(0, |f| f.bytes.len());
        match &mut self.unfinished {
            Some(unfinished) => unfinished.hold(held),
            None => Ok(()),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocket<S> {
    /// Writes what is pending (our frame, then our control frame) until the socket has all of
    /// it or would block, or [`WRITE_SLICE`] bytes were written in this call: then the task is
    /// woken and yields, and the rest goes out at its next poll.
    fn poll_output(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut slice = WRITE_SLICE;
        loop {
            let Some(out) = &mut self.output else {
                match self.control.take() {
                    Some(control) => {
                        self.output = Some(control);
                        continue;
                    }
                    None => return Poll::Ready(Ok(())),
                }
            };
            if slice == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let head = &out.head[..usize::from(out.head_len)];
            let io = Pin::new(&mut self.io);
            let total = head.len() + out.payload.len();
            let written = if out.written == 0 && total <= SMALL_FRAME {
                // A small frame in one piece: one plain write, cheaper in the kernel than a
                // vectored one of two pieces.
                let mut frame = [0u8; SMALL_FRAME];
                frame[..head.len()].copy_from_slice(head);
                frame[head.len()..total].copy_from_slice(&out.payload);
                ready!(io.poll_write(cx, &frame[..total]))?
            } else if out.written < head.len() {
                let parts = [
                    IoSlice::new(&head[out.written..]),
                    IoSlice::new(&out.payload[..out.payload.len().min(slice)]),
                ];
                ready!(io.poll_write_vectored(cx, &parts))?
            } else {
                let from = out.written - head.len();
                let to = out.payload.len().min(from + slice);
                ready!(io.poll_write(cx, &out.payload[from..to]))?
            };
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            slice = slice.saturating_sub(written);
            out.written += written;
            if out.written == head.len() + out.payload.len() {
                self.output = None;
            }
        }
    }

    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, WsError>>> {
        if self.state == State::Ended {
            return Poll::Ready(None);
        }
        // A pong (or the end of a write) goes out whenever the socket takes it.
        if let Poll::Ready(Err(error)) = self.poll_output(cx) {
            self.state = State::Ended;
            return Poll::Ready(Some(Err(WsError::Io(error))));
        }
        let mut polled = self.read_message(cx);
        if !matches!(polled, Poll::Ready(Some(Err(_)))) {
            if let Err(error) = self.account() {
                polled = Poll::Ready(Some(Err(error)));
            } else if let (Poll::Pending, Some(unfinished)) = (&polled, &mut self.unfinished) {
                if let Poll::Ready(error) = unfinished.poll_expired(cx) {
                    polled = Poll::Ready(Some(Err(error)));
                }
            }
        }
        match &polled {
            Poll::Ready(Some(Ok(Message::Ping(_) | Message::Close(_)))) => {
                // Their answer, at once if the socket takes it.
                let _ = self.poll_output(cx);
            }
            Poll::Ready(Some(Err(_)) | None) => self.state = State::Ended,
            _ => {}
        }
        polled
    }

    fn read_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, WsError>>> {
        loop {
            if !self.input.is_empty() {
                let mut input = std::mem::take(&mut self.input);
                let taken = self.take_frames(&mut input);
                if let Ok((used, _)) = &taken {
                    input.advance(*used);
                }
                self.input = input;
                match taken {
                    Ok((_, Some(message))) => return Poll::Ready(Some(Ok(message))),
                    Ok((_, None)) => {}
                    Err(error) => return Poll::Ready(Some(Err(error))),
                }
            }
            let mut chunk = [const { MaybeUninit::<u8>::uninit() }; CHUNK];
            let mut buf = ReadBuf::uninit(&mut chunk);
            match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                Poll::Pending => {
                    if self.input.is_empty() {
                        // Nothing held while the connection waits.
                        self.input = BytesMut::new();
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Some(Err(WsError::Io(error)))),
                Poll::Ready(Ok(())) => {}
            }
            let read = buf.filled_mut();
            if read.is_empty() {
                // The peer's side is shut: fine after our close, a reset otherwise.
                return Poll::Ready(match self.state {
                    State::CloseSent => None,
                    _ => Some(Err(WsError::Protocol(
                        ProtocolError::ResetWithoutClosingHandshake,
                    ))),
                });
            }
            if !self.input.is_empty() {
                self.input.extend_from_slice(read);
                if let Err(error) = self.account() {
                    return Poll::Ready(Some(Err(error)));
                }
                continue;
            }
            // The usual case: whole frames, straight from the stack; only a rest is kept.
            let (used, message) = match self.take_frames(read) {
                Ok(taken) => taken,
                Err(error) => return Poll::Ready(Some(Err(error))),
            };
            self.input.extend_from_slice(&read[used..]);
            if let Err(error) = self.account() {
                return Poll::Ready(Some(Err(error)));
            }
            if let Some(message) = message {
                return Poll::Ready(Some(Ok(message)));
            }
        }
    }

    /// Reads the frames at the start of `bytes` up to the first that completes a message:
    /// how many bytes they took, and that message if one is complete.
    fn take_frames(&mut self, bytes: &mut [u8]) -> Result<(usize, Option<Message>), WsError> {
        let mut used = 0;
        while let Some(head) = parse_head(&bytes[used..], self.max_message())? {
            let end = used + head.len + head.payload_len;
            if bytes.len() < end {
                break;
            }
            let payload = &mut bytes[used + head.len..end];
            unmask(payload, head.mask);
            used = end;
            if let Some(message) = self.on_frame(&head, payload)? {
                return Ok((used, Some(message)));
            }
        }
        Ok((used, None))
    }

    /// One whole, unmasked frame: the message it completes, if any.
    fn on_frame(&mut self, head: &Head, payload: &[u8]) -> Result<Option<Message>, WsError> {
        let max_message = self.max_message();
        match (head.opcode, &mut self.fragments) {
            (TEXT | BINARY, Some(fragments)) => {
                let data = if fragments.text {
                    Data::Text
                } else {
                    Data::Binary
                };
                Err(WsError::Protocol(ProtocolError::ExpectedFragment(data)))
            }
            (TEXT | BINARY, None) if !head.fin => {
                let mut fragments = Box::new(Fragments {
                    text: head.opcode == TEXT,
                    bytes: payload.to_vec(),
                    checked: 0,
                });
                fragments.check_utf8()?;
                self.fragments = Some(fragments);
                Ok(None)
            }
            (TEXT, None) => text(Bytes::copy_from_slice(payload)).map(Some),
            (BINARY, None) => Ok(Some(Message::Binary(Bytes::copy_from_slice(payload)))),
            (CONTINUATION, None) => Err(WsError::Protocol(ProtocolError::UnexpectedContinueFrame)),
            (CONTINUATION, Some(fragments)) => {
                let size = fragments.bytes.len() + payload.len();
                if size > max_message {
                    return Err(WsError::Capacity(CapacityError::MessageTooLong {
                        size,
                        max_size: max_message,
                    }));
                }
                fragments.bytes.extend_from_slice(payload);
                if !head.fin {
                    fragments.check_utf8()?;
                    return Ok(None);
                }
                let Some(fragments) = self.fragments.take() else {
                    return Ok(None);
                };
                let bytes = Bytes::from(fragments.bytes);
                if fragments.text {
                    text(bytes).map(Some)
                } else {
                    Ok(Some(Message::Binary(bytes)))
                }
            }
            (PING, _) => {
                let payload = Bytes::copy_from_slice(payload);
                self.control = Some(Box::new(Output::new(FIN | PONG, payload.clone())));
                Ok(Some(Message::Ping(payload)))
            }
            (PONG, _) => Ok(Some(Message::Pong(Bytes::copy_from_slice(payload)))),
            (CLOSE, _) => {
                let frame = close_frame(payload)?;
                if self.state == State::Open {
                    // The same code back (RFC 6455 section 5.5.1); one we may not see, 1002.
                    let answer = frame.as_ref().map(|frame| CloseFrame {
                        code: if frame.code.is_allowed() {
                            frame.code
                        } else {
                            CloseCode::Protocol
                        },
                        reason: Utf8Bytes::default(),
                    });
                    let payload = Frame::close(answer).into_payload();
                    self.control = Some(Box::new(Output::new(FIN | CLOSE, payload)));
                }
                self.state = State::Ended;
                Ok(Some(Message::Close(frame)))
            }
            // `parse_head` lets no other opcode through.
            (opcode, _) => Err(WsError::Protocol(ProtocolError::UnknownDataFrameType(
                opcode,
            ))),
        }
    }
}

/// A text message, checked for UTF-8.
fn text(bytes: Bytes) -> Result<Message, WsError> {
    Utf8Bytes::try_from(bytes)
        .map(Message::Text)
        .map_err(|error| WsError::Utf8(error.to_string()))
}

/// The header at the start of `bytes`, once all of it has arrived, checked.
fn parse_head(bytes: &[u8], max_message: usize) -> Result<Option<Head>, WsError> {
    let protocol = |error| Err(WsError::Protocol(error));
    let [first, second, ..] = *bytes else {
        return Ok(None);
    };
    if first & 0x70 != 0 {
        return protocol(ProtocolError::NonZeroReservedBits);
    }
    if second & 0x80 == 0 {
        return protocol(ProtocolError::UnmaskedFrameFromClient);
    }
    let fin = first & FIN != 0;
    let opcode = first & 0x0F;
    let (payload_len, at) = match second & 0x7F {
        126 => match bytes.get(2..4) {
            Some(&[a, b]) => (u64::from(u16::from_be_bytes([a, b])), 4),
            _ => return Ok(None),
        },
        127 => match bytes.get(2..10) {
            Some(long) => {
                let mut be = [0; 8];
                be.copy_from_slice(long);
                (u64::from_be_bytes(be), 10)
            }
            None => return Ok(None),
        },
        short => (u64::from(short), 2),
    };
    match opcode {
        CLOSE | PING | PONG if !fin => return protocol(ProtocolError::FragmentedControlFrame),
        CLOSE | PING | PONG if payload_len > 125 => {
            return protocol(ProtocolError::ControlFrameTooBig)
        }
        CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG => {}
        0x3..=0x7 => return protocol(ProtocolError::UnknownDataFrameType(opcode)),
        _ => return protocol(ProtocolError::UnknownControlFrameType(opcode)),
    }
    let payload_len = match usize::try_from(payload_len) {
        Ok(len) if len <= max_message => len,
        _ => {
            return Err(WsError::Capacity(CapacityError::MessageTooLong {
                size: usize::try_from(payload_len).unwrap_or(usize::MAX),
                max_size: max_message,
            }))
        }
    };
    let Some(mask) = bytes.get(at..at + 4) else {
        return Ok(None);
    };
    Ok(Some(Head {
        fin,
        opcode,
        mask: [mask[0], mask[1], mask[2], mask[3]],
        len: at + 4,
        payload_len,
    }))
}

/// Unmasks a client frame's payload in place, eight bytes at a time.
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let [a, b, c, d] = mask;
    let wide = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let mut words = payload.chunks_exact_mut(8);
    for word in &mut words {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(word);
        word.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ wide).to_ne_bytes());
    }
    // Eight is a multiple of four: the rest starts at the mask's first byte.
    for (byte, key) in words.into_remainder().iter_mut().zip(mask.iter().cycle()) {
        *byte ^= key;
    }
}

/// A close frame's code and reason (RFC 6455 section 5.5.1), if it has any.
fn close_frame(payload: &[u8]) -> Result<Option<CloseFrame>, WsError> {
    match payload {
        [] => Ok(None),
        [_] => Err(WsError::Protocol(ProtocolError::InvalidCloseSequence)),
        [high, low, reason @ ..] => {
            let reason =
                std::str::from_utf8(reason).map_err(|error| WsError::Utf8(error.to_string()))?;
            Ok(Some(CloseFrame {
                code: CloseCode::from(u16::from_be_bytes([*high, *low])),
                reason: reason.into(),
            }))
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for WebSocket<S> {
    type Item = Result<Message, WsError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_message(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for WebSocket<S> {
    type Error = WsError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        self.get_mut().poll_output(cx).map_err(WsError::Io)
    }

    fn start_send(self: Pin<&mut Self>, message: Message) -> Result<(), WsError> {
        let this = self.get_mut();
        if this.output.is_some() {
            return Err(WsError::WriteBufferFull(Box::new(message)));
        }
        if this.state == State::CloseSent {
            return Err(WsError::Protocol(ProtocolError::SendAfterClosing));
        }
        let (first, payload) = match message {
            Message::Text(text) => (FIN | TEXT, Bytes::from(text)),
            Message::Binary(bytes) => (FIN | BINARY, bytes),
            Message::Ping(bytes) => (FIN | PING, bytes),
            Message::Pong(bytes) => (FIN | PONG, bytes),
            Message::Close(frame) => {
                if this.state == State::Open {
                    this.state = State::CloseSent;
                }
                (FIN | CLOSE, Frame::close(frame).into_payload())
            }
            Message::Frame(frame) => {
                let fin = if frame.header().is_final { FIN } else { 0 };
                (fin | u8::from(frame.header().opcode), frame.into_payload())
            }
        };
        this.output = Some(Box::new(Output::new(first, payload)));
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        let this = self.get_mut();
        ready!(this.poll_output(cx))?;
        Pin::new(&mut this.io).poll_flush(cx).map_err(WsError::Io)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        let this = self.get_mut();
        ready!(this.poll_output(cx))?;
        Pin::new(&mut this.io)
            .poll_shutdown(cx)
            .map_err(WsError::Io)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::VecDeque;
    use std::io::Cursor;
    use std::task::Waker;

    use futures_util::{SinkExt, StreamExt};
    use hyper_tungstenite::tungstenite::protocol::frame::coding::{Control, OpCode};
    use hyper_tungstenite::tungstenite::protocol::frame::FrameHeader;
    use proptest::prelude::*;

    use super::wire::Wire;
    use super::*;

    const MAX: usize = 1 << 20;

    fn socket(bytes: Vec<u8>, eof: bool) -> WebSocket<Wire> {
        let wire = Wire {
            chunks: VecDeque::from([bytes])
                .into_iter()
                .filter(|b| !b.is_empty())
                .collect(),
            eof,
            vectored: true,
            ..Wire::default()
        };
        WebSocket::new(wire, MAX)
    }

    /// Counts the times it was woken.
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: std::sync::Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &std::sync::Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn a_large_frame_goes_out_in_slices_and_the_task_yields_between_them() {
        let payload: Vec<u8> = (0..(WRITE_SLICE * 2 + 1000)).map(|i| i as u8).collect();
        let mut ws = socket(Vec::new(), false);
        let wakes = std::sync::Arc::new(Wakes(Default::default()));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(ws.poll_ready_unpin(&mut cx).is_ready());
        let frame = Frame::message(payload.clone(), OpCode::Data(Data::Binary), true);
        ws.start_send_unpin(Message::Frame(frame)).unwrap();
        // The socket would take it all at once; each poll writes one slice, then yields (woken
        // at once: the rest is not waiting for the socket).
        let mut polls = 0;
        let head = 10;
        while ws.poll_flush_unpin(&mut cx).is_pending() {
            polls += 1;
            assert_eq!(ws.io.written.len(), head + polls * WRITE_SLICE);
            assert_eq!(wakes.0.load(std::sync::atomic::Ordering::SeqCst), polls);
        }
        assert_eq!(polls, 2);
        let written: Vec<Vec<u8>> = server_frames(&ws.io.written)
            .into_iter()
            .map(|(_, _, p)| p)
            .collect();
        assert_eq!(written, vec![payload]);
    }

    /// What the next poll of the stream gives (no waker: the wire never wakes).
    fn next(ws: &mut WebSocket<Wire>) -> Poll<Option<Result<Message, WsError>>> {
        ws.poll_next_unpin(&mut Context::from_waker(Waker::noop()))
    }

    fn next_message(ws: &mut WebSocket<Wire>) -> Message {
        match next(ws) {
            Poll::Ready(Some(Ok(message))) => message,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    fn next_error(ws: &mut WebSocket<Wire>) -> WsError {
        loop {
            match next(ws) {
                Poll::Ready(Some(Err(error))) => return error,
                Poll::Ready(Some(Ok(_))) => {}
                other => panic!("expected an error, got {other:?}"),
            }
        }
    }

    /// A client's frame, as tungstenite formats it (masked with `mask`).
    fn client_frame(opcode: OpCode, fin: bool, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let header = FrameHeader {
            is_final: fin,
            opcode,
            mask: Some(mask),
            ..FrameHeader::default()
        };
        let frame = Frame::from_payload(header, payload.to_vec().into());
        let mut out = Vec::new();
        frame.format(&mut out).unwrap();
        out
    }

    fn text_frame(text: &str) -> Vec<u8> {
        client_frame(
            OpCode::Data(Data::Text),
            true,
            text.as_bytes(),
            [1, 2, 3, 4],
        )
    }

    /// The frames the server wrote, parsed by tungstenite: opcode, FIN, payload.
    fn server_frames(bytes: &[u8]) -> Vec<(OpCode, bool, Vec<u8>)> {
        let mut cursor = Cursor::new(bytes);
        let mut frames = Vec::new();
        while (cursor.position() as usize) < bytes.len() {
            let (header, len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            assert_eq!(header.mask, None, "a server's frames are not masked");
            let start = cursor.position() as usize;
            let end = start + len as usize;
            frames.push((header.opcode, header.is_final, bytes[start..end].to_vec()));
            cursor.set_position(end as u64);
        }
        frames
    }

    /// One message as a client sends it, in `pieces` frames.
    #[derive(Debug, Clone)]
    struct Sent {
        text: bool,
        payload: Vec<u8>,
        /// Where the payload is cut into frames.
        cuts: Vec<usize>,
        /// Whether a ping goes between each two frames.
        pings: Vec<bool>,
        mask: [u8; 4],
    }

    fn sent() -> impl Strategy<Value = Sent> {
        let len = prop_oneof![
            0..200usize,
            Just(125usize),
            Just(126),
            Just(65_535),
            Just(65_536),
            1_000..70_000usize,
        ];
        (
            any::<bool>(),
            len,
            proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
            proptest::collection::vec(any::<bool>(), 4),
            any::<[u8; 4]>(),
            any::<u8>(),
        )
            .prop_map(|(text, len, cuts, pings, mask, seed)| {
                // Text: multi-byte characters too, cut anywhere (even inside a character).
                let mut payload = Vec::new();
                while payload.len() < len {
                    if text {
                        let c = ['a', 'é', '€', '𝄞'][(payload.len() + usize::from(seed)) % 4];
                        let mut utf8 = [0; 4];
                        payload.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                    } else {
                        payload.push(seed.wrapping_add(payload.len() as u8));
                    }
                }
                let mut cuts: Vec<usize> =
                    cuts.iter().map(|i| i.index(payload.len() + 1)).collect();
                cuts.sort_unstable();
                Sent {
                    text,
                    payload,
                    cuts,
                    pings,
                    mask,
                }
            })
    }

    /// The client's bytes for `messages`, and the payloads of the pings among them.
    fn client_bytes(messages: &[Sent]) -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut bytes = Vec::new();
        let mut pings = Vec::new();
        for message in messages {
            let mut start = 0;
            let ends = message.cuts.iter().copied().chain([message.payload.len()]);
            let count = message.cuts.len() + 1;
            for (i, end) in ends.enumerate() {
                let opcode = match (i, message.text) {
                    (0, true) => OpCode::Data(Data::Text),
                    (0, false) => OpCode::Data(Data::Binary),
                    _ => OpCode::Data(Data::Continue),
                };
                let piece = &message.payload[start..end];
                bytes.extend(client_frame(opcode, i + 1 == count, piece, message.mask));
                start = end;
                if i + 1 < count && message.pings[i] {
                    let payload = format!("ping {}", pings.len()).into_bytes();
                    let ping = OpCode::Control(Control::Ping);
                    bytes.extend(client_frame(ping, true, &payload, message.mask));
                    pings.push(payload);
                }
            }
        }
        (bytes, pings)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Messages of any size, in any number of frames with pings between them, arriving in
        /// chunks of any size, come out whole and in order; every ping is answered with its
        /// payload; nothing is held once the wire is drained.
        #[test]
        fn messages_come_out_whole_however_they_are_framed_and_cut(
            messages in proptest::collection::vec(sent(), 1..6),
            chunk_sizes in proptest::collection::vec(1..20_000usize, 1..50),
        ) {
            let (bytes, pings) = client_bytes(&messages);
            let mut chunks = VecDeque::new();
            let mut rest = &bytes[..];
            for size in chunk_sizes.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (chunk, after) = rest.split_at((*size).min(rest.len()));
                chunks.push_back(chunk.to_vec());
                rest = after;
            }
            let wire = Wire { chunks, vectored: true, ..Wire::default() };
            let mut ws = WebSocket::new(wire, MAX);
            let mut received = Vec::new();
            let mut pinged = Vec::new();
            loop {
                match next(&mut ws) {
                    Poll::Ready(Some(Ok(Message::Text(text)))) => {
                        received.push((true, text.as_bytes().to_vec()));
                    }
                    Poll::Ready(Some(Ok(Message::Binary(bytes)))) => {
                        received.push((false, bytes.to_vec()));
                    }
                    Poll::Ready(Some(Ok(Message::Ping(payload)))) => pinged.push(payload.to_vec()),
                    Poll::Pending => break,
                    other => panic!("unexpected {other:?}"),
                }
            }
            let expected: Vec<(bool, Vec<u8>)> =
                messages.iter().map(|m| (m.text, m.payload.clone())).collect();
            prop_assert_eq!(received, expected);
            prop_assert_eq!(&pinged, &pings);
            let pongs: Vec<Vec<u8>> = server_frames(&ws.io.written)
                .into_iter()
                .map(|(opcode, fin, payload)| {
                    assert_eq!((opcode, fin), (OpCode::Control(Control::Pong), true));
                    payload
                })
                .collect();
            prop_assert_eq!(pongs, pings);
            prop_assert_eq!(ws.input.capacity(), 0, "the drained connection holds no buffer");
            prop_assert!(ws.fragments.is_none());
        }

        /// Whatever the socket takes per write, and whether or not it writes vectors, the
        /// bytes on the wire are the frames sent.
        #[test]
        fn frames_are_written_whole_through_partial_writes(
            sizes in proptest::collection::vec(prop_oneof![0..300usize, Just(125usize), Just(126), Just(65_535), Just(65_536)], 1..5),
            write_limit in 1..5_000usize,
            vectored in any::<bool>(),
        ) {
            let wire = Wire { write_limit: Some(write_limit), vectored, ..Wire::default() };
            let mut ws = WebSocket::new(wire, MAX);
            let payloads: Vec<Vec<u8>> = sizes
                .iter()
                .enumerate()
                .map(|(i, &size)| (0..size).map(|j| (i + j) as u8).collect())
                .collect();
            let mut cx = Context::from_waker(Waker::noop());
            for payload in &payloads {
                prop_assert!(ws.poll_ready_unpin(&mut cx).is_ready());
                let frame = Frame::message(payload.clone(), OpCode::Data(Data::Binary), true);
                ws.start_send_unpin(Message::Frame(frame)).unwrap();
                prop_assert!(matches!(ws.poll_flush_unpin(&mut cx), Poll::Ready(Ok(()))));
            }
            let written: Vec<Vec<u8>> =
                server_frames(&ws.io.written).into_iter().map(|(_, _, p)| p).collect();
            prop_assert_eq!(written, payloads);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever bytes arrive, cut however, the stream gives messages, then an error or the
        /// end, or waits for more; it never panics, and after an error or the end it stays
        /// ended.
        #[test]
        fn any_bytes_end_in_messages_an_error_or_a_wait(
            bytes in proptest::collection::vec(any::<u8>(), 0..3_000),
            masked in any::<bool>(),
            cut in 1..500usize,
            eof in any::<bool>(),
        ) {
            let mut bytes = bytes;
            if masked && bytes.len() > 1 {
                // Most random headers are unmasked: set the bit so that payloads get read.
                bytes[1] |= 0x80;
            }
            let chunks = bytes.chunks(cut).map(<[u8]>::to_vec).collect();
            let wire = Wire { chunks, eof, vectored: true, ..Wire::default() };
            let mut ws = WebSocket::new(wire, 1_000);
            let mut ended = false;
            for _ in 0..bytes.len() + 2 {
                match next(&mut ws) {
                    Poll::Ready(Some(Ok(_))) => prop_assert!(!ended),
                    Poll::Ready(Some(Err(_)) | None) => ended = true,
                    Poll::Pending => {
                        prop_assert!(!ended && !eof);
                        break;
                    }
                }
            }
            prop_assert!(ended || !eof, "a closed wire ends the stream");
        }
    }

    #[test]
    fn a_frame_split_across_reads_is_held_only_until_it_is_whole() {
        let frame = text_frame("hello");
        let wire = Wire {
            chunks: VecDeque::from([frame[..3].to_vec()]),
            vectored: true,
            ..Wire::default()
        };
        let mut ws = WebSocket::new(wire, MAX);
        assert!(next(&mut ws).is_pending());
        assert_eq!(ws.input.len(), 3, "the start of the frame is kept");
        ws.io.chunks.push_back(frame[3..].to_vec());
        assert_eq!(next_message(&mut ws), Message::text("hello"));
        assert!(next(&mut ws).is_pending());
        assert_eq!(ws.input.capacity(), 0);
    }

    #[test]
    fn protocol_violations_end_the_stream_with_their_error() {
        let ping = OpCode::Control(Control::Ping);
        let mut rsv = text_frame("a");
        rsv[0] |= 0x40;
        let mut opcode_3 = text_frame("a");
        opcode_3[0] = FIN | 0x3;
        let mut opcode_b = text_frame("a");
        opcode_b[0] = FIN | 0xB;
        let continuation = client_frame(OpCode::Data(Data::Continue), true, b"a", [9; 4]);
        let mut text_mid_message = client_frame(OpCode::Data(Data::Text), false, b"a", [9; 4]);
        text_mid_message.extend(text_frame("b"));
        let cases: Vec<(&str, Vec<u8>, ProtocolError)> = vec![
            (
                "unmasked",
                vec![FIN | TEXT, 1, b'a'],
                ProtocolError::UnmaskedFrameFromClient,
            ),
            ("reserved bit", rsv, ProtocolError::NonZeroReservedBits),
            (
                "fragmented ping",
                client_frame(ping, false, b"", [9; 4]),
                ProtocolError::FragmentedControlFrame,
            ),
            (
                "long ping",
                client_frame(ping, true, &[0; 126], [9; 4]),
                ProtocolError::ControlFrameTooBig,
            ),
            ("opcode 3", opcode_3, ProtocolError::UnknownDataFrameType(3)),
            (
                "opcode 11",
                opcode_b,
                ProtocolError::UnknownControlFrameType(11),
            ),
            (
                "stray continuation",
                continuation,
                ProtocolError::UnexpectedContinueFrame,
            ),
            (
                "new message mid-message",
                text_mid_message,
                ProtocolError::ExpectedFragment(Data::Text),
            ),
            (
                "one-byte close",
                client_frame(OpCode::Control(Control::Close), true, &[3], [9; 4]),
                ProtocolError::InvalidCloseSequence,
            ),
        ];
        for (case, bytes, expected) in cases {
            let mut ws = socket(bytes, false);
            match next_error(&mut ws) {
                WsError::Protocol(error) => assert_eq!(error, expected, "{case}"),
                other => panic!("{case}: {other:?}"),
            }
            assert!(
                matches!(next(&mut ws), Poll::Ready(None)),
                "{case}: the stream is over"
            );
        }
    }

    #[test]
    fn an_oversized_frame_is_refused_from_its_header() {
        // Only the header of a 2 MiB frame: refused before its payload arrives.
        let mut head = vec![FIN | TEXT, 0x80 | 127];
        head.extend_from_slice(&(2u64 << 20).to_be_bytes());
        head.extend_from_slice(&[1, 2, 3, 4]);
        let mut ws = socket(head, false);
        assert!(matches!(
            next_error(&mut ws),
            WsError::Capacity(CapacityError::MessageTooLong { size, max_size: MAX }) if size == 2 << 20
        ));
        // A message over the limit in frames each under it.
        let half = vec![b'a'; MAX / 2 + 1];
        let mut bytes = client_frame(OpCode::Data(Data::Text), false, &half, [1; 4]);
        bytes.extend(client_frame(
            OpCode::Data(Data::Continue),
            true,
            &half,
            [1; 4],
        ));
        let mut ws = socket(bytes, false);
        assert!(matches!(
            next_error(&mut ws),
            WsError::Capacity(CapacityError::MessageTooLong { size, .. }) if size == MAX + 2
        ));
    }

    #[test]
    fn text_that_is_not_utf8_is_refused() {
        let whole = client_frame(OpCode::Data(Data::Text), true, &[b'a', 0xFF], [5; 4]);
        assert!(matches!(
            next_error(&mut socket(whole, false)),
            WsError::Utf8(_)
        ));
        // "é" cut between two frames is fine; a lone continuation byte is not.
        let mut cut = client_frame(OpCode::Data(Data::Text), false, &[0xC3], [5; 4]);
        cut.extend(client_frame(
            OpCode::Data(Data::Continue),
            true,
            &[0xA9],
            [5; 4],
        ));
        assert_eq!(next_message(&mut socket(cut, false)), Message::text("é"));
        let mut bad = client_frame(OpCode::Data(Data::Text), false, b"a", [5; 4]);
        bad.extend(client_frame(
            OpCode::Data(Data::Continue),
            true,
            &[0xA9],
            [5; 4],
        ));
        assert!(matches!(
            next_error(&mut socket(bad, false)),
            WsError::Utf8(_)
        ));
    }

    #[test]
    fn a_stream_that_ends_without_a_close_is_a_reset() {
        for bytes in [Vec::new(), text_frame("cut")[..4].to_vec()] {
            let mut ws = socket(bytes, true);
            assert!(matches!(
                next_error(&mut ws),
                WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)
            ));
        }
    }

    fn close_payload(code: u16, reason: &str) -> Vec<u8> {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        payload
    }

    const CLOSE_OP: OpCode = OpCode::Control(Control::Close);

    #[test]
    fn the_peers_close_is_answered_with_its_code_and_ends_the_stream() {
        let mut bytes = client_frame(CLOSE_OP, true, &close_payload(1000, "bye"), [7; 4]);
        bytes.extend(text_frame("after the close"));
        let mut ws = socket(bytes, false);
        let Message::Close(Some(frame)) = next_message(&mut ws) else {
            panic!("expected a close");
        };
        assert_eq!(
            (frame.code, frame.reason.as_str()),
            (CloseCode::Normal, "bye")
        );
        assert!(matches!(next(&mut ws), Poll::Ready(None)));
        assert_eq!(
            server_frames(&ws.io.written),
            [(CLOSE_OP, true, close_payload(1000, ""))]
        );
        // A code that may not be sent (1005) is answered with 1002; no code, with none.
        let mut ws = socket(
            client_frame(CLOSE_OP, true, &close_payload(1005, ""), [7; 4]),
            false,
        );
        next_message(&mut ws);
        assert_eq!(
            server_frames(&ws.io.written),
            [(CLOSE_OP, true, close_payload(1002, ""))]
        );
        let mut ws = socket(client_frame(CLOSE_OP, true, &[], [7; 4]), false);
        assert_eq!(next_message(&mut ws), Message::Close(None));
        assert_eq!(
            server_frames(&ws.io.written),
            [(CLOSE_OP, true, Vec::new())]
        );
    }

    #[test]
    fn our_close_is_not_answered_again_and_nothing_is_sent_after_it() {
        let mut ws = socket(Vec::new(), false);
        let mut cx = Context::from_waker(Waker::noop());
        let close = CloseFrame {
            code: CloseCode::Away,
            reason: "going".into(),
        };
        ws.start_send_unpin(Message::Close(Some(close))).unwrap();
        assert!(matches!(ws.poll_flush_unpin(&mut cx), Poll::Ready(Ok(()))));
        assert!(matches!(
            ws.start_send_unpin(Message::text("late")),
            Err(WsError::Protocol(ProtocolError::SendAfterClosing))
        ));
        ws.io.chunks.push_back(client_frame(
            CLOSE_OP,
            true,
            &close_payload(1001, ""),
            [7; 4],
        ));
        assert!(matches!(next_message(&mut ws), Message::Close(Some(_))));
        assert!(matches!(next(&mut ws), Poll::Ready(None)));
        assert_eq!(
            server_frames(&ws.io.written),
            [(CLOSE_OP, true, close_payload(1001, "going"))],
            "only our close went out"
        );
        // A peer that shuts its side instead of answering: the end, not an error.
        let mut ws = socket(Vec::new(), true);
        ws.start_send_unpin(Message::Close(None)).unwrap();
        assert!(matches!(ws.poll_flush_unpin(&mut cx), Poll::Ready(Ok(()))));
        assert!(matches!(next(&mut ws), Poll::Ready(None)));
    }

    #[tokio::test]
    async fn a_tungstenite_client_talks_to_it_over_a_socket() {
        use tokio_tungstenite::tungstenite::protocol::Role;
        use tokio_tungstenite::tungstenite::Message as ClientMessage;
        let (client, server) = tokio::io::duplex(1 << 10);
        let mut server = WebSocket::new(server, MAX);
        let mut client =
            tokio_tungstenite::WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        let big = "x".repeat(100_000);
        let talk = async {
            client.send(ClientMessage::text("hi")).await.unwrap();
            client.send(ClientMessage::text(big.clone())).await.unwrap();
            let echoed = client.next().await.unwrap().unwrap();
            client.close(None).await.unwrap();
            let answer = client.next().await.unwrap().unwrap();
            let after = client.next().await;
            (echoed, answer, after)
        };
        // The server's end is dropped once it has the close, as the server does: the client
        // waits for the server to close the TCP connection.
        let serve = async move {
            assert_eq!(server.next().await.unwrap().unwrap(), Message::text("hi"));
            let Message::Text(text) = server.next().await.unwrap().unwrap() else {
                panic!("expected text");
            };
            server.send(Message::Text(text)).await.unwrap();
            assert!(matches!(
                server.next().await,
                Some(Ok(Message::Close(None)))
            ));
            assert!(server.next().await.is_none());
        };
        let ((echoed, answer, after), ()) =
            tokio::time::timeout(std::time::Duration::from_secs(10), async {
                tokio::join!(talk, serve)
            })
            .await
            .expect("the exchange ends within 10 s");
        assert_eq!(echoed, ClientMessage::text(big));
        assert_eq!(answer, ClientMessage::Close(None), "the close is answered");
        assert!(after.is_none(), "the close handshake completed: {after:?}");
    }
}
