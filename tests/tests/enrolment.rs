//! The enrolment lifecycle (issue 13): a pod the agent cannot enrol fails
//! closed, is shown failing and retried with backoff until it is enrolled
//! (defect 6); a pod whose service account changes is re-enrolled with its new
//! identity (defect 3).

use std::net::TcpListener;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lab::{MeshLab, metric_sum};

/// payments-6f7c-b: namespace payments (strict mTLS), node-a.
const PAYMENTS: &str = "payments-6f7c-b";
const PAYMENTS_ADDR: &str = "10.88.1.14:8443";
/// Meshed client on the same node, and an unmeshed one.
const FRONTEND: &str = "frontend-7d9f-a";
const FRONTEND_ADDR: &str = "10.88.1.10:8080";
const LEGACY: &str = "inventory-0";
/// reviews-v1 on node-b.
const REVIEWS_B: &str = "reviews-v1-5c4b-b";
const REVIEWS_B_ADDR: &str = "10.88.2.11:9080";

/// `weft-load ping` from `pod`, given 3 s (a dropped SYN would otherwise
/// wait for the kernel's retries).
fn ping_ok(mesh: &MeshLab, pod: &str, addr: &str) -> Result<bool> {
    let load = lab::load_binary()?;
    let out = mesh
        .pod(pod)?
        .command("timeout")
        .arg("3")
        .arg(&load)
        .args(["ping", addr])
        .output()?;
    Ok(out.status.success())
}

