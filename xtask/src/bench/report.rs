//! The comparison's report: medians per path, Weft's figures as ratios to the
//! Envoy pair doing the same job (L4 to tcp_proxy, L7 to the HTTP pair, per
//! protocol) and Weft L7 to Weft L4, and the budgets (budgets.rs) as
//! PASS/FAIL lines. Pure, so the arithmetic is tested apart from the lab.

use std::fmt::Write;

use super::budgets;

/// One path's figures for one rep, or their medians. NaN: not measured on
/// this path (no proxy on the direct path; no bulk through the L7 pair).
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    /// At 16 connections.
    pub req_per_sec: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    /// CPU seconds of both proxies per 1,000 requests at 16 connections.
    pub cpu_per_1k_req: f64,
    /// At 1 connection: p50, and its excess over the direct path's in the same rep.
    pub single_p50_us: f64,
    pub added_p50_us: f64,
    pub bulk_gbit_s: f64,
    /// CPU seconds of both proxies per GB (10^9 bytes) of bulk.
    pub cpu_per_gb: f64,
}

impl Default for Figures {
    fn default() -> Self {
        Figures {
            req_per_sec: f64::NAN,
            p50_us: f64::NAN,
            p90_us: f64::NAN,
            p99_us: f64::NAN,
            cpu_per_1k_req: f64::NAN,
            single_p50_us: f64::NAN,
            added_p50_us: f64::NAN,
            bulk_gbit_s: f64::NAN,
            cpu_per_gb: f64::NAN,
        }
    }
}

type Getter = fn(&Figures) -> f64;

/// Each column: its heading and how to read it.
const COLUMNS: &[(&str, Getter)] = &[
    ("req/s (16 conns)", |f| f.req_per_sec),
    ("p50 µs", |f| f.p50_us),
    ("p90 µs", |f| f.p90_us),
    ("p99 µs", |f| f.p99_us),
    ("CPU s / 1k req", |f| f.cpu_per_1k_req),
    ("p50 µs (1 conn)", |f| f.single_p50_us),
    ("added p50 µs (1 conn)", |f| f.added_p50_us),
    ("bulk Gbit/s", |f| f.bulk_gbit_s),
    ("CPU s / GB", |f| f.cpu_per_gb),
];

/// Each figure's median over the reps that measured it (NaN: none did).
pub fn median(reps: &[Figures]) -> Figures {
    let mut out = Figures::default();
    let setters: [fn(&mut Figures) -> &mut f64; 9] = [
        |f| &mut f.req_per_sec,
        |f| &mut f.p50_us,
        |f| &mut f.p90_us,
        |f| &mut f.p99_us,
        |f| &mut f.cpu_per_1k_req,
        |f| &mut f.single_p50_us,
        |f| &mut f.added_p50_us,
        |f| &mut f.bulk_gbit_s,
        |f| &mut f.cpu_per_gb,
    ];
    for ((_, get), set) in COLUMNS.iter().zip(setters) {
        let mut v: Vec<f64> = reps.iter().map(get).filter(|x| !x.is_nan()).collect();
        v.sort_by(f64::total_cmp);
        *set(&mut out) = match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        };
    }
    out
}

/// Which proxies a path goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Direct,
    WeftL4,
    EnvoyL4,
    WeftL7,
    EnvoyL7,
}

/// The protocol the client speaks (and the server answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// HTTP/1.1 keep-alive, wrk against `weft-load http`.
    H1,
    /// HTTP/2 with prior knowledge, one stream per connection, h2load
    /// against the echo server.
    H2,
}

/// A path's name in the report.
pub fn name(kind: Kind, proto: Proto) -> String {
    let path = match kind {
        Kind::Direct => "direct",
        Kind::WeftL4 => "Weft L4 (mTLS)",
        Kind::EnvoyL4 => "Envoy L4 (tcp_proxy, mTLS)",
        Kind::WeftL7 => "Weft L7 (mTLS)",
        Kind::EnvoyL7 => "Envoy L7 (HTTP/2 mTLS)",
    };
    format!("{path}, {}", proto_name(proto))
}

pub fn proto_name(proto: Proto) -> &'static str {
    match proto {
        Proto::H1 => "HTTP/1.1",
        Proto::H2 => "h2c",
    }
}

