//! Running the recipe's kubectl (same version as the API server).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// `kubectl --kubeconfig <kubeconfig> <args>`, with `input` on stdin; fails with
/// kubectl's stderr when it exits non-zero. Returns stdout.
pub fn kubectl(
    kubectl: &Path,
    kubeconfig: &Path,
    args: &[&str],
    input: Option<&str>,
) -> Result<String> {
    let mut child = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {}", kubectl.display()))?;
    if let Some(input) = input {
        let mut stdin = child.stdin.take().context("kubectl stdin")?;
        stdin
            .write_all(input.as_bytes())
            .context("write kubectl's input")?;
    }
    let out = child.wait_with_output().context("wait for kubectl")?;
    if !out.status.success() {
        bail!(
            "`kubectl {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).context("kubectl printed non-UTF-8")
}
