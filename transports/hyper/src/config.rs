//! [`ServerConfig`]: what the WebSocket transport adds to the engine's configuration.

use std::time::Duration;

/// How the transport serves its routes and paces its connections.
///
/// The engine's own limits (frame size, depth, queue bound...) live in
/// [`purly::Config`]; these are the transport's.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The path prefix the routes live under (default `/`): `{prefix}{model}/stream`,
    /// `{prefix}{model}/state`, `{prefix}{model}`. Always starts and ends with `/`.
    pub prefix: String,
    /// Compat mode: the most loop turns per second (default 25, as in the original purly), so
    /// that an idle client and server exchange `[]` at most that often.
    pub refresh_per_second: u32,
    /// How often a connection is pinged (default 30 s). One task per [`Purly`](crate::Purly)
    /// keeps this clock for all its connections (no timer per connection), so a connection's
    /// first ping comes within one interval of its opening, at a phase it shares with others.
    pub ping_interval: Duration,
    /// How often an event stream (PROTOCOL.md section 10) sends a `: ping` comment when it has
    /// sent nothing else (default 15 s), so that proxies keep it open; a stream whose client
    /// went away is noticed (and its session ended) at the latest at its next ping.
    pub event_ping_interval: Duration,
    /// How many pings may go unanswered before the connection is closed (default 2). Any frame
    /// from the peer counts as an answer.
    pub max_missed_pings: u32,
    /// How long one write may take before the peer is considered stuck and dropped (default
    /// 60 s). Its queue is bounded meanwhile, so this only frees the connection sooner.
    pub write_timeout: Duration,
    /// Origins (`scheme://host[:port]`) allowed to open a stream from another site, or `*` for
    /// any. Same-site requests and requests without an `Origin` header (non-browser clients)
    /// are always allowed. Default: none.
    pub allowed_origins: Vec<String>,
    /// How long a client has to send a complete request head (default 10 s), counted from the
    /// moment the server waits for one: from the accept, and again after every response on a
    /// keep-alive connection. A half-sent or too slow request is closed (hyper's header read
    /// timeout, on a Tokio timer). It also bounds the wait for the WebSocket upgrade request.
    pub header_read_timeout: Duration,
    /// How long a plain HTTP connection may stay open with no request in flight (default 5 s)
    /// before it is closed; at most `header_read_timeout`, which also runs while a keep-alive
    /// connection waits for its next request.
    pub keep_alive_timeout: Duration,
    /// How long the WebSocket handshake may take once the upgrade was answered (default 10 s).
    pub upgrade_timeout: Duration,
    /// How long a join (or a state read) may wait for its model to be loaded from the store
    /// (default 5 s). Past it the request is answered 503 with a JSON error; the load goes on,
    /// and a later request finds the model loaded. Joins of models in memory never wait.
    pub join_timeout: Duration,
    /// The most bytes all connections together may hold in messages that have not arrived
    /// whole (a frame still arriving, the earlier frames of a fragmented message): default
    /// 64 MiB. A connection whose unfinished message would take the server past it is closed
    /// with 1009. Without it, 300 connections that each send 900 KB of a 1 MB message and stop
    /// would hold 270 MB.
    pub max_unfinished_bytes: usize,
    /// How long a message may take to arrive whole once its first byte came (default 30 s);
    /// past it the connection is closed with 1008, whether or not the peer answers pings.
    pub message_timeout: Duration,
    /// Compat mode: how long a client may go without sending a frame (default 60 s; the
    /// original clients send one every turn). Past it the connection is closed with 1008.
    pub compat_idle_timeout: Duration,
    /// The most connections served at once (default 100,000), WebSocket and plain HTTP
    /// together. Past it a new connection is answered with HTTP 503 and closed; the open ones
    /// are untouched. Counted by [`Purly::serve_connection`](crate::Purly::serve_connection)
    /// and what calls it; a `Purly` mounted as a service elsewhere counts its streams only.
    pub max_connections: usize,
    /// The most connections from one IP address (default: no limit, since clients behind one
    /// NAT or proxy share an address). Past it: HTTP 503, as for `max_connections`.
    pub max_connections_per_peer: Option<usize>,
    /// The most frames and bytes one connection may send (default [`RateLimit::default`]);
    /// `None` for no limit.
    pub rate_limit: Option<RateLimit>,
}

/// A per-connection token bucket on incoming frames (PROTOCOL.md section 5): one client
/// cannot monopolize the order of a model that others share.
///
/// A frame past the limit is not applied; its sender gets an `error` with code
/// `rate_limited` (naming the frame's ids). A client that keeps sending regardless is closed
/// with code 1008 after `max_refused` refusals in a row. Control frames (pings, pongs) count
/// too: one past the limit is not refused (a ping is still answered, with one pong for all
/// those queued), but it counts as a refusal toward the close.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RateLimit {
    /// Frames per second, sustained (default 1,000).
    pub frames_per_second: f64,
    /// Frames that may arrive at once above the sustained rate (default 1,000).
    pub frame_burst: f64,
    /// Bytes of frame text per second, sustained (default 4 MiB).
    pub bytes_per_second: f64,
    /// Bytes that may arrive at once (default 8 MiB; a frame larger than this is counted as
    /// this much, so that the largest frame the engine accepts always fits).
    pub byte_burst: f64,
    /// Refusals in a row after which the connection is closed with 1008 (default 100).
    pub max_refused: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            frames_per_second: 1_000.0,
            frame_burst: 1_000.0,
            bytes_per_second: f64::from(4u32 << 20),
            byte_burst: f64::from(8u32 << 20),
            max_refused: 100,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            prefix: "/".to_owned(),
            refresh_per_second: 25,
            ping_interval: Duration::from_secs(30),
            event_ping_interval: Duration::from_secs(15),
            max_missed_pings: 2,
            write_timeout: Duration::from_secs(60),
            allowed_origins: Vec::new(),
            header_read_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(5),
            upgrade_timeout: Duration::from_secs(10),
            join_timeout: Duration::from_secs(5),
            max_unfinished_bytes: 64 << 20,
            message_timeout: Duration::from_secs(30),
            compat_idle_timeout: Duration::from_secs(60),
            max_connections: 100_000,
            max_connections_per_peer: None,
            rate_limit: Some(RateLimit::default()),
        }
    }
}

/// A prefix with exactly one leading and one trailing `/` (`model` → `/model/`, `` → `/`).
pub(crate) fn normalize_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        "/".to_owned()
    } else {
        format!("/{trimmed}/")
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_prefix;

    #[test]
    fn prefixes_are_normalized() {
        assert_eq!(normalize_prefix(""), "/");
        assert_eq!(normalize_prefix("/"), "/");
        assert_eq!(normalize_prefix("model"), "/model/");
        assert_eq!(normalize_prefix("/sync/v1/"), "/sync/v1/");
    }
}
