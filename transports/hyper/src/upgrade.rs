//! The WebSocket upgrade of `GET {prefix}{model}/stream`: subprotocol and resume point from
//! the request, the join, and the connection's task.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use hyper::header::{HeaderValue, SEC_WEBSOCKET_PROTOCOL};
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode};
use purly::{Engine, JoinOptions, Mode, ModelName, Outbox, Session};
use tokio_util::task::TaskTracker;

use crate::access::{origin_allowed, Decision, PeerAddr};
use crate::admission::Permit;
use crate::body::Body;
use crate::config::ServerConfig;
use crate::handshake;
use crate::http::{error_response, header_list, join_refused, load_timed_out};
use crate::join_request;
use crate::socket_loop::{self, Link, LinkContext, StreamLoop};
use crate::upgraded_io::UpgradedIo;
use crate::websocket::{Unfinished, UnfinishedBudget, WebSocket};

/// The subprotocol a client offers to get stream mode (PROTOCOL.md section 4).
pub const STREAM_SUBPROTOCOL: &str = "purly.stream";

/// What an upgrade needs from the handler.
pub(crate) struct Streams<'a> {
    pub(crate) engine: &'a Engine,
    pub(crate) unfinished: &'a Arc<UnfinishedBudget>,
    pub(crate) config: &'a Arc<ServerConfig>,
    pub(crate) connections: &'a TaskTracker,
    pub(crate) links: &'a Arc<LinkContext>,
}

/// The future of an upgrade's response: it waits (at most `join_timeout`) only for a model
/// that is being loaded from the store.
pub(crate) type UpgradeResponse = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

/// An upgrade's answer: at once (a refusal, or a join of a model in memory: nothing is
/// allocated to wait), or once the model is loaded.
pub(crate) enum Upgrade {
    Now(Response<Body>),
    Later(UpgradeResponse),
}

/// Checks the request and the handshake, joins the model (awaiting its load if it is not in
/// memory) and upgrades: the response to send, with the connection's task spawned. Nothing
/// touches the engine before the handshake is known to be good.
pub(crate) fn upgrade<B>(
    streams: Streams<'_>,
    request: Request<B>,
    model: ModelName,
    decision: Decision,
) -> Upgrade {
    prepare(streams, request, model, decision).unwrap_or_else(Upgrade::Now)
}

/// [`upgrade`] up to the join: a refusal is answered before anything touches the engine.
// The refusal is answered at once, not propagated: its size costs nothing.
#[allow(clippy::result_large_err)]
fn prepare<B>(
    streams: Streams<'_>,
    mut request: Request<B>,
    model: ModelName,
    decision: Decision,
) -> Result<Upgrade, Response<Body>> {
    if !hyper_tungstenite::is_upgrade_request(&request) {
        return Err(error_response(
            StatusCode::UPGRADE_REQUIRED,
            "this route is a WebSocket stream",
        ));
    }
    if !origin_allowed(request.headers(), &streams.config.allowed_origins) {
        return Err(error_response(
            StatusCode::FORBIDDEN,
            "cross-site WebSocket refused",
        ));
    }
    // Held by the connection's task: an upgraded connection keeps its place under the cap.
    // Without one (mounted in another server), the streams alone are held to the cap.
    let permit = request.extensions_mut().remove::<Arc<Permit>>();
    if permit.is_none() && streams.connections.len() >= streams.config.max_connections {
        return Err(error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is at its connection limit; retry later",
        ));
    }
    let stream_mode = offers_stream_protocol(&request);
    let mut options = if stream_mode {
        JoinOptions::stream()
    } else {
        JoinOptions::compat()
    };
    if let Some(access) = decision.access() {
        options = options.access(access);
    }
    if let (true, Some((since, epoch))) = (stream_mode, join_request::resume_point(&request)) {
        options = options.resume(since, epoch);
    }
    if let Some(key) = join_request::client_key(&request, stream_mode)? {
        options = options.client_key(key);
    }
    let (mut response, upgraded) = handshake::answer(&mut request)?;
    if stream_mode {
        response.headers_mut().insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(STREAM_SUBPROTOCOL),
        );
    }
    let engine = streams.engine;
    let outbox = Arc::new(Outbox::new(engine.config().max_queued_bytes));
    let connection = Connection {
        outbox,
        permit,
        upgraded,
        links: streams.links.clone(),
        connections: streams.connections.clone(),
        peer: request.extensions().get::<PeerAddr>().map(|p| p.0),
        unfinished: Unfinished::new(streams.unfinished.clone()),
        max_message: engine.config().limits.max_frame_bytes,
        model,
    };
    // Joining before the upgrade answers refusals with an HTTP status, and takes the snapshot
    // at once: it waits in the outbox until the socket is ready. A model in memory is joined
    // here and now; one being loaded is awaited (at most `join_timeout`).
    let joining = engine.join(
        connection.model.as_str(),
        connection.outbox.clone(),
        options,
    );
    match joining.now() {
        Ok(Ok(session)) => {
            connection.start(session);
            Ok(Upgrade::Now(response))
        }
        Ok(Err(error)) => Err(join_refused(&error)),
        Err(joining) => Ok(Upgrade::Later(Box::pin(async move {
            let timeout = connection.links.config.join_timeout;
            match tokio::time::timeout(timeout, joining).await {
                Ok(Ok(session)) => {
                    connection.start(session);
                    response
                }
                Ok(Err(error)) => join_refused(&error),
                Err(_) => load_timed_out(&connection.links.config),
            }
        }))),
    }
}

