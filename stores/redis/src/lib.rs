//! # purly-redis: several purly nodes, one truth, on Redis
//!
//! [`RedisStore`] puts an [`Engine`](purly::Engine)'s models in Redis, so that several purly
//! processes ("nodes") behind a load balancer serve the same models: every node's clients see
//! each model's diffs in one total order, with the same `seq` and `epoch` everywhere, and a
//! client may resume with `?since=N&epoch=E` on any node.
//!
//! ```no_run
//! use purly::Engine;
//! use purly_redis::{RedisOptions, RedisStore};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = RedisStore::connect("redis://127.0.0.1:6379", RedisOptions::default()).await?;
//! let engine = Engine::builder().store(store).build();
//! # Ok(())
//! # }
//! ```
//!
//! One Redis needs version 6.2 or later (the heartbeat's `SET ... GET`). On a Redis Cluster
//! (Redis 7 or later), [`RedisStore::connect_cluster`] takes seed nodes:
//!
//! ```no_run
//! # use purly_redis::{RedisOptions, RedisStore};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let seeds = ["redis://10.0.0.1:7000", "redis://10.0.0.2:7000", "redis://10.0.0.3:7000"];
//! let store = RedisStore::connect_cluster(&seeds, RedisOptions::default()).await?;
//! # Ok(())
//! # }
//! ```
//!
//! ## How the order is kept (as Centrifugo keeps its channels' offsets)
//! Each model's keys share one hash tag, so that a Redis Cluster keeps them on one shard
//! and its scripts may touch them together: `purly:{m}:meta` (hash: `epoch`, `version`),
//! `purly:{m}:log` (stream: one entry per diff, id `<version>-0`, field `d`, and on a batch's
//! last entry `k`, the client key records it wrote), `purly:{m}:snap` (hash: the checkpoint's
//! `version` and `state`), `purly:{m}:clients` (hash: client key → record, PROTOCOL.md
//! section 9), `purly:{m}:presence` (hash: presence id → presence, PROTOCOL.md section 11), and
//! the channel `purly:{m}:ch`. Each node also listens on `purly:node:{<name>}` for the requests
//! of the other nodes ([`Store::ask`]), and renews its heartbeat key `purly:alive:{<name>}`: a
//! node whose heartbeat stops has its connections' presences removed by the others within
//! [`RedisOptions::presence_timeout`]. One Lua script appends a batch
//! atomically only if the model is still at the batch's epoch and version: it adds the diffs to the stream, sets
//! the version, writes the checkpoint and trims the stream when one is due, and publishes the
//! batch. If another node wrote first, it answers with the diffs this node missed; the engine
//! reverts its frames that are not durable yet, applies those diffs, runs its frames again
//! (the model's `check` included) and appends again. Per model and node at most one append
//! is in flight; frames arriving meanwhile form the next batch.
//!
//! The store runs its I/O on a runtime thread of its own ("purly-redis"); no call from the
//! engine waits for it: loads, creations, appends and removals are all commands on its
//! multiplexed connection, each reporting back through its completion (a load bounded by
//! [`RedisOptions::timeout`]). A Redis that is stopped or slow costs the joins of the models
//! being loaded a bounded wait, never a thread.
//!
//! A node follows the channel of a model only while it holds the model (a session, or an
//! idle model not yet evicted), so it receives no traffic for the others. A gap seen on the
//! channel (a lost publish, a reconnection) is read from the stream first.
//!
//! ## On a Redis Cluster
//! Commands go through redis-rs's cluster client, which routes each to the shard of its keys'
//! slot and follows `MOVED`/`ASK` while slots move. Channels are sharded (`SSUBSCRIBE`,
//! `SPUBLISH`, Redis 7; the append script publishes with `SPUBLISH` too): a batch reaches the
//! subscribers of its model's shard only, where a classic `PUBLISH` would cross every shard of
//! the cluster. The feed holds one RESP3 connection per shard; a shard's connection that
//! breaks makes every followed model suspect and subscribed again (harmless where it still
//! is) and read from its stream, exactly as a broken connection to one Redis does. A cluster
//! connection whose requests have all failed for [`RedisOptions::timeout`] is made again from
//! the seed nodes: redis-rs 1.8's can otherwise stay without any connection for good after
//! every master went away at once (tested by killing and restarting all three masters).
//!
//! ## Guarantees across nodes (PROTOCOL.md section 8), and how they are kept
//! - **Nothing applied twice.** Each append carries a random token, stored with its first
//!   diff. An append whose fate is unknown (its reply was lost when the connection broke, or
//!   a try timed out) is tried again on a new connection with the same token; a try that
//!   finds its token already at its first version answers `ok`, never a conflict. Retries go
//!   on for [`RedisOptions::retry_budget`]; past it the model is reloaded (its clients get
//!   `unavailable`, 1011).
//! - **No stale node.** When the feed's connection breaks, every model it follows is marked
//!   suspect: joins and state reads of it wait (a bounded wait, as for a load) until its
//!   stream was read again after the reconnection. A read that fails is tried again with
//!   backoff until it succeeds. A client that resumes past what this node has seen (it saw
//!   those versions on another node) makes the node read the stream first: it gets the diffs
//!   it missed, never an older state.
//! - **Signals cross nodes.** A signal released on one node is published on the model's
//!   channel, with the version it followed, by one task in release order; the other nodes
//!   show it to their clients once they have that version: each sender's signals in order,
//!   after the updates that preceded them. Signals are not stored: one published while a
//!   node's feed is reconnecting does not reach that node.
//!
//! ## Durability is Redis's
//! A change is shown to clients once Redis accepted the script. What survives then is what
//! Redis's persistence promises:
//!
//! | Redis setting | a change any client was shown survives |
//! | --- | --- |
//! | `appendonly yes`, `appendfsync always` | a Redis crash or restart, and an OS crash (an fsync per write) |
//! | `appendonly yes`, `appendfsync everysec` | a Redis restart; an OS crash or `kill -9` of Redis may lose the last second |
//! | no AOF (RDB snapshots or none) | nothing beyond Redis's memory: a Redis restart loses the changes since the last snapshot |
//!
//! Redis 7.0 has no `WAITAOF`, so per-write durability needs `appendfsync always`.
//!
//! ## When Redis is away
//! An append that fails (Redis unreachable, a timeout, an error) refuses the model's frames
//! that were not durable with `unavailable` and closes the model's sessions on this node
//! (close code 1011): nothing was shown that Redis does not hold, and no node diverges.
//! Joins of models not in memory fail with HTTP 503 until Redis answers again; the feed
//! reconnects with backoff and catches up every model it follows; a rejoin loads the model
//! from Redis.
//!
//! ## What this crate does not do
//! - Consensus of its own: Redis (a primary, or a cluster's shard primaries) orders every model.
//! - Failover: use Redis Sentinel or Cluster replicas; a failover that loses acknowledged
//!   writes loses them for purly too (Redis replication is asynchronous). The tests restart,
//!   kill and stop masters; they do not fail over to replicas.

