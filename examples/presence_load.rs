//! What presence costs (PROTOCOL.md section 11): N clients on one model, each moving a cursor
//! R times a second, sent as presence or, for comparison, as updates of the model (loopback
//! only; every run is bounded in time).
//!
//! ```text
//! presence_load --url ws://127.0.0.1:8000/room/stream --clients 1000 --rate 10 --seconds 10 --mode presence --pid PID
//! presence_load --url ws://127.0.0.1:8000/room/stream --clients 1000 --rate 10 --seconds 10 --mode update --pid PID
//! ```
//!
//! Each client sends `{"x": i, "t": <send time, ns>}` as its presence (`--mode presence`) or as
//! `{"c<k>": {...}}`, an update of its own key (`--mode update`), on its own clock, and reads
//! everything the server sends. Reports what was offered and sent, the messages received
//! (deliveries: a presence is never echoed, an update is echoed to its sender too), the
//! publish→receive latency (p50, p99, max, of the last message of every frame received),
//! errors by code, and with `--pid` the server's CPU time and peak memory. `--json` prints one
//! JSON line.
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "loadgen/server_stats.rs"]
mod server_stats;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use memchr::memmem::Finder;
use purly::serde_json::{self, json, Value};
use server_stats::ServerStats;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// What presence costs: N clients on one model moving a cursor, as presence or as updates.
#[derive(clap::Parser)]
struct Args {
    /// The model's stream URL (loopback only).
    #[arg(long, default_value = "ws://127.0.0.1:8000/room/stream")]
    url: String,
    /// How many clients (at least 2).
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Moves per second, per client.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// How long the clients send (at most 600 s).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// `presence`, or `update` (the same moves as changes of the model).
    #[arg(long, value_enum, default_value_t = Mode::Presence)]
    mode: Mode,
    /// The server's process id: its CPU time and memory are reported.
    #[arg(long)]
    pid: Option<u32>,
    /// Print one JSON line.
    #[arg(long)]
    json: bool,
}

/// What a move is sent as.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    Presence,
    Update,
}

fn parse_args() -> Result<Args, String> {
    let mut args = <Args as clap::Parser>::parse();
    args.seconds = args.seconds.clamp(0.1, 600.0);
    let host = args.url.split("//").nth(1).unwrap_or("");
    if !(host.starts_with("127.") || host.starts_with("localhost")) {
        return Err("presence_load talks to loopback servers only".into());
    }
    if args.rate <= 0.0 || args.clients < 2 {
        return Err("--rate above 0 and --clients at least 2".into());
    }
    Ok(args)
}

/// What the clients counted, together.
#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    received: AtomicU64,
    /// Latency samples (µs): the last message of every frame received.
    latencies: Mutex<Vec<u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("presence_load: {message}");
            std::process::exit(2);
        }
    };
    match run(&args).await {
        Ok(report) if args.json => println!("{report}"),
        Ok(report) => println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ),
        Err(message) => {
            eprintln!("presence_load: {message}");
            std::process::exit(1);
        }
    }
}

