//! Pods joining and leaving the mesh, agent crashes and restarts, and many
//! connections at once (issue 4).

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use lab::{MeshLab, metric_sum};
use mesh_agent::ebpf::{MapHandles, PinLayout};

const OPENED: &str = "istio_tcp_connections_opened_total";
const RELOAD: Duration = Duration::from_secs(10);

/// The agent's kernel state, read from its pins: (enrolled netns, pods with
/// inbound steering, sk_lookup links).
fn kernel_state(mesh: &MeshLab, node: &str) -> Result<(usize, usize, usize)> {
    let layout = PinLayout::new(&mesh.agent(node)?.bpffs_dir);
    let maps = MapHandles::from_pins(&layout)?;
    Ok((
        maps.enrolled_cookies().len(),
        maps.inbound_pod_ips().len(),
        layout.pinned_sk_lookup_cookies().len(),
    ))
}

fn opened_from(mesh: &MeshLab, node: &str, workload: &str) -> Result<f64> {
    Ok(metric_sum(
        &mesh.metrics(node)?,
        OPENED,
        &[("reporter", "source"), ("source_workload", workload)],
    ))
}

#[test]
fn enrol_unenrol_enrol_a_pod_and_a_namespace_leaves_no_stale_state() -> Result<()> {
    let mut mesh = MeshLab::start()?;
    // node-a runs 4 meshed pods: frontend-a, reviews-v1-a, reviews-v2-a (shop), payments-b.
    assert_eq!(kernel_state(&mesh, "node-a")?, (4, 4, 4));

    // Opt one pod out.
    let from = mesh.agent("node-a")?.log_len();
    mesh.config.set_label(
        "Pod",
        "shop",
        "frontend-7d9f-a",
        "weft.dev/mesh",
        Some("disabled"),
    )?;
    mesh.config.save()?;
    mesh.agent("node-a")?
        .wait_for_log("pod released pod=shop/frontend-7d9f-a", from, RELOAD)?;
    assert_eq!(kernel_state(&mesh, "node-a")?, (3, 3, 3));
    let before = opened_from(&mesh, "node-a", "frontend")?;
    let (_, seen) = mesh.ping("frontend-7d9f-a", "10.88.1.13:8000")?;
    assert!(seen.starts_with("10.88.1.10:"), "{seen}");
    assert_eq!(
        opened_from(&mesh, "node-a", "frontend")?,
        before,
        "not captured any more: the agent did not proxy it"
    );

    // Opt it back in.
    let from = mesh.agent("node-a")?.log_len();
    mesh.config
        .set_label("Pod", "shop", "frontend-7d9f-a", "weft.dev/mesh", None)?;
    mesh.config.save()?;
    mesh.agent("node-a")?
        .wait_for_log("pod enrolled pod=shop/frontend-7d9f-a", from, RELOAD)?;
    assert_eq!(kernel_state(&mesh, "node-a")?, (4, 4, 4));
    mesh.ping("frontend-7d9f-a", "10.88.1.13:8000")?;
    assert_eq!(
        opened_from(&mesh, "node-a", "frontend")?,
        before + 1.0,
        "captured again"
    );

    // The whole namespace out, then in again.
    let from = mesh.agent("node-a")?.log_len();
    mesh.config
        .set_label("Namespace", "", "shop", "weft.dev/mesh", None)?;
    mesh.config.save()?;
    mesh.agent("node-a")?
        .wait_for_log("pod released pod=shop/reviews-v2-8e1a-a", from, RELOAD)?;
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        kernel_state(&mesh, "node-a")?,
        (1, 1, 1),
        "only payments stays"
    );
    let from = mesh.agent("node-a")?.log_len();
    mesh.config
        .set_label("Namespace", "", "shop", "weft.dev/mesh", Some("enabled"))?;
    mesh.config.save()?;
    mesh.agent("node-a")?
        .wait_for_log("pod enrolled pod=shop/reviews-v2-8e1a-a", from, RELOAD)?;
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(kernel_state(&mesh, "node-a")?, (4, 4, 4));
    mesh.ping("frontend-7d9f-a", "10.88.2.12:8443")?;
    mesh.start_agent("node-b").map(|_| ())?; // a restart in between changes nothing
    assert_eq!(kernel_state(&mesh, "node-b")?, (3, 3, 3));
    Ok(())
}

