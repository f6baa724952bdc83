//! The plain HTTP answers purly writes: errors as JSON, refusals of a join, and the state route.

use std::sync::Arc;

use hyper::header::CONTENT_TYPE;
use hyper::{Response, StatusCode};
use purly::{Engine, JoinError, ModelName};

use crate::config::ServerConfig;

use crate::body::Body;

/// The elements of a comma-separated list header (RFC 9110 section 5.6.1) over all its
/// lines, trimmed: `Sec-WebSocket-Protocol`, `Accept-Encoding`...
pub(crate) fn header_list(
    headers: &hyper::HeaderMap,
    name: hyper::header::HeaderName,
) -> impl Iterator<Item = &str> {
    headers
        .get_all(name)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// A JSON error body `{"error": message}` with `status`.
pub(crate) fn error_response(status: StatusCode, message: &str) -> Response<Body> {
    let body = purly::serde_json::json!({ "error": message }).to_string();
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap_or_else(|_| internal_error())
}

fn internal_error() -> Response<Body> {
    let mut response = Response::new(Body::from(r#"{"error":"internal error"}"#));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}

/// The status for a join (or state read) the engine refused.
pub(crate) fn join_refused(error: &JoinError) -> Response<Body> {
    let status = match error {
        JoinError::InvalidName(_) => StatusCode::BAD_REQUEST,
        JoinError::Refused(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    error_response(status, &error.to_string())
}

/// The 503 of a join or state read whose model did not load within `join_timeout`.
pub(crate) fn load_timed_out(config: &ServerConfig) -> Response<Body> {
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!(
            "the model could not be loaded from the store within {} ms; retry later",
            config.join_timeout.as_millis()
        ),
    )
}

/// The answer to `GET {prefix}{model}/state`: the model's durable state, once the engine's
/// order reaches the read (PROTOCOL.md section 8: nothing the store does not hold is shown). A
/// model that is not in memory is loaded first, for at most `config.join_timeout`.
pub(crate) async fn state_response(
    engine: Engine,
    model: ModelName,
    config: Arc<ServerConfig>,
) -> Response<Body> {
    let read = engine.read_snapshot(model.as_str());
    match tokio::time::timeout(config.join_timeout, read).await {
        Ok(Ok(Some(snapshot))) => Response::builder()
            .header(CONTENT_TYPE, "application/json")
            .header("purly-version", snapshot.version())
            .header("purly-epoch", snapshot.epoch())
            .body(Body::from(snapshot.json().to_owned()))
            .unwrap_or_else(|_| internal_error()),
        Ok(Ok(None)) => error_response(StatusCode::NOT_FOUND, "no such model"),
        Ok(Err(error)) => join_refused(&error),
        Err(_) => load_timed_out(&config),
    }
}
