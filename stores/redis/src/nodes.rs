//! Requests between nodes ([`Store::ask`](purly::Store::ask)): each node listens on a channel
//! of its own (`purly:node:{<name>}`, a hash tag: one shard of a cluster); a request carries an id and the asking node's name, and
//! its answer comes back on the asker's channel. At most once: a request or an answer lost
//! (a broken connection) ends the ask with an error after the timeout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::connection::Commands;
use purly::serde_json::{self, json, Value};
use purly::{AskDone, NodeHandler, StoreError};

/// The channel node `name` listens on.
pub(crate) fn channel(name: &str) -> String {
    format!("purly:node:{{{name}}}")
}

/// This node's asks in flight and the handler of the requests it gets.
pub(crate) struct Nodes {
    name: String,
    next: AtomicU64,
    pending: Mutex<HashMap<u64, AskDone>>,
    handler: Mutex<Option<NodeHandler>>,
    commands: Commands,
    handle: tokio::runtime::Handle,
    timeout: Duration,
}

impl Nodes {
    pub(crate) fn new(
        name: String,
        commands: Commands,
        handle: tokio::runtime::Handle,
        timeout: Duration,
    ) -> Self {
        Nodes {
            name,
            next: AtomicU64::new(0),
            pending: Mutex::new(HashMap::new()),
            handler: Mutex::new(None),
            commands,
            handle,
            timeout,
        }
    }

    /// This node's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    fn pending(&self) -> MutexGuard<'_, HashMap<u64, AskDone>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `request` to node `to`; `done` gets its answer, or an error once `timeout`
    /// passed (or at once if no node listens on its channel).
    pub(crate) fn ask(self: &std::sync::Arc<Self>, to: &str, request: String, done: AskDone) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.pending().insert(id, done);
        let message = json!({ "q": id, "f": self.name, "p": request }).to_string();
        let (nodes, to) = (self.clone(), channel(to));
        self.handle.spawn(async move {
            let listeners = nodes.commands.publish(&to, message).await;
            match listeners {
                Ok(0) => nodes.fail(id, "no node listens on that name"),
                Err(error) => nodes.fail(id, &error.to_string()),
                Ok(_) => {
                    tokio::time::sleep(nodes.timeout).await;
                    nodes.fail(id, "the node did not answer in time");
                }
            }
        });
    }

    /// Ends ask `id` with an error, if it is still waiting.
    fn fail(&self, id: u64, why: &str) {
        let done = self.pending().remove(&id);
        if let Some(done) = done {
            done.complete(Err(StoreError::Io(why.to_owned())));
        }
    }

    /// Sets the handler of the requests other nodes send.
    pub(crate) fn answer(&self, handler: NodeHandler) {
        *self.handler.lock().unwrap_or_else(PoisonError::into_inner) = Some(handler);
    }

    /// A message on this node's channel: a request (handed to the handler; its answer is
    /// published to the asker) or an answer (ends the ask it answers).
    pub(crate) fn receive(self: &std::sync::Arc<Self>, payload: &str) {
        let Ok(message) = serde_json::from_str::<Value>(payload) else {
            tracing::warn!("redis: an unreadable message between nodes");
            return;
        };
        if let Some(id) = message.get("r").and_then(Value::as_u64) {
            let done = self.pending().remove(&id);
            if let (Some(done), Some(answer)) = (done, message.get("p").and_then(Value::as_str)) {
                done.complete(Ok(answer.to_owned()));
            }
            return;
        }
        let (Some(id), Some(from), Some(request)) = (
            message.get("q").and_then(Value::as_u64),
            message.get("f").and_then(Value::as_str),
            message.get("p").and_then(Value::as_str),
        ) else {
            return;
        };
        let handler = self
            .handler
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(handler) = handler else {
            return;
        };
        let (nodes, to) = (self.clone(), channel(from));
        let done = AskDone::new(move |answer: Result<String, StoreError>| {
            let Ok(answer) = answer else {
                return;
            };
            let message = json!({ "r": id, "p": answer }).to_string();
            let publisher = nodes.clone();
            nodes.handle.spawn(async move {
                let published = publisher.commands.publish(&to, message).await;
                if let Err(error) = published {
                    tracing::warn!(%error, "redis: an answer to another node was lost");
                }
            });
        });
        handler(request.to_owned(), done);
    }
}
