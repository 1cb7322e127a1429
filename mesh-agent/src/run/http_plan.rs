//! Where one HTTP request goes (docs/architecture.md, "L7 routing"): the
//! route rule `routing` picks, then an endpoint of the chosen backend from
//! the balancer, then how to reach it (the same answer `resolve` gives a
//! connection to that endpoint). Pure: a function of the snapshot, the
//! request head, a random roll and the balancer.

use std::net::SocketAddr;

use crate::config::resources::gateway::RequestMirror;
use crate::proxy::OutboundTarget;
use crate::proxy::http::{Declared, Forward, HttpService, Plan, detect};
use crate::routing::{self, Balancer, Decision, RequestHead, RespondReason};
use crate::state::{HttpRoute, ServiceKey, Snapshot, Workload};
use crate::telemetry::{ConnectionLabels, Reporter, ResponseFlag, SecurityPolicy};

use super::resolve::{PoolKey, resolve, workload_label};

/// Istio's `destination_service`: the Service's cluster DNS name.
pub fn service_host(key: &ServiceKey) -> String {
    format!("{}.{}.svc.cluster.local", key.name, key.namespace)
}

/// The Service port behind `original`, when its connections may be HTTP
/// (any port not declared as another protocol).
pub fn http_service(
    snapshot: &Snapshot,
    source: &Workload,
    original: SocketAddr,
) -> Option<HttpService> {
    let (service, port) = snapshot.service_by_addr(original)?;
    let declared = detect::declared(port);
    if declared == Declared::Opaque {
        return None;
    }
    Some(HttpService {
        service: service.key.clone(),
        port: port.port,
        declared,
        labels: ConnectionLabels {
            reporter: Reporter::Source,
            source_workload: workload_label(source),
            source_workload_namespace: source.key.namespace.clone(),
            destination_service: service_host(&service.key),
            ..Default::default()
        },
    })
}

/// The pod a request comes from, and what its tunnel gives.
pub struct Client<'a> {
    pub workload: &'a Workload,
    pub trust_domain: &'a str,
    pub security: SecurityPolicy,
}

/// The plan for one request from `client` to `service`.
pub fn plan_request(
    snapshot: &Snapshot,
    client: &Client<'_>,
    service: &HttpService,
    head: &RequestHead<'_>,
    roll: u32,
    balancer: &dyn Balancer,
) -> Plan<PoolKey> {
    let source = client.workload;
    let respond = |status, location, flag| Plan::Respond {
        status,
        location,
        flag,
        labels: service.labels.clone(),
    };
    let decision = routing::route(
        snapshot,
        &source.key.namespace,
        &service.service,
        service.port,
        head,
        roll,
    );
    let forward = match decision {
        Decision::Respond(r) => {
            let flag = match r.reason {
                RespondReason::NoRouteMatched => ResponseFlag::NoRouteFound,
                RespondReason::Redirect => ResponseFlag::None,
                RespondReason::NoBackend
                | RespondReason::InvalidBackend
                | RespondReason::UnsupportedFilter => ResponseFlag::NoHealthyUpstream,
            };
            return respond(r.status, r.location, flag);
        }
        Decision::Forward(f) => f,
    };
    let Some(endpoint) = balancer.pick(snapshot.endpoints(forward.service, forward.port)) else {
        let mut labels = service.labels.clone();
        labels.destination_service = service_host(forward.service);
        return Plan::Respond {
            status: http::StatusCode::SERVICE_UNAVAILABLE,
            location: None,
            flag: ResponseFlag::NoHealthyUpstream,
            labels,
        };
    };
    let addr = SocketAddr::new(endpoint.ip, endpoint.port);
    let mut route = resolve(
        snapshot,
        source,
        addr,
        &Default::default(),
        client.trust_domain,
        client.security,
    );
    route.labels.destination_service = service_host(forward.service);
    if matches!(route.target, OutboundTarget::Refuse(_)) {
        // `resolve` refuses only Service addresses, and an endpoint is not one.
        return respond(
            http::StatusCode::SERVICE_UNAVAILABLE,
            None,
            ResponseFlag::NoHealthyUpstream,
        );
    }
    let mirrors = forward
        .matched
        .map(|m| mirrors(snapshot, client, &forward, m.route, roll, balancer))
        .unwrap_or_default();
    Plan::Forward(Forward {
        target: route.target,
        labels: route.labels,
        path_match: forward.path_match(),
        filters: forward.filters.into_iter().cloned().collect(),
        timeouts: forward.timeouts,
        mirrors,
    })
}

/// Where the rule's RequestMirror filters send copies of this request: an
/// endpoint of each mirror Service, when the request falls in the filter's
/// sampled share (`percent` or `fraction`, all when neither is set). A
/// mirror Service without endpoints, or in another namespace that no
/// ReferenceGrant there permits (docs/config.md), gets none.
fn mirrors(
    snapshot: &Snapshot,
    client: &Client<'_>,
    forward: &routing::Forward<'_>,
    route: &HttpRoute,
    roll: u32,
    balancer: &dyn Balancer,
) -> Vec<OutboundTarget<PoolKey>> {
    let route_namespace = route.key.namespace.as_str();
    forward
        .mirrors()
        .filter_map(|f| f.request_mirror.as_ref())
        .filter(|m| sampled(m, roll))
        .filter_map(|m| {
            let backend = &m.backend_ref;
            let namespace = backend.namespace.as_deref().unwrap_or(route_namespace);
            let key = ServiceKey::new(namespace, &backend.name);
            if !snapshot.reference_permitted(route.kind, route_namespace, &key) {
                return None;
            }
            let port = u16::try_from(backend.port?).ok()?;
            let endpoint = balancer.pick(snapshot.endpoints(&key, port))?;
            let addr = SocketAddr::new(endpoint.ip, endpoint.port);
            let route = resolve(
                snapshot,
                client.workload,
                addr,
                &Default::default(),
                client.trust_domain,
                client.security,
            );
            (!matches!(route.target, OutboundTarget::Refuse(_))).then_some(route.target)
        })
        .collect()
}

/// Whether `roll` (uniform over u32) falls in the mirror's sampled share.
fn sampled(m: &RequestMirror, roll: u32) -> bool {
    let (num, den) = match (&m.fraction, m.percent) {
        (Some(f), _) => (f.numerator, f.denominator.unwrap_or(100)),
        (None, Some(p)) => (p, 100),
        (None, None) => return true,
    };
    if den <= 0 || num <= 0 {
        return false;
    }
    // A different slice of the roll than the weighted backend choice uses.
    let point = u64::from(roll.rotate_left(16)) * den as u64 / (u64::from(u32::MAX) + 1);
    point < num as u64
}

#[cfg(test)]
mod tests;
