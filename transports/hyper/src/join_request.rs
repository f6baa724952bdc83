//! What a stream request (a WebSocket upgrade or an event stream) asks of its join, read from
//! its query: where it resumes (`since`, `epoch`; for the event stream also `Last-Event-ID`)
//! and the client key (`client`).

use hyper::{Request, Response, StatusCode};
use purly::ClientKey;

use crate::body::Body;
use crate::http::error_response;

/// The value of query parameter `name`, as written (purly's values never need decoding).
pub(crate) fn query_param<'a, B>(request: &'a Request<B>, name: &str) -> Option<&'a str> {
    request
        .uri()
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

/// `?client=KEY` (PROTOCOL.md section 9): 400 when malformed, or in compat mode (keys are for
/// stream mode).
// The refusal is answered at once, not propagated: its size costs nothing.
#[allow(clippy::result_large_err)]
pub(crate) fn client_key<B>(
    request: &Request<B>,
    stream_mode: bool,
) -> Result<Option<ClientKey>, Response<Body>> {
    let Some(value) = query_param(request, "client") else {
        return Ok(None);
    };
    if !stream_mode {
        return Err(error_response(
            StatusCode::BAD_REQUEST,
            "a client key (?client=) is for stream mode: offer the purly.stream subprotocol",
        ));
    }
    ClientKey::new(value).map(Some).map_err(|error| {
        error_response(
            StatusCode::BAD_REQUEST,
            &format!("invalid client key: {error}"),
        )
    })
}

/// `?since=N&epoch=E`; a `Last-Event-ID: N` header (an event stream's reconnect) counts as
/// `since=N`, but only with an epoch in the query (PROTOCOL.md section 10).
pub(crate) fn resume_point<B>(request: &Request<B>) -> Option<(u64, String)> {
    let epoch = query_param(request, "epoch")?.to_owned();
    let last_event = request
        .headers()
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok());
    let since = last_event.or_else(|| query_param(request, "since")?.parse().ok())?;
    Some((since, epoch))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, last_event: Option<&str>) -> Request<()> {
        let mut builder = Request::builder().uri(uri);
        if let Some(id) = last_event {
            builder = builder.header("last-event-id", id);
        }
        builder.body(()).unwrap_or_default()
    }

    #[test]
    fn the_resume_point_comes_from_the_query_or_the_last_event_id_with_an_epoch() {
        assert_eq!(
            resume_point(&request("/m/stream?since=3&epoch=e", None)),
            Some((3, "e".to_owned()))
        );
        assert_eq!(
            resume_point(&request("/m/events?since=3&epoch=e", Some("9"))),
            Some((9, "e".to_owned()))
        );
        assert_eq!(
            resume_point(&request("/m/events?epoch=e", Some("9"))),
            Some((9, "e".to_owned()))
        );
        assert_eq!(resume_point(&request("/m/events", Some("9"))), None);
        assert_eq!(resume_point(&request("/m/stream?since=3", None)), None);
        assert_eq!(
            query_param(&request("/m/send?session=abc&x=1", None), "session"),
            Some("abc")
        );
        assert_eq!(
            query_param(&request("/m/send?sessions=abc", None), "session"),
            None
        );
    }
}
