//! [`ReadAhead`]: the connection's socket, read in large chunks while frames pour in, although
//! tungstenite asks for at most its small read buffer at a time.
//!
//! An idle connection should hold no read buffer worth the name, so tungstenite's is small
//! (`ServerConfig::read_buffer_bytes`, 512 bytes). But tungstenite never asks the socket for
//! more than that at once: a client sending a burst of frames would cost one system call per
//! 512 bytes. This wrapper reads straight into tungstenite's buffer while that drains the
//! socket (a frame at a time: no copy, no allocation), and once a read fills it — more is
//! likely waiting — reads up to [`CHUNK`] bytes at once into a buffer of its own, hands them
//! out on the next reads, and frees that buffer as soon as it is empty.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most read from the socket at once while a client's frames pour in.
const CHUNK: usize = 16 << 10;

/// An I/O object whose reads are batched once they fill the caller's buffer (see the module
/// docs). Writes go straight through.
#[derive(Debug)]
pub(crate) struct ReadAhead<S> {
    inner: S,
    /// Read from the socket, not yet handed out: `bytes[start..]`. Only while non-empty.
    ahead: Option<Ahead>,
    /// The last read filled the caller's buffer: the next one reads a whole chunk.
    filled: bool,
}

#[derive(Debug)]
struct Ahead {
    bytes: Vec<u8>,
    start: usize,
}

impl<S> ReadAhead<S> {
    pub(crate) fn new(inner: S) -> Self {
        ReadAhead {
            inner,
            ahead: None,
            filled: false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.ahead.is_none() && this.filled {
            let mut bytes = vec![0; CHUNK];
            let mut chunk = ReadBuf::new(&mut bytes);
            if Pin::new(&mut this.inner)
                .poll_read(cx, &mut chunk)?
                .is_pending()
            {
                // The burst is over: the next read goes straight to the caller's buffer.
                this.filled = false;
                return Poll::Pending;
            }
            let len = chunk.filled().len();
            bytes.truncate(len);
            this.filled = len == CHUNK;
            if len > 0 {
                this.ahead = Some(Ahead { bytes, start: 0 });
            } else {
                // The peer closed its side: nothing to hand out but the end.
                return Poll::Ready(Ok(()));
            }
        }
        if let Some(ahead) = &mut this.ahead {
            let rest = &ahead.bytes[ahead.start..];
            let len = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..len]);
            ahead.start += len;
            if ahead.start == ahead.bytes.len() {
                this.ahead = None;
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        this.filled = buf.remaining() == 0 && buf.filled().len() > before;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, data)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Counts the reads that reach the inner reader.
    struct Counted<R> {
        inner: R,
        reads: usize,
    }

    impl<R: AsyncRead + Unpin> AsyncRead for Counted<R> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.reads += 1;
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    #[tokio::test]
    async fn a_burst_is_read_in_chunks_and_every_byte_comes_out_once_in_order() {
        let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let (mut client, server) = tokio::io::duplex(1 << 20);
        client.write_all(&sent).await.unwrap();
        drop(client);
        let mut reader = ReadAhead::new(Counted {
            inner: server,
            reads: 0,
        });
        let mut received = Vec::new();
        let mut small = [0u8; 512];
        loop {
            let n = reader.read(&mut small).await.unwrap();
            if n == 0 {
                break;
            }
            received.extend_from_slice(&small[..n]);
        }
        assert_eq!(received, sent);
        // 512 bytes at a time would take 391 reads; chunks take about 200,000 / 16 KiB.
        assert!(
            reader.inner.reads < 30,
            "{} reads of the socket",
            reader.inner.reads
        );
        assert!(
            reader.ahead.is_none(),
            "the chunk buffer is freed once empty"
        );
    }

    #[tokio::test]
    async fn a_lone_small_frame_is_read_straight_into_the_callers_buffer() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut reader = ReadAhead::new(server);
        let mut small = [0u8; 512];
        for round in 0..3u8 {
            client.write_all(&[round; 100]).await.unwrap();
            assert_eq!(reader.read(&mut small).await.unwrap(), 100);
            assert_eq!(&small[..100], &[round; 100]);
            assert!(reader.ahead.is_none() && !reader.filled);
        }
    }
}
