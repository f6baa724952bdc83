//! Frame parsing and validation throughput, on frames of 1 and 100 realistic messages; and
//! whole frames through a session (parse, apply, echo), the path the metrics instrument.
#![allow(clippy::unwrap_used)]

mod flat_dom;
#[path = "support/load_update.rs"]
mod load_update;
#[path = "support/recorder.rs"]
mod recorder;

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use purly::serde_json::json;
use purly::{parse_frame, Engine, JoinOptions, Limits, Outbox, Received};

fn frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_frame");
    let limits = Limits::default();
    for messages in [1usize, 100] {
        let frame: Vec<_> = (0..messages)
            .map(|i| {
                let kind = if i % 4 == 3 { "signal" } else { "update" };
                json!({"header": {"type": kind, "version": "0.1", "id": format!("c1-{i}")},
                       "content": flat_dom::update(1000 + i, i as u64)})
            })
            .collect();
        let text = json!(frame).to_string();
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(BenchmarkId::new("messages", messages), |b| {
            b.iter(|| parse_frame(text.as_bytes(), &limits).unwrap())
        });
    }
    group.finish();
}

fn session_send(c: &mut Criterion) {
    recorder::install_if_asked();
    let mut group = c.benchmark_group("session_send");
    let engine = Engine::default();
    let outbox = Arc::new(Outbox::new(64 << 20));
    let session = engine
        .join("m", outbox.clone(), JoinOptions::stream())
        .wait()
        .unwrap();
    let mut batch = Vec::new();
    outbox.try_recv(&mut batch);
    let flat_dom_frames = vec![flat_dom::update_frame(10, 0), flat_dom::update_frame(10, 1)];
    let mut round = 0;
    group.throughput(Throughput::Elements(1));
    // Each frame alternates between two values, so that every send changes the model.
    for (name, frames) in [
        ("update_and_echo", flat_dom_frames),
        ("load_update_and_echo", load_update::load_update_frames()),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                round += 1;
                session.send_text(&frames[round % 2]).unwrap();
                batch.clear();
                assert_eq!(outbox.try_recv(&mut batch), Some(Received::Messages));
            })
        });
    }
    group.finish();
}

/// What a client key costs an update (PROTOCOL.md section 9): the same frames with integer
/// ids, sent by a session without a key and by one with a key (judged against the key's
/// memory, its answer remembered).
fn client_key_cost(c: &mut Criterion) {
    let mut group = c.benchmark_group("client_key");
    group.throughput(Throughput::Elements(1));
    for (name, options) in [
        ("without_key", JoinOptions::stream()),
        (
            "with_key",
            JoinOptions::stream().client_key(purly::ClientKey::new("bench-key-0001").unwrap()),
        ),
    ] {
        let engine = Engine::default();
        let outbox = Arc::new(Outbox::new(64 << 20));
        let session = engine.join("m", outbox.clone(), options).wait().unwrap();
        let mut batch = Vec::new();
        outbox.try_recv(&mut batch);
        let mut id = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                id += 1;
                let frame = format!(
                    r#"[{{"header":{{"type":"update","id":{id}}},"content":{{"n":{id},"k{}":{{"on":true}}}}}}]"#,
                    id % 2
                );
                session.send_text(&frame).unwrap();
                batch.clear();
                assert_eq!(outbox.try_recv(&mut batch), Some(Received::Messages));
            })
        });
    }
    group.finish();
}

criterion_group!(benches, frames, session_send, client_key_cost);
criterion_main!(benches);
