//! Whether a route match accepts a request, and how specific it is: Gateway
//! API orders competing matches by these facts (docs/architecture.md, "L7
//! routing").

use std::cmp::Ordering;

use super::RequestHead;
use crate::state::{PathMatch, RouteMatch};

/// All conditions of `m` hold for `req`.
pub fn matches(m: &RouteMatch, req: &RequestHead) -> bool {
    path_matches(&m.path, req.path())
        && m.method.as_deref().is_none_or(|x| x == req.method.as_str())
        && m.headers.iter().all(|h| {
            req.header(&h.name)
                .is_some_and(|value| h.value.matches(&value))
        })
        && m.query_params.iter().all(|q| {
            req.query_param(&q.name)
                .is_some_and(|value| q.value.matches(value))
        })
}

fn path_matches(m: &PathMatch, path: &str) -> bool {
    match m {
        PathMatch::Exact(v) => path == v,
        PathMatch::Prefix(v) => prefix_matches(v, path),
        PathMatch::Regex(p) => p.is_match(path),
    }
}

/// Gateway API's PathPrefix matches whole segments: `/foo` matches `/foo` and
/// `/foo/bar`, not `/foobar`; a trailing `/` in the prefix is ignored.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// How specific a match is; the greater wins. Gateway API orders: an Exact
/// path, then the longest PathPrefix, then a method, then the most header
/// matches, then the most query matches. It leaves RegularExpression to the
/// implementation: as Envoy Gateway does, it ranks between Exact and any
/// PathPrefix (a pattern is written on purpose; a catch-all `/` must not hide
/// it), longer patterns first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Specificity {
    path_rank: u8,
    path_len: usize,
    method: bool,
    headers: usize,
    query_params: usize,
}

impl Specificity {
    pub fn of(m: &RouteMatch) -> Self {
        let (path_rank, path_len) = match &m.path {
            PathMatch::Exact(v) => (3, v.len()),
            PathMatch::Regex(p) => (2, p.as_str().len()),
            PathMatch::Prefix(v) => (1, v.trim_end_matches('/').len().max(1)),
        };
        Specificity {
            path_rank,
            path_len,
            method: m.method.is_some(),
            headers: m.headers.len(),
            query_params: m.query_params.len(),
        }
    }
}

impl Ord for Specificity {
    fn cmp(&self, other: &Self) -> Ordering {
        (
            self.path_rank,
            self.path_len,
            self.method,
            self.headers,
            self.query_params,
        )
            .cmp(&(
                other.path_rank,
                other.path_len,
                other.method,
                other.headers,
                other.query_params,
            ))
    }
}

impl PartialOrd for Specificity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
