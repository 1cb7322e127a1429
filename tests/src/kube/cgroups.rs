//! kubelet's pod cgroup layouts (cgroup v2), under a lab node's own subtree, so
//! the agent finds pods from `/proc/<pid>/cgroup` as it would on a real node.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// kubelet's `--cgroup-driver`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupDriver {
    /// `kubepods/<qos>/pod<uid>/<container id>` (Guaranteed: `kubepods/pod<uid>/…`).
    Cgroupfs,
    /// `kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_>.slice/cri-containerd-<id>.scope`
    /// (Guaranteed: `kubepods.slice/kubepods-pod<uid_>.slice/…`).
    Systemd,
}

/// A pod's QoS class, as the API server computes it (`status.qosClass`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl Qos {
    pub fn parse(class: &str) -> Result<Qos> {
        Ok(match class {
            "Guaranteed" => Qos::Guaranteed,
            "Burstable" => Qos::Burstable,
            "BestEffort" => Qos::BestEffort,
            other => bail!("unknown QoS class {other:?}"),
        })
    }

    fn dir(self) -> Option<&'static str> {
        match self {
            Qos::Guaranteed => None,
            Qos::Burstable => Some("burstable"),
            Qos::BestEffort => Some("besteffort"),
        }
    }
}

impl CgroupDriver {
    /// The pod-level cgroup under `node_root` (the node's subtree of the lab cgroup).
    pub fn pod_cgroup(self, node_root: &Path, qos: Qos, uid: &str) -> PathBuf {
        match self {
            CgroupDriver::Cgroupfs => {
                let mut path = node_root.join("kubepods");
                if let Some(q) = qos.dir() {
                    path.push(q);
                }
                path.join(format!("pod{uid}"))
            }
            CgroupDriver::Systemd => {
                let uid = uid.replace('-', "_");
                let mut path = node_root.join("kubepods.slice");
                match qos.dir() {
                    Some(q) => {
                        path.push(format!("kubepods-{q}.slice"));
                        path.push(format!("kubepods-{q}-pod{uid}.slice"));
                    }
                    None => path.push(format!("kubepods-pod{uid}.slice")),
                }
                path
            }
        }
    }

    /// A container's cgroup inside its pod's.
    pub fn container_cgroup(self, pod_cgroup: &Path, container_id: &str) -> PathBuf {
        match self {
            CgroupDriver::Cgroupfs => pod_cgroup.join(container_id),
            CgroupDriver::Systemd => {
                pod_cgroup.join(format!("cri-containerd-{container_id}.scope"))
            }
        }
    }
}

/// A container id as containerd makes them: 64 hex digits.
pub fn container_id() -> Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("read /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts() {
        let root = Path::new("/sys/fs/cgroup/wl1/node-a");
        let uid = "1b2c-3d";
        let pod = CgroupDriver::Cgroupfs.pod_cgroup(root, Qos::BestEffort, uid);
        assert_eq!(pod, root.join("kubepods/besteffort/pod1b2c-3d"));
        assert_eq!(
            CgroupDriver::Cgroupfs.container_cgroup(&pod, "abc"),
            root.join("kubepods/besteffort/pod1b2c-3d/abc")
        );
        let pod = CgroupDriver::Cgroupfs.pod_cgroup(root, Qos::Guaranteed, uid);
        assert_eq!(pod, root.join("kubepods/pod1b2c-3d"));
        let pod = CgroupDriver::Systemd.pod_cgroup(root, Qos::Burstable, uid);
        assert_eq!(
            CgroupDriver::Systemd.container_cgroup(&pod, "abc"),
            root.join(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c_3d.slice/cri-containerd-abc.scope"
            )
        );
        let pod = CgroupDriver::Systemd.pod_cgroup(root, Qos::Guaranteed, uid);
        assert_eq!(pod, root.join("kubepods.slice/kubepods-pod1b2c_3d.slice"));
    }
}
