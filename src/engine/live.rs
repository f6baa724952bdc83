//! One model in memory: its state, its version counter, its commit pipeline to the store and
//! its ordered fan-out.
//!
//! Two locks, never held together by the fan-out:
//! - `state` guards the model, its versions, its history and a queue of fan-out commands. Every
//!   operation (apply a frame, join, leave, resync, read) takes it briefly, does its part, and
//!   appends commands in the model's total order. Each command is tagged with the version it
//!   follows and is released only once the store holds that version (the *durable* version):
//!   nobody is shown a change, or anything queued after it, before it is durable.
//! - `fanout` guards the subscriber list. Whoever finishes an operation tries to take it and,
//!   if it gets it, runs the released commands in order, outside the state lock ("flat
//!   combining"). A thread that finds it taken returns at once: the holder runs its commands
//!   too. So publishers do not wait for a fan-out, subscribers are never called under the
//!   model's lock, and every subscriber sees commands in queue order.
//! - The queue is bounded in bytes, and so are the diffs the store has not confirmed: past
//!   either bound the model is *over its bound*. Nobody waits in here: a session's
//!   [`poll_ready`](LiveModel::poll_ready) reports it, and the transport stops reading its
//!   socket until the model drains (TCP pushes back on the client), which paces publishers to
//!   the slower of the fan-out and the store. A frame that arrives anyway past twice the
//!   bound is refused with `unavailable`, so the bound holds for callers that do not wait.
//!
//! Store completions do not run here on the store's thread: they are handed to the engine's
//! executor ([`Driver`]), which applies them (the next batch, a rebase) and runs the fan-out.
//!
//! The commit pipeline: diffs that the store has not seen yet wait in `unsent`; at most one
//! batch is in flight; when it completes, everything unsent meanwhile goes out as the next
//! batch (group commit). A store that confirms at once ([`MemoryStore`](crate::MemoryStore))
//! skips all of it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, TryLockError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use metrics::Gauge;

use serde_json::{Map, Value};
use smallvec::SmallVec;

use super::client_keys::{Answer, ClientKeys, Judged};
use super::executor::Driver;
use super::fanout::{Command, Fanout, First, Registered};
use super::history::{History, HistoryBudget};
use super::presence::{self, Presences};
use super::replay::{Replay, Replays};
use super::snapshot::Snapshot;
use super::transaction::{self, Outcome, Sender, Working, Write};
use super::written::Written;
use crate::error::StoreError;
use crate::error::{ErrorCode, FrameError, SendError};
use crate::lock::lock;
use crate::merge::{merge_diff, Change};
use crate::model::Model;
use crate::protocol::{
    ClientId, Header, Message, MessageId, MessageKind, Mode, ModelName, ServerMessage,
    ServerMessageKind,
};
use crate::store::{
    AppendDone, Appended, Batch, Checkpoint, CheckpointPolicy, RemoteFeed, RemotePresence,
    RemoteSink, Store, StoredDiff, StoredKey,
};
use crate::subscriber::{CloseReason, Subscriber};
use crate::telemetry::EngineMetrics;

/// One queued command in this many carries a timestamp for the publish-to-enqueue histogram.
const LATENCY_SAMPLE: u32 = 16;

/// Why a live model stopped taking operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closed {
    /// The engine shut down.
    Shutdown,
    /// Removed, evicted or failed: a later lookup loads the model again.
    Reload,
}

/// What a live model starts from.
pub(crate) struct Start {
    pub(crate) epoch: Arc<str>,
    pub(crate) version: u64,
    pub(crate) state: Map<String, Value>,
    pub(crate) history: Vec<ServerMessage>,
    /// The client keys' records the store kept.
    pub(crate) keys: Vec<StoredKey>,
    /// The presences other nodes published (shared store).
    pub(crate) presences: Vec<RemotePresence>,
}

pub(crate) struct LiveModel {
    me: std::sync::Weak<LiveModel>,
    pub(crate) name: ModelName,
    pub(crate) epoch: Arc<str>,
    /// The engine's name among the nodes (its presence ids start with it).
    instance: Arc<str>,
    store: Arc<dyn Store>,
    at_once: bool,
    shared: bool,
    checkpoints: CheckpointPolicy,
    /// The most bytes of diffs a model may have that the store has not confirmed: past it,
    /// the model is over its bound. A quarter of a subscriber's queue bound, so that what two
    /// commits release back to back (echoes included: the store's thread commits the next
    /// group while the executor delivers the last) fits in the queue of a client that reads.
    max_undurable: usize,
    /// The most diffs in one batch (see [`Config::max_batch_diffs`]).
    max_batch: usize,
    feed: OnceLock<RemoteFeed>,
    max_model_bytes: usize,
    /// The engine's limits, shared by its sessions. Past `max_model_bytes` a frame is refused:
    /// the model may exceed it by one frame (`limits.max_frame_bytes`) per session that did
    /// not wait for it, and by no more than that.
    pub(crate) limits: Arc<crate::config::Limits>,
    /// Whether the model is over its bound (read without the lock by every session's
    /// readiness check; written under it).
    over: AtomicBool,
    /// Shared store: the feed may have missed commits (it broke, or a client resumes past
    /// what this node has): joins and state reads wait until it caught up. Written under the
    /// state lock.
    stale: AtomicBool,
    driver: Arc<Driver>,
    state: Mutex<ModelState>,
    fanout: Mutex<Fanout>,
    pub(crate) metrics: Arc<EngineMetrics>,
}

struct ModelState {
    model: Box<dyn Model>,
    state: Arc<Map<String, Value>>,
    version: u64,
    /// The last version the store holds; commands after it wait.
    durable: u64,
    size: i64,
    history: History,
    snapshot: Option<Weak<Snapshot>>,
    commands: VecDeque<Queued>,
    /// Bytes of the messages in `commands`; the part of the engine's gauge this model last
    /// reported (at each release, not at every command).
    backlog: usize,
    backlog_reported: usize,
    /// Commands queued so far (which ones carry a timestamp).
    pushed: u32,
    backlog_gauge: Gauge,
    max_backlog: usize,
    closed: Option<Closed>,
    sessions: usize,
    idle_seen: bool,
    unsent: Vec<ServerMessage>,
    /// Bytes of `unsent`, and of the batch in flight.
    unsent_bytes: usize,
    in_flight_bytes: usize,
    /// Whether a batch is in flight, how many diffs it carries, and when it was sent.
    in_flight_batch: bool,
    in_flight_diffs: usize,
    in_flight_since: Option<Instant>,
    since_checkpoint: (u64, u64),
    /// Shared store: the frames not yet durable, to run again after another writer's commit.
    replays: Replays,
    /// Shared store: the frame being applied, whose commands are tagged with it.
    applying: Option<u64>,
    /// Shared store: the version after each frame in `unsent`, so that a batch never splits a
    /// frame (a frame is made durable, or run again, whole).
    frame_ends: VecDeque<u64>,
    /// Shared store: other writers' diffs not applied yet (a batch of ours is in flight, or
    /// an earlier version is still missing).
    remote: BTreeMap<u64, StoredDiff>,
    /// The sessions (and server writes) waiting for the model to drain below its bound: at
    /// most one waker per waiting task.
    ready_waiters: Vec<Waker>,
    /// The joins and reads waiting for a stale model to catch up.
    fresh_waiters: Vec<Waker>,
    /// What the model remembers of its client keys' updates.
    keys: ClientKeys,
    /// Who is here (PROTOCOL.md section 11).
    presences: Presences,
}

