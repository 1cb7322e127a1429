//! The pod gate: no connection leaves a pod unmeshed between its start and the
//! agent's decision about it.
//!
//! The agent tells the connect programs where the kubelet's pod cgroups are
//! (`KUBEPODS_ROOT`) and which pod cgroups it has classified (`POD_CGROUPS`). A
//! TCP connect (not to loopback, not to an excluded port) by a task in a pod
//! cgroup under kubepods that is not classified, from a netns that is not
//! enrolled, is refused with EPERM. Classify a pod only once its fate is in the
//! kernel: enrol its netns first if it is meshed, then mark its cgroup.
//!
//! Both maps are pinned: while no agent runs, classified pods go on as they were
//! and new pods stay refused until an agent classifies them (fail closed).

use anyhow::{Context, Result};
use mesh_common::{KubepodsConfig, pod_verdict};

use super::enrol::ignore_missing;
use super::load::KernelPrograms;

/// Where the kubelet's pod cgroups are, as the kernel programs need it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KubepodsRoot {
    /// The kernel's id of the kubepods cgroup (the directory's inode number).
    pub cgroup_id: u64,
    /// Its level in the cgroup v2 hierarchy (the root is 0).
    pub level: u32,
    /// The QoS cgroups under it (burstable, besteffort); 0 for an absent one. Pods
    /// of a QoS class whose cgroup is not listed here would be taken for one pod,
    /// refused until that "pod" is marked: set the root again when one appears.
    pub qos_ids: [u64; 2],
    /// The node's netns cookie: its tasks (host-network pods, the agent) are never
    /// held. 0 when unknown.
    #[serde(default)]
    pub host_netns_cookie: u64,
}

impl KernelPrograms {
    /// Turns the pod gate on (`Some`) or off (`None`: file mode, nothing held).
    pub fn set_kubepods_root(&mut self, root: Option<KubepodsRoot>) -> Result<()> {
        let config = match root {
            Some(r) => KubepodsConfig {
                cgroup_id: r.cgroup_id,
                qos_ids: r.qos_ids,
                level: r.level,
                _pad: [0; 4],
                host_netns_cookie: r.host_netns_cookie,
            },
            None => KubepodsConfig::default(),
        };
        self.maps_mut()
            .kubepods_root
            .set(0, config, 0)
            .context("set the kubepods root of the pod gate")
    }

    /// The kubepods root the kernel programs use now, `None` when the gate is off.
    pub fn kubepods_root(&self) -> Result<Option<KubepodsRoot>> {
        let config = self
            .maps()
            .kubepods_root
            .get(&0, 0)
            .context("read the kubepods root of the pod gate")?;
        Ok((config.cgroup_id != 0).then_some(KubepodsRoot {
            cgroup_id: config.cgroup_id,
            level: config.level,
            qos_ids: config.qos_ids,
            host_netns_cookie: config.host_netns_cookie,
        }))
    }

    /// Lets a pod's connects through: it is enrolled, or it is not meshed.
    pub fn mark_pod_cgroup(&mut self, cgroup_id: u64) -> Result<()> {
        self.maps_mut()
            .pod_cgroups
            .insert(cgroup_id, pod_verdict::CLASSIFIED, 0)
            .with_context(|| format!("mark pod cgroup {cgroup_id} as classified"))
    }

    /// Forgets a pod cgroup (the pod is gone; a cgroup id is never reused). A pod
    /// cgroup that still exists is held again. Missing entries are fine.
    pub fn forget_pod_cgroup(&mut self, cgroup_id: u64) -> Result<()> {
        ignore_missing(self.maps_mut().pod_cgroups.remove(&cgroup_id))
            .with_context(|| format!("forget pod cgroup {cgroup_id}"))
    }

    /// The pod cgroups marked as classified, e.g. to sweep those of pods that went
    /// away while no agent ran.
    pub fn pod_cgroups(&self) -> Vec<u64> {
        self.maps()
            .pod_cgroups
            .keys()
            .filter_map(Result::ok)
            .collect()
    }
}
