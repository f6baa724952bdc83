//! The feed: one pub/sub connection that follows the channels of the models this node holds,
//! and hands each committed batch to the engine in version order, reading any gap (a missed
//! publish, a reconnection) from the model's stream first. Its connection is re-made with
//! backoff after Redis goes away, and every followed model is caught up then.
//!
//! A node never serves a stale model: when the connection breaks, every followed model is
//! marked suspect (its joins and state reads wait) until a read of its stream succeeded; a
//! read that fails is tried again with backoff, never given up. Other nodes' signals arrive on
//! the same channel and are handed over in the order they were published.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use purly::serde_json::{self, value::RawValue};
use purly::{ModelName, RemoteFeed, StoredDiff};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::connection::{Commands, Received, Subscriber};
use crate::keys::{channel, model_of_channel, Keys};
use crate::presence::{self, Peers};
use crate::reply;
use crate::retry;
use crate::scripts;
use crate::telemetry::{FEED_GAPS, FEED_RECONNECTS};

/// A model this node follows: where its commits go and the last version handed over.
pub(crate) struct Watch {
    pub(crate) feed: RemoteFeed,
    pub(crate) last: u64,
}

/// The followed models, shared by the store (watch/unwatch) and the feed task.
pub(crate) type Watches = Arc<Mutex<HashMap<ModelName, Watch>>>;

/// What the store asks of the feed task.
pub(crate) enum Control {
    Follow(ModelName),
    Unfollow(ModelName),
    /// Read the model's stream now, and say so when done (a client resumes past this node).
    CatchUp(ModelName),
}

/// A published batch, a signal, or a removal.
#[derive(Deserialize)]
struct Published<'a> {
    #[serde(rename = "e", borrow)]
    epoch: Option<&'a str>,
    #[serde(rename = "v")]
    first: Option<u64>,
    #[serde(rename = "d", borrow, default)]
    diffs: Vec<&'a RawValue>,
    /// The client key records the batch wrote (`[[key, record or null], ...]`).
    #[serde(rename = "k", borrow)]
    keys: Option<&'a RawValue>,
    #[serde(borrow)]
    removed: Option<&'a str>,
    /// A signal message (its whole JSON), released after version `a` by node `n`.
    #[serde(rename = "s", borrow)]
    signal: Option<&'a RawValue>,
    #[serde(rename = "a")]
    after: Option<u64>,
    #[serde(rename = "n", borrow)]
    node: Option<&'a str>,
}

/// The payload published for a signal released on node `node` after version `after`.
pub(crate) fn signal_payload(node: &str, after: u64, signal: &purly::ServerMessage) -> String {
    format!(
        r#"{{"n":{},"a":{after},"s":{}}}"#,
        serde_json::Value::from(node),
        signal.json()
    )
}

/// The payload published for a batch: its epoch, first version, diffs and client key records.
pub(crate) fn batch_payload(batch: &purly::Batch) -> String {
    format!(
        r#"{{"e":{},"v":{},"d":{},"k":{}}}"#,
        serde_json::Value::from(&*batch.epoch),
        batch.base_version + 1,
        batch.diffs_json(),
        batch.keys_json()
    )
}

/// How long a failed catch-up waits before its next try, at most.
const MAX_PAUSE: Duration = Duration::from_secs(2);

/// What the feed's steps share.
pub(crate) struct Shared {
    /// The store's commands (reads of streams and presence hashes).
    pub(crate) commands: Commands,
    /// The followed models.
    pub(crate) watches: Watches,
    /// The other nodes whose presences this node holds.
    pub(crate) peers: Arc<Peers>,
    /// Requests between nodes; its name is this node's: its own signals, published on the
    /// same channels, are not handed back.
    pub(crate) nodes: Arc<crate::nodes::Nodes>,
}