struct Queued {
    after: u64,
    len: usize,
    /// When it was queued, for one command in [`LATENCY_SAMPLE`] (the publish-to-enqueue
    /// latency is sampled: reading the clock and recording for every command costs more than
    /// the rest of a small model's bookkeeping).
    at: Option<Instant>,
    /// The frame (shared store) whose outcome this is.
    frame: Option<u64>,
    command: Command,
}

/// What a live model shares with its engine.
pub(crate) struct EngineParts<'a> {
    pub(crate) store: &'a Arc<dyn Store>,
    pub(crate) config: &'a crate::config::Config,
    /// `config.limits`, shared.
    pub(crate) limits: &'a Arc<crate::config::Limits>,
    pub(crate) metrics: &'a Arc<EngineMetrics>,
    pub(crate) history_budget: &'a Arc<HistoryBudget>,
    pub(crate) driver: &'a Arc<Driver>,
    pub(crate) instance: &'a Arc<str>,
}

/// How a session resumes (stream mode): the version and epoch it last saw.
pub(crate) struct ResumePoint<'a> {
    pub(crate) since: u64,
    pub(crate) epoch: &'a str,
}

/// Why a write was not applied.
pub(crate) enum Unapplied {
    /// The model is closed; the write is handed back (to apply to the model reloaded).
    Closed(Write),
    /// The frame was refused.
    Refused(SendError),
}

impl LiveModel {
    /// A live model of an engine's, sharing its store, limits, metrics, history budget and
    /// executor.
    pub(crate) fn new(
        name: ModelName,
        model: Box<dyn Model>,
        start: Start,
        engine: EngineParts<'_>,
    ) -> Arc<Self> {
        let (store, config) = (engine.store.clone(), engine.config);
        let (metrics, driver) = (engine.metrics.clone(), engine.driver.clone());
        let budget = engine.history_budget.clone();
        let state = Arc::new(start.state);
        let size = crate::json_text::object_len(&state) as i64;
        let mut history = History::new(config.history_len, config.history_bytes, budget);
        let mut keys = ClientKeys::new(
            config.max_client_keys,
            config.client_key_idle,
            !store.confirms_at_once(),
        );
        keys.load(start.keys);
        for diff in start.history {
            history.push(diff);
        }
        Arc::new_cyclic(|me| LiveModel {
            me: me.clone(),
            name,
            epoch: start.epoch,
            instance: engine.instance.clone(),
            at_once: store.confirms_at_once(),
            shared: store.shared(),
            checkpoints: store.checkpoint_policy(),
            max_undurable: (config.max_queued_bytes / 4).min(config.max_fanout_backlog_bytes),
            max_batch: match store.shared() {
                true => config.max_batch_diffs.max(1),
                // A store with one writer never conflicts: the larger its groups, the faster.
                false => usize::MAX / 4,
            },
            feed: OnceLock::new(),
            store,
            max_model_bytes: config.max_model_bytes,
            limits: engine.limits.clone(),
            over: AtomicBool::new(false),
            stale: AtomicBool::new(false),
            driver,
            state: Mutex::new(ModelState {
                model,
                state,
                version: start.version,
                durable: start.version,
                size,
                history,
                snapshot: None,
                commands: VecDeque::new(),
                backlog: 0,
                backlog_reported: 0,
                pushed: 0,
                backlog_gauge: metrics.fanout_backlog.clone(),
                max_backlog: config.max_fanout_backlog_bytes,
                closed: None,
                sessions: 0,
                idle_seen: false,
                unsent: Vec::new(),
                unsent_bytes: 0,
                in_flight_bytes: 0,
                in_flight_batch: false,
                in_flight_diffs: 0,
                in_flight_since: None,
                since_checkpoint: (0, 0),
                replays: Replays::default(),
                applying: None,
                frame_ends: VecDeque::new(),
                remote: BTreeMap::new(),
                ready_waiters: Vec::new(),
                fresh_waiters: Vec::new(),
                keys,
                presences: Presences::with_remote(start.presences),
            }),
            fanout: Mutex::new(Fanout::default()),
            metrics,
        })
    }

    /// Registers a subscriber: its first messages (a snapshot, or the diffs it missed) are
    /// taken under the same lock that orders every change, so it misses none and sees none twice.
    pub(crate) fn join(
        &self,
        id: ClientId,
        mode: Mode,
        subscriber: Arc<dyn Subscriber>,
        resume: Option<ResumePoint<'_>>,
    ) -> Result<(), Closed> {
        let snapshot = {
            let mut state = lock(&self.state);
            if let Some(closed) = state.closed {
                return Err(closed);
            }
            let replay = match (mode, resume) {
                (Mode::Stream, Some(point)) if point.epoch == &*self.epoch => {
                    state.history.since(point.since, state.version)
                }
                _ => None,
            };
            let presence =
                (mode == Mode::Stream).then(|| First::Presence(self.presence_snapshot(&state, id)));
            let (first, snapshot) = match replay {
                // The presence snapshot comes before the missed diffs, or after the snapshot.
                Some(diffs) => (
                    presence
                        .into_iter()
                        .chain(diffs.into_iter().map(First::Diff))
                        .collect(),
                    None,
                ),
                None => {
                    let snapshot = self.current_snapshot(&mut state);
                    let first = std::iter::once(First::Snapshot(snapshot.clone()))
                        .chain(presence)
                        .collect();
                    (first, Some(snapshot))
                }
            };
            state.sessions += 1;
            state.idle_seen = false;
            state.enqueue(Command::Join {
                id,
                subscriber: Registered { mode, subscriber },
                first,
            });
            snapshot
        };
        serialize_outside_lock(snapshot.as_deref());
        self.run_commands();
        Ok(())
    }

