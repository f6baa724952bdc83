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
#[must_use = "an engine operation does nothing until it is awaited (or waited for)"]
pub struct EngineFuture<T>(Pin<Box<dyn Future<Output = T> + Send>>);

impl<T> EngineFuture<T> {
    pub(crate) fn new(future: impl Future<Output = T> + Send + 'static) -> Self {
        EngineFuture(Box::pin(future))
    }

    /// **Blocks the calling thread** until the operation is done: the form for sync code (a
    /// test, a script, a thread of your own). With [`MemoryStore`](crate::MemoryStore) it
    /// returns at once. Never call it on an async runtime's worker thread: with a durable
    /// store it waits there for the store, holding a thread the runtime's other tasks need.
    pub fn wait(self) -> T {
        block_on(self)
    }
}

impl<T> Future for EngineFuture<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        self.0.as_mut().poll(cx)
    }
}

impl<T> fmt::Debug for EngineFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EngineFuture")
    }
}
