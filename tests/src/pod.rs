//! A pod: a netns with a veth to its node's bridge and a cgroup of its own.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::exec::{ip_in, run};
use crate::lab::remove_cgroup;
use crate::node::Node;

pub struct Pod {
    pub name: String,
    pub node: String,
    pub ip: Ipv4Addr,
    /// Name of the pod's network namespace (under /run/netns).
    pub netns: String,
    pub cgroup: PathBuf,
    /// The node's address as this pod sees it.
    pub node_ip: Ipv4Addr,
    /// Dual-stack labs: the pod's IPv6 address (`fd00:<node>::<host>`).
    pub ip6: Option<Ipv6Addr>,
}

impl Pod {
    pub(crate) fn create(
        lab_id: &str,
        node: &Node,
        name: &str,
        ip: Ipv4Addr,
        veth: &str,
        cgroup: PathBuf,
    ) -> Result<Pod> {
        let pod = Pod {
            name: name.to_string(),
            node: node.name.clone(),
            ip,
            netns: format!("{lab_id}-{name}"),
            cgroup,
            node_ip: node.bridge_ip(),
            ip6: None,
        };
        let ns = pod.netns.as_str();
        run("ip", &["netns", "add", ns])?;
        ip_in(ns, &["link", "set", "lo", "up"])?;
        ip_in(
            &node.netns,
            &[
                "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ],
        )?;
        ip_in(&node.netns, &["link", "set", veth, "master", "br0", "up"])?;
        ip_in(ns, &["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        ip_in(ns, &["link", "set", "eth0", "up"])?;
        ip_in(
            ns,
            &[
                "route",
                "add",
                "default",
                "via",
                &node.bridge_ip().to_string(),
            ],
        )?;
        std::fs::create_dir_all(&pod.cgroup)
            .with_context(|| format!("create {}", pod.cgroup.display()))?;
        Ok(pod)
    }

    /// Dual-stack labs: gives the pod the IPv6 address matching its IPv4 one,
    /// with a default route via the node.
    pub(crate) fn enable_ipv6(&mut self, node: &Node) -> Result<()> {
        let ip6 = node.pod_ip6(self.ip.octets()[3]);
        let ns = self.netns.as_str();
        let addr = format!("{ip6}/64");
        ip_in(ns, &["-6", "addr", "add", &addr, "dev", "eth0", "nodad"])?;
        let via = node.bridge_ip6().to_string();
        ip_in(ns, &["-6", "route", "add", "default", "via", &via])?;
        self.ip6 = Some(ip6);
        Ok(())
    }

    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.netns)
    }

    /// A command that runs "in the pod": in its netns and its cgroup, like a
    /// container's process. The shell joins the cgroup, then execs nsenter.
    pub fn command(&self, program: &str) -> Command {
        in_cgroup_and_netns(&self.cgroup, &self.netns_path(), program)
    }

    pub(crate) fn destroy(self) -> Result<()> {
        run("ip", &["netns", "del", &self.netns])?;
        if self.cgroup.exists() {
            remove_cgroup(&self.cgroup)?;
        }
        Ok(())
    }

    /// Runs `f` on a thread inside the pod's netns (not its cgroup: the test
    /// process stays where it is). For opening listeners and similar set-up.
    pub fn in_netns<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        in_netns(&self.netns_path(), f)
    }
}

/// A command that first joins `cgroup`, then runs `program` in the netns at `netns`;
/// arguments added to the returned command go to `program`.
pub fn in_cgroup_and_netns(cgroup: &Path, netns: &Path, program: &str) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"echo $$ > "$1/cgroup.procs" && ns="$2" && shift 2 && exec nsenter --net="$ns" -- "$@""#)
        .arg("sh")
        .arg(cgroup)
        .arg(netns)
        .arg(program);
    cmd
}

/// Runs `f` on a fresh thread that first enters the netns at `path`.
pub fn in_netns<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    std::thread::spawn(move || -> Result<T> {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the netns thread panicked"))?
}
