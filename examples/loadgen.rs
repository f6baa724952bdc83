//! Load generator for any server that speaks purly's protocol (loopback only; every run is
//! bounded in count and in time).
//!
//! ```text
//! # N subscribers and P publishers on one model; M updates per publisher, as fast as accepted:
//! loadgen --url ws://127.0.0.1:8000/load/stream --subscribers 1000 --publishers 1 --updates 5000
//! # the same at a fixed rate (updates per second, all publishers together):
//! loadgen --url ... --subscribers 1000 --updates 500 --rate 50
//! # K idle subscribers: the server's memory per connection (needs its pid):
//! loadgen --url ... --idle 10000 --pid 1234
//! # several nodes of one cluster: connections spread round-robin over the URLs
//! loadgen --url ws://127.0.0.1:8001/load/stream,ws://127.0.0.1:8002/load/stream ...
//! # at most 32 updates in flight: update k is sent once update k-32 reached every subscriber
//! loadgen --url ... --subscribers 1000 --updates 20000 --window 32
//! # subscribers on the event stream (`GET .../events`; publishers stay on WebSockets)
//! loadgen --url ws://127.0.0.1:8000/load/stream --transport events ...
//! # publishers with client keys (`?client=`, integer ids: PROTOCOL.md section 9)
//! loadgen --url ... --client-keys
//! # 1,000 models x 5 subscribers, one publisher per model ({model} in the URL)
//! loadgen --url ws://127.0.0.1:8000/m{model}/stream --models 1000 --subscribers 5000 ...
//! # peers: the hand-written baseline (raw frames) and socketioxide (Socket.IO)
//! loadgen --protocol raw --url ws://127.0.0.1:8001/m{model} ...
//! loadgen --protocol socketio --url 'ws://127.0.0.1:8002/socket.io/?EIO=4&transport=websocket&model={model}' ...
//! ```
//!
//! Each update sets `{"load": {"p<P>": {"n": <seq>, "t": <send time, ns>, "x": <padding>}}}`,
//! so every subscriber checks that it sees each publisher's sequence with no gap and no
//! reordering, and measures publish→receive latency. Reports deliveries per second, latency
//! p50/p99/max, losses, reorders, resyncs (stream-mode snapshots that replaced dropped
//! diffs), errors, and with `--pid` the server's peak RSS and CPU time. `--stuck K` adds K
//! subscribers that never read, to see what a stuck client costs the others. `--json` prints
//! one JSON line.
//!
//! Every loss is counted, and a run with any is marked `"failed": true`: updates owed to a
//! subscriber at the end, gaps, duplicates, subscribers that dropped or never received
//! anything, and error frames. With `--pid`, the server's CPU time per delivery is reported:
//! on a shared machine, it is what decides how many clients a box can serve. It counts from
//! the moment every client is connected; what the server spent setting the connections up
//! (handshakes, joins, first snapshots) is reported apart, per connection.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use memchr::memmem::Finder;
use purly::serde_json::{self, json, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

#[path = "loadgen/link.rs"]
mod link;
#[path = "loadgen/server_stats.rs"]
mod server_stats;
use link::{Got, Link};
use server_stats::ServerStats;

type Ws = WebSocketStream<TcpStream>;

struct Args {
    url: String,
    subscribers: usize,
    publishers: usize,
    updates: u64,
    rate: f64,
    size: usize,
    limit: Duration,
    pid: Option<u32>,
    idle: usize,
    stuck: usize,
    protocol: Protocol,
    window: u64,
    models: usize,
    json: bool,
    client_keys: bool,
    transport: Transport,
}

/// How subscribers receive (`--transport`): publishers always use a WebSocket.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Transport {
    WebSocket,
    /// purly's event stream (`GET .../events`, PROTOCOL.md section 10).
    Events,
}

