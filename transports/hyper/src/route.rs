//! Which purly route a request path names (PROTOCOL.md section 1).

use purly::{InvalidModelName, ModelName};

/// The routes below the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RouteKind {
    /// `{prefix}{model}/stream`: the WebSocket message stream.
    Stream,
    /// `{prefix}{model}/state`: the model's state as JSON.
    State,
    /// `{prefix}{model}`: the browser page.
    Page,
    /// `{prefix}{model}/events`: the session's frames as server-sent events (PROTOCOL.md
    /// section 10).
    Events,
    /// `{prefix}{model}/send?session=S`: a frame for an event-stream session (POST).
    Send,
}

/// The JavaScript client's files, served below the prefix: their names are not models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientFile {
    /// `{prefix}purly-client.js`.
    Module,
    /// `{prefix}purly-client.d.ts`.
    Types,
}

/// Names below the prefix that are the client's files, not models (PROTOCOL.md section 12).
pub(crate) const CLIENT_MODULE: &str = "purly-client.js";
/// See [`CLIENT_MODULE`].
pub(crate) const CLIENT_TYPES: &str = "purly-client.d.ts";

/// What a path means to purly.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Routed {
    /// Not a purly path: the embedder's (or a 404).
    Elsewhere,
    /// One of the JavaScript client's files.
    Client(ClientFile),
    /// A purly route with an invalid model name (HTTP 400).
    BadName(RouteKind, InvalidModelName),
    /// A purly route.
    Model(RouteKind, ModelName),
}

/// What `path` names below `prefix`. `reserved` are names that are not models there (the
/// embedder's extra routes); the client's file names never are.
pub(crate) fn route(path: &str, prefix: &str, reserved: &[String]) -> Routed {
    let Some(rest) = path.strip_prefix(prefix) else {
        return Routed::Elsewhere;
    };
    match rest {
        CLIENT_MODULE => return Routed::Client(ClientFile::Module),
        CLIENT_TYPES => return Routed::Client(ClientFile::Types),
        _ => {}
    }
    let (name, kind) = match rest.split_once('/') {
        None => (rest, RouteKind::Page),
        Some((name, "stream")) => (name, RouteKind::Stream),
        Some((name, "state")) => (name, RouteKind::State),
        Some((name, "events")) => (name, RouteKind::Events),
        Some((name, "send")) => (name, RouteKind::Send),
        Some(_) => return Routed::Elsewhere,
    };
    if name.is_empty()
        || name == CLIENT_MODULE
        || name == CLIENT_TYPES
        || reserved.iter().any(|r| r == name)
    {
        return Routed::Elsewhere;
    }
    match ModelName::new(name) {
        Ok(name) => Routed::Model(kind, name),
        // A page path that is not a model name is most likely someone else's route.
        Err(_) if kind == RouteKind::Page => Routed::Elsewhere,
        Err(error) => Routed::BadName(kind, error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(kind: RouteKind, name: &str) -> Routed {
        Routed::Model(kind, ModelName::new(name).unwrap())
    }

    #[test]
    fn routes_under_the_root_prefix() {
        assert_eq!(
            route("/model/stream", "/", &[]),
            model(RouteKind::Stream, "model")
        );
        assert_eq!(
            route("/model/state", "/", &[]),
            model(RouteKind::State, "model")
        );
        assert_eq!(route("/model", "/", &[]), model(RouteKind::Page, "model"));
        assert_eq!(
            route("/model/events", "/", &[]),
            model(RouteKind::Events, "model")
        );
        assert_eq!(
            route("/model/send", "/", &[]),
            model(RouteKind::Send, "model")
        );
        assert_eq!(route("/", "/", &[]), Routed::Elsewhere);
        assert_eq!(route("/a/b/stream", "/", &[]), Routed::Elsewhere);
        assert_eq!(route("/model/other", "/", &[]), Routed::Elsewhere);
        assert!(matches!(
            route("/a%20b/stream", "/", &[]),
            Routed::BadName(RouteKind::Stream, _)
        ));
        assert!(matches!(
            route("/../state", "/", &[]),
            Routed::BadName(RouteKind::State, _)
        ));
        assert_eq!(route("/a%20b", "/", &[]), Routed::Elsewhere);
    }

    #[test]
    fn routes_under_a_prefix() {
        assert_eq!(
            route("/model/m/stream", "/model/", &[]),
            model(RouteKind::Stream, "m")
        );
        assert_eq!(route("/api/users", "/model/", &[]), Routed::Elsewhere);
        assert_eq!(route("/model/", "/model/", &[]), Routed::Elsewhere);
    }

    #[test]
    fn the_client_files_are_not_models() {
        assert_eq!(
            route("/purly-client.js", "/", &[]),
            Routed::Client(ClientFile::Module)
        );
        assert_eq!(
            route("/sync/purly-client.d.ts", "/sync/", &[]),
            Routed::Client(ClientFile::Types)
        );
        assert_eq!(
            route("/purly-client.js/stream", "/", &[]),
            Routed::Elsewhere
        );
    }

    #[test]
    fn reserved_names_are_not_models() {
        let reserved = ["metrics".to_owned()];
        assert_eq!(route("/metrics/stream", "/", &reserved), Routed::Elsewhere);
        assert_eq!(route("/metrics", "/", &reserved), Routed::Elsewhere);
        assert_eq!(
            route("/metrics2/stream", "/", &reserved),
            model(RouteKind::Stream, "metrics2")
        );
    }
}
