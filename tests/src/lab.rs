//! The lab itself: owns every namespace, cgroup, mount and process it creates and
//! removes them all on drop.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use anyhow::{Context, Result, bail};

use crate::exec::{ip_in, run};
use crate::names::lab_id;
use crate::node::Node;
use crate::pod::Pod;

pub struct Lab {
    id: String,
    underlay: String,
    cgroup: PathBuf,
    run_dir: PathBuf,
    nodes: Vec<Node>,
    pods: Vec<Pod>,
    /// Numbers the pods' host-side veths; never reused, as pods can be removed.
    next_veth: usize,
    mounts: Mutex<Vec<PathBuf>>,
    children: Mutex<Vec<Child>>,
    /// Nodes and pods also get IPv6 addresses (opt-in: [`Lab::new_dual_stack`]).
    dual_stack: bool,
}

impl Lab {
    /// An empty lab: the underlay namespace and bridge, the lab cgroup, a run dir.
    pub fn new() -> Result<Lab> {
        let id = lab_id();
        let cgroup_root = find_cgroup2().context("no cgroup v2 hierarchy is mounted")?;
        let mut lab = Lab {
            underlay: format!("{id}-ul"),
            cgroup: cgroup_root.join(&id),
            run_dir: PathBuf::from("/run").join(&id),
            id,
            nodes: Vec::new(),
            pods: Vec::new(),
            next_veth: 0,
            mounts: Mutex::new(Vec::new()),
            children: Mutex::new(Vec::new()),
            dual_stack: false,
        };
        // From here on, Drop cleans up whatever got created.
        std::fs::create_dir_all(&lab.run_dir)?;
        std::fs::create_dir(&lab.cgroup)
            .with_context(|| format!("create lab cgroup {}", lab.cgroup.display()))?;
        run("ip", &["netns", "add", &lab.underlay])?;
        ip_in(&lab.underlay, &["link", "set", "lo", "up"])?;
        ip_in(&lab.underlay, &["link", "add", "ul0", "type", "bridge"])?;
        ip_in(&lab.underlay, &["link", "set", "ul0", "up"])?;
        lab.nodes.reserve(4);
        Ok(lab)
    }

