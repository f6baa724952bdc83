//! The store seam: where the engine keeps its models so that they outlive the process, and
//! (with a shared store) so that several engines, "nodes", order one model together.
//!
//! The engine drives a store through [`Store`]; the store does its I/O on its own threads (or
//! its own runtime) and reports each append back through [`AppendDone`]. The core owns no
//! thread and no runtime for it.
//!
//! ```text
//!  frames ─▶ transaction (under the model's lock) ─▶ unsent diffs ─▶ [one batch in flight]
//!                                                          ▲                │ Store::append
//!       fan-out releases every message queued behind       └── next batch ──┤ (group commit)
//!       a diff only once the store has it ◀──────────────────── AppendDone ─┘
//! ```
//!
//! [`MemoryStore`] keeps nothing and confirms every append at once: the engine then skips the
//! batching entirely, so memory mode costs what it did before stores existed.

mod memory;

use std::fmt;
use std::sync::{Arc, Weak};

use serde_json::{Map, Value};

use crate::error::StoreError;
use crate::protocol::{ModelName, ServerMessage};

pub use memory::MemoryStore;

/// One diff as the store keeps it: the version it made and its JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDiff {
    /// The model's version after this diff.
    pub version: u64,
    /// The diff's JSON text (a JSON object).
    pub json: String,
    /// On the last diff of a batch, a shared store's feed hands over the client key records
    /// the batch wrote ([`Batch::keys_json`]), so that every node judges resends alike.
    /// `None` elsewhere (and always for a store with one writer).
    pub keys: Option<String>,
}

impl StoredDiff {
    /// A diff with no client key records.
    pub fn new(version: u64, json: impl Into<String>) -> Self {
        StoredDiff {
            version,
            json: json.into(),
            keys: None,
        }
    }
}

/// One client key's record as a store keeps it (PROTOCOL.md section 9): the key and the
/// engine's JSON text for it (the highest update id decided and the last answers), opaque to
/// the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// The client key.
    pub key: String,
    /// The engine's record of it.
    pub record: String,
}

/// A client key record a batch writes: `None` forgets the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyWrite {
    /// The client key.
    pub key: Arc<str>,
    /// Its new record, or `None` to forget it.
    pub record: Option<String>,
}

/// A presence another node holds, as a shared store hands it over (PROTOCOL.md section 11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemotePresence {
    /// The presence id (`<node>-<connection>`).
    pub id: String,
    /// The presence, as compact JSON text (an object).
    pub json: String,
}

/// A model as a store hands it back: its epoch, a checkpoint and the diffs after it (and some
/// before it, for resume).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredModel {
    /// The epoch of the model's version counter.
    pub epoch: String,
    /// The version the checkpoint holds (0 with an empty state when there is none).
    pub checkpoint_version: u64,
    /// The state at `checkpoint_version`.
    pub checkpoint: Map<String, Value>,
    /// The diffs the store keeps, in version order with no gap, ending at the model's version:
    /// those after the checkpoint rebuild the state, and all of them serve resumes.
    pub diffs: Vec<StoredDiff>,
    /// The model's client key records, as of its version.
    pub keys: Vec<StoredKey>,
    /// The presences other nodes hold for the model now (a shared store that keeps them,
    /// PROTOCOL.md section 11); empty otherwise.
    pub presences: Vec<RemotePresence>,
}

impl StoredModel {
    /// The model's version: that of the last diff, or the checkpoint's.
    pub fn version(&self) -> u64 {
        self.diffs
            .last()
            .map_or(self.checkpoint_version, |d| d.version)
            .max(self.checkpoint_version)
    }
}

/// The whole state of a model at one version, handed to the store to write as a checkpoint.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The version the state is at (the batch's last version).
    pub version: u64,
    /// The state; shared with the engine, so serialize it and let go of it soon.
    pub state: Arc<Map<String, Value>>,
}

