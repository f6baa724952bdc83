//! A connection's other end held in memory, for the tests and the fuzz target of
//! [`WebSocket`](super::WebSocket): it never wakes a task, so a poll that would wait returns
//! `Pending` at once.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The peer's end of the connection: what it sends, in the chunks it arrives in; what the
/// server wrote, taken at most `write_limit` bytes per write.
#[derive(Default)]
pub(crate) struct Wire {
    pub(crate) chunks: VecDeque<Vec<u8>>,
    /// After the chunks: the end of the stream (true) or nothing yet (false).
    pub(crate) eof: bool,
    pub(crate) written: Vec<u8>,
    pub(crate) write_limit: Option<usize>,
    pub(crate) vectored: bool,
}

impl AsyncRead for Wire {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let Some(mut chunk) = self.chunks.pop_front() else {
            return if self.eof {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            };
        };
        let n = chunk.len().min(buf.remaining());
        buf.put_slice(&chunk[..n]);
        if n < chunk.len() {
            self.chunks.push_front(chunk.split_off(n));
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Wire {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = buf.len().min(self.write_limit.unwrap_or(usize::MAX));
        self.written.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if !self.vectored {
            let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
            return self.poll_write(cx, first);
        }
        let mut left = self.write_limit.unwrap_or(usize::MAX);
        let mut n = 0;
        for buf in bufs {
            let take = buf.len().min(left);
            self.written.extend_from_slice(&buf[..take]);
            left -= take;
            n += take;
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.vectored
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
