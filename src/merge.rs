//! Nested merge (RFC 7386 semantics) that returns exactly the difference it made.
//!
//! [`merge_diff`] walks the update, never the rest of the model: its cost follows the size of
//! the update (plus the size of any value it replaces or removes), whatever the model's size.
//! Alongside the diff it keeps what it overwrote, so that a frame whose later message is
//! refused can be rolled back exactly ([`Change::revert`]), and the change in the model's
//! serialized size, so that the size limit is enforced without serializing the model.

use serde_json::{Map, Value};

use crate::json_text::{value_len, write_string, write_value};

/// What one update did to a model: the diff to fan out (as JSON text, written while merging),
/// and what it takes to undo it.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    diff: String,
    /// What the merge overwrote, one flat log in the order it was made (one allocation for the
    /// whole update, however deep).
    undo: Vec<Undo>,
    size_delta: i64,
}

/// One entry of a change's undo log. Entries inside an object come before the entry that names
/// the object, so that reading the log backwards meets the object first.
#[derive(Debug, Clone, PartialEq)]
enum Undo {
    /// The key was absent: remove it.
    Absent(String),
    /// The key held this value: put it back.
    Value(String, Value),
    /// The key is an object whose own changes are the `usize` entries before this one.
    Nested(String, usize),
}

impl Change {
    /// The smallest object that, merged into the old state, gives the new state (only changed
    /// leaves, removed keys as `null`, new keys with their whole value, new empty objects as
    /// `{}`), as compact JSON text: `{}` when nothing changed.
    pub fn diff_json(&self) -> &str {
        &self.diff
    }

    /// The diff as an object (read from [`diff_json`](Change::diff_json)).
    pub fn diff(&self) -> Map<String, Value> {
        // The text was written from JSON values: it always reads back.
        serde_json::from_str(&self.diff).unwrap_or_default()
    }

    /// Takes the diff's text out of the change (the undo information is dropped).
    pub fn into_diff_json(self) -> String {
        self.diff
    }

    /// Whether the update changed nothing.
    pub fn is_empty(&self) -> bool {
        // Every entry of the diff has its undo record, and only those.
        self.undo.is_empty()
    }

    /// How many bytes the model's compact JSON serialization grew (negative: shrank).
    pub fn size_delta(&self) -> i64 {
        self.size_delta
    }

    /// Restores `target` to what it was before this change. `target` must be in the state the
    /// change left it in (revert changes in the reverse order they were made).
    pub fn revert(self, target: &mut Map<String, Value>) {
        let count = self.undo.len();
        revert_map(target, &mut self.undo.into_iter().rev(), count);
    }
}

/// Merges `update` into `target` with the nested-merge rules of PROTOCOL.md section 2 (those of
/// JSON Merge Patch, RFC 7386) and returns the change it made.
///
/// ```
/// use serde_json::json;
/// let mut model = json!({"a": {"b": 1, "c": 2}}).as_object().unwrap().clone();
/// let update = json!({"a": {"b": 1, "c": null}, "d": {}}).as_object().unwrap().clone();
/// let change = purly::merge_diff(&mut model, update);
/// assert_eq!(serde_json::Value::Object(model), json!({"a": {"b": 1}, "d": {}}));
/// assert_eq!(change.diff_json(), r#"{"a":{"c":null},"d":{}}"#);
/// ```
///
/// The diff's text is written during the merge, from the update's own values (no diff object
/// is built, no value copied for it). The recursion follows the update's nesting; the engine
/// bounds it with [`Limits::max_depth`](crate::Limits::max_depth) before calling this.
pub fn merge_diff(target: &mut Map<String, Value>, update: Map<String, Value>) -> Change {
    // The update's own keys and a few nested ones without growing.
    let mut undo = Vec::with_capacity(update.len() + 4);
    let mut diff = String::with_capacity(128);
    let size_delta = merge_map(target, update, &mut undo, &mut diff);
    Change {
        diff,
        undo,
        size_delta,
    }
}

/// Merges `update` into `target`, appends the diff object to `diff` and returns how many bytes
/// the target's serialization grew.
fn merge_map(
    target: &mut Map<String, Value>,
    update: Map<String, Value>,
    undo: &mut Vec<Undo>,
    diff: &mut String,
) -> i64 {
    let len_before = target.len();
    let mut delta = 0i64;
    diff.push('{');
    let entries_start = diff.len();
    for (key, value) in update {
        let entry_start = diff.len();
        match value {
            Value::Null => {
                if let Some(old) = target.remove(&key) {
                    let key_len = write_key(&key, entries_start, diff);
                    diff.push_str("null");
                    delta -= key_len + 1 + json_len(&old);
                    undo.push(Undo::Value(key, old));
                }
            }
            Value::Object(sub) => {
                if let Some(Value::Object(existing)) = target.get_mut(&key) {
                    write_key(&key, entries_start, diff);
                    let nested_start = undo.len();
                    let nested_delta = merge_map(existing, sub, undo, diff);
                    let nested = undo.len() - nested_start;
                    if nested == 0 {
                        // Nothing changed inside: no entry for it.
                        diff.truncate(entry_start);
                    } else {
                        delta += nested_delta;
                        undo.push(Undo::Nested(key, nested));
                    }
                } else {
                    let created = Value::Object(without_nulls(sub));
                    let key_len = write_key(&key, entries_start, diff);
                    let created_len = write_len(&created, diff);
                    match target.insert(key.clone(), created) {
                        Some(old) => {
                            delta += created_len - json_len(&old);
                            undo.push(Undo::Value(key, old));
                        }
                        None => {
                            delta += key_len + 1 + created_len;
                            undo.push(Undo::Absent(key));
                        }
                    }
                }
            }
            value => match target.get_mut(&key) {
                Some(current) if *current == value => {}
                Some(current) => {
                    write_key(&key, entries_start, diff);
                    delta += write_len(&value, diff) - json_len(current);
                    let old = std::mem::replace(current, value);
                    undo.push(Undo::Value(key, old));
                }
                None => {
                    let key_len = write_key(&key, entries_start, diff);
                    delta += key_len + 1 + write_len(&value, diff);
                    target.insert(key.clone(), value);
                    undo.push(Undo::Absent(key));
                }
            },
        }
    }
    diff.push('}');
    delta + commas(target.len()) - commas(len_before)
}

