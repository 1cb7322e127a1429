//! The budgets the comparison holds Weft to, as ratios within one run
//! (docs/performance.md): issue 15's for L4 against the Envoy tcp_proxy
//! pair, issue 14's for L7 against the Envoy HTTP pair (per protocol) and
//! against Weft's own L4 path. A budget is checked only when the run measured
//! both of its paths (`--l7-only` skips the Envoy L4 pair); a figure missing
//! from a measured path fails it.

use super::report::{Figures, Kind, Proto, Row, find, proto_name};

/// One budget and the value the run gave it.
#[derive(Debug)]
pub struct Budget {
    pub name: String,
    pub value: f64,
    pub limit: f64,
    /// A floor (`≥`) rather than a ceiling (`≤`).
    pub at_least: bool,
    /// MB rather than a ratio.
    pub absolute_mb: bool,
}

impl Budget {
    /// NaN (a figure missing, or a baseline adding no latency) fails.
    pub fn ok(&self) -> bool {
        if self.at_least {
            self.value >= self.limit
        } else {
            self.value <= self.limit
        }
    }

    pub fn value_text(&self) -> String {
        if self.absolute_mb {
            format!("{:.1} MB", self.value)
        } else {
            format!("{:.2}×", self.value)
        }
    }
}

/// A ratio budget: `get` of `a` over `get` of `b`.
fn ratio(name: String, a: &Row, b: &Row, get: fn(&Figures) -> f64, limit: f64) -> Budget {
    Budget {
        value: get(&a.figures) / get(&b.figures),
        at_least: name.contains('≥'),
        name,
        limit,
        absolute_mb: false,
    }
}

/// Every budget whose paths the run measured.
pub fn of(rows: &[Row]) -> Vec<Budget> {
    let mut out = Vec::new();
    let req: fn(&Figures) -> f64 = |f| f.req_per_sec;
    let cpu: fn(&Figures) -> f64 = |f| f.cpu_per_1k_req;
    let added: fn(&Figures) -> f64 = |f| f.added_p50_us;
    if let (Some(w), Some(e)) = (
        find(rows, Kind::WeftL4, Proto::H1),
        find(rows, Kind::EnvoyL4, Proto::H1),
    ) {
        let l4 = |what: &str| format!("L4 mTLS {what} Envoy L4");
        out.push(ratio(l4("req/s at 16 conns ≥ 1.4×"), w, e, req, 1.4));
        out.push(ratio(l4("CPU per 1,000 requests ≤ 0.65×"), w, e, cpu, 0.65));
        out.push(ratio(l4("added p50 at 1 conn ≤ 0.5×"), w, e, added, 0.5));
        out.push(ratio(
            l4("single-stream bulk ≥ 1.25×"),
            w,
            e,
            |f| f.bulk_gbit_s,
            1.25,
        ));
        out.push(ratio(
            l4("CPU per GB ≤ 0.75×"),
            w,
            e,
            |f| f.cpu_per_gb,
            0.75,
        ));
        out.push(Budget {
            name: "both agents ≤ 30 MB RSS after the bench".to_owned(),
            value: w.rss_bytes / 1e6,
            limit: 30.0,
            at_least: false,
            absolute_mb: true,
        });
    }
    for proto in [Proto::H1, Proto::H2] {
        let Some(w) = find(rows, Kind::WeftL7, proto) else {
            continue;
        };
        let p = proto_name(proto);
        if let Some(e) = find(rows, Kind::EnvoyL7, proto) {
            let l7 = |what: &str| format!("L7 {p} {what} Envoy L7");
            out.push(ratio(l7("req/s at 16 conns ≥ 2.0×"), w, e, req, 2.0));
            out.push(ratio(l7("CPU per 1,000 requests ≤ 0.5×"), w, e, cpu, 0.5));
            out.push(ratio(
                l7("added p50 at 1 conn ≤ ⅓×"),
                w,
                e,
                added,
                1.0 / 3.0,
            ));
        }
        if let Some(l4) = find(rows, Kind::WeftL4, proto) {
            let name = format!("L7 {p} CPU per request ≤ 1.25× Weft L4 {p}");
            out.push(ratio(name, w, l4, cpu, 1.25));
        }
    }
    out
}

/// Issue 15's new-connections budget: this many per second to one app port,
/// for this long, with no error and no sysctl changed (new_conns.rs).
pub const NEW_CONNS_PER_SEC: u64 = 1_000;
pub const NEW_CONNS_SECS: u64 = 120;

