//! The WebSocket transport's metrics, through the [`metrics`](https://docs.rs/metrics) facade, registered when the
//! [`Purly`](crate::Purly) handler is built (install the recorder first). The engine's own
//! are in [`purly::telemetry`]. No label names a model, a client or a peer.

use metrics::{Counter, Gauge, Histogram};
use purly::Mode;

use crate::admission::Refusal;

/// WebSocket connections open, by `mode` (`stream`, `compat`) (gauge).
pub const CONNECTIONS: &str = "purly_connections";
/// Connections held under the connection cap, plain HTTP and WebSocket together (gauge).
pub const HTTP_CONNECTIONS: &str = "purly_http_connections";
/// Connections answered 503 for a cap, by `reason` (`max_connections`,
/// `max_connections_per_peer`) (counter).
pub const CONNECTIONS_REFUSED: &str = "purly_connections_refused_total";
/// Frames written to WebSocket clients (counter).
pub const FRAMES_SENT: &str = "purly_frames_sent_total";
/// Messages written to WebSocket clients, in those frames (counter).
pub const MESSAGES_SENT: &str = "purly_messages_sent_total";
/// Bytes that were queued for a connection when it was written, one frame (histogram;
/// sampled: one write in 16 per connection).
pub const QUEUED_BYTES: &str = "purly_connection_queued_bytes";
/// Pings that went unanswered for a whole interval (counter).
pub const PINGS_MISSED: &str = "purly_pings_missed_total";
/// WebSocket connections ended, by `code`: the close code the server sent (`1001`, `1008`,
/// `1009`, `1011`, `1013`), `peer` (the client closed) or `lost` (no pong, failed write)
/// (counter).
pub const CLOSES: &str = "purly_closes_total";

/// The close codes the server sends, as labels.
const CLOSE_CODES: [u16; 5] = [1001, 1008, 1009, 1011, 1013];

/// The handles of one [`Purly`](crate::Purly) handler.
pub(crate) struct TransportMetrics {
    connections: [Gauge; 2],
    pub(crate) http_connections: Gauge,
    refused: [Counter; 2],
    pub(crate) frames_sent: Counter,
    pub(crate) messages_sent: Counter,
    pub(crate) queued_bytes: Histogram,
    pub(crate) pings_missed: Counter,
    closes_by_server: [Counter; 5],
    closes_other: Counter,
    closes_by_peer: Counter,
    closes_lost: Counter,
}

impl TransportMetrics {
    pub(crate) fn register() -> Self {
        describe();
        TransportMetrics {
            connections: [
                metrics::gauge!(CONNECTIONS, "mode" => "stream"),
                metrics::gauge!(CONNECTIONS, "mode" => "compat"),
            ],
            http_connections: metrics::gauge!(HTTP_CONNECTIONS),
            refused: [
                metrics::counter!(CONNECTIONS_REFUSED, "reason" => "max_connections"),
                metrics::counter!(CONNECTIONS_REFUSED, "reason" => "max_connections_per_peer"),
            ],
            frames_sent: metrics::counter!(FRAMES_SENT),
            messages_sent: metrics::counter!(MESSAGES_SENT),
            queued_bytes: metrics::histogram!(QUEUED_BYTES),
            pings_missed: metrics::counter!(PINGS_MISSED),
            closes_by_server: CLOSE_CODES
                .map(|code| metrics::counter!(CLOSES, "code" => code.to_string())),
            closes_other: metrics::counter!(CLOSES, "code" => "other"),
            closes_by_peer: metrics::counter!(CLOSES, "code" => "peer"),
            closes_lost: metrics::counter!(CLOSES, "code" => "lost"),
        }
    }

    /// The gauge of WebSocket connections in `mode`.
    pub(crate) fn connections(&self, mode: Mode) -> &Gauge {
        match mode {
            Mode::Stream => &self.connections[0],
            Mode::Compat => &self.connections[1],
        }
    }

    pub(crate) fn refused(&self, refusal: Refusal) {
        match refusal {
            Refusal::Full => self.refused[0].increment(1),
            Refusal::PeerFull => self.refused[1].increment(1),
        }
    }

    /// Counts a connection closed by the server with `code`.
    pub(crate) fn closed_by_server(&self, code: u16) {
        match CLOSE_CODES.iter().position(|&c| c == code) {
            Some(i) => self.closes_by_server[i].increment(1),
            None => self.closes_other.increment(1),
        }
    }

    pub(crate) fn closed_by_peer(&self) {
        self.closes_by_peer.increment(1);
    }

    pub(crate) fn lost(&self) {
        self.closes_lost.increment(1);
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(CONNECTIONS, "WebSocket connections open, by mode.");
    describe_gauge!(
        HTTP_CONNECTIONS,
        "Connections held under the connection cap (HTTP and WebSocket)."
    );
    describe_counter!(CONNECTIONS_REFUSED, "Connections answered 503 for a cap.");
    describe_counter!(FRAMES_SENT, "Frames written to WebSocket clients.");
    describe_counter!(MESSAGES_SENT, "Messages written to WebSocket clients.");
    describe_histogram!(
        QUEUED_BYTES,
        Unit::Bytes,
        "Bytes queued for a connection when it was written (one frame)."
    );
    describe_counter!(PINGS_MISSED, "Pings unanswered for a whole interval.");
    describe_counter!(CLOSES, "WebSocket connections ended, by close code.");
}
