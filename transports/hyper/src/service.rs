//! [`Purly`]: the handler that serves purly's routes inside a hyper or axum service, and its
//! dispatch of each request to the page, the state route or the upgrade.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::body::Incoming;
use hyper::rt::{Read, Write};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use purly::{Engine, ModelName};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::{Authorize, Decision, PeerAddr, RequestInfo};
use crate::admission::{Admission, Refusal};
use crate::body::Body;
use crate::client_files;
use crate::config::ServerConfig;
use crate::event_stream;
use crate::extra_route::ExtraRoute;
use crate::http::{error_response, state_response};
use crate::keep_alive::Activity;
use crate::page;
use crate::route::{route, RouteKind, Routed};
use crate::socket_loop::LinkContext;
use crate::telemetry::TransportMetrics;
use crate::upgrade::{upgrade, Streams, Upgrade, UpgradeResponse};
use crate::websocket::UnfinishedBudget;

/// Serves purly's routes (PROTOCOL.md section 1) for an [`Engine`]: the WebSocket stream of
/// each model, its state as JSON and its page.
///
/// Cheap to clone; every clone serves the same engine and tracks the same connections. Use it
/// as a hyper [`Service`](hyper::service::Service) or a tower `Service` (e.g. with axum's
/// `Router::nest_service`), or call [`try_handle`](Purly::try_handle) from your own service to
/// fall through to your routes. Handling a stream request spawns the connection's task, so it
/// must run inside a Tokio runtime.
#[derive(Clone)]
pub struct Purly {
    inner: Arc<Shared>,
}

struct Shared {
    engine: Engine,
    /// Bytes held in unfinished messages by every connection (`max_unfinished_bytes`).
    unfinished: Arc<UnfinishedBudget>,
    config: Arc<ServerConfig>,
    authorize: Option<Box<Authorize>>,
    connections: TaskTracker,
    /// What the WebSocket connections share: the configuration, the metrics, the pinger.
    links: Arc<LinkContext>,
    admission: Arc<Admission>,
    metrics: Arc<TransportMetrics>,
    extra_routes: Vec<ExtraRoute>,
    /// The names below the prefix that the extra routes take: not models.
    reserved: Vec<String>,
    /// The open event-stream sessions (PROTOCOL.md section 10).
    event_sessions: Arc<event_stream::Sessions>,
    /// Cancelled by [`Purly::shutdown`]: the connections it serves close once their request
    /// in flight is answered (a keep-alive connection would otherwise keep reaching a
    /// shut-down engine).
    shut_down: CancellationToken,
}

/// What [`Purly::try_handle`] did with a request.
#[derive(Debug)]
pub enum Handled<B> {
    /// It was for one of purly's routes: send this response.
    Response(Response<Body>),
    /// It was not: the untouched request, for the embedder's own routes.
    NotPurly(Request<B>),
}

/// A request body purly can read (the event stream's POSTs): hyper's, axum's, or any
/// [`Body`](https://docs.rs/http-body/1/http_body/trait.Body.html) that is `Send`.
pub trait RequestBody:
    hyper::body::Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
    + Send
    + 'static
{
}

impl<B> RequestBody for B where
    B: hyper::body::Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static
{
}

/// The future of a response from the [`Service`](hyper::service::Service) impls.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

/// A request dispatched: answered at once, not purly's, or waiting (a state read, or a join
/// of a model being loaded). Short-lived, on the stack: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Dispatched<B> {
    Now(Handled<B>),
    Later(UpgradeResponse),
}

