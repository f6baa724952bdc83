//! The bounded history of recent diffs a model keeps for resume.

use std::collections::VecDeque;

use crate::protocol::ServerMessage;

/// Recent diffs in version order, bounded by count and by bytes.
pub(crate) struct History {
    diffs: VecDeque<ServerMessage>,
    bytes: usize,
    max_len: usize,
    max_bytes: usize,
}

impl History {
    pub(crate) fn new(max_len: usize, max_bytes: usize) -> Self {
        History {
            diffs: VecDeque::new(),
            bytes: 0,
            max_len,
            max_bytes,
        }
    }

    pub(crate) fn push(&mut self, diff: ServerMessage) {
        self.bytes += diff.queued_len();
        self.diffs.push_back(diff);
        while self.diffs.len() > self.max_len || self.bytes > self.max_bytes {
            match self.diffs.pop_front() {
                Some(old) => self.bytes -= old.queued_len(),
                None => break,
            }
        }
    }

    /// Forgets the diffs after version `version` (they were reverted).
    pub(crate) fn truncate_after(&mut self, version: u64) {
        while self
            .diffs
            .back()
            .and_then(ServerMessage::seq)
            .is_some_and(|seq| seq > version)
        {
            if let Some(diff) = self.diffs.pop_back() {
                self.bytes -= diff.queued_len();
            }
        }
    }

    /// The diffs after version `since`, if the history still holds all of them; `current` is
    /// the model's version now.
    pub(crate) fn since(&self, since: u64, current: u64) -> Option<Vec<ServerMessage>> {
        if since == current {
            return Some(Vec::new());
        }
        if since > current {
            return None;
        }
        let first = self.diffs.front()?.seq()?;
        if first > since + 1 {
            return None;
        }
        Some(
            self.diffs
                .iter()
                .filter(|d| d.seq().is_some_and(|seq| seq > since))
                .cloned()
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Header;
    use serde_json::Map;

    fn diff(seq: u64) -> ServerMessage {
        ServerMessage::update(
            Header {
                seq: Some(seq),
                ..Header::default()
            },
            Map::new(),
        )
    }

    #[test]
    fn replays_what_it_holds_and_refuses_the_rest() {
        let mut history = History::new(3, usize::MAX);
        for seq in 1..=5 {
            history.push(diff(seq));
        }
        let seqs = |v: Option<Vec<ServerMessage>>| {
            v.map(|v| v.iter().filter_map(|d| d.seq()).collect::<Vec<_>>())
        };
        assert_eq!(seqs(history.since(2, 5)), Some(vec![3, 4, 5]));
        assert_eq!(seqs(history.since(4, 5)), Some(vec![5]));
        assert_eq!(seqs(history.since(5, 5)), Some(vec![]));
        assert_eq!(seqs(history.since(1, 5)), None);
        assert_eq!(seqs(history.since(6, 5)), None);
    }

    #[test]
    fn bytes_bound_drops_the_oldest() {
        let one = diff(1).queued_len();
        let mut history = History::new(100, one * 2);
        for seq in 1..=4 {
            history.push(diff(seq));
        }
        assert_eq!(history.diffs.len(), 2);
        assert_eq!(history.since(2, 4).map(|v| v.len()), Some(2));
    }
}
