//! Connection caps: how many connections the server holds at once, in all and per peer
//! address, and the permit each admitted connection holds until it ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use metrics::Gauge;

/// Counts the open connections against [`ServerConfig`](crate::ServerConfig)'s caps.
#[derive(Debug)]
pub(crate) struct Admission {
    max_total: usize,
    max_per_peer: Option<usize>,
    counts: Mutex<Counts>,
    /// The open connections, as a metric.
    gauge: Gauge,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    /// Only addresses with at least one open connection: bounded by `total`.
    per_peer: HashMap<IpAddr, usize>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The server holds `max_connections`.
    Full,
    /// This address holds `max_connections_per_peer`.
    PeerFull,
}

impl Refusal {
    pub(crate) fn message(self) -> &'static str {
        match self {
            Refusal::Full => "the server is at its connection limit; retry later",
            Refusal::PeerFull => "too many connections from this address; retry later",
        }
    }
}

/// Held by an admitted connection (and by its WebSocket task after an upgrade); dropping the
/// last clone frees its place.
#[derive(Debug)]
pub(crate) struct Permit {
    admission: Arc<Admission>,
    peer: Option<IpAddr>,
}

impl Admission {
    pub(crate) fn new(max_total: usize, max_per_peer: Option<usize>, gauge: Gauge) -> Self {
        Admission {
            max_total,
            max_per_peer,
            counts: Mutex::new(Counts::default()),
            gauge,
        }
    }

    /// Admits a connection from `peer` if both caps allow it.
    pub(crate) fn admit(self: &Arc<Self>, peer: Option<IpAddr>) -> Result<Permit, Refusal> {
        let mut counts = self.lock();
        if counts.total >= self.max_total {
            return Err(Refusal::Full);
        }
        if let (Some(peer), Some(max)) = (peer, self.max_per_peer) {
            let open = counts.per_peer.entry(peer).or_insert(0);
            if *open >= max {
                return Err(Refusal::PeerFull);
            }
            *open += 1;
        }
        counts.total += 1;
        self.gauge.increment(1.0);
        Ok(Permit {
            admission: self.clone(),
            peer: peer.filter(|_| self.max_per_peer.is_some()),
        })
    }

    /// How many connections hold a permit.
    pub(crate) fn open(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        // The counts are consistent after every statement; a panic elsewhere cannot break them.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.admission.lock();
        counts.total = counts.total.saturating_sub(1);
        self.admission.gauge.decrement(1.0);
        if let Some(peer) = self.peer {
            if let Some(open) = counts.per_peer.get_mut(&peer) {
                *open = open.saturating_sub(1);
                if *open == 0 {
                    counts.per_peer.remove(&peer);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn caps_count_and_free_their_places() {
        let admission = Arc::new(Admission::new(3, Some(2), Gauge::noop()));
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let first = admission.admit(Some(a)).unwrap();
        let _second = admission.admit(Some(a)).unwrap();
        assert_eq!(admission.admit(Some(a)).unwrap_err(), Refusal::PeerFull);
        let _third = admission.admit(Some(b)).unwrap();
        assert_eq!(admission.admit(Some(b)).unwrap_err(), Refusal::Full);
        assert_eq!(admission.open(), 3);
        drop(first);
        assert_eq!(admission.open(), 2);
        let _again = admission.admit(Some(a)).unwrap();
        assert_eq!(admission.lock().per_peer.len(), 2);
    }

    #[test]
    fn addresses_leave_the_map_with_their_last_connection() {
        let admission = Arc::new(Admission::new(10, Some(1), Gauge::noop()));
        let permits: Vec<_> = (0..5u8)
            .map(|i| admission.admit(Some([10, 0, 0, i].into())).unwrap())
            .collect();
        assert_eq!(admission.lock().per_peer.len(), 5);
        drop(permits);
        assert_eq!(admission.lock().per_peer.len(), 0);
        assert_eq!(admission.open(), 0);
    }
}
