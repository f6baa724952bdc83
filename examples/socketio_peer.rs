//! A peer for the comparison (`examples/compare.sh`, `examples/compare_nodes.sh`): the same
//! workloads on socketioxide + axum, the fastest Rust Socket.IO server, configured as its users
//! would for this job.
//!
//! Each client connects to `/socket.io/?EIO=4&transport=websocket&model=NAME` and joins the
//! room `NAME`; an `update` event's data is emitted to the whole room, the sender included (as
//! purly echoes to its sender). Accepted sockets get TCP_NODELAY; the per-connection packet
//! buffer is raised from 128 to 16,384 packets so that a burst is queued, not dropped (purly
//! queues 8 MiB per connection); the read buffer is socketioxide's default, 4 KiB.
//!
//! With `--redis URL` or `--redis-cluster URL,URL,...` it is one node of several, on
//! socketioxide-redis (its redis-rs driver, RESP3; sharded pub/sub on a cluster), as
//! socketioxide's users scale out. A socket's emits then go through Redis: each socket's are
//! awaited one after the other by a task of its own, so that they stay in the order they
//! arrived in.
//!
//! ```text
//! cargo run --release --example socketio_peer -- --addr 127.0.0.1:8002
//! cargo run --release --example socketio_peer -- --addr 127.0.0.1:8002 --redis redis://127.0.0.1:6379
//! ```

use std::future::Future;
use std::pin::Pin;

use axum::serve::ListenerExt;
use futures_util::FutureExt;
use purly::serde_json::Value;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{Data, SocketRef};
use socketioxide::{SocketIo, SocketIoBuilder};
use socketioxide_redis::{ClusterAdapter, RedisAdapter, RedisAdapterCtr};

/// jemalloc, as every server of the comparisons (BENCHMARKS.md, issue 27: glibc's malloc pads
/// each connection's 128-byte-aligned allocations by about 200 bytes).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

type Emit = Pin<Box<dyn Future<Output = ()> + Send>>;

fn arg(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

fn builder() -> SocketIoBuilder {
    SocketIo::builder().max_buffer_size(16_384)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = arg("--addr").unwrap_or_else(|| "127.0.0.1:8002".to_owned());
    let app = if let Some(url) = arg("--redis") {
        let client = redis::Client::open(format!("{url}/?protocol=resp3"))?;
        let adapter = RedisAdapterCtr::new_with_redis(&client).await?;
        let (layer, io) = builder()
            .with_adapter::<RedisAdapter<_>>(adapter)
            .build_layer();
        io.ns("/", async |socket: SocketRef<RedisAdapter<_>>| {
            on_connect(socket, true)
        })
        .await?;
        axum::Router::new().layer(layer)
    } else if let Some(urls) = arg("--redis-cluster") {
        let client = redis::cluster::ClusterClientBuilder::new(urls.split(','))
            .use_protocol(redis::ProtocolVersion::RESP3)
            .build()?;
        let adapter = RedisAdapterCtr::new_with_cluster(&client).await?;
        let (layer, io) = builder()
            .with_adapter::<ClusterAdapter<_>>(adapter)
            .build_layer();
        io.ns("/", async |socket: SocketRef<ClusterAdapter<_>>| {
            on_connect(socket, true)
        })
        .await?;
        axum::Router::new().layer(layer)
    } else {
        let (layer, io) = builder().build_layer();
        io.ns("/", async |socket: SocketRef| on_connect(socket, false));
        axum::Router::new().layer(layer)
    };
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await?;
    Ok(())
}

/// Joins the room the query names and relays its `update` events to the room. `remote`: the
/// emits go through Redis (awaited in order by the socket's task), else they complete at once.
fn on_connect<A: Adapter>(socket: SocketRef<A>, remote: bool) {
    let model = socket
        .req_parts()
        .uri
        .query()
        .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("model=")))
        .unwrap_or("default")
        .to_owned();
    socket.join(model.clone());
    let (emits, mut queued) = tokio::sync::mpsc::unbounded_channel::<Emit>();
    if remote {
        tokio::spawn(async move {
            while let Some(emit) = queued.recv().await {
                emit.await;
            }
        });
    }
    // socketioxide spawns the future a handler returns, one task per event, so emits made
    // inside it may overtake each other. Emitting in the handler's body instead keeps the
    // order the events arrived in.
    socket.on(
        "update",
        move |socket: SocketRef<A>, Data::<Value>(data)| {
            let room = socket.within(model.clone());
            if remote {
                let _ = emits.send(Box::pin(async move {
                    let _ = room.emit("update", &data).await;
                }));
            } else {
                let _ = room.emit("update", &data).now_or_never();
            }
            std::future::ready(())
        },
    );
}
