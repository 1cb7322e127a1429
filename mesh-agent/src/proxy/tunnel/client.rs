//! The tunnel client: one HTTP/2 connection over a caller-supplied transport,
//! opening a `CONNECT` stream per proxied connection.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use h2::client::SendRequest;
use http::{Method, Request, StatusCode, Version};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tracing::debug;

use super::expiry::{PeerCertificate, retire_before};
use super::keepalive::keepalive;
use super::stream::{TunnelStream, h2_to_io};
use super::{TunnelConfig, TunnelError};

/// Set in `ConnState::active` once the connection must not take new streams.
const CLOSED: usize = 1 << (usize::BITS - 1);

/// Stream accounting shared by a client handle, its streams and its driver.
#[derive(Debug)]
pub(crate) struct ConnState {
    /// Open streams, plus the `CLOSED` bit.
    active: AtomicUsize,
    /// Bumped on every reservation; the idle check compares it across ticks.
    uses: AtomicU64,
    max_streams: usize,
    /// No new stream after this instant (`TunnelConfig::max_connection_age`).
    retire_at: Option<Instant>,
    /// No new stream once `uses` reaches this (`max_connection_streams`).
    max_uses: Option<u64>,
    /// Woken when a closed connection's last stream ends, so it can go.
    drained: Notify,
}

impl ConnState {
    fn try_reserve(self: &Arc<Self>) -> Option<StreamSlot> {
        if self.retire_at.is_some_and(|at| Instant::now() >= at) {
            self.mark_closed();
            return None;
        }
        let max = self.max_streams;
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n & CLOSED == 0 && n < max).then_some(n + 1)
            })
            .ok()?;
        let uses = self.uses.fetch_add(1, Ordering::Relaxed) + 1;
        if self.max_uses.is_some_and(|max| uses >= max) {
            // This stream is its last: close to new ones now, so the pool
            // dials the next connection without trying this one first.
            self.active.fetch_or(CLOSED, Ordering::AcqRel);
        }
        Some(StreamSlot {
            conn: Arc::clone(self),
        })
    }

    fn mark_closed(&self) {
        if self.active.fetch_or(CLOSED, Ordering::AcqRel) == 0 {
            self.drained.notify_one();
        }
    }

    /// Completes once the connection is closed to new streams and has none.
    async fn drained(&self) {
        loop {
            let notified = self.drained.notified();
            if self.active.load(Ordering::Acquire) == CLOSED {
                return;
            }
            notified.await;
        }
    }

    /// Closes only if no stream is open; true when it did.
    fn close_if_unused(&self) -> bool {
        self.active
            .compare_exchange(0, CLOSED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.active.load(Ordering::Acquire) & CLOSED != 0
    }

    pub(crate) fn has_capacity(&self) -> bool {
        let n = self.active.load(Ordering::Acquire);
        n & CLOSED == 0 && n < self.max_streams
    }
}

/// One stream's claim on its connection, released on drop.
#[derive(Debug)]
pub(crate) struct StreamSlot {
    conn: Arc<ConnState>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if self.conn.active.fetch_sub(1, Ordering::AcqRel) == CLOSED + 1 {
            self.conn.drained.notify_one();
        }
    }
}

/// A handle on one tunnel connection; cheap to clone. The connection lives in a
/// task of its own until the peer closes it, it fails, or it is idle for the
/// configured timeout.
#[derive(Clone, Debug)]
pub struct TunnelClient {
    sender: SendRequest<Bytes>,
    state: Arc<ConnState>,
    connect_timeout: Duration,
}

