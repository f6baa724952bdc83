//! `purly-client.js` in headless Chromium, as a web app of one's own would use it: served by
//! purly-hyper at `/purly-client.js` and imported by an app page that is not purly's.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "../../../examples/tests/common/relay.rs"]
mod relay;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::browser::{chromium, Page};
use common::{Server, TIMEOUT};
use purly::serde_json::{self, Map, Value};
use purly::{Engine, Model, Rejection};
use purly_hyper::{Purly, WsClient};
use purly_sqlite::SqliteStore;

/// Refuses updates that set `forbidden`, and counts the updates that set `offline`.
struct Policy {
    offline: Arc<AtomicUsize>,
}

impl Model for Policy {
    fn check(&self, _: &Map<String, Value>, update: &Map<String, Value>) -> Result<(), Rejection> {
        if update.contains_key("offline") {
            self.offline.fetch_add(1, Ordering::SeqCst);
        }
        match update.contains_key("forbidden") {
            true => Err(Rejection::new("forbidden is not yours to set")),
            false => Ok(()),
        }
    }
}

/// An engine on a SQLite store in `dir` (so that a restart keeps versions and epochs), with
/// the [`Policy`] model.
fn engine(dir: &Path, offline: &Arc<AtomicUsize>) -> (Engine, Arc<SqliteStore>) {
    let store = Arc::new(SqliteStore::open(dir, Default::default()).unwrap());
    let offline = offline.clone();
    let engine = Engine::builder()
        .store(store.clone())
        .model_factory(move |_| {
            Ok(Box::new(Policy {
                offline: offline.clone(),
            }))
        })
        .build();
    (engine, store)
}

/// Stops the server, its engine and its store, as a server process's shutdown does.
async fn stop(server: Server, engine: Engine, store: Arc<SqliteStore>) {
    server.purly.shutdown().await;
    drop(server);
    drop(engine);
    store.close();
}

fn purly(engine: Engine) -> Purly {
    Purly::builder(engine).route("/app", common::app).build()
}

/// A browser, and a server on an engine with the [`Policy`] model over a SQLite store in a
/// temporary directory; `None` (after failing under CI) without a browser.
struct Setup {
    browser: common::browser::Browser,
    dir: tempfile::TempDir,
    offline: Arc<AtomicUsize>,
    engine: Engine,
    store: Arc<SqliteStore>,
    server: Server,
}

async fn setup() -> Option<Setup> {
    let browser = chromium().await?;
    let dir = tempfile::tempdir().unwrap();
    let offline = Arc::new(AtomicUsize::new(0));
    let (engine, store) = engine(dir.path(), &offline);
    let server = Server::start(purly(engine.clone())).await;
    Some(Setup {
        browser,
        dir,
        offline,
        engine,
        store,
        server,
    })
}

/// Opens the app page and connects a client to model `m` as `window.c`, recording every
/// change's source in `window.sources` and every error's code in `window.errors`.
async fn open_client(browser: &common::browser::Browser, server: &Server) -> Page {
    let mut page = browser.open(&server.http("/app")).await;
    assert!(page.wait_for("document.body.dataset.ready === 'yes'").await);
    let first = page
        .eval(
            "(async () => {
                window.sources = []; window.errors = []; window.statuses = [];
                window.c = purly.connect('/m/stream');
                c.subscribe((state, diff, change) => sources.push(change.source));
                c.on('error', (e) => errors.push(e.code));
                c.on('status', (s) => statuses.push(s));
                return JSON.stringify(await c.ready);
            })()",
        )
        .await;
    assert!(first.is_string(), "{first}");
    page
}

async fn js_state(page: &mut Page) -> Value {
    let text = page.eval("JSON.stringify(c.state)").await;
    serde_json::from_str(text.as_str().unwrap()).unwrap()
}

