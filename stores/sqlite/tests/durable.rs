//! The SQLite store under the engine: models survive restarts with their state, version and
//! epoch; resumes after a restart get exactly the missed diffs; a failing store shows nobody
//! anything it did not write; idle models leave memory and come back intact.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use purly::serde_json::{json, Map, Value};
use purly::{
    AppendDone, Batch, CheckpointPolicy, CloseReason, Engine, ErrorCode, LoadDone, MessageId,
    ModelName, NewModel, RemoveDone, ServerMessage, ServerMessageKind, Store, StoreError,
};
use purly_channel::Client;
use purly_sqlite::{OpenError, SqliteOptions, SqliteStore};

const TIMEOUT: Duration = Duration::from_secs(20);

fn obj(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap()
}

fn engine_on(store: impl Store) -> Engine {
    Engine::builder().store(store).build()
}

/// An engine on the store in `dir`, and the store's handle (to close it, as a shutdown does).
fn open(dir: &tempfile::TempDir, options: SqliteOptions) -> (Engine, Arc<SqliteStore>) {
    let store = Arc::new(SqliteStore::open(dir.path(), options).unwrap());
    (engine_on(store.clone()), store)
}

/// Stops an engine and its store, as a server's shutdown does.
fn stop(engine: Engine, store: Arc<SqliteStore>) {
    engine.shutdown();
    drop(engine);
    store.close();
}

async fn recv(client: &mut Client) -> Vec<ServerMessage> {
    tokio::time::timeout(TIMEOUT, client.recv())
        .await
        .expect("timed out waiting for a batch")
        .expect("the client closed")
}

async fn settle(client: &mut Client) {
    tokio::time::timeout(TIMEOUT, client.settle())
        .await
        .expect("timed out settling")
        .unwrap();
}

#[tokio::test]
async fn a_restart_keeps_state_version_and_epoch_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (epoch, replica) = {
        let (engine, store) = open(&dir, SqliteOptions::default());
        let mut writer = Client::connect(&engine, "m").await.unwrap();
        let mut reader = Client::connect(&engine, "m").await.unwrap();
        recv(&mut reader).await;
        for i in 0..10 {
            writer
                .update(json!({ "k": i, format!("key{i}"): i }))
                .await
                .unwrap();
        }
        settle(&mut writer).await;
        while reader.replica().version() < Some(10) {
            recv(&mut reader).await;
        }
        // The reader stops at version 10; five more changes follow without it.
        let replica = reader.into_replica();
        for i in 10..15 {
            writer.update(json!({ "k": i })).await.unwrap();
        }
        settle(&mut writer).await;
        let epoch = writer.replica().epoch().unwrap().to_owned();
        stop(engine, store);
        (epoch, replica)
    };
    let engine = engine_on(SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap());
    let mut fresh = Client::connect(&engine, "m").await.unwrap();
    let snapshot = recv(&mut fresh).await;
    assert!(snapshot[0].is_snapshot());
    assert_eq!(snapshot[0].seq(), Some(15));
    assert_eq!(snapshot[0].epoch(), Some(epoch.as_str()));
    assert_eq!(fresh.state()["k"], 14);
    assert_eq!(fresh.state()["key9"], 9);
    let mut resumed = Client::resume(&engine, "m", replica).await.unwrap();
    let missed = recv(&mut resumed).await;
    let seqs: Vec<_> = missed
        .iter()
        .filter(|m| !m.is_presence_snapshot())
        .map(|m| (m.is_snapshot(), m.seq()))
        .collect();
    assert_eq!(
        seqs,
        (11..=15).map(|v| (false, Some(v))).collect::<Vec<_>>()
    );
    assert_eq!(resumed.state(), fresh.state());
}

