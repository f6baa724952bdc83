//! Shared fixture: a real server on 127.0.0.1:0 and a raw WebSocket client (tokio-tungstenite,
//! not purly's own), with a timeout on every receive.
#![allow(dead_code, clippy::unwrap_used)]

pub(crate) mod browser;
pub(crate) mod events;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use purly::serde_json::Value;
use purly_hyper::Purly;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub(crate) const TIMEOUT: Duration = Duration::from_secs(20);

/// Awaits `future`, failing the test if it takes longer than [`TIMEOUT`]: no wait in a test
/// can hang it.
pub(crate) async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(TIMEOUT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {TIMEOUT:?}"))
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set (relative to the workspace), else the
/// workspace's `target/`. Screenshots and the unpacked original client live there.
pub(crate) fn target_dir() -> std::path::PathBuf {
    let workspace = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    match std::env::var_os("CARGO_TARGET_DIR").map(std::path::PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    }
}

/// A SQLite store in its own temporary directory, removed with the store.
struct TempStore {
    store: purly_sqlite::SqliteStore,
    _dir: tempfile::TempDir,
}

impl purly::Store for TempStore {
    fn load(
        &self,
        model: &purly::ModelName,
        create: Option<purly::NewModel>,
        done: purly::LoadDone,
    ) {
        self.store.load(model, create, done)
    }
    fn append(&self, batch: purly::Batch, done: purly::AppendDone) {
        self.store.append(batch, done)
    }
    fn remove(&self, model: &purly::ModelName, done: purly::RemoveDone) {
        self.store.remove(model, done)
    }
    fn checkpoint_policy(&self) -> purly::CheckpointPolicy {
        self.store.checkpoint_policy()
    }
}

/// The engine the suites run against: the server's default, persistent mode (a SQLite store in
/// a temporary directory), or memory only with `PURLY_TEST_STORE=memory`.
pub(crate) fn builder(config: purly::Config) -> purly::EngineBuilder {
    let builder = purly::Engine::builder().config(config);
    match std::env::var("PURLY_TEST_STORE").as_deref() {
        Ok("memory") => builder,
        Ok("sqlite") | Err(_) => {
            let dir = tempfile::tempdir().unwrap();
            let store = purly_sqlite::SqliteStore::open(dir.path(), Default::default()).unwrap();
            builder.store(TempStore { store, _dir: dir })
        }
        Ok(other) => panic!("PURLY_TEST_STORE={other}: memory or sqlite"),
    }
}

/// [`builder`] with the default configuration, built.
pub(crate) fn engine() -> purly::Engine {
    builder(purly::Config::default()).build()
}

/// [`builder`] with `config`, built.
pub(crate) fn engine_with(config: purly::Config) -> purly::Engine {
    builder(config).build()
}

pub(crate) type Raw = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A purly server on an ephemeral loopback port, stopped when dropped.
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    pub(crate) purly: Purly,
    accept: JoinHandle<()>,
}

impl Server {
    pub(crate) async fn start(purly: Purly) -> Server {
        Server::start_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), purly).await
    }

    /// Serves on a listener of the caller's (e.g. the address of a server that stopped).
    pub(crate) async fn start_on(listener: TcpListener, purly: Purly) -> Server {
        let addr = listener.local_addr().unwrap();
        let handler = purly.clone();
        // The accept loop embedders use; stopped by aborting it.
        let accept =
            tokio::spawn(async move { handler.serve(listener, std::future::pending()).await });
        Server {
            addr,
            purly,
            accept,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    pub(crate) fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Binds `addr` again, once a stopped server's accept loop let go of it (its task is aborted,
/// and dropped a moment later): how a test restarts a server on the same address.
pub(crate) async fn bind_again(addr: SocketAddr) -> TcpListener {
    within(async {
        loop {
            match TcpListener::bind(addr).await {
                Ok(listener) => return listener,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .await
}

/// An app page of one's own, not purly's: it imports the client as `window.purly` and marks
/// its body ready.
pub(crate) fn app() -> purly_hyper::hyper::Response<purly_hyper::Body> {
    const APP: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>app</title></head><body>
<script type="module">
  import * as purly from "/purly-client.js";
  window.purly = purly;
  document.body.dataset.ready = "yes";
</script></body></html>"#;
    let mut response = purly_hyper::hyper::Response::new(purly_hyper::Body::from(APP));
    response
        .headers_mut()
        .insert("content-type", "text/html; charset=utf-8".parse().unwrap());
    response
}

impl Drop for Server {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Opens a raw WebSocket; `protocol` is the subprotocol offered (stream mode), `origin` an
/// `Origin` header.
pub(crate) async fn raw(
    url: &str,
    protocol: Option<&str>,
    origin: Option<&str>,
) -> Result<Raw, tokio_tungstenite::tungstenite::Error> {
    let mut headers = Vec::new();
    headers.extend(protocol.map(|p| ("sec-websocket-protocol", p)));
    headers.extend(origin.map(|o| ("origin", o)));
    raw_with(url, &headers).await
}

/// Opens a raw WebSocket with extra request headers.
pub(crate) async fn raw_with(
    url: &str,
    headers: &[(&str, &str)],
) -> Result<Raw, tokio_tungstenite::tungstenite::Error> {
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        let name =
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        request
            .headers_mut()
            .insert(name, HeaderValue::from_str(value).unwrap());
    }
    tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(request))
        .await
        .expect("connect timed out")
        .map(|(ws, _)| ws)
}

pub(crate) async fn stream_client(server: &Server, model: &str) -> Raw {
    raw(
        &server.url(&format!("/{model}/stream")),
        Some("purly.stream"),
        None,
    )
    .await
    .unwrap()
}

pub(crate) async fn compat_client(server: &Server, model: &str) -> Raw {
    raw(&server.url(&format!("/{model}/stream")), None, None)
        .await
        .unwrap()
}

/// The next text frame, parsed; fails on timeout, close or a non-array.
pub(crate) async fn next_frame(ws: &mut Raw) -> Vec<Value> {
    loop {
        let message = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("timed out waiting for a frame")
            .expect("the stream ended")
            .expect("the socket failed");
        match message {
            Message::Text(text) => {
                return match purly::serde_json::from_str(&text).unwrap() {
                    Value::Array(messages) => messages,
                    other => panic!("a frame is an array, got {other}"),
                }
            }
            Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => continue,
        }
    }
}

/// Waits for the server's close frame; returns its code.
pub(crate) async fn close_code(ws: &mut Raw) -> Option<u16> {
    loop {
        match tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("timed out waiting for close")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f: CloseFrame| f.code.into()),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

pub(crate) async fn send(ws: &mut Raw, frame: &str) {
    ws.send(Message::text(frame.to_owned())).await.unwrap();
}

pub(crate) fn update(content: &str) -> String {
    format!(r#"[{{"header":{{"type":"update","version":"0.1"}},"content":{content}}}]"#)
}

pub(crate) fn update_with_id(id: &str, content: &str) -> String {
    format!(r#"[{{"header":{{"type":"update","id":"{id}"}},"content":{content}}}]"#)
}

/// A plain HTTP GET to the test server over a fresh connection: (status, body).
pub(crate) async fn get(server: &Server, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    get_from(server.addr, path, headers).await
}

/// A plain HTTP GET to any address over a fresh connection: (status, body).
pub(crate) async fn get_from(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(TIMEOUT, socket.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
