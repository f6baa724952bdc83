//! The changes a layout has made since its last sync, as few merge patches as is exact.

use serde_json::{Map, Value};

/// Pending merge patches, in order. A new patch is folded into the last one when the result
/// is exactly "the last, then the new"; otherwise (an object written over a key the last patch
/// set to a non-object) it is kept as a patch of its own.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    patches: Vec<Map<String, Value>>,
}

impl Changes {
    pub(crate) fn record(&mut self, patch: Map<String, Value>) {
        match self.patches.last_mut() {
            Some(last) if composable(last, &patch) => compose(last, patch),
            _ => self.patches.push(patch),
        }
    }

    pub(crate) fn take(&mut self) -> Vec<Map<String, Value>> {
        std::mem::take(&mut self.patches)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.patches.is_empty()
    }
}

/// Whether `compose(first, second)` applies exactly as `first` then `second`.
fn composable(first: &Map<String, Value>, second: &Map<String, Value>) -> bool {
    second
        .iter()
        .all(|(key, value)| match (first.get(key), value) {
            (Some(Value::Object(a)), Value::Object(b)) => composable(a, b),
            // `first` replaced or removed the key; merging an object into that starts from `{}`,
            // which one patch cannot say.
            (Some(_), Value::Object(_)) => false,
            _ => true,
        })
}

fn compose(first: &mut Map<String, Value>, second: Map<String, Value>) {
    for (key, value) in second {
        match (first.get_mut(&key), value) {
            (Some(Value::Object(a)), Value::Object(b)) => compose(a, b),
            (_, value) => {
                first.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merge_diff;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    fn apply_all(model: &Value, patches: &[Map<String, Value>]) -> Value {
        let mut state = obj(model.clone());
        for patch in patches {
            merge_diff(&mut state, patch.clone());
        }
        Value::Object(state)
    }

    #[test]
    fn composed_patches_apply_as_the_sequence_would() {
        let model = json!({"k": {"old": 1}, "s": 1, "gone": {"x": 1}});
        let sequences = [
            vec![
                json!({"a": {"b": 1}}),
                json!({"a": {"c": 2}}),
                json!({"a": {"b": null}}),
            ],
            vec![json!({"k": null}), json!({"k": {"new": 1}})],
            vec![json!({"s": 5}), json!({"s": {"x": 1}})],
            vec![
                json!({"gone": null}),
                json!({"gone": 3}),
                json!({"other": [1]}),
            ],
            vec![
                json!({"k": {"old": 2}}),
                json!({"k": null}),
                json!({"k": {"z": {"y": null}}}),
            ],
        ];
        for sequence in sequences {
            let patches: Vec<_> = sequence.into_iter().map(obj).collect();
            let mut changes = Changes::default();
            for patch in &patches {
                changes.record(patch.clone());
            }
            let composed = changes.take();
            assert!(composed.len() <= patches.len());
            assert_eq!(
                apply_all(&model, &composed),
                apply_all(&model, &patches),
                "{patches:?}"
            );
        }
    }
}
