//! The status of a mesh (GAMMA) route, as Gateway API defines it: one entry of
//! `status.parents` per `parentRef` that is a Service, written by controller
//! `weft.dev/mesh`, with two conditions:
//!
//! - `Accepted`: `True`/`Accepted`; `False`/`UnsupportedValue` when the route
//!   is refused by the validator the agents use (its message), or
//!   `False`/`NoMatchingParent` when the parent Service does not exist or has
//!   no port `parentRef.port`.
//! - `ResolvedRefs`: `True`/`ResolvedRefs`; else `False` with, by precedence,
//!   `InvalidKind` (a backend that is not a Service), `RefNotPermitted` (a
//!   Service of another namespace that no ReferenceGrant there permits) or
//!   `BackendNotFound` (no such Service). The message lists every problem.
//!
//! Entries of other controllers are kept as they are. Pure: the caller gives
//! the Services, the grants and the time. `mesh-agent routes` shows the same
//! [`parent_verdicts`] over the agent's snapshot (`status::local`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde_json::Value;

use super::conditions::Verdict;
use crate::config::resources::gateway::{ParentReference, RouteParentStatus};

/// Weft's `controllerName` in route status.
pub const CONTROLLER_NAME: &str = "weft.dev/mesh";

const ACCEPTED: &str = "Accepted";
const RESOLVED_REFS: &str = "ResolvedRefs";

/// Where the Services are: `ports(namespace, name)` is `None` when there is no
/// such Service, else its ports.
pub trait Services {
    fn ports(&self, namespace: &str, name: &str) -> Option<&[i32]>;
}

/// Where the ReferenceGrants are: whether a route of `route_kind` in
/// `from_namespace` may refer to the Service `to_namespace/name`
/// ([`crate::state::grant::permitted`]).
pub trait Grants {
    fn permits(
        &self,
        route_kind: &str,
        from_namespace: &str,
        to_namespace: &str,
        name: &str,
    ) -> bool;
}

/// A backend reference of a rule (or of a `RequestMirror` filter), as written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackendRef {
    /// Its field path, e.g. `spec.rules[0].backendRefs[1]`, for messages.
    pub field: String,
    pub group: Option<String>,
    pub kind: Option<String>,
    pub name: String,
    pub namespace: Option<String>,
}

/// What a route's status is computed from.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteFacts {
    /// `HTTPRoute` or `GRPCRoute`: ReferenceGrants name the kind they admit.
    pub kind: String,
    pub namespace: String,
    pub generation: Option<i64>,
    pub parent_refs: Vec<ParentReference>,
    pub backend_refs: Vec<BackendRef>,
    /// `Err(message)`: the validator refuses the route (so every agent does).
    pub verdict: Result<(), String>,
    /// `status.parents` as the API server has it.
    pub current: Vec<Value>,
}

/// Whether `parent` is a Service: the kind the agents attach routes to (group
/// `""`, also accepted unset or `core`, as the validator does).
pub fn is_service_parent(parent: &ParentReference) -> bool {
    parent.kind.as_deref() == Some("Service") && is_core(parent.group.as_deref())
}

fn is_core(group: Option<&str>) -> bool {
    matches!(group, None | Some("" | "core"))
}

impl RouteFacts {
    /// The Services the route refers to (parents and backends), as
    /// `(namespace, name)`: a change to one of them may change the status.
    pub fn refers_to(&self, namespace: &str, name: &str) -> bool {
        let parents = self
            .parent_refs
            .iter()
            .filter(|p| is_service_parent(p))
            .map(|p| {
                (
                    p.namespace.as_deref().unwrap_or(&self.namespace),
                    p.name.as_str(),
                )
            });
        let backends = self.backend_refs.iter().map(|b| {
            (
                b.namespace.as_deref().unwrap_or(&self.namespace),
                b.name.as_str(),
            )
        });
        parents
            .chain(backends)
            .any(|(ns, n)| ns == namespace && n == name)
    }

    /// Whether the route has a backend in `namespace`, another namespace than
    /// its own: a ReferenceGrant there may change the status.
    pub fn refers_across_to(&self, namespace: &str) -> bool {
        namespace != self.namespace
            && self
                .backend_refs
                .iter()
                .any(|b| b.namespace.as_deref() == Some(namespace))
    }
}

/// The verdicts for one parent Service.
#[derive(Clone, Debug, PartialEq)]
pub struct ParentVerdicts {
    pub parent_ref: ParentReference,
    pub accepted: Verdict,
    pub resolved_refs: Verdict,
}

