//! [`EventsClient`]: a Rust client over the event stream (PROTOCOL.md section 10), in the shape
//! of [`WsClient`](crate::WsClient), for networks that break WebSockets: server-sent events down
//! (`GET .../events`), POSTs up (`POST .../send?session=S`), on hyper's HTTP/1.1 client.

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use purly::serde_json::{self, Map, Value};
use purly::{
    parse_server_frame, ClientConnection, Frame, FrameError, Message, Mode, Replica, ReplicaError,
    ServerMessage,
};
use thiserror::Error;
use tokio::net::TcpStream;

/// Why an [`EventsClient`] call failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EventsClientError {
    /// The URL is not an `http://` (or `ws://`) URL of a model's route.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The connection failed.
    #[error("could not connect: {0}")]
    Connect(String),
    /// The server answered with an error status (400, 403, 404, 413, 503...).
    #[error("the server answered {status}: {body}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The response body (a JSON error).
        body: String,
    },
    /// The stream did not start with a `session` event.
    #[error("the event stream did not start with its session")]
    NoSession,
    /// Updates and signals carry a JSON object.
    #[error("the content of a message is a JSON object")]
    NotAnObject,
    /// The stream has ended.
    #[error("the event stream is closed")]
    Closed,
}

/// Why an [`EventsClient`] stopped receiving.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventsEnded {
    /// The server ended the stream (a shutdown, or the session was ended).
    Closed,
    /// The connection failed.
    Lost(String),
    /// The server sent a frame this client could not read.
    BadFrame(FrameError),
    /// The server's messages could not be applied to the replica.
    Replica(ReplicaError),
}

/// An event-stream session with one model of a purly server.
///
/// It has the interface of [`WsClient`](crate::WsClient) (both implement [`ClientConnection`],
/// so a [`Layout`](purly::Layout) runs over either): updates go through a [`Replica`] with a
/// client key, [`recv`](EventsClient::recv) applies each received frame to it, and
/// [`reconnect`](EventsClient::reconnect) resumes (`Last-Event-ID` and the epoch) and resends
/// the updates still unconfirmed, applied at most once.
pub struct EventsClient {
    /// `host:port`.
    authority: String,
    /// The path of the model's routes, without `events`/`send`: `/prefix/model/`.
    base: String,
    stream: Incoming,
    /// What arrived of the stream and is not an event yet.
    text: Vec<u8>,
    session: String,
    /// The connection POSTs go on (the stream's own is busy streaming).
    sender: Option<SendRequest<Full<Bytes>>>,
    replica: Replica,
    ended: Option<EventsEnded>,
}

impl EventsClient {
    /// Opens an event stream to a model: `http://host:port/{model}/events` (a `/stream` URL,
    /// `ws://` or `http://`, works too). The client names itself with its replica's client key.
    pub async fn connect(url: &str) -> Result<Self, EventsClientError> {
        EventsClient::connect_with(url, Replica::new(Mode::Stream)).await
    }

    /// [`connect`](EventsClient::connect) with a replica of your own (one made with
    /// [`Replica::with_client_key`], say).
    pub async fn connect_with(url: &str, replica: Replica) -> Result<Self, EventsClientError> {
        let (authority, base) = split_url(url)?;
        let (stream, session, text) = open(&authority, &base, &replica, false).await?;
        Ok(EventsClient {
            authority,
            base,
            stream,
            text,
            session,
            sender: None,
            replica,
            ended: None,
        })
    }

