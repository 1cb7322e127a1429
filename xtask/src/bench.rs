//! `cargo xtask bench`: performance budgets, each measured as a ratio against a
//! baseline taken in the same run (never a timed test).
//!
//! - State: building a snapshot from 10,000 Services, 100,000 Pods and 10,000
//!   HTTPRoutes (the `state_build` bench of mesh-agent: time and peak memory).
//! - Data path, in the lab with release builds: the same client tool against the
//!   same kind of server across nodes, directly (unmeshed pods) and through both
//!   agents (meshed pods): new connections per second, 1 KiB request/response
//!   latency at fixed concurrency, single-stream bulk throughput.

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

struct Measure {
    name: &'static str,
    unit: &'static str,
    direct: f64,
    mesh: f64,
    /// (ratio bound, true when mesh/direct must stay at or under it)
    budget: Option<(f64, bool)>,
}

pub fn run() -> Result<()> {
    setup::run()?;
    step(
        "state: snapshot of 10k Services, 100k Pods, 10k HTTPRoutes",
        cargo().args(["bench", "-p", "mesh-agent", "--bench", "state_build"]),
    )?;
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
    let measures = data_path()?;
    print_report(&measures)
}

fn data_path() -> Result<Vec<Measure>> {
    println!("\n==> data path in the lab: direct vs through the mesh (release builds)");
    let mesh = MeshLab::start()?;
    let load = lab::load_binary()?;
    for server in [DIRECT_SERVER, MESH_SERVER] {
        let mut cmd = mesh.pod(server)?.command(&load.to_string_lossy());
        cmd.args(["sink", &SINK_PORT.to_string()])
            .stdout(Stdio::null());
        mesh.lab.spawn(cmd)?;
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let run = |client: &str, args: &[String]| -> Result<serde_json::Value> {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = mesh.load_from(client, &args)?;
        if !out.status.success() {
            bail!(
                "weft-load {args:?} from {client}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("weft-load output: {}", String::from_utf8_lossy(&out.stdout)))
    };
    let both = |args: &dyn Fn(&str) -> Vec<String>, field: &str| -> Result<(f64, f64)> {
        // Warm-up then measure, direct first, then mesh.
        let d = run(DIRECT_CLIENT, &args(DIRECT_ECHO))?[field]
            .as_f64()
            .unwrap_or(0.0);
        let m = run(MESH_CLIENT, &args(MESH_ECHO))?[field]
            .as_f64()
            .unwrap_or(0.0);
        Ok((d, m))
    };
    // Warm the tunnel pool and both agents.
    let warm = |addr: &str| -> Vec<String> {
        ["rr", addr, "--conns", "2", "--secs", "1"]
            .map(String::from)
            .to_vec()
    };
    both(&warm, "rps")?;

    let rr = |addr: &str| -> Vec<String> {
        ["rr", addr, "--conns", "8", "--secs", "5", "--size", "1024"]
            .map(String::from)
            .to_vec()
    };
    let direct_rr = run(DIRECT_CLIENT, &rr(DIRECT_ECHO))?;
    let mesh_rr = run(MESH_CLIENT, &rr(MESH_ECHO))?;
    let field = |v: &serde_json::Value, f: &str| v[f].as_f64().unwrap_or(0.0);
    let (p50_d, p50_m) = (field(&direct_rr, "p50_us"), field(&mesh_rr, "p50_us"));
    let (p99_d, p99_m) = (field(&direct_rr, "p99_us"), field(&mesh_rr, "p99_us"));
    let conn = |addr: &str| -> Vec<String> {
        ["connect", addr, "--conns", "4", "--secs", "4"]
            .map(String::from)
            .to_vec()
    };
    let (cps_d, cps_m) = both(&conn, "per_sec")?;
    let bulk = |addr: &str| -> Vec<String> {
        vec![
            "bulk".into(),
            sink_addr(addr),
            "--mib".into(),
            "1024".into(),
        ]
    };
    let (bulk_d, bulk_m) = both(&bulk, "mib_per_sec")?;
    Ok(vec![
        Measure {
            name: "1 KiB echo p50 (8 conns)",
            unit: "µs",
            direct: p50_d,
            mesh: p50_m,
            budget: None,
        },
        Measure {
            name: "1 KiB echo p99 (8 conns)",
            unit: "µs",
            direct: p99_d,
            mesh: p99_m,
            budget: Some((2.0, true)),
        },
        Measure {
            name: "new connections",
            unit: "/s",
            direct: cps_d,
            mesh: cps_m,
            budget: None,
        },
        Measure {
            name: "bulk, one stream",
            unit: "MiB/s",
            direct: bulk_d,
            mesh: bulk_m,
            budget: Some((0.5, false)),
        },
    ])
}

/// The sink server's address on the pod of an echo address.
fn sink_addr(echo: &str) -> String {
    let ip = echo.split(':').next().unwrap_or(echo);
    format!("{ip}:{SINK_PORT}")
}

fn print_report(measures: &[Measure]) -> Result<()> {
    println!(
        "\n{:<28} {:>12} {:>12} {:>8}  budget",
        "data path", "direct", "mesh", "ratio"
    );
    let mut failed = Vec::new();
    for m in measures {
        let ratio = if m.direct > 0.0 {
            m.mesh / m.direct
        } else {
            f64::NAN
        };
        let verdict = match m.budget {
            Some((bound, true)) if ratio <= bound => format!("≤ {bound}× PASS"),
            Some((bound, false)) if ratio >= bound => format!("≥ {bound}× PASS"),
            Some((bound, at_most)) => {
                failed.push(m.name);
                format!("{} {bound}× FAIL", if at_most { "≤" } else { "≥" })
            }
            None => String::new(),
        };
        println!(
            "{:<28} {:>9.0} {:<2} {:>9.0} {:<2} {:>7.2}×  {verdict}",
            m.name, m.direct, m.unit, m.mesh, m.unit, ratio
        );
    }
    if !failed.is_empty() {
        bail!("over budget: {}", failed.join(", "));
    }
    Ok(())
}
