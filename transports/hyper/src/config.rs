//! [`ServerConfig`]: what the WebSocket transport adds to the engine's configuration.

use std::time::Duration;

/// How the transport serves its routes and paces its connections.
///
/// The engine's own limits (frame size, depth, queue bound...) live in
/// [`purly::Config`]; these are the transport's.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The path prefix the routes live under (default `/`): `{prefix}{model}/stream`,
    /// `{prefix}{model}/state`, `{prefix}{model}`. Always starts and ends with `/`.
    pub prefix: String,
    /// Compat mode: the most loop turns per second (default 25, as in the original purly), so
    /// that an idle client and server exchange `[]` at most that often.
    pub refresh_per_second: u32,
    /// How often an idle connection is pinged (default 30 s).
    pub ping_interval: Duration,
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
    /// The read buffer of each connection, in bytes (default 2 KiB). tungstenite allocates it
    /// up front, so it dominates the memory of an idle connection (its default is 128 KiB).
    pub read_buffer_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            prefix: "/".to_owned(),
            refresh_per_second: 25,
            ping_interval: Duration::from_secs(30),
            max_missed_pings: 2,
            write_timeout: Duration::from_secs(60),
            allowed_origins: Vec::new(),
            read_buffer_bytes: 2 << 10,
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