/// How the load generator talks to the server.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Protocol {
    /// purly's stream mode (subprotocol `purly.stream`).
    Purly,
    /// The baseline: purly frames as plain text, relayed as they are.
    Raw,
    /// Socket.IO (Engine.IO 4 over WebSocket): `update` events.
    SocketIo,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        url: "ws://127.0.0.1:8000/load/stream".into(),
        subscribers: 100,
        publishers: 1,
        updates: 1000,
        rate: 0.0,
        size: 100,
        limit: Duration::from_secs(60),
        pid: None,
        idle: 0,
        stuck: 0,
        protocol: Protocol::Purly,
        window: 0,
        models: 1,
        json: false,
        client_keys: false,
        transport: Transport::WebSocket,
    };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        let mut value = || words.next().ok_or(format!("{word} needs a value"));
        let number = |v: String| v.parse::<f64>().map_err(|e| format!("{v}: {e}"));
        match word.as_str() {
            "--url" => args.url = value()?,
            "--subscribers" => args.subscribers = number(value()?)? as usize,
            "--publishers" => args.publishers = (number(value()?)? as usize).max(1),
            "--updates" => args.updates = number(value()?)? as u64,
            "--rate" => args.rate = number(value()?)?,
            "--size" => args.size = number(value()?)? as usize,
            "--limit" => args.limit = Duration::from_secs_f64(number(value()?)?),
            "--pid" => args.pid = Some(number(value()?)? as u32),
            "--idle" => args.idle = number(value()?)? as usize,
            "--stuck" => args.stuck = number(value()?)? as usize,
            "--protocol" => {
                args.protocol = match value()?.as_str() {
                    "purly" => Protocol::Purly,
                    "raw" => Protocol::Raw,
                    "socketio" => Protocol::SocketIo,
                    other => return Err(format!("--protocol {other}: purly, raw or socketio")),
                }
            }
            "--window" => args.window = number(value()?)? as u64,
            "--models" => args.models = (number(value()?)? as usize).max(1),
            "--json" => args.json = true,
            "--client-keys" => args.client_keys = true,
            "--transport" => {
                args.transport = match value()?.as_str() {
                    "websocket" => Transport::WebSocket,
                    "events" => Transport::Events,
                    other => return Err(format!("--transport {other}: websocket or events")),
                }
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.models > 1 {
        // One publisher per model, and the subscribers spread evenly over them.
        args.publishers = args.models;
        if !args.url.contains("{model}") {
            return Err("--models needs {model} in the URL".into());
        }
    }
    for url in args.url.split(',') {
        let host = url
            .split("//")
            .nth(1)
            .unwrap_or("")
            .split('/')
            .next()
            .unwrap_or("");
        if !(host.starts_with("127.") || host.starts_with("localhost") || host.starts_with("[::1]"))
        {
            return Err("loadgen talks to loopback servers only".into());
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("loadgen: {message}");
            std::process::exit(2);
        }
    };
    let result = if args.idle > 0 {
        idle(&args).await
    } else {
        load(&args).await
    };
    match result {
        Ok(report) if args.json => println!("{report}"),
        Ok(report) => print_report(&report),
        Err(message) => {
            eprintln!("loadgen: {message}");
            std::process::exit(1);
        }
    }
}

/// Connects from 127.B.0.(2 + i / 20000), so that more connections than one source address
/// has ports for can be opened; B comes from the process id, so that each run starts from
/// addresses whose ports the last runs' TIME_WAIT sockets do not hold (binding port 0 skips
/// them, and back-to-back runs of thousands of connections exhausted one address's ports).
async fn connect(args: &Args, i: usize, model: usize) -> Result<Ws, String> {
    connect_as(args, i, model, None).await
}

/// [`connect`], naming the connection with a client key (`?client=`) when given one.
async fn connect_as(
    args: &Args,
    i: usize,
    model: usize,
    client_key: Option<String>,
) -> Result<Ws, String> {
    let urls: Vec<&str> = args.url.split(',').collect();
    let mut url = urls[i % urls.len()].replace("{model}", &model.to_string());
    if let Some(key) = client_key {
        let separator = if url.contains('?') { '&' } else { '?' };
        url = format!("{url}{separator}client={key}");
    }
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    if args.protocol == Protocol::Purly {
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("purly.stream"),
        );
    }
    let stream = dial(i, request.uri()).await?;
    // tungstenite zero-fills its read buffer up to `read_buffer_size` before every read: the
    // default 128 KiB made that the load generator's largest cost. 8 KiB holds a batch.
    let config = WebSocketConfig::default().read_buffer_size(8 * 1024);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    if args.protocol == Protocol::SocketIo {
        // Engine.IO's open packet, then connect to the namespace `/` and wait for its answer.
        let first = next_text(&mut ws).await?;
        if !first.starts_with('0') {
            return Err(format!("socket.io: expected an open packet, got {first}"));
        }
        ws.send(Message::text("40"))
            .await
            .map_err(|e| e.to_string())?;
        loop {
            let answer = next_text(&mut ws).await?;
            match answer.as_str() {
                "2" => ws
                    .send(Message::text("3"))
                    .await
                    .map_err(|e| e.to_string())?,
                _ if answer.starts_with("40") => break,
                _ => {
                    return Err(format!(
                        "socket.io: expected a connect answer, got {answer}"
                    ))
                }
            }
        }
    }
    Ok(ws)
}