/// Runs the feed until the store is dropped (its control channel closes).
pub(crate) async fn run(
    mut subscriber: Subscriber,
    shared: Shared,
    mut control: mpsc::UnboundedReceiver<Control>,
    received: Arc<std::sync::atomic::AtomicU64>,
) {
    let Shared { watches, nodes, .. } = &shared;
    let node = nodes.name().to_owned();
    let own_channel = crate::nodes::channel(&node);
    let mut backoff = Duration::from_millis(50);
    // Models whose channel could not be subscribed to or whose stream could not be read:
    // tried again until they can be.
    let mut behind: HashSet<ModelName> = HashSet::new();
    loop {
        if let Err(error) = subscriber.reconnect().await {
            tracing::warn!(%error, "redis feed: cannot connect; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_PAUSE);
            continue;
        }
        backoff = Duration::from_millis(50);
        // This node's own channel: requests from the other nodes, and their answers.
        let mut own = subscriber.subscribe(&own_channel).await.is_ok();
        let followed: Vec<ModelName> = lock(watches).keys().cloned().collect();
        // Whatever was published while we were not subscribed.
        for model in followed {
            follow(&mut subscriber, &shared, &model, &mut behind).await;
        }
        let mut pause = Duration::from_millis(50);
        loop {
            tokio::select! {
                command = control.recv() => match command {
                    None => return,
                    Some(Control::Follow(model)) => {
                        follow(&mut subscriber, &shared, &model, &mut behind).await;
                    }
                    Some(Control::Unfollow(model)) => {
                        behind.remove(&model);
                        if !lock(watches).contains_key(&model) {
                            // Left subscribed, the channel's messages are dropped: harmless.
                            if let Err(error) = subscriber.unsubscribe(&channel(model.as_str())).await {
                                tracing::debug!(%model, %error, "redis feed: cannot unsubscribe");
                            }
                        }
                    }
                    Some(Control::CatchUp(model)) => {
                        catch_up(&shared, &model, &mut behind).await;
                    }
                },
                message = subscriber.next() => match message {
                    Received::Lost => break,
                    Received::Message(name, payload) => {
                        if name == own_channel {
                            nodes.receive(&payload);
                            continue;
                        }
                        received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(model) = model_of_channel(&name) else {
                            continue;
                        };
                        deliver(&shared, &model, &payload, &mut behind).await;
                    }
                },
                () = tokio::time::sleep(pause), if !behind.is_empty() || !own => {
                    if !own {
                        own = subscriber.subscribe(&own_channel).await.is_ok();
                    }
                    let retried: Vec<ModelName> = behind.drain().collect();
                    for model in retried {
                        follow(&mut subscriber, &shared, &model, &mut behind).await;
                    }
                    pause = match behind.is_empty() && own {
                        true => Duration::from_millis(50),
                        false => (pause * 2).min(MAX_PAUSE),
                    };
                }
            }
        }
        tracing::warn!("redis feed: connection lost; reconnecting");
        metrics::counter!(FEED_RECONNECTS).increment(1);
        // Commits may be published while we are away: nobody is shown these models here until
        // their streams were read again.
        let suspects: Vec<RemoteFeed> = lock(watches).values().map(|w| w.feed.clone()).collect();
        for feed in suspects {
            feed.suspect();
        }
    }
}

/// Subscribes to a followed model's channel (again: harmless when subscribed), then reads
/// what was committed meanwhile. A subscription that fails leaves the model suspect and in
/// `behind`, to be tried again.
async fn follow(
    subscriber: &mut Subscriber,
    shared: &Shared,
    model: &ModelName,
    behind: &mut HashSet<ModelName>,
) {
    let Some((feed, _)) = followed(&shared.watches, model) else {
        return;
    };
    match subscriber.subscribe(&channel(model.as_str())).await {
        Ok(()) => {
            catch_up(shared, model, behind).await;
            // Presence changes published while this node was not subscribed are lost: the
            // whole set is read again (a failed read leaves what the engine has).
            let read = presence::read(&shared.commands, model, shared.nodes.name(), &shared.peers);
            match read.await {
                Ok(presences) => feed.presences(presences),
                Err(error) => tracing::debug!(%model, %error, "redis feed: presences not read"),
            }
        }
        Err(error) => {
            tracing::warn!(%model, %error, "redis feed: cannot subscribe; trying again");
            feed.suspect();
            behind.insert(model.clone());
        }
    }
}

fn lock(watches: &Watches) -> std::sync::MutexGuard<'_, HashMap<ModelName, Watch>> {
    watches
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The feed and last version of a followed model (copied out: the engine is never called
/// under the table's lock).
fn followed(watches: &Watches, model: &ModelName) -> Option<(RemoteFeed, u64)> {
    lock(watches).get(model).map(|w| (w.feed.clone(), w.last))
}

fn advance(watches: &Watches, model: &ModelName, feed: &RemoteFeed, last: u64) {
    if let Some(watch) = lock(watches).get_mut(model) {
        if watch.feed.same(feed) {
            watch.last = watch.last.max(last);
        }
    }
}

/// One published message: handed over if it follows what was handed over, else the gap is
/// read from the stream first.
async fn deliver(
    shared: &Shared,
    model: &ModelName,
    payload: &str,
    behind: &mut HashSet<ModelName>,
) {
    let (watches, node) = (&shared.watches, shared.nodes.name());
    let Some((feed, last)) = followed(watches, model) else {
        return;
    };
    let Ok(published) = serde_json::from_str::<Published<'_>>(payload) else {
        tracing::warn!(%model, "redis feed: unreadable message");
        return;
    };
    if published.removed.is_some() {
        feed.removed();
        return;
    }
    if let (Some(signal), Some(after), Some(from)) =
        (published.signal, published.after, published.node)
    {
        if from != node {
            match purly::parse_server_frame(&format!("[{}]", signal.get())) {
                Ok(mut messages) if messages.len() == 1 => {
                    let message = messages.remove(0);
                    if message.presence_of().is_some() {
                        // Its heartbeat is checked from now on.
                        shared.peers.saw(from);
                    }
                    feed.signal(after, message);
                }
                _ => tracing::warn!(%model, "redis feed: unreadable signal"),
            }
        }
        return;
    }
    let (Some(epoch), Some(first)) = (published.epoch, published.first) else {
        return;
    };
    if first > last + 1 {
        metrics::counter!(FEED_GAPS).increment(1);
        feed.suspect();
        catch_up(shared, model, behind).await;
        return;
    }
    let count = published.diffs.len();
    let keys = published.keys.map(RawValue::get).filter(|k| *k != "[]");
    let diffs: Vec<StoredDiff> = published
        .diffs
        .iter()
        .enumerate()
        .map(|(i, d)| StoredDiff {
            version: first + i as u64,
            json: d.get().to_owned(),
            keys: (i + 1 == count).then(|| keys.map(str::to_owned)).flatten(),
        })
        .filter(|d| d.version > last)
        .collect();
    let Some(newest) = diffs.last().map(|d| d.version) else {
        return;
    };
    if feed.deliver(epoch, diffs) {
        advance(watches, model, &feed, newest);
    }
}

/// Reads and hands over every diff after the last one handed over, then tells the model it
/// is caught up. A read that fails leaves the model in `behind`, to be tried again.
async fn catch_up(shared: &Shared, model: &ModelName, behind: &mut HashSet<ModelName>) {
    let (commands, watches) = (&shared.commands, &shared.watches);
    let Some((feed, last)) = followed(watches, model) else {
        return;
    };
    let keys = Keys::new(model);
    let mut since = scripts::SINCE.key(&keys.meta);
    since.key(&keys.log).arg(last + 1);
    // One retry on a new connection at most: a failure beyond it is tried again later,
    // without holding up the other models' feed.
    let reply: redis::RedisResult<redis::Value> =
        retry::invoke(Duration::from_millis(200), commands, &since).await;
    let read = reply
        .map_err(|e| e.to_string())
        .and_then(|reply| match reply {
            redis::Value::Nil => Ok(None),
            reply => {
                let parts = reply::array(&reply).map_err(|e| e.to_string())?;
                let epoch = parts
                    .first()
                    .map(reply::text)
                    .transpose()
                    .map_err(|e| e.to_string())?;
                let diffs = parts
                    .get(1)
                    .map(reply::entries)
                    .transpose()
                    .map_err(|e| e.to_string())?;
                Ok(epoch.zip(diffs))
            }
        });
    match read {
        Ok(Some((epoch, diffs))) => {
            if let Some(newest) = diffs.last().map(|d| d.version) {
                if feed.deliver(&epoch, diffs) {
                    advance(watches, model, &feed, newest);
                }
            }
            feed.caught_up();
        }
        // Not in Redis: new and not written yet, or (once it had versions) removed meanwhile.
        Ok(None) if last > 0 => feed.removed(),
        Ok(None) => feed.caught_up(),
        Err(error) => {
            tracing::warn!(%model, %error, "redis feed: cannot read the stream; trying again");
            feed.suspect();
            behind.insert(model.clone());
        }
    }
}