    pub(crate) fn leave(&self, id: ClientId) {
        {
            let mut state = lock(&self.state);
            state.sessions = state.sessions.saturating_sub(1);
            state.enqueue(Command::Leave(id));
            if let Some(message) = state.presences.leave(id) {
                state.enqueue(Command::Presence {
                    from: Some(id),
                    message,
                });
            }
        }
        self.run_commands();
    }

    /// Queues a fresh snapshot (and presence snapshot) for a stream-mode subscriber that
    /// lagged.
    pub(crate) fn resync(&self, id: ClientId) -> Result<(), SendError> {
        let snapshot = {
            let mut state = lock(&self.state);
            if state.closed.is_some() {
                return Err(SendError::Closed);
            }
            let snapshot = self.current_snapshot(&mut state);
            let presence = self.presence_snapshot(&state, id);
            state.enqueue(Command::Resync {
                id,
                snapshot: snapshot.clone(),
                presence,
            });
            snapshot
        };
        serialize_outside_lock(Some(&snapshot));
        self.run_commands();
        Ok(())
    }

    /// Hands `reply` a snapshot of the current version once the store holds it.
    pub(crate) fn read_snapshot(
        &self,
        reply: Box<dyn FnOnce(Arc<Snapshot>) + Send>,
    ) -> Result<(), Closed> {
        let snapshot = {
            let mut state = lock(&self.state);
            if let Some(closed) = state.closed {
                return Err(closed);
            }
            let snapshot = self.current_snapshot(&mut state);
            state.enqueue(Command::Read(reply, snapshot.clone()));
            snapshot
        };
        serialize_outside_lock(Some(&snapshot));
        self.run_commands();
        Ok(())
    }

    /// Sends an error to one session, in order with everything else it receives. (A frame
    /// refused before it was read whole is refused alike when resent: nothing to remember.)
    pub(crate) fn refuse(&self, to: ClientId, error: FrameError, ids: Vec<MessageId>) -> SendError {
        let message = ServerMessage::error(&error, ids);
        lock(&self.state).enqueue(Command::Reply { to, message });
        self.run_commands();
        SendError::Frame(error)
    }

    /// Applies a write atomically in the model's order: every update is merged, or none is.
    /// Returns the version after it. With `written`, the write is answered once durable.
    /// Never waits: past twice the model's bound the write is refused (`unavailable`).
    pub(crate) fn write(
        self: &Arc<Self>,
        from: Sender,
        write: Write,
        written: Option<Written>,
    ) -> Result<u64, Unapplied> {
        let (outcome, batch) = {
            let mut state = lock(&self.state);
            if state.closed.is_some() {
                return Err(Unapplied::Closed(write));
            }
            if self.over_hard_bound(&state) {
                let error = FrameError::new(
                    ErrorCode::Unavailable,
                    "the model is far behind (its store or its fan-out); wait until it drains and retry",
                );
                let ids = match &write {
                    Write::Messages(messages) => {
                        messages.iter().filter_map(|m| m.id.clone()).collect()
                    }
                    Write::Modify(_) => Vec::new(),
                };
                drop(state);
                return Err(Unapplied::Refused(self.refuse(from.id, error, ids)));
            }
            let outcome = self.apply_locked(&mut state, from, write, written);
            let batch = self.next_batch(&mut state);
            if self.over_bound(&state) {
                self.over.store(true, Ordering::Release);
            }
            (outcome, batch)
        };
        if let Some(batch) = batch {
            self.send_batch(batch);
        }
        self.run_commands();
        outcome.map_err(Unapplied::Refused)
    }

