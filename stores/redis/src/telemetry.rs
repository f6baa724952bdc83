//! The Redis store's metrics, through the [`metrics`](https://docs.rs/metrics) facade (the engine's are in
//! [`purly::telemetry`]).

/// Published batches that did not follow the last one handed over: the gap was read from the
/// model's stream (counter).
pub const FEED_GAPS: &str = "purly_redis_feed_gaps_total";

/// Times the feed's pub/sub connection was lost and made again (counter).
pub const FEED_RECONNECTS: &str = "purly_redis_feed_reconnects_total";

/// Commands tried again after a broken connection or a timeout (counter).
pub const RETRIES: &str = "purly_redis_retries_total";

/// Nodes whose heartbeat stopped, so that their presences were removed here (counter).
pub const NODES_GONE: &str = "purly_redis_nodes_gone_total";

/// Signals relayed to the other nodes (counter).
pub const SIGNALS_RELAYED: &str = "purly_redis_signals_relayed_total";

/// Times a Redis Cluster connection that stopped answering was made again from the seed
/// nodes (counter).
pub const CLUSTER_RECONNECTS: &str = "purly_redis_cluster_reconnects_total";
