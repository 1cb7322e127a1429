//! Inbound admission at the destination agent (issue 13), end to end: the
//! agent's own ports are never a target, a namespace turning strict applies to
//! running pods and their open plaintext connections, and traffic from the
//! node's address is exempt only on the pod's probe ports.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lab::{MeshLab, metric_sum};

/// frontend-7d9f-a: shop (permissive), node-a.
const FRONTEND: &str = "frontend-7d9f-a";
const FRONTEND_IP: &str = "10.88.1.10";
/// inventory-0: legacy (not meshed), node-a: a plaintext client.
const LEGACY: &str = "inventory-0";
/// reviews-v1: shop, node-b.
const REVIEWS_IP: &str = "10.88.2.11";
/// The agent's own ports (mesh_common: outbound, inbound plaintext, tunnel).
const AGENT_PORTS: [u16; 3] = [15001, 15006, 15008];

fn open_fds(mesh: &MeshLab, node: &str) -> Result<usize> {
    let pid = mesh.agent(node)?.pid;
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// `ping` from `pod` to `addr` must fail, and fast (a reset, not a timeout).
fn assert_refused_fast(mesh: &MeshLab, pod: &str, addr: &str) -> Result<()> {
    let start = Instant::now();
    let result = mesh.ping(pod, addr);
    let took = start.elapsed();
    match result {
        Ok(seen) => bail!("{pod} → {addr} was served ({seen:?})"),
        Err(e) => eprintln!("{pod} → {addr} refused after {took:?}: {e:#}"),
    }
    if took > Duration::from_secs(2) {
        bail!("{pod} → {addr} took {took:?} to fail: not refused");
    }
    Ok(())
}

/// The agent's descriptors stay near where they were (a loop opens thousands).
fn assert_no_descriptor_growth(mesh: &MeshLab, node: &str, before: usize) -> Result<()> {
    std::thread::sleep(Duration::from_millis(500));
    let after = open_fds(mesh, node)?;
    eprintln!("{node} agent descriptors: {before} before, {after} after");
    if after > before + 20 {
        bail!("the agent of {node} went from {before} to {after} open descriptors");
    }
    Ok(())
}

#[test]
fn plaintext_to_the_agents_own_port_is_reset_not_dialled() -> Result<()> {
    let mesh = MeshLab::start()?;
    let before = open_fds(&mesh, "node-a")?;
    assert_refused_fast(&mesh, LEGACY, &format!("{FRONTEND_IP}:15006"))?;
    assert_no_descriptor_growth(&mesh, "node-a", before)?;
    // The pod is still served on its own port.
    mesh.ping(LEGACY, &format!("{FRONTEND_IP}:8080"))?;
    Ok(())
}

#[test]
fn a_tunnel_to_the_agents_own_ports_is_refused() -> Result<()> {
    let mesh = MeshLab::start()?;
    let before = open_fds(&mesh, "node-b")?;
    for port in AGENT_PORTS {
        assert_refused_fast(&mesh, FRONTEND, &format!("{REVIEWS_IP}:{port}"))?;
    }
    assert_no_descriptor_growth(&mesh, "node-b", before)?;
    let refused = metric_sum(
        &mesh.metrics("node-b")?,
        "weft_connections_refused_total",
        &[("reason", "policy")],
    );
    assert!(refused >= 1.0, "refusals counted at node-b: {refused}");
    mesh.ping(FRONTEND, &format!("{REVIEWS_IP}:9080"))?;
    Ok(())
}

#[test]
fn a_namespace_turning_strict_refuses_and_closes_plaintext() -> Result<()> {
    let mut mesh = MeshLab::start()?;
    let frontend = format!("{FRONTEND_IP}:8080");
    let load = lab::load_binary()?;
    let mut client = mesh
        .pod(LEGACY)?
        .command(&load.to_string_lossy())
        .args(["stream", &frontend, "--secs", "30"])
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = client.stdout.take().context("client stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().context("client said nothing")??;
    assert!(first.contains("\"up\":true"), "{first}");

    mesh.config
        .set_label("Namespace", "", "shop", "weft.dev/mtls", Some("strict"))?;
    let applied = Instant::now();
    mesh.apply_config()?;
    let ended = lines.next().context("client ended without a word")??;
    let took = applied.elapsed();
    let _ = client.wait();
    assert!(ended.contains("\"ended\":\"closed\""), "{ended}");
    if took > Duration::from_secs(3) {
        bail!("the open plaintext connection took {took:?} to close");
    }
    eprintln!("open plaintext connection closed {took:?} after shop turned strict");
    assert_refused_fast(&mesh, LEGACY, &frontend)?;
    // Meshed clients still get in, through the tunnel.
    mesh.ping("reviews-v1-5c4b-b", &frontend)?;
    Ok(())
}

/// payments-6f7c-b: payments (strict), node-a; its readiness probe names
/// port 8443 (examples/mesh.yaml).
const PAYMENTS: &str = "payments-6f7c-b";
const PAYMENTS_IP: &str = "10.88.1.14";
/// A port of payments-6f7c-b that no probe names (its server started here).
const NOT_A_PROBE: u16 = 9090;

/// `weft-load ping ADDR` from node-a's own netns, as the kubelet, a
/// hostNetwork pod, or NodePort traffic SNATed to the node would connect.
fn ping_from_node(mesh: &MeshLab, addr: &str) -> Result<()> {
    let load = lab::load_binary()?;
    let out = mesh
        .lab
        .node("node-a")?
        .command(&load.to_string_lossy())
        .args(["ping", addr])
        .output()?;
    if !out.status.success() {
        bail!(
            "ping {addr} from node-a: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Starts an echo server on `port` in `pod` and waits until the meshed
/// `client` reaches it at `addr`.
fn serve_extra_port(mesh: &MeshLab, pod: &str, port: u16, client: &str, addr: &str) -> Result<()> {
    let load = lab::load_binary()?;
    let mut cmd = mesh.pod(pod)?.command(&load.to_string_lossy());
    cmd.args(["echo", &port.to_string()]).stdout(Stdio::null());
    mesh.lab.spawn(cmd)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Err(e) = mesh.ping(client, addr) {
        if Instant::now() > deadline {
            return Err(e.context(format!("the extra server on {addr}")));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

#[test]
fn the_node_is_exempt_from_strict_mtls_on_probe_ports_only() -> Result<()> {
    let mesh = MeshLab::start()?;
    let other = format!("{PAYMENTS_IP}:{NOT_A_PROBE}");
    // payments-6f7c-a (node-b): the payments namespace may reach any port.
    serve_extra_port(&mesh, PAYMENTS, NOT_A_PROBE, "payments-6f7c-a", &other)?;
    ping_from_node(&mesh, &format!("{PAYMENTS_IP}:8443")).context("the probe port")?;
    let start = Instant::now();
    let refused = ping_from_node(&mesh, &other);
    eprintln!("node → {other}: {refused:?} after {:?}", start.elapsed());
    assert!(
        refused.is_err(),
        "plaintext from the node to a port no probe names"
    );
    Ok(())
}

#[test]
fn policy_sees_the_nodes_address_off_probe_ports() -> Result<()> {
    let mut mesh = MeshLab::start()?;
    let frontend = format!("{FRONTEND_IP}:8080");
    ping_from_node(&mesh, &frontend)?;
    let node_ip = mesh.lab.node("node-a")?.bridge_ip();
    mesh.config.add_yaml(&format!(
        "apiVersion: weft.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata:\n  name: deny-node\n  namespace: shop\nspec:\n  action: DENY\n  rules:\n    - from:\n        - source:\n            ipBlocks: [{node_ip}/32]\n"
    ))?;
    mesh.apply_config()?;
    assert!(
        ping_from_node(&mesh, &frontend).is_err(),
        "a DENY of the node's address applies to it"
    );
    mesh.ping(LEGACY, &frontend)?;
    Ok(())
}