/// `Accepted` and `ResolvedRefs` for each distinct parent Service of the route.
pub fn parent_verdicts(
    facts: &RouteFacts,
    services: &impl Services,
    grants: &impl Grants,
) -> Vec<ParentVerdicts> {
    let resolved = resolved_refs(facts, services, grants);
    let mut out: Vec<ParentVerdicts> = Vec::new();
    for parent in facts.parent_refs.iter().filter(|p| is_service_parent(p)) {
        if out.iter().any(|o| o.parent_ref == *parent) {
            continue;
        }
        out.push(ParentVerdicts {
            parent_ref: parent.clone(),
            accepted: accepted(facts, parent, services),
            resolved_refs: resolved.clone(),
        });
    }
    out
}

/// `Accepted` of a route the validator refuses: `message` is its errors.
pub fn refused(message: impl Into<String>) -> Verdict {
    Verdict::no(ACCEPTED, "UnsupportedValue", message)
}

/// The new `status.parents` when it differs from the current one, else `None`.
pub fn route_parents(
    facts: &RouteFacts,
    services: &impl Services,
    grants: &impl Grants,
    now: &Time,
) -> Result<Option<Vec<Value>>, serde_json::Error> {
    let (others, previous, unreadable) = split_current(&facts.current);
    let mut ours: Vec<RouteParentStatus> = Vec::new();
    for v in parent_verdicts(facts, services, grants) {
        let before: &[Condition] = previous
            .iter()
            .find(|p| p.parent_ref == v.parent_ref)
            .map_or(&[], |p| p.conditions.as_slice());
        ours.push(RouteParentStatus {
            parent_ref: v.parent_ref,
            controller_name: CONTROLLER_NAME.to_owned(),
            conditions: vec![
                v.accepted.condition(facts.generation, before, now),
                v.resolved_refs.condition(facts.generation, before, now),
            ],
        });
    }
    if ours == previous && !unreadable {
        return Ok(None);
    }
    let mut parents = others;
    for entry in &ours {
        parents.push(serde_json::to_value(entry)?);
    }
    Ok(Some(parents))
}

/// The current entries: other controllers' (kept as they are), ours (typed),
/// and whether one of ours could not be read (it is then rewritten).
fn split_current(current: &[Value]) -> (Vec<Value>, Vec<RouteParentStatus>, bool) {
    let (mut others, mut ours, mut unreadable) = (Vec::new(), Vec::new(), false);
    for entry in current {
        if entry.get("controllerName").and_then(Value::as_str) != Some(CONTROLLER_NAME) {
            others.push(entry.clone());
            continue;
        }
        match serde_json::from_value::<RouteParentStatus>(entry.clone()) {
            Ok(status) => ours.push(status),
            Err(_) => unreadable = true,
        }
    }
    (others, ours, unreadable)
}

fn accepted(facts: &RouteFacts, parent: &ParentReference, services: &impl Services) -> Verdict {
    if let Err(message) = &facts.verdict {
        return refused(message.clone());
    }
    let ns = parent.namespace.as_deref().unwrap_or(&facts.namespace);
    let name = &parent.name;
    match (services.ports(ns, name), parent.port) {
        (None, _) => Verdict::no(
            ACCEPTED,
            "NoMatchingParent",
            format!("parent Service {ns}/{name} does not exist"),
        ),
        (Some(ports), Some(port)) if !ports.contains(&port) => Verdict::no(
            ACCEPTED,
            "NoMatchingParent",
            format!("parent Service {ns}/{name} has no port {port}"),
        ),
        (Some(_), port) => Verdict::yes(
            ACCEPTED,
            "Accepted",
            match port {
                Some(port) => format!("attached to Service {ns}/{name} port {port}"),
                None => format!("attached to Service {ns}/{name}"),
            },
        ),
    }
}

/// The problems of the backend references, worst first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum RefProblem {
    InvalidKind,
    RefNotPermitted,
    BackendNotFound,
}

impl RefProblem {
    fn reason(self) -> &'static str {
        match self {
            RefProblem::InvalidKind => "InvalidKind",
            RefProblem::RefNotPermitted => "RefNotPermitted",
            RefProblem::BackendNotFound => "BackendNotFound",
        }
    }
}

