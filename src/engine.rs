//! The [`Engine`]: the models of one server and the sessions attached to them.

mod history;
pub(crate) mod slot;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde_json::{Map, Value};

use crate::config::Config;
use crate::error::JoinError;
use crate::lock::{read_lock, write_lock};
use crate::model::{MemoryModel, Model, ModelFactory, Rejection};
use crate::name::ModelName;
use crate::session::Session;
use crate::subscriber::{ClientId, CloseReason, Mode, Subscriber};

use slot::{ModelSlot, ResumePoint};

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

/// The sync engine: validates frames, merges updates, and fans the differences out, for any
/// number of named models. No I/O: transports feed it frames and drain its [`Subscriber`]s.
///
/// Cloning is cheap and every clone is the same engine: keep one in your service's state.
/// Different models never wait for each other; all messages of one model are applied in one
/// total order.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

pub(crate) struct EngineInner {
    pub(crate) config: Config,
    factory: Box<ModelFactory>,
    models: RwLock<HashMap<ModelName, Arc<ModelSlot>>>,
    next_client: AtomicU64,
    shut_down: AtomicBool,
}

impl Default for Engine {
    fn default() -> Self {
        Engine::new(Config::default())
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
    /// An engine whose models are [`MemoryModel`]s that start empty.
    pub fn new(config: Config) -> Self {
        Engine::with_model_factory(config, |_| Ok(Box::new(MemoryModel::default())))
    }

    /// An engine that asks `factory` for each model the first time a session joins it; the
    /// factory may refuse a name ([`JoinError::Refused`]). It runs under the engine's model
    /// table lock, so it should be quick.
    pub fn with_model_factory(
        config: Config,
        factory: impl Fn(&ModelName) -> Result<Box<dyn Model>, Rejection> + Send + Sync + 'static,
    ) -> Self {
        Engine {
            inner: Arc::new(EngineInner {
                config,
                factory: Box::new(factory),
                models: RwLock::new(HashMap::new()),
                next_client: AtomicU64::new(1),
                shut_down: AtomicBool::new(false),
            }),
        }
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Attaches `subscriber` to the model `model`, creating the model on first use.
    ///
    /// The subscriber first receives a snapshot (or, when resuming, the diffs it missed), then
    /// every later message of the model in order. The returned [`Session`] sends on its behalf;
    /// dropping it detaches the subscriber.
    pub fn join(
        &self,
        model: &str,
        subscriber: Arc<dyn Subscriber>,
        options: JoinOptions,
    ) -> Result<Session, JoinError> {
        let name = ModelName::new(model)?;
        let id = ClientId(self.inner.next_client.fetch_add(1, Ordering::Relaxed));
        let slot = loop {
            let slot = self.slot(name.clone())?;
            let resume = options.resume.as_ref().map(|r| ResumePoint {
                since: r.since,
                epoch: &r.epoch,
            });
            match slot.join(id, options.mode, subscriber.clone(), resume) {
                Ok(()) => break slot,
                // Removed between lookup and join: the next lookup creates it afresh.
                Err(CloseReason::ModelRemoved) => continue,
                Err(_) => return Err(JoinError::ShutDown),
            }
        };
        Ok(Session::new(
            self.inner.clone(),
            slot,
            id,
            options.mode,
            options.access,
        ))
    }

    /// Runs `read` on a model's current state and version, or returns `None` if the model does
    /// not exist (it is not created).
    pub fn read<R>(
        &self,
        model: &str,
        read: impl FnOnce(&Map<String, Value>, u64) -> R,
    ) -> Option<R> {
        let slot = self.existing(model)?;
        Some(slot.read(read))
    }

    /// How many bytes of a model's messages are waiting for fan-out (bounded by
    /// [`Config::max_fanout_backlog_bytes`]), or `None` if the model does not exist: a gauge of
    /// how far delivery lags behind publishing.
    pub fn fanout_backlog(&self, model: &str) -> Option<usize> {
        Some(self.existing(model)?.backlog())
    }

    /// A copy of a model's state, or `None` if it does not exist.
    pub fn state(&self, model: &str) -> Option<Map<String, Value>> {
        self.read(model, |state, _| state.clone())
    }

    /// The names of the models the engine holds.
    pub fn models(&self) -> Vec<ModelName> {
        read_lock(&self.inner.models).keys().cloned().collect()
    }

    /// How many models the engine holds.
    pub fn model_count(&self) -> usize {
        read_lock(&self.inner.models).len()
    }

    /// Drops a model: its subscribers are told [`CloseReason::ModelRemoved`], and a later join
    /// creates it afresh with a new epoch. Returns whether it existed.
    pub fn remove_model(&self, model: &str) -> bool {
        let removed = write_lock(&self.inner.models).remove(model);
        match removed {
            Some(slot) => {
                slot.close(CloseReason::ModelRemoved);
                true
            }
            None => false,
        }
    }

    /// Stops the engine: every subscriber is told [`CloseReason::Shutdown`], later joins fail
    /// and later frames are refused with [`SendError::Closed`](crate::SendError::Closed). A
    /// frame being applied when this is called is applied whole or not at all.
    pub fn shutdown(&self) {
        self.inner.shut_down.store(true, Ordering::SeqCst);
        let slots: Vec<Arc<ModelSlot>> = read_lock(&self.inner.models).values().cloned().collect();
        for slot in slots {
            slot.close(CloseReason::Shutdown);
        }
    }

    /// Whether [`shutdown`](Engine::shutdown) was called.
    pub fn is_shut_down(&self) -> bool {
        self.inner.shut_down.load(Ordering::SeqCst)
    }

    fn existing(&self, model: &str) -> Option<Arc<ModelSlot>> {
        read_lock(&self.inner.models).get(model).cloned()
    }

    fn slot(&self, name: ModelName) -> Result<Arc<ModelSlot>, JoinError> {
        if self.is_shut_down() {
            return Err(JoinError::ShutDown);
        }
        if let Some(slot) = self.existing(name.as_str()) {
            return Ok(slot);
        }
        let mut models = write_lock(&self.inner.models);
        // Checked again under the write lock, so that shutdown sees every model it must close.
        if self.is_shut_down() {
            return Err(JoinError::ShutDown);
        }
        if let Some(slot) = models.get(&name) {
            return Ok(slot.clone());
        }
        let limit = self.inner.config.max_models;
        if models.len() >= limit {
            return Err(JoinError::TooManyModels { limit });
        }
        let model = (self.inner.factory)(&name).map_err(|r| JoinError::Refused(r.0))?;
        let slot = Arc::new(ModelSlot::new(name.clone(), model, &self.inner.config));
        models.insert(name, slot.clone());
        Ok(slot)
    }
}
