//! The store's two connections, to one Redis or to a Redis Cluster: [`Commands`] (scripts and
//! publishes, each routed to the model's shard) and [`Subscriber`] (the channels of the models
//! this node holds, and its own). On a cluster, channels are sharded (`SSUBSCRIBE`,
//! `SPUBLISH`, Redis 7): a publish goes to the subscribers of its shard only, not through
//! every shard as a classic cluster `PUBLISH` does.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, PubSubSink, PubSubStream};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, PushInfo, PushKind, RedisFuture, RedisResult, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Where the store sends its commands: one Redis, or a Redis Cluster (commands routed by
/// their keys' slot, redirections followed by redis-rs).
#[derive(Clone)]
pub(crate) enum Commands {
    Single(ConnectionManager),
    Cluster(Arc<ClusterLink>),
}

impl Commands {
    /// The publish command of this deployment: `SPUBLISH` on a cluster (sharded channels).
    pub(crate) fn publish_command(&self) -> &'static str {
        match self {
            Commands::Single(_) => "PUBLISH",
            Commands::Cluster(_) => "SPUBLISH",
        }
    }

    /// Publishes `payload` on `channel`: how many subscribers got it.
    pub(crate) async fn publish(&self, channel: &str, payload: String) -> redis::RedisResult<i64> {
        redis::cmd(self.publish_command())
            .arg(channel)
            .arg(payload)
            .query_async(&mut self.clone())
            .await
    }
}

impl ConnectionLike for Commands {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Commands::Single(connection) => connection.req_packed_command(cmd),
            Commands::Cluster(link) => Box::pin(link.run(move |mut connection| async move {
                connection.req_packed_command(cmd).await
            })),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Commands::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Commands::Cluster(link) => Box::pin(link.run(move |mut connection| async move {
                connection
                    .req_packed_commands(pipeline, offset, count)
                    .await
            })),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Commands::Single(connection) => connection.get_db(),
            Commands::Cluster(_) => 0,
        }
    }
}

/// The feed's subscriptions.
pub(crate) enum Subscriber {
    /// One Redis: a RESP2 pub/sub connection, made again (by [`Subscriber::reconnect`]) after
    /// it broke.
    Single {
        client: Box<redis::Client>,
        connection: Option<Box<(PubSubSink, PubSubStream)>>,
    },
    /// A Redis Cluster: one RESP3 connection per shard, kept and re-made by redis-rs; a
    /// shard's connection that broke shows as a [`PushKind::Disconnection`].
    Cluster {
        link: Arc<ClusterLink>,
        /// The link's generation the subscriptions were made on.
        generation: u64,
        pushes: mpsc::UnboundedReceiver<PushInfo>,
    },
}

/// What [`Subscriber::next`] received.
pub(crate) enum Received {
    /// A message published on a channel: `(channel, payload)`.
    Message(String, String),
    /// The connection (or one shard's) broke: messages may have been lost.
    Lost,
}

impl Subscriber {
    /// The subscriber of a cluster: its connection, whose pushes come to the returned
    /// subscriber.
    pub(crate) async fn cluster(
        builder: ClusterClientBuilder,
        patience: Duration,
    ) -> RedisResult<Subscriber> {
        let (sender, pushes) = mpsc::unbounded_channel();
        let builder = builder
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(sender);
        let link = ClusterLink::connect(builder, patience).await?;
        Ok(Subscriber::Cluster {
            generation: link.generation(),
            link,
            pushes,
        })
    }

    /// Makes the connection again after [`Received::Lost`] (a cluster's is re-made by
    /// redis-rs: nothing to do).
    pub(crate) async fn reconnect(&mut self) -> redis::RedisResult<()> {
        if let Subscriber::Single { client, connection } = self {
            *connection = None;
            *connection = Some(Box::new(client.get_async_pubsub().await?.split()));
        }
        Ok(())
    }

