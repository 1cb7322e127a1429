//! Who may have which certificate: pure decisions over what the API server
//! said (the token review, the pods on the caller's node).
//!
//! 1. [`authenticate`]: the token must be valid for our audience, belong to the
//!    agent's ServiceAccount, and be bound to a pod on a node (the agent's own
//!    pod); the node is the caller's.
//! 2. [`authorize`]: the requested `spiffe://<td>/ns/<ns>/sa/<sa>` is signed only
//!    if a pod of `<ns>` running as `<sa>` is scheduled on that node and has not
//!    terminated. An agent can so obtain only the identities of its own node's
//!    pods, and a stolen agent token only those of one node.

use std::collections::BTreeMap;
use std::fmt;

use crate::identity::SpiffeId;

/// The `user.extra` key the API server sets on tokens bound to a pod.
pub const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";

/// What a `TokenReview` answered, as far as the CA cares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenReviewResult {
    pub authenticated: bool,
    pub audiences: Vec<String>,
    pub username: String,
    pub extra: BTreeMap<String, Vec<String>>,
    /// The API server's reason when not authenticated.
    pub error: Option<String>,
}

/// A ServiceAccount, `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccountRef {
    pub namespace: String,
    pub name: String,
}

impl ServiceAccountRef {
    /// The user name of its tokens.
    pub fn username(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }
}

impl std::str::FromStr for ServiceAccountRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Self {
                    namespace: ns.to_owned(),
                    name: name.to_owned(),
                })
            }
            _ => Err(format!("{s:?}: expected <namespace>/<service-account>")),
        }
    }
}

impl fmt::Display for ServiceAccountRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// An authenticated agent: the node it runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub node: String,
    /// The agent pod the token is bound to (for the log).
    pub pod: Option<String>,
}

/// A pod on the caller's node, as the API server lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodOnNode {
    pub namespace: String,
    pub name: String,
    /// `spec.serviceAccountName` (`default` when unset).
    pub service_account: String,
    /// `status.phase`.
    pub phase: Option<String>,
}

impl PodOnNode {
    fn terminated(&self) -> bool {
        matches!(self.phase.as_deref(), Some("Succeeded" | "Failed"))
    }
}

/// Why a request is refused; the status code follows from the variant.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// 401: the token does not authenticate an agent.
    #[error("{0}")]
    Unauthenticated(String),
    /// 403: an agent, but not for this identity.
    #[error("{0}")]
    Forbidden(String),
    /// 400: the request itself is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// 503: the API server could not be asked.
    #[error("{0}")]
    Unavailable(String),
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Unauthenticated(_) => 401,
            Refusal::Forbidden(_) => 403,
            Refusal::BadRequest(_) => 400,
            Refusal::Unavailable(_) => 503,
        }
    }

    /// A short label for logs and rate limiting.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::Unauthenticated(_) => "unauthenticated",
            Refusal::Forbidden(_) => "forbidden",
            Refusal::BadRequest(_) => "bad-request",
            Refusal::Unavailable(_) => "unavailable",
        }
    }
}

