//! A running mesh in the lab: the example topology (`examples/mesh.yaml`), an
//! echo server on every container port of every pod, and an agent per node.
//! Shared by the end-to-end tests, the demo and the benchmark.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::agent::{Agent, load_binary};
use crate::lab::Lab;
use crate::pod::Pod;
use crate::topology::LabConfig;

pub struct MeshLab {
    pub lab: Lab,
    pub config: LabConfig,
    pub agents: Vec<Agent>,
    /// The mesh's local CA (`ca.crt`, `ca.key`), made by `mesh-agent ca init`.
    pub ca_dir: PathBuf,
    /// Flags every agent of this mesh gets after the lab's own.
    pub agent_args: Vec<String>,
}

/// `examples/mesh.yaml` in this repository.
pub fn example_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/mesh.yaml")
}

impl MeshLab {
    /// Builds the example topology with servers in every pod, without agents.
    pub fn without_agents() -> Result<MeshLab> {
        let (lab, config) = Lab::from_config(&example_config())?;
        let load = load_binary()?;
        for (pod, ports) in config.container_ports() {
            let pod = lab.pod(&pod)?;
            for port in ports {
                let mut cmd = pod.command(&load.to_string_lossy());
                cmd.args(["echo", &port.to_string(), "--name", &pod.name])
                    .stdout(std::process::Stdio::null());
                lab.spawn(cmd)?;
            }
        }
        Self::with_ca(lab, config)
    }

    /// The example topology, dual stack, with an agent on every node and no
    /// servers: IPv6 tests start their own.
    pub fn dual_stack() -> Result<MeshLab> {
        let (lab, config) = Lab::from_config_dual_stack(&example_config())?;
        let mut mesh = Self::with_ca(lab, config)?;
        mesh.start_agents()?;
        Ok(mesh)
    }

    /// `lab` and `config` with a fresh CA for the agents, and no agents yet.
    fn with_ca(lab: Lab, config: LabConfig) -> Result<MeshLab> {
        let ca_dir = lab.run_dir().join("ca");
        let init = std::process::Command::new(crate::agent::agent_binary()?)
            .args(["ca", "init"])
            .arg(&ca_dir)
            .output()?;
        if !init.status.success() {
            bail!(
                "mesh-agent ca init failed: {}",
                String::from_utf8_lossy(&init.stderr).trim()
            );
        }
        Ok(MeshLab {
            lab,
            config,
            agents: Vec::new(),
            ca_dir,
            agent_args: Vec::new(),
        })
    }

    /// The example topology with servers and an agent on every node.
    pub fn start() -> Result<MeshLab> {
        Self::start_with(&[])
    }

    /// As `start`, every agent getting `agent_args` too (now and on restarts).
    pub fn start_with(agent_args: &[&str]) -> Result<MeshLab> {
        let mut mesh = Self::without_agents()?;
        mesh.agent_args = agent_args.iter().map(|a| (*a).to_owned()).collect();
        mesh.start_agents()?;
        Ok(mesh)
    }

    /// Starts an agent on every node.
    fn start_agents(&mut self) -> Result<()> {
        let nodes: Vec<String> = self.lab.nodes().iter().map(|n| n.name.clone()).collect();
        for node in nodes {
            self.start_agent(&node)?;
        }
        Ok(())
    }

    /// Starts the agent of `node`, killing (`kill -9`) the one running there.
    pub fn start_agent(&mut self, node: &str) -> Result<&Agent> {
        for old in self.agents.iter().filter(|a| a.node == node) {
            old.kill(&self.lab)?;
        }
        self.agents.retain(|a| a.node != node);
        let mut args = vec!["--ca-dir".to_owned(), self.ca_dir.display().to_string()];
        args.extend(self.agent_args.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let agent = Agent::start(&self.lab, node, self.config.path(), &args)?;
        self.agents.push(agent);
        Ok(self.agents.last().expect("just pushed"))
    }

    pub fn agent(&self, node: &str) -> Result<&Agent> {
        self.agents
            .iter()
            .find(|a| a.node == node)
            .with_context(|| format!("no agent on {node}"))
    }

    pub fn pod(&self, name: &str) -> Result<&Pod> {
        self.lab.pod(name)
    }

    /// Runs `weft-load ARGS` in `pod` and returns its output.
    pub fn load_from(&self, pod: &str, args: &[&str]) -> Result<Output> {
        let load = load_binary()?;
        Ok(self
            .pod(pod)?
            .command(&load.to_string_lossy())
            .args(args)
            .output()?)
    }

    /// `weft-load ping ADDR` from `pod`: (the peer the client's socket reports,
    /// the address the server saw the connection come from).
    pub fn ping(&self, pod: &str, addr: &str) -> Result<(String, String)> {
        let out = self.load_from(pod, &["ping", addr])?;
        if !out.status.success() {
            bail!(
                "ping {addr} from {pod} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let field = |k: &str| json[k].as_str().unwrap_or_default().to_string();
        Ok((field("peer"), field("seen_as")))
    }

    /// The agent metrics of `node`, scraped over HTTP inside the node's netns.
    pub fn metrics(&self, node: &str) -> Result<String> {
        let out = self
            .lab
            .node(node)?
            .command("curl")
            .args(["-sf", "http://127.0.0.1:15020/metrics"])
            .output()?;
        if !out.status.success() {
            bail!(
                "scraping the metrics of {node} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The state generation the agent of `node` serves (`mesh-agent status`).
    pub fn generation(&self, node: &str) -> Result<u64> {
        let out = self.agent_cli(node, &["status", "-o", "json"])?;
        if !out.status.success() {
            bail!(
                "mesh-agent status on {node}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let status: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        status["generation"]
            .as_u64()
            .with_context(|| format!("no generation in {status}"))
    }

    /// Waits until every agent serves at least generation `wanted`.
    pub fn wait_for_generation(&self, wanted: u64, within: Duration) -> Result<Duration> {
        let start = Instant::now();
        for agent in &self.agents {
            loop {
                if self.generation(&agent.node)? >= wanted {
                    break;
                }
                if start.elapsed() > within {
                    bail!(
                        "{}: generation {wanted} not reached within {within:?}",
                        agent.node
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(start.elapsed())
    }

    /// Saves the edited config and waits until every agent has applied it (at
    /// once when nothing changed).
    pub fn apply_config(&self) -> Result<Duration> {
        let before = self.generation(&self.agents.first().context("no agent")?.node)?;
        if !self.config.save()? {
            return Ok(Duration::ZERO); // nothing to apply
        }
        self.wait_for_generation(before + 1, Duration::from_secs(5))
    }

    /// Runs `mesh-agent ARGS` in `node`'s netns (to reach its admin API).
    pub fn agent_cli(&self, node: &str, args: &[&str]) -> Result<Output> {
        let bin = crate::agent::agent_binary()?;
        Ok(self
            .lab
            .node(node)?
            .command(&bin.to_string_lossy())
            .args(args)
            .output()?)
    }
}

/// Sums the values of the series of `metric` whose labels contain every `k="v"` in `labels`.
pub fn metric_sum(text: &str, metric: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with(metric)
                && (l[metric.len()..].starts_with('{') || l[metric.len()..].starts_with(' '))
        })
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
