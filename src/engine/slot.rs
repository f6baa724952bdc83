//! One model inside the engine: its state, its version counter and its ordered fan-out.
//!
//! Two locks, never held together by the fan-out:
//! - `state` guards the model, its version, its history and a queue of fan-out commands. Every
//!   operation (apply a frame, join, leave, resync) takes it briefly, does its part, and
//!   appends commands in the model's total order.
//! - `fanout` guards the subscriber list. Whoever finishes an operation tries to take it and,
//!   if it gets it, runs the queued commands in order, outside the state lock ("flat
//!   combining"). A thread that finds it taken returns at once: the holder runs its commands
//!   too. So publishers do not wait for a fan-out, subscribers are never called under the
//!   model's lock, and every subscriber sees commands in queue order, which is the order in
//!   which the state changed.
//! - The queue is bounded in bytes: a publisher whose message takes it over the bound waits for
//!   the fan-out lock and delivers too, which paces publishers to the fan-out.

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::{SystemTime, UNIX_EPOCH};

use indexmap::IndexMap;

use crate::config::Config;
use crate::engine::history::History;
use crate::error::{ErrorCode, FrameError, SendError};
use crate::frame::{Content, Frame, Message, MessageId, MessageKind};
use crate::lock::lock;
use crate::merge::{json_len, merge_diff, Change};
use crate::model::Model;
use crate::name::ModelName;
use crate::outbound::{object_json, Header, Outbound, OutboundKind};
use crate::subscriber::{ClientId, CloseReason, Delivery, Mode, Subscriber};

pub(crate) struct ModelSlot {
    pub(crate) name: ModelName,
    pub(crate) epoch: Arc<str>,
    state: Mutex<ModelState>,
    fanout: Mutex<Fanout>,
}

struct ModelState {
    model: Box<dyn Model>,
    version: u64,
    size: i64,
    history: History,
    commands: VecDeque<Command>,
    /// Bytes of the messages in `commands`: past `max_backlog`, publishers help deliver.
    backlog: usize,
    max_backlog: usize,
    closed: Option<CloseReason>,
}

enum Command {
    Join {
        id: ClientId,
        subscriber: Registered,
        first: Vec<Outbound>,
    },
    Leave(ClientId),
    Resync {
        id: ClientId,
        snapshot: Outbound,
    },
    Broadcast(Outbound),
    Reply {
        to: ClientId,
        message: Outbound,
    },
    CloseAll(CloseReason),
}

struct Registered {
    mode: Mode,
    subscriber: Arc<dyn Subscriber>,
}

#[derive(Default)]
struct Fanout {
    subscribers: IndexMap<ClientId, Registered>,
}

/// How a session resumes (stream mode): the version and epoch it last saw.
pub(crate) struct ResumePoint<'a> {
    pub(crate) since: u64,
    pub(crate) epoch: &'a str,
}

/// What one update or signal of a frame becomes once the whole frame is accepted.
enum Step {
    Update {
        id: Option<MessageId>,
        change: Change,
    },
    Signal {
        id: Option<MessageId>,
        content: Content,
    },
}

impl Step {
    fn id(&self) -> Option<&MessageId> {
        match self {
            Step::Update { id, .. } | Step::Signal { id, .. } => id.as_ref(),
        }
    }
}

impl ModelSlot {
    pub(crate) fn new(name: ModelName, model: Box<dyn Model>, config: &Config) -> Self {
        let size = json_len(model.state());
        ModelSlot {
            name,
            epoch: new_epoch(),
            state: Mutex::new(ModelState {
                model,
                version: 0,
                size,
                history: History::new(config.history_len, config.history_bytes),
                commands: VecDeque::new(),
                backlog: 0,
                max_backlog: config.max_fanout_backlog_bytes,
                closed: None,
            }),
            fanout: Mutex::new(Fanout::default()),
        }
    }

