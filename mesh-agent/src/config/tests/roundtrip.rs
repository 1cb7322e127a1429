//! Property: any valid snapshot survives `/config_dump` (JSON) and back unchanged.

use std::fmt::Write;

use proptest::prelude::*;

use crate::{config::file::load_str, state::Snapshot};

const APPS: &[&str] = &["web", "api", "db"];

#[derive(Debug, Clone)]
struct Pod {
    ns: usize,
    app: usize,
    v2: bool,
    opt_out: bool,
    node_b: bool,
    ready: bool,
    port: u16,
    sa: usize,
}

#[derive(Debug, Clone)]
struct Svc {
    ns: usize,
    app: usize,
    ports: Vec<(u16, bool)>,
    http: bool,
}

#[derive(Debug, Clone)]
struct Route {
    svc: usize,
    weights: Vec<u32>,
    header: Option<String>,
    timeout_s: Option<u32>,
    grpc: bool,
}

#[derive(Debug, Clone)]
struct Policy {
    ns: usize,
    action: usize,
    prefix: u8,
    port: u16,
    selector: Option<usize>,
}

fn pod() -> impl Strategy<Value = Pod> {
    (
        0..3usize,
        0..3usize,
        any::<bool>(),
        prop::bool::weighted(0.1),
        any::<bool>(),
        prop::bool::weighted(0.8),
        1..=65535u16,
        0..2usize,
    )
        .prop_map(|(ns, app, v2, opt_out, node_b, ready, port, sa)| Pod {
            ns,
            app,
            v2,
            opt_out,
            node_b,
            ready,
            port,
            sa,
        })
}

fn svc() -> impl Strategy<Value = Svc> {
    (
        0..3usize,
        0..3usize,
        prop::collection::btree_map(1..=65535u16, any::<bool>(), 1..3),
        any::<bool>(),
    )
        .prop_map(|(ns, app, ports, http)| Svc {
            ns,
            app,
            ports: ports.into_iter().collect(),
            http,
        })
}

fn route() -> impl Strategy<Value = Route> {
    (
        0..8usize,
        prop::collection::vec(0..1000u32, 1..4),
        prop::option::of("[a-z]{1,8}"),
        prop::option::of(1..600u32),
        any::<bool>(),
    )
        .prop_map(|(svc, weights, header, timeout_s, grpc)| Route {
            svc,
            weights,
            header,
            timeout_s,
            grpc,
        })
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        0..3usize,
        0..3usize,
        0..=32u8,
        1..=65535u16,
        prop::option::of(0..3usize),
    )
        .prop_map(|(ns, action, prefix, port, selector)| Policy {
            ns,
            action,
            prefix,
            port,
            selector,
        })
}