/// A TCP connection for connection `i` to the server of `uri`, from a source address of this
/// process's own (see [`connect`]).
async fn dial(i: usize, uri: &purly_hyper::hyper::Uri) -> Result<TcpStream, String> {
    let host = uri.host().unwrap_or("127.0.0.1").trim_matches(['[', ']']);
    let ip = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    let server = SocketAddr::new(
        ip.parse().map_err(|_| format!("bad host {host}"))?,
        uri.port_u16().unwrap_or(80),
    );
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    // Ports of earlier runs may still be in TIME_WAIT.
    socket.set_reuseaddr(true).map_err(|e| e.to_string())?;
    let run = 1 + (std::process::id() % 250) as u8;
    let source = Ipv4Addr::new(127, run, 0, 2 + (i / 20_000) as u8);
    socket
        .bind(SocketAddr::new(source.into(), 0))
        .map_err(|e| e.to_string())?;
    let stream = socket
        .connect(server)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(stream)
}

/// Subscriber `i` of `model`: a WebSocket, or with `--transport events` purly's event stream
/// of the same model (the `/stream` URL's `/events` route).
async fn subscribe(args: &Args, i: usize, model: usize) -> Result<Link, String> {
    if args.transport == Transport::WebSocket {
        return Ok(Link::Ws(Box::new(connect(args, i, model).await?)));
    }
    let urls: Vec<&str> = args.url.split(',').collect();
    let url = urls[i % urls.len()].replace("{model}", &model.to_string());
    let uri: purly_hyper::hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let path = uri
        .path()
        .strip_suffix("/stream")
        .ok_or("--transport events: a /stream URL")?;
    let host = uri.authority().map(|a| a.to_string()).unwrap_or_default();
    Link::events(dial(i, &uri).await?, &host, &format!("{path}/events")).await
}

async fn next_text(ws: &mut Ws) -> Result<String, String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return Ok(text.to_string()),
            Ok(Some(Ok(_))) => continue,
            Ok(other) => return Err(format!("the connection ended: {other:?}")),
            Err(_) => return Err("no answer within 10 s".into()),
        }
    }
}

/// The model of subscriber `i` (`--models`): subscribers are spread evenly.
fn model_of(args: &Args, i: usize) -> usize {
    i % args.models
}

/// Latency histogram in microseconds: 16 sub-buckets per power of two (about 6% precision).
#[derive(Clone)]
struct Histogram {
    counts: Vec<u64>,
    max: u64,
    total: u64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            counts: vec![0; 64 * 16],
            max: 0,
            total: 0,
        }
    }

    fn index(value: u64) -> usize {
        if value < 16 {
            return value as usize;
        }
        let exponent = 63 - value.leading_zeros() as usize;
        (exponent - 3) * 16 + ((value >> (exponent - 4)) & 15) as usize
    }

    fn lower_bound(index: usize) -> u64 {
        if index < 16 {
            return index as u64;
        }
        let (exponent, mantissa) = (index / 16 + 3, (index % 16) as u64);
        (16 + mantissa) << (exponent - 4)
    }

    fn record(&mut self, value: u64) {
        self.counts[Self::index(value)] += 1;
        self.max = self.max.max(value);
        self.total += 1;
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.max = self.max.max(other.max);
        self.total += other.total;
    }

    fn percentile(&self, p: f64) -> u64 {
        let wanted = ((self.total as f64) * p).ceil() as u64;
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= wanted.max(1) {
                return Self::lower_bound(index);
            }
        }
        self.max
    }
}

