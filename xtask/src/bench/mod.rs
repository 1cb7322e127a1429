//! `cargo xtask bench`: performance budgets, each measured as a ratio against a
//! baseline taken in the same run (never a timed test). Method and figures:
//! docs/performance.md.
//!
//! - State: building a snapshot from 10,000 Services, 100,000 Pods and 10,000
//!   HTTPRoutes (the `state_build` bench of mesh-agent: time and peak memory).
//! - Data path, in the lab with release builds (data_path.rs): the same client
//!   tool against the same kind of server across nodes, directly and through
//!   both agents with the tunnel in plaintext, in mTLS, and in mTLS with a new
//!   TLS connection per stream.
//! - At scale (scale.rs, `--scale`): unit costs of the cluster source, watch
//!   events, the CA and the kernel maps at growing cluster sizes, and the
//!   idle-connection figures, extrapolated to a node and a 5,000-node cluster.
//! - Weft against Envoy (compare.rs): wrk (HTTP/1.1) and h2load (h2c) over
//!   direct, Weft L4, Weft L7 (a Service port declared HTTP), an Envoy L4
//!   pair and an Envoy L7 pair; the report is written to
//!   `target/bench/report.md` and printed.
//! - Idle connections (idle_conns.rs): what one costs both agents in memory
//!   and descriptors, at 10,000.
//! - New connections (new_conns.rs): 1,000 per second to one app port for
//!   120 s, paced, in pods with no sysctl changed.

mod budgets;
mod compare;
mod data_path;
mod envoy;
mod envoy_config;
mod h2load;
mod http;
mod idle_conns;
mod l7_service;
mod new_conns;
mod procs;
mod report;
mod scale;

use std::process::Stdio;

use anyhow::{Result, bail};
use lab::MeshLab;

use crate::{cargo, setup, step, workspace_root};

/// Direct path: legacy/inventory-0 (node-a) → legacy/inventory-1 (node-b).
const DIRECT_CLIENT: &str = "inventory-0";
const DIRECT_SERVER: &str = "inventory-1";
/// Mesh path: shop/frontend (node-a) → shop/reviews-v1 (node-b), through both agents.
const MESH_CLIENT: &str = "frontend-7d9f-a";
const MESH_SERVER: &str = "reviews-v1-5c4b-b";
const SINK_PORT: u16 = 9999;
/// `weft-load http` on both servers: wrk's target.
const HTTP_PORT: u16 = 8088;
/// The echo servers every lab pod runs on its container ports (HTTP/1.1 and
/// h2c too: h2load's target).
const DIRECT_ECHO_PORT: u16 = 8000;
const MESH_ECHO_PORT: u16 = 9080;