#[tokio::test]
#[cfg_attr(
    purly_no_chromium,
    ignore = "no chromium on this machine (.ci/run installs Debian's)"
)]
async fn two_browser_clients_and_a_rust_client_converge() {
    // The directory and the store stay alive with `setup`, until the end of the test.
    let Some(setup) = setup().await else {
        return;
    };
    let (browser, engine, server) = (&setup.browser, &setup.engine, &setup.server);
    let mut first = open_client(browser, server).await;
    let mut second = open_client(browser, server).await;
    let mut rust = common::within(WsClient::connect(&server.url("/m/stream")))
        .await
        .unwrap();

    // All three write the same keys and their own, at the same time.
    let writes = |who: &str| {
        format!(
            "Promise.all(Array.from({{ length: 40 }}, (_, i) =>
                c.update({{ shared: '{who}' + i, ['{who}' + i]: i, nested: {{ ['{who}']: i }} }})))
             .then((versions) => versions.length)"
        )
    };
    let rust_writes = async {
        for i in 0..40 {
            rust.update(purly::serde_json::json!({ "shared": format!("rust{i}"), format!("rust{i}"): i, "nested": {"rust": i} }))
                .await
                .unwrap();
        }
        common::within(rust.settle()).await.unwrap();
    };
    let (script_a, script_b) = (writes("a"), writes("b"));
    let (a, b, ()) = tokio::join!(first.eval(&script_a), second.eval(&script_b), rust_writes);
    assert_eq!((a, b), (Value::from(40), Value::from(40)));

    // Every copy reaches the engine's version, with nothing pending, and equals its state.
    let version = engine.durable_version("m").unwrap();
    assert_eq!(version, 120, "every update changed the model");
    for page in [&mut first, &mut second] {
        assert!(
            page.wait_for(&format!("c.version === {version} && c.pending === 0"))
                .await
        );
    }
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while rust.replica().version() != Some(version) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the Rust client lags"
        );
        tokio::time::timeout(TIMEOUT, rust.recv()).await.unwrap();
    }
    let truth = Value::Object(engine.state("m").unwrap());
    assert_eq!(js_state(&mut first).await, truth);
    assert_eq!(js_state(&mut second).await, truth);
    assert_eq!(Value::Object(rust.state().clone()), truth);
    assert_eq!(truth["nested"].as_object().unwrap().len(), 3);
}

#[tokio::test]
#[cfg_attr(
    purly_no_chromium,
    ignore = "no chromium on this machine (.ci/run installs Debian's)"
)]
async fn an_error_frame_rejects_the_update_and_reaches_the_app() {
    // The directory and the store stay alive with `setup`, until the end of the test.
    let Some(setup) = setup().await else {
        return;
    };
    let (browser, engine, server) = (&setup.browser, &setup.engine, &setup.server);
    let mut page = open_client(browser, server).await;
    let outcome = page
        .eval(
            "(async () => {
                const refused = c.update({ forbidden: 1, other: 2 });
                const shown = 'forbidden' in c.state; // applied locally at once
                const reason = await refused.then(() => 'confirmed', (e) => e.code + ': ' + e.detail);
                const kept = await c.update({ allowed: 1 });
                return { shown, reason, after: JSON.stringify(c.state), errors, kept, sources };
            })()",
        )
        .await;
    assert_eq!(outcome["shown"], true, "{outcome}");
    assert_eq!(
        outcome["reason"], "rejected: forbidden is not yours to set",
        "{outcome}"
    );
    assert_eq!(
        outcome["after"], r#"{"allowed":1}"#,
        "rolled back: {outcome}"
    );
    assert_eq!(outcome["errors"], serde_json::json!(["rejected"]));
    assert_eq!(outcome["kept"], 1);
    assert_eq!(
        outcome["sources"],
        serde_json::json!(["snapshot", "local", "rollback", "local", "server"])
    );
    assert_eq!(
        Value::Object(engine.state("m").unwrap()),
        serde_json::json!({"allowed": 1})
    );
}

#[tokio::test]
#[cfg_attr(
    purly_no_chromium,
    ignore = "no chromium on this machine (.ci/run installs Debian's)"
)]
async fn a_restart_is_survived_with_resume_and_pending_updates_are_sent_once() {
    let Some(Setup {
        browser,
        dir,
        offline,
        engine,
        store,
        server,
    }) = setup().await
    else {
        return;
    };
    let addr = server.addr;
    let mut page = open_client(&browser, &server).await;
    for i in 0..5 {
        engine
            .update(
                "m",
                purly::serde_json::json!({ "before": i })
                    .as_object()
                    .unwrap()
                    .clone(),
            )
            .await
            .unwrap();
    }
    assert!(page.wait_for("c.version === 5").await);
    let epoch = page.eval("c.epoch").await;

    // The server goes away: the client reconnects in the background, and an update made
    // meanwhile waits in the client.
    stop(server, engine, store).await;
    assert!(page.wait_for("c.status === 'reconnecting'").await);
    page.eval("window.offline = c.update({ offline: true }); true")
        .await;
    assert_eq!(page.eval("c.state.offline").await, true);

    // The same store on the same address: same epoch, same versions. Two more changes land
    // before the client is back; it must receive exactly those, not a snapshot.
    let (engine, _store) = self::engine(dir.path(), &offline);
    for i in 0..2 {
        engine
            .update(
                "m",
                purly::serde_json::json!({ "after": i })
                    .as_object()
                    .unwrap()
                    .clone(),
            )
            .await
            .unwrap();
    }
    let listener = common::bind_again(addr).await;
    let server = Server::start_on(listener, purly(engine.clone())).await;
    let confirmed = page.eval("window.offline").await;
    assert_eq!(
        confirmed, 8,
        "the offline update is the version after the two missed"
    );
    assert!(
        page.wait_for("c.status === 'live' && c.pending === 0")
            .await
    );
    assert_eq!(page.eval("c.epoch").await, epoch);
    assert_eq!(
        page.eval("sources.filter((s) => s === 'snapshot').length")
            .await,
        1,
        "resumed with the missed diffs, not a snapshot: {}",
        page.eval("JSON.stringify(sources)").await
    );
    assert_eq!(
        page.eval("JSON.stringify(statuses)").await,
        r#"["live","reconnecting","live"]"#
    );
    assert_eq!(offline.load(Ordering::SeqCst), 1, "sent exactly once");
    assert_eq!(
        js_state(&mut page).await,
        Value::Object(engine.state("m").unwrap())
    );
    drop(server);
}

