//! Compat mode (no subprotocol): the original purly server's behaviour, over real sockets.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{compat_client, next_frame, send, stream_client, update, Server};
use futures_util::StreamExt;
use purly::serde_json::json;
use purly_hyper::{Purly, ServerConfig};

async fn server(refresh: u32) -> Server {
    let mut config = ServerConfig::default();
    config.refresh_per_second = refresh;
    Server::start(Purly::builder(common::engine()).config(config).build()).await
}

#[tokio::test]
async fn first_frame_is_the_state_then_one_answer_per_client_frame() {
    let server = server(100).await;
    let mut writer = stream_client(&server, "m").await;
    next_frame(&mut writer).await;
    send(&mut writer, &update(r#"{"root":{"tagName":"div"}}"#)).await;
    next_frame(&mut writer).await;

    let mut old = compat_client(&server, "m").await;
    let first = next_frame(&mut old).await;
    assert_eq!(
        first,
        vec![
            json!({"header": {"type": "update", "version": "0.1"}, "content": {"root": {"tagName": "div"}}})
        ]
    );
    // Nothing more comes until the client speaks, even when the model changes.
    send(&mut writer, &update(r#"{"root":{"tagName":"span"}}"#)).await;
    next_frame(&mut writer).await;
    let silent = tokio::time::timeout(Duration::from_millis(300), old.next()).await;
    assert!(
        silent.is_err(),
        "compat server sent without being asked: {silent:?}"
    );

    // The client's frame is answered with everything queued: the other client's diff.
    send(&mut old, "[]").await;
    let answer = next_frame(&mut old).await;
    assert_eq!(
        answer,
        vec![
            json!({"header": {"type": "update", "version": "0.1"}, "content": {"root": {"tagName": "span"}}})
        ]
    );
    // Its own update is applied, fanned out to others, and not echoed back: the answer is [].
    send(&mut old, &update(r#"{"mine":1}"#)).await;
    assert_eq!(
        next_frame(&mut old).await,
        Vec::<purly::serde_json::Value>::new()
    );
    let diff = next_frame(&mut writer).await;
    assert_eq!(diff[0]["content"], json!({"mine": 1}));
    assert!(diff[0]["header"]["origin"].is_u64());
}

#[tokio::test]
async fn turns_are_throttled_to_the_refresh_rate() {
    let server = server(20).await; // at least 50 ms a turn
    let mut old = compat_client(&server, "m").await;
    next_frame(&mut old).await;
    let started = Instant::now();
    for _ in 0..10 {
        send(&mut old, "[]").await;
        assert_eq!(
            next_frame(&mut old).await,
            Vec::<purly::serde_json::Value>::new()
        );
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(450),
        "10 turns took only {elapsed:?}"
    );
}

#[tokio::test]
async fn compat_errors_come_in_the_answer() {
    let server = server(100).await;
    let mut old = compat_client(&server, "m").await;
    next_frame(&mut old).await;
    send(&mut old, "not json").await;
    let answer = next_frame(&mut old).await;
    assert_eq!(answer[0]["header"]["type"], "error");
    assert_eq!(answer[0]["content"]["code"], "invalid_json");
    send(&mut old, &update(r#"{"ok":true}"#)).await;
    assert_eq!(next_frame(&mut old).await.len(), 0);
    let (_, state) = common::get(&server, "/m/state", &[]).await;
    assert_eq!(state, r#"{"ok":true}"#);
}
