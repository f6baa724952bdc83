//! A path the handler answers itself, before purly's routes (see
//! [`PurlyBuilder::route`](crate::PurlyBuilder::route)): what the builder collects and the
//! service consults, so that neither needs the other's module.

use hyper::Response;

use crate::body::Body;

/// One such path and its handler.
pub(crate) struct ExtraRoute {
    pub(crate) path: String,
    pub(crate) handler: Box<dyn Fn() -> Response<Body> + Send + Sync>,
}