    /// Ready once the model is under its bound (or closed): a transport polls it before it
    /// reads the next frame from a client.
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.over.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        let mut state = lock(&self.state);
        if state.closed.is_some() || !self.over_bound(&state) {
            self.over.store(false, Ordering::Release);
            return Poll::Ready(());
        }
        if !state.ready_waiters.iter().any(|w| w.will_wake(cx.waker())) {
            state.ready_waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Ready once the model is not stale (a shared store's feed caught up), or closed.
    pub(crate) fn poll_fresh(&self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.stale.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        let mut state = lock(&self.state);
        if state.closed.is_some() || !self.stale.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        if !state.fresh_waiters.iter().any(|w| w.will_wake(cx.waker())) {
            state.fresh_waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Whether the model waits for its store's feed to catch up.
    pub(crate) fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Acquire)
    }

    /// Marks the model stale until the store's feed says it caught up.
    pub(crate) fn suspect(&self) {
        let _state = lock(&self.state);
        self.stale.store(true, Ordering::Release);
    }

    /// Whether the model is over its bound now (without waiting).
    pub(crate) fn is_over_bound(&self) -> bool {
        self.over.load(Ordering::Acquire)
    }

    /// Under the bound (or closed): clears the flag and hands back the waiters to wake once
    /// the lock is let go. Closed: the joins waiting for a stale model too (they find it
    /// closed, and look it up again).
    fn drained(&self, state: &mut ModelState) -> Vec<Waker> {
        if state.closed.is_none() && self.over_bound(state) {
            self.over.store(true, Ordering::Release);
            return Vec::new();
        }
        self.over.store(false, Ordering::Release);
        let mut waiters = std::mem::take(&mut state.ready_waiters);
        if state.closed.is_some() {
            waiters.append(&mut state.fresh_waiters);
        }
        waiters
    }

    fn apply_locked(
        &self,
        state: &mut ModelState,
        from: Sender,
        write: Write,
        written: Option<Written>,
    ) -> Result<u64, SendError> {
        if !self.shared {
            let messages = write.into_messages(&state.state);
            let outcome = self.apply_frame(state, &from, messages, None);
            answer_when_durable(state, &outcome, written);
            return outcome;
        }
        // Kept whole, to run again after another writer's commit: a modification is
        // computed again from the state it will then apply to.
        let (messages, kept) = match write {
            Write::Messages(messages) => (messages.clone(), Write::Messages(messages)),
            Write::Modify(mut change) => {
                let messages = transaction::patch(&mut change, &state.state);
                (messages, Write::Modify(change))
            }
        };
        let id = state.replays.next_id();
        let mut changes = Vec::new();
        state.applying = Some(id);
        let before = state.version;
        let outcome = self.apply_frame(state, &from, messages, Some(&mut changes));
        answer_when_durable(state, &outcome, written.clone());
        state.applying = None;
        if state.version > before {
            state.frame_ends.push_back(state.version);
        }
        if state.version > state.durable {
            state.replays.push(Replay {
                id,
                from,
                write: kept,
                written,
                changes,
                last: state.version,
            });
        }
        outcome
    }

    /// Runs one frame's transaction and queues what it sends; with `undo`, keeps its changes.
    /// A sender with a client key has its resends answered instead of applied, and the
    /// answers of its new updates remembered (PROTOCOL.md section 9).
    fn apply_frame(
        &self,
        state: &mut ModelState,
        from: &Sender,
        messages: Vec<Message>,
        undo: Option<&mut Vec<Change>>,
    ) -> Result<u64, SendError> {
        let messages = match &from.key {
            Some(key) => self.skip_duplicates(state, from.id, key.shared(), messages)?,
            None => messages,
        };
        // A keyed sender's updates, to remember if the frame is refused (not its signals).
        let update_ids: SmallVec<[u64; 2]> = match from.key {
            Some(_) => update_ids(&messages).collect(),
            None => SmallVec::new(),
        };
        let ModelState {
            model,
            state: shared,
            size,
            ..
        } = state;
        let mut working = Working {
            state: Arc::make_mut(shared),
            size,
            model: &**model,
            max_model_bytes: self.max_model_bytes,
        };
        match transaction::apply(&mut working, messages) {
            Ok(effects) => {
                let mut version = state.version;
                let outcomes = transaction::commit(effects, from, &mut version, &self.epoch, undo);
                for outcome in outcomes {
                    let update = match &outcome {
                        Outcome::Broadcast(message) | Outcome::Reply(message) => {
                            message.seq().zip(message.id().and_then(MessageId::as_u64))
                        }
                        Outcome::Presence(_) => None,
                    };
                    if let (Some(key), Some((seq, id))) = (&from.key, update) {
                        let durable = state.durable;
                        state
                            .keys
                            .decide(key.shared(), id, Answer::Seq(seq), seq, durable);
                    }
                    match outcome {
                        Outcome::Broadcast(message) => {
                            if let Some(seq) = message.seq() {
                                state.version = seq;
                                state.history.push(message.clone());
                                if self.at_once {
                                    state.durable = seq;
                                } else {
                                    state.unsent_bytes += message.queued_len();
                                    state.unsent.push(message.clone());
                                }
                            }
                            state.enqueue(Command::Broadcast(message));
                        }
                        Outcome::Reply(message) => state.enqueue(Command::Reply {
                            to: from.id,
                            message,
                        }),
                        Outcome::Presence(json) => {
                            let id = self.presence_id(from.id);
                            if let Some(message) = state.presences.set(from.id, &id, &json) {
                                state.enqueue(Command::Presence {
                                    from: Some(from.id),
                                    message,
                                });
                            }
                        }
                    }
                }
                Ok(state.version)
            }
            Err(refusal) => {
                if let Some(key) = from
                    .key
                    .as_ref()
                    .filter(|_| refusal.error.code.is_decision())
                {
                    state.decide_refused(key.shared(), &update_ids, refusal.error.code);
                }
                let message = ServerMessage::error(&refusal.error, refusal.ids);
                state.enqueue(Command::Reply {
                    to: from.id,
                    message,
                });
                Err(SendError::Frame(refusal.error))
            }
        }
    }

    /// A keyed sender's frame without the updates decided before (each answered again, in
    /// order), or its refusal when an update lacks an integer id.
    fn skip_duplicates(
        &self,
        state: &mut ModelState,
        to: ClientId,
        key: &Arc<str>,
        messages: Vec<Message>,
    ) -> Result<Vec<Message>, SendError> {
        let unnumbered = messages.iter().position(|m| {
            m.kind == MessageKind::Update && m.id.as_ref().and_then(MessageId::as_u64).is_none()
        });
        if let Some(index) = unnumbered {
            let error = FrameError::at(
                ErrorCode::InvalidMessage,
                index,
                "with a client key, every update carries an integer `header.id` that increases",
            );
            let numbered: SmallVec<[u64; 2]> = update_ids(&messages).collect();
            state.decide_refused(key, &numbered, error.code);
            let ids: Vec<MessageId> = messages.into_iter().filter_map(|m| m.id).collect();
            let message = ServerMessage::error(&error, ids);
            state.enqueue(Command::Reply { to, message });
            return Err(SendError::Frame(error));
        }
        if !has_duplicates(&state.keys, key, &messages) {
            // The usual frame: nothing to answer again, nothing to take out.
            return Ok(messages);
        }
        let mut fresh = Vec::with_capacity(messages.len());
        let mut highest = None;
        for message in messages {
            let Some(id) = message
                .id
                .as_ref()
                .and_then(MessageId::as_u64)
                .filter(|_| message.kind == MessageKind::Update)
            else {
                fresh.push(message);
                continue;
            };
            let judged = match highest {
                Some(earlier) if id <= earlier => Judged::Duplicate(None),
                _ => state.keys.judge(key, id),
            };
            let Judged::Duplicate(answer) = judged else {
                highest = Some(id);
                fresh.push(message);
                continue;
            };
            let id = message.id.unwrap_or_else(|| MessageId::number(id));
            let reply = match answer {
                Some(Answer::Refused(code)) => ServerMessage::error(
                    &FrameError::new(code, "a resend of an update refused before with this code"),
                    vec![id],
                ),
                Some(Answer::Seq(seq)) => {
                    ServerMessage::duplicate_ack(id, Some(seq), self.epoch.clone())
                }
                None => ServerMessage::duplicate_ack(id, None, self.epoch.clone()),
            };
            self.metrics.duplicates.increment(1);
            state.enqueue(Command::Reply { to, message: reply });
        }
        Ok(fresh)
    }

    /// Applies the other writers' diffs that follow the durable version (shared store, no
    /// batch in flight): the frames not yet durable are reverted, the diffs applied and shown,
    /// and the frames run again on top (the model's `check` included; one may now be
    /// refused). Nothing of what was reverted had been shown to anyone.
    fn rebase(&self, state: &mut ModelState) -> Result<(), String> {
        let mut run = Vec::new();
        while let Some(diff) = state.remote.remove(&(state.durable + 1 + run.len() as u64)) {
            run.push(diff);
        }
        if run.is_empty() {
            return Ok(());
        }
        let (replays, size_delta) = state.replays.revert_all(Arc::make_mut(&mut state.state));
        state.size -= size_delta;
        let durable = state.durable;
        state.keys.revert_after(durable);
        state.version = durable;
        state.history.truncate_after(durable);
        if state
            .snapshot
            .as_ref()
            .and_then(Weak::upgrade)
            .is_some_and(|s| s.version() > durable)
        {
            state.snapshot = None;
        }
        state.unsent.clear();
        state.unsent_bytes = 0;
        state.frame_ends.clear();
        let blocked = state.take_blocked(durable);
        for diff in run {
            let map: Map<String, Value> = serde_json::from_str(&diff.json).map_err(|e| {
                format!("another writer's diff {} is unreadable: {e}", diff.version)
            })?;
            let change = merge_diff(Arc::make_mut(&mut state.state), map);
            state.size += change.size_delta();
            state.version = diff.version;
            state.durable = diff.version;
            let header = Header {
                seq: Some(diff.version),
                epoch: Some(self.epoch.clone()),
                ..Header::default()
            };
            let message = ServerMessage::update_json(header, change.diff_json());
            state.history.push(message.clone());
            state.enqueue(Command::Broadcast(message));
            if let Some(keys) = &diff.keys {
                state.keys.apply_remote(keys);
            }
        }
        let mut frames: HashMap<u64, Replay> = replays.into_iter().map(|r| (r.id, r)).collect();
        for queued in blocked {
            match queued.frame {
                Some(id) => {
                    if let Some(replay) = frames.remove(&id) {
                        // A refusal now is queued to its sender like any other.
                        let _ = self.apply_locked(state, replay.from, replay.write, replay.written);
                    }
                }
                None => {
                    let command = match queued.command {
                        Command::Join {
                            id,
                            subscriber,
                            first,
                        } => {
                            // The presence snapshot stays: presence has no version.
                            let presence = first
                                .into_iter()
                                .filter(|f| matches!(f, First::Presence(_)));
                            Command::Join {
                                id,
                                subscriber,
                                first: std::iter::once(First::Snapshot(
                                    self.current_snapshot(state),
                                ))
                                .chain(presence)
                                .collect(),
                            }
                        }
                        Command::Resync { id, presence, .. } => Command::Resync {
                            id,
                            snapshot: self.current_snapshot(state),
                            presence,
                        },
                        Command::Read(reply, _) => {
                            Command::Read(reply, self.current_snapshot(state))
                        }
                        other => other,
                    };
                    state.enqueue(command);
                }
            }
        }
        Ok(())
    }

    fn me(&self) -> Option<Arc<Self>> {
        self.me.upgrade()
    }

    /// The feed a shared store hands this model's remote commits to.
    pub(crate) fn set_feed(&self, feed: RemoteFeed) {
        let _ = self.feed.set(feed);
    }

    /// Stops the shared store's feed, once the model is closed for a reload.
    fn unwatch_if_closed(&self) {
        if let Some(feed) = self.feed.get() {
            if self.needs_reload() {
                self.store.unwatch(&self.name, feed);
            }
        }
    }

    /// The next batch for the store, if none is in flight and diffs wait.
    fn next_batch(&self, state: &mut ModelState) -> Option<Batch> {
        if state.in_flight()
            || (state.unsent.is_empty() && !state.keys.has_unsent())
            || state.closed == Some(Closed::Reload)
        {
            return None;
        }
        let base_version = state.version - state.unsent.len() as u64;
        // A new model's first batch takes everything: its checkpoint must hold the first state.
        // Otherwise a batch holds at most `max_batch` diffs, cut between two frames.
        let mut take = state.unsent.len();
        if base_version > 0 && take > self.max_batch {
            let limit = base_version + self.max_batch as u64;
            let cut = state
                .frame_ends
                .iter()
                .take_while(|&&end| end <= limit)
                .last()
                .or(state.frame_ends.front())
                .copied();
            if let Some(end) = cut {
                take = (end - base_version) as usize;
            }
        }
        let diffs: Vec<ServerMessage> = state.unsent.drain(..take).collect();
        let last_version = base_version + take as u64;
        while state
            .frame_ends
            .front()
            .is_some_and(|&end| end <= last_version)
        {
            state.frame_ends.pop_front();
        }
        let (content_bytes, queued_bytes) = diffs.iter().fold((0, 0), |(content, queued), d| {
            (content + d.content_len() as u64, queued + d.queued_len())
        });
        state.since_checkpoint.0 += take as u64;
        state.since_checkpoint.1 += content_bytes;
        // A new model's first batch always carries its state: that keeps its initial state
        // (the model's `initial_state`), which no diff holds.
        let due = base_version == 0
            || state.since_checkpoint.0 >= self.checkpoints.every_diffs
            || state.since_checkpoint.1 >= self.checkpoints.every_bytes;
        // The state is only at the batch's last version when nothing else waits.
        let checkpoint = (due && last_version == state.version).then(|| {
            state.since_checkpoint = (0, 0);
            Checkpoint {
                version: state.version,
                state: state.state.clone(),
            }
        });
        state.unsent_bytes -= queued_bytes;
        state.in_flight_bytes = queued_bytes;
        state.in_flight_batch = true;
        state.in_flight_diffs = take;
        state.in_flight_since = Some(Instant::now());
        self.metrics.store_batch_diffs.record(take as f64);
        Some(Batch {
            model: self.name.clone(),
            epoch: self.epoch.clone(),
            base_version,
            diffs,
            checkpoint,
            keys: state.keys.take_writes(last_version),
        })
    }

    fn send_batch(self: &Arc<Self>, batch: Batch) {
        let _span = tracing::debug_span!(
            "store_batch",
            model = %self.name,
            base_version = batch.base_version,
            diffs = batch.diffs.len(),
            checkpoint = batch.checkpoint.is_some()
        )
        .entered();
        let live = Arc::downgrade(self);
        let last = batch.last_version();
        let driver = self.driver.clone();
        // The store's thread only hands the answer over: the engine's executor applies it.
        let done = AppendDone::new(move |result| {
            driver.spawn(move || {
                if let Some(live) = live.upgrade() {
                    live.appended(last, result);
                }
            })
        });
        self.store.append(batch, done);
    }

    /// The store answered for the batch that ends at `last`.
    fn appended(self: &Arc<Self>, last: u64, result: Result<Appended, StoreError>) {
        let mut state = lock(&self.state);
        state.in_flight_bytes = 0;
        state.in_flight_batch = false;
        state.in_flight_diffs = 0;
        if let Some(since) = state.in_flight_since.take() {
            let elapsed = since.elapsed();
            EngineMetrics::seconds(&self.metrics.store_batch_seconds, elapsed);
            tracing::trace!(model = %self.name, last, ?elapsed, ok = result.is_ok(), "store batch answered");
        }
        let outcome = match result {
            Ok(Appended::Committed) => {
                state.durable = state.durable.max(last);
                let durable = state.durable;
                state.replays.settle(durable);
                state.keys.settle(durable);
                self.catch_up(&mut state, None)
            }
            Ok(Appended::Conflict {
                version,
                epoch,
                missed,
            }) => {
                self.metrics.store_conflicts.increment(1);
                let outcome = self.catch_up(&mut state, Some((version, epoch, missed)));
                if outcome.is_ok() && !state.unsent.is_empty() {
                    // The next batch carries the frames rebased on the other node's commits.
                    self.metrics.store_retries.increment(1);
                }
                outcome
            }
            Err(error) => Err(error.to_string()),
        };
        self.move_on(state, outcome);
    }

    /// After the store (or another writer) moved the model on: the next batch, or the failure,
    /// then whatever that released.
    fn move_on(
        self: &Arc<Self>,
        mut state: MutexGuard<'_, ModelState>,
        outcome: Result<(), String>,
    ) {
        let batch = self.next_batch_or_fail(&mut state, outcome);
        drop(state);
        if let Some(batch) = batch {
            self.send_batch(batch);
        }
        self.run_commands();
        self.unwatch_if_closed();
    }

    /// The next batch, or (after a failure) none and the model closed.
    fn next_batch_or_fail(
        &self,
        state: &mut ModelState,
        outcome: Result<(), String>,
    ) -> Option<Batch> {
        match outcome {
            Ok(()) => self.next_batch(state),
            Err(why) => {
                self.fail(state, &why);
                None
            }
        }
    }

    /// Applies what other writers committed (shared store): the diffs a conflict reported, and
    /// any buffered from the store's feed.
    fn catch_up(
        &self,
        state: &mut ModelState,
        conflict: Option<(u64, String, Vec<StoredDiff>)>,
    ) -> Result<(), String> {
        let mut reached = None;
        if let Some((version, epoch, missed)) = conflict {
            if *epoch != *self.epoch {
                return Err(format!(
                    "the model was created again elsewhere (epoch {epoch})"
                ));
            }
            for diff in missed {
                state.remote.insert(diff.version, diff);
            }
            reached = Some(version);
        }
        let durable = state.durable;
        state.remote.retain(|&version, _| version > durable);
        self.rebase(state)?;
        match reached {
            Some(version) if state.durable < version => Err(format!(
                "another writer moved the model to version {version}, and the diffs after {} are no longer kept",
                state.durable
            )),
            _ => Ok(()),
        }
    }

    /// Another writer's commits, from the shared store's feed.
    fn receive_remote(self: &Arc<Self>, epoch: &str, diffs: Vec<StoredDiff>) {
        let mut state = lock(&self.state);
        if state.closed.is_some() {
            return;
        }
        let outcome = if epoch != &*self.epoch {
            Err(format!(
                "the model was created again elsewhere (epoch {epoch})"
            ))
        } else {
            let durable = state.durable;
            for diff in diffs.into_iter().filter(|d| d.version > durable) {
                state.remote.insert(diff.version, diff);
            }
            match state.in_flight() {
                // The batch in flight will conflict, or commit first: its answer applies them.
                true => Ok(()),
                false => self.catch_up(&mut state, None),
            }
        };
        let batch = self.next_batch_or_fail(&mut state, outcome);
        drop(state);
        if let Some(batch) = batch {
            self.send_batch(batch);
        }
        self.deliver_on_executor();
    }

    /// A signal another node released after version `after`: queued (on the feed's thread,
    /// so that each node's signals keep their order) behind that version, and delivered by the
    /// executor.
    fn receive_signal(self: &Arc<Self>, after: u64, signal: ServerMessage) {
        {
            let mut state = lock(&self.state);
            if state.closed.is_some() {
                return;
            }
            // Never behind what is already queued: the queue releases in order.
            let after = after.max(state.commands.back().map_or(0, |q| q.after));
            let command = match signal.kind() {
                ServerMessageKind::Presence if state.presences.receive(&signal) => {
                    Command::Presence {
                        from: None,
                        message: signal,
                    }
                }
                ServerMessageKind::Presence => return,
                _ => Command::Relayed(signal),
            };
            state.push(after, command);
        }
        self.deliver_on_executor();
    }

    /// Changes the presences with `change` and sends the changes it returns (each with the
    /// connection it is about: none for another node's), in the model's order: to this node's
    /// clients, and this node's own to the other nodes when released.
    fn change_presences(
        self: &Arc<Self>,
        change: impl FnOnce(&mut Presences) -> Vec<(Option<ClientId>, ServerMessage)>,
    ) {
        {
            let mut state = lock(&self.state);
            if state.closed.is_some() {
                return;
            }
            for (from, message) in change(&mut state.presences) {
                state.enqueue_now(Command::Presence { from, message });
            }
        }
        self.deliver_on_executor();
    }

    /// The presence id of connection `client` (unique across the nodes of a store).
    pub(crate) fn presence_id(&self, client: ClientId) -> Arc<str> {
        presence::presence_id(&self.instance, client)
    }

    /// The presence snapshot for connection `client`.
    fn presence_snapshot(&self, state: &ModelState, client: ClientId) -> ServerMessage {
        state.presences.snapshot(client, self.presence_id(client))
    }

    /// Every connection's presence, by presence id.
    pub(crate) fn presences(&self) -> Map<String, Value> {
        lock(&self.state).presences.all()
    }

    /// The feed caught up: joins and reads go on.
    fn fresh(&self) {
        let waiters = {
            let mut state = lock(&self.state);
            self.stale.store(false, Ordering::Release);
            std::mem::take(&mut state.fresh_waiters)
        };
        waiters.into_iter().for_each(Waker::wake);
    }

    /// Runs the fan-out on the engine's executor (called from a store's thread).
    fn deliver_on_executor(self: &Arc<Self>) {
        let live = self.clone();
        self.driver.spawn(move || {
            live.run_commands();
            live.unwatch_if_closed();
        });
    }

    /// The store failed: nothing past the durable version is ever shown; every session gets
    /// `unavailable` and is closed; the next lookup reloads the model from the store.
    fn fail(&self, state: &mut ModelState, why: &str) {
        tracing::warn!(model = %self.name, durable = state.durable, error = why, "store failed; closing the model");
        self.metrics.store_failures.increment(1);
        let durable = state.durable;
        state.drop_undurable(durable);
        state.closed = Some(Closed::Reload);
        let error = FrameError::new(
            ErrorCode::Unavailable,
            format!("the store failed ({why}); nothing after version {durable} was kept, reconnect to reload the model"),
        );
        state.enqueue_now(Command::Broadcast(ServerMessage::error(&error, Vec::new())));
        state.enqueue_now(Command::CloseAll(CloseReason::StoreFailed));
    }

    /// Reads the state under the model's lock (the latest applied state: with a durable store,
    /// it may hold changes the store is still writing).
    pub(crate) fn read<R>(&self, f: impl FnOnce(&Map<String, Value>, u64) -> R) -> R {
        let state = lock(&self.state);
        f(&state.state, state.version)
    }

    /// Stops the model. On shutdown, what is queued is still written and shown; on removal or
    /// eviction, what the store does not hold yet is dropped (nobody was shown it).
    pub(crate) fn close(&self, reason: CloseReason) {
        {
            let mut state = lock(&self.state);
            if state.closed.is_some() {
                return;
            }
            if reason == CloseReason::Shutdown {
                state.closed = Some(Closed::Shutdown);
                state.enqueue(Command::CloseAll(reason));
            } else {
                state.closed = Some(Closed::Reload);
                let durable = state.durable;
                state.drop_undurable(durable);
                state.enqueue_now(Command::CloseAll(reason));
            }
        }
        self.run_commands();
        self.unwatch_if_closed();
    }

    /// Whether the model is closed for reloading (removed, evicted, or its store failed).
    pub(crate) fn needs_reload(&self) -> bool {
        lock(&self.state).closed == Some(Closed::Reload)
    }

    /// One step of idle eviction: a model with no session and nothing in flight is marked at
    /// the first sweep and closed at the next one if still idle. Returns whether it closed.
    pub(crate) fn sweep_idle(&self) -> bool {
        let mut state = lock(&self.state);
        let idle = state.sessions == 0
            && state.closed.is_none()
            && state.commands.is_empty()
            && !state.in_flight()
            && state.unsent.is_empty()
            && !state.keys.has_unsent()
            && state.durable == state.version;
        if !idle {
            state.idle_seen = false;
            return false;
        }
        if !state.idle_seen {
            state.idle_seen = true;
            return false;
        }
        state.closed = Some(Closed::Reload);
        drop(state);
        self.unwatch_if_closed();
        true
    }

    /// Gives back the resume history beyond this model's share of the engine's budget.
    pub(crate) fn trim_history(&self) {
        lock(&self.state).history.trim_to_share();
    }

    /// Bytes of messages waiting for fan-out (or for the store).
    pub(crate) fn backlog(&self) -> usize {
        lock(&self.state).backlog
    }

    /// The durable version.
    pub(crate) fn durable_version(&self) -> u64 {
        lock(&self.state).durable
    }

    /// A snapshot of the current version: shares the state (no copy, no serialization here).
    /// The snapshot of the current version: the one being shared if any join, resync or read
    /// still holds it, else a new one. The model keeps only a weak reference, so that no
    /// serialized copy of an idle model stays in memory.
    fn current_snapshot(&self, state: &mut ModelState) -> Arc<Snapshot> {
        match state.snapshot.as_ref().and_then(Weak::upgrade) {
            Some(snapshot) if snapshot.version() == state.version => snapshot,
            _ => {
                let snapshot =
                    Snapshot::new(state.version, self.epoch.clone(), state.state.clone());
                state.snapshot = Some(Arc::downgrade(&snapshot));
                snapshot
            }
        }
    }

    /// Runs released commands if no other thread is running them (see the module docs), then
    /// wakes the sessions waiting for the model to drain, if it has.
    fn run_commands(&self) {
        loop {
            let mut fanout = match self.fanout.try_lock() {
                Ok(guard) => guard,
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                Err(TryLockError::WouldBlock) => return,
            };
            let mut relay = SmallVec::new();
            loop {
                let commands = lock(&self.state).release(
                    &self.metrics.publish_to_enqueue,
                    self.shared.then_some(&mut relay),
                );
                if commands.is_empty() {
                    break;
                }
                // In release order (one thread releases at a time): the other nodes get this
                // node's signals in the order its clients sent them.
                for (after, signal) in relay.drain(..) {
                    self.store.relay(&self.name, after, &signal);
                }
                for command in commands {
                    fanout.run(command);
                }
            }
            drop(fanout);
            // A command released after our last look and before we let go found the lock taken
            // and left its work to us: look once more.
            let mut state = lock(&self.state);
            if state.releasable() {
                continue;
            }
            let waiters = self.drained(&mut state);
            drop(state);
            for waker in waiters {
                waker.wake();
            }
            return;
        }
    }

    /// Whether the fan-out backlog or the bytes (or diffs) the store has not confirmed are
    /// over their bounds: sessions then wait before they read more.
    fn over_bound(&self, state: &ModelState) -> bool {
        state.over_backlog()
            || state.unsent_bytes + state.in_flight_bytes > self.max_undurable
            || state.unsent.len() + state.in_flight_diffs > 2 * self.max_batch
    }

    /// Past twice the bound (plus a frame): a frame is refused, whoever sends it.
    fn over_hard_bound(&self, state: &ModelState) -> bool {
        state.backlog > 2 * state.max_backlog + self.limits.max_frame_bytes
            || state.unsent_bytes + state.in_flight_bytes
                > 2 * self.max_undurable + self.limits.max_frame_bytes
            || state.unsent.len() + state.in_flight_diffs > 4 * self.max_batch + 1
    }
}

/// Changes of other nodes' presences: about none of this node's connections.
fn remote(changes: Vec<ServerMessage>) -> Vec<(Option<ClientId>, ServerMessage)> {
    changes.into_iter().map(|message| (None, message)).collect()
}

/// The integer ids of a frame's updates.
fn update_ids(messages: &[Message]) -> impl Iterator<Item = u64> + '_ {
    messages
        .iter()
        .filter(|m| m.kind == MessageKind::Update)
        .filter_map(|m| m.id.as_ref().and_then(MessageId::as_u64))
}

/// Whether any update of a keyed frame was decided before (or repeats an earlier id of the
/// frame).
fn has_duplicates(keys: &ClientKeys, key: &str, messages: &[Message]) -> bool {
    let mut highest = None;
    update_ids(messages).any(|id| {
        let repeated =
            highest.is_some_and(|earlier| id <= earlier) || keys.judge(key, id) != Judged::New;
        highest = Some(id);
        repeated
    })
}

/// Queues a write's answer right after its own commands: released, like them, once durable.
/// A refused write is answered at once.
fn answer_when_durable(
    state: &mut ModelState,
    outcome: &Result<u64, SendError>,
    written: Option<Written>,
) {
    let Some(written) = written else {
        return;
    };
    match outcome {
        Ok(version) => state.enqueue(Command::Written {
            version: *version,
            written,
        }),
        Err(error) => written.answer(Err(error.clone())),
    }
}

/// Serializes a snapshot taken under the lock, right after letting go of it: the joiner (or
/// reader) pays for the text, once per version, and the shared state is released before the
/// model's next change would have to copy it.
fn serialize_outside_lock(snapshot: Option<&Snapshot>) {
    if let Some(snapshot) = snapshot {
        snapshot.message();
    }
}

impl ModelState {
    /// Queues a command after everything that changed the model so far.
    fn enqueue(&mut self, command: Command) {
        let after = self.version;
        self.push(after, command);
    }

