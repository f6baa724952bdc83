//! Nested merge (RFC 7386 semantics) that returns exactly the difference it made.
//!
//! [`merge_diff`] walks the update, never the rest of the model: its cost follows the size of
//! the update (plus the size of any value it replaces or removes), whatever the model's size.
//! Alongside the diff it keeps what it overwrote, so that a frame whose later message is
//! refused can be rolled back exactly ([`Change::revert`]), and the change in the model's
//! serialized size, so that the size limit is enforced without serializing the model.

use std::io;

use serde_json::{Map, Value};

/// What one update did to a model: the diff to fan out, and what it takes to undo it.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    diff: Map<String, Value>,
    undo: Vec<(String, Restore)>,
    size_delta: i64,
}

#[derive(Debug, Clone, PartialEq)]
enum Restore {
    Absent,
    Value(Value),
    Nested(Vec<(String, Restore)>),
}

impl Change {
    /// The smallest object that, merged into the old state, gives the new state: only changed
    /// leaves, removed keys as `null`, new keys with their whole value, new empty objects as `{}`.
    pub fn diff(&self) -> &Map<String, Value> {
        &self.diff
    }

    /// Takes the diff out of the change (the undo information is dropped).
    pub fn into_diff(self) -> Map<String, Value> {
        self.diff
    }

    /// Whether the update changed nothing.
    pub fn is_empty(&self) -> bool {
        self.diff.is_empty()
    }

    /// How many bytes the model's compact JSON serialization grew (negative: shrank).
    pub fn size_delta(&self) -> i64 {
        self.size_delta
    }

    /// Restores `target` to what it was before this change. `target` must be in the state the
    /// change left it in (revert changes in the reverse order they were made).
    pub fn revert(self, target: &mut Map<String, Value>) {
        revert_map(target, self.undo);
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
/// assert_eq!(serde_json::Value::Object(change.into_diff()), json!({"a": {"c": null}, "d": {}}));
/// ```
///
/// The recursion follows the update's nesting; the engine bounds it with
/// [`Limits::max_depth`](crate::Limits::max_depth) before calling this.
pub fn merge_diff(target: &mut Map<String, Value>, update: Map<String, Value>) -> Change {
    let mut undo = Vec::new();
    let (diff, size_delta) = merge_map(target, update, &mut undo);
    Change {
        diff,
        undo,
        size_delta,
    }
}

fn merge_map(
    target: &mut Map<String, Value>,
    update: Map<String, Value>,
    undo: &mut Vec<(String, Restore)>,
) -> (Map<String, Value>, i64) {
    let len_before = target.len();
    let mut diff = Map::new();
    let mut delta = 0i64;
    for (key, value) in update {
        match value {
            Value::Null => {
                if let Some(old) = target.remove(&key) {
                    delta -= entry_len(&key, &old);
                    diff.insert(key.clone(), Value::Null);
                    undo.push((key, Restore::Value(old)));
                }
            }
            Value::Object(sub) => {
                if let Some(Value::Object(existing)) = target.get_mut(&key) {
                    let mut nested_undo = Vec::new();
                    let (nested_diff, nested_delta) = merge_map(existing, sub, &mut nested_undo);
                    if !nested_diff.is_empty() {
                        delta += nested_delta;
                        diff.insert(key.clone(), Value::Object(nested_diff));
                        undo.push((key, Restore::Nested(nested_undo)));
                    }
                } else {
                    let created = Value::Object(without_nulls(sub));
                    let created_len = json_len(&created);
                    diff.insert(key.clone(), created.clone());
                    match target.insert(key.clone(), created) {
                        Some(old) => {
                            delta += created_len - json_len(&old);
                            undo.push((key, Restore::Value(old)));
                        }
                        None => {
                            delta += str_len(&key) + 1 + created_len;
                            undo.push((key, Restore::Absent));
                        }
                    }
                }
            }
            value => match target.get_mut(&key) {
                Some(current) if *current == value => {}
                Some(current) => {
                    delta += json_len(&value) - json_len(current);
                    let old = std::mem::replace(current, value.clone());
                    diff.insert(key.clone(), value);
                    undo.push((key, Restore::Value(old)));
                }
                None => {
                    delta += entry_len(&key, &value);
                    target.insert(key.clone(), value.clone());
                    diff.insert(key.clone(), value);
                    undo.push((key, Restore::Absent));
                }
            },
        }
    }
    delta += commas(target.len()) - commas(len_before);
    (diff, delta)
}

fn revert_map(target: &mut Map<String, Value>, undo: Vec<(String, Restore)>) {
    for (key, restore) in undo.into_iter().rev() {
        match restore {
            Restore::Absent => {
                target.remove(&key);
            }
            Restore::Value(old) => {
                target.insert(key, old);
            }
            Restore::Nested(nested) => {
                if let Some(Value::Object(map)) = target.get_mut(&key) {
                    revert_map(map, nested);
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

fn entry_len(key: &str, value: &Value) -> i64 {
    str_len(key) + 1 + json_len(value)
}

struct ByteCounter(usize);

impl io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The length of `value`'s compact JSON serialization, in bytes.
pub(crate) fn json_len<T: serde::Serialize + ?Sized>(value: &T) -> i64 {
    let mut counter = ByteCounter(0);
    // Writing into a counter cannot fail, and a JSON value always serializes.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0 as i64
}

fn str_len(key: &str) -> i64 {
    json_len(key)
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
        assert_eq!(Value::Object(change.diff().clone()), expect_diff);
        assert_eq!(
            json_len(&state) - json_len(&model),
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
