//! The allow/deny matrix: each case is a set of policies, a connection and the
//! expected verdict.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::{ConnectionAttrs, Verdict, decide};
use crate::config::resources::weft::{
    Operation, PolicyAction, PolicyRule, RuleFrom, RuleTo, Source,
};
use crate::state::{AuthorizationPolicy, ResourceKey};

const FRONTEND: &str = "spiffe://cluster.local/ns/shop/sa/frontend";
const REVIEWS: &str = "spiffe://cluster.local/ns/shop/sa/reviews";
const BILLING: &str = "spiffe://cluster.local/ns/payments/sa/billing";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn mtls(id: &str, from: &str, port: u16) -> ConnectionAttrs {
    ConnectionAttrs::authenticated(id, ip(from), port)
}

fn plain(from: &str, port: u16) -> ConnectionAttrs {
    ConnectionAttrs::plaintext(ip(from), port)
}

fn policy(name: &str, action: PolicyAction, rules: Vec<PolicyRule>) -> Arc<AuthorizationPolicy> {
    Arc::new(AuthorizationPolicy {
        key: ResourceKey::new("payments", name),
        selector: BTreeMap::new(),
        action,
        rules,
    })
}

fn from(source: Source) -> PolicyRule {
    PolicyRule {
        from: vec![RuleFrom { source }],
        to: vec![],
    }
}

