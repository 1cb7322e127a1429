//! Endpoint computation and lookups, table-driven.

use std::net::{IpAddr, SocketAddr};

use crate::{
    config::file::load_str,
    state::{ObjectKey, Snapshot},
};

const NS: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {weft.dev/mesh: enabled}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n";

/// `name labels ip [ready] [ports]`, in YAML flow form.
fn pod(name: &str, ns: &str, labels: &str, ips: &str, extra_status: &str, ports: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{{labels}}}}}\nspec:\n  nodeName: node-a\n  containers: [{{name: app, ports: [{ports}]}}]\nstatus: {{podIPs: [{ips}]{extra_status}}}\n"
    )
}

fn service(selector: &str, ports: &str, cluster_ip: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc, namespace: shop}}\nspec:\n  clusterIP: \"{cluster_ip}\"\n  {selector}\n  ports: [{ports}]\n"
    )
}

struct Case {
    name: &'static str,
    pods: Vec<String>,
    selector: &'static str,
    ports: &'static str,
    cluster_ip: &'static str,
    /// Service port whose endpoints are checked.
    port: u16,
    want: &'static [(&'static str, u16)],
}

fn ip(s: &str) -> String {
    format!("{{ip: \"{s}\"}}")
}

const NOT_READY: &str = ", conditions: [{type: Ready, status: \"False\"}]";
const READY: &str = ", conditions: [{type: Ready, status: \"True\"}]";

fn cases() -> Vec<Case> {
    let web = |n: &str, a: &str| {
        pod(
            n,
            "shop",
            "app: web",
            &ip(a),
            "",
            "{name: http, containerPort: 8080}",
        )
    };
    vec![
        Case {
            name: "numeric targetPort, two ready pods",
            pods: vec![web("a", "10.88.1.1"), web("b", "10.88.1.2")],
            selector: "selector: {app: web}",
            ports: "{port: 80, targetPort: 9090}",
            cluster_ip: "10.96.0.1",
            port: 80,
            want: &[("10.88.1.1", 9090), ("10.88.1.2", 9090)],
        },
        Case {
            name: "targetPort defaults to port",
            pods: vec![web("a", "10.88.1.1")],
            selector: "selector: {app: web}",
            ports: "{port: 80}",
            cluster_ip: "10.96.0.1",
            port: 80,
            want: &[("10.88.1.1", 80)],
        },
        Case {
            name: "named targetPort resolved per pod",
            pods: vec![
                web("a", "10.88.1.1"),
                pod(
                    "b",
                    "shop",
                    "app: web",
                    &ip("10.88.1.2"),
                    "",
                    "{name: http, containerPort: 8081}",
                ),
            ],
            selector: "selector: {app: web}",
            ports: "{port: 80, targetPort: http}",
            cluster_ip: "10.96.0.1",
            port: 80,
            want: &[("10.88.1.1", 8080), ("10.88.1.2", 8081)],
        },
        Case {
            name: "pod without the named port is left out",
            pods: vec![
                web("a", "10.88.1.1"),
                pod(
                    "b",
                    "shop",
                    "app: web",
                    &ip("10.88.1.2"),
                    "",
                    "{name: grpc, containerPort: 9000}",
                ),
            ],
            selector: "selector: {app: web}",
            ports: "{port: 80, targetPort: http}",
            cluster_ip: "10.96.0.1",
            port: 80,
            want: &[("10.88.1.1", 8080)],
        },
        Case {
            name: "named port with another protocol does not match",
            pods: vec![pod(
                "a",
                "shop",
                "app: web",
                &ip("10.88.1.1"),
                "",
                "{name: dns, containerPort: 53, protocol: UDP}",
            )],
            selector: "selector: {app: web}",
            ports: "{port: 53, targetPort: dns}",
            cluster_ip: "10.96.0.1",
            port: 53,
            want: &[],
        },
        Case {
            name: "not-ready pods are left out, ready ones kept",
            pods: vec![
                pod("a", "shop", "app: web", &ip("10.88.1.1"), NOT_READY, ""),
                pod("b", "shop", "app: web", &ip("10.88.1.2"), READY, ""),
            ],
            selector: "selector: {app: web}",
            ports: "{port: 80}",
            cluster_ip: "10.96.0.1",
            port: 80,
            want: &[("10.88.1.2", 80)],
        },
        Case {
            name: "finished pods are left out",
            pods: vec![pod(
                "a",
                "shop",
                "app: web",
                &ip("10.88.1.1"),
                ", phase: Succeeded",
                "",
            )],
            selector: "selector: {app: web}",
            ports: "{port: 80}",
            cluster_ip: "10.96.0.1",
            port: 80,
            want: &[],
        },
        Case {
            name: "pods of other namespaces are left out",
            pods: vec![
                web("a", "10.88.1.1"),
                pod("b", "other", "app: web", &ip("10.88.1.2"), "", ""),
            ],
            selector: "selector: {app: web}",
            ports: "{port: 80}",
            cluster_ip: "10.96.0.1",
            port: 80,
            want: &[("10.88.1.1", 80)],
        },
        Case {
            name: "every selector label must match",
            pods: vec![
                pod(
                    "a",
                    "shop",
                    "app: web, version: v1",
                    &ip("10.88.1.1"),
                    "",
                    "",
                ),
                pod(
                    "b",
                    "shop",
                    "app: web, version: v2",
                    &ip("10.88.1.2"),
                    "",
                    "",
                ),
                pod("c", "shop", "version: v1", &ip("10.88.1.3"), "", ""),
            ],
            selector: "selector: {app: web, version: v1}",
            ports: "{port: 80}",
            cluster_ip: "10.96.0.1",
            port: 80,
            want: &[("10.88.1.1", 80)],
        },
        Case {
            name: "no selector: no endpoints",
            pods: vec![web("a", "10.88.1.1")],
            selector: "type: ClusterIP",
            ports: "{port: 80}",
            cluster_ip: "10.96.0.1",
            port: 80,
            want: &[],
        },
        Case {
            name: "empty selector: no endpoints",
            pods: vec![web("a", "10.88.1.1")],
            selector: "selector: {}",
            ports: "{port: 80}",
            cluster_ip: "10.96.0.1",
            port: 80,
            want: &[],
        },
        Case {
            name: "pod without IP is left out",
            pods: vec![
                web("a", "10.88.1.1"),
                pod("b", "shop", "app: web", "", "", ""),
            ],
            selector: "selector: {app: web}",
            ports: "{port: 80}",
            cluster_ip: "10.96.0.1",
            port: 80,
            want: &[("10.88.1.1", 80)],
        },
        Case {
            name: "IPv6 Service takes the pods' IPv6 address",
            pods: vec![pod(
                "a",
                "shop",
                "app: web",
                &format!("{}, {}", ip("10.88.1.1"), ip("fd00::1")),
                "",
                "",
            )],
            selector: "selector: {app: web}",
            ports: "{port: 80}",
            cluster_ip: "fd00:96::1",
            port: 80,
            want: &[("fd00::1", 80)],
        },
        Case {
            name: "second port of a multi-port Service",
            pods: vec![web("a", "10.88.1.1")],
            selector: "selector: {app: web}",
            ports: "{name: http, port: 80, targetPort: http}, {name: admin, port: 9901}",
            cluster_ip: "10.96.0.1",
            port: 9901,
            want: &[("10.88.1.1", 9901)],
        },
        Case {
            name: "unknown Service port: no endpoints",
            pods: vec![web("a", "10.88.1.1")],
            selector: "selector: {app: web}",
            ports: "{port: 80}",
            cluster_ip: "10.96.0.1",
            port: 81,
            want: &[],
        },
    ]
}

