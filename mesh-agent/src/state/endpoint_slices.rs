//! Endpoints in a cluster: what the EndpointSlices (`discovery.k8s.io/v1`) of each
//! Service say, as kube-proxy reads them. The endpoint slice controller has already
//! resolved selectors and named target ports; the agent only matches each Service
//! port to the slice port of the same name and protocol, and keeps the addresses
//! whose endpoint is ready (`conditions.ready` absent counts as ready, as the API
//! documents).

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::model::{Endpoint, ObjectKey, Service, ServiceEndpoints, Workload};

/// The label naming the Service a slice belongs to.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";

pub(super) fn compute(
    slices: &[EndpointSlice],
    workloads: &[Arc<Workload>],
    services: &[Arc<Service>],
) -> Vec<ServiceEndpoints> {
    let mut by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
    for slice in slices {
        let (Some(ns), Some(svc)) = (
            slice.metadata.namespace.as_deref(),
            slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_SERVICE_NAME)),
        ) else {
            continue;
        };
        by_service
            .entry((ns, svc.as_str()))
            .or_default()
            .push(slice);
    }
    let workload_by_ip: HashMap<IpAddr, &ObjectKey> = workloads
        .iter()
        .flat_map(|w| w.ips.iter().map(move |ip| (*ip, &w.key)))
        .collect();

    let mut out = Vec::with_capacity(services.len());
    for svc in services {
        let slices = by_service
            .get(&(svc.key.namespace.as_str(), svc.key.name.as_str()))
            .map(Vec::as_slice)
            .unwrap_or_default();
        for port in &svc.ports {
            let mut endpoints: Vec<Endpoint> = slices
                .iter()
                .flat_map(|s| slice_endpoints(s, port.name.as_deref(), &port.protocol))
                .map(|(ip, port)| Endpoint {
                    ip,
                    port,
                    workload: workload_by_ip.get(&ip).map(|k| (*k).clone()),
                })
                .collect();
            // A pod can appear in two slices while the controller moves it.
            endpoints.sort_by_key(|e| (e.ip, e.port));
            endpoints.dedup_by(|a, b| a.ip == b.ip && a.port == b.port);
            out.push(ServiceEndpoints {
                service: svc.key.clone(),
                port: port.port,
                endpoints,
            });
        }
    }
    out
}

/// The ready `(address, port)` pairs of one slice for the Service port named
/// `name` (`None`: the unnamed port) and `protocol`.
fn slice_endpoints(
    slice: &EndpointSlice,
    name: Option<&str>,
    protocol: &str,
) -> Vec<(IpAddr, u16)> {
    if slice.address_type == "FQDN" {
        return Vec::new();
    }
    let Some(port) = slice.ports.iter().flatten().find_map(|p| {
        let same_name = p.name.as_deref().unwrap_or("") == name.unwrap_or("");
        let same_protocol = p.protocol.as_deref().unwrap_or("TCP") == protocol;
        (same_name && same_protocol)
            .then_some(p.port)
            .flatten()
            .and_then(|n| u16::try_from(n).ok())
    }) else {
        return Vec::new();
    };
    slice
        .endpoints
        .iter()
        .flatten()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .flat_map(|e| e.addresses.iter())
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .map(|ip| (ip, port))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::discovery::v1::{
        Endpoint as SliceEndpoint, EndpointConditions, EndpointPort,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::state::model::{MtlsMode, ServicePort, TargetPort};

    fn slice(
        name: &str,
        svc: &str,
        port: Option<&str>,
        ready: &[(&str, Option<bool>)],
    ) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("shop".into()),
                labels: Some(BTreeMap::from([(LABEL_SERVICE_NAME.into(), svc.into())])),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: Some(
                ready
                    .iter()
                    .map(|(ip, ready)| SliceEndpoint {
                        addresses: vec![(*ip).into()],
                        conditions: Some(EndpointConditions {
                            ready: *ready,
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ports: Some(vec![EndpointPort {
                name: port.map(Into::into),
                port: Some(8080),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
        }
    }

    fn service(ports: &[(Option<&str>, u16)]) -> Arc<Service> {
        Arc::new(Service {
            key: ObjectKey::new("shop", "cart"),
            cluster_ips: vec!["10.96.0.10".parse().unwrap()],
            ports: ports
                .iter()
                .map(|(name, port)| ServicePort {
                    name: name.map(Into::into),
                    port: *port,
                    target_port: TargetPort::Number(8080),
                    protocol: "TCP".into(),
                    app_protocol: None,
                })
                .collect(),
            selector: None,
            labels: BTreeMap::new(),
        })
    }

    fn workload(name: &str, ip: &str) -> Arc<Workload> {
        Arc::new(Workload {
            key: ObjectKey::new("shop", name),
            uid: String::new(),
            service_account: "default".into(),
            node: "n1".into(),
            ips: vec![ip.parse().unwrap()],
            labels: BTreeMap::new(),
            netns: None,
            meshed: true,
            mtls: MtlsMode::Permissive,
            ready: true,
            host_network: false,
            probe_ports: vec![],
        })
    }

    #[test]
    fn ready_addresses_of_every_slice_of_the_service() {
        let slices = [
            slice(
                "cart-a",
                "cart",
                None,
                &[("10.88.1.2", Some(true)), ("10.88.1.3", Some(false))],
            ),
            slice(
                "cart-b",
                "cart",
                None,
                &[("10.88.2.2", None), ("10.88.1.2", Some(true))],
            ),
            slice("other", "other", None, &[("10.88.9.9", Some(true))]),
        ];
        let out = compute(
            &slices,
            &[workload("a", "10.88.1.2")],
            &[service(&[(None, 80)])],
        );
        assert_eq!(out.len(), 1);
        let ips: Vec<String> = out[0].endpoints.iter().map(|e| e.ip.to_string()).collect();
        assert_eq!(ips, ["10.88.1.2", "10.88.2.2"]);
        assert_eq!(out[0].endpoints[0].port, 8080);
        assert_eq!(
            out[0].endpoints[0].workload,
            Some(ObjectKey::new("shop", "a"))
        );
        assert_eq!(out[0].endpoints[1].workload, None);
    }

    #[test]
    fn service_ports_match_slice_ports_by_name() {
        let slices = [slice(
            "cart-a",
            "cart",
            Some("http"),
            &[("10.88.1.2", Some(true))],
        )];
        let out = compute(
            &slices,
            &[],
            &[service(&[(Some("http"), 80), (Some("admin"), 81)])],
        );
        assert_eq!(out[0].endpoints.len(), 1);
        assert!(out[1].endpoints.is_empty(), "no slice port named admin");
    }
}
