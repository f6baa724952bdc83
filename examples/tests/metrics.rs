//! The `server` example's `/metrics`: Prometheus text that moves with what happens, and names
//! that are not models.
#![allow(clippy::unwrap_used)]

mod common;

use common::{get, next_frame, send, stream_client, ServerProcess};

/// The value of the series `series` (name and labels, as rendered), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            (key == series).then(|| value.parse().unwrap())
        })
}

#[tokio::test]
async fn metrics_are_served_beside_the_models() {
    let server = ServerProcess::start(&["--memory"]).await;
    let mut client = stream_client(server.addr, "/m/stream").await;
    next_frame(&mut client).await.unwrap();
    let frame = r#"[{"header":{"type":"update","id":1},"content":{"a":1}}]"#;
    assert!(send(&mut client, frame.to_owned()).await);
    next_frame(&mut client).await.unwrap();
    assert!(send(&mut client, "not json".to_owned()).await);
    next_frame(&mut client).await.unwrap();

    let (status, text) = get(server.addr, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        value(&text, r#"purly_connections{mode="stream"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(value(&text, "purly_models_in_memory"), Some(1.0), "{text}");
    assert_eq!(
        value(&text, "purly_frames_received_total"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(&text, r#"purly_messages_received_total{type="update"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(&text, r#"purly_refusals_total{code="invalid_json"}"#),
        Some(1.0)
    );
    // Snapshot, echo, error.
    assert_eq!(value(&text, "purly_frames_sent_total"), Some(3.0), "{text}");
    assert!(
        text.contains("# TYPE purly_publish_to_enqueue_seconds summary"),
        "{text}"
    );

    // `metrics` is not a model, and neither are the client's files.
    // (a model's stream route answers a plain GET with 426; these are not models: 404)
    assert_eq!(get(server.addr, "/m/stream").await.0, 426);
    assert_eq!(get(server.addr, "/metrics/stream").await.0, 404);
    assert_eq!(get(server.addr, "/purly-client.js/stream").await.0, 404);
    let (status, script) = get(server.addr, "/purly-client.js").await;
    assert_eq!(status, 200);
    assert!(script.contains("export function connect"));
    let (status, _) = get(server.addr, "/m/state").await;
    assert_eq!(status, 200);
}
