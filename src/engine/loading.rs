//! A model being loaded from the store: the first request for it starts the load, every later
//! one waits for the same load, and the first to see it finished builds the live model while
//! the others wait for that. Waiting is a future (a stored [`Waker`]): no thread waits.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use super::live::LiveModel;
use crate::error::{JoinError, StoreError};
use crate::lock::lock;
use crate::model::Model;
use crate::store::StoredModel;

/// What the store answered.
pub(crate) type Loaded = Result<Option<StoredModel>, StoreError>;

/// What the load came to: the live model, `None` (nothing stored and nothing created), or why
/// not.
pub(crate) type Installed = Result<Option<Arc<LiveModel>>, JoinError>;

/// One load in progress.
pub(crate) struct Loading {
    /// Whether the load creates the model if the store holds nothing.
    pub(crate) create: bool,
    state: Mutex<Phase>,
}

enum Phase {
    /// The store is reading (or recording).
    Reading(Vec<Waker>),
    /// The store answered; nobody has taken the answer yet.
    Answered(Loaded, Box<dyn Model>),
    /// One waiter is building the live model.
    Building(Vec<Waker>),
    /// Done: every waiter takes this.
    Done(Installed),
}

/// A waiter's turn.
pub(crate) enum Turn {
    /// Build the live model from the store's answer (this waiter is the first to see it).
    Build(Loaded, Box<dyn Model>),
    /// Someone else built it.
    Done(Installed),
}

impl Loading {
    pub(crate) fn new(create: bool) -> Self {
        Loading {
            create,
            state: Mutex::new(Phase::Reading(Vec::new())),
        }
    }

    /// The store's answer (from the store's thread: only recorded, and the waiters woken).
    pub(crate) fn answered(&self, loaded: Loaded, model: Box<dyn Model>) {
        let waiters =
            match std::mem::replace(&mut *lock(&self.state), Phase::Answered(loaded, model)) {
                Phase::Reading(waiters) | Phase::Building(waiters) => waiters,
                _ => Vec::new(),
            };
        waiters.into_iter().for_each(Waker::wake);
    }

    /// The live model is built (or could not be): every waiter gets it.
    pub(crate) fn done(&self, installed: Installed) {
        let waiters = match std::mem::replace(&mut *lock(&self.state), Phase::Done(installed)) {
            Phase::Reading(waiters) | Phase::Building(waiters) => waiters,
            _ => Vec::new(),
        };
        waiters.into_iter().for_each(Waker::wake);
    }

    /// The waiter's turn, once the store answered.
    pub(crate) fn poll_turn(&self, cx: &mut Context<'_>) -> Poll<Turn> {
        let mut phase = lock(&self.state);
        match &mut *phase {
            Phase::Reading(waiters) | Phase::Building(waiters) => {
                if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                    waiters.push(cx.waker().clone());
                }
                Poll::Pending
            }
            Phase::Done(installed) => Poll::Ready(Turn::Done(installed.clone())),
            Phase::Answered(..) => {
                match std::mem::replace(&mut *phase, Phase::Building(Vec::new())) {
                    Phase::Answered(loaded, model) => Poll::Ready(Turn::Build(loaded, model)),
                    _ => Poll::Pending,
                }
            }
        }
    }

    /// Whether a newcomer should start a load of its own instead of joining this one: it ended
    /// in an error, or it is over.
    pub(crate) fn is_stale(&self) -> bool {
        matches!(
            &*lock(&self.state),
            Phase::Answered(Err(_), _) | Phase::Done(_)
        )
    }
}
