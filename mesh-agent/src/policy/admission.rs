//! The whole inbound decision for one connection to one pod (docs/security.md):
//! never the agent's own ports, strict mTLS for plaintext, then
//! AuthorizationPolicy. The same decision admits a connection and reviews it
//! while it is open, always against the current snapshot.

use mesh_common::{INBOUND_PLAINTEXT_PORT, OUTBOUND_PORT, TUNNEL_PORT};

use super::{ConnectionAttrs, Decision, RequestAttrs, Verdict, evaluate, evaluate_request};
use crate::state::{MtlsMode, Snapshot, Workload};

/// The agent's listeners in every enrolled pod. As a target they would make the
/// agent dial itself inside the pod, over and over (issue 13, defect 1).
pub const AGENT_PORTS: [u16; 3] = [OUTBOUND_PORT, INBOUND_PLAINTEXT_PORT, TUNNEL_PORT];

/// How a connection reached the pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Through the tunnel (`15008`): the peer's identity is in the attributes.
    Tunnel,
    /// Plaintext steered to `15006`; `from_node` when its source is the
    /// node's own address (exempt on the pod's probe ports only).
    Plaintext { from_node: bool },
}

/// One inbound connection as the admission decision sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inbound {
    pub attrs: ConnectionAttrs,
    pub transport: Transport,
}

impl Inbound {
    pub fn tunnel(attrs: ConnectionAttrs) -> Self {
        Self {
            attrs,
            transport: Transport::Tunnel,
        }
    }

    pub fn plaintext(attrs: ConnectionAttrs, from_node: bool) -> Self {
        Self {
            attrs,
            transport: Transport::Plaintext { from_node },
        }
    }
}

/// Decides `conn` to `workload` (as the current snapshot has it), at
/// connection time: possibly `NeedsRequest`.
pub fn admit(snapshot: &Snapshot, workload: &Workload, conn: &Inbound) -> Decision {
    admit_with(snapshot, workload, conn, None)
}

/// Decides one request of a connection admitted with `NeedsRequest`: the
/// same checks, then the policies with the request's attributes.
pub fn admit_request(
    snapshot: &Snapshot,
    workload: &Workload,
    conn: &Inbound,
    request: &RequestAttrs,
) -> Decision {
    admit_with(snapshot, workload, conn, Some(request))
}

fn admit_with(
    snapshot: &Snapshot,
    workload: &Workload,
    conn: &Inbound,
    request: Option<&RequestAttrs>,
) -> Decision {
    let port = conn.attrs.destination_port;
    if AGENT_PORTS.contains(&port) {
        return Decision::from(Verdict::AgentPort);
    }
    if let Transport::Plaintext { from_node } = conn.transport {
        // The kubelet probes from the node's address, in plaintext, to the
        // ports the pod spec names; anything else from there (hostNetwork
        // pods, NodePort traffic SNATed to the node) is plaintext like any other.
        if from_node && workload.probe_ports.contains(&port) {
            return Decision::from(Verdict::NodeProbe);
        }
        if workload.mtls == MtlsMode::Strict {
            return Decision::from(Verdict::StrictMtls);
        }
    }
    match request {
        None => evaluate(snapshot, workload, &conn.attrs),
        Some(r) => evaluate_request(snapshot, workload, &conn.attrs, r),
    }
}

#[cfg(test)]
mod tests;