impl TunnelClient {
    /// Runs the HTTP/2 handshake over `io` and spawns the connection's driver.
    /// `on_close` runs once when the connection has ended. New streams stop at
    /// `config.max_connection_age`, and ahead of the certificates' expiry
    /// (`PeerCertificate::valid_until`), when the server closes it.
    pub async fn handshake<T>(
        io: T,
        config: &TunnelConfig,
        on_close: impl FnOnce() + Send + 'static,
    ) -> io::Result<Self>
    where
        T: AsyncRead + AsyncWrite + PeerCertificate + Unpin + Send + 'static,
    {
        let now = Instant::now();
        let by_age = config.max_connection_age.map(|age| now + age);
        let by_certs = io
            .valid_until()
            .map(|until| now + retire_before(until, SystemTime::now()));
        let retire_at = match (by_age, by_certs) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let (sender, mut connection) = h2::client::Builder::new()
            .initial_window_size(config.stream_window)
            .initial_connection_window_size(config.connection_window)
            .max_frame_size(config.max_frame_size)
            .max_send_buffer_size(config.max_send_buffer)
            .max_header_list_size(config.max_header_list_size)
            .enable_push(false)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(h2_to_io)?;
        let state = Arc::new(ConnState {
            active: AtomicUsize::new(0),
            uses: AtomicU64::new(0),
            max_streams: config.max_streams_per_connection.max(1),
            retire_at,
            max_uses: config.max_connection_streams.map(|n| n.max(1)),
            drained: Notify::new(),
        });
        let driver_state = Arc::clone(&state);
        let idle = config.pool_idle_timeout;
        let ping = keepalive(
            connection.ping_pong(),
            config.keepalive_interval,
            config.keepalive_timeout,
        );
        tokio::spawn(async move {
            tokio::select! {
                res = connection => match res {
                    Ok(()) => debug!("tunnel connection closed"),
                    Err(e) => debug!(error = %e, "tunnel connection ended"),
                },
                () = idle_watch(&driver_state, idle) => debug!("closing idle tunnel connection"),
                () = driver_state.drained() => debug!("closing a retired tunnel connection"),
                () = ping => {}
            }
            driver_state.mark_closed();
            on_close();
        });
        Ok(Self {
            sender,
            state,
            connect_timeout: config.connect_timeout,
        })
    }

    /// Takes no new stream; the connection ends once its open streams have.
    pub(crate) fn close(&self) {
        self.state.mark_closed();
    }

    /// Whether this connection can no longer open streams.
    pub fn is_closed(&self) -> bool {
        self.state.is_closed()
    }

    pub(crate) fn has_capacity(&self) -> bool {
        self.state.has_capacity()
    }

    pub(crate) fn try_reserve(&self) -> Option<StreamSlot> {
        self.state.try_reserve()
    }

    /// Opens a `CONNECT` stream to `target` on this connection.
    pub async fn connect(&self, target: SocketAddr) -> Result<TunnelStream, TunnelError> {
        let slot = self.try_reserve().ok_or(TunnelError::Unavailable)?;
        self.connect_with(target, slot, Bytes::new()).await
    }

    /// Opens the stream and sends `early` on it at once, before the answer.
    pub(crate) async fn connect_with(
        &self,
        target: SocketAddr,
        slot: StreamSlot,
        early: Bytes,
    ) -> Result<TunnelStream, TunnelError> {
        let open = async {
            let mut sender = self.sender.clone().ready().await?;
            let request = Request::builder()
                .method(Method::CONNECT)
                .version(Version::HTTP_2)
                .uri(target.to_string())
                .body(())
                .map_err(|_| TunnelError::Unavailable)?;
            let (response, mut send) = sender.send_request(request, false)?;
            if !early.is_empty() {
                // Within the stream's initial window, so h2 sends it now; the
                // peer buffers it until its upstream is connected.
                send.send_data(early, false)?;
            }
            let response = response.await?;
            if response.status() != StatusCode::OK {
                return Err(TunnelError::Status(response.status()));
            }
            Ok(TunnelStream::new(send, response.into_body(), Some(slot)))
        };
        match tokio::time::timeout(self.connect_timeout, open).await {
            Ok(res) => res,
            Err(_) => Err(TunnelError::Timeout),
        }
    }
}

/// Completes once the connection had no stream and no new reservation for a
/// whole `idle` period, and has been marked closed.
async fn idle_watch(state: &ConnState, idle: Duration) {
    let mut seen = state.uses.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(idle).await;
        let now = state.uses.load(Ordering::Relaxed);
        if now == seen && state.close_if_unused() {
            return;
        }
        seen = now;
    }
}
