//! [`Replica`]: a client's copy of a model, "server state + my pending changes".

use std::collections::VecDeque;

use serde_json::{Map, Value};
use thiserror::Error;

use crate::error::FrameError;
use crate::merge::merge_diff;
use crate::protocol::{ClientKey, Message, MessageId, Mode, ServerMessage, ServerMessageKind};

/// A server message a replica cannot apply: it must be resynchronized (a new snapshot).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ReplicaError {
    /// A diff skipped versions: something between was lost.
    #[error("diff {got} does not follow version {expected}")]
    Gap {
        /// The version the replica expected next.
        expected: u64,
        /// The version it got.
        got: u64,
    },
    /// A diff arrived before any snapshot.
    #[error("a diff arrived before the snapshot")]
    NoSnapshot,
    /// A message's content could not be read as a JSON object.
    #[error(transparent)]
    Unreadable(#[from] FrameError),
    /// A diff belongs to another epoch than the replica's snapshot.
    #[error("a diff of epoch {got:?} does not belong to epoch {expected:?}")]
    EpochChanged {
        /// The replica's epoch.
        expected: String,
        /// The diff's epoch.
        got: String,
    },
}

#[derive(Clone)]
struct Pending {
    id: MessageId,
    update: Map<String, Value>,
}

/// A client-side copy of one model.
///
/// It applies what the server sends (a snapshot replaces, a diff merges) and keeps the client's
/// own unconfirmed updates on top, dropping each when its echo, `ack` or `error` arrives. So
/// [`state`](Replica::state) is always "server state + my pending changes", and once nothing is
/// pending it equals the server's state at [`version`](Replica::version).
///
/// In stream mode the replica has a client key ([`client_key`](Replica::client_key), random
/// unless given) and [`update`](Replica::update) tags each update with an integer id that
/// increases (it starts from the clock, in microseconds, so that a key reused after a restart
/// never repeats an id): a transport joins with the key, and the server applies each id at most
/// once across reconnects, and answers it (PROTOCOL.md section 9). In
/// compat mode the server neither echoes nor acknowledges, so updates are applied to the
/// confirmed state at once, as the original purly client did.
#[derive(Clone)]
pub struct Replica {
    mode: Mode,
    confirmed: Map<String, Value>,
    view: Option<Map<String, Value>>,
    version: Option<u64>,
    epoch: Option<String>,
    pending: VecDeque<Pending>,
    key: Option<ClientKey>,
    next_id: u64,
    /// The other connections' presences, by presence id (PROTOCOL.md section 11).
    presences: Map<String, Value>,
    /// This connection's own presence id, as the server named it.
    presence_id: Option<String>,
}

impl Default for Replica {
    fn default() -> Self {
        Replica::new(Mode::Stream)
    }
}

impl Replica {
    /// An empty replica for a session in `mode`.
    pub fn new(mode: Mode) -> Self {
        let key = (mode == Mode::Stream).then(ClientKey::random);
        Replica {
            mode,
            confirmed: Map::new(),
            view: None,
            version: None,
            epoch: None,
            pending: VecDeque::new(),
            key,
            next_id: 0,
            presences: Map::new(),
            presence_id: None,
        }
    }

    /// A stream-mode replica with the client key `key` (one kept by the application across
    /// restarts of the client, say).
    pub fn with_client_key(key: ClientKey) -> Self {
        Replica {
            key: Some(key),
            ..Replica::new(Mode::Stream)
        }
    }

    /// The client key to join with (stream mode).
    pub fn client_key(&self) -> Option<&ClientKey> {
        self.key.as_ref()
    }

    /// The state as this client sees it: the server's state with the pending updates merged on
    /// top.
    pub fn state(&self) -> &Map<String, Value> {
        self.view.as_ref().unwrap_or(&self.confirmed)
    }

    /// The value at `pointer` (RFC 6901, e.g. `/div/style/background_color`) in
    /// [`state`](Replica::state), or `None` if there is none: a safe read where indexing the
    /// map (`state()["div"]`) would panic on a missing key. `""` is not a value (the state is
    /// a map): use `state()` for the whole.
    pub fn get(&self, pointer: &str) -> Option<&Value> {
        let rest = pointer.strip_prefix('/')?;
        let (first, rest) = match rest.split_once('/') {
            Some((first, rest)) => (first, Some(rest)),
            None => (rest, None),
        };
        let value = self.state().get(&unescape_pointer(first))?;
        match rest {
            Some(rest) => value.pointer(&format!("/{rest}")),
            None => Some(value),
        }
    }

    /// The server's state as of [`version`](Replica::version), without pending updates.
    pub fn confirmed(&self) -> &Map<String, Value> {
        &self.confirmed
    }

    /// The model version the confirmed state is at (stream mode, after the snapshot).
    pub fn version(&self) -> Option<u64> {
        self.version
    }

    /// The epoch of [`version`](Replica::version).
    pub fn epoch(&self) -> Option<&str> {
        self.epoch.as_deref()
    }

    /// The other connections' presences, by presence id, as the server last said (stream
    /// mode): who else is here (PROTOCOL.md section 11).
    pub fn presences(&self) -> &Map<String, Value> {
        &self.presences
    }

    /// This connection's presence id (stream mode, once joined): the id the others see its
    /// presence under.
    pub fn presence_id(&self) -> Option<&str> {
        self.presence_id.as_deref()
    }

    /// The message that sets this connection's presence to `presence`, or clears it (`None`).
    /// Presence is not part of the model: the replica's state does not change.
    pub fn set_presence(&self, presence: Option<Map<String, Value>>) -> Message {
        Message::presence(presence)
    }

