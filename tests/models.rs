//! Embedder models: validation and rejection, atomic frames, the size and count limits,
//! model removal and engine shutdown.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};

use common::{obj, recv, settle, version};
use purly::serde_json::{json, Map, Value};
use purly::{
    CloseReason, Config, DefaultModel, Engine, ErrorCode, JoinError, JoinOptions, Model, Rejection,
    SendError,
};
use purly_channel::{Client, ClientError};

/// Refuses any update that sets `locked`, and records every committed version.
struct Guarded {
    inner: DefaultModel,
    log: Arc<Mutex<Vec<u64>>>,
}

impl Model for Guarded {
    fn initial_state(&mut self) -> Map<String, Value> {
        self.inner.initial_state()
    }
    fn check(&self, _: &Map<String, Value>, update: &Map<String, Value>) -> Result<(), Rejection> {
        if update.contains_key("locked") {
            return Err(Rejection::new("`locked` is read-only"));
        }
        Ok(())
    }
    fn committed(&mut self, version: u64, _diff_json: &str) {
        self.log.lock().unwrap().push(version);
    }
}

fn guarded_engine(log: Arc<Mutex<Vec<u64>>>) -> Engine {
    Engine::with_model_factory(Config::default(), move |name| {
        if name.as_str().starts_with("private") {
            return Err(Rejection::new("no such model"));
        }
        let state = obj(json!({"locked": "initial"}));
        Ok(Box::new(Guarded {
            inner: DefaultModel::new(state),
            log: log.clone(),
        }))
    })
}

#[tokio::test]
async fn a_rejected_update_rolls_back_its_whole_frame() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let engine = guarded_engine(log.clone());
    let mut client = common::keyless(&engine, "m").await;
    let mut other = Client::connect(&engine, "m").await.unwrap();
    recv(&mut client).await;
    recv(&mut other).await;
    let before = engine.state("m").unwrap();
    let error = client
        .send_text(
            r#"[{"header":{"type":"update","id":"x"},"content":{"a":{"b":1},"locked":null,"c":null}},
                {"header":{"type":"signal"},"content":{"s":1}}]"#,
        )
        .await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::Rejected));
    let error = client
        .send_text(
            r#"[{"header":{"type":"update","id":"y"},"content":{"a":{"b":1},"new":[1]}},
                {"header":{"type":"update","id":"z"},"content":{"locked":"mine"}}]"#,
        )
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::Rejected));
    assert_eq!(
        engine.state("m").unwrap(),
        before,
        "nothing of either frame stays"
    );
    assert_eq!(version(&engine, "m"), 0);
    let errors = recv(&mut client).await;
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[1].content().unwrap()["index"], 1);
    assert_eq!(
        errors[1].content().unwrap()["message"],
        "`locked` is read-only"
    );
    let ids: Vec<&str> = errors[1].ids().iter().map(|id| id.as_json()).collect();
    assert_eq!(ids, [r#""y""#, r#""z""#]);
    assert!(
        other.try_recv().is_none(),
        "the signal of a refused frame is not relayed"
    );

    client.update(json!({"free": 1})).await.unwrap();
    settle(&mut client).await;
    assert_eq!(*log.lock().unwrap(), vec![1]);
    assert_eq!(client.state()["locked"], "initial");
}

#[tokio::test]
async fn the_factory_decides_which_models_exist() {
    let engine = guarded_engine(Arc::default());
    let error = Client::connect(&engine, "private-notes").await.unwrap_err();
    assert_eq!(error, JoinError::Refused("no such model".into()));
    assert!(matches!(
        Client::connect(&engine, "../etc").await,
        Err(JoinError::InvalidName(_))
    ));
    assert_eq!(engine.model_count(), 0);
}

#[tokio::test]
async fn the_number_of_models_is_bounded() {
    let mut config = Config::default();
    config.max_models = 3;
    let engine = Engine::new(config);
    let mut clients = Vec::new();
    for model in ["a", "b", "c"] {
        clients.push(Client::connect(&engine, model).await.unwrap());
    }
    assert_eq!(
        Client::connect(&engine, "d").await.unwrap_err(),
        JoinError::TooManyModels { limit: 3 }
    );
    assert!(
        Client::connect(&engine, "a").await.is_ok(),
        "existing models still join"
    );
    drop(clients);
}

#[tokio::test]
async fn an_update_that_would_make_the_model_too_large_is_not_applied() {
    let mut config = Config::default();
    config.max_model_bytes = 200;
    let engine = Engine::new(config);
    let mut client = Client::connect(&engine, "m").await.unwrap();
    client
        .update(json!({"small": "x".repeat(100)}))
        .await
        .unwrap();
    settle(&mut client).await;
    let before = engine.state("m").unwrap();
    let error = client
        .update(json!({"big": "y".repeat(100)}))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ClientError::Send(SendError::Frame(e)) if e.code == ErrorCode::ModelTooLarge)
    );
    let batch = recv(&mut client).await;
    assert_eq!(batch[0].content().unwrap()["code"], "model_too_large");
    assert_eq!(engine.state("m").unwrap(), before);
    assert_eq!(
        client.replica().pending(),
        0,
        "the refused update left the replica"
    );
    assert_eq!(client.state(), &before);
    // Shrinking first makes room: replacing within one update is measured as a whole.
    client
        .update(json!({"small": null, "big": "y".repeat(100)}))
        .await
        .unwrap();
    settle(&mut client).await;
    assert_eq!(client.state(), &engine.state("m").unwrap());
}

