//! [`ClientConnection`]: what every client transport offers, so that client code (tests, the
//! `Layout`) runs over the in-process channel and a WebSocket alike.

use std::future::Future;

use serde_json::{Map, Value};

use super::replica::Replica;
use crate::protocol::ServerMessage;

/// A client's connection to one model, whatever carries it.
///
/// Implemented by `purly_channel::Client` (in process) and `purly_hyper::WsClient` (over a
/// WebSocket, stream mode). Both keep a [`Replica`] up to date with every batch they receive.
pub trait ClientConnection: Send {
    /// Why a send failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Merges `content` (a JSON object) into the model; the replica shows it at once and
    /// confirms it when the server's echo or `ack` arrives.
    fn update(&mut self, content: Value) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Relays `content` (a JSON object) to the model's other clients.
    fn signal(&mut self, content: Value) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// The next batch from the server, already applied to the replica; `None` once the
    /// connection is over.
    fn recv(&mut self) -> impl Future<Output = Option<Vec<ServerMessage>>> + Send;

    /// The client's replica of the model.
    fn replica(&self) -> &Replica;

    /// Who else is connected to the model: the other connections' presences, by presence id
    /// (PROTOCOL.md section 11), as of the last batch received.
    fn presences(&self) -> &Map<String, Value> {
        self.replica().presences()
    }

    /// The model as this client sees it: the server's state plus its pending updates.
    fn state(&self) -> &Map<String, Value> {
        self.replica().state()
    }

    /// Receives until none of this client's updates awaits confirmation. Returns `false` if
    /// the connection ended first.
    fn settle(&mut self) -> impl Future<Output = bool> + Send {
        async move {
            while self.replica().pending() > 0 {
                if self.recv().await.is_none() {
                    return false;
                }
            }
            true
        }
    }
}
