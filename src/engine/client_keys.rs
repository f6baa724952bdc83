//! What a model remembers of its client keys (PROTOCOL.md section 9): per key, the highest
//! update id decided and the answers of the last 64, so that a resend after a reconnect is
//! answered again instead of applied again.
//!
//! Each decision rides to the store with the batch that reaches the version it was made at
//! (an applied update: the version it made), so the store writes a key's record in the same
//! commit as the update it covers. With a shared store, a batch's records travel with its last
//! diff to the other nodes ([`StoredDiff::keys`](crate::StoredDiff::keys)), and the decisions
//! of frames that are reverted to run again are forgotten with them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::error::ErrorCode;
use crate::json_text::write_integer;
use crate::store::{KeyWrite, StoredKey};

/// How many answers a key keeps for resends.
pub(crate) const ANSWERS_KEPT: usize = 64;

/// How often (in decisions) idle keys are looked for.
const SWEEP_EVERY: u64 = 1024;

/// The answer an update got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Applied (the version it made) or found to change nothing (the version it was checked
    /// against).
    Seq(u64),
    /// Refused by a decision about the update itself.
    Refused(ErrorCode),
}

/// How a keyed update is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Judged {
    /// Above the key's highest decided id: applied (or refused) now.
    New,
    /// Decided before: answered again, with the first answer if still kept.
    Duplicate(Option<Answer>),
}

#[derive(Debug)]
struct Decided {
    id: u64,
    answer: Answer,
    /// The version the decision rides to the store with.
    at: u64,
}

#[derive(Debug, Default)]
struct KeyRecord {
    /// The highest id decided before the answers kept.
    floor: Option<u64>,
    /// When the key last sent an update (seconds since the Unix epoch).
    used: u64,
    /// The engine's count of decisions at its last one: orders keys used in the same second.
    touched: u64,
    /// The latest answers, ids increasing.
    recent: VecDeque<Decided>,
}

impl KeyRecord {
    fn highest(&self) -> Option<u64> {
        self.recent.back().map(|d| d.id).max(self.floor)
    }

