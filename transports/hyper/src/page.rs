//! The browser page served at `{prefix}{model}` (PROTOCOL.md section 6).
//!
//! One HTML document with the script inline: no build step, no other route. Each response gets
//! a fresh nonce, and its Content-Security-Policy lets only that script run, so a hostile model
//! cannot run code even if a bug in the page let markup through.

use std::sync::OnceLock;

use hyper::header::{CACHE_CONTROL, CONTENT_TYPE};
use hyper::Response;

use crate::body::Body;

const TEMPLATE: &str = include_str!("page/page.html");
const SCRIPT: &str = include_str!("page/purly.js");
const NONCE: &str = "{{NONCE}}";

/// The page with its script inlined, built once.
fn page() -> &'static str {
    static PAGE: OnceLock<String> = OnceLock::new();
    PAGE.get_or_init(|| TEMPLATE.replace("{{SCRIPT}}", SCRIPT))
}

pub(crate) fn response() -> Response<Body> {
    let nonce = purly::random_hex(32);
    let html = page().replace(NONCE, &nonce);
    let policy = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; \
         connect-src 'self'; img-src * data: blob:; media-src * data: blob:; font-src * data:; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
    );
    let mut response = Response::new(Body::from(html));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-cache"),
    );
    if let Ok(value) = policy.parse() {
        headers.insert("content-security-policy", value);
    }
    headers.insert(
        "x-content-type-options",
        hyper::header::HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_response_has_its_own_nonce_on_script_and_policy() {
        let first = response();
        let second = response();
        let policy = |r: &Response<Body>| {
            r.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert_ne!(policy(&first), policy(&second));
        let nonce = policy(&first)
            .split("'nonce-")
            .nth(1)
            .unwrap()
            .split('\'')
            .next()
            .unwrap()
            .to_owned();
        assert_eq!(nonce.len(), 32);
        assert_eq!(
            page().matches(NONCE).count(),
            2,
            "the style and the script carry the nonce"
        );
    }
}
