//! Checks of HTTPRoute and GRPCRoute, on their own (references: see `cross`).

use crate::config::resources::gateway::{
    FilterType, GRPCRoute, HTTPBackendRef, HTTPHeaderMatch, HTTPRoute, HTTPRouteFilter,
    ParentReference, PathMatchType,
};

use super::{
    Ck,
    fields::{is_dns_subdomain, is_header_name, metadata},
};

/// Gateway API's largest weight.
const MAX_WEIGHT: i32 = 1_000_000;

pub fn http_route(ck: &mut Ck<'_>, r: &HTTPRoute) {
    metadata(ck, &r.metadata, false);
    parents(ck, &r.spec.parent_refs);
    hostnames(ck, &r.spec.hostnames);
    for (i, rule) in r.spec.rules.iter().enumerate() {
        let f = format!("spec.rules[{i}]");
        for (j, m) in rule.matches.iter().enumerate() {
            let mf = format!("{f}.matches[{j}]");
            if let Some(p) = &m.path {
                let ty = p.type_.unwrap_or_default();
                match p.value.as_deref() {
                    Some(v) if ty != PathMatchType::RegularExpression && !v.starts_with('/') => {
                        ck.err(
                            format!("{mf}.path.value"),
                            format!("must start with '/' (got {v:?})"),
                        );
                    }
                    Some(v) if v.contains("//") => ck.err(
                        format!("{mf}.path.value"),
                        format!("must not contain '//' (got {v:?})"),
                    ),
                    _ => {}
                }
            }
            header_matches(ck, &format!("{mf}.headers"), &m.headers);
            for (k, q) in m.query_params.iter().enumerate() {
                if q.name.is_empty() {
                    ck.err(
                        format!("{mf}.queryParams[{k}].name"),
                        "required: a query parameter name",
                    );
                }
            }
        }
        filters(ck, &format!("{f}.filters"), &rule.filters, false);
        backends(ck, &f, &rule.backend_refs, false);
        if let Some(t) = &rule.timeouts
            && let (Some(req), Some(be)) = (t.request, t.backend_request)
            && be.0 > req.0
            && !req.0.is_zero()
        {
            ck.err(
                format!("{f}.timeouts.backendRequest"),
                format!("must not exceed timeouts.request ({req}), got {be}"),
            );
        }
        if let Some(retry) = &rule.retry {
            for (k, c) in retry.codes.iter().enumerate() {
                if !(400..=599).contains(c) {
                    ck.err(
                        format!("{f}.retry.codes[{k}]"),
                        format!("must be an HTTP status 400-599 (got {c})"),
                    );
                }
            }
            if let Some(a) = retry.attempts
                && a < 0
            {
                ck.err(
                    format!("{f}.retry.attempts"),
                    format!("must be >= 0 (got {a})"),
                );
            }
        }
    }
}

pub fn grpc_route(ck: &mut Ck<'_>, r: &GRPCRoute) {
    metadata(ck, &r.metadata, false);
    parents(ck, &r.spec.parent_refs);
    hostnames(ck, &r.spec.hostnames);
    for (i, rule) in r.spec.rules.iter().enumerate() {
        let f = format!("spec.rules[{i}]");
        for (j, m) in rule.matches.iter().enumerate() {
            let mf = format!("{f}.matches[{j}]");
            if let Some(mm) = &m.method
                && mm.service.is_none()
                && mm.method.is_none()
            {
                ck.err(
                    format!("{mf}.method"),
                    "set service, method or both (e.g. service: shop.Cart, method: Get)",
                );
            }
            header_matches(ck, &format!("{mf}.headers"), &m.headers);
        }
        filters(ck, &format!("{f}.filters"), &rule.filters, true);
        backends(ck, &f, &rule.backend_refs, true);
    }
}

fn parents(ck: &mut Ck<'_>, refs: &[ParentReference]) {
    if refs.is_empty() {
        ck.err("spec.parentRefs", "required: at least one parent Service, e.g. `- {group: \"\", kind: Service, name: reviews}`");
    }
    for (i, p) in refs.iter().enumerate() {
        let f = format!("spec.parentRefs[{i}]");
        if p.kind.as_deref() != Some("Service") {
            ck.err(
                format!("{f}.kind"),
                format!("must be Service: the mesh attaches routes to Services (got {}; Gateway parents are not supported)", p.kind.as_deref().unwrap_or("none, meaning Gateway")),
            );
        }
        if let Some(g) = p.group.as_deref().filter(|g| !g.is_empty() && *g != "core") {
            ck.err(
                format!("{f}.group"),
                format!("must be \"\" (the core group of Service), got {g:?}"),
            );
        }
        if let Some(port) = p.port {
            ck.port(format!("{f}.port"), port.into());
        }
    }
}

