//! The engine's metrics, through the [`metrics`](https://docs.rs/metrics) facade: the embedding service installs the
//! recorder (exporter) of its choice, and the engine's handles are registered with it when
//! the engine is built, so install the recorder first. Every name starts with `purly_`; no
//! label names a model or a client, so the number of series stays fixed.

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};

use crate::error::ErrorCode;
use crate::protocol::Mode;

/// Models held in memory (gauge).
pub const MODELS_IN_MEMORY: &str = "purly_models_in_memory";
/// Sessions attached to a model, by `mode` (`stream`, `compat`) (gauge).
pub const SESSIONS: &str = "purly_sessions";
/// Frames received from sessions, accepted or not (counter).
pub const FRAMES_RECEIVED: &str = "purly_frames_received_total";
/// Messages of accepted frames, by `type` (`update`, `signal`) (counter).
pub const MESSAGES_RECEIVED: &str = "purly_messages_received_total";
/// Frames refused, by error `code` (counter).
pub const REFUSALS: &str = "purly_refusals_total";
/// Fresh snapshots sent to subscribers that fell behind (counter).
pub const RESYNCS: &str = "purly_resyncs_total";
/// Counter: updates a client key resent that were answered again instead of applied.
pub const DUPLICATES: &str = "purly_duplicates_total";
/// Bytes queued for fan-out in all models, not yet handed to subscribers (gauge).
pub const FANOUT_BACKLOG: &str = "purly_fanout_backlog_bytes";
/// Time from a change being applied to its diff being handed to the subscribers, including
/// the wait for the store (histogram, seconds; sampled: one queued command in 16).
pub const PUBLISH_TO_ENQUEUE: &str = "purly_publish_to_enqueue_seconds";
/// Diffs per batch written to the store (histogram).
pub const STORE_BATCH_DIFFS: &str = "purly_store_batch_diffs";
/// Time the store took to answer a batch (histogram, seconds).
pub const STORE_BATCH_SECONDS: &str = "purly_store_batch_seconds";
/// Batches the shared store refused because another node committed first (counter).
pub const STORE_CONFLICTS: &str = "purly_store_conflicts_total";
/// Batches sent again after a conflict, rebased on the other node's commits (counter).
pub const STORE_RETRIES: &str = "purly_store_retries_total";
/// Store failures that closed a model (counter).
pub const STORE_FAILURES: &str = "purly_store_failures_total";

/// The handles of one engine, registered once.
pub(crate) struct EngineMetrics {
    pub(crate) models_in_memory: Gauge,
    sessions: [Gauge; 2],
    pub(crate) frames_received: Counter,
    pub(crate) updates_received: Counter,
    pub(crate) signals_received: Counter,
    refusals: Vec<Counter>,
    pub(crate) resyncs: Counter,
    pub(crate) duplicates: Counter,
    pub(crate) fanout_backlog: Gauge,
    pub(crate) publish_to_enqueue: Histogram,
    pub(crate) store_batch_diffs: Histogram,
    pub(crate) store_batch_seconds: Histogram,
    pub(crate) store_conflicts: Counter,
    pub(crate) store_retries: Counter,
    pub(crate) store_failures: Counter,
}

impl EngineMetrics {
    /// Describes the metrics to the installed recorder and registers their handles.
    pub(crate) fn register() -> Self {
        describe();
        EngineMetrics {
            models_in_memory: metrics::gauge!(MODELS_IN_MEMORY),
            sessions: [
                metrics::gauge!(SESSIONS, "mode" => "stream"),
                metrics::gauge!(SESSIONS, "mode" => "compat"),
            ],
            frames_received: metrics::counter!(FRAMES_RECEIVED),
            updates_received: metrics::counter!(MESSAGES_RECEIVED, "type" => "update"),
            signals_received: metrics::counter!(MESSAGES_RECEIVED, "type" => "signal"),
            refusals: ErrorCode::ALL
                .iter()
                .map(|code| metrics::counter!(REFUSALS, "code" => code.as_str()))
                .collect(),
            resyncs: metrics::counter!(RESYNCS),
            duplicates: metrics::counter!(DUPLICATES),
            fanout_backlog: metrics::gauge!(FANOUT_BACKLOG),
            publish_to_enqueue: metrics::histogram!(PUBLISH_TO_ENQUEUE),
            store_batch_diffs: metrics::histogram!(STORE_BATCH_DIFFS),
            store_batch_seconds: metrics::histogram!(STORE_BATCH_SECONDS),
            store_conflicts: metrics::counter!(STORE_CONFLICTS),
            store_retries: metrics::counter!(STORE_RETRIES),
            store_failures: metrics::counter!(STORE_FAILURES),
        }
    }

    /// The gauge of sessions in `mode`.
    pub(crate) fn sessions(&self, mode: Mode) -> &Gauge {
        match mode {
            Mode::Stream => &self.sessions[0],
            Mode::Compat => &self.sessions[1],
        }
    }

    /// Counts a refusal.
    pub(crate) fn refused(&self, code: ErrorCode) {
        if let Some(counter) = self.refusals.get(code.index()) {
            counter.increment(1);
        }
    }

    /// Records a time in seconds.
    pub(crate) fn seconds(histogram: &Histogram, elapsed: Duration) {
        histogram.record(elapsed.as_secs_f64());
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(MODELS_IN_MEMORY, "Models held in memory.");
    describe_gauge!(SESSIONS, "Sessions attached to a model, by mode.");
    describe_counter!(FRAMES_RECEIVED, "Frames received from sessions.");
    describe_counter!(
        DUPLICATES,
        "Resent updates of a client key answered again instead of applied."
    );
    describe_counter!(MESSAGES_RECEIVED, "Messages of accepted frames, by type.");
    describe_counter!(REFUSALS, "Frames refused, by error code.");
    describe_counter!(
        RESYNCS,
        "Fresh snapshots sent to subscribers that fell behind."
    );
    describe_gauge!(
        FANOUT_BACKLOG,
        Unit::Bytes,
        "Bytes queued for fan-out, not yet handed to subscribers."
    );
    describe_histogram!(
        PUBLISH_TO_ENQUEUE,
        Unit::Seconds,
        "From a change applied to its diff handed to the subscribers."
    );
    describe_histogram!(STORE_BATCH_DIFFS, "Diffs per batch written to the store.");
    describe_histogram!(
        STORE_BATCH_SECONDS,
        Unit::Seconds,
        "Time the store took to answer a batch."
    );
    describe_counter!(
        STORE_CONFLICTS,
        "Batches refused because another node committed first."
    );
    describe_counter!(STORE_RETRIES, "Batches sent again after a conflict.");
    describe_counter!(STORE_FAILURES, "Store failures that closed a model.");
}
