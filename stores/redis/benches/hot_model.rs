//! Hot-model writes from several nodes on one real Redis: W writer threads per node, each
//! calling `Engine::update` on the same model as fast as it is accepted. Reports frames/s
//! until every node holds the last version, and Redis round trips per frame (the append
//! script's calls, from Redis's own `INFO commandstats`, over the frames).
//!
//! `cargo bench -p purly-redis --bench hot_model` (needs `redis-server` on the PATH).
#![allow(clippy::print_stdout, clippy::unwrap_used)] // a report is what this bench is for

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::RedisServer;
use purly::serde_json::json;
use purly::Engine;
use purly_redis::{RedisOptions, RedisStore};

const NODES: usize = 3;
const WRITERS_PER_NODE: usize = 4;
const FRAMES_PER_WRITER: u64 = 5_000;

fn scripts_called(redis: &RedisServer) -> u64 {
    redis
        .command("INFO commandstats")
        .lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

fn main() {
    let redis = RedisServer::start("everysec").expect("redis-server is needed for this bench");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let engines: Vec<Engine> = (0..NODES)
        .map(|_| {
            let store = runtime
                .block_on(RedisStore::connect(&redis.url(), RedisOptions::default()))
                .unwrap();
            Engine::builder().store(Arc::new(store)).build()
        })
        .collect();
    for engine in &engines {
        engine
            .update("hot", json!({"start": true}).as_object().cloned().unwrap())
            .wait()
            .unwrap();
    }
    let calls_before = scripts_called(&redis);
    let total = (NODES * WRITERS_PER_NODE) as u64 * FRAMES_PER_WRITER;
    let started = Instant::now();
    let writers: Vec<_> = engines
        .iter()
        .enumerate()
        .flat_map(|(n, engine)| {
            (0..WRITERS_PER_NODE).map(move |w| {
                let engine = engine.clone();
                std::thread::spawn(move || {
                    for i in 0..FRAMES_PER_WRITER {
                        let patch =
                            json!({ format!("n{n}w{w}"): i, "last": format!("{n}-{w}-{i}") });
                        engine
                            .update("hot", patch.as_object().cloned().unwrap())
                            .wait()
                            .unwrap();
                    }
                })
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    // Every frame changed its writer's key: the model ends at version 1 + total.
    let deadline = Instant::now() + Duration::from_secs(20);
    while engines
        .iter()
        .any(|e| e.durable_version("hot") != Some(1 + total))
    {
        assert!(
            Instant::now() < deadline,
            "the nodes never converged: durable {:?}, applied {:?}, expected {}",
            engines
                .iter()
                .map(|e| e.durable_version("hot"))
                .collect::<Vec<_>>(),
            engines
                .iter()
                .map(|e| e.read("hot", |_, v| v))
                .collect::<Vec<_>>(),
            1 + total
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = started.elapsed();
    let calls = scripts_called(&redis) - calls_before;
    let states: Vec<_> = engines.iter().map(|e| e.state("hot").unwrap()).collect();
    assert!(
        states.windows(2).all(|w| w[0] == w[1]),
        "the nodes diverged"
    );
    println!(
        "hot model, {NODES} nodes x {WRITERS_PER_NODE} writers, {total} frames: {:.0} frames/s; \
         {calls} append scripts = {:.3} Redis round trips per frame",
        total as f64 / elapsed.as_secs_f64(),
        calls as f64 / total as f64
    );
}
