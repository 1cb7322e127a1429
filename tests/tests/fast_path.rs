//! The kernel fast path (issue 15 item 3; docs/architecture.md, "Kernel
//! programs"): bytes between a pod's app and the agent's sockets in that pod go
//! socket to socket (sockmap, `sk_msg`), on the source side (app → 15001) and
//! the destination side (agent → app), and arrive whole and in order; the
//! kernel's counters prove the fast path carried them, and `--fast-path off`
//! (the default) leaves it unused.
//!
//! The apps here read through EAGAIN on their blocking sockets: with the fast
//! path, Linux 6.18's sockmap receive path (`tcp_bpf_recvmsg`) returns it to a
//! blocking reader woken without data (its own half-close wakes it), which is
//! why the fast path is off by default. `xfer` counts them (`would_block`).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aya::maps::{Map, MapData, SockHash};
use lab::{MeshLab, load_binary, metric_sum};
use mesh_agent::ebpf::{KernelStats, MapHandles, PinLayout};
use mesh_common::{SockKey, map_names};
use serde_json::Value;

/// frontend-7d9f-a (node-a) → reviews-v1-5c4b-b (node-b), both meshed.
const CLIENT: &str = "frontend-7d9f-a";
const SERVER_POD: &str = "reviews-v1-5c4b-b";
const SERVER: &str = "10.88.2.11:7070";
const ECHO: &str = "10.88.2.11:9080";
const MIB: u64 = 1024 * 1024;
const REDIRECTS: &str = "weft_fast_path_redirects_total";
const ON: &[&str] = &["--fast-path=on"];

fn stats(mesh: &MeshLab, node: &str) -> Result<KernelStats> {
    let layout = PinLayout::new(&mesh.agent(node)?.bpffs_dir);
    Ok(MapHandles::from_pins(&layout)?.stats())
}

/// Sockets in the node's fast-path map right now.
fn sockets_in_map(mesh: &MeshLab, node: &str) -> Result<usize> {
    let layout = PinLayout::new(&mesh.agent(node)?.bpffs_dir);
    let data = MapData::from_pin(layout.map(map_names::FAST_PATH_SOCKETS))?;
    let map: SockHash<_, SockKey> = Map::from_map_data(data)?.try_into()?;
    Ok(map.keys().filter_map(Result::ok).count())
}

/// Starts `weft-load xfer-server` in the server pod; its report lines go to the
/// returned file.
fn start_server(mesh: &MeshLab) -> Result<PathBuf> {
    let out = mesh.lab.run_dir().join("xfer-server.out");
    let mut cmd = mesh
        .pod(SERVER_POD)?
        .command(&load_binary()?.to_string_lossy());
    cmd.args(["xfer-server", "7070"])
        .stdout(std::fs::File::create(&out)?);
    mesh.lab.spawn(cmd)?;
    wait_for(|| Ok(std::fs::read_to_string(&out)?.contains("listening")))?;
    Ok(out)
}

/// The server's report lines so far.
fn reports(out: &PathBuf) -> Result<Vec<Value>> {
    Ok(std::fs::read_to_string(out)?
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?)
}

/// Waits for the server's report number `n` (from 1).
fn report(out: &PathBuf, n: usize) -> Result<Value> {
    wait_for(|| Ok(reports(out)?.len() >= n))?;
    Ok(reports(out)?[n - 1].clone())
}

