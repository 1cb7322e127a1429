//! Authorization decisions (docs/architecture.md, "The agent"): which `AuthorizationPolicy`
//! lets a connection reach a workload, evaluated by the destination agent.
//!
//! Semantics follow Istio's: a matching `DENY` refuses; otherwise, if any
//! `ALLOW` policy applies to the workload, one of its rules must match;
//! otherwise the connection is allowed. `AUDIT` never changes the outcome, it
//! is reported. A policy without rules matches nothing; a rule `{}` matches
//! everything. Inside a rule the `from` and `to` entries are ORed and the fields
//! of one entry ANDed.
//!
//! Two stages (docs/security.md, "L7 authorization"): at connection time,
//! with L4 attributes only, a rule naming HTTP attributes (`methods`, `paths`,
//! `hosts` and their `not` forms) may match or not, and when the outcome
//! depends on it the verdict is `NeedsRequest`: the agent then parses HTTP on
//! the connection and decides each request with `decide_request`. A pattern
//! Weft cannot evaluate fails closed (never matches for `ALLOW`, always for
//! `DENY`), as ztunnel does at L4.

mod admission;
mod matching;
mod operation;
mod request;
mod review;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use crate::config::resources::weft::PolicyAction;
use crate::state::{AuthorizationPolicy, ResourceKey, Snapshot, Workload};

pub use admission::{AGENT_PORTS, Inbound, Transport, admit, admit_request};
use matching::{Match, rule_matches};
pub use request::{BadRequest, RequestAttrs, normalize_path, with_path};
pub use review::{AdmissionGuard, AdmittedConnections, Revoked};

/// What the destination agent knows of a connection when it decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionAttrs {
    /// The client's verified SPIFFE id without the `spiffe://` scheme
    /// (`cluster.local/ns/shop/sa/frontend`, as policies write it); `None` for
    /// plaintext.
    pub principal: Option<String>,
    /// The client's namespace, from its verified identity; `None` for plaintext.
    pub namespace: Option<String>,
    pub source_ip: IpAddr,
    /// The port at the destination workload (the app's port).
    pub destination_port: u16,
}

impl ConnectionAttrs {
    /// Attributes of a connection whose client proved `spiffe_id`. The namespace
    /// is that of the parsed workload id (`spiffe://<td>/ns/<ns>/sa/<sa>`); an id
    /// of another shape has none, so `namespaces` rules never match it
    /// (docs/security.md).
    pub fn authenticated(spiffe_id: &str, source_ip: IpAddr, destination_port: u16) -> Self {
        let principal = spiffe_id.strip_prefix("spiffe://").unwrap_or(spiffe_id);
        let namespace = spiffe_id
            .parse::<crate::identity::SpiffeId>()
            .ok()
            .map(|id| id.namespace().to_owned());
        Self {
            principal: Some(principal.to_owned()),
            namespace,
            source_ip,
            destination_port,
        }
    }

    /// Attributes of a plaintext connection: only the address is known.
    pub fn plaintext(source_ip: IpAddr, destination_port: u16) -> Self {
        Self {
            principal: None,
            namespace: None,
            source_ip,
            destination_port,
        }
    }
}

impl fmt::Display for ConnectionAttrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.principal {
            Some(p) => write!(f, "{p} from {}", self.source_ip)?,
            None => write!(f, "plaintext from {}", self.source_ip)?,
        }
        write!(f, " to port {}", self.destination_port)
    }
}

/// The outcome, with the policy that decided it (for the log and the refusal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    /// `AUDIT` policies that matched.
    pub audited: Vec<ResourceKey>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No policy objects.
    AllowedNoPolicy,
    /// This `ALLOW` policy matched.
    Allowed(ResourceKey),
    /// This `DENY` policy matched.
    Denied(ResourceKey),
    /// `ALLOW` policies apply to the workload and none matched.
    NotAllowed,
    /// The target is one of the agent's own ports.
    AgentPort,
    /// Plaintext to a workload whose namespace is strict mTLS.
    StrictMtls,
    /// Plaintext from the node's own address to a probe port: the kubelet's.
    NodeProbe,
    /// Connection time only: the outcome depends on HTTP attributes, so each
    /// request is decided (`decide_request`).
    NeedsRequest,
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(
            self.verdict,
            Verdict::AllowedNoPolicy | Verdict::Allowed(_) | Verdict::NodeProbe
        )
    }

    /// The connection is admitted on condition that each of its requests is
    /// decided.
    pub fn needs_request(&self) -> bool {
        self.verdict == Verdict::NeedsRequest
    }
}

