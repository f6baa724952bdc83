//! An event-stream client for the tests, on hyper's HTTP/1.1 client (not purly's): it opens
//! `GET .../events`, decodes gzip when the server sent it, and splits the body into events.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::Write;
use std::net::SocketAddr;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::Request;
use hyper_util::rt::TokioIo;
use purly::serde_json::{self, Value};

use super::TIMEOUT;

/// One server-sent event: its `event:` (empty for the default), `id:` and `data:` lines, or
/// a comment.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    Comment(String),
    Message {
        event: String,
        id: Option<String>,
        data: String,
    },
}

impl Event {
    /// The data of a message event, as JSON.
    pub(crate) fn json(&self) -> Value {
        match self {
            Event::Message { data, .. } => serde_json::from_str(data).unwrap(),
            Event::Comment(c) => panic!("a comment, not a message: {c}"),
        }
    }
}

/// An open event stream.
pub(crate) struct EventStream {
    pub(crate) status: u16,
    pub(crate) headers: hyper::HeaderMap,
    body: Incoming,
    gzip: Option<flate2::write::GzDecoder<Vec<u8>>>,
    text: String,
}

/// `GET path` on `addr` with `headers`, read as an event stream.
pub(crate) async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> EventStream {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = Request::get(path).header("host", addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::new())).unwrap();
    let response = tokio::time::timeout(TIMEOUT, sender.send_request(request))
        .await
        .expect("no answer to the GET")
        .unwrap();
    let gzip = response
        .headers()
        .get("content-encoding")
        .is_some_and(|v| v == "gzip")
        .then(|| flate2::write::GzDecoder::new(Vec::new()));
    EventStream {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.into_body(),
        gzip,
        text: String::new(),
    }
}

impl EventStream {
    /// The next event (comments included); `None` once the stream ended (or after `TIMEOUT`).
    pub(crate) async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                return Some(parse(&block));
            }
            let frame = tokio::time::timeout(TIMEOUT, self.body.frame())
                .await
                .ok()??;
            let Ok(data) = frame.unwrap().into_data() else {
                continue;
            };
            let bytes = match &mut self.gzip {
                Some(decoder) => {
                    decoder.write_all(&data).unwrap();
                    decoder.flush().unwrap();
                    std::mem::take(decoder.get_mut())
                }
                None => data.to_vec(),
            };
            self.text.push_str(std::str::from_utf8(&bytes).unwrap());
        }
    }

    /// The next message event (skipping comments).
    pub(crate) async fn message(&mut self) -> Event {
        loop {
            match self.next().await.expect("the stream ended") {
                Event::Comment(_) => continue,
                message => return message,
            }
        }
    }

    /// The session token of the first event.
    pub(crate) async fn session(&mut self) -> String {
        match self.message().await {
            Event::Message { event, data, .. } if event == "session" => {
                let value: Value = serde_json::from_str(&data).unwrap();
                value["session"].as_str().unwrap().to_owned()
            }
            other => panic!("not a session event: {other:?}"),
        }
    }
}

fn parse(block: &str) -> Event {
    let block = block.trim_end_matches('\n');
    if let Some(comment) = block.strip_prefix(':') {
        return Event::Comment(comment.trim().to_owned());
    }
    let (mut event, mut id, mut data) = (String::new(), None, String::new());
    for line in block.lines() {
        match line.split_once(": ") {
            Some(("event", value)) => event = value.to_owned(),
            Some(("id", value)) => id = Some(value.to_owned()),
            Some(("data", value)) => data.push_str(value),
            _ => panic!("unexpected line {line:?}"),
        }
    }
    Event::Message { event, id, data }
}

/// `POST path` with `body`: the status and the body.
pub(crate) async fn post(addr: SocketAddr, path: &str, body: impl Into<Bytes>) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::post(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap();
    let response = tokio::time::timeout(TIMEOUT, sender.send_request(request))
        .await
        .expect("no answer to the POST")
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}
