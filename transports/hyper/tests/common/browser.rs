//! Headless Debian Chromium driven over the DevTools protocol, for end-to-end page tests.
//!
//! Without a `chromium` binary the tests say so loudly and skip; under `CI=true` they fail.

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use purly::serde_json::{self, json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

use super::{Raw, TIMEOUT};

pub(crate) struct Browser {
    child: Child,
    port: u16,
    profile: PathBuf,
}

/// Starts Chromium, or returns `None` (after failing under CI) when there is none.
pub(crate) async fn chromium() -> Option<Browser> {
    let binary = ["chromium", "chromium-browser"].into_iter().find(|b| {
        std::process::Command::new(b)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let Some(binary) = binary else {
        let message =
            "BROWSER TEST NOT RUN: no chromium on this machine (.ci/run installs Debian's)";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{message}");
        }
        // Straight to stderr: the test harness captures `eprintln!`, and this must be seen.
        let _ = writeln!(std::io::stderr(), "\n!!! {message}\n");
        return None;
    };
    static PROFILES: AtomicU64 = AtomicU64::new(0);
    let profile = std::env::temp_dir().join(format!(
        "purly-chromium-{}-{}",
        std::process::id(),
        PROFILES.fetch_add(1, Ordering::Relaxed)
    ));
    let mut child = Command::new(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--remote-debugging-port=0",
            "--window-size=800,600",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromium did not start");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let port = tokio::time::timeout(TIMEOUT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.strip_prefix("DevTools listening on ws://127.0.0.1:") {
                return rest.split('/').next().and_then(|p| p.parse::<u16>().ok());
            }
        }
        None
    })
    .await
    .expect("chromium did not open its DevTools port in time")
    .expect("chromium exited without a DevTools port");
    // Keep draining stderr so that chromium never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Some(Browser {
        child,
        port,
        profile,
    })
}

impl Browser {
    /// Opens `url` in a new tab and waits until it has loaded.
    pub(crate) async fn open(&self, url: &str) -> Page {
        let (status, body) = devtools_http(self.port, "PUT", "/json/new?about:blank").await;
        assert_eq!(status, 200, "opening a tab: {body}");
        let target: Value = serde_json::from_str(&body).unwrap();
        let ws_url = target["webSocketDebuggerUrl"].as_str().unwrap();
        let (ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
        let mut page = Page {
            ws,
            next_id: 0,
            events: Vec::new(),
        };
        page.command("Page.enable", json!({})).await;
        page.command("Page.navigate", json!({ "url": url })).await;
        page.event("Page.loadEventFired").await;
        page
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

async fn devtools_http(port: u16, method: &str, path: &str) -> (u16, String) {
    let socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut socket = BufReader::new(socket);
    let request = format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n\r\n");
    socket
        .get_mut()
        .write_all(request.as_bytes())
        .await
        .unwrap();
    // DevTools keeps the connection open: read the head, then exactly Content-Length bytes.
    tokio::time::timeout(TIMEOUT, async {
        let mut status_line = String::new();
        socket.read_line(&mut status_line).await.unwrap();
        let status = status_line[9..12].parse().unwrap();
        let mut length = 0;
        loop {
            let mut line = String::new();
            socket.read_line(&mut line).await.unwrap();
            if line.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; length];
        socket.read_exact(&mut body).await.unwrap();
        (status, String::from_utf8(body).unwrap())
    })
    .await
    .expect("DevTools HTTP did not answer in time")
}

/// One tab.
pub(crate) struct Page {
    ws: Raw,
    next_id: u64,
    events: Vec<String>,
}

impl Page {
    /// Sends a DevTools command and returns its result.
    pub(crate) async fn command(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({ "id": id, "method": method, "params": params });
        self.ws
            .send(Message::text(request.to_string()))
            .await
            .unwrap();
        loop {
            let reply = self.next_message().await;
            if reply["id"] == id {
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return reply["result"].clone();
            }
            if let Some(event) = reply["method"].as_str() {
                self.events.push(event.to_owned());
            }
        }
    }

    /// Waits for a DevTools event (one seen while waiting for a command counts).
    async fn event(&mut self, name: &str) {
        if let Some(at) = self.events.iter().position(|e| e == name) {
            self.events.remove(at);
            return;
        }
        while self.next_message().await["method"] != name {}
    }

    async fn next_message(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(TIMEOUT, self.ws.next())
                .await
                .expect("DevTools did not answer in time")
                .expect("DevTools closed")
                .unwrap();
            if let Message::Text(text) = message {
                return serde_json::from_str(&text).unwrap();
            }
        }
    }

    /// Evaluates JavaScript in the page (awaiting a promise) and returns its value.
    pub(crate) async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .command(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expression}: {result}"
        );
        result["result"]["value"].clone()
    }

    /// Waits, inside the page, until `condition` (a JavaScript expression) is true: checked on
    /// every DOM change and at least every 50 ms, for at most 15 s. Returns whether it became
    /// true.
    pub(crate) async fn wait_for(&mut self, condition: &str) -> bool {
        let script = format!(
            "new Promise((resolve) => {{
                const check = () => {{ try {{ return !!({condition}); }} catch (_) {{ return false; }} }};
                if (check()) return resolve(true);
                const done = (value) => {{ observer.disconnect(); clearInterval(timer); clearTimeout(limit); resolve(value); }};
                const observer = new MutationObserver(() => {{ if (check()) done(true); }});
                observer.observe(document, {{ subtree: true, childList: true, attributes: true, characterData: true }});
                const timer = setInterval(() => {{ if (check()) done(true); }}, 50);
                const limit = setTimeout(() => done(check()), 15000);
            }})"
        );
        self.eval(&script).await == Value::Bool(true)
    }

    /// Saves a PNG screenshot of the viewport.
    pub(crate) async fn screenshot(&mut self, path: &std::path::Path) {
        let shot = self
            .command("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        let data = shot["data"].as_str().unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, BASE64.decode(data).unwrap()).unwrap();
    }
}
