//! [`Purly`]: the handler that serves purly's routes inside a hyper or axum service.

use std::convert::Infallible;
use std::fmt;
use std::future::{ready, Ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, SEC_WEBSOCKET_PROTOCOL};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_tungstenite::tungstenite::protocol::WebSocketConfig;
use hyper_util::rt::TokioIo;
use purly::{Engine, JoinError, JoinOptions, ModelName, Outbox};
use tokio::net::TcpStream;
use tokio_util::task::TaskTracker;

use crate::access::{origin_allowed, Authorize, Decision, PeerAddr, RequestInfo};
use crate::config::{normalize_prefix, ServerConfig};
use crate::connection::{serve, Ending};
use crate::page;
use crate::route::{route, RouteKind, Routed};

/// The subprotocol a client offers to get stream mode (PROTOCOL.md section 4).
pub const STREAM_SUBPROTOCOL: &str = "purly.stream";

/// The body of every response purly writes.
pub type Body = Full<Bytes>;

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
    config: ServerConfig,
    authorize: Option<Box<Authorize>>,
    websocket: WebSocketConfig,
    connections: TaskTracker,
}

/// What [`Purly::try_handle`] did with a request.
#[derive(Debug)]
pub enum Handled<B> {
    /// It was for one of purly's routes: send this response.
    Response(Response<Body>),
    /// It was not: the untouched request, for the embedder's own routes.
    NotPurly(Request<B>),
}

/// Builds a [`Purly`] handler.
pub struct PurlyBuilder {
    engine: Engine,
    config: ServerConfig,
    authorize: Option<Box<Authorize>>,
}

impl PurlyBuilder {
    /// Replaces the whole transport configuration.
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Serves the routes under `prefix` (`/sync` and `/sync/` are the same).
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.config.prefix = prefix.to_owned();
        self
    }

    /// Lets browsers from `origin` (`scheme://host[:port]`, or `*`) open streams cross-site.
    pub fn allow_origin(mut self, origin: impl Into<String>) -> Self {
        self.config.allowed_origins.push(origin.into());
        self
    }

    /// Decides, for each stream, state or page request, whether it is denied (HTTP 403),
    /// read-only or read-write. Without a hook every request is read-write.
    pub fn authorize(
        mut self,
        hook: impl Fn(&RequestInfo<'_>) -> Decision + Send + Sync + 'static,
    ) -> Self {
        self.authorize = Some(Box::new(hook));
        self
    }

    /// The handler.
    pub fn build(mut self) -> Purly {
        self.config.prefix = normalize_prefix(&self.config.prefix);
        let limits = &self.engine.config().limits;
        let websocket = WebSocketConfig::default()
            .read_buffer_size(self.config.read_buffer_bytes)
            .write_buffer_size(0)
            .max_message_size(Some(limits.max_frame_bytes))
            .max_frame_size(Some(limits.max_frame_bytes));
        Purly {
            inner: Arc::new(Shared {
                engine: self.engine,
                config: self.config,
                authorize: self.authorize,
                websocket,
                connections: TaskTracker::new(),
            }),
        }
    }
}

impl Purly {
    /// A handler with the default configuration (prefix `/`).
    pub fn new(engine: Engine) -> Self {
        Purly::builder(engine).build()
    }

    /// A builder, to set the prefix, allowed origins and authorization hook.
    pub fn builder(engine: Engine) -> PurlyBuilder {
        PurlyBuilder {
            engine,
            config: ServerConfig::default(),
            authorize: None,
        }
    }

    /// The engine behind the routes.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The transport configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// How many WebSocket connections are open.
    pub fn connections(&self) -> usize {
        self.inner.connections.len()
    }

    /// Serves `request` if it is for one of purly's routes, or hands it back untouched.
    pub fn try_handle<B>(&self, request: Request<B>) -> Handled<B> {
        let (kind, model) = match route(request.uri().path(), &self.inner.config.prefix) {
            Routed::Elsewhere => return Handled::NotPurly(request),
            Routed::BadName(_, error) => {
                return Handled::Response(error_response(
                    StatusCode::BAD_REQUEST,
                    &error.to_string(),
                ))
            }
            Routed::Model(kind, model) => (kind, model),
        };
        Handled::Response(self.serve(request, kind, model))
    }

