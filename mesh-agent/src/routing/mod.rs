//! L7 routing decisions (docs/architecture.md, "L7 routing"): for one request
//! to a Service port, which route rule applies, what it asks of the request
//! and response, and which backend receives it. Pure functions of the state
//! snapshot and the request head; the HTTP proxy does the I/O.

mod backend;
mod filters;
mod matching;
mod request;
mod select;

use std::fmt;

use http::{HeaderValue, StatusCode};

pub use backend::{Balancer, RoundRobin, pick_weighted};
pub use filters::{apply_request, apply_response, modify_headers, rewrite_path};
pub use matching::{Specificity, prefix_matches};
pub use request::RequestHead;
pub use select::{Matched, applicable, best_match};

use crate::config::resources::gateway::{FilterType, HTTPRouteFilter};
use crate::state::{PathMatch, RouteTimeouts, ServiceKey, Snapshot};

/// What to do with one request.
#[derive(Debug)]
pub enum Decision<'a> {
    Forward(Forward<'a>),
    /// Answer at once, without an upstream.
    Respond(Respond),
}

/// Send the request to a Service port, edited by `filters`.
#[derive(Debug)]
pub struct Forward<'a> {
    /// `None`: no route is attached, the Service's own default (everything to
    /// its endpoints).
    pub matched: Option<Matched<'a>>,
    pub service: &'a ServiceKey,
    pub port: u16,
    /// The rule's filters, then the chosen backendRef's.
    pub filters: Vec<&'a HTTPRouteFilter>,
    pub timeouts: RouteTimeouts,
}

impl Forward<'_> {
    /// The path match that selected the rule (for `ReplacePrefixMatch`).
    pub fn path_match(&self) -> PathMatch {
        self.matched
            .map(|m| m.route_match.path.clone())
            .unwrap_or_else(|| PathMatch::Prefix("/".into()))
    }

    /// RequestMirror filters to carry out beside the request.
    pub fn mirrors(&self) -> impl Iterator<Item = &HTTPRouteFilter> {
        self.filters
            .iter()
            .copied()
            .filter(|f| f.type_ == FilterType::RequestMirror)
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct Respond {
    pub status: StatusCode,
    pub location: Option<HeaderValue>,
    pub reason: RespondReason,
}

/// Why the agent answered itself; a bounded set, so it can label metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RespondReason {
    /// Routes are attached and none matches: 404.
    NoRouteMatched,
    /// A RequestRedirect filter: 301 or 302.
    Redirect,
    /// The rule has no backendRef that may receive traffic: 500, as Gateway
    /// API says for missing, zero-weight or invalid backends.
    NoBackend,
    /// The rule uses an `ExtensionRef` filter, which Weft cannot carry out:
    /// Gateway API says such a filter must not be skipped, the request gets
    /// a 500.
    UnsupportedFilter,
    /// The chosen backendRef names a Service that does not exist, or one in
    /// another namespace that no ReferenceGrant there permits: 500.
    InvalidBackend,
}

impl fmt::Display for RespondReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RespondReason::NoRouteMatched => "no_route_matched",
            RespondReason::Redirect => "redirect",
            RespondReason::NoBackend => "no_backend",
            RespondReason::InvalidBackend => "invalid_backend",
            RespondReason::UnsupportedFilter => "unsupported_filter",
        })
    }
}

/// Decides a request from a client in `client_namespace` to `service`:`port`.
/// `roll` is a uniform random number for the weighted backend choice (the
/// caller's, so tests can choose it).
pub fn route<'a>(
    snapshot: &'a Snapshot,
    client_namespace: &str,
    service: &'a ServiceKey,
    port: u16,
    req: &RequestHead,
    roll: u32,
) -> Decision<'a> {
    let routes = applicable(snapshot, client_namespace, service, port);
    if routes.is_empty() {
        return Decision::Forward(Forward {
            matched: None,
            service,
            port,
            filters: Vec::new(),
            timeouts: RouteTimeouts::default(),
        });
    }
    let Some(matched) = best_match(&routes, req) else {
        return respond(StatusCode::NOT_FOUND, RespondReason::NoRouteMatched);
    };
    let rule = matched.rule;
    if let Some(r) = rule
        .filters
        .iter()
        .find_map(|f| f.request_redirect.as_ref())
    {
        let (status, location) = filters::redirect(req, r, &matched.route_match.path, port);
        return Decision::Respond(Respond {
            status,
            location: Some(location),
            reason: RespondReason::Redirect,
        });
    }
    let unsupported =
        |filters: &[HTTPRouteFilter]| filters.iter().any(|f| f.type_ == FilterType::ExtensionRef);
    if unsupported(&rule.filters) {
        return respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            RespondReason::UnsupportedFilter,
        );
    }
    let Some(backend) = pick_weighted(&rule.backends, roll) else {
        return respond(StatusCode::INTERNAL_SERVER_ERROR, RespondReason::NoBackend);
    };
    let exists = snapshot
        .service(&backend.service)
        .is_some_and(|s| s.ports.iter().any(|p| p.port == backend.port));
    // Across namespaces only with a ReferenceGrant there (docs/config.md, "ReferenceGrant").
    let permitted = snapshot.reference_permitted(
        matched.route.kind,
        &matched.route.key.namespace,
        &backend.service,
    );
    if !exists || !permitted {
        return respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            RespondReason::InvalidBackend,
        );
    }
    if unsupported(&backend.filters) {
        return respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            RespondReason::UnsupportedFilter,
        );
    }
    Decision::Forward(Forward {
        matched: Some(matched),
        service: &backend.service,
        port: backend.port,
        filters: rule.filters.iter().chain(&backend.filters).collect(),
        timeouts: rule.timeouts.clone(),
    })
}

fn respond(status: StatusCode, reason: RespondReason) -> Decision<'static> {
    Decision::Respond(Respond {
        status,
        location: None,
        reason,
    })
}

#[cfg(test)]
mod tests;
