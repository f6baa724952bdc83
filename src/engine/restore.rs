//! Rebuilds a model from what the store holds: its checkpoint, the diffs after it, and the
//! recent diffs that serve resumes.

use serde_json::{Map, Value};

use super::live::Start;
use crate::error::StoreError;
use crate::merge::merge_diff;
use crate::protocol::{Header, ServerMessage};
use crate::store::StoredModel;

/// The live model's start from a stored model: the checkpoint with every later diff merged in,
/// and every stored diff (with its `seq` and `epoch`, no `origin`) as resume history.
pub(crate) fn restore(stored: StoredModel) -> Result<Start, StoreError> {
    let version = stored.version();
    let epoch: std::sync::Arc<str> = stored.epoch.into();
    let mut state = stored.checkpoint;
    let mut history = Vec::with_capacity(stored.diffs.len());
    let mut expected = stored.diffs.first().map(|d| d.version);
    if expected.is_some_and(|first| first > stored.checkpoint_version + 1) {
        return Err(StoreError::Corrupt(format!(
            "the stored diffs start at version {}, after the checkpoint at {} plus one",
            expected.unwrap_or_default(),
            stored.checkpoint_version
        )));
    }
    for diff in stored.diffs {
        if Some(diff.version) != expected {
            return Err(StoreError::Corrupt(format!(
                "the stored diffs skip from version {} to {}",
                expected.unwrap_or_default().saturating_sub(1),
                diff.version
            )));
        }
        expected = Some(diff.version + 1);
        let map: Map<String, Value> = serde_json::from_str(&diff.json).map_err(|e| {
            StoreError::Corrupt(format!("diff {} is not a JSON object: {e}", diff.version))
        })?;
        if diff.version > stored.checkpoint_version {
            merge_diff(&mut state, map.clone());
        }
        let header = Header {
            seq: Some(diff.version),
            epoch: Some(epoch.clone()),
            ..Header::default()
        };
        history.push(ServerMessage::update_text(header, &map));
    }
    Ok(Start {
        epoch,
        version,
        state,
        history,
        keys: stored.keys,
        presences: stored.presences,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoredDiff;
    use serde_json::json;

    fn diff(version: u64, json: &str) -> StoredDiff {
        StoredDiff::new(version, json)
    }

    #[test]
    fn replays_the_diffs_after_the_checkpoint_and_keeps_all_for_resume() {
        let stored = StoredModel {
            epoch: "e".into(),
            checkpoint_version: 2,
            checkpoint: json!({"a": 2}).as_object().cloned().unwrap_or_default(),
            diffs: vec![
                diff(1, r#"{"a":1}"#),
                diff(2, r#"{"a":2}"#),
                diff(3, r#"{"b":3}"#),
            ],
            keys: Vec::new(),
            presences: Vec::new(),
        };
        let start = restore(stored).unwrap();
        assert_eq!(start.version, 3);
        assert_eq!(Value::Object(start.state), json!({"a": 2, "b": 3}));
        let seqs: Vec<_> = start.history.iter().filter_map(|d| d.seq()).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert_eq!(
            start.history[2].json(),
            r#"{"header":{"type":"update","version":"0.1","seq":3,"epoch":"e"},"content":{"b":3}}"#
        );
    }

    #[test]
    fn gaps_and_unreadable_diffs_are_corrupt() {
        let gap = StoredModel {
            epoch: "e".into(),
            checkpoint_version: 0,
            checkpoint: Map::new(),
            diffs: vec![diff(1, "{}"), diff(3, "{}")],
            keys: Vec::new(),
            presences: Vec::new(),
        };
        assert!(matches!(restore(gap), Err(StoreError::Corrupt(_))));
        let late = StoredModel {
            epoch: "e".into(),
            checkpoint_version: 0,
            checkpoint: Map::new(),
            diffs: vec![diff(2, "{}")],
            keys: Vec::new(),
            presences: Vec::new(),
        };
        assert!(matches!(restore(late), Err(StoreError::Corrupt(_))));
        let unreadable = StoredModel {
            epoch: "e".into(),
            checkpoint_version: 0,
            checkpoint: Map::new(),
            diffs: vec![diff(1, "[1]")],
            keys: Vec::new(),
            presences: Vec::new(),
        };
        assert!(matches!(restore(unreadable), Err(StoreError::Corrupt(_))));
    }
}
