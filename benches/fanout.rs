//! One update delivered to N subscribers through the engine, against the floor measured in the
//! same run: a raw `tokio::sync::broadcast` channel of shared pre-serialized bytes with N
//! receivers. Throughput is deliveries (N per iteration).
#![allow(clippy::unwrap_used)]

mod flat_dom;
#[path = "support/recorder.rs"]
mod recorder;

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use purly::{Engine, JoinOptions, Outbox, Received};
use purly_channel::Client;

const SIZES: [usize; 4] = [1, 100, 1_000, 10_000];

fn engine_to_outboxes(c: &mut Criterion) {
    recorder::install_if_asked();
    let mut group = c.benchmark_group("fanout");
    for subscribers in SIZES {
        group.throughput(Throughput::Elements(subscribers as u64));
        let engine = Engine::default();
        let outboxes: Vec<Arc<Outbox>> = (0..subscribers)
            .map(|_| Arc::new(Outbox::new(1 << 20)))
            .collect();
        let _sessions: Vec<_> = outboxes
            .iter()
            .map(|o| {
                engine
                    .join("m", o.clone(), JoinOptions::stream())
                    .wait()
                    .unwrap()
            })
            .collect();
        let mut batch = Vec::new();
        for outbox in &outboxes {
            outbox.try_recv(&mut batch);
            batch.clear();
        }
        let publisher = engine
            .join("m", Arc::new(Outbox::new(64 << 20)), JoinOptions::compat())
            .wait()
            .unwrap();
        let frames = [flat_dom::update_frame(10, 0), flat_dom::update_frame(10, 1)];
        let mut round = 0;
        group.bench_function(BenchmarkId::new("purly", subscribers), |b| {
            b.iter(|| {
                round += 1;
                publisher.send_text(&frames[round % 2]).unwrap();
                for outbox in &outboxes {
                    assert_eq!(outbox.try_recv(&mut batch), Some(Received::Messages));
                    assert_eq!(batch.len(), 1);
                    batch.clear();
                }
            })
        });
    }
    group.finish();
}

fn channel_clients(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout_channel_clients");
    for subscribers in [1_000] {
        group.throughput(Throughput::Elements(subscribers as u64));
        let engine = Engine::default();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut clients: Vec<Client> = (0..subscribers)
            .map(|_| runtime.block_on(Client::connect(&engine, "m")).unwrap())
            .collect();
        for client in &mut clients {
            client.try_recv();
        }
        let publisher = engine
            .join("m", Arc::new(Outbox::new(64 << 20)), JoinOptions::compat())
            .wait()
            .unwrap();
        let frames = [flat_dom::update_frame(10, 0), flat_dom::update_frame(10, 1)];
        let mut round = 0;
        group.bench_function(BenchmarkId::new("purly_channel", subscribers), |b| {
            b.iter(|| {
                round += 1;
                publisher.send_text(&frames[round % 2]).unwrap();
                for client in &mut clients {
                    assert_eq!(client.try_recv().unwrap().len(), 1);
                }
            })
        });
    }
    group.finish();
}

fn broadcast_floor(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout");
    for subscribers in SIZES {
        group.throughput(Throughput::Elements(subscribers as u64));
        let (sender, _) = tokio::sync::broadcast::channel::<Arc<str>>(1024);
        let mut receivers: Vec<_> = (0..subscribers).map(|_| sender.subscribe()).collect();
        let payloads: [Arc<str>; 2] = [
            flat_dom::update_frame(10, 0).into(),
            flat_dom::update_frame(10, 1).into(),
        ];
        let mut round = 0;
        group.bench_function(
            BenchmarkId::new("tokio_broadcast_floor", subscribers),
            |b| {
                b.iter(|| {
                    round += 1;
                    sender.send(payloads[round % 2].clone()).unwrap();
                    for receiver in &mut receivers {
                        receiver.try_recv().unwrap();
                    }
                })
            },
        );
    }
    group.finish();
}

criterion_group!(
    benches,
    engine_to_outboxes,
    broadcast_floor,
    channel_clients
);
criterion_main!(benches);
