//! `POST {prefix}{model}/send?session=S`: a frame for a session, delivered here or forwarded
//! to the node that holds it.

use std::sync::Arc;

use http_body_util::{BodyExt, Limited};
use hyper::{Request, Response, StatusCode};
use purly::{ErrorCode, FrameError, ModelName};

use super::sessions::{self, Sessions};
use crate::body::Body;
use crate::http::error_response;
use crate::join_request;
use crate::rate_limit::Verdict;

/// Answers `POST {prefix}{model}/send?session=S`: the frame in the body is handed to the
/// session (its answers go to the event stream); 202 once it is. A session of another node
/// (its token names the node) is reached through the store ([`purly::Engine::ask`]).
pub(crate) async fn send<B>(
    sessions: Arc<Sessions>,
    engine: purly::Engine,
    config: Arc<crate::config::ServerConfig>,
    model: ModelName,
    request: Request<B>,
) -> Response<Body>
where
    B: crate::service::RequestBody,
{
    let max_frame = engine.config().limits.max_frame_bytes;
    let Some(token) = join_request::query_param(&request, "session").map(str::to_owned) else {
        return no_session();
    };
    let declared = request
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > max_frame) {
        return too_large(max_frame);
    }
    let body = match Limited::new(request.into_body(), max_frame).collect().await {
        Ok(body) => body.to_bytes(),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            return too_large(max_frame)
        }
        Err(error) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("the body could not be read: {error}"),
            )
        }
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return error_response(StatusCode::BAD_REQUEST, "a frame is UTF-8 JSON text");
    };
    let delivered =
        match sessions::node_of(&token).filter(|node| Some(*node) != engine.node().as_deref()) {
            Some(node) => forward(&engine, node, &model, &token, text).await,
            None => deliver(&sessions, &config, &model, &token, text).await,
        };
    match delivered {
        Delivered::Accepted => accepted(),
        Delivered::Refused(status, message) => error_response(status, &message),
    }
}

/// What became of a POSTed frame.
enum Delivered {
    /// Handed to its session (202).
    Accepted,
    /// Not: the status and why.
    Refused(StatusCode, String),
}

/// Hands `text` to the session `token` of `model` on this node.
async fn deliver(
    sessions: &Arc<Sessions>,
    config: &crate::config::ServerConfig,
    model: &ModelName,
    token: &str,
    text: &str,
) -> Delivered {
    let Some(entry) = sessions.get(token).filter(|entry| entry.model == *model) else {
        return Delivered::Refused(StatusCode::NOT_FOUND, NO_SESSION.to_owned());
    };
    let session = &entry.session;
    match entry.rate_verdict(config, text.len()) {
        Verdict::Admit => {
            // Backpressure: past the model's bound, the POST waits for it to drain (the client
            // sends its frames one after the other, so this paces it).
            if tokio::time::timeout(config.message_timeout, session.ready())
                .await
                .is_err()
            {
                let error = FrameError::new(
                    ErrorCode::Unavailable,
                    "the model stayed over its bound; retry later",
                );
                session.refuse_text(text, error);
                return Delivered::Accepted;
            }
            // A refusal is queued to the session's stream as an error, like any answer.
            let _ = session.send_text(text);
        }
        Verdict::Refuse => {
            let error = FrameError::new(
                ErrorCode::RateLimited,
                "frames arrive faster than this session may send; slow down",
            );
            session.refuse_text(text, error);
        }
        Verdict::Close => {
            sessions.end(&entry);
            return Delivered::Refused(
                StatusCode::TOO_MANY_REQUESTS,
                "rate limit exceeded; frames kept coming after rate_limited: the session is ended"
                    .to_owned(),
            );
        }
    }
    Delivered::Accepted
}

/// Hands `text` to the session `token` of `model` on node `node`, through the store, and
/// waits for that node to have done it (so that one client's POSTs stay in order).
async fn forward(
    engine: &purly::Engine,
    node: &str,
    model: &ModelName,
    token: &str,
    text: &str,
) -> Delivered {
    let request = purly::serde_json::json!({
        "model": model.as_str(), "session": token, "frame": text,
    });
    match engine.ask(node, request.to_string()).await {
        Ok(answer) => {
            let answer: purly::serde_json::Value =
                purly::serde_json::from_str(&answer).unwrap_or_default();
            let status = answer["status"]
                .as_u64()
                .and_then(|s| StatusCode::from_u16(s as u16).ok())
                .unwrap_or(StatusCode::BAD_GATEWAY);
            match status {
                StatusCode::ACCEPTED => Delivered::Accepted,
                status => {
                    let message = answer["error"].as_str().unwrap_or_default().to_owned();
                    Delivered::Refused(status, message)
                }
            }
        }
        Err(error) => {
            tracing::debug!(%node, %error, "a POST for another node's session was not delivered");
            Delivered::Refused(StatusCode::NOT_FOUND, NO_SESSION.to_owned())
        }
    }
}

/// Answers the POSTs other nodes forward to this one's sessions ([`forward`]), on `runtime`.
pub(crate) fn serve_forwarded(
    engine: &purly::Engine,
    sessions: Arc<Sessions>,
    config: Arc<crate::config::ServerConfig>,
    runtime: tokio::runtime::Handle,
) {
    engine.answer(move |request, done| {
        let (sessions, config) = (sessions.clone(), config.clone());
        runtime.spawn(async move {
            let request: purly::serde_json::Value =
                purly::serde_json::from_str(&request).unwrap_or_default();
            let fields = (
                request["model"]
                    .as_str()
                    .and_then(|m| ModelName::new(m).ok()),
                request["session"].as_str(),
                request["frame"].as_str(),
            );
            let delivered = match fields {
                (Some(model), Some(token), Some(text)) => {
                    deliver(&sessions, &config, &model, token, text).await
                }
                _ => Delivered::Refused(StatusCode::BAD_REQUEST, "unreadable request".into()),
            };
            let answer = match delivered {
                Delivered::Accepted => purly::serde_json::json!({ "status": 202 }),
                Delivered::Refused(status, error) => {
                    purly::serde_json::json!({ "status": status.as_u16(), "error": error })
                }
            };
            done.complete(Ok(answer.to_string()));
        });
    });
}

const NO_SESSION: &str =
    "no such session on this model (its event stream ended, or its node is gone)";

fn no_session() -> Response<Body> {
    error_response(StatusCode::NOT_FOUND, NO_SESSION)
}

fn accepted() -> Response<Body> {
    let mut response = Response::new(Body::default());
    *response.status_mut() = StatusCode::ACCEPTED;
    response
}

fn too_large(max_frame: usize) -> Response<Body> {
    error_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("a frame is at most {max_frame} bytes"),
    )
}
