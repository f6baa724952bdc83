//! The [`Engine`]: the models of one server, the sessions attached to them, and the store
//! that keeps them.
//!
//! Inside: [`transaction`] turns a frame into effects or a refusal (pure), [`live`] orders one
//! model's changes and releases them once durable, [`fanout`] delivers them with the lag
//! policy, [`history`] keeps recent diffs for resume, [`snapshot`] shares a serialized state,
//! [`restore`] rebuilds a model from what the store holds, [`session`] is a subscriber's handle.

mod client_keys;
mod executor;
mod fanout;
mod future;
mod history;
mod live;
mod loading;
mod presence;
mod replay;
mod restore;
mod session;
mod snapshot;
mod transaction;
mod written;

use std::collections::HashMap;
use std::fmt;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde_json::{Map, Value};
use thiserror::Error;

use crate::config::{Config, Limits};
use crate::error::{ErrorCode, FrameError, JoinError, SendError, StoreError};
use crate::lock::{lock, read_lock, write_lock};
use crate::model::{DefaultModel, Model, ModelFactory, Rejection};
use crate::oneshot;
use crate::protocol::{ClientId, ClientKey, Message, Mode, ModelName};
use crate::store::{
    AskDone, LoadDone, MemoryStore, NewModel, RemoteFeed, RemoteSink, RemoveDone, Store,
};
use crate::subscriber::{CloseReason, Subscriber};
use crate::telemetry::EngineMetrics;
use crate::token::random_hex;

use executor::Driver;
use history::HistoryBudget;
use live::{Closed, EngineParts, LiveModel, ResumePoint, Start, Unapplied};
use loading::{Installed, Loaded, Loading, Turn};
use transaction::{Sender, Write};
use written::Written;

pub use executor::{Executor, Task};
pub use future::EngineFuture;
pub use presence::presence_node;
pub use session::{Ready, Session};
pub use snapshot::Snapshot;

/// Makes a new epoch: a string that no earlier incarnation of any model's version counter used.
pub type EpochSource = dyn Fn() -> String + Send + Sync;

/// The `origin` of the changes the server makes itself ([`Engine::update`], [`Engine::modify`]):
/// sessions are numbered from 1.
pub const SERVER_ORIGIN: ClientId = ClientId(0);

/// What a session may do (PROTOCOL.md section 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Access {
    /// Send updates and signals.
    #[default]
    ReadWrite,
    /// Receive only: every non-empty frame is answered with `forbidden`.
    ReadOnly,
}

/// Where a stream-mode session picks up: the version and epoch it last saw (`?since=N&epoch=E`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Resume {
    /// The last version the client applied.
    pub since: u64,
    /// The epoch that version belongs to.
    pub epoch: String,
}

/// How a session joins a model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JoinOptions {
    /// Stream or compat delivery.
    pub mode: Mode,
    /// Read-write or read-only.
    pub access: Access,
    /// Resume from a version instead of starting from a snapshot (stream mode only). If the
    /// epoch differs or the diffs after `since` are no longer kept, the session gets a snapshot.
    pub resume: Option<Resume>,
    /// The client's key (stream mode; PROTOCOL.md section 9): its updates carry increasing
    /// integer ids, and a resend of one the model decided before is answered again instead of
    /// applied again, across reconnects, restarts and nodes. Ignored in compat mode.
    pub client_key: Option<ClientKey>,
}

impl JoinOptions {
    /// Stream mode, read-write, from a snapshot.
    pub fn stream() -> Self {
        JoinOptions::default()
    }

    /// Compat mode (the original purly behaviour), read-write.
    pub fn compat() -> Self {
        JoinOptions {
            mode: Mode::Compat,
            ..JoinOptions::default()
        }
    }

    /// Sets the access.
    pub fn access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    /// Names the client with `key` (see [`JoinOptions::client_key`]).
    pub fn client_key(mut self, key: ClientKey) -> Self {
        self.client_key = Some(key);
        self
    }

    /// Resumes after version `since` of epoch `epoch`.
    pub fn resume(mut self, since: u64, epoch: impl Into<String>) -> Self {
        self.resume = Some(Resume {
            since,
            epoch: epoch.into(),
        });
        self
    }
}

