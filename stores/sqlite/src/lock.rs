//! One owner per data directory: an exclusive lock on `purly.lock`, held while the store is
//! open and released by the operating system when the process ends (even by `kill -9`).

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

use crate::OpenError;

/// The lock file's name inside the data directory.
pub(crate) const LOCK_FILE: &str = "purly.lock";

/// Held for as long as the store is open.
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    pub(crate) fn acquire(dir: &Path) -> Result<Self, OpenError> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| OpenError::Directory {
                path: dir.to_owned(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(OpenError::Locked {
                path: dir.to_owned(),
            }),
            Err(TryLockError::Error(source)) => Err(OpenError::Directory {
                path: dir.to_owned(),
                source,
            }),
        }
    }
}
