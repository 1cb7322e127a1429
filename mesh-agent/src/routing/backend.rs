//! Choosing where a request goes: a weighted backendRef of the matched rule,
//! then an endpoint of that backend through a [`Balancer`].

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::state::{Endpoint, RouteBackend};

/// The backendRef that `roll` (uniform in `0..u32::MAX`) selects, in
/// proportion to the weights; `None` when every weight is 0 (then no
/// backend may receive traffic).
pub fn pick_weighted(backends: &[RouteBackend], roll: u32) -> Option<&RouteBackend> {
    let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut point = u64::from(roll) * total / (u64::from(u32::MAX) + 1);
    backends.iter().find(|b| {
        let w = u64::from(b.weight);
        if point < w {
            return true;
        }
        point -= w;
        false
    })
}

/// Picks one endpoint of a backend per request. Round robin today; the
/// interface is where least-request, outlier ejection and locality go
/// (docs/architecture.md, "L7 routing").
pub trait Balancer: Send + Sync {
    fn pick<'e>(&self, endpoints: &'e [Endpoint]) -> Option<&'e Endpoint>;
}

#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Balancer for RoundRobin {
    fn pick<'e>(&self, endpoints: &'e [Endpoint]) -> Option<&'e Endpoint> {
        if endpoints.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        endpoints.get(n % endpoints.len())
    }
}
