//! Builds a [`Snapshot`] from a [`ResourceSet`]. The input is assumed validated
//! (`config::validate`); anything still malformed is skipped, never a panic.

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf, sync::Arc};

use k8s_openapi::{
    api::core::v1::{Container, Namespace, Pod, PodSpec},
    apimachinery::pkg::util::intstr::IntOrString,
};

use super::{
    endpoint_slices, endpoints,
    grant::ReferenceGrant,
    model::{MtlsMode, NamespaceInfo, ObjectKey, Service, ServicePort, TargetPort, Workload},
    policy::{AuthorizationPolicy, TrafficPolicy},
    route_build as routes,
    snapshot::{Snapshot, SnapshotData},
};
use crate::config::resources::{
    ANNOTATION_NETNS, DEFAULT_NAMESPACE, LABEL_MESH, LABEL_MTLS, ResourceSet,
};

/// Builds the snapshot (generation 0) for a resource set.
pub fn build(set: &ResourceSet) -> Snapshot {
    let mut namespaces: Vec<NamespaceInfo> = set.namespaces.iter().map(namespace_info).collect();
    if !namespaces.iter().any(|n| n.name == DEFAULT_NAMESPACE) {
        namespaces.push(NamespaceInfo {
            name: DEFAULT_NAMESPACE.into(),
            labels: BTreeMap::new(),
            meshed: false,
            mtls: MtlsMode::Permissive,
        });
    }
    let ns_by_name: std::collections::HashMap<&str, &NamespaceInfo> =
        namespaces.iter().map(|n| (n.name.as_str(), n)).collect();

    let workloads: Vec<Arc<Workload>> = set
        .pods
        .iter()
        .map(|p| {
            let ns = namespace_of(&p.metadata.namespace);
            Arc::new(workload(p, ns_by_name.get(ns).copied()))
        })
        .collect();
    let services: Vec<Arc<Service>> = set.services.iter().map(|s| Arc::new(service(s))).collect();
    let endpoints = match &set.endpoint_slices {
        None => endpoints::compute(&set.pods, &workloads, &services),
        Some(slices) => endpoint_slices::compute(slices, &workloads, &services),
    };

    let mut route_list: Vec<Arc<_>> = set
        .http_routes
        .iter()
        .map(routes::from_http)
        .chain(set.grpc_routes.iter().map(routes::from_grpc))
        .map(Arc::new)
        .collect();
    route_list.sort_by(|a, b| a.key.cmp(&b.key));

    let mut reference_grants: Vec<Arc<ReferenceGrant>> = set
        .reference_grants
        .iter()
        .map(|g| Arc::new(ReferenceGrant::from_resource(g)))
        .collect();
    reference_grants.sort_by(|a, b| a.key.cmp(&b.key));

    let authorization_policies = set
        .authorization_policies
        .iter()
        .map(|p| {
            Arc::new(AuthorizationPolicy {
                key: key_of(&p.metadata.namespace, &p.metadata.name),
                selector: p
                    .spec
                    .selector
                    .as_ref()
                    .map(|s| s.match_labels.clone())
                    .unwrap_or_default(),
                action: p.spec.action,
                rules: p.spec.rules.clone(),
            })
        })
        .collect();
    let traffic_policies = set
        .traffic_policies
        .iter()
        .map(|p| {
            let key = key_of(&p.metadata.namespace, &p.metadata.name);
            Arc::new(TrafficPolicy {
                target: ObjectKey::new(key.namespace.clone(), p.spec.target_ref.name.clone()),
                key,
                load_balancer: p
                    .spec
                    .load_balancer
                    .as_ref()
                    .map(|l| l.algorithm)
                    .unwrap_or_default(),
                outlier_detection: p.spec.outlier_detection.clone(),
                connection_limits: p.spec.connection_limits.clone(),
                retry_budget: p.spec.retry_budget.clone(),
                fault: p.spec.fault.clone(),
            })
        })
        .collect();

    Snapshot::from_data(SnapshotData {
        namespaces,
        workloads,
        services,
        endpoints,
        routes: route_list,
        reference_grants,
        authorization_policies,
        traffic_policies,
    })
}

pub(super) fn namespace_of(ns: &Option<String>) -> &str {
    ns.as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or(DEFAULT_NAMESPACE)
}

pub(super) fn key_of(ns: &Option<String>, name: &Option<String>) -> ObjectKey {
    ObjectKey::new(namespace_of(ns), name.as_deref().unwrap_or_default())
}

fn namespace_info(n: &Namespace) -> NamespaceInfo {
    let labels = n.metadata.labels.clone().unwrap_or_default();
    NamespaceInfo {
        name: n.metadata.name.clone().unwrap_or_default(),
        meshed: labels.get(LABEL_MESH).is_some_and(|v| v == "enabled"),
        mtls: match labels.get(LABEL_MTLS).map(String::as_str) {
            Some("strict") => MtlsMode::Strict,
            _ => MtlsMode::Permissive,
        },
        labels,
    }
}

/// The pod's IPs: `status.podIPs`, else `status.podIP`.
pub fn pod_ips(p: &Pod) -> Vec<IpAddr> {
    let Some(status) = &p.status else {
        return Vec::new();
    };
    let mut ips: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .filter_map(|i| i.ip.parse().ok())
        .collect();
    if ips.is_empty()
        && let Some(ip) = status.pod_ip.as_deref().and_then(|s| s.parse().ok())
    {
        ips.push(ip);
    }
    ips
}

