//! Runs the real `server` example as a child process on a free loopback port, and talks to it
//! with plain tokio-tungstenite clients. Every wait has a timeout.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use purly::serde_json::{self, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub(crate) const TIMEOUT: Duration = Duration::from_secs(20);

/// The event-stream client of purly-hyper's tests (hyper's HTTP/1.1 client).
#[path = "../../../transports/hyper/tests/common/events.rs"]
pub(crate) mod events;

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// The `server` example's binary, built by `cargo test` beside this test's own binary.
pub(crate) fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target/<profile>/examples/server
    let profile = exe.parent().and_then(Path::parent).unwrap();
    let server = profile.join("examples").join("server");
    assert!(
        server.exists(),
        "{} is missing: run the tests with `cargo test --workspace`, which builds the examples",
        server.display()
    );
    server
}

/// The most log lines a [`ServerProcess`] keeps (the latest).
const KEPT_LOG_LINES: usize = 10_000;

/// A server process; killed (SIGKILL) when dropped.
pub(crate) struct ServerProcess {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl ServerProcess {
    /// Starts the server on a free port with `args`, and waits until it serves.
    pub(crate) async fn start(args: &[&str]) -> ServerProcess {
        ServerProcess::launch(Command::new(server_binary()), args).await
    }

    /// [`start`](ServerProcess::start) with the open-file limit (soft and hard) set to
    /// `limit`, as `ulimit -n` does.
    pub(crate) async fn start_with_file_limit(limit: u32, args: &[&str]) -> ServerProcess {
        let mut command = Command::new("bash");
        command
            .arg("-c")
            .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
            .arg(server_binary());
        ServerProcess::launch(command, args).await
    }

    async fn launch(mut command: Command, args: &[&str]) -> ServerProcess {
        let mut child = command
            .args(["--addr", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let addr = tokio::time::timeout(TIMEOUT, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                remember(&log, &line);
                if let Some(rest) = line.split("serving on http://").nth(1) {
                    let addr = rest.split('/').next().unwrap();
                    return addr.parse::<SocketAddr>().unwrap();
                }
            }
            panic!("the server exited before serving");
        })
        .await
        .expect("the server did not start serving in time");
        // Keep reading its log so that a full pipe never blocks it.
        let kept = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                remember(&kept, &line);
            }
        });
        ServerProcess { child, addr, log }
    }

    /// How many of the kept log lines contain `text`.
    pub(crate) fn log_count(&self, text: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.contains(text))
            .count()
    }

    /// Waits until a log line contains `text`.
    pub(crate) async fn wait_for_log(&self, text: &str) {
        tokio::time::timeout(TIMEOUT, async {
            while self.log_count(text) == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the server never logged {text:?}"));
    }

    /// The CPU time (user and system) the process has used so far, from `/proc`.
    pub(crate) fn cpu_time(&self) -> Duration {
        let pid = self.child.id().expect("the server is running");
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // Fields after the command name, which ends with the last ')': utime is the 12th.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // The kernel's USER_HZ is 100 on every Linux architecture purly builds for.
        Duration::from_millis(ticks * 10)
    }

    /// SIGKILL, and wait until the process is gone.
    pub(crate) async fn kill(mut self) {
        self.child.start_kill().unwrap();
        tokio::time::timeout(TIMEOUT, self.child.wait())
            .await
            .expect("the killed server did not exit")
            .unwrap();
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }
}

/// Keeps `line`, dropping the oldest past [`KEPT_LOG_LINES`].
fn remember(log: &Mutex<VecDeque<String>>, line: &str) {
    let mut log = log.lock().unwrap();
    if log.len() == KEPT_LOG_LINES {
        log.pop_front();
    }
    log.push_back(line.to_owned());
}

/// A stream-mode client of `path` (e.g. `/m/stream?since=3&epoch=e`).
pub(crate) async fn stream_client(addr: SocketAddr, path: &str) -> Ws {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "purly.stream".parse().unwrap());
    let (ws, _) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(request))
        .await
        .expect("connect timed out")
        .unwrap();
    ws
}

/// The next frame's messages; `None` once the connection is gone (or after `TIMEOUT`).
pub(crate) async fn next_frame(ws: &mut Ws) -> Option<Vec<Value>> {
    loop {
        match tokio::time::timeout(TIMEOUT, ws.next()).await.ok()?? {
            Ok(Message::Text(text)) => return serde_json::from_str(&text).ok(),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

pub(crate) async fn send(ws: &mut Ws, text: String) -> bool {
    ws.send(Message::text(text)).await.is_ok()
}

/// `GET path` over plain HTTP/1.1: the status and the body.
pub(crate) async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let response = tokio::time::timeout(TIMEOUT, async {
        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        socket.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        socket.read_to_string(&mut response).await.unwrap();
        response
    })
    .await
    .expect("GET timed out");
    let status = response[9..12].parse().unwrap();
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    (status, body)
}
