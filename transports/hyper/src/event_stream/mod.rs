//! The event-stream transport (PROTOCOL.md section 10): a stream-mode session over plain
//! HTTP/1.1, for networks whose proxies refuse or kill WebSockets. `GET {prefix}{model}/events`
//! answers with the session's frames as server-sent events; `POST
//! {prefix}{model}/send?session=S` hands the session a frame, whose answers arrive on the
//! stream.
//!
//! A session lives as long as its event stream: the stream's body holds it, and the registry
//! of open sessions ([`Sessions`]) lets a POST find it by its token. The body is pulled by
//! hyper as the socket takes it (no task of its own); a closed stream is noticed at the next
//! write, at the latest its next ping, and drops the session.

mod encoder;
mod sessions;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use http_body_util::{BodyExt, Limited};
use hyper::body::Bytes;
use hyper::header::{HeaderValue, ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use purly::{ErrorCode, FrameError, JoinOptions, ModelName, Outbox, Received, Session};
use tokio::time::{Instant, Sleep};
use tokio_util::task::task_tracker::TaskTrackerToken;

use crate::access::Decision;
use crate::admission::Permit;
use crate::body::Body;
use crate::http::{error_response, join_refused, load_timed_out};
use crate::join_request;
use crate::rate_limit::{FrameLimiter, Verdict};
use crate::upgrade::{Streams, Upgrade};

use encoder::Encoder;
pub(crate) use sessions::Sessions;
use sessions::{Entry, Registration};

/// Answers `GET {prefix}{model}/events`: joins the model (awaiting its load, at most
/// `join_timeout`) and streams the session.
pub(crate) fn open<B>(
    streams: Streams<'_>,
    sessions: &Arc<Sessions>,
    mut request: Request<B>,
    model: ModelName,
    decision: Decision,
) -> Upgrade {
    // Held by the stream: it keeps its place under the connection cap for as long as it lasts.
    let permit = request.extensions_mut().remove::<Arc<Permit>>();
    if permit.is_none() && streams.connections.len() >= streams.config.max_connections {
        return Upgrade::Now(error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is at its connection limit; retry later",
        ));
    }
    let mut options = JoinOptions::stream();
    if let Some(access) = decision.access() {
        options = options.access(access);
    }
    if let Some((since, epoch)) = join_request::resume_point(&request) {
        options = options.resume(since, epoch);
    }
    match join_request::client_key(&request, true) {
        Ok(Some(key)) => options = options.client_key(key),
        Ok(None) => {}
        Err(response) => return Upgrade::Now(response),
    }
    let gzip = accepts_gzip(&request);
    let engine = streams.engine;
    let outbox = Arc::new(Outbox::new(engine.config().max_queued_bytes));
    let opening = Opening {
        model,
        outbox: outbox.clone(),
        permit,
        tracked: streams.connections.token(),
        sessions: sessions.clone(),
        config: streams.config.clone(),
        gzip,
        node: engine.node(),
    };
    let joining = engine.join(opening.model.as_str(), outbox, options);
    match joining.now() {
        Ok(Ok(session)) => Upgrade::Now(opening.respond(session)),
        Ok(Err(error)) => Upgrade::Now(join_refused(&error)),
        Err(joining) => Upgrade::Later(Box::pin(async move {
            match tokio::time::timeout(opening.config.join_timeout, joining).await {
                Ok(Ok(session)) => opening.respond(session),
                Ok(Err(error)) => join_refused(&error),
                Err(_) => load_timed_out(&opening.config),
            }
        })),
    }
}

/// Answers `POST {prefix}{model}/send?session=S`: the frame in the body is handed to the
/// session (its answers go to the event stream); 202 once it is. A session of another node
/// (its token names the node) is reached through the store ([`purly::Engine::ask`]).
pub(crate) async fn send<B>(
    sessions: Arc<Sessions>,
    engine: purly::Engine,
    config: Arc<crate::config::ServerConfig>,
    model: ModelName,
    request: Request<B>,
) -> Response<Body>
where
    B: crate::service::RequestBody,
{
    let max_frame = engine.config().limits.max_frame_bytes;
    let Some(token) = join_request::query_param(&request, "session").map(str::to_owned) else {
        return no_session();
    };
    let declared = request
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > max_frame) {
        return too_large(max_frame);
    }
    let body = match Limited::new(request.into_body(), max_frame).collect().await {
        Ok(body) => body.to_bytes(),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            return too_large(max_frame)
        }
        Err(error) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("the body could not be read: {error}"),
            )
        }
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return error_response(StatusCode::BAD_REQUEST, "a frame is UTF-8 JSON text");
    };
    let delivered =
        match sessions::node_of(&token).filter(|node| Some(*node) != engine.node().as_deref()) {
            Some(node) => forward(&engine, node, &model, &token, text).await,
            None => deliver(&sessions, &config, &model, &token, text).await,
        };
    match delivered {
        Delivered::Accepted => accepted(),
        Delivered::Refused(status, message) => error_response(status, &message),
    }
}

