//! Resume after a disconnect: the replay path and the snapshot fallback, with a raw client
//! and with purly's `WsClient`.
#![allow(clippy::unwrap_used)]

mod common;

use common::{next_frame, raw, send, stream_client, update, Server};
use purly::serde_json::json;
use purly::Config;
use purly_hyper::{Purly, WsClient};

async fn server(history: usize) -> Server {
    let mut config = Config::default();
    config.history_len = history;
    Server::start(Purly::new(common::engine_with(config))).await
}

#[tokio::test]
async fn a_client_that_missed_100_diffs_gets_exactly_those() {
    let server = server(1024).await;
    let mut writer = stream_client(&server, "m").await;
    next_frame(&mut writer).await;
    let mut reader = stream_client(&server, "m").await;
    let snapshot = next_frame(&mut reader).await;
    let epoch = snapshot[0]["header"]["epoch"].as_str().unwrap().to_owned();
    send(&mut writer, &update(r#"{"n":0}"#)).await;
    next_frame(&mut writer).await;
    assert_eq!(next_frame(&mut reader).await[0]["header"]["seq"], 1);
    drop(reader);

    for n in 1..=100 {
        send(&mut writer, &update(&format!(r#"{{"n":{n},"k{n}":true}}"#))).await;
        next_frame(&mut writer).await;
    }
    let url = server.url(&format!("/m/stream?since=1&epoch={epoch}"));
    let mut resumed = raw(&url, Some("purly.stream"), None).await.unwrap();
    let mut seqs = Vec::new();
    while seqs.len() < 100 {
        let frame = next_frame(&mut resumed).await;
        for message in frame.iter().filter(|m| m["header"]["type"] != "presence") {
            assert!(
                message["header"]["snapshot"].is_null(),
                "a replay has no snapshot"
            );
            seqs.push(message["header"]["seq"].as_u64().unwrap());
        }
    }
    assert_eq!(seqs, (2..=101).collect::<Vec<_>>());
}

#[tokio::test]
async fn ws_client_reconnects_and_converges_on_both_paths() {
    for (history, expect_snapshot) in [(1024, false), (10, true)] {
        let server = server(history).await;
        let url = server.url("/m/stream");
        let mut writer = common::within(WsClient::connect(&url)).await.unwrap();
        let mut reader = common::within(WsClient::connect(&url)).await.unwrap();
        writer.update(json!({"start": 1})).await.unwrap();
        common::within(writer.settle()).await.unwrap();
        while reader.replica().version() < Some(1) {
            common::within(reader.recv()).await.unwrap();
        }
        // The reader's socket goes away; 100 diffs happen meanwhile.
        common::within(reader.disconnect()).await;
        for n in 0..100 {
            writer
                .update(json!({"n": n, format!("k{}", n % 7): n}))
                .await
                .unwrap();
        }
        common::within(writer.settle()).await.unwrap();
        common::within(reader.reconnect()).await.unwrap();
        let first = common::within(reader.recv()).await.unwrap();
        assert_eq!(first[0].is_snapshot(), expect_snapshot, "history {history}");
        while reader.replica().version() < writer.replica().version() {
            common::within(reader.recv()).await.unwrap();
        }
        assert_eq!(reader.state(), writer.state());
        let (_, state) = common::get(&server, "/m/state", &[]).await;
        assert_eq!(purly::serde_json::to_string(reader.state()).unwrap(), state);
    }
}
