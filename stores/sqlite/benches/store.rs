//! The SQLite store against the in-memory store, side by side in one run:
//! - durable updates/s at saturation into 1 model (1 publisher) and into 16 models
//!   (16 publishers), at each durability setting;
//! - a publisher's echo latency (send to echo, the echo waiting for the commit) at a fixed
//!   1,000 updates/s;
//! - the time from opening a data directory of 10,000 models (~1 GB) to serving a join.
//!
//! `cargo bench -p purly-sqlite --bench store` (plain output; `STORE_BENCH_QUICK=1` for a
//! short run that skips the 1 GB directory).
#![allow(clippy::print_stdout, clippy::unwrap_used)] // a report is what this bench is for

use std::sync::Arc;
use std::time::{Duration, Instant};

use purly::serde_json::{json, Map, Value};
use purly::{Engine, JoinOptions, Outbox, Received};
use purly_sqlite::{Durability, SqliteOptions, SqliteStore};

#[derive(Clone, Copy, Debug)]
enum Kind {
    Memory,
    Sqlite(Durability),
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Kind::Memory => "memory",
            Kind::Sqlite(Durability::Process) => "sqlite process",
            Kind::Sqlite(Durability::Os) => "sqlite os",
        };
        f.pad(name)
    }
}

fn engine(kind: Kind, dir: &std::path::Path) -> (Engine, Option<Arc<SqliteStore>>) {
    match kind {
        Kind::Memory => (Engine::default(), None),
        Kind::Sqlite(durability) => {
            let options = SqliteOptions::default().durability(durability);
            let store = Arc::new(SqliteStore::open(dir, options).unwrap());
            (Engine::builder().store(store.clone()).build(), Some(store))
        }
    }
}

fn patch(i: u64) -> Map<String, Value> {
    let value = json!({ "counter": i, format!("k{}", i % 64): {"n": i, "pad": "0123456789abcdef0123456789abcdef"} });
    value.as_object().cloned().unwrap()
}

/// Durable updates per second with `models` publishers, one model each.
fn saturation(kind: Kind, models: usize, per_model: u64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let (engine, store) = engine(kind, dir.path());
    let started = Instant::now();
    let publishers: Vec<_> = (0..models)
        .map(|m| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                let model = format!("m{m}");
                for i in 0..per_model {
                    engine.update(&model, patch(i)).wait().unwrap();
                }
                // Polled with a sleep, not a spin: a spinning publisher would take the CPU the
                // store's writer needs.
                let deadline = Instant::now() + Duration::from_secs(120);
                while engine.durable_version(&model) != Some(per_model) {
                    assert!(Instant::now() < deadline, "never durable");
                    std::thread::sleep(Duration::from_micros(200));
                }
            })
        })
        .collect();
    for p in publishers {
        p.join().unwrap();
    }
    let rate = (models as u64 * per_model) as f64 / started.elapsed().as_secs_f64();
    drop(engine);
    if let Some(store) = store {
        store.close();
    }
    rate
}