/// What became of a POSTed frame.
enum Delivered {
    /// Handed to its session (202).
    Accepted,
    /// Not: the status and why.
    Refused(StatusCode, String),
}

/// Hands `text` to the session `token` of `model` on this node.
async fn deliver(
    sessions: &Arc<Sessions>,
    config: &crate::config::ServerConfig,
    model: &ModelName,
    token: &str,
    text: &str,
) -> Delivered {
    let Some(entry) = sessions.get(token).filter(|entry| entry.model == *model) else {
        return Delivered::Refused(StatusCode::NOT_FOUND, NO_SESSION.to_owned());
    };
    let session = &entry.session;
    match entry.rate_verdict(config, text.len()) {
        Verdict::Admit => {
            // Backpressure: past the model's bound, the POST waits for it to drain (the client
            // sends its frames one after the other, so this paces it).
            if tokio::time::timeout(config.message_timeout, session.ready())
                .await
                .is_err()
            {
                let error = FrameError::new(
                    ErrorCode::Unavailable,
                    "the model stayed over its bound; retry later",
                );
                session.refuse_text(text, error);
                return Delivered::Accepted;
            }
            // A refusal is queued to the session's stream as an error, like any answer.
            let _ = session.send_text(text);
        }
        Verdict::Refuse => {
            let error = FrameError::new(
                ErrorCode::RateLimited,
                "frames arrive faster than this session may send; slow down",
            );
            session.refuse_text(text, error);
        }
        Verdict::Close => {
            sessions.end(&entry);
            return Delivered::Refused(
                StatusCode::TOO_MANY_REQUESTS,
                "rate limit exceeded; frames kept coming after rate_limited: the session is ended"
                    .to_owned(),
            );
        }
    }
    Delivered::Accepted
}

/// Hands `text` to the session `token` of `model` on node `node`, through the store, and
/// waits for that node to have done it (so that one client's POSTs stay in order).
async fn forward(
    engine: &purly::Engine,
    node: &str,
    model: &ModelName,
    token: &str,
    text: &str,
) -> Delivered {
    let request = purly::serde_json::json!({
        "model": model.as_str(), "session": token, "frame": text,
    });
    match engine.ask(node, request.to_string()).await {
        Ok(answer) => {
            let answer: purly::serde_json::Value =
                purly::serde_json::from_str(&answer).unwrap_or_default();
            let status = answer["status"]
                .as_u64()
                .and_then(|s| StatusCode::from_u16(s as u16).ok())
                .unwrap_or(StatusCode::BAD_GATEWAY);
            match status {
                StatusCode::ACCEPTED => Delivered::Accepted,
                status => {
                    let message = answer["error"].as_str().unwrap_or_default().to_owned();
                    Delivered::Refused(status, message)
                }
            }
        }
        Err(error) => {
            tracing::debug!(%node, %error, "a POST for another node's session was not delivered");
            Delivered::Refused(StatusCode::NOT_FOUND, NO_SESSION.to_owned())
        }
    }
}

/// Answers the POSTs other nodes forward to this one's sessions ([`forward`]), on `runtime`.
pub(crate) fn serve_forwarded(
    engine: &purly::Engine,
    sessions: Arc<Sessions>,
    config: Arc<crate::config::ServerConfig>,
    runtime: tokio::runtime::Handle,
) {
    engine.answer(move |request, done| {
        let (sessions, config) = (sessions.clone(), config.clone());
        runtime.spawn(async move {
            let request: purly::serde_json::Value =
                purly::serde_json::from_str(&request).unwrap_or_default();
            let fields = (
                request["model"]
                    .as_str()
                    .and_then(|m| ModelName::new(m).ok()),
                request["session"].as_str(),
                request["frame"].as_str(),
            );
            let delivered = match fields {
                (Some(model), Some(token), Some(text)) => {
                    deliver(&sessions, &config, &model, token, text).await
                }
                _ => Delivered::Refused(StatusCode::BAD_REQUEST, "unreadable request".into()),
            };
            let answer = match delivered {
                Delivered::Accepted => purly::serde_json::json!({ "status": 202 }),
                Delivered::Refused(status, error) => {
                    purly::serde_json::json!({ "status": status.as_u16(), "error": error })
                }
            };
            done.complete(Ok(answer.to_string()));
        });
    });
}

