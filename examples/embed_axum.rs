//! Mounts purly under `/sync` inside an axum app that has routes of its own.
//!
//! ```text
//! cargo run --example embed_axum -- 127.0.0.1:3000
//! curl http://127.0.0.1:3000/api/hello                 # the app's own route
//! # WebSocket clients connect to ws://127.0.0.1:3000/sync/{model}/stream
//! curl http://127.0.0.1:3000/sync/{model}/state        # once a client has joined {model}
//! ```

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::{middleware, Router};
use purly::Engine;
use purly_hyper::{Decision, PeerAddr, Purly, RouteKind};

/// The app: its own routes, and purly nested under `/sync` (axum strips the `/sync` prefix
/// before purly sees the path, so purly keeps its default prefix `/`).
fn app(purly: Purly) -> Router {
    Router::new()
        .route("/api/hello", get(|| async { "hello from the app" }))
        .nest_service("/sync", purly)
        .layer(middleware::map_request(peer_for_purly))
}

/// Hands axum's peer address to purly's authorization hook.
async fn peer_for_purly(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
) -> Request {
    request.extensions_mut().insert(PeerAddr(peer));
    request
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt().with_target(false).init();
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 3000)));
    let purly = Purly::builder(Engine::default())
        // Who may do what: here, anyone may read, and only this machine may write.
        .authorize(|request| match (request.route, request.peer) {
            (RouteKind::Stream, Some(peer)) if peer.ip().is_loopback() => Decision::ReadWrite,
            _ => Decision::ReadOnly,
        })
        .build();
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(
        "app on http://{}, purly under /sync",
        listener.local_addr()?
    );
    // axum leaves Nagle's algorithm on, which delays small messages by ~40 ms.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let shutdown = {
        let purly = purly.clone();
        async move {
            let _ = tokio::signal::ctrl_c().await;
            purly.shutdown().await;
        }
    };
    // Every client gets a close frame with 1001 before the server stops.
    let service = app(purly).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(shutdown)
        .await
}
