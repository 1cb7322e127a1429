//! The data path in the lab: the same client tool (`weft-load`) against the
//! same kind of server across nodes, directly (unmeshed pods) and through both
//! agents (meshed pods) with the tunnel in plaintext, in mutual TLS, and in
//! mutual TLS with a new TLS connection per stream: new connections per second
//! and their latency, 1 KiB request/response latency at fixed concurrency (8
//! connections, for the budgets; and 1, the latency added without CPU
//! saturation), single-stream bulk throughput.

use anyhow::{Context, Result, bail};
use lab::MeshLab;

use super::{
    DIRECT_CLIENT, DIRECT_ECHO_PORT, DIRECT_SERVER, MESH_CLIENT, MESH_ECHO_PORT, MESH_SERVER,
    SINK_PORT, bench_lab,
};

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
pub struct DataPath {
    direct: Figures,
    tunnel: Figures,
    mtls: Figures,
    /// mTLS with a new TLS connection for every stream (handshake cost).
    mtls_new_tls: Figures,
}

/// Measures every agent setting, `rounds` rounds each; each round measures
/// the direct path, then the mesh.
pub fn measure_all(extra: &[String], rounds: usize) -> Result<DataPath> {
    println!(
        "\n==> data path in the lab: direct, plaintext tunnel and mTLS (release builds, \
         median of {rounds} rounds; direct measured in every round)"
    );
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    // A lab of its own for each agent setting, and in every round the direct
    // path measured right before the mesh: this machine's figures drift by
    // tens of percent over a run, and the direct baseline is the median of all
    // rounds, interleaved with every setting.
    let mut direct = Vec::new();
    let mut setting = |flags: &[&str], all: bool| -> Result<Figures> {
        let mesh = bench_lab(&extra, flags)?;
        let echo = |pod: &str, port: u16| -> Result<String> {
            Ok(format!("{}:{port}", mesh.pod(pod)?.ip))
        };
        let (direct_echo, mesh_echo) = (
            echo(DIRECT_SERVER, DIRECT_ECHO_PORT)?,
            echo(MESH_SERVER, MESH_ECHO_PORT)?,
        );
        let mut through = Vec::new();
        for _ in 0..rounds {
            direct.push(measure(&mesh, DIRECT_CLIENT, &direct_echo, all)?);
            through.push(measure(&mesh, MESH_CLIENT, &mesh_echo, all)?);
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

/// Prints the table and the budgets; returns the budgets that failed.
pub fn print_report(d: &DataPath) -> Vec<String> {
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
            failed.push((*name).to_owned());
        }
    }
    failed
}
