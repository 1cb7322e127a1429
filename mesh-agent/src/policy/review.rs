//! Open connections kept under policy review (docs/security.md): when the
//! state changes, each is decided again and those now denied are closed.
//!
//! A connection is registered before it is decided and before the app is
//! dialled, so a review that runs at any point of its admission sees it
//! (issue 13, defect 12). Each carries a cancellation token that its data path
//! watches: a review that denies it cancels the token, which ends the
//! connection however far its admission got, without needing its socket.
//!
//! A connection whose requests are decided one by one (`NeedsRequest`) stays
//! open while the review still says `NeedsRequest`: each request reads the
//! current policies. A byte-copied one is closed when a review says
//! `NeedsRequest`, since its requests cannot be checked: its client
//! reconnects and is parsed (docs/security.md, "L7 authorization").

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio_util::sync::CancellationToken;

use super::{Decision, Inbound};

struct Admitted {
    conn: Inbound,
    revoke: CancellationToken,
    /// Admitted with `NeedsRequest`: its requests are decided one by one.
    /// Until the decision marks it, a review treats it as byte-copied.
    parses_http: bool,
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
    /// The connection, when each of its requests must be decided.
    parsed: Option<Inbound>,
}

impl AdmissionGuard {
    /// Cancelled when a review denies the connection.
    pub fn revoked(&self) -> &CancellationToken {
        &self.revoked
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked.is_cancelled()
    }

    /// `Some(connection)` when it was admitted with `NeedsRequest`: the data
    /// path must parse HTTP and decide each request of it.
    pub fn decides_requests(&self) -> Option<&Inbound> {
        self.parsed.as_ref()
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
        let mut guard = self.register(conn.clone());
        // Not under the lock: a review may run meanwhile, and must see `conn`.
        let decision = decide(conn);
        if decision.is_allowed() {
            Ok((guard, decision))
        } else if decision.needs_request() {
            // Absent when a review meanwhile revoked it (the guard says so).
            if let Some(a) = lock(&self.inner.open).get_mut(&guard.id) {
                a.parses_http = true;
            }
            guard.parsed = Some(conn.clone());
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
            parsed: None,
        };
        let admitted = Admitted {
            conn,
            revoke,
            parses_http: false,
        };
        lock(&self.inner.open).insert(id, admitted);
        guard
    }

    /// Decides every open connection again with `decide`; revokes those now
    /// denied and returns them.
    pub fn review(&self, decide: impl Fn(&Inbound) -> Decision) -> Vec<Revoked> {
        let mut open = lock(&self.inner.open);
        let mut revoked = Vec::new();
        open.retain(|_, admitted| {
            let decision = decide(&admitted.conn);
            if decision.is_allowed() || (admitted.parses_http && decision.needs_request()) {
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

    fn needs_request(_: &Inbound) -> Decision {
        Decision::from(Verdict::NeedsRequest)
    }

    #[test]
    fn a_parsed_connection_stays_while_its_requests_are_decided() {
        let registry = AdmittedConnections::default();
        let (parsed, decision) = registry.admit(&conn(1), needs_request).expect("admitted");
        assert!(decision.needs_request());
        assert_eq!(parsed.decides_requests(), Some(&conn(1)));
        assert!(registry.review(needs_request).is_empty());
        assert!(registry.review(allow).is_empty());
        assert_eq!(
            registry.review(deny).len(),
            1,
            "a connection-level denial ends it"
        );
        assert!(parsed.is_revoked());
    }

    /// A byte-copied connection cannot have its requests checked: when a
    /// policy change makes the outcome depend on them, it is closed.
    #[test]
    fn a_byte_copied_connection_closes_when_requests_start_to_matter() {
        let registry = AdmittedConnections::default();
        let (copied, _) = registry.admit(&conn(1), allow).expect("admitted");
        assert_eq!(copied.decides_requests(), None);
        assert_eq!(registry.review(needs_request).len(), 1);
        assert!(copied.is_revoked());
    }

    /// A review between registration and the decision sees a connection not
    /// yet marked as parsed, and fails closed.
    #[test]
    fn a_review_before_the_mark_treats_the_connection_as_byte_copied() {
        let registry = AdmittedConnections::default();
        let (guard, _) = registry
            .admit(&conn(1), |c| {
                registry.review(needs_request);
                needs_request(c)
            })
            .expect("admitted");
        assert!(guard.is_revoked());
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
