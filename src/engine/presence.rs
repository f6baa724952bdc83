//! A model's presences (PROTOCOL.md section 11): who is connected and what each connection
//! said about itself. Ephemeral: never in the model, its versions, its history or its store's
//! log. The live model keeps this table under its lock, so that a joiner's presence snapshot
//! and the changes queued around it follow one order.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use serde_json::{Map, Value};

use crate::json_text::write_string;
use crate::protocol::{ClientId, ServerMessage};
use crate::store::RemotePresence;

/// The text of a cleared presence.
pub(crate) const NULL: &str = "null";

/// The presences of one model: this node's connections', and those other nodes published.
///
/// Each is kept as the last change sent for it (a presence message): a newer change of the
/// same id marks the older one superseded, so that a queue still holding it drops it, at any
/// stage (the model's command queue, a subscriber's queue): a fan-out or a reader slower than
/// the changes gets the latest of each id, never a backlog, at no cost per delivery.
#[derive(Default)]
pub(crate) struct Presences {
    /// This node's connections: their presence id, and their last change (`null` once
    /// cleared).
    local: HashMap<ClientId, (Arc<str>, ServerMessage)>,
    /// Other nodes' connections that have a presence, by presence id: their last change.
    remote: HashMap<Arc<str>, ServerMessage>,
    /// Every presence as a snapshot's content, built once per change for all the joiners
    /// meanwhile (a reconnect storm does not rebuild it per connection under the model's
    /// lock).
    everyone: OnceLock<String>,
}

impl Presences {
    /// A table holding the presences another node published before this one loaded the model.
    pub(crate) fn with_remote(remote: Vec<RemotePresence>) -> Self {
        Presences {
            local: HashMap::new(),
            everyone: OnceLock::new(),
            remote: remote
                .into_iter()
                .map(|p| {
                    let message = ServerMessage::presence(&p.id, &p.json);
                    (Arc::from(p.id), message)
                })
                .collect(),
        }
    }

    /// Sets (or with `null`, clears) connection `client`'s presence; the change to send, if
    /// anything changed for the others (clearing a presence never set announces nothing).
    pub(crate) fn set(
        &mut self,
        client: ClientId,
        id: &Arc<str>,
        json: &str,
    ) -> Option<ServerMessage> {
        let message = ServerMessage::presence(id, json);
        self.everyone = OnceLock::new();
        match self.local.insert(client, (id.clone(), message.clone())) {
            Some((_, earlier)) => earlier.supersede(),
            None if json == NULL => {
                self.local.remove(&client);
                return None;
            }
            None => {}
        }
        Some(message)
    }

    /// Every presence of this node's connections, set again (a new change of each, with the
    /// same content): the changes to send, for the other nodes to hear of them again.
    pub(crate) fn renew_local(&mut self) -> Vec<(ClientId, ServerMessage)> {
        let current: Vec<(ClientId, Arc<str>, String)> = self
            .local
            .iter()
            .filter(|(_, (_, last))| !last.is_null())
            .map(|(client, (id, last))| (*client, id.clone(), last.content_json().to_owned()))
            .collect();
        current
            .into_iter()
            .filter_map(|(client, id, json)| Some((client, self.set(client, &id, &json)?)))
            .collect()
    }

    /// Connection `client` left: the `null` for its id, if it had a presence.
    pub(crate) fn leave(&mut self, client: ClientId) -> Option<ServerMessage> {
        let (id, earlier) = self.local.remove(&client)?;
        self.everyone = OnceLock::new();
        earlier.supersede();
        (!earlier.is_null()).then(|| ServerMessage::presence(&id, NULL))
    }

    /// Another node's presence change: whether it changed anything here (a `null` for an id
    /// this node does not hold is not passed on).
    pub(crate) fn receive(&mut self, message: &ServerMessage) -> bool {
        let Some(id) = message.presence_of() else {
            return false;
        };
        self.everyone = OnceLock::new();
        let earlier = match message.is_null() {
            true => self.remote.remove(id.as_str()),
            false => self.remote.insert(Arc::from(id), message.clone()),
        };
        if let Some(earlier) = &earlier {
            earlier.supersede();
        }
        earlier.is_some() || !message.is_null()
    }

