//! The Service the Weft L7 paths address (issue 14): a ClusterIP whose only
//! endpoint is the mesh server pod on node-b, one port declared HTTP
//! (`weft-load http`, for wrk) and one declared h2c (the echo server, for
//! h2load). A connection to it is parsed by the source agent, routed per
//! request and sent through the tunnel (docs/architecture.md, "L7 routing");
//! the same server's pod IP stays L4, which is the Weft L4 path.

use std::net::Ipv4Addr;

use anyhow::{Result, bail};
use lab::{MeshLab, metric_sum};

use super::{HTTP_PORT, MESH_SERVER};

pub const NAME: &str = "bench-l7";
const NAMESPACE: &str = "shop";
pub const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 30);
/// The echo server every lab pod runs on its container port: h2c's target.
pub const ECHO_PORT: u16 = 9080;
/// The label that singles out the server pod (reviews-v1 has one per node).
const LABEL: (&str, &str) = ("weft.dev/bench", "l7-server");

/// The Service: each port forwards to the same port on the pod.
fn service_yaml() -> String {
    let (key, value) = LABEL;
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: {NAME}
  namespace: {NAMESPACE}
spec:
  clusterIP: {CLUSTER_IP}
  selector:
    {key}: {value}
  ports:
    - name: http
      port: {HTTP_PORT}
      targetPort: {HTTP_PORT}
      appProtocol: http
    - name: http2
      port: {ECHO_PORT}
      targetPort: {ECHO_PORT}
      appProtocol: kubernetes.io/h2c
"
    )
}

/// Labels the server pod, adds the Service and waits until every agent has it.
pub fn add(mesh: &mut MeshLab) -> Result<()> {
    let (key, value) = LABEL;
    mesh.config
        .set_label("Pod", NAMESPACE, MESH_SERVER, key, Some(value))?;
    mesh.config.add_yaml(&service_yaml())?;
    mesh.apply_config()?;
    Ok(())
}

/// Requests the source agent (node-a) has routed to the Service at L7: its
/// `istio_requests_total` with reporter `source`. A connection carried as
/// L4 counts none, so the bench checks this grows over each L7 path's
/// warm-up: an L4 fallback must not pass for the L7 path.
pub fn requests_routed(mesh: &MeshLab) -> Result<f64> {
    let service = format!("{NAME}.{NAMESPACE}.svc.cluster.local");
    Ok(metric_sum(
        &mesh.metrics("node-a")?,
        "istio_requests_total",
        &[("reporter", "source"), ("destination_service", &service)],
    ))
}

/// Fails unless `after` counts at least `requests` more than `before`.
pub fn check_routed(path: &str, before: f64, after: f64, requests: u64) -> Result<()> {
    if after - before < requests as f64 {
        bail!(
            "{path}: the source agent routed {} request(s) at L7 where the client \
             sent {requests}: the connections were not handled as HTTP",
            after - before
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_declares_http_and_h2c_ports_on_the_labelled_pod() {
        let yaml = service_yaml();
        for line in [
            "  clusterIP: 10.96.0.30\n",
            "  selector:\n    weft.dev/bench: l7-server\n",
            "      port: 8088\n      targetPort: 8088\n      appProtocol: http\n",
            "      port: 9080\n      targetPort: 9080\n      appProtocol: kubernetes.io/h2c\n",
        ] {
            assert!(yaml.contains(line), "{line:?} in\n{yaml}");
        }
    }

    #[test]
    fn fewer_routed_requests_than_sent_mean_the_path_was_not_l7() {
        assert!(check_routed("x", 10.0, 110.0, 100).is_ok());
        let err = check_routed("x", 10.0, 10.0, 100).unwrap_err().to_string();
        assert!(err.contains("not handled as HTTP"), "{err}");
    }
}
