//! The pod gate and pod discovery, through the library without an agent: the lab
//! plays the kubelet with a kubepods tree (cgroupfs driver) under a node cgroup;
//! a process in a pod cgroup the agent has not classified is refused from its
//! very first connect, connects once the cgroup is marked, and a process outside
//! kubepods never notices. Discovery finds the pod from the tree and /proc.

mod common;

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lab::{Lab, Pod};
use mesh_agent::ebpf::{KernelPrograms, LoadOptions, Origin, PodEnrolment};
use mesh_agent::netns::discover::{PodScanner, find_kubepods, processes_outside_cgroup};
use mesh_agent::netns::{Netns, netns_cookie};

use common::{output_ok, reply_server};

const UID: &str = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
const UID_GUARANTEED: &str = "6fa459ea-ee8a-3ca4-894e-db77e160355e";
const UID_HOST: &str = "c0ffee00-0000-4000-8000-000000000001";

/// Connects to argv[1]:argv[2] first thing and says how it went.
const CONNECT: &str = r#"
import errno, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
s.settimeout(3)
try:
    s.connect((host, port))
    print("ok")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e)))
"#;

#[test]
fn unclassified_pods_are_refused_until_marked() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.add_node("node-a")?;
    lab.add_pod("node-a", "app", None)?;
    lab.add_pod("node-a", "server", None)?;
    lab.wait_until_forwarding()?;
    let (app, server) = (lab.pod("app")?, lab.pod("server")?);
    let (server_addr, _) =
        reply_server(server, SocketAddr::new(IpAddr::V4(server.ip), 8080), "hi\n")?;
    let mapped = SocketAddr::new(server.ip.to_ipv6_mapped().into(), server_addr.port());
    let local = app.in_netns(|| TcpListener::bind("127.0.0.1:0"))??;
    let local_addr = local.local_addr()?;

    // The kubelet's tree for node-a, and a cgroup of the node's own outside it.
    let node_cgroup = lab.cgroup().join("node-a");
    let kubepods = node_cgroup.join("kubepods");
    let pod_cgroup = kubepods.join("besteffort").join(format!("pod{UID}"));
    let container = pod_cgroup.join("c1");
    let guaranteed = kubepods.join(format!("pod{UID_GUARANTEED}")).join("c1");
    let host_pod = kubepods
        .join("besteffort")
        .join(format!("pod{UID_HOST}"))
        .join("c1");
    let system = node_cgroup.join("system");
    for dir in [
        &container,
        &guaranteed,
        &host_pod,
        &system,
        &kubepods.join("burstable"),
    ] {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }

    let options = LoadOptions {
        cgroup: node_cgroup.clone(),
        bpffs_dir: lab.bpffs("gate-test")?,
        kernel_log_level: 3,
    };
    let mut programs = KernelPrograms::open(&options)?;
    let found = find_kubepods(&node_cgroup)?;
    assert_eq!(found.path, kubepods);
    assert_eq!(found.cgroup_id, inode(&kubepods)?);

    // No root configured (file mode): nothing is held.
    assert_eq!(programs.kubepods_root()?, None);
    assert_eq!(connect(&container, Some(app), server_addr)?, "ok");

    programs.set_kubepods_root(Some(found.kernel_root()))?;
    assert_eq!(programs.kubepods_root()?, Some(found.kernel_root()));

    // An unclassified pod's first connect is refused, over IPv4 and IPv6 sockets,
    // in a QoS cgroup or directly under kubepods; loopback stays open.
    assert_eq!(connect(&container, Some(app), server_addr)?, "EPERM");
    assert_eq!(connect(&container, Some(app), mapped)?, "EPERM");
    assert_eq!(connect(&guaranteed, Some(app), server_addr)?, "EPERM");
    assert_eq!(connect(&container, Some(app), local_addr)?, "ok");
    // The node's processes, outside kubepods, never notice.
    assert_eq!(connect(&system, Some(app), server_addr)?, "ok");
    assert_eq!(connect(&node_cgroup, Some(app), server_addr)?, "ok");
    let refused = programs.maps().stats().connect_refused_unclassified;
    assert!(refused >= 3, "refusals counted: {refused}");

    // Discovery: the pod's UID, cgroup id, pid and netns; the host-network pod.
    let pid = spawn_in(&lab, &container, Some(app), &["sleep", "60"])?;
    let host_pid = spawn_in(&lab, &host_pod, None, &["sleep", "60"])?;
    let stray = spawn_in(&lab, &system, Some(app), &["sleep", "60"])?;
    let mut scanner = PodScanner::new("/proc")?;
    let pods = scanner.scan(&found)?;
    let pod = pods
        .iter()
        .find(|p| p.uid == UID)
        .context("the pod is found")?;
    assert_eq!(pod.cgroup_id, inode(&pod_cgroup)?);
    assert_eq!(pod.cgroup_path, pod_cgroup);
    assert_eq!(pod.pids, [pid]);
    assert!(!pod.host_network);
    let netns = pod.netns.clone().context("the pod's netns")?;
    assert_eq!(netns.inode, inode(&app.netns_path())?);
    assert_eq!(netns.path, PathBuf::from(format!("/proc/{pid}/ns/net")));
    let host = pods
        .iter()
        .find(|p| p.uid == UID_HOST)
        .context("host pod")?;
    assert_eq!((host.host_network, host.netns.as_ref()), (true, None));
    assert_eq!(host.pids, [host_pid]);
    assert!(
        pods.iter()
            .any(|p| p.uid == UID_GUARANTEED && p.pids.is_empty())
    );
    // The stray process shares the pod's netns from outside its cgroup.
    let outside = processes_outside_cgroup(Path::new("/proc"), netns.inode, &pod_cgroup)?;
    assert_eq!(outside.iter().map(|p| p.pid).collect::<Vec<_>>(), [stray]);

    // Marked: the pod connects (not enrolled, so directly).
    programs.mark_pod_cgroup(pod.cgroup_id)?;
    assert_eq!(programs.pod_cgroups(), [pod.cgroup_id]);
    assert_eq!(connect(&container, Some(app), server_addr)?, "ok");
    assert_eq!(connect(&guaranteed, Some(app), server_addr)?, "EPERM");

    // No agent: the pins keep the gate as it was (new pods held, fail closed),
    // and the next agent adopts it.
    let root = programs.kubepods_root()?;
    drop(programs);
    assert_eq!(connect(&guaranteed, Some(app), server_addr)?, "EPERM");
    assert_eq!(connect(&container, Some(app), server_addr)?, "ok");
    let mut programs = KernelPrograms::open(&options)?;
    assert_eq!(programs.origin, Origin::Adopted);
    assert_eq!(programs.kubepods_root()?, root);
    assert_eq!(programs.pod_cgroups(), [pod.cgroup_id]);

    // Forgotten: held again. Enrolled: captured, the gate does not stand in the way
    // (the order the agent follows: enrol, then mark).
    programs.forget_pod_cgroup(pod.cgroup_id)?;
    assert_eq!(connect(&container, Some(app), server_addr)?, "EPERM");
    let capture = app.in_netns(|| TcpListener::bind("127.0.0.1:0"))??;
    let cookie = netns_cookie(&Netns::open(app.netns_path())?)?;
    let enrolment = PodEnrolment {
        netns_cookie: cookie,
        pod_ips: vec![IpAddr::V4(app.ip)],
        outbound_port: capture.local_addr()?.port(),
        node_addr: None,
    };
    programs.enrol(&enrolment, None)?;
    let before = programs.maps().stats().connect_redirected;
    assert_eq!(connect(&container, Some(app), server_addr)?, "ok");
    assert_eq!(programs.maps().stats().connect_redirected, before + 1);
    programs.unenrol(cookie, &enrolment.pod_ips)?;

    // The gate off: nothing is held.
    programs.set_kubepods_root(None)?;
    assert_eq!(connect(&guaranteed, Some(app), server_addr)?, "ok");
    Ok(())
}

