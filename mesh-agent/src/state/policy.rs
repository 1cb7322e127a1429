//! Authorization and traffic policies as the data plane reads them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::model::{ResourceKey, ServiceKey};
use crate::config::resources::weft::{
    ConnectionLimits, FaultInjection, LbAlgorithm, OutlierDetection, PolicyAction, PolicyRule,
    RetryBudget,
};

/// An `AuthorizationPolicy` (see its resource type for the semantics).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuthorizationPolicy {
    pub key: ResourceKey,
    /// Empty: every workload of the namespace.
    pub selector: BTreeMap<String, String>,
    pub action: PolicyAction,
    pub rules: Vec<PolicyRule>,
}

impl AuthorizationPolicy {
    /// Whether the policy applies to a workload with these namespace and labels.
    pub fn selects(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        self.key.namespace == namespace
            && self.selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// A `TrafficPolicy` for one Service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrafficPolicy {
    pub key: ResourceKey,
    pub target: ServiceKey,
    pub load_balancer: LbAlgorithm,
    pub outlier_detection: Option<OutlierDetection>,
    pub connection_limits: Option<ConnectionLimits>,
    pub retry_budget: Option<RetryBudget>,
    pub fault: Option<FaultInjection>,
}
