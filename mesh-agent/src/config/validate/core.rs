//! Checks of `v1` Namespace, Pod and Service.

use std::{collections::HashSet, net::IpAddr, path::Path};

use k8s_openapi::{
    api::core::v1::{Namespace, Pod, Service},
    apimachinery::pkg::util::intstr::IntOrString,
};

use super::{
    Ck,
    fields::{is_port_name, metadata},
};
use crate::config::resources::{ANNOTATION_NETNS, LABEL_MESH, LABEL_MTLS};

const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];

fn label_value(
    ck: &mut Ck<'_>,
    labels: Option<&std::collections::BTreeMap<String, String>>,
    key: &str,
    valid: &[&str],
) {
    if let Some(v) = labels.and_then(|l| l.get(key))
        && !valid.contains(&v.as_str())
    {
        ck.err(
            format!("metadata.labels.{key}"),
            format!("must be one of {} (got {v:?})", valid.join(", ")),
        );
    }
}

pub fn namespace(ck: &mut Ck<'_>, n: &Namespace) {
    metadata(ck, &n.metadata, true);
    if n.metadata.namespace.is_some() {
        ck.err(
            "metadata.namespace",
            "a Namespace is cluster-scoped: remove metadata.namespace",
        );
    }
    label_value(
        ck,
        n.metadata.labels.as_ref(),
        LABEL_MESH,
        &["enabled", "disabled"],
    );
    label_value(
        ck,
        n.metadata.labels.as_ref(),
        LABEL_MTLS,
        &["strict", "permissive"],
    );
}

pub fn pod(ck: &mut Ck<'_>, p: &Pod) {
    metadata(ck, &p.metadata, false);
    label_value(
        ck,
        p.metadata.labels.as_ref(),
        LABEL_MESH,
        &["enabled", "disabled"],
    );
    if let Some(netns) = p
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_NETNS))
    {
        let field = format!("metadata.annotations.{ANNOTATION_NETNS}");
        let path = Path::new(netns);
        if !path.is_absolute() {
            ck.err(
                field,
                format!("must be an absolute path like /run/netns/<name> (got {netns:?})"),
            );
        } else if !path.exists() {
            ck.err(
                field,
                format!("network namespace {netns} does not exist: create it or correct the path"),
            );
        }
    }
    let Some(spec) = &p.spec else {
        ck.err(
            "spec",
            "required: a Pod needs spec.nodeName (and its containers)",
        );
        return;
    };
    match spec.node_name.as_deref() {
        None | Some("") => ck.err(
            "spec.nodeName",
            "required: the node the pod runs on, e.g. node-a",
        ),
        Some(_) => {}
    }
    for (i, c) in spec.containers.iter().enumerate() {
        let mut names = HashSet::new();
        for (j, port) in c.ports.iter().flatten().enumerate() {
            let f = format!("spec.containers[{i}].ports[{j}]");
            ck.port(format!("{f}.containerPort"), port.container_port.into());
            if let Some(n) = &port.name {
                if !is_port_name(n) {
                    ck.err(format!("{f}.name"), format!("{n:?} is not a valid port name: at most 15 lowercase letters, digits and '-', with a letter"));
                }
                if !names.insert(n.as_str()) {
                    ck.err(
                        format!("{f}.name"),
                        format!("duplicate port name {n:?} in this container"),
                    );
                }
            }
            if let Some(proto) = &port.protocol
                && !PROTOCOLS.contains(&proto.as_str())
            {
                ck.err(
                    format!("{f}.protocol"),
                    format!("must be one of TCP, UDP, SCTP (got {proto:?})"),
                );
            }
        }
    }
    let Some(status) = &p.status else { return };
    let mut first: Option<IpAddr> = None;
    for (i, ip) in status.pod_ips.iter().flatten().enumerate() {
        match ip.ip.parse::<IpAddr>() {
            Ok(a) => {
                first.get_or_insert(a);
            }
            Err(_) => ck.err(
                format!("status.podIPs[{i}].ip"),
                format!("not an IP address (got {:?}); write e.g. 10.88.1.5", ip.ip),
            ),
        }
    }
    if let Some(s) = &status.pod_ip {
        match s.parse::<IpAddr>() {
            Err(_) => ck.err(
                "status.podIP",
                format!("not an IP address (got {s:?}); write e.g. 10.88.1.5"),
            ),
            Ok(a) if first.is_some_and(|f| f != a) => {
                ck.err(
                    "status.podIP",
                    format!(
                        "must equal status.podIPs[0].ip (got {a}, podIPs[0] is {})",
                        first.unwrap_or(a)
                    ),
                );
            }
            Ok(_) => {}
        }
    }
    for (i, c) in status.conditions.iter().flatten().enumerate() {
        if !matches!(c.status.as_str(), "True" | "False" | "Unknown") {
            ck.err(
                format!("status.conditions[{i}].status"),
                format!("must be True, False or Unknown (got {:?})", c.status),
            );
        }
    }
}

