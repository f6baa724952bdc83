//! Stream mode's loop: whatever is queued is pushed as soon as it is, one coalesced frame per
//! write, while the peer's frames are read and handed to the session.
//!
//! A hand-written future rather than an `async` block: its state is the [`Link`] and one
//! word, where the compiler's state machine for the same loop kept room for every future it
//! awaits (writes, their deadlines, the close) and copies of what it captured, about 1.7 KB
//! per connection in all. What a write or a close needs while it waits is boxed only while
//! it waits; a write the socket takes at once allocates nothing.

use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_util::StreamExt;
use hyper_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use purly::{CloseReason, Mode};
use tokio::time::{sleep, Sleep};

use super::{
    close_code, close_message, Ending, Incoming, Link, Queued, Socket, Write, CLOSE_WAIT,
    RATE_LIMIT_CLOSE,
};

/// A stream-mode connection's loop, until the connection ends.
pub(crate) struct StreamLoop<S> {
    link: Link<S>,
    phase: Phase,
}

enum Phase {
    /// Waiting for queued messages, a frame from the peer, or the pinger.
    ///
    /// The socket's input is read first, for as long as frames are there, up to
    /// [`READ_STREAK`] in a row: what they cause is queued meanwhile and goes out as one write
    /// (a publisher with 32 updates in flight gets their echoes in one frame, not 32), and
    /// the outbox is never left for longer.
    Serving {
        /// Frames read since the outbox was last polled.
        streak: u8,
    },
    /// A write the socket made wait, and what follows it.
    Writing(Box<(Write, Then)>),
    /// Our close frame is written: reading until the peer's answer, or the deadline.
    Draining(CloseCode, Pin<Box<Sleep>>),
}

/// The most frames read in a row before the outbox is polled.
pub(super) const READ_STREAK: u8 = 32;

const SERVING: Phase = Phase::Serving { streak: 0 };

/// What follows a write.
enum Then {
    Serve,
    /// Close with this code and reason (the write was what was queued before the close).
    Close(CloseCode, &'static str),
    /// The write was our close frame: wait for the peer's answer.
    Drain(CloseCode),
}

/// The next thing the loop does.
enum Step {
    Serve,
    Write(Write, Then),
    Drain(CloseCode),
    End(Ending),
}

impl<S: Socket> StreamLoop<S> {
    /// The loop of `link`'s connection.
    pub(crate) fn new(link: Link<S>) -> Self {
        StreamLoop {
            link,
            phase: SERVING,
        }
    }

