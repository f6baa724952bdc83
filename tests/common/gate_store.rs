//! A store whose completions the test holds: loads and appends wait until the test releases
//! them (with success or a failure), and are then completed from a thread of the store's own
//! ("gate-store"), as a real store's writer thread would.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use purly::{
    AppendDone, Appended, Batch, LoadDone, ModelName, NewModel, RemoveDone, Store, StoreError,
    StoredDiff, StoredModel,
};

/// The name of the thread every completion comes from.
pub(crate) const STORE_THREAD: &str = "gate-store";

#[derive(Default)]
struct Gates {
    hold_loads: bool,
    hold_appends: bool,
    loads: VecDeque<(ModelName, Option<NewModel>, LoadDone)>,
    appends: VecDeque<(Batch, AppendDone)>,
    stored: HashMap<ModelName, StoredModel>,
}

/// See the module docs. Cheap to clone: every clone is the same store.
#[derive(Clone, Default)]
pub(crate) struct GateStore(Arc<Mutex<Gates>>);

impl GateStore {
    fn gates(&self) -> std::sync::MutexGuard<'_, Gates> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// From now on loads wait for [`release_loads`](GateStore::release_loads).
    pub(crate) fn hold_loads(&self, hold: bool) {
        self.gates().hold_loads = hold;
    }

    /// From now on appends wait for [`release_appends`](GateStore::release_appends).
    pub(crate) fn hold_appends(&self, hold: bool) {
        self.gates().hold_appends = hold;
    }

    /// How many loads and appends wait.
    pub(crate) fn held(&self) -> (usize, usize) {
        let gates = self.gates();
        (gates.loads.len(), gates.appends.len())
    }

    /// Completes every held load (from the store's thread) and waits until that is done.
    pub(crate) fn release_loads(&self) {
        let loads: Vec<_> = self.gates().loads.drain(..).collect();
        let store = self.clone();
        on_store_thread(move || {
            for (model, create, done) in loads {
                let loaded = store.load_now(&model, create);
                done.complete(Ok(loaded));
            }
        });
    }

    /// Completes every held append, committed (`ok`) or failed, from the store's thread.
    pub(crate) fn release_appends(&self, ok: bool) {
        let appends: Vec<_> = self.gates().appends.drain(..).collect();
        let store = self.clone();
        on_store_thread(move || {
            for (batch, done) in appends {
                if ok {
                    store.commit(&batch);
                    done.complete(Ok(Appended::Committed));
                } else {
                    done.complete(Err(StoreError::Io("injected: the disk failed".into())));
                }
            }
        });
    }

    /// The versions the store holds for `model`.
    pub(crate) fn stored_version(&self, model: &str) -> Option<u64> {
        let name = ModelName::new(model).ok()?;
        self.gates().stored.get(&name).map(StoredModel::version)
    }

    fn load_now(&self, model: &ModelName, create: Option<NewModel>) -> Option<StoredModel> {
        let mut gates = self.gates();
        if let Some(stored) = gates.stored.get(model) {
            return Some(stored.clone());
        }
        let stored = create.map(NewModel::into_stored)?;
        gates.stored.insert(model.clone(), stored.clone());
        Some(stored)
    }

    fn commit(&self, batch: &Batch) {
        let mut gates = self.gates();
        let stored = gates
            .stored
            .entry(batch.model.clone())
            .or_insert_with(|| StoredModel {
                epoch: batch.epoch.to_string(),
                checkpoint_version: 0,
                checkpoint: Default::default(),
                diffs: Vec::new(),
                keys: Vec::new(),
                presences: Vec::new(),
            });
        for (i, diff) in batch.diffs.iter().enumerate() {
            stored.diffs.push(StoredDiff::new(
                batch.base_version + 1 + i as u64,
                diff.content_json().to_owned(),
            ));
        }
    }
}

/// Runs `work` on a thread named like the store's, and waits for it.
fn on_store_thread(work: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .name(STORE_THREAD.to_owned())
        .spawn(work)
        .expect("a thread for the store")
        .join()
        .expect("the store's thread did not panic");
}

impl Store for GateStore {
    fn load(&self, model: &ModelName, create: Option<NewModel>, done: LoadDone) {
        let mut gates = self.gates();
        if gates.hold_loads {
            gates.loads.push_back((model.clone(), create, done));
            return;
        }
        drop(gates);
        let loaded = self.load_now(model, create);
        done.complete(Ok(loaded));
    }

    fn append(&self, batch: Batch, done: AppendDone) {
        let mut gates = self.gates();
        if gates.hold_appends {
            gates.appends.push_back((batch, done));
            return;
        }
        drop(gates);
        self.commit(&batch);
        done.complete(Ok(Appended::Committed));
    }

    fn remove(&self, model: &ModelName, done: RemoveDone) {
        self.gates().stored.remove(model);
        done.complete(Ok(()));
    }
}
