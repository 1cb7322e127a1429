//! A node's agent as the DaemonSet in `manifests/agent/` runs it: the container's
//! command, args and env from the API server's copy of the DaemonSet, downward-API
//! values substituted, with the tokens the kubelet would project for the
//! DaemonSet's pod on that node. What the lab maps, as a kubelet maps hostPath
//! volumes: the node's bpffs (a private bpffs bound at `/sys/fs/bpf` in the
//! agent's mount namespace) and its cgroup hierarchy (`--cgroup` names the
//! node's subtree of the lab cgroup: the host's `/sys/fs/cgroup` would be the
//! machine's). The service-account files are bound at `/run/secrets` as the
//! kubelet mounts them, and the `kubernetes` Service is forwarded into the node.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::install::{SYSTEM_NAMESPACE, argv, container_spec, env, flag_value, substitute};
use super::pod_status::{report_agent_ready, wait_ready};
use crate::agent::agent_binary;
use crate::kube::{ControlPlane, KUBERNETES_SERVICE_IP, KubeNode};
use crate::pod::in_cgroup_and_netns;

const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

pub struct KubeAgent {
    pub node: String,
    pub pid: u32,
    pub log: PathBuf,
    /// The DaemonSet's pod on this node: (name, uid).
    pub pod: (String, String),
}

/// Where an agent's files live, kept across restarts of the agent.
pub struct AgentFiles {
    pub root: PathBuf,
    pub bpffs: PathBuf,
    pub cgroup: PathBuf,
}

