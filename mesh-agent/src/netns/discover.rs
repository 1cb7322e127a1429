//! Finding the pods on this node from the kubelet's cgroup tree and `/proc`,
//! without a CNI plugin and without a file naming each pod's netns.
//!
//! The kubelet makes one cgroup per pod under the node's kubepods cgroup, named
//! after the pod's UID ([`layout`]); every process of the pod's containers lives
//! in it (and the sandbox's pause process first of all). A process's
//! `/proc/<pid>/ns/net` is then the pod's network namespace. A pod in the agent's
//! own netns (the node's: the agent runs with `hostNetwork` and `hostPID`) is a
//! `hostNetwork` pod, never to be enrolled.
//!
//! [`find_kubepods`] locates the tree, [`PodScanner::scan`] lists its pods;
//! [`KubepodsDir::kernel_root`] is what the kernel's pod gate needs to hold back
//! pods the agent has not classified yet (`ebpf::KubepodsRoot`).

mod layout;
mod procfs;
mod scan;

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ebpf::KubepodsRoot;

pub use layout::{KubepodsLayout, PodCgroupPath, QosClass, pod_of_cgroup_path, pod_uid_of_dir};
pub use procfs::unified_cgroup_path;
pub use scan::{PodScanner, cgroup_id, find_kubepods, find_kubepods_in, processes_outside_cgroup};

/// Errors callers act on differently: no kubepods tree (yet, or file mode),
/// a cgroup mount discovery cannot use, or a read that failed for good.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("no kubepods cgroup (kubepods, kubepods.slice) under {0}")]
    NoKubepods(PathBuf),
    #[error("{0} is not on a cgroup v2 mount")]
    NotCgroup2(PathBuf),
    #[error(
        "the cgroup v2 mount at {0} is not the hierarchy's root (a cgroup namespace or a \
         subtree's bind mount), so cgroup levels cannot be known; mount the host's cgroup2 root"
    )]
    NotHierarchyRoot(PathBuf),
    #[error("read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_error(path: impl AsRef<Path>, source: io::Error) -> DiscoverError {
    DiscoverError::Io {
        path: path.as_ref().to_path_buf(),
        source,
    }
}

/// The node's kubepods cgroup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubepodsDir {
    pub path: PathBuf,
    pub layout: KubepodsLayout,
    /// The kernel's id of this cgroup (its inode number).
    pub cgroup_id: u64,
    /// Its level in the cgroup v2 hierarchy (the root is 0).
    pub level: u32,
    /// The QoS cgroups that exist under it.
    pub qos: Vec<QosDir>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QosDir {
    pub class: QosClass,
    pub path: PathBuf,
    pub cgroup_id: u64,
}

impl KubepodsDir {
    /// What the kernel programs need to find a task's pod cgroup. Compare it with
    /// the one set before after each [`find_kubepods`]: a QoS cgroup made later
    /// must reach the kernel, which would otherwise take it for a pod.
    pub fn kernel_root(&self) -> KubepodsRoot {
        let id = |class| {
            self.qos
                .iter()
                .find(|q| q.class == class)
                .map_or(0, |q| q.cgroup_id)
        };
        KubepodsRoot {
            cgroup_id: self.cgroup_id,
            level: self.level,
            qos_ids: [id(QosClass::Burstable), id(QosClass::BestEffort)],
            host_netns_cookie: 0,
        }
    }
}

/// A pod cgroup found under kubepods.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveredPod {
    pub uid: String,
    pub qos: QosClass,
    /// The kernel's id of the pod's cgroup (what the pod gate is keyed by).
    pub cgroup_id: u64,
    pub cgroup_path: PathBuf,
    /// The pod's network namespace; `None` for a host-network pod or a pod with
    /// no process yet (its sandbox is still starting).
    pub netns: Option<NetnsRef>,
    /// The pod's processes share the node's netns: never enrolled.
    pub host_network: bool,
    /// Every process in the pod's cgroup and below, sorted.
    pub pids: Vec<u32>,
}

/// A network namespace as a path that opens it and the inode that names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NetnsRef {
    /// `/proc/<pid>/ns/net` of a process of the pod, the same across scans while
    /// that process lives. Open it (`netns::Netns::open`) to hold the netns.
    pub path: PathBuf,
    pub inode: u64,
}

/// A process in a pod's netns but outside its cgroup: not captured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutsideProcess {
    pub pid: u32,
    pub comm: String,
    /// Its cgroup v2 path as `/proc/<pid>/cgroup` shows it.
    pub cgroup: String,
}

#[cfg(test)]
mod tests;
