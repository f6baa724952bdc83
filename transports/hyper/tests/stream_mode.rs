//! Stream mode over real sockets, driven by a raw WebSocket client (not purly's own).
#![allow(clippy::unwrap_used)]

mod common;

use common::{next_frame, send, stream_client, update, update_with_id, Server};
use purly::serde_json::{json, Value};
use purly_hyper::Purly;

async fn server() -> Server {
    Server::start(Purly::new(common::engine())).await
}

#[tokio::test]
async fn join_gets_a_snapshot_then_diffs_with_seq_epoch_origin_and_id() {
    let server = server().await;
    let mut alice = stream_client(&server, "m").await;
    let snapshot = next_frame(&mut alice).await;
    // The model's snapshot, then who else is here (nobody): both name the connection.
    assert_eq!(snapshot.len(), 2);
    assert_eq!(snapshot[1]["header"]["type"], "presence");
    assert_eq!(snapshot[1]["header"]["snapshot"], true);
    assert_eq!(snapshot[1]["content"], json!({}));
    let presence_id = &snapshot[1]["header"]["presence_id"];
    assert!(presence_id.is_string());
    assert_eq!(&snapshot[0]["header"]["presence_id"], presence_id);
    assert_eq!(snapshot[0]["header"]["type"], "update");
    assert_eq!(snapshot[0]["header"]["snapshot"], true);
    assert_eq!(snapshot[0]["header"]["seq"], 0);
    let epoch = snapshot[0]["header"]["epoch"].as_str().unwrap().to_owned();
    assert_eq!(snapshot[0]["content"], json!({}));

    send(
        &mut alice,
        &update_with_id(
            "a1",
            r#"{"div":{"style":{"color":"coral","width":"20px"}}}"#,
        ),
    )
    .await;
    let echo = next_frame(&mut alice).await;
    let header = &echo[0]["header"];
    assert_eq!(header["seq"], 1);
    assert_eq!(header["epoch"], epoch.as_str());
    assert_eq!(header["id"], "a1");
    let origin = header["origin"].clone();
    assert!(origin.is_u64());

    // A late joiner's snapshot holds the merged state at the current version.
    let mut bob = stream_client(&server, "m").await;
    let snapshot = next_frame(&mut bob).await;
    assert_eq!(snapshot[0]["header"]["seq"], 1);
    assert_eq!(
        snapshot[0]["content"],
        json!({"div": {"style": {"color": "coral", "width": "20px"}}})
    );

    // Nested merge; only the difference goes out, to everyone including the sender.
    send(
        &mut alice,
        &update_with_id(
            "a2",
            r#"{"div":{"style":{"color":"coral","width":"40px"},"new":{}},"gone":null}"#,
        ),
    )
    .await;
    for ws in [&mut alice, &mut bob] {
        let frame = next_frame(ws).await;
        assert_eq!(
            frame[0]["content"],
            json!({"div": {"style": {"width": "40px"}, "new": {}}})
        );
        assert_eq!(frame[0]["header"]["seq"], 2);
        assert_eq!(frame[0]["header"]["origin"], origin);
    }
    let (status, state) = common::get(&server, "/m/state", &[]).await;
    assert_eq!(status, 200);
    let state: Value = purly::serde_json::from_str(&state).unwrap();
    assert_eq!(
        state,
        json!({"div": {"style": {"color": "coral", "width": "40px"}, "new": {}}})
    );
}

#[tokio::test]
async fn no_op_updates_are_acked_once_and_fan_out_nothing() {
    let server = server().await;
    let mut alice = stream_client(&server, "m").await;
    let mut bob = stream_client(&server, "m").await;
    next_frame(&mut alice).await;
    next_frame(&mut bob).await;
    send(&mut alice, &update(r#"{"k":1}"#)).await;
    next_frame(&mut alice).await;
    next_frame(&mut bob).await;
    send(&mut alice, &update(r#"{"k":1}"#)).await; // no id: no answer at all
    send(&mut alice, &update_with_id("same", r#"{"k":1}"#)).await;
    let ack = next_frame(&mut alice).await;
    assert_eq!(
        ack,
        vec![
            json!({"header": {"type": "ack", "version": "0.1", "id": "same", "seq": 1,
                                         "epoch": ack[0]["header"]["epoch"]}, "content": {}})
        ]
    );
    // Bob heard nothing of the no-ops: the next thing he gets is the next real change.
    send(&mut alice, &update(r#"{"k":2}"#)).await;
    let next = next_frame(&mut bob).await;
    assert_eq!(next[0]["header"]["seq"], 2);
    assert_eq!(next[0]["content"], json!({"k": 2}));
}

#[tokio::test]
async fn signals_are_relayed_unmodified_and_never_echoed() {
    let server = server().await;
    let mut alice = stream_client(&server, "m").await;
    let mut bob = stream_client(&server, "m").await;
    next_frame(&mut alice).await;
    next_frame(&mut bob).await;
    let content = r#"{"b":{"callback":"c1","event":{"clientX":3.50}},"a":[1,"two"]}"#;
    send(
        &mut alice,
        &format!(r#"[{{"header":{{"type":"signal"}},"content":{content}}}]"#),
    )
    .await;
    // Bob gets the content byte for byte (key order and number spelling kept).
    let frame = loop {
        let message =
            tokio::time::timeout(common::TIMEOUT, futures_util::StreamExt::next(&mut bob))
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            break text.to_string();
        }
    };
    assert!(
        frame.ends_with(&format!(r#""content":{content}}}]"#)),
        "{frame}"
    );
    assert!(frame.contains(r#""type":"signal""#) && frame.contains(r#""origin":"#));
    // Alice got nothing back: her next frame is the echo of a later update.
    send(&mut alice, &update(r#"{"after":true}"#)).await;
    let next = next_frame(&mut alice).await;
    assert_eq!(next[0]["content"], json!({"after": true}));
    assert_eq!(next[0]["header"]["seq"], 1, "the signal changed no version");
}

#[tokio::test]
async fn queued_messages_are_coalesced_into_frames() {
    let server = server().await;
    let mut watcher = stream_client(&server, "m").await;
    next_frame(&mut watcher).await;
    let mut writer = stream_client(&server, "m").await;
    next_frame(&mut writer).await;
    // One frame of 200 updates: the watcher may get them in fewer frames, never more.
    let messages: Vec<String> = (0..200)
        .map(|i| format!(r#"{{"header":{{"type":"update"}},"content":{{"k{i}":{i}}}}}"#))
        .collect();
    send(&mut writer, &format!("[{}]", messages.join(","))).await;
    let mut seqs = Vec::new();
    let mut frames = 0;
    while seqs.len() < 200 {
        frames += 1;
        for message in next_frame(&mut watcher).await {
            seqs.push(message["header"]["seq"].as_u64().unwrap());
        }
    }
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
    assert!(
        frames < 200,
        "{frames} frames for 200 messages queued at once"
    );
}
