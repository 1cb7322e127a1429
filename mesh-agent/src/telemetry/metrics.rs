//! Istio's standard TCP metrics (docs/architecture.md, "The agent") and Weft's own
//! `weft_*` counters, in a registry of our own.

use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

use super::access_log::{AccessLog, AccessLogFormat};
use super::requests::{RequestMetrics, RequestRecord};
use super::tap::{TAP_BUFFER, Tap};
use crate::proxy::copy::{CopyObserver, Direction};

/// Which end of the connection reports the series.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reporter {
    /// The agent next to the client (outbound).
    #[default]
    Source,
    /// The agent next to the server (inbound).
    Destination,
}

impl Reporter {
    pub fn as_str(self) -> &'static str {
        match self {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
        }
    }
}

/// `connection_security_policy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SecurityPolicy {
    #[default]
    None,
    MutualTls,
}

impl SecurityPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityPolicy::None => "none",
            SecurityPolicy::MutualTls => "mutual_tls",
        }
    }
}

/// The labels of one connection's series. Empty strings render as `unknown`,
/// as Istio does for values it cannot tell.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionLabels {
    pub reporter: Reporter,
    pub source_workload: String,
    pub source_workload_namespace: String,
    pub source_principal: String,
    pub destination_workload: String,
    pub destination_workload_namespace: String,
    pub destination_principal: String,
    pub destination_service: String,
    pub connection_security_policy: SecurityPolicy,
}

pub(super) const TCP_LABELS: [&str; 9] = [
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_service",
    "connection_security_policy",
];

impl ConnectionLabels {
    pub(super) fn values(&self) -> [&str; 9] {
        fn or_unknown(s: &str) -> &str {
            if s.is_empty() { "unknown" } else { s }
        }
        [
            self.reporter.as_str(),
            or_unknown(&self.source_workload),
            or_unknown(&self.source_workload_namespace),
            or_unknown(&self.source_principal),
            or_unknown(&self.destination_workload),
            or_unknown(&self.destination_workload_namespace),
            or_unknown(&self.destination_principal),
            or_unknown(&self.destination_service),
            self.connection_security_policy.as_str(),
        ]
    }
}

/// Why the agent refused a connection (`weft_connections_refused_total{reason}`).
/// A closed set, so the label cannot explode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefuseReason {
    /// The pod is at its connection limit.
    Limit,
    /// No original destination was recorded for an outbound connection.
    NoOriginalDestination,
    /// The resolver or an inbound hook refused it (policy, strict mode, …).
    Policy,
    /// The upstream (direct, or the app behind the tunnel) could not be reached.
    UpstreamConnect,
    /// Opening the tunnel stream failed or the peer refused the CONNECT.
    Tunnel,
}

impl RefuseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RefuseReason::Limit => "limit",
            RefuseReason::NoOriginalDestination => "no_original_destination",
            RefuseReason::Policy => "policy",
            RefuseReason::UpstreamConnect => "upstream_connect",
            RefuseReason::Tunnel => "tunnel",
        }
    }
}