fn status_json(mesh: &MeshLab, node: &str) -> Result<serde_json::Value> {
    let out = mesh.agent_cli(node, &["status", "-o", "json"])?;
    if !out.status.success() {
        bail!("status: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn failing_pods(status: &serde_json::Value) -> Vec<serde_json::Value> {
    status["enrolmentFailures"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_pod_whose_agent_port_is_taken_fails_closed_and_is_enrolled_once_free() -> Result<()> {
    let mut mesh = MeshLab::without_agents()?;
    // The app holds the agent's inbound port before the agent starts.
    let squatter = mesh
        .pod(PAYMENTS)?
        .in_netns(|| TcpListener::bind("0.0.0.0:15006"))??;
    let nodes: Vec<String> = mesh.lab.nodes().iter().map(|n| n.name.clone()).collect();
    for node in &nodes {
        mesh.start_agent(node)?;
    }

    // Closed: plaintext to the strict pod's app is not served, and neither a
    // meshed client nor the pod itself gets through.
    assert!(
        !ping_ok(&mesh, LEGACY, PAYMENTS_ADDR)?,
        "plaintext to the strict pod's app was served while its enrolment failed"
    );
    assert!(
        !ping_ok(&mesh, FRONTEND, PAYMENTS_ADDR)?,
        "a meshed client reached the pod that is not enrolled"
    );
    assert!(
        !ping_ok(&mesh, PAYMENTS, REVIEWS_B_ADDR)?,
        "the pod that is not enrolled connected out"
    );

    // Shown: status, metric, /ready detail.
    let status = status_json(&mesh, "node-a")?;
    let failing = failing_pods(&status);
    assert_eq!(failing.len(), 1, "status: {status:#}");
    assert_eq!(failing[0]["name"], PAYMENTS, "{status:#}");
    assert_eq!(failing[0]["closed"], true, "{status:#}");
    let reason = failing[0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("15006"),
        "the reason names the port: {reason}"
    );
    let table = mesh.agent_cli("node-a", &["status"])?;
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(
        table.contains(&format!("payments/{PAYMENTS}")) && table.contains("fail"),
        "status table:\n{table}"
    );
    let metrics = mesh.metrics("node-a")?;
    assert_eq!(metric_sum(&metrics, "weft_enrolment_failures", &[]), 1.0);
    assert!(metric_sum(&metrics, "weft_enrolment_failed_attempts_total", &[]) >= 1.0);
    let ready = mesh
        .lab
        .node("node-a")?
        .command("curl")
        .args(["-s", "http://127.0.0.1:15000/ready"])
        .output()?;
    let ready = String::from_utf8_lossy(&ready.stdout).into_owned();
    assert!(ready.contains(PAYMENTS), "/ready names the pod: {ready}");

    // Freed: within the backoff the pod is enrolled and served meshed.
    drop(squatter);
    let freed = Instant::now();
    while !ping_ok(&mesh, FRONTEND, PAYMENTS_ADDR)? {
        if freed.elapsed() > Duration::from_secs(20) {
            bail!(
                "not enrolled 20 s after the port was freed:\n{}",
                mesh.agent("node-a")?.log()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("enrolled {:?} after the port was freed", freed.elapsed());
    assert!(
        ping_ok(&mesh, PAYMENTS, REVIEWS_B_ADDR)?,
        "the pod connects out"
    );
    assert!(
        !ping_ok(&mesh, LEGACY, PAYMENTS_ADDR)?,
        "strict: plaintext refused"
    );
    let status = status_json(&mesh, "node-a")?;
    assert!(failing_pods(&status).is_empty(), "{status:#}");
    let metrics = mesh.metrics("node-a")?;
    assert_eq!(metric_sum(&metrics, "weft_enrolment_failures", &[]), 0.0);
    Ok(())
}

/// Replaces `spec.serviceAccountName` of a pod in the lab config.
fn set_service_account(mesh: &mut MeshLab, namespace: &str, pod: &str, sa: &str) -> Result<()> {
    let doc = mesh.config.remove("Pod", namespace, pod)?;
    let mut text = String::new();
    yaml_rust2::YamlEmitter::new(&mut text).dump(&doc)?;
    let old = doc["spec"]["serviceAccountName"]
        .as_str()
        .context("the pod has a serviceAccountName")?;
    let text = text.replace(
        &format!("serviceAccountName: {old}"),
        &format!("serviceAccountName: {sa}"),
    );
    mesh.config.add_yaml(&text)
}

#[test]
fn a_pod_whose_service_account_changes_uses_its_new_identity() -> Result<()> {
    let mut mesh = MeshLab::start()?;
    assert!(ping_ok(&mesh, FRONTEND, REVIEWS_B_ADDR)?);
    assert!(ping_ok(&mesh, REVIEWS_B, FRONTEND_ADDR)?);

    set_service_account(&mut mesh, "shop", FRONTEND, "storefront")?;
    // Only the new principal may reach reviews.
    mesh.config.add_yaml(
        "apiVersion: weft.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata:\n  name: storefront-only\n  namespace: shop\nspec:\n  selector:\n    matchLabels:\n      app: reviews\n  action: ALLOW\n  rules:\n    - from:\n        - source:\n            principals: [cluster.local/ns/shop/sa/storefront]\n",
    )?;
    mesh.apply_config()?;

    // Both ways, within a rescan or retry of the change.
    let applied = Instant::now();
    let mut last = (false, false);
    while applied.elapsed() < Duration::from_secs(5) {
        last = (
            ping_ok(&mesh, FRONTEND, REVIEWS_B_ADDR)?,
            ping_ok(&mesh, REVIEWS_B, FRONTEND_ADDR)?,
        );
        if last == (true, true) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        last,
        (true, true),
        "(out, in) with the new identity, 5 s after the change:\n{}",
        mesh.agent("node-a")?.log()
    );
    eprintln!(
        "new identity in use {:?} after the change",
        applied.elapsed()
    );
    // The policy is what let it in: the old principal is refused.
    assert!(!ping_ok(&mesh, "frontend-7d9f-b", REVIEWS_B_ADDR)?);
    let certs = mesh.agent_cli("node-a", &["certs"])?;
    let certs = String::from_utf8_lossy(&certs.stdout).into_owned();
    assert!(certs.contains("sa/storefront"), "certs on node-a: {certs}");
    let log = mesh.agent("node-a")?.log();
    assert!(
        !log.contains("cannot enrol pod"),
        "enrolled again without a failed attempt:\n{log}"
    );
    Ok(())
}