impl KubeAgent {
    /// Starts the agent of `node`, waits until its `/ready` is 200, and reports
    /// its DaemonSet pod Running and Ready, as the kubelet would.
    pub fn start(
        cp: &ControlPlane,
        node: &KubeNode,
        files: &AgentFiles,
        ca: (std::net::Ipv4Addr, u16),
        spawn: impl FnOnce(Command) -> Result<u32>,
    ) -> Result<KubeAgent> {
        let pod = daemonset_pod(cp, &node.object)?;
        let container = container_spec(cp, "daemonset/weft-agent")?;
        let vars = env(
            &container,
            &[
                ("spec.nodeName", node.object.as_str()),
                ("metadata.namespace", SYSTEM_NAMESPACE),
                ("metadata.name", pod.0.as_str()),
            ],
        )?;
        let mut args = argv(&container, &vars);
        if args.first().map(String::as_str) != Some("mesh-agent") {
            bail!("the agent container's command is not mesh-agent: {args:?}");
        }
        substitute(&mut args, "--cgroup", &node.cgroup.to_string_lossy())?;
        let ca_addr = flag_value(&args, "--ca-addr")
            .context("the DaemonSet gives no --ca-addr")?
            .to_string();
        let ca_host = ca_addr
            .trim_start_matches("https://")
            .split(':')
            .next()
            .unwrap_or_default()
            .to_string();
        // Cluster DNS's part: the Service's name to its cluster IP.
        substitute(
            &mut args,
            "--ca-addr",
            &ca_addr.replace(&ca_host, &ca.0.to_string()),
        )?;
        let token_file = flag_value(&args, "--ca-token-file")
            .context("the DaemonSet gives no --ca-token-file")?
            .to_string();
        write_secrets(cp, &files.root, &pod, &token_file)?;

        let log = files.root.join("agent.log");
        let log_file = OpenOptions::new().create(true).append(true).open(&log)?;
        let start_offset = log_file.metadata()?.len();
        std::fs::create_dir_all(&files.cgroup)?;
        let mut cmd = in_cgroup_and_netns(&files.cgroup, &node.netns, "unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "sh", "-euc"])
            .arg(r#"mount --bind "$1" /sys/fs/bpf && mount --bind "$2" /run && shift 2 && exec "$@""#)
            .arg("sh")
            .arg(&files.bpffs)
            .arg(files.root.join("run"))
            .arg(agent_binary()?)
            .args(&args[1..])
            .env_clear()
            .envs(vars)
            .env("KUBERNETES_SERVICE_HOST", KUBERNETES_SERVICE_IP.to_string())
            .env("KUBERNETES_SERVICE_PORT", "443")
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", &files.root)
            .env("RUST_LOG", "info,mesh_agent=debug")
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        let pid = spawn(cmd)?;
        let agent = KubeAgent {
            node: node.name.clone(),
            pid,
            log,
            pod,
        };
        agent.wait_for_log("agent ready", start_offset, Duration::from_secs(60))?;
        // The kubelet's part: the readiness probe passes, the pod is Ready, and
        // the DaemonSet's status counts it (`mesh-agent check` reads that).
        let readiness = flag_value(&args, "--readiness-addr")
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or(15021);
        wait_ready(&node.netns, readiness, Duration::from_secs(30))?;
        report_agent_ready(cp, &agent.pod.0, node.ip, &container, pid)?;
        Ok(agent)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0)
    }

    pub fn wait_for_log(&self, needle: &str, from: u64, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.log_text();
            if text
                .get(from as usize..)
                .is_some_and(|t| t.contains(needle))
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "agent on {} did not log {needle:?} within {timeout:?}; its log:\n{}",
                    self.node,
                    tail(&text, 60)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The DaemonSet controller's pod for `node`, bound to it as the scheduler would
/// (the controller only pins it there with a node affinity).
fn daemonset_pod(cp: &ControlPlane, node: &str) -> Result<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list: Value = serde_json::from_str(&cp.kubectl(&[
            "get",
            "pods",
            "-n",
            SYSTEM_NAMESPACE,
            "-l",
            "app.kubernetes.io/name=weft-agent",
            "-o",
            "json",
        ])?)?;
        let for_node = list["items"].as_array().into_iter().flatten().find(|pod| {
            pod["spec"]["nodeName"] == node
                || pod["spec"]["affinity"]["nodeAffinity"]
                    ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
                    .to_string()
                    .contains(&format!("\"{node}\""))
        });
        if let Some(pod) = for_node {
            let name = pod["metadata"]["name"].as_str().unwrap_or_default();
            let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
            if pod["spec"]["nodeName"].is_null() {
                let binding = serde_json::json!({
                    "apiVersion": "v1", "kind": "Binding",
                    "metadata": {"name": name, "namespace": SYSTEM_NAMESPACE},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": node},
                });
                cp.kubectl_with_input(&["create", "-f", "-"], &binding.to_string())
                    .with_context(|| format!("bind {name} to {node}"))?;
            }
            return Ok((name.to_string(), uid.to_string()));
        }
        if Instant::now() > deadline {
            let describe = cp
                .kubectl(&[
                    "describe",
                    "daemonset",
                    "weft-agent",
                    "-n",
                    SYSTEM_NAMESPACE,
                ])
                .unwrap_or_else(|e| format!("{e:#}"));
            bail!(
                "the DaemonSet controller made no weft-agent pod for node {node} within 30 s:\n{describe}"
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The files the kubelet would mount: the service account (token bound to the
/// pod, the cluster CA, the namespace) and the projected CA token.
fn write_secrets(
    cp: &ControlPlane,
    root: &Path,
    pod: &(String, String),
    ca_token: &str,
) -> Result<()> {
    let bound = Some((pod.0.as_str(), pod.1.as_str()));
    let sa = root.join("run/secrets/kubernetes.io/serviceaccount");
    std::fs::create_dir_all(&sa)?;
    let api_token = cp.token(SYSTEM_NAMESPACE, "weft-agent", API_AUDIENCE, bound)?;
    std::fs::write(sa.join("token"), api_token)?;
    std::fs::copy(cp.ca_cert(), sa.join("ca.crt")).context("copy the cluster CA")?;
    std::fs::write(sa.join("namespace"), SYSTEM_NAMESPACE)?;
    // `/var/run/secrets/…` in the manifest; /var/run is /run.
    let rel = ca_token
        .strip_prefix("/var/run/")
        .or_else(|| ca_token.strip_prefix("/run/"))
        .with_context(|| format!("the CA token path {ca_token} is not under /run"))?;
    let path = root.join("run").join(rel);
    std::fs::create_dir_all(path.parent().context("token path has no parent")?)?;
    let token = cp.token(SYSTEM_NAMESPACE, "weft-agent", "weft-ca", bound)?;
    std::fs::write(path, token)?;
    Ok(())
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
