//! `cargo xtask bench --scale`: the agent's costs per node (100 pods × 1,000
//! connections) and cluster-wide (5,000 nodes × 100,000 pods), extrapolated
//! from unit costs measured on this machine by mesh-agent's `scale` bench
//! (the cluster source's cache and snapshot rebuild at 1k/10k/100k pods, one
//! watch event per kind, the CA's signing, the kernel maps) and, when given,
//! the idle-connection figures of `idle_conns.rs`. The model and its
//! assumptions are docs/performance.md's "At scale"; the report goes to
//! `target/bench/scale.md` and is printed.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::{cargo, step, workspace_root};

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

fn mb(bytes: f64) -> String {
    format!("{:.1} MB", bytes / 1e6)
}

fn gb(bytes: f64) -> String {
    format!("{:.2} GB", bytes / 1e9)
}

pub fn render(u: &Units, churn: f64, conn: Option<PerConnection>) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "## At scale: unit costs measured on this machine\n");
    let _ = writeln!(
        o,
        "| cluster pods | Services (+ slices) | cache | B/pod in cache | B/Service + slice | snapshot | B/pod in snapshot | rebuild (of which the resource set) | ns/pod | rebuild peak | pod event into cache |"
    );
    let _ = writeln!(
        o,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for s in &u.sizes {
        let _ = writeln!(
            o,
            "| {:.0} | {:.0} | {} | {:.0} | {:.0} | {} | {:.0} | {:.0} ms ({:.0} ms) | {:.0} | +{} | {:.2} µs |",
            s.pods,
            s.services,
            mb(s.cache_bytes),
            s.cache_pod_bytes / s.pods,
            (s.cache_service_bytes + s.cache_slice_bytes) / s.services,
            mb(s.snapshot_bytes),
            s.snapshot_bytes / s.pods,
            s.rebuild_ms,
            s.rebuild_resources_ms,
            s.rebuild_ms * 1e6 / s.pods,
            mb(s.rebuild_peak_bytes),
            s.pod_update_us
        );
    }
    let w = &u.watch;
    let _ = writeln!(
        o,
        "\nWatch events (JSON, as sent): Pod {:.0} B (decode {:.1} µs), EndpointSlice of {:.0} endpoints {:.0} B (decode {:.1} µs), Service {:.0} B.",
        w.pod_event_bytes,
        w.pod_decode_us,
        w.slice_endpoints,
        w.slice_event_bytes,
        w.slice_decode_us,
        w.service_event_bytes
    );
    let _ = writeln!(
        o,
        "CA, one core: {:.0} µs per certificate ({:.0}/s; CSR check {:.0} µs), not counting its TokenReview and pod lookup; agent's key pair + CSR {:.0} µs.",
        u.ca.ca_issue_us,
        1e6 / u.ca.ca_issue_us,
        u.ca.ca_check_csr_us,
        u.ca.agent_keygen_csr_us
    );
    let maps = &u.kernel_maps;
    match (&maps.error, maps.memlock_total) {
        (None, Some(total)) => {
            let list: Vec<String> = maps
                .maps
                .iter()
                .filter(|m| m.memlock >= 1e5)
                .map(|m| format!("{} {:.0} entries {}", m.name, m.max_entries, mb(m.memlock)))
                .collect();
            let _ = writeln!(
                o,
                "Kernel maps: {} in all, fixed at load ({}).",
                mb(total),
                list.join(", ")
            );
        }
        (e, _) => {
            let _ = writeln!(
                o,
                "Kernel maps: not measured ({}).",
                e.as_deref().unwrap_or("?")
            );
        }
    }
    render_node(&mut o, u, conn);
    render_cluster(&mut o, u, churn);
    o
}

fn render_node(o: &mut String, u: &Units, conn: Option<PerConnection>) {
    let conns = PODS_PER_NODE * CONNS_PER_POD;
    let _ = writeln!(
        o,
        "\n## Per node: {PODS_PER_NODE:.0} pods × {CONNS_PER_POD:.0} connections each\n"
    );
    let _ = writeln!(
        o,
        "Each pod both opens and serves {CONNS_PER_POD:.0} connections, all to or from other nodes: the agent holds {conns:.0} source ends and {conns:.0} destination ends.\n"
    );
    let _ = writeln!(o, "| cost | per node | from |");
    let _ = writeln!(o, "|---|---:|---|");
    match conn {
        Some(c) => {
            let _ = writeln!(
                o,
                "| agent memory for the connections | {} | {:.1} KiB per connection across both agents (idle, {} measured) |",
                gb(conns * c.kib * 1024.0),
                c.kib,
                c.measured_at
            );
            let _ = writeln!(
                o,
                "| descriptors | {:.0} | {:.2} per proxied socket, two proxied sockets per connection |",
                conns * 2.0 * c.fds_per_socket,
                c.fds_per_socket
            );
        }
        None => {
            let _ = writeln!(
                o,
                "| agent memory, descriptors for the connections | not measured | `--idle-conns` (idle_conns.rs) |"
            );
        }
    }
    let _ = writeln!(
        o,
        "| tunnel connections (TLS handshakes when opened) | ≥ {:.0} each way | {STREAMS_PER_TUNNEL:.0} streams per tunnel connection |",
        conns / STREAMS_PER_TUNNEL
    );
    if let Some(total) = u.kernel_maps.memlock_total {
        let _ = writeln!(
            o,
            "| kernel maps | {} | fixed at load, whatever the load |",
            mb(total)
        );
        for m in &u.kernel_maps.maps {
            let Some((needed, what)) = map_need(&m.name, conns) else {
                continue;
            };
            let verdict = if m.max_entries < needed {
                "TOO SMALL"
            } else {
                "fits"
            };
            let _ = writeln!(
                o,
                "| {} entries | {needed:.0} needed, {:.0} held: {verdict} | {what} |",
                m.name, m.max_entries
            );
        }
    }
    let state = linear_at(&u.sizes, CLUSTER_PODS, |s| s.cache_bytes + s.snapshot_bytes);
    let _ = writeln!(
        o,
        "| cluster state (the whole cluster's, see below) | {} | cache + one snapshot at {CLUSTER_PODS:.0} pods |",
        mb(state)
    );
}