#[derive(Clone)]
struct SubscriberReport {
    deliveries: u64,
    lost: u64,
    reordered: u64,
    resyncs: u64,
    errors: u64,
    /// Updates this subscriber was owed at the end of the run (not delivered, not covered by
    /// a snapshot).
    owed: u64,
    /// Subscribers whose connection ended before they had everything.
    dropped: u64,
    /// Subscribers that never received anything.
    never_synced: u64,
    latency: Histogram,
    finished: Option<Duration>,
}

/// The patterns the subscribers look for in every frame, each searcher built once (building
/// one per search, as `str::find` does, cost more than the search).
struct Patterns {
    delivery: Finder<'static>,
    error: Finder<'static>,
    snapshot: Finder<'static>,
}

static PATTERNS: LazyLock<Patterns> = LazyLock::new(|| Patterns {
    delivery: Finder::new(DELIVERY),
    error: Finder::new("\"type\":\"error\""),
    snapshot: Finder::new("\"snapshot\":true"),
});

/// What precedes each delivered update's sequence number.
const DELIVERY: &str = "\":{\"n\":";

/// Finds each `"p<P>":{"n":<N>,"t":<T>` in a frame: one delivered update.
fn scan(text: &str, mut each: impl FnMut(usize, u64, u64)) {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(found) = PATTERNS.delivery.find(&bytes[from..]) {
        let at = from + found;
        from = at + DELIVERY.len();
        let mut start = at;
        while start > 0 && bytes[start - 1].is_ascii_digit() {
            start -= 1;
        }
        if start < 2 || &bytes[start - 2..start] != b"\"p" {
            continue;
        }
        let Ok(publisher) = text[start..at].parse::<usize>() else {
            continue;
        };
        let (n, after_n) = number(bytes, from);
        if !text[after_n..].starts_with(",\"t\":") {
            continue;
        }
        let (t, after_t) = number(bytes, after_n + 5);
        from = after_t;
        each(publisher, n, t);
    }
}

fn number(bytes: &[u8], mut at: usize) -> (u64, usize) {
    let mut value = 0u64;
    while at < bytes.len() && bytes[at].is_ascii_digit() {
        value = value * 10 + u64::from(bytes[at] - b'0');
        at += 1;
    }
    (value, at)
}

/// How many subscribers have each update of one publisher: the bounded-in-flight window.
struct Progress {
    delivered: Vec<AtomicU32>,
    target: u32,
    notify: Notify,
}

impl Progress {
    fn new(updates: u64, target: usize) -> Self {
        Progress {
            delivered: (0..=updates).map(|_| AtomicU32::new(0)).collect(),
            target: target as u32,
            notify: Notify::new(),
        }
    }

    /// One subscriber has update `n`.
    fn reached(&self, n: u64) {
        if let Some(count) = self.delivered.get(n as usize) {
            if count.fetch_add(1, Ordering::AcqRel) + 1 >= self.target {
                self.notify.notify_waiters();
            }
        }
    }

    /// Waits until every subscriber has update `n`; false at the time limit.
    async fn wait(&self, n: u64, limit: Instant) -> bool {
        let Some(count) = self.delivered.get(n as usize) else {
            return true;
        };
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if count.load(Ordering::Acquire) >= self.target {
                return true;
            }
            if tokio::time::timeout_at(limit.into(), notified)
                .await
                .is_err()
            {
                return false;
            }
        }
    }
}

