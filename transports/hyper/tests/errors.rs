//! Every error code of PROTOCOL.md section 5 on the wire: the model is unchanged afterwards
//! and the connection stays open, except an oversized frame, which closes it with 1009, and a
//! WebSocket protocol violation, which closes it with 1002 (1007 for text that is not UTF-8).
#![allow(clippy::unwrap_used)]

mod common;

use common::{close_code, next_frame, send, stream_client, Server};
use futures_util::SinkExt;
use purly::serde_json::{json, Map, Value};
use purly::{Config, Model, Rejection};
use purly_hyper::{Decision, Purly};
use tokio_tungstenite::tungstenite::Message;

/// Refuses updates that touch `locked`.
struct Guarded;

impl Model for Guarded {
    fn check(&self, _: &Map<String, Value>, update: &Map<String, Value>) -> Result<(), Rejection> {
        match update.contains_key("locked") {
            true => Err(Rejection::new("locked is read-only")),
            false => Ok(()),
        }
    }
}

async fn server() -> Server {
    let mut config = Config::default();
    config.limits.max_depth = 10;
    config.limits.max_messages = 5;
    config.limits.max_frame_bytes = 64 << 10;
    config.max_model_bytes = 4 << 10;
    let engine = common::builder(config)
        .model_factory(|_| Ok(Box::new(Guarded)))
        .build();
    let purly = Purly::builder(engine)
        .authorize(|info| match info.model.as_str() {
            "readonly" => Decision::ReadOnly,
            _ => Decision::ReadWrite,
        })
        .build();
    Server::start(purly).await
}

fn msg(kind: &str, content: &str) -> String {
    format!(r#"{{"header":{{"type":"{kind}"}},"content":{content}}}"#)
}

#[tokio::test]
async fn every_error_code_on_the_wire() {
    let server = server().await;
    let mut client = stream_client(&server, "m").await;
    next_frame(&mut client).await;
    send(
        &mut client,
        &format!("[{}]", msg("update", r#"{"keep":1}"#)),
    )
    .await;
    next_frame(&mut client).await;
    let good = msg("update", r#"{"x":1}"#);
    let cases: Vec<(&str, String, Option<u64>)> = vec![
        ("invalid_json", "{oops".into(), None),
        ("not_an_array", good.clone(), None),
        (
            "invalid_message",
            format!(r#"[{good},{{"header":{{"type":"update"}}}}]"#),
            Some(1),
        ),
        (
            "unknown_type",
            format!("[{good},{}]", msg("patch", "{}")),
            Some(1),
        ),
        (
            "unsupported_version",
            format!(r#"[{good},{{"header":{{"type":"update","version":"2"}},"content":{{}}}}]"#),
            Some(1),
        ),
        (
            "too_deep",
            format!("[{good},{}]", msg("update", r#"{"a":[[[[[[[[1]]]]]]]]}"#)),
            Some(1),
        ),
        (
            "too_many_messages",
            format!("[{}]", vec![good.clone(); 6].join(",")),
            None,
        ),
        (
            "model_too_large",
            format!(
                "[{good},{}]",
                msg("update", &format!(r#"{{"big":"{}"}}"#, "x".repeat(5000)))
            ),
            Some(1),
        ),
        (
            "rejected",
            format!("[{good},{}]", msg("update", r#"{"locked":true}"#)),
            Some(1),
        ),
    ];
    for (code, frame, index) in cases {
        send(&mut client, &frame).await;
        let answer = next_frame(&mut client).await;
        assert_eq!(answer.len(), 1, "{code}: one error");
        assert_eq!(answer[0]["header"]["type"], "error", "{code}");
        assert_eq!(answer[0]["content"]["code"], code);
        assert_eq!(
            answer[0]["content"]["index"].as_u64(),
            index,
            "{code}: index"
        );
        assert!(answer[0]["content"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        let (_, state) = common::get(&server, "/m/state", &[]).await;
        assert_eq!(state, r#"{"keep":1}"#, "{code}: the model changed");
    }
    client.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    let answer = next_frame(&mut client).await;
    assert_eq!(answer[0]["content"]["code"], "binary_not_supported");

    // Still open: a valid update goes through.
    send(&mut client, &format!("[{good}]")).await;
    let echo = next_frame(&mut client).await;
    assert_eq!(echo[0]["content"], json!({"x": 1}));
}

#[tokio::test]
async fn read_only_sessions_get_forbidden() {
    let server = server().await;
    let mut client = stream_client(&server, "readonly").await;
    next_frame(&mut client).await;
    for kind in ["update", "signal"] {
        send(&mut client, &format!("[{}]", msg(kind, r#"{"a":1}"#))).await;
        let answer = next_frame(&mut client).await;
        assert_eq!(answer[0]["content"]["code"], "forbidden", "{kind}");
    }
    let (_, state) = common::get(&server, "/readonly/state", &[]).await;
    assert_eq!(state, "{}");
}

#[tokio::test]
async fn an_oversized_frame_closes_with_1009() {
    let server = server().await;
    let mut client = stream_client(&server, "m").await;
    next_frame(&mut client).await;
    let huge = format!(
        "[{}]",
        msg("update", &format!(r#"{{"a":"{}"}}"#, "x".repeat(70 << 10)))
    );
    // The server may close before it has read the whole frame, so the write may fail.
    let _ = client.send(Message::text(huge)).await;
    assert_eq!(close_code(&mut client).await, Some(1009));
    let (_, state) = common::get(&server, "/m/state", &[]).await;
    assert_eq!(state, "{}");
}

#[tokio::test]
async fn a_protocol_violation_closes_with_1002_and_text_not_utf8_with_1007() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    let server = server().await;
    let text = |payload: &[u8]| Frame::message(payload.to_vec(), OpCode::Data(Data::Text), true);
    let mut reserved_bit = text(b"[]");
    reserved_bit.header_mut().rsv1 = true;
    let cases = [
        (reserved_bit, 1002),
        (text(&[b'[', 0xFF, b']']), 1007),
        (
            Frame::message(b"[]".to_vec(), OpCode::Data(Data::Continue), true),
            1002,
        ),
    ];
    for (frame, code) in cases {
        let mut client = stream_client(&server, "m").await;
        next_frame(&mut client).await;
        client.send(Message::Frame(frame)).await.unwrap();
        assert_eq!(close_code(&mut client).await, Some(code));
    }
    // Those clients are gone; a new one is served as before.
    let mut client = stream_client(&server, "m").await;
    next_frame(&mut client).await;
    send(&mut client, &format!("[{}]", msg("update", r#"{"a":1}"#))).await;
    assert_eq!(next_frame(&mut client).await[0]["content"]["a"], 1);
}
