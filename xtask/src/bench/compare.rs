//! Weft against Envoy (issues 14 and 15): one workload over every path in one
//! lab, interleaved per rep so drift hits them alike.
//!
//! - direct: the unmeshed client pod to the unmeshed server pod;
//! - Weft L4: meshed pods, through both agents (HTTP/2 CONNECT over mTLS), to
//!   the server's pod IP (no Service: carried as bytes);
//! - Weft L7: the same pods through a Service port declared HTTP
//!   (l7_service.rs): HTTP parsed and routed by the source agent;
//! - Envoy L4 and L7: the unmeshed pods through an Envoy per node (envoy.rs).
//!
//! Each over HTTP/1.1 (wrk) and, except Envoy L4, h2c (h2load). Per rep and
//! path: a load at 16 connections (throughput, percentiles, CPU of both
//! proxies), at 1 connection (latency added without saturation) and, on the
//! L4 paths over HTTP/1.1, one bulk stream. RSS of the proxies is read after
//! the last rep.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lab::MeshLab;

use super::envoy;
use super::envoy_config::{self as config, Layout, Tls};
use super::h2load::h2load;
use super::http::{LoadRun, wrk};
use super::l7_service;
use super::report::{self, Figures, Kind, Proto, Row, Setup};
use super::{
    DIRECT_CLIENT, DIRECT_ECHO_PORT, DIRECT_SERVER, HTTP_PORT, MESH_CLIENT, MESH_ECHO_PORT,
    MESH_SERVER, SINK_PORT, bench_lab, procs,
};

/// The identities of the Weft path's workloads (shop/frontend → shop/reviews),
/// which the Envoy pair presents and checks too.
const CLIENT_ID: &str = "spiffe://cluster.local/ns/shop/sa/frontend";
const SERVER_ID: &str = "spiffe://cluster.local/ns/shop/sa/reviews";

pub struct Options<'a> {
    pub setup: Setup,
    pub agent_args: &'a [String],
    /// Only the L7 comparison: no Envoy L4 pair, no bulk.
    pub l7_only: bool,
}

/// One path: what it is, who sends, where to, and which processes are its proxies.
struct Route {
    kind: Kind,
    proto: Proto,
    client: &'static str,
    url: String,
    /// Where its bulk stream goes (only on the L4 paths: the L7 ones carry HTTP).
    bulk: Option<String>,
    proxies: Vec<u32>,
}

impl Route {
    fn name(&self) -> String {
        report::name(self.kind, self.proto)
    }
}

/// Runs the comparison; returns the report and the budgets that failed.
pub fn run(opts: &Options) -> Result<(String, Vec<String>)> {
    let envoy_bin = envoy::binary()?;
    let workers = opts.setup.workers.to_string();
    let mut flags = vec!["--worker-threads", workers.as_str()];
    flags.extend(opts.agent_args.iter().map(String::as_str));
    let mut mesh = bench_lab(&[], &flags)?;
    l7_service::add(&mut mesh)?;
    let direct_ip = mesh.pod(DIRECT_SERVER)?.ip;
    let mesh_ip = mesh.pod(MESH_SERVER)?.ip;
    let layout = Layout {
        a: mesh.lab.node("node-a")?.bridge_ip(),
        b: mesh.lab.node("node-b")?.underlay_ip(),
        http: SocketAddrV4::new(direct_ip, HTTP_PORT),
        sink: SocketAddrV4::new(direct_ip, SINK_PORT),
        echo: SocketAddrV4::new(direct_ip, DIRECT_ECHO_PORT),
    };
    let envoys = start_envoys(&mesh, &envoy_bin, &layout, &workers)?;
    let agents: Vec<u32> = mesh.agents.iter().map(|a| a.pid).collect();
    let routes = routes(&layout, direct_ip, mesh_ip, &agents, &envoys, opts.l7_only);
    let names: Vec<String> = routes.iter().map(Route::name).collect();
    println!(
        "\n==> Weft against Envoy: {} ({} rep(s), {} s per run)",
        names.join("; "),
        opts.setup.reps,
        opts.setup.secs
    );
    for route in &routes {
        wait_until_served(&mesh, route)?;
        // Warm-up: connection pools, tunnels and page cache; and proof that
        // the Weft L7 paths are routed at L7.
        let routed = || match route.kind {
            Kind::WeftL7 => l7_service::requests_routed(&mesh),
            _ => Ok(0.0),
        };
        let before = routed()?;
        let warm = load(&mesh, route, 16, Duration::from_secs(1))?;
        l7_service::check_routed(
            &route.name(),
            before,
            routed()?,
            match route.kind {
                Kind::WeftL7 => warm.requests,
                _ => 0,
            },
        )?;
    }
    let secs = Duration::from_secs(opts.setup.secs);
    let mut samples: Vec<Vec<Figures>> = vec![Vec::new(); routes.len()];
    for rep in 1..=opts.setup.reps {
        println!("rep {rep}/{}", opts.setup.reps);
        // Each protocol's direct p50 at 1 connection in this rep (routes of a
        // protocol come after its direct path).
        let mut direct_single = [f64::NAN; 2];
        for (route, samples) in routes.iter().zip(&mut samples) {
            let mut f = sample(&mesh, route, secs, opts.setup.bulk_mib)?;
            let direct = &mut direct_single[route.proto as usize];
            if route.kind == Kind::Direct {
                *direct = f.single_p50_us;
            }
            f.added_p50_us = f.single_p50_us - *direct;
            let bulk = match f.bulk_gbit_s {
                b if b.is_nan() => String::new(),
                b => format!("  bulk {b:.2} Gbit/s"),
            };
            println!(
                "  {:<40} {:>8.0} req/s  p50 {:>6.0} µs  1-conn p50 {:>5.0} µs{bulk}",
                route.name(),
                f.req_per_sec,
                f.p50_us,
                f.single_p50_us
            );
            samples.push(f);
        }
    }
    let rss = |pids: &[u32]| -> Result<f64> {
        Ok(match pids {
            [] => f64::NAN,
            pids => procs::rss_bytes(pids)? as f64,
        })
    };
    let mut rows = Vec::new();
    for (route, samples) in routes.iter().zip(&samples) {
        rows.push(Row {
            kind: route.kind,
            proto: route.proto,
            figures: report::median(samples),
            rss_bytes: rss(&route.proxies)?,
        });
    }
    Ok(report::render(&opts.setup, &rows))
}

