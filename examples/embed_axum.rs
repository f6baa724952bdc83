//! Mounts purly under `/sync` inside an axum app that has routes of its own.
//!
//! ```text
//! cargo run --example embed_axum -- 127.0.0.1:3000
//! curl http://127.0.0.1:3000/api/hello                 # the app's own route
//! # WebSocket clients connect to ws://127.0.0.1:3000/sync/{model}/stream
//! curl http://127.0.0.1:3000/sync/{model}/state        # once a client has joined {model}
//! ```

use std::net::SocketAddr;

use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use purly::Engine;
use purly_hyper::Purly;

/// The app: its own routes, and purly nested under `/sync` (axum strips the `/sync` prefix
/// before purly sees the path, so purly keeps its default prefix `/`).
fn app(purly: Purly) -> Router {
    Router::new()
        .route("/api/hello", get(|| async { "hello from the app" }))
        .nest_service("/sync", purly)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt().with_target(false).init();
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 3000)));
    let purly = Purly::new(Engine::default());
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
    axum::serve(listener, app(purly))
        .with_graceful_shutdown(shutdown)
        .await
}
