//! Walking the kubepods cgroup tree and `/proc`: where the kubepods cgroup is,
//! which pods it holds, and which network namespace each one lives in.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tracing::debug;

use super::layout::{QosClass, kubepods_layout, pod_uid_of_dir, qos_dir_name, qos_of_dir};
use super::procfs::{
    all_pids, cgroup_of, cgroup2_mount_points, comm, forbidden, netns_inode, netns_path,
    pids_in_cgroup, start_time, vanished,
};
use super::{
    DiscoverError, DiscoveredPod, KubepodsDir, NetnsRef, OutsideProcess, QosDir, io_error,
};

/// Finds the kubepods cgroup (`kubepods`, `kubepods.slice` or `*-kubepods.slice`)
/// directly under `under`, a directory on a cgroup v2 mount (the mount itself on
/// a node, `<lab cgroup>/<node>` in the lab). The mount must show the whole
/// hierarchy, as a host's `/sys/fs/cgroup` does: levels count from its root.
pub fn find_kubepods(under: &Path) -> Result<KubepodsDir, DiscoverError> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| io_error("/proc/self/mountinfo", e))?;
    let under = under.canonicalize().map_err(|e| io_error(under, e))?;
    let mount = cgroup2_mount_points(&mountinfo)
        .into_iter()
        .filter(|m| under.starts_with(m))
        .max_by_key(|m| m.components().count())
        .ok_or_else(|| DiscoverError::NotCgroup2(under.clone()))?;
    // Only the root cgroup lacks `cgroup.type`. Any other mount root (a cgroup
    // namespace's, a bind mount of a subtree) would make every level wrong.
    if mount.join("cgroup.type").exists() {
        return Err(DiscoverError::NotHierarchyRoot(mount));
    }
    find_kubepods_in(&under, &mount)
}

/// [`find_kubepods`] with the hierarchy's root given: `under` must be inside it.
pub fn find_kubepods_in(under: &Path, hierarchy_root: &Path) -> Result<KubepodsDir, DiscoverError> {
    let mut names: Vec<String> = std::fs::read_dir(under)
        .map_err(|e| io_error(under, e))?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| kubepods_layout(name).is_some())
        .collect();
    names.sort();
    let name = names
        .into_iter()
        .next()
        .ok_or_else(|| DiscoverError::NoKubepods(under.to_path_buf()))?;
    let path = under.join(&name);
    let level = path
        .strip_prefix(hierarchy_root)
        .map_err(|_| DiscoverError::NotCgroup2(path.clone()))?
        .components()
        .count();
    let cgroup_id = cgroup_id(&path)?;
    let mut qos = Vec::new();
    for class in QosClass::WITH_CGROUP {
        let Some(dir) = qos_dir_name(&name, class) else {
            continue;
        };
        let dir = path.join(dir);
        match std::fs::metadata(&dir) {
            Ok(meta) => qos.push(QosDir {
                class,
                cgroup_id: meta.ino(),
                path: dir,
            }),
            Err(e) if vanished(&e) => {}
            Err(e) => return Err(io_error(&dir, e)),
        }
    }
    Ok(KubepodsDir {
        layout: kubepods_layout(&name).ok_or_else(|| DiscoverError::NoKubepods(path.clone()))?,
        level: u32::try_from(level).map_err(|_| DiscoverError::NotCgroup2(path.clone()))?,
        cgroup_id,
        path,
        qos,
    })
}

/// The kernel's id of a cgroup: its directory's inode number (kernfs node id,
/// 64 bits on 64-bit kernels), what `bpf_get_current_ancestor_cgroup_id` returns.
pub fn cgroup_id(dir: &Path) -> Result<u64, DiscoverError> {
    Ok(std::fs::metadata(dir).map_err(|e| io_error(dir, e))?.ino())
}

/// The pid chosen for a pod's netns path, kept across scans.
#[derive(Clone, Copy, Debug)]
struct Chosen {
    pid: u32,
    netns: u64,
}

/// Scans the kubepods tree for pods; remembers which process it chose for each
/// pod's netns, so the path it reports stays the same while that process lives.
#[derive(Debug)]
pub struct PodScanner {
    proc_root: PathBuf,
    host_netns: u64,
    chosen: HashMap<u64, Chosen>,
}

impl PodScanner {
    /// `proc_root` is `/proc` (the agent runs with the host's pid namespace, so
    /// `cgroup.procs` and `/proc` speak of the same pids). The agent's own netns,
    /// the node's, is `<proc_root>/self/ns/net`: pods in it are host-network.
    pub fn new(proc_root: impl Into<PathBuf>) -> Result<Self, DiscoverError> {
        let proc_root = proc_root.into();
        let own = proc_root.join("self/ns/net");
        let host_netns = std::fs::metadata(&own)
            .map_err(|e| io_error(&own, e))?
            .ino();
        Ok(PodScanner {
            proc_root,
            host_netns,
            chosen: HashMap::new(),
        })
    }

    /// The inode of the node's (the agent's) network namespace.
    pub fn host_netns_inode(&self) -> u64 {
        self.host_netns
    }

