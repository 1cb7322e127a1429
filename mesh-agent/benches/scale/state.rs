//! The cluster source's state at one cluster size, through the agent's own
//! code: objects listed into the cluster source's `Cache` as its watchers do
//! (routes and policies typed and checked one by one), then the publish step
//! timed as the agent runs it after every (debounced) change: the cache's
//! resource set, `state::build`, the set dropped.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::core::DynamicObject;
use kube::runtime::watcher::Event;
use mesh_agent::config::kube::Cache;
use mesh_agent::config::kube::checked::{Kept, check};
use mesh_agent::state;
use serde_json::{Value, json};

use super::counting_alloc as heap;
use super::fixtures as fx;

/// `config/kube/mod.rs`'s CHECKED_KINDS, in its order.
const CHECKED: [(&str, &str); 5] = [
    ("HTTPRoute", "gateway.networking.k8s.io/v1"),
    ("GRPCRoute", "gateway.networking.k8s.io/v1"),
    ("ReferenceGrant", "gateway.networking.k8s.io/v1beta1"),
    ("AuthorizationPolicy", "weft.dev/v1alpha1"),
    ("TrafficPolicy", "weft.dev/v1alpha1"),
];
const NODES: usize = 5_000;
/// Rebuilds timed per size (the median is reported).
const REBUILDS: usize = 5;
/// Pod update events timed into the full pods mirror.
const UPDATES: usize = 20_000;

fn key(ns: Option<&str>, name: Option<&str>) -> String {
    match ns {
        Some(ns) => format!("{ns}/{}", name.unwrap_or_default()),
        None => name.unwrap_or_default().to_owned(),
    }
}

fn typed<K: serde::de::DeserializeOwned>(v: Value) -> K {
    serde_json::from_value(v).expect("fixtures are valid objects")
}

/// The agent's key of an object: `namespace/name`.
fn key_of<K: kube::Resource>(o: &K) -> String {
    key(o.meta().namespace.as_deref(), o.meta().name.as_deref())
}

/// A core kind's object stored as it came.
fn store<K: kube::Resource>(o: K, _: Option<&K>) -> Option<(String, K)> {
    Some((key_of(&o), o))
}

/// A whole relist (`Init`, one `InitApply` per object, `InitDone`) handed to
/// `apply` (one mirror's); returns the heap bytes it added.
fn relist<K>(objects: impl Iterator<Item = K>, mut apply: impl FnMut(Event<K>)) -> usize {
    let before = heap::live();
    apply(Event::Init);
    for o in objects {
        apply(Event::InitApply(o));
    }
    apply(Event::InitDone);
    heap::live().saturating_sub(before)
}

