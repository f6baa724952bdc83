//! A model's state at one version, serialized at most once and shared by every join, resync
//! and state read at that version, outside the model's lock.

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Map, Value};

use crate::lock::lock;
use crate::protocol::{Header, ServerMessage};

/// The whole state of a model at one version, as a snapshot message.
///
/// The engine takes it under the model's lock by sharing the state (no copy); the JSON text is
/// written by whoever needs it first, outside that lock, and then shared.
pub struct Snapshot {
    version: u64,
    epoch: Arc<str>,
    state: Mutex<Option<Arc<Map<String, Value>>>>,
    message: OnceLock<ServerMessage>,
}

impl Snapshot {
    pub(crate) fn new(version: u64, epoch: Arc<str>, state: Arc<Map<String, Value>>) -> Arc<Self> {
        Arc::new(Snapshot {
            version,
            epoch,
            state: Mutex::new(Some(state)),
            message: OnceLock::new(),
        })
    }

    /// The version the snapshot holds.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The epoch of that version.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The snapshot message (`header.snapshot = true`, `seq` = [`version`](Snapshot::version)),
    /// serialized on first use and shared after that.
    pub fn message(&self) -> &ServerMessage {
        self.message.get_or_init(|| {
            // Let go of the shared state once serialized, so the model's next change does not
            // have to copy it.
            let state = lock(&self.state).take().unwrap_or_default();
            let header = Header {
                snapshot: true,
                seq: Some(self.version),
                epoch: Some(self.epoch.clone()),
                ..Header::default()
            };
            // Serialized from the shared state, never copied, and not kept as a map.
            ServerMessage::update_text(header, &state)
        })
    }

    /// The state's JSON text.
    pub fn json(&self) -> &str {
        self.message().content_json()
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("version", &self.version)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}