#[tokio::test]
#[cfg_attr(
    purly_no_chromium,
    ignore = "no chromium on this machine (.ci/run installs Debian's)"
)]
async fn a_too_deep_update_rejects_with_the_servers_code() {
    let Some(setup) = setup().await else {
        return;
    };
    let mut page = open_client(&setup.browser, &setup.server).await;
    let outcome = page
        .eval(
            "(async () => {
                let deep = 1;
                for (let i = 0; i < 70; i++) deep = { d: deep };
                const reason = await c.update({ deep }, { timeout: 10000 })
                    .then(() => 'confirmed', (e) => e.name + ' ' + (e.code ?? e.message));
                const kept = await c.update({ fine: 1 });
                return { reason, pending: c.pending, kept, state: JSON.stringify(c.state) };
            })()",
        )
        .await;
    assert_eq!(outcome["reason"], "PurlyError too_deep", "{outcome}");
    assert_eq!(outcome["pending"], 0, "{outcome}");
    assert_eq!(outcome["kept"], 1, "{outcome}");
    assert_eq!(outcome["state"], r#"{"fine":1}"#, "{outcome}");
}

#[tokio::test]
#[cfg_attr(
    purly_no_chromium,
    ignore = "no chromium on this machine (.ci/run installs Debian's)"
)]
async fn an_update_whose_echo_was_lost_in_a_restart_is_applied_once() {
    let Some(Setup {
        browser,
        dir,
        offline,
        engine,
        store,
        server,
    }) = setup().await
    else {
        return;
    };
    let addr = server.addr;
    // The page talks to the server through a relay the test controls.
    let relay = relay::Relay::start(addr).await;
    let mut page = browser.open(&format!("http://{}/app", relay.addr)).await;
    assert!(page.wait_for("document.body.dataset.ready === 'yes'").await);
    page.eval(
        "(async () => { window.c = purly.connect('/m/stream'); await c.ready; return true; })()",
    )
    .await;
    let mut watcher = common::within(WsClient::connect(&server.url("/m/stream")))
        .await
        .unwrap();
    // The update reaches the server and is applied; its echo never reaches the page.
    relay.mute_replies.store(true, Ordering::SeqCst);
    page.eval("window.lost = c.update({ offline: 'mine' }); true")
        .await;
    while watcher.replica().version() < Some(1) {
        common::within(watcher.recv()).await.unwrap();
    }
    assert_eq!(page.eval("c.pending").await, 1, "the page never heard back");
    // The server stops; the page's connection is cut; the same store comes back on the
    // same address.
    stop(server, engine, store).await;
    relay.cut_all();
    relay.mute_replies.store(false, Ordering::SeqCst);
    drop(watcher);
    let (engine, _store) = self::engine(dir.path(), &offline);
    let listener = common::bind_again(addr).await;
    let server = Server::start_on(listener, purly(engine.clone())).await;
    // The page resends under its key: answered, not applied again.
    assert_eq!(
        page.eval("window.lost").await,
        1,
        "confirmed with its first version"
    );
    assert!(
        page.wait_for("c.status === 'live' && c.pending === 0")
            .await
    );
    assert_eq!(offline.load(Ordering::SeqCst), 1, "applied exactly once");
    assert_eq!(engine.durable_version("m"), Some(1));
    assert_eq!(
        js_state(&mut page).await,
        serde_json::json!({"offline": "mine"})
    );
    drop(server);
}