/// Runs the connect script as a process that joins `cgroup` (and `netns`) before
/// it starts, so the connect is its first network action; returns its verdict.
fn connect(cgroup: &Path, pod: Option<&Pod>, dst: SocketAddr) -> Result<String> {
    let out = in_cgroup(
        cgroup,
        pod,
        &[
            python(),
            "-c",
            CONNECT,
            &dst.ip().to_string(),
            &dst.port().to_string(),
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .output()
    .context("run python3")?;
    Ok(output_ok(out)?.trim().to_string())
}

/// Starts a long-lived process in `cgroup` (the lab kills it) and waits until it
/// runs `argv[0]`: by then it has joined the cgroup and the netns.
fn spawn_in(lab: &Lab, cgroup: &Path, pod: Option<&Pod>, argv: &[&str]) -> Result<u32> {
    let pid = lab.spawn(in_cgroup(cgroup, pod, argv))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))?;
        if comm.trim_end() == argv[0] {
            return Ok(pid);
        }
        if Instant::now() > deadline {
            bail!("pid {pid} never ran {}", argv[0]);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A shell joins `cgroup`, then execs `argv` (through nsenter into the pod's
/// netns when there is one): the same pid throughout.
fn in_cgroup(cgroup: &Path, pod: Option<&Pod>, argv: &[&str]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"echo $$ > "$1/cgroup.procs" && shift && exec "$@""#)
        .arg("sh")
        .arg(cgroup);
    if let Some(pod) = pod {
        cmd.arg("nsenter")
            .arg(format!("--net={}", pod.netns_path().display()))
            .arg("--");
    }
    cmd.args(argv);
    cmd
}

fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

fn inode(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("stat {}", path.display()))?
        .ino())
}
