//! Kubeconfig files for the lab's clients: the admin (client certificate) and
//! anything that authenticates with a bearer token (an agent's ServiceAccount).

use std::path::Path;

use anyhow::{Context, Result};

use super::certs::CertFiles;

/// How a kubeconfig's user authenticates.
pub enum Credentials<'a> {
    Certificate(&'a CertFiles),
    Token(&'a str),
}

/// Writes a kubeconfig for `server` (e.g. `https://127.0.0.1:6443`) trusting `ca`.
pub fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca: &Path,
    credentials: Credentials<'_>,
) -> Result<()> {
    let user = match credentials {
        Credentials::Certificate(files) => serde_json::json!({
            "client-certificate": files.cert,
            "client-key": files.key,
        }),
        Credentials::Token(token) => serde_json::json!({ "token": token }),
    };
    // JSON is YAML: kubectl and kube-rs read it as a kubeconfig.
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "lab", "cluster": {
            "server": server,
            "certificate-authority": ca,
        }}],
        "users": [{ "name": "lab", "user": user }],
        "contexts": [{ "name": "lab", "context": { "cluster": "lab", "user": "lab" } }],
        "current-context": "lab",
    });
    let text = serde_json::to_string_pretty(&config)?;
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}
