//! Cluster mode: which of this node's pods run where. The kubepods cgroup tree and
//! `/proc` say which network namespace each pod UID has (`netns::discover`); the
//! state says which UIDs are meshed. The pure part, [`gate`], decides which pod
//! cgroups the kernel lets connect: those the agent has classified (enrolled, or
//! not meshed). A pod cgroup not classified yet is refused by the kernel, so a
//! meshed pod's first connection can never leave unmeshed (docs/architecture.md,
//! "Finding pods").

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use tracing::{debug, warn};

use crate::netns::discover::{DiscoveredPod, KubepodsDir, PodScanner, find_kubepods};
use crate::state::Snapshot;

/// Finds the node's pods; keeps the last good scan when one fails.
pub struct NodePods {
    cgroup_root: PathBuf,
    scanner: PodScanner,
    pub kubepods: Option<KubepodsDir>,
    /// By pod UID.
    pub pods: HashMap<String, DiscoveredPod>,
    warned: bool,
}

impl NodePods {
    pub fn new(cgroup_root: &Path) -> anyhow::Result<Self> {
        Ok(NodePods {
            cgroup_root: cgroup_root.to_path_buf(),
            scanner: PodScanner::new("/proc")?,
            kubepods: None,
            pods: HashMap::new(),
            warned: false,
        })
    }

    /// Rescans; returns whether what the pod manager acts on changed (a pod
    /// appeared or left, or its netns changed).
    pub fn rescan(&mut self) -> bool {
        let kubepods = match find_kubepods(&self.cgroup_root) {
            Ok(k) => k,
            Err(e) => {
                if !self.warned {
                    warn!(error = %e, "no kubepods cgroup yet; pods cannot be found until the kubelet makes it");
                    self.warned = true;
                }
                return false;
            }
        };
        let pods = match self.scanner.scan(&kubepods) {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "scanning the node's pods failed; keeping the last scan");
                return false;
            }
        };
        self.warned = false;
        let pods: HashMap<String, DiscoveredPod> =
            pods.into_iter().map(|p| (p.uid.clone(), p)).collect();
        let summary = |m: &HashMap<String, DiscoveredPod>| -> HashSet<(String, u64, Option<u64>)> {
            m.values()
                .map(|p| {
                    (
                        p.uid.clone(),
                        p.cgroup_id,
                        p.netns.as_ref().map(|n| n.inode),
                    )
                })
                .collect()
        };
        let changed =
            summary(&pods) != summary(&self.pods) || self.kubepods.as_ref() != Some(&kubepods);
        if changed {
            debug!(pods = pods.len(), "node pods changed");
        }
        self.kubepods = Some(kubepods);
        self.pods = pods;
        changed
    }

    pub fn netns_of(&self, uid: &str) -> Option<PathBuf> {
        self.pods.get(uid)?.netns.as_ref().map(|n| n.path.clone())
    }
}

/// One pod of this node as `mesh-agent status` shows it (`/node_pods`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodePodReport {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub meshed: bool,
    pub enrolled: bool,
    pub host_network: bool,
    pub cgroup: PathBuf,
    /// The inode of the pod's netns (0: none found yet).
    pub netns_inode: u64,
    /// Processes in the pod's netns outside its cgroup: not captured.
    #[serde(default)]
    pub uncaptured: Vec<crate::netns::discover::OutsideProcess>,
}

/// The report rows for the discovered pods the state knows (sorted).
pub fn report(
    discovered: &HashMap<String, DiscoveredPod>,
    snapshot: &Snapshot,
    node: &str,
    enrolled: &HashSet<String>,
) -> Vec<NodePodReport> {
    let mut rows: Vec<NodePodReport> = snapshot
        .workloads_on_node(node)
        .filter_map(|w| {
            let found = discovered.get(&w.uid)?;
            Some(NodePodReport {
                namespace: w.key.namespace.clone(),
                name: w.key.name.clone(),
                uid: w.uid.clone(),
                meshed: w.meshed,
                enrolled: enrolled.contains(&w.uid),
                host_network: found.host_network,
                cgroup: found.cgroup_path.clone(),
                netns_inode: found.netns.as_ref().map_or(0, |n| n.inode),
                uncaptured: Vec::new(),
            })
        })
        .collect();
    rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    rows
}

