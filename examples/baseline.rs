//! The yardstick for the comparison (`examples/compare.sh`): the broadcast server a careful
//! Rust user would write by hand with tokio-tungstenite, done well. A model per path (a
//! `tokio::sync::broadcast` channel of shared bytes: every text frame a client sends is put on
//! its path's channel as is and written to every connection of that path, its sender too).
//! TCP_NODELAY; a 4 KiB read buffer (tungstenite's default is 128 KiB); frames are fed as they
//! come and flushed once when no more are ready. No merge, no diff, no durability, and no
//! ordering guarantee across a lag (a receiver that falls 16,384 frames behind skips them).
//!
//! ```text
//! cargo run --release --example baseline -- --addr 127.0.0.1:8001
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// jemalloc, as every server of the comparisons (BENCHMARKS.md, issue 27: glibc's malloc pads
/// each connection's 128-byte-aligned allocations by about 200 bytes).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

type Channels = Arc<Mutex<HashMap<String, broadcast::Sender<Utf8Bytes>>>>;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .skip_while(|a| a != "--addr")
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8001".to_owned());
    let listener = TcpListener::bind(&addr).await?;
    let channels: Channels = Arc::default();
    loop {
        let (socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?;
        let channels = channels.clone();
        tokio::spawn(async move {
            let mut path = String::new();
            let config = WebSocketConfig::default().read_buffer_size(4 << 10);
            #[allow(clippy::result_large_err)] // tungstenite's callback signature
            let callback = |request: &Request, response: Response| {
                path = request.uri().path().to_owned();
                Ok(response)
            };
            let Ok(ws) =
                tokio_tungstenite::accept_hdr_async_with_config(socket, callback, Some(config))
                    .await
            else {
                return;
            };
            let frames = channels
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(path)
                .or_insert_with(|| broadcast::channel(16_384).0)
                .clone();
            let (mut sink, mut stream) = ws.split();
            let mut receiver = frames.subscribe();
            loop {
                tokio::select! {
                    incoming = stream.next() => match incoming {
                        Some(Ok(Message::Text(text))) => {
                            let _ = frames.send(text);
                        }
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                        Some(Ok(_)) => {}
                    },
                    outgoing = receiver.recv() => {
                        let mut next = outgoing;
                        // Feed every frame that is ready, then flush once.
                        loop {
                            match next {
                                Ok(text) => {
                                    if sink.feed(Message::Text(text)).await.is_err() {
                                        return;
                                    }
                                }
                                Err(RecvError::Lagged(_)) => {}
                                Err(RecvError::Closed) => return,
                            }
                            next = match receiver.try_recv() {
                                Ok(text) => Ok(text),
                                Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
                                Err(TryRecvError::Empty) => break,
                                Err(TryRecvError::Closed) => Err(RecvError::Closed),
                            };
                        }
                        if sink.flush().await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}
