//! The yardstick for the load generator: the broadcast server a Rust user would write by hand
//! with tokio-tungstenite. One task per connection; every text frame a client sends is put on a
//! `tokio::sync::broadcast` channel as is and written to every connection (its sender too). No
//! purly: no merge, no diff, no ordering guarantee across a lag (a lagging receiver skips what
//! it missed). TCP_NODELAY is set, as a careful author would; the rest are library defaults.
//!
//! ```text
//! cargo run --release --example baseline -- --addr 127.0.0.1:8001
//! ```

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .skip_while(|a| a != "--addr")
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8001".to_owned());
    let listener = TcpListener::bind(&addr).await?;
    let (frames, _) = broadcast::channel::<Utf8Bytes>(4096);
    loop {
        let (socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?;
        let frames = frames.clone();
        tokio::spawn(async move {
            let Ok(ws) = tokio_tungstenite::accept_async(socket).await else {
                return;
            };
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
                    outgoing = receiver.recv() => match outgoing {
                        Ok(text) => {
                            if sink.send(Message::Text(text)).await.is_err() {
                                break;
                            }
                        }
                        Err(RecvError::Lagged(_)) => continue,
                        Err(RecvError::Closed) => break,
                    },
                }
            }
        });
    }
}