/// A batch of diffs for one model, to append in one write.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The model.
    pub model: ModelName,
    /// The epoch the diffs belong to; a store that has no record of the model creates it with
    /// this epoch.
    pub epoch: Arc<str>,
    /// The version the store must be at for the append to apply (the version before the
    /// first diff).
    pub base_version: u64,
    /// The diffs, versions `base_version + 1 ..`, as the engine fans them out.
    pub diffs: Vec<ServerMessage>,
    /// A checkpoint at the batch's last version, when the engine's policy says one is due.
    pub checkpoint: Option<Checkpoint>,
    /// Client key records to write in the same commit as the diffs (PROTOCOL.md section 9).
    /// A batch may carry records and no diff (an update found to change nothing, or refused);
    /// it still applies only at `base_version`.
    pub keys: Vec<KeyWrite>,
}

impl Batch {
    /// The version the model reaches with this batch.
    pub fn last_version(&self) -> u64 {
        self.base_version + self.diffs.len() as u64
    }

    /// Bytes of diff text in the batch.
    pub fn bytes(&self) -> usize {
        self.diffs.iter().map(|d| d.content_len()).sum()
    }

    /// The batch's diffs as one JSON array (`[diff,diff,...]`), joined without re-encoding:
    /// how stores keep or publish a batch.
    pub fn diffs_json(&self) -> String {
        let mut out = String::with_capacity(self.bytes() + self.diffs.len() + 2);
        out.push('[');
        for (i, diff) in self.diffs.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(diff.content_json());
        }
        out.push(']');
        out
    }

    /// The batch's client key records as one JSON array, `[["key", "record"], ["key", null]]`
    /// (a record is the engine's JSON text, kept as a string): how a shared store hands them
    /// to the other nodes with the batch's last diff ([`StoredDiff::keys`]).
    pub fn keys_json(&self) -> String {
        let writes: Vec<serde_json::Value> = self
            .keys
            .iter()
            .map(|w| serde_json::json!([&*w.key, w.record]))
            .collect();
        serde_json::Value::from(writes).to_string()
    }
}

/// How an append ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Appended {
    /// Every diff of the batch is durable.
    Committed,
    /// Nothing was written: the model is no longer at the batch's base version and epoch (a
    /// shared store, another node wrote first). An embedded store never answers this. The
    /// engine takes the diffs it missed, re-runs its frames on top of them (the model's
    /// `check` again) and appends again.
    Conflict {
        /// The version the store holds.
        version: u64,
        /// The epoch the store holds.
        epoch: String,
        /// The diffs after the batch's base version, up to `version`, as far as the store
        /// still keeps them (the engine reloads the model if they do not reach `version`).
        missed: Vec<StoredDiff>,
    },
}

/// What the engine does with another node's commits (and signals) of a model it holds.
pub(crate) trait RemoteSink: Send + Sync {
    /// Diffs committed by another writer, in version order (versions the engine already has
    /// are skipped; a later gap waits for the missing versions).
    fn remote(&self, epoch: &str, diffs: Vec<StoredDiff>);
    /// A signal another node released after version `after`.
    fn signal(&self, after: u64, signal: ServerMessage);
    /// The feed may have missed commits: joins wait until [`caught_up`](RemoteSink::caught_up).
    fn suspect(&self);
    /// Node `node` is known dead: its presences are gone.
    fn node_gone(&self, node: &str);
    /// The other nodes' presences as the store holds them now.
    fn presences(&self, remote: Vec<RemotePresence>);
    /// The other nodes took this node for dead: its presences go out again.
    fn renew_presences(&self);
    /// The feed read the model's log: everything committed before is handed over.
    fn caught_up(&self);
    /// Another writer removed the model.
    fn removed(&self);
}

/// Where a shared store hands another node's commits of one model (see [`Store::watch`]).
/// Cheap to clone; it does nothing once the engine has let go of the model.
#[derive(Clone)]
pub struct RemoteFeed(Weak<dyn RemoteSink>);

impl RemoteFeed {
    pub(crate) fn new(sink: Weak<dyn RemoteSink>) -> Self {
        RemoteFeed(sink)
    }

