//! Whether one rule of a policy matches a connection, and at connection time
//! whether that depends on the request (a rule naming HTTP attributes).

use crate::config::resources::weft::{PolicyAction, PolicyRule, Source};

use super::ConnectionAttrs;
use super::operation::operation_matches;
use super::request::RequestAttrs;

/// A rule's match, three-valued: at connection time a condition on the
/// request is `Maybe`. Ordered so that AND is `min` and OR is `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Match {
    No,
    Maybe,
    Yes,
}

impl From<bool> for Match {
    fn from(b: bool) -> Self {
        if b { Match::Yes } else { Match::No }
    }
}

/// `from` entries are ORed (none: any source), `to` entries likewise.
/// `request` is `None` at connection time.
pub(super) fn rule_matches(
    rule: &PolicyRule,
    action: PolicyAction,
    conn: &ConnectionAttrs,
    request: Option<&RequestAttrs>,
) -> Match {
    let from = rule.from.is_empty() || rule.from.iter().any(|f| source_matches(&f.source, conn));
    if !from {
        return Match::No;
    }
    if rule.to.is_empty() {
        return Match::Yes;
    }
    rule.to
        .iter()
        .map(|t| operation_matches(&t.operation, action, conn, request))
        .max()
        .unwrap_or(Match::No)
}

/// Every field that is set must hold (AND); each list is an OR of its values.
fn source_matches(s: &Source, conn: &ConnectionAttrs) -> bool {
    let principal = conn.principal.as_deref();
    let namespace = conn.namespace.as_deref();
    positive(&s.principals, |p| value_matches(p, principal))
        && negative(&s.not_principals, |p| value_matches(p, principal))
        && positive(&s.namespaces, |n| value_matches(n, namespace))
        && negative(&s.not_namespaces, |n| value_matches(n, namespace))
        && positive(&s.ip_blocks, |b| b.contains(&conn.source_ip))
        && negative(&s.not_ip_blocks, |b| b.contains(&conn.source_ip))
}

/// An empty list places no condition; otherwise one value must match.
pub(super) fn positive<T>(list: &[T], matches: impl Fn(&T) -> bool) -> bool {
    list.is_empty() || list.iter().any(matches)
}

/// An empty list places no condition; otherwise no value may match.
pub(super) fn negative<T>(list: &[T], matches: impl Fn(&T) -> bool) -> bool {
    !list.iter().any(matches)
}

/// Istio's string match: `*` is any present value, `abc*` a prefix, `*abc` a
/// suffix, anything else exact. An absent value (plaintext has no principal or
/// namespace) matches nothing.
pub(super) fn value_matches(pattern: &str, value: Option<&str>) -> bool {
    let Some(value) = value else {
        return false;
    };
    let pattern = pattern.strip_prefix("spiffe://").unwrap_or(pattern);
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

#[cfg(test)]
mod tests {
    use super::{ConnectionAttrs, Source, source_matches, value_matches};

    #[test]
    fn string_matching_follows_istio() {
        let v = Some("cluster.local/ns/shop/sa/frontend");
        assert!(value_matches("*", v));
        assert!(value_matches("cluster.local/ns/shop/*", v));
        assert!(value_matches("*/sa/frontend", v));
        assert!(value_matches(
            "spiffe://cluster.local/ns/shop/sa/frontend",
            v
        ));
        assert!(!value_matches("cluster.local/ns/shop/sa/front", v));
        assert!(!value_matches("*", None));
    }

    /// The namespace is the SPIFFE id's, parsed: not whatever follows the first
    /// `ns` segment, which a trust domain or an extra path segment could spoof.
    #[test]
    fn namespace_comes_from_a_parsed_spiffe_id() {
        let ns = |id: &str| ConnectionAttrs::authenticated(id, [10, 0, 0, 1].into(), 80).namespace;
        assert_eq!(
            ns("spiffe://cluster.local/ns/shop/sa/web").as_deref(),
            Some("shop")
        );
        assert_eq!(ns("spiffe://td/ns/a/sa/ns").as_deref(), Some("a"));
        for spoof in [
            "spiffe://ns/payments/sa/billing",
            "ns/payments/sa/billing",
            "spiffe://td/x/ns/payments/sa/billing",
            "spiffe://td/ns/payments/sa/billing/x",
            "spiffe:///ns/payments/sa/billing",
        ] {
            assert_eq!(ns(spoof), None, "{spoof}");
        }
        let payments = Source {
            namespaces: vec!["payments".into()],
            ..Source::default()
        };
        let conn =
            ConnectionAttrs::authenticated("spiffe://ns/payments/sa/x", [10, 0, 0, 1].into(), 80);
        assert!(!source_matches(&payments, &conn));
        // The principal is still what the peer proved, for principal rules.
        assert_eq!(conn.principal.as_deref(), Some("ns/payments/sa/x"));
    }
}
