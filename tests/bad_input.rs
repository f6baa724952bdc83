//! Malformed frames: each gets its error code, the model is unchanged, and the client goes on.
#![allow(clippy::unwrap_used)]

mod common;

use common::{recv, settle, version};
use purly::serde_json::json;
use purly::{Config, Engine, ErrorCode, Limits, SendError, ServerMessageKind};
use purly_channel::Client;

fn engine() -> Engine {
    let mut config = Config::default();
    config.limits.max_depth = 8;
    config.limits.max_messages = 3;
    config.limits.max_frame_bytes = 4096;
    Engine::new(config)
}

#[tokio::test]
async fn every_malformed_frame_is_refused_with_its_code() {
    let update = r#"{"header":{"type":"update"},"content":{"applied":true}}"#;
    let cases: Vec<(&str, String, ErrorCode, Option<usize>)> = vec![
        ("not JSON", "{not json".into(), ErrorCode::InvalidJson, None),
        (
            "truncated",
            format!("[{update}"),
            ErrorCode::InvalidJson,
            None,
        ),
        (
            "raw control character",
            "[\"\u{0}\"]".into(),
            ErrorCode::InvalidJson,
            None,
        ),
        ("not an array", update.into(), ErrorCode::NotAnArray, None),
        ("a number", "42".into(), ErrorCode::NotAnArray, None),
        (
            "missing header",
            format!(r#"[{update},{{"content":{{}}}}]"#),
            ErrorCode::InvalidMessage,
            Some(1),
        ),
        (
            "header not an object",
            r#"[{"header":"update","content":{}}]"#.into(),
            ErrorCode::InvalidMessage,
            Some(0),
        ),
        (
            "missing content",
            r#"[{"header":{"type":"update"}}]"#.into(),
            ErrorCode::InvalidMessage,
            Some(0),
        ),
        (
            "content not an object",
            format!(r#"[{update},{{"header":{{"type":"update"}},"content":[1]}}]"#),
            ErrorCode::InvalidMessage,
            Some(1),
        ),
        (
            "type missing",
            r#"[{"header":{},"content":{}}]"#.into(),
            ErrorCode::InvalidMessage,
            Some(0),
        ),
        (
            "message not an object",
            r#"["update"]"#.into(),
            ErrorCode::InvalidMessage,
            Some(0),
        ),
        (
            "unknown type",
            format!(r#"[{update},{{"header":{{"type":"delete"}},"content":{{}}}}]"#),
            ErrorCode::UnknownType,
            Some(1),
        ),
        (
            "server-only type",
            r#"[{"header":{"type":"error"},"content":{}}]"#.into(),
            ErrorCode::UnknownType,
            Some(0),
        ),
        (
            "bad version",
            format!(r#"[{update},{{"header":{{"type":"update","version":"9"}},"content":{{}}}}]"#),
            ErrorCode::UnsupportedVersion,
            Some(1),
        ),
        (
            "version not a string",
            r#"[{"header":{"type":"update","version":0.1},"content":{}}]"#.into(),
            ErrorCode::UnsupportedVersion,
            Some(0),
        ),
        (
            "too deep",
            format!(
                r#"[{update},{{"header":{{"type":"update"}},"content":{{"a":[[[[[[1]]]]]]}}}}]"#
            ),
            ErrorCode::TooDeep,
            Some(1),
        ),
        ("deep bomb", "[".repeat(2000), ErrorCode::TooDeep, Some(0)),
        (
            "too many messages",
            format!("[{update},{update},{update},{update}]"),
            ErrorCode::TooManyMessages,
            None,
        ),
        (
            "too large",
            format!(
                r#"[{{"header":{{"type":"update"}},"content":{{"a":"{}"}}}}]"#,
                "x".repeat(5000)
            ),
            ErrorCode::FrameTooLarge,
            None,
        ),
        (
            "number out of range",
            r#"[{"header":{"type":"update"},"content":{"n":1e999}}]"#.into(),
            ErrorCode::InvalidMessage,
            Some(0),
        ),
    ];

    let engine = engine();
    let mut sender = common::keyless(&engine, "m").await;
    let mut other = Client::connect(&engine, "m").await.unwrap();
    sender.update(json!({"before": 1})).await.unwrap();
    settle(&mut sender).await;
    common::recv_until_version(&mut other, 1).await;
    let state = engine.state("m").unwrap();

    for (name, frame, code, index) in cases {
        let error = sender.send_text(&frame).await.unwrap_err();
        assert_eq!(error.code(), Some(code), "{name}: returned error");
        assert_eq!(engine.state("m").unwrap(), state, "{name}: model changed");
        assert_eq!(version(&engine, "m"), 1, "{name}: version moved");
        let batch = recv(&mut sender).await;
        assert_eq!(batch.len(), 1, "{name}: one error per frame");
        let message = &batch[0];
        assert_eq!(message.kind(), ServerMessageKind::Error, "{name}");
        assert_eq!(message.content().unwrap()["code"], code.as_str(), "{name}");
        assert!(
            message.content().unwrap()["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{name}"
        );
        assert_eq!(
            message
                .content()
                .unwrap()
                .get("index")
                .and_then(|i| i.as_u64()),
            index.map(|i| i as u64),
            "{name}: index"
        );
        assert!(
            other.try_recv().is_none(),
            "{name}: another client heard of it"
        );
    }

    let error = sender
        .session()
        .send_bytes(&[b'[', 0xff, b']'])
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::InvalidJson), "not UTF-8");
    assert_eq!(
        recv(&mut sender).await[0].content().unwrap()["code"],
        "invalid_json"
    );

    // The connection is alive: a valid update still applies and reaches the other client.
    sender.update(json!({"after": 2})).await.unwrap();
    settle(&mut sender).await;
    common::recv_until_version(&mut other, 2).await;
    assert_eq!(other.state()["after"], 2);
    assert_eq!(other.state()["before"], 1);
}

#[tokio::test]
async fn binary_frames_are_refused_by_the_transport_through_the_session() {
    let engine = Engine::default();
    let mut client = Client::connect(&engine, "m").await.unwrap();
    recv(&mut client).await;
    let error = client.session().refuse(purly::FrameError::new(
        ErrorCode::BinaryNotSupported,
        "purly frames are text",
    ));
    assert!(matches!(error, SendError::Frame(e) if e.code == ErrorCode::BinaryNotSupported));
    let batch = recv(&mut client).await;
    assert_eq!(batch[0].content().unwrap()["code"], "binary_not_supported");
}

#[tokio::test]
async fn a_frame_too_deep_or_too_long_still_names_its_ids() {
    let engine = engine();
    let client = Client::connect(&engine, "m").await.unwrap();
    let mut client = client;
    recv(&mut client).await;
    let nested = format!("{}1{}", "{\"a\":".repeat(70), "}".repeat(70));
    let too_deep = format!(
        r#"[{{"header":{{"type":"update","id":"deep1"}},"content":{nested}}},{{"header":{{"type":"update","id":7}},"content":{{}}}}]"#
    );
    let too_many = r#"[{"header":{"type":"update","id":"m1"},"content":{}},
        {"header":{"type":"signal","id":"m2"},"content":{}},
        {"header":{"type":"update"},"content":{}},
        {"header":{"type":"update","id":"m4"},"content":{}}]"#;
    for (frame, code, ids) in [
        (too_deep.as_str(), "too_deep", json!(["deep1", 7])),
        (too_many, "too_many_messages", json!(["m1", "m2", "m4"])),
    ] {
        assert!(client.send_text(frame).await.is_err());
        let batch = recv(&mut client).await;
        assert_eq!(batch[0].kind(), ServerMessageKind::Error);
        assert_eq!(batch[0].content().unwrap()["code"], code);
        let named: Vec<_> = batch[0]
            .ids()
            .iter()
            .map(|id| {
                purly::serde_json::from_str::<purly::serde_json::Value>(id.as_json()).unwrap()
            })
            .collect();
        assert_eq!(purly::serde_json::Value::Array(named), ids, "{code}");
    }
    assert_eq!(version(&engine, "m"), 0, "nothing applied");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 2_000, ..Default::default() })]

    /// Any bytes, over the whole byte range and up to four times the frame limit: parsing never
    /// panics, refuses with a code, and what it accepts survives a round trip.
    #[test]
    fn parse_frame_never_panics_on_arbitrary_bytes(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..16_384),
    ) {
        check_bytes(&bytes);
    }

    /// Bytes drawn from JSON's own alphabet, so that most inputs get deep into the parser.
    #[test]
    fn parse_frame_never_panics_on_json_like_bytes(
        bytes in proptest::collection::vec(
            proptest::sample::select(br#"[]{}",:\0123456789.eE-+ truefalsnul"headrcontypsigvi"#.to_vec()),
            0..8_192,
        ),
    ) {
        check_bytes(&bytes);
    }
}