/// Echo latency percentiles of one publisher at a fixed rate.
fn echo_latency(kind: Kind, rate: u64, seconds: u64) -> (Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let (engine, store) = engine(kind, dir.path());
    let outbox = Arc::new(Outbox::new(64 << 20));
    let session = engine
        .join("m", outbox.clone(), JoinOptions::stream())
        .wait()
        .unwrap();
    let mut batch = Vec::new();
    let mut samples = Vec::new();
    let period = Duration::from_nanos(1_000_000_000 / rate);
    let start = Instant::now();
    for i in 0..rate * seconds {
        let due = start + period * i as u32;
        while Instant::now() < due {
            std::hint::spin_loop();
        }
        let sent = Instant::now();
        let frame = json!([{"header": {"type": "update", "id": i}, "content": patch(i)}]);
        session.send_text(&frame.to_string()).unwrap();
        loop {
            batch.clear();
            if outbox.try_recv(&mut batch) == Some(Received::Messages)
                && batch.iter().any(|m| m.id().is_some())
            {
                break;
            }
            assert!(sent.elapsed() < Duration::from_secs(10), "no echo");
            std::thread::yield_now();
        }
        samples.push(sent.elapsed());
    }
    drop(session);
    drop(engine);
    if let Some(store) = store {
        store.close();
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (at(0.5), at(0.99))
}

/// Builds a directory of `models` models of `bytes` each, then times open + first join.
fn cold_start(models: usize, bytes: usize) -> (Duration, u64) {
    let dir = tempfile::tempdir().unwrap();
    {
        let (engine, store) = engine(Kind::Sqlite(Durability::Process), dir.path());
        let pad = "x".repeat(bytes / 10);
        for m in 0..models {
            let mut state = Map::new();
            for f in 0..10 {
                state.insert(format!("f{f}"), Value::from(format!("{m}{pad}")));
            }
            engine.update(&format!("m{m}"), state).wait().unwrap();
            if m % 500 == 499 {
                engine.evict_idle();
                engine.evict_idle();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(600);
        while (0..models).any(|m| {
            engine
                .durable_version(&format!("m{m}"))
                .is_some_and(|v| v != 1)
        }) {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(engine);
        store.unwrap().close();
    }
    let size = std::fs::metadata(dir.path().join(purly_sqlite::DATABASE_FILE))
        .unwrap()
        .len();
    let started = Instant::now();
    let (engine, _store) = engine(Kind::Sqlite(Durability::Process), dir.path());
    let outbox = Arc::new(Outbox::new(64 << 20));
    let _session = engine
        .join(
            &format!("m{}", models / 2),
            outbox.clone(),
            JoinOptions::stream(),
        )
        .wait()
        .unwrap();
    let mut batch = Vec::new();
    while outbox.try_recv(&mut batch) != Some(Received::Messages) {
        std::thread::yield_now();
    }
    (started.elapsed(), size)
}

/// The process's resident memory, from `/proc/self/status` (0 where there is none).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kb| kb * 1024)
}

/// Writes `models` models of ~`bytes` each, lets them go idle and evicts them, `rounds`
/// times with new models each round: resident memory before, then after each round's writes
/// and after its eviction. Memory that stays flat from round to round is reused, not leaked.
fn eviction(models: usize, bytes: usize, rounds: usize) -> (u64, Vec<(u64, u64, usize)>) {
    let dir = tempfile::tempdir().unwrap();
    let (engine, store) = engine(Kind::Sqlite(Durability::Process), dir.path());
    let before = rss_bytes();
    let pad = "y".repeat(bytes);
    let mut measured = Vec::new();
    for round in 0..rounds {
        let name = |m: usize| format!("e{round}-{m}");
        for m in 0..models {
            let patch = json!({ "m": m, "pad": pad }).as_object().cloned().unwrap();
            engine.update(&name(m), patch).wait().unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(300);
        while (0..models).any(|m| engine.durable_version(&name(m)) != Some(1)) {
            assert!(Instant::now() < deadline, "never durable");
            std::thread::sleep(Duration::from_millis(10));
        }
        let loaded = rss_bytes();
        engine.evict_idle();
        let evicted = engine.evict_idle();
        measured.push((loaded, rss_bytes(), evicted));
    }
    drop(engine);
    if let Some(store) = store {
        store.close();
    }
    (before, measured)
}

fn main() {
    let quick = std::env::var_os("STORE_BENCH_QUICK").is_some();
    let per_model = if quick { 5_000 } else { 50_000 };
    let only_saturation = std::env::var_os("STORE_BENCH_SATURATION").is_some();
    let kinds = [
        Kind::Memory,
        Kind::Sqlite(Durability::Process),
        Kind::Sqlite(Durability::Os),
    ];
    const ROUNDS: usize = 5;
    println!(
        "durable updates/s at saturation (engine.update, ~120-byte diffs; median of {ROUNDS} \
         rounds, the kinds interleaved in each round):"
    );
    for models in [1, 16] {
        let per = per_model / models as u64 * 4;
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
        for _ in 0..ROUNDS {
            for (k, kind) in kinds.iter().enumerate() {
                rates[k].push(saturation(*kind, models, per));
            }
        }
        let medians: Vec<f64> = rates
            .iter_mut()
            .map(|r| {
                r.sort_by(f64::total_cmp);
                r[r.len() / 2]
            })
            .collect();
        for (k, kind) in kinds.iter().enumerate() {
            println!(
                "  {models:>2} model(s), {kind:<16}: {:>10.0}/s  ({:.2}x memory; rounds {:?})",
                medians[k],
                medians[k] / medians[0],
                rates[k]
                    .iter()
                    .map(|r| (r / 1000.0).round() as u64)
                    .collect::<Vec<_>>()
            );
        }
    }
    if only_saturation {
        return;
    }
    if std::env::var_os("STORE_BENCH_EVICTION").is_some() {
        let (before, rounds) = eviction(10_000, 10_000, 3);
        println!(
            "idle eviction, 10,000 new models of ~10 KB per round: resident {} MB before",
            before >> 20
        );
        for (round, (loaded, after, evicted)) in rounds.iter().enumerate() {
            println!(
                "  round {}: {} MB with the round's models in memory, {} MB after {evicted} evicted",
                round + 1,
                loaded >> 20,
                after >> 20
            );
        }
        return;
    }
    println!("publisher echo latency at 1,000 updates/s (send -> echo, over a session):");
    for kind in kinds {
        let (p50, p99) = echo_latency(kind, 1_000, if quick { 1 } else { 5 });
        println!("  {kind:<16}: p50 {p50:>10.1?}  p99 {p99:>10.1?}");
    }
    let (models, bytes) = if quick {
        (1_000, 10_000)
    } else {
        (10_000, 100_000)
    };
    let (elapsed, size) = cold_start(models, bytes);
    println!(
        "cold start: {models} models, {:.2} GB on disk: open + first join served in {elapsed:.1?}",
        size as f64 / 1e9
    );
}
