//! End to end in headless Chromium: the live page, the Rust `Layout`, and the server.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use common::browser::chromium;
use common::{get, next_frame, send, stream_client, Server, TIMEOUT};
use purly::serde_json::{json, Value};
use purly::Layout;
use purly_hyper::{Purly, WsClient};

async fn connect_layout(server: &Server, model: &str) -> Layout<WsClient> {
    Layout::new(
        common::within(WsClient::connect(&server.url(&format!("/{model}/stream"))))
            .await
            .unwrap(),
    )
}

fn serve_in_background(mut layout: Layout<WsClient>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(TIMEOUT * 3, layout.serve()).await;
    })
}

const CORAL_SQUARE: &str = "[...document.querySelectorAll('#purly-root > div')].some((d) => {
    const s = getComputedStyle(d);
    return s.width === '20px' && s.height === '20px' && s.backgroundColor === 'rgb(255, 127, 80)';
})";

#[tokio::test]
#[cfg_attr(
    purly_no_chromium,
    ignore = "no chromium on this machine (.ci/run installs Debian's)"
)]
async fn getting_started_puts_a_coral_square_on_the_page() {
    let Some(browser) = chromium().await else {
        return;
    };
    let server = Server::start(Purly::new(common::engine())).await;
    let mut page = browser.open(&server.http("/model")).await;
    assert!(
        page.wait_for("document.getElementById('purly-status').dataset.state === 'live'")
            .await
    );

    // The original getting-started, in Rust.
    let mut layout = connect_layout(&server, "model").await;
    let div = layout.html("div");
    div.styles([
        ("height", "20px"),
        ("width", "20px"),
        ("background_color", "coral"),
    ]);
    layout.root().append(&div);
    common::within(layout.sync()).await.unwrap();

    assert!(
        page.wait_for(CORAL_SQUARE).await,
        "no coral square appeared"
    );
    let path = common::target_dir().join("screenshots/getting-started.png");
    page.command(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 320, "height": 120, "deviceScaleFactor": 2, "mobile": false}),
    )
    .await;
    page.screenshot(&path).await;
    assert!(std::fs::metadata(&path).unwrap().len() > 100);
}

#[tokio::test]
#[cfg_attr(
    purly_no_chromium,
    ignore = "no chromium on this machine (.ci/run installs Debian's)"
)]
async fn a_click_on_the_page_runs_the_rust_callback() {
    let Some(browser) = chromium().await else {
        return;
    };
    let server = Server::start(Purly::new(common::engine())).await;
    let mut layout = connect_layout(&server, "counter").await;
    let title = layout.html("h1");
    title.set_text("clicked 0 times");
    let button = layout.html("button");
    button.text("click me");
    let clicks = Arc::new(AtomicU32::new(0));
    let (counted, shown) = (clicks.clone(), title.clone());
    button.on_with("click", &["button"], &[], move |_, event| {
        assert_eq!(
            event.get("button"),
            Some(&json!(0)),
            "the page reports the keys asked for"
        );
        let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
        shown
            .set_text(format!("clicked {n} times"))
            .style("color", "coral");
    });
    layout.root().append(&title).append(&button);
    common::within(layout.sync()).await.unwrap();
    let serving = serve_in_background(layout);

    let mut page = browser.open(&server.http("/counter")).await;
    assert!(
        page.wait_for("document.querySelector('button') !== null")
            .await
    );
    page.eval("document.querySelector('button').click()").await;
    assert!(
        page.wait_for("document.querySelector('h1').textContent === 'clicked 1 times'")
            .await
    );
    page.eval("document.querySelector('button').click(); document.querySelector('button').click()")
        .await;
    assert!(
        page.wait_for("document.querySelector('h1').textContent === 'clicked 3 times'")
            .await
    );
    assert_eq!(
        page.eval("getComputedStyle(document.querySelector('h1')).color")
            .await,
        "rgb(255, 127, 80)"
    );
    assert_eq!(clicks.load(Ordering::SeqCst), 3);
    serving.abort();
}

