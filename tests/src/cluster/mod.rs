//! Weft installed on the Kubernetes tier of the lab: the manifests applied with
//! kubectl, the CA service and each node's agent run from them (see
//! [`agent`] and [`ca`] for what the lab substitutes, and why).

mod agent;
mod ca;
mod install;
mod pod_status;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub use agent::{AgentFiles, KubeAgent};
pub use ca::CaService;
pub use install::{SYSTEM_NAMESPACE, install, manifests_dir, mesh_agent_output};

use crate::kube::{ControlPlane, Forwarder, KubeLab};

pub struct Cluster {
    pub klab: KubeLab,
    pub ca: CaService,
    pub agents: Vec<KubeAgent>,
    forwarders: Vec<Forwarder>,
}

impl Cluster {
    /// A kube lab with `nodes`, Weft installed, the CA running, and no agents yet.
    pub fn new(cp: Arc<ControlPlane>, nodes: &[&str]) -> Result<Cluster> {
        let ca_dir = install(&cp)?;
        let mut klab = KubeLab::new(cp)?;
        for n in nodes {
            klab.add_node(n)?;
        }
        let dir = klab.lab().run_dir().to_path_buf();
        let ca = CaService::start(klab.cp(), &dir, &ca_dir, |cmd| klab.spawn(cmd))?;
        pod_status::report_ca_pods_ready(klab.cp())?;
        let mut forwarders = Vec::new();
        for node in klab.nodes() {
            forwarders.push(klab.cp().forward_kubernetes_service_into(&node.netns)?);
            forwarders.push(ca.forward_into(&node.netns)?);
        }
        Ok(Cluster {
            klab,
            ca,
            agents: Vec::new(),
            forwarders,
        })
    }

    /// Starts (or restarts) the agent of `node` and waits until it is ready.
    pub fn start_agent(&mut self, node: &str) -> Result<&KubeAgent> {
        self.agents.retain(|a| a.node != node);
        let files = self.agent_files(node)?;
        let kube_node = self.klab.node(node)?;
        let agent = KubeAgent::start(
            self.klab.cp(),
            kube_node,
            &files,
            (self.ca.cluster_ip, self.ca.port),
            |cmd| self.klab.spawn(cmd),
        )?;
        self.agents.push(agent);
        Ok(self.agents.last().expect("just pushed"))
    }

    /// Kills the agent of `node` (SIGKILL: what a crash or an OOM kill does).
    pub fn kill_agent(&mut self, node: &str) -> Result<()> {
        let agent = self.agent(node)?;
        self.klab.lab().kill(agent.pid)?;
        self.agents.retain(|a| a.node != node);
        Ok(())
    }

    fn agent_files(&self, node: &str) -> Result<AgentFiles> {
        let root = self.klab.lab().run_dir().join(format!("agent-{node}"));
        std::fs::create_dir_all(&root)?;
        let bpffs = self
            .klab
            .lab()
            .bpffs(&format!("agent-{node}"))?
            .parent()
            .context("bpffs dir has no parent")?
            .to_path_buf();
        let cgroup = self.klab.node(node)?.cgroup.join("weft-agent");
        Ok(AgentFiles {
            root,
            bpffs,
            cgroup,
        })
    }

    pub fn agent(&self, node: &str) -> Result<&KubeAgent> {
        self.agents
            .iter()
            .find(|a| a.node == node)
            .with_context(|| format!("no agent on {node}"))
    }

    /// `mesh-agent <args>` on `node` (its netns: the admin API is on its loopback).
    pub fn agent_cli(&self, node: &str, args: &[&str]) -> Result<Output> {
        let netns = &self.klab.node(node)?.netns;
        Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .arg("--")
            .arg(crate::agent::agent_binary()?)
            .args(args)
            .output()
            .context("run mesh-agent on the node")
    }

    /// The agent's `/metrics` on `node`.
    pub fn metrics(&self, node: &str) -> Result<String> {
        self.curl_on_node(node, "http://127.0.0.1:15020/metrics")
    }

    /// The agent's `/ready` status code on `node`.
    pub fn ready(&self, node: &str) -> Result<bool> {
        Ok(self
            .curl_on_node(node, "http://127.0.0.1:15021/ready")
            .is_ok_and(|b| b.contains("ready") && !b.contains("not")))
    }

    fn curl_on_node(&self, node: &str, url: &str) -> Result<String> {
        let netns = &self.klab.node(node)?.netns;
        let out = Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .args(["--", "curl", "-sf", "--max-time", "5", url])
            .output()?;
        if !out.status.success() {
            bail!("curl {url} on {node} failed");
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Cuts every node off the API server, which keeps running (a partition
    /// between the nodes and the control plane): the `kubernetes` Service's
    /// forwarders go, so the agents' open connections to it are closed and new
    /// ones refused. The CA stays reachable. Undone by
    /// [`Cluster::restore_api_server`].
    pub fn cut_api_server(&mut self) {
        let api = self.klab.cp().apiserver_addr();
        self.forwarders.retain(|f| f.target() != api);
    }

    /// Ends [`Cluster::cut_api_server`]: each node reaches the API server again.
    pub fn restore_api_server(&mut self) -> Result<()> {
        for node in self.klab.nodes() {
            self.forwarders.push(
                self.klab
                    .cp()
                    .forward_kubernetes_service_into(&node.netns)?,
            );
        }
        Ok(())
    }

    /// Waits until `check` holds, polling every 100 ms.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> bool,
    ) -> Result<Duration> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if check() {
                return Ok(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("{what}: not within {timeout:?}")
    }

    /// The cluster IP the API server gave Service `ns/name`.
    pub fn service_ip(&self, ns: &str, name: &str) -> Result<String> {
        let ip = self.cp().kubectl(&[
            "get",
            "service",
            name,
            "-n",
            ns,
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])?;
        Ok(ip.trim().to_string())
    }

    pub fn cp(&self) -> &ControlPlane {
        self.klab.cp()
    }

    pub fn dir(&self) -> PathBuf {
        self.klab.lab().run_dir().to_path_buf()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Forwarders first: their threads hold sockets in the nodes' netns.
        self.forwarders.clear();
    }
}
