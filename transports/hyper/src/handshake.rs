//! The WebSocket opening handshake, server side (RFC 6455 section 4.2): every check of the
//! request, and the `101` that answers it. The upgrade route runs it before anything touches
//! the engine, so that a refused handshake opens, loads and creates nothing.

use hyper::header::{
    HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION,
    UPGRADE,
};
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::body::Body;
use crate::http::error_response;

/// The only WebSocket version there is (RFC 6455 section 4.1).
const SUPPORTED_VERSION: &str = "13";

/// Checks the handshake of `request` (its `Upgrade` and `Connection` headers were checked by
/// the caller) and answers it: the `101` response, and the connection once hyper hands it
/// over; or the refusal to send instead.
///
/// - the method is GET and the request HTTP/1.1 (section 4.2.1, items 1 and 2): else 400;
/// - `Sec-WebSocket-Key` is the base64 of 16 bytes (item 5): else 400;
/// - `Sec-WebSocket-Version` is 13 (item 6): else 426 with `Sec-WebSocket-Version: 13`
///   (section 4.4), so that a client can retry with the version the server speaks.
///
/// This is what `hyper_tungstenite::upgrade` does, with those checks, done here so that the
/// upgraded connection is framed by purly's [`WebSocket`](crate::websocket::WebSocket).
#[allow(clippy::result_large_err)] // the refusal is answered at once, not propagated
pub(crate) fn answer<B>(
    request: &mut Request<B>,
) -> Result<(Response<Body>, OnUpgrade), Response<Body>> {
    if request.method() != Method::GET {
        return Err(error_response(
            StatusCode::BAD_REQUEST,
            "a WebSocket handshake is a GET",
        ));
    }
    if request.version() != Version::HTTP_11 {
        return Err(error_response(
            StatusCode::BAD_REQUEST,
            "a WebSocket handshake needs HTTP/1.1",
        ));
    }
    let version = request.headers().get(SEC_WEBSOCKET_VERSION);
    if version.map(HeaderValue::as_bytes) != Some(SUPPORTED_VERSION.as_bytes()) {
        let mut refused = error_response(
            StatusCode::UPGRADE_REQUIRED,
            "Sec-WebSocket-Version must be 13",
        );
        refused.headers_mut().insert(
            SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static(SUPPORTED_VERSION),
        );
        return Err(refused);
    }
    let Some(key) = request.headers().get(SEC_WEBSOCKET_KEY) else {
        return Err(error_response(
            StatusCode::BAD_REQUEST,
            "missing Sec-WebSocket-Key header",
        ));
    };
    if !is_base64_of_16_bytes(key.as_bytes()) {
        return Err(error_response(
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Key must be the base64 of 16 bytes",
        ));
    }
    let accept = derive_accept_key(key.as_bytes());
    let mut response = Response::new(Body::default());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    let accept = HeaderValue::from_str(&accept)
        .map_err(|_| error_response(StatusCode::BAD_REQUEST, "unusable Sec-WebSocket-Key"))?;
    headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    Ok((response, hyper::upgrade::on(request)))
}

/// Whether `key` is the (padded) base64 of exactly 16 bytes: 22 characters of the base64
/// alphabet, the last of which carries only 2 bits (so it is one of `A Q g w`), then `==`.
fn is_base64_of_16_bytes(key: &[u8]) -> bool {
    let alphabet = |c: &u8| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/';
    key.len() == 24
        && key[..22].iter().all(alphabet)
        && matches!(key[21], b'A' | b'Q' | b'g' | b'w')
        && &key[22..] == b"=="
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_base64_of_16_bytes_is_a_key() {
        // RFC 6455's own example, and keys of every possible last character.
        assert!(is_base64_of_16_bytes(b"dGhlIHNhbXBsZSBub25jZQ=="));
        for last in ["A", "Q", "g", "w"] {
            let key = format!("AAAAAAAAAAAAAAAAAAAAA{last}==");
            assert!(is_base64_of_16_bytes(key.as_bytes()), "{key}");
        }
        for bad in [
            "",
            "dGhlIHNhbXBsZSBub25jZQ",       // no padding
            "dGhlIHNhbXBsZSBub25jZR==",     // 4 bits beyond the 16 bytes
            "AAAAAAAAAAAA",                 // 8 bytes
            "dGhlIHNhbXBsZSBub25jZQ==AAAA", // longer
            "dGhlIHNhbXBsZSBub25j!Q==",     // not base64
            "AAAAAAAAAAAAAAAAAAAAAAAA",     // 18 bytes, no padding
        ] {
            assert!(!is_base64_of_16_bytes(bad.as_bytes()), "{bad:?}");
        }
    }
}
