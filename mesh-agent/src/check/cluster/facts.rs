//! What the cluster checks decide from: the objects read from the API server
//! and the answers of the probes, as plain data. `fetch` and `probe` gather
//! them; `decide` turns them into checks without any I/O, so every verdict is
//! unit-tested from facts written by hand.

use std::collections::BTreeMap;
use std::time::SystemTime;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// One object (or list) read from the API server.
#[derive(Clone, Debug)]
pub enum Fetched<T> {
    Found(T),
    /// 404: it does not exist.
    Missing,
    /// 403: these credentials may not read it (not a finding about the mesh).
    Forbidden(String),
    /// Any other error (timeout, 5xx).
    Failed(String),
}

impl<T> Fetched<T> {
    pub fn found(&self) -> Option<&T> {
        match self {
            Fetched::Found(t) => Some(t),
            _ => None,
        }
    }

    /// Why it could not be read, for an `unknown` verdict.
    pub fn unreadable(&self) -> Option<String> {
        match self {
            Fetched::Forbidden(why) => Some(format!("not allowed to read it: {why}")),
            Fetched::Failed(why) => Some(format!("cannot read it: {why}")),
            Fetched::Found(_) | Fetched::Missing => None,
        }
    }
}

/// A remote clock (an HTTP `Date` header, one-second resolution) and this
/// machine's clock when the answer arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockReading {
    pub local: SystemTime,
    pub remote: SystemTime,
}

/// A certificate's subject and validity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertTimes {
    pub subject: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// An agent's `/metrics`, through the API server's pod proxy.
#[derive(Clone, Debug)]
pub enum AgentProbe {
    Answered {
        metrics: String,
        clock: Option<ClockReading>,
    },
    /// The proxy could not reach it (no route from the API server, timeout, 503).
    Unreachable(String),
    /// Not asked (not running on a node, no permission to proxy).
    NotTried(String),
}

/// A TLS handshake and `GET /healthz` with the CA service. `should_reach`:
/// the target is the CA for sure (given with `--ca-addr`, or the check runs in
/// a pod, where the Service's cluster IP is the CA's); from a workstation the
/// cluster IP may lead nowhere, or to a proxy on the way.
#[derive(Clone, Debug)]
pub enum CaProbe {
    Answered {
        target: String,
        healthz: u16,
        serving: Option<CertTimes>,
        clock: Option<ClockReading>,
    },
    /// No TCP connection.
    Unreachable {
        target: String,
        why: String,
        should_reach: bool,
    },
    /// Connected, but its certificate does not verify against the trust bundle
    /// (or the TLS handshake failed otherwise).
    Untrusted {
        target: String,
        why: String,
        should_reach: bool,
    },
    /// The Service the agents dial does not exist.
    NoService,
    NotTried(String),
}

/// Everything the checks look at.
#[derive(Clone, Debug)]
pub struct Facts {
    /// Weft's namespace (`weft-system`).
    pub namespace: String,
    /// This `mesh-agent`'s version: the one its generated CRDs are of.
    pub cli_version: String,
    /// This machine's clock when the facts were gathered.
    pub now: SystemTime,
    /// The API server's URL and `gitVersion`.
    pub server: String,
    pub server_version: String,
    pub server_clock: Option<ClockReading>,
    /// Each of Weft's CRDs as this binary generates it, and as the cluster serves it.
    pub weft_crds: Vec<(CustomResourceDefinition, Fetched<CustomResourceDefinition>)>,
    /// Gateway API's route CRDs, by name.
    pub gateway_crds: Vec<(String, Fetched<CustomResourceDefinition>)>,
    pub daemonset: Fetched<DaemonSet>,
    pub nodes: Fetched<Vec<Node>>,
    /// The DaemonSet's pods.
    pub agent_pods: Fetched<Vec<Pod>>,
    /// By pod name.
    pub agent_probes: BTreeMap<String, AgentProbe>,
    pub ca_deployment: Fetched<Deployment>,
    /// The CA key Secret (metadata only).
    pub ca_key: Fetched<()>,
    pub trust_bundle: Fetched<ConfigMap>,
    pub ca_probe: CaProbe,
}
