//! What tests do with a running control plane: kubectl as the admin, tokens
//! for ServiceAccounts, kubeconfigs, and forwarders that let a node's netns
//! reach the API server.

use std::path::Path;

use anyhow::Result;

use super::certs::KUBERNETES_SERVICE_IP;
use super::control_plane::ControlPlane;
use super::forward::Forwarder;
use super::kubeconfig::{Credentials, write_kubeconfig};
use super::kubectl::kubectl;

impl ControlPlane {
    /// Runs the recipe's kubectl as the admin; errors carry its stderr.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        kubectl(&self.kubectl, &self.kubeconfig, args, None)
    }

    /// kubectl with `input` on stdin (`-f -`).
    pub fn kubectl_with_input(&self, args: &[&str], input: &str) -> Result<String> {
        kubectl(&self.kubectl, &self.kubeconfig, args, Some(input))
    }

    /// The recipe's kubectl binary, for tests that run it with another kubeconfig.
    pub fn kubectl_binary(&self) -> &Path {
        &self.kubectl
    }

    /// Server-side apply: the API server validates and owns the merge.
    pub fn apply_yaml(&self, yaml: &str) -> Result<String> {
        self.kubectl_with_input(
            &[
                "apply",
                "--server-side",
                "--field-manager=weft-lab",
                "-f",
                "-",
            ],
            yaml,
        )
    }

    /// A forwarder from `127.0.0.1:<API server port>` inside the netns at
    /// `netns` to the API server: the same URL works inside and outside.
    pub fn forward_into(&self, netns: &Path) -> Result<Forwarder> {
        Forwarder::start(netns, self.apiserver_addr, self.apiserver_addr)
    }

    /// The `kubernetes` Service as a pod or a hostNetwork agent sees it:
    /// `https://10.96.0.1:443` inside the netns at `netns` (the address is put
    /// on its loopback), forwarded to the API server. The serving certificate
    /// names that IP, so in-cluster clients (`KUBERNETES_SERVICE_HOST=10.96.0.1`,
    /// `KUBERNETES_SERVICE_PORT=443`) verify it as in a cluster.
    pub fn forward_kubernetes_service_into(&self, netns: &Path) -> Result<Forwarder> {
        Forwarder::service(netns, KUBERNETES_SERVICE_IP, 443, self.apiserver_addr)
    }

    /// A ServiceAccount token from the TokenRequest API (`kubectl create token`),
    /// for `audience`, bound to a pod `(name, uid)` when given (the token then
    /// names the pod and its node).
    pub fn token(
        &self,
        namespace: &str,
        service_account: &str,
        audience: &str,
        bound_pod: Option<(&str, &str)>,
    ) -> Result<String> {
        let mut args = vec![
            "create",
            "token",
            service_account,
            "-n",
            namespace,
            "--audience",
            audience,
            "--duration=1h",
        ];
        if let Some((name, uid)) = bound_pod {
            args.extend([
                "--bound-object-kind",
                "Pod",
                "--bound-object-name",
                name,
                "--bound-object-uid",
                uid,
            ]);
        }
        Ok(self.kubectl(&args)?.trim().to_string())
    }

    /// Writes a kubeconfig at `path` that authenticates with `token`, for `server`
    /// (default: this API server's loopback URL, which forwarders reproduce in a
    /// node's netns).
    pub fn write_token_kubeconfig(
        &self,
        path: &Path,
        token: &str,
        server: Option<&str>,
    ) -> Result<()> {
        let server = server.map_or_else(|| self.server(), str::to_string);
        write_kubeconfig(path, &server, &self.pki.ca.cert, Credentials::Token(token))
    }
}
