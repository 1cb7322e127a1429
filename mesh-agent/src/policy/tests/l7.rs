//! The two stages: the connection-time tri-state, then each request.

use super::*;
use crate::policy::{RequestAttrs, decide_request};

fn http(ports: &[i32], methods: &[&str], paths: &[&str]) -> PolicyRule {
    to(Operation {
        ports: ports.to_vec(),
        methods: strings(methods),
        paths: strings(paths),
        ..Default::default()
    })
}

fn req(method: &str, path: &str) -> RequestAttrs {
    RequestAttrs {
        method: method.into(),
        path: path.into(),
        host: Some("payments.example".into()),
    }
}

fn conn() -> ConnectionAttrs {
    mtls(FRONTEND, "10.88.1.10", 8080)
}

#[test]
fn connection_time_tri_state() {
    let cases: Vec<(&str, Vec<Arc<AuthorizationPolicy>>, Verdict)> = vec![
        (
            "an L4 ALLOW that matches decides without the request",
            vec![
                policy("l4", Allow, vec![from(principals(&[FRONTEND]))]),
                policy("l7", Allow, vec![http(&[], &["GET"], &[])]),
            ],
            Verdict::Allowed(key("l4")),
        ),
        (
            "an HTTP ALLOW on another port cannot match",
            vec![policy("l7", Allow, vec![http(&[9090], &["GET"], &[])])],
            Verdict::NotAllowed,
        ),
        (
            "an HTTP DENY on another port is out of play",
            vec![policy("l7", Deny, vec![http(&[9090], &["GET"], &[])])],
            Verdict::AllowedNoPolicy,
        ),
        (
            "an L4 DENY decides before an HTTP ALLOW",
            vec![
                policy("deny", Deny, vec![from(principals(&[FRONTEND]))]),
                policy("l7", Allow, vec![http(&[], &["GET"], &[])]),
            ],
            Verdict::Denied(key("deny")),
        ),
        (
            "an HTTP DENY with an L4 ALLOW leaves it to the request",
            vec![
                policy("deny", Deny, vec![http(&[], &[], &["/admin/*"])]),
                policy("allow", Allow, vec![from(principals(&[FRONTEND]))]),
            ],
            Verdict::NeedsRequest,
        ),
        (
            "an HTTP DENY is moot when no ALLOW can match",
            vec![
                policy("deny", Deny, vec![http(&[], &[], &["/admin/*"])]),
                policy("allow", Allow, vec![from(principals(&[BILLING]))]),
            ],
            Verdict::NotAllowed,
        ),
        (
            "a rule whose source does not match is out of play",
            vec![policy(
                "l7",
                Allow,
                vec![PolicyRule {
                    from: vec![RuleFrom {
                        source: principals(&[BILLING]),
                    }],
                    to: vec![RuleTo {
                        operation: Operation {
                            methods: strings(&["GET"]),
                            ..Default::default()
                        },
                    }],
                }],
            )],
            Verdict::NotAllowed,
        ),
    ];
    for (name, policies, want) in cases {
        assert_eq!(decide(&policies, &conn()).verdict, want, "{name}");
    }
}

#[test]
fn each_request_is_decided_deny_first() {
    let policies = [
        policy("no-admin", Deny, vec![http(&[], &[], &["/admin/*"])]),
        policy(
            "reads",
            Allow,
            vec![http(&[8080], &["GET", "HEAD"], &["/api/*", "/health"])],
        ),
    ];
    assert!(decide(&policies, &conn()).needs_request());
    let cases = [
        (req("GET", "/api/items"), Verdict::Allowed(key("reads"))),
        (req("HEAD", "/health"), Verdict::Allowed(key("reads"))),
        (req("POST", "/api/items"), Verdict::NotAllowed),
        (req("GET", "/other"), Verdict::NotAllowed),
        (req("GET", "/admin/users"), Verdict::Denied(key("no-admin"))),
    ];
    for (r, want) in cases {
        let got = decide_request(&policies, &conn(), &r).verdict;
        assert_eq!(got, want, "{r}");
    }
}

#[test]
fn a_request_decision_is_never_pending() {
    let policies = [policy("l7", Deny, vec![http(&[], &["DELETE"], &[])])];
    let d = decide_request(&policies, &conn(), &req("GET", "/"));
    assert_eq!(d.verdict, Verdict::AllowedNoPolicy);
    let d = decide_request(&policies, &conn(), &req("DELETE", "/"));
    assert_eq!(d.verdict, Verdict::Denied(key("l7")));
}

#[test]
fn not_paths_and_hosts_per_request() {
    let policies = [policy(
        "public",
        Allow,
        vec![to(Operation {
            paths: strings(&["/api/*"]),
            not_paths: strings(&["/api/private/*"]),
            hosts: strings(&["*.example"]),
            not_hosts: strings(&["admin.example"]),
            ..Default::default()
        })],
    )];
    let with_host = |path: &str, host: &str| RequestAttrs {
        host: Some(host.into()),
        ..req("GET", path)
    };
    let allowed = |r: &RequestAttrs| decide_request(&policies, &conn(), r).is_allowed();
    assert!(allowed(&with_host("/api/x", "Shop.Example:8080")));
    assert!(!allowed(&with_host("/api/private/x", "shop.example")));
    assert!(!allowed(&with_host("/api/x", "admin.example")));
    assert!(!allowed(&with_host("/api/x", "shop.other")));
}

/// AUDIT never changes the outcome; one that depends on the request is
/// reported per request, not at connection time.
#[test]
fn audits_that_need_the_request_are_reported_per_request() {
    let policies = [
        policy("audit-posts", Audit, vec![http(&[], &["POST"], &[])]),
        policy("audit-all", Audit, vec![PolicyRule::default()]),
        policy("no-delete", Deny, vec![http(&[], &["DELETE"], &[])]),
    ];
    let at_connection = decide(&policies, &conn());
    assert!(at_connection.needs_request());
    assert!(at_connection.audited.is_empty(), "reported per request");
    let post = decide_request(&policies, &conn(), &req("POST", "/"));
    assert!(post.is_allowed());
    assert_eq!(post.audited, vec![key("audit-posts"), key("audit-all")]);
    let get = decide_request(&policies, &conn(), &req("GET", "/"));
    assert_eq!(get.audited, vec![key("audit-all")]);

    // A connection that is not parsed keeps today's semantics: an AUDIT
    // naming HTTP attributes does not match it.
    let l4_only = [
        policy("audit-posts", Audit, vec![http(&[], &["POST"], &[])]),
        policy("audit-all", Audit, vec![PolicyRule::default()]),
    ];
    let d = decide(&l4_only, &conn());
    assert_eq!(d.verdict, Verdict::AllowedNoPolicy);
    assert_eq!(d.audited, vec![key("audit-all")]);
}
