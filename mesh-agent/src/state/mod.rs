//! The desired state (docs/architecture.md, "The agent"): one immutable [`Snapshot`] of workloads, Services,
//! endpoints, routes, ReferenceGrants and policies, indexed for the hot path and swapped atomically
//! through a [`StateHandle`]. Every configuration source feeds it a
//! [`ResourceSet`](crate::config::resources::ResourceSet) through [`build`].

mod build;
mod endpoint_slices;
mod endpoints;
pub mod grant;
mod handle;
pub mod model;
pub mod policy;
pub mod route;
mod route_build;
mod serde_arc;
mod snapshot;

pub use build::{build, pod_ips, pod_ready};
pub use grant::ReferenceGrant;
pub use handle::StateHandle;
pub use model::{
    Endpoint, MtlsMode, NamespaceInfo, ObjectKey, ResourceKey, Service, ServiceEndpoints,
    ServiceKey, ServicePort, TargetPort, Workload, WorkloadKey,
};
pub use policy::{AuthorizationPolicy, TrafficPolicy};
pub use route::{
    HttpRoute, PathMatch, Pattern, RouteBackend, RouteKind, RouteMatch, RouteParent, RouteRule,
    RouteTimeouts, StringMatch, ValueMatch,
};
pub use snapshot::{Snapshot, SnapshotData};

#[cfg(test)]
mod tests;
