//! What an idle proxied connection costs the agents (issue 15, memory): in a
//! fresh lab, `weft-load idle` opens N connections from a meshed client pod to
//! a meshed server pod's echo port (L4 through both agents, mTLS), each echoing
//! one byte, and holds them silent; both agents' RSS (`VmRSS`), descriptors
//! (`/proc/PID/fd`) and threads are read before and after, once the agent's
//! periodic `malloc_trim` has run. Per connection: KiB across both agents, and
//! descriptors per proxied socket (a connection has two: the app's at the
//! source, the app's at the destination).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{MESH_CLIENT, MESH_ECHO_PORT, MESH_SERVER, bench_lab, procs};

/// Budgets (issue 15): KiB per idle proxied connection across both agents,
/// and descriptors per proxied socket. The tunnel connections that carry the
/// streams (up to 100 streams each) are descriptors too, so "one per proxied
/// socket" is read as at most 1.05.
pub const KIB_PER_CONN_BUDGET: f64 = 24.0;
pub const FDS_PER_SOCKET_BUDGET: f64 = 1.05;

/// Longer than the agent's `malloc_trim` period (run/memory.rs, 5 s): RSS
/// is read once freed memory went back.
const SETTLE: Duration = Duration::from_secs(6);

/// One agent's footprint at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub rss_bytes: u64,
    /// Of which file-backed: mostly the binary's code pages.
    pub rss_file_bytes: u64,
    pub fds: u64,
    pub threads: u64,
}

/// Both agents before and after `conns` idle connections opened.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    pub conns: u64,
    pub before: Vec<Usage>,
    pub after: Vec<Usage>,
}

impl Figures {
    fn total(of: &[Usage], get: fn(&Usage) -> u64) -> f64 {
        of.iter().map(get).sum::<u64>() as f64
    }

    fn delta(&self, get: fn(&Usage) -> u64) -> f64 {
        Self::total(&self.after, get) - Self::total(&self.before, get)
    }

    pub fn kib_per_conn(&self) -> f64 {
        self.delta(|u| u.rss_bytes) / 1024.0 / self.conns as f64
    }

    pub fn fds_per_socket(&self) -> f64 {
        self.delta(|u| u.fds) / (2 * self.conns) as f64
    }

    /// The report's section (markdown) and the budgets that failed.
    pub fn render(&self) -> (String, Vec<String>) {
        let mut md = format!(
            "\n## Idle connections\n\n{} idle L4 connections (mTLS) from a meshed client \
             to a meshed server, each having echoed one byte; both agents, read after \
             {} s (RSS file-backed: mostly the binary's code).\n\n| agent | RSS MB before | \
             after | of which file-backed (after) | descriptors before | after | \
             threads before | after |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
            self.conns,
            SETTLE.as_secs()
        );
        for (i, (b, a)) in self.before.iter().zip(&self.after).enumerate() {
            let name = ["source (node-a)", "destination (node-b)"]
                .get(i)
                .copied()
                .unwrap_or("agent");
            let _ = writeln!(
                md,
                "| {name} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} |",
                b.rss_bytes as f64 / 1e6,
                a.rss_bytes as f64 / 1e6,
                a.rss_file_bytes as f64 / 1e6,
                b.fds,
                a.fds,
                b.threads,
                a.threads
            );
        }
        let mut failed = Vec::new();
        let checks = [
            (
                format!("≤ {KIB_PER_CONN_BUDGET} KiB per idle connection (both agents)"),
                self.kib_per_conn(),
                KIB_PER_CONN_BUDGET,
                "KiB",
            ),
            (
                format!("≤ {FDS_PER_SOCKET_BUDGET} descriptors per proxied socket"),
                self.fds_per_socket(),
                FDS_PER_SOCKET_BUDGET,
                "",
            ),
        ];
        let _ = writeln!(md);
        for (name, value, limit, unit) in checks {
            // NaN (nothing measured) fails.
            let ok = value <= limit;
            let _ = writeln!(
                md,
                "- {}  {name}: {value:.2}{}{unit}",
                if ok { "PASS" } else { "FAIL" },
                if unit.is_empty() { "" } else { " " }
            );
            if !ok {
                failed.push(name);
            }
        }
        (md, failed)
    }
}

