//! HTTP in the data path (docs/architecture.md, "L7 routing"): which
//! outbound connections are HTTP (`detect`, `classify`), the server facing
//! the app that routes each request (`outbound`), the pooled client
//! connections to endpoints through the tunnel (`upstream`), and the body
//! wrappers that count and report each request (`body`).

mod body;
mod classify;
pub mod detect;
mod forward;
mod headers;
pub mod inbound;
mod metered;
mod mirror;
pub mod outbound;
mod respond;
mod upstream;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;

use super::OutboundTarget;
use crate::config::resources::gateway::HTTPRouteFilter;
use crate::state::{PathMatch, RouteTimeouts, ServiceKey};
use crate::telemetry::{ConnectionLabels, ResponseFlag};

pub use classify::{Carry, classify};
pub use detect::Declared;
pub use upstream::Upstreams;

/// The error type of the bodies the proxy passes on.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every body the proxy sends, either way.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A Service port an outbound connection was addressed to, and what the port
/// says about its protocol.
#[derive(Clone, Debug)]
pub struct HttpService {
    pub service: ServiceKey,
    pub port: u16,
    pub declared: Declared,
    /// The labels of requests the agent answers itself before a backend is
    /// chosen (reporter `source`, the source workload, this Service).
    pub labels: ConnectionLabels,
}

/// What the state decides for one request (the agent's `plan_request`).
#[derive(Debug)]
pub enum Plan<K> {
    /// Answer without an upstream: a redirect, 404, 500, or 503 without
    /// endpoints.
    Respond {
        status: StatusCode,
        location: Option<HeaderValue>,
        flag: ResponseFlag,
        labels: ConnectionLabels,
    },
    Forward(Forward<K>),
}

/// Send the request to one endpoint, edited by the rule's filters.
#[derive(Debug)]
pub struct Forward<K> {
    /// `Tunnel` or `Direct`, never `Refuse`.
    pub target: OutboundTarget<K>,
    pub labels: ConnectionLabels,
    pub filters: Vec<HTTPRouteFilter>,
    /// The path match that selected the rule (for `ReplacePrefixMatch`).
    pub path_match: PathMatch,
    pub timeouts: RouteTimeouts,
    /// Where RequestMirror filters send a copy (answers discarded).
    pub mirrors: Vec<OutboundTarget<K>>,
}
