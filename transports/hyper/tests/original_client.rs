//! The original purly 0.2 clients (`purly==0.2.0` from PyPI) against this server, in compat
//! mode, unchanged: the Python `Layout`'s getting-started and a callback fired by a signal, and
//! the compiled browser page rendering a model drawn by the Rust `Layout`.
//!
//! Needs `python3` with `websocket-client` and `spectate==0.2.3`, and the wheel unpacked at
//! `target/purly-py/src` (or `PURLY_PY_SRC`); `.ci/run` installs them. Without them the tests
//! say so loudly and skip, except under `CI=true`, where they fail.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{next_frame, send, stream_client, Server};
use purly::serde_json::{self, json, Value};
use purly_hyper::Purly;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

fn harness() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/original/purly_client.py")
}

/// The unpacked wheel, or `None` (after failing under CI) when the original client cannot run.
fn original_purly() -> Option<PathBuf> {
    let src = std::env::var_os("PURLY_PY_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::target_dir().join("purly-py/src"));
    // Found, not imported: spectate 0.2.3 imports only after the harness's collections aliases.
    let find = "import importlib.util as u, sys; \
                sys.exit(0 if u.find_spec('websocket') and u.find_spec('spectate') else 1)";
    let imports = std::process::Command::new("python3")
        .args(["-c", find])
        .status()
        .is_ok_and(|s| s.success());
    let problem = match (src.join("purly/model/client.py").exists(), imports) {
        (true, true) => return Some(src),
        (false, _) => format!("the purly 0.2.0 wheel is not unpacked at {}", src.display()),
        (true, false) => "python3 lacks websocket-client or spectate==0.2.3".to_owned(),
    };
    let message =
        format!("ORIGINAL PURLY CLIENT TEST NOT RUN: {problem} (see .ci/run for the setup)");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message}");
    }
    // Straight to stderr: the test harness captures `eprintln!`, and this must be seen.
    let _ = writeln!(std::io::stderr(), "\n!!! {message}\n");
    None
}

struct Python {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Python {
    fn start(src: &Path, url: &str, scenario: &str) -> Python {
        let mut child = Command::new("python3")
            .arg(harness())
            .args([src.to_str().unwrap(), url, scenario])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Python { child, lines }
    }

    async fn line(&mut self) -> Value {
        let line = tokio::time::timeout(common::TIMEOUT, self.lines.next_line())
            .await
            .expect("the Python client said nothing in time")
            .unwrap()
            .expect("the Python client exited early");
        serde_json::from_str(&line).unwrap()
    }

    async fn finish(mut self) {
        let status = tokio::time::timeout(common::TIMEOUT, self.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "the Python client failed: {status}");
    }
}

async fn state(server: &Server) -> Value {
    let (status, body) = common::get(server, "/model/state", &[]).await;
    assert_eq!(status, 200);
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
#[cfg_attr(
    purly_no_original_client,
    ignore = "the original purly 0.2 client is not unpacked (.ci/run does it)"
)]
async fn the_original_getting_started_works_unchanged() {
    let Some(src) = original_purly() else { return };
    let server = Server::start(Purly::new(common::engine())).await;
    let mut python = Python::start(&src, &server.url("/model/stream"), "getting-started");
    let key = python.line().await["key"].as_str().unwrap().to_owned();
    python.finish().await;
    let state = state(&server).await;
    assert_eq!(
        state["root"]["children"],
        json!([{"type": "ref", "ref": key}])
    );
    assert_eq!(state[&key]["tagName"], "div");
    assert_eq!(
        state[&key]["attributes"]["style"],
        json!({"height": "20px", "width": "20px", "background_color": "coral"})
    );
    assert_eq!(state[&key]["attributes"]["parent_key"], "root");
}