/// Both agents' usage now.
fn usage(pids: &[u32]) -> Result<Vec<Usage>> {
    pids.iter()
        .map(|&pid| {
            let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
                .with_context(|| format!("process {pid} is gone"))?
                .count() as u64;
            let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
            let field = |name: &str| -> Option<u64> {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            };
            Ok(Usage {
                rss_bytes: procs::rss_bytes(&[pid])?,
                rss_file_bytes: field("RssFile:").unwrap_or(0) * 1024,
                fds,
                threads: field("Threads:").unwrap_or(0),
            })
        })
        .collect()
}

/// Kills the client if the measurement fails half-way.
struct Client(Child);

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Measures `conns` idle connections in a fresh lab whose agents get `args`.
pub fn measure(conns: u64, args: &[&str]) -> Result<Figures> {
    println!("\n==> idle connections: {conns} from {MESH_CLIENT} to {MESH_SERVER}");
    let mesh = bench_lab(&[], args)?;
    let pids: Vec<u32> = mesh.agents.iter().map(|a| a.pid).collect();
    let server = format!("{}:{MESH_ECHO_PORT}", mesh.pod(MESH_SERVER)?.ip);
    // One connection first, so the tunnel's first TLS connection and the
    // agents' lazily made state are in "before".
    let out = mesh.load_from(MESH_CLIENT, &["say", &server, "warm"])?;
    if !out.status.success() {
        bail!(
            "{server} does not echo: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::thread::sleep(SETTLE);
    let before = usage(&pids)?;
    let load = lab::load_binary()?;
    let mut client = Client(
        mesh.pod(MESH_CLIENT)?
            .command(&load.to_string_lossy())
            .args(["idle", &server, "--conns", &conns.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("start weft-load idle")?,
    );
    let stdout = client.0.stdout.take().context("weft-load's stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().transpose()?.unwrap_or_default();
    if first != format!("{{\"open\":{conns}}}") {
        let _ = client.0.kill();
        let status = client.0.wait()?;
        bail!("weft-load idle: {first:?} ({status})");
    }
    std::thread::sleep(SETTLE);
    let after = usage(&pids)?;
    drop(client.0.stdin.take()); // EOF: the client closes its connections
    let closed = lines.next().transpose()?.unwrap_or_default();
    let status = client.0.wait()?;
    if !status.success() {
        bail!("weft-load idle ended with {status}: {closed}");
    }
    let figures = Figures {
        conns,
        before,
        after,
    };
    println!(
        "  {:.1} KiB per idle connection (both agents), {:.2} descriptors per proxied socket",
        figures.kib_per_conn(),
        figures.fds_per_socket()
    );
    let _ = std::io::stdout().flush();
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(mb: u64, fds: u64) -> Usage {
        Usage {
            rss_bytes: mb << 20,
            rss_file_bytes: 0,
            fds,
            threads: 3,
        }
    }

    #[test]
    fn per_connection_costs_are_deltas_over_both_agents() {
        // 10,000 connections: 100 MiB more RSS across both agents, 30,000
        // more descriptors (3 per connection: 1.5 per proxied socket).
        let f = Figures {
            conns: 10_000,
            before: vec![usage(10, 50), usage(10, 50)],
            after: vec![usage(60, 20_050), usage(60, 10_050)],
        };
        assert!(
            (f.kib_per_conn() - 10.24).abs() < 1e-9,
            "{}",
            f.kib_per_conn()
        );
        assert_eq!(f.fds_per_socket(), 1.5);
        let (md, failed) = f.render();
        assert!(md.contains("- PASS  ≤ 24 KiB per idle connection"), "{md}");
        assert!(
            md.contains("| source (node-a) | 10.5 | 62.9 | 0.0 | 50 | 20050 |"),
            "{md}"
        );
        assert_eq!(failed, ["≤ 1.05 descriptors per proxied socket"]);

        // Exactly one descriptor per proxied socket plus the tunnel's, and
        // 55 KiB each: the memory budget fails.
        let f = Figures {
            conns: 1000,
            before: vec![usage(10, 50), usage(10, 50)],
            after: vec![usage(37, 1060), usage(37, 1060)],
        };
        let (_, failed) = f.render();
        assert_eq!(failed, ["≤ 24 KiB per idle connection (both agents)"]);
        assert!((f.fds_per_socket() - 1.01).abs() < 1e-9);
    }

    #[test]
    fn nothing_measured_fails() {
        let f = Figures {
            conns: 0,
            before: vec![],
            after: vec![],
        };
        assert_eq!(f.render().1.len(), 2);
    }
}
