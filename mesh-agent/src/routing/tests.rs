//! Routing decisions against snapshots built from YAML, as a user writes it.

use http::{HeaderMap, Method, Uri};

use super::*;
use crate::config::file::load_str;
use crate::state::{ObjectKey, Snapshot};

const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {weft.dev/mesh: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: client, labels: {weft.dev/mesh: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: third, labels: {weft.dev/mesh: enabled}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 10.96.0.1, selector: {app: web}, ports: [{name: http, port: 80, targetPort: 8080}, {name: admin, port: 81, targetPort: 8081}]}
---
apiVersion: v1
kind: Service
metadata: {name: v1, namespace: shop}
spec: {clusterIP: 10.96.0.2, selector: {app: web, v: "1"}, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: v2, namespace: shop}
spec: {clusterIP: 10.96.0.3, selector: {app: web, v: "2"}, ports: [{port: 80, targetPort: 8080}]}
"#;

fn snapshot(routes: &str) -> Snapshot {
    let src = format!("{BASE}{routes}");
    match load_str("routes.yaml", &src) {
        Ok(s) => s,
        Err(e) => panic!("test config invalid: {e}"),
    }
}

fn route_yaml(name: &str, ns: &str, created: &str, rules: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {ns}, creationTimestamp: \"{created}\"}}\nspec:\n  parentRefs: [{{group: \"\", kind: Service, name: web, namespace: shop, port: 80}}]\n  rules:\n{rules}"
    )
}

struct Req {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

fn req(method: &str, uri: &str, headers: &[(&str, &str)]) -> Req {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    Req {
        method: method.parse().unwrap(),
        uri: uri.parse().unwrap(),
        headers: map,
    }
}

fn web() -> ObjectKey {
    ObjectKey::new("shop", "web")
}

/// Where the request goes: `backend-service-name` or the status answered.
fn outcome(s: &Snapshot, client_ns: &str, r: &Req) -> String {
    let svc = web();
    let head = RequestHead::new(&r.method, &r.uri, &r.headers);
    match route(s, client_ns, &svc, 80, &head, 0) {
        Decision::Forward(f) => f.service.name.clone(),
        Decision::Respond(r) => r.status.as_u16().to_string(),
    }
}

#[test]
fn no_route_sends_everything_to_the_service_itself() {
    let s = snapshot("");
    assert_eq!(outcome(&s, "client", &req("GET", "/any", &[])), "web");
}

#[test]
fn match_types_and_precedence_within_a_route() {
    let rules = r#"
    - matches: [{path: {type: PathPrefix, value: /}}]
      backendRefs: [{name: v1, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /api}}]
      backendRefs: [{name: v2, port: 80}]
    - matches: [{path: {type: Exact, value: /api/exact}}]
      backendRefs: [{name: web, port: 80}]
    - matches: [{path: {type: RegularExpression, value: "/re/[0-9]+"}}]
      backendRefs: [{name: v2, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /m}, method: POST}]
      backendRefs: [{name: v2, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /h}, headers: [{name: x-v, value: "2"}]}]
      backendRefs: [{name: v2, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /q}, queryParams: [{name: v, value: "2"}]}]
      backendRefs: [{name: v2, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /hr}, headers: [{type: RegularExpression, name: x-r, value: "a.c"}]}]
      backendRefs: [{name: web, port: 80}]
"#;
    let s = snapshot(&route_yaml("r", "shop", "2026-01-01T00:00:00Z", rules));
    let cases = [
        (req("GET", "/", &[]), "v1"),
        (req("GET", "/api", &[]), "v2"),
        (req("GET", "/api/", &[]), "v2"),
        (req("GET", "/api/x", &[]), "v2"),
        (req("GET", "/apix", &[]), "v1"), // segment semantics
        (req("GET", "/api/exact", &[]), "web"),
        (req("GET", "/api/exact/", &[]), "v2"), // Exact is exact
        (req("GET", "/re/42", &[]), "v2"),
        (req("GET", "/re/4x", &[]), "v1"), // regex is anchored
        (req("POST", "/m", &[]), "v2"),
        (req("GET", "/m", &[]), "v1"),
        (req("GET", "/h", &[("x-v", "2")]), "v2"),
        (req("GET", "/h", &[("X-V", "2")]), "v2"), // header names ignore case
        (req("GET", "/h", &[("x-v", "3")]), "v1"),
        (req("GET", "/q?a=1&v=2", &[]), "v2"),
        (req("GET", "/q?v=3", &[]), "v1"),
        (req("GET", "/hr", &[("x-r", "abc")]), "web"),
        (req("GET", "/hr", &[("x-r", "abcd")]), "v1"),
    ];
    for (r, want) in cases {
        assert_eq!(outcome(&s, "shop", &r), want, "{} {}", r.method, r.uri);
    }
}

