//! The immutable snapshot of the desired state and its hot-path indexes.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Index maps hash with foldhash (seeded per process): keys come from the
/// configuration, and SipHash costs more than the lookup itself on the hot path.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

fn map<K, V>(capacity: usize) -> Map<K, V> {
    HashMap::with_capacity_and_hasher(capacity, foldhash::fast::RandomState::default())
}

use super::{
    grant::{self, ReferenceGrant},
    model::{
        Endpoint, NamespaceInfo, Service, ServiceEndpoints, ServiceKey, ServicePort, Workload,
    },
    policy::{AuthorizationPolicy, TrafficPolicy},
    route::{HttpRoute, RouteKind},
    serde_arc,
};

/// Everything a snapshot holds, in a serializable form (`/config_dump`). Lists are
/// sorted by key so that equal states compare and print equal.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotData {
    pub namespaces: Vec<NamespaceInfo>,
    #[serde(with = "serde_arc")]
    pub workloads: Vec<Arc<Workload>>,
    #[serde(with = "serde_arc")]
    pub services: Vec<Arc<Service>>,
    pub endpoints: Vec<ServiceEndpoints>,
    #[serde(with = "serde_arc")]
    pub routes: Vec<Arc<HttpRoute>>,
    #[serde(default, with = "serde_arc")]
    pub reference_grants: Vec<Arc<ReferenceGrant>>,
    #[serde(with = "serde_arc")]
    pub authorization_policies: Vec<Arc<AuthorizationPolicy>>,
    #[serde(with = "serde_arc")]
    pub traffic_policies: Vec<Arc<TrafficPolicy>>,
}

/// Per-Service index entry.
#[derive(Debug, Default)]
struct ServiceEntry {
    service: usize,
    /// (service port, index into `data.endpoints`)
    endpoints: Vec<(u16, usize)>,
    routes: Vec<Arc<HttpRoute>>,
    traffic_policy: Option<usize>,
}

#[derive(Debug, Default)]
struct Indexes {
    by_ip: Map<IpAddr, usize>,
    by_node: Map<String, Vec<usize>>,
    by_netns: Map<PathBuf, usize>,
    by_addr: Map<SocketAddr, (usize, usize)>,
    services: Map<ServiceKey, ServiceEntry>,
    authz_by_namespace: Map<String, Vec<usize>>,
    grants_by_namespace: Map<String, Vec<usize>>,
}

/// One immutable desired state. Cheap to share as `Arc<Snapshot>`; every lookup
/// is a hash-map access, never a scan.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Assigned by [`super::StateHandle::replace`]; 0 for a snapshot not yet published.
    pub generation: u64,
    data: SnapshotData,
    idx: Indexes,
}

impl PartialEq for Snapshot {
    fn eq(&self, other: &Self) -> bool {
        self.generation == other.generation && self.data == other.data
    }
}

impl Snapshot {
    /// Builds the indexes over `data`. Entries that collide (a second workload on one
    /// IP) keep the first; validation reports such input before it gets here.
    pub fn from_data(data: SnapshotData) -> Self {
        let mut idx = Indexes {
            by_ip: map(data.workloads.len()),
            by_netns: map(0),
            by_node: map(0),
            by_addr: map(data.services.len() * 2),
            services: map(data.services.len()),
            authz_by_namespace: map(0),
            grants_by_namespace: map(0),
        };
        for (i, w) in data.workloads.iter().enumerate() {
            for ip in &w.ips {
                idx.by_ip.entry(*ip).or_insert(i);
            }
            if let Some(n) = &w.netns {
                idx.by_netns.entry(n.clone()).or_insert(i);
            }
            match idx.by_node.get_mut(w.node.as_str()) {
                Some(v) => v.push(i),
                None => {
                    idx.by_node.insert(w.node.clone(), vec![i]);
                }
            }
        }
        for (i, s) in data.services.iter().enumerate() {
            for ip in &s.cluster_ips {
                for (p, port) in s.ports.iter().enumerate() {
                    idx.by_addr
                        .entry(SocketAddr::new(*ip, port.port))
                        .or_insert((i, p));
                }
            }
            idx.services.insert(
                s.key.clone(),
                ServiceEntry {
                    service: i,
                    ..Default::default()
                },
            );
        }
        for (i, e) in data.endpoints.iter().enumerate() {
            if let Some(entry) = idx.services.get_mut(&e.service) {
                entry.endpoints.push((e.port, i));
            }
        }
        for r in &data.routes {
            for parent in &r.parents {
                if let Some(entry) = idx.services.get_mut(&parent.service)
                    && !entry.routes.iter().any(|x| Arc::ptr_eq(x, r))
                {
                    entry.routes.push(r.clone());
                }
            }
        }
        for (i, t) in data.traffic_policies.iter().enumerate() {
            if let Some(entry) = idx.services.get_mut(&t.target) {
                entry.traffic_policy.get_or_insert(i);
            }
        }
        for (i, p) in data.authorization_policies.iter().enumerate() {
            idx.authz_by_namespace
                .entry(p.key.namespace.clone())
                .or_default()
                .push(i);
        }
        for (i, g) in data.reference_grants.iter().enumerate() {
            idx.grants_by_namespace
                .entry(g.key.namespace.clone())
                .or_default()
                .push(i);
        }
        Snapshot {
            generation: 0,
            data,
            idx,
        }
    }

