//! Merge-diff of one small update into models of 10, 10,000 and 100,000 flat-DOM elements:
//! the cost follows the update, not the model. Also the whole path a frame takes: parse,
//! validate, merge-diff (which writes the diff's text).
#![allow(clippy::unwrap_used)]

mod flat_dom;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use purly::{merge_diff, parse_frame, Content, Limits};

fn merge_only(c: &mut Criterion) {
    let mut group = c.benchmark_group("merge_diff");
    for elements in [10, 10_000, 100_000] {
        let mut model = flat_dom::model(elements);
        let updates = [flat_dom::update(elements, 0), flat_dom::update(elements, 1)];
        let mut round = 0;
        group.bench_function(BenchmarkId::from_parameter(elements), |b| {
            b.iter(|| {
                round += 1;
                let change = merge_diff(&mut model, updates[round % 2].clone());
                assert!(!change.is_empty());
                change
            })
        });
    }
    group.finish();
}

fn parse_merge_serialize(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_merge_serialize");
    let limits = Limits::default();
    for elements in [10, 10_000, 100_000] {
        let mut model = flat_dom::model(elements);
        let frames = [
            flat_dom::update_frame(elements, 0),
            flat_dom::update_frame(elements, 1),
        ];
        let mut round = 0;
        group.bench_function(BenchmarkId::from_parameter(elements), |b| {
            b.iter(|| {
                round += 1;
                let frame = parse_frame(frames[round % 2].as_bytes(), &limits).unwrap();
                let message = frame.messages.into_iter().next().unwrap();
                // parse_frame reads an update's content into its object.
                let Content::Object(update) = message.content else {
                    unreachable!()
                };
                // The merge writes the diff's text.
                merge_diff(&mut model, update).into_diff_json()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, merge_only, parse_merge_serialize);
criterion_main!(benches);
