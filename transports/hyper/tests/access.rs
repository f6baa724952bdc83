//! Authorization and the routes' HTTP answers (PROTOCOL.md sections 1 and 7).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};

use common::{get, next_frame, raw, raw_with, send, stream_client, update_with_id, Server};
use purly::Config;
use purly_hyper::{Decision, Purly, RouteKind};

const UPGRADE: &[(&str, &str)] = &[
    ("upgrade", "websocket"),
    ("connection", "Upgrade"),
    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("sec-websocket-version", "13"),
];

fn upgrade_with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    UPGRADE.iter().chain(extra).copied().collect()
}

#[tokio::test]
async fn cross_site_origins_are_refused_unless_allowed() {
    let server = Server::start(
        Purly::builder(common::engine())
            .allow_origin("https://app.example")
            .build(),
    )
    .await;
    let url = server.url("/m/stream");
    let same_site = format!("http://{}", server.addr);
    assert!(raw(&url, Some("purly.stream"), Some(&same_site))
        .await
        .is_ok());
    assert!(raw(&url, Some("purly.stream"), Some("https://app.example"))
        .await
        .is_ok());
    assert!(
        raw(&url, Some("purly.stream"), None).await.is_ok(),
        "non-browser clients send no Origin"
    );
    let (status, body) = get(
        &server,
        "/m/stream",
        &upgrade_with(&[("origin", "https://evil.example")]),
    )
    .await;
    assert_eq!(status, 403);
    assert!(body.contains("cross-site"));
    let (status, _) = get(&server, "/m/stream", &upgrade_with(&[("origin", "null")])).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn the_hook_sees_the_request_and_its_decisions_are_enforced() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let purly = Purly::builder(common::engine())
        .authorize(move |info| {
            log.lock()
                .unwrap()
                .push((info.route, info.model.to_string(), info.peer.is_some()));
            match info
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
            {
                Some("Bearer writer") => Decision::ReadWrite,
                Some("Bearer reader") => Decision::ReadOnly,
                _ => Decision::Deny,
            }
        })
        .build();
    let server = Server::start(purly).await;
    let (status, _) = get(&server, "/m/stream", UPGRADE).await;
    assert_eq!(status, 403, "denied: nothing opened");
    let (status, _) = get(&server, "/m/state", &[]).await;
    assert_eq!(status, 403, "the state route is behind the same hook");
    assert_eq!(
        server.purly.engine().model_count(),
        0,
        "a denied request creates no model"
    );

    let mut reader = raw_with(
        &server.url("/m/stream"),
        &[("authorization", "Bearer reader")],
    )
    .await
    .unwrap();
    next_frame(&mut reader).await;
    let (status, body) = get(&server, "/m/state", &[("authorization", "Bearer reader")]).await;
    assert_eq!((status, body.as_str()), (200, "{}"));

    // The read-only session's update is refused and changes nothing; the writer's is applied,
    // and the read-only session sees it (both in stream mode, where errors name their ids).
    let url = server.url("/m/stream");
    let stream_as = |token: &'static str| {
        [
            ("authorization", token),
            ("sec-websocket-protocol", "purly.stream"),
        ]
    };
    let mut read_only = raw_with(&url, &stream_as("Bearer reader")).await.unwrap();
    let mut writer = raw_with(&url, &stream_as("Bearer writer")).await.unwrap();
    next_frame(&mut read_only).await;
    next_frame(&mut writer).await;
    send(&mut read_only, &update_with_id("r1", r#"{"by":"reader"}"#)).await;
    let refused = next_frame(&mut read_only).await;
    assert_eq!(refused[0]["content"]["code"], "forbidden", "{refused:?}");
    assert_eq!(refused[0]["header"]["ids"][0], "r1", "{refused:?}");
    send(&mut writer, &update_with_id("w1", r#"{"by":"writer"}"#)).await;
    let echo = next_frame(&mut writer).await;
    assert_eq!(echo[0]["header"]["id"], "w1", "{echo:?}");
    assert_eq!(
        next_frame(&mut read_only).await[0]["content"]["by"],
        "writer"
    );
    let (_, body) = get(&server, "/m/state", &[("authorization", "Bearer writer")]).await;
    assert_eq!(body, r#"{"by":"writer"}"#);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0], (RouteKind::Stream, "m".to_owned(), true));
    assert_eq!(seen[1], (RouteKind::State, "m".to_owned(), true));
}

#[tokio::test]
async fn bad_requests_get_clean_http_answers() {
    let mut config = Config::default();
    config.max_models = 1;
    let server = Server::start(Purly::new(common::engine_with(config))).await;
    let mut first = stream_client(&server, "one").await;
    next_frame(&mut first).await;
    type Headers<'a> = &'a [(&'a str, &'a str)];
    let cases: &[(&str, Headers<'_>, u16)] = &[
        ("/two/stream", UPGRADE, 503),        // over the model limit
        ("/bad%20name/stream", UPGRADE, 400), // not a model name
        ("/../stream", UPGRADE, 400),
        ("/one/stream", &[], 426), // a stream needs an upgrade
        // A WebSocket handshake without its key (400), or without the one protocol version
        // or with another (426, naming version 13).
        ("/one/stream", &UPGRADE[..3], 426),
        ("/one/stream", &[UPGRADE[0], UPGRADE[1], UPGRADE[3]], 400),
        (
            "/one/stream",
            &[
                UPGRADE[0],
                UPGRADE[1],
                UPGRADE[2],
                ("sec-websocket-version", "8"),
            ],
            426,
        ),
        ("/missing/state", &[], 404), // state of a model that does not exist
        ("/", &[], 404),              // not a purly route
        ("/a/b/c", &[], 404),
    ];
    for (path, headers, expected) in cases {
        let (status, body) = get(&server, path, headers).await;
        assert_eq!(status, *expected, "{path}: {body}");
        assert!(body.starts_with(r#"{"error":"#), "{path}: {body}");
    }
    assert_eq!(server.purly.engine().model_count(), 1);
}

#[tokio::test]
async fn the_handshake_answers_with_the_accept_key_of_rfc_6455() {
    let server = Server::start(Purly::new(common::engine())).await;
    let mut socket = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut request = format!("GET /m/stream HTTP/1.1\r\nhost: {}\r\n", server.addr);
    for (name, value) in UPGRADE {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut socket, request.as_bytes())
        .await
        .unwrap();
    // The response head, then the first frame (the snapshot); read until the head is whole.
    let mut received = Vec::new();
    while !received.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut chunk = [0u8; 1024];
        let n = common::within(tokio::io::AsyncReadExt::read(&mut socket, &mut chunk))
            .await
            .unwrap();
        assert!(n > 0, "closed before the response head");
        received.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&received).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    // RFC 6455 section 1.3's example key and its accept value.
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
}