/// A path's row: what it is, its median figures and the RSS of its proxies
/// after the bench (bytes, NaN for none).
pub struct Row {
    pub kind: Kind,
    pub proto: Proto,
    pub figures: Figures,
    pub rss_bytes: f64,
}

/// The row of `kind` over `proto`, if the run measured it.
pub fn find(rows: &[Row], kind: Kind, proto: Proto) -> Option<&Row> {
    rows.iter().find(|r| r.kind == kind && r.proto == proto)
}

/// What the report was measured with, for its heading.
pub struct Setup {
    pub reps: usize,
    pub secs: u64,
    pub bulk_mib: u64,
    pub workers: usize,
}

/// The report (markdown) and the budgets that failed (budgets.rs).
pub fn render(setup: &Setup, rows: &[Row]) -> (String, Vec<String>) {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Weft against Envoy\n\n\
         GET of a 1 KiB response at 16 and 1 connections, {secs} s each: HTTP/1.1 \
         keep-alive with wrk against `weft-load http`, and h2c (prior knowledge, one \
         stream per connection) with h2load against the echo server; single-stream \
         bulk of {mib} MiB; {workers} worker thread(s) per agent and `--concurrency \
         {workers}` per Envoy; medians of {reps} interleaved rep(s). CPU and RSS: both \
         proxies of a path (the two agents, or the two Envoys); added p50: over the \
         direct path of the same protocol.\n",
        secs = setup.secs,
        mib = setup.bulk_mib,
        workers = setup.workers,
        reps = setup.reps
    );
    let mut heading = "| path |".to_owned();
    let mut rule = "|---|".to_owned();
    for (name, _) in COLUMNS.iter().chain([&("RSS MB", (|_| 0.0) as Getter)]) {
        let _ = write!(heading, " {name} |");
        rule.push_str("---:|");
    }
    let _ = writeln!(md, "{heading}\n{rule}");
    for row in rows {
        let _ = write!(md, "| {} |", name(row.kind, row.proto));
        for (_, get) in COLUMNS {
            let _ = write!(md, " {} |", number(get(&row.figures)));
        }
        let _ = writeln!(md, " {} |", number(row.rss_bytes / 1e6));
    }
    let pairs = [
        (Kind::WeftL4, Kind::EnvoyL4, "Weft L4 ÷ Envoy L4"),
        (Kind::WeftL7, Kind::EnvoyL7, "Weft L7 ÷ Envoy L7"),
        (Kind::WeftL7, Kind::WeftL4, "Weft L7 ÷ Weft L4"),
    ];
    for proto in [Proto::H1, Proto::H2] {
        for (a, b, label) in pairs {
            let (Some(a), Some(b)) = (find(rows, a, proto), find(rows, b, proto)) else {
                continue;
            };
            let _ = write!(md, "| {label}, {} |", proto_name(proto));
            for (_, get) in COLUMNS {
                let _ = write!(md, " {} |", ratio(get(&a.figures), get(&b.figures)));
            }
            let _ = writeln!(md, " {} |", ratio(a.rss_bytes, b.rss_bytes));
        }
    }

    let budgets = budgets::of(rows);
    let _ = writeln!(md, "\n## Budgets (issues 14 and 15)\n");
    let mut failed = Vec::new();
    for b in &budgets {
        let _ = writeln!(md, "- {}  {}: {}", verdict(b.ok()), b.name, b.value_text());
        if !b.ok() {
            failed.push(b.name.clone());
        }
    }
    if budgets.is_empty() {
        failed.push("the report holds no pair of paths to compare".to_owned());
    }
    (md, failed)
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

fn number(v: f64) -> String {
    match v {
        v if v.is_nan() => "–".to_owned(),
        0.0 => "0".to_owned(),
        v if v.abs() >= 100.0 => format!("{v:.0}"),
        v if v.abs() >= 1.0 => format!("{v:.2}"),
        v => format!("{v:.4}"),
    }
}