    /// Hands over diffs another writer committed, in version order, each once or more (the
    /// engine skips those it has). Returns `false` once the engine no longer holds the model.
    pub fn deliver(&self, epoch: &str, diffs: Vec<StoredDiff>) -> bool {
        match self.0.upgrade() {
            Some(sink) => {
                sink.remote(epoch, diffs);
                true
            }
            None => false,
        }
    }

    /// A signal another node released after version `after` of the model (its `header.origin`
    /// is that node's): shown to this node's clients once they have that version. Returns
    /// `false` once the engine no longer holds the model.
    pub fn signal(&self, after: u64, signal: ServerMessage) -> bool {
        match self.0.upgrade() {
            Some(sink) => {
                sink.signal(after, signal);
                true
            }
            None => false,
        }
    }

    /// The feed broke (a reconnection, a failed read, a lost message): the model may be behind
    /// the store. Until [`caught_up`](RemoteFeed::caught_up), nobody joins it or reads its
    /// state here (they wait, as for a load): a node never serves a stale model.
    pub fn suspect(&self) {
        if let Some(sink) = self.0.upgrade() {
            sink.suspect();
        }
    }

    /// The feed read the model's log after a [`suspect`](RemoteFeed::suspect) (or a
    /// [`Store::catch_up`]): every commit before the read was handed over with
    /// [`deliver`](RemoteFeed::deliver) first.
    pub fn caught_up(&self) {
        if let Some(sink) = self.0.upgrade() {
            sink.caught_up();
        }
    }

    /// Node `node` is known dead (its heartbeat stopped): the engine drops its connections'
    /// presences from the model and tells its clients (PROTOCOL.md section 11).
    pub fn node_gone(&self, node: &str) {
        if let Some(sink) = self.0.upgrade() {
            sink.node_gone(node);
        }
    }

    /// The other nodes' presences of the model as the store holds them now (read again after
    /// the feed may have missed changes): the engine replaces what it had, and tells its
    /// clients what differs.
    pub fn presences(&self, remote: Vec<RemotePresence>) {
        if let Some(sink) = self.0.upgrade() {
            sink.presences(remote);
        }
    }

    /// The other nodes took this node for dead (its heartbeat lapsed: it was stopped, or cut
    /// off from the store, for longer than the presence timeout) and dropped its presences:
    /// the engine sends each of its connections' presences again, through the store's relay.
    pub fn renew_presences(&self) {
        if let Some(sink) = self.0.upgrade() {
            sink.renew_presences();
        }
    }

    /// Another writer removed the model: its sessions here are closed.
    pub fn removed(&self) {
        if let Some(sink) = self.0.upgrade() {
            sink.removed();
        }
    }

    /// Whether two feeds lead to the same live model.
    pub fn same(&self, other: &RemoteFeed) -> bool {
        Weak::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for RemoteFeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RemoteFeed")
    }
}

/// The engine's callback for one store operation: call [`complete`](Completion::complete)
/// exactly once, from any thread, when the operation has ended. Dropping it uncalled counts as
/// a failure ([`StoreError::Closed`]).
///
/// Completing does next to nothing on the calling thread: it records the result and wakes
/// whoever waits, or hands the model's follow-up work (the next batch, the fan-out) to the
/// engine's [executor](crate::EngineBuilder::executor). A store's own thread never runs a
/// fan-out.
pub struct Completion<T>(Option<Box<OnDone<T>>>);

type OnDone<T> = dyn FnOnce(Result<T, StoreError>) + Send;

/// The callback of [`Store::append`].
pub type AppendDone = Completion<Appended>;

/// The callback of [`Store::load`]: the model, or `None` when the store holds nothing for it
/// and no creation was asked for.
pub type LoadDone = Completion<Option<StoredModel>>;

/// The callback of [`Store::remove`].
pub type RemoveDone = Completion<()>;

/// The callback of [`Store::ask`]: the other node's answer.
pub type AskDone = Completion<String>;

/// What answers the requests other nodes send this one ([`Store::answer`]): it gets each
/// request's text and completes its [`AskDone`] with the answer, at once or later.
pub type NodeHandler = Arc<dyn Fn(String, AskDone) + Send + Sync>;