impl Purly {
    pub(crate) fn from_parts(
        engine: Engine,
        config: ServerConfig,
        authorize: Option<Box<Authorize>>,
        extra_routes: Vec<ExtraRoute>,
    ) -> Self {
        let metrics = Arc::new(TransportMetrics::register());
        let reserved = extra_routes
            .iter()
            .filter_map(|r| r.path.strip_prefix(config.prefix.as_str()))
            .filter(|name| !name.is_empty())
            .map(|name| name.split('/').next().unwrap_or(name).to_owned())
            .collect();
        let admission = Arc::new(Admission::new(
            config.max_connections,
            config.max_connections_per_peer,
            metrics.http_connections.clone(),
        ));
        // The work that follows a store's completion (the next batch, the fan-out) runs on
        // this runtime, not on the store's thread, unless the embedder chose otherwise.
        let runtime = tokio::runtime::Handle::try_current().ok();
        if let Some(runtime) = runtime.clone() {
            engine.set_executor(move |task| {
                runtime.spawn(async move { task.run() });
            });
        }
        let event_sessions: Arc<event_stream::Sessions> = Arc::default();
        let config = Arc::new(config);
        // On several nodes, the POSTs another node receives for this node's event streams.
        if let (Some(_), Some(runtime)) = (engine.node(), runtime) {
            event_stream::serve_forwarded(&engine, event_sessions.clone(), config.clone(), runtime);
        }
        Purly {
            inner: Arc::new(Shared {
                unfinished: UnfinishedBudget::new(
                    config.max_unfinished_bytes,
                    config.message_timeout,
                ),
                engine,
                links: LinkContext::new(config.clone(), metrics.clone()),
                config,
                authorize,
                connections: TaskTracker::new(),
                admission,
                metrics,
                extra_routes,
                reserved,
                event_sessions,
                shut_down: CancellationToken::new(),
            }),
        }
    }

    /// The bytes all connections hold now in messages that have not arrived whole (at most
    /// [`ServerConfig::max_unfinished_bytes`]).
    pub fn unfinished_bytes(&self) -> usize {
        self.inner.unfinished.used()
    }

    /// The engine behind the routes: keep it to change models from your own handlers
    /// ([`Engine::update`], [`Engine::modify`]).
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The transport configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// How many stream connections are open: WebSockets and event streams.
    pub fn connections(&self) -> usize {
        self.inner.connections.len()
    }

    /// How many event-stream sessions are open (PROTOCOL.md section 10).
    pub fn event_streams(&self) -> usize {
        self.inner.event_sessions.len()
    }

    /// How many connections [`serve_connection`](Purly::serve_connection) holds open, plain
    /// HTTP and WebSocket together: what [`ServerConfig::max_connections`] caps.
    pub fn open_connections(&self) -> usize {
        self.inner.admission.open()
    }

    /// Serves `request` if it is for one of purly's routes, or hands it back untouched. Only
    /// a state read waits (for its model's changes to be durable); the rest answers at once.
    pub async fn try_handle<B: RequestBody>(&self, request: Request<B>) -> Handled<B> {
        match self.dispatch(request) {
            Dispatched::Now(handled) => handled,
            Dispatched::Later(response) => Handled::Response(response.await),
        }
    }

    /// Serves `request`, answering 404 if it is not for one of purly's routes.
    pub async fn handle<B: RequestBody>(&self, request: Request<B>) -> Response<Body> {
        match self.try_handle(request).await {
            Handled::Response(response) => response,
            Handled::NotPurly(_) => not_found(),
        }
    }

