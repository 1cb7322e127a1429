//! Synthetic cluster objects shaped as a Kubernetes 1.3x API server sends them
//! to a watch: a Deployment's Pod with its managedFields, its projected token
//! volume and a full status; the EndpointSlice the slice controller writes; a
//! Service applied with kubectl. Their JSON sizes are the watch traffic's unit
//! cost, and the cluster source stores Services and EndpointSlices as they
//! come (docs/architecture.md, "The cluster source").
//!
//! Shape of a cluster of `pods` pods: 100 pods per namespace, 10 pods per
//! Service (one EndpointSlice each, one service account each), one HTTPRoute
//! per 10 Services, one AuthorizationPolicy per namespace.

use serde_json::{Value, json};

pub const PODS_PER_SERVICE: usize = 10;
pub const PODS_PER_NAMESPACE: usize = 100;
pub const SERVICES_PER_ROUTE: usize = 10;

pub fn namespaces(pods: usize) -> usize {
    pods.div_ceil(PODS_PER_NAMESPACE)
}

pub fn services(pods: usize) -> usize {
    pods.div_ceil(PODS_PER_SERVICE)
}

pub fn routes(pods: usize) -> usize {
    services(pods).div_ceil(SERVICES_PER_ROUTE)
}

pub fn ns_of_service(s: usize) -> String {
    format!("ns-{}", s * PODS_PER_SERVICE / PODS_PER_NAMESPACE)
}

pub fn pod_ip(i: usize) -> String {
    let n = u32::from(std::net::Ipv4Addr::new(10, 64, 0, 0)) + i as u32;
    std::net::Ipv4Addr::from(n).to_string()
}

fn service_ip(s: usize) -> String {
    let n = u32::from(std::net::Ipv4Addr::new(10, 96, 0, 1)) + s as u32;
    std::net::Ipv4Addr::from(n).to_string()
}

fn uid(kind: u8, i: usize) -> String {
    format!("{kind:02x}{i:06x}-5d1c-4b7e-9a3f-0c2b{i:08x}")
}

pub fn namespace(n: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {
            "name": format!("ns-{n}"), "uid": uid(1, n), "resourceVersion": "1201",
            "creationTimestamp": "2026-12-01T08:00:00Z",
            "labels": {"kubernetes.io/metadata.name": format!("ns-{n}"), "weft.dev/mesh": "enabled"}
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"}
    })
}

