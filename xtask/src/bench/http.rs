//! The comparison's HTTP/1.1 workload: `wrk` (keep-alive GETs of a 1 KiB
//! response from `weft-load http`) run in a client pod, and the parsing of its
//! report. The h2c workload: h2load.rs.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use lab::Pod;

/// What one load run (wrk or h2load) measured.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct LoadRun {
    pub requests: u64,
    pub per_sec: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
}

/// `wrk` from `client` to `url` with `conns` connections for `duration`, on
/// one thread (the machine has two cores, shared with the proxies and the
/// server). Fails on socket errors or non-2xx answers: a proxy refusing
/// requests must not pass for a fast one.
pub fn wrk(client: &Pod, url: &str, conns: u32, duration: Duration) -> Result<LoadRun> {
    let out = client
        .command("wrk")
        .args(["--threads", "1", "--latency", "--timeout", "5s"])
        .arg(format!("--connections={conns}"))
        .arg(format!("--duration={}s", duration.as_secs().max(1)))
        .arg(url)
        .output()
        .context("run wrk (cargo xtask setup installs it)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk {url} from {}: {}{text}",
            client.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_wrk(&text).with_context(|| format!("wrk {url} from {}:\n{text}", client.name))
}

/// Reads wrk's `--latency` report.
pub fn parse_wrk(text: &str) -> Result<LoadRun> {
    if let Some(line) = text
        .lines()
        .find(|l| l.contains("Non-2xx or 3xx responses"))
    {
        bail!("failed requests: {}", line.trim());
    }
    if let Some(line) = text.lines().find(|l| l.contains("Socket errors")) {
        bail!("{}", line.trim());
    }
    let percentile = |name: &str| -> Result<f64> {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| duration_us(v.trim()))
            .with_context(|| format!("no {name} latency"))
    };
    let requests = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())
        .context("no request count")?;
    let per_sec = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no Requests/sec")?;
    Ok(LoadRun {
        requests,
        per_sec,
        p50_us: percentile("50%")?,
        p90_us: percentile("90%")?,
        p99_us: percentile("99%")?,
    })
}

/// `123.45us`, `1.20ms`, `2.00s`, `1.5m` in microseconds.
fn duration_us(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = v.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        _ => return None,
    };
    Some(number * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 10s test @ http://10.88.1.1:15101/
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   812.11us  301.22us   9.87ms   80.00%
    Req/Sec    19.80k     1.02k   21.31k    71.00%
  Latency Distribution
     50%  765.00us
     75%    0.90ms
     90%    1.12ms
     99%    2.00s
  197012 requests in 10.00s, 217.53MB read
Requests/sec:  19700.52
Transfer/sec:     21.75MB
";

    #[test]
    fn reads_the_counts_and_percentiles_in_any_unit() {
        let run = parse_wrk(REPORT).unwrap();
        assert_eq!(
            run,
            LoadRun {
                requests: 197012,
                per_sec: 19700.52,
                p50_us: 765.0,
                p90_us: 1120.0,
                p99_us: 2_000_000.0,
            }
        );
    }

    #[test]
    fn refuses_a_run_with_errors_or_failed_requests() {
        let errors = REPORT.replace(
            "Requests/sec",
            "  Socket errors: connect 0, read 3, write 0, timeout 0\nRequests/sec",
        );
        assert!(parse_wrk(&errors).is_err());
        let non_2xx = REPORT.replace(
            "Requests/sec",
            "  Non-2xx or 3xx responses: 12\nRequests/sec",
        );
        let err = parse_wrk(&non_2xx).unwrap_err().to_string();
        assert!(err.contains("Non-2xx"), "{err}");
        assert!(parse_wrk("wrk: unable to connect").is_err());
    }
}
