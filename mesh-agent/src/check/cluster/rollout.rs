//! The node agents: the DaemonSet rolled out on every node (desired = updated
//! = ready, and which nodes lack a ready agent), each node's agent ready (its
//! pod's Ready condition, which the kubelet sets from `/ready`) and how many
//! pods it has enrolled (`weft_enrolled_pods`, through the pod proxy), and the
//! agents' version against this `mesh-agent`'s.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};

use super::facts::{AgentProbe, Fetched};
use crate::check::{Check, Verdict};

pub const DAEMONSET: &str = "weft-agent";
/// Up to this many nodes, every node gets a line; beyond, only those that
/// do not pass, and a summary line.
const NODE_LINES: usize = 20;
pub const ENROLLED_METRIC: &str = "weft_enrolled_pods";

/// The node a DaemonSet pod is for: bound (`spec.nodeName`), or pinned by the
/// DaemonSet controller's node affinity (`metadata.name In [node]`) while the
/// scheduler has not bound it yet.
pub fn node_of(pod: &Pod) -> Option<&str> {
    let spec = pod.spec.as_ref()?;
    if let Some(node) = spec.node_name.as_deref() {
        return Some(node);
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first())
        .map(String::as_str)
}

pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn bound(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|s| s.node_name.is_some())
}

fn name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or("?")
}

/// Why a pod is not ready, in the words `kubectl get pods` would use.
pub fn why_not_ready(pod: &Pod) -> String {
    if !bound(pod) {
        return "Pending, not scheduled to the node".into();
    }
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    let waiting = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .find_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone());
    let condition = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .and_then(|c| c.message.clone().or_else(|| c.reason.clone()));
    match (waiting, condition) {
        (Some(reason), _) => format!("{phase}, {reason}"),
        (None, Some(why)) => format!("{phase}, not ready: {why}"),
        (None, None) => format!("{phase}, not ready"),
    }
}

/// For each node, its agent pod: the ready one if any, else any.
fn pods_by_node(pods: &[Pod]) -> BTreeMap<&str, &Pod> {
    let mut by_node: BTreeMap<&str, &Pod> = BTreeMap::new();
    for pod in pods {
        let Some(node) = node_of(pod) else { continue };
        let better = by_node
            .get(node)
            .is_none_or(|held| !is_ready(held) && (is_ready(pod) || bound(pod)));
        if better {
            by_node.insert(node, pod);
        }
    }
    by_node
}

fn node_names(nodes: &[Node]) -> Vec<&str> {
    nodes
        .iter()
        .filter_map(|n| n.metadata.name.as_deref())
        .collect()
}

/// Nodes without a ready agent, each with why.
fn lacking<'a>(nodes: &'a [Node], pods: &[Pod]) -> Vec<(&'a str, String)> {
    let by_node = pods_by_node(pods);
    node_names(nodes)
        .into_iter()
        .filter_map(|node| match by_node.get(node) {
            Some(pod) if is_ready(pod) => None,
            Some(pod) => Some((node, format!("pod {} {}", name(pod), why_not_ready(pod)))),
            None => Some((node, "no weft-agent pod".into())),
        })
        .collect()
}

/// The DaemonSet line.
pub fn daemonset(
    ds: &Fetched<DaemonSet>,
    nodes: &Fetched<Vec<Node>>,
    pods: &Fetched<Vec<Pod>>,
    ns: &str,
) -> Check {
    let label = format!("DaemonSet {DAEMONSET}");
    let ds = match ds {
        Fetched::Found(ds) => ds,
        Fetched::Missing => {
            return Check::fail(
                label,
                format!("{ns}/{DAEMONSET} does not exist: no node runs an agent"),
                "install Weft: kubectl apply --server-side -k manifests/ (docs/install.md)",
            );
        }
        other => {
            return Check::unknown(
                label,
                other.unreadable().unwrap_or_default(),
                "check with credentials that may get daemonsets in weft-system",
            );
        }
    };
    let status = ds.status.clone().unwrap_or_default();
    let (desired, updated, ready) = (
        status.desired_number_scheduled,
        status.updated_number_scheduled.unwrap_or(0),
        status.number_ready,
    );
    let observed = status.observed_generation.unwrap_or(0) >= ds.metadata.generation.unwrap_or(0);
    let counts = format!("{desired} desired, {updated} up to date, {ready} ready");
    let missing = match (nodes.found(), pods.found()) {
        (Some(nodes), Some(pods)) => lacking(nodes, pods),
        _ => Vec::new(),
    };
    let missing_text = missing
        .iter()
        .map(|(node, why)| format!("{node} ({why})"))
        .collect::<Vec<_>>()
        .join(", ");
    let fix = format!(
        "kubectl -n {ns} rollout status daemonset/{DAEMONSET}; for each node named: \
         kubectl -n {ns} describe pod <pod> and kubectl -n {ns} logs <pod> (an agent is ready \
         once it has synced the cluster's state and enrolled its node's meshed pods)"
    );
    let node_count = nodes.found().map_or(0, Vec::len);
    if desired == 0 {
        return if node_count == 0 {
            Check::warn(label, "the cluster has no nodes", "add nodes")
        } else {
            Check::fail(
                label,
                format!("schedules on none of the {node_count} nodes"),
                format!(
                    "kubectl -n {ns} describe daemonset {DAEMONSET} (its events say why; \
                     an overlay's nodeSelector?)"
                ),
            )
        };
    }
    let rolled_out = observed && desired == updated && desired == ready;
    match (rolled_out, missing.is_empty()) {
        (true, true) => Check::pass(label, format!("rolled out: {counts}")),
        (true, false) => Check::warn(
            label,
            format!("{counts}, but no ready agent on {missing_text}"),
            fix,
        ),
        (false, _) => {
            let not_observed = if observed {
                String::new()
            } else {
                "; the controller has not seen its latest change yet".into()
            };
            let nodes = if missing.is_empty() {
                String::new()
            } else {
                format!("; no ready agent on {missing_text}")
            };
            Check::fail(
                label,
                format!("not rolled out: {counts}{nodes}{not_observed}"),
                fix,
            )
        }
    }
}