#[test]
fn precedence_across_routes_and_ties() {
    // Same match in both: the older route wins; then the name decides.
    let older = route_yaml(
        "b-older",
        "shop",
        "2026-01-01T00:00:00Z",
        "    - matches: [{path: {type: PathPrefix, value: /x}}]\n      backendRefs: [{name: v1, port: 80}]\n",
    );
    let newer = route_yaml(
        "a-newer",
        "shop",
        "2026-02-01T00:00:00Z",
        "    - matches: [{path: {type: PathPrefix, value: /x}}]\n      backendRefs: [{name: v2, port: 80}]\n    - matches: [{path: {type: PathPrefix, value: /x/longer}}]\n      backendRefs: [{name: web, port: 80}]\n",
    );
    let s = snapshot(&format!("{older}{newer}"));
    assert_eq!(outcome(&s, "shop", &req("GET", "/x", &[])), "v1");
    // A more specific match wins whatever the route's age.
    assert_eq!(outcome(&s, "shop", &req("GET", "/x/longer", &[])), "web");

    let same_age = |name: &str, backend: &str| {
        route_yaml(
            name,
            "shop",
            "2026-01-01T00:00:00Z",
            &format!(
                "    - matches: [{{path: {{type: PathPrefix, value: /y}}}}]\n      backendRefs: [{{name: {backend}, port: 80}}]\n"
            ),
        )
    };
    let s = snapshot(&format!(
        "{}{}",
        same_age("zeta", "v2"),
        same_age("alpha", "v1")
    ));
    assert_eq!(outcome(&s, "shop", &req("GET", "/y", &[])), "v1");
}

#[test]
fn consumer_routes_override_producer_routes_for_their_namespace_only() {
    let producer = route_yaml(
        "producer",
        "shop",
        "2026-01-01T00:00:00Z",
        "    - backendRefs: [{name: v1, port: 80}]\n",
    );
    // A consumer route may only send to its own namespace's Services without
    // a ReferenceGrant, so here it answers from a redirect.
    let consumer = route_yaml(
        "consumer",
        "client",
        "2026-01-01T00:00:00Z",
        "    - filters: [{type: RequestRedirect, requestRedirect: {hostname: elsewhere.example}}]\n",
    );
    let s = snapshot(&format!("{producer}{consumer}"));
    assert_eq!(outcome(&s, "client", &req("GET", "/", &[])), "302");
    assert_eq!(outcome(&s, "shop", &req("GET", "/", &[])), "v1");
    assert_eq!(outcome(&s, "third", &req("GET", "/", &[])), "v1");
}

#[test]
fn unmatched_is_404_and_backendless_is_500() {
    // Validation refuses all-zero weights and missing backends in a file; a
    // cluster can still delete a backend Service under a route, hence the
    // checks in `route`.
    let rules = r#"
    - matches: [{path: {type: Exact, value: /none}}]
    - matches: [{path: {type: Exact, value: /ok}}]
      backendRefs: [{name: v1, port: 80}]
"#;
    let s = snapshot(&route_yaml("r", "shop", "2026-01-01T00:00:00Z", rules));
    assert_eq!(outcome(&s, "shop", &req("GET", "/other", &[])), "404");
    assert_eq!(outcome(&s, "shop", &req("GET", "/none", &[])), "500");
    assert_eq!(outcome(&s, "shop", &req("GET", "/ok", &[])), "v1");
}

#[test]
fn all_zero_weights_pick_nothing() {
    let b = |w| crate::state::RouteBackend {
        service: web(),
        port: 80,
        weight: w,
        filters: Vec::new(),
    };
    assert!(pick_weighted(&[b(0), b(0)], 7).is_none());
    assert!(pick_weighted(&[], 7).is_none());
    assert_eq!(
        pick_weighted(&[b(0), b(1)], u32::MAX).map(|b| b.weight),
        Some(1)
    );
}

