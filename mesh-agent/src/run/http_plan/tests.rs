//! Plans for one request against snapshots built from YAML: the route's
//! answer, the endpoint chosen, how it is reached, and the labels.

use http::{HeaderMap, Method, StatusCode, Uri};

use super::*;
use crate::config::file::load_str;
use crate::routing::RoundRobin;
use crate::state::ObjectKey;

const CONFIG: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {weft.dev/mesh: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: legacy}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop, labels: {app: frontend}}
spec: {nodeName: n1, serviceAccountName: fe, containers: [{name: app}]}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web, v: "1"}}
spec: {nodeName: n1, serviceAccountName: web, containers: [{name: app, ports: [{containerPort: 8080}]}]}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: web-2, namespace: shop, labels: {app: web, v: "2"}}
spec: {nodeName: n1, serviceAccountName: web, containers: [{name: app, ports: [{containerPort: 8080}]}]}
status: {podIP: 10.0.0.3}
---
apiVersion: v1
kind: Pod
metadata: {name: old, namespace: legacy, labels: {app: old}}
spec: {nodeName: n1, containers: [{name: app, ports: [{containerPort: 8080}]}]}
status: {podIP: 10.0.0.4}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 10.96.0.1, selector: {app: web}, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: v2, namespace: shop}
spec: {clusterIP: 10.96.0.2, selector: {app: web, v: "2"}, ports: [{name: tcp-raw, port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: nobody, namespace: shop}
spec: {clusterIP: 10.96.0.3, selector: {app: nobody}, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: old, namespace: legacy}
spec: {clusterIP: 10.96.0.4, selector: {app: old}, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /v2}}]
      filters:
        - type: RequestMirror
          requestMirror: {backendRef: {name: nobody, port: 80}}
        - type: RequestMirror
          requestMirror: {backendRef: {name: web, port: 80}, percent: 50}
      backendRefs: [{name: v2, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /none}}]
      backendRefs: [{name: nobody, port: 80}]
    - matches: [{path: {type: Exact, value: /}}]
      backendRefs: [{name: web, port: 80}]
"#;

fn snapshot() -> Snapshot {
    load_str("plan.yaml", CONFIG).unwrap_or_else(|e| panic!("test config invalid: {e}"))
}

fn plan(snapshot: &Snapshot, service: &str, path: &str, roll: u32) -> Plan<PoolKey> {
    let source = snapshot
        .workload_by_ip("10.0.0.1".parse().unwrap())
        .expect("the client pod");
    let client = Client {
        workload: source,
        trust_domain: "cluster.local",
        security: SecurityPolicy::MutualTls,
    };
    let service = http_service(snapshot, source, service.parse().unwrap()).expect("an HTTP port");
    let (method, uri, headers) = (Method::GET, path.parse::<Uri>().unwrap(), HeaderMap::new());
    let head = RequestHead::new(&method, &uri, &headers);
    plan_request(
        snapshot,
        &client,
        &service,
        &head,
        roll,
        &RoundRobin::default(),
    )
}

fn forward(plan: Plan<PoolKey>) -> Forward<PoolKey> {
    match plan {
        Plan::Forward(f) => f,
        Plan::Respond { status, .. } => panic!("answered {status}, not forwarded"),
    }
}

#[test]
fn a_request_goes_through_the_tunnel_to_an_endpoint_of_the_chosen_backend() {
    let s = snapshot();
    let f = forward(plan(&s, "10.96.0.1:80", "/v2/x", 0));
    let OutboundTarget::Tunnel {
        target, pool_key, ..
    } = f.target
    else {
        panic!("not tunnelled: {:?}", f.target);
    };
    assert_eq!(
        target,
        "10.0.0.3:8080".parse().unwrap(),
        "v2's only endpoint"
    );
    assert_eq!(
        pool_key.1.to_string(),
        "spiffe://cluster.local/ns/shop/sa/web"
    );
    assert_eq!(f.labels.destination_service, "v2.shop.svc.cluster.local");
    assert_eq!(f.labels.source_workload, "frontend");
    assert_eq!(
        f.labels.destination_principal,
        "spiffe://cluster.local/ns/shop/sa/web"
    );
}

#[test]
fn mirrors_are_sampled_and_need_endpoints() {
    let s = snapshot();
    // roll 0: inside the 50 % share; `nobody` has no endpoints, so one mirror.
    let f = forward(plan(&s, "10.96.0.1:80", "/v2/x", 0));
    assert_eq!(f.mirrors.len(), 1, "{:?}", f.mirrors);
    // A roll whose mirror slice is at the top: outside the 50 % share.
    let f = forward(plan(&s, "10.96.0.1:80", "/v2/x", u32::MAX.rotate_right(16)));
    assert!(f.mirrors.is_empty(), "{:?}", f.mirrors);
}

#[test]
fn the_agent_answers_when_no_rule_or_no_endpoint_can_serve() {
    let s = snapshot();
    let answered = |path: &str| match plan(&s, "10.96.0.1:80", path, 0) {
        Plan::Respond {
            status,
            flag,
            labels,
            ..
        } => (status, flag, labels.destination_service),
        Plan::Forward(f) => panic!("forwarded to {:?}", f.target),
    };
    assert_eq!(
        answered("/elsewhere"),
        (
            StatusCode::NOT_FOUND,
            ResponseFlag::NoRouteFound,
            "web.shop.svc.cluster.local".into()
        )
    );
    assert_eq!(
        answered("/none"),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            ResponseFlag::NoHealthyUpstream,
            "nobody.shop.svc.cluster.local".into()
        )
    );
}

#[test]
fn an_unmeshed_endpoint_is_reached_directly_and_a_service_without_routes_forwards_to_itself() {
    let s = snapshot();
    let f = forward(plan(&s, "10.96.0.4:80", "/any", 0));
    assert_eq!(
        f.target,
        OutboundTarget::Direct("10.0.0.4:8080".parse().unwrap())
    );
    assert_eq!(f.labels.destination_service, "old.legacy.svc.cluster.local");
}

#[test]
fn only_service_ports_not_declared_opaque_are_http() {
    let s = snapshot();
    let source = s.workload_by_ip("10.0.0.1".parse().unwrap()).unwrap();
    assert!(
        http_service(&s, source, "10.96.0.2:80".parse().unwrap()).is_none(),
        "tcp-raw"
    );
    assert!(
        http_service(&s, source, "10.0.0.2:8080".parse().unwrap()).is_none(),
        "a pod"
    );
    let web = http_service(&s, source, "10.96.0.1:80".parse().unwrap()).unwrap();
    assert_eq!(web.service, ObjectKey::new("shop", "web"));
    assert_eq!(web.declared, Declared::Http);
}