fn ratio(a: f64, b: f64) -> String {
    let r = a / b;
    if r.is_finite() {
        format!("{r:.2}×")
    } else {
        "–".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(req: f64, cpu: f64, added: f64, bulk: f64, per_gb: f64) -> Figures {
        Figures {
            req_per_sec: req,
            p50_us: 700.0,
            p90_us: 900.0,
            p99_us: 1500.0,
            cpu_per_1k_req: cpu,
            single_p50_us: 100.0 + added,
            added_p50_us: added,
            bulk_gbit_s: bulk,
            cpu_per_gb: per_gb,
        }
    }

    fn setup() -> Setup {
        Setup {
            reps: 3,
            secs: 10,
            bulk_mib: 1024,
            workers: 1,
        }
    }

    #[test]
    fn medians_skip_what_a_rep_did_not_measure() {
        let mut a = figures(10.0, 1.0, 5.0, 2.0, 1.0);
        let b = figures(30.0, 3.0, 7.0, f64::NAN, 3.0);
        let c = figures(20.0, 2.0, 9.0, 4.0, 2.0);
        a.cpu_per_gb = f64::NAN;
        let m = median(&[a, b, c]);
        assert_eq!(m.req_per_sec, 20.0);
        assert_eq!(m.added_p50_us, 7.0);
        assert_eq!(m.bulk_gbit_s, 3.0, "mean of the middle two of two");
        assert_eq!(m.cpu_per_gb, 2.5);
        assert!(median(&[]).req_per_sec.is_nan());
    }

    fn row(kind: Kind, proto: Proto, figures: Figures, rss_bytes: f64) -> Row {
        Row {
            kind,
            proto,
            figures,
            rss_bytes,
        }
    }

    #[test]
    fn rows_ratios_and_budgets_of_the_paths_measured() {
        let l7 = |req| figures(req, 1.0, 100.0, f64::NAN, f64::NAN);
        let mut rows = vec![
            row(
                Kind::Direct,
                Proto::H1,
                figures(30e3, f64::NAN, 0.0, 20.0, f64::NAN),
                f64::NAN,
            ),
            row(
                Kind::WeftL4,
                Proto::H1,
                figures(15e3, 0.5, 40.0, 6.0, 1.2),
                25e6,
            ),
            row(
                Kind::EnvoyL4,
                Proto::H1,
                figures(10e3, 1.0, 100.0, 4.0, 2.0),
                60e6,
            ),
            row(Kind::WeftL7, Proto::H1, l7(20e3), 25e6),
            row(Kind::EnvoyL7, Proto::H1, l7(8e3), 60e6),
        ];
        let (md, failed) = render(&setup(), &rows);
        assert!(md.contains("| direct, HTTP/1.1 | 30000 |"), "{md}");
        assert!(md.contains("| 100 | 0 | 20.00 | – | – |"), "{md}");
        assert!(
            md.contains("| Weft L4 ÷ Envoy L4, HTTP/1.1 | 1.50× |"),
            "{md}"
        );
        assert!(
            md.contains("| Weft L7 ÷ Envoy L7, HTTP/1.1 | 2.50× |"),
            "{md}"
        );
        assert!(
            md.contains("| Weft L7 ÷ Weft L4, HTTP/1.1 | 1.33× |"),
            "{md}"
        );
        assert!(!md.contains("h2c |"), "no h2c row measured: {md}");
        assert!(
            md.contains("- PASS  L4 mTLS req/s at 16 conns ≥ 1.4× Envoy L4: 1.50×"),
            "{md}"
        );
        assert!(
            md.contains("- FAIL  L7 HTTP/1.1 CPU per 1,000 requests ≤ 0.5× Envoy L7: 1.00×"),
            "{md}"
        );
        assert_eq!(
            failed,
            [
                "L7 HTTP/1.1 CPU per 1,000 requests ≤ 0.5× Envoy L7",
                "L7 HTTP/1.1 added p50 at 1 conn ≤ ⅓× Envoy L7",
                "L7 HTTP/1.1 CPU per request ≤ 1.25× Weft L4 HTTP/1.1",
            ]
        );

        // Nothing to compare is a failure, not a pass.
        rows.retain(|r| r.kind == Kind::Direct);
        let (_, failed) = render(&setup(), &rows);
        assert_eq!(failed, ["the report holds no pair of paths to compare"]);
    }
}
