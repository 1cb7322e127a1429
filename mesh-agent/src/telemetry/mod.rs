//! Prometheus metrics for the data path and the endpoint that serves them
//! (docs/architecture.md, "The agent"). Access logs come later.

mod metrics;
mod server;

pub use metrics::{
    ConnectionLabels, ConnectionMetrics, Metrics, RefuseReason, Reporter, SecurityPolicy,
};
pub use server::serve_metrics;

#[cfg(test)]
mod tests;
