//! A subscriber's connection for the load generator: a WebSocket, or purly's event stream
//! (PROTOCOL.md section 10: `GET .../events`, read with hyper's HTTP/1.1 client), each handing
//! over the text of one frame at a time.

use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use purly_hyper::hyper::body::{Bytes, Incoming};
use purly_hyper::hyper::client::conn::http1;
use purly_hyper::hyper::Request;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use super::Ws;

/// What a link received.
pub(crate) enum Got {
    /// One frame's text.
    Text(String),
    /// Something else (a ping, a comment).
    Other,
    /// The connection is over.
    End,
}

/// A subscriber's connection.
pub(crate) enum Link {
    Ws(Box<Ws>),
    Events {
        body: Incoming,
        /// Received and not yet split into events.
        buffer: Vec<u8>,
    },
}

impl Link {
    /// Opens `GET path` (an `/events` route) on `stream`, as an event stream.
    pub(crate) async fn events(stream: TcpStream, host: &str, path: &str) -> Result<Link, String> {
        let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let request = Request::get(path)
            .header("host", host)
            .header("accept", "text/event-stream")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        if response.status() != 200 {
            return Err(format!("GET {path}: {}", response.status()));
        }
        Ok(Link::Events {
            body: response.into_body(),
            buffer: Vec::new(),
        })
    }

    /// The next thing received.
    pub(crate) async fn next(&mut self) -> Got {
        match self {
            Link::Ws(ws) => match ws.next().await {
                Some(Ok(Message::Text(text))) => Got::Text(text.to_string()),
                Some(Ok(_)) => Got::Other,
                _ => Got::End,
            },
            Link::Events { body, buffer } => loop {
                if let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
                    let event: Vec<u8> = buffer.drain(..end + 2).collect();
                    let text = String::from_utf8_lossy(&event);
                    // One `data:` line per event (purly's frames are one line).
                    return match text.lines().find_map(|l| l.strip_prefix("data: ")) {
                        Some(data) if !text.starts_with("event:") => Got::Text(data.to_owned()),
                        _ => Got::Other,
                    };
                }
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            buffer.extend_from_slice(&data);
                        }
                    }
                    _ => return Got::End,
                }
            },
        }
    }

    /// Sends text on a WebSocket (an event stream sends nothing down its GET).
    pub(crate) async fn send_text(&mut self, text: &str) -> bool {
        match self {
            Link::Ws(ws) => ws.send(Message::text(text.to_owned())).await.is_ok(),
            Link::Events { .. } => false,
        }
    }
}
