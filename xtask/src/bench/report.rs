//! The comparison's report: medians per path, Weft's figures as ratios to the
//! Envoy L4 pair's, and the budgets of issue 15 as PASS/FAIL lines. Pure, so
//! the arithmetic is tested apart from the lab.

use std::fmt::Write;

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

/// A path's row: its name, median figures and the RSS of its proxies after
/// the bench (bytes, NaN for none).
pub struct Row<'a> {
    pub path: &'a str,
    pub figures: Figures,
    pub rss_bytes: f64,
}

/// What the report was measured with, for its heading.
pub struct Setup {
    pub reps: usize,
    pub secs: u64,
    pub bulk_mib: u64,
    pub workers: usize,
}

/// The report (markdown) and the budgets that failed. `rows` are direct,
/// Weft L4, Envoy L4, Envoy L7; the budgets compare rows 1 and 2.
pub fn render(setup: &Setup, rows: &[Row]) -> (String, Vec<String>) {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Weft against Envoy\n\n\
         wrk HTTP/1.1 keep-alive GET of a 1 KiB response, 16 and 1 connections, \
         {secs} s each; single-stream bulk of {mib} MiB; {workers} worker thread(s) per \
         agent and `--concurrency {workers}` per Envoy; medians of {reps} interleaved \
         rep(s). CPU and RSS: both proxies of a path (the two agents, or the two Envoys).\n",
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
        let _ = write!(md, "| {} |", row.path);
        for (_, get) in COLUMNS {
            let _ = write!(md, " {} |", number(get(&row.figures)));
        }
        let _ = writeln!(md, " {} |", number(row.rss_bytes / 1e6));
    }
    let (Some(weft), Some(envoy)) = (rows.get(1), rows.get(2)) else {
        return (
            md,
            vec!["the report needs the Weft and Envoy L4 rows".into()],
        );
    };
    let _ = write!(md, "| Weft L4 ÷ Envoy L4 |");
    for (_, get) in COLUMNS {
        let _ = write!(md, " {} |", ratio(get(&weft.figures), get(&envoy.figures)));
    }
    let _ = writeln!(md, " {} |", ratio(weft.rss_bytes, envoy.rss_bytes));
    let _ = writeln!(
        md,
        "\nWeft's L7 figures will be compared with the Envoy L7 pair once Weft proxies HTTP.\n"
    );

    let (w, e) = (&weft.figures, &envoy.figures);
    let budgets = [
        (
            "L4 mTLS req/s at 16 conns ≥ 1.4× Envoy L4",
            w.req_per_sec / e.req_per_sec,
            1.4,
            true,
        ),
        (
            "CPU per 1,000 requests ≤ 0.65× Envoy L4",
            w.cpu_per_1k_req / e.cpu_per_1k_req,
            0.65,
            false,
        ),
        (
            "added p50 at 1 conn ≤ 0.5× Envoy L4",
            w.added_p50_us / e.added_p50_us,
            0.5,
            false,
        ),
        (
            "single-stream bulk ≥ 1.25× Envoy L4",
            w.bulk_gbit_s / e.bulk_gbit_s,
            1.25,
            true,
        ),
        (
            "CPU per GB ≤ 0.75× Envoy L4",
            w.cpu_per_gb / e.cpu_per_gb,
            0.75,
            false,
        ),
    ];
    let _ = writeln!(md, "## Budgets (issue 15)\n");
    let mut failed = Vec::new();
    for (name, value, limit, at_least) in budgets {
        // NaN (a figure missing, or Envoy adding no latency) fails.
        let ok = if at_least {
            value >= limit
        } else {
            value <= limit
        };
        let _ = writeln!(md, "- {}  {name}: {value:.2}×", verdict(ok));
        if !ok {
            failed.push(name.to_owned());
        }
    }
    let agents_mb = weft.rss_bytes / 1e6;
    let ok = agents_mb <= 30.0;
    let _ = writeln!(
        md,
        "- {}  both agents ≤ 30 MB RSS after the bench: {agents_mb:.1} MB",
        verdict(ok)
    );
    if !ok {
        failed.push("both agents ≤ 30 MB RSS".to_owned());
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

    #[test]
    fn budgets_are_ratios_to_the_envoy_l4_pair() {
        let rows = |weft: Figures, rss: f64| {
            vec![
                Row {
                    path: "direct",
                    figures: figures(30e3, f64::NAN, 0.0, 20.0, f64::NAN),
                    rss_bytes: f64::NAN,
                },
                Row {
                    path: "Weft L4",
                    figures: weft,
                    rss_bytes: rss,
                },
                Row {
                    path: "Envoy L4",
                    figures: figures(10e3, 1.0, 100.0, 4.0, 2.0),
                    rss_bytes: 60e6,
                },
                Row {
                    path: "Envoy L7",
                    figures: figures(8e3, 1.5, 150.0, f64::NAN, f64::NAN),
                    rss_bytes: 60e6,
                },
            ]
        };
        let (md, failed) = render(&setup(), &rows(figures(15e3, 0.6, 40.0, 6.0, 1.2), 25e6));
        assert!(failed.is_empty(), "{failed:?}\n{md}");
        assert!(
            md.contains("- PASS  L4 mTLS req/s at 16 conns ≥ 1.4× Envoy L4: 1.50×"),
            "{md}"
        );
        assert!(md.contains("| Weft L4 ÷ Envoy L4 | 1.50× |"), "{md}");
        assert!(md.contains("| direct | 30000 |"), "{md}");
        assert!(md.contains("| 100 | 0 | 20.00 | – | – |"), "{md}");

        // Just over each limit, and over the memory budget.
        let (md, failed) = render(&setup(), &rows(figures(13.9e3, 0.66, 51.0, 4.9, 1.6), 31e6));
        assert_eq!(failed.len(), 6, "{failed:?}\n{md}");
        assert!(
            md.contains("- FAIL  both agents ≤ 30 MB RSS after the bench: 31.0 MB"),
            "{md}"
        );
        // A figure that is missing fails rather than passes.
        let (_, failed) = render(
            &setup(),
            &rows(figures(f64::NAN, 0.6, 40.0, 6.0, 1.2), 25e6),
        );
        assert_eq!(failed, ["L4 mTLS req/s at 16 conns ≥ 1.4× Envoy L4"]);
    }
}