    fn serve<B>(&self, request: Request<B>, kind: RouteKind, model: ModelName) -> Response<Body> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "purly's routes answer GET only",
            );
        }
        let decision = self.authorize(&request, kind, &model);
        if decision == Decision::Deny {
            return error_response(StatusCode::FORBIDDEN, "access denied");
        }
        match kind {
            RouteKind::Stream => self.upgrade(request, model, decision),
            RouteKind::State => self.state(&model),
            RouteKind::Page => page::response(),
        }
    }

    /// Serves `request`, answering 404 if it is not for one of purly's routes.
    pub fn handle<B>(&self, request: Request<B>) -> Response<Body> {
        match self.try_handle(request) {
            Handled::Response(response) => response,
            Handled::NotPurly(_) => error_response(StatusCode::NOT_FOUND, "not found"),
        }
    }

    /// Serves HTTP/1.1 (with WebSocket upgrades) on one accepted TCP connection, answering
    /// purly's routes and 404 for anything else: the body of a plain hyper accept loop. It sets
    /// TCP_NODELAY (Nagle's algorithm would delay small messages by ~40 ms) and gives the
    /// authorization hook the peer's address.
    pub async fn serve_connection(&self, socket: TcpStream) -> Result<(), hyper::Error> {
        let peer = socket.peer_addr().ok();
        // Best effort: a socket that refuses it still works, only with more latency.
        let _ = socket.set_nodelay(true);
        let purly = self.clone();
        let service = service_fn(move |mut request: Request<Incoming>| {
            if let Some(peer) = peer {
                request.extensions_mut().insert(PeerAddr(peer));
            }
            ready(Ok::<_, Infallible>(purly.handle(request)))
        });
        http1::Builder::new()
            .serve_connection(TokioIo::new(socket), service)
            .with_upgrades()
            .await
    }

    /// Stops serving: every connection is closed with code 1001 after what was queued for it
    /// is sent, frames being applied are applied whole or refused, and later requests for the
    /// stream get HTTP 503. Resolves when every connection task has ended.
    pub async fn shutdown(&self) {
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

    fn state(&self, model: &ModelName) -> Response<Body> {
        let state = self.inner.engine.read(model.as_str(), |state, version| {
            (purly::serde_json::to_string(state), version)
        });
        match state {
            Some((Ok(json), version)) => Response::builder()
                .header(CONTENT_TYPE, "application/json")
                .header("purly-version", version)
                .body(Body::from(json))
                .unwrap_or_else(|_| internal_error()),
            Some((Err(_), _)) => internal_error(),
            None => error_response(StatusCode::NOT_FOUND, "no such model"),
        }
    }

    fn upgrade<B>(
        &self,
        mut request: Request<B>,
        model: ModelName,
        decision: Decision,
    ) -> Response<Body> {
        if !hyper_tungstenite::is_upgrade_request(&request) {
            return error_response(
                StatusCode::UPGRADE_REQUIRED,
                "this route is a WebSocket stream",
            );
        }
        if !origin_allowed(request.headers(), &self.inner.config.allowed_origins) {
            return error_response(StatusCode::FORBIDDEN, "cross-site WebSocket refused");
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
        if let (true, Some((since, epoch))) = (stream_mode, resume_point(&request)) {
            options = options.resume(since, epoch);
        }
        let engine = &self.inner.engine;
        let outbox = Arc::new(Outbox::new(engine.config().max_queued_bytes));
        // Joining before the upgrade answers refusals with an HTTP status, and takes the
        // snapshot at once: it waits in the outbox until the socket is ready.
        let session = match engine.join(model.as_str(), outbox.clone(), options) {
            Ok(session) => session,
            Err(error) => return join_refused(&error),
        };
        let (mut response, websocket) =
            match hyper_tungstenite::upgrade(&mut request, Some(self.inner.websocket)) {
                Ok(upgrade) => upgrade,
                Err(error) => return error_response(StatusCode::BAD_REQUEST, &error.to_string()),
            };
        if stream_mode {
            response.headers_mut().insert(
                SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(STREAM_SUBPROTOCOL),
            );
        }
        let shared = self.inner.clone();
        let peer = request.extensions().get::<PeerAddr>().map(|p| p.0);
        self.inner.connections.spawn(async move {
            let mut ws = match websocket.await {
                Ok(ws) => ws,
                Err(error) => {
                    tracing::debug!(%model, %error, "upgrade failed");
                    return;
                }
            };
            let (id, mode) = (session.id(), session.mode());
            tracing::info!(%model, client = %id, ?mode, ?peer, "connected");
            let ending = serve(&mut ws, &session, &outbox, &shared.config).await;
            drop(session);
            match ending {
                Ending::PeerClosed => tracing::info!(%model, client = %id, "disconnected"),
                Ending::PeerLost(why) => {
                    tracing::info!(%model, client = %id, %why, "disconnected: peer lost")
                }
                Ending::ClosedByServer(code) => {
                    tracing::info!(%model, client = %id, code, "disconnected: closed by server")
                }
            }
        });
        response
    }
}

impl fmt::Debug for Purly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Purly")
            .field("prefix", &self.inner.config.prefix)
            .field("connections", &self.connections())
            .finish_non_exhaustive()
    }
}

impl<B> hyper::service::Service<Request<B>> for Purly {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Body>, Infallible>>;

    fn call(&self, request: Request<B>) -> Self::Future {
        ready(Ok(self.handle(request)))
    }
}

impl<B> tower_service::Service<Request<B>> for Purly {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        ready(Ok(self.handle(request)))
    }
}

fn offers_stream_protocol<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == STREAM_SUBPROTOCOL)
}

/// `?since=N&epoch=E` from the stream URL.
fn resume_point<B>(request: &Request<B>) -> Option<(u64, String)> {
    let query = request.uri().query()?;
    let mut since = None;
    let mut epoch = None;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("since", value)) => since = value.parse().ok(),
            Some(("epoch", value)) => epoch = Some(value.to_owned()),
            _ => {}
        }
    }
    Some((since?, epoch?))
}

fn join_refused(error: &JoinError) -> Response<Body> {
    let status = match error {
        JoinError::InvalidName(_) => StatusCode::BAD_REQUEST,
        JoinError::Refused(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    error_response(status, &error.to_string())
}

fn error_response(status: StatusCode, message: &str) -> Response<Body> {
    let body = purly::serde_json::json!({ "error": message }).to_string();
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap_or_else(|_| internal_error())
}

fn internal_error() -> Response<Body> {
    let mut response = Response::new(Body::from(r#"{"error":"internal error"}"#));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}
