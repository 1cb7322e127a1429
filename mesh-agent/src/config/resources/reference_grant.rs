//! Gateway API `gateway.networking.k8s.io/v1beta1` `ReferenceGrant`: the owner
//! of a namespace lets objects of another namespace refer to its objects. Weft
//! reads the grants that let an HTTPRoute or GRPCRoute use a Service of this
//! namespace as a backend (docs/config.md, "ReferenceGrant"); other entries are
//! kept but used by nothing.
//!
//! `mesh-agent crds --gateway-api` makes a CRD of this type for the tests' API
//! server; users install Gateway API's own CRDs.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `ReferenceGrant` spec: who (`from`) may refer to what (`to`) in the grant's
/// namespace.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1beta1",
    kind = "ReferenceGrant",
    namespaced,
    // The API server refuses CRDs in *.k8s.io groups without it; Gateway API's own.
    annotation("api-approved.kubernetes.io", "https://github.com/kubernetes-sigs/gateway-api/pull/2466"),
    category = "gateway-api",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceGrantSpec {
    pub from: Vec<ReferenceGrantFrom>,
    pub to: Vec<ReferenceGrantTo>,
}

/// `from[]`: the kind and namespace of the objects that may refer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceGrantFrom {
    /// `gateway.networking.k8s.io` for routes.
    pub group: String,
    pub kind: String,
    pub namespace: String,
}

/// `to[]`: the kind (and optionally the name) of this namespace's objects that
/// may be referred to.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceGrantTo {
    /// `""` (the core group) for Services.
    pub group: String,
    pub kind: String,
    /// Unset: every object of the kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}
