//! The kubelet's part for Weft's own pods, which the lab runs outside any
//! kubelet: the DaemonSet's pod on a node is reported Running and Ready once
//! that node's agent answers `/ready` (as the readiness probe would), so the
//! DaemonSet's status shows the rollout; the CA Deployment's pods are reported
//! Running and Ready while the lab's CA process serves, so the Deployment is
//! available. Without this they stay Pending, as no kubelet runs them.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::install::SYSTEM_NAMESPACE;
use crate::kube::{ContainerState, ControlPlane, now_rfc3339, pod_status};

/// Waits until `GET /ready` on `127.0.0.1:<port>` inside `netns` answers 200.
pub fn wait_ready(netns: &Path, port: u16, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let code = crate::pod::in_netns(netns, move || ready_status(port))?;
        if code == Some(200) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "/ready on port {port} in {} did not answer 200 within {timeout:?} (last: {code:?})",
                netns.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ready_status(port: u16) -> Option<u16> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(b"GET /ready HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).ok()?;
    let line = String::from_utf8_lossy(&head[..n]);
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Reports the agent's pod `name` on a node at `node_ip` Running and Ready
/// (hostNetwork: the pod's IP is the node's), its container `container`.
pub fn report_agent_ready(
    cp: &ControlPlane,
    name: &str,
    node_ip: Ipv4Addr,
    container: &Value,
    pid: u32,
) -> Result<()> {
    let id = format!("{pid:064x}");
    let state = ContainerState {
        name: container["name"].as_str().unwrap_or("agent"),
        image: container["image"].as_str().unwrap_or(""),
        id: &id,
    };
    let status = pod_status(node_ip, node_ip, &[state], true, &now_rfc3339());
    patch_status(cp, name, &status)
}

/// Reports every pod of the CA Deployment Running and Ready. They are not
/// bound to a lab node and have no IP: the lab's one CA process runs on the
/// host and stands in for the Service. Waits (30 s) until the ReplicaSet has
/// made as many pods as the Deployment wants.
pub fn report_ca_pods_ready(cp: &ControlPlane) -> Result<()> {
    let deployment: Value = serde_json::from_str(&cp.kubectl(&[
        "get",
        "deployment",
        "weft-ca",
        "-n",
        SYSTEM_NAMESPACE,
        "-o",
        "json",
    ])?)?;
    let wanted = deployment["spec"]["replicas"].as_u64().unwrap_or(1) as usize;
    let container = deployment["spec"]["template"]["spec"]["containers"][0].clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    let pods = loop {
        let list: Value = serde_json::from_str(&cp.kubectl(&[
            "get",
            "pods",
            "-n",
            SYSTEM_NAMESPACE,
            "-l",
            "app.kubernetes.io/name=weft-ca",
            "-o",
            "json",
        ])?)?;
        let names: Vec<String> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
            .collect();
        if names.len() >= wanted {
            break names;
        }
        if Instant::now() > deadline {
            bail!(
                "the CA Deployment has {} of {wanted} pods after 30 s",
                names.len()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for (i, name) in pods.iter().enumerate() {
        let id = format!("{:064x}", i + 1);
        let state = ContainerState {
            name: container["name"].as_str().unwrap_or("ca"),
            image: container["image"].as_str().unwrap_or(""),
            id: &id,
        };
        let mut status = pod_status(
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &[state],
            true,
            &now_rfc3339(),
        );
        if let Some(s) = status["status"].as_object_mut() {
            for key in ["podIP", "podIPs", "hostIP", "hostIPs"] {
                s.remove(key);
            }
        }
        patch_status(cp, name, &status)?;
    }
    Ok(())
}

fn patch_status(cp: &ControlPlane, name: &str, status: &Value) -> Result<()> {
    cp.kubectl(&[
        "patch",
        "pod",
        name,
        "-n",
        SYSTEM_NAMESPACE,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ])
    .with_context(|| format!("report pod {SYSTEM_NAMESPACE}/{name} running"))?;
    Ok(())
}