/// The paths in the order each rep runs them: per protocol, direct first
/// (the baseline of "added p50").
fn routes(
    layout: &Layout,
    direct_ip: Ipv4Addr,
    mesh_ip: Ipv4Addr,
    agents: &[u32],
    envoys: &[u32],
    l7_only: bool,
) -> Vec<Route> {
    let at = |ip: Ipv4Addr, port: u16| format!("{ip}:{port}");
    let cluster_ip = l7_service::CLUSTER_IP;
    let mut routes = Vec::new();
    for proto in [Proto::H1, Proto::H2] {
        // HTTP/1.1 to `weft-load http` (any path), h2c to the echo server's 1 KiB.
        let (direct_port, mesh_port, path, envoy_l7_port) = match proto {
            Proto::H1 => (HTTP_PORT, HTTP_PORT, "/", config::L7_PORT),
            Proto::H2 => (
                DIRECT_ECHO_PORT,
                MESH_ECHO_PORT,
                "/bytes/1024",
                config::L7_H2_PORT,
            ),
        };
        let bulk = |addr: String| (proto == Proto::H1 && !l7_only).then_some(addr);
        let route = |kind, client, to: String, bulk, proxies: &[u32]| Route {
            kind,
            proto,
            client,
            url: format!("http://{to}{path}"),
            bulk,
            proxies: proxies.to_vec(),
        };
        routes.push(route(
            Kind::Direct,
            DIRECT_CLIENT,
            at(direct_ip, direct_port),
            bulk(at(direct_ip, SINK_PORT)),
            &[],
        ));
        routes.push(route(
            Kind::WeftL4,
            MESH_CLIENT,
            at(mesh_ip, mesh_port),
            bulk(at(mesh_ip, SINK_PORT)),
            agents,
        ));
        if proto == Proto::H1 && !l7_only {
            routes.push(route(
                Kind::EnvoyL4,
                DIRECT_CLIENT,
                at(layout.a, config::L4_HTTP_PORT),
                bulk(at(layout.a, config::L4_BULK_PORT)),
                envoys,
            ));
        }
        routes.push(route(
            Kind::WeftL7,
            MESH_CLIENT,
            at(cluster_ip, mesh_port),
            None,
            agents,
        ));
        routes.push(route(
            Kind::EnvoyL7,
            DIRECT_CLIENT,
            at(layout.a, envoy_l7_port),
            None,
            envoys,
        ));
    }
    routes
}

/// The route's load tool at `conns` connections for `duration`.
fn load(mesh: &MeshLab, route: &Route, conns: u32, duration: Duration) -> Result<LoadRun> {
    let client = mesh.pod(route.client)?;
    match route.proto {
        Proto::H1 => wrk(client, &route.url, conns, duration),
        Proto::H2 => h2load(
            client,
            &route.url,
            conns,
            duration,
            // Not in the lab's run dir: the agents watch their config file's
            // directory, and every write of the log would wake their watcher
            // (perf: a tenth of the agents' CPU in the h2c rows).
            &std::env::temp_dir().join(format!("weft-bench-h2load-{}.log", std::process::id())),
        ),
    }
}