/// Step 1: the token review → the calling agent's node.
pub fn authenticate(
    review: &TokenReviewResult,
    audience: &str,
    agent: &ServiceAccountRef,
) -> Result<Caller, Refusal> {
    if !review.authenticated {
        let why = review.error.as_deref().unwrap_or("no reason given");
        return Err(Refusal::Unauthenticated(format!(
            "the token is not valid for audience {audience:?}: {why}"
        )));
    }
    if !review.audiences.iter().any(|a| a == audience) {
        return Err(Refusal::Unauthenticated(format!(
            "the token is not for audience {audience:?} (it is for {:?})",
            review.audiences
        )));
    }
    let expected = agent.username();
    if review.username != expected {
        return Err(Refusal::Unauthenticated(format!(
            "the token belongs to {:?}, not to the agent's ServiceAccount {expected:?}",
            review.username
        )));
    }
    let one = |key: &str| {
        review
            .extra
            .get(key)
            .and_then(|v| v.first())
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let node = one(NODE_NAME_EXTRA).ok_or_else(|| {
        Refusal::Unauthenticated(format!(
            "the token of {expected:?} is not bound to a pod on a node (no {NODE_NAME_EXTRA}): \
             the agent must use a projected token of its own pod"
        ))
    })?;
    Ok(Caller {
        node,
        pod: one(POD_NAME_EXTRA),
    })
}

/// Step 2: may `caller` have a certificate for `requested`, given the pods the
/// API server lists on the caller's node (any namespace; those of other
/// namespaces or nodes are ignored).
pub fn authorize(caller: &Caller, requested: &SpiffeId, pods: &[PodOnNode]) -> Result<(), Refusal> {
    let (ns, sa) = (requested.namespace(), requested.service_account());
    let mut terminated = 0;
    for pod in pods
        .iter()
        .filter(|p| p.namespace == ns && p.service_account == sa)
    {
        if pod.terminated() {
            terminated += 1;
        } else {
            return Ok(());
        }
    }
    let why = if terminated > 0 {
        format!("its {terminated} pod(s) there have terminated")
    } else {
        format!("no pod of namespace {ns:?} with service account {sa:?} is scheduled there")
    };
    Err(Refusal::Forbidden(format!(
        "node {:?} may not have {requested}: {why}",
        caller.node
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent() -> ServiceAccountRef {
        "weft-system/weft-agent".parse().unwrap()
    }

    fn review(node: Option<&str>) -> TokenReviewResult {
        let mut extra = BTreeMap::new();
        if let Some(node) = node {
            extra.insert(NODE_NAME_EXTRA.to_owned(), vec![node.to_owned()]);
            extra.insert(POD_NAME_EXTRA.to_owned(), vec!["weft-agent-x".to_owned()]);
        }
        TokenReviewResult {
            authenticated: true,
            audiences: vec!["weft-ca".into()],
            username: "system:serviceaccount:weft-system:weft-agent".into(),
            extra,
            error: None,
        }
    }

    fn pod(ns: &str, name: &str, sa: &str, phase: Option<&str>) -> PodOnNode {
        PodOnNode {
            namespace: ns.into(),
            name: name.into(),
            service_account: sa.into(),
            phase: phase.map(Into::into),
        }
    }

    #[test]
    fn an_agent_token_bound_to_a_pod_gives_its_node() {
        let caller = authenticate(&review(Some("node-a")), "weft-ca", &agent()).unwrap();
        assert_eq!(caller.node, "node-a");
        assert_eq!(caller.pod.as_deref(), Some("weft-agent-x"));
    }

    #[test]
    fn tokens_that_do_not_authenticate_an_agent_are_refused() {
        let mut invalid = review(Some("node-a"));
        invalid.authenticated = false;
        invalid.error = Some("token audiences do not match".into());
        let mut other_audience = review(Some("node-a"));
        other_audience.audiences = vec!["https://kubernetes.default.svc".into()];
        let mut other_user = review(Some("node-a"));
        other_user.username = "system:serviceaccount:shop:frontend".into();
        let cases = [
            (invalid, "token audiences do not match"),
            (other_audience, "not for audience \"weft-ca\""),
            (
                other_user,
                "belongs to \"system:serviceaccount:shop:frontend\"",
            ),
            (review(None), "not bound to a pod on a node"),
        ];
        for (r, want) in cases {
            let e = authenticate(&r, "weft-ca", &agent()).unwrap_err();
            assert_eq!(e.status(), 401);
            assert!(e.to_string().contains(want), "{e}");
        }
    }

    #[test]
    fn only_identities_of_pods_on_the_callers_node_are_signed() {
        let caller = Caller {
            node: "node-b".into(),
            pod: None,
        };
        let frontend = SpiffeId::for_workload("cluster.local", "shop", "frontend");
        let pods = vec![
            pod("shop", "frontend-1", "frontend", Some("Running")),
            pod("other", "x", "reviews", Some("Pending")),
        ];
        assert_eq!(authorize(&caller, &frontend, &pods), Ok(()));
        // A pod that has not started yet already needs its certificate.
        let reviews_other = SpiffeId::for_workload("cluster.local", "other", "reviews");
        assert_eq!(authorize(&caller, &reviews_other, &pods), Ok(()));

        // Same service account name, other namespace; same namespace, other account.
        for id in [
            SpiffeId::for_workload("cluster.local", "shop", "reviews"),
            SpiffeId::for_workload("cluster.local", "other", "frontend"),
        ] {
            let e = authorize(&caller, &id, &pods).unwrap_err();
            assert_eq!(e.status(), 403);
            let text = e.to_string();
            assert!(text.contains("node \"node-b\""), "{text}");
            assert!(text.contains(&id.to_string()), "{text}");
            assert!(text.contains("no pod of namespace"), "{text}");
        }
        // Nothing on the node at all.
        assert!(authorize(&caller, &frontend, &[]).is_err());
    }

    #[test]
    fn terminated_pods_do_not_count() {
        let caller = Caller {
            node: "node-a".into(),
            pod: None,
        };
        let id = SpiffeId::for_workload("cluster.local", "batch", "job");
        let done = vec![
            pod("batch", "job-1", "job", Some("Succeeded")),
            pod("batch", "job-2", "job", Some("Failed")),
        ];
        let e = authorize(&caller, &id, &done).unwrap_err().to_string();
        assert!(e.contains("2 pod(s) there have terminated"), "{e}");
        let mut with_running = done;
        with_running.push(pod("batch", "job-3", "job", None));
        assert_eq!(authorize(&caller, &id, &with_running), Ok(()));
    }

    #[test]
    fn service_account_refs_parse() {
        let sa: ServiceAccountRef = "weft-system/weft-agent".parse().unwrap();
        assert_eq!(
            sa.username(),
            "system:serviceaccount:weft-system:weft-agent"
        );
        for bad in ["weft-agent", "/x", "x/", "a/b/c"] {
            assert!(bad.parse::<ServiceAccountRef>().is_err(), "{bad}");
        }
    }
}
