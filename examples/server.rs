//! The purly server: serves the stream and state routes of every model over HTTP/WebSocket,
//! and keeps its models across restarts.
//!
//! ```text
//! cargo run --example server                                   # 127.0.0.1:8000, prefix /
//! cargo run --example server -- --addr 127.0.0.1:9000 --prefix /model/
//! cargo run --example server -- --data /var/lib/purly --durability os
//! cargo run --example server -- --memory                       # nothing kept on disk
//! cargo run --example server -- --redis redis://127.0.0.1:6379  # one of several nodes
//! cargo run --example server -- --redis-cluster redis://10.0.0.1:7000,redis://10.0.0.2:7000
//! cargo run --example server -- --help                         # every flag and its default
//! ```
//!
//! Models persist in `./purly-data/purly.sqlite3` (`--data DIR` for another directory; the
//! path is logged at start): a restart, a crash or `kill -9` loses nothing any client was
//! shown, and clients resume where they were. `--durability process` (default) survives the
//! process dying; `--durability os` also an OS crash or power loss, at one fsync per commit.
//! A model with no client leaves memory after `--idle-secs` (default 60) to 2× that, and is
//! loaded again on its next join. With `--redis URL` (in place of `--data`; credentials in the URL,
//! `rediss://` for TLS) the server is one node of a cluster: every node on the
//! same Redis serves the same models in one order, and clients may resume on any node.
//! `--redis-cluster URL,URL,...` does the same on a Redis Cluster (7 or later; seed nodes,
//! the others are found from them): each model lives on one shard, on sharded channels.
//!
//! With the defaults, the original purly getting-started works unchanged: clients connect to
//! `ws://127.0.0.1:8000/model/stream`. It logs one line per connection and per disconnection
//! (set `RUST_LOG` to change what is logged), and stops cleanly on Ctrl-C or SIGTERM: every
//! client gets a close frame with code 1001. It raises its soft open-file limit to the hard
//! limit at start (each connection holds a descriptor) and logs both; past
//! `--max-connections` new connections get HTTP 503, and a client sending more than
//! `--max-frames-per-sec` frames a second gets `rate_limited` errors, then a close with 1008.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use purly::Engine;
use purly_hyper::hyper::Response;
use purly_hyper::{Body, Purly, RateLimit, ServerConfig};
use purly_redis::{RedisOptions, RedisStore};
use purly_sqlite::{Durability, SqliteOptions, SqliteStore};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// jemalloc, as every server of the comparisons (BENCHMARKS.md, issue 27: glibc's malloc pads
/// each connection's 128-byte-aligned allocations by about 200 bytes).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The purly server: every model's stream, state and page over HTTP/WebSocket, kept across
/// restarts.
#[derive(Debug, Parser)]
#[command(name = "server", version)]
struct Args {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    addr: SocketAddr,
    /// The path prefix of every route: `{prefix}{model}/stream`, `/state` and the page.
    #[arg(long, default_value = "/")]
    prefix: String,
    /// The directory of the model store (`purly.sqlite3`), created if missing.
    #[arg(long, value_name = "DIR", default_value = "purly-data")]
    data: PathBuf,
    /// Keep models in memory only: a restart loses them.
    #[arg(long, conflicts_with_all = ["redis", "redis_cluster", "data"])]
    memory: bool,
    /// Be one node of a cluster whose models live in this Redis (credentials in the URL;
    /// `rediss://` for TLS), in place of `--data`.
    #[arg(long, value_name = "URL", conflicts_with_all = ["data", "redis_cluster"])]
    redis: Option<String>,
    /// Be one node of a cluster whose models live in this Redis Cluster (Redis 7 or later):
    /// seed nodes' URLs, comma-separated (`rediss://` for TLS), in place of `--data`.
    #[arg(
        long,
        value_name = "URL,URL,...",
        value_delimiter = ',',
        conflicts_with = "data"
    )]
    redis_cluster: Vec<String>,
    /// With `rediss://` URLs: a CA certificate (PEM file) to trust instead of the system's
    /// roots (a private CA).
    #[arg(long, value_name = "FILE")]
    redis_ca: Option<PathBuf>,
    /// With Redis: how soon the presences of a node that died without closing its
    /// connections are gone from the other nodes, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 15.0)]
    presence_timeout: f64,
    /// What a commit survives: `process` (the process dying) or `os` (also an OS crash or
    /// power loss, one fsync per commit).
    #[arg(long, value_enum, default_value_t = DurabilityArg::Process)]
    durability: DurabilityArg,
    /// A model with no client leaves memory after 1 to 2 times this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    idle_secs: u64,
    /// The most connections served at once; past it new ones get HTTP 503.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    max_connections: usize,
    /// The most connections from one IP address (default: no limit).
    #[arg(long, value_name = "N")]
    max_connections_per_peer: Option<usize>,
    /// The frames per second one connection may send, sustained and in a burst (0: no limit).
    #[arg(long, value_name = "N", default_value_t = 1_000)]
    max_frames_per_sec: u32,
    /// How long a join (or state read) may wait for its model to load from the store before
    /// it is answered 503; joins of models in memory never wait.
    #[arg(long, value_name = "MS", default_value_t = 5_000)]
    join_timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DurabilityArg {
    Process,
    Os,
}

