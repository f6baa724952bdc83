//! Where the client keys' records live in the file (PROTOCOL.md section 9), written in the
//! same transaction as the diffs they cover without costing a commit another page:
//!
//! - a batch with diffs keeps its records in its own log row (column `keys`, the JSON of
//!   [`Batch::keys_json`]);
//! - a batch of records alone (an update that changed nothing, a refusal) writes them to
//!   `client_keys` directly;
//! - a checkpoint folds the log rows since the previous checkpoint into `client_keys`, before
//!   the log is trimmed;
//! - a load reads `client_keys` and folds the log rows after the checkpoint over it.
//!
//! Each record in `client_keys` carries the version it is as of; a record replaces another
//! only if it is newer (records of one version: the direct write of records alone comes after
//! the diff of that version, and wins).

use std::collections::HashMap;

use purly::serde_json::{self, Value};
use purly::{Batch, StoredKey};
use rusqlite::{params, Transaction};

/// Writes a batch's records alone (it has no diff) as of its version.
pub(crate) fn write_alone(tx: &Transaction<'_>, batch: &Batch) -> rusqlite::Result<()> {
    let name = batch.model.as_str();
    let version = batch.base_version as i64;
    for write in &batch.keys {
        match &write.record {
            Some(record) => tx
                .prepare_cached(
                    "INSERT INTO client_keys (model, key, record, version) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (model, key) DO UPDATE
                     SET record = excluded.record, version = excluded.version
                     WHERE excluded.version >= client_keys.version",
                )?
                .execute(params![name, &*write.key, record, version])?,
            None => tx
                .prepare_cached("DELETE FROM client_keys WHERE model = ?1 AND key = ?2")?
                .execute(params![name, &*write.key])?,
        };
    }
    Ok(())
}

/// Folds the records of the log rows after version `since` into `client_keys` (at a
/// checkpoint, before the log is trimmed).
pub(crate) fn fold_log(tx: &Transaction<'_>, model: &str, since: u64) -> rusqlite::Result<()> {
    let rows = tx
        .prepare_cached(
            "SELECT last_version, keys FROM log
             WHERE model = ?1 AND first_version > ?2 AND keys IS NOT NULL ORDER BY first_version",
        )?
        .query_map(params![model, since as i64], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (version, keys) in rows {
        for (key, record) in parse(&keys) {
            match record {
                Some(record) => tx
                    .prepare_cached(
                        "INSERT INTO client_keys (model, key, record, version)
                         VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (model, key) DO UPDATE
                         SET record = excluded.record, version = excluded.version
                         WHERE excluded.version > client_keys.version",
                    )?
                    .execute(params![model, key, record, version])?,
                None => tx
                    .prepare_cached(
                        "DELETE FROM client_keys WHERE model = ?1 AND key = ?2 AND version < ?3",
                    )?
                    .execute(params![model, key, version])?,
            };
        }
    }
    Ok(())
}

/// A model's records: those of `client_keys` (with their versions), and the records of the
/// log rows after the checkpoint (`(last version, keys)`, in order) folded over them.
pub(crate) fn read(
    table: Vec<(String, String, u64)>,
    log_after_checkpoint: impl IntoIterator<Item = (u64, String)>,
) -> Vec<StoredKey> {
    let mut records: HashMap<String, (Option<String>, u64)> = table
        .into_iter()
        .map(|(key, record, version)| (key, (Some(record), version)))
        .collect();
    for (version, keys) in log_after_checkpoint {
        for (key, record) in parse(&keys) {
            let newer = records.get(&key).is_none_or(|(_, at)| version > *at);
            if newer {
                records.insert(key, (record, version));
            }
        }
    }
    records
        .into_iter()
        .filter_map(|(key, (record, _))| {
            Some(StoredKey {
                key,
                record: record?,
            })
        })
        .collect()
}

/// The writes of [`Batch::keys_json`]: `[["key", "record" or null], ...]`. Anything else in
/// the text is skipped (the engine forgets a record it cannot read).
fn parse(keys: &str) -> Vec<(String, Option<String>)> {
    let Ok(Value::Array(writes)) = serde_json::from_str::<Value>(keys) else {
        tracing::warn!("unreadable client key records in the log; skipped");
        return Vec::new();
    };
    writes
        .into_iter()
        .filter_map(|write| {
            let key = write.get(0)?.as_str()?.to_owned();
            let record = write.get(1)?.as_str().map(str::to_owned);
            Some((key, record))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_records_win_and_a_direct_write_beats_its_versions_log_row() {
        let table = vec![
            ("a".to_owned(), "a@5".to_owned(), 5),
            ("b".to_owned(), "b@3-alone".to_owned(), 3),
        ];
        let log = vec![
            (3, r#"[["b","b@3-log"],["c","c@3"]]"#.to_owned()),
            (4, r#"[["a","a@4"]]"#.to_owned()),
            (6, r#"[["a","a@6"],["c",null]]"#.to_owned()),
        ];
        let mut records: Vec<(String, String)> = read(table, log)
            .into_iter()
            .map(|k| (k.key, k.record))
            .collect();
        records.sort();
        assert_eq!(
            records,
            vec![
                ("a".to_owned(), "a@6".to_owned()),
                ("b".to_owned(), "b@3-alone".to_owned())
            ]
        );
    }
}