    /// Queues a command that needs nothing more to be durable.
    fn enqueue_now(&mut self, command: Command) {
        let after = self.durable;
        self.push(after, command);
    }

    fn push(&mut self, after: u64, command: Command) {
        let len = command.queued_len(self.size.max(0) as usize);
        self.set_backlog(self.backlog + len);
        self.pushed = self.pushed.wrapping_add(1);
        let at = self
            .pushed
            .is_multiple_of(LATENCY_SAMPLE)
            .then(Instant::now);
        self.commands.push_back(Queued {
            after,
            len,
            at,
            frame: self.applying,
            command,
        });
    }

    /// Takes every command from the first one that waits for more than `durable` on.
    fn take_blocked(&mut self, durable: u64) -> Vec<Queued> {
        let first = self
            .commands
            .iter()
            .position(|q| q.after > durable)
            .unwrap_or(self.commands.len());
        let blocked: Vec<Queued> = self.commands.drain(first..).collect();
        self.set_backlog(self.backlog - blocked.iter().map(|q| q.len).sum::<usize>());
        blocked
    }

    fn in_flight(&self) -> bool {
        self.in_flight_batch
    }

    /// Remembers that a keyed sender's updates `ids` were refused with `code`: written with
    /// the model's next batch (without delaying the error).
    fn decide_refused(&mut self, key: &Arc<str>, ids: &[u64], code: ErrorCode) {
        let (at, durable) = (self.version, self.durable);
        for &id in ids {
            self.keys
                .decide(key, id, Answer::Refused(code), at, durable);
        }
    }