    /// The serializable content.
    pub fn data(&self) -> &SnapshotData {
        &self.data
    }

    pub fn namespaces(&self) -> &[NamespaceInfo] {
        &self.data.namespaces
    }

    pub fn workloads(&self) -> impl Iterator<Item = &Arc<Workload>> {
        self.data.workloads.iter()
    }

    pub fn workload_by_ip(&self, ip: IpAddr) -> Option<&Arc<Workload>> {
        self.idx.by_ip.get(&ip).map(|&i| &self.data.workloads[i])
    }

    pub fn workloads_on_node<'a>(
        &'a self,
        node: &'a str,
    ) -> impl Iterator<Item = &'a Arc<Workload>> {
        self.idx
            .by_node
            .get(node)
            .into_iter()
            .flatten()
            .map(|&i| &self.data.workloads[i])
    }

    pub fn workload_by_netns(&self, netns: &Path) -> Option<&Arc<Workload>> {
        self.idx
            .by_netns
            .get(netns)
            .map(|&i| &self.data.workloads[i])
    }

    pub fn services(&self) -> impl Iterator<Item = &Arc<Service>> {
        self.data.services.iter()
    }

    pub fn service(&self, key: &ServiceKey) -> Option<&Arc<Service>> {
        self.idx
            .services
            .get(key)
            .map(|e| &self.data.services[e.service])
    }

    /// The Service and port at a cluster IP and port.
    pub fn service_by_addr(&self, addr: SocketAddr) -> Option<(&Arc<Service>, &ServicePort)> {
        let &(s, p) = self.idx.by_addr.get(&addr)?;
        let svc = &self.data.services[s];
        Some((svc, &svc.ports[p]))
    }

    /// The ready endpoints of a Service port (`port` is the Service port).
    pub fn endpoints(&self, service: &ServiceKey, port: u16) -> &[Endpoint] {
        self.idx
            .services
            .get(service)
            .and_then(|e| e.endpoints.iter().find(|(p, _)| *p == port))
            .map_or(&[], |&(_, i)| self.data.endpoints[i].endpoints.as_slice())
    }

    /// HTTPRoutes and GRPCRoutes whose parent is this Service, by namespace then name.
    pub fn routes_for(&self, service: &ServiceKey) -> &[Arc<HttpRoute>] {
        self.idx
            .services
            .get(service)
            .map_or(&[], |e| e.routes.as_slice())
    }

    pub fn reference_grants(&self) -> &[Arc<ReferenceGrant>] {
        &self.data.reference_grants
    }

    /// Whether a route of `kind` in `from_namespace` may send traffic to the
    /// Service `to`: within its namespace always, across only with a
    /// ReferenceGrant in `to`'s namespace ([`grant::permitted`]).
    pub fn reference_permitted(
        &self,
        kind: RouteKind,
        from_namespace: &str,
        to: &ServiceKey,
    ) -> bool {
        let grants = self
            .idx
            .grants_by_namespace
            .get(&to.namespace)
            .into_iter()
            .flatten()
            .map(|&i| &*self.data.reference_grants[i]);
        grant::permitted(
            grants,
            kind.gvk_kind(),
            from_namespace,
            &to.namespace,
            &to.name,
        )
    }

    pub fn authorization_policies(&self) -> &[Arc<AuthorizationPolicy>] {
        &self.data.authorization_policies
    }

    /// The authorization policies that apply to a workload (its namespace, selector
    /// matching its labels).
    pub fn policies_for<'a>(
        &'a self,
        workload: &'a Workload,
    ) -> impl Iterator<Item = &'a Arc<AuthorizationPolicy>> {
        self.idx
            .authz_by_namespace
            .get(&workload.key.namespace)
            .into_iter()
            .flatten()
            .map(|&i| &self.data.authorization_policies[i])
            .filter(|p| p.selects(&workload.key.namespace, &workload.labels))
    }

    pub fn traffic_policies(&self) -> &[Arc<TrafficPolicy>] {
        &self.data.traffic_policies
    }

    /// The TrafficPolicy targeting a Service.
    pub fn traffic_policy(&self, service: &ServiceKey) -> Option<&Arc<TrafficPolicy>> {
        let i = self.idx.services.get(service)?.traffic_policy?;
        Some(&self.data.traffic_policies[i])
    }

    /// Number of workloads per node, for summaries.
    pub fn node_counts(&self) -> BTreeMap<&str, usize> {
        self.idx
            .by_node
            .iter()
            .map(|(n, v)| (n.as_str(), v.len()))
            .collect()
    }
}

#[derive(Serialize)]
struct DumpRef<'a> {
    generation: u64,
    #[serde(flatten)]
    data: &'a SnapshotData,
}

#[derive(Deserialize)]
struct DumpOwned {
    generation: u64,
    #[serde(flatten)]
    data: SnapshotData,
}

/// A snapshot serializes as `{"generation": N, "namespaces": [...], "workloads": [...], ...}`
/// (the `/config_dump` format); deserializing rebuilds the indexes.
impl Serialize for Snapshot {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        DumpRef {
            generation: self.generation,
            data: &self.data,
        }
        .serialize(ser)
    }
}

impl<'de> Deserialize<'de> for Snapshot {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let d = DumpOwned::deserialize(de)?;
        let mut s = Snapshot::from_data(d.data);
        s.generation = d.generation;
        Ok(s)
    }
}