pub fn service(ck: &mut Ck<'_>, s: &Service) {
    metadata(ck, &s.metadata, true);
    let Some(spec) = &s.spec else {
        ck.err("spec", "required: a Service needs spec.ports");
        return;
    };
    let mut ips = Vec::new();
    if let Some(ip) = spec
        .cluster_ip
        .as_deref()
        .filter(|ip| !ip.is_empty() && *ip != "None")
    {
        match ip.parse::<IpAddr>() {
            Ok(a) => ips.push(a),
            Err(_) => ck.err("spec.clusterIP", format!("not an IP address (got {ip:?}); write e.g. 10.96.0.10, or None for a headless Service")),
        }
    }
    for (i, ip) in spec.cluster_ips.iter().flatten().enumerate() {
        if ip == "None" {
            continue;
        }
        match ip.parse::<IpAddr>() {
            Ok(a) if i == 0 && ips.first().is_some_and(|f| *f != a) => {
                ck.err(
                    "spec.clusterIPs[0]",
                    format!("must equal spec.clusterIP (got {a})"),
                );
            }
            Ok(_) => {}
            Err(_) => ck.err(
                format!("spec.clusterIPs[{i}]"),
                format!("not an IP address (got {ip:?})"),
            ),
        }
    }
    let ports = spec.ports.as_deref().unwrap_or_default();
    if ports.is_empty() {
        ck.err(
            "spec.ports",
            "required: at least one port, e.g. `- {name: http, port: 80, targetPort: 8080}`",
        );
    }
    let mut seen_names = HashSet::new();
    let mut seen_ports = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let f = format!("spec.ports[{i}]");
        if p.port == 0 {
            ck.err(format!("{f}.port"), "required: the Service port, 1-65535");
        } else {
            ck.port(format!("{f}.port"), p.port.into());
        }
        let proto = p.protocol.as_deref().unwrap_or("TCP");
        if !PROTOCOLS.contains(&proto) {
            ck.err(
                format!("{f}.protocol"),
                format!("must be one of TCP, UDP, SCTP (got {proto:?})"),
            );
        }
        if !seen_ports.insert((p.port, proto)) {
            ck.err(
                format!("{f}.port"),
                format!("duplicate port {} {proto} in this Service", p.port),
            );
        }
        match &p.name {
            None if ports.len() > 1 => ck.err(
                format!("{f}.name"),
                "required when a Service has more than one port",
            ),
            None => {}
            Some(n) => {
                if !super::fields::is_dns_label(n) {
                    ck.err(
                        format!("{f}.name"),
                        format!(
                            "{n:?} is not a valid port name: lowercase letters, digits and '-'"
                        ),
                    );
                }
                if !seen_names.insert(n.as_str()) {
                    ck.err(
                        format!("{f}.name"),
                        format!("duplicate port name {n:?} in this Service"),
                    );
                }
            }
        }
        match &p.target_port {
            Some(IntOrString::Int(n)) => ck.port(format!("{f}.targetPort"), (*n).into()),
            Some(IntOrString::String(n)) if !is_port_name(n) => ck.err(
                format!("{f}.targetPort"),
                format!("{n:?} is neither a port number nor a valid container port name (at most 15 lowercase letters, digits and '-')"),
            ),
            _ => {}
        }
    }
}
