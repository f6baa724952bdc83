//! Lock acquisition that survives poisoning.
//!
//! A panic in an embedder's callback poisons the lock it ran under. The engine carries on
//! rather than turning one panic into a panic on every later call. Still, neither
//! [`Subscriber::deliver`](crate::Subscriber::deliver) nor a [`Model`](crate::Model) callback
//! may panic: messages being fanned out at that moment may be lost, and a model may keep part
//! of the frame it was applying.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) fn read_lock<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) fn write_lock<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
