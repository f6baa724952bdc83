//! The plain HTTP answers purly writes: errors as JSON, refusals of a join, and the state route.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::CONTENT_TYPE;
use hyper::{Response, StatusCode};
use purly::{Engine, JoinError, ModelName, Snapshot};
use tokio::sync::oneshot;

/// The body of every response purly writes.
pub type Body = Full<Bytes>;

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

/// The answer to `GET {prefix}{model}/state`: the model's durable state, once the engine's
/// order reaches the read (PROTOCOL.md section 8: nothing the store does not hold is shown).
pub(crate) enum StateResponse {
    /// Answered at once.
    Ready(Option<Response<Body>>),
    /// Waiting for the snapshot.
    Waiting(oneshot::Receiver<Arc<Snapshot>>),
}

impl StateResponse {
    pub(crate) fn read(engine: &Engine, model: &ModelName) -> Self {
        let (sender, receiver) = oneshot::channel();
        let reply = move |snapshot| {
            // The requester may have gone; nothing to do then.
            let _ = sender.send(snapshot);
        };
        match engine.read_snapshot(model.as_str(), reply) {
            Ok(true) => StateResponse::Waiting(receiver),
            Ok(false) => {
                StateResponse::Ready(Some(error_response(StatusCode::NOT_FOUND, "no such model")))
            }
            Err(error) => StateResponse::Ready(Some(join_refused(&error))),
        }
    }
}

impl Future for StateResponse {
    type Output = Response<Body>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response<Body>> {
        match self.get_mut() {
            StateResponse::Ready(response) => {
                Poll::Ready(response.take().unwrap_or_else(internal_error))
            }
            StateResponse::Waiting(receiver) => match Pin::new(receiver).poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Ok(snapshot)) => Poll::Ready(
                    Response::builder()
                        .header(CONTENT_TYPE, "application/json")
                        .header("purly-version", snapshot.version())
                        .header("purly-epoch", snapshot.epoch())
                        .body(Body::from(snapshot.json().to_owned()))
                        .unwrap_or_else(|_| internal_error()),
                ),
                // The model closed before the read was reached (its store failed, say).
                Poll::Ready(Err(_)) => Poll::Ready(error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the model closed before its state could be read; try again",
                )),
            },
        }
    }
}