#[tokio::test]
#[cfg_attr(
    purly_no_chromium,
    ignore = "no chromium on this machine (.ci/run installs Debian's)"
)]
async fn typing_reaches_the_model_and_every_page_of_it() {
    let Some(browser) = chromium().await else {
        return;
    };
    let server = Server::start(Purly::new(common::engine())).await;
    let mut layout = connect_layout(&server, "form").await;
    let input = layout.html("input");
    let echo = layout.html("p");
    let mirror = echo.clone();
    input.on_with("change", &[], &["value"], move |input, _| {
        let text = input
            .attribute("value")
            .and_then(|v| v.as_str().map(str::to_owned));
        mirror.set_text(format!("echo: {}", text.unwrap_or_default()));
    });
    layout.root().append(&input).append(&echo);
    common::within(layout.sync()).await.unwrap();
    let key = input.key().to_owned();
    let serving = serve_in_background(layout);

    let mut first = browser.open(&server.http("/form")).await;
    let mut second = browser.open(&server.http("/form")).await;
    for page in [&mut first, &mut second] {
        assert!(
            page.wait_for("document.querySelector('input') !== null")
                .await
        );
    }
    // Typing fires onChange on every input, as in the original page.
    first.eval("(() => { const i = document.querySelector('input');
        for (const text of ['h', 'he', 'hello']) { i.value = text; i.dispatchEvent(new Event('input', { bubbles: true })); } })()").await;
    assert!(
        first
            .wait_for("document.querySelector('p').textContent === 'echo: hello'")
            .await
    );
    let (_, state) = get(&server, "/form/state", &[]).await;
    let state: Value = purly::serde_json::from_str(&state).unwrap();
    assert_eq!(state[&key]["attributes"]["value"], "hello");
    // The other page of the same model shows the same value and echo.
    assert!(
        second
            .wait_for("document.querySelector('input').value === 'hello'")
            .await
    );
    assert!(
        second
            .wait_for("document.querySelector('p').textContent === 'echo: hello'")
            .await
    );
    serving.abort();
}

#[tokio::test]
#[cfg_attr(
    purly_no_chromium,
    ignore = "no chromium on this machine (.ci/run installs Debian's)"
)]
async fn the_page_reconnects_after_a_server_restart_and_shows_the_current_state() {
    let Some(browser) = chromium().await else {
        return;
    };
    let server = Server::start(Purly::new(common::engine())).await;
    let addr = server.addr;
    let mut layout = connect_layout(&server, "model").await;
    let before = layout.html("p");
    before.set_text("before the restart");
    layout.root().append(&before);
    common::within(layout.sync()).await.unwrap();
    let mut page = browser.open(&server.http("/model")).await;
    assert!(
        page.wait_for("document.body.textContent.includes('before the restart')")
            .await
    );

    server.purly.shutdown().await;
    drop(server);
    drop(layout);
    assert!(
        page.wait_for("document.getElementById('purly-status').dataset.state === 'reconnecting'")
            .await
    );

    // A new server process on the same address: a new engine, a new epoch, other content.
    let listener = common::bind_again(addr).await;
    let server = Server::start_on(listener, Purly::new(common::engine())).await;
    let mut layout = connect_layout(&server, "model").await;
    let after = layout.html("p");
    after.set_text("after the restart");
    layout.root().append(&after);
    common::within(layout.sync()).await.unwrap();
    assert!(
        page.wait_for("document.getElementById('purly-status').dataset.state === 'live'")
            .await
    );
    assert!(
        page.wait_for("document.body.textContent.includes('after the restart')")
            .await
    );
    assert_eq!(
        page.eval("document.body.textContent.includes('before the restart')")
            .await,
        false
    );
}

#[tokio::test]
#[cfg_attr(
    purly_no_chromium,
    ignore = "no chromium on this machine (.ci/run installs Debian's)"
)]
async fn a_hostile_model_runs_no_script() {
    let Some(browser) = chromium().await else {
        return;
    };
    let server = Server::start(Purly::new(common::engine())).await;
    let mut attacker = stream_client(&server, "evil").await;
    next_frame(&mut attacker).await;
    let hostile = json!({
        "root": {"children": [
            "<img src=x onerror=\"window.pwned='text'\">",
            {"type": "ref", "ref": "script"}, {"type": "ref", "ref": "button"},
            {"type": "ref", "ref": "link"}, {"type": "ref", "ref": "img"},
            {"type": "ref", "ref": "frame"}, {"type": "ref", "ref": "__proto__"}
        ]},
        "script": {"tagName": "script", "children": ["window.pwned = 'script'"], "attributes": {}},
        "button": {"tagName": "button", "children": ["press"], "attributes": {
            "onclick": "window.pwned = 'onclick'", "id": "b", "style": {"background_image": "url(javascript:window.pwned='css')"}}},
        "link": {"tagName": "a", "children": ["follow"], "attributes": {
            "href": " JaVa\tScRiPt:window.pwned='href'", "id": "a"}},
        "img": {"tagName": "img", "children": [], "attributes": {"src": "data:image/gif;base64,R0lGODlhAQABAAAAACw=",
            "onerror": "window.pwned='onerror'", "onload": "window.pwned='onload'", "id": "i"}},
        "frame": {"tagName": "iframe", "children": [], "attributes": {"srcdoc": "<script>parent.pwned='srcdoc'</script>"}},
        "__proto__": {"tagName": "span", "children": ["proto is data"], "attributes": {"id": "p"}}
    });
    send(&mut attacker, &common::update(&hostile.to_string())).await;
    next_frame(&mut attacker).await;

    let mut page = browser.open(&server.http("/evil")).await;
    assert!(
        page.wait_for("document.body.textContent.includes('proto is data')")
            .await
    );
    // Markup in text stays text.
    assert!(
        page.eval("document.getElementById('purly-root').textContent.includes('<img src=x')")
            .await
            == true
    );
    assert_eq!(page.eval("document.querySelectorAll('#purly-root img[onerror], #purly-root [onclick], #purly-root [onload]').length").await, 0);
    assert_eq!(
        page.eval("document.querySelectorAll('#purly-root script, #purly-root iframe').length")
            .await,
        0
    );
    assert_eq!(
        page.eval("document.getElementById('a').hasAttribute('href')")
            .await,
        false
    );
    // Trigger everything that could run code, then look.
    page.eval("document.getElementById('b').click(); document.getElementById('a').click();")
        .await;
    assert!(page.wait_for("document.getElementById('i').complete").await);
    assert_eq!(page.eval("typeof window.pwned").await, "undefined");
    assert_eq!(
        page.eval("Object.prototype.tagName === undefined").await,
        true
    );
    assert_eq!(
        page.eval("location.pathname").await,
        "/evil",
        "no navigation happened"
    );
}

