//! The TCP series of an upstream connection the source agent opens for HTTP
//! (docs/architecture.md, "Request telemetry"): each is a meshed connection
//! like an L4 one, so `istio_tcp_*` keep counting every connection and byte
//! at the source as well as the destination.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::telemetry::ConnectionMetrics;

/// `inner`, counting bytes written to the endpoint as received from the
/// client and bytes read from it as sent back (the L4 path's directions).
pub struct Metered<T> {
    inner: T,
    metrics: ConnectionMetrics,
}

impl<T> Metered<T> {
    pub fn new(inner: T, metrics: ConnectionMetrics) -> Self {
        Self { inner, metrics }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Metered<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let n = buf.filled().len() - before;
        self.metrics.add_sent(n as u64);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Metered<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.inner).poll_write(cx, data))?;
        self.metrics.add_received(n as u64);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
