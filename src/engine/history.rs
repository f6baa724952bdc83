//! The bounded history of recent diffs a model keeps for resume, and the budget all of an
//! engine's histories share.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::protocol::ServerMessage;

/// The bytes of history all the models of one engine may keep together, and how many
/// models' histories share them.
#[derive(Debug)]
pub(crate) struct HistoryBudget {
    used: AtomicUsize,
    holders: AtomicUsize,
    limit: usize,
}

impl HistoryBudget {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(HistoryBudget {
            used: AtomicUsize::new(0),
            holders: AtomicUsize::new(0),
            limit,
        })
    }

    /// The bytes all histories hold now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn over(&self) -> bool {
        self.used() > self.limit
    }

    /// An equal share of the budget for each model in memory.
    fn fair_share(&self) -> usize {
        self.limit / self.holders.load(Ordering::Relaxed).max(1)
    }
}

/// Recent diffs in version order, bounded by count and by bytes, and by the engine's budget.
pub(crate) struct History {
    diffs: VecDeque<ServerMessage>,
    bytes: usize,
    max_len: usize,
    max_bytes: usize,
    budget: Arc<HistoryBudget>,
}

impl History {
    pub(crate) fn new(max_len: usize, max_bytes: usize, budget: Arc<HistoryBudget>) -> Self {
        budget.holders.fetch_add(1, Ordering::Relaxed);
        History {
            diffs: VecDeque::new(),
            bytes: 0,
            max_len,
            max_bytes,
            budget,
        }
    }

    /// Records a diff; drops the oldest while this history is over its own bounds or its
    /// share of the engine's budget, or all the engine's histories are over the budget (a
    /// strict bound: the model that records pays first).
    pub(crate) fn push(&mut self, diff: ServerMessage) {
        let len = diff.queued_len();
        self.bytes += len;
        self.budget.used.fetch_add(len, Ordering::Relaxed);
        self.diffs.push_back(diff);
        let max_bytes = self.max_bytes.min(self.budget.fair_share());
        while self.diffs.len() > self.max_len || self.bytes > max_bytes || self.budget.over() {
            if self.pop_front().is_none() {
                break;
            }
        }
    }

    /// Drops the oldest diffs past this history's share of the budget: what an idle model,
    /// which records nothing, gives back to the active ones (see `Engine::evict_idle`).
    pub(crate) fn trim_to_share(&mut self) {
        while self.bytes > self.budget.fair_share() {
            if self.pop_front().is_none() {
                break;
            }
        }
    }

    fn pop_front(&mut self) -> Option<ServerMessage> {
        let old = self.diffs.pop_front()?;
        self.forget(old.queued_len());
        Some(old)
    }

    fn forget(&mut self, len: usize) {
        self.bytes -= len;
        self.budget.used.fetch_sub(len, Ordering::Relaxed);
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
                self.forget(diff.queued_len());
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

impl Drop for History {
    /// A model leaving memory gives its share of the budget back.
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::Relaxed);
        self.budget.holders.fetch_sub(1, Ordering::Relaxed);
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
        let mut history = History::new(3, usize::MAX, HistoryBudget::new(usize::MAX));
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
        let mut history = History::new(100, one * 2, HistoryBudget::new(usize::MAX));
        for seq in 1..=4 {
            history.push(diff(seq));
        }
        assert_eq!(history.diffs.len(), 2);
        assert_eq!(history.since(2, 4).map(|v| v.len()), Some(2));
    }

    #[test]
    fn the_engine_budget_bounds_every_history_together() {
        let one = diff(1).queued_len();
        let budget = HistoryBudget::new(one * 5);
        // The first model alone: the whole budget is its share.
        let mut first = History::new(100, usize::MAX, budget.clone());
        for seq in 1..=4 {
            first.push(diff(seq));
        }
        let mut second = History::new(100, usize::MAX, budget.clone());
        // The second model's diffs take the budget over: it drops its own oldest first.
        for seq in 1..=4 {
            second.push(diff(seq));
            assert!(budget.used() <= one * 5);
        }
        assert_eq!(first.diffs.len(), 4);
        assert_eq!(second.diffs.len(), 1);
        assert_eq!(second.since(3, 4).map(|v| v.len()), Some(1));
        assert!(second.since(2, 4).is_none(), "older resumes get a snapshot");
        // The idle first model gives back what is over its share (half the budget).
        first.trim_to_share();
        assert_eq!(first.diffs.len(), 2);
        second.push(diff(5));
        assert_eq!(
            second.diffs.len(),
            2,
            "the active one may use the share now free"
        );
        drop(first);
        assert_eq!(budget.used(), 2 * one);
        second.truncate_after(3);
        assert_eq!(budget.used(), 0);
        drop(second);
        assert_eq!(budget.holders.load(Ordering::Relaxed), 0);
    }
}
