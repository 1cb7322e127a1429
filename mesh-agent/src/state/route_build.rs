//! Gateway API routes to [`HttpRoute`]: defaults applied, Service references
//! resolved against the route's namespace, gRPC method matches as path matches.

use super::{
    build::key_of,
    model::ObjectKey,
    route::{
        HttpRoute, PathMatch, Pattern, RouteBackend, RouteKind, RouteMatch, RouteParent,
        RouteRetry, RouteRule, RouteTimeouts, StringMatch, ValueMatch,
    },
};
use crate::config::resources::gateway::{
    GRPCRoute, GRPCRouteMatch, HTTPBackendRef, HTTPHeaderMatch, HTTPRoute, HTTPRouteMatch,
    ParentReference, PathMatchType, ValueMatchType,
};

pub(super) fn from_http(r: &HTTPRoute) -> HttpRoute {
    let key = key_of(&r.metadata.namespace, &r.metadata.name);
    let rules = r
        .spec
        .rules
        .iter()
        .map(|rule| RouteRule {
            name: rule.name.clone(),
            matches: non_empty(rule.matches.iter().map(http_match).collect()),
            filters: rule.filters.clone(),
            backends: backends(&key.namespace, &rule.backend_refs),
            timeouts: rule
                .timeouts
                .as_ref()
                .map(|t| RouteTimeouts {
                    request: t.request.map(|d| d.0),
                    backend_request: t.backend_request.map(|d| d.0),
                })
                .unwrap_or_default(),
            retry: rule.retry.as_ref().map(|r| RouteRetry {
                codes: r
                    .codes
                    .iter()
                    .filter_map(|c| u16::try_from(*c).ok())
                    .collect(),
                attempts: r.attempts.and_then(|a| u32::try_from(a).ok()).unwrap_or(1),
                backoff: r.backoff.map(|d| d.0),
            }),
        })
        .collect();
    HttpRoute {
        parents: parents(&key.namespace, &r.spec.parent_refs),
        hostnames: r.spec.hostnames.clone(),
        created: r
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second()),
        key,
        kind: RouteKind::Http,
        rules,
    }
}

pub(super) fn from_grpc(r: &GRPCRoute) -> HttpRoute {
    let key = key_of(&r.metadata.namespace, &r.metadata.name);
    let rules = r
        .spec
        .rules
        .iter()
        .map(|rule| RouteRule {
            name: rule.name.clone(),
            matches: non_empty(rule.matches.iter().map(grpc_match).collect()),
            filters: rule.filters.clone(),
            backends: backends(&key.namespace, &rule.backend_refs),
            timeouts: RouteTimeouts::default(),
            retry: None,
        })
        .collect();
    HttpRoute {
        parents: parents(&key.namespace, &r.spec.parent_refs),
        hostnames: r.spec.hostnames.clone(),
        created: r
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second()),
        key,
        kind: RouteKind::Grpc,
        rules,
    }
}

fn non_empty(mut m: Vec<RouteMatch>) -> Vec<RouteMatch> {
    if m.is_empty() {
        m.push(RouteMatch::default());
    }
    m
}

fn parents(ns: &str, refs: &[ParentReference]) -> Vec<RouteParent> {
    refs.iter()
        .filter(|p| p.kind.as_deref() == Some("Service"))
        .map(|p| RouteParent {
            service: ObjectKey::new(p.namespace.as_deref().unwrap_or(ns), p.name.clone()),
            port: p.port.and_then(|p| u16::try_from(p).ok()),
        })
        .collect()
}

fn backends(ns: &str, refs: &[HTTPBackendRef]) -> Vec<RouteBackend> {
    refs.iter()
        .filter(|b| b.kind.as_deref().is_none_or(|k| k == "Service"))
        .filter_map(|b| {
            Some(RouteBackend {
                service: ObjectKey::new(b.namespace.as_deref().unwrap_or(ns), b.name.clone()),
                port: u16::try_from(b.port?).ok()?,
                weight: u32::try_from(b.weight.unwrap_or(1)).unwrap_or(0),
                filters: b.filters.clone(),
            })
        })
        .collect()
}

fn values(m: &[HTTPHeaderMatch]) -> Vec<ValueMatch> {
    m.iter()
        .map(|h| ValueMatch {
            name: h.name.clone(),
            value: if h.type_ == Some(ValueMatchType::RegularExpression) {
                StringMatch::Regex(Pattern::new(h.value.clone()))
            } else {
                StringMatch::Exact(h.value.clone())
            },
        })
        .collect()
}

fn http_match(m: &HTTPRouteMatch) -> RouteMatch {
    let path = match &m.path {
        None => PathMatch::Prefix("/".into()),
        Some(p) => {
            let v = p.value.clone().unwrap_or_else(|| "/".into());
            match p.type_.unwrap_or_default() {
                PathMatchType::Exact => PathMatch::Exact(v),
                PathMatchType::PathPrefix => PathMatch::Prefix(v),
                PathMatchType::RegularExpression => PathMatch::Regex(Pattern::new(v)),
            }
        }
    };
    RouteMatch {
        path,
        headers: values(&m.headers),
        query_params: values(&m.query_params),
        method: m.method.map(|x| x.as_str().to_owned()),
    }
}

/// gRPC calls are `POST /<package.Service>/<Method>`.
fn grpc_match(m: &GRPCRouteMatch) -> RouteMatch {
    let path = match &m.method {
        None => PathMatch::Prefix("/".into()),
        Some(mm) => {
            let (s, me) = (mm.service.as_deref(), mm.method.as_deref());
            if mm.type_ == Some(ValueMatchType::RegularExpression) {
                PathMatch::Regex(Pattern::new(format!(
                    "/{}/{}",
                    s.unwrap_or("[^/]+"),
                    me.unwrap_or("[^/]+")
                )))
            } else {
                match (s, me) {
                    (Some(s), Some(me)) => PathMatch::Exact(format!("/{s}/{me}")),
                    (Some(s), None) => PathMatch::Prefix(format!("/{s}")),
                    (None, Some(me)) => {
                        PathMatch::Regex(Pattern::new(format!("/[^/]+/{}", regex_escape(me))))
                    }
                    (None, None) => PathMatch::Prefix("/".into()),
                }
            }
        }
    };
    RouteMatch {
        path,
        headers: values(&m.headers),
        query_params: Vec::new(),
        method: None,
    }
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
