//! Workloads, Services and endpoints as the data plane sees them.

use std::{collections::BTreeMap, fmt, net::IpAddr, path::PathBuf};

use serde::{Deserialize, Serialize};

/// A namespaced name, printed `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A pod's key.
pub type WorkloadKey = ObjectKey;
/// A Service's key.
pub type ServiceKey = ObjectKey;
/// An HTTPRoute's, GRPCRoute's or policy's key.
pub type ResourceKey = ObjectKey;

/// Whether a workload accepts plaintext from outside the mesh.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MtlsMode {
    #[default]
    Permissive,
    Strict,
}

impl fmt::Display for MtlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MtlsMode::Permissive => "permissive",
            MtlsMode::Strict => "strict",
        })
    }
}

/// A namespace and the mesh settings its labels give.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Label `weft.dev/mesh: enabled`.
    pub meshed: bool,
    /// Label `weft.dev/mtls`.
    pub mtls: MtlsMode,
}

/// A pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    pub key: WorkloadKey,
    pub uid: String,
    pub service_account: String,
    pub node: String,
    pub ips: Vec<IpAddr>,
    pub labels: BTreeMap<String, String>,
    /// Files only: annotation `weft.dev/netns`.
    pub netns: Option<PathBuf>,
    /// The namespace opts in, the pod does not opt out and does not use the
    /// node's network (`hostNetwork` pods are never enrolled).
    pub meshed: bool,
    pub mtls: MtlsMode,
    /// The pod's `Ready` condition (a pod without conditions in a file is ready).
    pub ready: bool,
    /// `spec.hostNetwork`: the pod shares the node's netns.
    #[serde(default)]
    pub host_network: bool,
    /// The ports its containers' liveness, readiness and startup probes use
    /// (sorted): the only ports where plaintext from the node's address is
    /// exempt from strict mTLS and policy (docs/security.md).
    #[serde(default)]
    pub probe_ports: Vec<u16>,
}

impl Workload {
    /// `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
    pub fn spiffe_id(&self, trust_domain: &str) -> String {
        format!(
            "spiffe://{trust_domain}/ns/{}/sa/{}",
            self.key.namespace, self.service_account
        )
    }
}

/// A Service's target port: a number, or the name of a container port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

impl fmt::Display for TargetPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetPort::Number(n) => n.fmt(f),
            TargetPort::Name(s) => s.fmt(f),
        }
    }
}

/// One port of a Service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePort {
    pub name: Option<String>,
    pub port: u16,
    pub target_port: TargetPort,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    pub app_protocol: Option<String>,
}

impl ServicePort {
    /// Whether traffic to this port is to be parsed as HTTP (the L7 issue):
    /// `appProtocol` http/http2/grpc (any case, `kubernetes.io/h2c` too) or a port
    /// name starting with `http` or `grpc`.
    pub fn is_http(&self) -> bool {
        if let Some(p) = &self.app_protocol {
            let p = p.to_ascii_lowercase();
            return matches!(p.as_str(), "http" | "http2" | "grpc" | "kubernetes.io/h2c");
        }
        self.name
            .as_deref()
            .is_some_and(|n| n.starts_with("http") || n.starts_with("grpc"))
    }
}

/// A Service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub key: ServiceKey,
    /// Cluster IPs (empty for a headless Service).
    pub cluster_ips: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
    /// `None`: endpoints are not computed from pods.
    pub selector: Option<BTreeMap<String, String>>,
    pub labels: BTreeMap<String, String>,
}

/// One endpoint of a Service port: a ready pod's IP and the resolved target port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
    pub workload: Option<WorkloadKey>,
}

/// The endpoints of one Service port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEndpoints {
    pub service: ServiceKey,
    /// The Service port (not the target port).
    pub port: u16,
    pub endpoints: Vec<Endpoint>,
}
