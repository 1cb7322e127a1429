//! One watch event per kind as the API server sends it (`{"type":"MODIFIED",
//! "object":…}`, one JSON line; kube-rs asks for JSON, and the API server does
//! not compress watch streams): its size, and the CPU an agent spends decoding
//! it into the typed object (what kube-rs's watcher does before the cluster
//! source stores it).

use std::time::Instant;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::WatchEvent;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::fixtures as fx;

const DECODES: usize = 5_000;

fn event(object: Value) -> Vec<u8> {
    let mut line = serde_json::to_vec(&json!({"type": "MODIFIED", "object": object}))
        .expect("JSON values serialize");
    line.push(b'\n');
    line
}

/// Bytes of one event and µs to decode it.
fn one<K: DeserializeOwned>(make: impl Fn(usize) -> Value) -> (usize, f64) {
    let lines: Vec<Vec<u8>> = (0..DECODES).map(|i| event(make(i))).collect();
    let bytes = lines.iter().map(Vec::len).sum::<usize>() / DECODES;
    let t = Instant::now();
    for l in &lines {
        let e: WatchEvent<K> = serde_json::from_slice(l).expect("events decode");
        std::hint::black_box(e);
    }
    (bytes, t.elapsed().as_secs_f64() * 1e6 / DECODES as f64)
}

pub fn measure() -> Value {
    let (pod, pod_us) = one::<Pod>(|i| fx::pod(i * 10 + 3, i % 5000));
    let (slice, slice_us) = one::<EndpointSlice>(|s| fx::endpoint_slice(s, |i| i % 5000));
    let (service, service_us) = one::<Service>(fx::service);
    println!(
        "watch events: Pod {pod} B ({pod_us:.1} µs to decode), EndpointSlice of {} endpoints {slice} B \
         ({slice_us:.1} µs), Service {service} B ({service_us:.1} µs)",
        fx::PODS_PER_SERVICE
    );
    json!({
        "pod_event_bytes": pod, "pod_decode_us": pod_us,
        "slice_event_bytes": slice, "slice_decode_us": slice_us, "slice_endpoints": fx::PODS_PER_SERVICE,
        "service_event_bytes": service, "service_decode_us": service_us,
    })
}
