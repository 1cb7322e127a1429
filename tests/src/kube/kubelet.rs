//! The lab as kubelet: a [`Lab`] whose nodes are registered as Node objects
//! with a [`ControlPlane`], and whose pods are created in the API, run in
//! network namespaces and cgroups in kubelet's layout, and reported Running and
//! Ready, so controllers (EndpointSlices) and agents see a real cluster.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};

use super::cgroups::CgroupDriver;
use super::control_plane::ControlPlane;
use super::pods::KubePod;
use super::status::{node_object, node_status, now_rfc3339};
use crate::lab::Lab;

/// A lab node registered with the API server.
pub struct KubeNode {
    /// The lab's name for it (`Lab::node`).
    pub name: String,
    /// The Node object's name: `<lab id>-<name>`, unique across parallel labs.
    pub object: String,
    /// Its underlay address: the Node's InternalIP.
    pub ip: Ipv4Addr,
    pub netns: PathBuf,
    /// The node's own subtree of the lab cgroup; kubelet's `kubepods` hierarchy
    /// is made under it.
    pub cgroup: PathBuf,
}

/// The node address indices (`10.88.<i>.0/24`) of this process's kube labs:
/// (in use, the last one handed out). Labs on one API server are one cluster to
/// the agents, which see every Pod: two pods with one IP, in labs running side
/// by side, would make the state place a pod of one test at another's address.
static NODE_INDICES: Mutex<(BTreeSet<u8>, u8)> = Mutex::new((BTreeSet::new(), 0));

/// The next free index after the last one handed out (so a lab's index is not
/// reused at once while the API server may still show its objects).
fn claim_node_index() -> Result<u8> {
    let mut guard = NODE_INDICES.lock().unwrap_or_else(|e| e.into_inner());
    let (used, last) = &mut *guard;
    let index = (1..=254u16)
        .map(|i| ((u16::from(*last) + i - 1) % 254 + 1) as u8)
        .find(|i| !used.contains(i))
        .context("every node address index (1-254) is in use by a kube lab")?;
    used.insert(index);
    *last = index;
    Ok(index)
}

fn release_node_index(index: u8) {
    let mut guard = NODE_INDICES.lock().unwrap_or_else(|e| e.into_inner());
    guard.0.remove(&index);
}

pub struct KubeLab {
    // Dropped after `Drop::drop` below removed the API objects.
    lab: Lab,
    cp: Arc<ControlPlane>,
    driver: CgroupDriver,
    nodes: Vec<KubeNode>,
    pub(super) pods: Vec<KubePod>,
    namespaces: Vec<String>,
}

impl KubeLab {
    /// A new, empty lab playing kubelet (cgroupfs driver) for `cp`.
    pub fn new(cp: Arc<ControlPlane>) -> Result<KubeLab> {
        Self::with_driver(cp, CgroupDriver::Cgroupfs)
    }

    pub fn with_driver(cp: Arc<ControlPlane>, driver: CgroupDriver) -> Result<KubeLab> {
        Ok(KubeLab {
            lab: Lab::new()?,
            cp,
            driver,
            nodes: Vec::new(),
            pods: Vec::new(),
            namespaces: Vec::new(),
        })
    }

    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    pub(super) fn lab_mut(&mut self) -> &mut Lab {
        &mut self.lab
    }

    pub fn cp(&self) -> &ControlPlane {
        &self.cp
    }

    pub fn id(&self) -> &str {
        self.lab.id()
    }

    pub fn driver(&self) -> CgroupDriver {
        self.driver
    }

