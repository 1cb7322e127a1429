//! Bad inputs: each must be rejected with a message naming the resource, the field
//! path and the reason, at a line of the file.

use crate::config::file::load_str;

const BASE: &str = r#"apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {weft.dev/mesh: enabled}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.1
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec: {nodeName: node-a, containers: [{name: app}]}
status: {podIP: 10.88.1.1}
"#;

fn route(rule: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r, namespace: shop}}\nspec:\n  parentRefs: [{{group: \"\", kind: Service, name: web}}]\n  rules:\n    - {rule}\n"
    )
}

fn authz(rule: &str) -> String {
    format!(
        "apiVersion: weft.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{name: p, namespace: shop}}\nspec:\n  {rule}\n"
    )
}

fn traffic(spec: &str) -> String {
    format!(
        "apiVersion: weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: t, namespace: shop}}\nspec:\n  targetRef: {{kind: Service, name: web}}\n  {spec}\n"
    )
}

fn pod(meta: &str, spec: &str, status: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: p2, namespace: shop{meta}}}\nspec: {spec}\nstatus: {status}\n"
    )
}

fn svc(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\nspec: {spec}\n"
    )
}

/// (case, extra document, resource, field, reason fragment)
fn cases() -> Vec<(
    &'static str,
    String,
    &'static str,
    &'static str,
    &'static str,
)> {
    let node = "{nodeName: node-a, containers: [{name: app}]}";
    vec![
        ("unknown field", pod("", "{nodeName: node-a, containrs: []}", "{podIP: 10.88.1.2}"), "Pod shop/p2", "spec.containrs", "unknown field `containrs`"),
        ("unknown top-level field", format!("{}specs: {{}}\n", svc("s2", "{ports: [{port: 80}]}")), "Service shop/s2", "specs", "unknown field"),
        ("wrong type", svc("s2", "{ports: [{port: abc}]}"), "Service shop/s2", "spec.ports[0].port", "wrong type"),
        ("wrong type list", svc("s2", "{ports: {port: 80}}"), "Service shop/s2", "spec.ports", "expected a list"),
        ("missing required field", route("backendRefs: [{port: 80}]"), "HTTPRoute shop/r", "spec.rules[0].backendRefs[0].name", "required field `name`"),
        ("missing spec of a custom resource", "apiVersion: weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: t, namespace: shop}\n".into(), "TrafficPolicy shop/t", "spec", "required field `spec`"),
        ("unknown kind", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d, namespace: shop}\n".into(), "Deployment shop/d", "kind", "unknown kind \"Deployment\""),
        ("wrong apiVersion", "apiVersion: v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: shop}\nspec: {}\n".into(), "HTTPRoute shop/r", "apiVersion", "needs apiVersion gateway.networking.k8s.io/v1"),
        ("missing kind", "apiVersion: v1\nmetadata: {name: x, namespace: shop}\n".into(), "<no kind> shop/x", "kind", "required"),
        ("missing name", svc("\"\"", "{ports: [{port: 80}]}"), "Service shop/", "metadata.name", "required"),
        ("invalid name", svc("Web_1", "{ports: [{port: 80}]}"), "Service shop/Web_1", "metadata.name", "not a valid name"),
        ("duplicate name", svc("web", "{ports: [{port: 80}]}"), "Service shop/web", "metadata.name", "duplicate: Service shop/web is already defined at test.yaml:7"),
        ("two workloads on one IP", pod("", node, "{podIP: 10.88.1.1}"), "Pod shop/p2", "status.podIP", "IP 10.88.1.1 is already used by Pod shop/web-1"),
        ("invalid pod IP", pod("", node, "{podIPs: [{ip: 10.88.1.300}]}"), "Pod shop/p2", "status.podIPs[0].ip", "not an IP address"),
        ("pod without node", pod("", "{containers: [{name: app}]}", "{podIP: 10.88.1.2}"), "Pod shop/p2", "spec.nodeName", "required"),
        ("netns path missing", pod(", annotations: {weft.dev/netns: /run/netns/does-not-exist-weft-test}", node, "{podIP: 10.88.1.2}"), "Pod shop/p2", "metadata.annotations.weft.dev/netns", "does not exist"),
        ("netns path relative", pod(", annotations: {weft.dev/netns: netns/x}", node, "{podIP: 10.88.1.2}"), "Pod shop/p2", "metadata.annotations.weft.dev/netns", "absolute path"),
        ("container port out of range", pod("", "{nodeName: node-a, containers: [{name: app, ports: [{containerPort: 99999}]}]}", "{podIP: 10.88.1.2}"), "Pod shop/p2", "spec.containers[0].ports[0].containerPort", "between 1 and 65535 (got 99999)"),
        ("service port out of range", svc("s2", "{ports: [{port: 70000}]}"), "Service shop/s2", "spec.ports[0].port", "between 1 and 65535 (got 70000)"),
        ("targetPort out of range", svc("s2", "{ports: [{port: 80, targetPort: 0}]}"), "Service shop/s2", "spec.ports[0].targetPort", "between 1 and 65535 (got 0)"),
        ("invalid named targetPort", svc("s2", "{ports: [{port: 80, targetPort: Not_A_Name}]}"), "Service shop/s2", "spec.ports[0].targetPort", "container port name"),
        ("unnamed ports in a multi-port Service", svc("s2", "{ports: [{port: 80}, {port: 81}]}"), "Service shop/s2", "spec.ports[0].name", "required when a Service has more than one port"),
        ("invalid protocol", svc("s2", "{ports: [{port: 80, protocol: HTTP}]}"), "Service shop/s2", "spec.ports[0].protocol", "TCP, UDP, SCTP"),
        ("invalid cluster IP", svc("s2", "{clusterIP: 10.96.0.999, ports: [{port: 80}]}"), "Service shop/s2", "spec.clusterIP", "not an IP address"),
        ("duplicate cluster IP", svc("s2", "{clusterIP: 10.96.0.1, ports: [{port: 80}]}"), "Service shop/s2", "spec.clusterIP", "already used by Service shop/web"),
        ("undeclared namespace", "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: nowhere}\nspec: {ports: [{port: 80}]}\n".into(), "Service nowhere/s", "metadata.namespace", "namespace \"nowhere\" is not declared"),
        ("invalid mtls label", "apiVersion: v1\nkind: Namespace\nmetadata: {name: n2, labels: {weft.dev/mtls: on}}\n".into(), "Namespace n2", "metadata.labels.weft.dev/mtls", "strict, permissive"),
        ("route parent missing", route("backendRefs: [{name: web, port: 80}]").replace("name: web}", "name: nope}"), "HTTPRoute shop/r", "spec.parentRefs[0].name", "parent Service shop/nope does not exist"),
        ("route parent is a Gateway", route("backendRefs: [{name: web, port: 80}]").replace("group: \"\", kind: Service, ", ""), "HTTPRoute shop/r", "spec.parentRefs[0].kind", "must be Service"),
        ("route parent port missing", route("backendRefs: [{name: web, port: 80}]").replace("name: web}", "name: web, port: 81}"), "HTTPRoute shop/r", "spec.parentRefs[0].port", "has no port 81"),
        ("route backend missing", route("backendRefs: [{name: nope, port: 80}]"), "HTTPRoute shop/r", "spec.rules[0].backendRefs[0].name", "backend Service shop/nope does not exist"),
        ("backend without port", route("backendRefs: [{name: web}]"), "HTTPRoute shop/r", "spec.rules[0].backendRefs[0].port", "required for a Service backend"),
        ("backend port not on Service", route("backendRefs: [{name: web, port: 8080}]"), "HTTPRoute shop/r", "spec.rules[0].backendRefs[0].port", "has no port 8080 (its ports: 80)"),
        ("negative weight", route("backendRefs: [{name: web, port: 80}, {name: web, port: 80, weight: -1}]"), "HTTPRoute shop/r", "spec.rules[0].backendRefs[1].weight", "must be >= 0 (got -1)"),
        ("all weights zero", route("backendRefs: [{name: web, port: 80, weight: 0}, {name: web, port: 80, weight: 0}]"), "HTTPRoute shop/r", "spec.rules[0].backendRefs", "weights are all zero"),
        ("path without slash", route("matches: [{path: {type: PathPrefix, value: api}}]"), "HTTPRoute shop/r", "spec.rules[0].matches[0].path.value", "must start with '/'"),
        ("invalid path match type", route("matches: [{path: {type: Prefix, value: /api}}]"), "HTTPRoute shop/r", "spec.rules[0].matches[0].path.type", "unknown variant `Prefix`, expected one of `Exact`, `PathPrefix`, `RegularExpression`"),
        ("invalid method", route("matches: [{method: FETCH}]"), "HTTPRoute shop/r", "spec.rules[0].matches[0].method", "unknown variant `FETCH`"),
        ("invalid header name", route("matches: [{headers: [{name: \"x canary\", value: \"1\"}]}]"), "HTTPRoute shop/r", "spec.rules[0].matches[0].headers[0].name", "not a valid header name"),
        ("invalid duration", route("timeouts: {request: 5x}"), "HTTPRoute shop/r", "spec.rules[0].timeouts.request", "Gateway API duration"),
        ("retry code out of range", route("retry: {codes: [200]}"), "HTTPRoute shop/r", "spec.rules[0].retry.codes[0]", "400-599"),
        ("filter without its config", route("filters: [{type: RequestHeaderModifier}]"), "HTTPRoute shop/r", "spec.rules[0].filters[0].requestHeaderModifier", "required when type is RequestHeaderModifier"),
        ("invalid policy action", authz("action: PERMIT"), "AuthorizationPolicy shop/p", "spec.action", "unknown variant `PERMIT`, expected one of `ALLOW`, `DENY`, `AUDIT`"),
        ("invalid CIDR", authz("rules: [{from: [{source: {ipBlocks: [10.0.0.0/33]}}]}]"), "AuthorizationPolicy shop/p", "spec.rules[0].from[0].source.ipBlocks[0]", "invalid IP block \"10.0.0.0/33\""),
        ("policy port out of range", authz("rules: [{to: [{operation: {ports: [0]}}]}]"), "AuthorizationPolicy shop/p", "spec.rules[0].to[0].operation.ports[0]", "between 1 and 65535"),
        ("policy method lower-case", authz("rules: [{to: [{operation: {methods: [get]}}]}]"), "AuthorizationPolicy shop/p", "spec.rules[0].to[0].operation.methods[0]", "upper-case HTTP method"),
        ("policy host empty", authz("rules: [{to: [{operation: {notHosts: [a.example, '']}}]}]"), "AuthorizationPolicy shop/p", "spec.rules[0].to[0].operation.notHosts[1]", "must not be empty"),
        ("traffic policy target missing", traffic("").replace("name: web", "name: nope"), "TrafficPolicy shop/t", "spec.targetRef.name", "Service shop/nope does not exist"),
        ("traffic policy target kind", traffic("").replace("kind: Service", "kind: Deployment"), "TrafficPolicy shop/t", "spec.targetRef.kind", "must be Service"),
        ("fault percentage", traffic("fault: {abort: {httpStatus: 503, percentage: 150}}"), "TrafficPolicy shop/t", "spec.fault.abort.percentage", "between 0 and 100 (got 150)"),
        ("fault status", traffic("fault: {abort: {httpStatus: 42, percentage: 10}}"), "TrafficPolicy shop/t", "spec.fault.abort.httpStatus", "200-599"),
        ("invalid lb algorithm", traffic("loadBalancer: {algorithm: Fastest}"), "TrafficPolicy shop/t", "spec.loadBalancer.algorithm", "unknown variant `Fastest`"),
        ("negative unsigned", traffic("connectionLimits: {maxConnections: -5}"), "TrafficPolicy shop/t", "spec.connectionLimits.maxConnections", "-5"),
    ]
}

