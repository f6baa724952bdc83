//! With a shared store, the frames a model applied that are not durable yet: what they
//! changed (to revert it) and what they were (to run them again on top of another writer's
//! commits, the model's `check` included).

use std::collections::VecDeque;

use serde_json::{Map, Value};

use super::transaction::{Sender, Write};
use super::written::Written;
use crate::merge::Change;

/// One frame applied but not yet durable.
pub(crate) struct Replay {
    /// Tags the frame's queued commands.
    pub(crate) id: u64,
    pub(crate) from: Sender,
    /// The frame, or the server's modification, to run again.
    pub(crate) write: Write,
    /// A server-side write's promise, answered once a run of it is durable.
    pub(crate) written: Option<Written>,
    /// What it changed, in order.
    pub(crate) changes: Vec<Change>,
    /// The model's version after it.
    pub(crate) last: u64,
}

/// The frames not yet durable, oldest first.
#[derive(Default)]
pub(crate) struct Replays {
    next_id: u64,
    frames: VecDeque<Replay>,
}

impl Replays {
    /// An id for the next frame's commands.
    pub(crate) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub(crate) fn push(&mut self, replay: Replay) {
        self.frames.push_back(replay);
    }

    /// Forgets the frames the store now holds.
    pub(crate) fn settle(&mut self, durable: u64) {
        while self.frames.front().is_some_and(|r| r.last <= durable) {
            self.frames.pop_front();
        }
    }

    /// Reverts every frame's changes, newest first, and hands the frames back (oldest first)
    /// with the size change to undo.
    pub(crate) fn revert_all(&mut self, state: &mut Map<String, Value>) -> (Vec<Replay>, i64) {
        let mut frames: Vec<Replay> = self.frames.drain(..).collect();
        let mut size_delta = 0;
        for frame in frames.iter_mut().rev() {
            for change in frame.changes.drain(..).rev() {
                size_delta += change.size_delta();
                change.revert(state);
            }
        }
        (frames, size_delta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merge::merge_diff;
    use crate::protocol::{ClientId, Message, Mode};
    use serde_json::json;

    fn obj(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn reverts_newest_first_and_settles_what_is_durable() {
        let from = Sender {
            id: ClientId(1),
            mode: Mode::Stream,
            key: None,
        };
        let mut state = obj(json!({"a": 1}));
        let mut replays = Replays::default();
        for (last, update) in [
            (1, json!({"a": 2, "b": 1})),
            (2, json!({"a": 3, "b": null})),
        ] {
            let change = merge_diff(&mut state, obj(update.clone()));
            let id = replays.next_id();
            replays.push(Replay {
                id,
                from: from.clone(),
                write: Write::Messages(vec![Message::update(obj(update))]),
                written: None,
                changes: vec![change],
                last,
            });
        }
        assert_eq!(Value::Object(state.clone()), json!({"a": 3}));
        // Version 1 is durable: only the second frame can still be reverted.
        replays.settle(1);
        let (frames, size_delta) = replays.revert_all(&mut state);
        assert_eq!(Value::Object(state), json!({"a": 2, "b": 1}));
        assert_eq!(frames.iter().map(|f| f.last).collect::<Vec<_>>(), vec![2]);
        assert!(frames[0].changes.is_empty(), "reverted changes are spent");
        assert_eq!(
            size_delta,
            r#"{"a":3}"#.len() as i64 - r#"{"a":2,"b":1}"#.len() as i64
        );
        assert!(replays.frames.is_empty());
    }
}
