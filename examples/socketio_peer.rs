//! A peer for the comparison (`examples/compare.sh`): the same workloads on socketioxide +
//! axum, the fastest Rust Socket.IO server, configured as its users would for this job.
//!
//! Each client connects to `/socket.io/?EIO=4&transport=websocket&model=NAME` and joins the
//! room `NAME`; an `update` event's data is emitted to the whole room, the sender included (as
//! purly echoes to its sender). Accepted sockets get TCP_NODELAY; the per-connection packet
//! buffer is raised from 128 to 16,384 packets so that a burst is queued, not dropped (purly
//! queues 8 MiB per connection); the read buffer is socketioxide's default, 4 KiB.
//!
//! ```text
//! cargo run --release --example socketio_peer -- --addr 127.0.0.1:8002
//! ```

use axum::serve::ListenerExt;
use futures_util::FutureExt;
use purly::serde_json::Value;
use socketioxide::extract::{Data, SocketRef};
use socketioxide::SocketIo;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .skip_while(|a| a != "--addr")
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8002".to_owned());
    let (layer, io) = SocketIo::builder().max_buffer_size(16_384).build_layer();
    io.ns("/", async |socket: SocketRef| {
        let model = socket
            .req_parts()
            .uri
            .query()
            .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("model=")))
            .unwrap_or("default")
            .to_owned();
        socket.join(model.clone());
        // socketioxide spawns the future a handler returns, one task per event, so emits made
        // inside it may overtake each other. Emitting in the handler's body instead keeps the
        // order the events arrived in (with the in-memory adapter the emit completes at once).
        socket.on("update", move |socket: SocketRef, Data::<Value>(data)| {
            let emit = socket.within(model.clone()).emit("update", &data);
            let _ = emit.now_or_never();
            std::future::ready(())
        });
    });
    let app = axum::Router::new().layer(layer);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await
}