impl<T> Completion<T> {
    /// Wraps the reaction to an operation's end (the engine makes those it hands a store; a
    /// store makes one for each request another node sends, see [`Store::answer`]).
    pub fn new(done: impl FnOnce(Result<T, StoreError>) + Send + 'static) -> Self {
        Completion(Some(Box::new(done)))
    }

    /// Reports how the operation ended.
    pub fn complete(mut self, result: Result<T, StoreError>) {
        if let Some(done) = self.0.take() {
            done(result);
        }
    }
}

impl<T> Drop for Completion<T> {
    fn drop(&mut self) {
        if let Some(done) = self.0.take() {
            done(Err(StoreError::Closed));
        }
    }
}

impl<T> fmt::Debug for Completion<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Completion")
    }
}

/// A model to record if the store holds nothing for it (see [`Store::load`]): its epoch and
/// first state, at version 0.
#[derive(Debug, Clone)]
pub struct NewModel {
    /// The epoch of the new model's version counter.
    pub epoch: Arc<str>,
    /// Its first state (the model's [`initial_state`](crate::Model::initial_state)).
    pub state: Map<String, Value>,
}

impl NewModel {
    /// The model as a store hands it back once recorded: version 0, no diffs.
    pub fn into_stored(self) -> StoredModel {
        StoredModel {
            epoch: self.epoch.to_string(),
            checkpoint_version: 0,
            checkpoint: self.state,
            diffs: Vec::new(),
            keys: Vec::new(),
            presences: Vec::new(),
        }
    }
}

/// When the engine attaches a checkpoint to a batch: after this many diffs or diff bytes since
/// the last one, whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// Diffs between checkpoints.
    pub every_diffs: u64,
    /// Diff bytes between checkpoints.
    pub every_bytes: u64,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        CheckpointPolicy {
            every_diffs: 1000,
            every_bytes: 8 << 20,
        }
    }
}

