//! A private `redis-server` on a free loopback port in a temporary directory, stopped when
//! dropped (and a Redis Cluster of three, `cluster`). Without `redis-server` a test says so
//! loudly and, under `CI=true`, fails.
#![allow(dead_code, clippy::unwrap_used)]

pub(crate) mod cluster;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) const TIMEOUT: Duration = Duration::from_secs(20);

/// A running `redis-server`.
pub(crate) struct RedisServer {
    child: Option<Child>,
    pub(crate) port: u16,
    dir: tempfile::TempDir,
    fsync: &'static str,
    /// More arguments (a TLS port and its certificates, say).
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts one with AOF (`appendfsync` = `fsync`), or `None` when `redis-server` is missing
    /// (a panic under `CI=true`).
    pub(crate) fn start(fsync: &'static str) -> Option<RedisServer> {
        RedisServer::start_with(fsync, Vec::new())
    }

    /// [`start`](RedisServer::start) with more arguments.
    pub(crate) fn start_with(fsync: &'static str, extra: Vec<String>) -> Option<RedisServer> {
        if !installed() {
            return None;
        }
        Some(RedisServer::start_on(free_port(), fsync, extra))
    }

    /// One on `port`, in a directory of its own.
    pub(crate) fn start_on(port: u16, fsync: &'static str, extra: Vec<String>) -> RedisServer {
        let mut server = RedisServer {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
            fsync,
            extra,
        };
        server.restart();
        server
    }

    /// Kills the process (SIGKILL) if it runs and starts it again on the same port and
    /// directory (its AOF reloads the data).
    pub(crate) fn restart(&mut self) {
        // A process still running would keep the port: the new one would exit at once.
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                self.fsync,
            ])
            .args(["--dir", self.dir.path().to_str().unwrap()])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + TIMEOUT;
        while !self.answers() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process where it is (SIGSTOP): it keeps its connections and answers nothing.
    pub(crate) fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused process go on (SIGCONT).
    pub(crate) fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        send_signal(self.child.as_ref().expect("redis-server runs").id(), signal);
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// One command over a raw connection (`PUBSUB NUMSUB ...`): the reply's text.
    pub(crate) fn command(&self, line: &str) -> String {
        let mut socket = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        socket.set_read_timeout(Some(TIMEOUT)).unwrap();
        socket.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        let mut buffer = [0u8; 4096];
        let n = socket.read(&mut buffer).unwrap();
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    }

    fn answers(&self) -> bool {
        let Ok(mut socket) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = socket.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buffer = [0u8; 16];
        socket.write_all(b"PING\r\n").is_ok()
            && socket
                .read(&mut buffer)
                .is_ok_and(|n| buffer[..n].starts_with(b"+PONG"))
    }
}

/// A free loopback port (the system's pick).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The arguments that make a redis-server speak TLS on `tls_port` with the certificates in
/// `certs` (`server.crt`, `server.key`, `ca.crt`), clients not asked for one.
pub(crate) fn tls_args(certs: &std::path::Path, tls_port: u16) -> Vec<String> {
    let file = |name: &str| certs.join(name).to_str().unwrap().to_owned();
    vec![
        "--tls-port".to_owned(),
        tls_port.to_string(),
        "--tls-cert-file".to_owned(),
        file("server.crt"),
        "--tls-key-file".to_owned(),
        file("server.key"),
        "--tls-ca-cert-file".to_owned(),
        file("ca.crt"),
        "--tls-auth-clients".to_owned(),
        "no".to_owned(),
    ]
}

/// Whether `redis-server` is installed; when it is not, says so loudly (a panic under
/// `CI=true`).
#[allow(clippy::print_stderr)] // the loud skip the standards ask for
pub(crate) fn installed() -> bool {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok()
    {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "redis-server is not installed (apt-get install -y redis-server)"
    );
    eprintln!("SKIPPED: redis-server is not installed (apt-get install -y redis-server)");
    false
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `signal` (`-STOP`, `-CONT`, ...) to process `pid` with `kill`.
pub(crate) fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}