    fn over_backlog(&self) -> bool {
        self.backlog > self.max_backlog
    }

    fn releasable(&self) -> bool {
        self.commands
            .front()
            .is_some_and(|q| q.after <= self.durable)
    }

    /// Takes the commands whose changes are all durable, in order, and records how long each
    /// waited in the queue. With `relay`, the signals sent here are added to it, with the
    /// version each follows, for the other nodes.
    fn release(
        &mut self,
        latency: &metrics::Histogram,
        mut relay: Option<&mut SmallVec<[(u64, ServerMessage); 1]>>,
    ) -> SmallVec<[Command; 2]> {
        if !self.releasable() {
            self.report_backlog();
            return SmallVec::new();
        }
        let mut released = SmallVec::new();
        let mut bytes = 0;
        // The clock is read only if a released command carries a timestamp.
        let mut now = None;
        while self.releasable() {
            if let Some(queued) = self.commands.pop_front() {
                bytes += queued.len;
                if queued.command.is_superseded() {
                    // A later change of the same presence id follows: it alone goes out.
                    continue;
                }
                if let Some(at) = queued.at {
                    let now = *now.get_or_insert_with(Instant::now);
                    EngineMetrics::seconds(latency, now.saturating_duration_since(at));
                }
                // The embedder hears of each version once, in order, once it is durable.
                match &queued.command {
                    Command::Broadcast(message) => match message.seq() {
                        Some(seq) => self.model.committed(seq, message.content_json()),
                        None if message.kind() == ServerMessageKind::Signal => {
                            if let Some(relay) = relay.as_deref_mut() {
                                relay.push((queued.after, message.clone()));
                            }
                        }
                        None => {}
                    },
                    // This node's presence changes go to the other nodes as its signals do.
                    Command::Presence {
                        from: Some(_),
                        message,
                    } => {
                        if let Some(relay) = relay.as_deref_mut() {
                            relay.push((queued.after, message.clone()));
                        }
                    }
                    _ => {}
                }
                released.push(queued.command);
            }
        }
        self.set_backlog(self.backlog - bytes);
        self.report_backlog();
        released
    }

