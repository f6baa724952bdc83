//! Stream-mode and compat-mode delivery (PROTOCOL.md sections 3 and 4), and resume.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{obj, recv, recv_until_version, settle, version};
use purly::serde_json::json;
use purly::{
    Access, Config, Engine, ErrorCode, JoinOptions, Mode, Outbox, Received, ServerMessage,
    ServerMessageKind,
};
use purly_channel::Client;

fn only(batch: Vec<ServerMessage>) -> ServerMessage {
    assert_eq!(batch.len(), 1, "expected one message, got {batch:?}");
    batch.into_iter().next().unwrap()
}

#[tokio::test]
async fn join_starts_with_a_snapshot_at_the_current_version() {
    let engine = Engine::default();
    let mut first = Client::connect(&engine, "m").await.unwrap();
    first.update(json!({"a": {"b": 1}})).await.unwrap();
    first.update(json!({"c": 2})).await.unwrap();
    settle(&mut first).await;
    let mut late = Client::connect(&engine, "m").await.unwrap();
    let mut first = recv(&mut late).await;
    // Who else is here follows the snapshot: `first` set no presence, so nobody.
    let presence = first.pop().expect("the presence snapshot");
    assert!(presence.is_presence_snapshot());
    assert_eq!(presence.content_json(), "{}");
    assert_eq!(presence.presence_id(), Some(&*late.session().presence_id()));
    let snapshot = only(first);
    assert!(snapshot.is_snapshot());
    assert_eq!(
        snapshot.presence_id(),
        presence.presence_id(),
        "named by the transport"
    );
    assert_eq!(snapshot.seq(), Some(2));
    assert_eq!(snapshot.epoch(), Some(late.session().epoch()));
    assert_eq!(
        snapshot.content().unwrap(),
        &obj(json!({"a": {"b": 1}, "c": 2}))
    );
    assert!(snapshot.json().contains(r#""snapshot":true"#));
}

#[tokio::test]
async fn diffs_are_echoed_with_origin_and_id_and_carry_only_the_difference() {
    let engine = Engine::default();
    let mut alice = common::keyless(&engine, "m").await;
    let mut bob = Client::connect(&engine, "m").await.unwrap();
    recv(&mut alice).await;
    recv(&mut bob).await;
    alice
        .send_text(r#"[{"header":{"type":"update","id":"a-1"},"content":{"x":{"y":1,"z":2}}}]"#)
        .await
        .unwrap();
    alice
        .send_text(r#"[{"header":{"type":"update","id":"a-2","extra":"dropped"},"content":{"x":{"y":1,"z":3}}}]"#)
        .await.unwrap();
    let alice_id = alice.id();
    for client in [&mut alice, &mut bob] {
        let batch = recv(client).await;
        assert_eq!(batch.len(), 2);
        let second = &batch[1];
        assert_eq!(
            second.content().unwrap(),
            &obj(json!({"x": {"z": 3}})),
            "only the difference"
        );
        assert_eq!(second.seq(), Some(2));
        assert_eq!(second.origin(), Some(alice_id));
        assert_eq!(second.id().unwrap().as_json(), r#""a-2""#);
        assert!(
            !second.json().contains("extra"),
            "unknown header fields are not fanned out"
        );
    }
}

#[tokio::test]
async fn a_no_op_update_is_acked_only_to_its_sender_and_only_with_an_id() {
    let engine = Engine::default();
    let mut alice = common::keyless(&engine, "m").await;
    let mut bob = Client::connect(&engine, "m").await.unwrap();
    alice.update(json!({"k": 1})).await.unwrap();
    settle(&mut alice).await;
    recv_until_version(&mut bob, 1).await;
    alice
        .send_text(r#"[{"header":{"type":"update"},"content":{"k":1}},{"header":{"type":"update","id":7},"content":{"k":1}}]"#)
        .await.unwrap();
    let ack = only(recv(&mut alice).await);
    assert_eq!(ack.kind(), ServerMessageKind::Ack);
    assert_eq!(ack.id().unwrap().as_json(), "7");
    assert_eq!(ack.seq(), Some(1));
    assert_eq!(ack.content_json(), "{}");
    assert!(bob.try_recv().is_none());
}

#[tokio::test]
async fn signals_are_relayed_unmodified_to_the_others_only() {
    let engine = Engine::default();
    let mut alice = Client::connect(&engine, "m").await.unwrap();
    let mut bob = Client::connect(&engine, "m").await.unwrap();
    let mut carol = Client::connect_with(&engine, "m", JoinOptions::compat())
        .await
        .unwrap();
    for c in [&mut alice, &mut bob, &mut carol] {
        recv(c).await;
    }
    let content = r#"{ "z": 1.50, "a" : ["keep", "order"], "n": 12345678901234567890 }"#;
    alice
        .send_text(&format!(
            r#"[{{"header":{{"type":"signal"}},"content":{content}}}]"#
        ))
        .await
        .unwrap();
    let at_bob = only(recv(&mut bob).await);
    assert_eq!(at_bob.kind(), ServerMessageKind::Signal);
    assert_eq!(at_bob.content_json(), content, "byte for byte");
    assert_eq!(at_bob.origin(), Some(alice.id()));
    let at_carol = only(recv(&mut carol).await);
    assert_eq!(
        at_carol.compat_json(),
        format!(r#"{{"header":{{"type":"signal","version":"0.1"}},"content":{content}}}"#)
    );
    assert!(alice.try_recv().is_none(), "a signal is not echoed");
    assert_eq!(version(&engine, "m"), 0, "a signal changes nothing");
    assert!(engine.state("m").unwrap().is_empty());
}

#[tokio::test]
async fn compat_mode_is_the_original_behaviour() {
    let engine = Engine::default();
    let mut stream = Client::connect(&engine, "m").await.unwrap();
    stream.update(json!({"start": true})).await.unwrap();
    settle(&mut stream).await;

    let outbox = Arc::new(Outbox::new(1 << 20));
    let compat = engine
        .join("m", outbox.clone(), JoinOptions::compat())
        .await
        .unwrap();
    let mut first = Vec::new();
    assert_eq!(outbox.try_recv(&mut first), Some(Received::Messages));
    assert_eq!(
        purly::encode_frame(&first, Mode::Compat),
        r#"[{"header":{"type":"update","version":"0.1"},"content":{"start":true}}]"#
    );
    // Its own update is not echoed to it, and carries no seq to the others' compat peers.
    compat
        .send_text(r#"[{"header":{"type":"update","id":1},"content":{"mine":1}},{"header":{"type":"update","id":2},"content":{"mine":1}}]"#)
        .unwrap();
    assert!(
        outbox.try_recv(&mut Vec::new()).is_none(),
        "no echo and no ack in compat mode"
    );
    let diff = only(recv(&mut stream).await);
    assert_eq!(diff.origin(), Some(compat.id()));
    // Others' diffs reach it without seq, epoch, origin or id.
    stream.update(json!({"theirs": 2})).await.unwrap();
    settle(&mut stream).await;
    let mut batch = Vec::new();
    assert_eq!(outbox.try_recv(&mut batch), Some(Received::Messages));
    assert_eq!(
        batch[0].compat_json(),
        r#"{"header":{"type":"update","version":"0.1"},"content":{"theirs":2}}"#
    );
}

#[tokio::test]
async fn read_only_sessions_are_forbidden_to_write() {
    let engine = Engine::default();
    let mut reader =
        Client::connect_with(&engine, "m", JoinOptions::stream().access(Access::ReadOnly))
            .await
            .unwrap();
    recv(&mut reader).await;
    assert!(
        reader.send_text("[]").await.is_ok(),
        "an empty frame does nothing"
    );
    for frame in [
        r#"[{"header":{"type":"update","id":"u"},"content":{"a":1}}]"#,
        r#"[{"header":{"type":"signal"},"content":{"a":1}}]"#,
    ] {
        let error = reader.send_text(frame).await.unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::Forbidden));
        let message = only(recv(&mut reader).await);
        assert_eq!(message.content().unwrap()["code"], "forbidden");
    }
    // The replica's own update is refused and dropped from its pending list by the error's ids.
    reader.update(json!({"a": 1})).await.unwrap_err();
    recv(&mut reader).await;
    assert_eq!(reader.replica().pending(), 0);
    assert!(reader.state().is_empty());
    assert!(engine.state("m").unwrap().is_empty());
}

#[tokio::test]
async fn resume_replays_missed_diffs_or_falls_back_to_a_snapshot() {
    let mut config = Config::default();
    config.history_len = 150;
    let engine = Engine::new(config);
    let mut writer = Client::connect(&engine, "m").await.unwrap();
    let mut reader = Client::connect(&engine, "m").await.unwrap();
    writer.update(json!({"n": 0})).await.unwrap();
    settle(&mut writer).await;
    recv_until_version(&mut reader, 1).await;
    let epoch = reader.session().epoch().to_owned();
    let kept = reader.into_replica();
    let stale = kept.clone();

    for n in 1..=100 {
        writer
            .update(json!({"n": n, format!("k{n}"): n}))
            .await
            .unwrap();
    }
    settle(&mut writer).await;

    // Replay: exactly the 100 diffs after version 1, no snapshot, and the replica converges.
    let mut resumed = Client::resume(&engine, "m", kept).await.unwrap();
    let replay = recv(&mut resumed).await;
    assert!(replay.iter().all(|m| !m.is_snapshot()));
    // The presence snapshot comes before the missed diffs.
    let (presence, replay) = replay.split_first().expect("a replay");
    assert!(presence.is_presence_snapshot());
    assert_eq!(
        replay.iter().map(|m| m.seq().unwrap()).collect::<Vec<_>>(),
        (2..=101).collect::<Vec<_>>()
    );
    assert_eq!(resumed.state(), &engine.state("m").unwrap());

    // Fallback: a version older than the kept history, a wrong epoch, or a future version.
    let mut too_old = Client::connect(&engine, "m").await.unwrap();
    recv(&mut too_old).await;
    for n in 101..=300 {
        writer.update(json!({"n": n})).await.unwrap();
    }
    settle(&mut writer).await;
    let mut fell_back = Client::resume(&engine, "m", stale).await.unwrap();
    let first = recv(&mut fell_back).await;
    assert!(first[0].is_snapshot(), "history no longer holds version 2");
    assert_eq!(fell_back.state(), &engine.state("m").unwrap());
    let now = version(&engine, "m");
    for (since, epoch) in [(now - 1, "another-epoch"), (now + 10, epoch.as_str())] {
        let options = JoinOptions::stream().resume(since, epoch);
        let mut client = Client::connect_with(&engine, "m", options).await.unwrap();
        let first = recv(&mut client).await;
        assert!(first[0].is_snapshot(), "since={since} epoch={epoch}");
        assert_eq!(client.state(), &engine.state("m").unwrap());
    }
    // Resuming at the current version sends no diff until the next change: who is here only.
    let options = JoinOptions::stream().resume(now, &epoch);
    let mut current = Client::connect_with(&engine, "m", options).await.unwrap();
    let presence = only(current.try_recv().expect("the presence snapshot"));
    assert!(presence.is_presence_snapshot());
    assert!(current.try_recv().is_none());
    drop(too_old);
}