/// Every metric the data path writes. Owns its registry (not the global one).
pub struct Metrics {
    registry: Registry,
    opened: IntCounterVec,
    closed: IntCounterVec,
    sent_bytes: IntCounterVec,
    received_bytes: IntCounterVec,
    config_errors: IntCounter,
    config_rejected: IntCounterVec,
    state_generation: IntGauge,
    refused: IntCounterVec,
    client_address_fallback: IntCounterVec,
    revoked: IntCounter,
    pool_connections: IntGauge,
    enrolled_pods: IntGauge,
    requests: RequestMetrics,
    access_log: Option<AccessLog>,
    access_log_dropped: IntCounter,
    tap: Tap,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        // CPU, memory and descriptors of the agent itself, under the standard
        // `process_*` names dashboards expect.
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let tcp = |name: &str, help: &str| -> prometheus::Result<IntCounterVec> {
            let c = IntCounterVec::new(Opts::new(name, help), &TCP_LABELS)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let opened = tcp(
            "istio_tcp_connections_opened_total",
            "The total number of TCP connections opened",
        )?;
        let closed = tcp(
            "istio_tcp_connections_closed_total",
            "The total number of TCP connections closed",
        )?;
        // Istio's meaning, independent of the reporter (ztunnel
        // src/proxy/metrics.rs help strings, Istio "Standard Metrics" page;
        // /work/shared/background/ztunnel.md §4.1, features.md §4.1):
        // received = bytes of the request direction (client → server),
        // sent = bytes of the response direction (server → client).
        let sent_bytes = tcp(
            "istio_tcp_sent_bytes_total",
            "The size of total bytes sent during response in case of a TCP connection",
        )?;
        let received_bytes = tcp(
            "istio_tcp_received_bytes_total",
            "The size of total bytes received during request in case of a TCP connection",
        )?;
        let config_errors = IntCounter::new(
            "weft_config_errors_total",
            "Configuration inputs rejected as invalid",
        )?;
        registry.register(Box::new(config_errors.clone()))?;
        let config_rejected = IntCounterVec::new(
            Opts::new(
                "weft_config_rejected_total",
                "Objects of the cluster refused on their own as invalid, by kind",
            ),
            &["kind"],
        )?;
        registry.register(Box::new(config_rejected.clone()))?;
        let state_generation = IntGauge::new(
            "weft_state_generation",
            "Generation of the state snapshot in force (grows with every applied change)",
        )?;
        registry.register(Box::new(state_generation.clone()))?;
        let refused = IntCounterVec::new(
            Opts::new(
                "weft_connections_refused_total",
                "Connections the agent refused or could not forward, by reason",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(refused.clone()))?;
        let client_address_fallback = IntCounterVec::new(
            Opts::new(
                "weft_client_address_fallbacks_total",
                "Connections to an app dialled from the pod's own address because the client's could not be kept, by reason",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(client_address_fallback.clone()))?;
        let revoked = IntCounter::new(
            "weft_connections_revoked_total",
            "Open connections closed because a policy change denies them",
        )?;
        registry.register(Box::new(revoked.clone()))?;
        let pool_connections = IntGauge::new(
            "weft_pool_connections",
            "Open pooled tunnel (HTTP/2) connections",
        )?;
        registry.register(Box::new(pool_connections.clone()))?;
        let enrolled_pods = IntGauge::new(
            "weft_enrolled_pods",
            "Pods of this node the agent has enrolled (captured into the mesh)",
        )?;
        registry.register(Box::new(enrolled_pods.clone()))?;
        let requests = RequestMetrics::register(&registry)?;
        let access_log_dropped = IntCounter::new(
            "weft_access_log_dropped_total",
            "Access log lines dropped because stdout did not keep up",
        )?;
        registry.register(Box::new(access_log_dropped.clone()))?;
        let tap_lost = IntCounter::new(
            "weft_tap_events_lost_total",
            "Requests a tap client missed because it read too slowly",
        )?;
        registry.register(Box::new(tap_lost.clone()))?;
        Ok(Self {
            registry,
            opened,
            closed,
            sent_bytes,
            received_bytes,
            config_errors,
            config_rejected,
            state_generation,
            refused,
            client_address_fallback,
            revoked,
            pool_connections,
            enrolled_pods,
            requests,
            access_log: None,
            access_log_dropped,
            tap: Tap::new(TAP_BUFFER, tap_lost),
        })
    }

    /// Turns the access log on (`--access-log`): one line per request on stdout.
    pub fn with_access_log(self, format: Option<AccessLogFormat>) -> std::io::Result<Self> {
        match format {
            None => Ok(self),
            Some(f) => self.with_access_log_sink(
                f,
                super::access_log::QUEUE_LINES,
                Box::new(std::io::stdout()),
            ),
        }
    }

    /// The access log into any writer, behind a queue of `capacity` lines.
    pub fn with_access_log_sink(
        mut self,
        format: AccessLogFormat,
        capacity: usize,
        sink: Box<dyn std::io::Write + Send>,
    ) -> std::io::Result<Self> {
        self.access_log = Some(AccessLog::start(
            format,
            capacity,
            sink,
            self.access_log_dropped.clone(),
        )?);
        Ok(self)
    }

    /// The access log's format, `None` when it is off.
    pub fn access_log_format(&self) -> Option<AccessLogFormat> {
        self.access_log.as_ref().map(AccessLog::format)
    }

    /// The live request stream behind admin `/tap`.
    pub fn tap(&self) -> &Tap {
        &self.tap
    }

    /// One finished HTTP or gRPC request, from either reporter: Istio's request
    /// series (docs/architecture.md, "Request telemetry").
    pub fn record_request(&self, r: &RequestRecord<'_>) {
        self.requests.record(r);
        if let Some(log) = &self.access_log {
            log.log(r);
        }
        self.tap.publish(r);
    }

    /// Counts a connection as opened and returns its byte counters, resolved
    /// once; dropping the result counts it as closed.
    pub fn connection(&self, labels: &ConnectionLabels) -> ConnectionMetrics {
        let values = labels.values();
        self.opened.with_label_values(&values).inc();
        ConnectionMetrics {
            sent: self.sent_bytes.with_label_values(&values),
            received: self.received_bytes.with_label_values(&values),
            closed: self.closed.with_label_values(&values),
        }
    }

    pub fn refused(&self, reason: RefuseReason) {
        self.refused.with_label_values(&[reason.as_str()]).inc();
    }

    /// `weft_client_address_fallbacks_total{reason}` (docs/architecture.md,
    /// "Keeping the client's address").
    pub fn client_address_fallback(&self, reason: &str) {
        self.client_address_fallback
            .with_label_values(&[reason])
            .inc();
    }

    /// An open connection closed because policy now denies it.
    pub fn revoked(&self) {
        self.revoked.inc();
    }

    pub fn config_errors(&self) -> &IntCounter {
        &self.config_errors
    }

    /// `weft_state_generation`: the snapshot in force.
    pub fn state_generation(&self) -> &IntGauge {
        &self.state_generation
    }

    /// `weft_config_rejected_total{kind}`: one per refused version of an object.
    pub fn config_rejected(&self) -> &IntCounterVec {
        &self.config_rejected
    }

    /// The gauge to hand to `proxy::tunnel::Pool::new`.
    pub fn pool_connections(&self) -> &IntGauge {
        &self.pool_connections
    }

    /// `weft_enrolled_pods`, set by the pod manager after each reconcile.
    pub fn enrolled_pods(&self) -> &IntGauge {
        &self.enrolled_pods
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// `weft_fast_path_redirects_total`: a count the kernel keeps, read at
    /// every scrape through `read`.
    pub fn register_fast_path_redirects(
        &self,
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> prometheus::Result<()> {
        let counter = IntCounter::new(
            "weft_fast_path_redirects_total",
            "Sends between pods' apps and the agent that the kernel moved socket to socket (sockmap fast path), skipping loopback TCP",
        )?;
        self.registry.register(Box::new(KernelCounter {
            counter,
            read: Box::new(read),
        }))
    }

    /// Everything in Prometheus text format.
    pub fn render(&self) -> prometheus::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(16 * 1024);
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(out)
    }
}

/// A counter whose value lives elsewhere (a kernel map), caught up at collection.
struct KernelCounter {
    counter: IntCounter,
    read: Box<dyn Fn() -> u64 + Send + Sync>,
}

impl prometheus::core::Collector for KernelCounter {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.counter.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let (now, shown) = ((self.read)(), self.counter.get());
        if now > shown {
            self.counter.inc_by(now - shown);
        }
        self.counter.collect()
    }
}

/// One open connection's counters. As a [`CopyObserver`] with `a` = the
/// client-facing side and `b` = the server-facing side, `a → b` bytes are
/// "received" and `b → a` bytes are "sent", matching Istio at either reporter.
pub struct ConnectionMetrics {
    sent: IntCounter,
    received: IntCounter,
    closed: IntCounter,
}

impl ConnectionMetrics {
    pub fn add_sent(&self, n: u64) {
        self.sent.inc_by(n);
    }
    pub fn add_received(&self, n: u64) {
        self.received.inc_by(n);
    }
}

impl CopyObserver for ConnectionMetrics {
    fn on_bytes(&mut self, direction: Direction, n: u64) {
        match direction {
            Direction::AToB => self.received.inc_by(n),
            Direction::BToA => self.sent.inc_by(n),
        }
    }
}

impl Drop for ConnectionMetrics {
    fn drop(&mut self) {
        self.closed.inc();
    }
}