fn check_bytes(bytes: &[u8]) {
    let mut limits = Limits::default();
    limits.max_frame_bytes = 4096;
    match purly::parse_frame(bytes, &limits) {
        Ok(frame) => {
            assert!(bytes.len() <= limits.max_frame_bytes);
            let again = purly::parse_frame(frame.to_json().as_bytes(), &Limits::default()).unwrap();
            assert_eq!(again, frame);
        }
        Err(error) => assert!(!error.code.as_str().is_empty()),
    }
}

#[test]
fn unreadable_content_is_an_error_never_an_empty_object() {
    use purly::{parse_server_frame, ErrorCode};
    // serde_json reads no number beyond f64's range: a client must not take `{}` for it.
    let frame = r#"[{"header":{"type":"update","seq":1},"content":{"n":1e999}}]"#;
    assert_eq!(
        parse_server_frame(frame).unwrap_err().code,
        ErrorCode::InvalidMessage
    );
    // A signal is relayed as it came; reading its content in process reports the same.
    let engine = purly::Engine::default();
    let outbox = std::sync::Arc::new(purly::Outbox::new(1 << 20));
    let _watcher = engine
        .join("m", outbox.clone(), purly::JoinOptions::stream())
        .wait()
        .unwrap();
    let sender = engine
        .join(
            "m",
            std::sync::Arc::new(purly::Outbox::new(1 << 20)),
            purly::JoinOptions::stream(),
        )
        .wait()
        .unwrap();
    sender
        .send_text(r#"[{"header":{"type":"signal"},"content":{"n":1e999}}]"#)
        .unwrap();
    let mut batch = Vec::new();
    outbox.try_recv(&mut batch);
    let signal = batch.last().unwrap();
    assert_eq!(signal.content_json(), r#"{"n":1e999}"#);
    assert_eq!(
        signal.content().unwrap_err().code,
        ErrorCode::InvalidMessage
    );
}
