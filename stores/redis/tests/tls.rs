//! `rediss://`: nodes on a real redis-server that speaks TLS only on the port they use, with a
//! certificate of a private CA made here by openssl. Two nodes share a model through it; the
//! same port refuses plain `redis://`, and TLS without the CA (the system's roots) refuses the
//! server's certificate.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{RedisServer, TIMEOUT};
use purly::serde_json::json;
use purly::Engine;
use purly_channel::Client;
use purly_redis::{RedisOptions, RedisStore};

/// A CA and a certificate for 127.0.0.1 signed by it, in `dir`; `false` without openssl.
fn make_certificates(dir: &Path) -> bool {
    let run = |args: &[&str]| {
        Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    std::fs::write(dir.join("san.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=purly test CA",
    ]) && run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]) && run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.cnf",
    ])
}

fn options(ca: Option<Vec<u8>>) -> RedisOptions {
    let mut options = RedisOptions::default();
    options.timeout = Duration::from_millis(1500);
    options.tls_ca_pem = ca;
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_a_model_over_tls() {
    let certs = tempfile::tempdir().unwrap();
    if !make_certificates(certs.path()) {
        let message = "TEST NOT RUN: openssl is missing (apt-get install -y openssl)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
        let _ = writeln!(std::io::stderr(), "\n!!! {message}\n");
        return;
    }
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let file = |name: &str| certs.path().join(name).to_str().unwrap().to_owned();
    let extra = vec![
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
    ];
    let Some(_redis) = RedisServer::start_with("everysec", extra) else {
        return;
    };
    let url = format!("rediss://127.0.0.1:{tls_port}");
    let ca = std::fs::read(certs.path().join("ca.crt")).unwrap();
    let a = RedisStore::connect(&url, options(Some(ca.clone())))
        .await
        .unwrap();
    let b = RedisStore::connect(&url, options(Some(ca))).await.unwrap();
    let (a, b) = (
        Engine::builder().store(a).build(),
        Engine::builder().store(b).build(),
    );
    let mut writer = Client::connect(&a, "m").await.unwrap();
    writer.update(json!({"over": "tls"})).await.unwrap();
    tokio::time::timeout(TIMEOUT, writer.settle())
        .await
        .unwrap()
        .unwrap();
    let mut reader = Client::connect(&b, "m").await.unwrap();
    let snapshot = tokio::time::timeout(TIMEOUT, reader.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(snapshot[0].content().unwrap()["over"], "tls");
    // The TLS port speaks nothing else, and the certificate is checked.
    let plain = format!("redis://127.0.0.1:{tls_port}");
    assert!(RedisStore::connect(&plain, options(None)).await.is_err());
    assert!(RedisStore::connect(&url, options(None)).await.is_err());
}
