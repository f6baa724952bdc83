//! Where the work that follows a store's completion runs: the embedder's runtime, through an
//! [`Executor`] it gives the engine. The core starts no thread and no runtime; a store's
//! thread only reports, and the follow-up (the model's next batch, its fan-out, a rebase on
//! another node's commits) is handed over as a [`Task`].

use std::fmt;
use std::sync::OnceLock;

/// A piece of the engine's work to run once, on any thread (see [`Executor`]). It never
/// blocks: it applies a store's answer to a model and delivers what that released. A task
/// dropped unrun (an executor whose runtime shut down) runs where it is dropped, so that no
/// model is left waiting for an answer it was given.
pub struct Task(Option<Box<dyn FnOnce() + Send>>);

impl Task {
    /// Runs the task.
    pub fn run(mut self) {
        if let Some(work) = self.0.take() {
            work();
        }
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if let Some(work) = self.0.take() {
            work();
        }
    }
}

impl fmt::Debug for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Task")
    }
}

/// Runs the engine's [`Task`]s, e.g. on a Tokio runtime:
/// `move |task| { handle.spawn(async move { task.run() }); }`. purly's transports install
/// one of their runtime's when the engine has none
/// ([`Engine::set_executor`](crate::Engine::set_executor)).
pub type Executor = dyn Fn(Task) + Send + Sync;

/// The engine's executor, once set; until then tasks run where they arise.
#[derive(Default)]
pub(crate) struct Driver {
    executor: OnceLock<Box<Executor>>,
}

impl Driver {
    /// Sets the executor unless one is set; returns whether this call set it.
    pub(crate) fn set(&self, executor: Box<Executor>) -> bool {
        self.executor.set(executor).is_ok()
    }

    /// Whether an executor is set.
    pub(crate) fn is_set(&self) -> bool {
        self.executor.get().is_some()
    }

    /// Runs `work` on the executor, or here if there is none.
    pub(crate) fn spawn(&self, work: impl FnOnce() + Send + 'static) {
        match self.executor.get() {
            Some(executor) => executor(Task(Some(Box::new(work)))),
            None => work(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn work_runs_on_the_executor_or_where_an_unrun_task_is_dropped() {
        let ran = Arc::new(AtomicUsize::new(0));
        let inline = Driver::default();
        let count = ran.clone();
        inline.spawn(move || {
            count.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(ran.load(Ordering::SeqCst), 1, "no executor: run here");

        let kept = Arc::new(std::sync::Mutex::new(Vec::new()));
        let queue = Driver::default();
        let held = kept.clone();
        assert!(queue.set(Box::new(move |task| held.lock().unwrap().push(task))));
        let count = ran.clone();
        queue.spawn(move || {
            count.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(
            ran.load(Ordering::SeqCst),
            1,
            "handed to the executor, not run yet"
        );
        let task = kept.lock().unwrap().pop().unwrap();
        drop(task);
        assert_eq!(ran.load(Ordering::SeqCst), 2, "a dropped task still runs");
    }
}
