//! `cargo xtask bench --scale`: the agent's costs per node (100 pods × 1,000
//! connections) and cluster-wide (5,000 nodes × 100,000 pods), extrapolated
//! from unit costs measured on this machine by mesh-agent's `scale` bench
//! (the cluster source's cache and snapshot rebuild at 1k/10k/100k pods, one
//! watch event per kind, the CA's signing, the kernel maps) and, when given,
//! the idle-connection figures of `idle_conns.rs`. The model and its
//! assumptions are docs/performance.md's "At scale"; the report goes to
//! `target/bench/scale.md` and is printed.

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::{cargo, step, workspace_root};

mod render;
pub use render::render;

/// The scenario of issue 15, item 6.
const NODES: f64 = 5_000.0;
const CLUSTER_PODS: f64 = 100_000.0;
const PODS_PER_NODE: f64 = 100.0;
const CONNS_PER_POD: f64 = 1_000.0;
/// Watch events one pod's life causes, by the usual Kubernetes sequence:
/// Pod ADDED, bound, IP assigned, running and Ready, deletionTimestamp set,
/// not Ready, DELETED (7); its EndpointSlice rewritten when the endpoint
/// appears (not ready), turns ready, turns terminating, and goes (4).
const POD_EVENTS_PER_LIFE: f64 = 7.0;
const SLICE_EVENTS_PER_LIFE: f64 = 4.0;
/// `config/kube/mod.rs`: changes closer together than this make one snapshot.
const DEBOUNCE_S: f64 = 0.05;
/// `identity/manager.rs` and `run/args.rs`: certificates live 24 h and are
/// renewed at half life.
const CERT_LIFETIME_S: f64 = 24.0 * 3600.0;
/// Streams a tunnel connection carries before the pool opens another
/// (docs/architecture.md, "Limits").
const STREAMS_PER_TUNNEL: f64 = 100.0;