fn to(operation: Operation) -> PolicyRule {
    PolicyRule {
        from: vec![],
        to: vec![RuleTo { operation }],
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

fn principals(v: &[&str]) -> Source {
    Source {
        principals: strings(v),
        ..Default::default()
    }
}

fn key(name: &str) -> ResourceKey {
    ResourceKey::new("payments", name)
}

use PolicyAction::{Allow, Audit, Deny};

mod l7;

#[test]
fn allow_deny_matrix() {
    let allow_frontend = || {
        policy(
            "allow-frontend",
            Allow,
            vec![from(principals(&["cluster.local/ns/shop/sa/frontend"]))],
        )
    };
    let cases: Vec<(
        &str,
        Vec<Arc<AuthorizationPolicy>>,
        ConnectionAttrs,
        Verdict,
    )> = vec![
        (
            "no policy allows",
            vec![],
            mtls(FRONTEND, "10.88.1.10", 8443),
            Verdict::AllowedNoPolicy,
        ),
        (
            "no policy allows plaintext",
            vec![],
            plain("10.88.9.9", 8443),
            Verdict::AllowedNoPolicy,
        ),
        (
            "principal matches",
            vec![allow_frontend()],
            mtls(FRONTEND, "10.88.1.10", 8443),
            Verdict::Allowed(key("allow-frontend")),
        ),
        (
            "principal differs",
            vec![allow_frontend()],
            mtls(REVIEWS, "10.88.1.11", 8443),
            Verdict::NotAllowed,
        ),
        (
            "principals need mTLS",
            vec![allow_frontend()],
            plain("10.88.1.10", 8443),
            Verdict::NotAllowed,
        ),
        (
            "principal prefix wildcard",
            vec![policy(
                "shop-any",
                Allow,
                vec![from(principals(&["cluster.local/ns/shop/*"]))],
            )],
            mtls(REVIEWS, "10.88.1.11", 8443),
            Verdict::Allowed(key("shop-any")),
        ),
        (
            "notPrincipals excludes one",
            vec![policy(
                "not-reviews",
                Allow,
                vec![from(Source {
                    not_principals: strings(&["*/sa/reviews"]),
                    ..Default::default()
                })],
            )],
            mtls(REVIEWS, "10.88.1.11", 8443),
            Verdict::NotAllowed,
        ),
        (
            "namespace from the identity",
            vec![policy(
                "from-payments",
                Allow,
                vec![from(Source {
                    namespaces: strings(&["payments"]),
                    ..Default::default()
                })],
            )],
            mtls(BILLING, "10.88.2.12", 8443),
            Verdict::Allowed(key("from-payments")),
        ),
        (
            "namespaces need mTLS",
            vec![policy(
                "from-payments",
                Allow,
                vec![from(Source {
                    namespaces: strings(&["payments"]),
                    ..Default::default()
                })],
            )],
            plain("10.88.2.12", 8443),
            Verdict::NotAllowed,
        ),
        (
            "notNamespaces denies the listed one",
            vec![
                policy(
                    "deny-shop",
                    Deny,
                    vec![from(Source {
                        namespaces: strings(&["shop"]),
                        ..Default::default()
                    })],
                ),
                policy(
                    "not-shop",
                    Allow,
                    vec![from(Source {
                        not_namespaces: strings(&["shop"]),
                        ..Default::default()
                    })],
                ),
            ],
            mtls(FRONTEND, "10.88.1.10", 8443),
            Verdict::Denied(key("deny-shop")),
        ),
        (
            "ipBlocks match plaintext",
            vec![policy(
                "node-net",
                Allow,
                vec![from(Source {
                    ip_blocks: vec!["10.89.0.0/24".parse().expect("cidr")],
                    ..Default::default()
                })],
            )],
            plain("10.89.0.1", 8443),
            Verdict::Allowed(key("node-net")),
        ),
        (
            "ipBlocks miss",
            vec![policy(
                "node-net",
                Allow,
                vec![from(Source {
                    ip_blocks: vec!["10.89.0.0/24".parse().expect("cidr")],
                    ..Default::default()
                })],
            )],
            plain("10.88.1.10", 8443),
            Verdict::NotAllowed,
        ),
        (
            "notIpBlocks deny everyone outside",
            vec![policy(
                "outside",
                Deny,
                vec![from(Source {
                    not_ip_blocks: vec!["10.88.0.0/16".parse().expect("cidr")],
                    ..Default::default()
                })],
            )],
            mtls(FRONTEND, "192.168.7.1", 8443),
            Verdict::Denied(key("outside")),
        ),
        (
            "fields of one source are ANDed",
            vec![policy(
                "frontend-on-node-a",
                Allow,
                vec![from(Source {
                    principals: strings(&["*/sa/frontend"]),
                    ip_blocks: vec!["10.88.1.0/24".parse().expect("cidr")],
                    ..Default::default()
                })],
            )],
            mtls(FRONTEND, "10.88.2.10", 8443),
            Verdict::NotAllowed,
        ),
        (
            "port matches",
            vec![policy(
                "tls-port",
                Allow,
                vec![to(Operation {
                    ports: vec![8443],
                    ..Default::default()
                })],
            )],
            plain("10.88.1.10", 8443),
            Verdict::Allowed(key("tls-port")),
        ),
        (
            "port differs",
            vec![policy(
                "tls-port",
                Allow,
                vec![to(Operation {
                    ports: vec![8443],
                    ..Default::default()
                })],
            )],
            mtls(FRONTEND, "10.88.1.10", 9090),
            Verdict::NotAllowed,
        ),
        (
            "notPorts",
            vec![policy(
                "no-admin",
                Deny,
                vec![to(Operation {
                    not_ports: vec![8443],
                    ..Default::default()
                })],
            )],
            mtls(FRONTEND, "10.88.1.10", 9090),
            Verdict::Denied(key("no-admin")),
        ),
        (
            "DENY wins over a matching ALLOW",
            vec![
                allow_frontend(),
                policy(
                    "deny-frontend",
                    Deny,
                    vec![from(principals(&["*/sa/frontend"]))],
                ),
            ],
            mtls(FRONTEND, "10.88.1.10", 8443),
            Verdict::Denied(key("deny-frontend")),
        ),
        (
            "a DENY that does not match leaves the ALLOW",
            vec![
                allow_frontend(),
                policy(
                    "deny-reviews",
                    Deny,
                    vec![from(principals(&["*/sa/reviews"]))],
                ),
            ],
            mtls(FRONTEND, "10.88.1.10", 8443),
            Verdict::Allowed(key("allow-frontend")),
        ),
        (
            "an ALLOW without rules matches nothing",
            vec![policy("allow-nothing", Allow, vec![])],
            mtls(FRONTEND, "10.88.1.10", 8443),
            Verdict::NotAllowed,
        ),
        (
            "an empty rule matches everything",
            vec![policy("allow-all", Allow, vec![PolicyRule::default()])],
            plain("10.88.9.9", 1),
            Verdict::Allowed(key("allow-all")),
        ),
        (
            "HTTP conditions in the only ALLOW leave it to the request",
            vec![policy(
                "get-only",
                Allow,
                vec![to(Operation {
                    methods: strings(&["GET"]),
                    ..Default::default()
                })],
            )],
            mtls(FRONTEND, "10.88.1.10", 8443),
            Verdict::NeedsRequest,
        ),
        (
            "HTTP conditions in a DENY leave it to the request",
            vec![policy(
                "no-delete",
                Deny,
                vec![to(Operation {
                    methods: strings(&["DELETE"]),
                    ..Default::default()
                })],
            )],
            mtls(FRONTEND, "10.88.1.10", 8443),
            Verdict::NeedsRequest,
        ),
        (
            "AUDIT does not decide",
            vec![policy("audit-all", Audit, vec![PolicyRule::default()])],
            mtls(FRONTEND, "10.88.1.10", 8443),
            Verdict::AllowedNoPolicy,
        ),
    ];
    let mut failures = Vec::new();
    for (name, policies, conn, want) in &cases {
        let got = decide(policies, conn).verdict;
        if &got != want {
            failures.push(format!("{name}: {conn}: got {got:?}, want {want:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn audit_is_reported() {
    let policies = [policy("audit-all", Audit, vec![PolicyRule::default()])];
    let decision = decide(&policies, &plain("10.88.1.10", 80));
    assert!(decision.is_allowed());
    assert_eq!(decision.audited, vec![key("audit-all")]);
}

#[test]
fn namespace_comes_from_the_spiffe_id() {
    let attrs = ConnectionAttrs::authenticated(BILLING, ip("10.0.0.1"), 1);
    assert_eq!(
        attrs.principal.as_deref(),
        Some("cluster.local/ns/payments/sa/billing")
    );
    assert_eq!(attrs.namespace.as_deref(), Some("payments"));
}