/// `weft_enrolled_pods` in a Prometheus text exposition.
pub fn enrolled(metrics: &str) -> Option<u64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(ENROLLED_METRIC)?;
        let value = rest.strip_prefix(' ').or_else(|| {
            // With labels: `weft_enrolled_pods{...} 3`.
            rest.starts_with('{')
                .then(|| rest.rsplit_once("} ").map(|(_, v)| v))
                .flatten()
        })?;
        let v: f64 = value.split_whitespace().next()?.parse().ok()?;
        (v >= 0.0).then_some(v as u64)
    })
}

/// One line per node's agent (or, on large clusters, per node whose agent is
/// not ready, and a summary), and one `unknown` line when enrolled counts
/// could not be read.
pub fn agents(
    nodes: &Fetched<Vec<Node>>,
    pods: &Fetched<Vec<Pod>>,
    probes: &BTreeMap<String, AgentProbe>,
    ns: &str,
) -> Vec<Check> {
    let (nodes, pods) = match (nodes, pods) {
        (Fetched::Found(n), Fetched::Found(p)) => (n, p),
        (n, p) => {
            let why = n.unreadable().or(p.unreadable()).unwrap_or_default();
            return vec![Check::unknown(
                "agents",
                why,
                "check with credentials that may list nodes and pods in weft-system",
            )];
        }
    };
    let by_node = pods_by_node(pods);
    let mut lines = Vec::new();
    let mut unknown: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    let mut total = 0;
    for node in node_names(nodes) {
        let label = format!("agent {node}");
        let Some(pod) = by_node.get(node) else {
            lines.push(Check::fail(
                label,
                "no weft-agent pod on this node",
                format!("kubectl -n {ns} describe daemonset {DAEMONSET} (its events say why)"),
            ));
            continue;
        };
        let pod_name = name(pod);
        if !is_ready(pod) {
            lines.push(Check::fail(
                label,
                format!("pod {pod_name} {}", why_not_ready(pod)),
                format!("kubectl -n {ns} describe pod {pod_name}; kubectl -n {ns} logs {pod_name}"),
            ));
            continue;
        }
        let count = match probes.get(pod_name) {
            Some(AgentProbe::Answered { metrics, .. }) => match enrolled(metrics) {
                Some(n) => {
                    total += n;
                    format!("{n} pod{} enrolled", if n == 1 { "" } else { "s" })
                }
                None => {
                    unknown
                        .entry(format!(
                            "its metrics have no {ENROLLED_METRIC} (an agent older than this mesh-agent)"
                        ))
                        .or_default()
                        .push(node);
                    "enrolled pods unknown".into()
                }
            },
            Some(AgentProbe::Unreachable(why) | AgentProbe::NotTried(why)) => {
                unknown.entry(why.clone()).or_default().push(node);
                "enrolled pods unknown".into()
            }
            None => "enrolled pods unknown".into(),
        };
        lines.push(Check::pass(
            label,
            format!("ready (pod {pod_name}), {count}"),
        ));
    }
    let mut out = if lines.len() <= NODE_LINES {
        lines
    } else {
        let ready = lines.iter().filter(|c| c.result == Verdict::Pass).count();
        let all = lines.len();
        let mut kept: Vec<Check> = lines
            .into_iter()
            .filter(|c| c.result != Verdict::Pass)
            .collect();
        kept.push(Check::pass(
            "agents",
            format!(
                "{ready} of {all} nodes' agents ready; {total} pods enrolled on those that answered"
            ),
        ));
        kept
    };
    for (why, nodes) in unknown {
        out.push(Check::unknown(
            "enrolled pods",
            format!("on {}: {why}", nodes.join(", ")),
            format!(
                "the count is read from each agent's {ENROLLED_METRIC} through the API server's pod proxy \
                 (/api/v1/namespaces/{ns}/pods/<pod>:15020/proxy/metrics); on a node, \
                 `mesh-agent status` lists the enrolled pods"
            ),
        ));
    }
    out
}

