//! Shared fixture for the integration tests: every receive has a timeout.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use purly::serde_json::{Map, Value};
use purly::ServerMessage;
use purly_channel::Client;

/// Generous: only a broken engine waits this long.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(20);

/// Awaits `future`, failing the test if it takes longer than [`TIMEOUT`]: no wait in a test
/// can hang it.
pub(crate) async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(TIMEOUT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {TIMEOUT:?}"))
}

/// The next batch, failing the test if none comes in time or the client closed.
pub(crate) async fn recv(client: &mut Client) -> Vec<ServerMessage> {
    tokio::time::timeout(TIMEOUT, client.recv())
        .await
        .expect("timed out waiting for a batch")
        .expect("the client closed")
}

/// Receives until the client's confirmed version reaches `version`.
pub(crate) async fn recv_until_version(client: &mut Client, version: u64) {
    while client.replica().version() < Some(version) {
        recv(client).await;
    }
}

/// Settles the client's pending updates, with a timeout.
pub(crate) async fn settle(client: &mut Client) {
    tokio::time::timeout(TIMEOUT, client.settle())
        .await
        .expect("timed out settling")
        .expect("settling failed");
}

/// The JSON object `value`.
pub(crate) fn obj(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// The engine's version of `model`.
pub(crate) fn version(engine: &purly::Engine, model: &str) -> u64 {
    engine.read(model, |_, version| version).unwrap()
}

/// A stream-mode client without a client key, as a raw client that sends frames of its own
/// making: its message ids mean what PROTOCOL.md section 4 says (scoped to the connection).
pub(crate) async fn keyless(engine: &purly::Engine, model: &str) -> purly_channel::Client {
    purly_channel::Client::connect_with(engine, model, purly::JoinOptions::stream())
        .await
        .unwrap()
}
