//! # purly-channel: connect to a purly [`Engine`] in the same process
//!
//! A [`Client`] is a session on one model of an engine, with no socket and no JSON text in
//! between: it sends typed messages, receives the same shared [`ServerMessage`] messages a
//! WebSocket client would get as text, and keeps a [`Replica`] of the model ("server state +
//! my pending changes"). Use it to test sync logic, or to run a Rust client (a bot, a
//! server-side `Layout`) next to the engine.
//!
//! ```
//! use purly::Engine;
//! use purly_channel::Client;
//! use purly::serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Engine::default();
//! let mut alice = Client::connect(&engine, "model").await?;
//! let mut bob = Client::connect(&engine, "model").await?;
//!
//! alice.update(json!({"div": {"style": {"background_color": "coral"}}})).await?;
//! alice.settle().await?; // until alice's update is confirmed
//! bob.recv().await; // bob's snapshot and alice's diff, coalesced
//! assert_eq!(bob.state(), alice.state());
//! assert_eq!(bob.get("/div/style/background_color"), Some(&json!("coral")));
//! assert_eq!(bob.get("/div/missing"), None); // where `state()["div"]["missing"]` panics
//! # Ok(())
//! # }
//! ```
//!
//! [`Client`] is a [`Stream`](https://docs.rs/futures-core/0.3/futures_core/stream/trait.Stream.html) of received batches, and [`Client::recv`] awaits the next one;
//! both apply the batch to the replica before handing it out. They work on any async runtime
//! (the wake-up comes from the engine's fan-out, not from a timer).
//!
//! Everything that may wait is `async`: [`Client::connect`] awaits the model's load if it is
//! not in memory, and [`Client::update`], [`Client::signal`] and [`Client::send`] first await
//! the model's readiness ([`Session::ready`]): a fan-out or a store slower than this client
//! slows it down, as TCP slows a WebSocket client, and no thread is blocked meanwhile.
//!
//! With a durable store, give the engine an [executor](purly::EngineBuilder::executor) of your
//! runtime so that the store's completions are followed up there (purly-hyper does this by
//! itself); otherwise the store's own thread runs the fan-out.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
use purly::serde_json::{Map, Value};
use purly::{
    ClientConnection, ClientId, ClientKey, CloseReason, Engine, Frame, JoinError, JoinOptions,
    Message, Mode, Outbox, Received, Replica, ReplicaError, SendError, ServerMessage, Session,
};
use thiserror::Error;

pub use purly;

