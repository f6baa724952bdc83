//! Authorization (PROTOCOL.md section 7): the embedder's hook and the same-origin rule.

use std::net::SocketAddr;

use hyper::header::{HOST, ORIGIN};
use hyper::HeaderMap;
use purly::{Access, ModelName};

use crate::route::RouteKind;

/// The peer's address, for the authorization hook. hyper does not know it: the accept loop
/// does, and puts it into each request's extensions (the `server` example shows how).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerAddr(pub SocketAddr);

/// What the authorization hook sees of a request, before anything is opened or read.
#[derive(Debug)]
#[non_exhaustive]
pub struct RequestInfo<'a> {
    /// Which route: the stream, the state or the page.
    pub route: RouteKind,
    /// The model the request is for.
    pub model: &'a ModelName,
    /// The request's full path.
    pub path: &'a str,
    /// The request's headers (cookies, `Authorization`, ...).
    pub headers: &'a HeaderMap,
    /// The peer's address, when the server put a [`PeerAddr`] into the request's extensions.
    pub peer: Option<SocketAddr>,
}

/// The hook's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// HTTP 403: nothing is opened or read.
    Deny,
    /// The stream opens, but updates and signals are answered with `forbidden`.
    ReadOnly,
    /// Full access.
    ReadWrite,
}

impl Decision {
    pub(crate) fn access(self) -> Option<Access> {
        match self {
            Decision::Deny => None,
            Decision::ReadOnly => Some(Access::ReadOnly),
            Decision::ReadWrite => Some(Access::ReadWrite),
        }
    }
}

/// The authorization hook's type.
pub type Authorize = dyn Fn(&RequestInfo<'_>) -> Decision + Send + Sync;

/// Whether a browser's `Origin` is allowed to open a stream: no `Origin` (not a browser), the
/// request's own host, or one of `allowed` (`*` allows any).
pub(crate) fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let origin_host = origin.split_once("://").map(|(_, authority)| authority);
    let host = headers.get(HOST).and_then(|h| h.to_str().ok());
    match (origin_host, host) {
        (Some(origin_host), Some(host)) => origin_host.eq_ignore_ascii_case(host),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, host.parse().unwrap());
        if let Some(origin) = origin {
            headers.insert(ORIGIN, origin.parse().unwrap());
        }
        headers
    }

    #[test]
    fn same_site_and_non_browser_requests_pass() {
        assert!(origin_allowed(&headers(None, "127.0.0.1:8000"), &[]));
        assert!(origin_allowed(
            &headers(Some("http://127.0.0.1:8000"), "127.0.0.1:8000"),
            &[]
        ));
    }

    #[test]
    fn cross_site_requests_need_an_allowed_origin() {
        let evil = headers(Some("https://evil.example"), "127.0.0.1:8000");
        assert!(!origin_allowed(&evil, &[]));
        assert!(!origin_allowed(
            &headers(Some("null"), "127.0.0.1:8000"),
            &[]
        ));
        assert!(!origin_allowed(
            &headers(Some("http://127.0.0.1:9000"), "127.0.0.1:8000"),
            &[]
        ));
        assert!(origin_allowed(&evil, &["https://evil.example".to_owned()]));
        assert!(origin_allowed(&evil, &["*".to_owned()]));
    }
}