async fn run(args: &Args) -> Result<Value, String> {
    let counts = Arc::new(Counts::default());
    let mut sockets = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        let mut request = args
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| e.to_string())?;
        request.headers_mut().insert(
            "sec-websocket-protocol",
            "purly.stream".parse().map_err(|_| "header")?,
        );
        let connect = tokio_tungstenite::connect_async(request);
        let (ws, _) = tokio::time::timeout(Duration::from_secs(10), connect)
            .await
            .map_err(|_| "connect timed out")?
            .map_err(|e| e.to_string())?;
        sockets.push(ws);
    }
    let before = args.pid.map(ServerStats::read);
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let period = Duration::from_secs_f64(1.0 / args.rate);
    let run_for = Duration::from_secs_f64(args.seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for (k, ws) in sockets.into_iter().enumerate() {
        let (mut sink, mut stream) = ws.split();
        let reader_counts = counts.clone();
        tasks.spawn(async move {
            let counts = reader_counts;
            while let Ok(Some(Ok(message))) =
                tokio::time::timeout(Duration::from_secs(3), stream.next()).await
            {
                if let Message::Text(text) = message {
                    receive(&text, &counts);
                }
            }
        });
        let (counts, stop, presence) = (counts.clone(), stop.clone(), args.mode == Mode::Presence);
        tasks.spawn(async move {
            // Each client on its own clock, spread over the first period.
            let offset = period.mul_f64(k as f64 / 1000.0 % 1.0);
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            for i in 0u64.. {
                ticks.tick().await;
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let cursor = json!({"x": i, "y": k, "t": now_ns()});
                let frame = match presence {
                    true => json!([{"header": {"type": "presence"}, "content": cursor}]),
                    false => json!([{"header": {"type": "update"}, "content": {format!("c{k}"): cursor}}]),
                };
                if sink.send(Message::text(frame.to_string())).await.is_err() {
                    break;
                }
                counts.sent.fetch_add(1, Ordering::Relaxed);
            }
            let _ = sink.close().await;
        });
    }
    tokio::time::sleep(run_for).await;
    stop.store(true, Ordering::Relaxed);
    let sending = started.elapsed();
    let at_stop = args.pid.map(ServerStats::read);
    // Readers end once nothing came for 3 s (or at the limit).
    let _ = tokio::time::timeout(run_for + Duration::from_secs(30), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    let mut latencies =
        std::mem::take(&mut *counts.latencies.lock().unwrap_or_else(|p| p.into_inner()));
    latencies.sort_unstable();
    let quantile = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |us| *us as f64 / 1000.0)
    };
    let seconds = sending.as_secs_f64();
    let sent = counts.sent.load(Ordering::Relaxed);
    let received = counts.received.load(Ordering::Relaxed);
    let mut report = json!({
        "mode": if args.mode == Mode::Presence { "presence" } else { "update" },
        "clients": args.clients,
        "offered_per_second": args.clients as f64 * args.rate,
        "sent_per_second": (sent as f64 / seconds).round(),
        "received_per_second": (received as f64 / seconds).round(),
        "every_change_to_everyone_per_second": (sent as f64 / seconds * (args.clients - 1) as f64).round(),
        "latency_ms": {"p50": quantile(0.5), "p99": quantile(0.99), "max": quantile(1.0)},
        "errors": *counts.errors.lock().unwrap_or_else(|p| p.into_inner()),
    });
    if let (Some(pid), Some(before), Some(at_stop)) = (args.pid, before, at_stop) {
        let after = ServerStats::read(pid);
        report["server_cpu_seconds_while_sending"] =
            json!((at_stop.cpu_ticks - before.cpu_ticks) as f64 / 100.0);
        report["server_cpu_per_second"] =
            json!((at_stop.cpu_ticks - before.cpu_ticks) as f64 / 100.0 / seconds);
        report["server_rss_kib"] =
            json!({"before": before.rss_kib, "after": after.rss_kib, "peak": after.peak_rss_kib});
    }
    Ok(report)
}

/// Counts one received frame's messages and samples the latency of its last one, without
/// parsing the frame (the clients share the server's two cores: what they spend is not the
/// server's to use). Errors, rare, are parsed.
fn receive(text: &str, counts: &Counts) {
    let presences = PRESENCE.find_iter(text.as_bytes()).count();
    let updates = UPDATE.find_iter(text.as_bytes()).count();
    let snapshots = SNAPSHOT.find_iter(text.as_bytes()).count();
    counts.received.fetch_add(
        (presences + updates).saturating_sub(snapshots) as u64,
        Ordering::Relaxed,
    );
    if ERROR.find(text.as_bytes()).is_some() {
        if let Ok(Value::Array(messages)) = serde_json::from_str::<Value>(text) {
            let mut errors = counts.errors.lock().unwrap_or_else(|p| p.into_inner());
            for message in messages.iter().filter(|m| m["header"]["type"] == "error") {
                let code = message["content"]["code"]
                    .as_str()
                    .unwrap_or("?")
                    .to_owned();
                *errors.entry(code).or_default() += 1;
            }
        }
    }
    let Some(at) = text.rfind(r#""t":"#) else {
        return;
    };
    let digits: String = text[at + 4..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    if let Ok(sent) = digits.parse::<u64>() {
        let latency = now_ns().saturating_sub(sent) / 1000;
        counts
            .latencies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(latency);
    }
}

static PRESENCE: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new(r#"{"header":{"type":"presence""#));
static UPDATE: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new(r#"{"header":{"type":"update""#));
static SNAPSHOT: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(r#""snapshot":true"#));
static ERROR: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(r#""type":"error""#));