#[tokio::test]
#[cfg_attr(
    purly_no_original_client,
    ignore = "the original purly 0.2 client is not unpacked (.ci/run does it)"
)]
async fn a_signal_fires_the_original_layouts_callback() {
    let Some(src) = original_purly() else { return };
    let server = Server::start(Purly::new(common::engine())).await;
    let mut python = Python::start(&src, &server.url("/model/stream"), "callback");
    let ready = python.line().await;
    let (key, callback) = (
        ready["key"].as_str().unwrap(),
        ready["callback"].as_str().unwrap(),
    );

    // A stream-mode client (as the browser page is) clicks the button.
    let mut page = stream_client(&server, "model").await;
    let snapshot = next_frame(&mut page).await;
    assert_eq!(
        snapshot[0]["content"][key]["attributes"]["onclick"]["callback"],
        callback
    );
    let click = json!([{"header": {"type": "signal"},
                        "content": {key: {"callback": callback, "event": {}}}}]);
    send(&mut page, &click.to_string()).await;

    assert_eq!(python.line().await, json!({"clicked": true}));
    python.finish().await;
    // The callback's change reached the model and the page.
    assert_eq!(
        state(&server).await[key]["attributes"]["style"]["background_color"],
        "green"
    );
    loop {
        let frame = next_frame(&mut page).await;
        if frame
            .iter()
            .any(|m| m["content"][key]["attributes"]["style"]["background_color"] == "green")
        {
            break;
        }
    }
}

/// Serves the original page's files at `/{model}/assets/...` from the unpacked wheel, and
/// everything else through purly: the page derives `/{model}/stream` from its own path.
async fn serve_original_page(board: PathBuf, purly: Purly) -> std::net::SocketAddr {
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use purly_hyper::{Body, Handled};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (purly, board) = (purly.clone(), board.clone());
            let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let (purly, board) = (purly.clone(), board.clone());
                async move {
                    let response = match purly.try_handle(request).await {
                        Handled::Response(response) => response,
                        Handled::NotPurly(request) => {
                            let path = request.uri().path();
                            let file = path
                                .split_once("/assets/")
                                .map(|(_, file)| board.join(file));
                            match file.filter(|_| !path.contains("..")).map(std::fs::read) {
                                Some(Ok(bytes)) => hyper::Response::new(Body::from(bytes)),
                                _ => hyper::Response::builder()
                                    .status(404)
                                    .body(Body::default())
                                    .unwrap(),
                            }
                        }
                    };
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            tokio::spawn(
                http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), service)
                    .with_upgrades(),
            );
        }
    });
    addr
}

#[tokio::test]
#[cfg_attr(
    purly_no_original_client,
    ignore = "the original purly 0.2 client is not unpacked (.ci/run does it)"
)]
#[cfg_attr(
    purly_no_chromium,
    ignore = "no chromium on this machine (.ci/run installs Debian's)"
)]
async fn the_original_compiled_page_renders_the_rust_layout_in_compat_mode() {
    let Some(src) = original_purly() else { return };
    let Some(browser) = common::browser::chromium().await else {
        return;
    };
    let purly = Purly::new(common::engine());
    let addr = serve_original_page(src.join("purly/static/board"), purly.clone()).await;
    let mut page = browser
        .open(&format!("http://{addr}/model/assets/index.html"))
        .await;

    let client = purly_hyper::WsClient::connect(&format!("ws://{addr}/model/stream"))
        .await
        .unwrap();
    // The compiled page re-renders an element only when its signature changes.
    let mut layout = purly::Layout::with_signatures(client);
    let div = layout.html("div");
    // The compiled page hands `style` to React as is, so it needs React's camelCase names.
    div.styles([
        ("height", "20px"),
        ("width", "20px"),
        ("backgroundColor", "coral"),
    ]);
    layout.root().append(&div);
    common::within(layout.sync()).await.unwrap();

    let square = "[...document.querySelectorAll('#react-mount div')].some((d) => {
        const s = getComputedStyle(d);
        return s.width === '20px' && s.backgroundColor === 'rgb(255, 127, 80)';
    })";
    assert!(
        page.wait_for(square).await,
        "the original page did not render the square"
    );

    // A change after the first render shows too.
    div.style("backgroundColor", "turquoise");
    common::within(layout.sync()).await.unwrap();
    let turquoise = "[...document.querySelectorAll('#react-mount div')]
        .some((d) => getComputedStyle(d).backgroundColor === 'rgb(64, 224, 208)')";
    assert!(
        page.wait_for(turquoise).await,
        "the original page missed a later change"
    );
}
