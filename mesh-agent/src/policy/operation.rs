//! One `to.operation` against a connection and, once parsed, its request
//! (Istio's semantics, docs/security.md "L7 authorization"): ports at L4;
//! methods, paths and hosts need the request. A pattern Weft cannot evaluate
//! (a path template such as `/a/{*}`, a `*` inside a value) fails closed: it
//! never matches for `ALLOW` or `AUDIT` and always for `DENY`.

use crate::config::resources::weft::{Operation, PolicyAction};

use super::ConnectionAttrs;
use super::matching::{Match, negative, positive};
use super::request::RequestAttrs;

pub(super) fn operation_matches(
    op: &Operation,
    action: PolicyAction,
    conn: &ConnectionAttrs,
    request: Option<&RequestAttrs>,
) -> Match {
    let port = i32::from(conn.destination_port);
    if !(positive(&op.ports, |p| *p == port) && negative(&op.not_ports, |p| *p == port)) {
        return Match::No;
    }
    if !names_http(op) {
        return Match::Yes;
    }
    if !understood(op) {
        return Match::from(action == PolicyAction::Deny);
    }
    let Some(req) = request else {
        return Match::Maybe;
    };
    let method = |m: &String| m == "*" || *m == req.method;
    let path = |p: &String| pattern_matches(p, &req.path);
    let host = |h: &String| host_matches(h, req.host.as_deref());
    Match::from(
        positive(&op.methods, method)
            && negative(&op.not_methods, method)
            && positive(&op.paths, path)
            && negative(&op.not_paths, path)
            && positive(&op.hosts, host)
            && negative(&op.not_hosts, host),
    )
}

/// Whether the operation has a condition only the request can answer.
fn names_http(op: &Operation) -> bool {
    [
        &op.methods,
        &op.not_methods,
        &op.paths,
        &op.not_paths,
        &op.hosts,
        &op.not_hosts,
    ]
    .iter()
    .any(|l| !l.is_empty())
}

/// Every HTTP pattern is one Weft evaluates: exact, `*`, `prefix*`, `*suffix`.
fn understood(op: &Operation) -> bool {
    let simple = |p: &String| {
        let inner = p
            .strip_prefix('*')
            .or_else(|| p.strip_suffix('*'))
            .unwrap_or(p);
        p == "*" || !(inner.contains('*') || p.contains('{') || p.contains('}'))
    };
    [&op.paths, &op.not_paths, &op.hosts, &op.not_hosts]
        .iter()
        .all(|list| list.iter().all(simple))
}

/// Istio's string match: `*` any value, `abc*` a prefix, `*abc` a suffix,
/// anything else exact.
fn pattern_matches(pattern: &str, value: &str) -> bool {
    if pattern == "*" {
        true
    } else if let Some(prefix) = pattern.strip_suffix('*') {
        value.starts_with(prefix)
    } else if let Some(suffix) = pattern.strip_prefix('*') {
        value.ends_with(suffix)
    } else {
        value == pattern
    }
}

/// Istio's host match: case-insensitive, and a pattern without a port also
/// matches the host with any port (`example.com` matches
/// `example.com:8080`). An absent host matches nothing.
fn host_matches(pattern: &str, host: Option<&str>) -> bool {
    let Some(host) = host else {
        return false;
    };
    let pattern = pattern.to_ascii_lowercase();
    let host = host.to_ascii_lowercase();
    if pattern_matches(&pattern, &host) {
        return true;
    }
    match (split_port(&pattern), split_port(&host)) {
        (None, Some(name)) => pattern_matches(&pattern, name),
        _ => false,
    }
}

