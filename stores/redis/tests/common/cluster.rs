//! A real Redis Cluster of three masters (no replicas) on free loopback ports, each in a
//! directory of its own, stopped when dropped.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use super::{free_port, installed, tls_args, RedisServer, TIMEOUT};

/// Three `redis-server --cluster-enabled yes` joined by `redis-cli --cluster create`.
pub(crate) struct RedisCluster {
    pub(crate) masters: Vec<RedisServer>,
    /// The port each master serves the cluster on (TLS with `tls`; else its only port).
    cluster_ports: Vec<u16>,
    tls: bool,
}

impl RedisCluster {
    /// Starts one with AOF (`appendfsync` = `fsync`), or `None` when `redis-server` is missing
    /// (a panic under `CI=true`).
    pub(crate) fn start(fsync: &'static str) -> Option<RedisCluster> {
        RedisCluster::start_with(fsync, None)
    }

    /// With `tls` (a directory holding `server.crt`, `server.key` and `ca.crt`), the masters
    /// speak TLS only on their cluster ports and their bus (`tls-cluster yes`); the harness
    /// talks to each on a plain port of its own.
    pub(crate) fn start_with(fsync: &'static str, tls: Option<&Path>) -> Option<RedisCluster> {
        if !installed() {
            return None;
        }
        let mut masters = Vec::new();
        let mut cluster_ports = Vec::new();
        for _ in 0..3 {
            let cluster_port = free_cluster_port();
            let mut extra: Vec<String> = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            ]
            .iter()
            .map(|a| (*a).to_owned())
            .collect();
            let port = match tls {
                None => cluster_port,
                Some(dir) => {
                    extra.extend(tls_args(dir, cluster_port));
                    extra.extend(["--tls-cluster".to_owned(), "yes".to_owned()]);
                    free_port()
                }
            };
            masters.push(RedisServer::start_on(port, fsync, extra));
            cluster_ports.push(cluster_port);
        }
        let mut create = Command::new("redis-cli");
        if let Some(dir) = tls {
            create.arg("--tls").arg("--cacert").arg(dir.join("ca.crt"));
        }
        let status = create
            .arg("--cluster")
            .arg("create")
            .args(cluster_ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli runs");
        assert!(status.success(), "redis-cli --cluster create failed");
        let cluster = RedisCluster {
            masters,
            cluster_ports,
            tls: tls.is_some(),
        };
        cluster.wait_ok();
        Some(cluster)
    }

    /// Waits until every master says `cluster_state:ok` and agrees on every slot.
    pub(crate) fn wait_ok(&self) {
        let deadline = Instant::now() + TIMEOUT;
        while !self.masters.iter().all(|m| {
            m.command("CLUSTER INFO").contains("cluster_state:ok")
                && m.command("CLUSTER INFO").contains("cluster_slots_ok:16384")
        }) {
            assert!(Instant::now() < deadline, "the cluster did not become ok");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The seed URLs.
    pub(crate) fn seeds(&self) -> Vec<String> {
        let scheme = if self.tls { "rediss" } else { "redis" };
        self.cluster_ports
            .iter()
            .map(|port| format!("{scheme}://127.0.0.1:{port}"))
            .collect()
    }

    /// Which master (an index into `masters`) holds `key`, as the cluster says.
    pub(crate) fn master_of(&self, key: &str) -> usize {
        let reply = self.masters[0].command(&format!("CLUSTER KEYSLOT {key}"));
        let slot: u16 = reply.trim().trim_start_matches(':').parse().unwrap();
        let nodes = self.masters[0].command("CLUSTER NODES");
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if fields.len() < 9 || !fields[2].contains("master") {
                continue;
            }
            let owns = fields[8..].iter().any(|range| {
                let (low, high) = range.split_once('-').unwrap_or((range, range));
                match (low.parse::<u16>(), high.parse::<u16>()) {
                    (Ok(low), Ok(high)) => (low..=high).contains(&slot),
                    _ => false,
                }
            });
            if owns {
                let port: u16 = fields[1]
                    .split(['@', ','])
                    .next()
                    .and_then(|address| address.rsplit(':').next())
                    .and_then(|port| port.parse().ok())
                    .unwrap();
                return self.masters.iter().position(|m| m.port == port).unwrap();
            }
        }
        panic!("no master owns slot {slot}: {nodes}");
    }
}

/// A port P below the ephemeral range with P and its cluster bus port P + 10000 both free.
fn free_cluster_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Spread over 10000..22000 by process, so that test binaries running at once rarely meet.
    let offset = (std::process::id() % 1_000) as u16 * 12;
    loop {
        let port = 10_000 + (offset + NEXT.fetch_add(1, Ordering::Relaxed) % 12_000) % 12_000;
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
}
