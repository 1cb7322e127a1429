//! What the status writer knows of the cluster: the routes, policies,
//! Services and ReferenceGrants its watchers reported, which objects may need a new status since
//! the last look, and the patch that brings one up to date. Pure: the writer
//! feeds it events and asks for patches.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::core::{DynamicObject, GroupVersionKind};
use kube::runtime::watcher::Event;
use serde_json::{Value, json};

use super::facts::{self, Object};
use super::policies::{PolicyFacts, policy_conditions};
use super::routes::{Grants, RouteFacts, Services, route_parents};
use super::store::{Change, Store};
use crate::state::{ReferenceGrant, grant};

/// The kinds Weft writes status on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    HttpRoute,
    GrpcRoute,
    AuthorizationPolicy,
    TrafficPolicy,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::HttpRoute,
        Kind::GrpcRoute,
        Kind::AuthorizationPolicy,
        Kind::TrafficPolicy,
    ];

    pub fn gvk(self) -> GroupVersionKind {
        let (group, version, kind) = match self {
            Kind::HttpRoute => ("gateway.networking.k8s.io", "v1", "HTTPRoute"),
            Kind::GrpcRoute => ("gateway.networking.k8s.io", "v1", "GRPCRoute"),
            Kind::AuthorizationPolicy => ("weft.dev", "v1alpha1", "AuthorizationPolicy"),
            Kind::TrafficPolicy => ("weft.dev", "v1alpha1", "TrafficPolicy"),
        };
        GroupVersionKind::gvk(group, version, kind)
    }

    fn api_version(self) -> String {
        let gvk = self.gvk();
        format!("{}/{}", gvk.group, gvk.version)
    }
}

/// One object whose status may need writing: its kind and `namespace/name`.
pub type Target = (Kind, String);

/// A watcher's report, for [`World::apply`].
// Transient (one per watch event, consumed at once): boxing the Service would
// cost an allocation per event for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Update {
    Object(Kind, Event<DynamicObject>),
    /// The cluster does not serve the kind (its CRD is not installed).
    Absent(Kind),
    Service(Event<Service>),
    /// ReferenceGrants: they decide `RefNotPermitted`.
    Grant(Event<DynamicObject>),
    /// The cluster does not serve ReferenceGrant (no grant permits anything).
    GrantsAbsent,
}

/// A merge patch of one object's `status`, conditional on the resource
/// version its facts were read from.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusPatch {
    pub namespace: String,
    pub name: String,
    pub body: Value,
}

/// Service `namespace/name` → its ports.
#[derive(Debug, Default)]
pub struct ServiceStore(Store<Vec<i32>>);

impl Services for ServiceStore {
    fn ports(&self, namespace: &str, name: &str) -> Option<&[i32]> {
        self.0
            .get(&format!("{namespace}/{name}"))
            .map(Vec::as_slice)
    }
}

/// ReferenceGrant `namespace/name` → the grant, `None` when the agents'
/// validator refuses it.
#[derive(Debug, Default)]
pub struct GrantStore(Store<Option<ReferenceGrant>>);

impl Grants for GrantStore {
    fn permits(&self, kind: &str, from: &str, to: &str, name: &str) -> bool {
        let grants = self.0.iter().filter_map(|(_, g)| g.as_ref());
        grant::permitted(grants, kind, from, to, name)
    }
}

#[derive(Debug, Default)]
pub struct World {
    http_routes: Store<Object<RouteFacts>>,
    grpc_routes: Store<Object<RouteFacts>>,
    authorization_policies: Store<Object<PolicyFacts>>,
    traffic_policies: Store<Object<PolicyFacts>>,
    services: ServiceStore,
    grants: GrantStore,
    dirty: HashSet<Target>,
}