#[tokio::test]
async fn one_owner_per_directory_and_no_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let first = SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap();
    let second = SqliteStore::open(dir.path(), SqliteOptions::default());
    assert!(
        matches!(second, Err(OpenError::Locked { .. })),
        "{second:?}"
    );
    drop(first);
    {
        let db = rusqlite::Connection::open(dir.path().join(purly_sqlite::DATABASE_FILE)).unwrap();
        db.pragma_update(None, "user_version", 99).unwrap();
    }
    let newer = SqliteStore::open(dir.path(), SqliteOptions::default());
    match newer {
        Err(error @ OpenError::NewerSchema { found: 99, .. }) => {
            assert!(error.to_string().contains("schema version 99"), "{error}")
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
}

#[tokio::test]
async fn checkpoints_trim_the_log_to_the_resume_history() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = SqliteOptions::default();
    options.checkpoint = CheckpointPolicy {
        every_diffs: 10,
        every_bytes: u64::MAX,
    };
    options.keep_history = 5;
    {
        let (engine, store) = open(&dir, options.clone());
        let mut writer = Client::connect(&engine, "m").await.unwrap();
        for i in 0..100 {
            writer
                .update(json!({ "n": i, format!("k{}", i % 7): i }))
                .await
                .unwrap();
            // One frame at a time, so that every batch is a single diff.
            settle(&mut writer).await;
        }
        drop(writer);
        stop(engine, store);
    }
    let db = rusqlite::Connection::open(dir.path().join(purly_sqlite::DATABASE_FILE)).unwrap();
    let (kept, checkpoint): (i64, i64) = db
        .query_row(
            "SELECT (SELECT COALESCE(SUM(last_version - first_version + 1), 0) FROM log), checkpoint_version FROM models",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert!(
        checkpoint >= 90,
        "checkpointed every 10 diffs: {checkpoint}"
    );
    assert!(kept <= 5 + 10, "trimmed to the history: {kept} diffs kept");
    drop(db);
    let engine = engine_on(SqliteStore::open(dir.path(), options).unwrap());
    let mut reader = Client::connect(&engine, "m").await.unwrap();
    recv(&mut reader).await;
    assert_eq!(reader.replica().version(), Some(100));
    assert_eq!(reader.state()["n"], 99);
    for k in 0..7 {
        let last = (0..100).filter(|i| i % 7 == k).max().unwrap();
        assert_eq!(reader.state()[&format!("k{k}")], last);
    }
}

#[tokio::test]
async fn removing_a_model_removes_it_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let epoch = {
        let (engine, store) = open(&dir, SqliteOptions::default());
        engine.update("gone", obj(json!({"a": 1}))).await.unwrap();
        let mut client = Client::connect(&engine, "gone").await.unwrap();
        let epoch = recv(&mut client).await[0].epoch().unwrap().to_owned();
        drop(client);
        assert!(engine.remove_model("gone").await.unwrap());
        stop(engine, store);
        epoch
    };
    let engine = engine_on(SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap());
    let mut client = Client::connect(&engine, "gone").await.unwrap();
    let snapshot = recv(&mut client).await;
    assert_eq!(snapshot[0].seq(), Some(0));
    assert!(client.state().is_empty());
    assert_ne!(
        snapshot[0].epoch(),
        Some(epoch.as_str()),
        "a new incarnation, a new epoch"
    );
}

/// Wraps a store; once `failing` is set, every load and append fails.
struct Failing<S> {
    inner: S,
    failing: Arc<AtomicBool>,
}

impl<S: Store> Store for Failing<S> {
    fn load(&self, model: &ModelName, create: Option<NewModel>, done: LoadDone) {
        match self.failing.load(Ordering::SeqCst) {
            true => done.complete(Err(StoreError::Io("injected: disk unreadable".into()))),
            false => self.inner.load(model, create, done),
        }
    }
    fn append(&self, batch: Batch, done: AppendDone) {
        match self.failing.load(Ordering::SeqCst) {
            true => done.complete(Err(StoreError::Io("injected: disk full".into()))),
            false => self.inner.append(batch, done),
        }
    }
    fn remove(&self, model: &ModelName, done: RemoveDone) {
        self.inner.remove(model, done)
    }
    fn checkpoint_policy(&self) -> CheckpointPolicy {
        self.inner.checkpoint_policy()
    }
}

