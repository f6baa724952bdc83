//! A value handed once from any thread to a task that awaits it: how a store's completion,
//! a durable write or a state read reaches whoever waits, with no runtime (a stored
//! [`Waker`], woken).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::lock::lock;

struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
    /// The sender is gone (sent, or dropped without sending).
    done: bool,
}

/// The sending half: [`send`](Sender::send) once; dropping it unsent ends the receiver with
/// `None`.
pub(crate) struct Sender<T>(Arc<Mutex<Slot<T>>>);

/// The receiving half: a future of the value, or `None` if the sender was dropped unsent.
pub(crate) struct Receiver<T>(Arc<Mutex<Slot<T>>>);

/// A new channel.
pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Arc::new(Mutex::new(Slot {
        value: None,
        waker: None,
        done: false,
    }));
    (Sender(slot.clone()), Receiver(slot))
}

impl<T> Sender<T> {
    /// Hands the value over and wakes the receiver.
    pub(crate) fn send(self, value: T) {
        lock(&self.0).value = Some(value);
        // Drop finishes: marks done and wakes.
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut slot = lock(&self.0);
            slot.done = true;
            slot.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut slot = lock(&self.0);
        if let Some(value) = slot.value.take() {
            return Poll::Ready(Some(value));
        }
        if slot.done {
            return Poll::Ready(None);
        }
        slot.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wait::block_on;

    #[test]
    fn a_value_sent_from_another_thread_arrives_and_a_dropped_sender_ends_it() {
        let (sender, receiver) = channel();
        std::thread::spawn(move || sender.send(7));
        assert_eq!(block_on(receiver), Some(7));
        let (sender, receiver) = channel::<u8>();
        std::thread::spawn(move || drop(sender));
        assert_eq!(block_on(receiver), None);
    }
}
