//! The command lines of etcd, kube-apiserver and kube-controller-manager: a
//! small cluster on loopback with real authentication and RBAC.

use std::net::SocketAddr;
use std::path::Path;

use super::certs::Pki;

/// The audiences tokens may carry: the API server's own and the Weft CA's.
pub const API_AUDIENCES: &[&str] = &["https://kubernetes.default.svc.cluster.local", "weft-ca"];
pub const SERVICE_CIDR: &str = "10.96.0.0/16";

/// Controllers the tests need (v1.37 names, `kube-controller-manager --help`): ServiceAccounts and their tokens, EndpointSlices,
/// DaemonSets, Deployments/ReplicaSets, garbage collection, namespace deletion,
/// aggregated ClusterRoles and the `kube-root-ca.crt` ConfigMap in each namespace.
pub const CONTROLLERS: &[&str] = &[
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "endpointslice-controller",
    "endpointslice-mirroring-controller",
    "daemonset-controller",
    "deployment-controller",
    "replicaset-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "clusterrole-aggregation-controller",
    "root-ca-certificate-publisher-controller",
];

fn s(value: impl std::fmt::Display) -> String {
    value.to_string()
}

pub fn etcd(data_dir: &Path, client: SocketAddr, peer: SocketAddr) -> Vec<String> {
    let (client, peer) = (format!("http://{client}"), format!("http://{peer}"));
    vec![
        s("--name=lab"),
        format!("--data-dir={}", data_dir.display()),
        format!("--listen-client-urls={client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=lab={peer}"),
        // The data dir is under /run (tmpfs): fsync costs nothing there.
        s("--logger=zap"),
        s("--log-outputs=stderr"),
        s("--log-level=warn"),
    ]
}

pub fn apiserver(pki: &Pki, addr: SocketAddr, etcd: SocketAddr, cert_dir: &Path) -> Vec<String> {
    let p = |path: &Path| path.display().to_string();
    vec![
        format!("--etcd-servers=http://{etcd}"),
        format!("--bind-address={}", addr.ip()),
        format!("--secure-port={}", addr.port()),
        // The `kubernetes` endpoints would need a non-loopback address; the lab
        // reaches the API server through its forwarders instead.
        format!("--advertise-address={}", addr.ip()),
        s("--endpoint-reconciler-type=none"),
        format!("--cert-dir={}", p(cert_dir)),
        format!("--tls-cert-file={}", p(&pki.serving.cert)),
        format!("--tls-private-key-file={}", p(&pki.serving.key)),
        format!("--client-ca-file={}", p(&pki.ca.cert)),
        format!("--service-account-issuer={}", API_AUDIENCES[0]),
        format!("--service-account-key-file={}", p(&pki.sa_pub)),
        format!("--service-account-signing-key-file={}", p(&pki.sa_key)),
        format!("--api-audiences={}", API_AUDIENCES.join(",")),
        s("--authorization-mode=Node,RBAC"),
        s("--enable-admission-plugins=NodeRestriction"),
        s("--allow-privileged=true"),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        s("--profiling=false"),
    ]
}

pub fn controller_manager(pki: &Pki, kubeconfig: &Path, port: u16) -> Vec<String> {
    let p = |path: &Path| path.display().to_string();
    vec![
        format!("--kubeconfig={}", p(kubeconfig)),
        format!("--authentication-kubeconfig={}", p(kubeconfig)),
        format!("--authorization-kubeconfig={}", p(kubeconfig)),
        s("--bind-address=127.0.0.1"),
        format!("--secure-port={port}"),
        s("--leader-elect=false"),
        s("--use-service-account-credentials=true"),
        format!("--service-account-private-key-file={}", p(&pki.sa_key)),
        format!("--root-ca-file={}", p(&pki.ca.cert)),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        format!("--controllers={}", CONTROLLERS.join(",")),
        s("--profiling=false"),
    ]
}
