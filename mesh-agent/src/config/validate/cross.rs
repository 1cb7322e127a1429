//! Checks across resources: duplicates, declared namespaces, one workload per IP,
//! and references from routes and policies to Services and their ports.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use k8s_openapi::api::core::v1::Service;

use super::Ck;
use crate::config::{
    errors::ConfigError,
    parse::Origin,
    resources::{
        ANNOTATION_NETNS, DEFAULT_NAMESPACE, Resource, gateway::HTTPBackendRef,
        gateway::ParentReference,
    },
};

fn place(o: &Origin) -> String {
    let pos = o
        .positions
        .lookup("metadata.name")
        .map(|p| format!(":{}", p.line))
        .unwrap_or_default();
    match &o.file {
        Some(file) => format!("{}{pos} [document {}]", file.display(), o.document),
        None => "the cluster".to_owned(),
    }
}

fn ns_of(o: &Origin) -> &str {
    o.resource.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
}

pub fn check(items: &[(Resource, Origin)], errors: &mut Vec<ConfigError>) {
    let mut seen: HashMap<(&str, Option<&str>, &str), &Origin> = HashMap::new();
    let namespaces: HashSet<&str> = items
        .iter()
        .filter(|(r, _)| matches!(r, Resource::Namespace(_)))
        .map(|(_, o)| o.resource.name.as_str())
        .collect();
    let services: HashMap<(&str, &str), &Service> = items
        .iter()
        .filter_map(|(r, o)| match r {
            Resource::Service(s) => Some(((ns_of(o), o.resource.name.as_str()), s)),
            _ => None,
        })
        .collect();
    let mut ips: HashMap<IpAddr, &Origin> = HashMap::new();
    let mut cluster_ips: HashMap<IpAddr, &Origin> = HashMap::new();
    let mut netns: HashMap<&str, &Origin> = HashMap::new();
    let mut traffic_targets: HashMap<(&str, &str), &Origin> = HashMap::new();

    for (r, o) in items {
        let mut ck = Ck { origin: o, errors };
        let r_ref = &o.resource;
        if let Some(first) = seen.insert(
            (
                r_ref.kind.as_str(),
                r_ref.namespace.as_deref(),
                r_ref.name.as_str(),
            ),
            o,
        ) {
            seen.insert(
                (
                    r_ref.kind.as_str(),
                    r_ref.namespace.as_deref(),
                    r_ref.name.as_str(),
                ),
                first,
            );
            ck.err(
                "metadata.name",
                format!("duplicate: {r_ref} is already defined at {}", place(first)),
            );
        }
        if let Some(ns) = r_ref.namespace.as_deref()
            && ns != DEFAULT_NAMESPACE
            && !namespaces.contains(ns)
        {
            ck.err("metadata.namespace", format!("namespace {ns:?} is not declared: add `apiVersion: v1, kind: Namespace, metadata: {{name: {ns}}}`"));
        }
        let ns = ns_of(o);
        match r {
            Resource::Pod(p) => {
                let status = p.status.as_ref();
                let listed: Vec<(String, &str)> = match status
                    .and_then(|s| s.pod_ips.as_ref())
                    .filter(|v| !v.is_empty())
                {
                    Some(v) => v
                        .iter()
                        .enumerate()
                        .map(|(i, ip)| (format!("status.podIPs[{i}].ip"), ip.ip.as_str()))
                        .collect(),
                    None => status
                        .and_then(|s| s.pod_ip.as_deref())
                        .map(|ip| vec![("status.podIP".to_owned(), ip)])
                        .unwrap_or_default(),
                };
                for (field, ip) in listed {
                    let Ok(addr) = ip.parse::<IpAddr>() else {
                        continue;
                    };
                    if let Some(first) = ips.get(&addr) {
                        ck.err(
                            field,
                            format!(
                                "IP {addr} is already used by {} at {}: each pod needs its own IP",
                                first.resource,
                                place(first)
                            ),
                        );
                    } else {
                        ips.insert(addr, o);
                    }
                }
                if let Some(path) = p
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(ANNOTATION_NETNS))
                {
                    if let Some(first) = netns.get(path.as_str()) {
                        ck.err(
                            format!("metadata.annotations.{ANNOTATION_NETNS}"),
                            format!(
                                "network namespace {path} is already used by {}",
                                first.resource
                            ),
                        );
                    } else {
                        netns.insert(path, o);
                    }
                }
            }
            Resource::Service(s) => {
                let spec = s.spec.as_ref();
                let ip = spec
                    .and_then(|s| s.cluster_ip.as_deref())
                    .and_then(|ip| ip.parse::<IpAddr>().ok());
                if let Some(addr) = ip {
                    if let Some(first) = cluster_ips.get(&addr) {
                        ck.err(
                            "spec.clusterIP",
                            format!(
                                "cluster IP {addr} is already used by {} at {}",
                                first.resource,
                                place(first)
                            ),
                        );
                    } else {
                        cluster_ips.insert(addr, o);
                    }
                }
            }
            Resource::HttpRoute(rt) => {
                parents(&mut ck, ns, &rt.spec.parent_refs, &services);
                for (i, rule) in rt.spec.rules.iter().enumerate() {
                    backends(
                        &mut ck,
                        ns,
                        &format!("spec.rules[{i}]"),
                        &rule.backend_refs,
                        &services,
                    );
                }
            }
            Resource::GrpcRoute(rt) => {
                parents(&mut ck, ns, &rt.spec.parent_refs, &services);
                for (i, rule) in rt.spec.rules.iter().enumerate() {
                    backends(
                        &mut ck,
                        ns,
                        &format!("spec.rules[{i}]"),
                        &rule.backend_refs,
                        &services,
                    );
                }
            }
            Resource::TrafficPolicy(t) => {
                let name = t.spec.target_ref.name.as_str();
                if !name.is_empty() && !services.contains_key(&(ns, name)) {
                    ck.err("spec.targetRef.name", format!("Service {ns}/{name} does not exist: the target must be a Service in the policy's namespace"));
                }
                if let Some(first) = traffic_targets.insert((ns, name), o) {
                    traffic_targets.insert((ns, name), first);
                    ck.err("spec.targetRef", format!("Service {ns}/{name} already has {} at {}: one TrafficPolicy per Service", first.resource, place(first)));
                }
            }
            _ => {}
        }
    }
}