#[tokio::test]
async fn a_failing_store_shows_nothing_unwritten_and_the_model_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let failing = Arc::new(AtomicBool::new(false));
    let engine = engine_on(Failing {
        inner: SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap(),
        failing: failing.clone(),
    });
    let mut writer = Client::connect(&engine, "m").await.unwrap();
    let mut watcher = Client::connect(&engine, "m").await.unwrap();
    recv(&mut watcher).await;
    writer.update(json!({"kept": 1})).await.unwrap();
    settle(&mut writer).await;
    while watcher.replica().version() < Some(1) {
        recv(&mut watcher).await;
    }

    failing.store(true, Ordering::SeqCst);
    writer.update(json!({"lost": 1})).await.unwrap();
    let mut seen = Vec::new();
    while let Some(batch) = tokio::time::timeout(TIMEOUT, watcher.recv()).await.unwrap() {
        seen.extend(batch);
    }
    assert_eq!(watcher.close_reason(), Some(CloseReason::StoreFailed));
    assert!(
        seen.iter().all(|m| m.kind() == ServerMessageKind::Error),
        "only the error, never the unwritten diff: {seen:?}"
    );
    assert_eq!(
        seen[0].content().unwrap()["code"],
        ErrorCode::Unavailable.as_str()
    );
    assert!(!watcher.state().contains_key("lost"));
    // While the store fails, joining is refused with the store's error.
    assert!(Client::connect(&engine, "m").await.is_err());

    failing.store(false, Ordering::SeqCst);
    let mut again = Client::connect(&engine, "m").await.unwrap();
    let snapshot = recv(&mut again).await;
    assert_eq!(snapshot[0].seq(), Some(1));
    assert_eq!(again.state(), &obj(json!({"kept": 1})));
    again.update(json!({"after": 2})).await.unwrap();
    settle(&mut again).await;
    assert_eq!(engine.durable_version("m"), Some(2));
}

