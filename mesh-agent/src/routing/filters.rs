//! Gateway API filters as pure edits of a request or response head:
//! RequestHeaderModifier, ResponseHeaderModifier, URLRewrite and the
//! RequestRedirect answer. (RequestMirror is carried out by the proxy.)

use http::header::{HOST, HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode, Uri, request};

use super::RequestHead;
use crate::config::resources::gateway::{
    FilterType, HTTPPathModifier, HTTPRouteFilter, HeaderModifier, PathModifierType,
    RequestRedirect,
};
use crate::state::PathMatch;

/// Applies `set`, then `add`, then `remove` (Gateway API's order). Names and
/// values were validated with the route; one that still fails to parse is
/// skipped rather than failing the request.
pub fn modify_headers(headers: &mut HeaderMap, m: &HeaderModifier) {
    let parse = |name: &str, value: &str| {
        Some((
            HeaderName::from_bytes(name.as_bytes()).ok()?,
            HeaderValue::from_str(value).ok()?,
        ))
    };
    for h in &m.set {
        if let Some((name, value)) = parse(&h.name, &h.value) {
            headers.insert(name, value);
        }
    }
    for h in &m.add {
        if let Some((name, value)) = parse(&h.name, &h.value) {
            headers.append(name, value);
        }
    }
    for name in &m.remove {
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
            headers.remove(name);
        }
    }
}

/// The path after a path modifier. `ReplacePrefixMatch` replaces the matched
/// PathPrefix, segment-wise (`/foo` → `/bar` turns `/foo/x` into `/bar/x`);
/// with any other kind of match it leaves the path alone.
pub fn rewrite_path(path: &str, modifier: &HTTPPathModifier, matched: &PathMatch) -> String {
    match modifier.type_ {
        PathModifierType::ReplaceFullPath => modifier
            .replace_full_path
            .clone()
            .unwrap_or_else(|| path.to_owned()),
        PathModifierType::ReplacePrefixMatch => {
            let (PathMatch::Prefix(prefix), Some(replacement)) =
                (matched, &modifier.replace_prefix_match)
            else {
                return path.to_owned();
            };
            let rest = path
                .strip_prefix(prefix.trim_end_matches('/'))
                .unwrap_or(path);
            let joined = format!("{}{rest}", replacement.trim_end_matches('/'));
            if joined.is_empty() {
                "/".into()
            } else {
                joined
            }
        }
    }
}

/// Applies the request-side filters of `filters` to a request head about to
/// be forwarded.
pub fn apply_request<'f>(
    parts: &mut request::Parts,
    filters: impl IntoIterator<Item = &'f HTTPRouteFilter>,
    matched: &PathMatch,
) {
    for f in filters {
        match f.type_ {
            FilterType::RequestHeaderModifier => {
                if let Some(m) = &f.request_header_modifier {
                    modify_headers(&mut parts.headers, m);
                }
            }
            FilterType::UrlRewrite => {
                if let Some(r) = &f.url_rewrite {
                    rewrite(parts, r.hostname.as_deref(), r.path.as_ref(), matched);
                }
            }
            _ => {}
        }
    }
}

/// Applies the response-side filters of `filters` to a response head.
pub fn apply_response<'f>(
    headers: &mut HeaderMap,
    filters: impl IntoIterator<Item = &'f HTTPRouteFilter>,
) {
    for f in filters {
        if let (FilterType::ResponseHeaderModifier, Some(m)) =
            (f.type_, &f.response_header_modifier)
        {
            modify_headers(headers, m);
        }
    }
}

fn rewrite(
    parts: &mut request::Parts,
    hostname: Option<&str>,
    path: Option<&HTTPPathModifier>,
    matched: &PathMatch,
) {
    let mut uri = parts.uri.clone().into_parts();
    if let Some(host) = hostname {
        if let Ok(value) = HeaderValue::from_str(host) {
            parts.headers.insert(HOST, value);
        }
        if uri.authority.is_some() {
            uri.authority = host.parse().ok().or(uri.authority);
        }
    }
    if let Some(modifier) = path {
        let old = parts.uri.path();
        let mut new = rewrite_path(old, modifier, matched);
        if let Some(q) = parts.uri.query() {
            new = format!("{new}?{q}");
        }
        uri.path_and_query = new.parse().ok().or(uri.path_and_query);
    }
    if let Ok(rebuilt) = Uri::from_parts(uri) {
        parts.uri = rebuilt;
    }
}

/// The answer a RequestRedirect gives: its status (302 unless 301 is asked)
/// and `Location`. The port, unless given, is the scheme's well-known one when
/// the filter changes the scheme, else the Service port; a well-known port is
/// left out of the URL (Gateway API).
pub fn redirect(
    req: &RequestHead,
    r: &RequestRedirect,
    matched: &PathMatch,
    service_port: u16,
) -> (StatusCode, HeaderValue) {
    let scheme = r.scheme.as_deref().unwrap_or("http");
    let host = r
        .hostname
        .as_deref()
        .or_else(|| req.host())
        .unwrap_or("localhost");
    let port = match (r.port, &r.scheme) {
        (Some(p), _) => u16::try_from(p).unwrap_or(service_port),
        (None, Some(_)) => well_known(scheme).unwrap_or(service_port),
        (None, None) => service_port,
    };
    let authority = if well_known(scheme) == Some(port) {
        host.to_owned()
    } else {
        format!("{host}:{port}")
    };
    let mut path = match &r.path {
        Some(m) => rewrite_path(req.path(), m, matched),
        None => req.path().to_owned(),
    };
    if let Some(q) = req.uri.query() {
        path = format!("{path}?{q}");
    }
    let status = match r.status_code {
        Some(301) => StatusCode::MOVED_PERMANENTLY,
        _ => StatusCode::FOUND,
    };
    let location = HeaderValue::from_str(&format!("{scheme}://{authority}{path}"))
        .unwrap_or_else(|_| HeaderValue::from_static("/"));
    (status, location)
}

fn well_known(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}