/// Where an [`Engine`](crate::Engine) keeps its models.
///
/// # Contract
/// No method blocks: each starts its I/O and returns; the result comes back through the
/// [`Completion`] it was given, from any thread. The engine never waits for a store on a
/// caller's thread: a join of a model being loaded awaits the load, and everything else goes
/// on meanwhile.
/// - [`load`](Store::load) reports what the store holds for a model. With `create`, a model
///   the store does not hold is recorded durably first (epoch, version 0, the first state as
///   its checkpoint), unless another writer recorded it meanwhile (then theirs is reported),
///   so that a model joined but never written keeps its epoch across restarts. The engine
///   calls it when a model is first needed (a join, a state read, a server-side write) and is
///   not in memory.
/// - [`append`](Store::append) writes a batch at `base_version` and reports once the diffs
///   are as durable as the store promises. The engine has at most one append in flight per
///   model, and shows nobody a diff before its append committed. A store that cannot tell
///   whether a write happened reports an error: the engine then reloads the model from the
///   store before accepting more.
/// - After a committed checkpoint at version C, the store may drop the diffs older than the
///   resume history it keeps; [`load`](Store::load) must still return a contiguous run of diffs
///   from the checkpoint (or earlier) to the model's version.
/// - [`remove`](Store::remove) forgets a model and reports once a later `load` sees it gone.
pub trait Store: Send + Sync + 'static {
    /// Whether every append is durable the moment it is made. The engine then never batches:
    /// it treats each diff as committed at once and calls neither `append` nor `load`.
    fn confirms_at_once(&self) -> bool {
        false
    }

    /// Reports what the store holds for `model` (recording `create` first if it holds
    /// nothing), through `done`.
    fn load(&self, model: &ModelName, create: Option<NewModel>, done: LoadDone);

    /// Appends a batch; reports through `done` (see the trait docs).
    fn append(&self, batch: Batch, done: AppendDone);

    /// Forgets `model` and everything stored for it; reports through `done`.
    fn remove(&self, model: &ModelName, done: RemoveDone);

    /// When the engine attaches checkpoints to batches.
    fn checkpoint_policy(&self) -> CheckpointPolicy {
        CheckpointPolicy::default()
    }

    /// Whether other engines write the same models (several nodes on one store). The engine
    /// then keeps each frame until it is durable, so that it can re-run it after a
    /// [`Appended::Conflict`] or another node's commit.
    fn shared(&self) -> bool {
        false
    }

    /// The engine holds `model` from version `from` on: a shared store hands every later
    /// commit of another writer to `feed`, in order, filling any gap from its log. Replaces an
    /// earlier feed of the same model. Default: nothing (no other writer).
    fn watch(&self, model: &ModelName, from: u64, feed: RemoteFeed) {
        let _ = (model, from, feed);
    }

    /// The engine let go of `model` (evicted, removed, failed): stop feeding `feed`, unless a
    /// newer feed replaced it.
    fn unwatch(&self, model: &ModelName, feed: &RemoteFeed) {
        let _ = (model, feed);
    }

    /// A signal this node released after version `after` of `model`: a shared store hands it
    /// to the other nodes that hold the model ([`RemoteFeed::signal`]), in the order of the
    /// calls. Signals are not stored. Default: nothing (no other node).
    fn relay(&self, model: &ModelName, after: u64, signal: &ServerMessage) {
        let _ = (model, after, signal);
    }

    /// The engine needs `model` caught up now (a client resumes after a version this node has
    /// not seen yet): a shared store reads the log after what it handed over, delivers it to
    /// the model's feed, then calls [`RemoteFeed::caught_up`]. Default: nothing.
    fn catch_up(&self, model: &ModelName) {
        let _ = model;
    }

    /// This node's name among the nodes of a shared store (what [`ask`](Store::ask) takes),
    /// or `None` when there is no other node. Default: `None`.
    fn node(&self) -> Option<String> {
        None
    }

    /// Sends `request` to node `node` (through the store's pub/sub) and reports its answer
    /// through `done`, or an error if none came in time: how a transport reaches the node that
    /// holds a connection (an event stream's POST, PROTOCOL.md section 10). Default: an error
    /// (no other node).
    fn ask(&self, node: &str, request: String, done: AskDone) {
        let _ = (node, request);
        done.complete(Err(StoreError::Io("no other node to ask".into())));
    }

    /// Hands the requests other nodes [`ask`](Store::ask) this one to `handler` (replacing an
    /// earlier one). Default: nothing (no other node).
    fn answer(&self, handler: NodeHandler) {
        let _ = handler;
    }
}

/// A shared store: an embedder keeps one handle (to close it, say) and gives the engine another.
impl<S: Store + ?Sized> Store for Arc<S> {
    fn confirms_at_once(&self) -> bool {
        (**self).confirms_at_once()
    }

    fn load(&self, model: &ModelName, create: Option<NewModel>, done: LoadDone) {
        (**self).load(model, create, done)
    }

    fn append(&self, batch: Batch, done: AppendDone) {
        (**self).append(batch, done)
    }

    fn remove(&self, model: &ModelName, done: RemoveDone) {
        (**self).remove(model, done)
    }

    fn checkpoint_policy(&self) -> CheckpointPolicy {
        (**self).checkpoint_policy()
    }

    fn shared(&self) -> bool {
        (**self).shared()
    }

    fn watch(&self, model: &ModelName, from: u64, feed: RemoteFeed) {
        (**self).watch(model, from, feed)
    }

    fn unwatch(&self, model: &ModelName, feed: &RemoteFeed) {
        (**self).unwatch(model, feed)
    }

    fn relay(&self, model: &ModelName, after: u64, signal: &ServerMessage) {
        (**self).relay(model, after, signal)
    }

    fn catch_up(&self, model: &ModelName) {
        (**self).catch_up(model)
    }

    fn node(&self) -> Option<String> {
        (**self).node()
    }

    fn ask(&self, node: &str, request: String, done: AskDone) {
        (**self).ask(node, request, done)
    }

    fn answer(&self, handler: NodeHandler) {
        (**self).answer(handler)
    }
}