fn render_cluster(o: &mut String, u: &Units, churn: f64) {
    let w = &u.watch;
    let at = |f: fn(&Size) -> f64| linear_at(&u.sizes, CLUSTER_PODS, f);
    let (cache, snapshot, peak) = (
        at(|s| s.cache_bytes),
        at(|s| s.snapshot_bytes),
        at(|s| s.rebuild_peak_bytes),
    );
    let rebuild_s = at(|s| s.rebuild_ms) / 1e3;
    let events = churn * (POD_EVENTS_PER_LIFE + SLICE_EVENTS_PER_LIFE);
    let bytes = churn
        * (POD_EVENTS_PER_LIFE * w.pod_event_bytes + SLICE_EVENTS_PER_LIFE * w.slice_event_bytes);
    let decode = churn
        * (POD_EVENTS_PER_LIFE * w.pod_decode_us + SLICE_EVENTS_PER_LIFE * w.slice_decode_us)
        / 1e6;
    let (rebuilds, core, delay) = rebuild_load(events, rebuild_s);
    let pairs = identity_pairs(CLUSTER_PODS, 10.0, NODES);
    let issue = issuance_rate(pairs, churn);
    let relist = CLUSTER_PODS * w.pod_event_bytes
        + CLUSTER_PODS / 10.0 * (w.slice_event_bytes + w.service_event_bytes);
    let _ = writeln!(
        o,
        "\n## Cluster-wide: {NODES:.0} nodes × {CLUSTER_PODS:.0} pods, {churn} pod starts/s (and as many stops)\n"
    );
    let _ = writeln!(o, "| cost | per agent | whole cluster | from |");
    let _ = writeln!(o, "|---|---:|---:|---|");
    let _ = writeln!(
        o,
        "| state memory, steady (cache + snapshot) | {} | {} | cache {} + snapshot {} |",
        mb(cache + snapshot),
        gb(NODES * (cache + snapshot)),
        mb(cache),
        mb(snapshot)
    );
    let _ = writeln!(
        o,
        "| state memory while rebuilding | {} | | + the old snapshot held while the next is built: + {} |",
        mb(cache + snapshot + peak),
        mb(peak)
    );
    let _ = writeln!(
        o,
        "| watch events | {events:.0}/s | {:.0}/s sent by the API servers | {POD_EVENTS_PER_LIFE:.0} Pod + {SLICE_EVENTS_PER_LIFE:.0} EndpointSlice events per pod life |",
        events * NODES
    );
    let _ = writeln!(
        o,
        "| watch traffic | {:.0} KB/s | {:.2} GB/s | {:.0} B per Pod event, {:.0} B per EndpointSlice event |",
        bytes / 1e3,
        bytes * NODES / 1e9,
        w.pod_event_bytes,
        w.slice_event_bytes
    );
    let _ = writeln!(
        o,
        "| relist (agent start, 410 Gone) | {} | {} if all agents relist | every Pod, Service and EndpointSlice once |",
        mb(relist),
        gb(relist * NODES)
    );
    let _ = writeln!(
        o,
        "| decoding events | {:.2}% of a core | | µs per event above |",
        decode * 100.0
    );
    let _ = writeln!(
        o,
        "| snapshot rebuilds | {rebuilds:.1}/s, {:.0}% of a core | {:.0} core-equivalents | {:.0} ms per rebuild at {CLUSTER_PODS:.0} pods; a change waits up to {:.0} ms |",
        core * 100.0,
        core * NODES,
        rebuild_s * 1e3,
        delay * 1e3
    );
    let _ = writeln!(
        o,
        "| certificates | {:.0} identities | {pairs:.0} (node, service account) pairs; the CA signs {issue:.1}/s, {:.3}% of one core | 24 h lifetime renewed at half life, plus one per pod start |",
        pairs / NODES,
        issue * u.ca.ca_issue_us / 1e4
    );
    let _ = writeln!(
        o,
        "| certificates after a CA key rotation or a cluster-wide restart | | {pairs:.0} at once: {:.0} s of one core's signing, and {:.0} API requests (TokenReview and pod lookup each) | |",
        pairs * u.ca.ca_issue_us / 1e6,
        2.0 * pairs
    );
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
