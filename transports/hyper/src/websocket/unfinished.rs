//! What a connection may hold of messages that have not arrived whole: a share of one budget
//! for the whole server (so that many connections that each send most of a large message and
//! stop cannot grow the server without bound), and a time by which a message begun must be
//! finished.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_tungstenite::tungstenite::error::CapacityError;
use hyper_tungstenite::tungstenite::Error as WsError;
use tokio::time::{Instant, Sleep};

/// The bytes all connections of a server hold in unfinished messages, their bound, and how
/// long a message may take to arrive whole.
#[derive(Debug)]
pub(crate) struct UnfinishedBudget {
    limit: usize,
    timeout: Duration,
    used: AtomicUsize,
}

impl UnfinishedBudget {
    pub(crate) fn new(limit: usize, timeout: Duration) -> Arc<Self> {
        Arc::new(UnfinishedBudget {
            limit,
            timeout,
            used: AtomicUsize::new(0),
        })
    }

    /// The bytes held now, all connections together.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn grow(&self, by: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(by).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    fn shrink(&self, by: usize) {
        self.used.fetch_sub(by, Ordering::AcqRel);
    }
}

/// One connection's unfinished message: its share of the budget and its deadline. Small: every
/// connection, idle or not, has one.
#[derive(Debug)]
pub(crate) struct Unfinished {
    budget: Arc<UnfinishedBudget>,
    /// The bytes this connection holds against the budget.
    held: usize,
    /// While something is held: when it must be whole (on the heap only then).
    deadline: Option<Pin<Box<Sleep>>>,
}

/// The error a message that was not finished in time ends the connection with.
pub(crate) fn timed_out(timeout: Duration) -> WsError {
    WsError::Io(io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "a message was not finished within {} s",
            timeout.as_secs_f64()
        ),
    ))
}

impl Unfinished {
    pub(crate) fn new(budget: Arc<UnfinishedBudget>) -> Self {
        Unfinished {
            budget,
            held: 0,
            deadline: None,
        }
    }

    /// The connection now holds `now` bytes of unfinished messages: takes or gives back its
    /// share, starts or stops the clock. Fails when the share would take the server over its
    /// budget.
    pub(crate) fn hold(&mut self, now: usize) -> Result<(), WsError> {
        if now > self.held {
            if !self.budget.grow(now - self.held) {
                return Err(WsError::Capacity(CapacityError::MessageTooLong {
                    size: now,
                    max_size: self.budget.limit.saturating_sub(self.budget.used()) + self.held,
                }));
            }
        } else {
            self.budget.shrink(self.held - now);
        }
        match (self.held, now) {
            (0, 1..) => {
                self.deadline = Some(Box::pin(tokio::time::sleep_until(
                    Instant::now() + self.budget.timeout,
                )))
            }
            (_, 0) => self.deadline = None,
            _ => {}
        }
        self.held = now;
        Ok(())
    }

    /// Ready with the error once a message held has not been finished in time.
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<WsError> {
        match self.deadline.as_mut() {
            Some(deadline) => deadline
                .as_mut()
                .poll(cx)
                .map(|()| timed_out(self.budget.timeout)),
            None => Poll::Pending,
        }
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        self.budget.shrink(self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn shares_stay_within_the_budget_and_come_back() {
        let budget = UnfinishedBudget::new(1000, Duration::from_secs(30));
        let mut a = Unfinished::new(budget.clone());
        let mut b = Unfinished::new(budget.clone());
        a.hold(600).unwrap();
        assert!(b.hold(600).is_err(), "600 + 600 is over 1000");
        b.hold(400).unwrap();
        assert_eq!(budget.used(), 1000);
        a.hold(100).unwrap();
        assert_eq!(budget.used(), 500);
        drop(a);
        assert_eq!(budget.used(), 400);
        b.hold(0).unwrap();
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_held_too_long_expires() {
        let budget = UnfinishedBudget::new(1000, Duration::from_secs(30));
        let mut held = Unfinished::new(budget);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(held.poll_expired(&mut cx).is_pending(), "nothing held");
        held.hold(10).unwrap();
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(held.poll_expired(&mut cx).is_pending());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(held.poll_expired(&mut cx).is_ready());
        held.hold(0).unwrap();
        assert!(held.poll_expired(&mut cx).is_pending(), "the clock stops");
    }
}