    /// Replaces the other nodes' presences with `remote` (what the store holds now, read
    /// after the feed may have missed changes): the changes to send, for the ids that differ.
    pub(crate) fn replace_remote(&mut self, remote: Vec<RemotePresence>) -> Vec<ServerMessage> {
        let mut old = std::mem::take(&mut self.remote);
        self.everyone = OnceLock::new();
        let mut changes = Vec::new();
        for presence in remote {
            let id: Arc<str> = presence.id.into();
            let message = match old.remove(&id) {
                Some(kept) if kept.content_json() == presence.json => kept,
                earlier => {
                    if let Some(earlier) = earlier {
                        earlier.supersede();
                    }
                    let message = ServerMessage::presence(&id, &presence.json);
                    changes.push(message.clone());
                    message
                }
            };
            self.remote.insert(id, message);
        }
        for (id, earlier) in old {
            earlier.supersede();
            changes.push(ServerMessage::presence(&id, NULL));
        }
        changes
    }

    /// Forgets every presence of node `node` (it is known dead): the `null`s to send.
    pub(crate) fn forget_node(&mut self, node: &str) -> Vec<ServerMessage> {
        let gone: Vec<Arc<str>> = self
            .remote
            .keys()
            .filter(|id| presence_node(id) == Some(node))
            .cloned()
            .collect();
        self.everyone = OnceLock::new();
        gone.into_iter()
            .filter_map(|id| {
                let earlier = self.remote.remove(&id)?;
                earlier.supersede();
                Some(ServerMessage::presence(&id, NULL))
            })
            .collect()
    }

    /// Every connection's presence but `except`'s, as (id, JSON text).
    fn current(&self, except: Option<ClientId>) -> impl Iterator<Item = (&Arc<str>, &str)> {
        let local = self
            .local
            .iter()
            .filter(move |(client, (_, last))| Some(**client) != except && !last.is_null())
            .map(|(_, (id, last))| (id, last.content_json()));
        let remote = self
            .remote
            .iter()
            .map(|(id, last)| (id, last.content_json()));
        local.chain(remote)
    }

    /// The presence snapshot for connection `own` (its presence id `own_id`): every other
    /// connection's presence.
    pub(crate) fn snapshot(&self, own: ClientId, own_id: Arc<str>) -> ServerMessage {
        if self.local.contains_key(&own) {
            // A connection that has a presence (a resync): everyone but itself.
            return ServerMessage::presence_snapshot(own_id, &self.content(Some(own)));
        }
        let everyone = self.everyone.get_or_init(|| self.content(None));
        ServerMessage::presence_snapshot(own_id, everyone)
    }

    /// The object of every presence but `except`'s, as JSON text.
    fn content(&self, except: Option<ClientId>) -> String {
        let mut text = String::from("{");
        for (i, (id, json)) in self.current(except).enumerate() {
            if i > 0 {
                text.push(',');
            }
            write_string(id, &mut text);
            text.push(':');
            text.push_str(json);
        }
        text.push('}');
        text
    }

    /// Every presence, by id (for server code).
    pub(crate) fn all(&self) -> Map<String, Value> {
        self.current(None)
            .map(|(id, json)| {
                let value = serde_json::from_str(json).unwrap_or(Value::Null);
                (id.to_string(), value)
            })
            .collect()
    }
}

/// The node a presence id belongs to (PROTOCOL.md section 11: ids are `<node>-<connection>`):
/// what a shared store needs to tell whose heartbeat keeps a presence alive.
pub fn presence_node(id: &str) -> Option<&str> {
    id.rsplit_once('-').map(|(node, _)| node)
}

