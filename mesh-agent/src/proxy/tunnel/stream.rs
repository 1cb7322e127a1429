//! One HTTP/2 CONNECT stream as a byte stream (`AsyncRead + AsyncWrite`), the
//! same type on the client and the server side, so `copy` bridges it like a
//! socket.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use h2::{Reason, RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::client::StreamSlot;

/// Largest chunk handed to h2 per write.
const WRITE_BLOCK: usize = crate::proxy::copy::DEFAULT_MAX_BUFFER_SIZE;

/// A tunnelled byte stream. Dropping it without `shutdown` resets the HTTP/2
/// stream (RST_STREAM CANCEL), which the peer sees as an aborted connection.
pub struct TunnelStream {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// Received but not yet read.
    pending: Bytes,
    /// END_STREAM sent.
    shut_down: bool,
    /// Holds a stream slot of a pooled client connection while alive.
    _slot: Option<StreamSlot>,
}

impl TunnelStream {
    pub(super) fn new(send: SendStream<Bytes>, recv: RecvStream, slot: Option<StreamSlot>) -> Self {
        Self {
            send,
            recv,
            pending: Bytes::new(),
            shut_down: false,
            _slot: slot,
        }
    }

    fn poll_reset_error(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        Poll::Ready(match ready!(self.send.poll_reset(cx)) {
            Ok(Reason::NO_ERROR) | Ok(Reason::CANCEL) | Ok(Reason::STREAM_CLOSED) => {
                io::ErrorKind::BrokenPipe.into()
            }
            Ok(reason) => io::Error::new(io::ErrorKind::ConnectionReset, h2::Error::from(reason)),
            Err(e) => h2_to_io(e),
        })
    }
}

impl std::fmt::Debug for TunnelStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelStream")
            .field("stream_id", &self.send.stream_id())
            .field("pending", &self.pending.len())
            .finish()
    }
}

pub(crate) fn h2_to_io(e: h2::Error) -> io::Error {
    if e.is_io() {
        match e.into_io() {
            Some(io) => io,
            None => io::Error::other("h2 I/O error"),
        }
    } else if e.is_reset() {
        io::Error::new(io::ErrorKind::ConnectionReset, e)
    } else {
        io::Error::other(e)
    }
}

impl AsyncRead for TunnelStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.pending.is_empty() {
            match ready!(this.recv.poll_data(cx)) {
                // End of stream: EOF.
                None => return Poll::Ready(Ok(())),
                // Its window is given back as it is read, below: what the
                // peer may send is bounded by what the reader takes, so a
                // reader that stalls holds at most one window (docs/security.md).
                Some(Ok(data)) => this.pending = data,
                Some(Err(e)) => {
                    return Poll::Ready(match e.reason() {
                        // A graceful end without END_STREAM still reads as EOF.
                        Some(Reason::NO_ERROR) => Ok(()),
                        _ => Err(h2_to_io(e)),
                    });
                }
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending.split_to(n));
        let _ = this.recv.flow_control().release_capacity(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for TunnelStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let want = buf.len().min(WRITE_BLOCK);
        loop {
            let cap = this.send.capacity();
            if cap > 0 {
                let n = cap.min(want);
                // A chunk of exactly what is sent, freed once h2 has written
                // it: an idle stream holds no write buffer (a reusable block
                // of WRITE_BLOCK kept per stream cost every idle connection
                // up to 256 KiB; docs/architecture.md, "Limits").
                let chunk = Bytes::copy_from_slice(&buf[..n]);
                return match this.send.send_data(chunk, false) {
                    Ok(()) => Poll::Ready(Ok(n)),
                    Err(_) => this.poll_reset_error(cx).map(Err),
                };
            }
            this.send.reserve_capacity(want);
            match ready!(this.send.poll_capacity(cx)) {
                Some(Ok(_)) => continue,
                // The stream can no longer send: find out why.
                None | Some(Err(_)) => return this.poll_reset_error(cx).map(Err),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // h2 writes out queued frames on its own connection task.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.shut_down {
            return Poll::Ready(Ok(()));
        }
        if this.send.send_data(Bytes::new(), true).is_ok() {
            this.shut_down = true;
            return Poll::Ready(Ok(()));
        }
        // Already reset or the connection is gone.
        Poll::Ready(match ready!(this.send.poll_reset(cx)) {
            Ok(Reason::NO_ERROR) => Ok(()),
            Ok(reason) => Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                h2::Error::from(reason),
            )),
            Err(e) => Err(h2_to_io(e)),
        })
    }
}