/// Appends `"key":` to the diff object whose entries start at `entries_start` (after a comma
/// if an entry precedes it) and returns the length of the key's JSON text.
fn write_key(key: &str, entries_start: usize, diff: &mut String) -> i64 {
    if diff.len() > entries_start {
        diff.push(',');
    }
    let start = diff.len();
    write_string(key, diff);
    let len = (diff.len() - start) as i64;
    diff.push(':');
    len
}

/// Appends `value`'s JSON text to the diff and returns its length.
fn write_len(value: &Value, diff: &mut String) -> i64 {
    let start = diff.len();
    write_value(value, diff);
    (diff.len() - start) as i64
}

/// Reverts the next `count` entries of a log read backwards (`entries`) in `target`; the
/// entries of a nested object are reverted inside it.
fn revert_map(
    target: &mut Map<String, Value>,
    entries: &mut impl Iterator<Item = Undo>,
    count: usize,
) {
    let mut left = count;
    while left > 0 {
        let Some(entry) = entries.next() else {
            return;
        };
        left -= 1;
        match entry {
            Undo::Absent(key) => {
                target.remove(&key);
            }
            Undo::Value(key, old) => {
                target.insert(key, old);
            }
            Undo::Nested(key, nested) => {
                let nested = nested.min(left);
                left -= nested;
                match target.get_mut(&key) {
                    Some(Value::Object(map)) => revert_map(map, entries, nested),
                    // The target is in the state the change left it in: the object is there.
                    _ => entries.take(nested).for_each(drop),
                }
            }
        }
    }
}

/// An update merged into nothing: the object with every `null` member removed, recursively.
fn without_nulls(map: Map<String, Value>) -> Map<String, Value> {
    map.into_iter()
        .filter_map(|(k, v)| match v {
            Value::Null => None,
            Value::Object(m) => Some((k, Value::Object(without_nulls(m)))),
            v => Some((k, v)),
        })
        .collect()
}

fn commas(len: usize) -> i64 {
    len.saturating_sub(1) as i64
}

/// The length of `value`'s compact JSON serialization, in bytes.
pub(crate) fn json_len(value: &Value) -> i64 {
    value_len(value) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("test input is an object"),
        }
    }

    fn check(model: Value, update: Value, expect_state: Value, expect_diff: Value) {
        let mut state = obj(model.clone());
        let change = merge_diff(&mut state, obj(update));
        assert_eq!(Value::Object(state.clone()), expect_state);
        assert_eq!(Value::Object(change.diff()), expect_diff);
        assert_eq!(change.diff_json(), expect_diff.to_string());
        assert_eq!(
            json_len(&Value::Object(state.clone())) - json_len(&model),
            change.size_delta(),
            "size delta"
        );
        change.revert(&mut state);
        assert_eq!(Value::Object(state), model, "revert");
    }

    #[test]
    fn leaf_change_is_the_whole_diff() {
        check(
            json!({"a": {"b": 1, "c": 2}, "x": 1}),
            json!({"a": {"b": 5}}),
            json!({"a": {"b": 5, "c": 2}, "x": 1}),
            json!({"a": {"b": 5}}),
        );
    }

    #[test]
    fn no_change_gives_empty_diff() {
        check(
            json!({"a": {"b": [1, 2]}}),
            json!({"a": {"b": [1, 2]}, "gone": null, "e": {}}),
            json!({"a": {"b": [1, 2]}, "e": {}}),
            json!({"e": {}}),
        );
        check(
            json!({"a": {"b": [1, 2]}, "e": {}}),
            json!({"a": {"b": [1, 2]}, "gone": null, "e": {}}),
            json!({"a": {"b": [1, 2]}, "e": {}}),
            json!({}),
        );
    }

    #[test]
    fn replaces_scalars_and_arrays_whole() {
        check(
            json!({"a": 1, "b": {"c": 1}, "d": [1, {"x": 1}]}),
            json!({"a": {"n": null, "m": {"k": null}}, "b": 7, "d": [2]}),
            json!({"a": {"m": {}}, "b": 7, "d": [2]}),
            json!({"a": {"m": {}}, "b": 7, "d": [2]}),
        );
    }

    #[test]
    fn removals_are_null_and_sizes_track_commas() {
        check(
            json!({"a": 1, "b": 2, "c": {"d": 1, "e": 2}}),
            json!({"a": null, "c": {"d": null, "e": null, "f": "é\"\n"}}),
            json!({"b": 2, "c": {"f": "é\"\n"}}),
            json!({"a": null, "c": {"d": null, "e": null, "f": "é\"\n"}}),
        );
        check(
            json!({"only": 1}),
            json!({"only": null}),
            json!({}),
            json!({"only": null}),
        );
    }
}
