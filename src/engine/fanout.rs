//! The fan-out: a model's subscribers, the commands that reach them in the model's order, and
//! the one lag policy. It runs outside the model's lock and never calls back into the engine.

use std::sync::Arc;

use indexmap::IndexMap;

use super::snapshot::Snapshot;
use super::written::Written;
use crate::protocol::{ClientId, Mode, ServerMessage, ServerMessageKind};
use crate::subscriber::{CloseReason, Delivery, Subscriber};

/// One of the first messages a joining (or resyncing) subscriber gets.
pub(crate) enum First {
    /// A snapshot, serialized by the fan-out on first use.
    Snapshot(Arc<Snapshot>),
    /// A diff from the history (resume, or the diffs after a cached snapshot).
    Diff(ServerMessage),
    /// The presence snapshot (stream mode): every other connection's presence.
    Presence(ServerMessage),
}

impl First {
    fn message(&self) -> &ServerMessage {
        match self {
            First::Snapshot(snapshot) => snapshot.message(),
            First::Diff(message) | First::Presence(message) => message,
        }
    }
}

/// A subscriber and how it receives.
pub(crate) struct Registered {
    pub(crate) mode: Mode,
    pub(crate) subscriber: Arc<dyn Subscriber>,
}

/// What the fan-out does, in the order the model's changes happened.
pub(crate) enum Command {
    /// Register a subscriber after its first messages.
    Join {
        id: ClientId,
        subscriber: Registered,
        first: Vec<First>,
    },
    /// Forget a subscriber.
    Leave(ClientId),
    /// Bring a lagging subscriber back with a snapshot of the current version (it answers
    /// the subscriber's own request, so it counts as its own).
    Resync {
        id: ClientId,
        snapshot: Arc<Snapshot>,
        /// The presence snapshot that follows it.
        presence: ServerMessage,
    },
    /// A message for every subscriber (its sender too, as the lag policy says).
    Broadcast(ServerMessage),
    /// A signal from another node: for every subscriber here (none of them sent it).
    Relayed(ServerMessage),
    /// A presence change: for every stream-mode subscriber but the connection it is about
    /// (`from`: none when it comes from another node).
    Presence {
        from: Option<ClientId>,
        message: ServerMessage,
    },
    /// A message for one subscriber.
    Reply {
        to: ClientId,
        message: ServerMessage,
    },
    /// A state read: the snapshot, once the model's order reaches it.
    Read(Box<dyn FnOnce(Arc<Snapshot>) + Send>, Arc<Snapshot>),
    /// Tell every subscriber the model is closed, and forget them.
    CloseAll(CloseReason),
    /// Tell a server-side write it is durable, at `version`.
    Written { version: u64, written: Written },
}

impl Command {
    /// Whether this is a presence change that a later one of the same id replaced before it
    /// went out.
    pub(crate) fn is_superseded(&self) -> bool {
        matches!(self, Command::Presence { message, .. } if message.is_superseded())
    }

    /// Bytes this command queues for subscribers (for the backlog bound); a snapshot counts
    /// as the model's size at the time.
    pub(crate) fn queued_len(&self, model_size: usize) -> usize {
        let first_len = |first: &[First]| {
            first
                .iter()
                .map(|f| match f {
                    First::Snapshot(_) => model_size,
                    First::Diff(message) | First::Presence(message) => message.queued_len(),
                })
                .sum()
        };
        match self {
            Command::Join { first, .. } => first_len(first),
            Command::Resync { presence, .. } => model_size + presence.queued_len(),
            Command::Broadcast(message)
            | Command::Relayed(message)
            | Command::Presence { message, .. }
            | Command::Reply { message, .. } => message.queued_len(),
            Command::Read(..)
            | Command::Leave(_)
            | Command::CloseAll(_)
            | Command::Written { .. } => 0,
        }
    }
}

/// The subscribers of one model.
#[derive(Default)]
pub(crate) struct Fanout {
    subscribers: IndexMap<ClientId, Registered>,
}

