//! What the status of an object is computed from, read from the object as the
//! API server sent it: the agents' verdict (the same `check` the cluster source
//! runs) and, for routes, the references, read leniently so that a refused
//! route still gets an entry per parent Service. Pure.

use kube::core::DynamicObject;
use serde::Deserialize;
use serde_json::Value;

use super::{policies::PolicyFacts, routes::BackendRef, routes::RouteFacts};
use crate::config::kube::checked::{Checked, check};
use crate::config::resources::gateway::ParentReference;
use crate::config::resources::{DEFAULT_NAMESPACE, Resource};
use crate::state::ReferenceGrant;

/// One object of a kind Weft writes status on.
#[derive(Clone, Debug, PartialEq)]
pub struct Object<F> {
    pub namespace: String,
    pub name: String,
    /// The version the facts were read from: a write is conditional on it.
    pub resource_version: Option<String>,
    pub facts: F,
}

/// A route (HTTPRoute or GRPCRoute: the same reference fields).
pub fn route(kind: &str, api_version: &str, obj: DynamicObject) -> Object<RouteFacts> {
    let spec = &obj.data["spec"];
    let parent_refs = list(&spec["parentRefs"])
        .iter()
        .filter_map(|p| ParentReference::deserialize(p).ok())
        .collect();
    let backend_refs = backend_refs(spec);
    let current = list(&obj.data["status"]["parents"]).to_vec();
    read(kind, api_version, obj, |namespace, generation, verdict| {
        RouteFacts {
            kind: kind.to_owned(),
            namespace: namespace.to_owned(),
            generation,
            parent_refs,
            backend_refs,
            verdict,
            current,
        }
    })
}

/// An AuthorizationPolicy or a TrafficPolicy.
pub fn policy(kind: &str, api_version: &str, obj: DynamicObject) -> Object<PolicyFacts> {
    let current = list(&obj.data["status"]["conditions"]).to_vec();
    read(kind, api_version, obj, |_, generation, verdict| {
        PolicyFacts {
            generation,
            verdict,
            current,
        }
    })
}

/// A ReferenceGrant as the agents apply it: `None` when their validator
/// refuses it (it then permits nothing, on the agents as in the status).
pub fn grant(obj: DynamicObject) -> Option<ReferenceGrant> {
    match check(GRANT_KIND, GRANT_API_VERSION, obj) {
        Checked::Accepted(r) => match *r {
            Resource::ReferenceGrant(g) => Some(ReferenceGrant::from_resource(&g)),
            _ => None,
        },
        Checked::Refused(_) => None,
    }
}

pub const GRANT_KIND: &str = "ReferenceGrant";
pub const GRANT_API_VERSION: &str = "gateway.networking.k8s.io/v1beta1";

