//! Facts in, checks out, in the order they print: the API server, the CRDs,
//! the agents, the CA, the clocks.

use super::clock::{self, Clocks};
use super::facts::{AgentProbe, CaProbe, Facts};
use super::rollout::node_of;
use super::{ca, crds, rollout};
use crate::check::Check;

pub fn checks(f: &Facts) -> Vec<Check> {
    let ns = f.namespace.as_str();
    let mut out = vec![Check::pass(
        "API server",
        format!("{} answers, Kubernetes {}", f.server, f.server_version),
    )];
    out.extend(crds::weft(&f.weft_crds, &f.cli_version));
    out.push(crds::gateway(&f.gateway_crds));
    out.push(rollout::version(&f.daemonset, &f.cli_version));
    out.push(rollout::daemonset(
        &f.daemonset,
        &f.nodes,
        &f.agent_pods,
        ns,
    ));
    out.extend(rollout::agents(
        &f.nodes,
        &f.agent_pods,
        &f.agent_probes,
        ns,
    ));
    out.push(ca::deployment(&f.ca_deployment, &f.ca_key, ns));
    out.push(ca::trust_bundle(&f.trust_bundle, ns, f.now));
    out.push(ca::service(&f.ca_probe, ns));
    out.push(clock::check(&clocks(f)));
    out
}