impl Args {
    /// `None` with `--memory` or `--redis`.
    fn data_dir(&self) -> Option<&PathBuf> {
        (!self.memory && self.redis.is_none() && self.redis_cluster.is_empty())
            .then_some(&self.data)
    }

    fn durability(&self) -> Durability {
        match self.durability {
            DurabilityArg::Process => Durability::Process,
            DurabilityArg::Os => Durability::Os,
        }
    }

    fn server_config(&self) -> ServerConfig {
        let mut config = ServerConfig::default();
        config.max_connections = self.max_connections;
        config.max_connections_per_peer = self.max_connections_per_peer;
        config.join_timeout = Duration::from_millis(self.join_timeout_ms);
        config.rate_limit = (self.max_frames_per_sec > 0).then(|| {
            let mut limit = RateLimit::default();
            limit.frames_per_second = f64::from(self.max_frames_per_sec);
            limit.frame_burst = f64::from(self.max_frames_per_sec);
            limit
        });
        config
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    raise_file_limit();
    // Before the engine and the handler are built: they register their metrics with it.
    let metrics = install_metrics();
    let (engine, store) = match open_store(&args).await {
        Ok(opened) => opened,
        Err(message) => {
            tracing::error!("{message}");
            return ExitCode::FAILURE;
        }
    };
    let mut builder = Purly::builder(engine)
        .config(args.server_config())
        .prefix(&args.prefix);
    if let Some(metrics) = metrics {
        builder = builder.route("/metrics", move || metrics_response(&metrics));
    }
    let purly = builder.build();
    // Idle models leave memory (a no-op in memory mode, where they live nowhere else).
    {
        let engine = purly.engine().clone();
        let idle = Duration::from_secs(args.idle_secs);
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

    purly.serve(listener, shutdown_signal()).await;
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

/// Installs the Prometheus recorder (served at `/metrics`), with its upkeep every 5 s.
fn install_metrics() -> Option<PrometheusHandle> {
    match PrometheusBuilder::new().install_recorder() {
        Ok(handle) => {
            let upkeep = handle.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(5));
                loop {
                    every.tick().await;
                    upkeep.run_upkeep();
                }
            });
            Some(handle)
        }
        Err(error) => {
            tracing::warn!(%error, "metrics are off: cannot install the Prometheus recorder");
            None
        }
    }
}

/// The metrics in Prometheus' text format.
fn metrics_response(metrics: &PrometheusHandle) -> Response<Body> {
    let mut response = Response::new(Body::from(metrics.render()));
    response.headers_mut().insert(
        "content-type",
        purly_hyper::hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

/// Raises the soft limit on open files to the hard limit: each connection holds one.
fn raise_file_limit() {
    let (soft, hard) = match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok(limits) => limits,
        Err(error) => {
            tracing::warn!(%error, "cannot read the open-file limit");
            return;
        }
    };
    match rlimit::increase_nofile_limit(hard) {
        Ok(now) => tracing::info!(
            "open-file limit: {now} (soft limit was {soft}, hard limit {hard}); \
             each connection holds one"
        ),
        Err(error) => tracing::warn!(
            %error,
            "open-file limit stays {soft} (hard limit {hard}): cannot raise it"
        ),
    }
}

/// The engine on the store the arguments name, and the SQLite store's handle (to close it).
async fn open_store(args: &Args) -> Result<(Engine, Option<Arc<SqliteStore>>), String> {
    let mut options = RedisOptions::default();
    options.presence_timeout = Duration::try_from_secs_f64(args.presence_timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .ok_or_else(|| {
            format!(
                "--presence-timeout {}: a positive number of seconds",
                args.presence_timeout
            )
        })?;
    if let Some(ca) = &args.redis_ca {
        let pem =
            std::fs::read(ca).map_err(|error| format!("cannot read {}: {error}", ca.display()))?;
        options.tls_ca_pem = Some(pem);
    }
    if let Some(url) = &args.redis {
        let store = RedisStore::connect(url, options)
            .await
            .map_err(|error| format!("cannot use Redis at {}: {error}", redacted(url)))?;
        tracing::info!(
            "models live in Redis at {} (one of its nodes)",
            redacted(url)
        );
        return Ok((Engine::builder().store(store).build(), None));
    }
    if !args.redis_cluster.is_empty() {
        let seeds: Vec<String> = args.redis_cluster.iter().map(|u| redacted(u)).collect();
        let store = RedisStore::connect_cluster(&args.redis_cluster, options)
            .await
            .map_err(|error| format!("cannot use the Redis Cluster at {seeds:?}: {error}"))?;
        tracing::info!("models live in the Redis Cluster at {seeds:?} (one of its nodes)");
        return Ok((Engine::builder().store(store).build(), None));
    }
    let Some(dir) = args.data_dir() else {
        tracing::info!("models live in memory only (--memory): a restart loses them");
        return Ok((Engine::default(), None));
    };
    let options = SqliteOptions::default().durability(args.durability());
    let store = SqliteStore::open(dir, options)
        .map_err(|error| format!("cannot open the model store: {error}"))?;
    let store = Arc::new(store);
    tracing::info!(
        "models persist in {} (durability: {:?})",
        store.path().display(),
        args.durability()
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
