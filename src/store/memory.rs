//! [`MemoryStore`]: models live in memory only (the default).

use super::{AppendDone, Appended, Batch, LoadDone, NewModel, RemoveDone, Store};
use crate::protocol::ModelName;

/// Keeps nothing: every model lives in the engine's memory and is lost with the process (a
/// restarted engine gives each model a new epoch, so clients take a fresh snapshot). Appends
/// are confirmed at once, so the engine skips batching and memory mode runs at full speed.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryStore;

impl Store for MemoryStore {
    fn confirms_at_once(&self) -> bool {
        true
    }

    fn load(&self, _model: &ModelName, create: Option<NewModel>, done: LoadDone) {
        done.complete(Ok(create.map(NewModel::into_stored)));
    }

    fn append(&self, _batch: Batch, done: AppendDone) {
        done.complete(Ok(Appended::Committed));
    }

    fn remove(&self, _model: &ModelName, done: RemoveDone) {
        done.complete(Ok(()));
    }
}
