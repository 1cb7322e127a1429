//! What every check produces, and how a run is printed: a table with one line
//! per check, then, for each check that did not pass, what to do about it.

use std::process::ExitCode;

use serde::Serialize;

use crate::cli::{Output, format_table};

/// The outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    /// Works, but something is off (routes ignored, fewer CA replicas).
    Warn,
    Fail,
    /// Could not be told from where the check runs (not a failure).
    Unknown,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
            Verdict::Unknown => "unknown",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: String,
    /// Not failed (pass, warn or unknown).
    pub ok: bool,
    pub result: Verdict,
    pub detail: String,
    /// What to do when it does not pass (for `unknown`: how to find out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub fn new(
        name: impl Into<String>,
        result: Verdict,
        detail: impl Into<String>,
        fix: Option<String>,
    ) -> Self {
        Check {
            name: name.into(),
            ok: result != Verdict::Fail,
            result,
            detail: detail.into(),
            fix,
        }
    }

    pub fn pass(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(name, Verdict::Pass, detail, None)
    }

    pub fn fail(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(name, Verdict::Fail, detail, Some(fix.into()))
    }

    pub fn warn(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(name, Verdict::Warn, detail, Some(fix.into()))
    }

    pub fn unknown(
        name: impl Into<String>,
        detail: impl Into<String>,
        how: impl Into<String>,
    ) -> Self {
        Self::new(name, Verdict::Unknown, detail, Some(how.into()))
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    /// No check failed.
    pub ok: bool,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn new(checks: Vec<Check>) -> Self {
        Report {
            ok: checks.iter().all(|c| c.ok),
            checks,
        }
    }

    pub fn exit_code(&self) -> ExitCode {
        if self.ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }

    /// The table, the fixes of what did not pass, and a summary line.
    pub fn to_text(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .checks
            .iter()
            .map(|c| vec![c.name.clone(), c.result.label().into(), c.detail.clone()])
            .collect();
        let mut out = format_table(&["CHECK", "RESULT", "DETAIL"], &rows);
        for c in self.checks.iter().filter(|c| c.result != Verdict::Pass) {
            if let Some(fix) = &c.fix {
                out.push_str(&format!("\n{}: {fix}\n", c.name));
            }
        }
        out.push_str(&format!("\n{}\n", self.summary()));
        out
    }

    fn summary(&self) -> String {
        let count = |v: Verdict| self.checks.iter().filter(|c| c.result == v).count();
        let (failed, warned, unknown) = (
            count(Verdict::Fail),
            count(Verdict::Warn),
            count(Verdict::Unknown),
        );
        let mut notes = Vec::new();
        if warned > 0 {
            notes.push(format!("{warned} warning{}", plural(warned)));
        }
        if unknown > 0 {
            notes.push(format!("{unknown} unknown"));
        }
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join(", "))
        };
        match failed {
            0 if notes.is_empty() => "all checks passed".into(),
            0 => format!("no check failed{notes}"),
            n => format!("some checks failed: {n} of {}{notes}", self.checks.len()),
        }
    }

    pub fn print(&self, output: Output) -> anyhow::Result<()> {
        match output {
            Output::Json => println!("{}", serde_json::to_string_pretty(self)?),
            Output::Table => print!("{}", self.to_text()),
        }
        Ok(())
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixes_follow_the_table_and_only_a_failure_fails() {
        let report = Report::new(vec![
            Check::pass("a", "fine"),
            Check::unknown("b", "cannot tell", "look elsewhere"),
            Check::warn("c", "odd", "tidy up"),
        ]);
        assert!(report.ok);
        let text = report.to_text();
        assert!(text.contains("\nb      unknown  cannot tell\n"), "{text}");
        assert!(text.contains("\nb: look elsewhere\n"), "{text}");
        assert!(text.contains("\nc: tidy up\n"), "{text}");
        assert!(
            text.ends_with("no check failed (1 warning, 1 unknown)\n"),
            "{text}"
        );

        let report = Report::new(vec![
            Check::pass("a", "x"),
            Check::fail("d", "broken", "fix"),
        ]);
        assert!(!report.ok);
        assert!(report.to_text().contains("\nd      FAIL    broken\n"));
        assert!(report.to_text().ends_with("some checks failed: 1 of 2\n"));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["checks"][1]["result"], "fail");
        assert_eq!(json["checks"][1]["ok"], false);
    }

    #[test]
    fn all_passed() {
        let report = Report::new(vec![Check::pass("a", "x")]);
        assert!(report.to_text().ends_with("all checks passed\n"));
    }
}
