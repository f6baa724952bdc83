//! [`EngineFuture`]: what the engine's operations that may wait for the store return.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::wait::block_on;

/// A future of an engine operation that may wait for the store ([`Engine::join`],
/// [`Engine::update`], [`Engine::modify`], [`Engine::read_snapshot`],
/// [`Engine::remove_model`]). It needs no particular runtime: `.await` it on any, or call
/// [`wait`](EngineFuture::wait) from sync code.
///
/// [`Engine::join`]: crate::Engine::join
/// [`Engine::update`]: crate::Engine::update
/// [`Engine::modify`]: crate::Engine::modify
/// [`Engine::read_snapshot`]: crate::Engine::read_snapshot
/// [`Engine::remove_model`]: crate::Engine::remove_model
///
/// An operation that needs nothing from the store (a join of a model in memory) is done when
/// it is called: its future is ready, allocates nothing, and [`now`](EngineFuture::now) takes
/// its result without polling.
#[must_use = "an engine operation does nothing until it is awaited (or waited for)"]
pub struct EngineFuture<T>(State<T>);

enum State<T> {
    /// Done when called; `None` once taken.
    Ready(Option<T>),
    Pending(Pin<Box<dyn Future<Output = T> + Send>>),
}

impl<T> EngineFuture<T> {
    pub(crate) fn new(future: impl Future<Output = T> + Send + 'static) -> Self {
        EngineFuture(State::Pending(Box::pin(future)))
    }

    pub(crate) fn ready(value: T) -> Self {
        EngineFuture(State::Ready(Some(value)))
    }

    /// The result, if the operation was done when called (it needed nothing from the store);
    /// otherwise the future is handed back, to await.
    pub fn now(self) -> Result<T, Self> {
        match self.0 {
            State::Ready(Some(value)) => Ok(value),
            state => Err(EngineFuture(state)),
        }
    }

    /// **Blocks the calling thread** until the operation is done: the form for sync code (a
    /// test, a script, a thread of your own). With [`MemoryStore`](crate::MemoryStore) it
    /// returns at once. Never call it on an async runtime's worker thread: with a durable
    /// store it waits there for the store, holding a thread the runtime's other tasks need.
    pub fn wait(self) -> T {
        block_on(self)
    }
}

// The result is moved out, never pinned in place; the pending future is boxed.
impl<T> Unpin for EngineFuture<T> {}

impl<T> Future for EngineFuture<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match &mut self.get_mut().0 {
            State::Ready(value) => match value.take() {
                Some(value) => Poll::Ready(value),
                None => panic!("an EngineFuture polled after it completed"),
            },
            State::Pending(future) => future.as_mut().poll(cx),
        }
    }
}

impl<T> fmt::Debug for EngineFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EngineFuture")
    }
}