/// One rep of one path.
fn sample(mesh: &MeshLab, route: &Route, secs: Duration, bulk_mib: u64) -> Result<Figures> {
    let cpu = || -> Result<f64> {
        if route.proxies.is_empty() {
            return Ok(f64::NAN); // nothing between the pods
        }
        procs::cpu_seconds(&route.proxies)
    };
    let before = cpu()?;
    let many = load(mesh, route, 16, secs)?;
    let cpu_many = cpu()? - before;
    let single = load(mesh, route, 1, secs)?;
    let mut f = Figures {
        req_per_sec: many.per_sec,
        p50_us: many.p50_us,
        p90_us: many.p90_us,
        p99_us: many.p99_us,
        cpu_per_1k_req: cpu_many / many.requests as f64 * 1000.0,
        single_p50_us: single.p50_us,
        ..Figures::default()
    };
    if let Some(sink) = &route.bulk {
        let before = cpu()?;
        let out = mesh.load_from(
            route.client,
            &["bulk", sink, "--mib", &bulk_mib.to_string()],
        )?;
        let cpu_bulk = cpu()? - before;
        if !out.status.success() {
            bail!(
                "bulk to {sink} from {}: {}",
                route.client,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("weft-load bulk: {}", String::from_utf8_lossy(&out.stdout)))?;
        let (bytes, took) = (json["bytes"].as_f64(), json["secs"].as_f64());
        let (Some(bytes), Some(took)) = (bytes, took) else {
            bail!("weft-load bulk printed {json}");
        };
        f.bulk_gbit_s = bytes * 8.0 / took / 1e9;
        f.cpu_per_gb = cpu_bulk / (bytes / 1e9);
    }
    Ok(f)
}

/// Envoy A on node-a and B on node-b, with certificates from the lab's CA.
fn start_envoys(
    mesh: &MeshLab,
    envoy_bin: &Path,
    layout: &Layout,
    concurrency: &str,
) -> Result<Vec<u32>> {
    let dir = mesh.lab.run_dir().join("envoy");
    let ca = mesh.ca_dir.join("ca.crt");
    let a_certs = envoy::issue(&mesh.ca_dir, &dir, "envoy-a", CLIENT_ID)?;
    let b_certs = envoy::issue(&mesh.ca_dir, &dir, "envoy-b", SERVER_ID)?;
    let configs = [
        (
            "node-a",
            "envoy-a",
            config::config_a(
                layout,
                &Tls {
                    ca: &ca,
                    own: &a_certs,
                    peer_id: SERVER_ID,
                },
            ),
        ),
        (
            "node-b",
            "envoy-b",
            config::config_b(
                layout,
                &Tls {
                    ca: &ca,
                    own: &b_certs,
                    peer_id: CLIENT_ID,
                },
            ),
        ),
    ];
    let mut pids = Vec::new();
    for (node, name, config) in configs {
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
        let log = File::create(dir.join(format!("{name}.log")))?;
        let mut cmd = mesh.lab.node(node)?.command(&envoy_bin.to_string_lossy());
        // Node::command execs the program in the node's netns: the pid is Envoy's.
        cmd.arg("--config-path")
            .arg(&path)
            .args(["--concurrency", concurrency, "--disable-hot-restart"])
            .args(["--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(log);
        pids.push(mesh.lab.spawn(cmd)?);
    }
    Ok(pids)
}

/// Waits until a request through `route` gets its 200 (Envoy takes a moment
/// to start); on time-out, says what the Envoys logged.
fn wait_until_served(mesh: &MeshLab, route: &Route) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let version = match route.proto {
        Proto::H1 => "--http1.1",
        Proto::H2 => "--http2-prior-knowledge",
    };
    loop {
        let out = mesh
            .pod(route.client)?
            .command("curl")
            .args(["-sS", version, "-o", "/dev/null", "-w", "%{http_code}"])
            .args(["--max-time", "2"])
            .arg(&route.url)
            .output()?;
        if String::from_utf8_lossy(&out.stdout) == "200" {
            return Ok(());
        }
        if Instant::now() > deadline {
            let logs = ["envoy-a", "envoy-b"].map(|name| {
                let path = mesh.lab.run_dir().join(format!("envoy/{name}.log"));
                format!(
                    "{name}: {}",
                    std::fs::read_to_string(path).unwrap_or_default()
                )
            });
            bail!(
                "{} ({}) answers no 200 from {}: {}{}\n{}",
                route.name(),
                route.url,
                route.client,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                logs.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
