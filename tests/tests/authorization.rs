//! L4 AuthorizationPolicy at the destination agent (issue 5), end to end: an
//! allow/deny matrix of policies on the reviews pods, each tried from a meshed
//! client of another namespace, one of the same namespace and an unmeshed one;
//! and a policy change that closes an open connection it now denies.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lab::{MeshLab, metric_sum};

/// The destination: reviews-v1 on node-b (namespace shop, app reviews).
const REVIEWS: &str = "10.88.2.11:9080";
/// Sources: shop/frontend (mTLS), payments/payments (mTLS), legacy (plaintext).
const FRONTEND: &str = "frontend-7d9f-a";
const PAYMENTS: &str = "payments-6f7c-b";
const LEGACY: &str = "inventory-0";

fn policy(name: &str, action: &str, rules: &str) -> String {
    format!(
        "apiVersion: weft.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\n  namespace: shop\nspec:\n  selector:\n    matchLabels:\n      app: reviews\n  action: {action}\n{rules}"
    )
}

/// `[frontend, payments, legacy]` may connect.
type Expect = [bool; 3];

#[test]
fn allow_deny_matrix() -> Result<()> {
    let mut mesh = MeshLab::start()?;
    let cases: Vec<(&str, Vec<String>, Expect)> = vec![
        ("no policy", vec![], [true, true, true]),
        (
            "ALLOW principals",
            vec![policy(
                "p",
                "ALLOW",
                "  rules:\n    - from:\n        - source:\n            principals: [cluster.local/ns/shop/sa/frontend]\n",
            )],
            [true, false, false],
        ),
        (
            "ALLOW notPrincipals",
            vec![policy(
                "p",
                "ALLOW",
                "  rules:\n    - from:\n        - source:\n            notPrincipals: ['*/sa/frontend']\n",
            )],
            [false, true, true],
        ),
        (
            "ALLOW namespaces",
            vec![policy(
                "p",
                "ALLOW",
                "  rules:\n    - from:\n        - source:\n            namespaces: [payments]\n",
            )],
            [false, true, false],
        ),
        (
            "ALLOW notNamespaces",
            vec![policy(
                "p",
                "ALLOW",
                "  rules:\n    - from:\n        - source:\n            notNamespaces: [shop]\n",
            )],
            [false, true, true],
        ),
        (
            "ALLOW ipBlocks",
            vec![policy(
                "p",
                "ALLOW",
                "  rules:\n    - from:\n        - source:\n            ipBlocks: [10.88.1.13/32]\n",
            )],
            [false, false, true],
        ),
        (
            "DENY notIpBlocks",
            vec![policy(
                "p",
                "DENY",
                "  rules:\n    - from:\n        - source:\n            notIpBlocks: [10.88.1.10/32]\n",
            )],
            [true, false, false],
        ),
        (
            "ALLOW the app's port",
            vec![policy(
                "p",
                "ALLOW",
                "  rules:\n    - to:\n        - operation:\n            ports: [9080]\n",
            )],
            [true, true, true],
        ),
        (
            "ALLOW another port",
            vec![policy(
                "p",
                "ALLOW",
                "  rules:\n    - to:\n        - operation:\n            ports: [9999]\n",
            )],
            [false, false, false],
        ),
        (
            "DENY notPorts",
            vec![policy(
                "p",
                "DENY",
                "  rules:\n    - to:\n        - operation:\n            notPorts: [9999]\n",
            )],
            [false, false, false],
        ),
        (
            "DENY over ALLOW",
            vec![
                policy("allow-all", "ALLOW", "  rules:\n    - {}\n"),
                policy(
                    "deny-frontend",
                    "DENY",
                    "  rules:\n    - from:\n        - source:\n            principals: ['*/sa/frontend']\n",
                ),
            ],
            [false, true, true],
        ),
        (
            "ALLOW without rules",
            vec![policy("p", "ALLOW", "")],
            [false, false, false],
        ),
        (
            "AUDIT only",
            vec![policy("p", "AUDIT", "  rules:\n    - {}\n")],
            [true, true, true],
        ),
    ];
    let mut failures = Vec::new();
    for (name, policies, expect) in &cases {
        mesh.config.remove_all("AuthorizationPolicy", "shop");
        for p in policies {
            mesh.config.add_yaml(p)?;
        }
        mesh.apply_config()?;
        for (source, want) in [FRONTEND, PAYMENTS, LEGACY].iter().zip(expect) {
            let got = mesh.ping(source, REVIEWS).is_ok();
            if got != *want {
                failures.push(format!(
                    "{name}: {source} → reviews: allowed={got}, want {want}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} checks failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Refusals are logged with the deciding policy and counted.
    let log = mesh.agent("node-b")?.log();
    assert!(
        log.contains("denied by DENY policy shop/deny-frontend"),
        "{log}"
    );
    let refused = metric_sum(
        &mesh.metrics("node-b")?,
        "weft_connections_refused_total",
        &[("reason", "policy")],
    );
    assert!(refused >= 10.0, "policy refusals counted: {refused}");
    Ok(())
}

#[test]
fn a_policy_change_closes_an_open_connection_it_now_denies() -> Result<()> {
    let mut mesh = MeshLab::start()?;
    let load = lab::load_binary()?;
    let mut client = mesh
        .pod(FRONTEND)?
        .command(&load.to_string_lossy())
        .args(["stream", REVIEWS, "--secs", "30"])
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = client.stdout.take().context("client stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().context("client said nothing")??;
    assert!(first.contains("\"up\":true"), "{first}");

    let from = mesh.agent("node-b")?.log_len();
    mesh.config.add_yaml(&policy(
        "deny-frontend",
        "DENY",
        "  rules:\n    - from:\n        - source:\n            principals: ['*/sa/frontend']\n",
    ))?;
    let applied = Instant::now();
    mesh.apply_config()?;
    let ended = lines.next().context("client ended without a word")??;
    let took = applied.elapsed();
    let _ = client.wait();
    assert!(ended.contains("\"ended\":\"closed\""), "{ended}");
    if took > Duration::from_secs(5) {
        bail!("the denied connection took {took:?} to close");
    }
    eprintln!("denied open connection closed {took:?} after the policy was written");
    mesh.agent("node-b")?.wait_for_log(
        "open connection closed: policy now denies it",
        from,
        Duration::from_secs(2),
    )?;
    let revoked = metric_sum(
        &mesh.metrics("node-b")?,
        "weft_connections_revoked_total",
        &[],
    );
    assert_eq!(revoked, 1.0);
    // New connections are refused too; others still flow.
    assert!(mesh.ping(FRONTEND, REVIEWS).is_err());
    mesh.ping(PAYMENTS, REVIEWS)?;
    Ok(())
}
