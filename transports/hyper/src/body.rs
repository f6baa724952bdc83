//! [`Body`]: the body of every response purly writes, whole (a page, a state, an error) or a
//! stream of chunks (the event stream, PROTOCOL.md section 10).

use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;
use hyper::body::{Bytes, Frame, SizeHint};

/// The body of every response purly writes. Build a whole one with `Body::from(...)` (text,
/// bytes) or [`Body::default`] (empty); purly's event stream is a body of chunks sent as they
/// come.
pub struct Body(Kind);

enum Kind {
    Whole(Option<Bytes>),
    Chunks(Pin<Box<dyn Stream<Item = Bytes> + Send>>),
}

impl Body {
    /// A body of the chunks `stream` yields, each sent as soon as it comes; it ends with the
    /// stream.
    pub(crate) fn chunks(stream: impl Stream<Item = Bytes> + Send + 'static) -> Self {
        Body(Kind::Chunks(Box::pin(stream)))
    }
}

impl Default for Body {
    fn default() -> Self {
        Body(Kind::Whole(None))
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Self {
        Body(Kind::Whole((!bytes.is_empty()).then_some(bytes)))
    }
}

impl From<String> for Body {
    fn from(text: String) -> Self {
        Body::from(Bytes::from(text))
    }
}

impl From<&'static str> for Body {
    fn from(text: &'static str) -> Self {
        Body::from(Bytes::from_static(text.as_bytes()))
    }
}

impl From<Vec<u8>> for Body {
    fn from(bytes: Vec<u8>) -> Self {
        Body::from(Bytes::from(bytes))
    }
}

impl From<&'static [u8]> for Body {
    fn from(bytes: &'static [u8]) -> Self {
        Body::from(Bytes::from_static(bytes))
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut self.get_mut().0 {
            Kind::Whole(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Chunks(stream) => stream
                .as_mut()
                .poll_next(cx)
                .map(|chunk| chunk.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.0, Kind::Whole(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Whole(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Kind::Chunks(_) => SizeHint::default(),
        }
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Whole(bytes) => f
                .debug_struct("Body")
                .field("len", &bytes.as_ref().map_or(0, Bytes::len))
                .finish(),
            Kind::Chunks(_) => f.write_str("Body(chunks)"),
        }
    }
}
