//! Checks of AuthorizationPolicy and TrafficPolicy.

use crate::config::resources::weft::{AuthorizationPolicy, Operation, Source, TrafficPolicy};

use super::{Ck, fields::metadata};

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

pub fn authorization(ck: &mut Ck<'_>, p: &AuthorizationPolicy) {
    metadata(ck, &p.metadata, false);
    for (i, rule) in p.spec.rules.iter().enumerate() {
        for (j, from) in rule.from.iter().enumerate() {
            let f = format!("spec.rules[{i}].from[{j}].source");
            let s = &from.source;
            if *s == Source::default() {
                ck.err(
                    &f,
                    "must set at least one field (principals, notPrincipals, namespaces, notNamespaces, \
                     ipBlocks, notIpBlocks): an empty source matches every peer; leave out `from` to mean any source",
                );
            }
            for (name, list) in [
                ("principals", &s.principals),
                ("notPrincipals", &s.not_principals),
                ("namespaces", &s.namespaces),
                ("notNamespaces", &s.not_namespaces),
            ] {
                for (k, v) in list.iter().enumerate() {
                    if v.is_empty() {
                        ck.err(
                            format!("{f}.{name}[{k}]"),
                            "must not be empty: use \"*\" for any",
                        );
                    }
                }
            }
        }
        for (j, to) in rule.to.iter().enumerate() {
            let f = format!("spec.rules[{i}].to[{j}].operation");
            let o = &to.operation;
            if *o == Operation::default() {
                ck.err(
                    &f,
                    "must set at least one field (ports, notPorts, methods, notMethods, paths, notPaths, hosts, notHosts): \
                     an empty operation matches every request; leave out `to` to mean any operation",
                );
            }
            for (name, list) in [("ports", &o.ports), ("notPorts", &o.not_ports)] {
                for (k, port) in list.iter().enumerate() {
                    ck.port(format!("{f}.{name}[{k}]"), (*port).into());
                }
            }
            for (name, list) in [("methods", &o.methods), ("notMethods", &o.not_methods)] {
                for (k, m) in list.iter().enumerate() {
                    if m != "*" && !METHODS.contains(&m.as_str()) {
                        ck.err(
                            format!("{f}.{name}[{k}]"),
                            format!(
                                "must be an upper-case HTTP method ({}) or \"*\" (got {m:?})",
                                METHODS.join(", ")
                            ),
                        );
                    }
                }
            }
            for (name, list) in [("hosts", &o.hosts), ("notHosts", &o.not_hosts)] {
                for (k, host) in list.iter().enumerate() {
                    if host.is_empty() {
                        ck.err(
                            format!("{f}.{name}[{k}]"),
                            "must not be empty: use \"*\" for any",
                        );
                    }
                }
            }
            for (name, list) in [("paths", &o.paths), ("notPaths", &o.not_paths)] {
                for (k, path) in list.iter().enumerate() {
                    if !(path.starts_with('/') || path.starts_with('*')) {
                        ck.err(
                            format!("{f}.{name}[{k}]"),
                            format!("must start with '/' or be a '*' wildcard (got {path:?})"),
                        );
                    }
                }
            }
        }
    }
}

fn percent(ck: &mut Ck<'_>, field: &str, v: f64) {
    if !(0.0..=100.0).contains(&v) {
        ck.err(
            field,
            format!("must be a percentage between 0 and 100 (got {v})"),
        );
    }
}

pub fn traffic(ck: &mut Ck<'_>, p: &TrafficPolicy) {
    metadata(ck, &p.metadata, false);
    let t = &p.spec.target_ref;
    if t.kind != "Service" {
        ck.err(
            "spec.targetRef.kind",
            format!("must be Service (got {:?})", t.kind),
        );
    }
    if let Some(g) = t.group.as_deref().filter(|g| !g.is_empty() && *g != "core") {
        ck.err(
            "spec.targetRef.group",
            format!("must be \"\" (the core group of Service), got {g:?}"),
        );
    }
    if t.name.is_empty() {
        ck.err(
            "spec.targetRef.name",
            "required: the name of a Service in the policy's namespace",
        );
    }
    if let Some(o) = &p.spec.outlier_detection {
        if o.consecutive_errors == Some(0) {
            ck.err(
                "spec.outlierDetection.consecutiveErrors",
                "must be >= 1 (got 0)",
            );
        }
        if let Some(m) = o.max_ejection_percent {
            percent(ck, "spec.outlierDetection.maxEjectionPercent", m.into());
        }
    }
    if let Some(c) = &p.spec.connection_limits {
        for (name, v) in [
            ("maxConnections", c.max_connections),
            ("maxPendingRequests", c.max_pending_requests),
            ("maxRequests", c.max_requests),
            ("maxRequestsPerConnection", c.max_requests_per_connection),
        ] {
            if v == Some(0) {
                ck.err(
                    format!("spec.connectionLimits.{name}"),
                    "must be >= 1 (got 0); leave it out for no limit",
                );
            }
        }
    }
    if let Some(b) = &p.spec.retry_budget {
        percent(ck, "spec.retryBudget.percent", b.percent.into());
    }
    if let Some(f) = &p.spec.fault {
        if let Some(d) = &f.delay {
            percent(ck, "spec.fault.delay.percentage", d.percentage);
        }
        if let Some(a) = &f.abort {
            percent(ck, "spec.fault.abort.percentage", a.percentage);
            if !(200..=599).contains(&a.http_status) {
                ck.err(
                    "spec.fault.abort.httpStatus",
                    format!("must be an HTTP status 200-599 (got {})", a.http_status),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{parse::parse_object, validate::validate_object};

    /// The cluster source's per-object check refuses the same empty matches as
    /// the file source.
    #[test]
    fn cluster_object_with_empty_source_is_refused() {
        let obj = serde_json::json!({
            "apiVersion": "weft.dev/v1alpha1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "p", "namespace": "shop"},
            "spec": {"action": "ALLOW", "rules": [{"from": [{"source": {}}], "to": [{"operation": {}}]}]},
        });
        let (parsed, errors) = parse_object(obj);
        assert!(errors.is_empty(), "{errors:?}");
        let (resource, origin) = parsed.expect("typed");
        let fields: Vec<_> = validate_object(&resource, &origin)
            .into_iter()
            .filter_map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "spec.rules[0].from[0].source",
                "spec.rules[0].to[0].operation"
            ]
        );
    }
}
