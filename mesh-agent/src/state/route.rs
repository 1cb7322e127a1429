//! HTTPRoute and GRPCRoute, resolved: Service parents and backends, defaults
//! applied, gRPC method matches turned into path matches.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::model::{ResourceKey, ServiceKey};
use crate::config::resources::gateway::HTTPRouteFilter;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RouteKind {
    Http,
    Grpc,
}

impl RouteKind {
    /// The Kubernetes kind: `HTTPRoute` or `GRPCRoute`.
    pub fn gvk_kind(self) -> &'static str {
        match self {
            RouteKind::Http => "HTTPRoute",
            RouteKind::Grpc => "GRPCRoute",
        }
    }
}

/// A route attached to one or more Services.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HttpRoute {
    pub key: ResourceKey,
    pub kind: RouteKind,
    /// `metadata.creationTimestamp` in seconds: the older route wins a
    /// precedence tie (Gateway API).
    pub created: Option<i64>,
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
    Regex(Pattern),
}

/// A header or query parameter match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueMatch {
    pub name: String,
    pub value: StringMatch,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StringMatch {
    Exact(String),
    Regex(Pattern),
}

impl StringMatch {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StringMatch::Exact(v) => v == value,
            StringMatch::Regex(p) => p.is_match(value),
        }
    }
}

/// Compiled regexes are bounded so that one route cannot cost the agent much
/// memory; a pattern over the bound never matches.
const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// A regular expression (RE2 syntax, as Gateway API specifies), compiled once
/// when the state is built and anchored at both ends: it must match the whole
/// value, as in Envoy and Istio. An invalid pattern never matches.
#[derive(Clone, Debug)]
pub struct Pattern {
    source: String,
    regex: Option<regex::Regex>,
}

impl Pattern {
    pub fn new(source: impl Into<String>) -> Self {
        let source = source.into();
        let regex = regex::RegexBuilder::new(&format!("^(?:{source})$"))
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .ok();
        Pattern { source, regex }
    }

    pub fn is_match(&self, value: &str) -> bool {
        self.regex.as_ref().is_some_and(|r| r.is_match(value))
    }

    pub fn is_valid(&self) -> bool {
        self.regex.is_some()
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Pattern {}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Pattern::new)
    }
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