/// Why [`Engine::update`] or [`Engine::modify`] did not apply a change.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The model could not be loaded or created.
    #[error(transparent)]
    Join(#[from] JoinError),
    /// The change was refused (the model's `check`, the size limit) or the model is closed.
    #[error(transparent)]
    Send(#[from] SendError),
}

/// The sync engine: validates frames, merges updates, and fans the differences out, for any
/// number of named models, kept in a [`Store`]. No I/O of its own: transports feed it frames
/// and drain its [`Subscriber`]s; the store does its own.
///
/// Cloning is cheap and every clone is the same engine: keep one in your service's state.
/// Different models never wait for each other; all messages of one model are applied in one
/// total order.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    config: Config,
    /// `config.limits`, shared with every session.
    limits: Arc<Limits>,
    factory: Box<ModelFactory>,
    store: Arc<dyn Store>,
    epochs: Box<EpochSource>,
    models: RwLock<HashMap<ModelName, Arc<LiveModel>>>,
    /// Models being loaded from the store (they count toward `max_models`).
    loading: Mutex<HashMap<ModelName, Arc<Loading>>>,
    driver: Arc<Driver>,
    next_client: AtomicU64,
    shut_down: AtomicBool,
    metrics: Arc<EngineMetrics>,
    history_budget: Arc<HistoryBudget>,
    /// This engine's name in presence ids: its node's name with a shared store, else random.
    instance: Arc<str>,
}

/// Builds an [`Engine`]: its limits, its models' policy, its store and its epochs.
pub struct EngineBuilder {
    config: Config,
    factory: Box<ModelFactory>,
    store: Arc<dyn Store>,
    epochs: Box<EpochSource>,
    driver: Driver,
}

impl EngineBuilder {
    /// The limits (default [`Config::default`]).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Asks `factory` for each model's policy when the model is first needed (created or
    /// loaded); the factory may refuse a name ([`JoinError::Refused`]). It should be quick.
    /// Default: [`DefaultModel`], which accepts everything and starts empty.
    pub fn model_factory(
        mut self,
        factory: impl Fn(&ModelName) -> Result<Box<dyn Model>, Rejection> + Send + Sync + 'static,
    ) -> Self {
        self.factory = Box::new(factory);
        self
    }

    /// Where models are kept (default [`MemoryStore`]: in memory only).
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = Arc::new(store);
        self
    }

    /// Where new epochs come from (default: 16 random hex digits). Tests inject a
    /// deterministic source; the engine never reads a clock.
    pub fn epochs(mut self, epochs: impl Fn() -> String + Send + Sync + 'static) -> Self {
        self.epochs = Box::new(epochs);
        self
    }

    /// Where the work that follows a store's completion runs (see [`Executor`]): the model's
    /// next batch and its fan-out, off the store's thread. purly's transports set their
    /// runtime's if none is set here ([`Engine::set_executor`]); without one, that work runs
    /// on the thread that completes the store's operation.
    pub fn executor(self, executor: impl Fn(Task) + Send + Sync + 'static) -> Self {
        self.driver.set(Box::new(executor));
        self
    }

    /// The engine. Its metrics are registered with the [`metrics`](https://docs.rs/metrics) recorder installed now
    /// (see [`telemetry`](crate::telemetry)): install yours before.
    pub fn build(self) -> Engine {
        let history_budget = HistoryBudget::new(self.config.history_budget_bytes);
        let instance = self.store.node().unwrap_or_else(|| random_hex(12)).into();
        Engine {
            inner: Arc::new(EngineInner {
                limits: Arc::new(self.config.limits.clone()),
                config: self.config,
                factory: self.factory,
                store: self.store,
                epochs: self.epochs,
                models: RwLock::new(HashMap::new()),
                loading: Mutex::new(HashMap::new()),
                driver: Arc::new(self.driver),
                next_client: AtomicU64::new(SERVER_ORIGIN.get() + 1),
                shut_down: AtomicBool::new(false),
                metrics: Arc::new(EngineMetrics::register()),
                history_budget,
                instance,
            }),
        }
    }
}

impl Default for Engine {
    fn default() -> Self {
        Engine::builder().build()
    }
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("models", &self.model_count())
            .field("shut_down", &self.is_shut_down())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// A builder with every default: in-memory models that start empty.
    pub fn builder() -> EngineBuilder {
        EngineBuilder {
            config: Config::default(),
            factory: Box::new(|_| Ok(Box::new(DefaultModel::default()))),
            store: Arc::new(MemoryStore),
            epochs: Box::new(|| random_hex(16)),
            driver: Driver::default(),
        }
    }