    /// The record as the store keeps it, with the decisions made up to version `upto`:
    /// `{"h": floor, "t": last used, "r": answers}`. Answers are `[id, "code"]` for a refusal
    /// and `[id, seq, n]` for `n` updates whose ids and seqs both rise by one (a client whose
    /// updates follow each other, the usual case, is one short run): a record stays a few
    /// dozen bytes, written with every commit of its key.
    fn to_json(&self, upto: u64) -> String {
        let mut out = String::with_capacity(64);
        out.push_str(r#"{"h":"#);
        match self.floor {
            Some(floor) => write_integer(floor, &mut out),
            None => out.push_str("null"),
        }
        out.push_str(r#","t":"#);
        write_integer(self.used, &mut out);
        out.push_str(r#","r":["#);
        let mut entries = AnswerRuns::default();
        for decided in self.recent.iter().filter(|d| d.at <= upto) {
            entries.push(decided, &mut out);
        }
        entries.finish(&mut out);
        out.push_str("]}");
        out
    }

    /// Reads a record the store kept (every decision in it is durable: version 0).
    fn from_json(text: &str) -> Option<Self> {
        let value: Value = serde_json::from_str(text).ok()?;
        let floor = match value.get("h")? {
            Value::Null => None,
            floor => Some(floor.as_u64()?),
        };
        let used = value.get("t")?.as_u64()?;
        let mut recent = VecDeque::new();
        for entry in value.get("r")?.as_array()? {
            let id = entry.get(0)?.as_u64()?;
            match entry.get(1)? {
                Value::Number(seq) => {
                    let (seq, n) = (seq.as_u64()?, entry.get(2)?.as_u64()?);
                    for k in 0..n.min(2 * ANSWERS_KEPT as u64) {
                        let answer = Answer::Seq(seq + k);
                        recent.push_back(Decided {
                            id: id + k,
                            answer,
                            at: 0,
                        });
                    }
                }
                Value::String(code) => {
                    let answer = Answer::Refused(ErrorCode::from_wire(code)?);
                    recent.push_back(Decided { id, answer, at: 0 });
                }
                _ => return None,
            }
        }
        Some(KeyRecord {
            floor,
            used,
            touched: 0,
            recent,
        })
    }

    /// Records a decision above the highest (else returns `false`: decided already), at
    /// `now`, the engine's `touched`-th decision, keeping the answers up to `trim_to`.
    fn add(&mut self, decided: Decided, now: u64, touched: u64, trim_to: u64) -> bool {
        if self.highest().is_some_and(|highest| decided.id <= highest) {
            return false;
        }
        self.recent.push_back(decided);
        self.used = now;
        self.touched = touched;
        self.trim(trim_to);
        true
    }

    /// Keeps at most [`ANSWERS_KEPT`] answers, dropping only durable ones.
    fn trim(&mut self, durable: u64) {
        while self.recent.len() > ANSWERS_KEPT
            && self.recent.front().is_some_and(|d| d.at <= durable)
        {
            if let Some(dropped) = self.recent.pop_front() {
                self.floor = self.floor.max(Some(dropped.id));
            }
        }
    }
}

/// Writes a record's answers, joining runs of applied updates whose ids and seqs both rise by
/// one into `[id, seq, n]`.
#[derive(Default)]
struct AnswerRuns {
    written: bool,
    run: Option<(u64, u64, u64)>,
}

impl AnswerRuns {
    fn push(&mut self, decided: &Decided, out: &mut String) {
        match (decided.answer, &mut self.run) {
            (Answer::Seq(seq), Some((id, start, n)))
                if *id + *n == decided.id && *start + *n == seq =>
            {
                *n += 1;
            }
            (Answer::Seq(seq), _) => {
                self.finish(out);
                self.run = Some((decided.id, seq, 1));
            }
            (Answer::Refused(code), _) => {
                self.finish(out);
                self.separate(out);
                out.push('[');
                write_integer(decided.id, out);
                out.push_str(",\"");
                out.push_str(code.as_str());
                out.push_str("\"]");
            }
        }
    }

    /// Writes the run in progress, if any.
    fn finish(&mut self, out: &mut String) {
        if let Some((id, seq, n)) = self.run.take() {
            self.separate(out);
            out.push('[');
            write_integer(id, out);
            out.push(',');
            write_integer(seq, out);
            out.push(',');
            write_integer(n, out);
            out.push(']');
        }
    }

    fn separate(&mut self, out: &mut String) {
        if std::mem::replace(&mut self.written, true) {
            out.push(',');
        }
    }
}

/// A model's client keys.
#[derive(Debug)]
pub(crate) struct ClientKeys {
    keys: HashMap<Arc<str>, KeyRecord>,
    max_keys: usize,
    idle: Duration,
    /// Decisions not handed to the store yet: the version each rides with, and its key.
    unsent: VecDeque<(u64, Arc<str>)>,
    /// Decisions the store does not hold yet (unsent or in flight), in the same form.
    pending: VecDeque<(u64, Arc<str>)>,
    /// Keys forgotten since the last batch, for the store to forget too.
    forgotten: Vec<Arc<str>>,
    decisions: u64,
    /// Whether the store keeps the records (not a store that confirms at once, which keeps
    /// nothing: then nothing waits for a batch).
    stored: bool,
}

impl ClientKeys {
    pub(crate) fn new(max_keys: usize, idle: Duration, stored: bool) -> Self {
        ClientKeys {
            keys: HashMap::new(),
            max_keys: max_keys.max(1),
            idle,
            unsent: VecDeque::new(),
            pending: VecDeque::new(),
            forgotten: Vec::new(),
            decisions: 0,
            stored,
        }
    }

    /// The keys a store kept; unreadable and idle ones are forgotten (in the store too, with
    /// the next batch).
    pub(crate) fn load(&mut self, stored: Vec<StoredKey>) {
        let now = now();
        for StoredKey { key, record } in stored {
            let key: Arc<str> = key.into();
            match KeyRecord::from_json(&record) {
                Some(record) if !self.is_idle(&record, now) => {
                    self.keys.insert(key, record);
                }
                Some(_) => self.forgotten.push(key),
                None => {
                    tracing::warn!(key = %key, "unreadable client key record; forgotten");
                    self.forgotten.push(key);
                }
            }
        }
        self.evict(now, None);
    }

    /// How an update `id` of `key` is judged.
    pub(crate) fn judge(&self, key: &str, id: u64) -> Judged {
        let Some(record) = self.keys.get(key) else {
            return Judged::New;
        };
        if record.highest().is_none_or(|highest| id > highest) {
            return Judged::New;
        }
        let kept = record
            .recent
            .binary_search_by_key(&id, |d| d.id)
            .ok()
            .map(|at| record.recent[at].answer);
        Judged::Duplicate(kept)
    }

    /// Records the answer of update `id` of `key`, to write with the batch that reaches
    /// version `at`. An id not above the key's highest is left alone (decided already).
    pub(crate) fn decide(
        &mut self,
        key: &Arc<str>,
        id: u64,
        answer: Answer,
        at: u64,
        durable: u64,
    ) {
        let now = now();
        self.decisions += 1;
        let decided = Decided { id, answer, at };
        // What the store does not hold yet stays; all else beyond the kept answers goes.
        let trim_to = if self.stored { durable } else { u64::MAX };
        let known = match self.keys.get_mut(&**key) {
            Some(record) => {
                if !record.add(decided, now, self.decisions, trim_to) {
                    return;
                }
                true
            }
            None => {
                let mut record = KeyRecord::default();
                record.add(decided, now, self.decisions, trim_to);
                self.keys.insert(key.clone(), record);
                false
            }
        };
        if self.stored {
            self.unsent.push_back((at, key.clone()));
            self.pending.push_back((at, key.clone()));
        }
        if !known && self.keys.len() > self.max_keys || self.decisions.is_multiple_of(SWEEP_EVERY) {
            self.evict(now, Some(key));
        }
    }

    /// The records to write with a batch that reaches version `last`: each key decided on up
    /// to it, as of `last`, and the keys forgotten.
    pub(crate) fn take_writes(&mut self, last: u64) -> Vec<KeyWrite> {
        let mut writes: Vec<KeyWrite> = Vec::new();
        while self.unsent.front().is_some_and(|(at, _)| *at <= last) {
            let Some((_, key)) = self.unsent.pop_front() else {
                break;
            };
            if writes.iter().any(|w| w.key == key) {
                continue;
            }
            let record = self.keys.get(&key).map(|r| r.to_json(last));
            writes.push(KeyWrite { key, record });
        }
        for key in self.forgotten.drain(..) {
            if !writes.iter().any(|w| w.key == key) {
                writes.push(KeyWrite { key, record: None });
            }
        }
        writes
    }

    /// Whether decisions (or forgotten keys) wait for a batch.
    pub(crate) fn has_unsent(&self) -> bool {
        !self.unsent.is_empty() || !self.forgotten.is_empty()
    }

    /// The store holds everything up to `durable`: answers beyond the kept ones may go.
    pub(crate) fn settle(&mut self, durable: u64) {
        while self.pending.front().is_some_and(|(at, _)| *at <= durable) {
            if let Some((_, key)) = self.pending.pop_front() {
                if let Some(record) = self.keys.get_mut(&key) {
                    record.trim(durable);
                }
            }
        }
    }

    /// Forgets the decisions after `durable` (their frames are reverted, to run again).
    pub(crate) fn revert_after(&mut self, durable: u64) {
        self.unsent.retain(|(at, _)| *at <= durable);
        let mut touched: Vec<Arc<str>> = Vec::new();
        while self.pending.back().is_some_and(|(at, _)| *at > durable) {
            if let Some((_, key)) = self.pending.pop_back() {
                touched.push(key);
            }
        }
        for key in touched {
            if let Some(record) = self.keys.get_mut(&key) {
                while record.recent.back().is_some_and(|d| d.at > durable) {
                    record.recent.pop_back();
                }
            }
        }
    }

    /// Records another node committed with a batch (the JSON of
    /// [`Batch::keys_json`](crate::Batch::keys_json)): they replace what this node had for
    /// those keys.
    pub(crate) fn apply_remote(&mut self, json: &str) {
        let Ok(Value::Array(writes)) = serde_json::from_str::<Value>(json) else {
            tracing::warn!("unreadable client key records from another node; ignored");
            return;
        };
        for write in writes {
            let (Some(key), record) = (write.get(0).and_then(Value::as_str), write.get(1)) else {
                continue;
            };
            let key: Arc<str> = key.into();
            match record
                .and_then(Value::as_str)
                .and_then(KeyRecord::from_json)
            {
                Some(record) => {
                    self.keys.insert(key, record);
                }
                None => {
                    self.keys.remove(&key);
                }
            }
        }
    }

    /// Forgets everything not durable (the model is dropped, to reload).
    pub(crate) fn clear_unsent(&mut self) {
        self.unsent.clear();
        self.pending.clear();
        self.forgotten.clear();
    }

    fn is_idle(&self, record: &KeyRecord, now: u64) -> bool {
        record.used.saturating_add(self.idle.as_secs()) < now
    }

    /// Forgets idle keys, then the least recently used beyond the cap (never `keep`).
    fn evict(&mut self, now: u64, keep: Option<&Arc<str>>) {
        let idle = self.idle.as_secs();
        let unsent: HashSet<Arc<str>> = self.unsent.iter().map(|(_, k)| k.clone()).collect();
        let forgettable = |key: &Arc<str>| keep != Some(key) && !unsent.contains(key);
        let mut gone: Vec<Arc<str>> = self
            .keys
            .iter()
            .filter(|(key, record)| record.used.saturating_add(idle) < now && forgettable(key))
            .map(|(key, _)| key.clone())
            .collect();
        for key in &gone {
            self.keys.remove(key);
        }
        if self.keys.len() > self.max_keys {
            let mut by_use: Vec<(u64, u64, Arc<str>)> = self
                .keys
                .iter()
                .filter(|(key, _)| forgettable(key))
                .map(|(key, record)| (record.used, record.touched, key.clone()))
                .collect();
            by_use.sort_unstable();
            let excess = self.keys.len() - self.max_keys;
            for (_, _, key) in by_use.into_iter().take(excess) {
                self.keys.remove(&key);
                gone.push(key);
            }
        }
        if self.stored {
            self.forgotten.extend(gone);
        }
    }

    /// How many keys the model remembers.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Arc<str> {
        Arc::from(k)
    }

    #[test]
    fn judges_resends_by_the_highest_decided_id_and_keeps_the_last_answers() {
        let mut keys = ClientKeys::new(10, Duration::from_secs(3600), true);
        let k = key("key-aaaa");
        assert_eq!(keys.judge(&k, 1), Judged::New);
        keys.decide(&k, 1, Answer::Seq(5), 5, 0);
        keys.decide(&k, 3, Answer::Refused(ErrorCode::Rejected), 5, 0);
        assert_eq!(keys.judge(&k, 1), Judged::Duplicate(Some(Answer::Seq(5))));
        assert_eq!(
            keys.judge(&k, 3),
            Judged::Duplicate(Some(Answer::Refused(ErrorCode::Rejected)))
        );
        assert_eq!(keys.judge(&k, 2), Judged::Duplicate(None));
        assert_eq!(keys.judge(&k, 4), Judged::New);
        assert_eq!(keys.judge("other-key", 1), Judged::New);
        for id in 10..100 {
            keys.decide(&k, id, Answer::Seq(id), id, id);
        }
        assert_eq!(keys.judge(&k, 20), Judged::Duplicate(None));
        assert_eq!(keys.judge(&k, 99), Judged::Duplicate(Some(Answer::Seq(99))));
    }

    #[test]
    fn a_record_is_written_as_of_its_batch_and_read_back() {
        let mut keys = ClientKeys::new(10, Duration::from_secs(3600), true);
        let k = key("key-aaaa");
        keys.decide(&k, 1, Answer::Seq(1), 1, 0);
        keys.decide(&k, 2, Answer::Seq(2), 2, 0);
        let writes = keys.take_writes(1);
        assert_eq!(writes.len(), 1);
        let record = writes[0].record.clone().unwrap();
        assert!(keys.has_unsent());
        let mut loaded = ClientKeys::new(10, Duration::from_secs(3600), true);
        loaded.load(vec![StoredKey {
            key: "key-aaaa".into(),
            record,
        }]);
        assert_eq!(loaded.judge(&k, 1), Judged::Duplicate(Some(Answer::Seq(1))));
        assert_eq!(loaded.judge(&k, 2), Judged::New);
    }

    #[test]
    fn runs_of_answers_are_written_short_and_read_back_whole() {
        let mut keys = ClientKeys::new(10, Duration::from_secs(3600), true);
        let k = key("key-aaaa");
        for (id, answer) in [
            (1, Answer::Seq(10)),
            (2, Answer::Seq(11)),
            (3, Answer::Seq(12)),
            (4, Answer::Refused(ErrorCode::TooDeep)),
            (5, Answer::Seq(12)),
            (7, Answer::Seq(14)),
            (8, Answer::Seq(15)),
        ] {
            keys.decide(&k, id, answer, 0, 0);
        }
        let record = keys.take_writes(0).remove(0).record.unwrap();
        let answers = record.split(r#""r":"#).nth(1).unwrap();
        assert_eq!(answers, r#"[[1,10,3],[4,"too_deep"],[5,12,1],[7,14,2]]}"#);
        let mut loaded = ClientKeys::new(10, Duration::from_secs(3600), true);
        loaded.load(vec![StoredKey {
            key: "key-aaaa".into(),
            record,
        }]);
        for id in 1..=8 {
            assert_eq!(loaded.judge(&k, id), keys.judge(&k, id), "{id}");
        }
        assert_eq!(
            loaded.judge(&k, 2),
            Judged::Duplicate(Some(Answer::Seq(11)))
        );
    }

    #[test]
    fn reverted_decisions_are_forgotten() {
        let mut keys = ClientKeys::new(10, Duration::from_secs(3600), true);
        let k = key("key-aaaa");
        keys.decide(&k, 1, Answer::Seq(1), 1, 0);
        keys.decide(&k, 2, Answer::Seq(2), 2, 0);
        keys.revert_after(1);
        assert_eq!(keys.judge(&k, 2), Judged::New);
        assert_eq!(keys.judge(&k, 1), Judged::Duplicate(Some(Answer::Seq(1))));
    }

    #[test]
    fn the_least_recently_used_key_beyond_the_cap_is_forgotten() {
        let mut keys = ClientKeys::new(2, Duration::from_secs(3600), true);
        for (i, k) in ["key-aaaa", "key-bbbb", "key-cccc"].into_iter().enumerate() {
            keys.decide(&key(k), 1, Answer::Seq(1), 0, i as u64);
            keys.take_writes(u64::MAX);
        }
        assert_eq!(keys.len(), 2);
        let writes = keys.take_writes(u64::MAX);
        assert!(writes.iter().all(|w| w.record.is_none()));
    }

    #[test]
    fn idle_keys_are_not_loaded() {
        let mut keys = ClientKeys::new(10, Duration::from_secs(60), true);
        keys.load(vec![
            StoredKey {
                key: "key-old1".into(),
                record: r#"{"h":0,"t":1,"r":[[1,1]]}"#.into(),
            },
            StoredKey {
                key: "key-bad1".into(),
                record: "not json".into(),
            },
        ]);
        assert_eq!(keys.len(), 0);
        let forgotten = keys.take_writes(0);
        assert_eq!(forgotten.len(), 2);
    }
}
