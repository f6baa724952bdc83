//! The [`Model`] trait: the embedder's say over one named model (its first state, which
//! updates it accepts, what it does with each diff).

use serde_json::{Map, Value};
use thiserror::Error;

use crate::protocol::ModelName;

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

/// The embedder's policy for one named model.
///
/// The engine owns the state and the merge: it calls [`check`](Model::check) before each update
/// of a frame, merges the update, rolls the whole frame back if any of its messages is refused,
/// and calls [`committed`](Model::committed) for every diff that stays. All calls for one model
/// happen under that model's lock, one at a time, so they must be quick: no network or disk
/// round trips on this path (queue them instead).
pub trait Model: Send + 'static {
    /// The state a new model starts from, asked once when the model is created (not when a
    /// stored model is loaded). The default is an empty object.
    fn initial_state(&mut self) -> Map<String, Value> {
        Map::new()
    }

    /// Accepts or refuses an update before it is merged. `state` holds the model with the
    /// frame's earlier updates applied. The default accepts everything.
    fn check(
        &self,
        state: &Map<String, Value>,
        update: &Map<String, Value>,
    ) -> Result<(), Rejection> {
        let _ = (state, update);
        Ok(())
    }

    /// A diff was applied and the model's version is now `version`. `diff_json` is the diff
    /// object as compact JSON text, exactly as clients receive it (read it with `serde_json`
    /// when the object is needed: the engine does not build one). With a durable store it is
    /// not yet durable here: clients are shown it only once it is.
    fn committed(&mut self, version: u64, diff_json: &str) {
        let _ = (version, diff_json);
    }
}

/// The default model: accepts every update, and starts from a given state (empty by default).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DefaultModel {
    initial: Map<String, Value>,
}

impl DefaultModel {
    /// A model that starts from `state` when it is created.
    pub fn new(state: Map<String, Value>) -> Self {
        DefaultModel { initial: state }
    }
}

impl Model for DefaultModel {
    fn initial_state(&mut self) -> Map<String, Value> {
        std::mem::take(&mut self.initial)
    }
}

/// Creates the model for a name the first time a session joins it, or refuses the name.
pub type ModelFactory = dyn Fn(&ModelName) -> Result<Box<dyn Model>, Rejection> + Send + Sync;
