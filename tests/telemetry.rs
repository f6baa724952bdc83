//! The engine's metrics, read back from a recorder: every name the README lists moves when
//! what it counts happens, and the gauges come back down.
#![allow(clippy::unwrap_used)]

mod common;

use common::{recv, settle};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use purly::telemetry::*;
use purly::Engine;
use purly_channel::Client;

/// The value of the series `name{labels}` in the Prometheus text, 0 if absent.
fn value(metrics: &PrometheusHandle, name: &str, labels: &str) -> f64 {
    let series = match labels {
        "" => name.to_owned(),
        labels => format!("{name}{{{labels}}}"),
    };
    metrics
        .render()
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            (key == series).then(|| value.parse().unwrap())
        })
        .unwrap_or(0.0)
}

#[tokio::test]
async fn the_engine_counts_what_happens_to_it() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let m = recorder.handle();
    // The engine registers its handles when built: with this recorder.
    let engine = metrics::with_local_recorder(&recorder, Engine::default);
    let mut writer = common::keyless(&engine, "m").await;
    let mut reader = Client::connect(&engine, "m").await.unwrap();
    recv(&mut writer).await;
    recv(&mut reader).await;
    assert_eq!(value(&m, MODELS_IN_MEMORY, ""), 1.0);
    assert_eq!(value(&m, SESSIONS, r#"mode="stream""#), 2.0);

    writer
        .session()
        .send_text(r#"[{"header":{"type":"update"},"content":{"a":1}},{"header":{"type":"signal"},"content":{"s":1}}]"#)
        .unwrap();
    assert!(writer.session().send_text("not json").is_err());
    assert!(writer
        .session()
        .send_text(r#"[{"header":{"type":"nope"},"content":{}}]"#)
        .is_err());
    settle(&mut writer).await;
    recv(&mut reader).await;

    assert_eq!(value(&m, FRAMES_RECEIVED, ""), 3.0);
    assert_eq!(value(&m, MESSAGES_RECEIVED, r#"type="update""#), 1.0);
    assert_eq!(value(&m, MESSAGES_RECEIVED, r#"type="signal""#), 1.0);
    assert_eq!(value(&m, REFUSALS, r#"code="invalid_json""#), 1.0);
    assert_eq!(value(&m, REFUSALS, r#"code="unknown_type""#), 1.0);
    assert_eq!(value(&m, REFUSALS, r#"code="rejected""#), 0.0);
    // Every queued command was handed to the subscribers.
    assert_eq!(value(&m, FANOUT_BACKLOG, ""), 0.0);
    // How long they waited is sampled, one command in 16: 64 more updates give samples.
    for i in 0..64 {
        writer
            .update(purly::serde_json::json!({ "n": i }))
            .await
            .unwrap();
    }
    settle(&mut writer).await;
    let waited = format!("{PUBLISH_TO_ENQUEUE}_count");
    assert!(value(&m, &waited, "") >= 4.0, "{}", m.render());
    assert_eq!(value(&m, FANOUT_BACKLOG, ""), 0.0);
    let text = m.render();
    reader.session().resync().unwrap();
    assert_eq!(value(&m, RESYNCS, ""), 1.0);
    drop(reader);
    assert_eq!(value(&m, SESSIONS, r#"mode="stream""#), 1.0);
    assert!(engine.remove_model("m").await.unwrap());
    assert_eq!(value(&m, MODELS_IN_MEMORY, ""), 0.0);
    // Labels never name a model or a client: one series per label value, whatever the load.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        if let Some((_, labels)) = line.split_once('{') {
            for label in labels.split('}').next().unwrap().split(',') {
                let key = label.split('=').next().unwrap();
                assert!(
                    ["mode", "type", "code", "quantile"].contains(&key),
                    "{line}"
                );
            }
        }
    }
}