mod connection;
mod feed;
mod keys;
mod nodes;
mod presence;
mod reply;
mod retry;
mod scripts;
pub mod telemetry;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use purly::serde_json::{self, Map, Value};
use purly::{
    AppendDone, Appended, Batch, CheckpointPolicy, LoadDone, ModelName, NewModel, RemoteFeed,
    RemoveDone, Store, StoreError, StoredModel,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use thiserror::Error;
use tokio::sync::mpsc;

use connection::{ClusterLink, Commands, Subscriber};
use feed::{Control, Watch, Watches};
use keys::Keys;

pub use redis;

/// How a [`RedisStore`] writes and waits.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisOptions {
    /// When a model's state is written as a checkpoint (default: every 1,000 diffs or 8 MiB).
    pub checkpoint: CheckpointPolicy,
    /// How many diffs before the latest checkpoint the stream keeps for resumes (default 1,024).
    pub keep_history: u64,
    /// How long one command may take before it counts as failed (default 2 s). A load that
    /// takes longer fails its joins (HTTP 503).
    pub timeout: Duration,
    /// How long an append whose fate is unknown (a broken connection, a timeout) is tried
    /// again before the model is given up and reloaded (default 10 s). Retries are safe: an
    /// append that went through is recognized by its token.
    pub retry_budget: Duration,
    /// With a `rediss://` URL (TLS), a CA certificate (PEM) to trust instead of the system's
    /// roots: a private CA's. Default `None`: the system's roots, as managed services need.
    pub tls_ca_pem: Option<Vec<u8>>,
    /// How soon the presences of a node that died without closing its connections are gone
    /// from the other nodes (PROTOCOL.md section 11; default 15 s): each node renews a
    /// heartbeat key every sixth of it, the key lasts two thirds of it, and the other nodes
    /// check the keys every sixth of it.
    pub presence_timeout: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            checkpoint: CheckpointPolicy::default(),
            keep_history: 1024,
            timeout: Duration::from_secs(2),
            retry_budget: Duration::from_secs(10),
            tls_ca_pem: None,
            presence_timeout: Duration::from_secs(15),
        }
    }
}

