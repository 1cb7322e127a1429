//! Budgets that keep the data path inside the agent's descriptors and memory
//! (docs/architecture.md, "Limits"; docs/security.md): how big they are, from
//! the open-file limit, and counters that refuse once one is spent.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Descriptors kept back for what is not a proxied connection: listeners
/// (four per pod), kube watches, the metrics and admin servers, eBPF maps.
const MIN_RESERVE: u64 = 256;

/// Streams a Weft client puts on one tunnel connection
/// (`TunnelConfig::max_streams_per_connection`): one peer gets enough tunnel
/// connections to use the whole pod cap (a client pod with 10,000 connections
/// to one server pod is ordinary), and no more.
const CLIENT_STREAMS_PER_CONNECTION: usize = 100;

/// Node-wide bytes for copy buffers beyond their starting 16 KiB: room for
/// about 130 bulk directions at the full 256 KiB; the rest copy in 16 KiB.
const BUFFER_GROWTH: usize = 32 * 1024 * 1024;

/// The sizes of every budget, derived from the open-file limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Descriptors for proxied connections, all pods together: each takes one
    /// per socket it holds (a tunnelled outbound connection or a tunnel
    /// stream one, a plaintext or direct connection two, a tunnel connection
    /// one), so the budget is exact rather than a worst case.
    pub node_connections: usize,
    /// Proxied connections and tunnel streams of one pod.
    pub pod_connections: usize,
    /// TLS handshakes in progress on the tunnel port, all pods together; they
    /// take no connection slot until the peer is authenticated.
    pub node_handshakes: usize,
    /// The same, for one pod.
    pub pod_handshakes: usize,
    /// The same, for one pod and one source address.
    pub source_handshakes: usize,
    /// Authenticated tunnel connections into one pod from one peer address
    /// (a pod's address and identity); each carries at most
    /// `max_concurrent_streams` streams.
    pub peer_connections: usize,
    /// Bytes by which copy buffers may grow past their starting size, all
    /// connections together.
    pub buffer_growth: usize,
}

impl Limits {
    /// Budgets for an agent allowed `open_files` descriptors: a reserve, a
    /// sixteenth for handshakes (one descriptor each), and the rest for the
    /// sockets of proxied connections, so a cap refuses before `accept` or
    /// `connect` can fail with EMFILE.
    pub fn from_open_files(open_files: u64) -> Limits {
        let reserve = (open_files / 10).max(MIN_RESERVE).min(open_files / 2);
        let usable = open_files - reserve;
        let handshakes = usable / 16;
        let connections = usable - handshakes;
        let node_connections = to_usize(connections).max(1);
        let node_handshakes = to_usize(handshakes).max(1);
        let pod_handshakes = node_handshakes.min(128);
        Limits {
            node_connections,
            pod_connections: node_connections,
            node_handshakes,
            pod_handshakes,
            source_handshakes: (pod_handshakes / 4).max(1),
            peer_connections: node_connections
                .div_ceil(CLIENT_STREAMS_PER_CONNECTION)
                .clamp(4, 256),
            buffer_growth: BUFFER_GROWTH,
        }
    }
}

impl Default for Limits {
    /// What the CI machines' hard limit gives.
    fn default() -> Self {
        Limits::from_open_files(20_000)
    }
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// A counted budget; cheap to clone, all clones share the count.
#[derive(Clone, Debug)]
pub struct Budget {
    inner: Arc<BudgetInner>,
}

#[derive(Debug)]
struct BudgetInner {
    max: usize,
    used: AtomicUsize,
}

impl Budget {
    pub fn new(max: usize) -> Self {
        Self {
            inner: Arc::new(BudgetInner {
                max,
                used: AtomicUsize::new(0),
            }),
        }
    }

    /// Takes `n` units, or `None` when fewer than `n` are left.
    pub fn try_take(&self, n: usize) -> Option<BudgetPermit> {
        let max = self.inner.max;
        self.inner
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&u| u <= max)
            })
            .ok()?;
        Some(BudgetPermit {
            budget: Arc::clone(&self.inner),
            n,
        })
    }

    pub fn used(&self) -> usize {
        self.inner.used.load(Ordering::Acquire)
    }
}

/// Units taken from a `Budget`, given back on drop.
#[derive(Debug)]
pub struct BudgetPermit {
    budget: Arc<BudgetInner>,
    n: usize,
}

impl BudgetPermit {
    /// Takes `n` more units from the same budget into this permit.
    pub fn grow(&mut self, n: usize) -> bool {
        let max = self.budget.max;
        let taken = self
            .budget
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&u| u <= max)
            })
            .is_ok();
        if taken {
            self.n += n;
        }
        taken
    }
}

impl Drop for BudgetPermit {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.n, Ordering::AcqRel);
    }
}

/// A budget per key (a source address, a peer): at most `max` each.
pub struct KeyedBudget<K: Eq + Hash> {
    inner: Arc<KeyedInner<K>>,
}

struct KeyedInner<K> {
    max: usize,
    used: Mutex<HashMap<K, usize>>,
}

impl<K: Eq + Hash> Clone for KeyedBudget<K> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K: Eq + Hash + Clone> KeyedBudget<K> {
    pub fn new(max: usize) -> Self {
        Self {
            inner: Arc::new(KeyedInner {
                max,
                used: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// One unit for `key`, or `None` when `key` has `max` already.
    pub fn try_take(&self, key: K) -> Option<KeyedPermit<K>> {
        let mut used = lock(&self.inner.used);
        let n = used.entry(key.clone()).or_insert(0);
        if *n >= self.inner.max {
            return None;
        }
        *n += 1;
        Some(KeyedPermit {
            budget: Arc::clone(&self.inner),
            key: Some(key),
        })
    }

    /// Units `key` holds.
    pub fn used(&self, key: &K) -> usize {
        lock(&self.inner.used).get(key).copied().unwrap_or(0)
    }
}

/// A unit of a `KeyedBudget`, given back on drop.
pub struct KeyedPermit<K: Eq + Hash> {
    budget: Arc<KeyedInner<K>>,
    key: Option<K>,
}

impl<K: Eq + Hash> Drop for KeyedPermit<K> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let mut used = lock(&self.budget.used);
        if let Some(n) = used.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                // Keys come and go with peers: keep only those holding units.
                used.remove(&key);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each critical section is one map update: consistent even after a panic.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The node-wide budgets every pod shares; cheap to clone.
#[derive(Clone, Debug)]
pub struct NodeBudgets {
    pub connections: Budget,
    pub handshakes: Budget,
}

impl NodeBudgets {
    pub fn new(limits: &Limits) -> Self {
        Self {
            connections: Budget::new(limits.node_connections),
            handshakes: Budget::new(limits.node_handshakes),
        }
    }
}

#[cfg(test)]
mod tests;
