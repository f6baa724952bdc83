//! Presence across nodes (PROTOCOL.md section 11), as Centrifugo keeps it: each model's
//! presences in a hash (`purly:{m}:presence`, id → JSON) that the node owning a presence writes
//! together with the publish of its change (one script), and a heartbeat per node
//! (`purly:alive:{<node>}`, a key with a time to live that the node sets again and again).
//!
//! A node that loads a model reads the hash, keeping the presences of live nodes only (and
//! deleting the others'); a node whose feed reconnected reads it again and hands the engine
//! the whole set, so a change missed meanwhile leaves no ghost. Every node checks the
//! heartbeats of the nodes whose presences it holds: a node whose key expired (it died
//! without closing its connections: kill -9, a lost machine) has its presences removed from
//! every model here, `null` to every client, within [`RedisOptions::presence_timeout`](crate::RedisOptions::presence_timeout).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use purly::{ModelName, RemoteFeed, RemotePresence};

use crate::connection::Commands;
use crate::feed::Watches;
use crate::keys::Keys;

/// The heartbeat key of node `node`.
pub(crate) fn alive_key(node: &str) -> String {
    format!("purly:alive:{{{node}}}")
}

/// The other nodes whose presences this node holds (seen in a hash or on a channel): the
/// heartbeats it checks.
#[derive(Default)]
pub(crate) struct Peers(Mutex<HashSet<String>>);

impl Peers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Node `node` has presences here.
    pub(crate) fn saw(&self, node: &str) {
        let mut peers = self.lock();
        if !peers.contains(node) {
            peers.insert(node.to_owned());
        }
    }

    fn all(&self) -> Vec<String> {
        self.lock().iter().cloned().collect()
    }

    fn forget(&self, node: &str) {
        self.lock().remove(node);
    }
}

/// The presences of `model` that live nodes other than `own` hold; the entries of dead nodes
/// are deleted from the hash on the way.
pub(crate) async fn read(
    commands: &Commands,
    model: &ModelName,
    own: &str,
    peers: &Peers,
) -> redis::RedisResult<Vec<RemotePresence>> {
    let keys = Keys::new(model);
    let mut connection = commands.clone();
    let entries: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(&keys.presence)
        .query_async(&mut connection)
        .await?;
    let mut alive: HashMap<String, bool> = HashMap::new();
    let (mut kept, mut dead) = (Vec::new(), Vec::new());
    for (id, json) in entries {
        let Some(node) = purly::presence_node(&id).map(str::to_owned) else {
            dead.push(id);
            continue;
        };
        if node == own {
            // This node's own connections are in its engine already.
            continue;
        }
        let live = match alive.get(&node) {
            Some(live) => *live,
            None => {
                let live: bool = redis::cmd("EXISTS")
                    .arg(alive_key(&node))
                    .query_async(&mut connection)
                    .await?;
                alive.insert(node.clone(), live);
                live
            }
        };
        if live {
            peers.saw(&node);
            kept.push(RemotePresence { id, json });
        } else {
            dead.push(id);
        }
    }
    if !dead.is_empty() {
        let deleted: redis::RedisResult<i64> = redis::cmd("HDEL")
            .arg(&keys.presence)
            .arg(&dead)
            .query_async(&mut connection)
            .await;
        if let Err(error) = deleted {
            tracing::debug!(%model, %error, "redis: dead nodes' presences not deleted");
        }
    }
    Ok(kept)
}

/// The feeds of the models this node follows (copied out of the table's lock).
fn followed(watches: &Watches) -> Vec<RemoteFeed> {
    watches
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .values()
        .map(|watch| watch.feed.clone())
        .collect()
}

/// Keeps this node's heartbeat alive and checks its peers', until the store is dropped: every
/// `timeout / 6` the node's key is set again to expire after `timeout * 2 / 3`, and each peer
/// whose key is gone is forgotten by every model this node follows. So a node that dies is
/// noticed at most `timeout * 2 / 3 + timeout / 6` after its last heartbeat. A node that finds
/// its own key lapsed (it was stopped, or cut off from Redis, for longer than that) has been
/// taken for dead: it sends its connections' presences again.
pub(crate) async fn heartbeat(
    commands: Commands,
    node: String,
    watches: Watches,
    peers: Arc<Peers>,
    timeout: Duration,
) {
    let every = timeout / 6;
    let ttl = u64::try_from((timeout * 2 / 3).as_millis()).unwrap_or(u64::MAX);
    let key = alive_key(&node);
    let mut first = true;
    loop {
        let mut connection = commands.clone();
        // `GET`: the key's value before, none if it had expired.
        let set: redis::RedisResult<Option<String>> = redis::cmd("SET")
            .arg(&key)
            .arg(1)
            .arg("PX")
            .arg(ttl.max(1))
            .arg("GET")
            .query_async(&mut connection)
            .await;
        match set {
            Err(error) => tracing::warn!(%error, "redis: this node's heartbeat was not written"),
            // The key lapsed (this node was stopped, or cut off from Redis, for longer than
            // the timeout): the other nodes took it for dead and dropped its presences.
            Ok(None) if !first => {
                tracing::warn!(
                    "redis: this node's heartbeat had lapsed; its presences go out again"
                );
                for feed in followed(&watches) {
                    feed.renew_presences();
                }
            }
            Ok(_) => {}
        }
        first = false;
        for peer in peers.all() {
            let exists: redis::RedisResult<bool> = redis::cmd("EXISTS")
                .arg(alive_key(&peer))
                .query_async(&mut connection)
                .await;
            if let Ok(false) = exists {
                tracing::info!(node = %peer, "redis: a node stopped its heartbeat; its presences are gone");
                metrics::counter!(crate::telemetry::NODES_GONE).increment(1);
                peers.forget(&peer);
                for feed in followed(&watches) {
                    feed.node_gone(&peer);
                }
            }
        }
        tokio::time::sleep(every).await;
    }
}
