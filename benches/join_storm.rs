//! A join storm on a large model: 500 concurrent joins on a model of about 5 MB, while a
//! publisher on the same model measures the latency of its own echoes, before and during the
//! storm. Before the snapshot was shared, every join serialized the whole model under the
//! model's lock and the publisher waited behind each one.
//!
//! `cargo bench --bench join_storm` (plain output, no criterion: one storm is one sample).
#![allow(clippy::print_stdout)] // a report is what this bench is for

use std::sync::Arc;
use std::time::{Duration, Instant};

use purly::{Engine, JoinOptions, Outbox, Received};

const JOINS: usize = 500;
const MODEL_BYTES: usize = 5 << 20;
const CHUNK: usize = 500 << 10;

fn main() {
    let engine = Engine::default();
    let loader = engine
        .join(
            "big",
            Arc::new(Outbox::new(usize::MAX)),
            JoinOptions::stream(),
        )
        .wait()
        .expect("join");
    for chunk in 0..MODEL_BYTES / CHUNK {
        let mut fields = Vec::new();
        for i in 0..CHUNK / 1000 {
            fields.push(format!(r#""k{chunk}_{i}":"{}""#, "x".repeat(990)));
        }
        let frame = format!(
            r#"[{{"header":{{"type":"update"}},"content":{{{}}}}}]"#,
            fields.join(",")
        );
        loader.send_text(&frame).expect("load");
    }
    drop(loader);

    let outbox = Arc::new(Outbox::new(usize::MAX));
    let publisher = engine
        .join("big", outbox.clone(), JoinOptions::stream())
        .wait()
        .expect("join");
    let mut batch = Vec::new();
    let _ = outbox.try_recv(&mut batch);
    let mut tick = 0u64;
    let mut echo = || {
        tick += 1;
        let start = Instant::now();
        publisher
            .send_text(&format!(
                r#"[{{"header":{{"type":"update","id":{tick}}},"content":{{"tick":{tick}}}}}]"#
            ))
            .expect("send");
        loop {
            batch.clear();
            if outbox.try_recv(&mut batch) == Some(Received::Messages) && !batch.is_empty() {
                return start.elapsed();
            }
            assert!(start.elapsed() < Duration::from_secs(60), "no echo in 60 s");
            std::thread::yield_now();
        }
    };

    let before: Vec<Duration> = (0..300).map(|_| echo()).collect();
    let storm_started = Instant::now();
    let joiners: Vec<_> = (0..JOINS)
        .map(|_| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                let inbox = Arc::new(Outbox::new(usize::MAX));
                let session = engine
                    .join("big", inbox.clone(), JoinOptions::stream())
                    .wait()
                    .expect("join");
                let mut got = Vec::new();
                let start = Instant::now();
                while inbox.try_recv(&mut got) != Some(Received::Messages) {
                    assert!(start.elapsed() < Duration::from_secs(120), "no snapshot");
                    std::thread::yield_now();
                }
                drop(session);
            })
        })
        .collect();
    let mut during = Vec::new();
    while !joiners.iter().all(|j| j.is_finished()) {
        during.push(echo());
    }
    let storm = storm_started.elapsed();
    for joiner in joiners {
        joiner.join().expect("joiner");
    }
    report("before the storm", &mut before.clone());
    report("during the storm", &mut during);
    println!(
        "storm: {JOINS} joins of a {} MB model in {:.2} s",
        MODEL_BYTES >> 20,
        storm.as_secs_f64()
    );
}

fn report(phase: &str, samples: &mut [Duration]) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    println!(
        "echo latency {phase}: n={} p50={:?} p99={:?} max={:?}",
        samples.len(),
        at(0.5),
        at(0.99),
        samples[samples.len() - 1]
    );
}
