//! The idle keep-alive timeout of a plain HTTP connection: how long it may stay open with no
//! request in flight.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// The requests in flight on one connection and when it last became idle.
#[derive(Debug)]
pub(crate) struct Activity {
    in_flight: AtomicUsize,
    idle_since: Mutex<Instant>,
}

/// Held while one request is being answered.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Activity>);

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        })
    }

    /// A request started; the connection is busy until the guard drops.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// When the connection will have been idle for `timeout`, if nothing starts meanwhile
    /// (`None` while a request is in flight).
    fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let idle_since = *self
            .idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Some(idle_since + timeout)
    }

    /// Resolves once the connection has had no request in flight for `timeout`.
    pub(crate) fn idle_for(self: &Arc<Self>, timeout: Duration) -> impl Future<Output = ()> {
        let activity = self.clone();
        async move {
            loop {
                match activity.idle_deadline(timeout) {
                    Some(deadline) if deadline <= Instant::now() => return,
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    // Busy: look again after a whole timeout (a request rarely lasts that long).
                    None => tokio::time::sleep(timeout).await,
                }
            }
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut idle_since = self
            .0
            .idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            *idle_since = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_counts_from_the_end_of_the_last_request() {
        let activity = Activity::new();
        let timeout = Duration::from_secs(5);
        let start = Instant::now();
        let request = activity.begin();
        let idle = tokio::spawn(activity.idle_for(timeout));
        tokio::time::sleep(Duration::from_secs(7)).await;
        assert!(!idle.is_finished(), "busy for 7 s, yet idle");
        drop(request);
        idle.await.unwrap_or_else(|e| panic!("{e}"));
        // Busy until 7 s, then idle for 5 s; the busy check looks again every 5 s (at 10 s).
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_secs(12) && elapsed <= Duration::from_secs(15),
            "{elapsed:?}"
        );
    }
}
