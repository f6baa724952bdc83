//! `GET {prefix}{model}/events`: the join, and the body that streams the session's frames as
//! server-sent events.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use purly::{JoinOptions, ModelName, Outbox, Received, Session};
use tokio::time::{Instant, Sleep};
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::encoder::Encoder;
use super::sessions::{Entry, Registration, Sessions};
use crate::access::Decision;
use crate::admission::Permit;
use crate::batch::with_batch;
use crate::body::Body;
use crate::http::{error_response, header_list, join_refused, load_timed_out};
use crate::join_request;
use crate::rate_limit::FrameLimiter;
use crate::upgrade::{Streams, Upgrade};

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

/// Whether the request accepts a gzipped body (`Accept-Encoding: gzip`, not with `q=0`).
fn accepts_gzip<B>(request: &Request<B>) -> bool {
    header_list(request.headers(), ACCEPT_ENCODING).any(|coding| {
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
            presence_id: entry.session.presence_id(),
            entry,
            registration,
            outbox: self.outbox,
            encoder,
            first: Some(first),
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
    /// The session's presence id, named in the model snapshots it gets.
    presence_id: Arc<str>,
    first: Option<Bytes>,
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
            // Encoded in the same poll: the batch is the thread's (see `crate::batch`).
            let (received, event) = with_batch(|batch| match this.outbox.poll_recv(cx, batch) {
                Poll::Ready(Received::Messages) => (
                    Poll::Ready(Received::Messages),
                    Some(this.encoder.frame(batch, &this.presence_id)),
                ),
                other => (other, None),
            });
            match received {
                Poll::Ready(Received::Messages) => {
                    this.ping.as_mut().reset(Instant::now() + this.ping_every);
                    return Poll::Ready(event);
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