fn hostnames(ck: &mut Ck<'_>, hosts: &[String]) {
    for (i, h) in hosts.iter().enumerate() {
        let bare = h.strip_prefix("*.").unwrap_or(h);
        if !is_dns_subdomain(bare) {
            ck.err(format!("spec.hostnames[{i}]"), format!("{h:?} is not a valid hostname: lowercase DNS name, optionally starting with `*.`"));
        }
    }
}

fn header_matches(ck: &mut Ck<'_>, f: &str, headers: &[HTTPHeaderMatch]) {
    for (k, h) in headers.iter().enumerate() {
        if !is_header_name(&h.name) {
            ck.err(
                format!("{f}[{k}].name"),
                format!(
                    "{:?} is not a valid header name (letters, digits and !#$%&'*+-.^_`|~)",
                    h.name
                ),
            );
        }
    }
}

fn filters(ck: &mut Ck<'_>, f: &str, filters: &[HTTPRouteFilter], grpc: bool) {
    for (k, flt) in filters.iter().enumerate() {
        let ff = format!("{f}[{k}]");
        let (present, field) = match flt.type_ {
            FilterType::RequestHeaderModifier => (
                flt.request_header_modifier.is_some(),
                "requestHeaderModifier",
            ),
            FilterType::ResponseHeaderModifier => (
                flt.response_header_modifier.is_some(),
                "responseHeaderModifier",
            ),
            FilterType::RequestMirror => (flt.request_mirror.is_some(), "requestMirror"),
            FilterType::RequestRedirect => (flt.request_redirect.is_some(), "requestRedirect"),
            FilterType::UrlRewrite => (flt.url_rewrite.is_some(), "urlRewrite"),
            FilterType::ExtensionRef => (flt.extension_ref.is_some(), "extensionRef"),
        };
        if grpc
            && matches!(
                flt.type_,
                FilterType::RequestRedirect | FilterType::UrlRewrite
            )
        {
            ck.err(format!("{ff}.type"), "GRPCRoute filters are RequestHeaderModifier, ResponseHeaderModifier, RequestMirror or ExtensionRef");
        }
        if !present {
            ck.err(
                format!("{ff}.{field}"),
                format!("required when type is {:?}", flt.type_),
            );
        }
        if let Some(m) = &flt.request_mirror
            && let Some(p) = m.percent
            && !(0..=100).contains(&p)
        {
            ck.err(
                format!("{ff}.requestMirror.percent"),
                format!("must be between 0 and 100 (got {p})"),
            );
        }
        if let Some(r) = &flt.request_redirect
            && let Some(code) = r.status_code
            && code != 301
            && code != 302
        {
            ck.err(
                format!("{ff}.requestRedirect.statusCode"),
                format!("must be 301 or 302 (got {code})"),
            );
        }
    }
}

fn backends(ck: &mut Ck<'_>, rule: &str, refs: &[HTTPBackendRef], _grpc: bool) {
    let mut total: i64 = 0;
    for (i, b) in refs.iter().enumerate() {
        let f = format!("{rule}.backendRefs[{i}]");
        if let Some(k) = b.kind.as_deref().filter(|k| *k != "Service") {
            ck.err(format!("{f}.kind"), format!("must be Service (got {k:?})"));
        }
        if let Some(g) = b.group.as_deref().filter(|g| !g.is_empty() && *g != "core") {
            ck.err(
                format!("{f}.group"),
                format!("must be \"\" (the core group of Service), got {g:?}"),
            );
        }
        match b.port {
            None => ck.err(
                format!("{f}.port"),
                "required for a Service backend: the Service port, e.g. 9080",
            ),
            Some(p) => ck.port(format!("{f}.port"), p.into()),
        }
        let w = b.weight.unwrap_or(1);
        if w < 0 {
            ck.err(format!("{f}.weight"), format!("must be >= 0 (got {w})"));
        } else if w > MAX_WEIGHT {
            ck.err(
                format!("{f}.weight"),
                format!("must be <= {MAX_WEIGHT} (got {w})"),
            );
        } else {
            total += i64::from(w);
        }
    }
    if !refs.is_empty() && total == 0 && refs.iter().all(|b| b.weight.unwrap_or(1) >= 0) {
        ck.err(
            format!("{rule}.backendRefs"),
            "weights are all zero: give at least one backend a weight > 0 (default 1)",
        );
    }
}