#[tokio::test]
async fn idle_models_leave_memory_and_come_back_intact() {
    const MODELS: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_on(SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap());
    for i in 0..MODELS {
        engine
            .update(
                &format!("m{i}"),
                obj(json!({ "i": i, "pad": "x".repeat(100) })),
            )
            .await
            .unwrap();
    }
    assert_eq!(engine.model_count(), MODELS);
    // Wait (bounded) until every write is durable: only then may a model leave memory.
    let deadline = std::time::Instant::now() + TIMEOUT;
    while (0..MODELS).any(|i| engine.durable_version(&format!("m{i}")) != Some(1)) {
        assert!(
            std::time::Instant::now() < deadline,
            "the store never caught up"
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(engine.evict_idle(), 0, "the first sweep only marks");
    let mut busy = Client::connect(&engine, "m0").await.unwrap();
    recv(&mut busy).await;
    assert_eq!(
        engine.evict_idle(),
        MODELS - 1,
        "a model with a session stays"
    );
    assert_eq!(engine.model_count(), 1);
    drop(busy);
    for i in (0..MODELS).step_by(97) {
        let mut client = Client::connect(&engine, &format!("m{i}")).await.unwrap();
        let snapshot = recv(&mut client).await;
        assert_eq!(snapshot[0].seq(), Some(1));
        assert_eq!(client.state()["i"], i);
    }
    assert_eq!(engine.update("m5", obj(json!({"i": -5}))).await.unwrap(), 2);
}

#[tokio::test]
async fn a_model_joined_but_never_written_keeps_its_epoch_and_first_state() {
    let dir = tempfile::tempdir().unwrap();
    let first_state = obj(json!({"greeting": "hello"}));
    let engine_with_state = |store: Arc<SqliteStore>| {
        let state = first_state.clone();
        Engine::builder()
            .store(store)
            .model_factory(move |_| Ok(Box::new(purly::DefaultModel::new(state.clone()))))
            .build()
    };
    let epoch = {
        let store = Arc::new(SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap());
        let engine = engine_with_state(store.clone());
        let mut client = Client::connect(&engine, "quiet").await.unwrap();
        let snapshot = recv(&mut client).await;
        assert_eq!(snapshot[0].seq(), Some(0));
        drop(client);
        stop(engine, store);
        snapshot[0].epoch().unwrap().to_owned()
    };
    // Another factory now: the stored first state counts, not a new one.
    let (engine, _store) = open(&dir, SqliteOptions::default());
    let mut client = Client::connect(&engine, "quiet").await.unwrap();
    let snapshot = recv(&mut client).await;
    assert_eq!(snapshot[0].seq(), Some(0));
    assert_eq!(
        snapshot[0].epoch(),
        Some(epoch.as_str()),
        "the epoch changes only when the history is lost"
    );
    assert_eq!(client.state(), &first_state);
}

/// A client of model `m` with the client key `key`, its snapshot read.
async fn keyed(engine: &Engine, key: &str) -> Client {
    let options = purly::JoinOptions::stream().client_key(purly::ClientKey::new(key).unwrap());
    let mut client = Client::connect_with(engine, "m", options).await.unwrap();
    recv(&mut client).await;
    client
}

/// A frame of one update with the integer id `id`.
fn update(id: u64, content: Value) -> String {
    json!([{"header": {"type": "update", "id": id}, "content": content}]).to_string()
}

/// Receives until a message answering update `id` (echo, ack, or an error naming it) arrives.
async fn answer_to(client: &mut Client, id: u64) -> ServerMessage {
    loop {
        for message in recv(client).await {
            if message.answers(&MessageId::number(id)) {
                return message;
            }
        }
    }
}

#[tokio::test]
async fn a_client_keys_answers_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let small = |store: Arc<SqliteStore>| {
        let mut config = purly::Config::default();
        config.max_model_bytes = 64;
        Engine::builder().store(store).config(config).build()
    };
    let pad = json!({"pad": "0123456789012345678901234567890123456789"});
    let big = json!({"big": "01234567890123456789012345678901234567890"});
    {
        let store = Arc::new(SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap());
        let engine = small(store.clone());
        let mut client = keyed(&engine, "writer-key-1").await;
        let _ = client.send_text(&update(1, pad.clone())).await;
        assert_eq!(answer_to(&mut client, 1).await.seq(), Some(1));
        let _ = client.send_text(&update(2, big.clone())).await;
        let refused = answer_to(&mut client, 2).await;
        assert_eq!(refused.content().unwrap()["code"], "model_too_large");
        // Room is made: judged anew, update 2 would now be applied.
        let _ = client.send_text(&update(3, json!({"pad": null}))).await;
        assert_eq!(answer_to(&mut client, 3).await.seq(), Some(2));
        drop(client);
        stop(engine, store);
    }
    let store = Arc::new(SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap());
    let engine = small(store);
    let mut client = keyed(&engine, "writer-key-1").await;
    let _ = client.send_text(&update(1, pad)).await;
    let ack = answer_to(&mut client, 1).await;
    assert!(ack.is_duplicate(), "{}", ack.json());
    assert_eq!(ack.seq(), Some(1));
    let _ = client.send_text(&update(2, big)).await;
    let refused = answer_to(&mut client, 2).await;
    assert_eq!(
        refused.kind(),
        ServerMessageKind::Error,
        "{}",
        refused.json()
    );
    assert_eq!(refused.content().unwrap()["code"], "model_too_large");
    assert_eq!(engine.state("m").unwrap(), Map::new());
    assert_eq!(engine.read("m", |_, v| v).unwrap(), 2);
}

#[tokio::test]
async fn client_key_records_survive_checkpoints_that_trim_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = SqliteOptions::default();
    options.checkpoint = CheckpointPolicy {
        every_diffs: 10,
        every_bytes: u64::MAX,
    };
    options.keep_history = 5;
    {
        let (engine, store) = open(&dir, options.clone());
        let mut a = keyed(&engine, "key-aaaa").await;
        let _ = a.send_text(&update(1, json!({"a": 1}))).await;
        assert_eq!(answer_to(&mut a, 1).await.seq(), Some(1));
        let mut b = keyed(&engine, "key-bbbb").await;
        for id in 1..=60 {
            let _ = b.send_text(&update(id, json!({"b": id}))).await;
            assert_eq!(answer_to(&mut b, id).await.seq(), Some(id + 1));
        }
        // Changes nothing: its record is written on its own.
        let mut c = keyed(&engine, "key-cccc").await;
        let _ = c.send_text(&update(9, json!({"a": 1}))).await;
        let ack = answer_to(&mut c, 9).await;
        assert_eq!((ack.kind(), ack.seq()), (ServerMessageKind::Ack, Some(61)));
        drop((a, b, c));
        stop(engine, store);
    }
    let db = rusqlite::Connection::open(dir.path().join(purly_sqlite::DATABASE_FILE)).unwrap();
    let first_kept: i64 = db
        .query_row("SELECT min(first_version) FROM log", [], |row| row.get(0))
        .unwrap();
    assert!(
        first_kept > 1,
        "the log row of key-aaaa's update is trimmed"
    );
    drop(db);
    let (engine, _store) = open(&dir, options);
    for (key, id, seq) in [
        ("key-aaaa", 1, 1),
        ("key-bbbb", 60, 61),
        ("key-bbbb", 5, 6),
        ("key-cccc", 9, 61),
    ] {
        let mut client = keyed(&engine, key).await;
        let _ = client.send_text(&update(id, json!({"late": key}))).await;
        let ack = answer_to(&mut client, id).await;
        assert!(ack.is_duplicate(), "{key} {id}: {}", ack.json());
        assert_eq!(ack.seq(), Some(seq), "{key} {id}");
    }
    assert_eq!(engine.read("m", |_, v| v).unwrap(), 61);
}