#[tokio::test]
async fn removing_a_model_closes_its_clients_and_starts_a_new_epoch() {
    let engine = Engine::default();
    let mut client = Client::connect(&engine, "m").await.unwrap();
    client.update(json!({"a": 1})).await.unwrap();
    settle(&mut client).await;
    let old_epoch = client.session().epoch().to_owned();
    assert!(engine.remove_model("m").await.unwrap());
    assert!(tokio::time::timeout(common::TIMEOUT, client.recv())
        .await
        .unwrap()
        .is_none());
    assert_eq!(client.close_reason(), Some(CloseReason::ModelRemoved));
    assert_eq!(
        client.update(json!({"b": 1})).await.unwrap_err(),
        ClientError::Send(SendError::Closed)
    );

    let replica = client.into_replica();
    let mut again = Client::resume(&engine, "m", replica).await.unwrap();
    assert_ne!(again.session().epoch(), old_epoch);
    let first = recv(&mut again).await;
    assert!(first[0].is_snapshot(), "a new epoch means a snapshot");
    assert!(again.state().is_empty());
}

#[tokio::test]
async fn shutdown_closes_every_client_and_refuses_more() {
    let engine = Engine::default();
    let mut clients: Vec<Client> = Vec::new();
    for i in 0..5 {
        clients.push(
            Client::connect(&engine, &format!("m{}", i % 2))
                .await
                .unwrap(),
        );
    }
    let session = engine
        .join(
            "m0",
            Arc::new(purly::Outbox::new(1 << 20)),
            JoinOptions::compat(),
        )
        .await
        .unwrap();
    engine.shutdown();
    for client in &mut clients {
        while tokio::time::timeout(common::TIMEOUT, client.recv())
            .await
            .unwrap()
            .is_some()
        {}
        assert_eq!(client.close_reason(), Some(CloseReason::Shutdown));
    }
    assert_eq!(session.send_text("[]"), Err(SendError::Closed));
    assert_eq!(
        Client::connect(&engine, "m0").await.unwrap_err(),
        JoinError::ShutDown
    );
    assert_eq!(
        Client::connect(&engine, "new").await.unwrap_err(),
        JoinError::ShutDown
    );
}

/// Many active models cannot hold more resume history together than the engine's budget;
/// idle models give back what is over their share at the sweep, and the active ones keep
/// their diffs again; a resume behind a dropped diff gets a snapshot, one within the kept
/// history gets the diffs.
#[tokio::test]
async fn the_history_budget_bounds_all_models_together() {
    const BUDGET: usize = 64 << 10;
    let mut config = purly::Config::default();
    config.history_budget_bytes = BUDGET;
    let engine = Engine::new(config);
    // About 160 bytes a diff: each model's share (64 KiB / 200) holds two.
    let padding = "x".repeat(100);
    for model in 0..200 {
        for i in 0..20 {
            let patch = json!({ "i": i, "pad": format!("{i}{padding}") });
            engine
                .update(&format!("m{model}"), patch.as_object().unwrap().clone())
                .await
                .unwrap();
            assert!(
                engine.history_bytes() <= BUDGET,
                "{} bytes of history at model {model}",
                engine.history_bytes()
            );
        }
    }
    // Without a budget the same load would hold 200 × 20 diffs (about 640 KB).
    assert!(engine.history_bytes() > BUDGET / 2, "the budget is used");
    engine.evict_idle();
    assert!(engine.history_bytes() <= BUDGET);

    // What a subscriber resuming `model` after version `since` receives first.
    let resume = |model: &str, since: u64| {
        let outbox = Arc::new(purly::Outbox::new(1 << 20));
        let options = purly::JoinOptions::stream().resume(since, epoch_of(&engine, model));
        let _session = engine.join(model, outbox.clone(), options).wait().unwrap();
        let mut batch = Vec::new();
        outbox.try_recv(&mut batch);
        // Who is here (nobody) comes first on a resume: not what this test is about.
        batch.retain(|m| !m.is_presence_snapshot());
        batch
    };
    // The first model filled the budget early; the sweep took it back to its share.
    let behind = resume("m0", 1);
    assert!(
        behind[0].is_snapshot(),
        "the diffs after 1 were dropped: a snapshot"
    );
    // The last model recorded while the budget was full (it paid for its own diffs); now that
    // the sweep gave the idle models' excess back, what it records is kept again.
    let patch = json!({ "i": 20 });
    engine
        .update("m199", patch.as_object().unwrap().clone())
        .await
        .unwrap();
    let close = resume("m199", 20);
    assert!(!close[0].is_snapshot());
    assert_eq!(close[0].seq(), Some(21));
    assert!(engine.history_bytes() <= BUDGET);
}

/// The epoch of `model`, from a subscriber's first message.
fn epoch_of(engine: &Engine, model: &str) -> String {
    let outbox = Arc::new(purly::Outbox::new(1 << 20));
    let _session = engine
        .join(model, outbox.clone(), purly::JoinOptions::stream())
        .wait()
        .unwrap();
    let mut batch = Vec::new();
    outbox.try_recv(&mut batch);
    batch[0].epoch().unwrap().to_owned()
}