    /// Adds a lab node and registers it: a Node object, then its status
    /// (InternalIP = the underlay address, Ready), as a kubelet does. Its
    /// addresses differ from those of every other kube lab of this process.
    pub fn add_node(&mut self, name: &str) -> Result<&KubeNode> {
        let object = format!("{}-{name}", self.lab.id());
        let cgroup = self.lab.cgroup().join(name);
        let index = claim_node_index()?;
        let node = match self.lab.add_node_at(name, index) {
            Ok(node) => node,
            Err(e) => {
                release_node_index(index);
                return Err(e);
            }
        };
        let cidr = format!("10.88.{}.0/24", node.index);
        let kube_node = KubeNode {
            name: name.to_string(),
            ip: node.underlay_ip(),
            netns: node.netns_path(),
            cgroup,
            object,
        };
        std::fs::create_dir(&kube_node.cgroup)
            .with_context(|| format!("create {}", kube_node.cgroup.display()))?;
        let object = node_object(&kube_node.object, &cidr);
        self.cp
            .kubectl_with_input(&["create", "-f", "-"], &object.to_string())
            .with_context(|| format!("create Node {}", kube_node.object))?;
        let status = node_status(&kube_node.object, kube_node.ip, &now_rfc3339());
        self.cp.kubectl(&[
            "patch",
            "node",
            &kube_node.object,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status.to_string(),
        ])?;
        self.nodes.push(kube_node);
        Ok(self.nodes.last().expect("just pushed"))
    }

    pub fn node(&self, name: &str) -> Result<&KubeNode> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .with_context(|| format!("no node {name} in the lab"))
    }

    pub fn nodes(&self) -> &[KubeNode] {
        &self.nodes
    }

    /// Creates a namespace with `labels`; it is deleted when the lab is dropped.
    pub fn create_namespace(&mut self, name: &str, labels: &[(&str, &str)]) -> Result<()> {
        let labels: serde_json::Map<String, serde_json::Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        let ns = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": { "name": name, "labels": labels },
        });
        self.cp
            .kubectl_with_input(&["create", "-f", "-"], &ns.to_string())?;
        self.namespaces.push(name.to_string());
        Ok(())
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Result<&KubePod> {
        self.pods
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
            .with_context(|| format!("no pod {namespace}/{name} runs in the lab"))
    }

    pub fn pods(&self) -> &[KubePod] {
        &self.pods
    }

    /// Spawns a process (e.g. from [`KubePod::command`]) that the lab kills on drop.
    pub fn spawn(&self, cmd: Command) -> Result<u32> {
        self.lab.spawn(cmd)
    }

    /// A ServiceAccount token (see [`ControlPlane::token`]).
    pub fn token(
        &self,
        namespace: &str,
        service_account: &str,
        audience: &str,
        bound_pod: Option<(&str, &str)>,
    ) -> Result<String> {
        self.cp
            .token(namespace, service_account, audience, bound_pod)
    }

    /// Removes what this lab made in the API: pods (at once, as a kubelet
    /// confirms a deletion), Nodes, namespaces. Best effort: the API server may
    /// be down when a failed test drops the lab.
    fn delete_api_objects(&mut self) {
        let quick = "--request-timeout=5s";
        for pod in &self.pods {
            let _ = self.cp.kubectl(&[
                "delete",
                "pod",
                &pod.name,
                "-n",
                &pod.namespace,
                "--grace-period=0",
                "--force",
                "--ignore-not-found",
                "--wait=false",
                quick,
            ]);
        }
        let nodes: Vec<&str> = self.nodes.iter().map(|n| n.object.as_str()).collect();
        let namespaces: Vec<&str> = self.namespaces.iter().map(String::as_str).collect();
        for (kind, names) in [("node", nodes), ("namespace", namespaces)] {
            if names.is_empty() {
                continue;
            }
            let mut args = vec!["delete", kind, "--ignore-not-found", "--wait=false", quick];
            args.extend(names);
            let _ = self.cp.kubectl(&args);
        }
    }
}

impl Drop for KubeLab {
    fn drop(&mut self) {
        self.delete_api_objects();
        for node in self.lab.nodes() {
            release_node_index(node.index);
        }
        // The Lab field drops next: processes, namespaces and cgroups go with it.
    }
}