    /// An empty dual-stack lab: every node and pod added also gets an IPv6 ULA
    /// address (`fd00:<node>::<host>/64`, the node `::1`), nodes route IPv6 over
    /// the underlay (`fd00:89::<node>`).
    pub fn new_dual_stack() -> Result<Lab> {
        let mut lab = Lab::new()?;
        lab.dual_stack = true;
        Ok(lab)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// `program` in the underlay's netns, where the bridge `ul0` joins the nodes:
    /// the wire between nodes, for captures.
    pub fn underlay_command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.underlay, program]);
        cmd
    }

    /// The lab's cgroup: agents attach their programs here.
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// A directory for this lab's files (configs, logs), removed on drop.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Adds a node: a netns with a pod bridge, linked to the underlay, with routes
    /// to every other node's pod subnet.
    pub fn add_node(&mut self, name: &str) -> Result<&Node> {
        let index = u8::try_from(self.nodes.len() + 1).context("too many nodes")?;
        self.add_node_at(name, index)
    }

    /// Adds a node with address index `index`: pod subnet `10.88.<index>.0/24`,
    /// underlay address `10.89.0.<index>`. For labs whose addresses must differ
    /// from other labs' (those sharing one API server are one cluster).
    pub fn add_node_at(&mut self, name: &str, index: u8) -> Result<&Node> {
        if self.nodes.iter().any(|n| n.name == name) {
            bail!("node {name} already exists");
        }
        if index == 0 || index == 255 || self.nodes.iter().any(|n| n.index == index) {
            bail!("node index {index} is taken or out of range");
        }
        let node = Node::create(&self.id, &self.underlay, name, index)?;
        if self.dual_stack {
            node.enable_ipv6()?;
        }
        for other in &self.nodes {
            node.route_to(other)?;
            other.route_to(&node)?;
            if self.dual_stack {
                node.route6_to(other)?;
                other.route6_to(&node)?;
            }
        }
        self.nodes.push(node);
        Ok(self.nodes.last().expect("just pushed"))
    }

    /// Adds a pod on `node` with the given address (the next free one when `None`).
    pub fn add_pod(&mut self, node: &str, name: &str, ip: Option<Ipv4Addr>) -> Result<&Pod> {
        let cgroup = self.cgroup.join(format!("pod-{name}"));
        self.add_pod_in_cgroup(node, name, ip, cgroup)
    }

    /// Adds a pod whose processes go to `cgroup` (created, with its parents),
    /// e.g. a container's cgroup in kubelet's layout.
    pub fn add_pod_in_cgroup(
        &mut self,
        node: &str,
        name: &str,
        ip: Option<Ipv4Addr>,
        cgroup: PathBuf,
    ) -> Result<&Pod> {
        if self.pods.iter().any(|p| p.name == name) {
            bail!("pod {name} already exists");
        }
        let node = self.node(node)?;
        let ip = match ip {
            Some(ip) => ip,
            None => (10..=254)
                .map(|host| node.pod_ip(host))
                .find(|ip| !self.pods.iter().any(|p| p.ip == *ip))
                .with_context(|| format!("no free pod address on {}", node.name))?,
        };
        let veth = format!("v{}", self.next_veth);
        let mut pod = Pod::create(&self.id, node, name, ip, &veth, cgroup)?;
        if self.dual_stack
            && let Err(e) = pod.enable_ipv6(node)
        {
            let _ = pod.destroy();
            return Err(e);
        }
        self.next_veth += 1;
        self.pods.push(pod);
        Ok(self.pods.last().expect("just pushed"))
    }

    /// Removes a pod before the lab ends: kills what runs in its cgroup, deletes
    /// its netns (and so its veth) and its cgroup.
    pub fn remove_pod(&mut self, name: &str) -> Result<()> {
        let pos = self
            .pods
            .iter()
            .position(|p| p.name == name)
            .with_context(|| format!("no pod {name} in the lab"))?;
        let pod = self.pods.remove(pos);
        kill_cgroup(&pod.cgroup);
        pod.destroy()
    }

    /// Waits until every bridge port of the lab forwards. A new port starts out
    /// disabled and turns to forwarding only when the kernel's link watcher
    /// gets to it, up to a second later; frames meanwhile are dropped (traced:
    /// `BRIDGE_INGRESS_STP_STATE`, `NO_TX_TARGET`), so a test's first SYN
    /// would wait a second for its retransmission.
    pub fn wait_until_forwarding(&self) -> Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let netns = std::iter::once(&self.underlay).chain(self.nodes.iter().map(|n| &n.netns));
        for ns in netns {
            loop {
                let out = run("bridge", &["-n", ns, "-j", "link", "show"])?;
                let ports: Vec<serde_json::Value> = serde_json::from_str(&out)
                    .with_context(|| format!("bridge -j link show in {ns}: {out}"))?;
                let waiting: Vec<&str> = ports
                    .iter()
                    .filter(|p| p["state"].as_str() != Some("forwarding"))
                    .map(|p| p["ifname"].as_str().unwrap_or("?"))
                    .collect();
                if waiting.is_empty() {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    bail!("bridge ports in {ns} never began forwarding: {waiting:?}");
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        Ok(())
    }

    pub fn node(&self, name: &str) -> Result<&Node> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .with_context(|| format!("no node {name} in the lab"))
    }

    pub fn pod(&self, name: &str) -> Result<&Pod> {
        self.pods
            .iter()
            .find(|p| p.name == name)
            .with_context(|| format!("no pod {name} in the lab"))
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    /// A private bpffs mount for `owner` (mounted on first use, unmounted on drop);
    /// returns the pin directory inside it.
    pub fn bpffs(&self, owner: &str) -> Result<PathBuf> {
        let dir = self.run_dir.join(format!("bpf-{owner}"));
        let mut mounts = self.mounts.lock().expect("lab mutex");
        if !mounts.contains(&dir) {
            std::fs::create_dir_all(&dir)?;
            run("mount", &["-t", "bpf", "bpf", &dir.to_string_lossy()])?;
            mounts.push(dir.clone());
        }
        Ok(dir.join("weft"))
    }

    /// Spawns a background process that the lab kills on drop. Returns its pid.
    pub fn spawn(&self, mut cmd: Command) -> Result<u32> {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .context("spawn lab process")?;
        let pid = child.id();
        self.children.lock().expect("lab mutex").push(child);
        Ok(pid)
    }

    /// Kills one process the lab spawned (SIGKILL) and reaps it.
    pub fn kill(&self, pid: u32) -> Result<()> {
        let mut children = self.children.lock().expect("lab mutex");
        if let Some(pos) = children.iter().position(|c| c.id() == pid) {
            let mut child = children.remove(pos);
            let _ = child.kill();
            let _ = child.wait();
        }
        Ok(())
    }

    fn teardown(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        for mut child in self
            .children
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Anything else still in the lab cgroup (processes the children started).
        kill_cgroup(&self.cgroup);
        for mount in self
            .mounts
            .lock()
            .map(|mut m| std::mem::take(&mut *m))
            .unwrap_or_default()
        {
            if let Err(e) = run("umount", &[&mount.to_string_lossy()]) {
                errors.push(e.to_string());
            }
        }
        for pod in self.pods.drain(..) {
            errors.extend(pod.destroy().err().map(|e| e.to_string()));
        }
        for node in self.nodes.drain(..) {
            errors.extend(node.destroy().err().map(|e| e.to_string()));
        }
        errors.extend(
            run("ip", &["netns", "del", &self.underlay])
                .err()
                .map(|e| e.to_string()),
        );
        if self.cgroup.exists() {
            errors.extend(remove_cgroup(&self.cgroup).err().map(|e| e.to_string()));
        }
        let _ = std::fs::remove_dir_all(&self.run_dir);
        errors
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for error in self.teardown() {
            eprintln!("lab {}: teardown: {error}", self.id);
        }
    }
}

/// The first cgroup v2 mount (the same lookup as `mesh-agent check`; the lab does
/// not link the agent so that `cargo xtask setup` builds without kernel programs).
pub fn find_cgroup2() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mount_point = left.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(mount_point))
    })
}

/// Kills every process in a cgroup subtree (`cgroup.kill`, Linux ≥ 5.14).
pub fn kill_cgroup(cgroup: &Path) {
    let _ = std::fs::write(cgroup.join("cgroup.kill"), "1");
    // cgroup.kill is asynchronous: wait until the tree is empty (bounded).
    for _ in 0..100 {
        let populated = std::fs::read_to_string(cgroup.join("cgroup.events"))
            .map(|e| e.contains("populated 1"))
            .unwrap_or(false);
        if !populated {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Removes a cgroup directory and its children, deepest first.
pub fn remove_cgroup(cgroup: &Path) -> Result<()> {
    if let Ok(entries) = std::fs::read_dir(cgroup) {
        for entry in entries.filter_map(Result::ok) {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup(&entry.path())?;
            }
        }
    }
    std::fs::remove_dir(cgroup).with_context(|| format!("remove cgroup {}", cgroup.display()))
}