    /// Opens a new stream, resuming after the replica's version (the server replays what was
    /// missed, or sends a snapshot), and resends the updates still unconfirmed with their ids.
    pub async fn reconnect(&mut self) -> Result<(), EventsClientError> {
        let (stream, session, text) =
            open(&self.authority, &self.base, &self.replica, true).await?;
        (self.stream, self.session, self.text) = (stream, session, text);
        self.sender = None;
        self.ended = None;
        let resend: Vec<Message> = self.replica.pending_updates().collect();
        if !resend.is_empty() {
            self.send_frame(&Frame::new(resend)).await?;
        }
        Ok(())
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
    pub fn ended(&self) -> Option<&EventsEnded> {
        self.ended.as_ref()
    }

    /// Merges `content` into the model (tracked by the replica).
    pub async fn update(&mut self, content: Value) -> Result<(), EventsClientError> {
        let Value::Object(content) = content else {
            return Err(EventsClientError::NotAnObject);
        };
        let message = self.replica.update(content);
        self.send_frame(&Frame::new(vec![message])).await
    }

    /// Relays `content` to the model's other clients.
    pub async fn signal(&mut self, content: Value) -> Result<(), EventsClientError> {
        let Value::Object(content) = content else {
            return Err(EventsClientError::NotAnObject);
        };
        self.send_frame(&Frame::new(vec![Message::signal(content)]))
            .await
    }

    /// Sends a frame built in code, as is.
    pub async fn send_frame(&mut self, frame: &Frame) -> Result<(), EventsClientError> {
        self.send_text(frame.to_json()).await
    }

    /// POSTs raw text as one frame; its answers arrive on the stream. Resolves once the
    /// server accepted it (202).
    pub async fn send_text(&mut self, text: String) -> Result<(), EventsClientError> {
        if self.ended.is_some() {
            return Err(EventsClientError::Closed);
        }
        let sender = match &mut self.sender {
            Some(sender) if sender.is_ready() => sender,
            _ => self.sender.insert(handshake(&self.authority).await?),
        };
        let request = Request::post(format!("{}send?session={}", self.base, self.session))
            .header("host", &self.authority)
            .header("content-type", "application/json");
        let accepted = exchange(sender, request, Bytes::from(text), StatusCode::ACCEPTED).await?;
        // Read to its (empty) end, so that the connection serves the next POST.
        let _ = accepted.collect().await;
        Ok(())
    }

    /// The next frame from the server, applied to the replica. `None` once the stream is over
    /// ([`ended`](EventsClient::ended) says why).
    pub async fn recv(&mut self) -> Option<Vec<ServerMessage>> {
        if self.ended.is_some() {
            return None;
        }
        let ending = match next_event(&mut self.stream, &mut self.text).await {
            Ok(Some(Event { data, .. })) => match parse_server_frame(&data) {
                Ok(batch) => match self.replica.receive(&batch) {
                    Ok(()) => return Some(batch),
                    Err(error) => EventsEnded::Replica(error),
                },
                Err(error) => EventsEnded::BadFrame(error),
            },
            Ok(None) => EventsEnded::Closed,
            Err(error) => EventsEnded::Lost(error),
        };
        self.ended = Some(ending);
        None
    }

    /// Receives until none of this client's updates awaits confirmation.
    pub async fn settle(&mut self) -> Result<(), EventsClientError> {
        match ClientConnection::settle(self).await {
            true => Ok(()),
            false => Err(EventsClientError::Closed),
        }
    }
}

impl ClientConnection for EventsClient {
    type Error = EventsClientError;

    async fn update(&mut self, content: Value) -> Result<(), EventsClientError> {
        EventsClient::update(self, content).await
    }

    async fn signal(&mut self, content: Value) -> Result<(), EventsClientError> {
        EventsClient::signal(self, content).await
    }

    async fn recv(&mut self) -> Option<Vec<ServerMessage>> {
        EventsClient::recv(self).await
    }

    fn replica(&self) -> &Replica {
        &self.replica
    }
}

impl std::fmt::Debug for EventsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventsClient")
            .field("authority", &self.authority)
            .field("base", &self.base)
            .field("version", &self.replica.version())
            .field("pending", &self.replica.pending())
            .field("ended", &self.ended)
            .finish()
    }
}

/// `host:port` and the routes' base path (`/prefix/model/`) of a model URL.
fn split_url(url: &str) -> Result<(String, String), EventsClientError> {
    let invalid = |reason: &str| EventsClientError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let rest = ["http://", "ws://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme))
        .ok_or_else(|| invalid("an http:// (or ws://) URL; TLS is not supported by this client"))?;
    let (authority, path) = rest.split_once('/').ok_or_else(|| invalid("no path"))?;
    let path = path.split('?').next().unwrap_or_default();
    let base = ["events", "stream"]
        .iter()
        .find_map(|route| path.strip_suffix(route))
        .filter(|base| base.ends_with('/'))
        .ok_or_else(|| invalid("the path ends with /events (or /stream)"))?;
    Ok((authority.to_owned(), format!("/{base}")))
}

/// A new HTTP/1.1 connection to `authority`.
async fn handshake(authority: &str) -> Result<SendRequest<Full<Bytes>>, EventsClientError> {
    let socket = TcpStream::connect(authority)
        .await
        .map_err(|e| EventsClientError::Connect(e.to_string()))?;
    let _ = socket.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(socket))
        .await
        .map_err(|e| EventsClientError::Connect(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "event-stream client connection ended");
        }
    });
    Ok(sender)
}

