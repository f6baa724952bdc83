//! A TCP proxy the test controls, between a node and Redis: it reads RESP well enough to know
//! which reply answers which command, so that it can drop the reply of an append after Redis
//! ran it (and cut the connection, as a network failure would), and delay what the feed's
//! pub/sub connection receives. Loopback only; stopped when dropped.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the proxy does to the traffic, changed by the test at any time.
#[derive(Default)]
pub(crate) struct Faults {
    /// Drop the reply of every Nth append (0: none), then cut that connection.
    pub(crate) drop_every_nth_append: AtomicU64,
    /// Delay every chunk a pub/sub connection receives by this many milliseconds.
    pub(crate) feed_delay_ms: AtomicU64,
    /// Delay every (un)subscription on its way to Redis by this many milliseconds: a
    /// subscription that takes effect late.
    pub(crate) subscribe_delay_ms: AtomicU64,
    /// Hold everything, both ways, while set (a network that stops passing packets without
    /// closing anything); released in order when cleared.
    pub(crate) blackhole: AtomicBool,
    /// Appends seen, and replies dropped.
    pub(crate) appends: AtomicU64,
    pub(crate) dropped: AtomicU64,
}

/// A running proxy to `127.0.0.1:upstream`.
pub(crate) struct Proxy {
    pub(crate) port: u16,
    pub(crate) faults: Arc<Faults>,
    accept: JoinHandle<()>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    pub(crate) async fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let faults = Arc::new(Faults::default());
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = {
            let faults = faults.clone();
            let connections = connections.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        continue;
                    };
                    let task = tokio::spawn(relay(client, server, faults.clone()));
                    connections.lock().unwrap().push(task);
                }
            })
        };
        Proxy {
            port,
            faults,
            accept,
            connections,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Cuts every connection open now (their sockets close, as a network reset would); new
    /// ones are served as before.
    pub(crate) fn cut_all(&self) {
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

/// What a command was, for the reply that answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Append,
    Subscribe,
    Other,
}

async fn relay(client: TcpStream, server: TcpStream, faults: Arc<Faults>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let kinds: Arc<Mutex<VecDeque<Kind>>> = Arc::default();
    let subscribed = Arc::new(AtomicBool::new(false));
    let requests = {
        let kinds = kinds.clone();
        let faults = faults.clone();
        async move {
            let mut buffer = Vec::new();
            let mut chunk = [0u8; 16 << 10];
            loop {
                let n = match client_read.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                hold_while_blackholed(&faults).await;
                buffer.extend_from_slice(&chunk[..n]);
                let mut subscribes = false;
                while let Some((len, name, args)) = command(&buffer) {
                    let kind = match name.to_ascii_uppercase().as_slice() {
                        b"EVALSHA" | b"EVAL" if args >= 12 => Kind::Append,
                        b"SUBSCRIBE" | b"PSUBSCRIBE" => Kind::Subscribe,
                        _ => Kind::Other,
                    };
                    subscribes |= kind == Kind::Subscribe;
                    kinds.lock().unwrap().push_back(kind);
                    buffer.drain(..len);
                }
                let delay = faults.subscribe_delay_ms.load(Ordering::SeqCst);
                if subscribes && delay > 0 {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                if server_write.write_all(&chunk[..n]).await.is_err() {
                    return;
                }
            }
        }
    };
    let replies = {
        let subscribed = subscribed.clone();
        async move {
            let mut buffer = Vec::new();
            let mut chunk = [0u8; 16 << 10];
            loop {
                let n = match server_read.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                hold_while_blackholed(&faults).await;
                if subscribed.load(Ordering::SeqCst) {
                    let delay = faults.feed_delay_ms.load(Ordering::SeqCst);
                    if delay > 0 {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                    if client_write.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    continue;
                }
                buffer.extend_from_slice(&chunk[..n]);
                let mut forward = Vec::new();
                while let Some(len) = value_len(&buffer) {
                    let kind = kinds.lock().unwrap().pop_front().unwrap_or(Kind::Other);
                    if kind == Kind::Append {
                        let seen = faults.appends.fetch_add(1, Ordering::SeqCst) + 1;
                        let every = faults.drop_every_nth_append.load(Ordering::SeqCst);
                        if every > 0 && seen.is_multiple_of(every) {
                            // Redis ran it; its answer never arrives and the connection breaks.
                            faults.dropped.fetch_add(1, Ordering::SeqCst);
                            let _ = client_write.write_all(&forward).await;
                            let _ = client_write.shutdown().await;
                            return;
                        }
                    }
                    forward.extend(buffer.drain(..len));
                    if kind == Kind::Subscribe {
                        // From here on the server pushes messages: pass them through.
                        subscribed.store(true, Ordering::SeqCst);
                        forward.append(&mut buffer);
                        break;
                    }
                }
                if client_write.write_all(&forward).await.is_err() {
                    return;
                }
            }
        }
    };
    tokio::select! {
        () = requests => {}
        () = replies => {}
    }
}

/// Waits while the proxy passes nothing (polling: the test flips the flag from elsewhere).
async fn hold_while_blackholed(faults: &Faults) {
    while faults.blackhole.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The length of the first whole RESP2 value in `buffer`, if it is all there.
fn value_len(buffer: &[u8]) -> Option<usize> {
    let line_end = buffer.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&buffer[1..line_end]).ok()?;
    let head = line_end + 2;
    match buffer.first()? {
        b'+' | b'-' | b':' => Some(head),
        b'$' => {
            let len: i64 = line.parse().ok()?;
            if len < 0 {
                return Some(head);
            }
            let end = head + len as usize + 2;
            (buffer.len() >= end).then_some(end)
        }
        b'*' => {
            let count: i64 = line.parse().ok()?;
            let mut at = head;
            for _ in 0..count.max(0) {
                at += value_len(&buffer[at..])?;
            }
            Some(at)
        }
        _ => None,
    }
}

/// The first whole command in `buffer` (an array of bulk strings): its length, its name and
/// how many elements it has.
fn command(buffer: &[u8]) -> Option<(usize, Vec<u8>, usize)> {
    let len = value_len(buffer)?;
    let line_end = buffer.windows(2).position(|w| w == b"\r\n")?;
    let count: usize = std::str::from_utf8(&buffer[1..line_end])
        .ok()?
        .parse()
        .ok()?;
    let first = line_end + 2;
    let name_line = buffer[first..].windows(2).position(|w| w == b"\r\n")? + first;
    let name_len: usize = std::str::from_utf8(&buffer[first + 1..name_line])
        .ok()?
        .parse()
        .ok()?;
    let name = buffer[name_line + 2..name_line + 2 + name_len].to_vec();
    Some((len, name, count))
}