/// Every clock the facts hold: the API server's, the CA's, each agent's node's.
fn clocks(f: &Facts) -> Clocks<'_> {
    let mut readings = Vec::new();
    let mut unread = Vec::new();
    match f.server_clock {
        Some(r) => readings.push(("API server".to_owned(), r)),
        None => unread.push(("API server".to_owned(), "no Date header".to_owned())),
    }
    let mut ca_serving = None;
    match &f.ca_probe {
        CaProbe::Answered { clock, serving, .. } => {
            ca_serving = serving.as_ref();
            if let Some(r) = clock {
                readings.push(("CA".to_owned(), *r));
            }
        }
        _ => unread.push(("CA".to_owned(), "not reached".to_owned())),
    }
    let pods = f.agent_pods.found().map(Vec::as_slice).unwrap_or_default();
    let mut agents_unread = 0;
    for pod in pods {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let node = node_of(pod).unwrap_or(name);
        match f.agent_probes.get(name) {
            Some(AgentProbe::Answered { clock: Some(r), .. }) => {
                readings.push((format!("node {node}"), *r))
            }
            _ => agents_unread += 1,
        }
    }
    if agents_unread > 0 {
        unread.push((
            format!(
                "{agents_unread} agent{}",
                if agents_unread == 1 { "" } else { "s" }
            ),
            "not reached".to_owned(),
        ));
    }
    Clocks {
        readings,
        unread,
        ca_serving,
        now: f.now,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, SystemTime};

    use serde_json::json;

    use super::*;
    use crate::check::cluster::facts::{ClockReading, Fetched};
    use crate::check::{Report, Verdict};
    use crate::cli::crds as generated;

    fn established(mut value: serde_json::Value) -> serde_json::Value {
        value["status"] = json!({"conditions": [{"type": "Established", "status": "True"}],
                                 "acceptedNames": value["spec"]["names"].clone()});
        value
    }

    /// A healthy two-node install, as the lab shows it (agents' metrics and
    /// the CA out of reach).
    fn healthy() -> Facts {
        let now = SystemTime::now();
        let weft_crds = generated::weft()
            .into_iter()
            .map(|c| {
                let served =
                    serde_json::from_value(established(serde_json::to_value(&c).unwrap())).unwrap();
                (c, Fetched::Found(served))
            })
            .collect();
        let gateway_crds = generated::gateway_api()
            .into_iter()
            .map(|c| {
                let name = c.metadata.name.clone().unwrap();
                let served =
                    serde_json::from_value(established(serde_json::to_value(&c).unwrap())).unwrap();
                (name, Fetched::Found(served))
            })
            .collect();
        let ds = serde_json::from_value(json!({
            "metadata": {"name": "weft-agent", "generation": 1},
            "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "agent", "image": "ghcr.io/weft-mesh/mesh-agent:0.1.0"}]}}},
            "status": {"desiredNumberScheduled": 2, "updatedNumberScheduled": 2, "numberReady": 2,
                       "currentNumberScheduled": 2, "numberMisscheduled": 0, "observedGeneration": 1},
        }))
        .unwrap();
        let node = |n: &str| serde_json::from_value(json!({"metadata": {"name": n}})).unwrap();
        let pod = |p: &str, n: &str| {
            serde_json::from_value(json!({"metadata": {"name": p}, "spec": {"containers": [], "nodeName": n},
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}))
            .unwrap()
        };
        let dep = serde_json::from_value(json!({"metadata": {"name": "weft-ca"},
            "spec": {"replicas": 2, "selector": {}, "template": {}}, "status": {"availableReplicas": 2}}))
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        crate::identity::LocalCa::init(dir.path()).unwrap();
        let pem = std::fs::read_to_string(dir.path().join("ca.crt")).unwrap();
        let bundle = serde_json::from_value(json!({"data": {"roots.pem": pem}})).unwrap();
        let mut agent_probes = BTreeMap::new();
        for p in ["wa-1", "wa-2"] {
            agent_probes.insert(
                p.to_owned(),
                AgentProbe::Unreachable("dial tcp 10.89.0.1:15020: no route to host".into()),
            );
        }
        Facts {
            namespace: "weft-system".into(),
            cli_version: "0.1.0".into(),
            now,
            server: "https://127.0.0.1:6443".into(),
            server_version: "v1.37.2".into(),
            server_clock: Some(ClockReading {
                local: now,
                remote: now - Duration::from_millis(400),
            }),
            weft_crds,
            gateway_crds,
            daemonset: Fetched::Found(ds),
            nodes: Fetched::Found(vec![node("a"), node("b")]),
            agent_pods: Fetched::Found(vec![pod("wa-1", "a"), pod("wa-2", "b")]),
            agent_probes,
            ca_deployment: Fetched::Found(dep),
            ca_key: Fetched::Found(()),
            trust_bundle: Fetched::Found(bundle),
            ca_probe: CaProbe::Unreachable {
                target: "10.96.0.9:15012".into(),
                why: "timed out".into(),
                should_reach: false,
            },
        }
    }

    #[test]
    fn a_healthy_install_passes_with_unknowns_for_what_is_out_of_reach() {
        let checks = checks(&healthy());
        let report = Report::new(checks.clone());
        assert!(report.ok, "{}", report.to_text());
        let verdict = |name: &str| checks.iter().find(|c| c.name == name).unwrap().result;
        assert_eq!(verdict("DaemonSet weft-agent"), Verdict::Pass);
        assert_eq!(verdict("agent a"), Verdict::Pass);
        assert_eq!(verdict("enrolled pods"), Verdict::Unknown);
        assert_eq!(verdict("CA service"), Verdict::Unknown);
        assert_eq!(verdict("clock skew"), Verdict::Pass);
        assert_eq!(verdict("CRD authorizationpolicies.weft.dev"), Verdict::Pass);
        let clock = checks.iter().find(|c| c.name == "clock skew").unwrap();
        assert!(clock.detail.contains("API server +0 s"), "{clock:?}");
        assert!(clock.detail.contains("2 agents: not reached"), "{clock:?}");
    }

    #[test]
    fn an_agent_clock_far_off_fails() {
        let mut f = healthy();
        let local = f.now;
        f.agent_probes.insert(
            "wa-2".into(),
            AgentProbe::Answered {
                metrics: "weft_enrolled_pods 1\n".into(),
                clock: Some(ClockReading {
                    local,
                    remote: local + Duration::from_secs(120),
                }),
            },
        );
        let checks = checks(&f);
        let clock = checks.iter().find(|c| c.name == "clock skew").unwrap();
        assert_eq!(clock.result, Verdict::Fail);
        assert!(
            clock.detail.contains("node b's clock is 120 s ahead"),
            "{clock:?}"
        );
        let b = checks.iter().find(|c| c.name == "agent b").unwrap();
        assert_eq!(b.detail, "ready (pod wa-2), 1 pod enrolled");
    }

    #[test]
    fn a_missing_bundle_fails_the_run() {
        let mut f = healthy();
        f.trust_bundle = Fetched::Missing;
        assert!(!Report::new(checks(&f)).ok);
    }
}
