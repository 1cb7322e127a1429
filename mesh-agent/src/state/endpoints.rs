//! Endpoints as Kubernetes computes them: the Service's selector matches ready pods
//! with an IP in the Service's namespace; `targetPort` is a number or the name of a
//! container port of each pod (a pod without that port is left out).

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use k8s_openapi::api::core::v1::Pod;

use super::model::{Endpoint, Service, ServiceEndpoints, ServicePort, TargetPort, Workload};

/// `pods[i]` is the source of `workloads[i]`.
pub(super) fn compute(
    pods: &[Pod],
    workloads: &[Arc<Workload>],
    services: &[Arc<Service>],
) -> Vec<ServiceEndpoints> {
    // (namespace, label key, label value) -> eligible workload indexes.
    let mut by_label: HashMap<(&str, &str, &str), Vec<u32>, foldhash::fast::RandomState> =
        HashMap::with_capacity_and_hasher(workloads.len() * 2, Default::default());
    for (i, w) in workloads.iter().enumerate() {
        if !w.ready || w.ips.is_empty() {
            continue;
        }
        for (k, v) in &w.labels {
            by_label
                .entry((&w.key.namespace, k, v))
                .or_default()
                .push(i as u32);
        }
    }

    let mut out = Vec::with_capacity(services.len());
    for svc in services {
        let selected = select(&by_label, workloads, svc);
        for port in &svc.ports {
            let endpoints = selected
                .iter()
                .filter_map(|&i| endpoint(&pods[i], &workloads[i], svc, port))
                .collect();
            out.push(ServiceEndpoints {
                service: svc.key.clone(),
                port: port.port,
                endpoints,
            });
        }
    }
    out
}

/// Indexes of eligible workloads matching the selector; no or empty selector: none.
fn select(
    by_label: &HashMap<(&str, &str, &str), Vec<u32>, foldhash::fast::RandomState>,
    workloads: &[Arc<Workload>],
    svc: &Service,
) -> Vec<usize> {
    let Some(selector) = svc.selector.as_ref().filter(|s| !s.is_empty()) else {
        return Vec::new();
    };
    let ns = svc.key.namespace.as_str();
    let mut smallest: Option<&Vec<u32>> = None;
    for (k, v) in selector {
        match by_label.get(&(ns, k.as_str(), v.as_str())) {
            None => return Vec::new(),
            Some(list) if smallest.is_none_or(|s| list.len() < s.len()) => smallest = Some(list),
            Some(_) => {}
        }
    }
    smallest
        .into_iter()
        .flatten()
        .map(|&i| i as usize)
        .filter(|&i| {
            selector
                .iter()
                .all(|(k, v)| workloads[i].labels.get(k) == Some(v))
        })
        .collect()
}

fn endpoint(pod: &Pod, w: &Workload, svc: &Service, port: &ServicePort) -> Option<Endpoint> {
    let target = match &port.target_port {
        TargetPort::Number(n) => *n,
        TargetPort::Name(name) => named_port(pod, name, &port.protocol)?,
    };
    Some(Endpoint {
        ip: pick_ip(&w.ips, svc.cluster_ips.first())?,
        port: target,
        workload: Some(w.key.clone()),
    })
}

/// The pod IP of the Service's IP family (the first IP for a headless Service).
fn pick_ip(ips: &[IpAddr], family: Option<&IpAddr>) -> Option<IpAddr> {
    match family {
        Some(f) => ips.iter().find(|ip| ip.is_ipv4() == f.is_ipv4()).copied(),
        None => ips.first().copied(),
    }
}

fn named_port(pod: &Pod, name: &str, protocol: &str) -> Option<u16> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| {
            p.name.as_deref() == Some(name) && p.protocol.as_deref().unwrap_or("TCP") == protocol
        })
        .and_then(|p| u16::try_from(p.container_port).ok())
}