/// Everything an accepted stream's task needs, once its session is joined.
struct Connection {
    model: ModelName,
    outbox: Arc<Outbox>,
    permit: Option<Arc<Permit>>,
    upgraded: OnUpgrade,
    /// The configuration, metrics and pinger every connection shares.
    links: Arc<LinkContext>,
    connections: TaskTracker,
    peer: Option<std::net::SocketAddr>,
    unfinished: Unfinished,
    max_message: usize,
}

impl Connection {
    /// Spawns the connection's task: the upgrade, then the session's loop until it ends.
    fn start(self, session: Session) {
        let Connection {
            model,
            outbox,
            permit,
            upgraded,
            links,
            connections,
            peer,
            unfinished,
            max_message,
        } = self;
        // On the heap and freed once the upgrade is done: the connection's task does not keep
        // room for it (its timer, what it captured) for the rest of its life.
        let upgrading = Box::pin(async move {
            let upgraded = async move {
                let (socket, read) = UpgradedIo::new(upgraded.await?);
                Ok::<_, hyper::Error>(
                    WebSocket::new(socket, max_message)
                        .with_input(&read)
                        .with_unfinished(unfinished),
                )
            };
            let upgrade_timeout = links.config.upgrade_timeout;
            let ws = match tokio::time::timeout(upgrade_timeout, upgraded).await {
                Ok(Ok(ws)) => ws,
                Ok(Err(error)) => {
                    tracing::debug!(%model, %error, "upgrade failed");
                    return None;
                }
                Err(_) => {
                    tracing::debug!(%model, "upgrade timed out");
                    return None;
                }
            };
            let mode = session.mode();
            let link = Link::new(ws, session, outbox, links);
            link.started(peer);
            Some(match mode {
                Mode::Stream => Running::Stream(StreamLoop::new(link)),
                Mode::Compat => Running::Compat(Box::pin(socket_loop::run_compat(link))),
            })
        });
        connections.spawn(ConnectionTask {
            state: State::Upgrading(upgrading),
            _permit: permit,
        });
    }
}

/// The WebSocket of an upgraded connection.
type UpgradedSocket = WebSocket<UpgradedIo>;

/// A connection's task: its upgrade, then its loop. Hand-written, so that an idle
/// connection's task holds its loop's state and little else (see `socket_loop::stream`).
struct ConnectionTask {
    state: State,
    /// The connection's place under the server's caps, while the task lives.
    _permit: Option<Arc<Permit>>,
}

// The task lives in `Running`: boxing the loop would cost an allocation for nothing.
#[allow(clippy::large_enum_variant)]
enum State {
    /// The upgrade, then the loop it becomes (none if it failed).
    Upgrading(Pin<Box<dyn Future<Output = Option<Running>> + Send>>),
    Running(Running),
    Ended,
}

#[allow(clippy::large_enum_variant)]
enum Running {
    Stream(StreamLoop<UpgradedSocket>),
    /// Compat mode's loop, rarer, boxed as it is written: `async` code, which counts and logs
    /// its own end.
    Compat(Pin<Box<dyn Future<Output = ()> + Send>>),
}

impl Future for ConnectionTask {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if let State::Upgrading(upgrading) = &mut this.state {
            this.state = match ready!(upgrading.as_mut().poll(cx)) {
                Some(running) => State::Running(running),
                None => State::Ended,
            };
        }
        match &mut this.state {
            State::Running(Running::Stream(stream)) => {
                // A span made on each poll, and only when debug logging is on: the task holds
                // none (compat mode's loop holds its own).
                let ending = if tracing::enabled!(tracing::Level::DEBUG) {
                    let span = stream.link().span();
                    let _entered = span.enter();
                    ready!(Pin::new(&mut *stream).poll(cx))
                } else {
                    ready!(Pin::new(&mut *stream).poll(cx))
                };
                stream.link().ended(ending);
            }
            State::Running(Running::Compat(compat)) => ready!(compat.as_mut().poll(cx)),
            State::Upgrading(_) | State::Ended => {}
        }
        this.state = State::Ended;
        Poll::Ready(())
    }
}

fn offers_stream_protocol<B>(request: &Request<B>) -> bool {
    header_list(request.headers(), SEC_WEBSOCKET_PROTOCOL).any(|p| p == STREAM_SUBPROTOCOL)
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_task_fits_the_smallest_cell_it_can() {
        // tokio allocates a task as its future (here with the tracker's 8-byte token) plus
        // about 104 bytes, in steps of 128: up to 280 bytes of future take 384 bytes, 8 more
        // take 512 (BENCHMARKS.md, "an idle connection's memory"). Every idle connection is
        // mostly this task: a field added here costs 128 bytes per connection.
        let future = std::mem::size_of::<ConnectionTask>() + 8;
        assert!(future <= 280, "the connection task is {future} bytes");
    }
}
