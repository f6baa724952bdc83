//! [`Pinger`]: one task that tells every WebSocket connection of a service when to ping, instead
//! of a timer per connection.
//!
//! A connection registers its [`Outbox`]; every `ping_interval` each registered outbox is
//! notified once ([`Outbox::notify`]) and its connection, woken through the waker it already
//! left in the outbox, sends a ping (or gives up on a peer that left earlier pings unanswered).
//! An idle connection then carries no timer of its own, and a busy one polls none on each
//! wake-up. The interval is cut into [`SLICES`] ticks that each notify a share of the
//! connections, so that 100,000 connections do not all ping in the same instant.

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use purly::Outbox;
use slab::Slab;
use tokio::task::JoinHandle;
use tokio::time::{interval, MissedTickBehavior};

/// The ticks per ping interval; a connection is notified at one of them.
const SLICES: usize = 16;

/// The connections of one service that get pings. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Pinger {
    shared: Arc<Shared>,
}

struct Shared {
    every: Duration,
    registry: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    /// The registered outboxes, weak: a connection's registration never keeps it alive.
    outboxes: Slab<Weak<Outbox>>,
    /// The ticking task, started by a registration (inside the runtime) when none runs: the
    /// first one, or the first after the runtime that ran it shut down.
    task: Option<JoinHandle<()>>,
}

/// A connection's place in the [`Pinger`], until [`Pinger::unregister`]. A key, not a handle
/// to the pinger: the connection already holds the pinger (in its service's shared state),
/// and every connection holds one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Registration(u32);

impl Pinger {
    /// A pinger that notifies each connection once every `every`.
    pub(crate) fn new(every: Duration) -> Self {
        Pinger {
            shared: Arc::new(Shared {
                every,
                registry: Mutex::new(Registry::default()),
            }),
        }
    }

    /// Registers a connection's outbox until it is unregistered. A registration starts the
    /// ticking task if none runs, so this must run inside a Tokio runtime.
    pub(crate) fn register(&self, outbox: &Arc<Outbox>) -> Registration {
        let mut registry = self.shared.lock();
        if registry.task.as_ref().is_none_or(JoinHandle::is_finished) {
            registry.task = Some(tokio::spawn(tick(Arc::downgrade(&self.shared))));
        }
        let key = registry.outboxes.insert(Arc::downgrade(outbox));
        // A slab's keys are the indexes of its live entries: far below 2^32 connections.
        Registration(u32::try_from(key).unwrap_or(u32::MAX))
    }

    /// Ends a registration: the connection gets no more pings.
    pub(crate) fn unregister(&self, registration: Registration) {
        let key = registration.0 as usize;
        self.shared.lock().outboxes.try_remove(key);
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Notifies a slice of the registered connections every `every / SLICES`, until the service is
/// gone.
async fn tick(shared: Weak<Shared>) {
    let Some(every) = shared.upgrade().map(|s| s.every) else {
        return;
    };
    let mut ticks = interval((every / SLICES as u32).max(Duration::from_millis(1)));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first tick completes at once: skip it, so that no connection pings as it opens.
    ticks.tick().await;
    let mut slice = 0;
    let mut due = Vec::new();
    loop {
        ticks.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        // Collected under the lock, woken outside it.
        due.extend(
            shared
                .lock()
                .outboxes
                .iter()
                .filter(|(key, _)| key % SLICES == slice)
                .filter_map(|(_, outbox)| outbox.upgrade()),
        );
        drop(shared);
        for outbox in due.drain(..) {
            outbox.notify();
        }
        slice = (slice + 1) % SLICES;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::future::poll_fn;

    use purly::Received;

    use super::*;

    /// Waits until `outbox` is notified, failing after `limit`.
    async fn notified_within(outbox: &Outbox, limit: Duration) -> bool {
        let mut batch = Vec::new();
        let notified = poll_fn(|cx| outbox.poll_recv(cx, &mut batch));
        tokio::time::timeout(limit, notified).await == Ok(Received::Notified)
    }

    #[tokio::test(start_paused = true)]
    async fn every_connection_is_notified_once_per_interval_until_it_unregisters() {
        let every = Duration::from_secs(16);
        let pinger = Pinger::new(every);
        let outboxes: Vec<_> = (0..40).map(|_| Arc::new(Outbox::new(1 << 10))).collect();
        let registrations: Vec<_> = outboxes.iter().map(|o| pinger.register(o)).collect();
        for round in 0..3 {
            for (i, outbox) in outboxes.iter().enumerate() {
                // Within one interval (plus a slice of slack for the first round's phase).
                let limit = every + every / SLICES as u32;
                assert!(
                    notified_within(outbox, limit).await,
                    "connection {i} was not notified in round {round}"
                );
            }
        }
        for registration in registrations {
            pinger.unregister(registration);
        }
        assert_eq!(pinger.shared.lock().outboxes.len(), 0);
        assert!(!notified_within(&outboxes[0], every * 2).await);
    }

    #[test]
    fn a_service_that_outlives_its_runtime_keeps_pinging_in_the_next() {
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap()
        };
        let every = Duration::from_secs(16);
        let pinger = Pinger::new(every);
        let first = Arc::new(Outbox::new(1 << 10));
        let _first = runtime().block_on(async { pinger.register(&first) });
        // That runtime is gone, and its ticking task with it.
        let second = Arc::new(Outbox::new(1 << 10));
        runtime().block_on(async {
            let _second = pinger.register(&second);
            assert!(notified_within(&second, every * 2).await);
        });
    }

    #[tokio::test(start_paused = true)]
    async fn the_task_ends_with_the_service() {
        let every = Duration::from_millis(160);
        let pinger = Pinger::new(every);
        let outbox = Arc::new(Outbox::new(1 << 10));
        let registration = pinger.register(&outbox);
        let runtime = tokio::runtime::Handle::current().metrics();
        assert_eq!(runtime.num_alive_tasks(), 1, "the ticking task runs");
        pinger.unregister(registration);
        drop(pinger);
        // It holds the registry weakly, and ends at its next tick. Time is paused: each sleep
        // moves the clock by one interval at once.
        for _ in 0..10 {
            if runtime.num_alive_tasks() == 0 {
                return;
            }
            tokio::time::sleep(every).await;
        }
        panic!("the ticking task outlived its service");
    }
}
