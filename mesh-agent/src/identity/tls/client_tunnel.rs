//! A tunnel's client TLS stream that also knows when its own certificate
//! ends. The server closes a tunnel connection at the client certificate's
//! notAfter (docs/security.md), so the client must stop opening streams on it
//! before either end's certificate expires, not only the server's.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::client;

use crate::proxy::tunnel::PeerCertificate;

pub struct ClientTunnelTls<T> {
    inner: client::TlsStream<T>,
    own_not_after: Option<SystemTime>,
}

impl<T> ClientTunnelTls<T> {
    /// `own_not_after`: the notAfter of the certificate the handshake used (or
    /// an earlier one: it is read before the handshake picks the current one).
    pub fn new(inner: client::TlsStream<T>, own_not_after: Option<SystemTime>) -> Self {
        Self {
            inner,
            own_not_after: own_not_after.map(whole_seconds),
        }
    }
}

/// X.509 encodes notAfter in whole seconds, and the server closes the
/// connection at the notAfter it parsed from our certificate; the in-memory
/// value keeps the sub-second part, which would retire the connection up to a
/// second after the server closed it.
fn whole_seconds(t: SystemTime) -> SystemTime {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    UNIX_EPOCH + Duration::from_secs(secs)
}

impl<T> PeerCertificate for ClientTunnelTls<T> {
    fn peer_not_after(&self) -> Option<SystemTime> {
        self.inner.peer_not_after()
    }

    fn valid_until(&self) -> Option<SystemTime> {
        match (self.peer_not_after(), self.own_not_after) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for ClientTunnelTls<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ClientTunnelTls<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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
    use super::*;

    #[test]
    fn not_after_is_read_as_the_certificate_encodes_it() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_900);
        assert_eq!(
            whole_seconds(t),
            UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        );
    }
}
