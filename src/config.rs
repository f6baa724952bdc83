//! Engine configuration: the limits of PROTOCOL.md section 5 and the resume history.

/// Limits on what one incoming frame may hold (PROTOCOL.md section 5).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// The largest frame accepted, in bytes (default 1 MiB). A WebSocket transport closes the
    /// connection with code 1009 above it; the engine answers `frame_too_large`.
    pub max_frame_bytes: usize,
    /// The deepest JSON nesting of a frame, counting the frame's own array as 1, a message
    /// object as 2 and its `content` object as 3 (default 64). Above it: `too_deep`.
    pub max_depth: usize,
    /// The most messages in one frame (default 1000). Above it: `too_many_messages`.
    pub max_messages: usize,
    /// The largest presence (PROTOCOL.md section 11), counted as its compact JSON text
    /// (default 4,096 bytes). Above it: `presence_too_large`.
    pub max_presence_bytes: usize,
    /// How many presence messages a connection may send per second (default 20, with a burst
    /// of as many): a frame holding one past it is refused whole with `rate_limited`.
    pub presence_per_second: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 1 << 20,
            max_depth: 64,
            max_messages: 1000,
            max_presence_bytes: 4096,
            presence_per_second: 20,
        }
    }
}

/// How an [`Engine`](crate::Engine) bounds its models and subscribers.
///
/// Every field has the default of PROTOCOL.md section 5.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Limits on incoming frames.
    pub limits: Limits,
    /// The largest serialized size of one model, in bytes (default 64 MiB). An update that
    /// would exceed it is refused with `model_too_large` and not applied.
    pub max_model_bytes: usize,
    /// The most models one engine holds (default 100,000). Joining a new model beyond it fails
    /// with [`JoinError::TooManyModels`](crate::JoinError::TooManyModels).
    pub max_models: usize,
    /// The bound on the data queued for one [`Outbox`](crate::Outbox), in bytes (default
    /// 8 MiB). The snapshot a subscriber starts from is never refused by this bound.
    pub max_queued_bytes: usize,
    /// How many recent diffs each model keeps for resume (default 1024).
    pub history_len: usize,
    /// How many bytes of recent diffs each model keeps for resume (default 4 MiB); the oldest
    /// are dropped first. A resume from before the kept history gets a snapshot.
    pub history_bytes: usize,
    /// How many bytes of recent diffs all the engine's models keep together (default 64 MiB):
    /// the resume histories' budget, whatever the number of models. Past it, a model that
    /// records a diff drops its own oldest ones first (a client resuming from before them gets
    /// a snapshot), so memory for histories stays bounded with 100,000 active models.
    pub history_budget_bytes: usize,
    /// How many bytes of messages a model may have waiting for fan-out (default 16 MiB).
    /// Publishers normally return at once and let one thread deliver; past this bound the
    /// model is over its bound: [`Session::ready`](crate::Session::ready) is pending until it
    /// drains (transports stop reading their clients meanwhile), so that a fan-out slower than
    /// its publishers slows them down instead of queueing without bound. A frame sent anyway
    /// past twice the bound is refused with `unavailable`. No thread waits.
    pub max_fanout_backlog_bytes: usize,
    /// With a shared store (several nodes), the most diffs one append carries (default 1,000);
    /// diffs waiting beyond two batches put the model over its bound (as above), so that a
    /// conflict re-runs a bounded number of frames. (With any store, diffs waiting beyond a
    /// quarter of [`max_queued_bytes`](Config::max_queued_bytes) do too: a store slower than
    /// its publishers paces them, and what two commits release fits a reader's queue.)
    pub max_batch_diffs: usize,
    /// The most client keys a model remembers (PROTOCOL.md section 9; default 10,000): past
    /// it, the least recently used key is forgotten (a resend under it is then judged anew).
    pub max_client_keys: usize,
    /// How long a model remembers a client key that sent nothing (default 24 hours).
    pub client_key_idle: std::time::Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            limits: Limits::default(),
            max_model_bytes: 64 << 20,
            max_models: 100_000,
            max_queued_bytes: 8 << 20,
            history_len: 1024,
            history_bytes: 4 << 20,
            history_budget_bytes: 64 << 20,
            max_fanout_backlog_bytes: 16 << 20,
            max_batch_diffs: 1000,
            max_client_keys: 10_000,
            client_key_idle: std::time::Duration::from_secs(24 * 60 * 60),
        }
    }
}