/// Ready condition `True`; no conditions at all counts as ready (files); a pod
/// that has finished (`Succeeded`, `Failed`) is never ready.
pub fn pod_ready(p: &Pod) -> bool {
    let Some(status) = &p.status else { return true };
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return false;
    }
    match &status.conditions {
        None => true,
        Some(c) if c.is_empty() => true,
        Some(c) => c.iter().any(|c| c.type_ == "Ready" && c.status == "True"),
    }
}

fn workload(p: &Pod, ns: Option<&NamespaceInfo>) -> Workload {
    let labels = p.metadata.labels.clone().unwrap_or_default();
    let spec = p.spec.as_ref();
    let opted_out = labels.get(LABEL_MESH).is_some_and(|v| v == "disabled");
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    Workload {
        key: key_of(&p.metadata.namespace, &p.metadata.name),
        uid: p.metadata.uid.clone().unwrap_or_default(),
        service_account: spec
            .and_then(|s| {
                s.service_account_name
                    .clone()
                    .or_else(|| s.service_account.clone())
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into()),
        node: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        ips: pod_ips(p),
        netns: p
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_NETNS))
            .map(PathBuf::from),
        meshed: ns.is_some_and(|n| n.meshed) && !opted_out && !host_network,
        mtls: ns.map(|n| n.mtls).unwrap_or_default(),
        ready: pod_ready(p),
        host_network,
        probe_ports: spec.map(probe_ports).unwrap_or_default(),
        labels,
    }
}

/// The ports of every container's probes (`httpGet`, `tcpSocket`, `grpc`), a
/// named port resolved against the same container's ports, as the kubelet does.
fn probe_ports(spec: &PodSpec) -> Vec<u16> {
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    let mut ports: Vec<u16> = containers
        .flat_map(|c| {
            [&c.liveness_probe, &c.readiness_probe, &c.startup_probe]
                .into_iter()
                .flatten()
                .flat_map(|p| {
                    let http = p.http_get.as_ref().map(|h| &h.port);
                    let tcp = p.tcp_socket.as_ref().map(|t| &t.port);
                    let grpc = p.grpc.as_ref().and_then(|g| u16::try_from(g.port).ok());
                    let named = http.into_iter().chain(tcp).filter_map(|port| match port {
                        IntOrString::Int(n) => u16::try_from(*n).ok(),
                        IntOrString::String(name) => container_port(c, name),
                    });
                    named.chain(grpc).collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        })
        .filter(|p| *p != 0)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

fn container_port(c: &Container, name: &str) -> Option<u16> {
    c.ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(name))
        .and_then(|p| u16::try_from(p.container_port).ok())
}

fn service(s: &k8s_openapi::api::core::v1::Service) -> Service {
    let spec = s.spec.as_ref();
    let mut cluster_ips: Vec<IpAddr> = spec
        .and_then(|s| s.cluster_ips.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    if cluster_ips.is_empty()
        && let Some(ip) = spec
            .and_then(|s| s.cluster_ip.as_deref())
            .and_then(|s| s.parse().ok())
    {
        cluster_ips.push(ip);
    }
    let ports = spec
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let port = u16::try_from(p.port).ok()?;
            let target_port = match &p.target_port {
                None => TargetPort::Number(port),
                Some(IntOrString::Int(n)) => TargetPort::Number(u16::try_from(*n).ok()?),
                Some(IntOrString::String(s)) => TargetPort::Name(s.clone()),
            };
            Some(ServicePort {
                name: p.name.clone(),
                port,
                target_port,
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                app_protocol: p.app_protocol.clone(),
            })
        })
        .collect();
    Service {
        key: key_of(&s.metadata.namespace, &s.metadata.name),
        cluster_ips,
        ports,
        selector: spec.and_then(|s| s.selector.clone()),
        labels: s.metadata.labels.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(value: serde_json::Value) -> PodSpec {
        serde_json::from_value(value).expect("a pod spec")
    }

    #[test]
    fn probe_ports_of_every_kind_named_ports_resolved_per_container() {
        let s = spec(serde_json::json!({
            "containers": [
                {
                    "name": "app",
                    "ports": [{"name": "http", "containerPort": 8443}],
                    "readinessProbe": {"httpGet": {"port": "http", "path": "/ready"}},
                    "livenessProbe": {"tcpSocket": {"port": 9000}},
                    "startupProbe": {"grpc": {"port": 7000}}
                },
                // Another container's port name does not resolve here.
                {
                    "name": "side",
                    "ports": [{"name": "admin", "containerPort": 9901}],
                    "livenessProbe": {"httpGet": {"port": "http"}},
                    "readinessProbe": {"httpGet": {"port": "admin"}}
                },
                {"name": "plain", "ports": [{"containerPort": 8080}]}
            ],
            "initContainers": [
                {"name": "sidecar", "startupProbe": {"tcpSocket": {"port": 9000}}}
            ]
        }));
        assert_eq!(probe_ports(&s), vec![7000, 8443, 9000, 9901]);
    }

    #[test]
    fn no_probes_no_ports() {
        let s = spec(
            serde_json::json!({"containers": [{"name": "app", "ports": [{"containerPort": 80}]}]}),
        );
        assert!(probe_ports(&s).is_empty());
    }
}
