//! One batch of queued messages per thread, reused by every connection served on it (the
//! WebSocket loops and the event streams): a connection takes what its outbox holds, encodes it
//! and lets go of it in one poll, so it need not keep a batch (nor its allocation) while it
//! waits.

use std::cell::Cell;

use purly::ServerMessage;

thread_local! {
    static BATCH: Cell<Vec<ServerMessage>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` with this thread's batch, empty, and empties it after (keeping its capacity).
pub(crate) fn with_batch<R>(f: impl FnOnce(&mut Vec<ServerMessage>) -> R) -> R {
    BATCH.with(|cell| {
        // Taken, not borrowed: a nested use would get an empty batch of its own.
        let mut batch = cell.take();
        let result = f(&mut batch);
        batch.clear();
        cell.set(batch);
        result
    })
}