    fn dispatch<B: RequestBody>(&self, request: Request<B>) -> Dispatched<B> {
        let path = request.uri().path();
        if let Some(extra) = self.inner.extra_routes.iter().find(|r| r.path == path) {
            return Dispatched::Now(Handled::Response((extra.handler)()));
        }
        let (kind, model) = match route(path, &self.inner.config.prefix, &self.inner.reserved) {
            Routed::Elsewhere => return Dispatched::Now(Handled::NotPurly(request)),
            Routed::Client(file) => {
                let response = match *request.method() {
                    Method::GET | Method::HEAD => client_files::response(file),
                    _ => error_response(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "purly's routes answer GET only",
                    ),
                };
                return Dispatched::Now(Handled::Response(response));
            }
            Routed::BadName(_, error) => {
                let response = error_response(StatusCode::BAD_REQUEST, &error.to_string());
                return Dispatched::Now(Handled::Response(response));
            }
            Routed::Model(kind, model) => (kind, model),
        };
        if kind == RouteKind::Send {
            // The session token decides: its stream's GET was authorized.
            if request.method() != Method::POST {
                let response = error_response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "the send route answers POST only",
                );
                return Dispatched::Now(Handled::Response(response));
            }
            let sessions = self.inner.event_sessions.clone();
            let config = self.inner.config.clone();
            let engine = self.inner.engine.clone();
            return Dispatched::Later(Box::pin(event_stream::send(
                sessions, engine, config, model, request,
            )));
        }
        if request.method() != Method::GET && request.method() != Method::HEAD {
            let response = error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "purly's routes answer GET only",
            );
            return Dispatched::Now(Handled::Response(response));
        }
        let decision = self.authorize(&request, kind, &model);
        let response = match (decision, kind) {
            (Decision::Deny, _) => error_response(StatusCode::FORBIDDEN, "access denied"),
            (_, RouteKind::State) => {
                let engine = self.inner.engine.clone();
                let config = self.inner.config.clone();
                return Dispatched::Later(Box::pin(state_response(engine, model, config)));
            }
            (_, RouteKind::Page) => page::response(),
            (_, RouteKind::Stream | RouteKind::Events | RouteKind::Send) => {
                let streams = Streams {
                    engine: &self.inner.engine,
                    unfinished: &self.inner.unfinished,
                    config: &self.inner.config,
                    connections: &self.inner.connections,
                    links: &self.inner.links,
                };
                let opened = match kind {
                    RouteKind::Events => {
                        let sessions = &self.inner.event_sessions;
                        event_stream::open(streams, sessions, request, model, decision)
                    }
                    _ => upgrade(streams, request, model, decision),
                };
                match opened {
                    Upgrade::Now(response) => response,
                    Upgrade::Later(response) => return Dispatched::Later(response),
                }
            }
        };
        Dispatched::Now(Handled::Response(response))
    }

    /// The response future for the `Service` impls: ready at once unless it reads a state.
    fn respond<B: RequestBody>(&self, request: Request<B>) -> ResponseFuture {
        match self.dispatch(request) {
            Dispatched::Now(Handled::Response(response)) => {
                Box::pin(std::future::ready(Ok(response)))
            }
            Dispatched::Now(Handled::NotPurly(_)) => Box::pin(std::future::ready(Ok(not_found()))),
            Dispatched::Later(response) => Box::pin(async move { Ok(response.await) }),
        }
    }

    /// Serves HTTP/1.1 (with WebSocket upgrades) on one accepted connection, answering
    /// purly's routes and 404 for anything else: the body of a plain hyper accept loop. Any
    /// byte stream works (a TCP socket, a TLS stream, a Unix socket), wrapped for hyper (e.g.
    /// `hyper_util::rt::TokioIo::new(stream)`); `peer` is handed to the authorization hook.
    /// For TCP, [`serve_tcp`](Purly::serve_tcp) also sets TCP_NODELAY.
    ///
    /// The connection is held to [`ServerConfig`]'s limits: past `max_connections` (or
    /// `max_connections_per_peer`) it is answered with HTTP 503 and closed; a request head
    /// must arrive within `header_read_timeout`; with no request in flight it is closed after
    /// `keep_alive_timeout`.
    pub async fn serve_connection<IO>(
        &self,
        io: IO,
        peer: Option<std::net::SocketAddr>,
    ) -> Result<(), hyper::Error>
    where
        IO: Read + Write + Unpin + Send + 'static,
    {
        let config = &self.inner.config;
        let permit = match self.inner.admission.admit(peer.map(|p| p.ip())) {
            Ok(permit) => Arc::new(permit),
            Err(refusal) => return self.refuse_connection(io, peer, refusal).await,
        };
        let activity = Activity::new();
        let purly = self.clone();
        let busy = activity.clone();
        let service = service_fn(move |mut request: Request<Incoming>| {
            if let Some(peer) = peer {
                request.extensions_mut().insert(PeerAddr(peer));
            }
            // An upgraded connection keeps its place until its WebSocket task ends.
            request.extensions_mut().insert(permit.clone());
            let in_flight = busy.begin();
            let response = purly.respond(request);
            async move {
                let response = response.await;
                drop(in_flight);
                response
            }
        });
        // Accepted after a shutdown: one request is answered (503), then the connection closes.
        let shut_down = self.inner.shut_down.is_cancelled();
        let connection = http1_builder(config.header_read_timeout)
            .keep_alive(!shut_down)
            .serve_connection(io, service)
            .with_upgrades();
        tokio::pin!(connection);
        tokio::select! {
            ended = connection.as_mut() => return ended,
            () = activity.idle_for(config.keep_alive_timeout) => {}
            () = self.inner.shut_down.cancelled(), if !shut_down => {}
        }
        // Idle too long, or shut down: close once nothing is in flight.
        connection.as_mut().graceful_shutdown();
        connection.await
    }

    /// Answers every request on a connection past a cap with 503, then closes it.
    async fn refuse_connection<IO>(
        &self,
        io: IO,
        peer: Option<std::net::SocketAddr>,
        refusal: Refusal,
    ) -> Result<(), hyper::Error>
    where
        IO: Read + Write + Unpin + Send + 'static,
    {
        tracing::debug!(?peer, ?refusal, "connection refused");
        self.inner.metrics.refused(refusal);
        let service = service_fn(move |_: Request<Incoming>| {
            std::future::ready(Ok::<_, Infallible>(error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                refusal.message(),
            )))
        });
        // The refused get little time to send their request: they hold a file descriptor.
        let timeout = self
            .inner
            .config
            .header_read_timeout
            .min(REFUSAL_READ_TIMEOUT);
        http1_builder(timeout)
            .keep_alive(false)
            .serve_connection(io, service)
            .await
    }

    /// [`serve_connection`](Purly::serve_connection) on an accepted TCP socket, with
    /// TCP_NODELAY set (Nagle's algorithm would delay small messages by ~40 ms) and the peer's
    /// address for the authorization hook.
    pub async fn serve_tcp(&self, socket: tokio::net::TcpStream) -> Result<(), hyper::Error> {
        let peer = socket.peer_addr().ok();
        // Best effort: a socket that refuses it still works, only with more latency.
        let _ = socket.set_nodelay(true);
        self.serve_connection(hyper_util::rt::TokioIo::new(socket), peer)
            .await
    }

    /// Stops serving: every connection is closed with code 1001 after what was queued for it
    /// is sent, frames being applied are applied whole or refused, and later requests for the
    /// stream get HTTP 503. Resolves when every connection task has ended.
    pub async fn shutdown(&self) {
        self.inner.shut_down.cancel();
        self.inner.engine.shutdown();
        self.inner.connections.close();
        self.inner.connections.wait().await;
    }

    fn authorize<B>(&self, request: &Request<B>, route: RouteKind, model: &ModelName) -> Decision {
        let Some(hook) = &self.inner.authorize else {
            return Decision::ReadWrite;
        };
        hook(&RequestInfo {
            route,
            model,
            path: request.uri().path(),
            headers: request.headers(),
            peer: request.extensions().get::<PeerAddr>().map(|p| p.0),
        })
    }
}

/// How long a connection refused for a cap has to send its request before it is dropped.
const REFUSAL_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// hyper's HTTP/1 server with a Tokio timer and a header read timeout.
fn http1_builder(header_read_timeout: std::time::Duration) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    builder
}

fn not_found() -> Response<Body> {
    error_response(StatusCode::NOT_FOUND, "not found")
}

impl fmt::Debug for Purly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Purly")
            .field("prefix", &self.inner.config.prefix)
            .field("connections", &self.connections())
            .finish_non_exhaustive()
    }
}

impl<B: RequestBody> hyper::service::Service<Request<B>> for Purly {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, request: Request<B>) -> Self::Future {
        self.respond(request)
    }
}

impl<B: RequestBody> tower_service::Service<Request<B>> for Purly {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        self.respond(request)
    }
}
