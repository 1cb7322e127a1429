//! The inbound decision: agent ports, strict mTLS, the node's probes, policy.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::{AGENT_PORTS, Inbound, admit};
use crate::config::resources::weft::{PolicyAction, PolicyRule};
use crate::policy::{ConnectionAttrs, Verdict};
use crate::state::{
    AuthorizationPolicy, MtlsMode, ObjectKey, ResourceKey, Snapshot, SnapshotData, Workload,
};

const FRONTEND: &str = "spiffe://cluster.local/ns/shop/sa/frontend";
const APP_PORT: u16 = 8443;
const PROBE_PORT: u16 = 8081;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn workload(mtls: MtlsMode) -> Workload {
    Workload {
        key: ObjectKey::new("payments", "payments-0"),
        uid: String::new(),
        service_account: "payments".into(),
        node: "n1".into(),
        ips: vec![ip("10.88.1.14")],
        labels: BTreeMap::new(),
        netns: None,
        meshed: true,
        mtls,
        ready: true,
        host_network: false,
        probe_ports: vec![PROBE_PORT],
    }
}

/// A snapshot whose only policy is a namespace-wide `action` with rule `{}`.
fn snapshot(action: Option<PolicyAction>) -> Snapshot {
    let authorization_policies = action
        .map(|action| {
            Arc::new(AuthorizationPolicy {
                key: ResourceKey::new("payments", "all"),
                selector: BTreeMap::new(),
                action,
                rules: vec![PolicyRule::default()],
            })
        })
        .into_iter()
        .collect();
    Snapshot::from_data(SnapshotData {
        authorization_policies,
        ..Default::default()
    })
}

fn tunnel(port: u16) -> Inbound {
    Inbound::tunnel(ConnectionAttrs::authenticated(
        FRONTEND,
        ip("10.88.1.10"),
        port,
    ))
}

fn plaintext(port: u16) -> Inbound {
    Inbound::plaintext(ConnectionAttrs::plaintext(ip("10.88.1.13"), port), false)
}

fn from_node(port: u16) -> Inbound {
    Inbound::plaintext(ConnectionAttrs::plaintext(ip("10.88.1.1"), port), true)
}

#[test]
fn the_agents_own_ports_are_never_a_target() {
    let allow_all = snapshot(Some(PolicyAction::Allow));
    for mtls in [MtlsMode::Permissive, MtlsMode::Strict] {
        let w = workload(mtls);
        for port in AGENT_PORTS {
            for conn in [tunnel(port), plaintext(port), from_node(port)] {
                let got = admit(&allow_all, &w, &conn).verdict;
                assert_eq!(got, Verdict::AgentPort, "{mtls} {conn:?}");
            }
        }
    }
    // Ports beside them are the app's.
    let w = workload(MtlsMode::Permissive);
    for port in [15000, 15007, 15009] {
        assert!(
            admit(&allow_all, &w, &plaintext(port)).is_allowed(),
            "{port}"
        );
    }
}

#[test]
fn strict_refuses_plaintext_from_the_current_mode() {
    let none = snapshot(None);
    let strict = workload(MtlsMode::Strict);
    assert_eq!(
        admit(&none, &strict, &plaintext(APP_PORT)).verdict,
        Verdict::StrictMtls
    );
    assert!(admit(&none, &strict, &tunnel(APP_PORT)).is_allowed());
    let permissive = workload(MtlsMode::Permissive);
    assert!(admit(&none, &permissive, &plaintext(APP_PORT)).is_allowed());
}

#[test]
fn strict_does_not_skip_policy_for_the_tunnel() {
    let deny_all = snapshot(Some(PolicyAction::Deny));
    let strict = workload(MtlsMode::Strict);
    assert_eq!(
        admit(&deny_all, &strict, &tunnel(APP_PORT)).verdict,
        Verdict::Denied(ResourceKey::new("payments", "all"))
    );
}

#[test]
fn the_node_is_exempt_on_probe_ports_only() {
    let deny_all = snapshot(Some(PolicyAction::Deny));
    let none = snapshot(None);
    for mtls in [MtlsMode::Permissive, MtlsMode::Strict] {
        let w = workload(mtls);
        let probe = admit(&deny_all, &w, &from_node(PROBE_PORT));
        assert_eq!(probe.verdict, Verdict::NodeProbe, "{mtls}");
        assert!(probe.is_allowed());
        // Elsewhere the node is any plaintext source.
        assert!(
            !admit(&deny_all, &w, &from_node(APP_PORT)).is_allowed(),
            "{mtls}"
        );
        // A probe port from another source is not exempt.
        assert!(
            !admit(&deny_all, &w, &plaintext(PROBE_PORT)).is_allowed(),
            "{mtls}"
        );
    }
    let strict = workload(MtlsMode::Strict);
    assert_eq!(
        admit(&none, &strict, &from_node(APP_PORT)).verdict,
        Verdict::StrictMtls
    );
    let permissive = workload(MtlsMode::Permissive);
    assert!(admit(&none, &permissive, &from_node(APP_PORT)).is_allowed());
}

#[test]
fn ip_blocks_see_the_nodes_address() {
    use crate::config::resources::weft::{RuleFrom, Source};
    let deny_node = Snapshot::from_data(SnapshotData {
        authorization_policies: vec![Arc::new(AuthorizationPolicy {
            key: ResourceKey::new("payments", "deny-node"),
            selector: BTreeMap::new(),
            action: PolicyAction::Deny,
            rules: vec![PolicyRule {
                from: vec![RuleFrom {
                    source: Source {
                        ip_blocks: vec!["10.88.1.1/32".parse().expect("cidr")],
                        ..Default::default()
                    },
                }],
                to: vec![],
            }],
        })],
        ..Default::default()
    });
    let w = workload(MtlsMode::Permissive);
    assert!(!admit(&deny_node, &w, &from_node(APP_PORT)).is_allowed());
    assert!(admit(&deny_node, &w, &plaintext(APP_PORT)).is_allowed());
}