fn key_of(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

fn object_key<K: ResourceExt>(obj: &K) -> String {
    key_of(&obj.namespace().unwrap_or_default(), &obj.name_any())
}

impl World {
    fn routes(&self, kind: Kind) -> Option<&Store<Object<RouteFacts>>> {
        match kind {
            Kind::HttpRoute => Some(&self.http_routes),
            Kind::GrpcRoute => Some(&self.grpc_routes),
            _ => None,
        }
    }

    fn policies(&self, kind: Kind) -> Option<&Store<Object<PolicyFacts>>> {
        match kind {
            Kind::AuthorizationPolicy => Some(&self.authorization_policies),
            Kind::TrafficPolicy => Some(&self.traffic_policies),
            _ => None,
        }
    }

    /// Every kind has been listed (or is not served): statuses may be computed.
    pub fn synced(&self) -> bool {
        self.http_routes.synced()
            && self.grpc_routes.synced()
            && self.authorization_policies.synced()
            && self.traffic_policies.synced()
            && self.services.0.synced()
            && self.grants.0.synced()
    }

    pub fn apply(&mut self, update: Update) {
        match update {
            Update::Object(kind, event) => {
                let api_version = kind.api_version();
                let name = kind.gvk().kind;
                let change = match kind {
                    Kind::HttpRoute => self
                        .http_routes
                        .apply(event, object_key, |o| facts::route(&name, &api_version, o)),
                    Kind::GrpcRoute => self
                        .grpc_routes
                        .apply(event, object_key, |o| facts::route(&name, &api_version, o)),
                    Kind::AuthorizationPolicy => {
                        self.authorization_policies
                            .apply(event, object_key, |o| facts::policy(&name, &api_version, o))
                    }
                    Kind::TrafficPolicy => self
                        .traffic_policies
                        .apply(event, object_key, |o| facts::policy(&name, &api_version, o)),
                };
                self.mark(kind, change);
            }
            Update::Absent(kind) => {
                let change = match kind {
                    Kind::HttpRoute => self.http_routes.mark_absent(),
                    Kind::GrpcRoute => self.grpc_routes.mark_absent(),
                    Kind::AuthorizationPolicy => self.authorization_policies.mark_absent(),
                    Kind::TrafficPolicy => self.traffic_policies.mark_absent(),
                };
                self.mark(kind, change);
            }
            Update::Grant(event) => {
                let change = self.grants.0.apply(event, object_key, facts::grant);
                self.mark_grant(change);
            }
            Update::GrantsAbsent => {
                let change = self.grants.0.mark_absent();
                self.mark_grant(change);
            }
            Update::Service(event) => {
                let change = self.services.0.apply(event, object_key, ports);
                match change {
                    Change::None => {}
                    Change::All => {
                        self.mark(Kind::HttpRoute, Change::All);
                        self.mark(Kind::GrpcRoute, Change::All);
                    }
                    Change::One(key) => {
                        let (ns, name) = key.split_once('/').unwrap_or(("", &key));
                        let touched: Vec<Target> = [Kind::HttpRoute, Kind::GrpcRoute]
                            .into_iter()
                            .flat_map(|kind| {
                                self.routes(kind)
                                    .into_iter()
                                    .flat_map(Store::iter)
                                    .filter(|(_, r)| r.facts.refers_to(ns, name))
                                    .map(move |(k, _)| (kind, k.clone()))
                            })
                            .collect();
                        self.dirty.extend(touched);
                    }
                }
            }
        }
    }

    /// A grant in namespace N changed: the routes with a backend in N from
    /// another namespace may have a new `ResolvedRefs`.
    fn mark_grant(&mut self, change: Change) {
        let namespace = match change {
            Change::None => return,
            Change::All => None,
            Change::One(key) => Some(
                key.split_once('/')
                    .map_or(key.clone(), |(ns, _)| ns.to_owned()),
            ),
        };
        let touched: Vec<Target> = [Kind::HttpRoute, Kind::GrpcRoute]
            .into_iter()
            .flat_map(|kind| {
                let namespace = namespace.clone();
                self.routes(kind)
                    .into_iter()
                    .flat_map(Store::iter)
                    .filter(move |(_, r)| match &namespace {
                        Some(ns) => r.facts.refers_across_to(ns),
                        None => true,
                    })
                    .map(move |(k, _)| (kind, k.clone()))
            })
            .collect();
        self.dirty.extend(touched);
    }

    fn mark(&mut self, kind: Kind, change: Change) {
        match change {
            Change::None => {}
            Change::One(key) => {
                self.dirty.insert((kind, key));
            }
            Change::All => {
                let keys: Vec<String> = match (self.routes(kind), self.policies(kind)) {
                    (Some(s), _) => s.iter().map(|(k, _)| k.clone()).collect(),
                    (_, Some(s)) => s.iter().map(|(k, _)| k.clone()).collect(),
                    _ => Vec::new(),
                };
                self.dirty.extend(keys.into_iter().map(|k| (kind, k)));
            }
        }
    }

    /// Asks for `target` to be looked at again (after a failed write).
    pub fn mark_dirty(&mut self, target: Target) {
        self.dirty.insert(target);
    }

    pub fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    pub fn take_dirty(&mut self) -> Vec<Target> {
        self.dirty.drain().collect()
    }

    /// The patch that brings `target`'s status up to date; `None` when it is
    /// (or the object is gone).
    pub fn patch(
        &self,
        target: &Target,
        now: &Time,
    ) -> Result<Option<StatusPatch>, serde_json::Error> {
        let (kind, key) = target;
        if let Some(route) = self.routes(*kind).and_then(|s| s.get(key)) {
            let parents = route_parents(&route.facts, &self.services, &self.grants, now)?;
            return Ok(parents.map(|p| patch(route, json!({ "parents": p }))));
        }
        if let Some(policy) = self.policies(*kind).and_then(|s| s.get(key)) {
            let conditions = policy_conditions(&policy.facts, now)?;
            return Ok(conditions.map(|c| patch(policy, json!({ "conditions": c }))));
        }
        Ok(None)
    }

    /// How many objects of each kind are known (for the log).
    pub fn counts(&self) -> [usize; 4] {
        Kind::ALL.map(|k| match (self.routes(k), self.policies(k)) {
            (Some(s), _) => s.iter().count(),
            (_, Some(s)) => s.iter().count(),
            _ => 0,
        })
    }
}

fn patch<F>(obj: &Object<F>, status: Value) -> StatusPatch {
    let body = match &obj.resource_version {
        Some(rv) => json!({ "metadata": { "resourceVersion": rv }, "status": status }),
        None => json!({ "status": status }),
    };
    StatusPatch {
        namespace: obj.namespace.clone(),
        name: obj.name.clone(),
        body,
    }
}

fn ports(s: Service) -> Vec<i32> {
    s.spec
        .and_then(|spec| spec.ports)
        .unwrap_or_default()
        .into_iter()
        .map(|p| p.port)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::conditions::tests::at;

    fn service(ns: &str, name: &str) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"ports": [{"port": 9080}]}
        }))
        .unwrap()
    }

    fn http_route(name: &str, backend: &str, rv: &str) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": "shop", "generation": 1, "resourceVersion": rv},
            "spec": {
                "parentRefs": [{"group": "", "kind": "Service", "name": "reviews"}],
                "rules": [{"backendRefs": [{"name": backend, "port": 9080}]}]
            }
        }))
        .unwrap()
    }

    fn policy(name: &str) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "weft.dev/v1alpha1", "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": "shop", "generation": 1, "resourceVersion": "5"},
            "spec": {"action": "DENY", "bogus": 1}
        }))
        .unwrap()
    }

    /// A world with every kind listed: the Service `shop/reviews`, two routes
    /// (one to a missing backend) and an invalid policy.
    fn world() -> World {
        let mut w = World::default();
        for kind in [Kind::GrpcRoute, Kind::TrafficPolicy] {
            w.apply(Update::Absent(kind));
        }
        w.apply(Update::Grant(Event::Init));
        w.apply(Update::Grant(Event::InitDone));
        w.apply(Update::Service(Event::Init));
        w.apply(Update::Service(Event::InitApply(service(
            "shop", "reviews",
        ))));
        w.apply(Update::Service(Event::InitDone));
        let routes = [
            http_route("ok", "reviews", "7"),
            http_route("broken", "v9", "8"),
        ];
        w.apply(Update::Object(Kind::HttpRoute, Event::Init));
        for r in routes {
            w.apply(Update::Object(Kind::HttpRoute, Event::InitApply(r)));
        }
        assert!(!w.synced(), "policies not listed yet");
        w.apply(Update::Object(Kind::HttpRoute, Event::InitDone));
        w.apply(Update::Object(Kind::AuthorizationPolicy, Event::Init));
        w.apply(Update::Object(
            Kind::AuthorizationPolicy,
            Event::InitApply(policy("p")),
        ));
        w.apply(Update::Object(Kind::AuthorizationPolicy, Event::InitDone));
        assert!(w.synced());
        w
    }

    fn sorted(mut v: Vec<Target>) -> Vec<Target> {
        v.sort_by(|a, b| a.1.cmp(&b.1));
        v
    }

    #[test]
    fn a_listing_marks_every_object_and_patches_are_conditional() {
        let mut w = world();
        let dirty = sorted(w.take_dirty());
        assert_eq!(
            dirty,
            [
                (Kind::HttpRoute, "shop/broken".to_owned()),
                (Kind::HttpRoute, "shop/ok".to_owned()),
                (Kind::AuthorizationPolicy, "shop/p".to_owned()),
            ]
        );
        let p = w.patch(&dirty[0], &at(1)).unwrap().expect("a patch");
        assert_eq!((p.namespace.as_str(), p.name.as_str()), ("shop", "broken"));
        assert_eq!(p.body["metadata"]["resourceVersion"], "8");
        let ready = &p.body["status"]["parents"][0]["conditions"][1];
        assert_eq!(
            (&ready["reason"], &ready["status"]),
            (&json!("BackendNotFound"), &json!("False"))
        );
        let p = w.patch(&dirty[2], &at(1)).unwrap().expect("a patch");
        assert_eq!(p.body["status"]["conditions"][0]["reason"], "Invalid");
        assert!(!w.has_dirty());
    }

    #[test]
    fn a_service_change_marks_the_routes_that_refer_to_it() {
        let mut w = world();
        w.take_dirty();
        w.apply(Update::Service(Event::Apply(service("shop", "v9"))));
        assert_eq!(
            w.take_dirty(),
            [(Kind::HttpRoute, "shop/broken".to_owned())]
        );
        let p = w
            .patch(&(Kind::HttpRoute, "shop/broken".into()), &at(2))
            .unwrap()
            .expect("a patch");
        assert_eq!(
            p.body["status"]["parents"][0]["conditions"][1]["reason"],
            "ResolvedRefs"
        );
        w.apply(Update::Service(Event::Apply(service("other", "x"))));
        assert!(!w.has_dirty(), "no route refers to other/x");
    }

    #[test]
    fn a_status_written_back_needs_no_patch_and_a_deleted_object_none() {
        let mut w = world();
        let target = (Kind::HttpRoute, "shop/ok".to_owned());
        let p = w.patch(&target, &at(1)).unwrap().expect("a patch");
        let mut written = http_route("ok", "reviews", "9");
        written.data["status"] = p.body["status"].clone();
        w.apply(Update::Object(
            Kind::HttpRoute,
            Event::Apply(written.clone()),
        ));
        assert_eq!(w.patch(&target, &at(2)).unwrap(), None);
        w.apply(Update::Object(Kind::HttpRoute, Event::Delete(written)));
        assert_eq!(w.patch(&target, &at(2)).unwrap(), None);
    }

    fn remote_route(name: &str, rv: &str) -> DynamicObject {
        let mut r = http_route(name, "reviews", rv);
        r.data["spec"]["rules"][0]["backendRefs"][0]["namespace"] = json!("other");
        r
    }

    fn grant(ns: &str, from: &str) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
            "metadata": {"name": "g", "namespace": ns},
            "spec": {
                "from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": from}],
                "to": [{"group": "", "kind": "Service"}]
            }
        }))
        .unwrap()
    }

    fn resolved_reason(w: &World, route: &str) -> Value {
        let p = w
            .patch(&(Kind::HttpRoute, format!("shop/{route}")), &at(3))
            .unwrap()
            .expect("a patch");
        p.body["status"]["parents"][0]["conditions"][1]["reason"].clone()
    }

    #[test]
    fn a_grant_marks_the_routes_into_its_namespace_and_permits_them() {
        let mut w = world();
        w.apply(Update::Service(Event::Apply(service("other", "reviews"))));
        w.apply(Update::Object(
            Kind::HttpRoute,
            Event::Apply(remote_route("remote", "9")),
        ));
        w.take_dirty();
        assert_eq!(resolved_reason(&w, "remote"), "RefNotPermitted");
        // A grant in the route's own namespace concerns no route here.
        w.apply(Update::Grant(Event::Apply(grant("shop", "shop"))));
        assert!(!w.has_dirty());
        w.apply(Update::Grant(Event::Apply(grant("other", "shop"))));
        assert_eq!(
            w.take_dirty(),
            [(Kind::HttpRoute, "shop/remote".to_owned())]
        );
        assert_eq!(resolved_reason(&w, "remote"), "ResolvedRefs");
        w.apply(Update::Grant(Event::Delete(grant("other", "shop"))));
        assert_eq!(
            w.take_dirty(),
            [(Kind::HttpRoute, "shop/remote".to_owned())]
        );
        assert_eq!(resolved_reason(&w, "remote"), "RefNotPermitted");
    }

    #[test]
    fn grants_not_listed_yet_hold_the_status_back() {
        let mut w = World::default();
        for kind in Kind::ALL {
            w.apply(Update::Absent(kind));
        }
        w.apply(Update::Service(Event::Init));
        w.apply(Update::Service(Event::InitDone));
        assert!(!w.synced(), "a RefNotPermitted written now could be wrong");
        w.apply(Update::GrantsAbsent);
        assert!(w.synced());
    }
}