/// What one subscriber follows: its publishers (indices), the run's key base and sizes.
struct Follow {
    publishers: Vec<usize>,
    base: usize,
    updates: u64,
    protocol: Protocol,
    progress: Arc<Vec<Progress>>,
}

async fn subscriber(
    mut link: Link,
    follow: Follow,
    start: Instant,
    done_publishing: tokio::sync::watch::Receiver<bool>,
    limit: Instant,
) -> SubscriberReport {
    let mut report = SubscriberReport::new();
    // The last update seen of each publisher this subscriber follows (others: `u64::MAX`).
    let publishers = follow.progress.len();
    let mut last = vec![u64::MAX; publishers];
    for &p in &follow.publishers {
        last[p] = 0;
    }
    let mut snapshots = 0;
    let mut received_any = false;
    let mut ended = false;
    let deliver =
        |report: &mut SubscriberReport, last: &mut [u64], p: usize, n: u64, t: u64, now: u64| {
            let Some(slot) = last.get_mut(p).filter(|s| **s != u64::MAX) else {
                return;
            };
            report.deliveries += 1;
            report.latency.record(now.saturating_sub(t) / 1000);
            if n <= *slot {
                report.reordered += 1;
            } else {
                report.lost += n - *slot - 1;
                for covered in *slot + 1..=n {
                    follow.progress[p].reached(covered);
                }
                *slot = n;
            }
        };
    loop {
        if follow.publishers.iter().all(|&p| last[p] >= follow.updates) {
            break;
        }
        // Once publishing is over, silence for 2 s means what is missing will not come.
        let quiet = if *done_publishing.borrow() {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(3600)
        };
        let deadline = limit.min(Instant::now() + quiet);
        let text = match tokio::time::timeout_at(deadline.into(), link.next()).await {
            Ok(Got::Text(text)) => text,
            Ok(Got::Other) => continue,
            Ok(Got::End) => {
                ended = true;
                break;
            }
            Err(_) if Instant::now() >= limit || *done_publishing.borrow() => break,
            Err(_) => continue,
        };
        received_any = true;
        let now = start.elapsed().as_nanos() as u64;
        if follow.protocol == Protocol::SocketIo && text.as_str() == "2" {
            // Engine.IO's ping: answer it, or the server drops us.
            if !link.send_text("3").await {
                ended = true;
                break;
            }
            continue;
        }
        report.errors += PATTERNS.error.find_iter(text.as_bytes()).count() as u64;
        if follow.protocol == Protocol::Purly && PATTERNS.snapshot.find(text.as_bytes()).is_some() {
            // A whole state: it replaces what was dropped. Parse it properly (rare).
            let frame: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            for message in frame.as_array().into_iter().flatten() {
                let entries = message["content"]["load"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                if message["header"]["type"] == "presence" {
                    // Who is here (the presence snapshot after the model's): no update.
                    continue;
                }
                if message["header"]["snapshot"] == true {
                    snapshots += 1;
                    if snapshots > 1 {
                        report.resyncs += 1;
                    }
                    for (key, entry) in entries {
                        let publisher = key
                            .trim_start_matches('p')
                            .parse::<usize>()
                            .map_or(usize::MAX, |p| p.wrapping_sub(follow.base));
                        let (Some(slot), Some(n)) = (last.get_mut(publisher), entry["n"].as_u64())
                        else {
                            continue;
                        };
                        if *slot == u64::MAX || n <= *slot {
                            continue;
                        }
                        // Covered by the snapshot: not lost, but not delivered one by one.
                        for covered in *slot + 1..=n {
                            follow.progress[publisher].reached(covered);
                        }
                        *slot = n;
                    }
                } else {
                    scan(&message.to_string(), |p, n, t| {
                        deliver(
                            &mut report,
                            &mut last,
                            p.wrapping_sub(follow.base),
                            n,
                            t,
                            now,
                        )
                    });
                }
            }
            continue;
        }
        scan(&text, |p, n, t| {
            deliver(
                &mut report,
                &mut last,
                p.wrapping_sub(follow.base),
                n,
                t,
                now,
            )
        });
        if report.deliveries > 0 {
            report.finished = Some(start.elapsed());
        }
    }
    report.owed = follow
        .publishers
        .iter()
        .map(|&p| follow.updates.saturating_sub(last[p]))
        .sum();
    if !received_any {
        report.never_synced = 1;
    } else if ended && report.owed > 0 {
        report.dropped = 1;
    }
    report
}

impl SubscriberReport {
    fn new() -> Self {
        SubscriberReport {
            deliveries: 0,
            lost: 0,
            reordered: 0,
            resyncs: 0,
            errors: 0,
            owed: 0,
            dropped: 0,
            never_synced: 0,
            latency: Histogram::new(),
            finished: None,
        }
    }

    fn add(&mut self, other: &SubscriberReport) {
        self.deliveries += other.deliveries;
        self.lost += other.lost;
        self.reordered += other.reordered;
        self.resyncs += other.resyncs;
        self.errors += other.errors;
        self.owed += other.owed;
        self.dropped += other.dropped;
        self.never_synced += other.never_synced;
        self.latency.merge(&other.latency);
        self.finished = self.finished.max(other.finished);
    }
}

/// One update's frame in the server's protocol; with `id`, the update carries it.
fn update_frame(
    protocol: Protocol,
    key: usize,
    (n, id): (u64, Option<u64>),
    t: u128,
    padding: &str,
) -> String {
    let content = format!(r#"{{"load":{{"p{key}":{{"n":{n},"t":{t},"x":"{padding}{n}"}}}}}}"#);
    match (protocol, id) {
        (Protocol::SocketIo, _) => format!(r#"42["update",{content}]"#),
        (Protocol::Purly | Protocol::Raw, Some(id)) => {
            format!(r#"[{{"header":{{"type":"update","id":{id}}},"content":{content}}}]"#)
        }
        (Protocol::Purly | Protocol::Raw, None) => {
            format!(r#"[{{"header":{{"type":"update"}},"content":{content}}}]"#)
        }
    }
}

async fn load(args: &Args) -> Result<Value, String> {
    let before = args.pid.map(ServerStats::read);
    // Publisher p writes to model p % models; subscriber i reads model i % models.
    let subscribers_of = |model: usize| {
        (0..args.subscribers)
            .filter(|&i| model_of(args, i) == model)
            .count()
    };
    let progress: Arc<Vec<Progress>> = Arc::new(
        (0..args.publishers)
            .map(|p| Progress::new(args.updates, subscribers_of(p % args.models)))
            .collect(),
    );
    let mut subscribers = Vec::with_capacity(args.subscribers);
    for i in 0..args.subscribers {
        subscribers.push(subscribe(args, i, model_of(args, i)).await?);
    }
    let mut stuck = Vec::new();
    for i in 0..args.stuck {
        stuck.push(subscribe(args, args.subscribers + i, 0).await?);
    }
    let mut publisher_sockets = Vec::with_capacity(args.publishers);
    // A publisher's client key: unique to this run and publisher.
    let run = std::process::id();
    for p in 0..args.publishers {
        let client_key = args.client_keys.then(|| format!("loadgen-{run}-{p}"));
        publisher_sockets.push(
            connect_as(
                args,
                args.subscribers + args.stuck + p,
                p % args.models,
                client_key,
            )
            .await?,
        );
    }
    // The server's CPU from here on is the run's; what it spent setting the connections up
    // (handshakes, joins, snapshots) is reported on its own, per connection.
    let connected = args.pid.map(ServerStats::read);
    let start = Instant::now();
    let limit = start + args.limit;
    // Publisher keys of this run only: the model may still hold earlier runs' keys.
    let base = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
        % 1_000_000_000) as usize
        * 1000;
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let mut readers = JoinSet::new();
    for (i, ws) in subscribers.into_iter().enumerate() {
        let model = model_of(args, i);
        let follow = Follow {
            publishers: (0..args.publishers)
                .filter(|p| p % args.models == model)
                .collect(),
            base,
            updates: args.updates,
            protocol: args.protocol,
            progress: progress.clone(),
        };
        readers.spawn(subscriber(ws, follow, start, done_rx.clone(), limit));
    }
    let mut publishers = JoinSet::new();
    for (p, ws) in publisher_sockets.into_iter().enumerate() {
        let (updates, rate, size, window, protocol, keyed) = (
            args.updates,
            args.rate,
            args.size,
            args.window,
            args.protocol,
            args.client_keys,
        );
        let publishers_count = args.publishers;
        let progress = progress.clone();
        let key = base + p;
        publishers.spawn(async move {
            let (sink, mut echoes) = ws.split();
            let sink = Arc::new(tokio::sync::Mutex::new(sink));
            // A publisher reads what the server sends it, as every client must (and answers
            // Engine.IO's pings).
            let pong = sink.clone();
            let drain = tokio::spawn(async move {
                while let Some(Ok(message)) = echoes.next().await {
                    if protocol == Protocol::SocketIo && message.to_text().is_ok_and(|t| t == "2") {
                        let _ = pong.lock().await.send(Message::text("3")).await;
                    }
                }
            });
            let padding = "x".repeat(size.saturating_sub(60));
            let period =
                (rate > 0.0).then(|| Duration::from_secs_f64(publishers_count as f64 / rate));
            // Publishers take turns within each period, instead of all sending at once.
            let offset = period.map(|period| period * p as u32 / publishers_count as u32);
            for n in 1..=updates {
                if let (Some(period), Some(offset)) = (period, offset) {
                    tokio::time::sleep_until((start + offset + period * (n as u32)).into()).await;
                }
                if window > 0 && n > window && !progress[p].wait(n - window, limit).await {
                    break;
                }
                if Instant::now() >= limit {
                    break;
                }
                let id = keyed.then_some(n);
                let frame =
                    update_frame(protocol, key, (n, id), start.elapsed().as_nanos(), &padding);
                if sink.lock().await.send(Message::text(frame)).await.is_err() {
                    break;
                }
            }
            drain.abort_handle()
        });
    }
    let mut drains = Vec::new();
    while let Some(drain) = publishers.join_next().await {
        drains.push(drain.map_err(|e| e.to_string())?);
    }
    let published_in = start.elapsed();
    let _ = done_tx.send(true);
    let mut total = SubscriberReport::new();
    while let Some(report) = readers.join_next().await {
        total.add(&report.map_err(|e| e.to_string())?);
    }
    for drain in drains {
        drain.abort();
    }
    drop(stuck);
    let elapsed = total
        .finished
        .unwrap_or(published_in)
        .max(Duration::from_millis(1));
    let expected: u64 = (0..args.subscribers)
        .map(|i| {
            let model = model_of(args, i);
            (0..args.publishers)
                .filter(|p| p % args.models == model)
                .count() as u64
                * args.updates
        })
        .sum();
    let failed = total.owed > 0
        || total.lost > 0
        || total.reordered > 0
        || total.dropped > 0
        || total.never_synced > 0
        || total.errors > 0;
    let mut report = json!({
        "mode": "load",
        "url": args.url,
        "protocol": format!("{:?}", args.protocol),
        "models": args.models,
        "subscribers": args.subscribers,
        "publishers": args.publishers,
        "stuck": args.stuck,
        "updates_per_publisher": args.updates,
        "rate": args.rate,
        "window": args.window,
        "client_keys": args.client_keys,
        "transport": format!("{:?}", args.transport),
        "expected_deliveries": expected,
        "deliveries": total.deliveries,
        "seconds": elapsed.as_secs_f64(),
        "deliveries_per_second": total.deliveries as f64 / elapsed.as_secs_f64(),
        "latency_us": {
            "p50": total.latency.percentile(0.50),
            "p99": total.latency.percentile(0.99),
            "max": total.latency.max,
        },
        "owed": total.owed,
        "lost": total.lost,
        "reordered": total.reordered,
        "dropped_subscribers": total.dropped,
        "never_synced": total.never_synced,
        "resyncs": total.resyncs,
        "errors": total.errors,
        "failed": failed,
    });
    if let (Some(pid), Some(before), Some(connected)) = (args.pid, before, connected) {
        let after = ServerStats::read(pid);
        let cpu = after.cpu_ticks.saturating_sub(connected.cpu_ticks) as f64 / 100.0;
        let setup = connected.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 / 100.0;
        let connections = (args.subscribers + args.stuck + args.publishers).max(1);
        report["server"] = json!({
            "peak_rss_kib": after.peak_rss_kib,
            "rss_kib": after.rss_kib,
            "cpu_seconds": cpu,
            "cpu_us_per_delivery": cpu * 1e6 / (total.deliveries.max(1) as f64),
            "setup_cpu_seconds": setup,
            "setup_cpu_us_per_connection": setup * 1e6 / connections as f64,
        });
    }
    Ok(report)
}

async fn idle(args: &Args) -> Result<Value, String> {
    let pid = args
        .pid
        .ok_or("--idle needs --pid to read the server's memory")?;
    let before = ServerStats::read(pid);
    let mut held = Vec::with_capacity(args.idle);
    let started = Instant::now();
    for i in 0..args.idle {
        let mut link = subscribe(args, i, model_of(args, i)).await?;
        if args.protocol == Protocol::Purly {
            // Stream mode: the snapshot arrives at once (after the event stream's session
            // event); reading it means the server is done setting the connection up.
            while let Ok(Got::Other) =
                tokio::time::timeout(Duration::from_secs(10), link.next()).await
            {}
        }
        held.push(link);
        if started.elapsed() > args.limit {
            return Err(format!("only {i} connections within the time limit"));
        }
    }
    let after = ServerStats::read(pid);
    let per_connection = (after.rss_kib as f64 - before.rss_kib as f64) * 1024.0 / args.idle as f64;
    Ok(json!({
        "mode": "idle",
        "url": args.url,
        "connections": args.idle,
        "server_rss_kib_before": before.rss_kib,
        "server_rss_kib_after": after.rss_kib,
        "bytes_per_connection": per_connection.round(),
    }))
}

fn print_report(report: &Value) {
    if report["mode"] == "idle" {
        println!(
            "{} idle connections: server RSS {} KiB -> {} KiB, {} bytes per connection",
            report["connections"],
            report["server_rss_kib_before"],
            report["server_rss_kib_after"],
            report["bytes_per_connection"]
        );
        return;
    }
    println!(
        "{} subscribers ({} stuck), {} publisher(s), {} updates each{}",
        report["subscribers"],
        report["stuck"],
        report["publishers"],
        report["updates_per_publisher"],
        if report["rate"].as_f64().unwrap_or(0.0) > 0.0 {
            format!(" at {}/s", report["rate"])
        } else {
            " as fast as accepted".into()
        }
    );
    println!(
        "deliveries: {} of {} in {:.2} s = {:.0}/s",
        report["deliveries"],
        report["expected_deliveries"],
        report["seconds"].as_f64().unwrap_or(0.0),
        report["deliveries_per_second"].as_f64().unwrap_or(0.0)
    );
    println!(
        "latency: p50 {} us, p99 {} us, max {} us",
        report["latency_us"]["p50"], report["latency_us"]["p99"], report["latency_us"]["max"]
    );
    println!(
        "owed {}, lost {}, reordered {}, dropped {}, never synced {}, resyncs {}, errors {}{}",
        report["owed"],
        report["lost"],
        report["reordered"],
        report["dropped_subscribers"],
        report["never_synced"],
        report["resyncs"],
        report["errors"],
        if report["failed"] == true {
            "  => FAILED"
        } else {
            ""
        }
    );
    if let Some(server) = report.get("server") {
        println!(
            "server: peak RSS {} KiB, CPU {} s, {:.2} us of CPU per delivery; \
             setting the connections up: {} s, {:.0} us each",
            server["peak_rss_kib"],
            server["cpu_seconds"],
            server["cpu_us_per_delivery"].as_f64().unwrap_or(0.0),
            server["setup_cpu_seconds"],
            server["setup_cpu_us_per_connection"]
                .as_f64()
                .unwrap_or(0.0)
        );
    }
}