/// What mesh-agent's `scale` bench measured (its JSON).
#[derive(Debug, Deserialize)]
pub struct Units {
    pub sizes: Vec<Size>,
    pub watch: Watch,
    pub ca: Ca,
    pub kernel_maps: KernelMaps,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Size {
    pub pods: f64,
    pub services: f64,
    pub cache_bytes: f64,
    pub cache_pod_bytes: f64,
    pub cache_service_bytes: f64,
    pub cache_slice_bytes: f64,
    pub snapshot_bytes: f64,
    pub rebuild_peak_bytes: f64,
    pub rebuild_ms: f64,
    pub rebuild_resources_ms: f64,
    pub pod_update_us: f64,
}

#[derive(Debug, Deserialize)]
pub struct Watch {
    pub pod_event_bytes: f64,
    pub pod_decode_us: f64,
    pub slice_event_bytes: f64,
    pub slice_decode_us: f64,
    pub slice_endpoints: f64,
    pub service_event_bytes: f64,
}

#[derive(Debug, Deserialize)]
pub struct Ca {
    pub ca_issue_us: f64,
    pub ca_check_csr_us: f64,
    pub agent_keygen_csr_us: f64,
}

#[derive(Debug, Default, Deserialize)]
pub struct KernelMaps {
    #[serde(default)]
    pub maps: Vec<KernelMap>,
    pub memlock_total: Option<f64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct KernelMap {
    pub name: String,
    pub max_entries: f64,
    pub memlock: f64,
}

/// Idle proxied connections, measured by `idle_conns.rs` across both agents.
#[derive(Debug, Clone, Copy)]
pub struct PerConnection {
    pub kib: f64,
    pub fds_per_socket: f64,
    pub measured_at: u64,
}

/// Runs the unit-cost bench and returns its figures.
pub fn measure() -> Result<Units> {
    let dir = workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("scale-units.json");
    let path_arg = path.to_string_lossy().into_owned();
    step(
        "scale: cache, rebuild, watch events, CA and kernel maps at 1k/10k/100k pods",
        cargo()
            .args([
                "bench",
                "-p",
                "mesh-agent",
                "--bench",
                "scale",
                "--",
                "--json",
            ])
            .arg(&path_arg),
    )?;
    let text = std::fs::read_to_string(&path).with_context(|| path_arg.clone())?;
    serde_json::from_str(&text)
        .with_context(|| format!("{path_arg}: not the scale bench's figures"))
}

/// Writes and prints the report.
pub fn report(units: &Units, churn: f64, conn: Option<PerConnection>) -> Result<()> {
    let text = render(units, churn, conn);
    let path = workspace_root().join("target/bench/scale.md");
    std::fs::write(&path, &text)?;
    println!("\n{text}\n(written to {})", path.display());
    Ok(())
}

/// `field` at `pods`, on the line through the two measured sizes nearest
/// above it (or the two largest): the costs are linear in the cluster's size
/// (the report's per-pod columns show how nearly).
pub fn linear_at(sizes: &[Size], pods: f64, field: fn(&Size) -> f64) -> f64 {
    let mut s: Vec<&Size> = sizes.iter().collect();
    s.sort_by(|a, b| a.pods.total_cmp(&b.pods));
    match s.as_slice() {
        [] => 0.0,
        [one] => field(one) * pods / one.pods,
        _ => {
            let hi = s
                .iter()
                .position(|x| x.pods >= pods)
                .unwrap_or(s.len() - 1)
                .max(1);
            let (a, b) = (s[hi - 1], s[hi]);
            let slope = (field(b) - field(a)) / (b.pods - a.pods);
            field(b) + slope * (pods - b.pods)
        }
    }
}

/// Snapshots rebuilt per second, the share of one core they take and the
/// worst delay from a change to its snapshot, for `events` changes a second
/// and a rebuild of `rebuild_s`: the publisher waits `DEBOUNCE_S` after a
/// change, then builds; changes during a build make the next one.
pub fn rebuild_load(events: f64, rebuild_s: f64) -> (f64, f64, f64) {
    let cycle = DEBOUNCE_S + rebuild_s;
    let rate = events.min(1.0 / cycle);
    (rate, rate * rebuild_s, cycle + rebuild_s)
}

/// Certificates the CA signs per second: every (node, service account) pair
/// renews at half life, and each pod start can add a pair.
pub fn issuance_rate(pairs: f64, churn: f64) -> f64 {
    pairs / (CERT_LIFETIME_S / 2.0) + churn
}

/// Distinct (node, service account) pairs: each pod on a node where no other
/// pod has its account; with 10 pods per account spread over 5,000 nodes,
/// nearly every pod. `pods_per_account` pods placed at random over `nodes`.
pub fn identity_pairs(pods: f64, pods_per_account: f64, nodes: f64) -> f64 {
    let accounts = pods / pods_per_account;
    let nodes_per_account = nodes * (1.0 - (1.0 - 1.0 / nodes).powf(pods_per_account));
    accounts * nodes_per_account
}

/// Entries a node with `conns` connections each way needs in the kernel map
/// `name` (as the kernel truncates it), and what a full map does.
fn map_need(name: &str, conns: f64) -> Option<(f64, &'static str)> {
    let need = match name {
        // One per redirected app socket, until it closes: `getpeername`
        // reads it. An LRU map: the oldest open connections lose theirs.
        "ORIG_DST_BY_COO" => (
            conns,
            "one per open outgoing app socket (`getpeername`); LRU: the oldest lose theirs",
        ),
        // Both loopback ends at the source and at the destination.
        "FAST_PATH_SOCKE" => (
            4.0 * conns,
            "fast path only: both loopback ends at source and destination; a socket that does not fit takes the normal path",
        ),
        "POD_CGROUPS" | "ENROLLED_NETNS" => (
            PODS_PER_NODE,
            "one per pod on the node; a pod that does not fit stays refused",
        ),
        _ => return None,
    };
    Some(need)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(pods: f64, cache: f64, rebuild_ms: f64) -> Size {
        Size {
            pods,
            services: pods / 10.0,
            cache_bytes: cache,
            cache_pod_bytes: 0.0,
            cache_service_bytes: 0.0,
            cache_slice_bytes: 0.0,
            snapshot_bytes: 0.0,
            rebuild_peak_bytes: 0.0,
            rebuild_ms,
            rebuild_resources_ms: 0.0,
            pod_update_us: 0.0,
        }
    }

    #[test]
    fn linear_costs_extrapolate_from_the_two_largest_sizes() {
        // A fixed 1 MB plus 1 KB per pod, measured at 1k and 10k.
        let sizes = vec![size(10_000.0, 11e6, 100.0), size(1_000.0, 2e6, 10.0)];
        let at = linear_at(&sizes, 100_000.0, |s| s.cache_bytes);
        assert!((at - 101e6).abs() < 1.0, "{at}");
        // Between sizes: the line through its neighbours.
        let between = linear_at(&sizes, 5_000.0, |s| s.rebuild_ms);
        assert!((between - 50.0).abs() < 1e-9, "{between}");
        assert_eq!(linear_at(&sizes[..1], 20_000.0, |s| s.rebuild_ms), 200.0);
    }

    #[test]
    fn rebuilds_run_back_to_back_once_changes_outpace_them() {
        // Rare changes: one rebuild each.
        let (rate, core, _) = rebuild_load(0.1, 0.2);
        assert!((rate - 0.1).abs() < 1e-9 && (core - 0.02).abs() < 1e-9);
        // Frequent changes: debounce + build per cycle, the core mostly busy.
        let (rate, core, delay) = rebuild_load(100.0, 0.45);
        assert!((rate - 2.0).abs() < 1e-9, "{rate}");
        assert!((core - 0.9).abs() < 1e-9, "{core}");
        assert!((delay - 0.95).abs() < 1e-9, "{delay}");
    }

    #[test]
    fn identities_are_nearly_one_per_pod_when_accounts_spread_over_many_nodes() {
        let pairs = identity_pairs(100_000.0, 10.0, 5_000.0);
        assert!(pairs > 99_000.0 && pairs < 100_000.0, "{pairs}");
        // All of an account's pods on one node: one pair per account.
        assert!((identity_pairs(100.0, 10.0, 1.0) - 10.0).abs() < 1e-9);
        // 100,000 pairs renewed every 12 h, plus 10 pod starts a second.
        let rate = issuance_rate(100_000.0, 10.0);
        assert!((rate - (100_000.0 / 43_200.0 + 10.0)).abs() < 1e-9);
    }
}
