//! `connect ADDR --rate R --secs S [--conns N]`: new connections paced at R
//! per second for S seconds (the bench's new-connections budget, issue 15),
//! each a connect and a 1-byte echo, closed by this end first, run by N
//! threads taking the next due slot. A failure (refused, reset, no echo
//! within 2 s) counts as an error; it never stops the run. Prints one JSON
//! line: the target, the connections that completed and their rate over the
//! whole run, errors and the second of the first, connect + echo p50/p99, and
//! how many slots started over a second late (this end could not keep pace).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{Result, flag, percentile, positional};

const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Outcome {
    latencies_us: Vec<u64>,
    /// Seconds into the run, and what failed.
    errors: Vec<(f64, String)>,
    late: u64,
}

pub fn run(args: &[String]) -> Result<()> {
    let addr: SocketAddr = positional(args)?
        .parse()
        .map_err(|e| format!("address: {e}"))?;
    let rate = flag(args, "--rate", 1000)?.max(1);
    let secs = flag(args, "--secs", 10)?;
    let threads = flag(args, "--conns", 32)?.max(1);
    let total = rate * secs;
    let next = AtomicU64::new(0);
    let start = Instant::now();
    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| s.spawn(|| worker(addr, rate, total, &next, start)))
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_default())
            .collect()
    });
    let elapsed = start.elapsed().as_secs_f64().max(secs as f64);
    let mut latencies: Vec<u64> = outcomes
        .iter()
        .flat_map(|o| o.latencies_us.clone())
        .collect();
    latencies.sort_unstable();
    let mut errors: Vec<&(f64, String)> = outcomes.iter().flat_map(|o| &o.errors).collect();
    errors.sort_by(|a, b| a.0.total_cmp(&b.0));
    let late: u64 = outcomes.iter().map(|o| o.late).sum();
    let (first_at, first) = errors
        .first()
        .map_or((-1.0, String::new()), |(at, e)| (*at, e.replace('"', "'")));
    println!(
        "{{\"target\":{rate},\"secs\":{secs},\"connections\":{},\"per_sec\":{:.0},\"errors\":{},\"first_error_s\":{first_at:.1},\"first_error\":\"{first}\",\"late\":{late},\"p50_us\":{},\"p99_us\":{}}}",
        latencies.len(),
        latencies.len() as f64 / elapsed,
        errors.len(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99)
    );
    Ok(())
}

fn worker(addr: SocketAddr, rate: u64, total: u64, next: &AtomicU64, start: Instant) -> Outcome {
    let mut out = Outcome::default();
    loop {
        let slot = next.fetch_add(1, Ordering::Relaxed);
        if slot >= total {
            return out;
        }
        let due = start + Duration::from_nanos(slot * 1_000_000_000 / rate);
        match due.checked_duration_since(Instant::now()) {
            Some(wait) => std::thread::sleep(wait),
            None if due.elapsed() > Duration::from_secs(1) => out.late += 1,
            None => {}
        }
        let began = Instant::now();
        match one(addr) {
            Ok(()) => out.latencies_us.push(began.elapsed().as_micros() as u64),
            Err(e) => out
                .errors
                .push((start.elapsed().as_secs_f64(), e.to_string())),
        }
    }
}

fn one(addr: SocketAddr) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.write_all(b"x")?;
    let mut one = [0u8; 1];
    stream.read_exact(&mut one)?;
    Ok(())
}
