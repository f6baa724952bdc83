//! The [`Engine`]: the models of one server, the sessions attached to them, and the store
//! that keeps them.
//!
//! Inside: [`transaction`] turns a frame into effects or a refusal (pure), [`live`] orders one
//! model's changes and releases them once durable, [`fanout`] delivers them with the lag
//! policy, [`history`] keeps recent diffs for resume, [`snapshot`] shares a serialized state,
//! [`restore`] rebuilds a model from what the store holds, [`session`] is a subscriber's handle.

mod fanout;
mod history;
mod live;
mod replay;
mod restore;
mod session;
mod snapshot;
mod transaction;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde_json::{Map, Value};
use thiserror::Error;

use crate::config::Config;
use crate::error::{JoinError, SendError};
use crate::lock::{read_lock, write_lock};
use crate::model::{DefaultModel, Model, ModelFactory, Rejection};
use crate::protocol::{ClientId, Message, Mode, ModelName};
use crate::store::{MemoryStore, RemoteFeed, RemoteSink, Store};
use crate::subscriber::{CloseReason, Subscriber};
use crate::telemetry::EngineMetrics;
use crate::token::random_hex;

use history::HistoryBudget;
use live::{Closed, LiveModel, ResumePoint, Start, Unapplied};
use transaction::{Sender, Write};

pub use session::Session;
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
    factory: Box<ModelFactory>,
    store: Arc<dyn Store>,
    epochs: Box<EpochSource>,
    models: RwLock<HashMap<ModelName, Arc<LiveModel>>>,
    next_client: AtomicU64,
    shut_down: AtomicBool,
    metrics: Arc<EngineMetrics>,
    history_budget: Arc<HistoryBudget>,
}

/// Builds an [`Engine`]: its limits, its models' policy, its store and its epochs.
pub struct EngineBuilder {
    config: Config,
    factory: Box<ModelFactory>,
    store: Arc<dyn Store>,
    epochs: Box<EpochSource>,
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

