//! `mesh-agent check --kubeconfig` from the host (a workstation's view: the
//! API server only) against Weft installed on the lab's API server: it fails
//! with a clear line while the DaemonSet is not rolled out on a node, passes
//! once every node's agent runs (what the lab cannot show, such as the
//! agents' enrolled counts behind the pod proxy, is `unknown`, never a
//! failure), and fails when the trust bundle is invalid or missing. Run as
//! root (`cargo xtask test`).

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lab::cluster::{Cluster, SYSTEM_NAMESPACE};
use lab::kube::ControlPlane;
use serde_json::Value;

/// One run of the check: exit status, the table, and the JSON report.
struct Run {
    passed: bool,
    table: String,
    report: Value,
}

impl Run {
    fn check(&self, name: &str) -> &Value {
        self.report["checks"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == name)
            .unwrap_or(&Value::Null)
    }

    /// The table line of check `name`.
    fn line(&self, name: &str) -> &str {
        self.table
            .lines()
            .find(|l| l.starts_with(&format!("{name}  ")))
            .unwrap_or("")
    }

    fn failed(&self) -> Vec<String> {
        self.report["checks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["result"] == "fail")
            .map(|c| format!("{}: {}", c["name"], c["detail"]))
            .collect()
    }
}

fn run_check(c: &Cluster, extra: &[&str]) -> Result<Run> {
    let kubeconfig = c.cp().kubeconfig().to_string_lossy().into_owned();
    let mut outputs = Vec::new();
    for format in ["table", "json"] {
        let out = Command::new(lab::agent_binary()?)
            .args(["check", "--kubeconfig", &kubeconfig, "-o", format])
            .args(extra)
            .output()
            .context("run mesh-agent check")?;
        if !out.stderr.is_empty() {
            bail!(
                "mesh-agent check printed errors: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        outputs.push((out.status.success(), String::from_utf8(out.stdout)?));
    }
    let (passed, table) = outputs.remove(0);
    let (json_passed, json) = outputs.remove(0);
    let report: Value = serde_json::from_str(&json).with_context(|| format!("not JSON: {json}"))?;
    assert_eq!(passed, json_passed, "both formats agree on the exit code");
    assert_eq!(report["ok"], passed, "the JSON's ok is the exit code");
    Ok(Run {
        passed,
        table,
        report,
    })
}

/// Runs the check until it passes (the DaemonSet controller updates its
/// status a moment after a pod turns Ready).
fn until_it_passes(c: &Cluster, extra: &[&str]) -> Result<Run> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let run = run_check(c, extra)?;
        if run.passed || Instant::now() > deadline {
            return Ok(run);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn check_follows_the_rollout_and_the_trust_bundle() -> Result<()> {
    let cp = ControlPlane::shared()?;
    let mut c = Cluster::new(cp, &["a", "b"])?;
    let node_b = c.klab.node("b")?.object.clone();

    // Only node a's agent runs: the DaemonSet is not rolled out on node b.
    c.start_agent("a")?;
    let run = run_check(&c, &[])?;
    println!("{}", run.table);
    assert!(!run.passed, "{}", run.table);
    let ds = run.line("DaemonSet weft-agent");
    assert!(ds.contains("FAIL"), "{}", run.table);
    assert!(
        ds.contains("not rolled out") && ds.contains(&format!("no ready agent on {node_b}")),
        "the line names the node: {ds}"
    );
    let agent_b = run.check(&format!("agent {node_b}"));
    assert_eq!(agent_b["result"], "fail", "{agent_b}");
    assert!(
        run.table
            .contains("kubectl -n weft-system rollout status daemonset/weft-agent"),
        "the fix follows the table:\n{}",
        run.table
    );

    // Both agents: every check passes or is unknown.
    c.start_agent("b")?;
    let run = until_it_passes(&c, &[])?;
    assert!(run.passed, "failed: {:?}\n{}", run.failed(), run.table);
    for name in [
        "API server",
        "CRD authorizationpolicies.weft.dev",
        "CRD trafficpolicies.weft.dev",
        "Gateway API routes",
        "agent version",
        "DaemonSet weft-agent",
        &format!("agent {node_b}"),
        "CA Deployment weft-ca",
        "trust bundle",
        "clock skew",
    ] {
        assert_eq!(run.check(name)["result"], "pass", "{name}:\n{}", run.table);
    }
    // The lab's nodes are network namespaces the API server cannot dial, and
    // the CA Service's cluster IP exists only inside them.
    for name in ["enrolled pods", "CA service"] {
        let result = &run.check(name)["result"];
        assert!(
            result == "unknown" || result == "pass",
            "{name}: {}",
            run.table
        );
    }
    println!("{}", run.table);

    // The CA reached as through a port-forward: the handshake verifies
    // against the trust bundle, and the CA's clock is read.
    let ca = c.ca.addr.to_string();
    let run = until_it_passes(&c, &["--ca-addr", &ca])?;
    assert!(run.passed, "failed: {:?}\n{}", run.failed(), run.table);
    assert_eq!(run.check("CA service")["result"], "pass", "{}", run.table);
    assert!(run.line("clock skew").contains("CA +0 s"), "{}", run.table);

    // The CA would publish the bundle again: stop it, then break the bundle.
    c.klab.lab().kill(c.ca.pid)?;
    c.cp().kubectl(&[
        "patch",
        "configmap",
        "weft-trust-bundle",
        "-n",
        SYSTEM_NAMESPACE,
        "--type=merge",
        "-p",
        r#"{"data":{"roots.pem":"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"}}"#,
    ])?;
    let run = run_check(&c, &[])?;
    assert!(!run.passed, "{}", run.table);
    let bundle = run.line("trust bundle");
    assert!(
        bundle.contains("FAIL") && bundle.contains("weft-system/weft-trust-bundle is invalid"),
        "{}",
        run.table
    );
    assert!(
        run.table
            .contains("kubectl -n weft-system delete configmap weft-trust-bundle"),
        "{}",
        run.table
    );
    assert_eq!(run.failed().len(), 1, "only the bundle: {:?}", run.failed());

    c.cp().kubectl(&[
        "delete",
        "configmap",
        "weft-trust-bundle",
        "-n",
        SYSTEM_NAMESPACE,
    ])?;
    let run = run_check(&c, &[])?;
    assert!(!run.passed, "{}", run.table);
    assert!(
        run.line("trust bundle")
            .contains("weft-system/weft-trust-bundle does not exist"),
        "{}",
        run.table
    );
    Ok(())
}