const NO_SESSION: &str =
    "no such session on this model (its event stream ended, or its node is gone)";

fn no_session() -> Response<Body> {
    error_response(StatusCode::NOT_FOUND, NO_SESSION)
}

fn accepted() -> Response<Body> {
    let mut response = Response::new(Body::default());
    *response.status_mut() = StatusCode::ACCEPTED;
    response
}

fn too_large(max_frame: usize) -> Response<Body> {
    error_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("a frame is at most {max_frame} bytes"),
    )
}

/// Whether the request accepts a gzipped body (`Accept-Encoding: gzip`, not with `q=0`).
fn accepts_gzip<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            parts
                .next()
                .is_some_and(|name| name.eq_ignore_ascii_case("gzip"))
                && !parts.any(|p| p.replace(' ', "") == "q=0")
        })
}

/// What a stream needs once its session is joined.
struct Opening {
    model: ModelName,
    outbox: Arc<Outbox>,
    permit: Option<Arc<Permit>>,
    tracked: TaskTrackerToken,
    sessions: Arc<Sessions>,
    config: Arc<crate::config::ServerConfig>,
    gzip: bool,
    /// This node's name, when there are several: session tokens carry it.
    node: Option<String>,
}

impl Opening {
    /// Registers the session and answers with its event stream.
    fn respond(self, session: Session) -> Response<Body> {
        let limiter = self
            .config
            .rate_limit
            .as_ref()
            .map(|limit| FrameLimiter::new(limit, std::time::Instant::now()));
        let entry = Arc::new(Entry::new(self.model, session, limiter));
        let registration = self.sessions.register(entry.clone(), self.node.as_deref());
        let mut encoder = Encoder::new(self.gzip);
        let first = encoder.session(registration.token());
        tracing::info!(model = %entry.model, client = %entry.session.id(), "event stream opened");
        let ping_every = self.config.event_ping_interval;
        let events = Events {
            entry,
            registration,
            outbox: self.outbox,
            encoder,
            first: Some(first),
            batch: Vec::new(),
            ping: Box::pin(tokio::time::sleep(ping_every)),
            ping_every,
            ended: false,
            _permit: self.permit,
            _tracked: self.tracked,
        };
        let mut response = Response::new(Body::chunks(events));
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        // Proxies that buffer responses (nginx) pass this one through as it comes.
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        if self.gzip {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        response
    }
}

/// The body of an event stream: the session event, then one event per frame the session
/// receives, and a ping comment whenever nothing was sent for a ping interval.
struct Events {
    entry: Arc<Entry>,
    /// Takes the session out of the registry when the stream is dropped.
    registration: Registration,
    outbox: Arc<Outbox>,
    encoder: Encoder,
    first: Option<Bytes>,
    batch: Vec<purly::ServerMessage>,
    ping: Pin<Box<Sleep>>,
    ping_every: std::time::Duration,
    ended: bool,
    _permit: Option<Arc<Permit>>,
    /// Counts the stream among the service's connections (a graceful shutdown waits for it).
    _tracked: TaskTrackerToken,
}

impl Stream for Events {
    type Item = Bytes;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let this = self.get_mut();
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(first));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        loop {
            match this.outbox.poll_recv(cx, &mut this.batch) {
                Poll::Ready(Received::Messages) => {
                    let event = this.encoder.frame(&this.batch);
                    this.batch.clear();
                    this.ping.as_mut().reset(Instant::now() + this.ping_every);
                    return Poll::Ready(Some(event));
                }
                Poll::Ready(Received::Resync) => {
                    // Fails only once the model is closed; the outbox then reports it.
                    let _ = this.entry.session.resync();
                }
                Poll::Ready(Received::Closed(reason)) => {
                    tracing::info!(model = %this.entry.model, client = %this.entry.session.id(), ?reason, "event stream closed by the server");
                    this.ended = true;
                    this.registration.end();
                    return Poll::Ready(this.encoder.finish());
                }
                // The service's pinger is for WebSockets; this stream keeps its own clock.
                Poll::Ready(Received::Notified) => {}
                Poll::Pending => break,
            }
        }
        if this.registration.is_ended(cx.waker()) {
            this.ended = true;
            return Poll::Ready(this.encoder.finish());
        }
        if this.ping.as_mut().poll(cx).is_ready() {
            this.ping.as_mut().reset(Instant::now() + this.ping_every);
            return Poll::Ready(Some(this.encoder.ping()));
        }
        Poll::Pending
    }
}