/// The agents' image tag against this `mesh-agent`'s version.
pub fn version(ds: &Fetched<DaemonSet>, cli_version: &str) -> Check {
    const LABEL: &str = "agent version";
    let image = ds
        .found()
        .and_then(|ds| ds.spec.template.spec.as_ref())
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone());
    let Some(image) = image else {
        return Check::unknown(
            LABEL,
            "the DaemonSet could not be read",
            "see the DaemonSet line",
        );
    };
    let tag = image_tag(&image);
    match tag {
        Some(tag) if tag.trim_start_matches('v') == cli_version.trim_start_matches('v') => {
            Check::pass(
                LABEL,
                format!("{image}, as this mesh-agent ({cli_version})"),
            )
        }
        Some(tag) => Check::warn(
            LABEL,
            format!(
                "the agents run {image} ({tag}), this mesh-agent is {cli_version}: the CRD lines compare with {cli_version}"
            ),
            format!(
                "check with mesh-agent {tag}, or upgrade the agents (docs/install.md, Upgrade)"
            ),
        ),
        None => Check::unknown(
            LABEL,
            format!("{image} names no version tag"),
            "compare the image's version with `mesh-agent --version`",
        ),
    }
}

/// `repo/name:tag` → `tag`; none for a digest or no tag.
fn image_tag(image: &str) -> Option<&str> {
    if image.contains('@') {
        return None;
    }
    let last = image.rsplit('/').next()?;
    last.split_once(':').map(|(_, tag)| tag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nodes(names: &[&str]) -> Fetched<Vec<Node>> {
        Fetched::Found(
            names
                .iter()
                .map(|n| serde_json::from_value(json!({"metadata": {"name": n}})).unwrap())
                .collect(),
        )
    }

    fn pod(name: &str, node: &str, bound: bool, ready: bool) -> Pod {
        let spec = if bound {
            json!({"containers": [], "nodeName": node})
        } else {
            json!({"containers": [], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}}}})
        };
        let status = if ready {
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]})
        } else if bound {
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}],
                   "containerStatuses": [{"name": "agent", "image": "x", "imageID": "", "ready": false, "restartCount": 3,
                       "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]})
        } else {
            json!({"phase": "Pending"})
        };
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec, "status": status}))
            .unwrap()
    }

    fn ds(desired: i32, updated: i32, ready: i32, image: &str) -> Fetched<DaemonSet> {
        Fetched::Found(
            serde_json::from_value(json!({
                "metadata": {"name": "weft-agent", "generation": 2},
                "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "agent", "image": image}]}}},
                "status": {"desiredNumberScheduled": desired, "updatedNumberScheduled": updated,
                           "numberReady": ready, "currentNumberScheduled": desired,
                           "numberMisscheduled": 0, "observedGeneration": 2},
            }))
            .unwrap(),
        )
    }

    #[test]
    fn rolled_out_on_every_node_passes() {
        let pods = Fetched::Found(vec![
            pod("wa-1", "a", true, true),
            pod("wa-2", "b", true, true),
        ]);
        let c = daemonset(
            &ds(2, 2, 2, "i:0.1.0"),
            &nodes(&["a", "b"]),
            &pods,
            "weft-system",
        );
        assert_eq!(c.result, Verdict::Pass, "{c:?}");
        assert_eq!(c.detail, "rolled out: 2 desired, 2 up to date, 2 ready");
    }

    #[test]
    fn a_node_without_a_ready_agent_fails_and_is_named() {
        let pods = Fetched::Found(vec![
            pod("wa-1", "a", true, true),
            pod("wa-2", "b", false, false),
        ]);
        let c = daemonset(
            &ds(2, 2, 1, "i:0.1.0"),
            &nodes(&["a", "b"]),
            &pods,
            "weft-system",
        );
        assert_eq!(c.result, Verdict::Fail);
        assert!(
            c.detail
                .contains("no ready agent on b (pod wa-2 Pending, not scheduled to the node)"),
            "{c:?}"
        );
        assert!(
            c.fix
                .unwrap()
                .contains("rollout status daemonset/weft-agent")
        );

        let pods = Fetched::Found(vec![
            pod("wa-1", "a", true, true),
            pod("wa-2", "b", true, false),
        ]);
        let c = daemonset(
            &ds(2, 2, 1, "i:0.1.0"),
            &nodes(&["a", "b"]),
            &pods,
            "weft-system",
        );
        assert!(
            c.detail.contains("pod wa-2 Running, CrashLoopBackOff"),
            "{c:?}"
        );
    }

    #[test]
    fn missing_daemonset_and_no_schedulable_node() {
        let c = daemonset(
            &Fetched::Missing,
            &nodes(&["a"]),
            &Fetched::Found(vec![]),
            "weft-system",
        );
        assert_eq!(c.result, Verdict::Fail);
        assert!(c.fix.unwrap().contains("kubectl apply"));
        let c = daemonset(
            &ds(0, 0, 0, "i"),
            &nodes(&["a"]),
            &Fetched::Found(vec![]),
            "weft-system",
        );
        assert_eq!(c.result, Verdict::Fail);
        assert!(c.detail.contains("none of the 1 nodes"));
    }

    #[test]
    fn per_node_lines_with_enrolled_counts_or_unknown() {
        let pods = Fetched::Found(vec![
            pod("wa-1", "a", true, true),
            pod("wa-2", "b", true, true),
            pod("wa-3", "c", false, false),
        ]);
        let mut probes = BTreeMap::new();
        probes.insert(
            "wa-1".to_owned(),
            AgentProbe::Answered {
                metrics: "# HELP x\nweft_enrolled_pods 3\n".into(),
                clock: None,
            },
        );
        probes.insert(
            "wa-2".to_owned(),
            AgentProbe::Unreachable("no route to host".into()),
        );
        let lines = agents(&nodes(&["a", "b", "c"]), &pods, &probes, "weft-system");
        let by_name = |n: &str| lines.iter().find(|c| c.name == n).unwrap();
        assert_eq!(
            by_name("agent a").detail,
            "ready (pod wa-1), 3 pods enrolled"
        );
        assert_eq!(by_name("agent b").result, Verdict::Pass);
        assert!(by_name("agent b").detail.contains("enrolled pods unknown"));
        assert_eq!(by_name("agent c").result, Verdict::Fail);
        let unknown = by_name("enrolled pods");
        assert_eq!(unknown.result, Verdict::Unknown);
        assert_eq!(unknown.detail, "on b: no route to host");
    }

    #[test]
    fn large_clusters_get_a_summary() {
        let names: Vec<String> = (0..30).map(|i| format!("n{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut pods: Vec<Pod> = names
            .iter()
            .map(|n| pod(&format!("p-{n}"), n, true, true))
            .collect();
        pods[5] = pod("p-n5", "n5", true, false);
        let probes = pods
            .iter()
            .map(|p| {
                (
                    p.metadata.name.clone().unwrap(),
                    AgentProbe::Answered {
                        metrics: "weft_enrolled_pods 2".into(),
                        clock: None,
                    },
                )
            })
            .collect();
        let lines = agents(&nodes(&refs), &Fetched::Found(pods), &probes, "weft-system");
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0].name, "agent n5");
        assert_eq!(
            lines[1].detail,
            "29 of 30 nodes' agents ready; 58 pods enrolled on those that answered"
        );
    }

    #[test]
    fn the_agents_gauge_is_what_the_check_reads() {
        let metrics = crate::telemetry::Metrics::new().unwrap();
        metrics.enrolled_pods().set(7);
        let text = String::from_utf8(metrics.render().unwrap()).unwrap();
        assert_eq!(enrolled(&text), Some(7), "{text}");
    }

    #[test]
    fn enrolled_metric_parsing() {
        assert_eq!(enrolled("weft_enrolled_pods 4"), Some(4));
        assert_eq!(enrolled("weft_enrolled_pods{node=\"a\"} 2"), Some(2));
        assert_eq!(enrolled("weft_enrolled_pods_total 9\n"), None);
        assert_eq!(enrolled("x 1"), None);
    }

    #[test]
    fn versions() {
        assert_eq!(
            version(&ds(1, 1, 1, "ghcr.io/weft-mesh/mesh-agent:0.1.0"), "0.1.0").result,
            Verdict::Pass
        );
        let c = version(&ds(1, 1, 1, "ghcr.io/weft-mesh/mesh-agent:v0.2.0"), "0.1.0");
        assert_eq!(c.result, Verdict::Warn);
        assert!(c.fix.unwrap().contains("mesh-agent v0.2.0"));
        assert_eq!(
            version(&ds(1, 1, 1, "localhost:5000/mesh-agent"), "0.1.0").result,
            Verdict::Unknown
        );
        assert_eq!(
            version(&ds(1, 1, 1, "r/m@sha256:abc"), "0.1.0").result,
            Verdict::Unknown
        );
    }
}