impl From<Verdict> for Decision {
    /// A decision no policy took part in (nothing audited).
    fn from(verdict: Verdict) -> Self {
        Self {
            verdict,
            audited: Vec::new(),
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::AllowedNoPolicy => f.write_str("allowed: no policy denies it"),
            Verdict::Allowed(p) => write!(f, "allowed by ALLOW policy {p}"),
            Verdict::Denied(p) => write!(f, "denied by DENY policy {p}"),
            Verdict::NotAllowed => f.write_str(
                "denied: ALLOW policies select this workload and none of their rules matches",
            ),
            Verdict::AgentPort => {
                f.write_str("refused: the target is one of the agent's own ports")
            }
            Verdict::StrictMtls => f.write_str("plaintext refused: namespace is strict mTLS"),
            Verdict::NodeProbe => f.write_str("allowed: the node probing a probe port"),
            Verdict::NeedsRequest => {
                f.write_str("each request decides: a policy names HTTP attributes")
            }
        }
    }
}

/// Decides whether `conn` may reach `workload` under the policies of
/// `snapshot`, at connection time: possibly `NeedsRequest`.
pub fn evaluate(snapshot: &Snapshot, workload: &Workload, conn: &ConnectionAttrs) -> Decision {
    decide(snapshot.policies_for(workload), conn)
}

/// Decides one request of a connection whose verdict was `NeedsRequest`;
/// never `NeedsRequest` itself.
pub fn evaluate_request(
    snapshot: &Snapshot,
    workload: &Workload,
    conn: &ConnectionAttrs,
    request: &RequestAttrs,
) -> Decision {
    decide_request(snapshot.policies_for(workload), conn, request)
}

/// The connection-time decision over an explicit set of policies (those that
/// select the workload).
pub fn decide<'a>(
    policies: impl IntoIterator<Item = &'a Arc<AuthorizationPolicy>>,
    conn: &ConnectionAttrs,
) -> Decision {
    decide_with(policies, conn, None)
}

/// The decision for one request over an explicit set of policies.
pub fn decide_request<'a>(
    policies: impl IntoIterator<Item = &'a Arc<AuthorizationPolicy>>,
    conn: &ConnectionAttrs,
    request: &RequestAttrs,
) -> Decision {
    decide_with(policies, conn, Some(request))
}

/// DENY before ALLOW, in three values: a `DENY` that may match, or an
/// `ALLOW` that may be the only one to match, leaves the verdict to the
/// request. With the request every match is `Yes` or `No`.
fn decide_with<'a>(
    policies: impl IntoIterator<Item = &'a Arc<AuthorizationPolicy>>,
    conn: &ConnectionAttrs,
    request: Option<&RequestAttrs>,
) -> Decision {
    let mut audited = Vec::new();
    let mut denied = None;
    let mut deny_maybe = false;
    let mut allowed = None;
    let mut allow_maybe = false;
    let mut any_allow = false;
    for policy in policies {
        let matches = || {
            policy
                .rules
                .iter()
                .map(|r| rule_matches(r, policy.action, conn, request))
                .max()
                .unwrap_or(Match::No)
        };
        match policy.action {
            PolicyAction::Deny if denied.is_none() => match matches() {
                Match::Yes => denied = Some(policy.key.clone()),
                Match::Maybe => deny_maybe = true,
                Match::No => {}
            },
            PolicyAction::Allow => {
                any_allow = true;
                if allowed.is_none() {
                    match matches() {
                        Match::Yes => allowed = Some(policy.key.clone()),
                        Match::Maybe => allow_maybe = true,
                        Match::No => {}
                    }
                }
            }
            // AUDIT never decides; one that depends on the request is
            // reported per request, once the connection is parsed.
            PolicyAction::Audit if matches() == Match::Yes => audited.push(policy.key.clone()),
            _ => {}
        }
    }
    let verdict = match (denied, allowed) {
        (Some(deny), _) => Verdict::Denied(deny),
        (None, None) if any_allow && !allow_maybe => Verdict::NotAllowed,
        _ if deny_maybe => Verdict::NeedsRequest,
        (None, None) if allow_maybe => Verdict::NeedsRequest,
        (None, Some(allow)) => Verdict::Allowed(allow),
        (None, None) => Verdict::AllowedNoPolicy,
    };
    if verdict == Verdict::NeedsRequest {
        // Each request reports its audits; none twice.
        audited.clear();
    }
    Decision { verdict, audited }
}

#[cfg(test)]
mod tests;
