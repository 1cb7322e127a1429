//! A pool of tunnel connections keyed by the caller (Weft uses source identity,
//! destination identity and destination IP). Each connection carries up to
//! `max_streams_per_connection` streams; another is dialled when every pooled
//! one is full or closed. Concurrent requests that find no usable connection
//! share a dial, as many as the new connection will take; more start another
//! dial instead of queueing behind it. Idle connections close themselves (see
//! `client`).

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use prometheus::IntGauge;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::OnceCell;
use tracing::debug;

use super::client::{StreamSlot, TunnelClient};
use super::{PeerCertificate, TunnelConfig, TunnelError, TunnelStream};

type DialCell = Arc<OnceCell<Result<TunnelClient, Arc<io::Error>>>>;

struct Entry {
    clients: Vec<TunnelClient>,
    /// Dials in flight for this key; a waiter joins one with room for it.
    dialing: Vec<Dial>,
}

struct Dial {
    cell: DialCell,
    /// Requests waiting on this dial.
    waiters: usize,
}

struct Inner<K> {
    config: TunnelConfig,
    entries: Mutex<HashMap<K, Entry>>,
    gauge: Option<IntGauge>,
    /// Set by `close_all`: no connection is handed out or kept any more.
    closed: AtomicBool,
}

/// Cheap to clone; all clones share the connections.
pub struct Pool<K> {
    inner: Arc<Inner<K>>,
}

impl<K> Clone for Pool<K> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

enum Pick {
    Ready(TunnelClient, StreamSlot),
    Dial(DialCell),
}

