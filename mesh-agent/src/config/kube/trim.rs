//! Pods as the agent keeps them. Every agent watches every pod of the cluster (it
//! must know which identity runs at each IP), so pods of other nodes are cut down
//! to what the state reads: name, namespace, UID, labels, service account, node,
//! hostNetwork, IPs, phase and the Ready condition. Pods on this node keep their
//! full detail minus `managedFields`.

use k8s_openapi::api::core::v1::{Pod, PodCondition, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The stored form of `pod` for an agent on `node`.
pub fn pod(mut pod: Pod, node: &str) -> Pod {
    pod.metadata.managed_fields = None;
    let on_node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node);
    if on_node {
        return pod;
    }
    let meta = pod.metadata;
    let spec = pod.spec.unwrap_or_default();
    let status = pod.status.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            name: meta.name,
            namespace: meta.namespace,
            uid: meta.uid,
            labels: meta.labels,
            ..Default::default()
        },
        spec: Some(PodSpec {
            service_account_name: spec.service_account_name.or(spec.service_account),
            node_name: spec.node_name,
            host_network: spec.host_network,
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: status.phase,
            pod_ip: status.pod_ip,
            pod_ips: status.pod_ips,
            conditions: status.conditions.map(|c| {
                c.into_iter()
                    .filter(|c| c.type_ == "Ready")
                    .map(|c| PodCondition {
                        type_: c.type_,
                        status: c.status,
                        ..Default::default()
                    })
                    .collect()
            }),
            ..Default::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{Container, PodIP};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    use super::*;

    fn full(node: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("shop".into()),
                uid: Some("u1".into()),
                labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                annotations: Some(BTreeMap::from([("a".into(), "b".into())])),
                managed_fields: Some(vec![ManagedFieldsEntry::default()]),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some(node.into()),
                service_account_name: Some("web".into()),
                containers: vec![Container {
                    name: "c".into(),
                    image: Some("nginx".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ips: Some(vec![PodIP {
                    ip: "10.88.1.2".into(),
                }]),
                conditions: Some(vec![
                    PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        message: Some("long text".into()),
                        ..Default::default()
                    },
                    PodCondition {
                        type_: "PodScheduled".into(),
                        status: "True".into(),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn pods_of_other_nodes_keep_only_what_the_state_reads() {
        let p = pod(full("n2"), "n1");
        assert_eq!(p.metadata.labels.as_ref().map(|l| l.len()), Some(1));
        assert!(p.metadata.annotations.is_none() && p.metadata.managed_fields.is_none());
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.service_account_name.as_deref(), Some("web"));
        assert!(spec.containers.is_empty());
        let status = p.status.as_ref().unwrap();
        assert_eq!(status.conditions.as_ref().map(|c| c.len()), Some(1));
        assert!(crate::state::pod_ready(&p));
        assert_eq!(crate::state::pod_ips(&p).len(), 1);
    }

    #[test]
    fn pods_of_this_node_keep_their_detail() {
        let p = pod(full("n1"), "n1");
        assert!(p.metadata.managed_fields.is_none());
        assert!(p.metadata.annotations.is_some());
        assert_eq!(p.spec.as_ref().unwrap().containers.len(), 1);
    }
}
