//! `purly-client.js` over the event stream (PROTOCOL.md section 10) in headless Chromium: the
//! `events` transport end to end; behind a proxy that refuses WebSocket upgrades, a plain
//! `connect(url)` falls back by itself and an update round-trips with a Python WebSocket client
//! (websocket-client, not ours) on the other side; and the reconnects of 1,000 clients of a
//! restarted server spread over the backoff window (full jitter).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::Stdio;

use common::browser::{chromium, Page};
use common::{next_frame, send, stream_client, Server};
use purly::serde_json::{json, Value};
use purly_hyper::Purly;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn server() -> Server {
    Server::start(
        Purly::builder(common::engine())
            .route("/app", common::app)
            .build(),
    )
    .await
}

async fn app_page(browser: &common::browser::Browser, addr: SocketAddr) -> Page {
    let mut page = browser.open(&format!("http://{addr}/app")).await;
    assert!(page.wait_for("document.body.dataset.ready === 'yes'").await);
    page
}

#[tokio::test]
#[cfg_attr(
    purly_no_chromium,
    ignore = "no chromium on this machine (.ci/run installs Debian's)"
)]
async fn the_events_transport_runs_the_client_end_to_end() {
    let Some(browser) = chromium().await else {
        return;
    };
    let server = server().await;
    let mut page = app_page(&browser, server.addr).await;
    let mut ws = stream_client(&server, "m").await;
    next_frame(&mut ws).await;
    let outcome = page
        .eval(
            "(async () => {
                window.c = purly.connect('/m/stream', { transport: 'events' });
                window.signals = [];
                c.on('signal', (content) => signals.push(content));
                await c.ready;
                const version = await c.update({ from_page: 1 });
                return { version, transport: c.transport, key: c.clientKey };
            })()",
        )
        .await;
    assert_eq!(outcome["version"], 1, "{outcome}");
    assert_eq!(outcome["transport"], "events", "{outcome}");
    assert_eq!(
        next_frame(&mut ws).await[0]["content"],
        json!({"from_page": 1})
    );
    // Down the stream: another client's update and signal.
    send(
        &mut ws,
        r#"[{"header":{"type":"update"},"content":{"from_ws":2}}]"#,
    )
    .await;
    send(
        &mut ws,
        r#"[{"header":{"type":"signal"},"content":{"ping":3}}]"#,
    )
    .await;
    assert!(
        page.wait_for("c.state.from_ws === 2 && signals.length === 1 && signals[0].ping === 3")
            .await
    );
    // Up: a signal in a POST.
    page.eval("c.signal({ pong: 4 })").await;
    loop {
        let frame = next_frame(&mut ws).await;
        if let Some(signal) = frame.iter().find(|m| m["header"]["type"] == "signal") {
            assert_eq!(signal["content"], json!({"pong": 4}));
            break;
        }
    }
    assert_eq!(
        Value::Object(server.purly.engine().state("m").unwrap()),
        json!({"from_page": 1, "from_ws": 2})
    );
}

