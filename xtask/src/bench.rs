//! `cargo xtask bench`: performance budgets, each measured as a ratio against a
//! baseline taken in the same run (never a timed test).
//!
//! - State: building a snapshot from 10,000 Services, 100,000 Pods and 10,000
//!   HTTPRoutes (the `state_build` bench of mesh-agent: time and peak memory).
//! - Data path, in the lab with release builds: the same client tool against the
//!   same kind of server across nodes, directly (unmeshed pods) and through both
//!   agents (meshed pods) with the tunnel in plaintext, in mutual TLS, and in
//!   mutual TLS with a new TLS connection per stream: new connections per second
//!   and their latency, 1 KiB request/response latency at fixed concurrency
//!   (8 connections, for the budgets; and 1, the latency added without CPU
//!   saturation), single-stream bulk throughput.

use std::process::Stdio;

use anyhow::{Context, Result, bail};
use lab::MeshLab;

use crate::{cargo, setup, step, workspace_root};

/// Direct path: legacy/inventory-0 (node-a) → legacy/inventory-1 (node-b).
const DIRECT_CLIENT: &str = "inventory-0";
const DIRECT_SERVER: &str = "inventory-1";
const DIRECT_ECHO: &str = "10.88.2.13:8000";
/// Mesh path: shop/frontend (node-a) → shop/reviews-v1 (node-b), through both agents.
const MESH_CLIENT: &str = "frontend-7d9f-a";
const MESH_SERVER: &str = "reviews-v1-5c4b-b";
const MESH_ECHO: &str = "10.88.2.11:9080";
const SINK_PORT: u16 = 9999;

/// One path's figures (`None`: not measured on that path).
#[derive(Default, Clone, Copy)]
struct Figures {
    p50_us: f64,
    p99_us: f64,
    /// The same echo on one connection: added latency without CPU saturation.
    single_p50_us: f64,
    single_p99_us: f64,
    conns_per_sec: f64,
    connect_p50_us: f64,
    bulk_mib_s: f64,
}

/// The paths measured in one run.
struct DataPath {
    direct: Figures,
    tunnel: Figures,
    mtls: Figures,
    /// mTLS with a new TLS connection for every stream (handshake cost).
    mtls_new_tls: Figures,
}

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
    /// An extra flag for every agent on every path (repeatable), to compare settings.
    #[arg(long = "agent-arg", allow_hyphen_values = true)]
    agent_args: Vec<String>,
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
    if !args.data_path_only {
        step(
            "state: snapshot of 10k Services, 100k Pods, 10k HTTPRoutes",
            cargo().args(["bench", "-p", "mesh-agent", "--bench", "state_build"]),
        )?;
    }
    release_binaries()?;
    let figures = data_path(&args.agent_args)?;
    print_report(&figures)
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

/// Rounds per agent setting; each measures the direct path, then the mesh.
const ROUNDS: usize = 3;

fn data_path(extra: &[String]) -> Result<DataPath> {
    println!(
        "\n==> data path in the lab: direct, plaintext tunnel and mTLS (release builds, \
         median of {ROUNDS} rounds; direct measured in every round)"
    );
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    // A lab of its own for each agent setting, and in every round the direct
    // path measured right before the mesh: this machine's figures drift by
    // tens of percent over a run, and the direct baseline is the median of all
    // rounds, interleaved with every setting.
    let mut direct = Vec::new();
    let mut setting = |flags: &[&str], all: bool| -> Result<Figures> {
        let mesh = bench_lab(&extra, flags)?;
        let mut through = Vec::new();
        for _ in 0..ROUNDS {
            direct.push(measure(&mesh, DIRECT_CLIENT, DIRECT_ECHO, all)?);
            through.push(measure(&mesh, MESH_CLIENT, MESH_ECHO, all)?);
        }
        Ok(median(&through))
    };
    let mtls = setting(&[], true)?;
    let tunnel = setting(&["--insecure-plaintext-tunnel"], true)?;
    let mtls_new_tls = setting(&["--tunnel-max-connection-streams", "1"], false)?;
    Ok(DataPath {
        direct: median(&direct),
        tunnel,
        mtls,
        mtls_new_tls,
    })
}

/// Each figure's median over the rounds that measured it (0: not measured).
fn median(rounds: &[Figures]) -> Figures {
    let of = |get: fn(&Figures) -> f64| {
        let mut v: Vec<f64> = rounds.iter().map(get).filter(|x| *x > 0.0).collect();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => 0.0,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    };
    Figures {
        p50_us: of(|f| f.p50_us),
        p99_us: of(|f| f.p99_us),
        single_p50_us: of(|f| f.single_p50_us),
        single_p99_us: of(|f| f.single_p99_us),
        conns_per_sec: of(|f| f.conns_per_sec),
        connect_p50_us: of(|f| f.connect_p50_us),
        bulk_mib_s: of(|f| f.bulk_mib_s),
    }
}

/// A fresh lab whose agents get `extra` and `args`, with sink servers.
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
        let mut cmd = mesh.pod(server)?.command(&load.to_string_lossy());
        cmd.args(["sink", &SINK_PORT.to_string()])
            .stdout(Stdio::null());
        mesh.lab.spawn(cmd)?;
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    Ok(mesh)
}

