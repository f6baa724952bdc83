//! How a server-side write ([`Engine::update`](crate::Engine::update),
//! [`Engine::modify`](crate::Engine::modify)) learns that its change is durable, and at which
//! version: a command queued right after the write's own, released (like them) only once the
//! store holds it. With a shared store a write may be run again on top of another node's
//! commits: its promise travels with it, and the version it reports is the final one.

use std::sync::{Arc, Mutex};

use crate::error::SendError;
use crate::lock::lock;
use crate::oneshot;

/// The version a write reached once durable, or why it was not kept.
pub(crate) type WriteResult = Result<u64, SendError>;

/// The sending side of a write's promise, shared by the queued command and the frame kept for
/// a re-run. Dropped everywhere unanswered (the store failed, the model closed), the waiting
/// write learns that nothing was kept.
#[derive(Clone)]
pub(crate) struct Written(Arc<Mutex<Option<oneshot::Sender<WriteResult>>>>);

impl Written {
    /// A promise and the receiver its answer reaches.
    pub(crate) fn new() -> (Written, oneshot::Receiver<WriteResult>) {
        let (sender, receiver) = oneshot::channel();
        (Written(Arc::new(Mutex::new(Some(sender)))), receiver)
    }

    /// Answers the write (the first answer counts).
    pub(crate) fn answer(&self, result: WriteResult) {
        if let Some(sender) = lock(&self.0).take() {
            sender.send(result);
        }
    }
}
