//! Open connections kept under policy review (docs/security.md): when the
//! state changes, each is decided again and those now denied are closed.
//!
//! A connection is registered before it is decided and before the app is
//! dialled, so a review that runs at any point of its admission sees it
//! (issue 13, defect 12). Each carries a cancellation token that its data path
//! watches: a review that denies it cancels the token, which ends the
//! connection however far its admission got, without needing its socket.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio_util::sync::CancellationToken;

use super::{Decision, Inbound};

struct Admitted {
    conn: Inbound,
    revoke: CancellationToken,
}

#[derive(Default)]
struct Inner {
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Admitted>>,
}

/// One pod's admitted inbound connections; cheap to clone.
#[derive(Clone, Default)]
pub struct AdmittedConnections {
    inner: Arc<Inner>,
}

/// Keeps one connection in its registry until dropped.
pub struct AdmissionGuard {
    registry: Weak<Inner>,
    id: u64,
    revoked: CancellationToken,
}

impl AdmissionGuard {
    /// Cancelled when a review denies the connection.
    pub fn revoked(&self) -> &CancellationToken {
        &self.revoked
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked.is_cancelled()
    }
}

impl Drop for AdmissionGuard {
    fn drop(&mut self) {
        if let Some(inner) = self.registry.upgrade() {
            lock(&inner.open).remove(&self.id);
        }
    }
}

/// A connection that a review closed, and why.
#[derive(Debug)]
pub struct Revoked {
    pub conn: Inbound,
    pub decision: Decision,
}

impl AdmittedConnections {
    /// Registers `conn`, then decides it with `decide`, which must read the
    /// current state: a review that runs after the registration sees the
    /// connection; one that ran before it decided an older state than `decide`
    /// reads. `Err` (the guard dropped, the connection unregistered) when denied.
    pub fn admit(
        &self,
        conn: &Inbound,
        decide: impl FnOnce(&Inbound) -> Decision,
    ) -> Result<(AdmissionGuard, Decision), Decision> {
        let guard = self.register(conn.clone());
        // Not under the lock: a review may run meanwhile, and must see `conn`.
        let decision = decide(conn);
        if decision.is_allowed() {
            Ok((guard, decision))
        } else {
            Err(decision)
        }
    }

    fn register(&self, conn: Inbound) -> AdmissionGuard {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let revoke = CancellationToken::new();
        let guard = AdmissionGuard {
            registry: Arc::downgrade(&self.inner),
            id,
            revoked: revoke.clone(),
        };
        lock(&self.inner.open).insert(id, Admitted { conn, revoke });
        guard
    }

    /// Decides every open connection again with `decide`; revokes those now
    /// denied and returns them.
    pub fn review(&self, decide: impl Fn(&Inbound) -> Decision) -> Vec<Revoked> {
        let mut open = lock(&self.inner.open);
        let mut revoked = Vec::new();
        open.retain(|_, admitted| {
            let decision = decide(&admitted.conn);
            if decision.is_allowed() {
                return true;
            }
            admitted.revoke.cancel();
            revoked.push(Revoked {
                conn: admitted.conn.clone(),
                decision,
            });
            false
        });
        revoked
    }

    pub fn len(&self) -> usize {
        lock(&self.inner.open).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each critical section is one map operation; a panic cannot leave it torn.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::policy::{ConnectionAttrs, Verdict};

    fn conn(port: u16) -> Inbound {
        Inbound::plaintext(
            ConnectionAttrs::plaintext(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            false,
        )
    }

    fn allow(_: &Inbound) -> Decision {
        Decision::from(Verdict::AllowedNoPolicy)
    }

    fn deny(_: &Inbound) -> Decision {
        Decision::from(Verdict::NotAllowed)
    }

    #[test]
    fn review_revokes_only_denied_connections() {
        let registry = AdmittedConnections::default();
        let (keep, _) = registry.admit(&conn(1), allow).expect("admitted");
        let (denied, _) = registry.admit(&conn(2), allow).expect("admitted");

        let revoked = registry.review(|c| {
            Decision::from(if c.attrs.destination_port == 2 {
                Verdict::NotAllowed
            } else {
                Verdict::AllowedNoPolicy
            })
        });
        assert_eq!(revoked.len(), 1);
        assert_eq!(revoked[0].conn.attrs.destination_port, 2);
        assert!(denied.is_revoked() && !keep.is_revoked());
        assert_eq!(registry.len(), 1);
    }

    #[test]
    fn a_review_while_the_app_is_dialled_revokes_the_connection() {
        let registry = AdmittedConnections::default();
        let (guard, _) = registry.admit(&conn(1), allow).expect("admitted");
        // The policy changes before the dial completes: no socket exists yet.
        assert_eq!(registry.review(deny).len(), 1);
        assert!(guard.is_revoked(), "the dial's result must be refused");
    }

    #[test]
    fn a_review_during_the_decision_sees_the_connection() {
        let registry = AdmittedConnections::default();
        let mut seen = 0;
        // The decision read a state older than the review's: it allows, but
        // the review that ran meanwhile found the registered connection.
        let (guard, _) = registry
            .admit(&conn(1), |c| {
                seen = registry.review(deny).len();
                allow(c)
            })
            .expect("admitted");
        assert_eq!(seen, 1);
        assert!(guard.is_revoked());
    }

    #[test]
    fn a_denied_connection_is_not_kept() {
        let registry = AdmittedConnections::default();
        let decision = registry.admit(&conn(1), deny).err().expect("denied");
        assert_eq!(decision.verdict, Verdict::NotAllowed);
        assert!(registry.is_empty());
    }

    #[test]
    fn dropping_the_guard_forgets_the_connection() {
        let registry = AdmittedConnections::default();
        let (guard, _) = registry.admit(&conn(1), allow).expect("admitted");
        assert_eq!(registry.len(), 1);
        drop(guard);
        assert!(registry.is_empty());
    }
}
