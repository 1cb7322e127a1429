//! Everything the cluster source has seen, kind by kind, and the resource set the
//! state is built from (pure: unit-tested without an API server).

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::{
    checked::{Kept, Refusal},
    mirror::Mirror,
};
use crate::config::resources::ResourceSet;

#[derive(Debug, Default)]
pub struct Cache {
    pub namespaces: Mirror<Namespace>,
    pub pods: Mirror<Pod>,
    pub services: Mirror<Service>,
    pub endpoint_slices: Mirror<EndpointSlice>,
    /// HTTPRoute, GRPCRoute, ReferenceGrant, AuthorizationPolicy,
    /// TrafficPolicy: one mirror each.
    pub checked: Vec<Mirror<Kept>>,
}

impl Cache {
    pub fn new(checked_kinds: usize) -> Self {
        Cache {
            checked: (0..checked_kinds).map(|_| Mirror::default()).collect(),
            ..Default::default()
        }
    }

    /// Every kind has been listed at least once.
    pub fn synced(&self) -> bool {
        self.namespaces.synced()
            && self.pods.synced()
            && self.services.synced()
            && self.endpoint_slices.synced()
            && self.checked.iter().all(Mirror::synced)
    }

    /// The accepted objects as a resource set, and the refused ones sorted by
    /// kind, namespace and name.
    pub fn resources(&self) -> (ResourceSet, Vec<Refusal>) {
        let mut set = ResourceSet {
            namespaces: self.namespaces.values().cloned().collect(),
            pods: self.pods.values().cloned().collect(),
            services: self.services.values().cloned().collect(),
            endpoint_slices: Some(self.endpoint_slices.values().cloned().collect()),
            ..Default::default()
        };
        let mut refused = Vec::new();
        for mirror in &self.checked {
            for kept in mirror.values() {
                if let Some(r) = &kept.in_force {
                    set.push((**r).clone());
                }
                if let Some(r) = &kept.refusal {
                    refused.push(r.clone());
                }
            }
        }
        refused.sort_by(|a, b| {
            (&a.kind, &a.namespace, &a.name).cmp(&(&b.kind, &b.namespace, &b.name))
        });
        (set, refused)
    }
}

#[cfg(test)]
mod tests {
    use kube::runtime::watcher::Event;

    use super::*;
    use crate::config::kube::checked::{Kept, check};

    fn policy(name: &str, cidr: &str) -> kube::core::DynamicObject {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"action": "DENY", "rules": [{"from": [{"source": {"ipBlocks": [cidr]}}]}]}
        }))
        .unwrap()
    }

    #[test]
    fn one_refused_object_does_not_block_the_others() {
        let mut cache = Cache::new(1);
        let store = |o: kube::core::DynamicObject, previous: Option<&Kept>| {
            let key = o.metadata.name.clone().unwrap_or_default();
            let checked = check("AuthorizationPolicy", "weft.dev/v1alpha1", o);
            Some((key, Kept::after(checked, previous)))
        };
        let key = |o: &kube::core::DynamicObject| o.metadata.name.clone().unwrap_or_default();
        let m = &mut cache.checked[0];
        m.apply(Event::Init, store, key);
        m.apply(Event::InitApply(policy("good", "10.1.0.0/16")), store, key);
        m.apply(Event::InitApply(policy("bad", "10.1.0.0/40")), store, key);
        m.apply(Event::InitDone, store, key);
        assert!(!cache.synced(), "core kinds not listed yet");
        let (set, refused) = cache.resources();
        assert_eq!(set.authorization_policies.len(), 1);
        assert_eq!(
            set.authorization_policies[0].metadata.name.as_deref(),
            Some("good")
        );
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].name, "bad");
    }
}
