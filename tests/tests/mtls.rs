//! Zero trust between pods (issue 5), end to end: the tunnel is TLS on the
//! wire, strict mode, certificate renewal under load, and the principals in
//! the metrics. Refused peers are in `tests/peers.rs`.

use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use lab::{MeshLab, metric_sum};

const FRONTEND: &str = "frontend-7d9f-a";
/// reviews-v1 on node-b: cross-node from frontend (node-a).
const REVIEWS: &str = "10.88.2.11:9080";

/// tcpdump on every port of the underlay bridge (a bridge device itself does
/// not see what it forwards between ports): only the lab's wire between nodes,
/// every tunnel packet to a file as it comes.
struct Capture {
    child: Child,
    file: std::path::PathBuf,
}

impl Capture {
    fn start(mesh: &MeshLab, name: &str) -> Result<Capture> {
        let file = mesh.lab.run_dir().join(format!("{name}.pcap"));
        let mut child = mesh
            .lab
            .underlay_command("tcpdump")
            .args(["-i", "any", "--immediate-mode", "-U", "-s", "0", "-w"])
            .arg(&file)
            .args(["tcp", "port", "15008"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("start tcpdump (cargo xtask setup installs it)")?;
        // tcpdump says "listening on ul0" once the capture is in place.
        let mut stderr = child.stderr.take().context("tcpdump stderr")?;
        let mut seen = Vec::new();
        let mut byte = [0u8; 1];
        while !String::from_utf8_lossy(&seen).contains("listening on") {
            use std::io::Read;
            if stderr.read(&mut byte)? == 0 {
                bail!("tcpdump exited: {}", String::from_utf8_lossy(&seen));
            }
            seen.push(byte[0]);
        }
        // Keep reading, so tcpdump's last words never meet a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Ok(Capture { child, file })
    }

    /// Stops the capture and returns the raw pcap bytes.
    fn finish(mut self) -> Result<Vec<u8>> {
        // Packets reach tcpdump at once (immediate mode); leave it a moment.
        std::thread::sleep(Duration::from_millis(500));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )?;
        self.child.wait()?;
        Ok(std::fs::read(&self.file)?)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn cross_node_traffic_is_tls_on_the_wire() -> Result<()> {
    let mut mesh = MeshLab::start()?;
    let marker = format!("WEFT-SECRET-{}", std::process::id());

    let capture = Capture::start(&mesh, "mtls")?;
    let out = mesh.load_from(FRONTEND, &["say", REVIEWS, &marker])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wire = capture.finish()?;
    // A TLS handshake record (0x16 0x03 0x01: ClientHello) offering ALPN h2…
    assert!(
        contains(&wire, &[0x16, 0x03, 0x01]),
        "no TLS handshake captured ({} bytes)",
        wire.len()
    );
    assert!(contains(&wire, b"\x02h2"), "the ClientHello offers ALPN h2");
    // …and never the application's bytes.
    assert!(
        !contains(&wire, marker.as_bytes()),
        "the payload crossed the wire in the clear"
    );

    // The same capture does see the marker when the tunnel runs without TLS,
    // so the check above can fail.
    mesh.agent_args = vec!["--insecure-plaintext-tunnel".into()];
    mesh.start_agent("node-a")?;
    mesh.start_agent("node-b")?;
    let capture = Capture::start(&mesh, "plaintext")?;
    let out = mesh.load_from(FRONTEND, &["say", REVIEWS, &marker])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wire = capture.finish()?;
    assert!(
        contains(&wire, marker.as_bytes()),
        "a plaintext tunnel shows the marker"
    );
    Ok(())
}

#[test]
fn metrics_carry_the_principals() -> Result<()> {
    let mesh = MeshLab::start()?;
    mesh.ping(FRONTEND, REVIEWS)?;
    let mtls = [
        (
            "source_principal",
            "spiffe://cluster.local/ns/shop/sa/frontend",
        ),
        (
            "destination_principal",
            "spiffe://cluster.local/ns/shop/sa/reviews",
        ),
        ("connection_security_policy", "mutual_tls"),
    ];
    for (node, reporter) in [("node-a", "source"), ("node-b", "destination")] {
        let mut labels = vec![("reporter", reporter)];
        labels.extend(mtls);
        let opened = metric_sum(
            &mesh.metrics(node)?,
            "istio_tcp_connections_opened_total",
            &labels,
        );
        assert!(
            opened >= 1.0,
            "{node} counts the connection as mutual TLS with both principals"
        );
    }
    Ok(())
}

#[test]
fn strict_mode_refuses_plaintext_but_lets_the_node_probe() -> Result<()> {
    let mesh = MeshLab::start()?;
    // payments-6f7c-b runs on node-a in the strict payments namespace.
    let payments = "10.88.1.14:8443";
    let err = mesh
        .ping("inventory-0", payments)
        .expect_err("plaintext from an unmeshed pod");
    eprintln!("unmeshed → strict: {err:#}");
    // A kubelet-style probe from the node itself.
    let load = lab::load_binary()?;
    let probe = mesh
        .lab
        .node("node-a")?
        .command(&load.to_string_lossy())
        .args(["ping", payments])
        .output()?;
    assert!(
        probe.status.success(),
        "node probe: {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    // Meshed clients still get in, through the tunnel.
    mesh.ping(FRONTEND, payments)?;
    let log = mesh.agent("node-a")?.log();
    assert!(
        log.contains("plaintext refused: namespace is strict mTLS"),
        "{log}"
    );
    Ok(())
}

#[test]
fn renewal_under_steady_load_fails_no_connection() -> Result<()> {
    // 4 s certificates: renewed every ~2 s, several times during the load.
    let mesh = MeshLab::start_with(&["--cert-lifetime", "4s"])?;
    let out = mesh.load_from(
        FRONTEND,
        &["connect", REVIEWS, "--conns", "2", "--secs", "10"],
    )?;
    assert!(
        out.status.success(),
        "a connection failed during renewals: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("load: {}", String::from_utf8_lossy(&out.stdout).trim());
    for node in ["node-a", "node-b"] {
        let metrics = mesh.metrics(node)?;
        let renewed = metric_sum(
            &metrics,
            "weft_certificate_renewals_total",
            &[("result", "success")],
        );
        assert!(
            renewed >= 3.0,
            "{node} renewed {renewed} times in 10 s of 4 s certificates"
        );
        let failed = metric_sum(
            &metrics,
            "weft_certificate_renewals_total",
            &[("result", "failure")],
        );
        assert_eq!(failed, 0.0, "{node}");
    }
    Ok(())
}