/// Pod `i` of Service `i / 10`, on node `node`, Running and Ready.
pub fn pod(i: usize, node: usize) -> Value {
    let s = i / PODS_PER_SERVICE;
    let app = format!("svc-{s}");
    let name = format!("{app}-7d9f8b6c5-{i:05x}");
    let ip = pod_ip(i);
    let host = format!("10.0.{}.{}", node / 256, node % 256);
    let t = "2026-12-01T08:00:00Z";
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "generateName": format!("{app}-7d9f8b6c5-"), "namespace": ns_of_service(s),
            "uid": uid(2, i), "resourceVersion": "48213377", "creationTimestamp": t,
            "labels": {"app": app, "pod-template-hash": "7d9f8b6c5", "version": "v1"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{app}-7d9f8b6c5"),
                "uid": uid(3, s), "controller": true, "blockOwnerDeletion": true}],
            "managedFields": [
                {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1", "time": t,
                 "fieldsType": "FieldsV1", "fieldsV1": {
                    "f:metadata": {"f:generateName": {}, "f:labels": {".": {}, "f:app": {}, "f:pod-template-hash": {}, "f:version": {}},
                        "f:ownerReferences": {".": {}, format!("k:{{\"uid\":\"{}\"}}", uid(3, s)): {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:image": {}, "f:imagePullPolicy": {}, "f:name": {},
                        "f:ports": {".": {}, "k:{\"containerPort\":8080,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}, "f:name": {}, "f:protocol": {}}},
                        "f:readinessProbe": {".": {}, "f:failureThreshold": {}, "f:httpGet": {".": {}, "f:path": {}, "f:port": {}, "f:scheme": {}},
                            "f:periodSeconds": {}, "f:successThreshold": {}, "f:timeoutSeconds": {}},
                        "f:resources": {".": {}, "f:limits": {".": {}, "f:memory": {}}, "f:requests": {".": {}, "f:cpu": {}, "f:memory": {}}},
                        "f:terminationMessagePath": {}, "f:terminationMessagePolicy": {}}},
                        "f:dnsPolicy": {}, "f:enableServiceLinks": {}, "f:restartPolicy": {}, "f:schedulerName": {}, "f:securityContext": {},
                        "f:serviceAccount": {}, "f:serviceAccountName": {}, "f:terminationGracePeriodSeconds": {}}}},
                {"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "time": t, "fieldsType": "FieldsV1", "subresource": "status",
                 "fieldsV1": {"f:status": {"f:conditions": {
                    "k:{\"type\":\"ContainersReady\"}": {".": {}, "f:lastProbeTime": {}, "f:lastTransitionTime": {}, "f:status": {}, "f:type": {}},
                    "k:{\"type\":\"Initialized\"}": {".": {}, "f:lastProbeTime": {}, "f:lastTransitionTime": {}, "f:status": {}, "f:type": {}},
                    "k:{\"type\":\"PodReadyToStartContainers\"}": {".": {}, "f:lastProbeTime": {}, "f:lastTransitionTime": {}, "f:status": {}, "f:type": {}},
                    "k:{\"type\":\"Ready\"}": {".": {}, "f:lastProbeTime": {}, "f:lastTransitionTime": {}, "f:status": {}, "f:type": {}}},
                    "f:containerStatuses": {}, "f:hostIP": {}, "f:hostIPs": {}, "f:phase": {}, "f:podIP": {},
                    "f:podIPs": {".": {}, format!("k:{{\"ip\":\"{ip}\"}}"): {".": {}, "f:ip": {}}}, "f:startTime": {}}}}
            ]
        },
        "spec": {
            "containers": [{
                "name": "app", "image": format!("registry.example.com/team/{app}:1.24.3"), "imagePullPolicy": "IfNotPresent",
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": "http", "scheme": "HTTP"},
                    "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3},
                "resources": {"limits": {"memory": "256Mi"}, "requests": {"cpu": "100m", "memory": "128Mi"}},
                "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
                "volumeMounts": [{"name": format!("kube-api-access-{:05x}", i % 0xfffff), "readOnly": true,
                    "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]
            }],
            "volumes": [{"name": format!("kube-api-access-{:05x}", i % 0xfffff), "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
            ]}}],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
            "serviceAccountName": format!("sa-{s}"), "serviceAccount": format!("sa-{s}"),
            "nodeName": format!("node-{node}"), "securityContext": {}, "schedulerName": "default-scheduler",
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
            ],
            "priority": 0, "enableServiceLinks": true, "preemptionPolicy": "PreemptLowerPriority"
        },
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "PodReadyToStartContainers", "status": "True", "lastProbeTime": null, "lastTransitionTime": t},
                {"type": "Initialized", "status": "True", "lastProbeTime": null, "lastTransitionTime": t},
                {"type": "Ready", "status": "True", "lastProbeTime": null, "lastTransitionTime": t},
                {"type": "ContainersReady", "status": "True", "lastProbeTime": null, "lastTransitionTime": t},
                {"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": t}
            ],
            "hostIP": host, "hostIPs": [{"ip": host}], "podIP": ip, "podIPs": [{"ip": ip}], "startTime": t,
            "containerStatuses": [{
                "name": "app", "state": {"running": {"startedAt": t}}, "lastState": {}, "ready": true, "restartCount": 0,
                "image": format!("registry.example.com/team/{app}:1.24.3"),
                "imageID": "registry.example.com/team/app@sha256:9f2c6e1d4b7a8c3e5f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6",
                "containerID": format!("containerd://{:064x}", i), "started": true,
                "volumeMounts": [{"name": format!("kube-api-access-{:05x}", i % 0xfffff),
                    "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true, "recursiveReadOnly": "Disabled"}]
            }],
            "qosClass": "Burstable"
        }
    })
}

