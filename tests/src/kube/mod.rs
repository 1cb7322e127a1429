//! The Kubernetes tier of the lab: a real control plane (etcd, kube-apiserver,
//! kube-controller-manager built from `tests/kube/`) on the host's loopback,
//! forwarders that let a node's netns reach it, and the lab playing kubelet.

mod binaries;
mod certs;
mod cgroups;
mod client;
mod control_plane;
mod flags;
mod forward;
mod kubeconfig;
mod kubectl;
mod kubelet;
mod pods;
mod process;
mod shared;
mod status;

pub use binaries::{
    BIN_ENV, ETCD_ENV, ETCD_TOOL, KUBE_VERSION, TOOLS, bin_dir, binary, build_ldflags, etcd_binary,
    etcd_recipe_dir, recipe_dir,
};
pub use certs::{CertFiles, KUBERNETES_SERVICE_IP, Pki};
pub use cgroups::{CgroupDriver, Qos};
pub use control_plane::ControlPlane;
pub use flags::{API_AUDIENCES, CONTROLLERS, SERVICE_CIDR};
pub use forward::Forwarder;
pub use kubeconfig::{Credentials, write_kubeconfig};
pub use kubelet::{KubeLab, KubeNode};
pub use pods::{Container, KubePod};
pub use status::{ContainerState, now_rfc3339, pod_status};
