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
///
/// One pointer beside the socket: every idle connection's task carries it, and tokio sizes
/// tasks in steps of 128 bytes.
#[derive(Debug)]
pub(crate) struct ReadAhead<S> {
    inner: S,
    /// `None`: reads go straight to the caller. Empty: the last read filled the caller's
    /// buffer, so the next one reads a chunk. Otherwise the chunk's bytes not handed out yet.
    ahead: Option<Box<Ahead>>,
}

#[derive(Debug, Default)]
struct Ahead {
    /// `bytes[start..]` is still to be handed out.
    bytes: Vec<u8>,
    start: usize,
}

impl Ahead {
    fn is_empty(&self) -> bool {
        self.start == self.bytes.len()
    }
}

impl<S> ReadAhead<S> {
    pub(crate) fn new(inner: S) -> Self {
        ReadAhead { inner, ahead: None }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let Some(ahead) = &mut this.ahead else {
            let before = buf.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            if buf.remaining() == 0 && buf.filled().len() > before {
                this.ahead = Some(Box::default());
            }
            return Poll::Ready(Ok(()));
        };
        if ahead.is_empty() {
            ahead.bytes.resize(CHUNK, 0);
            let mut chunk = ReadBuf::new(&mut ahead.bytes);
            let polled = Pin::new(&mut this.inner).poll_read(cx, &mut chunk);
            let len = chunk.filled().len();
            ahead.bytes.truncate(len);
            ahead.start = 0;
            if polled.is_pending() || len == 0 {
                // The burst is over (or the peer closed its side, which the caller learns
                // from this empty read): the next read goes straight to the caller's buffer.
                this.ahead = None;
                return polled;
            }
        }
        let rest = &ahead.bytes[ahead.start..];
        let len = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..len]);
        ahead.start += len;
        if ahead.is_empty() {
            if ahead.bytes.len() == CHUNK {
                // A full chunk: more may be waiting, so the next read takes a chunk again.
                ahead.bytes.clear();
                ahead.start = 0;
            } else {
                this.ahead = None;
            }
        }
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

    /// One read, failing the test if it does not return within 5 s.
    async fn read_within<R: AsyncRead + Unpin>(reader: &mut R, into: &mut [u8]) -> usize {
        tokio::time::timeout(std::time::Duration::from_secs(5), reader.read(into))
            .await
            .expect("the read returns")
            .unwrap()
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
            let n = read_within(&mut reader, &mut small).await;
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
            assert_eq!(read_within(&mut reader, &mut small).await, 100);
            assert_eq!(&small[..100], &[round; 100]);
            assert!(reader.ahead.is_none());
        }
    }
}
