//! [`PurlyBuilder`]: the prefix, allowed origins, authorization hook and transport settings.

use hyper::Response;
use purly::Engine;

use crate::access::{Authorize, Decision, RequestInfo};
use crate::body::Body;
use crate::config::{normalize_prefix, ServerConfig};
use crate::extra_route::ExtraRoute;
use crate::service::Purly;

/// Builds a [`Purly`] handler. The chained settings do not depend on their order: a
/// [`prefix`](PurlyBuilder::prefix) or [`allow_origin`](PurlyBuilder::allow_origin) given
/// before [`config`](PurlyBuilder::config) still applies.
pub struct PurlyBuilder {
    engine: Engine,
    config: ServerConfig,
    prefix: Option<String>,
    origins: Vec<String>,
    authorize: Option<Box<Authorize>>,
    extra_routes: Vec<ExtraRoute>,
}

impl Purly {
    /// A handler with the default configuration (prefix `/`).
    pub fn new(engine: Engine) -> Self {
        Purly::builder(engine).build()
    }

    /// A builder, to set the prefix, allowed origins and authorization hook.
    pub fn builder(engine: Engine) -> PurlyBuilder {
        PurlyBuilder {
            engine,
            config: ServerConfig::default(),
            prefix: None,
            origins: Vec::new(),
            authorize: None,
            extra_routes: Vec::new(),
        }
    }
}

impl PurlyBuilder {
    /// Replaces the transport configuration (the prefix and origins set on the builder are
    /// applied on top of it).
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Serves the routes under `prefix` (`/sync` and `/sync/` are the same).
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = Some(prefix.to_owned());
        self
    }

    /// Lets browsers from `origin` (`scheme://host[:port]`, or `*`) open streams cross-site.
    pub fn allow_origin(mut self, origin: impl Into<String>) -> Self {
        self.origins.push(origin.into());
        self
    }

    /// Decides, for each stream, state or page request, whether it is denied (HTTP 403),
    /// read-only or read-write. Without a hook every request is read-write.
    pub fn authorize(
        mut self,
        hook: impl Fn(&RequestInfo<'_>) -> Decision + Send + Sync + 'static,
    ) -> Self {
        self.authorize = Some(Box::new(hook));
        self
    }

    /// Answers requests for exactly `path` (e.g. `/metrics`) with `handler`, before purly's
    /// routes: a name under the prefix that is then not a model (PROTOCOL.md section 12). For
    /// small read-only endpoints beside purly's, such as metrics or a health check; the
    /// `server` example serves Prometheus metrics this way.
    pub fn route(
        mut self,
        path: impl Into<String>,
        handler: impl Fn() -> Response<Body> + Send + Sync + 'static,
    ) -> Self {
        self.extra_routes.push(ExtraRoute {
            path: path.into(),
            handler: Box::new(handler),
        });
        self
    }

    /// The handler.
    pub fn build(self) -> Purly {
        let mut config = self.config;
        if let Some(prefix) = self.prefix {
            config.prefix = prefix;
        }
        config.prefix = normalize_prefix(&config.prefix);
        config.allowed_origins.extend(self.origins);
        Purly::from_parts(self.engine, config, self.authorize, self.extra_routes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_do_not_depend_on_their_order() {
        let purly = Purly::builder(Engine::default())
            .prefix("sync")
            .allow_origin("https://a.example")
            .config(ServerConfig::default())
            .build();
        assert_eq!(purly.config().prefix, "/sync/");
        assert_eq!(purly.config().allowed_origins, vec!["https://a.example"]);
    }
}