/// Met (`Some(true)`) when the run held the budget's rate (within 2 %: the
/// last connections finish after the last slot) for its whole time without
/// an error; `None` for a run shorter or slower than the budget asks.
pub fn new_connections_met(target: u64, secs: u64, per_sec: f64, errors: u64) -> Option<bool> {
    if target < NEW_CONNS_PER_SEC || secs < NEW_CONNS_SECS {
        return None;
    }
    Some(errors == 0 && per_sec >= 0.98 * NEW_CONNS_PER_SEC as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_connections_need_the_rate_the_time_and_no_error() {
        assert_eq!(new_connections_met(1000, 120, 999.0, 0), Some(true));
        assert_eq!(new_connections_met(1000, 120, 999.0, 1), Some(false));
        assert_eq!(new_connections_met(1000, 120, 700.0, 0), Some(false));
        assert_eq!(new_connections_met(1000, 5, 1000.0, 0), None);
        assert_eq!(new_connections_met(500, 120, 500.0, 0), None);
    }

    fn figures(req: f64, cpu: f64, added: f64, bulk: f64, per_gb: f64) -> Figures {
        Figures {
            req_per_sec: req,
            cpu_per_1k_req: cpu,
            added_p50_us: added,
            bulk_gbit_s: bulk,
            cpu_per_gb: per_gb,
            ..Figures::default()
        }
    }

    fn row(kind: Kind, proto: Proto, figures: Figures, rss_bytes: f64) -> Row {
        Row {
            kind,
            proto,
            figures,
            rss_bytes,
        }
    }

    fn l4_rows(weft: Figures, rss: f64) -> Vec<Row> {
        vec![
            row(
                Kind::Direct,
                Proto::H1,
                figures(30e3, f64::NAN, 0.0, 20.0, f64::NAN),
                f64::NAN,
            ),
            row(Kind::WeftL4, Proto::H1, weft, rss),
            row(
                Kind::EnvoyL4,
                Proto::H1,
                figures(10e3, 1.0, 100.0, 4.0, 2.0),
                60e6,
            ),
        ]
    }

    fn failed(rows: &[Row]) -> Vec<String> {
        of(rows)
            .into_iter()
            .filter(|b| !b.ok())
            .map(|b| format!("{}: {}", b.name, b.value_text()))
            .collect()
    }

    #[test]
    fn l4_budgets_are_ratios_to_the_envoy_l4_pair() {
        let rows = l4_rows(figures(15e3, 0.6, 40.0, 6.0, 1.2), 25e6);
        let budgets = of(&rows);
        assert_eq!(budgets.len(), 6, "{budgets:?}");
        assert!(failed(&rows).is_empty(), "{:?}", failed(&rows));
        assert_eq!(budgets[0].name, "L4 mTLS req/s at 16 conns ≥ 1.4× Envoy L4");
        assert_eq!(budgets[0].value_text(), "1.50×");

        // Just over each limit, and over the memory budget.
        let rows = l4_rows(figures(13.9e3, 0.66, 51.0, 4.9, 1.6), 31e6);
        let f = failed(&rows);
        assert_eq!(f.len(), 6, "{f:?}");
        assert!(f.contains(&"both agents ≤ 30 MB RSS after the bench: 31.0 MB".to_owned()));
        // A figure that is missing fails rather than passes.
        let rows = l4_rows(figures(f64::NAN, 0.6, 40.0, 6.0, 1.2), 25e6);
        assert_eq!(
            failed(&rows),
            ["L4 mTLS req/s at 16 conns ≥ 1.4× Envoy L4: NaN×"]
        );
    }

    fn l7_rows(weft_l7: Figures) -> Vec<Row> {
        let mut rows = l4_rows(figures(15e3, 0.6, 40.0, 6.0, 1.2), 25e6);
        for proto in [Proto::H1, Proto::H2] {
            rows.push(row(Kind::WeftL7, proto, weft_l7, 25e6));
            rows.push(row(
                Kind::EnvoyL7,
                proto,
                figures(8e3, 1.5, 150.0, f64::NAN, f64::NAN),
                60e6,
            ));
        }
        rows.push(row(
            Kind::WeftL4,
            Proto::H2,
            figures(17e3, 0.5, 30.0, f64::NAN, f64::NAN),
            25e6,
        ));
        rows
    }

    #[test]
    fn l7_budgets_are_ratios_to_the_envoy_l7_pair_and_to_weft_l4_per_protocol() {
        // 2.0× the req/s and ⅓ the added latency, exactly; under 0.5× the
        // CPU, and under 1.25× Weft L4's for HTTP/1.1 (0.6) but not for h2c (0.5).
        let rows = l7_rows(figures(16e3, 0.7, 50.0, f64::NAN, f64::NAN));
        let names: Vec<String> = of(&rows).into_iter().map(|b| b.name).collect();
        assert_eq!(names.len(), 6 + 2 * 4, "{names:?}");
        assert!(names.contains(&"L7 h2c req/s at 16 conns ≥ 2.0× Envoy L7".to_owned()));
        assert!(names.contains(&"L7 HTTP/1.1 added p50 at 1 conn ≤ ⅓× Envoy L7".to_owned()));
        assert_eq!(
            failed(&rows),
            ["L7 h2c CPU per request ≤ 1.25× Weft L4 h2c: 1.40×"]
        );

        // Just short of each limit against Envoy.
        let rows = l7_rows(figures(15.9e3, 0.76, 50.5, f64::NAN, f64::NAN));
        assert_eq!(failed(&rows).len(), 2 * 3 + 2, "{:?}", failed(&rows));
    }

    #[test]
    fn only_the_budgets_of_measured_paths_are_checked() {
        // --l7-only: no Envoy L4 pair, so no L4 budget and no memory budget.
        let mut rows = l7_rows(figures(16e3, 0.7, 50.0, f64::NAN, f64::NAN));
        rows.retain(|r| r.kind != Kind::EnvoyL4);
        let budgets = of(&rows);
        assert!(
            budgets.iter().all(|b| b.name.starts_with("L7 ")),
            "{budgets:?}"
        );
        assert_eq!(budgets.len(), 8);
        // No L7 rows: only L4's.
        assert_eq!(
            of(&l4_rows(figures(15e3, 0.6, 40.0, 6.0, 1.2), 25e6)).len(),
            6
        );
        assert!(of(&[]).is_empty());
    }
}
