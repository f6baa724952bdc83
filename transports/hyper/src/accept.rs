//! The accept loop: [`Purly::serve`] takes connections from a TCP listener and serves each on
//! its own task, backing off when accepting fails for want of resources.

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::service::Purly;

/// The first wait after an accept failed for want of resources; it doubles up to
/// [`MAX_BACKOFF`] while failures go on.
const FIRST_BACKOFF: Duration = Duration::from_millis(5);
/// The longest wait between two accepts while they fail.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

impl Purly {
    /// Accepts connections on `listener` and serves each with
    /// [`serve_tcp`](Purly::serve_tcp) on its own task, until `shutdown` resolves; then stops
    /// accepting and returns (call [`shutdown`](Purly::shutdown) next to close the open
    /// connections).
    ///
    /// When accepting fails for want of resources (out of file descriptors, `EMFILE` or
    /// `ENFILE`, or of memory), it waits before trying again (5 ms, doubling up to 1 s) and logs
    /// once per run of failures instead of spinning: the connections already open keep being
    /// served, and new ones are accepted again as soon as descriptors are free. A failure that
    /// concerns one connection only (reset or aborted before it was accepted) is skipped.
    pub async fn serve<F>(&self, listener: TcpListener, shutdown: F)
    where
        F: Future<Output = ()>,
    {
        tokio::pin!(shutdown);
        let mut backoff = Backoff::default();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = &mut shutdown => return,
            };
            match accepted {
                Ok((socket, peer)) => {
                    backoff.recovered();
                    let purly = self.clone();
                    tokio::spawn(async move {
                        if let Err(error) = purly.serve_tcp(socket).await {
                            tracing::debug!(%peer, %error, "http connection ended");
                        }
                    });
                }
                Err(error) if concerns_one_connection(&error) => {
                    tracing::debug!(%error, "a connection failed before it was accepted");
                }
                Err(error) => {
                    let wait = backoff.failed(&error);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = &mut shutdown => return,
                    }
                }
            }
        }
    }
}

/// Errors of one pending connection, not of the listener: try the next one at once.
fn concerns_one_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// A run of failed accepts: how long to wait next, and what to log.
#[derive(Debug, Default)]
struct Backoff {
    failures: u64,
    since: Option<Instant>,
}

impl Backoff {
    /// Counts a failure; returns how long to wait before the next accept.
    fn failed(&mut self, error: &io::Error) -> Duration {
        self.failures += 1;
        if self.failures == 1 {
            self.since = Some(Instant::now());
            tracing::warn!(
                %error,
                "accepting connections failed; backing off until it works again \
                 (out of file descriptors? see `ulimit -n`)"
            );
        }
        let doublings = u32::try_from(self.failures - 1).unwrap_or(u32::MAX).min(16);
        FIRST_BACKOFF
            .saturating_mul(1 << doublings)
            .min(MAX_BACKOFF)
    }

    /// An accept succeeded: ends the run of failures, if any.
    fn recovered(&mut self) {
        if self.failures > 0 {
            let lasted = self.since.map(|since| since.elapsed()).unwrap_or_default();
            tracing::info!(
                failures = self.failures,
                ?lasted,
                "accepting connections again"
            );
            *self = Backoff::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_up_to_a_second_and_starts_over_after_a_success() {
        let mut backoff = Backoff::default();
        let emfile = io::Error::from_raw_os_error(24);
        let waits: Vec<_> = (0..10).map(|_| backoff.failed(&emfile)).collect();
        assert_eq!(waits[0], Duration::from_millis(5));
        assert_eq!(waits[1], Duration::from_millis(10));
        assert_eq!(waits[7], Duration::from_millis(640));
        assert_eq!(waits[8], MAX_BACKOFF);
        assert_eq!(waits[9], MAX_BACKOFF);
        backoff.recovered();
        assert_eq!(backoff.failed(&emfile), FIRST_BACKOFF);
    }

    #[test]
    fn errors_of_one_connection_are_not_backed_off() {
        assert!(concerns_one_connection(&io::Error::from(
            io::ErrorKind::ConnectionAborted
        )));
        assert!(!concerns_one_connection(&io::Error::from_raw_os_error(24)));
    }
}
