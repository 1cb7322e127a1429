//! The scale report: the measured unit costs, then the node and the cluster
//! tables computed from them by the model in `super`.

use std::fmt::Write as _;

use super::{
    CLUSTER_PODS, CONNS_PER_POD, NODES, POD_EVENTS_PER_LIFE, PODS_PER_NODE, PerConnection,
    SLICE_EVENTS_PER_LIFE, STREAMS_PER_TUNNEL, Size, Units, identity_pairs, issuance_rate,
    linear_at, map_need, rebuild_load,
};

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