#[test]
fn bad_inputs_are_reported_with_resource_field_and_reason() {
    let cases = cases();
    assert!(cases.len() >= 25);
    for (name, doc, resource, field, reason) in cases {
        let src = format!("{BASE}---\n{doc}");
        let errors = match load_str("test.yaml", &src) {
            Ok(_) => panic!("case {name:?}: accepted\n{src}"),
            Err(e) => e,
        };
        let found = errors.iter().find(|e| {
            e.field.as_deref() == Some(field)
                && e.resource.as_ref().map(|r| r.to_string()).as_deref() == Some(resource)
        });
        let Some(e) = found else {
            panic!("case {name:?}: no error on {resource} {field}; got:\n{errors}");
        };
        let msg = e.to_string();
        assert!(
            msg.contains(reason),
            "case {name:?}: {msg:?} lacks {reason:?}"
        );
        assert!(
            msg.contains(&format!("{resource}: {field}: ")),
            "case {name:?}: {msg}"
        );
        assert!(
            e.line.is_some_and(|l| l > 17),
            "case {name:?}: no line in the extra document: {msg}"
        );
        assert_eq!(e.document, Some(4), "case {name:?}");
    }
}

#[test]
fn compiler_style_message() {
    let src = format!(
        "{BASE}---\n{}",
        route("backendRefs: [{name: web, port: 80}, {name: web, port: 80, weight: -1}]")
    );
    let errors = load_str("mesh.yaml", &src).expect_err("invalid");
    let msg = errors.to_string();
    assert_eq!(
        msg,
        "error: mesh.yaml:25:66: HTTPRoute shop/r: spec.rules[0].backendRefs[1].weight: must be >= 0 (got -1) [document 4]"
    );
}