/// Why [`RedisStore::connect`] or [`RedisStore::connect_cluster`] failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL is not a Redis URL this build reads (`redis://`, `rediss://` or `unix://`), or
    /// the CA certificate given for TLS is not PEM.
    #[error("invalid Redis URL: {0}")]
    Url(redis::RedisError),
    /// Redis did not answer.
    #[error("cannot reach Redis: {0}")]
    Unreachable(redis::RedisError),
    /// The store's own runtime thread could not be started.
    #[error("cannot start the Redis store's runtime: {0}")]
    Runtime(std::io::Error),
}

/// Models kept in Redis and shared by every node that uses the same Redis (see the crate docs).
pub struct RedisStore {
    commands: Commands,
    /// The store's own runtime: its I/O never competes with the embedder's tasks.
    runtime: Option<tokio::runtime::Runtime>,
    /// This node's name on the channels (its own signals are not handed back to it).
    node: String,
    /// Signals and presence changes to publish, in order, by one task.
    signals: mpsc::UnboundedSender<Outgoing>,
    /// The other nodes whose presences this node holds.
    peers: Arc<presence::Peers>,
    handle: tokio::runtime::Handle,
    watches: Watches,
    control: mpsc::UnboundedSender<Control>,
    received: Arc<AtomicU64>,
    options: RedisOptions,
    feed: tokio::task::JoinHandle<()>,
    /// Requests to and from the other nodes.
    nodes: Arc<nodes::Nodes>,
}

