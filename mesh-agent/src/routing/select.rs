//! Which routes apply to a request for a Service port, and which rule of them
//! wins (Gateway API's GAMMA profile: routes whose parentRef is a Service).

use std::cmp::Reverse;
use std::sync::Arc;

use super::RequestHead;
use super::matching::{Specificity, matches};
use crate::state::{HttpRoute, RouteMatch, RouteRule, ServiceKey, Snapshot};

/// The rule a request matched, and the match within it.
#[derive(Clone, Copy, Debug)]
pub struct Matched<'a> {
    pub route: &'a HttpRoute,
    pub rule_index: usize,
    pub rule: &'a RouteRule,
    pub route_match: &'a RouteMatch,
}

/// The routes attached to `service` (and `port`, when a parentRef names one)
/// that apply to a client in `client_namespace`. A route in the client's own
/// namespace (a consumer route) overrides the Service's own namespace's
/// (producer) routes for that client; routes of any other namespace apply only
/// to clients in theirs. Hostnames are not used for Service parents (GAMMA).
pub fn applicable<'a>(
    snapshot: &'a Snapshot,
    client_namespace: &str,
    service: &ServiceKey,
    port: u16,
) -> Vec<&'a HttpRoute> {
    let attached = |r: &&Arc<HttpRoute>| {
        r.parents
            .iter()
            .any(|p| &p.service == service && p.port.is_none_or(|p| p == port))
    };
    let in_namespace = |ns: &str| -> Vec<&'a HttpRoute> {
        snapshot
            .routes_for(service)
            .iter()
            .filter(attached)
            .filter(|r| r.key.namespace == ns)
            .map(|r| &**r)
            .collect()
    };
    if client_namespace != service.namespace {
        let consumer = in_namespace(client_namespace);
        if !consumer.is_empty() {
            return consumer;
        }
    }
    in_namespace(&service.namespace)
}

/// The most specific match across `routes` that accepts `req`. Ties go to the
/// oldest route, then to the first by `namespace/name`, then to the first
/// rule and match in the route's order (Gateway API).
pub fn best_match<'a>(routes: &[&'a HttpRoute], req: &RequestHead) -> Option<Matched<'a>> {
    routes
        .iter()
        .flat_map(|route| {
            route
                .rules
                .iter()
                .enumerate()
                .flat_map(move |(rule_index, rule)| {
                    rule.matches
                        .iter()
                        .enumerate()
                        .map(move |(match_index, m)| (route, rule_index, rule, match_index, m))
                })
        })
        .filter(|(.., m)| matches(m, req))
        .min_by_key(|(route, rule_index, _, match_index, m)| {
            (
                Reverse(Specificity::of(m)),
                route.created.unwrap_or(i64::MAX),
                &route.key,
                *rule_index,
                *match_index,
            )
        })
        .map(|(route, rule_index, rule, _, route_match)| Matched {
            route,
            rule_index,
            rule,
            route_match,
        })
}