#[test]
fn yaml_syntax_error_has_line_and_column() {
    let src = format!("{BASE}---\napiVersion: v1\nkind: Service\nmetadata: {{name: x\n");
    let errors = load_str("mesh.yaml", &src).expect_err("invalid");
    let e = &errors.0[0];
    assert!(e.reason.starts_with("YAML syntax"), "{e}");
    assert_eq!(e.document, Some(4));
    assert!(e.line.is_some_and(|l| l >= 21), "{e}");
    assert!(e.column.is_some());
}

#[test]
fn every_error_is_reported() {
    let src = format!(
        "{BASE}---\n{}---\n{}---\n{}",
        svc("s2", "{ports: [{port: 70000}]}"),
        route("backendRefs: [{name: nope, port: 80}]"),
        authz("action: PERMIT")
    );
    let errors = load_str("mesh.yaml", &src).expect_err("invalid");
    assert_eq!(errors.len(), 3, "{errors}");
    assert!(errors.to_string().ends_with("3 errors"));
}

#[test]
fn existing_netns_path_is_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pod-ns");
    std::fs::write(&path, b"").expect("write");
    let doc = pod(
        &format!(", annotations: {{weft.dev/netns: {}}}", path.display()),
        "{nodeName: node-a, containers: [{name: app}]}",
        "{podIP: 10.88.1.2}",
    );
    let snap = load_str("t.yaml", &format!("{BASE}---\n{doc}")).expect("valid");
    let w = snap.workload_by_netns(&path).expect("by netns");
    assert_eq!(w.key.to_string(), "shop/p2");
}