    /// Every pod cgroup under `kubepods` now, Guaranteed ones and those in the QoS
    /// cgroups, sorted by UID. Pods and processes that vanish meanwhile are left
    /// out; other read errors (permissions) fail the scan.
    pub fn scan(&mut self, kubepods: &KubepodsDir) -> Result<Vec<DiscoveredPod>, DiscoverError> {
        let kubepods_name = kubepods
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let mut pods = Vec::new();
        for (name, path) in subdirs(&kubepods.path)? {
            // QoS cgroups are found by name here, not taken from `kubepods`: one
            // created after it was found still has its pods seen.
            if let Some(class) = qos_of_dir(&kubepods_name, &name) {
                for (name, path) in subdirs(&path)? {
                    pods.extend(self.pod(&name, path, class)?);
                }
            } else {
                pods.extend(self.pod(&name, path, QosClass::Guaranteed)?);
            }
        }
        pods.sort_by(|a, b| a.uid.cmp(&b.uid));
        self.chosen
            .retain(|id, _| pods.iter().any(|p| p.cgroup_id == *id));
        Ok(pods)
    }

    fn pod(
        &mut self,
        name: &str,
        path: PathBuf,
        qos: QosClass,
    ) -> Result<Option<DiscoveredPod>, DiscoverError> {
        let Some(uid) = pod_uid_of_dir(name) else {
            return Ok(None);
        };
        let cgroup_id = match std::fs::metadata(&path) {
            Ok(meta) => meta.ino(),
            Err(e) if vanished(&e) => return Ok(None),
            Err(e) => return Err(io_error(&path, e)),
        };
        let pids: Vec<u32> = pids_in_cgroup(&path)
            .map_err(|e| io_error(&path, e))?
            .into_iter()
            .collect();
        let chosen = self.choose(cgroup_id, &pids)?;
        let host_network = chosen.is_some_and(|c| c.netns == self.host_netns);
        let netns = chosen.filter(|_| !host_network).map(|c| NetnsRef {
            path: netns_path(&self.proc_root, c.pid),
            inode: c.netns,
        });
        Ok(Some(DiscoveredPod {
            uid,
            qos,
            cgroup_id,
            cgroup_path: path,
            netns,
            host_network,
            pids,
        }))
    }

    /// The process whose netns stands for the pod's: the one chosen before while
    /// it lives in the pod and in the same netns, else the oldest (the sandbox's
    /// pause process, which holds the pod's netns from the start). A process the
    /// agent may not look at is passed over; if all are, the scan fails.
    fn choose(&mut self, cgroup_id: u64, pids: &[u32]) -> Result<Option<Chosen>, DiscoverError> {
        if let Some(prev) = self.chosen.get(&cgroup_id).copied()
            && pids.contains(&prev.pid)
            && netns_inode(&self.proc_root, prev.pid).ok() == Some(prev.netns)
        {
            return Ok(Some(prev));
        }
        let mut refused = None;
        let mut by_age = Vec::with_capacity(pids.len());
        for &pid in pids {
            match start_time(&self.proc_root, pid) {
                Ok(start) => by_age.push((start.unwrap_or(u64::MAX), pid)),
                Err(e) if vanished(&e) => {}
                Err(e) => refused = Some(io_error(self.proc_root.join(pid.to_string()), e)),
            }
        }
        by_age.sort_unstable();
        for (_, pid) in by_age {
            match netns_inode(&self.proc_root, pid) {
                Ok(netns) => {
                    let chosen = Chosen { pid, netns };
                    self.chosen.insert(cgroup_id, chosen);
                    return Ok(Some(chosen));
                }
                Err(e) if vanished(&e) => {}
                Err(e) => refused = Some(io_error(netns_path(&self.proc_root, pid), e)),
            }
        }
        self.chosen.remove(&cgroup_id);
        match refused {
            Some(err) => Err(err),
            None => Ok(None),
        }
    }
}

/// The processes in the network namespace `netns_inode` that are not in `cgroup`
/// or below it: they use a pod's network but escape its capture (a process
/// entered into the netns from the node, say). Sorted by pid. Not meaningful for
/// the node's own netns, where every node process would be listed.
pub fn processes_outside_cgroup(
    proc_root: &Path,
    netns_inode: u64,
    cgroup: &Path,
) -> Result<Vec<OutsideProcess>, DiscoverError> {
    let inside = pids_in_cgroup(cgroup).map_err(|e| io_error(cgroup, e))?;
    let mut outside = Vec::new();
    for pid in all_pids(proc_root).map_err(|e| io_error(proc_root, e))? {
        if inside.contains(&pid) {
            continue;
        }
        match self::netns_inode(proc_root, pid) {
            Ok(inode) if inode == netns_inode => outside.push(pid),
            Ok(_) => {}
            Err(e) if vanished(&e) => {}
            // More privileged than the agent (a sandbox supervisor, say): not
            // something a pod's netns would hold, and nothing to tell anyway.
            Err(e) if forbidden(&e) => debug!(pid, error = %e, "cannot see its netns"),
            Err(e) => return Err(io_error(netns_path(proc_root, pid), e)),
        }
    }
    // A process the runtime started in the pod after the first read was briefly
    // seen outside it: read the cgroup again.
    let inside = pids_in_cgroup(cgroup).map_err(|e| io_error(cgroup, e))?;
    outside.retain(|pid| !inside.contains(pid));
    outside.sort_unstable();
    Ok(outside
        .into_iter()
        .filter_map(|pid| {
            Some(OutsideProcess {
                pid,
                comm: comm(proc_root, pid)?,
                cgroup: cgroup_of(proc_root, pid).unwrap_or_default(),
            })
        })
        .collect())
}

/// The subdirectories of a cgroup, by name; none if it vanished.
fn subdirs(dir: &Path) -> Result<Vec<(String, PathBuf)>, DiscoverError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if vanished(&e) => return Ok(Vec::new()),
        Err(e) => return Err(io_error(dir, e)),
    };
    Ok(entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
        .collect())
}
