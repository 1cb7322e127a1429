//! The transport under TLS: rustls reads at most 4 KiB per call, one system
//! call each; a read buffer in front takes up to `READ_BUFFER` per system call
//! instead, which a bulk stream needs (measured: `cargo xtask bench`). The
//! buffer is allocated only once the handshake is done, so a peer that never
//! authenticates costs no buffer (docs/security.md, resource limits).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes read from the socket at once under TLS (a few records' worth).
const READ_BUFFER: usize = 64 * 1024;

/// A transport with a read buffer that exists only after `start_buffering`.
#[derive(Debug)]
pub struct Buffered<T> {
    io: T,
    /// Empty until `start_buffering`: reads go straight to the caller.
    buf: Box<[u8]>,
    pos: usize,
    filled: usize,
}

impl<T> Buffered<T> {
    pub fn new(io: T) -> Self {
        Self {
            io,
            buf: Box::default(),
            pos: 0,
            filled: 0,
        }
    }

    /// Allocates the read buffer (idempotent).
    pub fn start_buffering(&mut self) {
        if self.buf.is_empty() {
            self.buf = vec![0u8; READ_BUFFER].into_boxed_slice();
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// Whether the read buffer exists (tests).
    pub fn is_buffering(&self) -> bool {
        !self.buf.is_empty()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Buffered<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos == this.filled {
            // Nothing buffered: a large read, or no buffer yet, goes direct.
            if out.remaining() >= this.buf.len() {
                return Pin::new(&mut this.io).poll_read(cx, out);
            }
            let mut rb = ReadBuf::new(&mut this.buf);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut rb))?;
            this.filled = rb.filled().len();
            this.pos = 0;
        }
        let n = (this.filled - this.pos).min(out.remaining());
        out.put_slice(&this.buf[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Buffered<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
