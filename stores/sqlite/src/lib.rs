//! # purly-sqlite: durable purly models in one SQLite file
//!
//! [`SqliteStore`] keeps every model of an [`Engine`](purly::Engine) in one SQLite database,
//! so that a restart, a deploy or a `kill -9` loses nothing any client was shown: the engine
//! shows a change (a diff, an echo, an ack, a snapshot or state read that contains it) only
//! once this store has committed it, and after a restart every model comes back with the same
//! state, version and epoch, so clients resume with `?since=N&epoch=E` and get exactly the
//! diffs they missed.
//!
//! ```
//! use purly::{Engine, JoinOptions, Outbox};
//! use purly_sqlite::{SqliteOptions, SqliteStore};
//! use purly::serde_json::json;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let store = SqliteStore::open(dir.path(), SqliteOptions::default())?;
//! let engine = Engine::builder().store(store).build();
//! let patch = json!({"greeting": "hello"}).as_object().cloned().unwrap_or_default();
//! // `wait()` blocks this thread until the change is durable; async code `.await`s instead.
//! engine.update("model", patch).wait()?;
//! # Ok(())
//! # }
//! ```
//!
//! ## How it writes
//! - WAL mode, one writer thread. Batches that arrive while it writes are committed together
//!   in one transaction: one commit (and, with [`Durability::Os`], one fsync) serves many
//!   frames of many models. The engine keeps at most one batch in flight per model and
//!   applies the model's next frames meanwhile, so durable throughput stays close to memory's.
//! - Loads (a model's first join after a start or an eviction) read on a thread and a
//!   connection of their own and never wait for the writer. A model that is not in the file
//!   is recorded by the writer (its epoch and first state, version 0) before the first join
//!   of it is answered, so that a model joined but never written keeps its epoch across
//!   restarts. No call from the engine waits for either thread: each reports back.
//! - Every [`SqliteOptions::checkpoint`] diffs (or bytes), the batch carries the model's whole
//!   state: it is written as the model's checkpoint and the log is trimmed to the resume
//!   history ([`SqliteOptions::keep_history`] diffs before the checkpoint).
//!
//! ## Durability
//! | setting | SQLite | a committed change survives |
//! | --- | --- | --- |
//! | [`Durability::Process`] (default) | WAL, `synchronous=NORMAL` | the process crashing or killed |
//! | [`Durability::Os`] | WAL, `synchronous=FULL` | also an OS crash or a power loss |
//!
//! ## The file
//! One directory holds `purly.sqlite3` (with its `-wal` and `-shm` files) and `purly.lock`.
//! A second store opened on the same directory, in this process or another, fails with
//! [`OpenError::Locked`]: one owner orders the models. The schema version is the file's
//! `PRAGMA user_version`; a file from a newer purly is refused ([`OpenError::NewerSchema`]).
//! Inspect it with the `sqlite3` tool (read-only while a server runs is safe):
//!
//! ```text
//! models(name TEXT PRIMARY KEY, epoch TEXT,
//!        checkpoint_version INTEGER, checkpoint TEXT)   -- checkpoint: the state as JSON
//! log(model TEXT, first_version INTEGER, last_version INTEGER,
//!     diffs TEXT, PRIMARY KEY (model, first_version))  -- one row per batch: a JSON array
//!
//! sqlite3 -readonly purly-data/purly.sqlite3 'SELECT model, max(last_version) FROM log GROUP BY model'
//! sqlite3 -readonly purly-data/purly.sqlite3 "SELECT l.first_version + j.key AS version,
//!     j.value AS diff FROM log l, json_each(l.diffs) j WHERE l.model = 'model'"
//! ```
//!
//! Back it up while it runs with SQLite's online backup, e.g.
//! `sqlite3 purly-data/purly.sqlite3 ".backup backup.sqlite3"`: the copy is a consistent
//! snapshot of every committed change.
//!
//! ## What this crate does not do
//! - Share a database between processes: that is what a shared store (Redis) is for.
//! - Compress or encrypt: the checkpoints and diffs are JSON text.

mod client_keys;
mod lock;
mod options;
mod schema;
pub mod telemetry;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::sync::Mutex;
use std::thread::JoinHandle;

use purly::serde_json::{self, Map, Value};
use purly::{
    AppendDone, Batch, CheckpointPolicy, LoadDone, ModelName, NewModel, RemoveDone, Store,
    StoreError, StoredDiff, StoredModel,
};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use thiserror::Error;

pub use options::{Durability, SqliteOptions};
pub use rusqlite;

use lock::DirLock;
use schema::{Found, SCHEMA_VERSION};
use writer::Op;

/// The database file's name inside the data directory.
pub const DATABASE_FILE: &str = "purly.sqlite3";

