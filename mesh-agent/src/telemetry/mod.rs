//! Prometheus metrics for the data path and the endpoint that serves them
//! (docs/architecture.md, "The agent"), and per request (`record_request`): Istio's
//! request series, the access log and the live `tap` stream.

mod access_log;
mod metrics;
mod requests;
mod server;
mod tap;

pub use access_log::{AccessLogFormat, format_line as format_access_log_line};
pub use metrics::{
    ConnectionLabels, ConnectionMetrics, Metrics, RefuseReason, Reporter, SecurityPolicy,
};
pub use requests::{RequestProtocol, RequestRecord, ResponseFlag};
pub use server::serve_metrics;
pub use tap::{TAP_BUFFER, Tap, TapEvent, TapFilter, TapItem, TapSubscription};

#[cfg(test)]
mod tests;