/// The host part of `host:port` (`[v6]:port` too); `None` without a port.
fn split_port(host: &str) -> Option<&str> {
    let (name, port) = host.rsplit_once(':')?;
    let is_port = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    let bracketed_v6 = name.starts_with('[') && name.ends_with(']');
    (is_port && (bracketed_v6 || !name.contains(':'))).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(port: u16) -> ConnectionAttrs {
        ConnectionAttrs::plaintext([10, 0, 0, 1].into(), port)
    }

    fn req(method: &str, path: &str, host: Option<&str>) -> RequestAttrs {
        RequestAttrs {
            method: method.into(),
            path: path.into(),
            host: host.map(Into::into),
        }
    }

    fn eval(op: &Operation, r: &RequestAttrs) -> Match {
        operation_matches(op, PolicyAction::Allow, &conn(80), Some(r))
    }

    fn get(path: &str) -> RequestAttrs {
        req("GET", path, Some("shop.example"))
    }

    #[test]
    fn methods_and_not_methods() {
        let op = Operation {
            methods: vec!["GET".into(), "HEAD".into()],
            ..Operation::default()
        };
        assert_eq!(eval(&op, &get("/")), Match::Yes);
        assert_eq!(eval(&op, &req("POST", "/", None)), Match::No);
        let op = Operation {
            not_methods: vec!["DELETE".into()],
            ..Operation::default()
        };
        assert_eq!(eval(&op, &get("/")), Match::Yes);
        assert_eq!(eval(&op, &req("DELETE", "/", None)), Match::No);
        let any = Operation {
            methods: vec!["*".into()],
            ..Operation::default()
        };
        assert_eq!(eval(&any, &req("PATCH", "/", None)), Match::Yes);
    }

    #[test]
    fn paths_exact_prefix_suffix_and_any() {
        let op = |p: &str| Operation {
            paths: vec![p.into()],
            ..Operation::default()
        };
        assert_eq!(eval(&op("/info"), &get("/info")), Match::Yes);
        assert_eq!(eval(&op("/info"), &get("/info/x")), Match::No);
        assert_eq!(eval(&op("/api/*"), &get("/api/v1/x")), Match::Yes);
        assert_eq!(eval(&op("/api/*"), &get("/apix")), Match::No);
        assert_eq!(eval(&op("*.png"), &get("/img/a.png")), Match::Yes);
        assert_eq!(eval(&op("*.png"), &get("/img/a.jpg")), Match::No);
        assert_eq!(eval(&op("*"), &get("/anything")), Match::Yes);
    }

    #[test]
    fn not_paths_exclude() {
        let op = Operation {
            paths: vec!["/api/*".into()],
            not_paths: vec!["/api/admin/*".into()],
            ..Operation::default()
        };
        assert_eq!(eval(&op, &get("/api/items")), Match::Yes);
        assert_eq!(eval(&op, &get("/api/admin/users")), Match::No);
    }

    #[test]
    fn hosts_are_case_insensitive_with_or_without_port() {
        let op = |h: &str| Operation {
            hosts: vec![h.into()],
            ..Operation::default()
        };
        let with = |h: &str| req("GET", "/", Some(h));
        assert_eq!(eval(&op("Shop.Example"), &with("shop.example")), Match::Yes);
        assert_eq!(
            eval(&op("shop.example"), &with("SHOP.example:8080")),
            Match::Yes
        );
        assert_eq!(
            eval(&op("shop.example:80"), &with("shop.example:8080")),
            Match::No
        );
        assert_eq!(
            eval(&op("shop.example:80"), &with("shop.example:80")),
            Match::Yes
        );
        assert_eq!(
            eval(&op("shop.example:80"), &with("shop.example")),
            Match::No
        );
        assert_eq!(eval(&op("*.example"), &with("a.b.example:9")), Match::Yes);
        assert_eq!(eval(&op("*.example"), &with("example")), Match::No);
        assert_eq!(eval(&op("shop.*"), &with("shop.other:1")), Match::Yes);
        assert_eq!(eval(&op("[fd00::1]"), &with("[fd00::1]:80")), Match::Yes);
        assert_eq!(eval(&op("*"), &req("GET", "/", None)), Match::No, "no host");
        let not = Operation {
            not_hosts: vec!["admin.example".into()],
            ..Operation::default()
        };
        assert_eq!(eval(&not, &with("Admin.Example:8080")), Match::No);
        assert_eq!(eval(&not, &with("shop.example")), Match::Yes);
    }

    #[test]
    fn fields_are_anded() {
        let op = Operation {
            ports: vec![80],
            methods: vec!["GET".into()],
            paths: vec!["/a".into()],
            hosts: vec!["shop.example".into()],
            ..Operation::default()
        };
        assert_eq!(eval(&op, &get("/a")), Match::Yes);
        assert_eq!(eval(&op, &get("/b")), Match::No);
        assert_eq!(
            eval(&op, &req("POST", "/a", Some("shop.example"))),
            Match::No
        );
        assert_eq!(eval(&op, &req("GET", "/a", Some("x.example"))), Match::No);
        let other_port = operation_matches(&op, PolicyAction::Allow, &conn(81), Some(&get("/a")));
        assert_eq!(other_port, Match::No);
    }

    /// At connection time an HTTP condition is unknown, unless the ports
    /// already rule the operation out.
    #[test]
    fn without_the_request_http_conditions_are_maybe() {
        let op = Operation {
            ports: vec![80],
            paths: vec!["/a".into()],
            ..Operation::default()
        };
        for action in [PolicyAction::Allow, PolicyAction::Deny, PolicyAction::Audit] {
            assert_eq!(
                operation_matches(&op, action, &conn(80), None),
                Match::Maybe
            );
            assert_eq!(operation_matches(&op, action, &conn(81), None), Match::No);
        }
        let l4 = Operation {
            ports: vec![80],
            ..Operation::default()
        };
        assert_eq!(
            operation_matches(&l4, PolicyAction::Allow, &conn(80), None),
            Match::Yes
        );
    }

    #[test]
    fn patterns_weft_cannot_evaluate_fail_closed() {
        for op in [
            Operation {
                paths: vec!["/a/{*}/b".into()],
                ..Operation::default()
            },
            Operation {
                not_paths: vec!["/a/*/b".into()],
                ..Operation::default()
            },
            Operation {
                hosts: vec!["a.*.example".into()],
                ..Operation::default()
            },
        ] {
            for r in [None, Some(&get("/a/x/b"))] {
                let m = |action| operation_matches(&op, action, &conn(80), r);
                assert_eq!(m(PolicyAction::Allow), Match::No, "{op:?}");
                assert_eq!(m(PolicyAction::Audit), Match::No, "{op:?}");
                assert_eq!(m(PolicyAction::Deny), Match::Yes, "{op:?}");
            }
        }
    }
}