impl RedisStore {
    /// Connects to Redis at `url` (`redis://[user:password@]host:port[/db]`, credentials as
    /// redis-rs reads them; `rediss://` for TLS, verified against the system's roots or
    /// [`RedisOptions::tls_ca_pem`]) and starts the feed that follows the models this node
    /// holds.
    pub async fn connect(url: &str, options: RedisOptions) -> Result<Self, ConnectError> {
        let info = redis::IntoConnectionInfo::into_connection_info(url)
            .map_err(ConnectError::Url)?
            .set_tcp_settings(tcp_settings());
        let client = match &options.tls_ca_pem {
            Some(ca) if url.starts_with("rediss://") => {
                redis::Client::build_with_tls(info, tls_certificates(ca))
            }
            _ => redis::Client::open(info),
        }
        .map_err(ConnectError::Url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.timeout))
            .set_response_timeout(Some(options.timeout))
            .set_number_of_retries(2);
        RedisStore::start(options, async move {
            let commands = ConnectionManager::new_with_config(client.clone(), config).await?;
            let subscriber = Subscriber::Single {
                client: Box::new(client),
                connection: None,
            };
            Ok((Commands::Single(commands), subscriber))
        })
        .await
    }

    /// Connects to a Redis Cluster through its seed nodes (`redis://host:port` or
    /// `rediss://host:port` each; the others are found from them) and starts the feed. Each
    /// model's keys share one hash tag, so a model lives on one shard; commands are routed to
    /// it by redis-rs (following redirections while slots move), and its channel is a sharded
    /// one (Redis 7): a node receives only the publishes of the models it holds, from their
    /// shards.
    pub async fn connect_cluster<S: AsRef<str>>(
        seeds: &[S],
        options: RedisOptions,
    ) -> Result<Self, ConnectError> {
        let builder = || {
            let mut builder =
                ClusterClientBuilder::new(seeds.iter().map(|s| s.as_ref().to_owned()))
                    .connection_timeout(options.timeout)
                    .response_timeout(options.timeout)
                    .tcp_settings(tcp_settings())
                    .retries(2);
            if let Some(ca) = &options.tls_ca_pem {
                builder = builder.certs(tls_certificates(ca));
            }
            builder
        };
        // A URL that does not read fails here; both connections are made on the store's
        // runtime (redis-rs's cluster connection runs its task where it was made).
        builder().build().map_err(ConnectError::Url)?;
        let (commands, subscriber, patience) = (builder(), builder(), options.timeout);
        RedisStore::start(options, async move {
            let commands = ClusterLink::connect(commands, patience).await?;
            let subscriber = Subscriber::cluster(subscriber, patience).await?;
            Ok((Commands::Cluster(commands), subscriber))
        })
        .await
    }

    /// Starts the store's runtime, makes its connections there (`connect`) and starts the
    /// feed and the signal publisher.
    async fn start(
        options: RedisOptions,
        connect: impl std::future::Future<Output = redis::RedisResult<(Commands, Subscriber)>>
            + Send
            + 'static,
    ) -> Result<Self, ConnectError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("purly-redis")
            .enable_all()
            .build()
            .map_err(ConnectError::Runtime)?;
        let handle = runtime.handle().clone();
        let connected = match handle.spawn(connect).await {
            Ok(connected) => connected.map_err(ConnectError::Unreachable),
            Err(join) => Err(ConnectError::Runtime(std::io::Error::other(
                join.to_string(),
            ))),
        };
        let (commands, subscriber) = match connected {
            Ok(connections) => connections,
            Err(error) => {
                // Dropping a runtime waits for its threads, which an async context forbids
                // (a panic): let it go in the background.
                runtime.shutdown_background();
                return Err(error);
            }
        };
        let watches: Watches = Arc::new(Mutex::new(HashMap::new()));
        let (control, receiver) = mpsc::unbounded_channel();
        let received = Arc::new(AtomicU64::new(0));
        let node = purly::random_hex(12);
        let nodes = Arc::new(nodes::Nodes::new(
            node.clone(),
            commands.clone(),
            handle.clone(),
            options.timeout * 5,
        ));
        let peers = Arc::new(presence::Peers::default());
        let shared = feed::Shared {
            commands: commands.clone(),
            watches: watches.clone(),
            peers: peers.clone(),
            nodes: nodes.clone(),
        };
        let feed = handle.spawn(feed::run(subscriber, shared, receiver, received.clone()));
        let (signals, to_publish) = mpsc::unbounded_channel();
        handle.spawn(publish_signals(commands.clone(), to_publish));
        handle.spawn(presence::heartbeat(
            commands.clone(),
            node.clone(),
            watches.clone(),
            peers.clone(),
            options.presence_timeout,
        ));
        Ok(RedisStore {
            commands,
            runtime: Some(runtime),
            node,
            signals,
            peers,
            handle,
            watches,
            control,
            received,
            options,
            feed,
            nodes,
        })
    }

    /// How many models this node follows (holds) now.
    pub fn followed(&self) -> usize {
        self.watches.lock().map(|w| w.len()).unwrap_or(0)
    }

    /// How many published batches this node has received: only those of the models it holds.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Store for RedisStore {
    fn shared(&self) -> bool {
        true
    }

    fn load(&self, model: &ModelName, create: Option<NewModel>, done: LoadDone) {
        let commands = self.commands.clone();
        let timeout = self.options.timeout;
        let model = model.clone();
        let (node, peers) = (self.node.clone(), self.peers.clone());
        self.handle.spawn(async move {
            let load = async {
                if let Some(new) = &create {
                    let keys = Keys::new(&model);
                    let state = serde_json::to_string(&new.state)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    let mut record = scripts::CREATE.key(&keys.meta);
                    record
                        .key(&keys.log)
                        .key(&keys.snap)
                        .arg(&*new.epoch)
                        .arg(&state);
                    let created: i64 = retry::invoke(timeout, &commands, &record)
                        .await
                        .map_err(|e| StoreError::Io(e.to_string()))?;
                    if created == 1 {
                        return Ok(create.map(NewModel::into_stored));
                    }
                }
                let mut stored = load_model(&commands, &model, timeout).await?;
                if let Some(stored) = &mut stored {
                    // Who is connected on the other nodes, in the first joiner's presence
                    // snapshot; if this read fails, the feed reads it again once it follows
                    // the model.
                    match presence::read(&commands, &model, &node, &peers).await {
                        Ok(presences) => stored.presences = presences,
                        Err(error) => {
                            tracing::warn!(%model, %error, "redis: presences not read with the model")
                        }
                    }
                }
                Ok(stored)
            };
            let loaded = match tokio::time::timeout(timeout, load).await {
                Ok(loaded) => loaded,
                Err(_) => Err(StoreError::Io(format!(
                    "Redis did not answer within {} ms",
                    timeout.as_millis()
                ))),
            };
            done.complete(loaded);
        });
    }

    fn append(&self, batch: Batch, done: AppendDone) {
        let commands = self.commands.clone();
        let keep = self.options.keep_history;
        let retry_budget = self.options.retry_budget;
        self.handle.spawn(async move {
            let keys = Keys::new(&batch.model);
            let payload = feed::batch_payload(&batch);
            let checkpoint = batch
                .checkpoint
                .as_ref()
                .map(|c| serde_json::to_string(&*c.state).map(|s| (c.version.to_string(), s)));
            let (checkpoint_version, checkpoint_state) = match checkpoint {
                None => (String::new(), String::new()),
                Some(Ok(pair)) => pair,
                Some(Err(error)) => {
                    done.complete(Err(StoreError::Corrupt(error.to_string())));
                    return;
                }
            };
            let mut invocation = scripts::APPEND.key(&keys.meta);
            invocation
                .key(&keys.log)
                .key(&keys.snap)
                .key(&keys.clients)
                .arg(&*batch.epoch)
                .arg(batch.base_version)
                .arg(keep)
                .arg(&keys.channel)
                .arg(payload)
                .arg(checkpoint_version)
                .arg(checkpoint_state)
                .arg(purly::random_hex(16))
                .arg(batch.keys_json())
                .arg(commands.publish_command());
            for diff in &batch.diffs {
                invocation.arg(diff.content_json());
            }
            // A broken connection or a reply that did not come in time leaves the append's fate
            // unknown: it is tried again (on a new connection) with the same token until Redis
            // answers. A try that did go through is recognized by its token and answered `ok`,
            // so a batch is never applied twice.
            let reply: redis::RedisResult<redis::Value> =
                retry::invoke(retry_budget, &commands, &invocation).await;
            done.complete(match reply {
                Ok(reply) => appended(&reply),
                Err(error) => Err(StoreError::Io(error.to_string())),
            });
        });
    }

    fn remove(&self, model: &ModelName, done: RemoveDone) {
        let commands = self.commands.clone();
        let keys = Keys::new(model);
        let budget = self.options.retry_budget;
        self.handle.spawn(async move {
            let mut remove = scripts::REMOVE.key(&keys.meta);
            remove
                .key(&keys.log)
                .key(&keys.snap)
                .key(&keys.clients)
                .arg(&keys.channel)
                .arg(commands.publish_command());
            let removed: redis::RedisResult<i64> = retry::invoke(budget, &commands, &remove).await;
            done.complete(removed.map(drop).map_err(|e| StoreError::Io(e.to_string())));
        });
    }

    fn checkpoint_policy(&self) -> CheckpointPolicy {
        self.options.checkpoint
    }

    fn watch(&self, model: &ModelName, from: u64, feed: RemoteFeed) {
        // Until the feed has subscribed to the model's channel and read what was committed
        // since the load, the model waits: a client that joins here then misses no signal
        // (signals are not stored) and sees no older state than the log's.
        feed.suspect();
        let mut watches = self.watches.lock().unwrap_or_else(|p| p.into_inner());
        watches.insert(model.clone(), Watch { feed, last: from });
        drop(watches);
        let _ = self.control.send(Control::Follow(model.clone()));
    }

    fn relay(&self, model: &ModelName, after: u64, signal: &purly::ServerMessage) {
        let payload = feed::signal_payload(&self.node, after, signal);
        let channel = keys::channel(model.as_str());
        let outgoing = match signal.presence_of() {
            // A presence change is also recorded, for the nodes that load the model later.
            Some(id) => Outgoing::Presence {
                hash: Keys::new(model).presence,
                id,
                json: signal.content_json().to_owned(),
                channel,
                payload,
            },
            None => Outgoing::Signal { channel, payload },
        };
        // The publisher ends only with the store.
        let _ = self.signals.send(outgoing);
    }

    fn catch_up(&self, model: &ModelName) {
        let _ = self.control.send(Control::CatchUp(model.clone()));
    }

    fn node(&self) -> Option<String> {
        Some(self.node.clone())
    }

    fn ask(&self, node: &str, request: String, done: purly::AskDone) {
        self.nodes.ask(node, request, done);
    }

    fn answer(&self, handler: purly::NodeHandler) {
        self.nodes.answer(handler);
    }

    fn unwatch(&self, model: &ModelName, feed: &RemoteFeed) {
        let mut watches = self.watches.lock().unwrap_or_else(|p| p.into_inner());
        if watches.get(model).is_some_and(|w| w.feed.same(feed)) {
            watches.remove(model);
            drop(watches);
            let _ = self.control.send(Control::Unfollow(model.clone()));
        }
    }
}