    /// An in-memory engine whose models are [`DefaultModel`]s that start empty.
    pub fn new(config: Config) -> Self {
        Engine::builder().config(config).build()
    }

    /// An in-memory engine that asks `factory` for each model's policy (see
    /// [`EngineBuilder::model_factory`]).
    pub fn with_model_factory(
        config: Config,
        factory: impl Fn(&ModelName) -> Result<Box<dyn Model>, Rejection> + Send + Sync + 'static,
    ) -> Self {
        Engine::builder()
            .config(config)
            .model_factory(factory)
            .build()
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Sets the [`Executor`] unless one is set (see [`EngineBuilder::executor`]); returns
    /// whether this call set it. A transport calls it with its runtime's when it starts.
    pub fn set_executor(&self, executor: impl Fn(Task) + Send + Sync + 'static) -> bool {
        self.inner.driver.set(Box::new(executor))
    }

    /// Whether an [`Executor`] is set.
    pub fn has_executor(&self) -> bool {
        self.inner.driver.is_set()
    }

    /// Attaches `subscriber` to the model `model`, loading it from the store or creating it:
    /// a future of the [`Session`].
    ///
    /// A model in memory is joined at the first poll, without waiting for anything; a model
    /// that is not is loaded (or created) by the store meanwhile, and every join of it waits
    /// for that one load. No thread waits: put a timeout around the future to bound the wait
    /// (purly-hyper answers 503 after `ServerConfig::join_timeout`). In sync code,
    /// [`wait`](EngineFuture::wait) blocks the calling thread instead.
    ///
    /// The subscriber first receives a snapshot (or, when resuming, the diffs it missed), then
    /// every later message of the model in order, each once the store holds it. The returned
    /// [`Session`] sends on its behalf; dropping it detaches the subscriber.
    pub fn join(
        &self,
        model: &str,
        subscriber: Arc<dyn Subscriber>,
        options: JoinOptions,
    ) -> EngineFuture<Result<Session, JoinError>> {
        if let Some(joined) = self.join_in_memory(model, &subscriber, &options) {
            return EngineFuture::ready(joined);
        }
        let engine = self.clone();
        let model = model.to_owned();
        EngineFuture::new(async move { engine.join_model(&model, subscriber, options).await })
    }

    /// The usual join, of a model in memory that nothing holds up: done here, with nothing
    /// allocated for a future. `None` when it needs the slow path (a load, a stale model, a
    /// resume ahead of this node, a model closing).
    fn join_in_memory(
        &self,
        model: &str,
        subscriber: &Arc<dyn Subscriber>,
        options: &JoinOptions,
    ) -> Option<Result<Session, JoinError>> {
        if self.is_shut_down() {
            return None;
        }
        let live = self.existing(model)?;
        if live.needs_reload() || live.is_stale() || self.resumes_ahead(&live, options) {
            return None;
        }
        let id = ClientId(self.inner.next_client.fetch_add(1, Ordering::Relaxed));
        self.attach(live, id, subscriber, options).ok().map(Ok)
    }

    /// Whether `options` resume past what this node has of `live` (the client saw versions
    /// on another node that this node's feed has not brought yet): a shared store's model then
    /// catches up first, so that the client never gets an older state than it had.
    fn resumes_ahead(&self, live: &LiveModel, options: &JoinOptions) -> bool {
        self.inner.store.shared()
            && options.resume.as_ref().is_some_and(|resume| {
                resume.since > live.durable_version() && resume.epoch == *live.epoch
            })
    }

    /// Registers `subscriber` with `live` as session `id`.
    fn attach(
        &self,
        live: Arc<LiveModel>,
        id: ClientId,
        subscriber: &Arc<dyn Subscriber>,
        options: &JoinOptions,
    ) -> Result<Session, Closed> {
        let resume = options.resume.as_ref().map(|r| ResumePoint {
            since: r.since,
            epoch: &r.epoch,
        });
        live.join(id, options.mode, subscriber.clone(), resume)?;
        let key = match options.mode {
            Mode::Stream => options.client_key.clone(),
            Mode::Compat => None,
        };
        let sender = Sender {
            id,
            mode: options.mode,
            key,
        };
        Ok(Session::new(live, sender, options.access))
    }

    async fn join_model(
        &self,
        model: &str,
        subscriber: Arc<dyn Subscriber>,
        options: JoinOptions,
    ) -> Result<Session, JoinError> {
        let name = ModelName::new(model)?;
        let id = ClientId(self.inner.next_client.fetch_add(1, Ordering::Relaxed));
        loop {
            let Some(live) = self.open(&name, true).await? else {
                continue;
            };
            if self.resumes_ahead(&live, &options) {
                live.suspect();
                self.inner.store.catch_up(&name);
            }
            poll_fn(|cx| live.poll_fresh(cx)).await;
            let _span = tracing::debug_span!("join", model = %name, client = %id, mode = ?options.mode, resume = options.resume.is_some()).entered();
            match self.attach(live, id, &subscriber, &options) {
                Ok(session) => return Ok(session),
                // Removed, evicted or failed between lookup and join: look it up again.
                Err(Closed::Reload) => continue,
                Err(Closed::Shutdown) => return Err(JoinError::ShutDown),
            }
        }
    }

    /// Merges `patch` into `model` (created if needed), in the model's order, as if a client
    /// had sent it: the difference is fanned out with `origin` [`SERVER_ORIGIN`]. A future of
    /// the model's version after the patch (unchanged if it changed nothing), resolved once
    /// the change is durable: with a shared store (several nodes) that is its final version,
    /// after any other node's commits that came first. Past the model's bound it waits for
    /// the model to drain before it applies (backpressure for server writers too). Should the
    /// store fail first, it resolves with an `unavailable` error and nothing was kept.
    /// [`wait`](EngineFuture::wait) is the blocking form, for sync code.
    pub fn update(
        &self,
        model: &str,
        patch: Map<String, Value>,
    ) -> EngineFuture<Result<u64, WriteError>> {
        self.write(model, Write::Messages(vec![Message::update(patch)]))
    }

    /// Reads and changes `model` atomically: `change` sees the current state and returns the
    /// patch to merge (or `None` to change nothing), with no other change in between. Otherwise
    /// as [`update`](Engine::update). `change` runs under the model's lock: keep it quick. With
    /// a shared store it may run again: when another node's commit comes first, it is called
    /// again on the state that includes it, so the read-modify-write stays atomic in the
    /// model's one order across nodes.
    pub fn modify(
        &self,
        model: &str,
        change: impl FnMut(&Map<String, Value>) -> Option<Map<String, Value>> + Send + 'static,
    ) -> EngineFuture<Result<u64, WriteError>> {
        self.write(model, Write::Modify(Box::new(change)))
    }

    fn write(&self, model: &str, write: Write) -> EngineFuture<Result<u64, WriteError>> {
        let engine = self.clone();
        let model = model.to_owned();
        EngineFuture::new(async move { engine.write_model(&model, write).await })
    }

    async fn write_model(&self, model: &str, mut write: Write) -> Result<u64, WriteError> {
        let name = ModelName::new(model).map_err(JoinError::from)?;
        loop {
            let Some(live) = self.open(&name, true).await? else {
                continue;
            };
            poll_fn(|cx| live.poll_ready(cx)).await;
            let (written, answer) = Written::new();
            match live.write(server(), write, Some(written)) {
                Ok(_) => return match answer.await {
                    Some(result) => result.map_err(WriteError::from),
                    None => Err(SendError::Frame(FrameError::new(
                        ErrorCode::Unavailable,
                        "the model closed before the store kept the change; nothing of it was kept",
                    ))
                    .into()),
                },
                // Closed for a reload between lookup and write: the write goes to the new one.
                Err(Unapplied::Closed(back)) if live.needs_reload() => write = back,
                Err(Unapplied::Closed(_)) => return Err(SendError::Closed.into()),
                Err(Unapplied::Refused(error)) => return Err(error.into()),
            }
        }
    }
    /// Runs `read` on a model's latest applied state and version, or returns `None` if the
    /// model is not in memory (nothing is loaded or created; a model closed to be reloaded,
    /// after a store failure or a removal, is not). With a durable store the state may hold
    /// changes the store is still writing; [`read_snapshot`](Engine::read_snapshot) gives only
    /// what is durable.
    pub fn read<R>(
        &self,
        model: &str,
        read: impl FnOnce(&Map<String, Value>, u64) -> R,
    ) -> Option<R> {
        let live = self.existing(model).filter(|live| !live.needs_reload())?;
        Some(live.read(read))
    }

    /// A [`Snapshot`] of `model` once everything in it is durable, in the model's order (the
    /// `GET /state` route uses it): a future. Loads the model from the store if needed but
    /// never creates it: `Ok(None)` if it does not exist.
    pub fn read_snapshot(
        &self,
        model: &str,
    ) -> EngineFuture<Result<Option<Arc<Snapshot>>, JoinError>> {
        let engine = self.clone();
        let model = model.to_owned();
        EngineFuture::new(async move {
            let name = ModelName::new(&model)?;
            let Some(live) = engine.open(&name, false).await? else {
                return Ok(None);
            };
            poll_fn(|cx| live.poll_fresh(cx)).await;
            let (reply, snapshot) = oneshot::channel();
            match live.read_snapshot(Box::new(move |s| reply.send(s))) {
                // Dropped uncalled if the model closes first.
                Ok(()) => snapshot.await.map(Some).ok_or(JoinError::ModelClosed),
                Err(Closed::Reload) => Err(JoinError::ModelClosed),
                Err(Closed::Shutdown) => Err(JoinError::ShutDown),
            }
        })
    }

    /// How many bytes of a model's messages are waiting for fan-out or for the store (bounded
    /// by [`Config::max_fanout_backlog_bytes`]), or `None` if the model is not in memory.
    pub fn fanout_backlog(&self, model: &str) -> Option<usize> {
        Some(self.existing(model)?.backlog())
    }

    /// The last version of a model the store holds (equal to the latest version once the
    /// store caught up), or `None` if the model is not in memory.
    pub fn durable_version(&self, model: &str) -> Option<u64> {
        Some(self.existing(model)?.durable_version())
    }

    /// Who is connected to `model` now (PROTOCOL.md section 11): every connection's presence
    /// (this node's and, with a shared store, the other nodes'), by presence id; `None` if the
    /// model is not in memory. To follow the changes, join the model with a
    /// [`Subscriber`] in stream mode: after the model's snapshot it receives a presence
    /// snapshot ([`ServerMessage::is_presence_snapshot`](crate::ServerMessage::is_presence_snapshot)),
    /// then every change as a [`ServerMessageKind::Presence`](crate::ServerMessageKind::Presence)
    /// message ([`Replica`](crate::Replica) keeps them in [`presences`](crate::Replica::presences)).
    pub fn presence(&self, model: &str) -> Option<Map<String, Value>> {
        let live = self.existing(model).filter(|live| !live.needs_reload())?;
        Some(live.presences())
    }

    /// A copy of a model's latest applied state, or `None` if it is not in memory.
    pub fn state(&self, model: &str) -> Option<Map<String, Value>> {
        self.read(model, |state, _| state.clone())
    }

    /// The names of the models in memory.
    pub fn models(&self) -> Vec<ModelName> {
        read_lock(&self.inner.models).keys().cloned().collect()
    }

    /// How many models are in memory.
    pub fn model_count(&self) -> usize {
        read_lock(&self.inner.models).len()
    }

    /// Drops a model, from memory and from the store: its subscribers are told
    /// [`CloseReason::ModelRemoved`], and a later join creates it afresh with a new epoch.
    /// A future of whether it was in memory, resolved once the store has forgotten it.
    pub fn remove_model(&self, model: &str) -> EngineFuture<Result<bool, StoreError>> {
        let removed = {
            let mut models = write_lock(&self.inner.models);
            let removed = models.remove(model);
            if removed.is_some() {
                self.inner.metrics.models_in_memory.decrement(1.0);
            }
            removed
        };
        if let Some(live) = &removed {
            live.close(CloseReason::ModelRemoved);
        }
        let was_in_memory = removed.is_some();
        let (done, answer) = oneshot::channel();
        if let Ok(name) = ModelName::new(model) {
            self.inner
                .store
                .remove(&name, RemoveDone::new(move |result| done.send(result)));
        } else {
            done.send(Ok(()));
        }
        EngineFuture::new(async move {
            answer.await.unwrap_or(Err(StoreError::Closed))?;
            Ok(was_in_memory)
        })
    }

    /// This node's name among the nodes of a shared store ([`Store::node`]), or `None`.
    pub fn node(&self) -> Option<String> {
        self.inner.store.node()
    }

    /// Sends `request` to another node of the shared store and awaits its answer
    /// ([`Store::ask`]): how a transport reaches the node that holds a connection.
    pub fn ask(&self, node: &str, request: String) -> EngineFuture<Result<String, StoreError>> {
        let (done, answer) = oneshot::channel();
        self.inner
            .store
            .ask(node, request, AskDone::new(move |result| done.send(result)));
        EngineFuture::new(async move { answer.await.unwrap_or(Err(StoreError::Closed)) })
    }

    /// Answers the requests other nodes [`ask`](Engine::ask) this one with `handler`
    /// ([`Store::answer`]); it completes each request's [`AskDone`] when it has the answer.
    pub fn answer(&self, handler: impl Fn(String, AskDone) + Send + Sync + 'static) {
        self.inner.store.answer(Arc::new(handler));
    }

    /// One sweep of idle eviction: a model with no session, whose changes are all durable, is
    /// marked by one sweep and dropped from memory by the next one if still idle; its next
    /// join loads it from the store. Call it periodically (the idle time is one to two
    /// periods). Does nothing with a store that keeps nothing ([`MemoryStore`]): its models
    /// live only in memory. Returns how many models were dropped.
    ///
    /// Every model also gives back the resume history beyond its share of
    /// [`Config::history_budget_bytes`] (with any store): models that record nothing any more
    /// leave the budget to the active ones.
    pub fn evict_idle(&self) -> usize {
        let lives: Vec<Arc<LiveModel>> = read_lock(&self.inner.models).values().cloned().collect();
        for live in &lives {
            live.trim_history();
        }
        if self.inner.store.confirms_at_once() {
            return 0;
        }
        let mut evicted = 0;
        for live in lives {
            if live.sweep_idle() {
                let mut models = write_lock(&self.inner.models);
                if models
                    .get(&live.name)
                    .is_some_and(|l| Arc::ptr_eq(l, &live))
                {
                    models.remove(&live.name);
                    self.inner.metrics.models_in_memory.decrement(1.0);
                    evicted += 1;
                }
            }
        }
        evicted
    }

    /// The bytes of resume history all models hold together: at most
    /// [`Config::history_budget_bytes`].
    pub fn history_bytes(&self) -> usize {
        self.inner.history_budget.used()
    }

    /// Stops the engine: every subscriber is told [`CloseReason::Shutdown`] once what it was
    /// owed is durable and delivered, later joins fail and later frames are refused with
    /// [`SendError::Closed`]. A frame being applied when this is called is applied whole or not
    /// at all.
    pub fn shutdown(&self) {
        self.inner.shut_down.store(true, Ordering::SeqCst);
        let lives: Vec<Arc<LiveModel>> = read_lock(&self.inner.models).values().cloned().collect();
        for live in lives {
            live.close(CloseReason::Shutdown);
        }
    }

    /// Whether [`shutdown`](Engine::shutdown) was called.
    pub fn is_shut_down(&self) -> bool {
        self.inner.shut_down.load(Ordering::SeqCst)
    }

    fn existing(&self, model: &str) -> Option<Arc<LiveModel>> {
        read_lock(&self.inner.models).get(model).cloned()
    }

    /// The live model `name`: in memory, else loaded from the store, else (with `create`) new.
    /// `Ok(None)` when it does not exist and `create` is false, or when it was replaced while
    /// loading (look again). Waits (as a future) only for a load.
    async fn open(
        &self,
        name: &ModelName,
        create: bool,
    ) -> Result<Option<Arc<LiveModel>>, JoinError> {
        loop {
            if self.is_shut_down() {
                return Err(JoinError::ShutDown);
            }
            if let Some(live) = self.existing(name.as_str()) {
                if !live.needs_reload() {
                    return Ok(Some(live));
                }
            }
            if self.inner.store.confirms_at_once() {
                // Nothing to read: the model is made here, at once.
                if !create {
                    return Ok(None);
                }
                self.check_model_limit(0)?;
                let mut model = self.policy(name)?;
                let new = self.first_incarnation(&mut *model);
                let start = Start {
                    epoch: new.epoch,
                    version: 0,
                    state: new.state,
                    history: Vec::new(),
                    keys: Vec::new(),
                    presences: Vec::new(),
                };
                return self.install(name, model, start).map(Some);
            }
            let loading = self.start_loading(name, create)?;
            let installed = match poll_fn(|cx| loading.poll_turn(cx)).await {
                Turn::Done(installed) => installed,
                Turn::Build(loaded, model) => {
                    let installed = self.build(name, loaded, model);
                    let mut table = lock(&self.inner.loading);
                    if table.get(name).is_some_and(|l| Arc::ptr_eq(l, &loading)) {
                        table.remove(name);
                    }
                    drop(table);
                    loading.done(installed.clone());
                    installed
                }
            };
            match installed {
                Ok(Some(live)) => return Ok(Some(live)),
                // Nothing stored, and that load was not asked to create it.
                Ok(None) if !create => return Ok(None),
                Ok(None) => continue,
                Err(error) => return Err(error),
            }
        }
    }

    /// The load of `name` under way, or a new one (which counts toward the model limit).
    fn start_loading(&self, name: &ModelName, create: bool) -> Result<Arc<Loading>, JoinError> {
        let mut table = lock(&self.inner.loading);
        if let Some(loading) = table.get(name) {
            if !loading.is_stale() && (loading.create || !create) {
                return Ok(loading.clone());
            }
        }
        // A read that creates nothing is not refused here: the model may not exist (and then
        // takes no room), and installing one that does is checked against the limit anyway.
        // Those loads are bounded by the requests in flight.
        if create {
            let others = table.len() - usize::from(table.contains_key(name));
            self.check_model_limit(others)?;
        }
        let mut model = self.policy(name)?;
        // The first state is asked for only if the model may be created (a stored model is
        // loaded, not created).
        let new = create.then(|| self.first_incarnation(&mut *model));
        let loading = Arc::new(Loading::new(create));
        table.insert(name.clone(), loading.clone());
        drop(table);
        let answer = loading.clone();
        let done = LoadDone::new(move |loaded| answer.answered(loaded, model));
        self.inner.store.load(name, new, done);
        Ok(loading)
    }

    /// Fails when the models in memory, with `loading` more being loaded, are at the limit.
    fn check_model_limit(&self, loading: usize) -> Result<(), JoinError> {
        let limit = self.inner.config.max_models;
        if self.model_count() + loading >= limit {
            return Err(JoinError::TooManyModels { limit });
        }
        Ok(())
    }

    /// The embedder's policy for `name` (its factory may refuse the name).
    fn policy(&self, name: &ModelName) -> Result<Box<dyn Model>, JoinError> {
        (self.inner.factory)(name).map_err(|r| JoinError::Refused(r.0))
    }

    /// A model as it starts when nothing is stored: a new epoch and `model`'s first state.
    fn first_incarnation(&self, model: &mut dyn Model) -> NewModel {
        NewModel {
            epoch: (self.inner.epochs)().into(),
            state: model.initial_state(),
        }
    }

    /// The live model from the store's answer.
    fn build(&self, name: &ModelName, loaded: Loaded, model: Box<dyn Model>) -> Installed {
        let Some(stored) = loaded? else {
            return Ok(None);
        };
        let start = restore::restore(stored)?;
        self.install(name, model, start).map(Some)
    }

    /// Puts a live model in the table (or returns the one another thread put there first).
    fn install(
        &self,
        name: &ModelName,
        model: Box<dyn Model>,
        start: Start,
    ) -> Result<Arc<LiveModel>, JoinError> {
        let inner = &self.inner;
        let parts = EngineParts {
            store: &inner.store,
            config: &inner.config,
            limits: &inner.limits,
            metrics: &inner.metrics,
            history_budget: &inner.history_budget,
            driver: &inner.driver,
            instance: &inner.instance,
        };
        let live = LiveModel::new(name.clone(), model, start, parts);
        let limit = self.inner.config.max_models;
        let mut models = write_lock(&self.inner.models);
        // Checked again under the write lock, so that shutdown sees every model it must close.
        if self.is_shut_down() {
            return Err(JoinError::ShutDown);
        }
        if let Some(existing) = models.get(name) {
            if !existing.needs_reload() {
                // Another thread loaded it first: use theirs.
                return Ok(existing.clone());
            }
        } else if models.len() >= limit {
            return Err(JoinError::TooManyModels { limit });
        }
        if models.insert(name.clone(), live.clone()).is_none() {
            // Several engines may share one recorder: each moves the gauge by its own count.
            self.inner.metrics.models_in_memory.increment(1.0);
        }
        drop(models);
        if self.inner.store.shared() {
            let sink: Arc<dyn RemoteSink> = live.clone();
            let feed = RemoteFeed::new(Arc::downgrade(&sink));
            live.set_feed(feed.clone());
            self.inner.store.watch(name, live.durable_version(), feed);
        }
        Ok(live)
    }
}

fn server() -> Sender {
    Sender {
        id: SERVER_ORIGIN,
        mode: Mode::Stream,
        key: None,
    }
}
