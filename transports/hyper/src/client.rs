//! [`WsClient`]: a Rust client for a purly server, in stream mode, with a replica.

use futures_util::{SinkExt, StreamExt};
use hyper::header::{HeaderValue, SEC_WEBSOCKET_PROTOCOL};
use purly::serde_json::{Map, Value};
use purly::{
    parse_server_frame, ClientConnection, Frame, FrameError, Message, Mode, Replica, ReplicaError,
    ServerMessage,
};
use thiserror::Error;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::upgrade::STREAM_SUBPROTOCOL;

/// How long [`WsClient::disconnect`] waits for the server to answer its close.
pub const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why a [`WsClient`] call failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum WsClientError {
    /// The URL is not a `ws://` URL the client can request.
    #[error("invalid stream URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The connection or the handshake failed (the server may have answered with an HTTP
    /// error status: 400, 403, 503...).
    #[error("could not connect: {0}")]
    Connect(#[source] Box<WsError>),
    /// The server did not accept the `purly.stream` subprotocol.
    #[error("the server does not speak stream mode")]
    NoStreamMode,
    /// Updates and signals carry a JSON object.
    #[error("the content of a message is a JSON object")]
    NotAnObject,
    /// Writing to the socket failed.
    #[error("send failed: {0}")]
    Send(#[source] Box<WsError>),
    /// The connection is closed.
    #[error("the connection is closed")]
    Closed,
}

/// Why a [`WsClient`] stopped receiving.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ended {
    /// The server closed the connection with this close code (1001: shutdown, 1009: frame
    /// too large, 1013: fell too far behind).
    Closed(Option<u16>),
    /// The socket failed.
    Lost(String),
    /// The server sent a frame this client could not read.
    BadFrame(FrameError),
    /// The server's messages could not be applied to the replica.
    Replica(ReplicaError),
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket connection to one model of a purly server, in stream mode.
///
/// It has the interface of the in-process `purly_channel::Client` (both implement
/// [`ClientConnection`]): updates go through a [`Replica`], [`recv`](WsClient::recv) applies each
/// received frame to it. [`reconnect`](WsClient::reconnect) resumes after the last version
/// it saw and resends the updates still unconfirmed.
pub struct WsClient {
    url: String,
    socket: Socket,
    replica: Replica,
    ended: Option<Ended>,
}

impl WsClient {
    /// Connects to a stream URL, e.g. `ws://127.0.0.1:8000/model/stream`.
    /// The client names itself with its replica's client key (`?client=KEY`), so that an
    /// update resent after a reconnect is applied at most once (PROTOCOL.md section 9).
    pub async fn connect(url: &str) -> Result<Self, WsClientError> {
        WsClient::connect_with(url, Replica::new(Mode::Stream)).await
    }

    /// Connects with a replica of your own, e.g. one made with
    /// [`Replica::with_client_key`] to keep a client key across restarts of the program.
    pub async fn connect_with(url: &str, replica: Replica) -> Result<Self, WsClientError> {
        let socket = open(url, &replica, false).await?;
        Ok(WsClient {
            url: url.to_owned(),
            socket,
            replica,
            ended: None,
        })
    }

    /// Reconnects to the same URL, resuming after the replica's version: the server replays
    /// what was missed or sends a snapshot. Updates still unconfirmed are sent again (with
    /// their ids, under the same client key), since the client cannot know which of them
    /// reached the server: the server applies those it had not, and answers the others again.
    pub async fn reconnect(&mut self) -> Result<(), WsClientError> {
        let _ = self.socket.close(None).await;
        self.socket = open(&self.url, &self.replica, true).await?;
        self.ended = None;
        let resend: Vec<Message> = self.replica.pending_updates().collect();
        if !resend.is_empty() {
            self.send_frame(&Frame::new(resend)).await?;
        }
        Ok(())
    }

    /// Closes the socket but keeps the replica, for a later [`reconnect`](WsClient::reconnect).
    /// Waits up to [`CLOSE_TIMEOUT`] for the server to answer the close; a server that never
    /// does is dropped then.
    pub async fn disconnect(&mut self) {
        let close = async {
            let _ = self.socket.close(None).await;
            while let Some(Ok(_)) = self.socket.next().await {}
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
        self.ended = Some(Ended::Closed(None));
    }

    /// The stream URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The replica: the state as this client sees it, its version and pending updates.
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// The model's state as this client sees it.
    pub fn state(&self) -> &Map<String, Value> {
        self.replica.state()
    }

    /// Why receiving stopped, once it has.
    pub fn ended(&self) -> Option<&Ended> {
        self.ended.as_ref()
    }

    /// Merges `content` into the model (tracked by the replica).
    pub async fn update(&mut self, content: Value) -> Result<(), WsClientError> {
        let Value::Object(content) = content else {
            return Err(WsClientError::NotAnObject);
        };
        let message = self.replica.update(content);
        self.send_frame(&Frame::new(vec![message])).await
    }

    /// Relays `content` to the model's other clients.
    pub async fn signal(&mut self, content: Value) -> Result<(), WsClientError> {
        let Value::Object(content) = content else {
            return Err(WsClientError::NotAnObject);
        };
        self.send_frame(&Frame::new(vec![Message::signal(content)]))
            .await
    }

    /// Sets this connection's presence (a JSON object of at most 4 KiB), or clears it
    /// (`None`): the model's other stream-mode clients see it (PROTOCOL.md section 11). At
    /// most 20 a second are accepted; past that the server answers `rate_limited`.
    pub async fn set_presence(&mut self, presence: Option<Value>) -> Result<(), WsClientError> {
        let presence = match presence {
            Some(Value::Object(map)) => Some(map),
            Some(_) => return Err(WsClientError::NotAnObject),
            None => None,
        };
        let message = self.replica.set_presence(presence);
        self.send_frame(&Frame::new(vec![message])).await
    }

    /// Sends a frame built in code, as is.
    pub async fn send_frame(&mut self, frame: &Frame) -> Result<(), WsClientError> {
        self.send_text(frame.to_json()).await
    }

    /// Sends raw text as one frame (for testing what a server does with it).
    pub async fn send_text(&mut self, text: String) -> Result<(), WsClientError> {
        if self.ended.is_some() {
            return Err(WsClientError::Closed);
        }
        self.socket
            .send(WsMessage::text(text))
            .await
            .map_err(|e| WsClientError::Send(Box::new(e)))
    }

    /// The next frame from the server, applied to the replica. `None` once the connection is
    /// over ([`ended`](WsClient::ended) says why).
    pub async fn recv(&mut self) -> Option<Vec<ServerMessage>> {
        if self.ended.is_some() {
            return None;
        }
        loop {
            let ending = match self.socket.next().await {
                Some(Ok(WsMessage::Text(text))) => match parse_server_frame(&text) {
                    Ok(batch) => match self.replica.receive(&batch) {
                        Ok(()) => return Some(batch),
                        Err(error) => Ended::Replica(error),
                    },
                    Err(error) => Ended::BadFrame(error),
                },
                Some(Ok(WsMessage::Close(frame))) => Ended::Closed(frame.map(|f| f.code.into())),
                Some(Ok(_)) => continue,
                Some(Err(error)) => Ended::Lost(error.to_string()),
                None => Ended::Closed(None),
            };
            self.ended = Some(ending);
            return None;
        }
    }

    /// Receives until none of this client's updates awaits confirmation.
    pub async fn settle(&mut self) -> Result<(), WsClientError> {
        match ClientConnection::settle(self).await {
            true => Ok(()),
            false => Err(WsClientError::Closed),
        }
    }

    /// Closes the connection cleanly.
    pub async fn close(mut self) {
        self.disconnect().await;
    }
}

impl ClientConnection for WsClient {
    type Error = WsClientError;

    async fn update(&mut self, content: Value) -> Result<(), WsClientError> {
        WsClient::update(self, content).await
    }

    async fn signal(&mut self, content: Value) -> Result<(), WsClientError> {
        WsClient::signal(self, content).await
    }

    async fn recv(&mut self) -> Option<Vec<ServerMessage>> {
        WsClient::recv(self).await
    }

    fn replica(&self) -> &Replica {
        &self.replica
    }
}

impl std::fmt::Debug for WsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsClient")
            .field("url", &self.url)
            .field("version", &self.replica.version())
            .field("pending", &self.replica.pending())
            .field("ended", &self.ended)
            .finish()
    }
}

/// Opens the stream with the replica's client key, and (`resume`) its version and epoch.
async fn open(url: &str, replica: &Replica, resume: bool) -> Result<Socket, WsClientError> {
    let invalid = |reason: String| WsClientError::InvalidUrl {
        url: url.to_owned(),
        reason,
    };
    let mut query = Vec::new();
    if let Some(key) = replica.client_key() {
        query.push(format!("client={key}"));
    }
    if let (true, Some(version), Some(epoch)) = (resume, replica.version(), replica.epoch()) {
        query.push(format!("since={version}&epoch={epoch}"));
    }
    let mut target = url.to_owned();
    if !query.is_empty() {
        let separator = if target.contains('?') { '&' } else { '?' };
        target = format!("{target}{separator}{}", query.join("&"));
    }
    let mut request = target
        .into_client_request()
        .map_err(|e| invalid(e.to_string()))?;
    request.headers_mut().insert(
        SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(STREAM_SUBPROTOCOL),
    );
    // A snapshot can be as large as a model (64 MiB by default), plus its header.
    let config = WebSocketConfig::default()
        .max_message_size(Some(256 << 20))
        .max_frame_size(Some(256 << 20));
    let (socket, response) =
        tokio_tungstenite::connect_async_with_config(request, Some(config), true)
            .await
            .map_err(|e| WsClientError::Connect(Box::new(e)))?;
    let accepted = response
        .headers()
        .get(SEC_WEBSOCKET_PROTOCOL)
        .is_some_and(|p| p == STREAM_SUBPROTOCOL);
    if !accepted {
        return Err(WsClientError::NoStreamMode);
    }
    Ok(socket)
}
