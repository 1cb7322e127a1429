//! Per-pod bookkeeping shared by a pod's three listeners: a cap on concurrent
//! connections, and the shutdown signals used on unenrolment (stop accepting;
//! close what is open).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio_util::sync::CancellationToken;

/// Default cap on one pod's concurrent connections (all listeners together).
pub const DEFAULT_MAX_CONNECTIONS_PER_POD: usize = 16 * 1024;

struct Inner {
    name: String,
    max: usize,
    active: AtomicUsize,
    /// Cancelled to close the pod's open connections (and its listeners).
    connections: CancellationToken,
    /// Child of `connections`: cancelled alone, only the accept loops stop.
    listeners: CancellationToken,
}

/// One pod's connection set; cheap to clone, all clones share it.
#[derive(Clone)]
pub struct PodConnections {
    inner: Arc<Inner>,
}

impl PodConnections {
    pub fn new(name: impl Into<String>, max_connections: usize) -> Self {
        let connections = CancellationToken::new();
        let listeners = connections.child_token();
        Self {
            inner: Arc::new(Inner {
                name: name.into(),
                max: max_connections,
                active: AtomicUsize::new(0),
                connections,
                listeners,
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Claims a connection slot, or `None` when the pod is at its cap or shut.
    pub fn try_acquire(&self) -> Option<ConnectionPermit> {
        if self.inner.connections.is_cancelled() {
            return None;
        }
        let max = self.inner.max;
        self.inner
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(ConnectionPermit {
            pod: Arc::clone(&self.inner),
        })
    }

    /// Connections (and tunnel streams) currently open for this pod.
    pub fn active(&self) -> usize {
        self.inner.active.load(Ordering::Acquire)
    }

    /// Stops the accept loops; open connections continue until they end.
    pub fn stop_accepting(&self) {
        self.inner.listeners.cancel();
    }

    /// Stops the accept loops and closes every open connection of the pod.
    pub fn close_all(&self) {
        self.inner.connections.cancel();
    }

    pub fn is_closed(&self) -> bool {
        self.inner.connections.is_cancelled()
    }

    pub(crate) fn listeners_token(&self) -> &CancellationToken {
        &self.inner.listeners
    }

    pub(crate) fn connections_token(&self) -> &CancellationToken {
        &self.inner.connections
    }
}

/// A claimed slot; released on drop.
pub struct ConnectionPermit {
    pod: Arc<Inner>,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.pod.active.fetch_sub(1, Ordering::AcqRel);
    }
}
