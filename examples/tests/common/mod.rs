//! Runs the real `server` example as a child process on a free loopback port, and talks to it
//! with plain tokio-tungstenite clients. Every wait has a timeout.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use purly::serde_json::{self, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub(crate) const TIMEOUT: Duration = Duration::from_secs(20);

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

/// A server process; killed (SIGKILL) when dropped.
pub(crate) struct ServerProcess {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
}

impl ServerProcess {
    /// Starts the server on a free port with `args`, and waits until it serves.
    pub(crate) async fn start(args: &[&str]) -> ServerProcess {
        let mut child = Command::new(server_binary())
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
        let addr = tokio::time::timeout(TIMEOUT, async {
            while let Some(line) = lines.next_line().await.unwrap() {
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
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        ServerProcess { child, addr }
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