/// The presence id of connection `client` on the node (or engine) named `instance`.
pub(crate) fn presence_id(instance: &str, client: ClientId) -> Arc<str> {
    format!("{instance}-{client}").into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(message: &ServerMessage) -> Vec<String> {
        let mut ids: Vec<String> = message
            .content()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        ids.sort();
        ids
    }

    #[test]
    fn a_snapshot_holds_every_other_connection_and_a_leave_announces_null() {
        let mut table = Presences::with_remote(vec![RemotePresence {
            id: "b-7".into(),
            json: r#"{"x":2}"#.into(),
        }]);
        let (one, two) = (ClientId(1), ClientId(2));
        let changed = table.set(one, &presence_id("a", one), r#"{"x":1}"#);
        assert_eq!(
            changed.map(|m| m.json().to_owned()).as_deref(),
            Some(r#"{"header":{"type":"presence","version":"0.1","id":"a-1"},"content":{"x":1}}"#)
        );
        assert!(
            table.set(two, &presence_id("a", two), NULL).is_none(),
            "nothing to clear"
        );
        let snapshot = table.snapshot(two, presence_id("a", two));
        assert_eq!(ids(&snapshot), ["a-1", "b-7"]);
        assert_eq!(snapshot.presence_id(), Some("a-2"));
        assert!(snapshot.is_presence_snapshot() && !snapshot.is_snapshot());
        assert_eq!(ids(&table.snapshot(one, presence_id("a", one))), ["b-7"]);
        let gone = table.leave(one).map(|m| (m.presence_of(), m.is_null()));
        assert_eq!(gone, Some((Some("a-1".to_owned()), true)));
        assert!(table.leave(one).is_none(), "announced once");
        assert_eq!(table.forget_node("b").len(), 1);
        assert!(table.all().is_empty());
    }

    #[test]
    fn a_change_supersedes_the_last_one_of_its_id() {
        let mut table = Presences::default();
        let (client, id) = (ClientId(1), presence_id("a", ClientId(1)));
        let first = table.set(client, &id, r#"{"x":1}"#).unwrap();
        let cleared = table.set(client, &id, NULL).unwrap();
        assert!(first.is_superseded() && !cleared.is_superseded());
        let again = table.set(client, &id, r#"{"x":2}"#).unwrap();
        assert!(cleared.is_superseded());
        let gone = table.leave(client).unwrap();
        assert!(again.is_superseded() && gone.is_null() && !gone.is_superseded());
        let remote = ServerMessage::presence("b-1", r#"{"y":1}"#);
        table.receive(&remote);
        assert_eq!(table.forget_node("b").len(), 1);
        assert!(remote.is_superseded());
    }

    #[test]
    fn joiners_share_one_snapshot_content_until_the_next_change() {
        let mut table = Presences::default();
        let (one, two) = (ClientId(1), ClientId(2));
        table.set(one, &presence_id("a", one), r#"{"x":1}"#);
        let first = table.snapshot(ClientId(5), presence_id("a", ClientId(5)));
        let again = table.snapshot(ClientId(6), presence_id("a", ClientId(6)));
        assert_eq!(first.content_json(), again.content_json());
        assert_eq!(again.presence_id(), Some("a-6"));
        for change in 0..4 {
            match change {
                0 => drop(table.set(two, &presence_id("a", two), r#"{"y":2}"#)),
                1 => drop(table.receive(&ServerMessage::presence("b-1", r#"{"z":3}"#))),
                2 => drop(table.forget_node("b")),
                _ => drop(table.leave(two)),
            }
            let joiner = ClientId(10 + change);
            let snapshot = table.snapshot(joiner, presence_id("a", joiner));
            assert_eq!(
                snapshot.content_json(),
                table.content(None),
                "after change {change}"
            );
        }
        // One that has a presence (a resync) is left out of its own.
        assert_eq!(
            ids(&table.snapshot(one, presence_id("a", one))),
            Vec::<String>::new()
        );
    }

    #[test]
    fn remote_changes_replace_and_clear_by_id() {
        let mut table = Presences::default();
        let set = |json: &str| ServerMessage::presence("n-3", json);
        assert!(table.receive(&set(r#"{"a":1}"#)));
        assert!(table.receive(&set(r#"{"a":2}"#)));
        assert_eq!(table.all().get("n-3"), Some(&serde_json::json!({"a": 2})));
        assert!(table.receive(&set(NULL)));
        assert!(!table.receive(&set(NULL)), "a second null changes nothing");
        assert_eq!(presence_node("ab12-3"), Some("ab12"));
        let stored = |id: &str, json: &str| RemotePresence {
            id: id.into(),
            json: json.into(),
        };
        table.receive(&set(r#"{"a":3}"#));
        table.receive(&ServerMessage::presence("n-4", r#"{"b":1}"#));
        let changes = table.replace_remote(vec![stored("n-3", r#"{"a":3}"#), stored("m-1", "{}")]);
        let mut changes: Vec<(Option<String>, String)> = changes
            .iter()
            .map(|m| (m.presence_of(), m.content_json().to_owned()))
            .collect();
        changes.sort();
        assert_eq!(
            changes,
            [
                (Some("m-1".to_owned()), "{}".to_owned()),
                (Some("n-4".to_owned()), NULL.to_owned())
            ],
            "only what differs: a new id, and the one no longer held"
        );
    }
}
