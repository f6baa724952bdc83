//! A subscriber that stops reading neither slows the others nor grows without bound, and
//! converges once it reads again.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{recv, version};
use purly::serde_json::json;
use purly::{CloseReason, Engine, JoinOptions, Outbox, ServerMessageKind};
use purly_channel::Client;

const DIFFS: u64 = 10_000;
const STUCK_LIMIT: usize = 64 << 10;

fn update_frame(i: u64) -> String {
    json!([{"header": {"type": "update"},
            "content": {"rows": {format!("r{}", i % 500): {"n": i, "text": "some realistic text of a row"}}}}])
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_subscriber_does_not_hold_back_the_others() {
    let engine = Engine::default();
    let stuck_box = Arc::new(Outbox::new(STUCK_LIMIT));
    let mut stuck =
        Client::connect_with_outbox(&engine, "busy", JoinOptions::stream(), stuck_box.clone())
            .await
            .unwrap();
    let compat_box = Arc::new(Outbox::new(STUCK_LIMIT));
    let compat =
        Client::connect_with_outbox(&engine, "busy", JoinOptions::compat(), compat_box.clone())
            .await
            .unwrap();

    let mut readers = Vec::new();
    for _ in 0..3 {
        let mut reader = Client::connect(&engine, "busy").await.unwrap();
        readers.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            while reader.replica().version() < Some(DIFFS) {
                for message in recv(&mut reader).await {
                    if message.kind() == ServerMessageKind::Update && !message.is_snapshot() {
                        seqs.push(message.seq().unwrap());
                    }
                }
            }
            (reader, seqs)
        }));
    }

    let writer = engine
        .join(
            "busy",
            Arc::new(Outbox::new(64 << 20)),
            JoinOptions::stream(),
        )
        .await
        .unwrap();
    let mut peak = 0;
    for i in 1..=DIFFS {
        writer.send_text(&update_frame(i)).unwrap();
        peak = peak.max(stuck_box.queued_bytes());
        if i % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
    assert!(peak <= STUCK_LIMIT, "stuck queue reached {peak} bytes");
    assert!(
        peak > STUCK_LIMIT / 2,
        "the stuck queue never filled ({peak} bytes)"
    );

    let state = engine.state("busy").unwrap();
    for reader in readers {
        let (reader, seqs) = reader.await.unwrap();
        assert_eq!(seqs, (1..=DIFFS).collect::<Vec<_>>());
        assert_eq!(reader.state(), &state);
    }

    // Reading again: a fresh snapshot replaces what was dropped, and the replica converges.
    while stuck.replica().version() < Some(version(&engine, "busy")) {
        recv(&mut stuck).await;
    }
    assert_eq!(stuck.state(), &state);
    assert!(stuck_box.queued_bytes() <= STUCK_LIMIT);

    // A compat subscriber that overflows is disconnected instead.
    assert!(matches!(
        compat_box.try_recv(&mut Vec::new()),
        Some(purly::Received::Closed(CloseReason::Overflow))
    ));
    drop(compat);
}

/// A lagging client's own confirmations survive the lag: every update it sent is confirmed.
#[tokio::test]
async fn a_lagging_writer_still_gets_its_confirmations() {
    let engine = Engine::default();
    let small = Arc::new(Outbox::new(8 << 10));
    let mut lagging = Client::connect_with_outbox(&engine, "m", JoinOptions::stream(), small)
        .await
        .unwrap();
    let other = engine
        .join("m", Arc::new(Outbox::new(64 << 20)), JoinOptions::stream())
        .await
        .unwrap();
    for i in 0..50u64 {
        lagging.update(json!({"mine": i})).await.unwrap();
        for j in 0..20 {
            other.send_text(&update_frame(i * 20 + j)).unwrap();
        }
    }
    common::settle(&mut lagging).await;
    while lagging.replica().version() < Some(version(&engine, "m")) {
        recv(&mut lagging).await;
    }
    assert_eq!(lagging.state(), &engine.state("m").unwrap());
    assert_eq!(lagging.state()["mine"], 49);
}