/// Fills in the processes that share a meshed pod's netns from outside its
/// cgroup (a full /proc walk per pod: done on request, not at every rescan).
pub fn find_uncaptured(rows: &mut [NodePodReport]) {
    for row in rows.iter_mut().filter(|r| r.meshed && r.netns_inode != 0) {
        match crate::netns::discover::processes_outside_cgroup(
            Path::new("/proc"),
            row.netns_inode,
            &row.cgroup,
        ) {
            Ok(list) => row.uncaptured = list,
            Err(e) => {
                debug!(pod = %row.name, error = %e, "cannot list processes outside the pod's cgroup")
            }
        }
    }
}

/// The pod cgroups the kernel should let connect: each discovered pod whose UID
/// the state places on this node and which is either not meshed (or
/// host-network), or meshed and enrolled (`enrolled` holds UIDs). Anything else —
/// a pod the API has not told us of yet, a meshed pod not enrolled yet — stays
/// held back.
pub fn gate(
    discovered: &HashMap<String, DiscoveredPod>,
    snapshot: &Snapshot,
    node: &str,
    enrolled: &HashSet<String>,
) -> HashSet<u64> {
    let on_node: HashMap<&str, bool> = snapshot
        .workloads_on_node(node)
        .map(|w| (w.uid.as_str(), w.meshed))
        .collect();
    discovered
        .values()
        .filter(|p| match on_node.get(p.uid.as_str()) {
            None => false,
            Some(false) => true,
            Some(true) => p.host_network || enrolled.contains(&p.uid),
        })
        .map(|p| p.cgroup_id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::discover::{NetnsRef, QosClass};

    fn discovered(uid: &str, cgroup_id: u64, host_network: bool) -> (String, DiscoveredPod) {
        (
            uid.into(),
            DiscoveredPod {
                uid: uid.into(),
                qos: QosClass::BestEffort,
                cgroup_id,
                cgroup_path: PathBuf::from("/x"),
                netns: (!host_network).then(|| NetnsRef {
                    path: PathBuf::from("/proc/1/ns/net"),
                    inode: cgroup_id,
                }),
                host_network,
                pids: vec![1],
            },
        )
    }

    fn snapshot() -> Snapshot {
        let yaml = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {weft.dev/mesh: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: plain}
---
apiVersion: v1
kind: Pod
metadata: {name: meshed, namespace: shop, uid: u-meshed}
spec: {nodeName: n1, containers: [{name: c}]}
status: {podIP: 10.88.1.2}
---
apiVersion: v1
kind: Pod
metadata: {name: plain, namespace: plain, uid: u-plain}
spec: {nodeName: n1, containers: [{name: c}]}
status: {podIP: 10.88.1.3}
---
apiVersion: v1
kind: Pod
metadata: {name: elsewhere, namespace: plain, uid: u-elsewhere}
spec: {nodeName: n2, containers: [{name: c}]}
status: {podIP: 10.88.2.3}
"#;
        crate::config::file::load_str("t.yaml", yaml).expect("valid")
    }

    #[test]
    fn only_classified_pods_may_connect() {
        let found: HashMap<String, DiscoveredPod> = [
            discovered("u-meshed", 1, false),
            discovered("u-plain", 2, false),
            discovered("u-unknown", 3, false),
            discovered("u-elsewhere", 4, false),
        ]
        .into_iter()
        .collect();
        let snap = snapshot();
        let none = HashSet::new();
        assert_eq!(gate(&found, &snap, "n1", &none), HashSet::from([2]));
        let enrolled = HashSet::from(["u-meshed".to_string()]);
        assert_eq!(gate(&found, &snap, "n1", &enrolled), HashSet::from([1, 2]));
    }
}