impl<K> Pool<K>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
{
    /// `gauge`, when given, tracks the number of open pooled connections.
    pub fn new(config: TunnelConfig, gauge: Option<IntGauge>) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                entries: Mutex::new(HashMap::new()),
                gauge,
                closed: AtomicBool::new(false),
            }),
        }
    }

    pub fn config(&self) -> &TunnelConfig {
        &self.inner.config
    }

    /// Opens a CONNECT stream to `target` on a pooled connection for `key`,
    /// calling `dial` for a new transport only when no pooled connection can
    /// take the stream and no dial for `key` is already under way.
    pub async fn connect<F, Fut, T>(
        &self,
        key: &K,
        target: SocketAddr,
        dial: F,
    ) -> Result<TunnelStream, TunnelError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = io::Result<T>>,
        T: AsyncRead + AsyncWrite + PeerCertificate + Unpin + Send + 'static,
    {
        self.connect_early(key, target, Bytes::new(), dial).await
    }

    /// As `connect`, sending `early` (bytes the client already sent) right
    /// behind the CONNECT request instead of after the peer's answer, which
    /// saves a round trip for protocols where the client speaks first.
    pub async fn connect_early<F, Fut, T>(
        &self,
        key: &K,
        target: SocketAddr,
        early: Bytes,
        dial: F,
    ) -> Result<TunnelStream, TunnelError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = io::Result<T>>,
        T: AsyncRead + AsyncWrite + PeerCertificate + Unpin + Send + 'static,
    {
        // A connection that looked usable may turn out closed (GOAWAY, reset);
        // one retry on a fresh pick covers that race without looping forever.
        // Early bytes may already have reached the app through the failed
        // stream, so then only a stream the peer refused unprocessed is retried.
        let mut retried = false;
        loop {
            let (client, slot, fresh) = self.checkout(key, &dial).await?;
            match client.connect_with(target, slot, early.clone()).await {
                Err(TunnelError::Stream(e))
                    if !fresh
                        && !retried
                        && (early.is_empty() || e.reason() == Some(h2::Reason::REFUSED_STREAM)) =>
                {
                    debug!(error = %e, "pooled tunnel connection failed, retrying once");
                    retried = true;
                }
                other => return other,
            }
        }
    }

    /// A connection with a reserved stream slot; `true` when it was just dialled.
    async fn checkout<F, Fut, T>(
        &self,
        key: &K,
        dial: &F,
    ) -> Result<(TunnelClient, StreamSlot, bool), TunnelError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = io::Result<T>>,
        T: AsyncRead + AsyncWrite + PeerCertificate + Unpin + Send + 'static,
    {
        loop {
            if self.inner.closed.load(Ordering::Acquire) {
                return Err(TunnelError::Unavailable);
            }
            let cell = match self.pick(key) {
                Pick::Ready(client, slot) => return Ok((client, slot, false)),
                Pick::Dial(cell) => cell,
            };
            let result = cell
                .get_or_init(|| self.dial_new(key.clone(), dial))
                .await
                .clone();
            self.finish_dial(key, &cell, &result);
            let client = result.map_err(TunnelError::Dial)?;
            // Waiters beyond the new connection's stream limit go round again.
            if let Some(slot) = client.try_reserve() {
                return Ok((client, slot, true));
            }
        }
    }

    fn pick(&self, key: &K) -> Pick {
        let mut entries = lock(&self.inner.entries);
        let entry = entries.entry(key.clone()).or_insert_with(|| Entry {
            clients: Vec::new(),
            dialing: Vec::new(),
        });
        entry.clients.retain(|c| !c.is_closed());
        for client in entry.clients.iter().filter(|c| c.has_capacity()) {
            if let Some(slot) = client.try_reserve() {
                return Pick::Ready(client.clone(), slot);
            }
        }
        let room = self.streams_per_connection();
        if let Some(dial) = entry.dialing.iter_mut().find(|d| d.waiters < room) {
            dial.waiters += 1;
            return Pick::Dial(Arc::clone(&dial.cell));
        }
        let cell = Arc::new(OnceCell::new());
        entry.dialing.push(Dial {
            cell: Arc::clone(&cell),
            waiters: 1,
        });
        Pick::Dial(cell)
    }

    /// Streams one new connection can take.
    fn streams_per_connection(&self) -> usize {
        let config = &self.inner.config;
        let max = config.max_streams_per_connection.max(1);
        match config.max_connection_streams {
            Some(uses) => max.min(usize::try_from(uses).unwrap_or(usize::MAX).max(1)),
            None => max,
        }
    }

    async fn dial_new<F, Fut, T>(&self, key: K, dial: &F) -> Result<TunnelClient, Arc<io::Error>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = io::Result<T>>,
        T: AsyncRead + AsyncWrite + PeerCertificate + Unpin + Send + 'static,
    {
        let config = &self.inner.config;
        let connect = async {
            let io = dial().await?;
            let weak = Arc::downgrade(&self.inner);
            // Counted before the handshake, so the driver's decrement (which
            // may run as soon as the handshake is done) never comes first;
            // `Uncounted` takes it back if the handshake fails or is dropped.
            let mut pending = Uncounted(self.inner.gauge.clone());
            if let Some(g) = &pending.0 {
                g.inc();
            }
            let gauge = pending.0.clone();
            let client = TunnelClient::handshake(io, config, move || {
                if let Some(g) = gauge {
                    g.dec();
                }
                forget_closed(&weak, &key);
            })
            .await?;
            pending.0 = None;
            Ok(client)
        };
        match tokio::time::timeout(config.connect_timeout, connect).await {
            Ok(res) => res.map_err(Arc::new),
            Err(_) => Err(Arc::new(io::Error::new(
                io::ErrorKind::TimedOut,
                "tunnel dial timed out",
            ))),
        }
    }

    /// Moves a finished dial's connection into the pool (once, by whichever
    /// waiter gets here first) and clears the in-flight marker.
    fn finish_dial(&self, key: &K, cell: &DialCell, result: &Result<TunnelClient, Arc<io::Error>>) {
        let mut entries = lock(&self.inner.entries);
        if self.inner.closed.load(Ordering::Acquire) {
            // A dial that was under way when the pool closed: its connection
            // goes, and so does the entry a late pick may have made.
            if let Ok(client) = result {
                client.close();
            }
            entries.clear();
            return;
        }
        let Some(entry) = entries.get_mut(key) else {
            return;
        };
        if let Some(i) = entry
            .dialing
            .iter()
            .position(|d| Arc::ptr_eq(&d.cell, cell))
        {
            entry.dialing.swap_remove(i);
            if let Ok(client) = result {
                entry.clients.push(client.clone());
            }
        }
    }

    /// Closes every pooled connection, each as soon as its open streams end,
    /// and hands out none from now on. For a pool whose connections leave from
    /// one pod's netns, when that pod goes: their sockets would otherwise keep
    /// its netns (and the pod's address on the wire) alive until they idle out.
    pub fn close_all(&self) {
        let entries = {
            let mut entries = lock(&self.inner.entries);
            self.inner.closed.store(true, Ordering::Release);
            std::mem::take(&mut *entries)
        };
        for client in entries.into_values().flat_map(|e| e.clients) {
            client.close();
        }
    }

    /// Open pooled connections across all keys (closed ones not yet swept may
    /// be included until the next access).
    pub fn connection_count(&self) -> usize {
        lock(&self.inner.entries)
            .values()
            .map(|e| e.clients.iter().filter(|c| !c.is_closed()).count())
            .sum()
    }
}

/// A gauge increment to undo unless the connection came up.
struct Uncounted(Option<IntGauge>);

impl Drop for Uncounted {
    fn drop(&mut self) {
        if let Some(g) = self.0.take() {
            g.dec();
        }
    }
}

/// Drops closed connections of `key`, and the key itself once it holds nothing.
fn forget_closed<K: Eq + Hash>(inner: &Weak<Inner<K>>, key: &K) {
    let Some(inner) = inner.upgrade() else {
        return;
    };
    let mut entries = lock(&inner.entries);
    if let Some(entry) = entries.get_mut(key) {
        entry.clients.retain(|c| !c.is_closed());
        if entry.clients.is_empty() && entry.dialing.is_empty() {
            entries.remove(key);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The map stays consistent even if a holder panicked: every critical
    // section is a handful of Vec/HashMap operations.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
