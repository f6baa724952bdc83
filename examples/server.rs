//! The purly server: serves the stream and state routes of every model over HTTP/WebSocket,
//! and keeps its models across restarts.
//!
//! ```text
//! cargo run --example server                                   # 127.0.0.1:8000, prefix /
//! cargo run --example server -- --addr 127.0.0.1:9000 --prefix /model/
//! cargo run --example server -- --data /var/lib/purly --durability os
//! cargo run --example server -- --memory                       # nothing kept on disk
//! cargo run --example server -- --redis redis://127.0.0.1:6379  # one of several nodes
//! ```
//!
//! Models persist in `./purly-data/purly.sqlite3` (`--data DIR` for another directory; the
//! path is logged at start): a restart, a crash or `kill -9` loses nothing any client was
//! shown, and clients resume where they were. `--durability process` (default) survives the
//! process dying; `--durability os` also an OS crash or power loss, at one fsync per commit.
//! A model with no client leaves memory after `--idle-secs` (default 60) to 2× that, and is
//! loaded again on its next join. With `--redis URL` (in place of `--data`; credentials in the URL,
//! no TLS yet) the server is one node of a cluster: every node on the
//! same Redis serves the same models in one order, and clients may resume on any node.
//!
//! With the defaults, the original purly getting-started works unchanged: clients connect to
//! `ws://127.0.0.1:8000/model/stream`. It logs one line per connection and per disconnection
//! (set `RUST_LOG` to change what is logged), and stops cleanly on Ctrl-C or SIGTERM: every
//! client gets a close frame with code 1001.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use std::path::PathBuf;
use std::sync::Arc;

use purly::Engine;
use purly_hyper::Purly;
use purly_redis::{RedisOptions, RedisStore};
use purly_sqlite::{Durability, SqliteOptions, SqliteStore};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

struct Args {
    addr: SocketAddr,
    prefix: String,
    /// `None` with `--memory` or `--redis`.
    data: Option<PathBuf>,
    redis: Option<String>,
    durability: Durability,
    idle: Duration,
}

const USAGE: &str = "usage: server [--addr HOST:PORT] [--prefix PATH] \
[--data DIR | --memory | --redis URL] [--durability process|os] [--idle-secs N]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: SocketAddr::from(([127, 0, 0, 1], 8000)),
        prefix: "/".to_owned(),
        data: Some(PathBuf::from("purly-data")),
        redis: None,
        durability: Durability::Process,
        idle: Duration::from_secs(60),
    };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        let mut value = |name: &str| words.next().ok_or(format!("{name} needs a value"));
        match word.as_str() {
            "--addr" => {
                let value = value("--addr")?;
                args.addr = value.parse().map_err(|e| format!("--addr {value}: {e}"))?;
            }
            "--prefix" => args.prefix = value("--prefix")?,
            "--data" => args.data = Some(PathBuf::from(value("--data")?)),
            "--memory" => args.data = None,
            "--redis" => {
                args.redis = Some(value("--redis")?);
                args.data = None;
            }
            "--durability" => {
                args.durability = match value("--durability")?.as_str() {
                    "process" => Durability::Process,
                    "os" => Durability::Os,
                    other => return Err(format!("--durability {other}: process or os")),
                }
            }
            "--idle-secs" => {
                let value = value("--idle-secs")?;
                let secs: u64 = value
                    .parse()
                    .map_err(|e| format!("--idle-secs {value}: {e}"))?;
                args.idle = Duration::from_secs(secs.max(1));
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            tracing::error!("{message}");
            return ExitCode::from(2);
        }
    };
    let (engine, store) = match open_store(&args).await {
        Ok(opened) => opened,
        Err(message) => {
            tracing::error!("{message}");
            return ExitCode::FAILURE;
        }
    };
    let purly = Purly::builder(engine).prefix(&args.prefix).build();
    // Idle models leave memory (a no-op in memory mode, where they live nowhere else).
    {
        let engine = purly.engine().clone();
        let idle = args.idle;
        tokio::spawn(async move {
            let mut sweep = tokio::time::interval(idle);
            sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                sweep.tick().await;
                let evicted = engine.evict_idle();
                if evicted > 0 {
                    tracing::debug!(evicted, "idle models left memory");
                }
            }
        });
    }
    let listener = match TcpListener::bind(args.addr).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!("cannot listen on {}: {error}", args.addr);
            return ExitCode::FAILURE;
        }
    };
    let local = listener.local_addr().unwrap_or(args.addr);
    let prefix = &purly.config().prefix;
    tracing::info!(
        "purly serving on http://{local}{prefix} (streams at ws://{local}{prefix}{{model}}/stream)"
    );

    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let purly = purly.clone();
                    tokio::spawn(async move {
                        if let Err(error) = purly.serve_tcp(socket).await {
                            tracing::debug!(%peer, %error, "http connection ended");
                        }
                    });
                }
                Err(error) => tracing::warn!(%error, "accept failed"),
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!(
        "shutting down: closing {} connection(s)",
        purly.connections()
    );
    if tokio::time::timeout(Duration::from_secs(10), purly.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not close within 10 s");
    }
    if let Some(store) = store {
        // Everything queued is written before the process ends.
        store.close();
    }
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// The engine on the store the arguments name, and the SQLite store's handle (to close it).
async fn open_store(args: &Args) -> Result<(Engine, Option<Arc<SqliteStore>>), String> {
    if let Some(url) = &args.redis {
        let store = RedisStore::connect(url, RedisOptions::default())
            .await
            .map_err(|error| format!("cannot use Redis at {}: {error}", redacted(url)))?;
        tracing::info!(
            "models live in Redis at {} (one of its nodes)",
            redacted(url)
        );
        return Ok((Engine::builder().store(store).build(), None));
    }
    let Some(dir) = &args.data else {
        tracing::info!("models live in memory only (--memory): a restart loses them");
        return Ok((Engine::default(), None));
    };
    let options = SqliteOptions::default().durability(args.durability);
    let store = SqliteStore::open(dir, options)
        .map_err(|error| format!("cannot open the model store: {error}"))?;
    let store = Arc::new(store);
    tracing::info!(
        "models persist in {} (durability: {:?})",
        store.path().display(),
        args.durability
    );
    Ok((Engine::builder().store(store.clone()).build(), Some(store)))
}

/// A Redis URL without its password, for the log.
fn redacted(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, host))) => format!("{scheme}://***@{host}"),
        _ => url.to_owned(),
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
