//! The database's tables, and the schema version recorded in the file.

use rusqlite::Connection;

/// The schema this build writes and reads (`PRAGMA user_version`).
/// Version 2 added the client keys' records (`log.keys`, `client_keys`); a version 1 file gets
/// them on open.
pub(crate) const SCHEMA_VERSION: i64 = 2;

/// The tables. A model row holds its epoch and its latest checkpoint; the log holds one row
/// per committed batch (its diffs as a JSON array, versions `first_version` to
/// `last_version`): those after the checkpoint, and the resume history before it. A model's
/// version is its log's last `last_version` (or its checkpoint's version): a commit writes
/// one log row, with the records of the client keys it decided on (PROTOCOL.md section 9;
/// see `client_keys.rs` for where they go).
pub(crate) const CREATE: &str = "
CREATE TABLE IF NOT EXISTS models (
    name               TEXT    NOT NULL PRIMARY KEY,
    epoch              TEXT    NOT NULL,
    checkpoint_version INTEGER NOT NULL,
    checkpoint         TEXT    NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log (
    model         TEXT    NOT NULL,
    first_version INTEGER NOT NULL,
    last_version  INTEGER NOT NULL,
    diffs         TEXT    NOT NULL,
    keys          TEXT,
    PRIMARY KEY (model, first_version)
) WITHOUT ROWID;
";

/// The client keys' records as of a version (the version 2 table).
const CLIENT_KEYS: &str = "
CREATE TABLE IF NOT EXISTS client_keys (
    model   TEXT    NOT NULL,
    key     TEXT    NOT NULL,
    record  TEXT    NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (model, key)
) WITHOUT ROWID;
";

/// What the file says about its schema.
pub(crate) enum Found {
    /// This build's schema (created now if the file was new).
    Current,
    /// A newer build wrote it.
    Newer(i64),
}

/// Creates the tables in a new file, or checks the version of an existing one.
pub(crate) fn prepare(connection: &Connection) -> rusqlite::Result<Found> {
    let version: i64 = connection.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version > SCHEMA_VERSION {
        return Ok(Found::Newer(version));
    }
    if version < SCHEMA_VERSION {
        match version {
            // Version 1: the log had no `keys` column.
            1 => connection.execute_batch("ALTER TABLE log ADD COLUMN keys TEXT")?,
            _ => connection.execute_batch(CREATE)?,
        }
        connection.execute_batch(CLIENT_KEYS)?;
        connection.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    Ok(Found::Current)
}