fn has_port(s: &Service, port: i32) -> bool {
    s.spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .is_some_and(|ps| ps.iter().any(|p| p.port == port))
}

fn port_list(s: &Service) -> String {
    let ports: Vec<String> = s
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .map(|p| p.port.to_string())
        .collect();
    ports.join(", ")
}

fn parents(
    ck: &mut Ck<'_>,
    ns: &str,
    refs: &[ParentReference],
    services: &HashMap<(&str, &str), &Service>,
) {
    for (i, p) in refs.iter().enumerate() {
        if p.kind.as_deref() != Some("Service") {
            continue;
        }
        let pns = p.namespace.as_deref().unwrap_or(ns);
        match services.get(&(pns, p.name.as_str())) {
            None => ck.err(
                format!("spec.parentRefs[{i}].name"),
                format!(
                    "parent Service {pns}/{} does not exist: declare it or correct the name",
                    p.name
                ),
            ),
            Some(s) => {
                if let Some(port) = p.port
                    && !has_port(s, port)
                {
                    ck.err(
                        format!("spec.parentRefs[{i}].port"),
                        format!(
                            "Service {pns}/{} has no port {port} (its ports: {})",
                            p.name,
                            port_list(s)
                        ),
                    );
                }
            }
        }
    }
}

fn backends(
    ck: &mut Ck<'_>,
    ns: &str,
    rule: &str,
    refs: &[HTTPBackendRef],
    services: &HashMap<(&str, &str), &Service>,
) {
    for (i, b) in refs.iter().enumerate() {
        if b.kind.as_deref().is_some_and(|k| k != "Service") {
            continue;
        }
        let bns = b.namespace.as_deref().unwrap_or(ns);
        let f = format!("{rule}.backendRefs[{i}]");
        match services.get(&(bns, b.name.as_str())) {
            None => ck.err(
                format!("{f}.name"),
                format!(
                    "backend Service {bns}/{} does not exist: declare it or correct the name",
                    b.name
                ),
            ),
            Some(s) => {
                if let Some(port) = b.port
                    && (1..=65535).contains(&port)
                    && !has_port(s, port)
                {
                    ck.err(
                        format!("{f}.port"),
                        format!(
                            "Service {bns}/{} has no port {port} (its ports: {})",
                            b.name,
                            port_list(s)
                        ),
                    );
                }
            }
        }
    }
}