#[tokio::test]
async fn a_version_1_file_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = rusqlite::Connection::open(dir.path().join(purly_sqlite::DATABASE_FILE)).unwrap();
        db.execute_batch(
            "CREATE TABLE models (name TEXT NOT NULL PRIMARY KEY, epoch TEXT NOT NULL,
                checkpoint_version INTEGER NOT NULL, checkpoint TEXT NOT NULL) WITHOUT ROWID;
             CREATE TABLE log (model TEXT NOT NULL, first_version INTEGER NOT NULL,
                last_version INTEGER NOT NULL, diffs TEXT NOT NULL,
                PRIMARY KEY (model, first_version)) WITHOUT ROWID;
             INSERT INTO models VALUES ('m', 'old-epoch', 0, '{}');
             INSERT INTO log VALUES ('m', 1, 2, '[{\"a\":1},{\"b\":2}]');
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let (engine, _store) = open(&dir, SqliteOptions::default());
    let options =
        purly::JoinOptions::stream().client_key(purly::ClientKey::new("key-aaaa").unwrap());
    let mut client = Client::connect_with(&engine, "m", options).await.unwrap();
    let snapshot = recv(&mut client).await;
    assert_eq!(snapshot[0].seq(), Some(2));
    assert_eq!(snapshot[0].epoch(), Some("old-epoch"));
    let _ = client
        .send_text(r#"[{"header":{"type":"update","id":1},"content":{"c":3}}]"#)
        .await;
    assert_eq!(answer_to(&mut client, 1).await.seq(), Some(3));
}
