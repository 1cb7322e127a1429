//! Verdicts over snapshots built as the cluster source builds them: typed and
//! checked one by one, without the file's cross-resource checks, so that a
//! route may name a parent port or backend that does not exist.

use std::path::Path;

use super::*;
use crate::config::file::parse_source;
use crate::config::resources::ResourceSet;

const BASE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec: {clusterIP: 10.96.0.1, ports: [{port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: v1, namespace: shop}
spec: {clusterIP: 10.96.0.2, ports: [{port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: other}
spec: {clusterIP: 10.96.0.3, ports: [{port: 9080}]}
"#;

fn route(name: &str, parent_port: u16, backend: &str) -> String {
    let (ns, svc) = backend.split_once('/').unwrap_or(("shop", backend));
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  parentRefs: [{{group: \"\", kind: Service, name: reviews, port: {parent_port}}}]\n  rules:\n    - matches: [{{path: {{value: /a}}}}]\n      backendRefs: [{{name: {svc}, namespace: {ns}, port: 9080}}]\n    - backendRefs: [{{name: v1, port: 9080}}]\n"
    )
}

const GRANT: &str = "---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: from-shop, namespace: other}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: shop}]\n  to: [{group: \"\", kind: Service, name: ratings}]\n";

fn snapshot(extra: &str) -> Snapshot {
    let (mut items, mut errors) = (Vec::new(), Vec::new());
    parse_source(
        Path::new("t.yaml"),
        &format!("{BASE}{extra}"),
        &mut items,
        &mut errors,
    );
    assert!(errors.is_empty(), "{errors:?}");
    let mut set = ResourceSet::default();
    for (r, _) in items {
        set.push(r);
    }
    crate::state::build(&set)
}

/// `(name, accepted reason, resolvedRefs reason)` per route and parent.
fn reasons(reports: &[RouteReport]) -> Vec<(String, String, String)> {
    reports
        .iter()
        .flat_map(|r| {
            r.parents.iter().map(|p| {
                (
                    r.name.clone(),
                    p.accepted.reason.clone(),
                    p.resolved_refs.reason.clone(),
                )
            })
        })
        .collect()
}

fn t(name: &str, accepted: &str, resolved: &str) -> (String, String, String) {
    (name.into(), accepted.into(), resolved.into())
}

#[test]
fn the_snapshot_s_routes_get_the_status_writer_s_verdicts() {
    let routes = [
        route("good", 9080, "v1"),
        route("wrong-port", 80, "v1"),
        route("missing", 9080, "v9"),
        route("remote", 9080, "other/ratings"),
    ]
    .concat();
    let reports = super::routes(&snapshot(&routes));
    assert_eq!(
        reasons(&reports),
        [
            t("good", "Accepted", "ResolvedRefs"),
            t("missing", "Accepted", "BackendNotFound"),
            t("remote", "Accepted", "RefNotPermitted"),
            t("wrong-port", "NoMatchingParent", "ResolvedRefs"),
        ]
    );
    let good = &reports[0];
    assert_eq!((good.kind.as_str(), good.rules), ("HTTPRoute", Some(2)));
    assert_eq!(good.parents[0].parent_ref.port, Some(9080));
    assert!(good.parents[0].accepted.is_true());
    let remote = &reports[2].parents[0].resolved_refs;
    assert_eq!(remote.status, "False");
    assert!(
        remote.message.starts_with(
            "spec.rules[0].backendRefs[0]: Service other/ratings is in another namespace"
        ),
        "{}",
        remote.message
    );
    assert_eq!(
        reports[3].parents[0].accepted.message,
        "parent Service shop/reviews has no port 80"
    );
}

#[test]
fn a_grant_in_the_backend_s_namespace_resolves_the_reference() {
    let s = snapshot(&format!(
        "{}{GRANT}",
        route("remote", 9080, "other/ratings")
    ));
    assert_eq!(
        reasons(&super::routes(&s)),
        [t("remote", "Accepted", "ResolvedRefs")]
    );
}

#[test]
fn a_mirror_across_namespaces_needs_a_grant_too() {
    let mirror = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: m, namespace: shop}\nspec:\n  parentRefs: [{group: \"\", kind: Service, name: reviews}]\n  rules:\n    - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: ratings, namespace: other, port: 9080}}}]\n      backendRefs: [{name: v1, port: 9080}]\n";
    let reports = super::routes(&snapshot(mirror));
    let refs = &reports[0].parents[0].resolved_refs;
    assert_eq!(refs.reason, "RefNotPermitted");
    assert!(
        refs.message
            .starts_with("spec.rules[0].filters[0].requestMirror.backendRef"),
        "{}",
        refs.message
    );
    let granted = super::routes(&snapshot(&format!("{mirror}{GRANT}")));
    assert_eq!(granted[0].parents[0].resolved_refs.reason, "ResolvedRefs");
}

#[test]
fn a_refused_route_is_unsupported_value_with_its_errors() {
    let refusal = Refusal {
        kind: "HTTPRoute".into(),
        namespace: Some("shop".into()),
        name: "bad".into(),
        errors: vec!["spec.rules[0].backendRefs[0].port: required".into()],
        previous_in_force: true,
    };
    let r = refused_route(&refusal).expect("a route");
    let c = r.refused.expect("refused");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "UnsupportedValue")
    );
    assert_eq!(
        c.message,
        "spec.rules[0].backendRefs[0].port: required (its last valid version stays in force)"
    );
    let policy = Refusal {
        kind: "AuthorizationPolicy".into(),
        ..refusal
    };
    assert_eq!(refused_route(&policy), None);
}