#[tokio::test]
#[cfg_attr(
    purly_no_chromium,
    ignore = "no chromium on this machine (.ci/run installs Debian's)"
)]
async fn an_error_naming_no_id_settles_the_oldest_unanswered_frame() {
    let Some(setup) = setup().await else {
        return;
    };
    let mut page = setup.browser.open(&setup.server.http("/app")).await;
    assert!(page.wait_for("document.body.dataset.ready === 'yes'").await);
    // A server of the test's own, through the client's `WebSocket` option: it answers the first
    // frame with its echo, the second with an error that names no id, and says `unavailable`
    // (no ids: the store failed) before the third.
    let outcome = page
        .eval(
            "(async () => {
                class Fake {
                    constructor() {
                        this.readyState = 0; this.sent = []; window.fake = this;
                        setTimeout(() => {
                            this.readyState = 1; this.onopen();
                            this.push([{ header: { type: 'update', version: '0.1', snapshot: true, seq: 0, epoch: 'e' }, content: {} }]);
                        });
                    }
                    push(frame) { this.onmessage({ data: JSON.stringify(frame) }); }
                    send(text) { this.sent.push(JSON.parse(text)); }
                    close() { this.readyState = 3; }
                }
                const c = purly.connect('/m/stream', { WebSocket: Fake });
                await c.ready;
                const settled = (p) => p.then((v) => 'confirmed ' + v, (e) => 'refused ' + e.code);
                const first = settled(c.update({ a: 1 }));
                const second = settled(c.update({ b: 2 }));
                const id = fake.sent[0][0].header.id;
                fake.push([{ header: { type: 'update', version: '0.1', seq: 1, epoch: 'e', id }, content: { a: 1 } }]);
                fake.push([{ header: { type: 'error', version: '0.1' }, content: { code: 'invalid_json', message: 'unreadable' } }]);
                const third = c.update({ c: 3 });
                fake.push([{ header: { type: 'error', version: '0.1' }, content: { code: 'unavailable', message: 'store failed' } }]);
                return { first: await first, second: await second, pending: c.pending,
                         ids: fake.sent.map((f) => f[0].header.id), key: c.clientKey };
            })()",
        )
        .await;
    assert_eq!(outcome["first"], "confirmed 1", "{outcome}");
    assert_eq!(outcome["second"], "refused invalid_json", "{outcome}");
    assert_eq!(
        outcome["pending"], 1,
        "`unavailable` refuses nothing: {outcome}"
    );
    let ids: Vec<u64> = outcome["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_u64().unwrap())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "increasing integer ids: {outcome}"
    );
    assert!(outcome["key"].as_str().unwrap().len() >= 8, "{outcome}");
}

#[tokio::test]
#[cfg_attr(
    purly_no_chromium,
    ignore = "no chromium on this machine (.ci/run installs Debian's)"
)]
async fn browsers_and_a_rust_client_see_who_is_here() {
    let Some(setup) = setup().await else {
        return;
    };
    let (browser, server) = (&setup.browser, &setup.server);
    let mut first = open_client(browser, server).await;
    let mut second = open_client(browser, server).await;
    let mut rust = common::within(WsClient::connect(&server.url("/m/stream")))
        .await
        .unwrap();
    let ids = first.eval("c.presenceId").await;
    let first_id = ids.as_str().unwrap().to_owned();
    let second_id = second
        .eval("c.presenceId")
        .await
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(first_id, second_id);

    // A cursor moved 100 times at once: the client sends at most 20 a second (the latest
    // wins), so the server refuses none, and the others end with the last position.
    first
        .eval(
            "window.changes = [];
             c.on('presence', (all, change) => changes.push(change));
             for (let i = 0; i < 100; i++) c.setPresence({ name: 'first', x: i });
             true",
        )
        .await;
    assert!(
        second
            .wait_for(&format!("c.presence['{first_id}']?.x === 99"))
            .await
    );
    rust.set_presence(Some(purly::serde_json::json!({"name": "rust"})))
        .await
        .unwrap();
    while rust.replica().presence_id().is_none() {
        tokio::time::timeout(TIMEOUT, rust.recv()).await.unwrap();
    }
    let rust_id = rust.replica().presence_id().unwrap().to_owned();
    assert!(
        first
            .wait_for(&format!("c.presence['{rust_id}']?.name === 'rust'"))
            .await
    );
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while rust.replica().presences().get(&first_id).map(|p| &p["x"]) != Some(&Value::from(99)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the Rust client never saw x = 99"
        );
        tokio::time::timeout(TIMEOUT, rust.recv()).await.unwrap();
    }
    assert_eq!(
        first.eval("JSON.stringify(errors)").await,
        "[]",
        "nothing refused"
    );

    // The first page closes its client: gone from the others' `presence`, with an event.
    first.eval("c.close(); true").await;
    assert!(
        second
            .wait_for(&format!("!('{first_id}' in c.presence)"))
            .await
    );
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while rust.replica().presences().contains_key(&first_id) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the Rust client still sees it"
        );
        tokio::time::timeout(TIMEOUT, rust.recv()).await.unwrap();
    }
    assert!(second.eval("c.presence[c.presenceId] === undefined").await == Value::Bool(true));
}
