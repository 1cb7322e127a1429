//! Weft installed as a user installs it: `kubectl apply --server-side -k
//! manifests/` (the API server validates every object), plus the Gateway API
//! route CRDs generated from the agent's own types (a documented prerequisite
//! for users), and the CA key Secret made with `mesh-agent ca init`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::agent::agent_binary;
use crate::kube::ControlPlane;

pub const SYSTEM_NAMESPACE: &str = "weft-system";

/// The repository's `manifests/`.
pub fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests")
}

/// Installs Weft once per control plane (tests of one binary share it; applying
/// again is a no-op) and returns the CA directory whose key the Secret holds.
pub fn install(cp: &ControlPlane) -> Result<PathBuf> {
    static DONE: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    let ca_dir = cp.dir().join("weft-ca");
    if done.iter().any(|id| id == cp.id()) {
        return Ok(ca_dir);
    }
    let gateway = mesh_agent_output(&["crds", "--gateway-api"])?;
    cp.kubectl_with_input(&["apply", "--server-side", "-f", "-"], &gateway)
        .context("install the Gateway API route CRDs")?;
    let manifests = manifests_dir();
    let manifests = manifests.to_string_lossy();
    cp.kubectl(&["apply", "--server-side", "-k", &manifests])
        .context("kubectl apply -k manifests/")?;
    // What an upgrade does: every object validated again by the API server.
    cp.kubectl(&[
        "apply",
        "--server-side",
        "--dry-run=server",
        "-k",
        &manifests,
    ])
    .context("kubectl apply --dry-run=server -k manifests/")?;
    cp.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/authorizationpolicies.weft.dev",
        "crd/trafficpolicies.weft.dev",
        "crd/httproutes.gateway.networking.k8s.io",
        "--timeout=30s",
    ])?;
    std::fs::create_dir_all(&ca_dir)?;
    mesh_agent_output(&["ca", "init", &ca_dir.to_string_lossy()])?;
    let cert = format!("--from-file=ca.crt={}", ca_dir.join("ca.crt").display());
    let key = format!("--from-file=ca.key={}", ca_dir.join("ca.key").display());
    cp.kubectl(&[
        "create",
        "secret",
        "generic",
        "weft-ca-key",
        "-n",
        SYSTEM_NAMESPACE,
        &cert,
        &key,
    ])
    .context("create the CA key Secret")?;
    done.push(cp.id().to_string());
    Ok(ca_dir)
}

/// `mesh-agent <args>`'s standard output.
pub fn mesh_agent_output(args: &[&str]) -> Result<String> {
    let out = Command::new(agent_binary()?)
        .args(args)
        .output()
        .with_context(|| format!("run mesh-agent {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "mesh-agent {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The first container of a workload (`daemonset/weft-agent`) as the API server
/// stored it: the command, args and env the kubelet would run.
pub fn container_spec(cp: &ControlPlane, workload: &str) -> Result<Value> {
    let json: Value = serde_json::from_str(&cp.kubectl(&[
        "get",
        workload,
        "-n",
        SYSTEM_NAMESPACE,
        "-o",
        "json",
    ])?)?;
    Ok(json["spec"]["template"]["spec"]["containers"][0].clone())
}

/// `command` + `args` of a container with `$(VAR)` expanded from `env` as the
/// kubelet does.
pub fn argv(container: &Value, env: &[(String, String)]) -> Vec<String> {
    ["command", "args"]
        .iter()
        .flat_map(|k| container[*k].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .map(|mut arg| {
            for (k, v) in env {
                arg = arg.replace(&format!("$({k})"), v);
            }
            arg
        })
        .collect()
}

/// The container's env, downward-API values from `fields` (`spec.nodeName`,
/// `metadata.namespace`, `metadata.name`).
pub fn env(container: &Value, fields: &[(&str, &str)]) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"]
            .as_str()
            .context("env without a name")?
            .to_string();
        if let Some(v) = e["value"].as_str() {
            out.push((name, v.to_string()));
        } else if let Some(path) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            let v = fields
                .iter()
                .find(|(f, _)| *f == path)
                .with_context(|| format!("no downward-API value for {path}"))?;
            out.push((name, v.1.to_string()));
        } else {
            bail!("env {name}: only values and fieldRefs are supported by the lab");
        }
    }
    Ok(out)
}

/// Replaces the value of `--flag=…` in `argv` (the lab's stand-in for a host
/// path or a cluster name); fails if the flag is not there, so a renamed flag in
/// the manifests fails the test.
pub fn substitute(argv: &mut [String], flag: &str, value: &str) -> Result<()> {
    let prefix = format!("{flag}=");
    let arg = argv
        .iter_mut()
        .find(|a| a.starts_with(&prefix))
        .with_context(|| format!("the manifest's args have no {flag}="))?;
    *arg = format!("{prefix}{value}");
    Ok(())
}

/// The value of `--flag=…` in `argv`.
pub fn flag_value<'a>(argv: &'a [String], flag: &str) -> Option<&'a str> {
    let prefix = format!("{flag}=");
    argv.iter().find_map(|a| a.strip_prefix(&prefix))
}
