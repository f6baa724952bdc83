//! [`UpgradedIo`]: the socket of an upgraded connection, taken out of hyper's `Upgraded`
//! when it is a TCP stream.
//!
//! hyper hands an upgraded connection over as its transport boxed behind a trait object,
//! with the bytes it had read past the request: two allocations and a wrapper kept for the
//! connection's life. A TCP stream (served by this crate's accept loop, or by any server that
//! hands hyper's HTTP/1 connection hyper-util's `TokioIo<TcpStream>` itself) is unwrapped
//! instead, and the bytes read ahead go to the WebSocket's input. Any other transport (one
//! wrapped again, as by hyper-util's HTTP/1-or-2 detection) stays as hyper hands it over.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// An upgraded connection's transport.
#[derive(Debug)]
pub(crate) enum UpgradedIo {
    /// The TCP stream itself.
    Tcp(TcpStream),
    /// Any other transport, as hyper hands it over.
    Other(Box<TokioIo<Upgraded>>),
}

impl UpgradedIo {
    /// `upgraded`'s transport, and the bytes hyper read past the request (frames a client
    /// sent before our answer).
    pub(crate) fn new(upgraded: Upgraded) -> (UpgradedIo, Bytes) {
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => (UpgradedIo::Tcp(parts.io.into_inner()), parts.read_buf),
            Err(upgraded) => (
                UpgradedIo::Other(Box::new(TokioIo::new(upgraded))),
                Bytes::new(),
            ),
        }
    }
}

impl AsyncRead for UpgradedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpgradedIo::Tcp(io) => Pin::new(io).poll_read(cx, buf),
            UpgradedIo::Other(io) => Pin::new(&mut **io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpgradedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpgradedIo::Tcp(io) => Pin::new(io).poll_write(cx, buf),
            UpgradedIo::Other(io) => Pin::new(&mut **io).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpgradedIo::Tcp(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            UpgradedIo::Other(io) => Pin::new(&mut **io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpgradedIo::Tcp(io) => io.is_write_vectored(),
            UpgradedIo::Other(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpgradedIo::Tcp(io) => Pin::new(io).poll_flush(cx),
            UpgradedIo::Other(io) => Pin::new(&mut **io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpgradedIo::Tcp(io) => Pin::new(io).poll_shutdown(cx),
            UpgradedIo::Other(io) => Pin::new(&mut **io).poll_shutdown(cx),
        }
    }
}
