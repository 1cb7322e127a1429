//! The data path end to end (issue 4): real clients and servers in lab pods, an
//! agent per node, traffic captured by the kernel programs and proxied through
//! the agents' tunnel, or directly, or steered inbound.

use anyhow::Result;
use lab::{MeshLab, metric_sum};

const OPENED: &str = "istio_tcp_connections_opened_total";

#[test]
fn meshed_traffic_goes_through_the_agents_and_the_rest_does_not() -> Result<()> {
    let mesh = MeshLab::start()?;

    // meshed → meshed, same node, by pod IP: frontend-a → reviews-v1-a.
    let (peer, seen) = mesh.ping("frontend-7d9f-a", "10.88.1.11:9080")?;
    assert_eq!(
        peer, "10.88.1.11:9080",
        "getpeername shows the original destination"
    );
    assert!(
        seen.starts_with("10.88.1.10:"),
        "the server sees the client pod's address (the agent keeps it), got {seen}"
    );

    // meshed → meshed, across nodes, by pod IP: frontend-a → payments-6f7c-a (node-b).
    let (peer, seen) = mesh.ping("frontend-7d9f-a", "10.88.2.12:8443")?;
    assert_eq!(peer, "10.88.2.12:8443");
    assert!(
        seen.starts_with("10.88.1.10:"),
        "arrived through the destination agent, from the client's address, got {seen}"
    );

    // meshed → Service address, across nodes: the payments Service has one pod per node.
    for _ in 0..4 {
        let (peer, seen) = mesh.ping("frontend-7d9f-a", "10.96.1.10:443")?;
        assert_eq!(
            peer, "10.96.1.10:443",
            "getpeername shows the Service address"
        );
        assert!(seen.starts_with("10.88.1.10:"), "{seen}");
    }

    // meshed → unmeshed (legacy namespace): direct, from the source pod's own IP.
    let (peer, seen) = mesh.ping("frontend-7d9f-a", "10.88.2.13:8000")?;
    assert_eq!(peer, "10.88.2.13:8000");
    assert!(
        seen.starts_with("10.88.1.10:"),
        "direct from the pod's netns keeps its IP, got {seen}"
    );

    // unmeshed → meshed: steered by sk_lookup into the destination's :15006.
    let (_, seen) = mesh.ping("inventory-0", "10.88.2.10:8080")?;
    assert!(
        seen.starts_with("10.88.1.13:"),
        "the app sees the unmeshed client's address, got {seen}"
    );

    // unmeshed → unmeshed: untouched.
    let (_, seen) = mesh.ping("inventory-0", "10.88.2.13:8000")?;
    assert!(seen.starts_with("10.88.1.13:"), "{seen}");

    let a = mesh.metrics("node-a")?;
    let b = mesh.metrics("node-b")?;
    let source = [("reporter", "source"), ("source_workload", "frontend")];
    assert!(
        metric_sum(
            &a,
            OPENED,
            &[source[0], source[1], ("destination_workload", "reviews")]
        ) >= 1.0,
        "{a}"
    );
    assert!(
        metric_sum(
            &a,
            OPENED,
            &[
                source[0],
                ("destination_service", "payments.payments.svc.cluster.local")
            ]
        ) >= 4.0,
        "{a}"
    );
    assert!(
        metric_sum(
            &a,
            OPENED,
            &[source[0], ("destination_workload", "unknown")]
        ) >= 1.0,
        "direct counted: {a}"
    );
    assert!(
        metric_sum(
            &b,
            OPENED,
            &[
                ("reporter", "destination"),
                ("source_workload", "frontend"),
                ("destination_workload", "payments")
            ]
        ) >= 1.0,
        "{b}"
    );
    assert!(
        metric_sum(
            &b,
            OPENED,
            &[
                ("reporter", "destination"),
                ("source_workload", "inventory"),
                ("destination_workload", "frontend")
            ]
        ) >= 1.0,
        "plaintext inbound counted: {b}"
    );
    assert!(
        metric_sum(
            &a,
            "istio_tcp_received_bytes_total",
            &[("reporter", "source")]
        ) > 0.0
    );
    Ok(())
}
