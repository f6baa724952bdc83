//! A join storm over WebSockets (issue 27): a model of a few megabytes, a publisher that sends
//! one update at a time and waits for its echo, and N clients that join the model at once.
//! Reports the publisher's echo times before and during the storm, how long the storm took
//! (until every joiner had its snapshot), and with `--pid` the server's peak memory (loopback
//! only; bounded in time).
//!
//! ```text
//! join_storm --url ws://127.0.0.1:8000/big/stream --joins 200 --megabytes 4 --pid PID
//! ```
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "loadgen/server_stats.rs"]
mod server_stats;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use purly::serde_json::{json, Value};
use server_stats::ServerStats;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A join storm on one large model.
#[derive(clap::Parser)]
struct Args {
    /// The model's stream URL (loopback only).
    #[arg(long, default_value = "ws://127.0.0.1:8000/big/stream")]
    url: String,
    /// How many clients join at once.
    #[arg(long, default_value_t = 200)]
    joins: usize,
    /// The model's size, in MB.
    #[arg(long, default_value_t = 4)]
    megabytes: usize,
    /// The server's process id: its peak memory is reported.
    #[arg(long)]
    pid: Option<u32>,
}

/// The longest any step may take.
const LIMIT: Duration = Duration::from_secs(60);

async fn connect(url: &str) -> Result<Ws, String> {
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "purly.stream".parse().map_err(|_| "a header")?,
    );
    let (ws, _) = tokio::time::timeout(LIMIT, tokio_tungstenite::connect_async(request))
        .await
        .map_err(|_| "connect timed out")?
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

/// Reads until a frame holding a message whose `header.id` is `id` (the echo), or `None`.
async fn echo_of(ws: &mut Ws, id: u64) -> Option<()> {
    loop {
        let message = tokio::time::timeout(LIMIT, ws.next()).await.ok()??.ok()?;
        if let Message::Text(text) = message {
            let frame: Value = purly::serde_json::from_str(&text).ok()?;
            if frame
                .as_array()?
                .iter()
                .any(|m| m["header"]["id"] == json!(id))
            {
                return Some(());
            }
        }
    }
}

fn quantiles(mut samples: Vec<f64>) -> Value {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| {
        samples
            .get(((samples.len() as f64 * q) as usize).min(samples.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    json!({"count": samples.len(), "p50_ms": at(0.5), "max_ms": at(1.0)})
}

#[tokio::main]
async fn main() {
    let args = <Args as clap::Parser>::parse();
    let host = args.url.split("//").nth(1).unwrap_or("");
    if !host.starts_with("127.") {
        eprintln!("join_storm: loopback servers only");
        std::process::exit(2);
    }
    match run(&args).await {
        Ok(report) => println!("{report}"),
        Err(message) => {
            eprintln!("join_storm: {message}");
            std::process::exit(1);
        }
    }
}

/// Fills the model (`megabytes` MB in 256 KB values), says so on `filled`, then sends one
/// update at a time, each timed to its echo, until `done`: the echo times before and during
/// the storm.
async fn publish(
    url: &str,
    megabytes: usize,
    filled: tokio::sync::oneshot::Sender<()>,
    storming: &AtomicBool,
    done: &AtomicBool,
) -> Result<(Vec<f64>, Vec<f64>), String> {
    let mut publisher = connect(url).await?;
    let chunk = "m".repeat(256 << 10);
    let mut id = 0u64;
    for k in 0..megabytes * 4 {
        id += 1;
        let frame =
            json!([{"header": {"type": "update", "id": id}, "content": {format!("k{k}"): chunk}}]);
        publisher
            .send(Message::text(frame.to_string()))
            .await
            .map_err(|e| e.to_string())?;
        echo_of(&mut publisher, id)
            .await
            .ok_or("no echo while filling")?;
    }
    let _ = filled.send(());
    let (mut before, mut during) = (Vec::new(), Vec::new());
    while !done.load(Ordering::Relaxed) {
        id += 1;
        let frame = json!([{"header": {"type": "update", "id": id}, "content": {"tick": id}}]);
        let sent = Instant::now();
        if publisher
            .send(Message::text(frame.to_string()))
            .await
            .is_err()
            || echo_of(&mut publisher, id).await.is_none()
        {
            break;
        }
        let ms = sent.elapsed().as_secs_f64() * 1000.0;
        match storming.load(Ordering::Relaxed) {
            true => during.push(ms),
            false => before.push(ms),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok((before, during))
}

async fn run(args: &Args) -> Result<Value, String> {
    let storming = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let (filled, model_filled) = tokio::sync::oneshot::channel();
    // The publisher, on a thread and a runtime of its own: the joiners' reading (200 snapshots
    // of megabytes, in this process) does not delay it, so that its echo times are the
    // server's.
    let ticker = {
        let (url, megabytes) = (args.url.clone(), args.megabytes);
        let (storming, done) = (storming.clone(), done.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(publish(&url, megabytes, filled, &storming, &done))
        })
    };
    if model_filled.await.is_err() {
        return Err(match ticker.join() {
            Ok(Err(message)) => message,
            _ => "the publisher ended".to_owned(),
        });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stats_before = args.pid.map(ServerStats::read);
    storming.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let mut joiners = tokio::task::JoinSet::new();
    for _ in 0..args.joins {
        let url = args.url.clone();
        joiners.spawn(async move {
            let mut ws = connect(&url).await?;
            // The first frame is the snapshot (with who is here).
            loop {
                match tokio::time::timeout(LIMIT, ws.next()).await {
                    Ok(Some(Ok(Message::Text(text)))) if text.contains("\"snapshot\":true") => {
                        return Ok::<_, String>((started.elapsed(), text.len(), ws));
                    }
                    Ok(Some(Ok(_))) => continue,
                    _ => return Err("a joiner got no snapshot".to_owned()),
                }
            }
        });
    }
    let mut joined = Vec::new();
    let mut bytes = 0;
    while let Some(result) = joiners.join_next().await {
        let (at, len, ws) = result.map_err(|e| e.to_string())??;
        joined.push(at.as_secs_f64() * 1000.0);
        bytes = bytes.max(len);
        drop(ws);
    }
    let storm = started.elapsed();
    storming.store(false, Ordering::Relaxed);
    done.store(true, Ordering::Relaxed);
    let (before, during) = ticker
        .join()
        .map_err(|_| "the publisher panicked".to_owned())??;
    let mut report = json!({
        "joins": args.joins,
        "snapshot_bytes": bytes,
        "storm_seconds": storm.as_secs_f64(),
        "joined_ms": quantiles(joined),
        "echo_before_storm": quantiles(before),
        "echo_during_storm": quantiles(during),
    });
    if let (Some(pid), Some(before)) = (args.pid, stats_before) {
        let after = ServerStats::read(pid);
        report["server_rss_kib"] = json!({"before": before.rss_kib, "peak": after.peak_rss_kib});
        report["server_cpu_seconds"] =
            json!(after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 / 100.0);
    }
    Ok(report)
}
