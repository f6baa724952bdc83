//! Any model and update: merge-diff agrees with `json_patch::merge` (RFC 7386), the diff merged
//! into the old state gives the new one, a second application changes nothing, undo restores
//! the old state, and the size delta is exact.
#![no_main]

#[path = "json.rs"]
mod json;

use json::{object, Json, Key};
use libfuzzer_sys::fuzz_target;
use purly::merge_diff;
use purly::serde_json::{Map, Value};

fuzz_target!(|input: (Vec<(Key, Json)>, Vec<(Key, Json)>)| {
    let (seed, update) = input;
    // A model as merges make it (objects hold no null members).
    let mut old = Map::new();
    merge_diff(&mut old, object(&seed, 6));
    let update = object(&update, 6);

    let mut state = old.clone();
    let change = merge_diff(&mut state, update.clone());
    let mut reference = Value::Object(old.clone());
    json_patch::merge(&mut reference, &Value::Object(update.clone()));
    assert_eq!(Value::Object(state.clone()), reference);

    let mut via_diff = Value::Object(old.clone());
    let diff: Value = purly::serde_json::from_str(change.diff_json()).unwrap();
    assert_eq!(change.is_empty(), diff == Value::Object(Map::new()));
    json_patch::merge(&mut via_diff, &diff);
    assert_eq!(via_diff, reference);

    let len = |m: &Map<String, Value>| purly::serde_json::to_string(m).unwrap().len() as i64;
    assert_eq!(len(&state) - len(&old), change.size_delta());

    let again = merge_diff(&mut state, update);
    assert!(again.is_empty());
    again.revert(&mut state);
    change.revert(&mut state);
    assert_eq!(state, old);
});
