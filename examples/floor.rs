//! The floor of this box for a fan-out: a bare program that only writes the same bytes to the
//! same loopback sockets, one `send` per delivery, as purly and its peers do (issue 27). What
//! a server spends per delivery above this is its own; below it, nothing with one system call
//! per delivery can go.
//!
//! ```text
//! floor --sockets 5000 --deliveries 5000000 --bytes 224
//! floor ... --per-write 4      # 4 deliveries in each write, as a coalescing server does
//! ```
//!
//! `--sockets` loopback connections are made inside the process; a writer thread sends
//! `--bytes` bytes (the size of a windowed many-models delivery: a WebSocket header and a
//! purly diff with its header) to each socket in turn, one blocking `write` each (Nagle off,
//! as servers set it), while one reader thread drains every other end with epoll (tokio), as a
//! client process would. Reports deliveries per second and the writer's CPU time per delivery
//! (user and system, from `/proc/thread-self/stat`: the server's side of the cost), and the
//! readers' beside it.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

// Only its reading of /proc is used here.
#[allow(dead_code)]
#[path = "loadgen/server_stats.rs"]
mod server_stats;

/// What to measure.
#[derive(clap::Parser)]
struct Args {
    /// How many loopback connections.
    #[arg(long, default_value_t = 5000)]
    sockets: usize,
    /// How many writes, spread evenly over the sockets (at most 100 million).
    #[arg(long, default_value_t = 5_000_000)]
    deliveries: u64,
    /// The bytes of one delivery.
    #[arg(long, default_value_t = 224)]
    bytes: usize,
    /// Deliveries per write: 1 is one `send` per delivery; more is what a server that
    /// coalesces a backlogged socket's messages into one frame does.
    #[arg(long, default_value_t = 1)]
    per_write: u64,
}

/// The calling thread's CPU time (user and system), from /proc (Linux; ticks of 10 ms).
fn thread_cpu() -> Duration {
    Duration::from_millis(server_stats::cpu_ticks("/proc/thread-self/stat") * 10)
}

fn main() -> std::io::Result<()> {
    let args = <Args as clap::Parser>::parse();
    let deliveries = args.deliveries.min(100_000_000);
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let (mut servers, mut clients) = (Vec::new(), Vec::new());
    for _ in 0..args.sockets {
        let client = TcpStream::connect(addr)?;
        let (server, _) = listener.accept()?;
        server.set_nodelay(true)?;
        client.set_nonblocking(true)?;
        servers.push(server);
        clients.push(client);
    }
    // The reading side: one thread, epoll, a task per socket draining what arrives.
    let (cpu_tx, cpu_rx) = std::sync::mpsc::channel();
    let readers = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            let started = thread_cpu();
            let mut tasks = tokio::task::JoinSet::new();
            for client in clients {
                let mut stream = tokio::net::TcpStream::from_std(client).expect("a socket");
                tasks.spawn(async move {
                    let mut buffer = vec![0u8; 16 << 10];
                    while matches!(stream.read(&mut buffer).await, Ok(n) if n > 0) {}
                });
            }
            while tasks.join_next().await.is_some() {}
            let _ = cpu_tx.send(thread_cpu().saturating_sub(started));
        });
    });
    let per_write = args.per_write.max(1);
    let frame = vec![b'x'; args.bytes * per_write as usize];
    let (started, cpu) = (Instant::now(), thread_cpu());
    for i in 0..deliveries / per_write {
        let socket = (i % servers.len() as u64) as usize;
        servers[socket].write_all(&frame)?;
    }
    let (elapsed, writer_cpu) = (started.elapsed(), thread_cpu().saturating_sub(cpu));
    drop(servers);
    let _ = readers.join();
    let reader_cpu = cpu_rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_default();
    let per = |cpu: Duration| cpu.as_secs_f64() * 1e6 / deliveries as f64;
    println!(
        "{}",
        purly::serde_json::json!({
            "sockets": args.sockets,
            "bytes": args.bytes,
            "deliveries": deliveries,
            "per_write": per_write,
            "deliveries_per_second": (deliveries as f64 / elapsed.as_secs_f64()).round(),
            "writer_cpu_us_per_delivery": per(writer_cpu),
            "reader_cpu_us_per_delivery": per(reader_cpu),
        })
    );
    Ok(())
}
