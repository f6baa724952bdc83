//! The open event-stream sessions, by token: how a POST finds the session it sends to. An
//! entry lives exactly as long as its stream (bounded by the connection cap).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Waker;

use futures_util::task::AtomicWaker;
use purly::{ModelName, Session};

use crate::config::ServerConfig;
use crate::rate_limit::{FrameLimiter, Verdict};

/// One open session.
pub(crate) struct Entry {
    pub(crate) model: ModelName,
    pub(crate) session: Session,
    /// The session's rate limit (its POSTs may come over several connections).
    pub(crate) limiter: Mutex<Option<FrameLimiter>>,
    /// Ended from outside its stream (the rate limit's close): the stream finishes.
    ended: AtomicBool,
    stream: AtomicWaker,
}

impl Entry {
    pub(crate) fn new(model: ModelName, session: Session, limiter: Option<FrameLimiter>) -> Self {
        Entry {
            model,
            session,
            limiter: Mutex::new(limiter),
            ended: AtomicBool::new(false),
            stream: AtomicWaker::new(),
        }
    }

    /// What the session's rate limit says of a frame of `len` bytes arriving now.
    pub(crate) fn rate_verdict(&self, config: &ServerConfig, len: usize) -> Verdict {
        let mut limiter = self.limiter.lock().unwrap_or_else(PoisonError::into_inner);
        match (limiter.as_mut(), &config.rate_limit) {
            (Some(limiter), Some(limit)) => limiter.check(limit, len, std::time::Instant::now()),
            _ => Verdict::Admit,
        }
    }
}

/// The registry.
#[derive(Default)]
pub(crate) struct Sessions {
    open: Mutex<HashMap<Arc<str>, Arc<Entry>>>,
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<Entry>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `entry` under a new random token (prefixed with this node's name, `node.`,
    /// when there are several nodes); the registration takes it out when dropped.
    pub(crate) fn register(
        self: &Arc<Self>,
        entry: Arc<Entry>,
        node: Option<&str>,
    ) -> Registration {
        let random = purly::random_hex(32);
        let token: Arc<str> = match node {
            Some(node) => format!("{node}.{random}").into(),
            None => random.into(),
        };
        self.lock().insert(token.clone(), entry.clone());
        Registration {
            sessions: self.clone(),
            token,
            entry,
        }
    }

    /// The session with `token`, if its stream is open.
    pub(crate) fn get(&self, token: &str) -> Option<Arc<Entry>> {
        self.lock().get(token).cloned()
    }

    /// Ends a session from outside its stream: later POSTs get 404, and its stream finishes.
    pub(crate) fn end(&self, entry: &Arc<Entry>) {
        self.lock().retain(|_, e| !Arc::ptr_eq(e, entry));
        entry.ended.store(true, Ordering::Release);
        entry.stream.wake();
    }

    /// How many sessions are open.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The node a session token names, if it names one (`node.random`).
pub(crate) fn node_of(token: &str) -> Option<&str> {
    token.split_once('.').map(|(node, _)| node)
}

/// A session's place in the registry, held by its stream.
pub(crate) struct Registration {
    sessions: Arc<Sessions>,
    token: Arc<str>,
    entry: Arc<Entry>,
}

impl Registration {
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// Whether the session was ended from outside; `waker` is woken when it is.
    pub(crate) fn is_ended(&self, waker: &Waker) -> bool {
        self.entry.stream.register(waker);
        self.entry.ended.load(Ordering::Acquire)
    }

    /// Takes the session out of the registry now (its stream is finishing).
    pub(crate) fn end(&self) {
        self.sessions.lock().remove(&self.token);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.end();
    }
}
