//! The purly server: serves the stream and state routes of every model over HTTP/WebSocket.
//!
//! ```text
//! cargo run --example server                                   # 127.0.0.1:8000, prefix /
//! cargo run --example server -- --addr 127.0.0.1:9000 --prefix /model/
//! ```
//!
//! With the defaults, the original purly getting-started works unchanged: clients connect to
//! `ws://127.0.0.1:8000/model/stream`. It logs one line per connection and per disconnection
//! (set `RUST_LOG` to change what is logged), and stops cleanly on Ctrl-C or SIGTERM: every
//! client gets a close frame with code 1001.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use purly::Engine;
use purly_hyper::Purly;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

struct Args {
    addr: SocketAddr,
    prefix: String,
}

const USAGE: &str = "usage: server [--addr HOST:PORT] [--prefix PATH]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: SocketAddr::from(([127, 0, 0, 1], 8000)),
        prefix: "/".to_owned(),
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
    let purly = Purly::builder(Engine::default())
        .prefix(&args.prefix)
        .build();
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
    tracing::info!("stopped");
    ExitCode::SUCCESS
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