/// Why a [`Client`] call failed.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Updates and signals carry a JSON object; this was another kind of value.
    #[error("the content of a message is a JSON object, not {0}")]
    NotAnObject(&'static str),
    /// The engine refused the frame, or the session is closed.
    #[error(transparent)]
    Send(#[from] SendError),
    /// The server's messages could not be applied to the replica.
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    /// The engine stopped delivering to this client.
    #[error("the connection closed: {0}")]
    Closed(CloseReason),
}

/// An in-process connection to one model of an [`Engine`].
pub struct Client {
    session: Session,
    outbox: Arc<Outbox>,
    replica: Replica,
    closed: Option<CloseReason>,
    replica_error: Option<ReplicaError>,
}

impl Client {
    /// Joins `model` in stream mode, read-write, with a new random client key: an update the
    /// client sends again (see [`resume`](Client::resume)) is applied at most once
    /// (PROTOCOL.md section 9).
    pub async fn connect(engine: &Engine, model: &str) -> Result<Self, JoinError> {
        let key = ClientKey::random();
        let options = JoinOptions::stream().client_key(key);
        Client::connect_with(engine, model, options).await
    }

    /// Joins `model` with the given options (compat mode, read-only, resume).
    pub async fn connect_with(
        engine: &Engine,
        model: &str,
        options: JoinOptions,
    ) -> Result<Self, JoinError> {
        Client::connect_with_outbox(
            engine,
            model,
            options,
            Arc::new(Outbox::new(engine.config().max_queued_bytes)),
        )
        .await
    }

    /// Joins `model` with an outbox of your own (e.g. a smaller byte bound). The client key is
    /// the one `options` name, if any (without one, the session's ids are its own, PROTOCOL.md
    /// section 4).
    pub async fn connect_with_outbox(
        engine: &Engine,
        model: &str,
        options: JoinOptions,
        outbox: Arc<Outbox>,
    ) -> Result<Self, JoinError> {
        let replica = match &options.client_key {
            Some(key) if options.mode == Mode::Stream => Replica::with_client_key(key.clone()),
            _ => Replica::new(options.mode),
        };
        Client::join(engine, model, options, outbox, replica).await
    }

    async fn join(
        engine: &Engine,
        model: &str,
        options: JoinOptions,
        outbox: Arc<Outbox>,
        replica: Replica,
    ) -> Result<Self, JoinError> {
        let session = engine.join(model, outbox.clone(), options).await?;
        Ok(Client {
            session,
            outbox,
            replica,
            closed: None,
            replica_error: None,
        })
    }

    /// Reconnects with a replica kept from an earlier connection (see
    /// [`into_replica`](Client::into_replica)), resuming after its version: the engine replays
    /// the diffs the replica missed if it still keeps them and the epoch is the same, else sends
    /// a snapshot. Either way the replica ends up with every change exactly once. The
    /// replica's unconfirmed updates are sent again with their ids under its client key: the
    /// engine applies those it had not applied, and answers the others again.
    pub async fn resume(engine: &Engine, model: &str, replica: Replica) -> Result<Self, JoinError> {
        let mut options = match (replica.version(), replica.epoch()) {
            (Some(version), Some(epoch)) => JoinOptions::stream().resume(version, epoch),
            _ => JoinOptions::stream(),
        };
        if let Some(key) = replica.client_key() {
            options = options.client_key(key.clone());
        }
        let outbox = Arc::new(Outbox::new(engine.config().max_queued_bytes));
        let client = Client::join(engine, model, options, outbox, replica).await?;
        let pending: Vec<_> = client.replica.pending_updates().collect();
        if !pending.is_empty() {
            client.session.ready().await;
            // A refusal is queued to this client as an error, which settles the updates.
            let _ = client.session.send(Frame::new(pending));
        }
        Ok(client)
    }

    /// Disconnects, keeping the replica for a later [`resume`](Client::resume).
    pub fn into_replica(self) -> Replica {
        self.replica
    }

    /// The session's id: the `origin` of what this client causes.
    pub fn id(&self) -> ClientId {
        self.session.id()
    }

    /// The underlying session.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The replica: the state as this client sees it, its version and pending updates.
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// The model's state as this client sees it (the server's state plus pending updates).
    pub fn state(&self) -> &Map<String, Value> {
        self.replica.state()
    }

    /// The value at `pointer` (RFC 6901, e.g. `/div/style/background_color`) in
    /// [`state`](Client::state), or `None`: unlike indexing the map, never panics on a missing
    /// key.
    pub fn get(&self, pointer: &str) -> Option<&Value> {
        self.replica.get(pointer)
    }

    /// Why the engine stopped delivering, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.closed
    }

    /// Merges `content` (a JSON object) into the model. The replica shows it at once; it is
    /// confirmed when the engine's echo (or `ack`, if it changed nothing) is received.
    pub async fn update(&mut self, content: Value) -> Result<(), ClientError> {
        let content = object(content)?;
        self.session.ready().await;
        let message = self.replica.update(content);
        let id = message.id.clone();
        match self.session.send(Frame::new(vec![message])) {
            Err(SendError::Closed) => {
                // It never reached the engine, so no error message will confirm it.
                if let Some(id) = id {
                    self.replica.forget(&id);
                }
                Err(SendError::Closed.into())
            }
            // A refusal is also queued to us as an error naming the id; the replica drops the
            // update when it receives it, in order with everything else.
            result => result.map_err(ClientError::from),
        }
    }

    /// Relays `content` (a JSON object) to the model's other clients.
    pub async fn signal(&self, content: Value) -> Result<(), ClientError> {
        let content = object(content)?;
        self.send(Frame::new(vec![Message::signal(content)]))
            .await?;
        Ok(())
    }

    /// Sends a frame built in code, as is, once the model is ready for it: updates in it are
    /// not tracked by the replica unless they came from [`Replica::update`]. With a client key
    /// (the default of [`connect`](Client::connect)), every update needs an integer id above
    /// the key's earlier ones (PROTOCOL.md section 9): use [`update`](Client::update), or join
    /// without a key ([`connect_with`](Client::connect_with)) to send frames of your own.
    pub async fn send(&self, frame: Frame) -> Result<(), SendError> {
        self.session.ready().await;
        self.session.send(frame)
    }

    /// Sends a frame of JSON text, as a WebSocket client would (for testing bad input), once
    /// the model is ready for it.
    pub async fn send_text(&self, text: &str) -> Result<(), SendError> {
        self.session.ready().await;
        self.session.send_text(text)
    }

    /// Waits for the next batch of messages (everything queued since the last one), applies it
    /// to the replica and returns it. `None` once the engine stopped delivering
    /// ([`close_reason`](Client::close_reason) says why) or the replica hit an error
    /// ([`settle`](Client::settle) reports it).
    pub async fn recv(&mut self) -> Option<Vec<ServerMessage>> {
        poll_fn(|cx| self.poll_batch(cx)).await
    }

    /// The next batch if one is queued now, without waiting.
    pub fn try_recv(&mut self) -> Option<Vec<ServerMessage>> {
        let mut batch = Vec::new();
        loop {
            match self.outbox.try_recv(&mut batch)? {
                Received::Resync => self.resync(),
                Received::Notified => {}
                received => return self.take(received, batch),
            }
        }
    }

    /// Receives until none of this client's updates awaits confirmation, so that
    /// [`state`](Client::state) is the server's state at some version at or after them.
    pub async fn settle(&mut self) -> Result<(), ClientError> {
        match ClientConnection::settle(self).await {
            true => Ok(()),
            false => Err(self.failure()),
        }
    }

    fn failure(&mut self) -> ClientError {
        if let Some(error) = self.replica_error.take() {
            return ClientError::Replica(error);
        }
        ClientError::Closed(self.closed.unwrap_or(CloseReason::Shutdown))
    }

    fn poll_batch(&mut self, cx: &mut Context<'_>) -> Poll<Option<Vec<ServerMessage>>> {
        if self.closed.is_some() || self.replica_error.is_some() {
            return Poll::Ready(None);
        }
        let mut batch = Vec::new();
        loop {
            match self.outbox.poll_recv(cx, &mut batch) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Received::Resync) => self.resync(),
                Poll::Ready(Received::Notified) => {}
                Poll::Ready(received) => return Poll::Ready(self.take(received, batch)),
            }
        }
    }

    fn resync(&mut self) {
        if let Err(SendError::Closed) = self.session.resync() {
            self.closed.get_or_insert(CloseReason::Shutdown);
        }
    }

    fn take(
        &mut self,
        received: Received,
        mut batch: Vec<ServerMessage>,
    ) -> Option<Vec<ServerMessage>> {
        match received {
            Received::Messages => {
                // As a network transport writes them: the model's snapshot names this
                // connection's presence id.
                if self.session.mode() == purly::Mode::Stream {
                    self.session.name_snapshots(&mut batch);
                }
                if let Err(error) = self.replica.receive(&batch) {
                    self.replica_error = Some(error);
                    return None;
                }
                Some(batch)
            }
            Received::Closed(reason) => {
                self.closed = Some(reason);
                None
            }
            // Handled by the callers, which go on receiving.
            Received::Resync | Received::Notified => None,
        }
    }
}

impl ClientConnection for Client {
    type Error = ClientError;

    async fn update(&mut self, content: Value) -> Result<(), ClientError> {
        Client::update(self, content).await
    }

    async fn signal(&mut self, content: Value) -> Result<(), ClientError> {
        Client::signal(self, content).await
    }

    async fn recv(&mut self) -> Option<Vec<ServerMessage>> {
        Client::recv(self).await
    }

    fn replica(&self) -> &Replica {
        &self.replica
    }
}

impl Stream for Client {
    type Item = Vec<ServerMessage>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_batch(cx)
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("session", &self.session)
            .field("version", &self.replica.version())
            .field("pending", &self.replica.pending())
            .field("closed", &self.closed)
            .finish()
    }
}

fn object(content: Value) -> Result<Map<String, Value>, ClientError> {
    match content {
        Value::Object(map) => Ok(map),
        Value::Null => Err(ClientError::NotAnObject("null")),
        Value::Bool(_) => Err(ClientError::NotAnObject("a boolean")),
        Value::Number(_) => Err(ClientError::NotAnObject("a number")),
        Value::String(_) => Err(ClientError::NotAnObject("a string")),
        Value::Array(_) => Err(ClientError::NotAnObject("an array")),
    }
}
