//! Realistic inputs shared by the benches: flat-DOM models and small element updates.
#![allow(dead_code)]

use purly::serde_json::{json, Map, Value};

/// A flat-DOM model of `elements` elements under `root`, as the page renders them.
pub(crate) fn model(elements: usize) -> Map<String, Value> {
    let mut model = Map::new();
    let children: Vec<Value> = (0..elements)
        .map(|i| json!({"type": "ref", "ref": format!("element-{i}")}))
        .collect();
    model.insert(
        "root".into(),
        json!({"tagName": "div", "children": children}),
    );
    for i in 0..elements {
        model.insert(
            format!("element-{i}"),
            json!({
                "tagName": "div",
                "attributes": {"key": format!("element-{i}"), "parent_key": "root",
                               "style": {"width": "20px", "background_color": "coral"}},
                "children": [format!("item {i}")]
            }),
        );
    }
    model
}

/// One ~100-byte update of one element's attribute; `round` alternates its value so that
/// every application changes something.
pub(crate) fn update(elements: usize, round: u64) -> Map<String, Value> {
    let color = if round.is_multiple_of(2) {
        "rgb(255, 127, 80)"
    } else {
        "rgb(64, 224, 208)"
    };
    let mut update = Map::new();
    update.insert(
        format!("element-{}", elements / 2),
        json!({"attributes": {"style": {"background_color": color}, "title": "hovered"}}),
    );
    update
}

/// The same update as a wire frame.
pub(crate) fn update_frame(elements: usize, round: u64) -> String {
    json!([{"header": {"type": "update", "version": "0.1"}, "content": update(elements, round)}])
        .to_string()
}
