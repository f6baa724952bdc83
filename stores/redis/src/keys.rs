//! Where a model lives in Redis: every key under one hash tag (`purly:{model}:...`), so that
//! Redis Cluster keeps a model's keys on one shard and the scripts may touch them together.

use purly::ModelName;

/// The keys and channel of one model.
pub(crate) struct Keys {
    /// Hash: `epoch`, `version`.
    pub(crate) meta: String,
    /// Stream: one entry per diff, id `<version>-0`, field `d` = the diff's JSON.
    pub(crate) log: String,
    /// Hash: `version`, `state` (the checkpoint).
    pub(crate) snap: String,
    /// Hash: client key → the engine's record of it (PROTOCOL.md section 9).
    pub(crate) clients: String,
    /// Hash: presence id → presence (JSON), of every node's connections (PROTOCOL.md
    /// section 11).
    pub(crate) presence: String,
    /// Pub/sub channel: every committed batch, and the removal of the model.
    pub(crate) channel: String,
}

impl Keys {
    pub(crate) fn new(model: &ModelName) -> Self {
        // Model names are `A-Z a-z 0-9 . _ ~ -`: never a brace that would break the tag.
        Keys {
            meta: format!("purly:{{{model}}}:meta"),
            log: format!("purly:{{{model}}}:log"),
            snap: format!("purly:{{{model}}}:snap"),
            clients: format!("purly:{{{model}}}:clients"),
            presence: format!("purly:{{{model}}}:presence"),
            channel: channel(model.as_str()),
        }
    }
}

/// The pub/sub channel of `model`.
pub(crate) fn channel(model: &str) -> String {
    format!("purly:{{{model}}}:ch")
}

/// The model a channel belongs to.
pub(crate) fn model_of_channel(channel: &str) -> Option<ModelName> {
    let name = channel.strip_prefix("purly:{")?.strip_suffix("}:ch")?;
    ModelName::new(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_hash_tag_and_channels_map_back() {
        let model = ModelName::new("a.b-c").unwrap_or_else(|_| unreachable!());
        let keys = Keys::new(&model);
        assert_eq!(keys.meta, "purly:{a.b-c}:meta");
        assert_eq!(keys.log, "purly:{a.b-c}:log");
        assert_eq!(keys.channel, "purly:{a.b-c}:ch");
        assert_eq!(model_of_channel(&keys.channel), Some(model));
        assert_eq!(model_of_channel("other"), None);
    }
}