fn render(
    nss: &[(bool, bool)],
    pods: &[Pod],
    svcs: &[Svc],
    routes: &[Route],
    policies: &[Policy],
) -> String {
    let mut y = String::new();
    for (i, (meshed, strict)) in nss.iter().enumerate() {
        let _ = write!(
            y,
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns{i}\n  labels: {{weft.dev/mesh: {}, weft.dev/mtls: {}}}\n",
            if *meshed { "enabled" } else { "disabled" },
            if *strict { "strict" } else { "permissive" }
        );
    }
    for (i, p) in pods.iter().enumerate() {
        let node = if p.node_b { 2 } else { 1 };
        let _ = write!(
            y,
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: pod-{i}\n  namespace: ns{}\n  uid: uid-{i}\n  labels: {{app: {}, version: {}{}}}\nspec:\n  nodeName: node-{}\n  serviceAccountName: sa{}\n  containers: [{{name: app, ports: [{{name: http, containerPort: {}}}]}}]\nstatus:\n  podIPs: [{{ip: 10.88.{node}.{}}}, {{ip: \"fd00::{:x}\"}}]\n  conditions: [{{type: Ready, status: \"{}\"}}]\n",
            p.ns,
            APPS[p.app],
            if p.v2 { "v2" } else { "v1" },
            if p.opt_out {
                ", weft.dev/mesh: disabled"
            } else {
                ""
            },
            if p.node_b { "b" } else { "a" },
            p.sa,
            p.port,
            i + 1,
            i + 1,
            if p.ready { "True" } else { "False" },
        );
    }
    for (i, s) in svcs.iter().enumerate() {
        let _ = write!(
            y,
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: ns{}}}\nspec:\n  clusterIP: 10.96.0.{}\n  selector: {{app: {}}}\n  ports:\n",
            s.ns,
            i + 1,
            APPS[s.app]
        );
        for (j, (port, named)) in s.ports.iter().enumerate() {
            let target = if *named {
                "http".to_owned()
            } else {
                port.to_string()
            };
            let proto = if s.http {
                "\n      appProtocol: http"
            } else {
                ""
            };
            let _ = write!(
                y,
                "    - name: p{j}\n      port: {port}\n      targetPort: {target}{proto}\n"
            );
        }
    }
    let mut targeted = std::collections::HashSet::new();
    for (i, r) in routes.iter().enumerate() {
        if svcs.is_empty() {
            break;
        }
        let si = r.svc % svcs.len();
        let s = &svcs[si];
        let same_ns: Vec<usize> = (0..svcs.len()).filter(|&j| svcs[j].ns == s.ns).collect();
        let kind = if r.grpc { "GRPCRoute" } else { "HTTPRoute" };
        let _ = write!(
            y,
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: {kind}\nmetadata: {{name: route-{i}, namespace: ns{}}}\nspec:\n  parentRefs: [{{group: \"\", kind: Service, name: svc-{si}}}]\n  rules:\n    - backendRefs:\n",
            s.ns
        );
        let mut weights = r.weights.clone();
        if weights.iter().all(|w| *w == 0) {
            weights[0] = 1;
        }
        for (k, w) in weights.iter().enumerate() {
            let b = same_ns[k % same_ns.len()];
            let _ = writeln!(
                y,
                "        - {{name: svc-{b}, port: {}, weight: {w}}}",
                svcs[b].ports[0].0
            );
        }
        if let Some(h) = &r.header {
            if r.grpc {
                let _ = writeln!(
                    y,
                    "      matches: [{{method: {{service: pkg.{h}}}, headers: [{{name: x-{h}, value: \"1\"}}]}}]"
                );
            } else {
                let _ = writeln!(
                    y,
                    "      matches: [{{path: {{type: Exact, value: /{h}}}, headers: [{{name: x-{h}, value: \"1\"}}]}}]"
                );
            }
        }
        if let (Some(t), false) = (r.timeout_s, r.grpc) {
            let _ = writeln!(y, "      timeouts: {{request: {t}s}}");
        }
        if targeted.insert(si) {
            let _ = write!(
                y,
                "---\napiVersion: weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: tp-{i}, namespace: ns{}}}\nspec:\n  targetRef: {{kind: Service, name: svc-{si}}}\n  retryBudget: {{percent: {}}}\n  fault: {{abort: {{httpStatus: 503, percentage: {}}}}}\n",
                s.ns,
                i % 100,
                i % 100
            );
        }
    }
    for (i, p) in policies.iter().enumerate() {
        let action = ["ALLOW", "DENY", "AUDIT"][p.action];
        let sel = p
            .selector
            .map(|a| format!("  selector: {{matchLabels: {{app: {}}}}}\n", APPS[a]))
            .unwrap_or_default();
        let _ = write!(
            y,
            "---\napiVersion: weft.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{name: pol-{i}, namespace: ns{}}}\nspec:\n{sel}  action: {action}\n  rules:\n    - from: [{{source: {{ipBlocks: [10.0.0.0/{}], principals: [\"cluster.local/ns/ns0/sa/sa0\"]}}}}]\n      to: [{{operation: {{ports: [{}], methods: [GET], paths: [\"/api/*\"]}}}}]\n",
            p.ns,
            p.prefix.min(8),
            p.port
        );
    }
    y
}

fn roundtrip(snap: &Snapshot) -> Snapshot {
    let json = match serde_json::to_string(snap) {
        Ok(j) => j,
        Err(e) => panic!("serialize: {e}"),
    };
    match serde_json::from_str(&json) {
        Ok(s) => s,
        Err(e) => panic!("deserialize: {e}\n{json}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn snapshot_survives_config_dump(
        nss in prop::collection::vec((any::<bool>(), any::<bool>()), 3),
        pods in prop::collection::vec(pod(), 0..20),
        svcs in prop::collection::vec(svc(), 0..8),
        routes in prop::collection::vec(route(), 0..5),
        policies in prop::collection::vec(policy(), 0..4),
        generation in 1..1000u64,
    ) {
        let src = render(&nss, &pods, &svcs, &routes, &policies);
        let mut snap = match load_str("gen.yaml", &src) {
            Ok(s) => s,
            Err(e) => panic!("generator produced invalid input:\n{e}\n{src}"),
        };
        snap.generation = generation;
        let back = roundtrip(&snap);
        prop_assert_eq!(&back, &snap);
        // The rebuilt indexes answer as the original ones.
        for w in snap.workloads() {
            for ip in &w.ips {
                prop_assert_eq!(back.workload_by_ip(*ip), snap.workload_by_ip(*ip));
            }
        }
        for s in snap.services() {
            for p in &s.ports {
                prop_assert_eq!(back.endpoints(&s.key, p.port), snap.endpoints(&s.key, p.port));
                for ip in &s.cluster_ips {
                    let addr = std::net::SocketAddr::new(*ip, p.port);
                    prop_assert_eq!(back.service_by_addr(addr), snap.service_by_addr(addr));
                }
            }
            prop_assert_eq!(back.routes_for(&s.key), snap.routes_for(&s.key));
            prop_assert_eq!(back.traffic_policy(&s.key), snap.traffic_policy(&s.key));
        }
    }
}

#[test]
fn example_survives_config_dump() {
    let snap = load_str("mesh.yaml", include_str!("../../../../examples/mesh.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(roundtrip(&snap), snap);
}
