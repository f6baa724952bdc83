//! The Rust `Layout` over the in-process transport, with a page-like client on the same model.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{recv, TIMEOUT};
use purly::serde_json::{json, Value};
use purly::{Engine, Layout};
use purly_channel::Client;

#[tokio::test]
async fn the_getting_started_square() {
    let engine = Engine::default();
    let mut layout = Layout::new(Client::connect(&engine, "model").await.unwrap());
    let div = layout.html("div");
    div.styles([
        ("height", "20px"),
        ("width", "20px"),
        ("background_color", "coral"),
    ]);
    layout.root().append(&div);
    common::within(layout.sync()).await.unwrap();

    let state = engine.state("model").unwrap();
    assert_eq!(
        state["root"]["children"],
        json!([{"type": "ref", "ref": div.key()}])
    );
    let square = &state[div.key()];
    assert_eq!(square["tagName"], "div");
    assert_eq!(square["attributes"]["parent_key"], "root");
    assert_eq!(
        square["attributes"]["style"],
        json!({"height": "20px", "width": "20px", "background_color": "coral"})
    );
}

#[tokio::test]
async fn a_click_runs_the_handler_and_its_change_reaches_the_page() {
    let engine = Engine::default();
    let mut layout = Layout::new(Client::connect(&engine, "model").await.unwrap());
    let heading = layout.html("h1");
    heading.set_text("clicked 0 times");
    let button = layout.html("button");
    button.text("click me");
    let clicks = Arc::new(AtomicUsize::new(0));
    let (counter, shown) = (clicks.clone(), heading.clone());
    button.on_with("click", &["clientX"], &[], move |_, event| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        assert_eq!(event.get("clientX"), Some(&json!(12)));
        shown.set_text(format!("clicked {n} times"));
    });
    layout.root().append(&heading).append(&button);
    common::within(layout.sync()).await.unwrap();

    let mut page = Client::connect(&engine, "model").await.unwrap();
    recv(&mut page).await;
    let spec = page.state()[button.key()]["attributes"]["onclick"].clone();
    let callback = spec["callback"].as_str().unwrap().to_owned();
    assert_eq!(spec["keys"], json!(["clientX"]));
    let serving = tokio::spawn(async move {
        let _ = tokio::time::timeout(TIMEOUT, layout.serve()).await;
    });
    for expected in 1..=3 {
        page.signal(json!({ button.key(): {"callback": callback, "event": {"clientX": 12}} }))
            .await
            .unwrap();
        while page.state()[heading.key()]["children"]
            != json!([format!("clicked {expected} times")])
        {
            recv(&mut page).await;
        }
    }
    assert_eq!(clicks.load(Ordering::SeqCst), 3);
    serving.abort();
}

#[tokio::test]
async fn values_the_page_reports_are_readable_in_the_handler() {
    let engine = Engine::default();
    let mut layout = Layout::new(Client::connect(&engine, "model").await.unwrap());
    let input = layout.html("input");
    let echo = layout.html("p");
    let shown = echo.clone();
    input.on_with("change", &[], &["value"], move |input, _| {
        let value = input.attribute("value").unwrap_or(Value::Null);
        shown.set_text(format!("you typed {}", value.as_str().unwrap_or("")));
    });
    layout.root().append(&input).append(&echo);
    common::within(layout.sync()).await.unwrap();
    let key = input.key().to_owned();

    let mut page = common::keyless(&engine, "model").await;
    recv(&mut page).await;
    let serving = tokio::spawn(async move {
        let _ = tokio::time::timeout(TIMEOUT, layout.serve()).await;
    });
    let callback = page.state()[&key]["attributes"]["onchange"]["callback"].clone();
    // As the page does: the update for `value`, then the signal, in one frame.
    page.send_text(
        &json!([
            {"header": {"type": "update"}, "content": {&key: {"attributes": {"value": "hello"}}}},
            {"header": {"type": "signal"}, "content": {&key: {"callback": callback, "event": {}}}}
        ])
        .to_string(),
    )
    .await
    .unwrap();
    while page.state()[echo.key()]["children"] != json!(["you typed hello"]) {
        recv(&mut page).await;
    }
    assert_eq!(
        engine.state("model").unwrap()[&key]["attributes"]["value"],
        "hello"
    );
    serving.abort();
}

#[tokio::test]
async fn removed_and_dropped_elements_leave_the_model() {
    let engine = Engine::default();
    let mut layout = Layout::new(Client::connect(&engine, "model").await.unwrap());
    let list = layout.html("ul");
    let item = layout.html("li");
    let inner = layout.html("b");
    item.append(&inner);
    list.append(&item);
    layout.root().append(&list);
    let keys = [
        list.key().to_owned(),
        item.key().to_owned(),
        inner.key().to_owned(),
    ];
    drop(inner); // still held by its parent: stays
    common::within(layout.sync()).await.unwrap();
    let state = engine.state("model").unwrap();
    assert!(keys.iter().all(|k| state.contains_key(k)));

    // Removing the item from the list and dropping the last handle removes it and its child.
    assert!(list.remove(&item));
    drop(item);
    common::within(layout.sync()).await.unwrap();
    let state = engine.state("model").unwrap();
    assert!(state.contains_key(&keys[0]));
    assert!(!state.contains_key(&keys[1]) && !state.contains_key(&keys[2]));
    assert_eq!(state[&keys[0]]["children"], json!([]));
}

#[tokio::test]
async fn with_signatures_every_change_re_signs_the_element_and_its_ancestors() {
    let engine = Engine::default();
    let mut layout = Layout::with_signatures(Client::connect(&engine, "model").await.unwrap());
    let outer = layout.html("div");
    let inner = layout.html("span");
    outer.append(&inner);
    layout.root().append(&outer);
    common::within(layout.sync()).await.unwrap();
    let signature = |key: &str| engine.state("model").unwrap()[key]["signature"].clone();
    let before = (signature(outer.key()), signature(inner.key()));

    inner.style("color", "coral");
    common::within(layout.sync()).await.unwrap();
    assert_ne!(
        signature(inner.key()),
        before.1,
        "the changed element is re-signed"
    );
    assert_ne!(signature(outer.key()), before.0, "so is its parent");
    assert_eq!(signature("root"), Value::Null, "the root never is");

    // Without the option no signature is written at all.
    let mut plain = Layout::new(Client::connect(&engine, "plain").await.unwrap());
    let div = plain.html("div");
    plain.root().append(&div);
    div.style("color", "coral");
    common::within(plain.sync()).await.unwrap();
    assert_eq!(
        engine.state("plain").unwrap()[div.key()].get("signature"),
        None
    );
}
