//! [`SqliteOptions`]: how durable each commit is, and how the log is checkpointed and trimmed.

use purly::CheckpointPolicy;

/// What a committed change survives (SQLite's `synchronous` setting, in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Durability {
    /// `synchronous=NORMAL`: a change survives the purly process crashing or being killed
    /// (`kill -9`); the last commits before an operating-system crash or a power loss may be
    /// lost (the database stays consistent). No fsync per commit: the default.
    #[default]
    Process,
    /// `synchronous=FULL`: a change also survives an operating-system crash or a power loss.
    /// One fsync per commit (about 0.3 ms here), shared by every batch of the group.
    Os,
}

impl Durability {
    pub(crate) fn pragma(self) -> &'static str {
        match self {
            Durability::Process => "NORMAL",
            Durability::Os => "FULL",
        }
    }
}

/// How a [`SqliteStore`](crate::SqliteStore) writes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqliteOptions {
    /// What a committed change survives (default [`Durability::Process`]).
    pub durability: Durability,
    /// When a model's whole state is written as a checkpoint (default: every 1,000 diffs or
    /// 8 MiB of diffs). Loading a model reads its checkpoint and the diffs after it.
    pub checkpoint: CheckpointPolicy,
    /// How many diffs before the latest checkpoint are kept for resumes after a restart
    /// (default 1,024, the engine's default resume history).
    pub keep_history: u64,
    /// The most batches one transaction (one commit, one fsync) carries (default 512).
    pub max_group: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            durability: Durability::default(),
            checkpoint: CheckpointPolicy::default(),
            keep_history: 1024,
            max_group: 512,
        }
    }
}

impl SqliteOptions {
    /// The defaults with another durability.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }
}
