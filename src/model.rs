//! The [`Model`] trait: the state of one named model, and the embedder's say over its updates.

use serde_json::{Map, Value};
use thiserror::Error;

use crate::name::ModelName;

/// An embedder's refusal of an update or of a model; its text becomes the `message` of the
/// `rejected` error the client receives.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct Rejection(pub String);

impl Rejection {
    /// A refusal with the given reason.
    pub fn new(reason: impl Into<String>) -> Self {
        Rejection(reason.into())
    }
}

/// The state of one named model, as the engine reads and changes it.
///
/// The engine owns the merge: it calls [`check`](Model::check) before each update of a frame,
/// merges the update into [`state_mut`](Model::state_mut), rolls the whole frame back if any of
/// its messages is refused, and calls [`committed`](Model::committed) for every diff that
/// stays. All calls for one model happen under that model's lock, one at a time, so they must
/// be quick: no network or disk round trips on this path (queue them instead).
///
/// The state must only change through the engine; anything else would be invisible to the
/// clients until they next take a snapshot.
pub trait Model: Send + 'static {
    /// The current state.
    fn state(&self) -> &Map<String, Value>;

    /// The state, for the engine to merge updates into.
    fn state_mut(&mut self) -> &mut Map<String, Value>;

    /// Accepts or refuses an update before it is merged. [`state`](Model::state) holds the
    /// state with the frame's earlier updates applied. The default accepts everything.
    fn check(&self, update: &Map<String, Value>) -> Result<(), Rejection> {
        let _ = update;
        Ok(())
    }

    /// A diff was applied and the model's version is now `version` (e.g. to persist it).
    fn committed(&mut self, version: u64, diff: &Map<String, Value>) {
        let _ = (version, diff);
    }
}

/// The default model: a JSON object in memory, accepting every update.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryModel {
    state: Map<String, Value>,
}

impl MemoryModel {
    /// A model that starts from `state`.
    pub fn new(state: Map<String, Value>) -> Self {
        MemoryModel { state }
    }
}

impl Model for MemoryModel {
    fn state(&self) -> &Map<String, Value> {
        &self.state
    }

    fn state_mut(&mut self) -> &mut Map<String, Value> {
        &mut self.state
    }
}

/// Creates the model for a name the first time a session joins it, or refuses the name.
pub type ModelFactory = dyn Fn(&ModelName) -> Result<Box<dyn Model>, Rejection> + Send + Sync;