    /// Subscribes to `channel` (again: harmless when subscribed), confirmed by Redis.
    pub(crate) async fn subscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        self.subscription(channel, true).await
    }

    /// Unsubscribes from `channel`.
    pub(crate) async fn unsubscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        self.subscription(channel, false).await
    }

    /// `(S)SUBSCRIBE channel` if `on`, else `(S)UNSUBSCRIBE channel`.
    async fn subscription(&mut self, channel: &str, on: bool) -> redis::RedisResult<()> {
        match self {
            Subscriber::Single { connection, .. } => match (connection, on) {
                (Some(pair), true) => pair.0.subscribe(channel).await,
                (Some(pair), false) => pair.0.unsubscribe(channel).await,
                (None, _) => Err(not_connected()),
            },
            Subscriber::Cluster { link, .. } => {
                let channel = channel.to_owned();
                link.run(|mut connection| async move {
                    match on {
                        true => connection.ssubscribe(channel).await,
                        false => connection.sunsubscribe(channel).await,
                    }
                })
                .await
            }
        }
    }

    /// The next message, or [`Received::Lost`].
    pub(crate) async fn next(&mut self) -> Received {
        use futures_util::StreamExt;
        match self {
            Subscriber::Single { connection, .. } => {
                let Some(pair) = connection else {
                    return Received::Lost;
                };
                while let Some(message) = pair.1.next().await {
                    if let Ok(payload) = message.get_payload::<String>() {
                        return Received::Message(message.get_channel_name().to_owned(), payload);
                    }
                }
                Received::Lost
            }
            Subscriber::Cluster {
                link,
                generation,
                pushes,
            } => {
                // Made again: the subscriptions were on the connection dropped.
                if link.generation() != *generation {
                    *generation = link.generation();
                    return Received::Lost;
                }
                while let Some(push) = pushes.recv().await {
                    match (push.kind, &push.data[..]) {
                        (PushKind::Message | PushKind::SMessage, [channel, payload]) => {
                            if let (Some(channel), Some(payload)) = (text(channel), text(payload)) {
                                return Received::Message(channel, payload);
                            }
                        }
                        (PushKind::Disconnection, _) => return Received::Lost,
                        // Subscription confirmations (redis-rs resubscribes by itself too).
                        _ => {}
                    }
                }
                // Only when the cluster connection itself is gone, which the subscriber holds.
                tracing::error!("redis feed: the cluster connection ended");
                std::future::pending().await
            }
        }
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    }
}

fn not_connected() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "the feed is not connected"))
}

/// A Redis Cluster connection, made again from its client (the seed nodes) when it stopped
/// answering for longer than its patience. redis-rs 1.8's cluster connection can wedge for
/// good when every master went away at once (its map of connections ends empty, and it never
/// goes back to the seeds): a connection whose requests have all failed for that long is
/// replaced.
pub(crate) struct ClusterLink {
    client: ClusterClient,
    current: Mutex<Current>,
    /// One replacement at a time.
    replacing: tokio::sync::Mutex<()>,
    patience: Duration,
}

struct Current {
    generation: u64,
    connection: ClusterConnection,
    /// When a request last succeeded (or the connection was made).
    answered: Instant,
}

impl ClusterLink {
    /// Connects through `builder`'s seeds; every request answers within `patience` (an error
    /// past it).
    pub(crate) async fn connect(
        builder: ClusterClientBuilder,
        patience: Duration,
    ) -> RedisResult<Arc<ClusterLink>> {
        let client = builder.overall_response_timeout(Some(patience)).build()?;
        let connection = client.get_async_connection().await?;
        Ok(Arc::new(ClusterLink {
            client,
            current: Mutex::new(Current {
                generation: 0,
                connection,
                answered: Instant::now(),
            }),
            replacing: tokio::sync::Mutex::new(()),
            patience,
        }))
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many times the connection was made again.
    pub(crate) fn generation(&self) -> u64 {
        self.current().generation
    }

    /// Runs `request` on the current connection; a failure after `patience` without an
    /// answer replaces the connection (the request's error is returned all the same).
    pub(crate) async fn run<T, F, Fut>(&self, request: F) -> RedisResult<T>
    where
        F: FnOnce(ClusterConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let (generation, connection) = {
            let current = self.current();
            (current.generation, current.connection.clone())
        };
        let result = request(connection).await;
        match &result {
            Ok(_) => self.current().answered = Instant::now(),
            Err(error) if crate::retry::worth_retrying(error) => {
                let silent = self.current().answered.elapsed() > self.patience;
                if silent {
                    self.replace(generation).await;
                }
            }
            Err(_) => {}
        }
        result
    }

    async fn replace(&self, generation: u64) {
        let _one = self.replacing.lock().await;
        if self.current().generation != generation {
            return;
        }
        match self.client.get_async_connection().await {
            Ok(connection) => {
                tracing::warn!("redis cluster: the connection stopped answering; made it again");
                metrics::counter!(crate::telemetry::CLUSTER_RECONNECTS).increment(1);
                let mut current = self.current();
                current.generation += 1;
                current.connection = connection;
                current.answered = Instant::now();
            }
            Err(error) => tracing::warn!(%error, "redis cluster: cannot connect again"),
        }
    }
}