/// A proxy to `upstream` that closes every connection whose request asks for a WebSocket
/// upgrade (as the middleboxes this transport is for do), and passes everything else.
async fn refusing_proxy(upstream: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut from_server, mut to_server) = server.split();
                let mut buffer = vec![0u8; 64 << 10];
                let mut answer = vec![0u8; 64 << 10];
                let mut seen = Vec::new();
                loop {
                    tokio::select! {
                        read = client.read(&mut buffer) => {
                            let n = match read { Ok(0) | Err(_) => return, Ok(n) => n };
                            // The head of every request on the connection is looked at.
                            seen.extend_from_slice(&buffer[..n]);
                            let text = String::from_utf8_lossy(&seen).to_ascii_lowercase();
                            if text.contains("upgrade: websocket") {
                                return;
                            }
                            let keep = seen.len().saturating_sub(64);
                            seen.drain(..keep);
                            if to_server.write_all(&buffer[..n]).await.is_err() {
                                return;
                            }
                        }
                        read = from_server.read(&mut answer) => {
                            let n = match read { Ok(0) | Err(_) => return, Ok(n) => n };
                            if client.write_all(&answer[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// A Python websocket-client peer: waits for the page's update, answers with its own.
const PYTHON_PEER: &str = r#"
import json, sys, websocket
ws = websocket.create_connection(sys.argv[1], subprotocols=["purly.stream"], timeout=20)
print("connected", flush=True)
while True:
    frame = json.loads(ws.recv())
    if any(m["content"].get("from_browser") == 1 for m in frame if m["header"]["type"] == "update"):
        break
ws.send(json.dumps([{"header": {"type": "update", "id": 1}, "content": {"from_python": 1}}]))
while True:
    frame = json.loads(ws.recv())
    if any(m["header"].get("id") == 1 for m in frame):
        break
print("done", flush=True)
"#;

#[tokio::test]
#[cfg_attr(
    purly_no_chromium,
    ignore = "no chromium on this machine (.ci/run installs Debian's)"
)]
async fn behind_a_proxy_that_refuses_websockets_the_client_falls_back() {
    let Some(browser) = chromium().await else {
        return;
    };
    let available = std::process::Command::new("python3")
        .args(["-c", "import websocket"])
        .status()
        .is_ok_and(|s| s.success());
    if !available {
        let message =
            "TEST NOT RUN: python3 with websocket-client is missing (.ci/run installs it)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
        // Straight to stderr: the test harness captures `eprintln!`, and this must be seen.
        let _ = writeln!(std::io::stderr(), "\n!!! {message}\n");
        return;
    }
    let server = server().await;
    let proxy = refusing_proxy(server.addr).await;
    let mut python = tokio::process::Command::new("python3")
        .args(["-c", PYTHON_PEER, &server.url("/m/stream")])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = tokio::io::BufReader::new(python.stdout.take().unwrap());
    let mut line = String::new();
    common::within(tokio::io::AsyncBufReadExt::read_line(&mut out, &mut line))
        .await
        .unwrap();
    assert_eq!(line.trim(), "connected");
    let mut page = app_page(&browser, proxy).await;
    let outcome = page
        .eval(
            "(async () => {
                window.c = purly.connect('/m/stream', { minReconnectDelay: 20 });
                await c.ready;
                const version = await c.update({ from_browser: 1 });
                return { version, transport: c.transport };
            })()",
        )
        .await;
    assert_eq!(outcome["transport"], "events", "{outcome}");
    assert!(outcome["version"].as_u64().is_some(), "{outcome}");
    assert!(page.wait_for("c.state.from_python === 1").await);
    line.clear();
    common::within(tokio::io::AsyncBufReadExt::read_line(&mut out, &mut line))
        .await
        .unwrap();
    assert_eq!(line.trim(), "done");
    assert!(common::within(python.wait()).await.unwrap().success());
}

#[tokio::test]
#[cfg_attr(
    purly_no_chromium,
    ignore = "no chromium on this machine (.ci/run installs Debian's)"
)]
async fn the_reconnects_of_a_thousand_clients_spread_over_the_backoff_window() {
    let Some(browser) = chromium().await else {
        return;
    };
    let server = server().await;
    let mut page = app_page(&browser, server.addr).await;
    // 1,000 clients on a WebSocket of the test's own: all open, then all lose their server at
    // the same instant. The wait each one asks for before reconnecting is recorded (the page's
    // `setTimeout`, wrapped while they close), and each must then reconnect.
    let delays = page
        .eval(
            "(async () => {
                const sockets = [];
                let attempts = 0;
                class Fake {
                    constructor() {
                        this.readyState = 0;
                        attempts += 1;
                        sockets.push(this);
                        setTimeout(() => { this.readyState = 1; this.onopen(); });
                    }
                    send() {}
                    close() {}
                }
                const clients = [];
                for (let i = 0; i < 1000; i++) {
                    clients.push(purly.connect('/m' + i + '/stream', { WebSocket: Fake, minReconnectDelay: 250 }));
                }
                while (clients.some((c) => c.status !== 'live')) await new Promise((r) => setTimeout(r, 10));
                const requested = [];
                const original = window.setTimeout;
                window.setTimeout = (f, ms, ...rest) => { requested.push(ms); return original(f, ms, ...rest); };
                for (const s of sockets.splice(0)) { s.readyState = 3; s.onclose(); }
                window.setTimeout = original;
                const deadline = performance.now() + 10000;
                while (attempts < 2000 && performance.now() < deadline) await new Promise((r) => setTimeout(r, 20));
                for (const c of clients) c.close();
                return { requested, attempts };
            })()",
        )
        .await;
    assert_eq!(
        delays["attempts"], 2000,
        "every client reconnected once: {}",
        delays["attempts"]
    );
    let delays: Vec<f64> = delays["requested"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_f64().unwrap())
        .collect();
    assert_eq!(delays.len(), 1000, "one reconnect wait per client");
    assert!(
        delays.iter().all(|&d| (0.0..250.0).contains(&d)),
        "every wait within the window: {:?}",
        &delays[..10]
    );
    // Spread over the 250 ms window: ten buckets of 25 ms, none with more than a fifth.
    let mut buckets = [0usize; 10];
    for d in &delays {
        buckets[((d / 25.0) as usize).min(9)] += 1;
    }
    assert!(
        buckets.iter().all(|&n| n < 200),
        "reconnects bunched: {buckets:?}"
    );
    assert!(
        buckets.iter().filter(|&&n| n > 0).count() >= 8,
        "reconnects spread over the window: {buckets:?}"
    );
}
