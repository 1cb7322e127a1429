//! Per-request telemetry (docs/architecture.md, "Request telemetry"): the one
//! call both HTTP handlers make per finished request, and Istio's request
//! series behind it. Labels come from the state and closed sets only — never
//! from request data — so a client cannot grow the series
//! (docs/security.md).

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use super::metrics::{ConnectionLabels, TCP_LABELS};

/// `request_protocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestProtocol {
    Http,
    Grpc,
}

impl RequestProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestProtocol::Http => "http",
            RequestProtocol::Grpc => "grpc",
        }
    }
}

/// Envoy's short response flags; a closed set. Renders `-` for `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResponseFlag {
    #[default]
    None,
    /// `UH`: no healthy upstream (no endpoint to send to).
    NoHealthyUpstream,
    /// `UF`: connecting upstream failed.
    UpstreamConnectFailure,
    /// `UT`: the request timed out upstream.
    UpstreamRequestTimeout,
    /// `UR`: the upstream reset the stream.
    UpstreamRemoteReset,
    /// `UC`: the upstream connection ended.
    UpstreamConnectionTermination,
    /// `DC`: the client went away.
    DownstreamConnectionTermination,
    /// `NR`: no route matched.
    NoRouteFound,
    /// `URX`: retries exhausted.
    UpstreamRetryLimitExceeded,
    /// `UAEX`: Weft uses it for RBAC (AuthorizationPolicy) denials.
    Unauthorized,
    /// `UO`: a limit (overload) refused the request.
    Overloaded,
    /// `DPE`: the client broke the HTTP protocol.
    InvalidRequest,
}

impl ResponseFlag {
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseFlag::None => "-",
            ResponseFlag::NoHealthyUpstream => "UH",
            ResponseFlag::UpstreamConnectFailure => "UF",
            ResponseFlag::UpstreamRequestTimeout => "UT",
            ResponseFlag::UpstreamRemoteReset => "UR",
            ResponseFlag::UpstreamConnectionTermination => "UC",
            ResponseFlag::DownstreamConnectionTermination => "DC",
            ResponseFlag::NoRouteFound => "NR",
            ResponseFlag::UpstreamRetryLimitExceeded => "URX",
            ResponseFlag::Unauthorized => "UAEX",
            ResponseFlag::Overloaded => "UO",
            ResponseFlag::InvalidRequest => "DPE",
        }
    }
}

/// One finished request, as the HTTP handlers report it.
#[derive(Clone, Copy, Debug)]
pub struct RequestRecord<'a> {
    pub labels: &'a ConnectionLabels,
    pub protocol: RequestProtocol,
    /// 0 when no response was sent (client gone).
    pub response_code: u16,
    /// From the `grpc-status` trailer or header.
    pub grpc_status: Option<u32>,
    pub flag: ResponseFlag,
    /// Request start to response end.
    pub duration: Duration,
    /// Body bytes.
    pub request_bytes: u64,
    pub response_bytes: u64,
    // For the access log and tap only — NEVER labels (unbounded):
    pub method: &'a str,
    /// Path and query as received.
    pub path: &'a str,
    pub authority: &'a str,
    /// `namespace/name`, or the peer address when unknown.
    pub source_pod: &'a str,
    /// `ip:port` of the endpoint the request went to, `""` if none.
    pub destination: &'a str,
}

/// Istio's request labels: the connection's nine, then these four.
pub(super) const REQUEST_LABELS: [&str; 13] = [
    TCP_LABELS[0],
    TCP_LABELS[1],
    TCP_LABELS[2],
    TCP_LABELS[3],
    TCP_LABELS[4],
    TCP_LABELS[5],
    TCP_LABELS[6],
    TCP_LABELS[7],
    TCP_LABELS[8],
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
];

/// Istio's (Envoy's default) duration buckets, in milliseconds.
const DURATION_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Body sizes: decades from 1 B to 10 MB (exponential, factor 10).
const BYTES_BUCKETS: [f64; 8] = [
    1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0, 1000000.0, 10000000.0,
];

/// The four request series, registered in the agent's registry.
pub(super) struct RequestMetrics {
    total: IntCounterVec,
    duration_ms: HistogramVec,
    request_bytes: HistogramVec,
    response_bytes: HistogramVec,
}

impl RequestMetrics {
    pub(super) fn register(registry: &Registry) -> prometheus::Result<Self> {
        let total = IntCounterVec::new(
            Opts::new(
                "istio_requests_total",
                "The total number of requests handled",
            ),
            &REQUEST_LABELS,
        )?;
        registry.register(Box::new(total.clone()))?;
        let histogram =
            |name: &str, help: &str, buckets: &[f64]| -> prometheus::Result<HistogramVec> {
                let h = HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                    &REQUEST_LABELS,
                )?;
                registry.register(Box::new(h.clone()))?;
                Ok(h)
            };
        Ok(Self {
            total,
            duration_ms: histogram(
                "istio_request_duration_milliseconds",
                "The duration of requests, from their start to the end of the response",
                &DURATION_BUCKETS_MS,
            )?,
            request_bytes: histogram(
                "istio_request_bytes",
                "The size of HTTP request bodies",
                &BYTES_BUCKETS,
            )?,
            response_bytes: histogram(
                "istio_response_bytes",
                "The size of HTTP response bodies",
                &BYTES_BUCKETS,
            )?,
        })
    }

    pub(super) fn record(&self, r: &RequestRecord<'_>) {
        let code = r.response_code.to_string();
        // Istio leaves it empty for requests that are not gRPC (its stats
        // tag regex for this label alone accepts an empty value).
        let grpc = r.grpc_status.map(|s| s.to_string()).unwrap_or_default();
        let values = request_label_values(r.labels, r.protocol, &code, &grpc, r.flag);
        self.total.with_label_values(&values).inc();
        self.duration_ms
            .with_label_values(&values)
            .observe(r.duration.as_secs_f64() * 1000.0);
        self.request_bytes
            .with_label_values(&values)
            .observe(r.request_bytes as f64);
        self.response_bytes
            .with_label_values(&values)
            .observe(r.response_bytes as f64);
    }
}

/// The thirteen label values, in [`REQUEST_LABELS`] order.
pub(super) fn request_label_values<'a>(
    labels: &'a ConnectionLabels,
    protocol: RequestProtocol,
    response_code: &'a str,
    grpc_status: &'a str,
    flag: ResponseFlag,
) -> [&'a str; 13] {
    let c = labels.values();
    [
        c[0],
        c[1],
        c[2],
        c[3],
        c[4],
        c[5],
        c[6],
        c[7],
        c[8],
        protocol.as_str(),
        response_code,
        grpc_status,
        flag.as_str(),
    ]
}