    /// The connection this loop serves.
    pub(crate) fn link(&self) -> &Link<S> {
        &self.link
    }
}

impl<S: Socket> Future for StreamLoop<S> {
    type Output = Ending;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Ending> {
        let StreamLoop { link, phase } = self.get_mut();
        loop {
            let step = match phase {
                Phase::Serving { streak } if *streak < READ_STREAK => match poll_input(link, cx) {
                    Poll::Ready(step) => {
                        *streak += 1;
                        step
                    }
                    Poll::Pending => {
                        *streak = 0;
                        ready!(poll_output(link, cx))
                    }
                },
                Phase::Serving { streak } => {
                    *streak = 0;
                    match poll_output(link, cx) {
                        Poll::Ready(step) => step,
                        Poll::Pending => ready!(poll_input(link, cx)),
                    }
                }
                Phase::Writing(writing) => {
                    let written = ready!(link.poll_write(cx, &mut writing.0));
                    let then = mem::replace(&mut writing.1, Then::Serve);
                    *phase = SERVING;
                    after(written, then)
                }
                Phase::Draining(code, deadline) => {
                    ready!(link.poll_drain(cx, deadline));
                    return Poll::Ready(Ending::ClosedByServer((*code).into()));
                }
            };
            if let Some(ending) = ready!(take_step(link, phase, cx, step)) {
                return Poll::Ready(ending);
            }
        }
    }
}

/// Starts `step`: a write is driven at once, and boxed only if the socket makes it wait.
fn take_step<S: Socket>(
    link: &mut Link<S>,
    phase: &mut Phase,
    cx: &mut Context<'_>,
    mut step: Step,
) -> Poll<Option<Ending>> {
    loop {
        match step {
            Step::Serve => {
                // A streak goes on.
                if !matches!(phase, Phase::Serving { .. }) {
                    *phase = SERVING;
                }
            }
            Step::Write(mut write, then) => match link.poll_write(cx, &mut write) {
                Poll::Ready(written) => {
                    step = after(written, then);
                    continue;
                }
                Poll::Pending => {
                    *phase = Phase::Writing(Box::new((write, then)));
                    return Poll::Pending;
                }
            },
            Step::Drain(code) => *phase = Phase::Draining(code, Box::pin(sleep(CLOSE_WAIT))),
            Step::End(ending) => return Poll::Ready(Some(ending)),
        }
        return Poll::Ready(None);
    }
}

/// What follows a write that ended with `written`.
fn after(written: Result<(), Ending>, then: Then) -> Step {
    match (written, then) {
        (Ok(()), Then::Serve) => Step::Serve,
        (Ok(()), Then::Close(code, reason)) => {
            Step::Write(close_message(code, reason), Then::Drain(code))
        }
        (Ok(()), Then::Drain(code)) => Step::Drain(code),
        // A close frame that could not be written still closes with its code.
        (Err(_), Then::Drain(code)) => Step::End(Ending::ClosedByServer(code.into())),
        (Err(ending), _) => Step::End(ending),
    }
}

/// The outbox's side: a batch to write, a resync, the engine's close, or the pinger.
fn poll_output<S: Socket>(link: &mut Link<S>, cx: &mut Context<'_>) -> Poll<Step> {
    Poll::Ready(match ready!(link.poll_queued(cx, Mode::Stream)) {
        Queued::Write(write) => Step::Write(write, Then::Serve),
        Queued::Resync => {
            // Fails only once the model is closed; the outbox then reports it.
            let _ = link.session.resync();
            Step::Serve
        }
        Queued::Closed(reason) => closing(&reason),
        // The service's pinger (no timer of its own: see `crate::pinger`).
        Queued::Notified => match link.ping() {
            Ok(ping) => Step::Write(ping, Then::Serve),
            Err(ending) => Step::End(ending),
        },
    })
}

/// Closing because the engine stopped serving the connection.
fn closing(reason: &CloseReason) -> Step {
    let code = close_code(reason);
    Step::Write(close_message(code, &reason.to_string()), Then::Drain(code))
}

/// The socket's side: a frame from the peer, or (while the model is over its bounds and the
/// socket is not read) the model's room again.
fn poll_input<S: Socket>(link: &mut Link<S>, cx: &mut Context<'_>) -> Poll<Step> {
    if link.holding {
        ready!(link.session.poll_ready(cx));
        link.holding = false;
        return Poll::Ready(Step::Serve);
    }
    let incoming = ready!(link.ws.poll_next_unpin(cx));
    Poll::Ready(match link.receive(incoming) {
        Incoming::Frame | Incoming::Control => Step::Serve,
        Incoming::RateLimited => rate_limit_close(link),
        Incoming::Close(code, why) => Step::Write(close_message(code, &why), Then::Drain(code)),
        Incoming::End(ending) => Step::End(ending),
    })
}

/// Sends what is queued (the refusals so far), then closes with 1008.
fn rate_limit_close<S: Socket>(link: &mut Link<S>) -> Step {
    let close = Then::Close(CloseCode::Policy, RATE_LIMIT_CLOSE);
    match link.try_queued(Mode::Stream, false) {
        Err(reason) => closing(&reason),
        Ok(Some(write)) => Step::Write(write, close),
        Ok(None) => after(Ok(()), close),
    }
}
