//! The comparison's h2c workload: `h2load` (nghttp2's load generator, HTTP/2
//! with prior knowledge, one stream at a time per connection) GETting 1 KiB
//! from the lab's echo server (`/bytes/1024`), run in a client pod. h2load
//! prints no percentiles, so they come from its per-request log.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use lab::Pod;

use super::http::LoadRun;

/// `h2load` from `client` to `url` with `conns` connections of one stream
/// each for `duration`, on one thread (as wrk), its per-request log written
/// to `log`. Fails on any failed, errored, timed-out or non-2xx request, as
/// the wrk runs do.
pub fn h2load(
    client: &Pod,
    url: &str,
    conns: u32,
    duration: Duration,
    log: &Path,
) -> Result<LoadRun> {
    let out = client
        .command("h2load")
        .args(["--threads", "1", "--max-concurrent-streams", "1"])
        .arg(format!("--clients={conns}"))
        .arg(format!("--duration={}", duration.as_secs().max(1)))
        .arg(format!("--log-file={}", log.display()))
        .arg(url)
        .output()
        .context("run h2load (cargo xtask setup installs nghttp2-client)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "h2load {url} from {}: {}{text}",
            client.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let lines = std::fs::read_to_string(log).with_context(|| format!("read {}", log.display()));
    let _ = std::fs::remove_file(log);
    parse(&text, &lines?).with_context(|| format!("h2load {url} from {}:\n{text}", client.name))
}

/// Reads h2load's summary (counts, rate) and its log (latencies).
pub fn parse(summary: &str, log: &str) -> Result<LoadRun> {
    let line = |prefix: &str| {
        summary
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .with_context(|| format!("no `{prefix}` line"))
    };
    // requests: 8543 total, 8543 started, 8543 done, 8543 succeeded, 0 failed, 0 errored, 0 timeout
    let requests = line("requests:")?;
    let count = |what: &str| -> Result<u64> {
        requests
            .trim_start_matches("requests:")
            .split(',')
            .find_map(|part| part.trim().strip_suffix(what)?.trim().parse().ok())
            .with_context(|| format!("no `{what}` count in {requests}"))
    };
    let (done, succeeded) = (count("done")?, count("succeeded")?);
    if done == 0
        || succeeded != done
        || count("failed")? + count("errored")? + count("timeout")? > 0
    {
        bail!("failed requests: {requests}");
    }
    // status codes: 8543 2xx, 0 3xx, 0 4xx, 0 5xx — counted at the response
    // head, so a request still in flight at the end may count here but not
    // as done.
    let status = line("status codes:")?;
    let codes = |class: &str| -> Result<u64> {
        status
            .trim_start_matches("status codes:")
            .split(',')
            .find_map(|p| p.trim().strip_suffix(class)?.trim().parse().ok())
            .with_context(|| format!("no {class} count in {status}"))
    };
    if codes(" 2xx")? < done || codes(" 3xx")? + codes(" 4xx")? + codes(" 5xx")? > 0 {
        bail!("non-2xx responses: {status}");
    }
    // finished in 3.00s, 4271.50 req/s, 4.28MB/s
    let per_sec = line("finished in")?
        .split(',')
        .find_map(|p| p.trim().strip_suffix(" req/s")?.parse().ok())
        .context("no req/s")?;
    let mut micros: Vec<u64> = log
        .lines()
        .filter_map(|l| l.split('\t').nth(2)?.trim().parse().ok())
        .collect();
    if micros.is_empty() {
        bail!("h2load logged no request");
    }
    micros.sort_unstable();
    let percentile = |p: f64| {
        // Nearest rank, as wrk's.
        let rank = ((p / 100.0) * micros.len() as f64).ceil() as usize;
        micros[rank.clamp(1, micros.len()) - 1] as f64
    };
    Ok(LoadRun {
        requests: done,
        per_sec,
        p50_us: percentile(50.0),
        p90_us: percentile(90.0),
        p99_us: percentile(99.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUMMARY: &str = "starting benchmark...
Application protocol: h2c
finished in 2.00s, 4271.50 req/s, 4.28MB/s
requests: 100 total, 100 started, 100 done, 100 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 100 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 8.56MB (8978785) total, 110.49KB (113138) headers (space savings 87.48%), 12.25MB (12849152) data
";

    /// 100 requests taking 1..=100 µs, in shuffled order.
    fn log() -> String {
        (1..=100)
            .map(|i| (i * 37) % 100 + 1)
            .map(|us| format!("1796309920676902\t200\t{us}\n"))
            .collect()
    }

    #[test]
    fn reads_the_rate_and_the_latency_percentiles_of_the_log() {
        let run = parse(SUMMARY, &log()).unwrap();
        assert_eq!(
            run,
            LoadRun {
                requests: 100,
                per_sec: 4271.5,
                p50_us: 50.0,
                p90_us: 90.0,
                p99_us: 99.0,
            }
        );
    }

    #[test]
    fn a_response_head_counted_after_the_last_request_done_is_no_failure() {
        let in_flight = SUMMARY.replace("100 2xx", "101 2xx");
        assert_eq!(parse(&in_flight, &log()).unwrap().requests, 100);
    }

    #[test]
    fn refuses_a_run_with_failed_or_non_2xx_requests() {
        let failed = SUMMARY.replace("100 succeeded, 0 failed", "98 succeeded, 2 failed");
        assert!(parse(&failed, &log()).is_err());
        let timeout = SUMMARY.replace("0 timeout", "1 timeout");
        assert!(parse(&timeout, &log()).is_err());
        let non_2xx = SUMMARY.replace(
            "100 2xx, 0 3xx, 0 4xx, 0 5xx",
            "90 2xx, 0 3xx, 0 4xx, 10 5xx",
        );
        let err = parse(&non_2xx, &log()).unwrap_err().to_string();
        assert!(err.contains("non-2xx"), "{err}");
        let short = SUMMARY.replace("100 2xx", "99 2xx");
        assert!(parse(&short, &log()).is_err());
        let none = SUMMARY.replace("100 done", "0 done");
        assert!(parse(&none, &log()).is_err());
        assert!(parse(SUMMARY, "").is_err(), "no latencies");
        assert!(parse("h2load: could not connect", &log()).is_err());
    }
}
