//! Server code changes models without a socket: `Engine::update` and `Engine::modify`, in the
//! model's total order, fanned out like a client's update with `origin` 0.
#![allow(clippy::unwrap_used)]

mod common;

use common::{obj, recv, recv_until_version};
use purly::serde_json::json;
use purly::{Engine, ErrorCode, Rejection, SendError, WriteError, SERVER_ORIGIN};
use purly_channel::Client;

#[tokio::test]
async fn update_merges_and_fans_out_with_the_server_origin() {
    let engine = Engine::default();
    let mut client = Client::connect(&engine, "m").await.unwrap();
    recv(&mut client).await;
    assert_eq!(
        engine
            .update("m", obj(json!({"a": {"b": 1}})))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        engine
            .update("m", obj(json!({"a": {"b": 1}})))
            .await
            .unwrap(),
        1,
        "no-op"
    );
    let batch = recv(&mut client).await;
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].origin(), Some(SERVER_ORIGIN));
    assert_eq!(batch[0].seq(), Some(1));
    assert_eq!(client.state()["a"]["b"], 1);
    // A model that does not exist yet is created.
    assert_eq!(
        engine.update("fresh", obj(json!({"x": 1}))).await.unwrap(),
        1
    );
    assert_eq!(engine.state("fresh").unwrap()["x"], 1);
}

#[tokio::test]
async fn server_writes_meet_the_models_policy() {
    struct NoLocked;
    impl purly::Model for NoLocked {
        fn check(
            &self,
            _: &purly::serde_json::Map<String, purly::serde_json::Value>,
            update: &purly::serde_json::Map<String, purly::serde_json::Value>,
        ) -> Result<(), Rejection> {
            match update.contains_key("locked") {
                true => Err(Rejection::new("locked")),
                false => Ok(()),
            }
        }
    }
    let engine = Engine::with_model_factory(Default::default(), |_| Ok(Box::new(NoLocked)));
    let error = engine
        .update("m", obj(json!({"locked": 1})))
        .await
        .unwrap_err();
    let WriteError::Send(SendError::Frame(error)) = error else {
        panic!("expected a refused frame, got {error:?}");
    };
    assert_eq!(error.code, ErrorCode::Rejected);
    assert!(matches!(
        engine.update("bad name", obj(json!({}))).await,
        Err(WriteError::Join(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn modify_is_atomic_under_contention() {
    const TASKS: u64 = 8;
    const EACH: u64 = 1_000;
    let engine = Engine::default();
    engine
        .update("counter", obj(json!({"n": 0})))
        .await
        .unwrap();
    let mut watchers = Vec::new();
    for _ in 0..3 {
        let mut client = Client::connect(&engine, "counter").await.unwrap();
        recv(&mut client).await;
        watchers.push(client);
    }
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let engine = engine.clone();
            tokio::spawn(async move {
                for _ in 0..EACH {
                    engine
                        .modify("counter", |state| {
                            let n = state["n"].as_u64().unwrap_or(0);
                            Some(obj(json!({ "n": n + 1 })))
                        })
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        tokio::time::timeout(common::TIMEOUT, task)
            .await
            .expect("the writers finish in time")
            .unwrap();
    }
    let total = TASKS * EACH;
    assert_eq!(engine.state("counter").unwrap()["n"], total);
    for mut watcher in watchers {
        // Every version, in order, each adding exactly one.
        let mut seen = Vec::new();
        while watcher.replica().version() < Some(total + 1) {
            for message in recv(&mut watcher).await {
                seen.push((message.seq(), message.content().unwrap()["n"].clone()));
            }
        }
        let expected: Vec<_> = (2..=total + 1).map(|v| (Some(v), json!(v - 1))).collect();
        assert_eq!(seen, expected);
        recv_until_version(&mut watcher, total + 1).await;
        assert_eq!(watcher.state()["n"], total);
    }
}

#[tokio::test]
async fn modify_can_decline_to_change_anything() {
    let engine = Engine::default();
    engine.update("m", obj(json!({"a": 1}))).await.unwrap();
    assert_eq!(engine.modify("m", |_| None).await.unwrap(), 1);
    assert_eq!(engine.read("m", |_, version| version), Some(1));
}
