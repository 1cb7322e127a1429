//! Soak (issue 13): one node agent carries 10,000 open meshed connections and a
//! steady request/response load while an unmeshed pod floods the destination
//! pod's tunnel port with connections that never start TLS. The meshed traffic
//! must see zero errors, every held connection must still work at the end, and
//! neither agent's memory may pass `RSS_BOUND_MIB` (docs/security.md, "What a
//! hostile peer can cost a node").
//!
//! Five minutes by default; `WEFT_SOAK_SECS` shortens it for a local run.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use lab::MeshLab;

/// Held connections through node-a's agent (source) and node-b's (destination).
const HELD: u64 = 10_000;
/// Unauthenticated connection attempts per second against the tunnel port.
const FLOOD_RATE: u64 = 500;
/// Resident memory either agent may reach during the soak.
const RSS_BOUND_MIB: u64 = 400;

/// reviews-v1-5c4b-b on node-b: meshed, permissive, echoing on 9080.
const SERVER: &str = "10.88.2.11:9080";
const SERVER_TUNNEL: &str = "10.88.2.11:15008";

fn soak_secs() -> u64 {
    std::env::var("WEFT_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300)
}

fn json(out: &std::process::Output, what: &str) -> Result<Vec<serde_json::Value>> {
    if !out.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

#[test]
fn ten_thousand_connections_and_a_handshake_flood() -> Result<()> {
    let mesh = MeshLab::start()?;
    let secs = soak_secs();
    let agents = [mesh.agent("node-a")?, mesh.agent("node-b")?];
    let start = Instant::now();
    let secs_arg = secs.to_string();
    let secs_arg = secs_arg.as_str();
    let (hold, rr, flood, peak) = std::thread::scope(|s| {
        let hold = s.spawn(|| {
            let conns = HELD.to_string();
            mesh.load_from(
                "frontend-7d9f-a",
                &["hold", SERVER, "--conns", &conns, "--secs", secs_arg],
            )
        });
        let rr = s.spawn(|| {
            mesh.load_from(
                "frontend-7d9f-a",
                &["rr", SERVER, "--conns", "4", "--secs", secs_arg],
            )
        });
        let flood = s.spawn(|| {
            let rate = FLOOD_RATE.to_string();
            mesh.load_from(
                "inventory-0",
                &[
                    "flood",
                    SERVER_TUNNEL,
                    "--rate",
                    &rate,
                    "--secs",
                    secs_arg,
                    "--hold-ms",
                    "2000",
                ],
            )
        });
        let mut peak = [0u64; 2];
        while start.elapsed() < Duration::from_secs(secs + 5) && !hold.is_finished() {
            for (p, agent) in peak.iter_mut().zip(&agents) {
                *p = (*p).max(agent.rss_kib().unwrap_or(0));
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        let join = |h: std::thread::ScopedJoinHandle<'_, Result<std::process::Output>>| {
            h.join().unwrap_or_else(|_| bail!("load thread panicked"))
        };
        (join(hold), join(rr), join(flood), peak)
    });
    let hold = json(&hold?, "hold").inspect_err(|_| {
        for (node, agent) in ["node-a", "node-b"].iter().zip(&agents) {
            let log = agent.log();
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| {
                    (l.contains("WARN") || l.contains("ERROR") || l.contains("limit"))
                        && !l.contains("10.88.1.13")
                })
                .collect();
            eprintln!("{node}'s agent, warnings (last 20 of {}):", lines.len());
            for l in lines.iter().rev().take(20).rev() {
                eprintln!("  {l}");
            }
        }
    })?;
    let rr = json(&rr?, "rr (meshed request/response during the soak)")?;
    let flood = json(&flood?, "flood")?;
    let field = |v: &[serde_json::Value], k: &str| v.iter().find_map(|j| j[k].as_u64());
    println!(
        "soak {secs} s: held {:?}/{HELD} survived {:?}; rr {:?} requests; flood {:?} attempts, {:?} connected; peak RSS node-a {} MiB, node-b {} MiB (bound {RSS_BOUND_MIB} MiB)",
        field(&hold, "open"),
        field(&hold, "survived"),
        field(&rr, "requests"),
        field(&flood, "attempts"),
        field(&flood, "connected"),
        peak[0] / 1024,
        peak[1] / 1024,
    );
    assert_eq!(field(&hold, "open"), Some(HELD), "every connection opened");
    assert_eq!(
        field(&hold, "survived"),
        Some(HELD),
        "every held connection still carries data after the soak"
    );
    assert!(
        field(&rr, "requests").unwrap_or(0) > secs * 100,
        "meshed requests kept flowing: {rr:?}"
    );
    assert!(
        field(&flood, "attempts").unwrap_or(0) >= secs * FLOOD_RATE * 9 / 10,
        "the flood ran at its rate: {flood:?}"
    );
    for (node, kib) in ["node-a", "node-b"].iter().zip(peak) {
        assert!(
            kib / 1024 < RSS_BOUND_MIB,
            "{node}'s agent peaked at {} MiB",
            kib / 1024
        );
    }
    Ok(())
}
