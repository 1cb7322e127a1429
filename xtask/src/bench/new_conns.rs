//! New connections to one app port (issue 15's budget): in a fresh lab whose
//! pods keep every sysctl as the kernel sets it (no `tcp_tw_reuse=1`, unlike
//! `bench_lab`), `weft-load connect --rate R` paces R new connections per
//! second for S seconds from a meshed client pod to one port of a meshed
//! server pod (L4, mTLS through both agents), each a connect and a 1-byte
//! echo closed by the client, so the destination agent closes first toward
//! the app and keeps the TIME_WAITs.

use std::fmt::Write as _;

use anyhow::{Context, Result, bail};
use lab::MeshLab;

use super::budgets::new_connections_met;
use super::{MESH_CLIENT, MESH_ECHO_PORT, MESH_SERVER};

/// What one paced run gave.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    pub target: u64,
    pub secs: u64,
    pub completed: u64,
    pub per_sec: f64,
    pub errors: u64,
    /// Seconds into the run; negative when there was none.
    pub first_error_s: f64,
    pub first_error: String,
    /// Slots the client started over a second late.
    pub late: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// The destination agent's dials that could not keep the client's address
    /// (`weft_client_address_fallbacks_total`) and its refusals.
    pub fallbacks: f64,
    pub refused: f64,
}

impl Figures {
    /// From `weft-load connect --rate`'s JSON line.
    pub fn parse(json: &str, secs: u64) -> Result<Figures> {
        let v: serde_json::Value = serde_json::from_str(json.trim())
            .with_context(|| format!("weft-load connect --rate printed {json:?}"))?;
        let n = |k: &str| v[k].as_f64().with_context(|| format!("no {k} in {json}"));
        Ok(Figures {
            target: n("target")? as u64,
            secs,
            completed: n("connections")? as u64,
            per_sec: n("per_sec")?,
            errors: n("errors")? as u64,
            first_error_s: n("first_error_s")?,
            first_error: v["first_error"].as_str().unwrap_or_default().to_owned(),
            late: n("late")? as u64,
            p50_us: n("p50_us")?,
            p99_us: n("p99_us")?,
            fallbacks: 0.0,
            refused: 0.0,
        })
    }

    /// The report's section (markdown) and the budget, if it failed.
    pub fn render(&self) -> (String, Vec<String>) {
        let mut md = format!(
            "\n## New connections\n\n{} new connections per second for {} s from a meshed \
             client to one app port of a meshed server (L4, mTLS), each a connect and a \
             1-byte echo closed by the client; no sysctl changed in the pods.\n\n\
             | target /s | achieved /s | completed | errors | first error at | late slots | \
             connect + echo p50 µs | p99 µs | dials without the client's address | refused \
             (destination) |\n|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|\n",
            self.target, self.secs
        );
        let first = if self.errors == 0 {
            "-".to_owned()
        } else {
            format!("{:.1} s ({})", self.first_error_s, self.first_error)
        };
        let _ = writeln!(
            md,
            "| {} | {:.0} | {} | {} | {first} | {} | {:.0} | {:.0} | {} | {} |",
            self.target,
            self.per_sec,
            self.completed,
            self.errors,
            self.late,
            self.p50_us,
            self.p99_us,
            self.fallbacks,
            self.refused
        );
        let mut failed = Vec::new();
        let verdict = new_connections_met(self.target, self.secs, self.per_sec, self.errors);
        let name = "≥ 1,000 new connections/s to one app port for 120 s, zero errors";
        let line = match verdict {
            Some(true) => format!("- {name}: PASS"),
            Some(false) => {
                failed.push(format!(
                    "new connections: {:.0}/s, {} errors",
                    self.per_sec, self.errors
                ));
                format!("- {name}: FAIL")
            }
            None => {
                format!("- {name}: not checked (this run was shorter or slower than the budget)")
            }
        };
        let _ = writeln!(md, "\n{line}");
        (md, failed)
    }
}

/// Runs the paced connections in a fresh lab whose agents get `flags`.
pub fn measure(rate: u64, secs: u64, flags: &[&str]) -> Result<Figures> {
    eprintln!("==> new connections: {rate}/s for {secs} s to one app port");
    let mesh = MeshLab::start_with(flags)?;
    let server = mesh.pod(MESH_SERVER)?.ip;
    let target = format!("{server}:{MESH_ECHO_PORT}");
    let (rate_s, secs_s) = (rate.to_string(), secs.to_string());
    let out = mesh.load_from(
        MESH_CLIENT,
        &[
            "connect", &target, "--rate", &rate_s, "--secs", &secs_s, "--conns", "32",
        ],
    )?;
    if !out.status.success() {
        bail!(
            "weft-load connect --rate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut figures = Figures::parse(&String::from_utf8_lossy(&out.stdout), secs)?;
    let destination = mesh.metrics("node-b")?;
    // `+ 0.0`: a sum of nothing is -0.0, printed "-0".
    figures.fallbacks =
        lab::metric_sum(&destination, "weft_client_address_fallbacks_total", &[]) + 0.0;
    figures.refused = lab::metric_sum(&destination, "weft_connections_refused_total", &[]) + 0.0;
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"target":1000,"secs":120,"connections":120000,"per_sec":1000,"errors":0,"first_error_s":-1.0,"first_error":"","late":0,"p50_us":900,"p99_us":3000}"#;

    #[test]
    fn a_clean_full_run_passes() {
        let f = Figures::parse(LINE, 120).unwrap();
        assert_eq!(f.completed, 120_000);
        let (md, failed) = f.render();
        assert!(failed.is_empty(), "{md}");
        assert!(md.contains("PASS"), "{md}");
    }

    #[test]
    fn an_error_fails_it_and_names_when() {
        let line = LINE
            .replace("\"errors\":0", "\"errors\":3")
            .replace("-1.0", "14.2")
            .replace(
                "\"first_error\":\"\"",
                "\"first_error\":\"Cannot assign requested address\"",
            );
        let (md, failed) = Figures::parse(&line, 120).unwrap().render();
        assert_eq!(failed.len(), 1);
        assert!(md.contains("14.2 s (Cannot assign"), "{md}");
    }
}
