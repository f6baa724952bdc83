//! `rediss://`: nodes on a real redis-server that speaks TLS only on the port they use, with a
//! certificate of a private CA made here by openssl. Two nodes share a model through it; the
//! same port refuses plain `redis://`, and TLS without the CA (the system's roots) refuses the
//! server's certificate. The same on a Redis Cluster of three masters whose cluster ports and
//! bus speak TLS only.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::cluster::RedisCluster;
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

/// The certificates in a fresh directory, or `None` (said loudly; a failure under `CI=true`)
/// without openssl.
fn certificates() -> Option<tempfile::TempDir> {
    let certs = tempfile::tempdir().unwrap();
    if !make_certificates(certs.path()) {
        let message = "TEST NOT RUN: openssl is missing (apt-get install -y openssl)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
        let _ = writeln!(std::io::stderr(), "\n!!! {message}\n");
        return None;
    }
    Some(certs)
}

/// A writer on `a` and a reader joining on `b` see the same model over TLS.
async fn share_a_model(a: Arc<RedisStore>, b: Arc<RedisStore>, model: &str) {
    let (a, b) = (
        Engine::builder().store(a).build(),
        Engine::builder().store(b).build(),
    );
    let mut writer = Client::connect(&a, model).await.unwrap();
    writer.update(json!({"over": "tls"})).await.unwrap();
    tokio::time::timeout(TIMEOUT, writer.settle())
        .await
        .unwrap()
        .unwrap();
    let mut reader = Client::connect(&b, model).await.unwrap();
    let snapshot = tokio::time::timeout(TIMEOUT, reader.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(snapshot[0].content().unwrap()["over"], "tls", "{model}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_a_model_over_tls() {
    let Some(certs) = certificates() else {
        return;
    };
    let tls_port = common::free_port();
    let extra = common::tls_args(certs.path(), tls_port);
    let Some(_redis) = RedisServer::start_with("everysec", extra) else {
        return;
    };
    let url = format!("rediss://127.0.0.1:{tls_port}");
    let ca = std::fs::read(certs.path().join("ca.crt")).unwrap();
    let a = RedisStore::connect(&url, options(Some(ca.clone())))
        .await
        .unwrap();
    let b = RedisStore::connect(&url, options(Some(ca))).await.unwrap();
    share_a_model(Arc::new(a), Arc::new(b), "m").await;
    // The TLS port speaks nothing else, and the certificate is checked.
    let plain = format!("redis://127.0.0.1:{tls_port}");
    assert!(RedisStore::connect(&plain, options(None)).await.is_err());
    assert!(RedisStore::connect(&url, options(None)).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_models_on_a_tls_cluster() {
    let Some(certs) = certificates() else {
        return;
    };
    let Some(cluster) = RedisCluster::start_with("everysec", Some(certs.path())) else {
        return;
    };
    let seeds = cluster.seeds();
    assert!(seeds.iter().all(|s| s.starts_with("rediss://")));
    let ca = std::fs::read(certs.path().join("ca.crt")).unwrap();
    let a = RedisStore::connect_cluster(&seeds, options(Some(ca.clone())))
        .await
        .unwrap();
    let b = RedisStore::connect_cluster(&seeds, options(Some(ca)))
        .await
        .unwrap();
    // Models on every master: each master's TLS port and the redirections to it work.
    let mut masters = std::collections::HashSet::new();
    let mut models = Vec::new();
    for i in 0.. {
        let model = format!("tls-{i}");
        if masters.insert(cluster.master_of(&format!("purly:{{{model}}}:log"))) {
            models.push(model);
        }
        if masters.len() == 3 {
            break;
        }
    }
    let (a, b) = (Arc::new(a), Arc::new(b));
    for model in &models {
        share_a_model(a.clone(), b.clone(), model).await;
    }
    // Without the CA (the system's roots), the masters' certificate is refused.
    assert!(RedisStore::connect_cluster(&seeds, options(None))
        .await
        .is_err());
}