#[tokio::test]
#[cfg_attr(
    purly_no_chromium,
    ignore = "no chromium on this machine (.ci/run installs Debian's)"
)]
async fn rendering_is_incremental_and_keyed() {
    let Some(browser) = chromium().await else {
        return;
    };
    let server = Server::start(Purly::new(common::engine())).await;
    let mut writer = stream_client(&server, "m").await;
    next_frame(&mut writer).await;
    let model = json!({
        "root": {"children": [{"type": "ref", "ref": "a"}, {"type": "ref", "ref": "b"}, {"type": "ref", "ref": "c"}]},
        "a": {"tagName": "p", "children": ["A"], "attributes": {"id": "a",
              "style": {"background_color": "coral", "font-size": "20px", "marginLeft": "3px"}}},
        "b": {"tagName": "input", "children": [], "attributes": {"id": "b", "value": "typed"}},
        "c": {"tagName": "input", "children": [], "attributes": {"id": "c", "type": "checkbox", "checked": true}}
    });
    send(&mut writer, &common::update(&model.to_string())).await;
    next_frame(&mut writer).await;
    let mut page = browser.open(&server.http("/m")).await;
    assert!(page.wait_for("document.getElementById('c') !== null").await);
    // Three spellings of a style property, and form values as properties.
    assert_eq!(
        page.eval(
            "(() => { const s = getComputedStyle(document.getElementById('a'));
        return [s.backgroundColor, s.fontSize, s.marginLeft]; })()"
        )
        .await,
        json!(["rgb(255, 127, 80)", "20px", "3px"])
    );
    assert_eq!(
        page.eval("document.getElementById('b').value").await,
        "typed"
    );
    assert_eq!(
        page.eval("document.getElementById('c').checked").await,
        true
    );

    // Mark every node, then change one element and reorder the root's children.
    page.eval("for (const id of ['a', 'b', 'c']) document.getElementById(id).purlyMark = id")
        .await;
    send(&mut writer, &common::update(r#"{"a":{"children":["A2"]},"c":{"attributes":{"checked":false}},
        "root":{"children":[{"type":"ref","ref":"c"},{"type":"ref","ref":"a"},{"type":"ref","ref":"b"}]}}"#)).await;
    assert!(
        page.wait_for("document.getElementById('a').textContent === 'A2'")
            .await
    );
    assert_eq!(
        page.eval("[...document.getElementById('purly-root').children].map((e) => e.purlyMark)")
            .await,
        json!(["c", "a", "b"]),
        "the same nodes, moved: nothing was re-created"
    );
    assert_eq!(
        page.eval("document.getElementById('c').checked").await,
        false
    );
    // Removing a style property removes it from the element.
    send(
        &mut writer,
        &common::update(r#"{"a":{"attributes":{"style":{"background_color":null}}}}"#),
    )
    .await;
    assert!(
        page.wait_for(
            "getComputedStyle(document.getElementById('a')).backgroundColor === 'rgba(0, 0, 0, 0)'"
        )
        .await
    );
    assert_eq!(
        page.eval("document.getElementById('a').purlyMark").await,
        "a"
    );
}
