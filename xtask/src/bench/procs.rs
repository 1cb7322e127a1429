//! CPU time and resident memory of the proxies under test, from /proc.

use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result};

/// User plus system CPU seconds, summed over `pids` (every thread of each).
pub fn cpu_seconds(pids: &[u32]) -> Result<f64> {
    let mut ticks = 0;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("process {pid} is gone"))?;
        ticks += cpu_ticks(&stat).with_context(|| format!("/proc/{pid}/stat: {stat}"))?;
    }
    Ok(ticks as f64 / clock_ticks_per_second())
}

/// Resident memory summed over `pids`, in bytes.
pub fn rss_bytes(pids: &[u32]) -> Result<u64> {
    let mut total = 0;
    for pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("process {pid} is gone"))?;
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("no VmRSS for process {pid}"))?;
        total += kib * 1024;
    }
    Ok(total)
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line. The command
/// name (field 2) may hold spaces and parentheses, so fields are counted
/// from its closing parenthesis.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11); // field 3 is the first
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_user_and_system_time_past_a_tricky_command_name() {
        let stat = "4242 (envoy (main) x) S 1 4242 4242 0 -1 4194560 2 0 0 0 \
                    1500 250 0 0 20 0 9 0 123 456 789";
        assert_eq!(cpu_ticks(stat), Some(1750));
        assert_eq!(cpu_ticks("4242 (x) S 1"), None);
    }
}
