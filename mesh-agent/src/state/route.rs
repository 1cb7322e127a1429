//! HTTPRoute and GRPCRoute, resolved: Service parents and backends, defaults
//! applied, gRPC method matches turned into path matches.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::model::{ResourceKey, ServiceKey};
use crate::config::resources::gateway::HTTPRouteFilter;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RouteKind {
    Http,
    Grpc,
}

/// A route attached to one or more Services.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HttpRoute {
    pub key: ResourceKey,
    pub kind: RouteKind,
    pub parents: Vec<RouteParent>,
    /// Empty: any host.
    pub hostnames: Vec<String>,
    pub rules: Vec<RouteRule>,
}

/// `parentRefs[]`: a Service, optionally one of its ports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteParent {
    pub service: ServiceKey,
    pub port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteRule {
    pub name: Option<String>,
    /// ORed; never empty (a rule without matches gets `PathPrefix /`).
    pub matches: Vec<RouteMatch>,
    pub filters: Vec<HTTPRouteFilter>,
    /// Empty: requests matching the rule get a 500, as Gateway API says.
    pub backends: Vec<RouteBackend>,
    pub timeouts: RouteTimeouts,
    pub retry: Option<RouteRetry>,
}

/// All conditions ANDed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteMatch {
    pub path: PathMatch,
    pub headers: Vec<ValueMatch>,
    pub query_params: Vec<ValueMatch>,
    /// Upper-case method, e.g. `GET`.
    pub method: Option<String>,
}

impl Default for RouteMatch {
    fn default() -> Self {
        RouteMatch {
            path: PathMatch::Prefix("/".into()),
            headers: Vec::new(),
            query_params: Vec::new(),
            method: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PathMatch {
    Exact(String),
    /// Gateway API prefix: matches whole path segments.
    Prefix(String),
    Regex(String),
}

/// A header or query parameter match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueMatch {
    pub name: String,
    pub value: String,
    pub regex: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteBackend {
    pub service: ServiceKey,
    pub port: u16,
    pub weight: u32,
    pub filters: Vec<HTTPRouteFilter>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTimeouts {
    pub request: Option<Duration>,
    pub backend_request: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRetry {
    pub codes: Vec<u16>,
    pub attempts: u32,
    pub backoff: Option<Duration>,
}
