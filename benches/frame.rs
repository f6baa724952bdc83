//! Frame parsing and validation throughput, on frames of 1 and 100 realistic messages.
#![allow(clippy::unwrap_used)]

mod flat_dom;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use purly::serde_json::json;
use purly::{parse_frame, Limits};

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

criterion_group!(benches, frames);
criterion_main!(benches);