fn read<F>(
    kind: &str,
    api_version: &str,
    obj: DynamicObject,
    facts: impl FnOnce(&str, Option<i64>, Result<(), String>) -> F,
) -> Object<F> {
    let meta = &obj.metadata;
    let namespace = meta
        .namespace
        .clone()
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
    let name = meta.name.clone().unwrap_or_default();
    let resource_version = meta.resource_version.clone();
    let generation = meta.generation;
    let verdict = match check(kind, api_version, obj) {
        Checked::Accepted(_) => Ok(()),
        Checked::Refused(r) => Err(r.errors.join("; ")),
    };
    Object {
        facts: facts(&namespace, generation, verdict),
        namespace,
        name,
        resource_version,
    }
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

/// A reference as written; fields the status does not need are ignored.
#[derive(Deserialize)]
struct RawRef {
    group: Option<String>,
    kind: Option<String>,
    name: String,
    namespace: Option<String>,
}

/// Every backend reference of the rules: `backendRefs[]`, and the
/// `requestMirror.backendRef` of the rules' and the backends' filters.
fn backend_refs(spec: &Value) -> Vec<BackendRef> {
    let mut refs = Vec::new();
    let mut push = |field: String, v: &Value| {
        if let Ok(r) = RawRef::deserialize(v) {
            refs.push(BackendRef {
                field,
                group: r.group,
                kind: r.kind,
                name: r.name,
                namespace: r.namespace,
            });
        }
    };
    for (i, rule) in list(&spec["rules"]).iter().enumerate() {
        let rf = format!("spec.rules[{i}]");
        for (j, b) in list(&rule["backendRefs"]).iter().enumerate() {
            let bf = format!("{rf}.backendRefs[{j}]");
            push(bf.clone(), b);
            mirrors(&bf, &b["filters"], &mut push);
        }
        mirrors(&rf, &rule["filters"], &mut push);
    }
    refs
}

fn mirrors(owner: &str, filters: &Value, push: &mut impl FnMut(String, &Value)) {
    for (k, f) in list(filters).iter().enumerate() {
        let b = &f["requestMirror"]["backendRef"];
        if !b.is_null() {
            push(format!("{owner}.filters[{k}].requestMirror.backendRef"), b);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(v: Value) -> DynamicObject {
        serde_json::from_value(v).expect("a dynamic object")
    }

    #[test]
    fn a_route_s_references_and_status_are_read() {
        let obj = object(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "r", "namespace": "shop", "generation": 4, "resourceVersion": "17"},
            "spec": {
                "parentRefs": [{"group": "", "kind": "Service", "name": "reviews", "port": 9080}],
                "rules": [{
                    "backendRefs": [{"name": "v1", "port": 9080, "filters": [
                        {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "shadow", "port": 80}}}
                    ]}],
                    "filters": [{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "audit", "namespace": "ops", "port": 80}}}]
                }]
            },
            "status": {"parents": [{"controllerName": "x"}]}
        }));
        let o = route("HTTPRoute", "gateway.networking.k8s.io/v1", obj);
        assert_eq!((o.namespace.as_str(), o.name.as_str()), ("shop", "r"));
        assert_eq!(o.facts.kind, "HTTPRoute");
        assert_eq!(o.resource_version.as_deref(), Some("17"));
        assert_eq!(o.facts.generation, Some(4));
        assert_eq!(o.facts.verdict, Ok(()));
        assert_eq!(o.facts.parent_refs[0].port, Some(9080));
        let fields: Vec<(&str, &str)> = o
            .facts
            .backend_refs
            .iter()
            .map(|b| (b.field.as_str(), b.name.as_str()))
            .collect();
        assert_eq!(
            fields,
            [
                ("spec.rules[0].backendRefs[0]", "v1"),
                (
                    "spec.rules[0].backendRefs[0].filters[0].requestMirror.backendRef",
                    "shadow"
                ),
                ("spec.rules[0].filters[0].requestMirror.backendRef", "audit"),
            ]
        );
        assert_eq!(o.facts.backend_refs[2].namespace.as_deref(), Some("ops"));
        assert_eq!(o.facts.current, [json!({"controllerName": "x"})]);
    }

    #[test]
    fn a_refused_route_keeps_its_parents_and_the_validators_message() {
        let obj = object(json!({
            "metadata": {"name": "r", "namespace": "shop"},
            "spec": {
                "parentRefs": [{"group": "", "kind": "Service", "name": "reviews"}],
                "rules": [{"backendRefs": [{"name": "v1"}], "colour": "blue"}]
            }
        }));
        let o = route("HTTPRoute", "gateway.networking.k8s.io/v1", obj);
        assert_eq!(o.facts.parent_refs.len(), 1);
        let message = o.facts.verdict.expect_err("refused");
        assert!(message.contains("colour"), "{message}");
        assert!(message.contains("backendRefs[0].port"), "{message}");
    }

    #[test]
    fn a_policy_s_verdict_is_read() {
        let obj = object(json!({
            "metadata": {"name": "p", "namespace": "shop", "generation": 2},
            "spec": {"action": "DENY", "rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/33"]}}]}]},
            "status": {"conditions": [{"type": "Accepted"}]}
        }));
        let o = policy("AuthorizationPolicy", "weft.dev/v1alpha1", obj);
        assert_eq!(o.facts.generation, Some(2));
        assert!(
            o.facts
                .verdict
                .unwrap_err()
                .starts_with("spec.rules[0].from[0].source.ipBlocks[0]")
        );
        assert_eq!(o.facts.current.len(), 1);
    }

    #[test]
    fn a_grant_applies_only_when_the_validator_accepts_it() {
        let grant_obj = |namespace: &str| {
            object(json!({
                "apiVersion": GRANT_API_VERSION, "kind": GRANT_KIND,
                "metadata": {"name": "g", "namespace": "other"},
                "spec": {
                    "from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": namespace}],
                    "to": [{"group": "", "kind": "Service"}]
                }
            }))
        };
        let g = grant(grant_obj("shop")).expect("accepted");
        assert_eq!(g.key.to_string(), "other/g");
        assert_eq!(g.from[0].namespace, "shop");
        assert_eq!(grant(grant_obj("Not A Namespace")), None);
    }
}
