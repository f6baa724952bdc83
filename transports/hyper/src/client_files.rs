//! The JavaScript client, served at `{prefix}purly-client.js` with its TypeScript
//! declarations at `{prefix}purly-client.d.ts` (PROTOCOL.md section 9). The files live in
//! `src/page/`, publishable as they are; purly's page imports the module.

use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::Response;

use crate::body::Body;
use crate::route::ClientFile;

/// The client module's source.
pub const CLIENT_MODULE_SOURCE: &str = include_str!("page/purly-client.js");
/// The client's TypeScript declarations.
pub const CLIENT_TYPES_SOURCE: &str = include_str!("page/purly-client.d.ts");

pub(crate) fn response(file: ClientFile) -> Response<Body> {
    let (text, content_type) = match file {
        ClientFile::Module => (CLIENT_MODULE_SOURCE, "text/javascript; charset=utf-8"),
        ClientFile::Types => (CLIENT_TYPES_SOURCE, "text/plain; charset=utf-8"),
    };
    let mut response = Response::new(Body::from(text));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Revalidated on every load: a server upgrade never leaves a stale client in a browser.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}
