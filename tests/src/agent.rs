//! A `mesh-agent run` process on a lab node: in the node's netns, in a cgroup
//! under the lab cgroup (so its own sockets would be captured if it forgot to mark
//! them), pinning under a private bpffs mount.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::lab::Lab;
use crate::pod::in_cgroup_and_netns;

/// The `mesh-agent` binary under test: `$WEFT_AGENT_BIN`, else the one cargo built
/// next to the running test or xtask (`target/<profile>/mesh-agent`).
pub fn agent_binary() -> Result<PathBuf> {
    built_binary("mesh-agent", "WEFT_AGENT_BIN")
}

/// The lab's traffic tool (`src/bin/weft-load.rs`): `$WEFT_LOAD_BIN` or next to us.
pub fn load_binary() -> Result<PathBuf> {
    built_binary("weft-load", "WEFT_LOAD_BIN")
}

fn built_binary(name: &str, env: &str) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> or target/<profile>/<bin>
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "{name} not found next to {}: build it first (`cargo build --workspace --bins`) or set {env}",
        exe.display()
    )
}

pub struct Agent {
    pub node: String,
    pub pid: u32,
    pub log: PathBuf,
    pub bpffs_dir: PathBuf,
}

impl Agent {
    /// Starts the agent of `node` with `config` and waits until it says it is ready.
    pub fn start(lab: &Lab, node: &str, config: &Path, extra_args: &[&str]) -> Result<Agent> {
        let node_ref = lab.node(node)?;
        let bpffs_dir = lab.bpffs(&format!("agent-{node}"))?;
        let cgroup = lab.cgroup().join(format!("agent-{node}"));
        if !cgroup.exists() {
            std::fs::create_dir(&cgroup).with_context(|| format!("create {}", cgroup.display()))?;
        }
        let log = lab.run_dir().join(format!("agent-{node}.log"));
        let log_file = OpenOptions::new().create(true).append(true).open(&log)?;
        let start_offset = log_file.metadata()?.len();
        let mut cmd = in_cgroup_and_netns(
            &cgroup,
            &node_ref.netns_path(),
            &agent_binary()?.to_string_lossy(),
        );
        cmd.args(["run", "--config"])
            .arg(config)
            .args(["--node", node, "--cgroup"])
            .arg(lab.cgroup())
            .arg("--bpffs-dir")
            .arg(&bpffs_dir)
            .args(["--kernel-log-level", "debug"])
            .args(extra_args)
            .env(
                "RUST_LOG",
                std::env::var("WEFT_LAB_LOG")
                    .unwrap_or_else(|_| "info,mesh_agent=debug,mesh_ebpf=debug".into()),
            )
            .env("NO_COLOR", "1")
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        let pid = lab.spawn(cmd)?;
        let agent = Agent {
            node: node.to_string(),
            pid,
            log,
            bpffs_dir,
        };
        agent.wait_for_log("agent ready", start_offset, Duration::from_secs(30))?;
        Ok(agent)
    }

    /// How much the agent has logged: an offset for [`Agent::wait_for_log`].
    pub fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0)
    }

    /// Resident memory of the agent process, in KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .context("no VmRSS")
    }

    /// Everything the agent logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log, from byte `from`, contains `needle`.
    pub fn wait_for_log(&self, needle: &str, from: u64, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log
                .get(from as usize..)
                .is_some_and(|tail| tail.contains(needle))
            {
                return Ok(());
            }
            if !Path::new(&format!("/proc/{}", self.pid)).exists() || Instant::now() > deadline {
                bail!(
                    "agent on {} did not log {needle:?}; its log:\n{log}",
                    self.node
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kill -9`: no chance to clean up, as in a crash.
    pub fn kill(&self, lab: &Lab) -> Result<()> {
        lab.kill(self.pid)
    }
}
