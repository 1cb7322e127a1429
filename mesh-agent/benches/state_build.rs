//! Builds a snapshot from 10,000 Services, 100,000 Pods and 10,000 HTTPRoutes
//! (typed resources in memory), then times lookups. Budget: build < 2 s and the
//! memory the build takes < 500 MB; exits non-zero on FAIL. Also times loading
//! (YAML parse + validate + build) a document set a tenth of that size.
//!
//! Memory is counted two ways: heap bytes through a counting allocator (the
//! state's own peak and what the snapshot keeps), and the process's peak RSS
//! (VmHWM), which also holds the fixture: k8s-openapi Pods are ~5 KB each, so
//! 100,000 of them alone take ~550 MB before the state is built. The budget is
//! checked against the state's share: the fixture stands for the source's input,
//! which the file source drops after building.
//!
//! Run: `cargo bench -p mesh-agent --bench state_build`.

use std::{
    collections::BTreeMap,
    hint::black_box,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    process::ExitCode,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::core::v1::{
        Container, ContainerPort, Namespace, NamespaceSpec, Pod, PodIP, PodSpec, PodStatus,
        Service, ServicePort, ServiceSpec,
    },
    apimachinery::pkg::{apis::meta::v1::ObjectMeta, util::intstr::IntOrString},
};
use mesh_agent::{
    config::resources::{
        ResourceSet,
        gateway::{
            HTTPBackendRef, HTTPHeaderMatch, HTTPRoute, HTTPRouteMatch, HTTPRouteRule,
            HTTPRouteSpec, ParentReference,
        },
    },
    state::{ObjectKey, build},
};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

#[global_allocator]
static ALLOC: counting_alloc::Counting = counting_alloc::Counting;

fn mb(bytes: usize) -> usize {
    bytes >> 20
}

const SERVICES: usize = 10_000;
const PODS: usize = 100_000;
const ROUTES: usize = 10_000;
const NAMESPACES: usize = 100;
const NODES: usize = 100;
const BUILD_BUDGET: Duration = Duration::from_secs(2);
const RSS_BUDGET_MB: u64 = 500;

fn meta(name: String, ns: &str, labels: Option<BTreeMap<String, String>>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(ns.to_owned()),
        labels,
        ..Default::default()
    }
}

fn pod_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 64, 0, 0)) + i as u32)
}

fn service_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + i as u32 + 1)
}

fn ns_name(i: usize) -> String {
    format!("ns-{}", i % NAMESPACES)
}

