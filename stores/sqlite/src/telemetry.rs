//! The SQLite store's metrics, through the [`metrics`](https://docs.rs/metrics) facade (the engine's are in
//! [`purly::telemetry`]).

/// Time of one transaction, its sync to disk included (histogram, seconds).
pub const TRANSACTION_SECONDS: &str = "purly_sqlite_transaction_seconds";

/// Batches and removals written in one transaction: the group commit (histogram).
pub const GROUP_OPS: &str = "purly_sqlite_group_ops";