#[test]
fn weighted_choice_follows_the_weights_and_never_picks_weight_zero() {
    let rules = "    - backendRefs: [{name: v1, port: 80, weight: 90}, {name: web, port: 80, weight: 0}, {name: v2, port: 80, weight: 10}]\n";
    let s = snapshot(&route_yaml("r", "shop", "2026-01-01T00:00:00Z", rules));
    let svc = web();
    let r = req("GET", "/", &[]);
    let head = RequestHead::new(&r.method, &r.uri, &r.headers);
    let mut counts = std::collections::BTreeMap::<String, u32>::new();
    // Evenly spread rolls over the whole range (the middle of each step).
    let steps = 1000u64;
    for i in 0..steps {
        let roll = ((2 * i + 1) * (u64::from(u32::MAX) + 1) / (2 * steps)) as u32;
        if let Decision::Forward(f) = route(&s, "shop", &svc, 80, &head, roll) {
            *counts.entry(f.service.name.clone()).or_default() += 1;
        }
    }
    assert_eq!(counts.get("v1"), Some(&900), "{counts:?}");
    assert_eq!(counts.get("v2"), Some(&100), "{counts:?}");
    assert_eq!(counts.get("web"), None, "{counts:?}");
}

#[test]
fn parent_port_limits_where_a_route_applies() {
    let route = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: other-port, namespace: shop}\nspec:\n  parentRefs: [{group: \"\", kind: Service, name: web, port: 81}]\n  rules:\n    - backendRefs: [{name: v2, port: 80}]\n";
    let s = snapshot(route);
    assert_eq!(outcome(&s, "shop", &req("GET", "/", &[])), "web");
}

#[test]
fn redirect_location_and_status() {
    let rules = r#"
    - matches: [{path: {type: PathPrefix, value: /old}}]
      filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}, statusCode: 301}}]
    - matches: [{path: {type: PathPrefix, value: /secure}}]
      filters: [{type: RequestRedirect, requestRedirect: {scheme: https, hostname: example.com}}]
"#;
    let s = snapshot(&route_yaml("r", "shop", "2026-01-01T00:00:00Z", rules));
    let svc = web();
    let check = |uri: &str, status: u16, location: &str| {
        let r = req("GET", uri, &[("host", "web.shop:80")]);
        let head = RequestHead::new(&r.method, &r.uri, &r.headers);
        match route(&s, "shop", &svc, 80, &head, 0) {
            Decision::Respond(resp) => {
                assert_eq!(resp.status.as_u16(), status, "{uri}");
                assert_eq!(resp.location.unwrap(), location, "{uri}");
                assert_eq!(resp.reason, RespondReason::Redirect);
            }
            other => panic!("{uri}: {other:?}"),
        }
    };
    check("/old/page?x=1", 301, "http://web.shop/new/page?x=1");
    check("/secure/a", 302, "https://example.com/secure/a");
}

#[test]
fn filters_edit_the_request_and_response_heads() {
    let rules = r#"
    - matches: [{path: {type: PathPrefix, value: /strip}}]
      filters:
        - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-set, value: s}], add: [{name: x-add, value: b}], remove: [x-drop]}}
        - {type: ResponseHeaderModifier, responseHeaderModifier: {add: [{name: x-resp, value: r}]}}
        - {type: URLRewrite, urlRewrite: {hostname: rewritten.shop, path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}}
      backendRefs: [{name: v1, port: 80}]
"#;
    let s = snapshot(&route_yaml("r", "shop", "2026-01-01T00:00:00Z", rules));
    let svc = web();
    let request = http::Request::builder()
        .uri("/strip/three?q=1")
        .header("host", "web.shop")
        .header("x-set", "old")
        .header("x-add", "a")
        .header("x-drop", "gone")
        .body(())
        .unwrap();
    let (mut parts, ()) = request.into_parts();
    let decision = {
        let head = RequestHead::from_parts(&parts);
        match route(&s, "shop", &svc, 80, &head, 0) {
            Decision::Forward(f) => (
                f.path_match(),
                f.filters.into_iter().cloned().collect::<Vec<_>>(),
            ),
            other => panic!("{other:?}"),
        }
    };
    apply_request(&mut parts, &decision.1, &decision.0);
    assert_eq!(parts.uri, "/three?q=1");
    assert_eq!(parts.headers["host"], "rewritten.shop");
    assert_eq!(parts.headers["x-set"], "s");
    let added: Vec<_> = parts.headers.get_all("x-add").iter().collect();
    assert_eq!(added, ["a", "b"]);
    assert!(parts.headers.get("x-drop").is_none());
    let mut response = HeaderMap::new();
    apply_response(&mut response, &decision.1);
    assert_eq!(response["x-resp"], "r");
}