    /// How many updates await confirmation.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The pending updates as messages with their ids, oldest first: what a client resends
    /// after reconnecting, since it cannot know which of them reached the server. Resending
    /// is safe for the replica: each id is confirmed at most once, and a later confirmation of
    /// an id already confirmed is ignored.
    pub fn pending_updates(&self) -> impl Iterator<Item = Message> + '_ {
        self.pending
            .iter()
            .map(|p| Message::update(p.update.clone()).with_id(p.id.clone()))
    }

    /// Records a local update and returns the message to send for it.
    pub fn update(&mut self, content: Map<String, Value>) -> Message {
        match self.mode {
            Mode::Compat => {
                merge_diff(&mut self.confirmed, content.clone());
                Message::update(content)
            }
            Mode::Stream => {
                self.next_id = (self.next_id + 1).max(clock_micros());
                let id = MessageId::number(self.next_id);
                let view = self.view.get_or_insert_with(|| self.confirmed.clone());
                merge_diff(view, content.clone());
                self.pending.push_back(Pending {
                    id: id.clone(),
                    update: content.clone(),
                });
                Message::update(content).with_id(id)
            }
        }
    }

    /// Applies every message of a received frame, in order.
    pub fn receive<'a>(
        &mut self,
        messages: impl IntoIterator<Item = &'a ServerMessage>,
    ) -> Result<(), ReplicaError> {
        messages.into_iter().try_for_each(|m| self.apply(m))
    }

    /// Applies one message from the server.
    pub fn apply(&mut self, message: &ServerMessage) -> Result<(), ReplicaError> {
        if let Some(id) = message.presence_id() {
            self.presence_id = Some(id.to_owned());
        }
        match message.kind() {
            ServerMessageKind::Presence if message.is_presence_snapshot() => {
                self.presences = message.content()?.clone();
            }
            ServerMessageKind::Presence => {
                if let Some(id) = message.presence_of() {
                    if message.is_null() {
                        self.presences.remove(&id);
                    } else {
                        let presence = message.content()?.clone();
                        self.presences.insert(id, Value::Object(presence));
                    }
                }
            }
            ServerMessageKind::Update if message.is_snapshot() => {
                self.confirmed = message.content()?.clone();
                self.version = message.seq();
                self.epoch = message.epoch().map(str::to_owned);
                self.rebuild_view();
            }
            ServerMessageKind::Update => {
                let fresh = match (message.seq(), self.version) {
                    (None, _) => true,
                    (Some(_), None) => return Err(ReplicaError::NoSnapshot),
                    (Some(seq), Some(version)) if seq <= version => false,
                    (Some(seq), Some(version)) if seq == version + 1 => true,
                    (Some(seq), Some(version)) => {
                        return Err(ReplicaError::Gap {
                            expected: version + 1,
                            got: seq,
                        })
                    }
                };
                if let (Some(expected), Some(got)) = (&self.epoch, message.epoch()) {
                    if expected != got {
                        return Err(ReplicaError::EpochChanged {
                            expected: expected.clone(),
                            got: got.to_owned(),
                        });
                    }
                }
                if fresh {
                    merge_diff(&mut self.confirmed, message.content()?.clone());
                    if message.seq().is_some() {
                        self.version = message.seq();
                    }
                }
                let confirmed_own = message.id().is_some_and(|id| self.confirm(id));
                if fresh || confirmed_own {
                    self.rebuild_view();
                }
            }
            ServerMessageKind::Ack => {
                if message.id().is_some_and(|id| self.confirm(id)) {
                    self.rebuild_view();
                }
            }
            ServerMessageKind::Error => {
                let before = self.pending.len();
                self.pending.retain(|p| !message.ids().contains(&p.id));
                if self.pending.len() != before {
                    self.rebuild_view();
                }
            }
            ServerMessageKind::Signal => {}
        }
        Ok(())
    }

    /// Drops a pending update that will never be confirmed because it never reached the server
    /// (sending it failed before it left the client). Returns whether it was pending.
    pub fn forget(&mut self, id: &MessageId) -> bool {
        let forgotten = self.confirm(id);
        if forgotten {
            self.rebuild_view();
        }
        forgotten
    }

    fn confirm(&mut self, id: &MessageId) -> bool {
        match self.pending.iter().position(|p| &p.id == id) {
            Some(at) => {
                self.pending.remove(at);
                true
            }
            None => false,
        }
    }

    /// Recomputes "confirmed + pending"; costs the model's size, only while updates are pending.
    fn rebuild_view(&mut self) {
        if self.pending.is_empty() {
            self.view = None;
            return;
        }
        let mut view = self.confirmed.clone();
        for pending in &self.pending {
            merge_diff(&mut view, pending.update.clone());
        }
        self.view = Some(view);
    }
}
/// The time since the Unix epoch in microseconds: where a replica's update ids start.
fn clock_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// One reference token of a JSON pointer, unescaped (`~1` is `/`, `~0` is `~`).
fn unescape_pointer(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    #[test]
    fn get_reads_a_path_and_never_panics() {
        let mut replica = Replica::new(Mode::Stream);
        let update = json!({"div": {"style": {"color": "coral"}, "a/b": [1, 2], "~": 3}});
        replica.update(update.as_object().unwrap().clone());
        assert_eq!(replica.get("/div/style/color"), Some(&json!("coral")));
        assert_eq!(replica.get("/div/a~1b/1"), Some(&json!(2)));
        assert_eq!(replica.get("/div/~0"), Some(&json!(3)));
        assert_eq!(replica.get("/div"), replica.state().get("div"));
        assert_eq!(replica.get("/div/missing/deeper"), None);
        assert_eq!(replica.get("/nothing"), None);
        assert_eq!(replica.get(""), None);
        assert_eq!(replica.get("div"), None);
    }
}