    /// The engine. Its metrics are registered with the [`metrics`](https://docs.rs/metrics) recorder installed now
    /// (see [`telemetry`](crate::telemetry)): install yours before.
    pub fn build(self) -> Engine {
        let history_budget = HistoryBudget::new(self.config.history_budget_bytes);
        Engine {
            inner: Arc::new(EngineInner {
                config: self.config,
                factory: self.factory,
                store: self.store,
                epochs: self.epochs,
                models: RwLock::new(HashMap::new()),
                next_client: AtomicU64::new(SERVER_ORIGIN.get() + 1),
                shut_down: AtomicBool::new(false),
                metrics: Arc::new(EngineMetrics::register()),
                history_budget,
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

    /// Attaches `subscriber` to the model `model`, loading it from the store or creating it.
    ///
    /// The subscriber first receives a snapshot (or, when resuming, the diffs it missed), then
    /// every later message of the model in order, each once the store holds it. The returned
    /// [`Session`] sends on its behalf; dropping it detaches the subscriber.
    pub fn join(
        &self,
        model: &str,
        subscriber: Arc<dyn Subscriber>,
        options: JoinOptions,
    ) -> Result<Session, JoinError> {
        let name = ModelName::new(model)?;
        let id = ClientId(self.inner.next_client.fetch_add(1, Ordering::Relaxed));
        let _span = tracing::debug_span!("join", model = %name, client = %id, mode = ?options.mode, resume = options.resume.is_some()).entered();
        loop {
            let Some(live) = self.live(&name, true)? else {
                continue;
            };
            let resume = options.resume.as_ref().map(|r| ResumePoint {
                since: r.since,
                epoch: &r.epoch,
            });
            match live.join(id, options.mode, subscriber.clone(), resume) {
                Ok(()) => {
                    let limits = self.inner.config.limits.clone();
                    return Ok(Session::new(live, id, options.mode, options.access, limits));
                }
                // Removed, evicted or failed between lookup and join: look it up again.
                Err(Closed::Reload) => continue,
                Err(Closed::Shutdown) => return Err(JoinError::ShutDown),
            }
        }
    }

    /// Merges `patch` into `model` (created if needed), in the model's order, as if a client
    /// had sent it: the difference is fanned out with `origin` [`SERVER_ORIGIN`]. Returns the
    /// model's version after it (unchanged if the patch changed nothing) once it is applied in
    /// memory. Like a client's update, it is shown, and so kept, once the store holds it
    /// ([`durable_version`](Engine::durable_version) reaches that version); should the store
    /// fail first, the model is reloaded without it.
    pub fn update(&self, model: &str, patch: Map<String, Value>) -> Result<u64, WriteError> {
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
    ) -> Result<u64, WriteError> {
        self.write(model, Write::Modify(Box::new(change)))
    }

    fn write(&self, model: &str, mut write: Write) -> Result<u64, WriteError> {
        let name = ModelName::new(model).map_err(JoinError::from)?;
        loop {
            let Some(live) = self.live(&name, true)? else {
                continue;
            };
            match live.write(server(), write) {
                Ok(version) => return Ok(version),
                // Closed for a reload between lookup and write: the write goes to the new one.
                Err(Unapplied::Closed(back)) if live.needs_reload() => write = back,
                Err(Unapplied::Closed(_)) => return Err(SendError::Closed.into()),
                Err(Unapplied::Refused(error)) => return Err(error.into()),
            }
        }
    }

    /// Runs `read` on a model's latest applied state and version, or returns `None` if the
    /// model is not in memory (nothing is loaded or created). With a durable store the state
    /// may hold changes the store is still writing; [`read_snapshot`](Engine::read_snapshot)
    /// gives only what is durable.
    pub fn read<R>(
        &self,
        model: &str,
        read: impl FnOnce(&Map<String, Value>, u64) -> R,
    ) -> Option<R> {
        let live = self.existing(model)?;
        Some(live.read(read))
    }

    /// Hands `reply` a [`Snapshot`] of `model` once everything in it is durable, in the model's
    /// order (the `GET /state` route uses it). Loads the model from the store if needed but
    /// never creates it: `Ok(false)` if it does not exist. `reply` runs on the thread that
    /// delivers the model's messages, or is dropped uncalled if the model closes first.
    pub fn read_snapshot(
        &self,
        model: &str,
        reply: impl FnOnce(Arc<Snapshot>) + Send + 'static,
    ) -> Result<bool, JoinError> {
        let name = ModelName::new(model)?;
        let Some(live) = self.live(&name, false)? else {
            return Ok(false);
        };
        match live.read_snapshot(Box::new(reply)) {
            Ok(()) => Ok(true),
            // Closed between lookup and read: the reply was dropped uncalled, as documented.
            Err(Closed::Reload) => Ok(false),
            Err(Closed::Shutdown) => Err(JoinError::ShutDown),
        }
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
    /// Returns whether it was in memory.
    pub fn remove_model(&self, model: &str) -> bool {
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
        if let Ok(name) = ModelName::new(model) {
            if let Err(error) = self.inner.store.remove(&name) {
                tracing::warn!(model, %error, "the store could not remove the model");
            }
        }
        removed.is_some()
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
    /// loading (look again).
    fn live(&self, name: &ModelName, create: bool) -> Result<Option<Arc<LiveModel>>, JoinError> {
        if self.is_shut_down() {
            return Err(JoinError::ShutDown);
        }
        if let Some(live) = self.existing(name.as_str()) {
            if !live.needs_reload() {
                return Ok(Some(live));
            }
        }
        let limit = self.inner.config.max_models;
        let in_memory_store = self.inner.store.confirms_at_once();
        if in_memory_store && !create {
            return Ok(None);
        }
        // Loaded outside the table's lock, so that a slow read holds up no other model.
        let stored = match in_memory_store {
            true => None,
            false => self.inner.store.load(name)?,
        };
        if stored.is_none() && !create {
            return Ok(None);
        }
        if self.model_count() >= limit {
            return Err(JoinError::TooManyModels { limit });
        }
        let mut model = (self.inner.factory)(name).map_err(|r| JoinError::Refused(r.0))?;
        let start = match stored {
            Some(stored) => restore::restore(stored)?,
            None => {
                let epoch: Arc<str> = (self.inner.epochs)().into();
                let state = model.initial_state();
                // A shared store agrees on one epoch: whoever records the model first wins,
                // and the others load theirs.
                match self.inner.store.create(name, &epoch, &state)? {
                    true => Start {
                        epoch,
                        version: 0,
                        state,
                        history: Vec::new(),
                    },
                    false => match self.inner.store.load(name)? {
                        Some(stored) => restore::restore(stored)?,
                        None => return Ok(None),
                    },
                }
            }
        };
        let live = LiveModel::new(
            name.clone(),
            model,
            start,
            self.inner.store.clone(),
            &self.inner.config,
            self.inner.metrics.clone(),
            self.inner.history_budget.clone(),
        );
        let mut models = write_lock(&self.inner.models);
        // Checked again under the write lock, so that shutdown sees every model it must close.
        if self.is_shut_down() {
            return Err(JoinError::ShutDown);
        }
        if let Some(existing) = models.get(name) {
            if !existing.needs_reload() {
                // Another thread loaded it first: use theirs.
                return Ok(Some(existing.clone()));
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
        Ok(Some(live))
    }
}

fn server() -> Sender {
    Sender {
        id: SERVER_ORIGIN,
        mode: Mode::Stream,
    }
}