    /// Registers a subscriber: its first messages (a snapshot, or the diffs it missed) are
    /// taken under the same lock that orders every change, so it misses none and sees none twice.
    pub(crate) fn join(
        &self,
        id: ClientId,
        mode: Mode,
        subscriber: Arc<dyn Subscriber>,
        resume: Option<ResumePoint<'_>>,
    ) -> Result<(), CloseReason> {
        {
            let mut state = lock(&self.state);
            if let Some(reason) = state.closed {
                return Err(reason);
            }
            let replay = match (mode, resume) {
                (Mode::Stream, Some(point)) if point.epoch == &*self.epoch => {
                    state.history.since(point.since, state.version)
                }
                _ => None,
            };
            let first = match replay {
                Some(diffs) => diffs,
                None => vec![self.snapshot(&state)],
            };
            state.enqueue(Command::Join {
                id,
                subscriber: Registered { mode, subscriber },
                first,
            });
        }
        self.run_commands();
        Ok(())
    }

    pub(crate) fn leave(&self, id: ClientId) {
        lock(&self.state).enqueue(Command::Leave(id));
        self.run_commands();
    }

    /// Queues a fresh snapshot for a subscriber that lagged.
    pub(crate) fn resync(&self, id: ClientId) -> Result<(), SendError> {
        {
            let mut state = lock(&self.state);
            if state.closed.is_some() {
                return Err(SendError::Closed);
            }
            let snapshot = self.snapshot(&state);
            state.enqueue(Command::Resync { id, snapshot });
        }
        self.run_commands();
        Ok(())
    }

    /// Sends an error to one session, in order with everything else it receives.
    pub(crate) fn refuse(&self, to: ClientId, error: FrameError, ids: Vec<MessageId>) -> SendError {
        let message = Outbound::error(&error, ids);
        let help = {
            let mut state = lock(&self.state);
            state.enqueue(Command::Reply { to, message });
            state.over_backlog()
        };
        self.run_commands_or_help(help);
        SendError::Frame(error)
    }

    /// Applies a validated frame atomically: every update is merged, or none is.
    pub(crate) fn apply(
        &self,
        from: ClientId,
        mode: Mode,
        frame: Frame,
        max_model_bytes: usize,
    ) -> Result<(), SendError> {
        let (outcome, help) = {
            let mut state = lock(&self.state);
            if state.closed.is_some() {
                return Err(SendError::Closed);
            }
            let outcome = match state.merge_frame(frame, max_model_bytes) {
                Ok(steps) => {
                    state.commit(from, mode, &self.epoch, steps);
                    Ok(())
                }
                Err((error, ids)) => {
                    let message = Outbound::error(&error, ids);
                    state.enqueue(Command::Reply { to: from, message });
                    Err(SendError::Frame(error))
                }
            };
            (outcome, state.over_backlog())
        };
        self.run_commands_or_help(help);
        outcome
    }

    /// Reads the state under the model's lock.
    pub(crate) fn read<R>(
        &self,
        f: impl FnOnce(&serde_json::Map<String, serde_json::Value>, u64) -> R,
    ) -> R {
        let state = lock(&self.state);
        f(state.model.state(), state.version)
    }

    /// Stops the model: every subscriber is told `reason` and further operations fail.
    pub(crate) fn close(&self, reason: CloseReason) {
        {
            let mut state = lock(&self.state);
            if state.closed.is_some() {
                return;
            }
            state.closed = Some(reason);
            state.enqueue(Command::CloseAll(reason));
        }
        self.run_commands();
    }

    fn snapshot(&self, state: &ModelState) -> Outbound {
        Outbound::new(
            OutboundKind::Update,
            Header {
                snapshot: true,
                seq: Some(state.version),
                epoch: Some(self.epoch.clone()),
                ..Header::default()
            },
            &object_json(state.model.state()),
            None,
        )
    }

    /// Bytes of messages waiting for fan-out.
    pub(crate) fn backlog(&self) -> usize {
        lock(&self.state).backlog
    }

    /// Runs queued commands if no other thread is running them (see the module docs).
    fn run_commands(&self) {
        self.run_commands_or_help(false);
    }

