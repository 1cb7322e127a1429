//! Weft on a real API server: installed from `manifests/` with kubectl, agents
//! and the CA run with the manifests' commands, args and env (`lab::cluster`),
//! pods run by the lab playing kubelet. Run as root (`cargo xtask test`).

use std::time::Duration;

use anyhow::{Context, Result};
use lab::cluster::{Cluster, SYSTEM_NAMESPACE};
use lab::kube::ControlPlane;
use lab::metric_sum;

/// An HTTP server on 8080 and a curl-able client, in namespace `ns`.
fn workloads(ns: &str, server_sa: &str) -> (String, String, String) {
    let server = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"server","namespace":"{ns}","labels":{{"app":"server"}}}},
"spec":{{"serviceAccountName":"{server_sa}","containers":[{{"name":"web","image":"python","command":["python3","-m","http.server","8080"],"ports":[{{"containerPort":8080}}]}}]}}}}"#
    );
    let client = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"client","namespace":"{ns}"}},
"spec":{{"containers":[{{"name":"sleep","image":"busybox","command":["sleep","infinity"]}}]}}}}"#
    );
    let service = format!(
        r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"server","namespace":"{ns}"}},
"spec":{{"selector":{{"app":"server"}},"ports":[{{"name":"http","port":80,"targetPort":8080}}]}}}}"#
    );
    (server, client, service)
}

/// Two nodes, a namespace with a server (node b) behind a Service and a client
/// (node a), agents on both nodes. Returns the cluster and the Service's IP.
fn cluster_with_workloads(ns: &str, meshed: bool) -> Result<(Cluster, String)> {
    let cp = ControlPlane::shared()?;
    let mut c = Cluster::new(cp, &["a", "b"])?;
    let labels: &[(&str, &str)] = if meshed {
        &[("weft.dev/mesh", "enabled")]
    } else {
        &[]
    };
    c.klab.create_namespace(ns, labels)?;
    c.cp()
        .kubectl(&["create", "serviceaccount", "web", "-n", ns])?;
    let (server, client, service) = workloads(ns, "web");
    c.cp().apply_yaml(&service)?;
    c.klab.run_pod("b", &server)?;
    c.klab.run_pod("a", &client)?;
    let ip = c.service_ip(ns, "server")?;
    c.start_agent("a")?;
    c.start_agent("b")?;
    Ok((c, ip))
}

fn curl_from_client(c: &Cluster, ns: &str, url: &str) -> Result<String> {
    c.klab.pod(ns, "client")?.http_status(url)
}

fn mtls_connections(c: &Cluster, node: &str, reporter: &str, ns: &str) -> Result<f64> {
    let server = format!("spiffe://cluster.local/ns/{ns}/sa/web");
    Ok(metric_sum(
        &c.metrics(node)?,
        "istio_tcp_connections_opened_total",
        &[
            ("reporter", reporter),
            ("destination_principal", &server),
            ("connection_security_policy", "mutual_tls"),
        ],
    ))
}

#[test]
fn a_labelled_namespace_is_captured_and_mtls_d_with_certificates_from_the_ca_service() -> Result<()>
{
    let ns = "shop-mtls";
    let (c, ip) = cluster_with_workloads(ns, false)?;
    // Not meshed yet: plaintext straight to the server's pod (the lab has no
    // kube-proxy, so only the mesh resolves Service IPs).
    let pod_url = format!("http://{}:8080/", c.klab.pod(ns, "server")?.ip);
    assert_eq!(curl_from_client(&c, ns, &pod_url)?, "200");
    assert_eq!(mtls_connections(&c, "a", "source", ns)?, 0.0);

    c.cp()
        .kubectl(&["label", "namespace", ns, "weft.dev/mesh=enabled"])?;
    c.wait_until("both pods enrolled", Duration::from_secs(20), || {
        ["a", "b"].iter().all(|n| {
            c.agent(n)
                .map(|a| a.log_text().contains("pod enrolled"))
                .unwrap_or(false)
        })
    })?;
    c.wait_until("a meshed request succeeds", Duration::from_secs(20), || {
        curl_from_client(&c, ns, &format!("http://{ip}/")).is_ok_and(|code| code == "200")
    })?;
    assert!(
        mtls_connections(&c, "a", "source", ns)? >= 1.0,
        "node a's agent carried it in mTLS"
    );
    assert!(
        mtls_connections(&c, "b", "destination", ns)? >= 1.0,
        "node b's agent accepted it in mTLS"
    );
    // The server's certificate came from the CA service, not a local CA.
    let certs = c.agent_cli("b", &["certs", "-o", "json"])?;
    let certs = String::from_utf8_lossy(&certs.stdout);
    assert!(
        certs.contains(&format!("spiffe://cluster.local/ns/{ns}/sa/web")),
        "{certs}"
    );
    let ca_log = std::fs::read_to_string(&c.ca.log)?;
    assert!(
        ca_log.contains(&format!("ns/{ns}/sa/web")),
        "the CA service signed it:\n{ca_log}"
    );

    // Unlabelled: released, plaintext again.
    let before = mtls_connections(&c, "a", "source", ns)?;
    c.cp()
        .kubectl(&["label", "namespace", ns, "weft.dev/mesh-"])?;
    c.wait_until("both pods released", Duration::from_secs(20), || {
        ["a", "b"].iter().all(|n| {
            c.agent(n)
                .map(|a| a.log_text().contains("pod released"))
                .unwrap_or(false)
        })
    })?;
    assert_eq!(curl_from_client(&c, ns, &pod_url)?, "200");
    assert_eq!(
        mtls_connections(&c, "a", "source", ns)?,
        before,
        "no longer through the mesh"
    );
    Ok(())
}

#[test]
fn the_agent_cannot_read_secrets() -> Result<()> {
    let cp = ControlPlane::shared()?;
    lab::cluster::install(&cp)?;
    let sa = format!("system:serviceaccount:{SYSTEM_NAMESPACE}:weft-agent");
    for (verb, resource, expected) in [
        ("get", "secrets", "no"),
        ("list", "secrets", "no"),
        ("watch", "pods", "yes"),
        ("list", "endpointslices.discovery.k8s.io", "yes"),
        ("create", "pods", "no"),
        ("update", "authorizationpolicies.weft.dev", "no"),
    ] {
        // `can-i` answers on stdout and exits 1 for "no".
        let out = std::process::Command::new(cp.kubectl_binary())
            .arg(format!("--kubeconfig={}", cp.kubeconfig().display()))
            .args([
                "auth",
                "can-i",
                verb,
                resource,
                "--all-namespaces",
                "--as",
                &sa,
            ])
            .output()
            .context("kubectl auth can-i")?;
        let out = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.trim(), expected, "can the agent {verb} {resource}?");
    }
    Ok(())
}