#[test]
fn prefix_rewrites_are_segment_wise() {
    use crate::config::resources::gateway::{HTTPPathModifier, PathModifierType};
    let m = |to: &str| HTTPPathModifier {
        type_: PathModifierType::ReplacePrefixMatch,
        replace_full_path: None,
        replace_prefix_match: Some(to.into()),
    };
    let prefix = |p: &str| crate::state::PathMatch::Prefix(p.into());
    assert_eq!(
        rewrite_path("/prefix/one/two", &m("/one"), &prefix("/prefix/one")),
        "/one/two"
    );
    assert_eq!(
        rewrite_path("/strip-prefix/three", &m("/"), &prefix("/strip-prefix")),
        "/three"
    );
    assert_eq!(
        rewrite_path("/strip-prefix", &m("/"), &prefix("/strip-prefix")),
        "/"
    );
    assert_eq!(rewrite_path("/a/", &m("/b"), &prefix("/a/")), "/b/");
}

#[test]
fn grpc_method_matches() {
    let route = r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules:
    - matches: [{method: {service: shop.Cart, method: Add}}]
      backendRefs: [{name: v2, port: 80}]
    - matches: [{method: {service: shop.Cart}}]
      backendRefs: [{name: v1, port: 80}]
"#;
    let s = snapshot(route);
    assert_eq!(
        outcome(&s, "shop", &req("POST", "/shop.Cart/Add", &[])),
        "v2"
    );
    assert_eq!(
        outcome(&s, "shop", &req("POST", "/shop.Cart/Remove", &[])),
        "v1"
    );
    assert_eq!(
        outcome(&s, "shop", &req("POST", "/shop.Other/Add", &[])),
        "404"
    );
}

/// A ReferenceGrant in `ns` letting `kind`s of `from_ns` use Service `to` (all
/// Services when `None`).
fn grant_yaml(ns: &str, kind: &str, from_ns: &str, to: Option<&str>) -> String {
    let name = to.map(|n| format!(", name: {n}")).unwrap_or_default();
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: from-{from_ns}-{}, namespace: {ns}}}\nspec:\n  from: [{{group: gateway.networking.k8s.io, kind: {kind}, namespace: {from_ns}}}]\n  to: [{{group: \"\", kind: Service{name}}}]\n",
        kind.to_lowercase()
    )
}

#[test]
fn a_backend_in_another_namespace_needs_a_reference_grant_there() {
    let consumer = route_yaml(
        "consumer",
        "client",
        "2026-01-01T00:00:00Z",
        "    - backendRefs: [{name: v1, namespace: shop, port: 80}]\n",
    );
    let answer = |grants: &str| {
        let s = snapshot(&format!("{consumer}{grants}"));
        outcome(&s, "client", &req("GET", "/", &[]))
    };
    assert_eq!(answer(""), "500", "no grant: not permitted");
    let invalid = |grants: &str| {
        let s = snapshot(&format!("{consumer}{grants}"));
        let head_req = req("GET", "/", &[]);
        let head = RequestHead::new(&head_req.method, &head_req.uri, &head_req.headers);
        match route(&s, "client", &web(), 80, &head, 0) {
            Decision::Respond(r) => r.reason == RespondReason::InvalidBackend,
            Decision::Forward(_) => false,
        }
    };
    assert!(invalid(""));
    // Grants that do not match: the wrong kind, source namespace, Service, or
    // written in the route's own namespace.
    for wrong in [
        grant_yaml("shop", "GRPCRoute", "client", None),
        grant_yaml("shop", "HTTPRoute", "third", None),
        grant_yaml("shop", "HTTPRoute", "client", Some("v2")),
        grant_yaml("client", "HTTPRoute", "client", None),
    ] {
        assert!(invalid(&wrong), "{wrong}");
    }
    assert_eq!(
        answer(&grant_yaml("shop", "HTTPRoute", "client", None)),
        "v1"
    );
    assert_eq!(
        answer(&grant_yaml("shop", "HTTPRoute", "client", Some("v1"))),
        "v1"
    );
}

#[test]
fn an_extension_ref_filter_is_never_skipped_its_requests_get_500() {
    let rules = r#"
    - matches: [{path: {type: Exact, value: /ext}}]
      filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: Thing, name: t}}]
      backendRefs: [{name: v1, port: 80}]
    - matches: [{path: {type: Exact, value: /backend-ext}}]
      backendRefs:
        - name: v2
          port: 80
          filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: Thing, name: t}}]
    - matches: [{path: {type: Exact, value: /ok}}]
      backendRefs: [{name: v1, port: 80}]
"#;
    let s = snapshot(&route_yaml("r", "shop", "2026-01-01T00:00:00Z", rules));
    assert_eq!(outcome(&s, "shop", &req("GET", "/ext", &[])), "500");
    assert_eq!(outcome(&s, "shop", &req("GET", "/backend-ext", &[])), "500");
    assert_eq!(outcome(&s, "shop", &req("GET", "/ok", &[])), "v1");
}