/// Service `i` lives in namespace `i % NAMESPACES` and selects the ten pods `p`
/// with `p % SERVICES == i`.
fn generate(services: usize, pods: usize, routes: usize) -> ResourceSet {
    let namespaces = (0..NAMESPACES.min(services))
        .map(|i| {
            let labels = BTreeMap::from([("weft.dev/mesh".to_owned(), "enabled".to_owned())]);
            Namespace {
                metadata: ObjectMeta {
                    name: Some(ns_name(i)),
                    labels: Some(labels),
                    ..Default::default()
                },
                spec: Some(NamespaceSpec::default()),
                status: None,
            }
        })
        .collect();
    let pods_list = (0..pods)
        .map(|i| {
            let svc = i % services;
            let labels = BTreeMap::from([
                ("app".to_owned(), format!("svc-{svc}")),
                (
                    "version".to_owned(),
                    if i % 2 == 0 { "v1" } else { "v2" }.to_owned(),
                ),
            ]);
            let ip = pod_ip(i).to_string();
            Pod {
                metadata: meta(format!("pod-{i}"), &ns_name(svc), Some(labels)),
                spec: Some(PodSpec {
                    node_name: Some(format!("node-{}", i % NODES)),
                    service_account_name: Some(format!("sa-{svc}")),
                    containers: vec![Container {
                        name: "app".into(),
                        ports: Some(vec![ContainerPort {
                            name: Some("http".into()),
                            container_port: 8080,
                            ..Default::default()
                        }]),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                status: Some(PodStatus {
                    pod_ip: Some(ip.clone()),
                    pod_ips: Some(vec![PodIP { ip }]),
                    ..Default::default()
                }),
            }
        })
        .collect();
    let services_list = (0..services)
        .map(|i| Service {
            metadata: meta(format!("svc-{i}"), &ns_name(i), None),
            spec: Some(ServiceSpec {
                cluster_ip: Some(service_ip(i).to_string()),
                selector: Some(BTreeMap::from([("app".to_owned(), format!("svc-{i}"))])),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    target_port: Some(IntOrString::String("http".into())),
                    app_protocol: Some("http".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        })
        .collect();
    let http_routes = (0..routes)
        .map(|i| {
            let svc = i % services;
            let other = (svc + NAMESPACES) % services; // same namespace
            let backend = |n: usize, w: i32| HTTPBackendRef {
                name: format!("svc-{n}"),
                port: Some(80),
                weight: Some(w),
                ..Default::default()
            };
            HTTPRoute {
                metadata: meta(format!("route-{i}"), &ns_name(svc), None),
                status: None,
                spec: HTTPRouteSpec {
                    parent_refs: vec![ParentReference {
                        group: Some(String::new()),
                        kind: Some("Service".into()),
                        name: format!("svc-{svc}"),
                        ..Default::default()
                    }],
                    hostnames: Vec::new(),
                    rules: vec![
                        HTTPRouteRule {
                            matches: vec![HTTPRouteMatch {
                                headers: vec![HTTPHeaderMatch {
                                    type_: None,
                                    name: "x-canary".into(),
                                    value: "true".into(),
                                }],
                                ..Default::default()
                            }],
                            backend_refs: vec![backend(other, 1)],
                            ..Default::default()
                        },
                        HTTPRouteRule {
                            backend_refs: vec![backend(svc, 90), backend(other, 10)],
                            ..Default::default()
                        },
                    ],
                },
            }
        })
        .collect();
    ResourceSet {
        namespaces,
        pods: pods_list,
        services: services_list,
        http_routes,
        ..Default::default()
    }
}

/// Peak resident set size of this process, in MB.
fn peak_rss_mb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

fn to_yaml(set: &ResourceSet) -> String {
    let mut out = String::new();
    let docs = set
        .namespaces
        .iter()
        .map(serde_json::to_string)
        .chain(set.services.iter().map(serde_json::to_string))
        .chain(set.pods.iter().map(serde_json::to_string))
        .chain(set.http_routes.iter().map(serde_json::to_string));
    for d in docs.flatten() {
        out.push_str("---\n");
        out.push_str(&d); // JSON is YAML (flow style)
        out.push('\n');
    }
    out
}

fn main() -> ExitCode {
    let t = Instant::now();
    let set = generate(SERVICES, PODS, ROUTES);
    println!(
        "generated {} services, {} pods, {} routes in {:.2?} (rss {} MB)",
        set.services.len(),
        set.pods.len(),
        set.http_routes.len(),
        t.elapsed(),
        peak_rss_mb()
    );

    let fixture = counting_alloc::live();
    counting_alloc::reset_peak();
    let t = Instant::now();
    let snap = build(&set);
    let build_time = t.elapsed();
    let peak = peak_rss_mb();
    let state_peak = counting_alloc::peak() - fixture;
    let state_kept = counting_alloc::live() - fixture;
    let endpoints: usize = snap
        .data()
        .endpoints
        .iter()
        .map(|e| e.endpoints.len())
        .sum();
    println!(
        "build: {build_time:.2?}; heap: fixture {} MB, build peak +{} MB, snapshot keeps {} MB; process peak RSS {peak} MB ({} workloads, {endpoints} endpoints)",
        mb(fixture),
        mb(state_peak),
        mb(state_kept),
        snap.workloads().count()
    );
    assert_eq!(endpoints, PODS, "every pod is an endpoint of one service");

    const LOOKUPS: usize = 1_000_000;
    let t = Instant::now();
    let mut found = 0usize;
    for i in 0..LOOKUPS {
        let ip = IpAddr::V4(pod_ip((i * 7919) % PODS));
        found += usize::from(black_box(snap.workload_by_ip(ip)).is_some());
    }
    let by_ip = t.elapsed();
    let t = Instant::now();
    let mut hits = Vec::with_capacity(LOOKUPS);
    for i in 0..LOOKUPS {
        let addr = SocketAddr::new(IpAddr::V4(service_ip((i * 7919) % SERVICES)), 80);
        if let Some((svc, port)) = black_box(snap.service_by_addr(addr)) {
            hits.push((svc, port.port));
        }
    }
    let by_addr = t.elapsed();
    let t = Instant::now();
    for (svc, port) in &hits {
        found += usize::from(!black_box(snap.endpoints(&svc.key, *port)).is_empty());
    }
    let eps = t.elapsed();
    let key = ObjectKey::new("ns-7", "svc-7");
    let per = |d: Duration| d.as_nanos() as f64 / LOOKUPS as f64;
    println!(
        "lookups: workload by IP {:.0} ns, service by address {:.0} ns, endpoints of a service port {:.0} ns ({found} hits, {} routes on {key})",
        per(by_ip),
        per(by_addr),
        per(eps),
        snap.routes_for(&key).len()
    );
    drop(hits);
    drop(snap);
    drop(set);

    // A tenth of the set as one YAML document set: parse + validate + build.
    let small = generate(SERVICES / 10, PODS / 10, ROUTES / 10);
    let yaml = to_yaml(&small);
    drop(small);
    let t = Instant::now();
    let loaded = mesh_agent::config::file::load_str("bench.yaml", &yaml);
    let load_time = t.elapsed();
    match loaded {
        Ok(s) => println!(
            "load YAML ({} MB, {} workloads): {load_time:.2?}",
            yaml.len() >> 20,
            s.workloads().count()
        ),
        Err(e) => {
            eprintln!(
                "generated YAML is invalid:\n{}",
                e.0.iter()
                    .take(5)
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            return ExitCode::FAILURE;
        }
    }

    let ok = build_time < BUILD_BUDGET && (mb(state_peak) as u64) < RSS_BUDGET_MB;
    println!(
        "{}: build {build_time:.2?} (budget {BUILD_BUDGET:?}), state memory peak {} MB (budget {RSS_BUDGET_MB} MB); process peak RSS incl. the k8s-openapi fixture {peak} MB",
        if ok { "PASS" } else { "FAIL" },
        mb(state_peak)
    );
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