/// What the publisher sends to the other nodes.
enum Outgoing {
    /// A signal, published on its model's channel.
    Signal { channel: String, payload: String },
    /// A presence change: recorded in the model's presence hash and published.
    Presence {
        hash: String,
        id: String,
        json: String,
        channel: String,
        payload: String,
    },
}

/// How long a model's presence hash outlives its last change.
const PRESENCE_HASH_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Publishes the signals and presence changes this node relays, one after the other, so that
/// every node receives them in the order they were released. At most once: one whose publish
/// fails is dropped (signals are not stored, PROTOCOL.md section 8; a presence is read again
/// from its hash when a node's feed reconnects).
async fn publish_signals(commands: Commands, mut signals: mpsc::UnboundedReceiver<Outgoing>) {
    while let Some(outgoing) = signals.recv().await {
        let (channel, published) = match outgoing {
            Outgoing::Signal { channel, payload } => {
                let published = commands.publish(&channel, payload).await;
                (channel, published)
            }
            Outgoing::Presence {
                hash,
                id,
                json,
                channel,
                payload,
            } => {
                let mut record = scripts::PRESENCE.key(&hash);
                record
                    .arg(&id)
                    .arg(&json)
                    .arg(&channel)
                    .arg(&payload)
                    .arg(commands.publish_command())
                    .arg(PRESENCE_HASH_TTL.as_millis() as u64);
                let mut connection = commands.clone();
                let published: redis::RedisResult<i64> = record.invoke_async(&mut connection).await;
                (channel, published)
            }
        };
        match published {
            Ok(_) => metrics::counter!(telemetry::SIGNALS_RELAYED).increment(1),
            Err(error) => {
                tracing::warn!(%channel, %error, "redis: a signal or presence was not relayed")
            }
        }
    }
}

