//! The writer thread: every append, creation and removal goes through it, in arrival order. It takes
//! whatever has queued up while it was writing and commits it as one transaction (one fsync
//! for many batches of many models: group commit), then reports each outcome. A batch is one
//! row of the log, its diffs joined into a JSON array without re-encoding them.

use std::collections::HashMap;
use std::sync::mpsc::Receiver;

use purly::serde_json;
use purly::{AppendDone, Appended, Batch, LoadDone, ModelName, NewModel, RemoveDone, StoreError};
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::client_keys;
use crate::telemetry::{GROUP_OPS, TRANSACTION_SECONDS};

/// Work for the writer.
pub(crate) enum Op {
    Append(Batch, AppendDone),
    /// Records a model the reader did not find (unless it exists by now), and answers the
    /// load with it.
    Create(ModelName, NewModel, LoadDone),
    Remove(ModelName, RemoveDone),
}

/// How one op of a group ended.
enum Outcome {
    Appended(Result<Appended, StoreError>),
    /// The model was recorded now (`true`), or already was.
    Created(bool),
    Removed,
}

/// Runs until every sender is gone.
/// What the writer knows of each model it wrote: its epoch and version. It is the only writer
/// of the file (the directory lock), so this stays exact; a failed transaction clears it.
type Known = HashMap<ModelName, (String, u64)>;