#[test]
fn a_killed_agent_fails_closed_and_a_restarted_one_adopts_its_programs() -> Result<()> {
    let mut mesh = MeshLab::start()?;
    let load = lab::load_binary()?;
    // A connection open through node-a's agent when it dies.
    let mut long_lived = mesh
        .pod("frontend-7d9f-a")?
        .command(&load.to_string_lossy())
        .args(["hold", "10.88.2.11:9080", "--conns", "1", "--secs", "3"])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut first_line = String::new();
    BufReader::new(long_lived.stdout.as_mut().context("stdout")?).read_line(&mut first_line)?;
    assert!(first_line.contains("\"open\":1"), "{first_line}");
    mesh.agent("node-a")?.kill(&mesh.lab)?;

    // Outbound from a captured pod: refused at once, never bypassing the mesh.
    let start = Instant::now();
    let out = mesh.load_from("frontend-7d9f-a", &["ping", "10.88.2.13:8000"])?;
    assert!(
        !out.status.success(),
        "a captured pod must not reach anything while its agent is down"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refused"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "fails fast, took {:?}",
        start.elapsed()
    );
    // Inbound plaintext to a captured pod: refused too (sk_lookup drops).
    let start = Instant::now();
    let out = mesh.load_from("inventory-1", &["ping", "10.88.1.10:8080"])?;
    assert!(
        !out.status.success(),
        "inbound must not bypass the mesh while the agent is down"
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "fails fast, took {:?}",
        start.elapsed()
    );

    // The connection that was open died with the agent that carried it.
    let held = long_lived.wait_with_output()?;
    let text = String::from_utf8_lossy(&held.stdout);
    assert!(
        text.contains("\"survived\":0"),
        "open connections end with the agent: {text}"
    );

    // A restarted agent adopts the pinned programs instead of loading again.
    let agent = mesh.start_agent("node-a")?;
    let log = agent.log();
    assert!(log.contains("adopted pinned kernel programs"), "{log}");
    let (peer, seen) = mesh.ping("frontend-7d9f-a", "10.88.2.12:8443")?;
    assert_eq!(peer, "10.88.2.12:8443");
    assert!(seen.starts_with("10.88.1.10:"), "{seen}");
    mesh.ping("inventory-1", "10.88.1.10:8080")?;
    assert_eq!(
        kernel_state(&mesh, "node-a")?,
        (4, 4, 4),
        "no duplicate state after the restart"
    );
    Ok(())
}

#[test]
fn a_thousand_concurrent_connections_complete_and_memory_returns() -> Result<()> {
    let mesh = MeshLab::start()?;
    let agent = mesh.agent("node-a")?;
    // Warm up, then measure: same node, so node-a's agent carries both ends.
    mesh.ping("frontend-7d9f-a", "10.88.1.11:9080")?;
    let baseline = agent.rss_kib()?;
    let load = lab::load_binary()?;
    let mut client = mesh
        .pod("frontend-7d9f-a")?
        .command(&load.to_string_lossy())
        .args(["hold", "10.88.1.11:9080", "--conns", "1000", "--secs", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(1500));
    let peak = agent.rss_kib()?;
    let status = client.wait()?;
    let out = client.wait_with_output()?;
    assert!(status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\"open\":1000") && text.contains("\"survived\":1000"),
        "{text}"
    );
    // The agent trims freed memory every 5 s.
    std::thread::sleep(Duration::from_secs(6));
    let after = agent.rss_kib()?;
    eprintln!(
        "agent RSS: baseline {baseline} KiB, with 1000 connections {peak} KiB, after {after} KiB"
    );
    let metrics = mesh.metrics("node-a")?;
    let opened = metric_sum(
        &metrics,
        OPENED,
        &[("reporter", "source"), ("source_workload", "frontend")],
    );
    let closed = metric_sum(
        &metrics,
        "istio_tcp_connections_closed_total",
        &[("reporter", "source"), ("source_workload", "frontend")],
    );
    assert!(
        opened >= 1001.0 && closed >= 1001.0,
        "opened {opened}, closed {closed}"
    );
    assert!(
        after <= baseline + (peak.saturating_sub(baseline)) / 2 + 4096,
        "memory returns: baseline {baseline}, peak {peak}, after {after} KiB"
    );
    Ok(())
}

#[test]
fn the_agents_own_connections_are_never_captured() -> Result<()> {
    let mesh = MeshLab::start()?;
    mesh.ping("frontend-7d9f-a", "10.88.2.12:8443")?;
    mesh.ping("frontend-7d9f-a", "10.88.2.13:8000")?;
    // The agents live in the lab cgroup too: their sockets in pod netns carry the
    // mark and are skipped (else the tunnel would loop back into the agent).
    let stats = MapHandles::from_pins(&PinLayout::new(&mesh.agent("node-a")?.bpffs_dir))?.stats();
    assert!(stats.connect_skipped_mark >= 2, "{stats:?}");
    assert!(stats.connect_redirected >= 2, "{stats:?}");
    Ok(())
}