    /// Like `run_commands`; with `help`, a publisher whose message took the backlog over its
    /// bound waits for the thread delivering and then delivers too, instead of returning at
    /// once: publishers are slowed to the pace of the fan-out, and the backlog stays bounded.
    /// A thread that is itself delivering (a subscriber that sends from `deliver`) never waits.
    fn run_commands_or_help(&self, help: bool) {
        loop {
            let mut fanout = if help && !DELIVERING.get() {
                lock(&self.fanout)
            } else {
                match self.fanout.try_lock() {
                    Ok(guard) => guard,
                    Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                    Err(TryLockError::WouldBlock) => return,
                }
            };
            let delivering = Delivering::enter();
            loop {
                let commands = {
                    let mut state = lock(&self.state);
                    state.backlog = 0;
                    std::mem::take(&mut state.commands)
                };
                if commands.is_empty() {
                    break;
                }
                for command in commands {
                    fanout.run(command);
                }
            }
            drop(delivering);
            drop(fanout);
            // A command queued after our last look and before we let go found the lock taken
            // and left its work to us: look once more.
            if lock(&self.state).commands.is_empty() {
                return;
            }
        }
    }
}

thread_local! {
    /// Whether this thread is running fan-out commands (and so holds a fan-out lock).
    static DELIVERING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks this thread as delivering until dropped, then restores what it was: delivering for one
/// model may publish to, and deliver for, another.
struct Delivering(bool);

impl Delivering {
    fn enter() -> Self {
        Delivering(DELIVERING.replace(true))
    }
}

impl Drop for Delivering {
    fn drop(&mut self) {
        DELIVERING.set(self.0);
    }
}

impl ModelState {
    fn enqueue(&mut self, command: Command) {
        self.backlog += match &command {
            Command::Join { first, .. } => first.iter().map(Outbound::queued_len).sum(),
            Command::Resync {
                snapshot: message, ..
            }
            | Command::Broadcast(message)
            | Command::Reply { message, .. } => message.queued_len(),
            Command::Leave(_) | Command::CloseAll(_) => 0,
        };
        self.commands.push_back(command);
    }

    fn over_backlog(&self) -> bool {
        self.backlog > self.max_backlog
    }

    /// Merges every update of a frame, or none: on a refusal, the updates already merged are
    /// reverted and the error comes with the ids of all the frame's messages (gathered only
    /// then, off the path of frames that apply).
    fn merge_frame(
        &mut self,
        frame: Frame,
        max_model_bytes: usize,
    ) -> Result<Vec<Step>, (FrameError, Vec<MessageId>)> {
        let size_before = self.size;
        let mut steps: Vec<Step> = Vec::with_capacity(frame.messages.len());
        let mut messages = frame.messages.into_iter().enumerate();
        while let Some((index, Message { kind, id, content })) = messages.next() {
            let error = match kind {
                MessageKind::Signal => {
                    steps.push(Step::Signal { id, content });
                    continue;
                }
                MessageKind::Update => {
                    match self.merge_update(index, content.into_object(), max_model_bytes) {
                        Ok(change) => {
                            steps.push(Step::Update { id, change });
                            continue;
                        }
                        Err(error) => error,
                    }
                }
            };
            let ids = steps
                .iter()
                .filter_map(Step::id)
                .cloned()
                .chain(id)
                .chain(messages.filter_map(|(_, message)| message.id))
                .collect();
            for step in steps.into_iter().rev() {
                if let Step::Update { change, .. } = step {
                    change.revert(self.model.state_mut());
                }
            }
            self.size = size_before;
            return Err((error, ids));
        }
        Ok(steps)
    }

    fn merge_update(
        &mut self,
        index: usize,
        content: Result<serde_json::Map<String, serde_json::Value>, serde_json::Error>,
        max_model_bytes: usize,
    ) -> Result<Change, FrameError> {
        let content = content.map_err(|e| {
            FrameError::at(
                ErrorCode::InvalidMessage,
                index,
                format!("unreadable content: {e}"),
            )
        })?;
        self.model
            .check(&content)
            .map_err(|rejection| FrameError::at(ErrorCode::Rejected, index, rejection.0))?;
        let change = merge_diff(self.model.state_mut(), content);
        let size = self.size + change.size_delta();
        if size > max_model_bytes as i64 {
            change.revert(self.model.state_mut());
            return Err(FrameError::at(
                ErrorCode::ModelTooLarge,
                index,
                format!("the update would make the model {size} bytes, more than the limit of {max_model_bytes}"),
            ));
        }
        self.size = size;
        Ok(change)
    }

    fn commit(&mut self, from: ClientId, mode: Mode, epoch: &Arc<str>, steps: Vec<Step>) {
        for step in steps {
            match step {
                Step::Update { id, change } if change.is_empty() => {
                    if let (Mode::Stream, Some(id)) = (mode, id) {
                        let message = Outbound::ack(id, self.version, epoch.clone());
                        self.commands
                            .push_back(Command::Reply { to: from, message });
                    }
                }
                Step::Update { id, change } => {
                    self.version += 1;
                    let diff = change.into_diff();
                    self.model.committed(self.version, &diff);
                    let message = Outbound::update(
                        Header {
                            seq: Some(self.version),
                            epoch: Some(epoch.clone()),
                            origin: Some(from),
                            id,
                            ..Header::default()
                        },
                        diff,
                    );
                    self.history.push(message.clone());
                    self.enqueue(Command::Broadcast(message));
                }
                Step::Signal { id, content } => {
                    let header = Header {
                        origin: Some(from),
                        id,
                        ..Header::default()
                    };
                    let message = match content {
                        Content::Raw(raw) => {
                            Outbound::new(OutboundKind::Signal, header, raw.get(), None)
                        }
                        Content::Object(map) => Outbound::new(
                            OutboundKind::Signal,
                            header,
                            &object_json(&map),
                            Some(map),
                        ),
                    };
                    self.enqueue(Command::Broadcast(message));
                }
            }
        }
    }
}

impl Fanout {
    fn run(&mut self, command: Command) {
        match command {
            Command::Join {
                id,
                subscriber,
                first,
            } => {
                let open = first
                    .iter()
                    .all(|m| subscriber.subscriber.deliver(m, false) != Delivery::Closed);
                if open {
                    self.subscribers.insert(id, subscriber);
                }
            }
            Command::Leave(id) => {
                self.subscribers.swap_remove(&id);
            }
            Command::Resync { id, snapshot } => self.deliver_to(id, &snapshot),
            Command::Reply { to, message } => self.deliver_to(to, &message),
            Command::Broadcast(message) => self.broadcast(&message),
            Command::CloseAll(reason) => {
                for (_, registered) in self.subscribers.drain(..) {
                    registered.subscriber.close(reason);
                }
            }
        }
    }

    fn deliver_to(&mut self, id: ClientId, message: &Outbound) {
        let Some(registered) = self.subscribers.get(&id) else {
            return;
        };
        let status = registered.subscriber.deliver(message, true);
        self.settle(id, status);
    }

    fn broadcast(&mut self, message: &Outbound) {
        let origin = message.origin();
        let is_signal = message.kind() == OutboundKind::Signal;
        let mut settled = Vec::new();
        for (&id, registered) in &self.subscribers {
            let own = origin == Some(id);
            if own && (is_signal || registered.mode == Mode::Compat) {
                continue;
            }
            match registered.subscriber.deliver(message, own) {
                Delivery::Queued => {}
                status => settled.push((id, status)),
            }
        }
        for (id, status) in settled {
            self.settle(id, status);
        }
    }

    /// Applies the engine's one policy to a subscriber that did not simply queue.
    fn settle(&mut self, id: ClientId, status: Delivery) {
        match status {
            Delivery::Queued => {}
            Delivery::Closed => {
                self.subscribers.swap_remove(&id);
            }
            Delivery::Lagged => {
                let compat = self
                    .subscribers
                    .get(&id)
                    .is_some_and(|r| r.mode == Mode::Compat);
                if compat {
                    if let Some(registered) = self.subscribers.swap_remove(&id) {
                        registered.subscriber.close(CloseReason::Overflow);
                    }
                }
            }
        }
    }
}

/// A fresh epoch: random (the standard library seeds its hasher keys from the OS), so a new
/// process or a re-created model never reuses one.
fn new_epoch() -> Arc<str> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    hasher.write_u128(nanos);
    format!("{:016x}", hasher.finish()).into()
}
