//! Where an outbound connection goes: the state's answer for one original
//! destination (docs/architecture.md, "One connection, in the code"). A Service address picks an endpoint (round robin; L7
//! balancing comes with the http module); a meshed destination is reached through
//! the tunnel on its pod IP, anything else directly.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use mesh_common::TUNNEL_PORT;

use crate::identity::SpiffeId;
use crate::proxy::{OutboundTarget, Route};
use crate::state::{Snapshot, Workload};
use crate::telemetry::{ConnectionLabels, Reporter, SecurityPolicy};

/// The tunnel pool's key: (source identity, destination identity, destination IP).
pub type PoolKey = (SpiffeId, SpiffeId, std::net::IpAddr);

fn spiffe_id(workload: &Workload, trust_domain: &str) -> SpiffeId {
    SpiffeId::for_workload(
        trust_domain,
        &workload.key.namespace,
        &workload.service_account,
    )
}

/// Istio's `*_workload` label: the `app` label when present, else the pod name.
pub fn workload_label(workload: &Workload) -> String {
    workload
        .labels
        .get("app")
        .or_else(|| workload.labels.get("app.kubernetes.io/name"))
        .cloned()
        .unwrap_or_else(|| workload.key.name.clone())
}

/// `trust_domain` names the SPIFFE ids; `security` is what the tunnel gives
/// (mutual TLS, or nothing in the plaintext benchmark setting).
pub fn resolve(
    snapshot: &Snapshot,
    source: &Workload,
    original: SocketAddr,
    round_robin: &AtomicUsize,
    trust_domain: &str,
    security: SecurityPolicy,
) -> Route<PoolKey> {
    let mut labels = ConnectionLabels {
        reporter: Reporter::Source,
        source_workload: workload_label(source),
        source_workload_namespace: source.key.namespace.clone(),
        ..Default::default()
    };
    let target = match snapshot.service_by_addr(original) {
        Some((service, port)) => {
            labels.destination_service = format!(
                "{}.{}.svc.cluster.local",
                service.key.name, service.key.namespace
            );
            let endpoints = snapshot.endpoints(&service.key, port.port);
            if endpoints.is_empty() {
                return Route {
                    target: OutboundTarget::Refuse(format!(
                        "service {} has no ready endpoints for port {}",
                        service.key, port.port
                    )),
                    labels,
                };
            }
            let endpoint =
                &endpoints[round_robin.fetch_add(1, Ordering::Relaxed) % endpoints.len()];
            SocketAddr::new(endpoint.ip, endpoint.port)
        }
        None => original,
    };
    let destination = snapshot.workload_by_ip(target.ip()).filter(|w| w.meshed);
    let target = match destination {
        Some(dst) => {
            let (src_id, dst_id) = (
                spiffe_id(source, trust_domain),
                spiffe_id(dst, trust_domain),
            );
            labels.destination_workload = workload_label(dst);
            labels.destination_workload_namespace = dst.key.namespace.clone();
            labels.connection_security_policy = security;
            if security == SecurityPolicy::MutualTls {
                labels.source_principal = src_id.to_string();
                labels.destination_principal = dst_id.to_string();
            }
            OutboundTarget::Tunnel {
                tunnel_addr: SocketAddr::new(target.ip(), TUNNEL_PORT),
                target,
                pool_key: (src_id, dst_id, target.ip()),
            }
        }
        None => OutboundTarget::Direct(target),
    };
    Route { target, labels }
}