/// A model as Redis holds it, or `None`.
async fn load_model(
    commands: &Commands,
    model: &ModelName,
    budget: Duration,
) -> Result<Option<StoredModel>, StoreError> {
    let keys = Keys::new(model);
    let mut load = scripts::LOAD.key(&keys.meta);
    load.key(&keys.log).key(&keys.snap).key(&keys.clients);
    let reply: redis::Value = retry::invoke(budget, commands, &load)
        .await
        .map_err(|e| StoreError::Io(e.to_string()))?;
    if reply == redis::Value::Nil {
        return Ok(None);
    }
    let parts = reply::array(&reply)?;
    let [epoch, _version, checkpoint_version, checkpoint, entries, clients] = parts else {
        return Err(StoreError::Corrupt("a model reads as six parts".into()));
    };
    let checkpoint: Map<String, Value> = serde_json::from_str(&reply::text(checkpoint)?)
        .map_err(|e| StoreError::Corrupt(format!("the checkpoint of {model}: {e}")))?;
    Ok(Some(StoredModel {
        epoch: reply::text(epoch)?,
        checkpoint_version: reply::number(checkpoint_version)?,
        checkpoint,
        diffs: reply::entries(entries)?,
        keys: reply::client_keys(clients)?,
        presences: Vec::new(),
    }))
}

/// The append script's reply.
fn appended(reply: &redis::Value) -> Result<Appended, StoreError> {
    let parts = reply::array(reply)?;
    match parts.first().map(reply::text).transpose()?.as_deref() {
        Some("ok") => Ok(Appended::Committed),
        Some("conflict") => {
            let [_, epoch, version, missed] = parts else {
                return Err(StoreError::Corrupt("a conflict reads as four parts".into()));
            };
            Ok(Appended::Conflict {
                version: reply::number(version)?,
                epoch: reply::text(epoch)?,
                missed: reply::entries(missed)?,
            })
        }
        Some("missing") => Err(StoreError::Corrupt(
            "the model is gone from Redis (removed, or its keys were lost)".into(),
        )),
        _ => Err(StoreError::Corrupt("unexpected reply to an append".into())),
    }
}

/// Every connection to Redis sends at once (`TCP_NODELAY`). redis-rs leaves Nagle's algorithm
/// on by default, which holds a pipelined command back until the previous one is acknowledged:
/// with delayed ACKs, a 40 ms stall now and then (the p99 of cross-node latency).
fn tcp_settings() -> redis::io::tcp::TcpSettings {
    redis::io::tcp::TcpSettings::default().set_nodelay(true)
}

/// The certificates of a `rediss://` connection that trusts the CA `ca` (PEM).
fn tls_certificates(ca: &[u8]) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(ca.to_vec()),
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.feed.abort();
        if let Some(runtime) = self.runtime.take() {
            // Allowed from any context, async included; appends in flight end unanswered,
            // which their models take as a failure.
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("followed", &self.followed())
            .finish_non_exhaustive()
    }
}