/// What `cargo xtask bench` measures.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// `kube`: the agent against 10,000 pods in the test API server (time to
    /// ready, RSS, update latency) instead of the state and data-path benches.
    #[arg(value_enum)]
    what: Option<BenchWhat>,
    /// Only the data path in the lab (skip the state snapshot bench).
    #[arg(long)]
    data_path_only: bool,
    /// Only the comparison with Envoy (skip the state bench and the tunnel settings).
    #[arg(long, conflicts_with = "no_envoy")]
    envoy_only: bool,
    /// Skip the comparison with Envoy.
    #[arg(long)]
    no_envoy: bool,
    /// Only the L7 comparison (issue 14): direct, Weft L4, Weft L7 and the
    /// Envoy L7 pair, over HTTP/1.1 and h2c; no Envoy L4 pair, no bulk.
    #[arg(long, conflicts_with_all = ["no_envoy", "envoy_only"])]
    l7_only: bool,
    /// Rounds of every data-path measurement; medians are reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    reps: u64,
    /// Seconds of each wrk run in the comparison with Envoy.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    secs: u64,
    /// MiB of each single-stream bulk run in the comparison with Envoy.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    bulk_mib: u64,
    /// Worker threads of each agent (`--worker-threads`) and each Envoy
    /// (`--concurrency`) in the comparison.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    workers: u64,
    /// Idle connections held through both agents to measure what each costs
    /// (idle_conns.rs; 0 skips; not with `--l7-only`).
    #[arg(long, default_value_t = 10_000)]
    idle_conns: u64,
    /// New connections per second to one app port (new_conns.rs; 0 skips;
    /// not with `--l7-only`).
    #[arg(long, default_value_t = 1_000)]
    new_conns_rate: u64,
    /// Seconds of the paced new connections (the budget asks for 120).
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    new_conns_secs: u64,
    /// Only the new-connections measurement.
    #[arg(long, conflicts_with_all = ["envoy_only", "l7_only", "data_path_only", "idle_only"])]
    new_conns_only: bool,
    /// Only the idle-connections measurement.
    #[arg(long, conflicts_with_all = ["envoy_only", "l7_only", "data_path_only"])]
    idle_only: bool,
    /// An extra flag for every agent on every path (repeatable), to compare settings.
    #[arg(long = "agent-arg", allow_hyphen_values = true)]
    agent_args: Vec<String>,
    /// Only the scale model: unit costs (no lab) and the idle connections
    /// (`--idle-conns`, 0 skips), extrapolated to 100 pods × 1,000
    /// connections per node and 5,000 nodes × 100,000 pods (scale.rs,
    /// docs/performance.md "At scale").
    #[arg(long)]
    scale: bool,
    /// Pod starts per second cluster-wide (and as many stops) in the scale model.
    #[arg(long, default_value_t = 10.0)]
    churn: f64,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum BenchWhat {
    Kube,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    setup::run()?;
    if let Some(BenchWhat::Kube) = args.what {
        release_binaries()?;
        return crate::bench_kube::run();
    }
    if args.scale {
        let units = scale::measure()?;
        let conn = if args.idle_conns > 0 {
            release_binaries()?;
            let workers = args.workers.to_string();
            let mut flags = vec!["--worker-threads", workers.as_str()];
            flags.extend(args.agent_args.iter().map(String::as_str));
            let f = idle_conns::measure(args.idle_conns, &flags)?;
            Some(scale::PerConnection {
                kib: f.kib_per_conn(),
                fds_per_socket: f.fds_per_socket(),
                measured_at: args.idle_conns,
            })
        } else {
            None
        };
        return scale::report(&units, args.churn, conn);
    }
    let comparison_only = args.envoy_only || args.l7_only || args.idle_only || args.new_conns_only;
    if !args.data_path_only && !comparison_only {
        step(
            "state: snapshot of 10k Services, 100k Pods, 10k HTTPRoutes",
            cargo().args(["bench", "-p", "mesh-agent", "--bench", "state_build"]),
        )?;
    }
    release_binaries()?;
    let reps = args.reps as usize;
    let mut failed = Vec::new();
    if !comparison_only {
        let figures = data_path::measure_all(&args.agent_args, reps)?;
        failed.extend(data_path::print_report(&figures));
    }
    let mut report = String::new();
    if !args.no_envoy && !args.idle_only && !args.new_conns_only {
        let (compared, over) = compare::run(&compare::Options {
            setup: report::Setup {
                reps,
                secs: args.secs,
                bulk_mib: args.bulk_mib,
                workers: args.workers as usize,
            },
            agent_args: &args.agent_args,
            l7_only: args.l7_only,
        })?;
        report.push_str(&compared);
        failed.extend(over);
    }
    if args.idle_conns > 0 && !args.l7_only && !args.new_conns_only {
        let workers = args.workers.to_string();
        let mut flags = vec!["--worker-threads", workers.as_str()];
        flags.extend(args.agent_args.iter().map(String::as_str));
        let (idle, over) = idle_conns::measure(args.idle_conns, &flags)?.render();
        report.push_str(&idle);
        failed.extend(over);
    }
    if args.new_conns_rate > 0 && !args.l7_only && !args.idle_only {
        let workers = args.workers.to_string();
        let mut flags = vec!["--worker-threads", workers.as_str()];
        flags.extend(args.agent_args.iter().map(String::as_str));
        let figures = new_conns::measure(args.new_conns_rate, args.new_conns_secs, &flags)?;
        let (section, over) = figures.render();
        report.push_str(&section);
        failed.extend(over);
    }
    if !report.is_empty() {
        let dir = workspace_root().join("target/bench");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("report.md");
        std::fs::write(&path, &report)?;
        println!("\n{report}\n(written to {})", path.display());
    }
    if !failed.is_empty() {
        bail!("over budget: {}", failed.join("; "));
    }
    Ok(())
}

/// Builds the release binaries and points the lab at them.
fn release_binaries() -> Result<()> {
    step(
        "release build of the agent and the lab's tools",
        cargo().args(["build", "--release", "--workspace", "--bins"]),
    )?;
    let release = workspace_root().join("target/release");
    // SAFETY: single-threaded at this point; the lab reads these when it spawns.
    unsafe {
        std::env::set_var("WEFT_AGENT_BIN", release.join("mesh-agent"));
        std::env::set_var("WEFT_LOAD_BIN", release.join("weft-load"));
        std::env::set_var("WEFT_LAB_LOG", "warn,mesh_agent::run=info");
    }
    Ok(())
}

/// A fresh lab whose agents get `extra` and `args`, with a sink and an HTTP
/// server on both server pods.
///
/// Every pod reuses TIME_WAIT ports for its outgoing connections: one
/// connection test leaves ~15,000 TIME_WAIT sockets toward its server for a
/// minute, and the next test through the same pods would otherwise pay for
/// the ephemeral-port search they cause (perf: 60% of an agent's CPU in
/// `__inet_hash_connect`), on the direct and the mesh path alike.
fn bench_lab(extra: &[&str], args: &[&str]) -> Result<MeshLab> {
    let flags: Vec<&str> = extra.iter().chain(args).copied().collect();
    let mesh = MeshLab::start_with(&flags)?;
    for pod in mesh.lab.pods() {
        let sysctl = ["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"];
        lab::run(
            "ip",
            &[&["netns", "exec", &pod.netns][..], &sysctl].concat(),
        )?;
    }
    let load = lab::load_binary()?;
    for server in [DIRECT_SERVER, MESH_SERVER] {
        for (mode, port) in [("sink", SINK_PORT), ("http", HTTP_PORT)] {
            let mut cmd = mesh.pod(server)?.command(&load.to_string_lossy());
            cmd.args([mode, &port.to_string()]).stdout(Stdio::null());
            mesh.lab.spawn(cmd)?;
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    Ok(mesh)
}