/// The same client tool on one path: warm-up, 1 KiB echo at 8 connections and at 1,
/// new connections, and (when `all`) single-stream bulk.
fn measure(mesh: &MeshLab, client: &str, echo: &str, all: bool) -> Result<Figures> {
    let run = |args: &[&str]| -> Result<serde_json::Value> {
        let out = mesh.load_from(client, args)?;
        if !out.status.success() {
            bail!(
                "weft-load {args:?} from {client}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("weft-load output: {}", String::from_utf8_lossy(&out.stdout)))
    };
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    run(&["rr", echo, "--conns", "2", "--secs", "1"])?;
    let mut figures = Figures::default();
    let connect = run(&["connect", echo, "--conns", "4", "--secs", "4"])?;
    figures.conns_per_sec = f(&connect, "per_sec");
    figures.connect_p50_us = f(&connect, "p50_us");
    if all {
        let rr = run(&["rr", echo, "--conns", "8", "--secs", "5", "--size", "1024"])?;
        figures.p50_us = f(&rr, "p50_us");
        figures.p99_us = f(&rr, "p99_us");
        let single = run(&["rr", echo, "--conns", "1", "--secs", "3", "--size", "1024"])?;
        figures.single_p50_us = f(&single, "p50_us");
        figures.single_p99_us = f(&single, "p99_us");
        let bulk = run(&["bulk", &sink_addr(echo), "--mib", "1024"])?;
        figures.bulk_mib_s = f(&bulk, "mib_per_sec");
    }
    Ok(figures)
}

/// The sink server's address on the pod of an echo address.
fn sink_addr(echo: &str) -> String {
    let ip = echo.split(':').next().unwrap_or(echo);
    format!("{ip}:{SINK_PORT}")
}

fn print_report(d: &DataPath) -> Result<()> {
    let (direct, tunnel, mtls) = (&d.direct, &d.tunnel, &d.mtls);
    println!(
        "\n{:<34} {:>10} {:>10} {:>10} {:>9} {:>9}",
        "data path", "direct", "tunnel", "mTLS", "tun/dir", "mTLS/dir"
    );
    let row = |name: &str, unit: &str, get: fn(&Figures) -> f64| {
        let (a, b, c) = (get(direct), get(tunnel), get(mtls));
        println!(
            "{:<34} {:>10.0} {:>10.0} {:>10.0} {:>8.2}× {:>8.2}×",
            format!("{name} ({unit})"),
            a,
            b,
            c,
            b / a,
            c / a
        );
    };
    row("1 KiB echo p50, 8 conns", "µs", |f| f.p50_us);
    row("1 KiB echo p99, 8 conns", "µs", |f| f.p99_us);
    row("1 KiB echo p50, 1 conn", "µs", |f| f.single_p50_us);
    row("1 KiB echo p99, 1 conn", "µs", |f| f.single_p99_us);
    row("new connections, pooled tunnel", "/s", |f| f.conns_per_sec);
    row("  connect + 1-byte echo p50", "µs", |f| f.connect_p50_us);
    row("bulk, one stream", "MiB/s", |f| f.bulk_mib_s);
    let new_tls = &d.mtls_new_tls;
    println!(
        "{:<34} {:>10.0} {:>10} {:>10.0} {:>9} {:>8.2}×",
        "new connections, new TLS each (/s)",
        direct.conns_per_sec,
        "-",
        new_tls.conns_per_sec,
        "",
        new_tls.conns_per_sec / direct.conns_per_sec
    );
    println!(
        "{:<34} {:>10.0} {:>10} {:>10.0}",
        "  connect + 1-byte echo p50 (µs)", direct.connect_p50_us, "-", new_tls.connect_p50_us
    );

    let added = mtls.connect_p50_us - direct.connect_p50_us;
    let budgets = [
        (
            "tunnel p99 ≤ 2× direct (issue 4)",
            format!("{:.2}×", tunnel.p99_us / direct.p99_us),
            tunnel.p99_us <= 2.0 * direct.p99_us,
        ),
        (
            "tunnel bulk ≥ 50% of direct (issue 4)",
            format!("{:.0}%", 100.0 * tunnel.bulk_mib_s / direct.bulk_mib_s),
            tunnel.bulk_mib_s >= 0.5 * direct.bulk_mib_s,
        ),
        (
            "mTLS bulk ≥ 70% of tunnel (issue 5)",
            format!("{:.0}%", 100.0 * mtls.bulk_mib_s / tunnel.bulk_mib_s),
            mtls.bulk_mib_s >= 0.7 * tunnel.bulk_mib_s,
        ),
        (
            "new pooled stream p50 ≤ direct + 150 µs (issue 5)",
            format!("{added:+.0} µs"),
            added <= 150.0,
        ),
    ];
    println!("\nbudgets");
    let mut failed = Vec::new();
    for (name, value, ok) in &budgets {
        println!(
            "  {name:<52} {value:>9}  {}",
            if *ok { "PASS" } else { "FAIL" }
        );
        if !ok {
            failed.push(*name);
        }
    }
    if !failed.is_empty() {
        bail!("over budget: {}", failed.join("; "));
    }
    Ok(())
}
