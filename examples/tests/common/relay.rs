//! A TCP relay the test controls, between a client and the server: it can stop passing what
//! the server sends (the request went through, its answer never arrives) and cut every
//! connection, as a network failure would. Loopback only; stopped when dropped.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A running relay to `upstream`.
pub(crate) struct Relay {
    pub(crate) addr: SocketAddr,
    /// While set, what the server sends is read and dropped.
    pub(crate) mute_replies: Arc<AtomicBool>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Relay {
    pub(crate) async fn start(upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mute_replies = Arc::new(AtomicBool::new(false));
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (mute, kept) = (mute_replies.clone(), tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                let up = tokio::spawn(pipe(client_read, server_write, None));
                let down = tokio::spawn(pipe(server_read, client_write, Some(mute.clone())));
                kept.lock().unwrap().extend([up, down]);
            }
        });
        Relay {
            addr,
            mute_replies,
            tasks,
            accept,
        }
    }

    /// Drops every connection through the relay (both sides see it closed).
    pub(crate) fn cut_all(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut_all();
    }
}

/// Copies `from` to `to` until either side closes; with `mute` set, drops what it reads.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mute: Option<Arc<AtomicBool>>,
) {
    let mut buffer = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if mute.as_ref().is_some_and(|m| m.load(Ordering::SeqCst)) {
            continue;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