    fn set_backlog(&mut self, backlog: usize) {
        self.backlog = backlog;
    }

    /// Moves the engine's gauge by what changed since the last report.
    fn report_backlog(&mut self) {
        if self.backlog != self.backlog_reported {
            let delta = self.backlog as f64 - self.backlog_reported as f64;
            self.backlog_reported = self.backlog;
            self.backlog_gauge.increment(delta);
        }
    }

    /// Forgets everything after the durable version: queued commands that would show it, and
    /// diffs not yet handed to the store.
    fn drop_undurable(&mut self, durable: u64) {
        let mut kept = VecDeque::with_capacity(self.commands.len());
        for mut queued in self.commands.drain(..) {
            if queued.after > durable {
                // Joins and leaves still happen (so that the close reaches every subscriber),
                // without the snapshot that would show what the store does not hold.
                match &mut queued.command {
                    Command::Join { first, .. } => first.clear(),
                    Command::Leave(_) => {}
                    _ => continue,
                }
                queued.after = durable;
                queued.len = 0;
            }
            kept.push_back(queued);
        }
        self.commands = kept;
        self.set_backlog(self.commands.iter().map(|q| q.len).sum());
        self.unsent.clear();
        self.unsent_bytes = 0;
        self.frame_ends.clear();
        self.remote.clear();
        // What they changed is dropped with the model: it is reloaded from the store.
        self.replays = Replays::default();
        self.keys.clear_unsent();
    }
}

impl Drop for ModelState {
    fn drop(&mut self) {
        // A model leaving memory takes its share of the engine's gauge with it.
        self.backlog_gauge.decrement(self.backlog_reported as f64);
    }
}

impl RemoteSink for LiveModel {
    fn remote(&self, epoch: &str, diffs: Vec<StoredDiff>) {
        // The feed holds the model weakly; a live model is always in an Arc. The commits are
        // applied here, in the feed's order (so that a `caught_up` after them finds them
        // applied); their fan-out runs on the engine's executor.
        if let Some(live) = self.me() {
            live.receive_remote(epoch, diffs);
        }
    }

    fn signal(&self, after: u64, signal: ServerMessage) {
        if let Some(live) = self.me() {
            live.receive_signal(after, signal);
        }
    }

    fn suspect(&self) {
        LiveModel::suspect(self);
    }

    fn caught_up(&self) {
        self.fresh();
    }

    fn removed(&self) {
        self.close(CloseReason::ModelRemoved);
    }

    fn node_gone(&self, node: &str) {
        if let Some(live) = self.me() {
            live.change_presences(|presences| remote(presences.forget_node(node)));
        }
    }

    fn presences(&self, others: Vec<RemotePresence>) {
        if let Some(live) = self.me() {
            live.change_presences(|presences| remote(presences.replace_remote(others)));
        }
    }

    fn renew_presences(&self) {
        if let Some(live) = self.me() {
            live.change_presences(|presences| {
                let renewed = presences.renew_local().into_iter();
                renewed
                    .map(|(client, message)| (Some(client), message))
                    .collect()
            });
        }
    }
}