fn load(src: &str) -> Snapshot {
    match load_str("test.yaml", src) {
        Ok(s) => s,
        Err(e) => panic!("invalid test input:\n{e}\n---\n{src}"),
    }
}

#[test]
fn endpoint_table() {
    for c in cases() {
        let src = format!(
            "{NS}{}{}",
            c.pods.concat(),
            service(c.selector, c.ports, c.cluster_ip)
        );
        let snap = load(&src);
        let got: Vec<(IpAddr, u16)> = snap
            .endpoints(&ObjectKey::new("shop", "svc"), c.port)
            .iter()
            .map(|e| (e.ip, e.port))
            .collect();
        let want: Vec<(IpAddr, u16)> = c
            .want
            .iter()
            .map(|(ip, p)| (ip.parse().expect("test IP"), *p))
            .collect();
        assert_eq!(got, want, "case: {}", c.name);
    }
}

fn example() -> Snapshot {
    let src = include_str!("../../../examples/mesh.yaml");
    load(src)
}

#[test]
fn example_lookups() {
    let snap = example();
    let w = snap
        .workload_by_ip("10.88.1.10".parse().expect("ip"))
        .expect("frontend");
    assert_eq!(w.key.to_string(), "shop/frontend-7d9f-a");
    assert!(w.meshed);
    assert_eq!(w.service_account, "frontend");
    let reindex = snap
        .workload_by_ip("10.88.2.14".parse().expect("ip"))
        .expect("reindex");
    assert!(!reindex.meshed, "pod label opts out");
    let inv = snap
        .workload_by_ip("10.88.1.13".parse().expect("ip"))
        .expect("inventory");
    assert!(!inv.meshed, "legacy is not meshed");
    let pay = snap
        .workload_by_ip("10.88.2.12".parse().expect("ip"))
        .expect("payments");
    assert_eq!(pay.mtls, crate::state::MtlsMode::Strict);
    assert_eq!(snap.workloads_on_node("node-a").count(), 5);
    assert_eq!(snap.workloads_on_node("node-b").count(), 5);
    assert_eq!(snap.workloads_on_node("node-c").count(), 0);

    let addr: SocketAddr = "10.96.0.20:9080".parse().expect("addr");
    let (svc, port) = snap.service_by_addr(addr).expect("reviews");
    assert_eq!(svc.key.to_string(), "shop/reviews");
    assert!(port.is_http());
    assert_eq!(snap.endpoints(&svc.key, 9080).len(), 3);
    let routes = snap.routes_for(&svc.key);
    assert_eq!(routes.len(), 1);
    assert_eq!(
        routes[0].rules[1]
            .backends
            .iter()
            .map(|b| b.weight)
            .sum::<u32>(),
        100
    );
    // inventory-1 is not ready
    assert_eq!(
        snap.endpoints(&ObjectKey::new("legacy", "inventory"), 8000)
            .len(),
        1
    );
    let payments = ObjectKey::new("payments", "payments");
    assert!(snap.traffic_policy(&payments).is_some());
    assert_eq!(snap.policies_for(pay).count(), 2);
    assert_eq!(snap.policies_for(w).count(), 0);
    assert!(
        snap.service_by_addr("10.96.0.20:80".parse().expect("addr"))
            .is_none()
    );
}

#[test]
fn handle_publishes_generations() {
    let h = crate::state::StateHandle::new(example());
    let mut rx = h.subscribe();
    assert_eq!(h.current().generation, 1);
    assert_eq!(h.replace(Snapshot::default()), 2);
    assert!(rx.has_changed().unwrap_or(false));
    assert_eq!(*rx.borrow_and_update(), 2);
    assert_eq!(h.current().generation, 2);
    assert_eq!(h.current().workloads().count(), 0);
}
