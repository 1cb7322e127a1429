//! Per-pod bookkeeping shared by a pod's three listeners: a cap on concurrent
//! connections (within the node's), budgets for tunnel handshakes and peers,
//! and the shutdown signals used on unenrolment (stop accepting; close what is
//! open).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio_util::sync::CancellationToken;

use super::limits::{Budget, BudgetPermit, KeyedBudget, KeyedPermit, Limits, NodeBudgets};

/// A cap on one pod's concurrent connections for tests; the agent derives its
/// caps from its open-file limit (`Limits`).
pub const DEFAULT_MAX_CONNECTIONS_PER_POD: usize = 16 * 1024;

struct Inner {
    name: String,
    max: usize,
    active: AtomicUsize,
    /// The node-wide connection budget every pod's connections also take.
    node: Budget,
    /// TLS handshakes in progress on the tunnel port: the pod's, the node's,
    /// and per source address.
    handshakes: Budget,
    node_handshakes: Budget,
    sources: KeyedBudget<IpAddr>,
    /// Authenticated tunnel connections per peer address.
    peers: KeyedBudget<IpAddr>,
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
    /// A pod with a cap of `max_connections` and a node budget of its own.
    pub fn new(name: impl Into<String>, max_connections: usize) -> Self {
        // A node budget that never binds first: two descriptors a connection.
        let limits = Limits {
            pod_connections: max_connections,
            node_connections: max_connections.saturating_mul(2),
            ..Limits::default()
        };
        Self::with_limits(name, &limits, &NodeBudgets::new(&limits))
    }

    /// A pod with `limits`' per-pod budgets, inside the node's `node`.
    pub fn with_limits(name: impl Into<String>, limits: &Limits, node: &NodeBudgets) -> Self {
        let connections = CancellationToken::new();
        let listeners = connections.child_token();
        Self {
            inner: Arc::new(Inner {
                name: name.into(),
                max: limits.pod_connections,
                active: AtomicUsize::new(0),
                node: node.connections.clone(),
                handshakes: Budget::new(limits.pod_handshakes),
                node_handshakes: node.handshakes.clone(),
                sources: KeyedBudget::new(limits.source_handshakes),
                peers: KeyedBudget::new(limits.peer_connections),
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
        let node = self.inner.node.try_take(1)?;
        let max = self.inner.max;
        self.inner
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(ConnectionPermit {
            pod: Arc::clone(&self.inner),
            node,
        })
    }

    /// Claims a slot for a TLS handshake from `source` on the tunnel port:
    /// handshakes have budgets of their own, so peers that never finish one
    /// cannot fill the pod's connection cap (docs/security.md).
    pub fn try_handshake(&self, source: IpAddr) -> Option<HandshakePermit> {
        if self.inner.connections.is_cancelled() {
            return None;
        }
        let source = self.inner.sources.try_take(source)?;
        let pod = self.inner.handshakes.try_take(1)?;
        let node = self.inner.node_handshakes.try_take(1)?;
        Some(HandshakePermit {
            _source: source,
            _pod: pod,
            _node: node,
        })
    }

    /// Claims one of the authenticated tunnel connections `peer` may hold.
    pub fn try_peer(&self, peer: IpAddr) -> Option<KeyedPermit<IpAddr>> {
        self.inner.peers.try_take(peer)
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

/// A claimed slot (one descriptor of the node's budget); released on drop.
pub struct ConnectionPermit {
    pod: Arc<Inner>,
    node: BudgetPermit,
}

/// A handshake in progress; released on drop.
pub struct HandshakePermit {
    _source: KeyedPermit<IpAddr>,
    _pod: BudgetPermit,
    _node: BudgetPermit,
}

impl ConnectionPermit {
    /// Takes a second descriptor from the node's budget, for a connection
    /// that dials its own upstream socket (plaintext inbound, direct
    /// outbound); `false` when the node has none left.
    pub fn take_upstream_descriptor(&mut self) -> bool {
        self.node.grow(1)
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.pod.active.fetch_sub(1, Ordering::AcqRel);
    }
}
