//! Property tests of merge-diff against the RFC 7386 reference (`json_patch::merge`).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::obj;
use proptest::prelude::*;
use purly::serde_json::{json, Map, Value};
use purly::{merge_diff, Engine, JoinOptions, Outbox, Received};

/// Small key alphabet so that updates overlap the model and each other.
fn key() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "c", "d", "style", "é\"k"]).prop_map(str::to_owned)
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-3i64..3).prop_map(Value::from),
        (-2.5f64..2.5).prop_map(Value::from),
        prop::sample::select(vec!["", "coral", "x"]).prop_map(Value::from),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(key(), value(), 0..6).prop_map(|m| m.into_iter().collect())
}

/// A model as merges can make it: objects hold no null members.
fn model() -> impl Strategy<Value = Map<String, Value>> {
    object().prop_map(|update| {
        let mut state = Map::new();
        merge_diff(&mut state, update);
        state
    })
}

fn reference(old: &Map<String, Value>, update: &Map<String, Value>) -> Value {
    let mut expected = Value::Object(old.clone());
    json_patch::merge(&mut expected, &Value::Object(update.clone()));
    expected
}

/// Every leaf of the diff is needed: dropping any one of them misses the new state.
fn assert_minimal(old: &Map<String, Value>, diff: &Map<String, Value>, new: &Value) {
    fn leaves(map: &Map<String, Value>, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        for (k, v) in map {
            path.push(k.clone());
            match v {
                Value::Object(m) if !m.is_empty() => leaves(m, path, out),
                _ => out.push(path.clone()),
            }
            path.pop();
        }
    }
    fn without(map: &Map<String, Value>, path: &[String]) -> Map<String, Value> {
        let mut map = map.clone();
        if path.len() == 1 {
            map.remove(&path[0]);
        } else if let Some(Value::Object(inner)) = map.get(&path[0]) {
            let inner = without(inner, &path[1..]);
            map.insert(path[0].clone(), Value::Object(inner));
        }
        map
    }
    let mut paths = Vec::new();
    leaves(diff, &mut Vec::new(), &mut paths);
    for path in paths {
        let smaller = without(diff, &path);
        assert_ne!(
            &reference(old, &smaller),
            new,
            "diff leaf {path:?} is not needed: {diff:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn merge_agrees_with_the_reference(old in model(), update in object()) {
        let mut state = old.clone();
        let change = merge_diff(&mut state, update.clone());
        let new = Value::Object(state.clone());
        prop_assert_eq!(&new, &reference(&old, &update));
        // The diff (its text, as clients receive it) merged into the old state gives the new
        // state.
        let diff: Map<String, Value> = purly::serde_json::from_str(change.diff_json()).unwrap();
        prop_assert_eq!(&reference(&old, &diff), &new);
        assert_minimal(&old, &diff, &new);
        prop_assert_eq!(change.is_empty(), diff.is_empty());
        // The size delta is exact.
        let len = |v: &Map<String, Value>| Value::Object(v.clone()).to_string().len() as i64;
        prop_assert_eq!(len(&state) - len(&old), change.size_delta());
        // The same update again changes nothing.
        let again = merge_diff(&mut state, update);
        prop_assert!(again.is_empty());
        prop_assert_eq!(Value::Object(state.clone()), new);
        // Undo restores the exact old state.
        again.revert(&mut state);
        change.revert(&mut state);
        prop_assert_eq!(state, old);
    }

    #[test]
    fn a_no_op_update_fans_out_nothing(update in object()) {
        let engine = Engine::default();
        let watcher = Arc::new(Outbox::new(1 << 20));
        let _watch = engine.join("m", watcher.clone(), JoinOptions::stream()).wait().unwrap();
        let writer = engine.join("m", Arc::new(Outbox::new(1 << 20)), JoinOptions::stream()).wait().unwrap();
        let frame = |u: &Map<String, Value>| {
            json!([{"header": {"type": "update"}, "content": u}]).to_string()
        };
        writer.send_text(&frame(&update)).unwrap();
        let mut first = Vec::new();
        prop_assert_eq!(watcher.try_recv(&mut first), Some(Received::Messages));
        let changed = !merge_diff(&mut Map::new(), update.clone()).is_empty();
        // The snapshot and who is here, then the diff if the update changed anything.
        prop_assert_eq!(first.len(), 2 + usize::from(changed));
        writer.send_text(&frame(&update)).unwrap();
        prop_assert!(watcher.try_recv(&mut Vec::new()).is_none(), "a no-op update was fanned out");
    }
}

#[test]
fn arrays_are_replaced_never_merged() {
    let mut state = obj(json!({"list": [1, 2, 3]}));
    let change = merge_diff(&mut state, obj(json!({"list": [1, 2]})));
    assert_eq!(Value::Object(state), json!({"list": [1, 2]}));
    assert_eq!(change.into_diff_json(), r#"{"list":[1,2]}"#);
}
