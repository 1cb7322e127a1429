//! Per-object verdicts for the kinds the API server cannot fully validate for us
//! (Gateway API routes, Weft's policies): each object is typed with the file
//! source's rules and checked by the shared validators on its own. A refused
//! object is kept aside with its errors; every other object still applies.

use kube::core::DynamicObject;
use serde::Serialize;

use crate::config::{
    errors::{ConfigError, ResourceRef},
    parse::parse_object,
    resources::Resource,
    validate::validate_object,
};

/// One object of a checked kind, as last seen.
#[derive(Clone, Debug)]
pub enum Checked {
    /// Boxed: a mirror holds many of these, most of them small refusals or routes.
    Accepted(Box<Resource>),
    Refused(Refusal),
}

/// An object the agent refused, and why (shown by `mesh-agent status`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Refusal {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    /// Each error as `field: reason`.
    pub errors: Vec<String>,
    /// An earlier valid version of the object stays in force.
    #[serde(default)]
    pub previous_in_force: bool,
}

/// What the cluster source keeps of one object: the version in force, and why
/// its latest version was refused, if it was. An invalid update never undoes
/// the last valid version (a DENY policy edited into an invalid one keeps
/// denying), as the file source keeps its last valid file.
#[derive(Clone, Debug)]
pub struct Kept {
    pub in_force: Option<Box<Resource>>,
    pub refusal: Option<Refusal>,
}

impl Kept {
    /// The kept form after `checked`, given what was kept of the previous version.
    pub fn after(checked: Checked, previous: Option<&Kept>) -> Kept {
        match checked {
            Checked::Accepted(r) => Kept {
                in_force: Some(r),
                refusal: None,
            },
            Checked::Refused(mut refusal) => {
                let in_force = previous.and_then(|p| p.in_force.clone());
                refusal.previous_in_force = in_force.is_some();
                Kept {
                    in_force,
                    refusal: Some(refusal),
                }
            }
        }
    }

    /// Whether this refusal is news (not the same as the previous version's,
    /// as after a relist): only news is logged and counted.
    pub fn refusal_is_new(&self, previous: Option<&Kept>) -> bool {
        self.refusal.is_some()
            && previous.and_then(|p| p.refusal.as_ref()).map(|r| &r.errors)
                != self.refusal.as_ref().map(|r| &r.errors)
    }
}

/// Types and validates one object.
pub fn check(kind: &str, api_version: &str, obj: DynamicObject) -> Checked {
    let name = obj.metadata.name.clone().unwrap_or_default();
    let namespace = obj.metadata.namespace.clone();
    let value = match serde_json::to_value(&obj) {
        Ok(mut v) => {
            // The dynamic type keeps `types` only when the server sent them.
            v["apiVersion"] = api_version.into();
            v["kind"] = kind.into();
            v
        }
        Err(e) => {
            return Checked::Refused(Refusal {
                kind: kind.into(),
                namespace,
                name,
                errors: vec![format!("cannot be read: {e}")],
                previous_in_force: false,
            });
        }
    };
    let (typed, mut errors) = parse_object(value);
    if let Some((resource, origin)) = &typed {
        errors.extend(validate_object(resource, origin));
    }
    match typed {
        Some((resource, _)) if errors.is_empty() => Checked::Accepted(Box::new(resource)),
        _ => Checked::Refused(Refusal {
            kind: kind.into(),
            namespace,
            name,
            errors: errors.iter().map(field_and_reason).collect(),
            previous_in_force: false,
        }),
    }
}

fn field_and_reason(e: &ConfigError) -> String {
    match &e.field {
        Some(f) => format!("{f}: {}", e.reason),
        None => e.reason.clone(),
    }
}

impl Refusal {
    pub fn resource(&self) -> ResourceRef {
        ResourceRef {
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(json: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json).expect("a dynamic object")
    }

    const POLICY: (&str, &str) = ("AuthorizationPolicy", "weft.dev/v1alpha1");

    #[test]
    fn a_valid_policy_is_accepted() {
        let obj = object(serde_json::json!({
            "apiVersion": "weft.dev/v1alpha1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "p", "namespace": "shop", "uid": "x", "resourceVersion": "7",
                         "managedFields": [{"manager": "kubectl"}]},
            "spec": {"action": "DENY", "rules": [{"from": [{"source": {"namespaces": ["other"]}}]}]},
            "status": {"conditions": []}
        }));
        let Checked::Accepted(r) = check(POLICY.0, POLICY.1, obj) else {
            panic!("refused a valid policy");
        };
        assert!(matches!(*r, Resource::AuthorizationPolicy(_)));
    }

    #[test]
    fn an_invalid_policy_is_refused_with_its_field() {
        let obj = object(serde_json::json!({
            "metadata": {"name": "p", "namespace": "shop"},
            "spec": {"rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/33"]}}]}]}
        }));
        let Checked::Refused(r) = check(POLICY.0, POLICY.1, obj) else {
            panic!("accepted an invalid CIDR");
        };
        assert_eq!(r.resource().to_string(), "AuthorizationPolicy shop/p");
        assert!(
            r.errors[0].starts_with("spec.rules[0].from[0].source.ipBlocks[0]"),
            "{:?}",
            r.errors
        );
    }

    #[test]
    fn an_invalid_update_keeps_the_last_valid_version_in_force() {
        let valid = object(serde_json::json!({
            "metadata": {"name": "p", "namespace": "shop"},
            "spec": {"action": "DENY", "rules": [{}]}
        }));
        let invalid = object(serde_json::json!({
            "metadata": {"name": "p", "namespace": "shop"},
            "spec": {"action": "DENY", "rules": [{"to": [{"operation": {"ports": [0]}}]}]}
        }));
        let first = Kept::after(check(POLICY.0, POLICY.1, valid), None);
        assert!(first.refusal.is_none() && first.in_force.is_some());
        let second = Kept::after(check(POLICY.0, POLICY.1, invalid.clone()), Some(&first));
        assert!(second.in_force.is_some(), "the valid DENY stays in force");
        let refusal = second.refusal.as_ref().expect("refused");
        assert!(refusal.previous_in_force);
        assert!(second.refusal_is_new(Some(&first)));
        let relisted = Kept::after(check(POLICY.0, POLICY.1, invalid), Some(&second));
        assert!(
            !relisted.refusal_is_new(Some(&second)),
            "a relist is not news"
        );
        // A new object that is invalid from the start has nothing in force.
        let fresh = Kept::after(
            check(
                POLICY.0,
                POLICY.1,
                object(serde_json::json!({
                    "metadata": {"name": "q", "namespace": "shop"},
                    "spec": {"rules": [{"to": [{"operation": {"ports": [0]}}]}]}
                })),
            ),
            None,
        );
        assert!(fresh.in_force.is_none() && fresh.refusal.is_some());
    }

    #[test]
    fn an_unknown_field_is_refused() {
        let obj = object(serde_json::json!({
            "metadata": {"name": "p", "namespace": "shop"},
            "spec": {"acton": "DENY"}
        }));
        let Checked::Refused(r) = check(POLICY.0, POLICY.1, obj) else {
            panic!("accepted an unknown field");
        };
        assert!(
            r.errors[0].contains("unknown field `acton`"),
            "{:?}",
            r.errors
        );
    }
}
