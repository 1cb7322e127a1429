//! Open connections kept under policy review: when the policies change, each
//! is decided again and those now denied are closed (issue: "when policies
//! change, open connections that are now denied are closed").
//!
//! The registry keeps a duplicate of each connection's app-side socket and
//! shuts it down to close it: the proxy's copy loop then sees end-of-file and
//! a failed write and ends on its own, so the data path carries no extra
//! per-read check for a rare event.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use socket2::SockRef;

use super::{Decision, Inbound};

struct Admitted {
    conn: Inbound,
    socket: OwnedFd,
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
    /// Registers an admitted connection whose app-side socket is `socket`.
    pub fn admit(&self, conn: Inbound, socket: &impl AsFd) -> io::Result<AdmissionGuard> {
        let socket = socket.as_fd().try_clone_to_owned()?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.inner.open).insert(id, Admitted { conn, socket });
        Ok(AdmissionGuard {
            registry: Arc::downgrade(&self.inner),
            id,
        })
    }

    /// Decides every open connection again with `decide`; shuts down those now
    /// denied and returns them.
    pub fn review(&self, decide: impl Fn(&Inbound) -> Decision) -> Vec<Revoked> {
        let mut open = lock(&self.inner.open);
        let mut revoked = Vec::new();
        open.retain(|_, admitted| {
            let decision = decide(&admitted.conn);
            if decision.is_allowed() {
                return true;
            }
            // Best effort: the peer may have closed it a moment ago.
            let _ = SockRef::from(&admitted.socket).shutdown(std::net::Shutdown::Both);
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
    use std::io::{Read, Write};
    use std::net::{IpAddr, Ipv4Addr};
    use std::os::unix::net::UnixStream;

    use super::*;
    use crate::policy::{ConnectionAttrs, Verdict};

    fn attrs(port: u16) -> Inbound {
        Inbound::plaintext(
            ConnectionAttrs::plaintext(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            false,
        )
    }

    fn decision(verdict: Verdict) -> Decision {
        Decision {
            verdict,
            audited: vec![],
        }
    }

    #[test]
    fn review_shuts_down_only_denied_connections() {
        let registry = AdmittedConnections::default();
        let (mut keep_app, keep_proxy) = UnixStream::pair().expect("socketpair");
        let (mut deny_app, deny_proxy) = UnixStream::pair().expect("socketpair");
        let _keep = registry.admit(attrs(1), &keep_proxy).expect("admit");
        let _deny = registry.admit(attrs(2), &deny_proxy).expect("admit");

        let revoked = registry.review(|a| {
            decision(if a.attrs.destination_port == 2 {
                Verdict::NotAllowed
            } else {
                Verdict::AllowedNoPolicy
            })
        });
        assert_eq!(revoked.len(), 1);
        assert_eq!(revoked[0].conn.attrs.destination_port, 2);
        assert_eq!(registry.len(), 1);

        // The denied socket reads end-of-file at its peer; the kept one works.
        let mut buf = [0u8; 4];
        assert_eq!(deny_app.read(&mut buf).expect("read"), 0);
        keep_app.write_all(b"ping").expect("write");
        let mut kept = &keep_proxy;
        kept.read_exact(&mut buf).expect("read kept");
        assert_eq!(&buf, b"ping");
    }

    #[test]
    fn dropping_the_guard_forgets_the_connection() {
        let registry = AdmittedConnections::default();
        let (_app, proxy) = UnixStream::pair().expect("socketpair");
        let guard = registry.admit(attrs(1), &proxy).expect("admit");
        assert_eq!(registry.len(), 1);
        drop(guard);
        assert!(registry.is_empty());
    }
}
