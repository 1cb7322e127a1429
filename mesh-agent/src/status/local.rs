//! Route status over the agent's own state, for `mesh-agent routes` (admin
//! `/routes`): the same [`parent_verdicts`] the CA's status writer computes
//! from the API server, here over the snapshot's routes, Services and
//! ReferenceGrants, so that the command and `kubectl get` agree. Pure.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::conditions::Verdict;
use super::routes::{BackendRef, Grants, RouteFacts, Services, parent_verdicts, refused};
use crate::config::kube::Refusal;
use crate::config::resources::gateway::{HTTPRouteFilter, ParentReference};
use crate::state::{HttpRoute, ServiceKey, Snapshot, grant};

/// One route and its verdicts per parent Service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteReport {
    /// `HTTPRoute` or `GRPCRoute`.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// How many rules it has (`None`: refused, not in the state).
    pub rules: Option<usize>,
    pub parents: Vec<ParentReport>,
    /// Set when the validator refused the route: `Accepted` False with its
    /// errors. An earlier valid version may be in force (listed apart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<ConditionReport>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentReport {
    pub parent_ref: ParentReference,
    pub accepted: ConditionReport,
    pub resolved_refs: ConditionReport,
}

/// A condition as `kubectl get` shows it, without times.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConditionReport {
    /// `True` or `False`.
    pub status: String,
    pub reason: String,
    pub message: String,
}

impl From<Verdict> for ConditionReport {
    fn from(v: Verdict) -> Self {
        ConditionReport {
            status: if v.status { "True" } else { "False" }.to_owned(),
            reason: v.reason.to_owned(),
            message: v.message,
        }
    }
}

impl ConditionReport {
    pub fn is_true(&self) -> bool {
        self.status == "True"
    }
}

/// The Services of a snapshot, by `(namespace, name)`: their ports.
struct SnapshotServices(HashMap<(String, String), Vec<i32>>);

impl Services for SnapshotServices {
    fn ports(&self, namespace: &str, name: &str) -> Option<&[i32]> {
        self.0
            .get(&(namespace.to_owned(), name.to_owned()))
            .map(Vec::as_slice)
    }
}

struct SnapshotGrants<'a>(&'a Snapshot);

impl Grants for SnapshotGrants<'_> {
    fn permits(&self, kind: &str, from: &str, to: &str, name: &str) -> bool {
        let grants = self.0.reference_grants().iter().map(|g| &**g);
        grant::permitted(grants, kind, from, to, name)
    }
}

/// Every route of the snapshot with its verdicts, by kind, namespace, name.
pub fn routes(snapshot: &Snapshot) -> Vec<RouteReport> {
    let services = SnapshotServices(
        snapshot
            .services()
            .map(|s| {
                let key = (s.key.namespace.clone(), s.key.name.clone());
                (key, s.ports.iter().map(|p| i32::from(p.port)).collect())
            })
            .collect(),
    );
    let grants = SnapshotGrants(snapshot);
    let mut out: Vec<RouteReport> = snapshot
        .data()
        .routes
        .iter()
        .map(|r| {
            let facts = facts(r);
            RouteReport {
                kind: facts.kind.clone(),
                namespace: r.key.namespace.clone(),
                name: r.key.name.clone(),
                rules: Some(r.rules.len()),
                parents: parent_verdicts(&facts, &services, &grants)
                    .into_iter()
                    .map(|v| ParentReport {
                        parent_ref: v.parent_ref,
                        accepted: v.accepted.into(),
                        resolved_refs: v.resolved_refs.into(),
                    })
                    .collect(),
                refused: None,
            }
        })
        .collect();
    out.sort_by(|a, b| (&a.kind, &a.namespace, &a.name).cmp(&(&b.kind, &b.namespace, &b.name)));
    out
}

/// A route the cluster source refused (`/refused`), as the status writer
/// would show it: `Accepted` False, `UnsupportedValue`, with the errors.
pub fn refused_route(r: &Refusal) -> Option<RouteReport> {
    if r.kind != "HTTPRoute" && r.kind != "GRPCRoute" {
        return None;
    }
    let mut message = r.errors.join("; ");
    if r.previous_in_force {
        message.push_str(" (its last valid version stays in force)");
    }
    Some(RouteReport {
        kind: r.kind.clone(),
        namespace: r.namespace.clone().unwrap_or_default(),
        name: r.name.clone(),
        rules: None,
        parents: Vec::new(),
        refused: Some(refused(message).into()),
    })
}

/// What the status writer would read off the route, from its resolved form:
/// the state keeps only valid routes, whose parents and backends are all
/// Services, so field paths keep their indexes.
fn facts(r: &HttpRoute) -> RouteFacts {
    let ns = &r.key.namespace;
    let other_ns = |key: &ServiceKey| (key.namespace != *ns).then(|| key.namespace.clone());
    let parent_refs = r
        .parents
        .iter()
        .map(|p| ParentReference {
            group: Some(String::new()),
            kind: Some("Service".into()),
            namespace: other_ns(&p.service),
            name: p.service.name.clone(),
            port: p.port.map(i32::from),
            section_name: None,
        })
        .collect();
    let mut backend_refs = Vec::new();
    for (i, rule) in r.rules.iter().enumerate() {
        let rf = format!("spec.rules[{i}]");
        for (j, b) in rule.backends.iter().enumerate() {
            let bf = format!("{rf}.backendRefs[{j}]");
            backend_refs.push(BackendRef {
                field: bf.clone(),
                group: None,
                kind: None,
                name: b.service.name.clone(),
                namespace: other_ns(&b.service),
            });
            mirrors(&bf, &b.filters, &mut backend_refs);
        }
        mirrors(&rf, &rule.filters, &mut backend_refs);
    }
    RouteFacts {
        kind: r.kind.gvk_kind().to_owned(),
        namespace: ns.clone(),
        generation: None,
        parent_refs,
        backend_refs,
        verdict: Ok(()),
        current: Vec::new(),
    }
}

fn mirrors(owner: &str, filters: &[HTTPRouteFilter], out: &mut Vec<BackendRef>) {
    for (k, f) in filters.iter().enumerate() {
        if let Some(m) = &f.request_mirror {
            let b = &m.backend_ref;
            out.push(BackendRef {
                field: format!("{owner}.filters[{k}].requestMirror.backendRef"),
                group: b.group.clone(),
                kind: b.kind.clone(),
                name: b.name.clone(),
                namespace: b.namespace.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests;
