//! The WebSocket upgrade of `GET {prefix}{model}/stream`: subprotocol and resume point from
//! the request, the join, and the connection's task.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use hyper::header::{HeaderValue, SEC_WEBSOCKET_PROTOCOL};
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use purly::{Engine, JoinOptions, ModelName, Outbox, Session};
use tokio_util::task::TaskTracker;

use crate::access::{origin_allowed, Decision, PeerAddr};
use crate::admission::Permit;
use crate::body::Body;
use crate::config::ServerConfig;
use crate::handshake;
use crate::http::{error_response, header_list, join_refused, load_timed_out};
use crate::join_request;
use crate::pinger::{Pinger, Registration};
use crate::socket_loop::{self, Ending};
use crate::telemetry::TransportMetrics;
use crate::websocket::{Unfinished, UnfinishedBudget, WebSocket};

/// The subprotocol a client offers to get stream mode (PROTOCOL.md section 4).
pub const STREAM_SUBPROTOCOL: &str = "purly.stream";

/// What an upgrade needs from the handler.
pub(crate) struct Streams<'a> {
    pub(crate) engine: &'a Engine,
    pub(crate) unfinished: &'a Arc<UnfinishedBudget>,
    pub(crate) config: &'a Arc<ServerConfig>,
    pub(crate) connections: &'a TaskTracker,
    pub(crate) pinger: &'a Pinger,
    pub(crate) metrics: &'a Arc<TransportMetrics>,
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
        // A place in the service's pinger for as long as the task lives.
        pings: streams.pinger.register(&outbox),
        outbox,
        permit,
        upgraded,
        config: streams.config.clone(),
        metrics: streams.metrics.clone(),
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
            let timeout = connection.config.join_timeout;
            match tokio::time::timeout(timeout, joining).await {
                Ok(Ok(session)) => {
                    connection.start(session);
                    response
                }
                Ok(Err(error)) => join_refused(&error),
                Err(_) => load_timed_out(&connection.config),
            }
        }))),
    }
}

/// Everything an accepted stream's task needs, once its session is joined.
struct Connection {
    model: ModelName,
    outbox: Arc<Outbox>,
    pings: Registration,
    permit: Option<Arc<Permit>>,
    upgraded: OnUpgrade,
    config: Arc<ServerConfig>,
    metrics: Arc<TransportMetrics>,
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
            pings,
            permit,
            upgraded,
            config,
            metrics,
            connections,
            peer,
            unfinished,
            max_message,
        } = self;
        let upgraded = async move {
            let socket = TokioIo::new(upgraded.await?);
            Ok::<_, hyper::Error>(WebSocket::new(socket, max_message).with_unfinished(unfinished))
        };
        // On the heap and freed once the upgrade is done: the connection's task does not keep
        // room for it (its timer) for the rest of its life.
        let upgraded = Box::pin(tokio::time::timeout(config.upgrade_timeout, upgraded));
        connections.spawn(async move {
            let _permit = permit;
            let _pings = pings;
            let mut ws = match upgraded.await {
                Ok(Ok(ws)) => ws,
                Ok(Err(error)) => {
                    tracing::debug!(%model, %error, "upgrade failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%model, "upgrade timed out");
                    return;
                }
            };
            let (id, mode) = (session.id(), session.mode());
            // A debug span, so that at the default level an idle connection holds no span
            // data; the info events carry their fields themselves.
            let span = tracing::debug_span!("connection", %model, client = %id, ?mode, ?peer);
            tracing::info!(%model, client = %id, ?mode, ?peer, "connected");
            metrics.connections(mode).increment(1.0);
            let ending = tracing::Instrument::instrument(
                socket_loop::run(&mut ws, &session, &outbox, &config, &metrics),
                span,
            )
            .await;
            drop(session);
            metrics.connections(mode).decrement(1.0);
            log_ending(&metrics, &model, id, ending);
        });
    }
}

/// Counts and logs how a connection ended.
fn log_ending(metrics: &TransportMetrics, model: &ModelName, id: purly::ClientId, ending: Ending) {
    match ending {
        Ending::PeerClosed => {
            metrics.closed_by_peer();
            tracing::info!(%model, client = %id, "disconnected");
        }
        Ending::PeerLost(why) => {
            metrics.lost();
            tracing::info!(%model, client = %id, %why, "disconnected: peer lost");
        }
        Ending::ClosedByServer(code) => {
            metrics.closed_by_server(code);
            tracing::info!(%model, client = %id, code, "disconnected: closed by server");
        }
    }
}

fn offers_stream_protocol<B>(request: &Request<B>) -> bool {
    header_list(request.headers(), SEC_WEBSOCKET_PROTOCOL).any(|p| p == STREAM_SUBPROTOCOL)
}
