//! The flags of `mesh-agent run`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

use crate::config::resources::duration::GatewayDuration;

pub const DEFAULT_BPFFS_DIR: &str = "/sys/fs/bpf/weft";

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Local-mode configuration: Kubernetes-shaped YAML (watched and hot-reloaded).
    #[arg(long, required_unless_present = "kube", conflicts_with = "kube")]
    pub config: Vec<PathBuf>,
    /// Cluster mode: take the state from the Kubernetes API server and find the
    /// node's pods from /proc and the kubepods cgroups.
    #[arg(long)]
    pub kube: bool,
    /// Cluster mode: a kubeconfig file [default: in-cluster service account, or
    /// $KUBECONFIG].
    #[arg(long, requires = "kube")]
    pub kubeconfig: Option<PathBuf>,
    /// Where `/ready` and `/healthz` answer for the kubelet's probes.
    #[arg(long, default_value = "0.0.0.0:15021")]
    pub readiness_addr: SocketAddr,
    /// This node's name: the agent serves the pods scheduled on it.
    #[arg(long, env = "NODE_NAME")]
    pub node: String,
    /// cgroup v2 directory to attach the kernel programs to [default: the cgroup v2 root].
    #[arg(long)]
    pub cgroup: Option<PathBuf>,
    /// bpffs directory for the agent's pinned maps, programs and links.
    #[arg(long, default_value = DEFAULT_BPFFS_DIR)]
    pub bpffs_dir: PathBuf,
    #[arg(long, default_value = "127.0.0.1:15000")]
    pub admin_addr: SocketAddr,
    #[arg(long, default_value = "0.0.0.0:15020")]
    pub metrics_addr: SocketAddr,
    /// Level of the kernel programs' own log lines.
    #[arg(long, value_enum, default_value_t = KernelLogLevel::Info)]
    pub kernel_log_level: KernelLogLevel,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// One line per HTTP/gRPC request on stdout, text (Envoy-like) or JSON
    /// [default: off].
    #[arg(long, value_enum)]
    pub access_log: Option<crate::telemetry::AccessLogFormat>,
    /// Local CA (the lab and the demo, not production: the node holds the CA's
    /// key): a directory with `ca.crt` and `ca.key` (`mesh-agent ca init DIR`).
    #[arg(long, env = "WEFT_CA_DIR", conflicts_with = "ca_addr")]
    pub ca_dir: Option<PathBuf>,
    /// The CA service (`mesh-agent ca serve`), e.g.
    /// `https://weft-ca.weft-system.svc:15012`; cluster mode. Its trust bundle is
    /// the ConfigMap `weft-trust-bundle` in `--ca-namespace`, watched.
    #[arg(long, requires = "kube")]
    pub ca_addr: Option<String>,
    /// The projected service-account token (audience `weft-ca`) the agent shows
    /// the CA service; re-read at every request.
    #[arg(long, default_value = crate::identity::DEFAULT_TOKEN_FILE)]
    pub ca_token_file: PathBuf,
    /// Namespace of the CA service's trust bundle ConfigMap.
    #[arg(long, default_value = crate::identity::DEFAULT_NAMESPACE)]
    pub ca_namespace: String,
    /// Trust domain of the workloads' SPIFFE ids.
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// Lifetime of workload certificates, renewed at half life (Gateway API
    /// duration: `24h`, `90m`, `10s`).
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub cert_lifetime: Duration,
    /// Benchmarks only: carry the tunnel without TLS, so meshed traffic crosses
    /// between nodes in the clear. Never in production.
    #[arg(long, hide = true)]
    pub insecure_plaintext_tunnel: bool,
    /// Streams a tunnel connection carries over its life before the pool dials
    /// a new one (default: no limit; 1 makes every stream a new TLS connection,
    /// which the benchmark uses to measure handshakes).
    #[arg(long, hide = true)]
    pub tunnel_max_connection_streams: Option<u64>,
    /// Lab and tests: lower the open-file limit to this before the connection
    /// caps are derived from it (default: the hard limit).
    #[arg(long, hide = true)]
    pub max_open_files: Option<u64>,
    /// A tunnel connection that carries no stream for this long is closed by
    /// the server (tests shorten it).
    #[arg(long, hide = true, value_parser = parse_duration)]
    pub tunnel_idle_timeout: Option<Duration>,
    /// The kernel fast path (sockmap): bytes between a pod's app and the
    /// agent's sockets in the pod skip the loopback TCP stack. Off by default:
    /// on Linux 6.18 a socket in a sockmap can give a blocking reader EAGAIN
    /// (docs/architecture.md, "Kernel programs").
    #[arg(long, value_enum, default_value_t = FastPath::Off)]
    pub fast_path: FastPath,
    /// Dial apps with the client's address as the source (docs/architecture.md,
    /// "Keeping the client's address"); `off`: from the pod's own address.
    #[arg(long, value_enum, default_value_t = ClientAddress::On)]
    pub client_address: ClientAddress,
    /// Threads of the data path's async runtime (0: half the CPUs, at least
    /// one; see `default_worker_threads`).
    #[arg(long, default_value_t = 0)]
    pub worker_threads: usize,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = s.parse::<GatewayDuration>().map_err(|e| e.to_string())?.0;
    if d.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(d)
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum KernelLogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl KernelLogLevel {
    /// aya-log's numbering (`aya_log_common::Level`).
    pub fn as_aya_level(self) -> u8 {
        self as u8 + 1
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FastPath {
    On,
    Off,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ClientAddress {
    On,
    Off,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The runtime's worker threads when `--worker-threads` is not given: half
/// the CPUs, at least one. Measured (`cargo xtask bench --envoy-only --workers
/// N`, two CPUs shared with the load and the apps): one worker per agent gave
/// 5–25 % more req/s and 2–34 % less CPU per request than two, since
/// each request then crosses no thread (no work stealing, no cross-thread
/// wake-ups); the node's other cores are left to the apps the agent carries.
pub fn default_worker_threads(cpus: usize) -> usize {
    (cpus / 2).max(1)
}

impl RunArgs {
    /// `--worker-threads`, or its default for this machine's CPUs.
    pub fn worker_threads(&self) -> usize {
        match self.worker_threads {
            0 => default_worker_threads(
                std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            ),
            n => n,
        }
    }

    pub fn cgroup(&self) -> Result<PathBuf> {
        match &self.cgroup {
            Some(path) => Ok(path.clone()),
            None => crate::check::find_cgroup2()
                .context("no cgroup v2 hierarchy is mounted; run `mesh-agent check`"),
        }
    }

    /// `RUST_LOG` filters (default `info`). Kernel-side lines arrive through the
    /// `log` facade, which the subscriber also takes (its `tracing-log` feature).
    pub fn init_logging(&self) -> Result<()> {
        use tracing_subscriber::EnvFilter;
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false);
        let result = match self.log_format {
            LogFormat::Text => builder.try_init(),
            LogFormat::Json => builder.json().try_init(),
        };
        result.map_err(|e| anyhow::anyhow!("start logging: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_half_the_cpus_and_at_least_one() {
        assert_eq!(default_worker_threads(1), 1);
        assert_eq!(default_worker_threads(2), 1, "the measured case");
        assert_eq!(default_worker_threads(3), 1);
        assert_eq!(default_worker_threads(16), 8);
        let args = |flag: &[&str]| {
            #[derive(clap::Parser)]
            struct Cli {
                #[command(flatten)]
                run: RunArgs,
            }
            let base = ["mesh-agent", "--config", "x.yaml", "--node", "n"];
            let all: Vec<&str> = base.iter().chain(flag).copied().collect();
            <Cli as clap::Parser>::parse_from(all).run
        };
        assert_eq!(args(&["--worker-threads", "3"]).worker_threads(), 3);
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        assert_eq!(args(&[]).worker_threads(), default_worker_threads(cpus));
    }
}