pub(crate) fn run(
    mut connection: Connection,
    ops: Receiver<Op>,
    keep_history: u64,
    max_group: usize,
) {
    let mut known = Known::new();
    while let Ok(first) = ops.recv() {
        let mut group = vec![first];
        while group.len() < max_group {
            match ops.try_recv() {
                Ok(op) => group.push(op),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let outcomes = write_group(&mut connection, &group, keep_history, &mut known);
        metrics::histogram!(TRANSACTION_SECONDS).record(started.elapsed().as_secs_f64());
        metrics::histogram!(GROUP_OPS).record(group.len() as f64);
        if outcomes.is_err() {
            // Rolled back: what the transaction noted may not have happened.
            known.clear();
        }
        let (mut outcomes, failed) = match outcomes {
            Ok(outcomes) => (outcomes.into_iter(), None),
            Err(error) => (Vec::new().into_iter(), Some(error.to_string())),
        };
        for op in group {
            let outcome = match (outcomes.next(), &failed) {
                (Some(outcome), _) => Ok(outcome),
                (None, Some(error)) => Err(StoreError::Io(error.clone())),
                (None, None) => Err(StoreError::Closed),
            };
            match (op, outcome) {
                (Op::Append(_, done), Ok(Outcome::Appended(appended))) => done.complete(appended),
                (Op::Create(_, new, done), Ok(Outcome::Created(true))) => {
                    done.complete(Ok(Some(new.into_stored())))
                }
                // Recorded by an earlier op: read it as stored.
                (Op::Create(model, _, done), Ok(_)) => {
                    done.complete(crate::read_model(&mut connection, &model))
                }
                (Op::Remove(_, done), Ok(_)) => done.complete(Ok(())),
                (Op::Append(_, done), Ok(_) | Err(_)) => done.complete(Err(StoreError::Closed)),
                (Op::Create(.., done), Err(error)) => done.complete(Err(error)),
                (Op::Remove(_, done), Err(error)) => done.complete(Err(error)),
            }
        }
    }
}

/// One transaction for the whole group; per op, its outcome (conflicts and corrupt rows do not
/// abort the others). An error of the transaction itself fails every op.
fn write_group(
    connection: &mut Connection,
    group: &[Op],
    keep_history: u64,
    known: &mut Known,
) -> rusqlite::Result<Vec<Outcome>> {
    let tx = connection.transaction()?;
    let mut outcomes = Vec::with_capacity(group.len());
    for op in group {
        let outcome = match op {
            Op::Append(batch, _) => Outcome::Appended(append(&tx, batch, keep_history, known)?),
            Op::Create(model, new, _) => Outcome::Created(create(&tx, model, new, known)?),
            Op::Remove(model, _) => {
                tx.execute("DELETE FROM log WHERE model = ?1", [model.as_str()])?;
                tx.execute("DELETE FROM client_keys WHERE model = ?1", [model.as_str()])?;
                tx.execute("DELETE FROM models WHERE name = ?1", [model.as_str()])?;
                known.remove(model);
                Outcome::Removed
            }
        };
        outcomes.push(outcome);
    }
    tx.commit()?;
    Ok(outcomes)
}

/// Records a new model at version 0 with its first state as the checkpoint, unless the file
/// has it; returns whether it was recorded now.
fn create(
    tx: &Transaction<'_>,
    model: &ModelName,
    new: &NewModel,
    known: &mut Known,
) -> rusqlite::Result<bool> {
    let state = serde_json::to_string(&new.state)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    let inserted = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO models (name, epoch, checkpoint_version, checkpoint)
             VALUES (?1, ?2, 0, ?3)",
        )?
        .execute(params![model.as_str(), &*new.epoch, state])?;
    if inserted == 1 {
        known.insert(model.clone(), (new.epoch.to_string(), 0));
    }
    Ok(inserted == 1)
}

fn append(
    tx: &Transaction<'_>,
    batch: &Batch,
    keep_history: u64,
    known: &mut Known,
) -> rusqlite::Result<Result<Appended, StoreError>> {
    let name = batch.model.as_str();
    let row = match known.get(&batch.model) {
        Some(row) => Some(row.clone()),
        None => tx
            .prepare_cached(
                "SELECT epoch, max(checkpoint_version,
                        coalesce((SELECT max(last_version) FROM log WHERE model = ?1), 0))
                 FROM models WHERE name = ?1",
            )?
            .query_row([name], |row| {
                Ok((row.get(0)?, row.get::<_, i64>(1)? as u64))
            })
            .optional()?,
    };
    let last = batch.last_version();
    match row {
        None if batch.base_version != 0 => {
            return Ok(Err(StoreError::Corrupt(format!(
                "model {name} is not in the store, yet its batch follows version {}",
                batch.base_version
            ))))
        }
        None => {
            tx.prepare_cached(
                "INSERT INTO models (name, epoch, checkpoint_version, checkpoint)
                 VALUES (?1, ?2, 0, '{}')",
            )?
            .execute(params![name, &*batch.epoch])?;
        }
        Some((epoch, version)) => {
            if epoch != *batch.epoch || version != batch.base_version {
                // Only one writer owns the file, so this means the engine's view is stale:
                // it reloads the model.
                return Ok(Ok(Appended::Conflict {
                    version,
                    epoch,
                    missed: Vec::new(),
                }));
            }
        }
    }
    if !batch.diffs.is_empty() {
        let diffs = batch.diffs_json();
        // The client keys' records ride in the batch's own row: no other page to write.
        let keys = (!batch.keys.is_empty()).then(|| batch.keys_json());
        tx.prepare_cached(
            "INSERT INTO log (model, first_version, last_version, diffs, keys)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            name,
            (batch.base_version + 1) as i64,
            last as i64,
            diffs,
            keys
        ])?;
    }
    if batch.diffs.is_empty() && !batch.keys.is_empty() {
        client_keys::write_alone(tx, batch)?;
    }
    if let Some(checkpoint) = &batch.checkpoint {
        let state = match serde_json::to_string(&*checkpoint.state) {
            Ok(state) => state,
            Err(error) => return Ok(Err(StoreError::Corrupt(error.to_string()))),
        };
        let previous: i64 = tx
            .prepare_cached("SELECT checkpoint_version FROM models WHERE name = ?1")?
            .query_row([name], |row| row.get(0))?;
        client_keys::fold_log(tx, name, previous as u64)?;
        tx.prepare_cached(
            "UPDATE models SET checkpoint_version = ?2, checkpoint = ?3 WHERE name = ?1",
        )?
        .execute(params![name, checkpoint.version as i64, state])?;
        let keep_from = checkpoint.version.saturating_sub(keep_history);
        tx.prepare_cached("DELETE FROM log WHERE model = ?1 AND last_version <= ?2")?
            .execute(params![name, keep_from as i64])?;
    }
    known.insert(batch.model.clone(), (batch.epoch.to_string(), last));
    Ok(Ok(Appended::Committed))
}