impl Fanout {
    /// Runs one command.
    pub(crate) fn run(&mut self, command: Command) {
        match command {
            Command::Join {
                id,
                subscriber,
                first,
            } => {
                let open = first
                    .iter()
                    .all(|f| subscriber.subscriber.deliver(f.message(), false) != Delivery::Closed);
                if open {
                    self.subscribers.insert(id, subscriber);
                }
            }
            Command::Leave(id) => {
                self.subscribers.swap_remove(&id);
            }
            Command::Resync {
                id,
                snapshot,
                presence,
            } => {
                self.deliver_to(id, snapshot.message(), true);
                self.deliver_to(id, &presence, true);
            }
            Command::Presence { from, message } => self.broadcast_presence(&message, from),
            Command::Reply { to, message } => self.deliver_to(to, &message, true),
            Command::Broadcast(message) => self.broadcast(&message, true),
            Command::Relayed(message) => self.broadcast(&message, false),
            Command::Read(reply, snapshot) => reply(snapshot),
            Command::Written { version, written } => written.answer(Ok(version)),
            Command::CloseAll(reason) => {
                for (_, registered) in self.subscribers.drain(..) {
                    registered.subscriber.close(reason);
                }
            }
        }
    }

    /// How many subscribers are registered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.subscribers.len()
    }

    fn deliver_to(&mut self, id: ClientId, message: &ServerMessage, own: bool) {
        let Some(registered) = self.subscribers.get(&id) else {
            return;
        };
        let status = registered.subscriber.deliver(message, own);
        self.apply_lag_policy(id, status);
    }

    /// Delivers to every subscriber; with `local`, the sender (by `origin`) is treated as the
    /// lag policy and the mode say (a signal is not echoed).
    fn broadcast(&mut self, message: &ServerMessage, local: bool) {
        let origin = message.origin().filter(|_| local);
        let is_signal = message.kind() == ServerMessageKind::Signal;
        self.deliver_each(message, |id, registered| {
            let own = origin == Some(id);
            let skip = own && (is_signal || registered.mode == Mode::Compat);
            (!skip).then_some(own)
        });
    }

    /// Delivers a presence change to every stream-mode subscriber but `from` (compat mode
    /// knows nothing of presence).
    fn broadcast_presence(&mut self, message: &ServerMessage, from: Option<ClientId>) {
        self.deliver_each(message, |id, registered| {
            (registered.mode == Mode::Stream && Some(id) != from).then_some(false)
        });
    }

    /// Offers `message` to each subscriber for which `route` says whether it is its own (or
    /// `None`: not for it), then applies the lag policy to those that did not simply queue it.
    fn deliver_each(
        &mut self,
        message: &ServerMessage,
        route: impl Fn(ClientId, &Registered) -> Option<bool>,
    ) {
        let mut not_queued = Vec::new();
        for (&id, registered) in &self.subscribers {
            let Some(own) = route(id, registered) else {
                continue;
            };
            match registered.subscriber.deliver(message, own) {
                Delivery::Queued => {}
                status => not_queued.push((id, status)),
            }
        }
        for (id, status) in not_queued {
            self.apply_lag_policy(id, status);
        }
    }

    /// The engine's one policy for a subscriber that did not simply queue: a closed one is
    /// forgotten; a lagging stream-mode one stays (its owner resyncs it); a lagging compat-mode
    /// one is removed and told [`CloseReason::Overflow`].
    fn apply_lag_policy(&mut self, id: ClientId, status: Delivery) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::lock;
    use crate::protocol::{Header, MessageId};
    use serde_json::Map;
    use std::sync::Mutex;

    /// Records what it is offered and answers with a scripted status.
    #[derive(Default)]
    struct Probe {
        seen: Mutex<Vec<(String, bool)>>,
        answer: Mutex<Option<Delivery>>,
        closed: Mutex<Option<CloseReason>>,
    }

    impl Subscriber for Probe {
        fn deliver(&self, message: &ServerMessage, own: bool) -> Delivery {
            lock(&self.seen).push((message.json().to_owned(), own));
            lock(&self.answer).unwrap_or(Delivery::Queued)
        }
        fn close(&self, reason: CloseReason) {
            *lock(&self.closed) = Some(reason);
        }
    }

    fn diff(seq: u64, origin: u64) -> ServerMessage {
        ServerMessage::update(
            Header {
                seq: Some(seq),
                origin: Some(ClientId(origin)),
                id: Some(MessageId::number(seq)),
                ..Header::default()
            },
            Map::new(),
        )
    }

    fn join(fanout: &mut Fanout, id: u64, mode: Mode) -> Arc<Probe> {
        let probe = Arc::new(Probe::default());
        fanout.run(Command::Join {
            id: ClientId(id),
            subscriber: Registered {
                mode,
                subscriber: probe.clone(),
            },
            first: vec![First::Snapshot(Snapshot::new(
                0,
                "e".into(),
                Arc::new(Map::new()),
            ))],
        });
        probe
    }

    fn seqs(probe: &Probe) -> Vec<(Option<u64>, bool)> {
        lock(&probe.seen)
            .iter()
            .map(|(json, own)| {
                let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
                (v["header"]["seq"].as_u64(), *own)
            })
            .collect()
    }

    #[test]
    fn commands_reach_subscribers_in_order_with_echoes_marked_own() {
        let mut fanout = Fanout::default();
        let stream = join(&mut fanout, 1, Mode::Stream);
        let compat = join(&mut fanout, 2, Mode::Compat);
        for (seq, origin) in [(1, 1), (2, 2), (3, 9)] {
            fanout.run(Command::Broadcast(diff(seq, origin)));
        }
        assert_eq!(
            seqs(&stream),
            vec![
                (Some(0), false),
                (Some(1), true),
                (Some(2), false),
                (Some(3), false)
            ]
        );
        // A compat subscriber never gets its own diffs back.
        assert_eq!(
            seqs(&compat),
            vec![(Some(0), false), (Some(1), false), (Some(3), false)]
        );
        fanout.run(Command::Leave(ClientId(1)));
        fanout.run(Command::Broadcast(diff(4, 9)));
        assert_eq!(seqs(&stream).len(), 4, "nothing after leaving");
    }

    #[test]
    fn lag_policy_keeps_stream_subscribers_and_closes_compat_ones() {
        let mut fanout = Fanout::default();
        let stream = join(&mut fanout, 1, Mode::Stream);
        let compat = join(&mut fanout, 2, Mode::Compat);
        let gone = join(&mut fanout, 3, Mode::Stream);
        *lock(&stream.answer) = Some(Delivery::Lagged);
        *lock(&compat.answer) = Some(Delivery::Lagged);
        *lock(&gone.answer) = Some(Delivery::Closed);
        fanout.run(Command::Broadcast(diff(1, 9)));
        assert_eq!(fanout.len(), 1, "the lagging stream subscriber stays");
        assert_eq!(*lock(&compat.closed), Some(CloseReason::Overflow));
        assert_eq!(
            *lock(&gone.closed),
            None,
            "a closed subscriber is not told again"
        );
        *lock(&stream.answer) = None;
        fanout.run(Command::Resync {
            id: ClientId(1),
            snapshot: Snapshot::new(1, "e".into(), Arc::new(Map::new())),
            presence: ServerMessage::presence_snapshot("n-1".into(), "{}"),
        });
        fanout.run(Command::Reply {
            to: ClientId(1),
            message: diff(2, 1),
        });
        assert_eq!(
            seqs(&stream),
            vec![
                (Some(0), false),
                (Some(1), false),
                (Some(1), true),
                // The presence snapshot, right after the resync's snapshot.
                (None, true),
                (Some(2), true)
            ]
        );
        fanout.run(Command::CloseAll(CloseReason::Shutdown));
        assert_eq!(*lock(&stream.closed), Some(CloseReason::Shutdown));
        assert_eq!(fanout.len(), 0);
    }
}
