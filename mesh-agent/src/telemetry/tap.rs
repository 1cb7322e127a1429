//! Live requests for `mesh-agent tap` (admin `/tap`, docs/architecture.md,
//! "Request telemetry"), like `linkerd viz tap`. Finished requests are offered
//! to a bounded broadcast; each tap client reads at its own pace and one that
//! falls behind loses events (counted in `weft_tap_events_lost_total`), never
//! slowing a request. With nobody tapping, no event is even built.

use std::sync::Arc;

use prometheus::IntCounter;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::requests::RequestRecord;

/// Events buffered per tap client before it starts losing them.
pub const TAP_BUFFER: usize = 1024;

/// One request, as a tap client sees it (one JSON line on `/tap`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TapEvent {
    pub reporter: String,
    pub protocol: String,
    pub method: String,
    pub path: String,
    pub authority: String,
    /// 0: no response was sent.
    pub status: u16,
    pub grpc_status: Option<u32>,
    /// Envoy's response flag, `-` for none.
    pub flag: String,
    pub latency_ms: f64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// The source pod (`namespace/name`) or the peer's address.
    pub source: String,
    /// The endpoint's `ip:port`, empty if none.
    pub destination: String,
    pub destination_service: String,
    pub source_workload: String,
    pub source_namespace: String,
    pub destination_workload: String,
    pub destination_namespace: String,
}

impl TapEvent {
    pub fn from_record(r: &RequestRecord<'_>) -> Self {
        let l = r.labels;
        TapEvent {
            reporter: l.reporter.as_str().to_owned(),
            protocol: r.protocol.as_str().to_owned(),
            method: r.method.to_owned(),
            path: r.path.to_owned(),
            authority: r.authority.to_owned(),
            status: r.response_code,
            grpc_status: r.grpc_status,
            flag: r.flag.as_str().to_owned(),
            latency_ms: r.duration.as_secs_f64() * 1000.0,
            request_bytes: r.request_bytes,
            response_bytes: r.response_bytes,
            source: r.source_pod.to_owned(),
            destination: r.destination.to_owned(),
            destination_service: l.destination_service.clone(),
            source_workload: l.source_workload.clone(),
            source_namespace: l.source_workload_namespace.clone(),
            destination_workload: l.destination_workload.clone(),
            destination_namespace: l.destination_workload_namespace.clone(),
        }
    }
}

/// `/tap?namespace=N&pod=P`: which requests a client wants. A request matches
/// when its source or its destination matches every given field; the pod is
/// matched against the source pod's name and either side's workload name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TapFilter {
    pub namespace: Option<String>,
    pub pod: Option<String>,
}

impl TapFilter {
    pub fn matches(&self, e: &TapEvent) -> bool {
        // `source` is `namespace/name` when the agent knows the pod.
        let (pod_ns, pod_name) = e.source.split_once('/').unwrap_or(("", ""));
        let source_ns = if e.source_namespace.is_empty() {
            pod_ns
        } else {
            &e.source_namespace
        };
        let source = self.side(source_ns, &[pod_name, &e.source_workload]);
        let destination = self.side(&e.destination_namespace, &[&e.destination_workload]);
        source || destination
    }

    fn side(&self, namespace: &str, names: &[&str]) -> bool {
        let ns_ok = self.namespace.as_deref().is_none_or(|n| n == namespace);
        let pod_ok = self
            .pod
            .as_deref()
            .is_none_or(|p| names.iter().any(|n| !n.is_empty() && *n == p));
        ns_ok && pod_ok
    }
}

/// The broadcast behind `/tap` (cheap to clone).
#[derive(Clone)]
pub struct Tap {
    events: broadcast::Sender<Arc<TapEvent>>,
    lost: IntCounter,
}

impl Tap {
    pub fn new(capacity: usize, lost: IntCounter) -> Self {
        let (events, _) = broadcast::channel(capacity);
        Tap { events, lost }
    }

    /// Whether any client is tapping.
    pub fn is_watched(&self) -> bool {
        self.events.receiver_count() > 0
    }

    /// Offers a request to the tap clients; builds nothing when there are none.
    pub fn publish(&self, r: &RequestRecord<'_>) {
        if self.is_watched() {
            // Err: the last client left meanwhile.
            let _ = self.events.send(Arc::new(TapEvent::from_record(r)));
        }
    }

    pub fn subscribe(&self) -> TapSubscription {
        TapSubscription {
            events: self.events.subscribe(),
            lost: self.lost.clone(),
        }
    }
}

/// What a tap client reads next.
#[derive(Debug, PartialEq)]
pub enum TapItem {
    Event(Arc<TapEvent>),
    /// This many events went by while the client was behind.
    Lost(u64),
}

/// One tap client's place in the stream.
pub struct TapSubscription {
    events: broadcast::Receiver<Arc<TapEvent>>,
    lost: IntCounter,
}

impl TapSubscription {
    /// The next event that matches `filter`, or a count of those lost;
    /// `None` once the agent is going away.
    pub async fn next(&mut self, filter: &TapFilter) -> Option<TapItem> {
        loop {
            match self.events.recv().await {
                Ok(e) if filter.matches(&e) => return Some(TapItem::Event(e)),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    self.lost.inc_by(n);
                    return Some(TapItem::Lost(n));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
