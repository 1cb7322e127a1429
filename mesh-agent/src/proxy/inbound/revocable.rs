//! The app-side stream of an admitted connection, ended when a policy review
//! revokes the admission (docs/security.md): reads and writes fail from then
//! on, so the copy loop ends and both sides close.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::policy::AdmissionGuard;

pub struct Revocable<S> {
    inner: S,
    /// Keeps the connection under review while the stream lives.
    guard: Option<AdmissionGuard>,
    /// Registers the copy task's waker with the revocation.
    revoked: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
}

impl<S> Revocable<S> {
    /// `inner` under `guard`'s review; `None`: never revoked.
    pub fn new(inner: S, guard: Option<AdmissionGuard>) -> Self {
        let revoked = guard
            .as_ref()
            .map(|g| Box::pin(g.revoked().clone().cancelled_owned()));
        Self {
            inner,
            guard,
            revoked,
        }
    }

    pub fn is_revoked(&self) -> bool {
        self.guard.as_ref().is_some_and(AdmissionGuard::is_revoked)
    }

    /// `Some(error)` once revoked; otherwise wakes the task when it is.
    fn poll_revoked(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        let revoked = self.revoked.as_mut()?;
        revoked.as_mut().poll(cx).is_ready().then(|| {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "admission revoked by a policy review",
            )
        })
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Revocable<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.poll_revoked(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Revocable<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.poll_revoked(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;
    use crate::policy::{AdmittedConnections, ConnectionAttrs, Decision, Inbound, Verdict};

    fn admitted(registry: &AdmittedConnections) -> AdmissionGuard {
        let conn = Inbound::plaintext(
            ConnectionAttrs::plaintext(IpAddr::V4(Ipv4Addr::LOCALHOST), 80),
            false,
        );
        let allow = |_: &Inbound| Decision::from(Verdict::AllowedNoPolicy);
        registry.admit(&conn, allow).expect("admitted").0
    }

    #[tokio::test]
    async fn a_revocation_ends_a_pending_read() {
        let registry = AdmittedConnections::default();
        let (_app, upstream) = duplex(64);
        let mut stream = Revocable::new(upstream, Some(admitted(&registry)));
        let read = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            stream.read(&mut buf).await
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        registry.review(|_| Decision::from(Verdict::NotAllowed));
        let result = tokio::time::timeout(Duration::from_secs(2), read)
            .await
            .expect("the read ended")
            .expect("task");
        let err = result.expect_err("a revoked read fails");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
    }

    #[tokio::test]
    async fn an_unrevoked_stream_carries_data() {
        let registry = AdmittedConnections::default();
        let (mut app, upstream) = duplex(64);
        let mut stream = Revocable::new(upstream, Some(admitted(&registry)));
        stream.write_all(b"ping").await.expect("write");
        let mut buf = [0u8; 4];
        app.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"ping");
        assert!(!stream.is_revoked());
        registry.review(|_| Decision::from(Verdict::NotAllowed));
        assert!(stream.is_revoked());
        assert!(stream.write_all(b"x").await.is_err());
    }
}