/// Pod `i` as `config/kube/trim.rs` keeps a pod of another node: name,
/// namespace, UID, labels, service account, node, hostNetwork, IPs, phase and
/// the Ready condition. (`trim::pod` is private to the agent; this is its
/// output for [`pod`].)
pub fn trimmed_pod(i: usize, node: usize) -> Value {
    let full = pod(i, node);
    let (m, sp, st) = (&full["metadata"], &full["spec"], &full["status"]);
    json!({
        "metadata": {"name": m["name"], "namespace": m["namespace"], "uid": m["uid"], "labels": m["labels"]},
        "spec": {"containers": [], "serviceAccountName": sp["serviceAccountName"], "nodeName": sp["nodeName"]},
        "status": {"phase": st["phase"], "podIP": st["podIP"], "podIPs": st["podIPs"],
            "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

pub fn service(s: usize) -> Value {
    let name = format!("svc-{s}");
    let ns = ns_of_service(s);
    let applied = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80, "targetPort": "http", "appProtocol": "http"}]}});
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {
            "name": name, "namespace": ns, "uid": uid(4, s), "resourceVersion": "48100321",
            "creationTimestamp": "2026-12-01T08:00:00Z",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": format!("{applied}\n")},
            "managedFields": [{"manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "v1",
                "time": "2026-12-01T08:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {
                "f:metadata": {"f:annotations": {".": {}, "f:kubectl.kubernetes.io/last-applied-configuration": {}}},
                "f:spec": {"f:internalTrafficPolicy": {}, "f:ports": {".": {}, "k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {},
                    "f:appProtocol": {}, "f:name": {}, "f:port": {}, "f:protocol": {}, "f:targetPort": {}}},
                    "f:selector": {}, "f:sessionAffinity": {}, "f:type": {}}}}]
        },
        "spec": {
            "ports": [{"name": "http", "protocol": "TCP", "appProtocol": "http", "port": 80, "targetPort": "http"}],
            "selector": {"app": name}, "clusterIP": service_ip(s), "clusterIPs": [service_ip(s)], "type": "ClusterIP",
            "sessionAffinity": "None", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster"
        },
        "status": {"loadBalancer": {}}
    })
}

/// The slice of Service `s`: its 10 pods, ready, on nodes `node_of(pod)`.
pub fn endpoint_slice(s: usize, node_of: impl Fn(usize) -> usize) -> Value {
    let name = format!("svc-{s}");
    let ns = ns_of_service(s);
    let t = "2026-12-01T08:00:00Z";
    let endpoints: Vec<Value> = (s * PODS_PER_SERVICE..(s + 1) * PODS_PER_SERVICE)
        .map(|i| {
            json!({"addresses": [pod_ip(i)], "conditions": {"ready": true, "serving": true, "terminating": false},
                "targetRef": {"kind": "Pod", "namespace": ns, "name": format!("{name}-7d9f8b6c5-{i:05x}"), "uid": uid(2, i)},
                "nodeName": format!("node-{}", node_of(i))})
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{name}-x7k2p"), "generateName": format!("{name}-"), "namespace": ns, "uid": uid(5, s),
            "resourceVersion": "48213391", "generation": 12, "creationTimestamp": t,
            "labels": {"app": name, "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                "kubernetes.io/service-name": name},
            "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": t},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": name, "uid": uid(4, s),
                "controller": true, "blockOwnerDeletion": true}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "discovery.k8s.io/v1",
                "time": t, "fieldsType": "FieldsV1", "fieldsV1": {"f:addressType": {}, "f:endpoints": {},
                "f:metadata": {"f:annotations": {".": {}, "f:endpoints.kubernetes.io/last-change-trigger-time": {}},
                    "f:generateName": {}, "f:labels": {".": {}, "f:app": {}, "f:endpointslice.kubernetes.io/managed-by": {},
                    "f:kubernetes.io/service-name": {}}, "f:ownerReferences": {".": {}, format!("k:{{\"uid\":\"{}\"}}", uid(4, s)): {}}},
                "f:ports": {}}}]
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "protocol": "TCP", "port": 8080, "appProtocol": "http"}]
    })
}

/// Route `r`: the traffic of Service `10 r` split 90/10 with its neighbour,
/// and a header match sending canaries to the neighbour.
pub fn http_route(r: usize) -> Value {
    let s = r * SERVICES_PER_ROUTE;
    let other = s + 1;
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": format!("route-{r}"), "namespace": ns_of_service(s), "uid": uid(6, r), "generation": 1},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": format!("svc-{s}"), "port": 80}],
            "rules": [
                {"matches": [{"headers": [{"name": "x-canary", "value": "true"}]}],
                 "backendRefs": [{"name": format!("svc-{other}"), "port": 80}]},
                {"backendRefs": [{"name": format!("svc-{s}"), "port": 80, "weight": 90},
                                 {"name": format!("svc-{other}"), "port": 80, "weight": 10}]}
            ]
        }
    })
}

/// The policy of namespace `n`: its pods admit their own namespace and one
/// named caller.
pub fn authorization_policy(n: usize) -> Value {
    json!({
        "apiVersion": "weft.dev/v1alpha1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "allow-own-namespace", "namespace": format!("ns-{n}"), "uid": uid(7, n), "generation": 1},
        "spec": {
            "action": "ALLOW",
            "rules": [
                {"from": [{"source": {"namespaces": [format!("ns-{n}")]}}]},
                {"from": [{"source": {"principals": [format!("cluster.local/ns/ns-{}/sa/sa-0", n + 1)]}}],
                 "to": [{"operation": {"ports": [8080]}}]}
            ]
        }
    })
}
