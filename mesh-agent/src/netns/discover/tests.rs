//! Discovery over a fake cgroup tree and a fake `/proc` in a temporary directory:
//! `cgroup.procs` files list pids, and each `<pid>/ns/net` is a hard link to a
//! file standing for a netns, so processes in one netns share an inode.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::*;

const UID_A: &str = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
const UID_B: &str = "6fa459ea-ee8a-3ca4-894e-db77e160355e";
const UID_H: &str = "c0ffee00-0000-4000-8000-000000000001";

struct FakeNode {
    dir: tempfile::TempDir,
}

impl FakeNode {
    fn new() -> Self {
        let node = FakeNode {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        fs::create_dir_all(node.proc().join("self/ns")).unwrap();
        fs::create_dir_all(node.dir.path().join("ns")).unwrap();
        fs::write(node.netns_file("host"), "").unwrap();
        fs::hard_link(node.netns_file("host"), node.proc().join("self/ns/net")).unwrap();
        node
    }

    /// The fake cgroup hierarchy's root.
    fn root(&self) -> PathBuf {
        self.dir.path().join("cgroup")
    }

    fn proc(&self) -> PathBuf {
        self.dir.path().join("proc")
    }

    fn netns_file(&self, name: &str) -> PathBuf {
        self.dir.path().join("ns").join(name)
    }

    fn netns_inode(&self, name: &str) -> u64 {
        fs::metadata(self.netns_file(name)).unwrap().ino()
    }

    /// A cgroup (relative to the root) with these processes in `cgroup.procs`.
    fn cgroup(&self, rel: &str, pids: &[u32]) -> PathBuf {
        let dir = self.root().join(rel);
        fs::create_dir_all(&dir).unwrap();
        let procs: String = pids.iter().map(|p| format!("{p}\n")).collect();
        fs::write(dir.join("cgroup.procs"), procs).unwrap();
        dir
    }

    /// A process started at `start` in the netns named `netns`.
    fn process(&self, pid: u32, start: u64, netns: &str, cgroup: &str) {
        let dir = self.proc().join(pid.to_string());
        fs::create_dir_all(dir.join("ns")).unwrap();
        if !self.netns_file(netns).exists() {
            fs::write(self.netns_file(netns), "").unwrap();
        }
        fs::hard_link(self.netns_file(netns), dir.join("ns/net")).unwrap();
        let stat = format!("{pid} (app) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {start} 0 0");
        fs::write(dir.join("stat"), stat).unwrap();
        fs::write(dir.join("comm"), "app\n").unwrap();
        fs::write(dir.join("cgroup"), format!("0::/{cgroup}\n")).unwrap();
    }

    fn exit(&self, pid: u32) {
        fs::remove_dir_all(self.proc().join(pid.to_string())).unwrap();
    }
}

fn inode(path: &Path) -> u64 {
    fs::metadata(path).unwrap().ino()
}

#[test]
fn finds_a_cgroupfs_kubepods_with_its_level_and_qos_cgroups() {
    let node = FakeNode::new();
    node.cgroup("node-a/other", &[]);
    let kubepods = node.cgroup("node-a/kubepods", &[]);
    let burstable = node.cgroup("node-a/kubepods/burstable", &[]);
    let found = find_kubepods_in(&node.root().join("node-a"), &node.root()).unwrap();
    assert_eq!(found.path, kubepods);
    assert_eq!(found.layout, KubepodsLayout::Cgroupfs);
    assert_eq!(found.level, 2);
    assert_eq!(
        found.kernel_root(),
        KubepodsRoot {
            cgroup_id: inode(&kubepods),
            level: 2,
            qos_ids: [inode(&burstable), 0],
            host_netns_cookie: 0,
        }
    );
}

#[test]
fn finds_a_systemd_kubepods_slice() {
    let node = FakeNode::new();
    let slice = node.cgroup("kubepods.slice", &[]);
    let besteffort = node.cgroup("kubepods.slice/kubepods-besteffort.slice", &[]);
    let found = find_kubepods_in(&node.root(), &node.root()).unwrap();
    assert_eq!(found.path, slice);
    assert_eq!(found.layout, KubepodsLayout::Systemd);
    assert_eq!(found.level, 1);
    assert_eq!(found.kernel_root().qos_ids, [0, inode(&besteffort)]);
}

#[test]
fn no_kubepods_is_its_own_error() {
    let node = FakeNode::new();
    node.cgroup("system.slice", &[]);
    assert!(matches!(
        find_kubepods_in(&node.root(), &node.root()),
        Err(DiscoverError::NoKubepods(_))
    ));
}

#[test]
fn scan_finds_pods_their_pids_and_netns() {
    let node = FakeNode::new();
    node.cgroup("kubepods", &[]);
    let a = node.cgroup(&format!("kubepods/besteffort/pod{UID_A}"), &[]);
    node.cgroup(&format!("kubepods/besteffort/pod{UID_A}/pause"), &[100]);
    node.cgroup(&format!("kubepods/besteffort/pod{UID_A}/app"), &[120, 121]);
    node.cgroup(
        &format!("kubepods/besteffort/pod{UID_A}/app/nested"),
        &[130],
    );
    for (pid, start) in [(100, 10), (120, 20), (121, 21), (130, 30)] {
        node.process(pid, start, "pod-a", "kubepods/besteffort/pod…");
    }
    // Guaranteed, directly under kubepods, with no process yet.
    let b = node.cgroup(&format!("kubepods/pod{UID_B}"), &[]);
    // hostNetwork: in the node's netns.
    node.cgroup(&format!("kubepods/burstable/pod{UID_H}/c"), &[200]);
    node.process(200, 5, "host", "kubepods/burstable/pod…");
    // Not pods.
    node.cgroup("kubepods/besteffort/podman", &[300]);
    node.cgroup("kubepods/extra", &[]);

    let kubepods = find_kubepods_in(&node.root(), &node.root()).unwrap();
    let mut scanner = PodScanner::new(node.proc()).unwrap();
    assert_eq!(scanner.host_netns_inode(), node.netns_inode("host"));
    let pods = scanner.scan(&kubepods).unwrap();
    assert_eq!(
        pods.iter().map(|p| p.uid.as_str()).collect::<Vec<_>>(),
        [UID_A, UID_B, UID_H]
    );

    let pod_a = &pods[0];
    assert_eq!(pod_a.qos, QosClass::BestEffort);
    assert_eq!(pod_a.cgroup_id, inode(&a));
    assert_eq!(pod_a.cgroup_path, a);
    assert_eq!(pod_a.pids, [100, 120, 121, 130]);
    assert!(!pod_a.host_network);
    assert_eq!(
        pod_a.netns,
        Some(NetnsRef {
            path: node.proc().join("100/ns/net"),
            inode: node.netns_inode("pod-a"),
        })
    );

    let pod_b = &pods[1];
    assert_eq!(
        (pod_b.qos, pod_b.cgroup_id),
        (QosClass::Guaranteed, inode(&b))
    );
    assert_eq!((pod_b.netns.as_ref(), pod_b.host_network), (None, false));
    assert!(pod_b.pids.is_empty());

    let pod_h = &pods[2];
    assert_eq!((pod_h.qos, pod_h.host_network), (QosClass::Burstable, true));
    assert_eq!(
        pod_h.netns, None,
        "a host-network pod offers no netns to enrol"
    );
}

#[test]
fn the_chosen_process_stays_while_it_lives() {
    let node = FakeNode::new();
    node.cgroup("kubepods", &[]);
    let rel = format!("kubepods/besteffort/pod{UID_A}/c");
    node.cgroup(&rel, &[100]);
    node.process(100, 50, "pod-a", &rel);
    let kubepods = find_kubepods_in(&node.root(), &node.root()).unwrap();
    let mut scanner = PodScanner::new(node.proc()).unwrap();
    let chosen = |pods: Vec<DiscoveredPod>| pods[0].netns.clone().map(|n| n.path);
    assert_eq!(
        chosen(scanner.scan(&kubepods).unwrap()),
        Some(node.proc().join("100/ns/net"))
    );

    // An older process appears (pids wrapped, say): the choice does not churn.
    node.cgroup(&rel, &[90, 100]);
    node.process(90, 10, "pod-a", &rel);
    assert_eq!(
        chosen(scanner.scan(&kubepods).unwrap()),
        Some(node.proc().join("100/ns/net"))
    );

    // The chosen one exits, but cgroup.procs still lists it: the next oldest.
    node.exit(100);
    let pods = scanner.scan(&kubepods).unwrap();
    assert_eq!(pods[0].pids, [90, 100], "pids are as the cgroup lists them");
    assert_eq!(chosen(pods), Some(node.proc().join("90/ns/net")));
}

#[test]
fn systemd_pod_slices_give_dashed_uids() {
    let node = FakeNode::new();
    let uid_ = UID_A.replace('-', "_");
    let rel = format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-1.scope"
    );
    node.cgroup(&rel, &[100]);
    node.process(100, 1, "pod-a", &rel);
    let kubepods = find_kubepods_in(&node.root(), &node.root()).unwrap();
    let pods = PodScanner::new(node.proc())
        .unwrap()
        .scan(&kubepods)
        .unwrap();
    assert_eq!(pods.len(), 1);
    assert_eq!(
        (pods[0].uid.as_str(), pods[0].qos),
        (UID_A, QosClass::Burstable)
    );
    assert_eq!(pods[0].pids, [100]);
}

#[test]
fn processes_in_the_pod_netns_but_outside_its_cgroup() {
    let node = FakeNode::new();
    let rel = format!("kubepods/besteffort/pod{UID_A}");
    let pod = node.cgroup(&rel, &[]);
    node.cgroup(&format!("{rel}/c"), &[100]);
    node.process(100, 1, "pod-a", &rel);
    node.process(400, 2, "pod-a", "system.slice/debug.service");
    node.process(500, 3, "host", "system.slice/sshd.service");
    let outside = processes_outside_cgroup(&node.proc(), node.netns_inode("pod-a"), &pod).unwrap();
    assert_eq!(
        outside,
        [OutsideProcess {
            pid: 400,
            comm: "app".into(),
            cgroup: "/system.slice/debug.service".into(),
        }]
    );
}