/// Sends `request` with `body` on `sender`: the response's body if its status is `expected`,
/// else an error with the status and the body's text.
async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    request: hyper::http::request::Builder,
    body: Bytes,
    expected: StatusCode,
) -> Result<Incoming, EventsClientError> {
    let request = request
        .body(Full::new(body))
        .map_err(|e| EventsClientError::Connect(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| EventsClientError::Connect(e.to_string()))?;
    let status = response.status();
    if status == expected {
        return Ok(response.into_body());
    }
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    Err(EventsClientError::Status {
        status: status.as_u16(),
        body,
    })
}

/// Opens the stream (with the replica's key, and with `resume` its epoch and last version as
/// `Last-Event-ID`): the body, the session's token, and what arrived after its event.
async fn open(
    authority: &str,
    base: &str,
    replica: &Replica,
    resume: bool,
) -> Result<(Incoming, String, Vec<u8>), EventsClientError> {
    let mut sender = handshake(authority).await?;
    let mut query = Vec::new();
    if let Some(key) = replica.client_key() {
        query.push(format!("client={key}"));
    }
    let resume_from = match (resume, replica.version(), replica.epoch()) {
        (true, Some(version), Some(epoch)) => Some((version, epoch)),
        _ => None,
    };
    if let Some((_, epoch)) = resume_from {
        query.push(format!("epoch={epoch}"));
    }
    let mut request = Request::get(format!("{base}events?{}", query.join("&")))
        .header("host", authority)
        .header("accept", "text/event-stream");
    if let Some((version, _)) = resume_from {
        request = request.header("last-event-id", version.to_string());
    }
    let mut body = exchange(&mut sender, request, Bytes::new(), StatusCode::OK).await?;
    let mut text = Vec::new();
    let session = match next_event(&mut body, &mut text).await {
        Ok(Some(Event { event, data })) if event == "session" => {
            serde_json::from_str::<Value>(&data)
                .ok()
                .and_then(|v| v.get("session")?.as_str().map(str::to_owned))
        }
        _ => None,
    };
    let session = session.ok_or(EventsClientError::NoSession)?;
    Ok((body, session, text))
}

/// One message event of the stream.
struct Event {
    event: String,
    data: String,
}

/// The next message event of `body` (comments skipped), with `text` the bytes received and
/// not yet read (an event is decoded once whole: a character may span two chunks); `None`
/// once the stream ended.
async fn next_event(body: &mut Incoming, text: &mut Vec<u8>) -> Result<Option<Event>, String> {
    loop {
        while let Some(end) = text.windows(2).position(|w| w == b"\n\n") {
            let bytes: Vec<u8> = text.drain(..end + 2).collect();
            let block = String::from_utf8_lossy(&bytes);
            let (mut event, mut data) = (String::new(), String::new());
            for line in block.lines() {
                match line.split_once(':') {
                    Some(("event", value)) => event = value.trim_start().to_owned(),
                    Some(("data", value)) => {
                        data.push_str(value.strip_prefix(' ').unwrap_or(value))
                    }
                    // Comments (`: ping`), `id:` and anything else are not needed here.
                    _ => {}
                }
            }
            if !data.is_empty() {
                return Ok(Some(Event { event, data }));
            }
        }
        let Some(frame) = body.frame().await else {
            return Ok(None);
        };
        let frame = frame.map_err(|e| e.to_string())?;
        if let Ok(data) = frame.into_data() {
            text.extend_from_slice(&data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_routes_base() {
        let split = |url: &str| split_url(url).ok();
        assert_eq!(
            split("http://127.0.0.1:8000/m/events"),
            Some(("127.0.0.1:8000".to_owned(), "/m/".to_owned()))
        );
        assert_eq!(
            split("ws://h:1/sync/m/stream?x=1"),
            Some(("h:1".to_owned(), "/sync/m/".to_owned()))
        );
        assert_eq!(split("https://h/m/events"), None);
        assert_eq!(split("http://h/m/state"), None);
        assert_eq!(split("http://h/events"), None);
    }
}