/// Why a [`SqliteStore`] could not be opened.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The data directory could not be created or read.
    #[error("cannot use the data directory {path}: {source}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// Another store (another purly server) has the directory.
    #[error("another purly server is using {path} (it holds the lock {path}/purly.lock)")]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// SQLite could not open or prepare the database.
    #[error("cannot open the database {path}: {source}")]
    Database {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The file was written by a newer purly.
    #[error("{path} has schema version {found}; this purly reads up to version {SCHEMA_VERSION}")]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// The schema version in the file.
        found: i64,
    },
}

/// Models kept in one SQLite file (see the crate docs).
pub struct SqliteStore {
    path: PathBuf,
    ops: Mutex<Option<Sender<Op>>>,
    loads: Mutex<Option<Sender<Load>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    reader: Mutex<Option<JoinHandle<()>>>,
    checkpoint: CheckpointPolicy,
    lock: Mutex<Option<DirLock>>,
}

impl SqliteStore {
    /// Opens (creating it if needed) the store in directory `dir`, and starts its writer thread.
    pub fn open(dir: &Path, options: SqliteOptions) -> Result<Self, OpenError> {
        std::fs::create_dir_all(dir).map_err(|source| OpenError::Directory {
            path: dir.to_owned(),
            source,
        })?;
        let lock = DirLock::acquire(dir)?;
        let path = dir.join(DATABASE_FILE);
        let database = |source| OpenError::Database {
            path: path.clone(),
            source,
        };
        let writer = Connection::open(&path).map_err(database)?;
        writer
            .pragma_update(None, "journal_mode", "WAL")
            .and_then(|()| writer.pragma_update(None, "synchronous", options.durability.pragma()))
            .map_err(database)?;
        match schema::prepare(&writer).map_err(database)? {
            Found::Current => {}
            Found::Newer(found) => return Err(OpenError::NewerSchema { path, found }),
        }
        let reader = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(database)?;
        let (ops, receiver) = mpsc::channel();
        let (keep, group) = (options.keep_history, options.max_group.max(1));
        let spawn_error = |source| OpenError::Directory {
            path: dir.to_owned(),
            source,
        };
        let thread = std::thread::Builder::new()
            .name("purly-sqlite-writer".to_owned())
            .spawn(move || writer::run(writer, receiver, keep, group))
            .map_err(spawn_error)?;
        let (loads, load_receiver) = mpsc::channel();
        let creates = ops.clone();
        let reader_thread = std::thread::Builder::new()
            .name("purly-sqlite-reader".to_owned())
            .spawn(move || serve_loads(reader, load_receiver, creates))
            .map_err(spawn_error)?;
        tracing::debug!(path = %path.display(), durability = ?options.durability, "sqlite store open");
        Ok(SqliteStore {
            path,
            ops: Mutex::new(Some(ops)),
            loads: Mutex::new(Some(loads)),
            writer: Mutex::new(Some(thread)),
            reader: Mutex::new(Some(reader_thread)),
            checkpoint: options.checkpoint,
            lock: Mutex::new(Some(lock)),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops the writer after everything queued is written, waits for it, and releases the
    /// directory's lock (another store may open it then). Later appends fail with
    /// [`StoreError::Closed`]. Dropping the store does the same.
    pub fn close(&self) {
        // The reader first: a load it is serving may still hand a creation to the writer.
        drop(self.loads.lock().unwrap_or_else(|p| p.into_inner()).take());
        join(&self.reader, "reader");
        drop(self.ops.lock().unwrap_or_else(|p| p.into_inner()).take());
        join(&self.writer, "writer");
        drop(self.lock.lock().unwrap_or_else(|p| p.into_inner()).take());
    }

    fn send(&self, op: Op) -> Result<(), Op> {
        let ops = self.ops.lock().unwrap_or_else(|p| p.into_inner());
        match ops.as_ref() {
            Some(sender) => sender.send(op).map_err(|e| e.0),
            None => Err(op),
        }
    }
}

/// Waits for a store thread to end, unless it is this thread: the engine's last handle may be
/// dropped by a store thread itself, at the end of a completion; it then ends on its own once
/// its queue is empty.
fn join(thread: &Mutex<Option<JoinHandle<()>>>, name: &str) {
    let thread = thread.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(thread) = thread {
        if thread.thread().id() != std::thread::current().id() && thread.join().is_err() {
            tracing::error!("the sqlite {name} thread panicked");
        }
    }
}

/// A load for the reader thread: the model, what to record if it is missing, and where to
/// report.
type Load = (ModelName, Option<NewModel>, LoadDone);

/// The reader thread: answers loads from its own connection; a model that is missing and
/// asked to be created goes to the writer, which records it and answers.
fn serve_loads(mut reader: Connection, loads: mpsc::Receiver<Load>, writer: Sender<Op>) {
    while let Ok((model, create, done)) = loads.recv() {
        match read_model(&mut reader, &model) {
            Ok(None) => match create {
                Some(new) => {
                    if let Err(Op::Create(_, _, done)) =
                        writer.send(Op::Create(model, new, done)).map_err(|e| e.0)
                    {
                        done.complete(Err(StoreError::Closed));
                    }
                }
                None => done.complete(Ok(None)),
            },
            found => done.complete(found),
        }
    }
}

/// A model as stored, read in one transaction.
pub(crate) fn read_model(
    connection: &mut Connection,
    model: &ModelName,
) -> Result<Option<StoredModel>, StoreError> {
    let Some(rows) = read_rows(connection, model).map_err(|e| StoreError::Io(e.to_string()))?
    else {
        return Ok(None);
    };
    let checkpoint: Map<String, Value> = serde_json::from_str(&rows.checkpoint).map_err(|e| {
        StoreError::Corrupt(format!(
            "the checkpoint of {model} is not a JSON object: {e}"
        ))
    })?;
    Ok(Some(StoredModel {
        epoch: rows.epoch,
        checkpoint_version: rows.checkpoint_version,
        checkpoint,
        keys: client_keys::read(
            rows.keys,
            rows.log
                .iter()
                .filter(|row| row.first > rows.checkpoint_version)
                .filter_map(|row| Some((row.last, row.keys.clone()?))),
        ),
        diffs: split_log(model, rows.log)?,
        // One node: presence is never stored.
        presences: Vec::new(),
    }))
}

fn read_rows(
    connection: &mut Connection,
    model: &ModelName,
) -> rusqlite::Result<Option<StoredRows>> {
    // One read transaction: the model row and its diffs as of one commit.
    let tx = connection.transaction()?;
    let row: Option<(String, i64, String)> = tx
        .prepare_cached("SELECT epoch, checkpoint_version, checkpoint FROM models WHERE name = ?1")?
        .query_row([model.as_str()], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .optional()?;
    let Some((epoch, checkpoint_version, checkpoint)) = row else {
        return Ok(None);
    };
    let rows = tx
        .prepare_cached(
            "SELECT first_version, last_version, diffs, keys FROM log WHERE model = ?1
             ORDER BY first_version",
        )?
        .query_map([model.as_str()], |row| {
            Ok(LogRow {
                first: row.get::<_, i64>(0)? as u64,
                last: row.get::<_, i64>(1)? as u64,
                diffs: row.get(2)?,
                keys: row.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let keys = tx
        .prepare_cached("SELECT key, record, version FROM client_keys WHERE model = ?1")?
        .query_map([model.as_str()], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get::<_, i64>(2)? as u64))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    tx.finish()?;
    Ok(Some(StoredRows {
        epoch,
        checkpoint_version: checkpoint_version as u64,
        checkpoint,
        log: rows,
        keys,
    }))
}

/// A model's rows, as read in one transaction (still JSON text).
struct StoredRows {
    epoch: String,
    checkpoint_version: u64,
    checkpoint: String,
    /// The log's rows, in order.
    log: Vec<LogRow>,
    /// The model's client key records in `client_keys`, with the version each is as of.
    keys: Vec<(String, String, u64)>,
}

/// One committed batch: its first and last versions, its diffs as a JSON array, and the client
/// key records it wrote.
struct LogRow {
    first: u64,
    last: u64,
    diffs: String,
    keys: Option<String>,
}

/// Splits the log's batches into one diff per version.
fn split_log(model: &ModelName, log: Vec<LogRow>) -> Result<Vec<StoredDiff>, StoreError> {
    let mut diffs = Vec::new();
    for LogRow {
        first,
        diffs: batch,
        ..
    } in log
    {
        let parsed: Vec<&serde_json::value::RawValue> = serde_json::from_str(&batch)
            .map_err(|e| StoreError::Corrupt(format!("a log row of {model} is unreadable: {e}")))?;
        for (offset, diff) in parsed.into_iter().enumerate() {
            diffs.push(StoredDiff::new(first + offset as u64, diff.get()));
        }
    }
    Ok(diffs)
}

impl Store for SqliteStore {
    fn load(&self, model: &ModelName, create: Option<NewModel>, done: LoadDone) {
        let loads = self.loads.lock().unwrap_or_else(|p| p.into_inner());
        let sent = match loads.as_ref() {
            Some(loads) => loads
                .send((model.clone(), create, done))
                .map_err(|e| e.0 .2),
            None => Err(done),
        };
        drop(loads);
        if let Err(done) = sent {
            done.complete(Err(StoreError::Closed));
        }
    }

    fn append(&self, batch: Batch, done: AppendDone) {
        if let Err(Op::Append(_, done)) = self.send(Op::Append(batch, done)) {
            done.complete(Err(StoreError::Closed));
        }
    }

    fn remove(&self, model: &ModelName, done: RemoveDone) {
        if let Err(Op::Remove(_, done)) = self.send(Op::Remove(model.clone(), done)) {
            done.complete(Err(StoreError::Closed));
        }
    }

    fn checkpoint_policy(&self) -> CheckpointPolicy {
        self.checkpoint
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}
