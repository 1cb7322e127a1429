//! The resource shapes both configuration sources speak (docs/architecture.md, "The agent"): core types from
//! `k8s-openapi`, Gateway API routes, and Weft's own custom resources.

pub mod cidr;
pub mod duration;
pub mod gateway;
pub mod reference_grant;
pub mod weft;

pub use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
pub use k8s_openapi::api::discovery::v1::EndpointSlice;

pub use cidr::IpBlock;
pub use duration::GatewayDuration;
pub use gateway::{GRPCRoute, HTTPRoute};
pub use reference_grant::ReferenceGrant;
pub use weft::{AuthorizationPolicy, TrafficPolicy};

/// Namespace label that opts every pod of the namespace into the mesh (`enabled`).
pub const LABEL_MESH: &str = "weft.dev/mesh";
/// Namespace label choosing the inbound mTLS mode: `strict` or `permissive` (default).
pub const LABEL_MTLS: &str = "weft.dev/mtls";
/// Pod annotation (files only): the path of the pod's network namespace.
pub const ANNOTATION_NETNS: &str = "weft.dev/netns";
/// The namespace a namespaced resource without `metadata.namespace` belongs to.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Every resource a source produced, by kind. The state is built from this.
#[derive(Clone, Debug, Default)]
pub struct ResourceSet {
    pub namespaces: Vec<Namespace>,
    pub pods: Vec<Pod>,
    pub services: Vec<Service>,
    pub http_routes: Vec<HTTPRoute>,
    pub grpc_routes: Vec<GRPCRoute>,
    pub reference_grants: Vec<ReferenceGrant>,
    pub authorization_policies: Vec<AuthorizationPolicy>,
    pub traffic_policies: Vec<TrafficPolicy>,
    /// In a cluster the endpoints are what the EndpointSlices say (`Some`); a file
    /// has none, and endpoints are computed from the Services' selectors (`None`).
    pub endpoint_slices: Option<Vec<EndpointSlice>>,
}

/// One resource of any supported kind.
// Transient (one per parsed document, moved into a `ResourceSet` at once): boxing
// the large Pod would cost an allocation per pod for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Resource {
    Namespace(Namespace),
    Pod(Pod),
    Service(Service),
    HttpRoute(HTTPRoute),
    GrpcRoute(GRPCRoute),
    ReferenceGrant(ReferenceGrant),
    AuthorizationPolicy(AuthorizationPolicy),
    TrafficPolicy(TrafficPolicy),
}

impl ResourceSet {
    pub fn push(&mut self, r: Resource) {
        match r {
            Resource::Namespace(x) => self.namespaces.push(x),
            Resource::Pod(x) => self.pods.push(x),
            Resource::Service(x) => self.services.push(x),
            Resource::HttpRoute(x) => self.http_routes.push(x),
            Resource::GrpcRoute(x) => self.grpc_routes.push(x),
            Resource::ReferenceGrant(x) => self.reference_grants.push(x),
            Resource::AuthorizationPolicy(x) => self.authorization_policies.push(x),
            Resource::TrafficPolicy(x) => self.traffic_policies.push(x),
        }
    }
}