fn resolved_refs(facts: &RouteFacts, services: &impl Services, grants: &impl Grants) -> Verdict {
    let mut problems: Vec<(RefProblem, String)> = Vec::new();
    for b in &facts.backend_refs {
        let ns = b.namespace.as_deref().unwrap_or(&facts.namespace);
        let (field, name) = (&b.field, &b.name);
        let kind = b.kind.as_deref().unwrap_or("Service");
        if kind != "Service" || !is_core(b.group.as_deref()) {
            let group = b.group.as_deref().unwrap_or("");
            problems.push((
                RefProblem::InvalidKind,
                format!("{field}: kind {kind:?} of group {group:?} is not supported: backends are Services"),
            ));
        } else if !grants.permits(&facts.kind, &facts.namespace, ns, name) {
            let (kind, from) = (&facts.kind, &facts.namespace);
            problems.push((
                RefProblem::RefNotPermitted,
                format!("{field}: Service {ns}/{name} is in another namespace and no ReferenceGrant there permits it: add one in namespace {ns} from {{group: gateway.networking.k8s.io, kind: {kind}, namespace: {from}}} to {{group: \"\", kind: Service}}"),
            ));
        } else if services.ports(ns, name).is_none() {
            problems.push((
                RefProblem::BackendNotFound,
                format!("{field}: Service {ns}/{name} does not exist"),
            ));
        }
    }
    match problems.iter().map(|(p, _)| *p).min() {
        None => Verdict::yes(RESOLVED_REFS, "ResolvedRefs", "all references resolved"),
        Some(worst) => {
            let message: Vec<&str> = problems.iter().map(|(_, m)| m.as_str()).collect();
            Verdict::no(RESOLVED_REFS, worst.reason(), message.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;

    use super::*;
    use crate::state::ObjectKey;
    use crate::state::grant::{GATEWAY_GROUP, GrantFrom, GrantTo, ReferenceGrant, permitted};
    use crate::status::conditions::tests::at;

    #[derive(Default)]
    struct World(HashMap<(String, String), Vec<i32>>, Vec<ReferenceGrant>);

    impl World {
        fn with(mut self, ns: &str, name: &str, ports: &[i32]) -> Self {
            self.0.insert((ns.into(), name.into()), ports.to_vec());
            self
        }

        /// A grant in `ns` for HTTPRoutes of `from` to every Service.
        fn granting(mut self, ns: &str, from: &str) -> Self {
            self.1.push(ReferenceGrant {
                key: ObjectKey::new(ns, "g"),
                from: vec![GrantFrom {
                    group: GATEWAY_GROUP.into(),
                    kind: "HTTPRoute".into(),
                    namespace: from.into(),
                }],
                to: vec![GrantTo {
                    group: String::new(),
                    kind: "Service".into(),
                    name: None,
                }],
            });
            self
        }
    }

    impl Grants for World {
        fn permits(&self, kind: &str, from: &str, to: &str, name: &str) -> bool {
            permitted(&self.1, kind, from, to, name)
        }
    }

    impl Services for World {
        fn ports(&self, namespace: &str, name: &str) -> Option<&[i32]> {
            self.0
                .get(&(namespace.to_owned(), name.to_owned()))
                .map(Vec::as_slice)
        }
    }

    fn service_parent(name: &str) -> ParentReference {
        ParentReference {
            group: Some(String::new()),
            kind: Some("Service".into()),
            name: name.into(),
            ..Default::default()
        }
    }

    fn backend(name: &str) -> BackendRef {
        BackendRef {
            field: "spec.rules[0].backendRefs[0]".into(),
            name: name.into(),
            ..Default::default()
        }
    }

    fn route() -> RouteFacts {
        RouteFacts {
            kind: "HTTPRoute".into(),
            namespace: "shop".into(),
            generation: Some(3),
            parent_refs: vec![service_parent("reviews")],
            backend_refs: vec![backend("reviews-v2")],
            verdict: Ok(()),
            current: Vec::new(),
        }
    }

    fn world() -> World {
        World::default()
            .with("shop", "reviews", &[9080])
            .with("shop", "reviews-v2", &[9080])
    }

    /// The new parents, typed; panics when nothing changed.
    fn parents(facts: &RouteFacts, world: &World, now: i64) -> Vec<Value> {
        route_parents(facts, world, world, &at(now))
            .expect("serializable")
            .expect("a change")
    }

    /// (type, status, reason) of the conditions of entry `i`.
    fn conditions(parents: &[Value], i: usize) -> Vec<(String, String, String)> {
        let entry: RouteParentStatus = serde_json::from_value(parents[i].clone()).unwrap();
        entry
            .conditions
            .iter()
            .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
            .collect()
    }

    fn message(parents: &[Value], i: usize, type_: &str) -> String {
        let entry: RouteParentStatus = serde_json::from_value(parents[i].clone()).unwrap();
        entry
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap()
            .message
            .clone()
    }

    fn c(t: &str, s: &str, r: &str) -> (String, String, String) {
        (t.into(), s.into(), r.into())
    }

    #[test]
    fn a_valid_route_is_accepted_with_its_references_resolved() {
        let p = parents(&route(), &world(), 100);
        assert_eq!(p.len(), 1);
        assert_eq!(
            conditions(&p, 0),
            [
                c("Accepted", "True", "Accepted"),
                c("ResolvedRefs", "True", "ResolvedRefs")
            ]
        );
        assert_eq!(p[0]["controllerName"], "weft.dev/mesh");
        assert_eq!(
            p[0]["parentRef"],
            json!({"group": "", "kind": "Service", "name": "reviews"})
        );
        assert_eq!(p[0]["conditions"][0]["observedGeneration"], 3);
        assert_eq!(
            p[0]["conditions"][0]["lastTransitionTime"],
            "1970-01-01T00:01:40Z"
        );
    }

    #[test]
    fn an_unchanged_status_is_not_rewritten_and_keeps_its_times() {
        let mut facts = route();
        facts.current = parents(&facts, &world(), 100);
        assert_eq!(
            route_parents(&facts, &world(), &world(), &at(200)).unwrap(),
            None
        );
        // A new generation changes observedGeneration, not the transition times.
        facts.generation = Some(4);
        let p = parents(&facts, &world(), 300);
        assert_eq!(p[0]["conditions"][0]["observedGeneration"], 4);
        assert_eq!(
            p[0]["conditions"][0]["lastTransitionTime"],
            "1970-01-01T00:01:40Z"
        );
    }

    #[test]
    fn a_missing_parent_service_is_no_matching_parent() {
        let facts = RouteFacts {
            parent_refs: vec![service_parent("gone")],
            ..route()
        };
        let p = parents(&facts, &world(), 100);
        assert_eq!(
            conditions(&p, 0)[0],
            c("Accepted", "False", "NoMatchingParent")
        );
        assert_eq!(
            message(&p, 0, "Accepted"),
            "parent Service shop/gone does not exist"
        );
    }

    #[test]
    fn a_parent_port_the_service_lacks_is_no_matching_parent() {
        let mut parent = service_parent("reviews");
        parent.port = Some(80);
        let mut other_ns = service_parent("reviews");
        other_ns.namespace = Some("front".into());
        let facts = RouteFacts {
            parent_refs: vec![parent, other_ns],
            ..route()
        };
        let world = world().with("front", "reviews", &[80]);
        let p = parents(&facts, &world, 100);
        assert_eq!(
            conditions(&p, 0)[0],
            c("Accepted", "False", "NoMatchingParent")
        );
        assert_eq!(
            message(&p, 0, "Accepted"),
            "parent Service shop/reviews has no port 80"
        );
        // A parent in another namespace (a consumer route) is looked up there.
        assert_eq!(conditions(&p, 1)[0], c("Accepted", "True", "Accepted"));
    }

    #[test]
    fn an_invalid_route_is_unsupported_value_with_the_validators_message() {
        let facts = RouteFacts {
            verdict: Err("spec.rules[0].backendRefs[0].port: required".into()),
            ..route()
        };
        let p = parents(&facts, &world(), 100);
        assert_eq!(
            conditions(&p, 0)[0],
            c("Accepted", "False", "UnsupportedValue")
        );
        assert_eq!(
            message(&p, 0, "Accepted"),
            "spec.rules[0].backendRefs[0].port: required"
        );
    }

    #[test]
    fn a_missing_backend_is_backend_not_found() {
        let facts = RouteFacts {
            backend_refs: vec![backend("reviews-v3")],
            ..route()
        };
        let p = parents(&facts, &world(), 100);
        assert_eq!(
            conditions(&p, 0),
            [
                c("Accepted", "True", "Accepted"),
                c("ResolvedRefs", "False", "BackendNotFound")
            ]
        );
        assert_eq!(
            message(&p, 0, "ResolvedRefs"),
            "spec.rules[0].backendRefs[0]: Service shop/reviews-v3 does not exist"
        );
    }

    #[test]
    fn a_backend_of_another_kind_is_invalid_kind_first() {
        let mut bucket = backend("bucket");
        bucket.group = Some("storage.example.com".into());
        bucket.kind = Some("Bucket".into());
        let facts = RouteFacts {
            backend_refs: vec![backend("missing"), bucket],
            ..route()
        };
        let p = parents(&facts, &world(), 100);
        assert_eq!(
            conditions(&p, 0)[1],
            c("ResolvedRefs", "False", "InvalidKind")
        );
        let m = message(&p, 0, "ResolvedRefs");
        assert!(
            m.contains("\"Bucket\"") && m.contains("shop/missing does not exist"),
            "{m}"
        );
    }

    #[test]
    fn a_backend_in_another_namespace_is_not_permitted() {
        let mut remote = backend("reviews");
        remote.namespace = Some("other".into());
        let facts = RouteFacts {
            backend_refs: vec![backend("missing"), remote],
            ..route()
        };
        let world = world().with("other", "reviews", &[9080]);
        let p = parents(&facts, &world, 100);
        assert_eq!(
            conditions(&p, 0)[1],
            c("ResolvedRefs", "False", "RefNotPermitted")
        );
        let m = message(&p, 0, "ResolvedRefs");
        assert!(
            m.contains("Service other/reviews is in another namespace and no ReferenceGrant there permits it: add one in namespace other"),
            "{m}"
        );
    }

    #[test]
    fn a_reference_grant_in_the_backend_s_namespace_permits_it() {
        let mut remote = backend("reviews");
        remote.namespace = Some("other".into());
        let facts = RouteFacts {
            backend_refs: vec![remote],
            ..route()
        };
        let granted = world()
            .with("other", "reviews", &[9080])
            .granting("other", "shop");
        let p = parents(&facts, &granted, 100);
        assert_eq!(
            conditions(&p, 0)[1],
            c("ResolvedRefs", "True", "ResolvedRefs")
        );
        // A grant elsewhere, or for another namespace's routes, does not.
        for world in [
            world()
                .with("other", "reviews", &[9080])
                .granting("shop", "shop"),
            world()
                .with("other", "reviews", &[9080])
                .granting("other", "front"),
        ] {
            let p = parents(&facts, &world, 100);
            assert_eq!(
                conditions(&p, 0)[1],
                c("ResolvedRefs", "False", "RefNotPermitted")
            );
        }
        // Permitted but missing: BackendNotFound.
        let p = parents(&facts, &world().granting("other", "shop"), 100);
        assert_eq!(
            conditions(&p, 0)[1],
            c("ResolvedRefs", "False", "BackendNotFound")
        );
        assert!(facts.refers_across_to("other") && !facts.refers_across_to("shop"));
    }

    #[test]
    fn only_service_parents_get_entries_and_other_controllers_are_kept() {
        let gateway = ParentReference {
            name: "ingress".into(),
            ..Default::default()
        };
        let theirs = json!({
            "parentRef": {"name": "ingress"},
            "controllerName": "example.com/gateway",
            "conditions": [],
        });
        let stale_ours = json!({
            "parentRef": {"group": "", "kind": "Service", "name": "old"},
            "controllerName": "weft.dev/mesh",
            "conditions": [],
        });
        let facts = RouteFacts {
            parent_refs: vec![
                gateway,
                service_parent("reviews"),
                service_parent("reviews"),
            ],
            current: vec![stale_ours, theirs.clone()],
            ..route()
        };
        let p = parents(&facts, &world(), 100);
        assert_eq!(p.len(), 2, "theirs, then ours for the one Service: {p:?}");
        assert_eq!(p[0], theirs);
        assert_eq!(p[1]["parentRef"]["name"], "reviews");
    }

    #[test]
    fn a_route_no_longer_ours_loses_only_our_entries() {
        let mut facts = route();
        facts.current = parents(&facts, &world(), 100);
        facts.parent_refs = vec![ParentReference {
            name: "ingress".into(),
            ..Default::default()
        }];
        assert_eq!(parents(&facts, &world(), 200), Vec::<Value>::new());
    }

    #[test]
    fn an_unreadable_entry_of_ours_is_rewritten() {
        let mut facts = route();
        let mut current = parents(&facts, &world(), 100);
        current.push(json!({"controllerName": "weft.dev/mesh", "parentRef": 7}));
        facts.current = current;
        assert_eq!(parents(&facts, &world(), 200).len(), 1);
    }

    #[test]
    fn a_route_refers_to_its_parents_and_backends() {
        let facts = route();
        assert!(facts.refers_to("shop", "reviews"));
        assert!(facts.refers_to("shop", "reviews-v2"));
        assert!(!facts.refers_to("other", "reviews"));
    }
}