#[test]
fn example_is_valid() {
    let src = include_str!("../../../../examples/mesh.yaml");
    if let Err(e) = load_str("examples/mesh.yaml", src) {
        panic!("{e}");
    }
}

/// Istio refuses a `source` or `operation` that sets no field: it would match
/// every peer or every request, so an ALLOW rule from a template with the
/// values left out would allow everything (docs/security.md).
#[test]
fn empty_source_or_operation_is_refused() {
    for (rule, field, what) in [
        (
            "rules: [{from: [{source: {}}]}]",
            "spec.rules[0].from[0].source",
            "principals",
        ),
        (
            "rules: [{from: [{source: {principals: [a]}}]}, {to: [{operation: {ports: [80]}}, {operation: {}}]}]",
            "spec.rules[1].to[1].operation",
            "ports",
        ),
    ] {
        let src = format!("{BASE}---\n{}", authz(&format!("action: ALLOW\n  {rule}")));
        let errors = load_str("mesh.yaml", &src).expect_err("an empty match is refused");
        assert_eq!(errors.len(), 1, "{errors}");
        let msg = errors.to_string();
        assert!(
            msg.contains(&format!(
                "AuthorizationPolicy shop/p: {field}: must set at least one field"
            )),
            "{msg}"
        );
        assert!(msg.contains(what), "{msg}");
        assert!(errors.0[0].line.is_some_and(|l| l > 17), "{msg}");
    }
}
