//! The inbound admission rules of one pod: the tunnel's peer identity, strict
//! mTLS, and AuthorizationPolicy, decided at this (the destination) agent.
//! Admitted connections stay under review: a policy change that denies them
//! closes them. A connection whose outcome depends on HTTP attributes has
//! each of its requests decided here too (`authorize_request`).

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::net::TcpStream;
use tokio_rustls::server;
use tokio_util::either::Either;
use tracing::{debug, info, warn};

use super::pod_context::{NetnsDialer, PodContext};
use super::resolve::workload_label;
use crate::identity::tls;
use crate::policy::{
    self, AdmissionGuard, ConnectionAttrs, Decision, Inbound, RequestAttrs, Verdict,
};
use crate::proxy::InboundContext;
use crate::proxy::inbound::Admission;
use crate::proxy::tunnel::Refusal;
use crate::state::{Snapshot, Workload};
use crate::telemetry::{ConnectionLabels, Reporter, SecurityPolicy};

/// Who is at the other end of a tunnel connection.
#[derive(Clone, Debug)]
pub struct TunnelPeer {
    pub addr: SocketAddr,
    /// The SPIFFE id its certificate proved; `None` only when the tunnel runs
    /// without TLS (a benchmark setting).
    pub identity: Option<String>,
}

impl TunnelPeer {
    fn attrs(&self, port: u16) -> ConnectionAttrs {
        match &self.identity {
            Some(id) => ConnectionAttrs::authenticated(id, self.addr.ip(), port),
            None => ConnectionAttrs::plaintext(self.addr.ip(), port),
        }
    }
}

impl PodContext {
    /// This pod as the current snapshot has it (labels may have changed since
    /// enrolment, and policies select by label).
    fn current_workload<'a>(&'a self, snapshot: &'a Snapshot) -> &'a Workload {
        self.workload
            .ips
            .first()
            .and_then(|ip| snapshot.workload_by_ip(*ip))
            .filter(|w| w.key == self.workload.key)
            .unwrap_or(&self.workload)
    }

    /// Registers `conn` for review, then decides it against the current
    /// snapshot (in that order: docs/security.md); logs refusals and audits
    /// with the deciding policy. The guard keeps it under review.
    fn admit(&self, conn: &Inbound) -> Result<AdmissionGuard, Refusal> {
        let admitted = self.admitted.admit(conn, |conn| {
            let snapshot = self.state.current();
            policy::admit(&snapshot, self.current_workload(&snapshot), conn)
        });
        let decision = match admitted {
            Ok((guard, decision)) => {
                log_audits(&self.workload, &conn.attrs, &decision);
                return Ok(guard);
            }
            Err(decision) => decision,
        };
        log_audits(&self.workload, &conn.attrs, &decision);
        // A remote peer triggers this at will: debug only, the refusal is counted.
        debug!(pod = %self.workload.key, connection = %conn.attrs, decision = %decision.verdict, "connection refused");
        let reason = format!("{}: {}", conn.attrs, decision.verdict);
        Err(match decision.verdict {
            Verdict::AgentPort => Refusal::bad_request(reason),
            _ => Refusal::forbidden(reason),
        })
    }

    fn is_node(&self, peer: IpAddr) -> bool {
        Some(peer) == self.node_addr
    }

    fn inbound_labels(&self, peer: IpAddr, principal: Option<&str>) -> ConnectionLabels {
        let snapshot = self.state.current();
        let source = snapshot.workload_by_ip(peer);
        ConnectionLabels {
            reporter: Reporter::Destination,
            source_workload: source.map(|w| workload_label(w)).unwrap_or_default(),
            source_workload_namespace: source.map(|w| w.key.namespace.clone()).unwrap_or_default(),
            source_principal: principal.unwrap_or_default().to_owned(),
            destination_workload: workload_label(&self.workload),
            destination_workload_namespace: self.workload.key.namespace.clone(),
            destination_principal: if principal.is_some() {
                self.identity.to_string()
            } else {
                String::new()
            },
            connection_security_policy: if principal.is_some() {
                SecurityPolicy::MutualTls
            } else {
                SecurityPolicy::None
            },
            ..Default::default()
        }
    }

    /// Decides every open inbound connection again under the current policies
    /// and closes those now denied.
    pub fn review_connections(&self) {
        if self.admitted.is_empty() {
            return;
        }
        let snapshot = self.state.current();
        let workload = self.current_workload(&snapshot);
        let revoked = self
            .admitted
            .review(|conn| policy::admit(&snapshot, workload, conn));
        for r in revoked {
            warn!(pod = %self.workload.key, connection = %r.conn.attrs, decision = %r.decision.verdict, "open connection closed: policy now denies it");
            self.metrics.revoked();
        }
    }
}

fn log_audits(workload: &Workload, attrs: &ConnectionAttrs, decision: &Decision) {
    for policy in &decision.audited {
        info!(pod = %workload.key, connection = %attrs, %policy, allowed = decision.is_allowed(), "audit");
    }
}

impl InboundContext for PodContext {
    type Dialer = NetnsDialer;
    type TunnelIo = Either<TcpStream, server::TlsStream<tls::Buffered<TcpStream>>>;
    type Peer = TunnelPeer;

    fn dialer(&self) -> &NetnsDialer {
        &self.dialer
    }

    async fn accept_tunnel(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> io::Result<(Self::TunnelIo, TunnelPeer)> {
        let _ = stream.set_nodelay(true);
        let Some(certs) = &self.certs else {
            let peer = TunnelPeer {
                addr: peer,
                identity: None,
            };
            return Ok((Either::Left(stream), peer));
        };
        let config = certs.server_config(&self.identity).ok_or_else(|| {
            io::Error::other(format!("no certificate held for {}", self.identity))
        })?;
        let (tls, id) = tls::accept(stream, config).await?;
        let peer = TunnelPeer {
            addr: peer,
            identity: Some(id.to_string()),
        };
        Ok((Either::Right(tls), peer))
    }

    fn authorize(&self, peer: &TunnelPeer, target: SocketAddr) -> Result<Admission, Refusal> {
        if !self.workload.ips.contains(&target.ip()) {
            return Err(Refusal::bad_request(format!(
                "{target} is not an address of pod {}",
                self.workload.key
            )));
        }
        let review = self.admit(&Inbound::tunnel(peer.attrs(target.port())))?;
        Ok(Admission {
            labels: self.inbound_labels(peer.addr.ip(), peer.identity.as_deref()),
            review: Some(review),
        })
    }

    fn inbound_plaintext_allowed(
        &self,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Result<Admission, Refusal> {
        let conn = ConnectionAttrs::plaintext(peer.ip(), local.port());
        let review = self.admit(&Inbound::plaintext(conn, self.is_node(peer.ip())))?;
        Ok(Admission {
            labels: self.inbound_labels(peer.ip(), None),
            review: Some(review),
        })
    }

    fn authorize_request(&self, conn: &Inbound, request: &RequestAttrs) -> bool {
        let snapshot = self.state.current();
        let workload = self.current_workload(&snapshot);
        let decision = policy::admit_request(&snapshot, workload, conn, request);
        for policy in &decision.audited {
            info!(pod = %self.workload.key, connection = %conn.attrs, %request, %policy, allowed = decision.is_allowed(), "audit");
        }
        if !decision.is_allowed() {
            // A remote peer triggers this at will: debug only (counted by the caller).
            debug!(pod = %self.workload.key, connection = %conn.attrs, %request, decision = %decision.verdict, "request denied");
        }
        decision.is_allowed()
    }
}