fn relist_checked(cache: &mut Cache, index: usize, objects: impl Iterator<Item = Value>) -> usize {
    let before = heap::live();
    let (kind, api_version) = CHECKED[index];
    let store = |o: DynamicObject, previous: Option<&Kept>| {
        Some((
            key_of(&o),
            Kept::after(check(kind, api_version, o), previous),
        ))
    };
    let mirror = &mut cache.checked[index];
    mirror.apply(Event::Init, store, key_of);
    for o in objects {
        mirror.apply(Event::InitApply(typed(o)), store, key_of);
    }
    mirror.apply(Event::InitDone, store, key_of);
    heap::live().saturating_sub(before)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn node_of(pod: usize) -> usize {
    pod % NODES
}

/// Fills a cache with a cluster of `pods` pods and times its rebuilds.
pub fn measure(pods: usize) -> Value {
    let (namespaces, services, routes) =
        (fx::namespaces(pods), fx::services(pods), fx::routes(pods));
    let mut cache = Cache::new(CHECKED.len());
    let t = Instant::now();
    let ns_bytes = relist(
        (0..namespaces).map(|n| typed::<Namespace>(fx::namespace(n))),
        |e| _ = cache.namespaces.apply(e, store, key_of),
    );
    let pod_bytes = relist(
        (0..pods).map(|i| typed::<Pod>(fx::trimmed_pod(i, node_of(i)))),
        |e| _ = cache.pods.apply(e, store, key_of),
    );
    let svc_bytes = relist(
        (0..services).map(|s| typed::<Service>(fx::service(s))),
        |e| _ = cache.services.apply(e, store, key_of),
    );
    let slice_bytes = relist(
        (0..services).map(|s| typed::<EndpointSlice>(fx::endpoint_slice(s, node_of))),
        |e| _ = cache.endpoint_slices.apply(e, store, key_of),
    );
    let mut checked_bytes = relist_checked(&mut cache, 0, (0..routes).map(fx::http_route));
    checked_bytes += relist_checked(&mut cache, 3, (0..namespaces).map(fx::authorization_policy));
    for i in [1, 2, 4] {
        checked_bytes += relist_checked(&mut cache, i, std::iter::empty());
    }
    let fill = t.elapsed();
    assert!(cache.synced(), "every kind listed");

    // The publish step, as after every change: a fresh set, built, dropped.
    let base = heap::live();
    let (mut times, mut listing) = (Vec::new(), Vec::new());
    let (mut snapshot_bytes, mut peak_bytes) = (0, 0);
    let mut kept = None;
    for _ in 0..REBUILDS {
        heap::reset_peak();
        let before = heap::live();
        let t = Instant::now();
        let (set, refused) = cache.resources();
        let listed = t.elapsed();
        assert!(refused.is_empty(), "fixtures are refused: {refused:?}");
        let snap = state::build(&set);
        drop(set);
        times.push(t.elapsed());
        listing.push(listed);
        peak_bytes = heap::peak() - before;
        snapshot_bytes = heap::live() - before;
        assert_eq!(snap.workloads().count(), pods);
        // The agent holds the old snapshot while the next is built.
        kept = Some(snap);
    }
    drop(kept);
    assert!(heap::live() <= base + 4096, "a rebuild leaks");
    times.sort();
    listing.sort();
    let rebuild = times[times.len() / 2];
    let resources_ms = ms(listing[listing.len() / 2]);

    // A pod's update into the full mirror (a status change), stored as a
    // trimmed pod: what the watch task does per event after decoding it.
    let updates: Vec<Pod> = (0..UPDATES)
        .map(|j| typed(fx::trimmed_pod((j * 7919) % pods, node_of(j))))
        .collect();
    let t = Instant::now();
    apply_updates(&mut cache, updates);
    let per_update = t.elapsed().as_secs_f64() * 1e6 / UPDATES as f64;

    let cache_bytes = ns_bytes + pod_bytes + svc_bytes + slice_bytes + checked_bytes;
    println!(
        "{pods:>7} pods, {services:>6} Services+slices, {routes:>5} routes, {namespaces:>4} policies: \
         cache {:.1} MB ({} B/pod, {} B/Service incl. its slice), snapshot {:.1} MB ({} B/pod); \
         rebuild {:.1} ms median of {REBUILDS} (resource set {:.1} ms), peak +{:.1} MB; \
         pod update {per_update:.2} µs; filled in {:.1} s",
        cache_bytes as f64 / 1e6,
        pod_bytes / pods,
        (svc_bytes + slice_bytes) / services,
        snapshot_bytes as f64 / 1e6,
        snapshot_bytes / pods,
        ms(rebuild),
        resources_ms,
        peak_bytes as f64 / 1e6,
        fill.as_secs_f64(),
    );
    json!({
        "pods": pods, "services": services, "endpoint_slices": services, "routes": routes,
        "policies": namespaces, "namespaces": namespaces,
        "cache_bytes": cache_bytes, "cache_pod_bytes": pod_bytes, "cache_service_bytes": svc_bytes,
        "cache_slice_bytes": slice_bytes, "cache_other_bytes": ns_bytes + checked_bytes,
        "snapshot_bytes": snapshot_bytes, "rebuild_peak_bytes": peak_bytes,
        "rebuild_ms": ms(rebuild), "rebuild_resources_ms": resources_ms,
        "pod_update_us": per_update,
    })
}

fn apply_updates(cache: &mut Cache, updates: Vec<Pod>) {
    for p in updates {
        std::hint::black_box(cache.pods.apply(Event::Apply(p), store, key_of));
    }
}

/// Inline sizes of the stored types: a k8s-openapi object costs its struct
/// whatever few of its fields are set (a trimmed pod too).
pub fn type_sizes() -> Value {
    use std::mem::size_of;
    let sizes = json!({
        "Pod": size_of::<Pod>(), "Service": size_of::<Service>(),
        "EndpointSlice": size_of::<EndpointSlice>(), "Workload": size_of::<state::Workload>(),
    });
    println!("inline sizes (bytes): {sizes}");
    sizes
}