fn wait_for(mut ready: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if ready()? {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("not within 30 s")
}

/// `weft-load xfer ADDR ARGS` from the client pod, bounded to 60 s.
fn xfer(mesh: &MeshLab, args: &[&str]) -> Result<Value> {
    let load = load_binary()?;
    let out = timed(mesh, &[&load.to_string_lossy(), "xfer", SERVER], args)?;
    if !out.status.success() {
        bail!("xfer {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    serde_json::from_slice(&out.stdout).context("xfer's report")
}

fn timed(mesh: &MeshLab, cmd: &[&str], args: &[&str]) -> Result<std::process::Output> {
    let mut c = mesh.pod(CLIENT)?.command("timeout");
    c.arg("60").args(cmd).args(args);
    Ok(c.output()?)
}

fn header_len(up: u64, down: u64, reset: u8) -> u64 {
    format!("{up} {down} {reset}\n").len() as u64
}

fn tcp_bytes(mesh: &MeshLab, metric: &str) -> Result<f64> {
    let text = mesh.metrics("node-a")?;
    Ok(metric_sum(
        &text,
        metric,
        &[("reporter", "source"), ("source_workload", "frontend")],
    ))
}

#[test]
fn large_transfers_arrive_whole_both_ways_through_the_fast_path() -> Result<()> {
    let mesh = MeshLab::start_with(ON)?;
    let server = start_server(&mesh)?;
    let (a0, b0) = (stats(&mesh, "node-a")?, stats(&mesh, "node-b")?);
    let (rx0, tx0) = (
        tcp_bytes(&mesh, "istio_tcp_received_bytes_total")?,
        tcp_bytes(&mesh, "istio_tcp_sent_bytes_total")?,
    );

    // Up: the server half-closes first, the client sends 128 MiB after its FIN.
    let up = 128 * MIB;
    let client = xfer(&mesh, &["--up", &up.to_string()])?;
    assert_eq!(
        client["peer"], SERVER,
        "getpeername is the original destination"
    );
    assert_eq!(client["down_received"], 0, "{client}");
    let got = report(&server, 1)?;
    eprintln!("up: client {client}, server {got}");
    assert_eq!(got["up_received"], up, "{got}");
    assert_eq!(got["up_ok"], true, "every byte in order: {got}");

    // Down: the client half-closes first, the server sends 128 MiB after it.
    let down = 128 * MIB;
    let client = xfer(&mesh, &["--down", &down.to_string()])?;
    eprintln!("down: client {client}");
    assert_eq!(client["down_received"], down, "{client}");
    assert_eq!(client["down_ok"], true, "every byte in order: {client}");
    assert_eq!(client["error"], Value::Null, "{client}");
    assert_eq!(report(&server, 2)?["up_received"], 0);

    // Both hops beside the apps carried the bytes: the source side (app ↔
    // 15001) on node-a, the destination side (agent ↔ app) on node-b.
    let (a, b) = (stats(&mesh, "node-a")?, stats(&mesh, "node-b")?);
    for (node, before, after) in [("node-a", a0, a), ("node-b", b0, b)] {
        let moved = after.fast_path_bytes - before.fast_path_bytes;
        assert!(
            moved >= up + down,
            "{node}: {moved} bytes by the fast path, {after:?}"
        );
        let scraped = metric_sum(&mesh.metrics(node)?, REDIRECTS, &[]);
        assert!(scraped >= (after.fast_path_redirects - before.fast_path_redirects) as f64);
        assert!(scraped > 0.0, "{node}: {REDIRECTS} is {scraped}");
    }

    // Istio's byte counts stay exact: the agent still reads and writes them all.
    let want_rx = rx0 + (header_len(up, 0, 0) + up + header_len(0, down, 0)) as f64;
    wait_for(|| Ok(tcp_bytes(&mesh, "istio_tcp_received_bytes_total")? >= want_rx))?;
    assert_eq!(tcp_bytes(&mesh, "istio_tcp_received_bytes_total")?, want_rx);
    assert_eq!(
        tcp_bytes(&mesh, "istio_tcp_sent_bytes_total")?,
        tx0 + down as f64
    );

    // Closed connections leave nothing in the map.
    for node in ["node-a", "node-b"] {
        wait_for(|| Ok(sockets_in_map(&mesh, node)? == 0))
            .with_context(|| format!("{node}'s fast-path map keeps closed sockets"))?;
    }
    Ok(())
}

#[test]
fn a_reset_ends_the_other_side_both_ways() -> Result<()> {
    let mesh = MeshLab::start_with(ON)?;
    let server = start_server(&mesh)?;

    // The client resets after 8 MiB: the server's read ends (EOF or reset).
    let client = xfer(&mesh, &["--up", &(8 * MIB).to_string(), "--reset-client"])?;
    assert_eq!(client["reset_sent"], true, "{client}");
    let got = report(&server, 1)?;
    assert!(got["up_received"].as_u64() <= Some(8 * MIB), "{got}");

    // The server resets after 8 MiB: the client's read ends, it does not hang.
    let started = Instant::now();
    let client = xfer(&mesh, &["--down", &(8 * MIB).to_string(), "--reset-server"])?;
    assert!(started.elapsed() < Duration::from_secs(30), "{client}");
    assert!(
        client["down_received"].as_u64() <= Some(8 * MIB),
        "{client}"
    );
    assert_eq!(
        client["down_ok"], true,
        "what arrived is in order: {client}"
    );
    assert_eq!(report(&server, 2)?["reset_sent"], true);

    // And the mesh still carries a whole transfer afterwards.
    let client = xfer(&mesh, &["--up", "1000", "--down", "1000"])?;
    assert_eq!(
        (
            client["down_received"].as_u64(),
            client["down_ok"].as_bool()
        ),
        (Some(1000), Some(true))
    );
    Ok(())
}

#[test]
fn a_thousand_concurrent_connections_all_work() -> Result<()> {
    let mesh = MeshLab::start_with(ON)?;
    let before = stats(&mesh, "node-a")?.fast_path_redirects;
    let out = mesh.load_from(CLIENT, &["hold", ECHO, "--conns", "1000", "--secs", "1"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("\"open\":1000"), "{text}");
    assert!(text.contains("\"survived\":1000"), "{text}");
    let moved = stats(&mesh, "node-a")?.fast_path_redirects - before;
    // Each connection's two echoes, both ways, on the source side.
    assert!(moved >= 4000, "{moved} redirects");
    Ok(())
}

#[test]
fn after_an_agent_restart_old_connections_end_and_new_ones_take_the_fast_path() -> Result<()> {
    let mut mesh = MeshLab::start_with(ON)?;
    let server = start_server(&mesh)?;
    // A long transfer through node-a's agent, then the agent is killed under it.
    let load = load_binary()?;
    let mut long = mesh.pod(CLIENT)?.command("timeout");
    long.args(["60", &load.to_string_lossy(), "xfer", SERVER, "--down"])
        .arg((64 * 1024 * MIB).to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let long = long.spawn()?;
    wait_for(|| Ok(stats(&mesh, "node-b")?.fast_path_bytes > 16 * MIB))?;
    mesh.start_agent("node-a")?;
    let ended = long.wait_with_output()?;
    let ended: Value = serde_json::from_slice(&ended.stdout)?;
    assert_eq!(ended["down_ok"], true, "what arrived was in order: {ended}");
    assert!(
        ended["down_received"].as_u64() < Some(64 * 1024 * MIB),
        "{ended}"
    );

    // New connections work, through the fast path again.
    let before = stats(&mesh, "node-a")?.fast_path_bytes;
    let client = xfer(
        &mesh,
        &[
            "--up",
            &(16 * MIB).to_string(),
            "--down",
            &(16 * MIB).to_string(),
        ],
    )?;
    assert_eq!(client["down_ok"], true, "{client}");
    assert_eq!(client["down_received"], 16 * MIB, "{client}");
    // The server reports each connection once both its directions are done,
    // which may be after the client has finished, and the killed transfer
    // (which sent nothing up) reports whenever its send fails.
    let sent_up = |r: &Value| r["up_received"].as_u64().is_some_and(|n| n > 0);
    wait_for(|| Ok(reports(&server)?.iter().any(sent_up)))?;
    let last = reports(&server)?
        .into_iter()
        .find(sent_up)
        .context("no report")?;
    assert_eq!(
        (last["up_received"].as_u64(), last["up_ok"].as_bool()),
        (Some(16 * MIB), Some(true)),
        "{last}"
    );
    let moved = stats(&mesh, "node-a")?.fast_path_bytes - before;
    assert!(
        moved >= 32 * MIB,
        "{moved} bytes by the fast path after the restart"
    );
    assert!(metric_sum(&mesh.metrics("node-a")?, REDIRECTS, &[]) > 0.0);
    for node in ["node-a", "node-b"] {
        wait_for(|| Ok(sockets_in_map(&mesh, node)? == 0))
            .with_context(|| format!("{node}'s fast-path map keeps dead sockets"))?;
    }
    Ok(())
}

#[test]
fn with_the_fast_path_off_nothing_takes_it() -> Result<()> {
    let mesh = MeshLab::start_with(&["--fast-path=off"])?;
    let server = start_server(&mesh)?;
    let client = xfer(
        &mesh,
        &["--up", &MIB.to_string(), "--down", &MIB.to_string()],
    )?;
    assert_eq!(
        (
            client["down_received"].as_u64(),
            client["down_ok"].as_bool()
        ),
        (Some(MIB), Some(true))
    );
    assert_eq!(report(&server, 1)?["up_ok"], true);
    for node in ["node-a", "node-b"] {
        assert_eq!(stats(&mesh, node)?.fast_path_redirects, 0, "{node}");
        assert_eq!(
            metric_sum(&mesh.metrics(node)?, REDIRECTS, &[]),
            0.0,
            "{node}"
        );
    }
    Ok(())
}

#[test]
fn http_requests_get_their_answers_through_the_fast_path() -> Result<()> {
    let mesh = MeshLab::start_with(&["--fast-path=on", "--worker-threads", "1"])?;
    let mut server = mesh
        .pod(SERVER_POD)?
        .command(&load_binary()?.to_string_lossy());
    server.args(["http", "8088"]).stdout(Stdio::null());
    mesh.lab.spawn(server)?;
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..20 {
        let out = mesh
            .pod(CLIENT)?
            .command("curl")
            .args(["-s", "-o", "/dev/null", "-o", "/dev/null"])
            .args(["-w", "%{http_code}", "-m", "5"])
            .args(["http://10.88.2.11:8088/", "http://10.88.2.11:8088/"])
            .output()?;
        let codes = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(codes, "200200", "{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Holds `n` idle connections from the client pod to `addr` while `check` runs.
fn while_held(
    mesh: &MeshLab,
    addr: &str,
    n: u32,
    check: impl FnOnce() -> Result<()>,
) -> Result<()> {
    use std::io::BufRead;
    let mut idle = mesh.pod(CLIENT)?.command(&load_binary()?.to_string_lossy());
    idle.args(["idle", addr, "--conns", &n.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut idle = idle.spawn()?;
    let mut out = std::io::BufReader::new(idle.stdout.take().context("stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    assert!(line.contains(&format!("\"open\":{n}")), "{line}");
    let checked = check();
    drop(idle.stdin.take());
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut out, &mut rest);
    idle.wait()?;
    checked
}

#[test]
fn only_app_agent_pairs_enter_the_map() -> Result<()> {
    let mesh = MeshLab::start_with(ON)?;
    // Meshed → meshed across nodes: the app's socket and the agent's accepted
    // one on node-a, the agent's dial and the app's accepted one on node-b;
    // the tunnel between the agents stays out.
    while_held(&mesh, ECHO, 10, || {
        assert_eq!(sockets_in_map(&mesh, "node-a")?, 20);
        assert_eq!(sockets_in_map(&mesh, "node-b")?, 20);
        Ok(())
    })?;
    // Meshed → unmeshed (legacy/inventory-1 on node-b): only the source side;
    // the agent's direct dial to another pod stays out.
    while_held(&mesh, "10.88.2.13:8000", 10, || {
        assert_eq!(sockets_in_map(&mesh, "node-a")?, 20);
        assert_eq!(sockets_in_map(&mesh, "node-b")?, 0);
        Ok(())
    })?;
    Ok(())
}
